"""The evaluation loop: shard images over processes, segment, accumulate confusion matrices, resume.

Each finished image is appended as one JSON line (its id and sparse confusion matrix) to
`<run dir>/records/rank<R>.jsonl`, so an interrupted run loses at most the image in flight; a rerun with the
same settings finds the same run directory and skips the images already recorded, whatever the number of
processes. Scores are always computed over exactly the selected images (`limit` takes the first N).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from tqdm import tqdm

from .. import (
    CalibrationParams,
    LoadedModel,
    Segmenter,
    Stages,
    TextEmbeddingCache,
    Vocabulary,
    distributed,
    load_model,
)
from ..backbones import precision_name
from ..cache import atomic_write
from ..config import DEFAULT_MODEL, Method
from ..errors import InputError, ScclipError, output_errors
from ..records import Record, append_record, open_records, read_records
from .benchmarks import Benchmark, get_benchmark
from .datasets import LAYOUTS, DatasetLayoutError, Sample, list_samples, read_image, read_label
from .metrics import SegmentationScores, confusion_matrix, from_sparse, scores, to_sparse

RECORD_FORMAT = 1
RECORD_FIELDS = {"id": str, "num_classes": int, "confusion": list}


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes the numbers; equal settings share a run directory (and resume).

    The prompt templates are the benchmark's (`benchmark.config.templates`).
    """

    benchmark: Benchmark
    model_name: str
    weights: str
    method: Method = "sc-clip"
    stages: Stages = field(default_factory=Stages)
    params: CalibrationParams = field(default_factory=CalibrationParams)
    protocol: str = "scclip"

    def to_json(self) -> dict[str, object]:
        return {
            "dataset": self.benchmark.name,
            "protocol": self.protocol,
            "preset": self.benchmark.settings(),  # the key older run folders were named with
            "model": self.model_name,
            "weights": self.weights,
            "method": self.method,
            "stages": dataclasses.asdict(self.stages),
            "params": dataclasses.asdict(self.params),
            "templates": self.benchmark.config.templates,
            "record_format": RECORD_FORMAT,
        }

    def run_name(self) -> str:
        """`<dataset>-<method>-<model>-<hash>`: readable, and unique per setting."""
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:8]
        model = "".join(c if c.isalnum() else "-" for c in self.model_name).strip("-")
        return f"{self.benchmark.name}-{self.method}-{model}-{digest}"


@dataclass(frozen=True)
class EvalResult:
    """Scores over all selected images plus how this run went."""

    settings: EvalSettings
    scores: SegmentationScores
    confusion: np.ndarray
    images: int
    images_this_run: int
    seconds_this_run: float
    world_size: int
    run_dir: Path | None
    notices: tuple[str, ...] = ()

    @property
    def images_per_second(self) -> float | None:
        if self.images_this_run == 0 or self.seconds_this_run <= 0:
            return None
        return self.images_this_run / self.seconds_this_run

    def to_json(self) -> dict[str, object]:
        return {
            **self.settings.to_json(),
            "title": self.settings.benchmark.title,
            "images": self.images,
            "images_this_run": self.images_this_run,
            "seconds_this_run": round(self.seconds_this_run, 3),
            "images_per_second": None if self.images_per_second is None else round(self.images_per_second, 4),
            "world_size": self.world_size,
            "notices": list(self.notices),
            **self.scores.to_json(),
            "confusion_matrix": self.confusion.tolist(),
        }

    def table(self) -> str:
        """A terminal table: one row per class, then the means."""
        settings = self.settings
        rate = (
            "n/a (all images were already done)"
            if self.images_per_second is None
            else (f"{self.images_per_second:.2f} img/s over {self.world_size} process(es)")
        )
        width = max(12, *(len(name) for name in self.scores.class_names))
        lines = [
            f"{settings.benchmark.name}: {settings.benchmark.title}",
            f"model {settings.model_name} ({settings.weights}), method {settings.method}, "
            f"protocol {settings.protocol}, PAMR steps {settings.benchmark.config.pamr_steps}, "
            f"stages off: {', '.join(n for n in Stages.names() if not getattr(settings.stages, n)) or 'none'}",
            f"{self.images} images, {rate}",
            *(f"note: {notice}" for notice in self.notices),
            "",
            f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}",
            f"{'-' * width}  {'-' * 6}  {'-' * 6}",
        ]
        for name, iou, accuracy in zip(self.scores.class_names, self.scores.iou, self.scores.accuracy):
            lines.append(f"{name:<{width}}  {_percent(iou)}  {_percent(accuracy)}")
        lines += [
            f"{'-' * width}  {'-' * 6}  {'-' * 6}",
            f"mIoU {self.scores.miou:.2f}   mAcc {self.scores.macc:.2f}   aAcc {self.scores.aacc:.2f}",
        ]
        if self.run_dir is not None:
            lines.append(f"results: {self.run_dir / 'results.json'}")
        return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{'-':>6}" if math.isnan(value) else f"{value:6.2f}"


