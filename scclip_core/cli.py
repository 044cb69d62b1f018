"""`scclip segment IMAGE_DIR_OR_GLOB ... --classes "sky, cloud; grass; person" --out OUT` (or `python -m scclip_core`);
`scclip segment CLIP.mp4 --classes ... --out FRAMES/ --overlay-video OVERLAY.mp4` for a video (`video.VIDEO_SUFFIXES`);
`scclip eval ...` is `python -m scclip_core.eval ...`.

`torchrun --nproc_per_node=N -m scclip_core segment ...` shares the images out over N processes (gloo on CPU,
NCCL on CUDA) with the evaluation's process-group helpers.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Hashable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .cache import atomic_write, remove_temporaries
from .coco import CocoFile
from .config import (
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    DETECTORS,
    LAYER_CONFIGS,
    PAMR_DILATIONS,
    PAMR_STEPS,
    PRECISIONS,
    TEMPLATE_SET_NAMES,
    CalibrationParams,
    LabelRules,
    SegmenterConfig,
    Stages,
)
from .errors import InputError, ScclipError, one_line, one_line_warnings, output_errors
from .eval import cli as eval_cli
from .methods import METHOD_SPECS, method_spec
from .records import append_record, open_records, read_records
from .refinements import NO_REFINEMENT, REFINE_CHOICES, REFINEMENTS, pamr_steps_for, refine_from_choices
from .video import VIDEO_SUFFIXES, is_video

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
SUMMARY_NAME = "summary.jsonl"
SUMMARY_FIELDS = {"image": str, "status": str}
FRAME_NAME = "frame_{index:06d}.png"  # a video's label maps in --out, by decoded frame index
VIDEO_OPTIONS = ("overlay_video", "every", "max_frames", "temporal_smoothing")

if TYPE_CHECKING:
    from .distributed import ProcessInfo
    from .segmenter import Segmentation, Segmenter
    from .text import Vocabulary


class RunOptions(NamedTuple):
    """What a `segment` run passes to every image or frame it segments (`Segmenter.segment`'s keywords)."""

    method: str
    stages: Stages
    params: CalibrationParams
    method_params: Hashable
    rules: LabelRules


def _dilations(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        example = ",".join(map(str, PAMR_DILATIONS))
        message = f"expected comma-separated whole numbers such as {example}, not {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _parser(prog: str) -> argparse.ArgumentParser:
    config, rules = SegmenterConfig(), LabelRules()
    parser = argparse.ArgumentParser(prog=prog, description="SC-CLIP open-vocabulary segmentation")
    commands = parser.add_subparsers(dest="command", required=True)
    evaluation = commands.add_parser("eval", help="benchmark mIoU on a dataset", description=eval_cli.DESCRIPTION)
    eval_cli.add_arguments(evaluation)
    evaluation.set_defaults(command_parser=evaluation)
    segment = commands.add_parser(
        "segment",
        help="segment images into free-text classes",
        description="Segment images into free-text classes. Under `torchrun --nproc_per_node=N` the images are "
        "shared out over N processes. With several images (or a folder or pattern), images whose outputs already "
        "exist are skipped, so a rerun resumes, and OUT/summary.jsonl gets one line per image. One video file "
        f"({', '.join(sorted(VIDEO_SUFFIXES))}) is segmented frame by frame: OUT/frame_000000.png and on.",
    )
    segment.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files, folders of images, glob patterns, or one video file"
    )
    classes = segment.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", help="';' or new line between classes, ',' between synonyms")
    classes.add_argument("--classes-file", metavar="PATH", help="the same, read from a text file (one class a line)")
    model = segment.add_argument_group("model")
    others = ", ".join(name for name in LAYER_CONFIGS if name != DEFAULT_MODEL)
    model.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"{DEFAULT_MODEL} (default), {others} or an open_clip architecture"
    )
    model.add_argument(
        "--weights", default=None, help="pretrained tag (default: the model's own), checkpoint path, or 'random'"
    )
    model.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    model.add_argument("--precision", choices=PRECISIONS, default=None)
    method = segment.add_argument_group("method")
    method.add_argument("--method", choices=list(METHOD_SPECS), default=DEFAULT_METHOD)
    method.add_argument(
        "--method-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one of the method's own settings (repeatable), e.g. threshold=0.3 or rcs_weights=2,0.3 for resclip, "
        "alpha_kk=0.3 for pearl",
    )
    method.add_argument(
        "--disable",
        action="append",
        default=[],
        type=eval_cli.stage_name,
        metavar="STAGE",
        help=f"switch a stage off (repeatable): {', '.join(Stages.option_names())}",
    )
    method.add_argument("--detector", choices=DETECTORS, default=CalibrationParams.detector)
    method.add_argument("--beta", type=float, default=CalibrationParams.beta, help="affinity threshold")
    protocol = segment.add_argument_group("inference")
    protocol.add_argument(
        "--short-side", type=int, default=config.short_side or 0, help="resize the short side to this (0: keep size)"
    )
    protocol.add_argument("--crop", type=int, default=config.crop)
    protocol.add_argument(
        "--stride", type=int, default=config.stride or 0, help="window stride (0: whole image as one window)"
    )
    protocol.add_argument("--logit-scale", type=float, default=rules.logit_scale)
    protocol.add_argument(
        "--refine",
        action="append",
        choices=REFINE_CHOICES,
        default=None,
        help="refine the logits (repeatable, in order): "
        + ", ".join(f"{name} ({refinement.label})" for name, refinement in REFINEMENTS.items())
        + f", or {NO_REFINEMENT}; default: the method's own (pearl: tlp), plus pamr with --pamr-steps > 0",
    )
    protocol.add_argument(
        "--pamr-steps",
        type=int,
        default=None,
        metavar="N",
        help=f"PAMR refinement steps (0: off; default {PAMR_STEPS} when --refine names pamr, else off)",
    )
    protocol.add_argument(
        "--pamr-dilations",
        type=_dilations,
        default=config.pamr_dilations,
        metavar="D,D",
        help=f"PAMR neighbour distances in pixels (default {','.join(map(str, config.pamr_dilations))})",
    )
    protocol.add_argument(
        "--tlp-grid", type=int, default=config.tlp.grid, metavar="N", help="TLP grid cells per side (PEARL: 80)"
    )
    protocol.add_argument("--templates", choices=TEMPLATE_SET_NAMES, default=config.templates)
    protocol.add_argument(
        "--max-side",
        type=int,
        default=config.max_input_side or 0,
        help="downscale larger inputs for the image side (0: never); labels stay at the input size",
    )
    cache = protocol.add_mutually_exclusive_group()
    cache.add_argument(
        "--text-cache",
        default=None,
        metavar="DIR",
        help="text-embedding cache folder (default: $SCCLIP_CACHE/text-embeddings, ~/.cache/scclip/...)",
    )
    cache.add_argument("--no-text-cache", action="store_true", help="keep text embeddings in memory only")
    background = protocol.add_mutually_exclusive_group()
    background.add_argument("--background", default=None, metavar="WORDS", help="background words, comma separated")
    background.add_argument("--no-background", action="store_true", help="no background class")
    protocol.add_argument("--prob-threshold", type=float, default=rules.prob_threshold)
    protocol.add_argument("--area-threshold", type=float, default=rules.area_threshold)
    output = segment.add_argument_group("output")
    output.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="label map at the input size: palette PNG up to 256 classes, 16-bit grey PNG above "
        "(a folder for several images, with a summary.jsonl)",
    )
    output.add_argument(
        "--save-probs",
        default=None,
        metavar="PATH",
        help="float32 (C, H, W) .npy (a folder for several images); at the working size when the "
        "input size would exceed --probs-budget",
    )
    output.add_argument(
        "--probs-budget",
        type=float,
        default=config.probs_budget_bytes / 2**30,
        metavar="GIB",
        help="largest probability array kept at the input size (default %(default)g GiB)",
    )
    output.add_argument(
        "--coco",
        default=None,
        metavar="PATH.json",
        help="one COCO file for the whole run (an RLE mask per image and class present), written at the end; with "
        "several images and --out it is built from the label maps there, so images a resume skips are in it too",
    )
    output.add_argument("--json", action="store_true", help="print one JSON summary line per image (or video frame)")
    video = segment.add_argument_group("video (one video file as the input)")
    video.add_argument(
        "--overlay-video",
        default=None,
        metavar="PATH.mp4",
        help="the frames with their classes tinted, as H.264 MP4 (yuv420p: an odd side gets one more edge row or "
        "column) at the input's frame rate divided by --every",
    )
    video.add_argument("--every", type=int, default=None, metavar="N", help="segment every N-th frame (default 1)")
    video.add_argument("--max-frames", type=int, default=None, metavar="M", help="segment at most M frames")
    video.add_argument(
        "--temporal-smoothing",
        type=float,
        default=None,
        metavar="ALPHA",
        help="label each frame from ALPHA * (the past's average logits) + (1 - ALPHA) * its own, 0 <= ALPHA < 1 "
        "(default: off, each frame on its own)",
    )
    return parser


