"""`python -m scclip_core.eval`: evaluate a method on a benchmark; `torchrun ... -m scclip_core.eval` to shard."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .. import METHODS, CalibrationParams, ScclipError, Stages
from .datasets import LAYOUTS
from .presets import PRESETS, VIT_L14_CHANGES, dataset_names, get_preset
from .runner import run_benchmark


def _dataset(text: str) -> str:
    try:
        return get_preset(text).name
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _area_threshold(text: str) -> float | None:
    return None if text.lower() in ("off", "none") else float(text)


def _stride(text: str) -> int | None:
    return None if text.lower() in ("off", "none", "whole") else int(text)


OVERRIDES = (
    ("--logit-scale", float, "multiplier of the cosine logits before the softmax"),
    ("--prob-threshold", float, "pixels less confident than this go to the background class"),
    ("--area-threshold", _area_threshold, "drop classes below this share of the foreground, or 'off'"),
    ("--short-side", int, "resize the short side to this many pixels"),
    ("--crop", int, "sliding-window size"),
    ("--stride", _stride, "sliding-window stride, or 'whole' for whole-image inference"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scclip_core.eval",
        description="Benchmark mIoU of SC-CLIP (or a baseline) on a dataset in its MMSegmentation layout. "
        "Run under `torchrun --nproc_per_node=N` to shard the images over N processes. "
        "Rerunning the same command resumes from the per-image records in the output folder.",
    )
    parser.add_argument("--dataset", type=_dataset, metavar="NAME",
                        help=f"benchmark preset: {', '.join(dataset_names())} (see --list)")
    parser.add_argument("--root", help="dataset root, e.g. data/VOCdevkit/VOC2012 (or the folder above it)")
    parser.add_argument("--model", default="ViT-B/16", help="model name (default ViT-B/16)")
    parser.add_argument("--weights", default="openai", help="open_clip tag, local file or 'random' (default openai)")
    parser.add_argument("--method", default="sc-clip", choices=METHODS)
    parser.add_argument("--disable", nargs="+", default=[], metavar="STAGE",
                        choices=[name.replace("_", "-") for name in Stages.names()] + list(Stages.names()),
                        help="SC-CLIP stages to switch off, for ablations")
    parser.add_argument("--detector", choices=("lof", "l2norm"), help="anomaly detector (default lof)")
    parser.add_argument("--templates", choices=("openai", "simple"), default="openai",
                        help="prompt templates: the 80 OpenAI ones (paper) or open_clip's 7 short ones (faster)")
    overrides = parser.add_argument_group("preset overrides (default: the dataset's preset, see --list)")
    for flag, kind, text in OVERRIDES:
        overrides.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text)
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--out", default="results", help="parent folder of the run folder (default results/)")
    parser.add_argument("--restart", action="store_true",
                        help="forget the images recorded by an earlier run with the same settings")
    parser.add_argument("--device", help="e.g. cpu or cuda:0 (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="default: the engine's choice")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    parser.add_argument("--list", action="store_true", help="list the dataset presets and exit")
    return parser


def preset_listing() -> str:
    """One line per preset: name, layout folders, resize, logit scale, thresholds."""
    lines = []
    for preset in PRESETS.values():
        layout = LAYOUTS[preset.layout]
        area = "-" if preset.area_threshold is None else preset.area_threshold
        lines.append(
            f"{preset.name:<15} {preset.num_classes:>3} classes  short side {preset.short_side:<4} "
            f"logit scale {preset.logit_scale:<5g} prob {preset.prob_threshold:<5g} area {area:<4}  "
            f"root .../{layout.usual_root} ({layout.image_dir}, {layout.label_dir})"
        )
    for name, changes in VIT_L14_CHANGES.items():
        described = ", ".join(f"{key.replace('_', ' ')} {value:g}" for key, value in changes.items())
        lines.append(f"with --model ViT-L/14, {name} uses {described} (spec §2b)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(preset_listing())
        return 0
    if not args.dataset or not args.root:
        parser.error("--dataset and --root are required")
    overrides = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
        for flag, _, _ in OVERRIDES
        if hasattr(args, flag[2:].replace("-", "_"))
    }
    params = CalibrationParams(detector=args.detector) if args.detector else None
    try:
        result = run_benchmark(
            args.dataset,
            args.root,
            model_name=args.model,
            weights=args.weights,
            method=args.method,
            disable=tuple(args.disable),
            params=params,
            overrides=overrides,
            templates=args.templates,
            out=args.out,
            limit=args.limit,
            resume=not args.restart,
            device=args.device,
            precision=args.precision,
            show_progress=not args.no_progress,
        )
    except (ScclipError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_json(), indent=2) if args.json else result.table())
    return 0