class RecordStore:
    """Per-image confusion records under `<run dir>/records/`, one append-only JSON-lines file per rank."""

    def __init__(self, run_dir: Path, num_classes: int) -> None:
        self.records_dir = run_dir / "records"
        self.num_classes = num_classes

    def load(self) -> dict[str, np.ndarray]:
        """Confusion matrix per recorded image id (see `records.read_records` for the lines that are skipped).

        Raises InputError when the records are for another number of classes: the folder belongs to another run.
        """
        done: dict[str, np.ndarray] = {}
        for path in sorted(self.records_dir.glob("rank*.jsonl")):
            for record in read_records(path, RECORD_FIELDS, check=self._check_cells):
                if record["num_classes"] != self.num_classes:
                    raise InputError(
                        f"{path} holds records for {record['num_classes']} classes, "
                        f"not {self.num_classes}; use a fresh output folder"
                    )
                done.setdefault(record["id"], from_sparse(record["confusion"], self.num_classes))
        return done

    def _check_cells(self, record: Record) -> None:
        from_sparse(record["confusion"], record["num_classes"])

    def clear(self) -> None:
        """Forget every recorded image (start the run over)."""
        for path in self.records_dir.glob("rank*.jsonl"):
            path.unlink()

    def open_for_rank(self, rank: int) -> TextIO:
        """The rank's file for appending (see `records.open_records`)."""
        return open_records(self.records_dir / f"rank{rank}.jsonl")

    @staticmethod
    def append(stream: TextIO, sample_id: str, matrix: np.ndarray, seconds: float) -> None:
        record = {
            "id": sample_id,
            "num_classes": matrix.shape[0],
            "seconds": round(seconds, 4),
            "confusion": to_sparse(matrix),
        }
        append_record(stream, record)


def build_vocabulary(benchmark: Benchmark) -> Vocabulary:
    """The benchmark's classes in label order, so class index == ground-truth label value."""
    return Vocabulary(classes=benchmark.queries, background_index=benchmark.background_index)


_TEXT_CACHES: weakref.WeakKeyDictionary[torch.nn.Module, TextEmbeddingCache] = weakref.WeakKeyDictionary()


def build_segmenter(model: LoadedModel, benchmark: Benchmark) -> Segmenter:
    """A segmenter with the benchmark's protocol (for the benchmarks: keep-ratio resize, sliding windows, no input cap).

    Segmenters of the same model share text embeddings in memory, so sweeps over stages or thresholds embed
    each class list once; the on-disk cache (keyed by the weights' content) carries them across runs.
    """
    text_cache = _TEXT_CACHES.setdefault(model.clip, TextEmbeddingCache.default())
    return Segmenter(model, benchmark.config, text_cache=text_cache)


def predict_labels(
    segmenter: Segmenter, vocabulary: Vocabulary, image: np.ndarray, settings: EvalSettings
) -> np.ndarray:
    """Predicted class indices (H, W) at the image's own resolution, under the benchmark's rules."""
    embedding = segmenter.embed_image(
        image,
        method=settings.method,
        stages=settings.stages,
        params=settings.params,
        method_params=settings.benchmark.method_params,
    )
    return segmenter.predict(vocabulary, embedding=embedding, rules=settings.benchmark.rules).labels