def expand_images(items: Sequence[str]) -> list[Path]:
    """Image paths from files, folders (their image files, sorted) and glob patterns, each path once."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                child for child in path.iterdir() if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise InputError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        elif glob.has_magic(item):
            found = sorted(Path(match) for match in glob.glob(item, recursive=True) if Path(match).is_file())
            if not found:
                raise InputError(f"no files match {item!r}")
            paths += found
        else:
            paths.append(path)
    return list(dict.fromkeys(paths))


def _output_path(option: str | None, image: Path, suffix: str, several: bool) -> Path | None:
    """The file for `image` (see `_output_file`), or None when the output is not asked for."""
    return None if option is None else _output_file(option, image, suffix, several)


def _output_file(option: str, image: Path, suffix: str, several: bool) -> Path:
    """The file for `image`: `option` itself for one image, `option/<stem><suffix>` for several or a folder."""
    target = Path(option)
    if several or target.is_dir() or not target.suffix:
        return target / f"{image.stem}{suffix}"
    return target


def _check_distinct_outputs(paths: list[Path], option: str | None, suffix: str, several: bool) -> None:
    if option is None:
        return
    seen: dict[Path, Path] = {}
    for path in paths:
        target = _output_file(option, path, suffix, several)
        if target in seen:
            raise InputError(f"{seen[target]} and {path} would both be written to {target}; rename one of them")
        seen[target] = path


def merge_summaries(folder: Path, paths: list[Path], skipped: set[Path]) -> Path:
    """One `summary.jsonl` in input order from the previous summary and every rank's lines of this run."""
    summary = folder / SUMMARY_NAME
    rank_files = sorted(folder.glob(f"{SUMMARY_NAME}.rank*"))
    latest = {
        record["image"]: record for source in (summary, *rank_files) for record in read_records(source, SUMMARY_FIELDS)
    }
    lines = []
    for path in paths:
        record = latest.get(str(path))
        if record is None and path in skipped:
            record = {"image": str(path), "status": "skipped", "reason": "outputs exist"}
        if record is not None:
            lines.append(json.dumps(record) + "\n")
    with output_errors(summary):
        atomic_write(summary, "".join(lines).encode())
    for rank_file in rank_files:
        rank_file.unlink(missing_ok=True)
    return summary


