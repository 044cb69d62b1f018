"""Many visitors against one app server: server memory per visitor, and how long a small request waits behind
the largest one the limits allow.

    python -m benchmarks.visitors memory --visitors 300            # each visitor segments a 1024x768 photo
    python -m benchmarks.visitors fairness                         # a small request behind the largest one,
                                                                   # and beside one client's burst of 20
    python -m benchmarks.visitors fairness --cases burst           # only the burst
    python -m benchmarks.visitors fairness --cases video           # a small request beside a clip at the limits
    python -m benchmarks.visitors newcomers                        # new visitors' waits on a cold start, and the
                                                                   # start-up warm-up of the presets' names

The app runs as a separate process (`python app.py`, ViT-B/16 with random weights unless --model/--weights say
otherwise: timings and memory do not depend on the weight values), with an empty text cache of its own, as a
Space without persistent storage starts; measurements begin once its start-up warm-up is done, except in
`newcomers`, which measures during it. Visitors are `gradio_client` clients, each a
new session, as many browser tabs would be. Prints one line per measurement and a summary that
docs/demo.md quotes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from demo.inputs import LIMITS
from scclip_core.config import DEFAULT_MODEL, TEMPLATE_SET_NAMES
from scclip_core.vocabularies import vocabulary_preset

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def app_server(
    model: str, weights: str, extra: list[str], *, warmed: bool = True
) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`python app.py` on a free local port with an empty text cache, until the page answers and (if `warmed`) the
    server has logged the end of its start-up warm-up; stopped afterwards. Yields the page's address, the process
    and its log."""
    port = free_port()
    cache = tempfile.TemporaryDirectory(prefix="scclip-visitors-cache-")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "SCCLIP_CACHE": cache.name}
    command = [sys.executable, "app.py", "--model", model, "--weights", weights, "--port", str(port), *extra]
    log = tempfile.NamedTemporaryFile("w+", prefix="scclip-app-", suffix=".log", delete=False)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited; see {log.name}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start in 300 s; see {log.name}")
            time.sleep(1)
        if warmed:
            wait_for_warm_up(Path(log.name), deadline=time.monotonic() + 600)
        yield url, process, Path(log.name)
    finally:
        process.terminate()
        process.wait(30)
        cache.cleanup()
        print(f"server log: {log.name}")