def evaluate(
    benchmark: Benchmark | str,
    root: str | os.PathLike[str],
    model: LoadedModel,
    *,
    method: Method = "sc-clip",
    stages: Stages | None = None,
    params: CalibrationParams | None = None,
    templates: str | None = None,
    protocol: str = "scclip",
    out: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    resume: bool = True,
    show_progress: bool = True,
) -> EvalResult:
    """Evaluate `model` on one benchmark; the library form of `python -m scclip_core.eval`.

    Under `torchrun` each process takes every world_size-th remaining image and the confusion matrices are
    summed over processes; every process returns the same result. With `out`, per-image records and
    `results.json` go to `<out>/<run name>/`, and images recorded there before are not run again
    (`resume=False` deletes those records first). A dataset name selects its benchmark for this model, method
    and `protocol` (`scclip` or `own`, see `get_benchmark`); a Benchmark is used as given. `templates` replaces
    the benchmark's prompt templates (None: the benchmark's).
    """
    if isinstance(benchmark, str):
        benchmark = get_benchmark(benchmark, model.name, method=method, protocol=protocol)
    benchmark = benchmark.with_overrides(precision=precision_name(model.dtype))  # what runs, e.g. fp32 on the CPU
    if templates is not None:
        benchmark = benchmark.with_overrides(templates=templates)
    settings = EvalSettings(
        benchmark=benchmark,
        model_name=model.name,
        weights=model.weights,
        method=method,
        stages=stages or Stages(),
        params=params or CalibrationParams(),
        protocol=protocol,
    )
    process = distributed.start(str(model.device))
    try:
        return _evaluate_in_group(settings, root, model, process, out, limit, resume, show_progress)
    finally:
        distributed.stop(process)


def _evaluate_in_group(
    settings: EvalSettings,
    root: str | os.PathLike[str],
    model: LoadedModel,
    process: distributed.ProcessInfo,
    out: str | os.PathLike[str] | None,
    limit: int | None,
    resume: bool,
    show_progress: bool,
) -> EvalResult:
    benchmark = settings.benchmark
    samples = list_samples(LAYOUTS[benchmark.layout], root, limit)
    run_dir = Path(out) / settings.run_name() if out is not None else None
    store = RecordStore(run_dir, benchmark.num_classes) if run_dir is not None else None

    if store is not None and process.is_main and not resume:
        store.clear()
    recorded: dict[str, np.ndarray] = store.load() if store is not None and process.is_main else {}
    selected_ids = {sample.id for sample in samples}
    previous = np.zeros((benchmark.num_classes, benchmark.num_classes), dtype=np.int64)
    for sample_id, matrix in recorded.items():
        if sample_id in selected_ids:
            previous += matrix
    done_ids = distributed.broadcast_from_main(set(recorded) & selected_ids)
    remaining = [sample for sample in samples if sample.id not in done_ids]
    mine = process.shard(remaining)
    if run_dir is not None and process.is_main:
        _write_json(run_dir / "settings.json", settings.to_json())
    distributed.barrier()

    segmenter = build_segmenter(model, benchmark)
    vocabulary = build_vocabulary(benchmark)
    label = benchmark.name if process.world_size == 1 else f"{benchmark.name} rank 0/{process.world_size}"
    show = show_progress and process.is_main and bool(mine)
    progress = tqdm(total=len(mine), desc=label, unit="image", file=sys.stderr, disable=not show)

    started = time.perf_counter()
    with progress:
        current = _evaluate_samples(mine, segmenter, vocabulary, settings, store, process.rank, progress)
    seconds = distributed.max_across(time.perf_counter() - started)
    current = distributed.sum_across(current)
    processed = int(distributed.sum_across(np.array([len(mine)], dtype=np.int64))[0])
    total = distributed.broadcast_from_main(previous) + current

    notices = ("weights are random (untrained): scores are meaningless",) if model.is_random else ()
    result = EvalResult(
        settings=settings,
        scores=scores(total, benchmark.class_names),
        confusion=total,
        images=len(samples),
        images_this_run=processed,
        seconds_this_run=seconds if processed else 0.0,
        world_size=process.world_size,
        run_dir=run_dir,
        notices=notices,
    )
    if run_dir is not None and process.is_main:
        _write_json(run_dir / "results.json", result.to_json())
    distributed.barrier()
    return result