def _load_segmenter(args: argparse.Namespace, config: SegmenterConfig, process: ProcessInfo) -> Segmenter:
    """The model and text cache the options name, on this process's device (random weights: warned once)."""
    import torch

    from . import load_model
    from .segmenter import Segmenter
    from .text import TextEmbeddingCache

    torch.manual_seed(0)  # weights="random" must be the same model in every process and every run
    model = load_model(args.model, args.weights, device=process.device, precision=args.precision)
    if model.is_random and process.is_main:
        print("warning: random (untrained) weights: results are meaningless", file=sys.stderr)
    if args.no_text_cache:
        text_cache = TextEmbeddingCache()
    else:
        text_cache = TextEmbeddingCache(args.text_cache) if args.text_cache else TextEmbeddingCache.default()
    return Segmenter(model, config, text_cache=text_cache)


def _segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import distributed
    from .text import DEFAULT_BACKGROUND_WORDS, parse_classes, parse_words

    background = (
        ()
        if args.no_background
        else (parse_words(args.background) if args.background is not None else DEFAULT_BACKGROUND_WORDS)
    )
    class_text = args.classes if args.classes is not None else _read_text(Path(args.classes_file))
    rules = LabelRules(
        prob_threshold=args.prob_threshold, area_threshold=args.area_threshold, logit_scale=args.logit_scale
    )
    vocabulary = parse_classes(class_text, background=background)
    if rules.needs_background:  # the class a threshold adds, here so that the outputs know every class up front
        vocabulary = vocabulary.with_background()
    if args.probs_budget <= 0:
        raise InputError(f"--probs-budget must be positive, not {args.probs_budget}")
    stages = Stages.without(*args.disable)
    params = CalibrationParams(detector=args.detector, beta=args.beta)
    refine = refine_from_choices(args.refine)
    config = SegmenterConfig(
        short_side=args.short_side or None,
        crop=args.crop,
        stride=args.stride or None,
        max_input_side=args.max_side or None,
        templates=args.templates,
        pamr_steps=pamr_steps_for(refine, args.pamr_steps),
        pamr_dilations=args.pamr_dilations,
        probs_budget_bytes=int(args.probs_budget * 2**30),
        refine=refine,
        tlp=replace(SegmenterConfig.tlp, grid=args.tlp_grid),
    )
    method_params = method_spec(args.method).params_with(args.method_param)
    options = RunOptions(args.method, stages, params, method_params, rules)
    if any(is_video(item) and not glob.has_magic(item) and not Path(item).is_dir() for item in args.images):
        return _segment_video(args, vocabulary, config, options)
    given = [f"--{name.replace('_', '-')}" for name in VIDEO_OPTIONS if getattr(args, name) is not None]
    if given:
        raise InputError(f"{', '.join(given)} apply to a video input ({', '.join(sorted(VIDEO_SUFFIXES))}), not images")
    paths = expand_images(args.images)
    several = len(paths) > 1 or any(Path(item).is_dir() or glob.has_magic(item) for item in args.images)
    _check_distinct_outputs(paths, args.out, ".png", several)
    _check_distinct_outputs(paths, args.save_probs, ".npy", several)
    coco_from_labels = args.coco is not None and several and args.out is not None
    if args.coco is not None:
        _check_distinct_names(paths)
    process = distributed.start(args.device)
    try:
        if args.coco is not None and not coco_from_labels and process.world_size > 1:
            raise InputError("--coco with several processes needs --out: the COCO file is built from the label maps")
        coco = CocoFile(vocabulary.names, vocabulary.background_index) if args.coco is not None else None
        coco_in_memory = None if coco_from_labels else coco
        outputs = [(args.out, ".png"), (args.save_probs, ".npy")]
        requested = [(option, suffix) for option, suffix in outputs if option is not None]
        resumable = several and process.is_main and (args.coco is None or coco_from_labels)
        done = _finished(paths, requested, len(vocabulary.classes)) if resumable else set()
        done = distributed.broadcast_from_main(done)
        mine = process.shard([path for path in paths if path not in done])
        summary_folder = Path(args.out) if several and args.out is not None else None
        segmenter = _load_segmenter(args, config, process)
        records = None
        if summary_folder is not None:
            with output_errors(summary_folder):
                summary_folder.mkdir(parents=True, exist_ok=True)
            records = open_records(summary_folder / f"{SUMMARY_NAME}.rank{process.rank}")
        failures = 0
        try:
            show = several and process.is_main
            for path in tqdm(mine, desc="segmenting", unit="image", disable=not show, file=sys.stderr):
                record = _segment_one(segmenter, path, vocabulary, args, options, several, coco_in_memory)
                failures += record["status"] == "error"
                if records is not None:
                    append_record(records, {**record, "rank": process.rank})
        finally:
            if records is not None:
                records.close()
        failures = int(distributed.sum_across(np.array([failures], dtype=np.int64))[0])
        distributed.barrier()
        if summary_folder is not None and process.is_main:
            summary = merge_summaries(summary_folder, paths, done)
            if coco is not None and coco_from_labels:
                _add_label_maps(coco, summary, paths, done, args.out)
        if coco is not None and process.is_main:
            coco.write(args.coco)
        if done and process.is_main:
            print(f"skipped {len(done)} image(s) whose outputs exist", file=sys.stderr)
        return 1 if failures else 0
    finally:
        distributed.stop(process)


