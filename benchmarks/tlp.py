"""Time and peak memory of PEARL's text-aware Laplacian propagation (TLP) on one large image (synthetic logits,
guide and query embeddings).

    python -m benchmarks.tlp                              # 2048x2048 output, 171 queries, logits at 336x336
    python -m benchmarks.tlp --size 1024 --queries 21 --working-size 224 --device cuda

Prints one JSON line: seconds, peak resident memory of the process (and before the call), the grid TLP solves
on, the inputs' own size, and the size of the output-size logits (Q x H x W float32) that the official code pools
from and this one never builds. Compare with `python -m benchmarks.pamr --size 2048 --queries 171`.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from scclip_core.tlp import TlpSettings, pool_factors, propagate

EMBEDDING_WIDTH = 512
"""Width of the synthetic query embeddings (ViT-B/16's); TLP only uses their cosine similarities."""


def main() -> None:
    defaults = TlpSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="output side in pixels")
    parser.add_argument("--queries", type=int, default=171, help="query maps (171: the COCO-Stuff vocabulary)")
    parser.add_argument("--working-size", type=int, default=336, help="side of the logits and the guide")
    parser.add_argument("--grid", type=int, default=defaults.grid)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    settings = TlpSettings(grid=args.grid, iterations=args.iterations)
    device = torch.device(args.device)
    working = (args.working_size, args.working_size)
    generator = torch.Generator().manual_seed(0)
    guide = torch.randn(3, *working, generator=generator).to(device)
    logits = torch.randn(args.queries, *working, generator=generator).to(device)
    text = torch.randn(args.queries, EMBEDDING_WIDTH, generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    solution = propagate(logits, guide, text, (args.size, args.size), settings)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    mib = 2**20
    report = {
        "size": args.size,
        "queries": args.queries,
        "working_size": args.working_size,
        "grid": list(solution.shape[1:]),
        "pool_factors": list(pool_factors((args.size, args.size), settings.grid)),
        "iterations": settings.iterations,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_before_mib": round(rss_before / 1024),
        "logits_mib": round(logits.numel() * 4 / mib),
        "output_size_logits_mib": round(args.queries * args.size**2 * 4 / mib),
    }
    if device.type == "cuda":
        report["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / mib)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
