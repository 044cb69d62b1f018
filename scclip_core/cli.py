"""`python -m scclip_core segment IMAGE ... --classes "sky, cloud; grass; person"`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ScclipError
from .pamr import PAMR_DILATIONS
from .presets import METHODS, CalibrationParams, Stages


def _dilations(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 8,16, not {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scclip_core", description="SC-CLIP open-vocabulary segmentation")
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser("segment", help="segment images into free-text classes")
    segment.add_argument("images", nargs="+", metavar="IMAGE")
    segment.add_argument("--classes", required=True, help="';' or new line between classes, ',' between synonyms")
    model = segment.add_argument_group("model")
    model.add_argument("--model", default="ViT-B/16", help="ViT-B/16 (default), ViT-L/14 or an open_clip architecture")
    model.add_argument("--weights", default=None, help="pretrained tag (default: openai), checkpoint path, or 'random'")
    model.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    model.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None)
    method = segment.add_argument_group("method")
    method.add_argument("--method", choices=METHODS, default="sc-clip")
    method.add_argument("--disable", action="append", default=[], choices=[n.replace("_", "-") for n in Stages.names()],
                        metavar="STAGE", help=f"switch a stage off (repeatable): {', '.join(n.replace('_', '-') for n in Stages.names())}")
    method.add_argument("--detector", choices=("lof", "l2norm"), default="lof")
    method.add_argument("--beta", type=float, default=CalibrationParams.beta, help="affinity threshold")
    protocol = segment.add_argument_group("inference")
    protocol.add_argument("--short-side", type=int, default=336, help="resize the short side to this (0: keep size)")
    protocol.add_argument("--crop", type=int, default=224)
    protocol.add_argument("--stride", type=int, default=112, help="window stride (0: whole image as one window)")
    protocol.add_argument("--logit-scale", type=float, default=40.0)
    protocol.add_argument("--pamr-steps", type=int, default=0, metavar="N", help="PAMR refinement steps (0: off)")
    protocol.add_argument("--pamr-dilations", type=_dilations, default=PAMR_DILATIONS, metavar="D,D",
                          help="PAMR neighbour distances in pixels (default 8,16)")
    protocol.add_argument("--templates", choices=("openai", "simple"), default="openai")
    protocol.add_argument("--max-side", type=int, default=2048, help="downscale larger inputs first (0: never)")
    protocol.add_argument("--text-cache", default=None, metavar="DIR", help="keep text embeddings on disk here")
    background = protocol.add_mutually_exclusive_group()
    background.add_argument("--background", default=None, metavar="WORDS", help="background words, comma separated")
    background.add_argument("--no-background", action="store_true", help="no background class")
    protocol.add_argument("--prob-threshold", type=float, default=0.0)
    protocol.add_argument("--area-threshold", type=float, default=None)
    output = segment.add_argument_group("output")
    output.add_argument("--out", default=None, metavar="PATH", help="palette PNG label map (a folder for several images)")
    output.add_argument("--save-probs", default=None, metavar="PATH", help="float32 (C, H, W) .npy (a folder for several images)")
    output.add_argument("--json", action="store_true", help="print one JSON summary line per image")
    return parser


def _output_path(option: str | None, image: Path, suffix: str, several: bool) -> Path | None:
    """The file for `image`: `option` itself for one image, `option/<stem><suffix>` for several or a folder."""
    if option is None:
        return None
    target = Path(option)
    if several or target.is_dir() or not target.suffix:
        target.mkdir(parents=True, exist_ok=True)
        return target / f"{image.stem}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _segment(args: argparse.Namespace) -> int:
    from . import load_model
    from .render import label_map_image
    from .segmenter import Segmenter, SegmenterConfig, check_thresholds
    from .text import DEFAULT_BACKGROUND_WORDS, TextEmbeddingCache, parse_classes, parse_words

    background = () if args.no_background else (parse_words(args.background) if args.background is not None else DEFAULT_BACKGROUND_WORDS)
    vocabulary = parse_classes(args.classes, background=background)
    check_thresholds(args.prob_threshold, args.area_threshold)
    stages = Stages.without(*args.disable)
    params = CalibrationParams(detector=args.detector, beta=args.beta)
    config = SegmenterConfig(
        short_side=args.short_side or None,
        crop=args.crop,
        stride=args.stride or None,
        logit_scale=args.logit_scale,
        max_input_side=args.max_side or None,
        templates=args.templates,
        pamr_steps=args.pamr_steps,
        pamr_dilations=args.pamr_dilations,
    )
    model = load_model(args.model, args.weights, device=args.device, precision=args.precision)
    if model.is_random:
        print("warning: random (untrained) weights: results are meaningless", file=sys.stderr)
    segmenter = Segmenter(model, config, text_cache=TextEmbeddingCache(args.text_cache) if args.text_cache else None)
    paths = [Path(image) for image in args.images]
    several = len(paths) > 1
    failures = 0
    from tqdm import tqdm

    for path in tqdm(paths, desc="segmenting", unit="image", disable=not several, file=sys.stderr):
        try:
            result = segmenter.segment(
                path, vocabulary, method=args.method, stages=stages, params=params,
                prob_threshold=args.prob_threshold, area_threshold=args.area_threshold,
            )
        except ScclipError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        label_path = _output_path(args.out, path, ".png", several)
        if label_path:
            label_map_image(result.labels, len(result.class_names), result.background_index).save(label_path)
        probs_path = _output_path(args.save_probs, path, ".npy", several)
        if probs_path:
            np.save(probs_path, result.probs.astype(np.float32))
        if args.json:
            print(json.dumps({"image": str(path), **result.to_json()}), flush=True)
        else:
            shares = ", ".join(f"{name} {share:.1%}" for name, share in result.shares().items() if share > 0)
            print(f"{path}: {shares} ({result.timings['total']:.2f} s)", flush=True)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _segment(args)
    except (ScclipError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