def _check_distinct_names(paths: list[Path]) -> None:
    """A COCO file names its images by file name, so two inputs may not share one."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            raise InputError(f"{seen[path.name]} and {path} have the same file name, which --coco lists; rename one")
        seen[path.name] = path


def _add_label_maps(coco: CocoFile, summary: Path, paths: list[Path], skipped: set[Path], out: str) -> None:
    """Add the label map in `out` of every image skipped or done in this run (by the summary), in input order.

    A label map that is unreadable, of another size than its image or with values beyond the classes is refused
    (no COCO file is written): it was changed after the run, and a rerun after removing it redoes the image.
    """
    from .eval.datasets import read_label
    from .images import probe_size

    status = {record["image"]: record["status"] for record in read_records(summary, SUMMARY_FIELDS)}
    for path in paths:
        if path not in skipped and status.get(str(path)) != "done":
            continue
        label_path = _output_file(out, path, ".png", True)
        try:
            labels = read_label(label_path, reduce_zero_label=False)
            width, height = probe_size(path)
            if labels.shape != (height, width):
                raise InputError(f"it is {labels.shape[1]}x{labels.shape[0]}, the image {width}x{height}")
            coco.add(labels, path.name)
        except (OSError, ScclipError) as error:
            message = f"label map {label_path} cannot go into the COCO file: {one_line(error)}; remove it and rerun"
            raise InputError(message) from error


def _segment_video(
    args: argparse.Namespace, vocabulary: Vocabulary, config: SegmenterConfig, options: RunOptions
) -> int:
    """Segment one video frame by frame: label maps into the --out folder, the --overlay-video, a line per frame,
    and with --coco one COCO file whose images are the segmented frames (named as their label maps)."""
    from . import distributed
    from .cache import atomic_path
    from .render import overlay
    from .video import VideoWriter, check_sampling, check_smoothing, probe_video, segment_video

    if len(args.images) > 1:
        raise InputError("give one video file on its own, without other inputs")
    if args.save_probs is not None:
        raise InputError("--save-probs is for images; a video writes label maps (--out) and --overlay-video")
    every = 1 if args.every is None else args.every
    check_sampling(every, args.max_frames)
    check_smoothing(args.temporal_smoothing)
    path = Path(args.images[0])
    info = probe_video(path)  # an unreadable file fails before the model loads
    frames = None if args.out is None else Path(args.out)
    if frames is not None and frames.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"for a video, --out is a folder for frame_000000.png and on, not an image file ({frames})")
    if frames is not None:
        with output_errors(frames):
            frames.mkdir(parents=True, exist_ok=True)
    process = distributed.start(args.device)
    try:
        if process.world_size > 1:
            raise InputError("a video is segmented by one process; run it without torchrun")
        coco = CocoFile(vocabulary.names, vocabulary.background_index) if args.coco is not None else None
        segmenter = _load_segmenter(args, config, process)
        with ExitStack() as stack:
            writer = None
            if args.overlay_video is not None:
                target = Path(args.overlay_video)
                stack.enter_context(output_errors(target))
                temporary = stack.enter_context(atomic_path(target))
                writer = stack.enter_context(VideoWriter(temporary, info.frame_rate / every, info.size))
            for frame, result in segment_video(
                segmenter,
                path,
                vocabulary,
                **options._asdict(),
                every=every,
                max_frames=args.max_frames,
                temporal_smoothing=args.temporal_smoothing,
            ):
                written = {}
                if frames is not None:
                    label_path = frames / FRAME_NAME.format(index=frame.index)
                    _write_labels(label_path, result)
                    written["labels"] = str(label_path)
                if writer is not None:
                    tinted = overlay(
                        frame.rgb, result.labels, len(result.class_names), background_index=result.background_index
                    )
                    writer.write(np.asarray(tinted))
                if coco is not None:
                    coco.add(result, FRAME_NAME.format(index=frame.index))
                _report_frame(path, frame.index, frame.time, result, written, args.json)
        if coco is not None:
            coco.write(args.coco)
        if writer is not None and writer.size != writer.frame_size:
            print(
                f"note: {args.overlay_video} is {writer.size[0]}x{writer.size[1]}: H.264 in yuv420p needs even "
                "sides, so the last row or column was repeated",
                file=sys.stderr,
            )
        return 0
    finally:
        distributed.stop(process)


def _report_frame(
    path: Path, index: int, seconds: float, result: Segmentation, written: dict[str, str], as_json: bool
) -> None:
    """One line for a video frame: JSON with the frame's index, time and class shares, or a readable summary."""
    if as_json:
        line = {
            "video": str(path),
            "frame": index,
            "time": round(seconds, 4),
            "classes": result.class_names,
            "shares": result.shares(),
            "outputs": written,
        }
        print(json.dumps(line), flush=True)
    else:
        shares = ", ".join(f"{name} {share:.1%}" for name, share in result.shares().items() if share > 0)
        print(f"{path} frame {index} at {seconds:.2f} s: {shares} ({result.timings['total']:.2f} s)", flush=True)


