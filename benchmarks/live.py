"""Frames per second of the Live tab: the per-frame path the app runs, on a synthetic 640x480 webcam stream.

    python -m benchmarks.live                           # 20 frames, ViT-B/16 random (same speed as trained), 224 px
    python -m benchmarks.live --frames 10 --side 336 --model tiny-test

Each frame goes through what `LiveEvents.frame` does, in turn: the settings and classes parsed, `LiveEvents.segment`
(downscale and image side, then the prediction, each in a turn at the model) and the overlay and legend drawn
(`live_pictures`). Two frames run first, untimed, so the class text is embedded and the first calls are paid before
the clock starts. Prints one JSON line: frames per second and the mean milliseconds per frame of the image side,
the prediction and the rendering (and the text side, which is 0 once the names are cached), the process's CPU
milliseconds per frame (all threads; on shared cores it says what a frame costs when the wall clock cannot) and the
machine's load average at the end (above the core count, other work slowed the frames down).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from benchmarks.video import scene
from demo.events import Events
from demo.events.live import live_pictures
from demo.host import ModelHost
from demo.inputs import parse_vocabulary

CLASSES = "person; chair; desk; wall; window; plant"
WARM_UP_FRAMES = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument(
        "--side", type=int, default=None, help="the long side frames are segmented at (default: live_side)"
    )
    parser.add_argument("--model", default="ViT-B/16")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--method", default=None, help="default: the demo's (SC-CLIP)")
    args = parser.parse_args()

    host = ModelHost(args.model, args.weights)
    events = Events(host)
    side = args.side or host.limits.live_side
    rng = np.random.default_rng(0)
    frames = [scene(index, 640, 480, rng) for index in range(args.frames + WARM_UP_FRAMES)]
    milliseconds: dict[str, list[float]] = {"text": [], "image": [], "prediction": [], "render": []}
    started, cpu_started = time.perf_counter(), time.process_time()
    for index, frame in enumerate(frames):
        if index == WARM_UP_FRAMES:
            started, cpu_started = time.perf_counter(), time.process_time()
        settings = events.segmenting.settings(args.method, None, None, None, None, None, None, host.config.templates)
        vocabulary = parse_vocabulary(CLASSES, settings, host.limits)
        segmentation, times = events.live.segment(frame, vocabulary, settings, side)
        drawn = time.perf_counter()
        live_pictures(segmentation)
        if index >= WARM_UP_FRAMES:
            milliseconds["text"].append(1000 * times.text)
            milliseconds["image"].append(1000 * (times.image or 0.0))
            milliseconds["prediction"].append(1000 * times.prediction)
            milliseconds["render"].append(1000 * (time.perf_counter() - drawn))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    size = segmentation.labels.shape
    print(
        json.dumps(
            {
                "model": args.model,
                "weights": args.weights,
                "device": str(host.model.device) if host.model else None,
                "torch_threads": torch.get_num_threads(),
                "frames": args.frames,
                "input": "640x480",
                "segmented": f"{size[1]}x{size[0]}",
                "fps": round(args.frames / seconds, 2),
                "cpu_ms_per_frame": round(1000 * cpu_seconds / args.frames, 1),
                "load_average": [round(load, 2) for load in os.getloadavg()],
                "ms_per_frame": {name: round(float(np.mean(values)), 1) for name, values in milliseconds.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