def photo(folder: Path, index: int, size: tuple[int, int] = (1024, 768)) -> Path:
    """A distinct 1024x768 photo-like image (smooth colour fields plus noise) per visitor."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / max(size)
    channels = [np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)) + np.cos(y * rng.uniform(2, 9)) for _ in range(3)]
    rgb = (np.stack(channels, axis=2) * 60 + 128 + rng.normal(0, 12, (size[1], size[0], 3))).clip(0, 255)
    path = folder / f"visitor-{index}.jpg"
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=90)
    return path


def memory(args: argparse.Namespace) -> None:
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as folder, app_server(args.model, args.weights, []) as (url, server, _):
        pictures = [photo(Path(folder), index) for index in range(args.distinct_photos)]
        Client(url, verbose=False).predict(handle_file(str(pictures[0])), args.classes, api_name="/segment")
        start = rss_mib(server.pid)
        print(f"server RSS after start-up and one warm-up request: {start:.0f} MiB")
        done = [0]
        lock = threading.Lock()

        def visitor(index: int) -> None:
            client = Client(url, verbose=False)
            client.predict(handle_file(str(pictures[index % len(pictures)])), args.classes, api_name="/segment")
            client.predict(0.3, 0.0, api_name="/rethreshold")
            with lock:
                done[0] += 1
                if done[0] % args.report_every == 0:
                    print(f"{done[0]:4d} visitors: server RSS {rss_mib(server.pid):.0f} MiB", flush=True)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(visitor, range(args.visitors)))
        end = rss_mib(server.pid)
        print(
            f"{args.visitors} visitors ({args.concurrency} at a time, 1024x768 photos, classes {args.classes!r}) in "
            f"{time.perf_counter() - started:.0f} s: server RSS {start:.0f} -> {end:.0f} MiB "
            f"({end - start:+.0f} MiB); machine {platform.machine()}, {os.cpu_count()} cores"
        )


def timed_segment(client: Any, picture: Path, classes: str, templates: str) -> float:
    """Seconds one /segment request took, as its client waited; prints the parts of that wait the summary names."""
    from gradio_client import handle_file

    started = time.perf_counter()
    _, summary = client.predict(handle_file(str(picture)), classes, templates=templates, api_name="/segment")
    seconds = time.perf_counter() - started
    print(f"  {len(summary['classes'])} classes, {seconds:.1f} s waited; the summary's timings: {summary['timings']}")
    for notice in summary["notices"]:
        print(f"  notice: {notice}")
    return seconds


def behind_the_largest(url: str, folder: Path, delay: float) -> None:
    """A 2-class request sent `delay` s after the largest requests the limits allow, from another visitor."""
    from gradio_client import Client

    largest = "; ".join(
        f"big thing {index}, large item {index}" if index < 74 else f"big thing {index}" for index in range(100)
    )
    coco = vocabulary_preset("coco_stuff").as_text("; ")
    scenarios = {  # the 26 background words count towards the 200 names; preset classes do not count
        "100 classes, 200 names (the short templates, as the limits switch to them)": (largest, "openai"),
        f"{LIMITS.full_template_names} new names with the 80 templates": (
            "; ".join(f"object {index}" for index in range(LIMITS.full_template_names)),
            "openai",
        ),
        "the COCO-Stuff preset (171 classes) plus those 100 classes": (f"{coco}; {largest}", "openai"),
    }
    for label, (classes, templates) in scenarios.items():
        big, small = Client(url, verbose=False), Client(url, verbose=False)
        with ThreadPoolExecutor(1) as pool:
            large = pool.submit(timed_segment, big, photo(folder, 1), classes, templates)
            time.sleep(delay)
            waited = timed_segment(small, photo(folder, 2), "red; blue", templates)
            print(
                f"{label}: largest request {large.result():.1f} s; a 2-class request sent {delay:.0f} s "
                f"later waited {waited:.1f} s in all"
            )


def beside_a_burst(url: str, folder: Path, delay: float, burst: int) -> None:
    """One client (one session) fires `burst` requests at once, each with 10 new class names and the 80 templates;
    another visitor sends a 2-class request `delay` s later. Each visitor holds at most
    SCCLIP_MAX_QUEUED_PER_VISITOR places (2 by default): the rest of the burst is refused at once."""
    from gradio_client import Client, handle_file

    greedy, small = Client(url, verbose=False), Client(url, verbose=False)
    started = time.perf_counter()
    jobs = [
        greedy.submit(
            handle_file(str(photo(folder, 10 + index))),
            "; ".join(f"burst thing {index} {name}" for name in range(10)),
            templates="openai",
            api_name="/segment",
        )
        for index in range(burst)
    ]
    time.sleep(delay)
    waited = timed_segment(small, photo(folder, 2), "red; blue", "openai")
    served = refused = 0
    for job in jobs:
        try:
            job.result()
            served += 1
        except Exception as error:
            if "requests waiting or running" not in str(error):
                raise
            refused += 1
    print(
        f"one client's burst of {burst} requests (10 new names x 80 templates each): {served} served, {refused} "
        f"refused at once, all done in {time.perf_counter() - started:.1f} s; a 2-class request from another "
        f"visitor sent {delay:.0f} s later waited {waited:.1f} s in all"
    )


def clip(folder: Path, seconds: float, rate: int, size: tuple[int, int]) -> Path:
    """A synthetic H.264 clip: one photo-like picture panning sideways, `seconds` long at `rate` frames a second."""
    from fractions import Fraction

    from scclip_core.video import VideoWriter

    wide = np.asarray(Image.open(photo(folder, 50, (size[0] * 2, size[1]))))
    frames = round(seconds * rate)
    path = folder / "clip.mp4"
    with VideoWriter(path, Fraction(rate), size) as writer:
        for index in range(frames):
            left = index * size[0] // max(1, frames)
            writer.write(np.ascontiguousarray(wide[:, left : left + size[0]]))
    return path


def beside_a_video(url: str, folder: Path, delay: float, seconds: float, rate: int, size: tuple[int, int]) -> None:
    """One visitor segments a clip (by default at the limits: `max_video_seconds` long, `max_video_frames` frames);
    another sends a 2-class request for a 640x480 photo `delay` s later. Its wait is compared with the same request
    alone (from a new session, so no image side is reused)."""
    from gradio_client import Client, handle_file

    video = clip(folder, seconds, rate, size)
    small = photo(folder, 3, (640, 480))
    alone = timed_segment(Client(url, verbose=False), small, "red; blue", "openai")
    started = time.perf_counter()
    job = Client(url, verbose=False).submit(handle_file(str(video)), "red; blue; green", api_name="/segment_video")
    time.sleep(delay)
    waited = timed_segment(Client(url, verbose=False), small, "red; blue", "openai")
    summary = job.result()[2]
    took = time.perf_counter() - started
    segmented = summary["frames_segmented"]
    print(
        f"a {seconds:g} s clip at {rate} frames/s ({size[0]}x{size[1]}, {segmented} frames segmented, every "
        f"{summary['every']}) took {took:.1f} s ({took / segmented:.1f} s a frame); a 2-class request for a 640x480 "
        f"photo from another visitor sent {delay:.0f} s later waited {waited:.1f} s in all, {alone:.1f} s alone"
    )


def fairness(args: argparse.Namespace) -> None:
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as folder, app_server(args.model, args.weights, []) as (url, _, _):
        warm = Client(url, verbose=False)
        warm.predict(handle_file(str(photo(Path(folder), 0))), "red; blue", api_name="/segment")
        if "largest" in args.cases:
            behind_the_largest(url, Path(folder), args.delay)
        if "burst" in args.cases:
            beside_a_burst(url, Path(folder), args.delay, args.burst)
        if "video" in args.cases:
            width, height = (int(side) for side in args.video_size.split("x"))
            beside_a_video(url, Path(folder), args.delay, args.video_seconds, args.video_rate, (width, height))


def warm_up_lines(log: Path) -> list[str]:
    """The server log's lines on its start-up warm-up (`ModelHost.warm_up`): one per template set once done."""
    return [line for line in log.read_text().splitlines() if "warm-up:" in line]