def _write_labels(path: Path, result: Segmentation) -> None:
    """The label map as a PNG (`render.label_map_image`: palette up to 256 classes), written atomically."""
    from .cache import atomic_path
    from .render import label_map_image

    with output_errors(path), atomic_path(path) as temporary:
        label_map_image(result.labels, len(result.class_names), result.background_index).save(temporary, format="PNG")


def _finished(paths: list[Path], requested: list[tuple[str, str]], classes: int) -> set[Path]:
    """The images whose requested outputs are all complete (see `_complete`): a resume skips them.

    The others are done again; what a killed writer left beside their outputs is removed first.
    """
    finished = set()
    for path in paths:
        targets = [_output_file(option, path, suffix, True) for option, suffix in requested]
        if targets and all(_complete(target, path, classes) for target in targets):
            finished.add(path)
        else:
            for target in targets:
                remove_temporaries(target)
    return finished


def _complete(output: Path, image: Path, classes: int) -> bool:
    """Whether `output` is a whole output of this run for `image`, so that a resume may skip it.

    A label PNG must decode and have the image's size; a probabilities `.npy` must hold all its float32 values
    for `classes` classes. Anything else (missing, empty, torn, someone else's file) means: do the image again.
    """
    from PIL import Image

    from .images import probe_size

    try:
        if output.suffix == ".npy":
            probs = np.load(output, mmap_mode="r", allow_pickle=False)  # too short a file fails to map
            return isinstance(probs, np.ndarray) and probs.dtype == np.float32 and probs.shape[:1] == (classes,)
        with Image.open(output) as labels:
            labels.load()
            return labels.size == probe_size(image)
    except (OSError, EOFError, ValueError, SyntaxError, ScclipError):
        return False


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"could not read classes from {path}: {error}") from error


