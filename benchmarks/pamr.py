"""Time and peak memory of PAMR refinement on one large image (synthetic maps and guide).

    python -m benchmarks.pamr                              # 2048x2048, 56 queries, 10 steps, dilations 8 and 16
    python -m benchmarks.pamr --size 1024 --queries 21 --steps 10 --device cuda

Prints one JSON line: seconds, peak resident memory of the process, the inputs' own size, and the size of the
8 x dilations x C x H x W neighbour stack that the banded implementation never builds.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from scclip_core import PAMR_DILATIONS, PAMR_STEPS, pamr_refine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--queries", type=int, default=56, help="class maps (56: the VOC21 queries)")
    parser.add_argument("--steps", type=int, default=PAMR_STEPS)
    parser.add_argument("--dilations", default=",".join(map(str, PAMR_DILATIONS)))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dilations = tuple(int(d) for d in args.dilations.split(","))
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    guide = torch.randn(3, args.size, args.size, generator=generator).to(device)
    maps = torch.randn(args.queries, args.size, args.size, generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    pamr_refine(maps, guide, args.steps, dilations)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    mib = 2**20
    report = {
        "size": args.size,
        "queries": args.queries,
        "steps": args.steps,
        "dilations": list(dilations),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "maps_mib": round(maps.numel() * 4 / mib),
        "neighbour_stack_mib": round(8 * len(dilations) * maps.numel() * 4 / mib),
    }
    if device.type == "cuda":
        report["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / mib)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
