"""`python -m scclip_core.eval`: evaluate a method on a benchmark; `torchrun ... -m scclip_core.eval` to shard."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ..config import (
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    DETECTORS,
    PAMR,
    PAMR_DILATIONS,
    PRECISIONS,
    TEMPLATE_SET_NAMES,
    TLP,
    CalibrationParams,
    Stages,
    TlpSettings,
)
from ..errors import ScclipError, one_line, one_line_warnings
from ..methods import METHOD_SPECS, method_spec
from ..refinements import NO_REFINEMENT, REFINE_CHOICES, pamr_steps_for, refine_from_choices
from .benchmarks import BENCHMARKS, OWN_PROTOCOLS, PROTOCOLS, VIT_L14_CHANGES, Benchmark, dataset_names, get_benchmark
from .datasets import LAYOUTS


def _dataset(text: str) -> str:
    try:
        return get_benchmark(text).name
    except ScclipError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def stage_name(text: str) -> str:
    """An argparse type: one stage name, checked by `Stages.check_names` (dashes or underscores)."""
    try:
        (name,) = Stages.check_names([text])
    except ScclipError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return name


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
    ("--pamr-steps", int, f"PAMR refinement steps at dilations {' and '.join(map(str, PAMR_DILATIONS))} (0: off)"),
)


DESCRIPTION = (
    "Benchmark mIoU of SC-CLIP (or a baseline) on a dataset in its MMSegmentation layout. "
    "Run under `torchrun --nproc_per_node=N` to shard the images over N processes. "
    "Rerunning the same command resumes from the per-image records in the output folder."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scclip_core.eval", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The evaluation's options, on `python -m scclip_core.eval` and on `scclip eval`."""
    parser.add_argument(
        "--dataset", type=_dataset, metavar="NAME", help=f"benchmark: {', '.join(dataset_names())} (see --list)"
    )
    parser.add_argument("--root", help="dataset root, e.g. data/VOCdevkit/VOC2012 (or the folder above it)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--weights", default=None, help="open_clip tag, local file or 'random' (default: the model's own tag)"
    )
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHOD_SPECS))
    parser.add_argument(
        "--protocol",
        default="scclip",
        choices=PROTOCOLS,
        help="scclip: SC-CLIP's per-dataset settings for every method (default); own: the method's "
        "own official settings (see --list)",
    )
    parser.add_argument(
        "--disable",
        nargs="+",
        default=[],
        metavar="STAGE",
        type=stage_name,
        help="SC-CLIP stages to switch off, for ablations",
    )
    parser.add_argument(
        "--detector", choices=DETECTORS, help=f"anomaly detector (default {CalibrationParams.detector})"
    )
    parser.add_argument(
        "--templates",
        choices=TEMPLATE_SET_NAMES,
        help="prompt templates: the 80 OpenAI ones (paper, the default) or open_clip's 7 short ones (faster)",
    )
    overrides = parser.add_argument_group("overrides of the benchmark's settings (default: the dataset's, see --list)")
    for flag, kind, text in OVERRIDES:
        overrides.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text)
    overrides.add_argument(
        "--refine",
        action="append",
        choices=REFINE_CHOICES,
        default=argparse.SUPPRESS,
        help=f"refinements of the logits (repeatable, in order), or {NO_REFINEMENT}; default: the method's own "
        f"(pearl: tlp), plus pamr when the benchmark's PAMR steps are > 0",
    )
    overrides.add_argument(
        "--tlp-grid", type=int, default=argparse.SUPPRESS, metavar="N", help="TLP grid cells per side"
    )
    overrides.add_argument(
        "--method-param",
        action="append",
        default=argparse.SUPPRESS,
        metavar="NAME=VALUE",
        help="one of the method's own settings (repeatable), on top of the protocol's (e.g. threshold=0.3 for resclip)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--out", default="results", help="parent folder of the run folder (default results/)")
    parser.add_argument(
        "--restart", action="store_true", help="forget the images recorded by an earlier run with the same settings"
    )
    parser.add_argument("--device", help="e.g. cpu or cuda:0 (default: cuda:LOCAL_RANK when available)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, help="default: the benchmark's on CUDA (fp16), fp32 on the CPU"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    parser.add_argument(
        "--list", action="store_true", help="list the benchmarks' settings under both protocols and exit"
    )