def _segment_one(
    segmenter: Segmenter,
    path: Path,
    vocabulary: Vocabulary,
    args: argparse.Namespace,
    options: RunOptions,
    several: bool,
    coco: CocoFile | None,
) -> dict:
    """Segment one image and write its outputs (atomically, so a killed run leaves no partial file)."""
    from .cache import atomic_path

    try:
        result = segmenter.segment(path, vocabulary, **options._asdict())
        written: dict[str, object] = {}
        probs_path = _output_path(args.save_probs, path, ".npy", several)
        if probs_path:
            with output_errors(probs_path), atomic_path(probs_path) as temporary:
                with temporary.open("wb") as stream:
                    np.save(stream, result.probs)
            written["probs"] = str(probs_path)
            written["probs_size"] = [result.probs_size[1], result.probs_size[0]]
            if result.probs_note:
                print(f"note: {path}: {result.probs_note}", file=sys.stderr)
        label_path = _output_path(args.out, path, ".png", several)
        if label_path:
            _write_labels(label_path, result)
            written["labels"] = str(label_path)
        if coco is not None:
            coco.add(result, path.name)
    except ScclipError as error:
        print(f"error: {path}: {one_line(error)}", file=sys.stderr)
        return {"image": str(path), "status": "error", "error": str(error)}
    summary = {"image": str(path), **result.to_json(), "outputs": written}
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        shares = ", ".join(f"{name} {share:.1%}" for name, share in result.shares().items() if share > 0)
        print(f"{path}: {shares} ({result.timings['total']:.2f} s)", flush=True)
    return {**summary, "status": "done"}


def main(argv: Sequence[str] | None = None, prog: str = "python -m scclip_core") -> int:
    args = _parser(prog).parse_args(argv)
    if args.command == "eval":
        return eval_cli.run(args, args.command_parser)
    with one_line_warnings():
        try:
            return _segment(args)
        except ScclipError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            return 2


def run() -> None:
    """The `scclip` console script."""
    sys.exit(main(prog="scclip"))


if __name__ == "__main__":
    sys.exit(main())
