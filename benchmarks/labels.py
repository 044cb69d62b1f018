"""Time of the banded labels at the input size (`PixelScores.labels`): upsampling, softmax, synonym max, rules.

    python -m benchmarks.labels                          # 9000x6000 from 504x336 logits, benchmarks.scale's classes
    python -m benchmarks.labels --size 3000x2000 --only thresholds

The vocabulary is `benchmarks.scale`'s (5 classes, one with two synonyms, and the default background words: 29
queries, 6 classes); the logits are smooth synthetic cosine scores, with one class made rare so the area rule
drops it and its pixels take their second choice, as in the scale benchmark's `--prob-threshold 0.2
--area-threshold 0.05` run. Prints one JSON line per case (seconds, label counts, the labels' SHA-256, which
compares label maps across versions of the code, and the process's peak resident memory so far) and a
Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.scale import CLASSES
from scclip_core import LabelRules, parse_classes
from scclip_core.scores import PixelScores

CASES = {
    "plain": LabelRules(),
    "thresholds": LabelRules(prob_threshold=0.2, area_threshold=0.05),
}
RARE_CLASS = 4


def synthetic_scores(working: tuple[int, int], seed: int = 0) -> PixelScores:
    """Smooth cosine-like logits (Q, h, w) for `CLASSES` with the background words; class `RARE_CLASS` scores
    lower, so it covers a few percent of the non-background area."""
    vocabulary = parse_classes(CLASSES)
    query_classes = torch.tensor(vocabulary.query_classes)
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, len(query_classes), working[0] // 24 + 2, working[1] // 24 + 2, generator=generator)
    logits = 0.2 + 0.03 * F.interpolate(coarse, size=working, mode="bicubic", align_corners=False)[0]
    logits[query_classes == RARE_CLASS] -= 0.02
    return PixelScores(logits, query_classes, len(vocabulary.classes))


def size_argument(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width)."""
    width, height = (int(part) for part in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size_argument, default=(6000, 9000), help="output WIDTHxHEIGHT")
    parser.add_argument("--working", type=size_argument, default=(336, 504), help="logits' WIDTHxHEIGHT")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    args = parser.parse_args()
    scores = synthetic_scores(args.working)
    background = parse_classes(CLASSES).background_index
    rows = []
    for name in args.only:
        rules = CASES[name]
        start = time.perf_counter()
        labels = scores.labels(args.size, background, rules)
        seconds = time.perf_counter() - start
        report = {
            "case": name,
            "rules": {"prob_threshold": rules.prob_threshold, "area_threshold": rules.area_threshold},
            "size": [args.size[1], args.size[0]],
            "working": [args.working[1], args.working[0]],
            "queries": int(scores.logits.shape[0]),
            "classes": scores.num_classes,
            "threads": torch.get_num_threads(),
            "seconds": round(seconds, 2),
            "label_counts": np.bincount(labels.ravel(), minlength=scores.num_classes).tolist(),
            "sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        print(json.dumps(report), flush=True)
        rows.append(report)
    print("\n| case | size | seconds | peak RSS | labels sha256 |\n|---|---|---|---|---|")
    for report in rows:
        size = f"{report['size'][0]}x{report['size'][1]}"
        rss, sha = report["peak_rss_mib"], str(report["sha256"])[:16]
        print(f"| {report['case']} | {size} | {report['seconds']} s | {rss} MiB | `{sha}` |")


if __name__ == "__main__":
    main()