def _protocol_settings(benchmark: Benchmark, method: str = DEFAULT_METHOD) -> str:
    config, rules = benchmark.config, benchmark.rules
    window = "whole image" if config.stride is None else f"crop {config.crop} stride {config.stride}"
    area = "-" if rules.area_threshold is None else f"{rules.area_threshold:g}"
    refinements = config.refinements(method)
    extra = f"  refine {'+'.join(refinements)}" if refinements and refinements != (PAMR,) else ""
    if TLP in refinements and config.tlp != TlpSettings():
        extra += f" (grid {config.tlp.grid})"
    params = benchmark.method_params
    if params is not None and params != method_spec(method).params:
        changed = {
            name: value for name, value in vars(params).items() if value != getattr(method_spec(method).params, name)
        }
        extra += "  " + " ".join(f"{name} {value}" for name, value in changed.items())
    return (
        f"short side {config.short_side:<4} {window:<20} logit scale {rules.logit_scale:<4g} "
        f"prob {rules.prob_threshold:<4g} area {area:<4} PAMR {config.pamr_steps:<2} {benchmark.precision}{extra}"
    )


def benchmark_listing() -> str:
    """Both protocols: SC-CLIP's benchmarks (with the dataset folders), then each comparison method's own."""
    lines = ["--protocol scclip (default): SC-CLIP's settings, for every method"]
    for benchmark in BENCHMARKS.values():
        layout = LAYOUTS[benchmark.layout]
        lines.append(
            f"  {benchmark.name:<15} {benchmark.num_classes:>3} classes  {_protocol_settings(benchmark)}  "
            f"root .../{layout.usual_root} ({layout.image_dir}, {layout.label_dir})"
        )
    for name, changes in VIT_L14_CHANGES.items():
        described = ", ".join(f"{key.replace('_', ' ')} {value:g}" for key, value in changes.items())
        lines.append(f"  with --model ViT-L/14, {name} uses {described} (SC-CLIP's ViT-L/14 settings)")
    lines.append("--protocol own: each method's official settings (sc-clip: as above)")
    for method, protocol in OWN_PROTOCOLS.items():
        lines.append(f"  {method}, from {protocol.source}")
        for dataset in BENCHMARKS:
            lines.append(
                f"    {dataset:<15} {_protocol_settings(get_benchmark(dataset, method=method, protocol='own'), method)}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(parser.parse_args(argv), parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Evaluate as `args` says; `parser` reports missing options. Errors and warnings show as one line each."""
    with one_line_warnings():
        return _run(args, parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.list:
        print(benchmark_listing())
        return 0
    from .runner import run_benchmark  # loads torch, which --list does without

    if not args.dataset or not args.root:
        parser.error("--dataset and --root are required")
    overrides = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
        for flag, _, _ in OVERRIDES
        if hasattr(args, flag[2:].replace("-", "_"))
    }
    params = CalibrationParams(detector=args.detector) if args.detector else None
    try:
        if hasattr(args, "refine"):
            overrides["refine"] = refine_from_choices(args.refine)
            if "pamr_steps" not in overrides and PAMR in overrides["refine"]:
                overrides["pamr_steps"] = pamr_steps_for(overrides["refine"], None)
        if hasattr(args, "tlp_grid"):
            overrides["tlp"] = TlpSettings(grid=args.tlp_grid)
        if hasattr(args, "method_param"):
            protocol = get_benchmark(args.dataset, args.model, method=args.method, protocol=args.protocol)
            overrides["method_params"] = method_spec(args.method).params_with(args.method_param, protocol.method_params)
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
            protocol=args.protocol,
            out=args.out,
            limit=args.limit,
            resume=not args.restart,
            device=args.device,
            precision=args.precision,
            show_progress=not args.no_progress,
        )
    except ScclipError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_json(), indent=2) if args.json else result.table())
    return 0