def _evaluate_samples(
    samples: list[Sample],
    segmenter: Segmenter,
    vocabulary: Vocabulary,
    settings: EvalSettings,
    store: RecordStore | None,
    rank: int,
    progress: tqdm,
) -> np.ndarray:
    """Summed confusion matrix over `samples`, recording each image as it finishes."""
    benchmark = settings.benchmark
    total = np.zeros((benchmark.num_classes, benchmark.num_classes), dtype=np.int64)
    if not samples:
        return total
    records = store.open_for_rank(rank) if store is not None else None
    try:
        started = time.perf_counter()
        for sample, image, truth in _read_ahead(samples, benchmark):
            with torch.inference_mode():
                predicted = predict_labels(segmenter, vocabulary, image, settings)
            if predicted.shape != truth.shape:
                raise ScclipError(
                    f"the segmenter returned {predicted.shape} labels for a {truth.shape} image "
                    f"({sample.image_path}); evaluation needs the original resolution"
                )
            matrix = confusion_matrix(truth, predicted, benchmark.num_classes, benchmark.ignore_index)
            total += matrix
            finished = time.perf_counter()
            if records is not None:
                RecordStore.append(records, sample.id, matrix, finished - started)
            started = finished
            progress.update()
    finally:
        if records is not None:
            records.close()
    return total


def _read_sample(sample: Sample, benchmark: Benchmark) -> tuple[Sample, np.ndarray, np.ndarray]:
    with _undecodable(sample.image_path):
        image = read_image(sample.image_path)
    with _undecodable(sample.label_path):
        truth = read_label(sample.label_path, benchmark.reduce_zero_label, benchmark.ignore_index)
    if truth.shape != image.shape[:2]:
        raise DatasetLayoutError(
            f"{sample.label_path} is {truth.shape[1]}x{truth.shape[0]} but its image "
            f"{sample.image_path} is {image.shape[1]}x{image.shape[0]}"
        )
    return sample, image, truth


@contextmanager
def _undecodable(path: Path) -> Iterator[None]:
    """A dataset file that does not decode (torn, empty, not an image) becomes a DatasetLayoutError naming it."""
    try:
        yield
    except ScclipError:
        raise
    except (OSError, ValueError) as error:
        raise DatasetLayoutError(f"could not read {path}: {error}") from error


def _read_ahead(samples: list[Sample], benchmark: Benchmark) -> Iterator[tuple[Sample, np.ndarray, np.ndarray]]:
    """(sample, image, labels) in order, decoding the next files on a thread while the model runs."""
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(_read_sample, samples[0], benchmark)
        for following in [*samples[1:], None]:
            current = pending.result()
            if following is not None:
                pending = reader.submit(_read_sample, following, benchmark)
            yield current


def _write_json(path: Path, data: dict[str, object]) -> None:
    """Write atomically, so a reader never sees half a file (OutputError when it cannot be written)."""
    with output_errors(path):
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def run_benchmark(
    dataset: str,
    root: str | os.PathLike[str],
    *,
    model_name: str = DEFAULT_MODEL,
    weights: str | None = None,
    method: Method = "sc-clip",
    disable: tuple[str, ...] = (),
    params: CalibrationParams | None = None,
    overrides: dict[str, object] | None = None,
    templates: str | None = None,
    protocol: str = "scclip",
    out: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    resume: bool = True,
    device: str | None = None,
    precision: str | None = None,
    show_progress: bool = True,
) -> EvalResult:
    """Load the model and evaluate it on a named benchmark with its benchmark under `protocol` (plus `overrides`).

    `weights` is a tag, checkpoint path or 'random' (None: the model's own default tag, see `resolve_weights`).

    On CUDA the model runs at the benchmark's precision unless `precision` says otherwise; on the CPU in fp32.
    """
    benchmark = get_benchmark(dataset, model_name, method=method, protocol=protocol).with_overrides(**(overrides or {}))
    stages = Stages.without(*disable)
    list_samples(LAYOUTS[benchmark.layout], root, limit)  # a wrong root fails now, not after loading weights
    process = distributed.start(device)
    try:
        torch.manual_seed(0)  # weights="random" must give every process the same model
        if precision is None and process.device.startswith("cuda"):
            precision = benchmark.precision
        model = load_model(model_name, weights, device=process.device, precision=precision)
        return evaluate(
            benchmark,
            root,
            model,
            method=method,
            stages=stages,
            params=params,
            templates=templates,
            protocol=protocol,
            out=out,
            limit=limit,
            resume=resume,
            show_progress=show_progress,
        )
    finally:
        distributed.stop(process)
