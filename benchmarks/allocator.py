"""What glibc's malloc settings cost the model's work: text encoding and image sides, each setting in a fresh process.

    python -m benchmarks.allocator                 # glibc's defaults, the demo's settings, blocks of 1 MiB mmapped
    python -m benchmarks.allocator --names 60 --images 3 --repeats 5

The app sets the allocator once, at start-up (`demo.memory.tune_allocator`). A setting that hands freed blocks back
to the system at once makes every later block of that size fault its pages in again, which a forward pays for
many times over. Each row runs, in a new process with that setting: `--names` new class names with the 80 templates
in calls of 6 (the demo's turns), then `--images` image sides of a 1024x768 photo, with ViT-B/16 and random
weights (timings do not depend on the values), and reports wall seconds, system seconds and minor page faults of
each part, and the resident size after `malloc_trim`. The settings take turns `--repeats` times, so a change in the
machine's load falls on all of them alike; each cell is the median. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks.visitors import rss_mib

SETTINGS = {
    "glibc's defaults": "defaults",
    "the demo's (demo/memory.py)": "demo",
    "blocks of 1 MiB or more mmapped (the demo's before)": "mmap-1mib",
}
NAMES_PER_CALL = 6
PARTS = ("text", "image")


def apply(setting: str) -> None:
    """Set the allocator as `setting` names; before any large allocation."""
    from demo import memory

    if setting == "demo":
        memory.tune_allocator()
    elif setting == "mmap-1mib":
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(memory.M_ARENA_MAX, memory.MALLOC_ARENAS)
        libc.mallopt(memory.M_MMAP_THRESHOLD, 1 << 20)


def measured(work: Callable[[], object]) -> dict[str, float]:
    """Wall seconds, system seconds and minor page faults of `work()`."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    work()
    after, seconds = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    faults = after.ru_minflt - before.ru_minflt
    return {"seconds": seconds, "system": after.ru_stime - before.ru_stime, "faults": faults}


def child(args: argparse.Namespace) -> None:
    apply(args.child)
    import numpy as np

    from demo.host import DEMO_CONFIG
    from demo.memory import release_freed_memory
    from scclip_core import Segmenter, TextEmbeddingCache, load_model
    from scclip_core.vocabularies import read_class_list

    segmenter = Segmenter(load_model("ViT-B/16", "random"), DEMO_CONFIG, text_cache=TextEmbeddingCache())
    segmenter.text.prefixes()
    names = [synonyms[0] for synonyms in read_class_list("ade847")[: args.names]]
    photo = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    segmenter.embed_image(photo)  # the first forward's one-off costs are in no row
    calls = [names[start : start + NAMES_PER_CALL] for start in range(0, len(names), NAMES_PER_CALL)]
    text = measured(lambda: [segmenter.text.embed(call) for call in calls])
    image = measured(lambda: [segmenter.embed_image(photo) for _ in range(args.images)])
    release_freed_memory()
    print(json.dumps({"text": text, "image": image, "rss": rss_mib(os.getpid())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=36, help="new class names, in calls of 6")
    parser.add_argument("--images", type=int, default=3, help="image sides of a 1024x768 photo")
    parser.add_argument("--repeats", type=int, default=3, help="processes per setting, in turns")
    parser.add_argument("--child", choices=list(SETTINGS.values()), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"ViT-B/16, random weights, {os.cpu_count()} cores, {platform.machine()}; {args.names} names x 80 templates "
        f"in calls of {NAMES_PER_CALL}; {args.images} image sides of a 1024x768 photo; median of {args.repeats}\n"
    )
    runs: dict[str, list[dict[str, float]]] = {setting: [] for setting in SETTINGS.values()}
    for _ in range(args.repeats):
        for setting, results in runs.items():
            command = [sys.executable, "-m", "benchmarks.allocator", "--child", setting]
            command += ["--names", str(args.names), "--images", str(args.images)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(output.splitlines()[-1])
            results.append({f"{part} {key}": value for part in PARTS for key, value in result[part].items()})
            results[-1]["rss"] = result["rss"]
    print("| setting | text s | text system s | text faults | image s | image system s | image faults | RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, setting in SETTINGS.items():
        cell = {key: statistics.median(run[key] for run in runs[setting]) for key in runs[setting][0]}
        print(
            f"| {label} | {cell['text seconds']:.2f} | {cell['text system']:.2f} | {cell['text faults']:,.0f} | "
            f"{cell['image seconds']:.2f} | {cell['image system']:.2f} | {cell['image faults']:,.0f} | "
            f"{cell['rss']:.0f} |"
        )


if __name__ == "__main__":
    main()
