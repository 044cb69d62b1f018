"""Flicker with and without temporal smoothing, and frames per second, on a synthetic moving scene.

    python -m benchmarks.video                                   # 64 frames at 448x336, ViT-B/16 random, alpha 0.5
    python -m benchmarks.video --frames 16 --model tiny-test --alpha 0.8

The scene (shapes sliding over a gradient, with a little sensor noise) is written as an H.264 MP4 with the
project's own writer, then `segment_video` runs over it once with smoothing off (timed: decode, image side,
text side and labels; the text is embedded before the clock starts). The smoothed labels come from the same
frames' logits through `video.smoothed`, the function `segment_video` applies, so the backbone runs once.
Flicker is the share of pixels whose label changes between consecutive frames. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from scclip_core import Segmenter, TextEmbeddingCache, load_model, parse_classes
from scclip_core.video import VideoWriter, segment_video, smoothed

CLASSES = "sky; grass; person; car; road"  # no background class: with random weights its many words win everywhere
RATE = Fraction(25)


def scene(index: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Frame `index`: a square and a disc sliding in opposite directions over a colour gradient, plus noise."""
    columns = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    frame = np.empty((height, width, 3), dtype=np.float32)
    frame[..., 0], frame[..., 1], frame[..., 2] = 60 + 150 * columns, 80 + 120 * rows, 200 - 150 * columns
    side = height // 4
    left = (6 * index) % (width - side)
    frame[height // 5 : height // 5 + side, left : left + side] = (240, 200, 40)
    y, x = np.ogrid[:height, :width]
    centre = (2 * height // 3, width - side // 2 - (4 * index) % (width - side))
    frame[(y - centre[0]) ** 2 + (x - centre[1]) ** 2 < (side // 2) ** 2] = (30, 60, 220)
    frame += rng.normal(0.0, 6.0, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def flicker(labels: list[np.ndarray]) -> float:
    """The share of pixels whose label changes between consecutive frames, averaged over the frame pairs."""
    return float(np.mean([np.mean(before != after) for before, after in zip(labels, labels[1:])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--height", type=int, default=336)
    parser.add_argument("--alpha", type=float, default=0.5, help="temporal smoothing weight of the past")
    parser.add_argument("--model", default="ViT-B/16")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.model, args.weights, device=args.device)
    segmenter = Segmenter(model, text_cache=TextEmbeddingCache())
    vocabulary = parse_classes(CLASSES, background=())
    segmenter.text.embed(vocabulary.queries)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "scene.mp4"
        with VideoWriter(clip, RATE, (args.width, args.height)) as writer:
            for index in range(args.frames):
                writer.write(scene(index, args.width, args.height, rng))
        start = time.perf_counter()
        results = [result for _, result in segment_video(segmenter, clip, vocabulary)]
        seconds = time.perf_counter() - start
    plain = [result.labels for result in results]
    smooth, average = [], None
    for result in results:
        relabelled, average = smoothed(result, average, args.alpha)
        smooth.append(relabelled.labels)
    report = {
        "model": args.model,
        "weights": args.weights,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "frames": args.frames,
        "size": [args.width, args.height],
        "working_size": list(results[0].resized_size)[::-1],
        "windows": len(results[0].windows),
        "classes": results[0].class_names,
        "seconds": round(seconds, 2),
        "frames_per_second": round(args.frames / seconds, 3),
        "flicker": round(flicker(plain), 4),
        "flicker_smoothed": round(flicker(smooth), 4),
        "alpha": args.alpha,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