def wait_for_warm_up(log: Path, deadline: float) -> list[str]:
    """The warm-up's log lines once there is one per template set, or those there are at `deadline`."""
    while len(warm_up_lines(log)) < len(TEMPLATE_SET_NAMES) and time.monotonic() < deadline:
        time.sleep(1)
    return warm_up_lines(log)


def newcomers(args: argparse.Namespace) -> None:
    """New visitors on a cold start, each with 3 class names no one asked for before, on a 600x400 photo: the first
    sent as soon as the page answers (while the presets' names are being embedded), the second once that warm-up is
    done; then the first visitor's classes again (its image side kept), and a preset with the paper's templates."""
    from gradio_client import Client

    started = time.perf_counter()
    server = app_server(args.model, args.weights, [], warmed=False)
    with tempfile.TemporaryDirectory() as folder, server as (url, _, log):
        print(f"the page answered {time.perf_counter() - started:.1f} s after the server was started")
        picture = photo(Path(folder), 4, (600, 400))
        first = Client(url, verbose=False)
        waited = timed_segment(first, picture, "red kettle; wooden bench; paper lantern", "openai")
        print(f"the first visitor, at start-up, 3 new classes: {waited:.1f} s")
        lines = wait_for_warm_up(log, deadline=time.monotonic() + args.warm_up_timeout)
        for line in lines or ["no warm-up reported in the server log"]:
            print(f"server log: {line}")
        second = timed_segment(Client(url, verbose=False), picture, "copper teapot; garden hose; violin case", "openai")
        print(f"a second visitor, once warm, the same photo, 3 other new classes: {second:.1f} s")
        again = timed_segment(first, picture, "red kettle; wooden bench; paper lantern", "openai")
        print(f"the first visitor's classes again, its image side kept: {again:.1f} s")
        coco = vocabulary_preset("coco_stuff")
        preset = timed_segment(Client(url, verbose=False), picture, coco.as_text("; "), "openai")
        print(f"a new visitor, the COCO-Stuff preset ({len(coco.classes)} classes), the 80 templates: {preset:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--weights", default="random")
    commands = parser.add_subparsers(dest="command", required=True)
    memory_parser = commands.add_parser("memory", help="server RSS as visitors come and go")
    memory_parser.add_argument("--visitors", type=int, default=300)
    memory_parser.add_argument("--concurrency", type=int, default=4)
    memory_parser.add_argument("--distinct-photos", type=int, default=20)
    memory_parser.add_argument("--report-every", type=int, default=25)
    memory_parser.add_argument("--classes", default="person; dog; grass; sky, cloud; car")
    fairness_parser = commands.add_parser("fairness", help="a small request behind the largest allowed one")
    fairness_parser.add_argument("--delay", type=float, default=2.0)
    cases = ["largest", "burst", "video"]
    fairness_parser.add_argument("--cases", nargs="+", choices=cases, default=cases)
    fairness_parser.add_argument("--burst", type=int, default=20, help="requests the greedy client fires at once")
    fairness_parser.add_argument("--video-seconds", type=float, default=LIMITS.max_video_seconds)
    fairness_parser.add_argument(
        "--video-rate",
        type=int,
        default=round(LIMITS.max_video_frames / LIMITS.max_video_seconds),
        help="frames a second of the clip (default: the frame limit over the length limit)",
    )
    fairness_parser.add_argument("--video-size", default="640x360", help="WIDTHxHEIGHT of the clip")
    newcomers_parser = commands.add_parser("newcomers", help="new visitors' waits on a cold start")
    newcomers_parser.add_argument(
        "--warm-up-timeout", type=float, default=600, help="seconds to wait for the warm-up to be reported"
    )
    args = parser.parse_args()
    {"memory": memory, "fairness": fairness, "newcomers": newcomers}[args.command](args)


if __name__ == "__main__":
    main()
