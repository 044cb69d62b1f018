"""What the server keeps for each visitor between events, and how much of it in total.

A visitor's latest result lives in one server-side store keyed by Gradio's session id, not in `gr.State`: the
store holds every session's result under one byte budget, drops the least recently used first, and forgets a
result `SESSION_TTL_S` after its last use or when the browser tab closes. A result is kept compact: what
re-rendering needs (the image as processed, its labels, a `Relabeller` whose size does not grow with the
number of classes, float16 inside-view matrices) and the image side for new classes on the same image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from demo.memory import release_freed_memory
from scclip_core import ImageEmbedding, Segmentation, label_dtype
from scclip_core.scores import small_classes

SESSION_TTL_S = 20 * 60
DEFAULT_BUDGET_MB = 192
KEPT_PROBS_BYTES = 2 << 20
RUN_AGAIN = (
    "Your previous result is no longer kept on the server "
    f"(results are kept for {SESSION_TTL_S // 60} minutes after their last use, and the oldest go first when many "
    "people use the demo). Press **Segment** to run again."
)
_HALF_PRECISION_VIEWS = (
    "mid_similarity",
    "last_similarity",
    "calibrated_similarity",
    "attention_uncalibrated",
    "attention_calibrated",
    "vanilla_embeddings",
)


def file_digest(path: str) -> str:
    """SHA-1 of a file's bytes: the same picture uploaded twice gets the same digest."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Relabeller:
    """What relabelling under new thresholds needs, in memory that does not grow with the number of classes.

    `best_class` and `best_prob` are the unthresholded argmax and its probability at the output size, which
    makes the probability rule exact; `probs` holds every class's probability at a reduced size (at most
    KEPT_PROBS_BYTES in float16), for the second choices of pixels whose class the area rule drops, and for
    the heatmaps.
    """

    best_class: np.ndarray
    best_prob: np.ndarray
    probs: np.ndarray

    @classmethod
    def from_segmentation(cls, segmentation: Segmentation, probs_bytes: int = KEPT_PROBS_BYTES) -> Relabeller:
        """Built from a segmentation's pixel scores at its input size and logit scale, band by band: never
        C x H x W at the output size."""
        scores, size, logit_scale = segmentation.pixel_scores, segmentation.input_size, segmentation.rules.logit_scale
        band = scores.band_probabilities(size, logit_scale)
        best_class = np.empty(size, dtype=label_dtype(scores.num_classes))
        best_prob = np.empty(size, dtype=np.float32)
        step = scores.band_rows(size[1])
        with torch.inference_mode():
            for top in range(0, size[0], step):
                best, index = band(top, min(top + step, size[0])).max(dim=0)
                best_prob[top : top + step] = best.cpu().numpy()
                best_class[top : top + step] = index.cpu().numpy()
        scale = min(1.0, math.sqrt(probs_bytes / (2 * scores.num_classes * size[0] * size[1])))
        small = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
        return cls(best_class, best_prob, scores.probabilities(small, logit_scale).astype(np.float16))

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[0])

    def with_empty_class(self) -> Relabeller:
        """One more class that no pixel prefers (a query-less background that only takes rejected pixels)."""
        empty = np.zeros((1, *self.probs.shape[1:]), dtype=self.probs.dtype)
        return replace(self, probs=np.concatenate([self.probs, empty]))

    def labels(self, background_index: int, prob_threshold: float, area_threshold: float | None) -> np.ndarray:
        """Labels under the background rules' thresholds, as the engine's `label_map` assigns them (see there); the
        logit scale is the one the relabeller was built at."""
        labels = self.best_class.copy()
        best = self.best_prob
        if area_threshold:
            areas = np.bincount(self.best_class.ravel(), minlength=self.num_classes)
            small = small_classes(areas, background_index, area_threshold)
            rows, columns = np.nonzero(small[self.best_class])
            if rows.size:
                height, width = labels.shape
                candidates = self.probs[:, rows * self.probs.shape[1] // height, columns * self.probs.shape[2] // width]
                candidates = candidates.astype(np.float32)
                candidates[small] = 0.0
                labels[rows, columns] = candidates.argmax(axis=0)
                best = best.copy()
                best[rows, columns] = candidates.max(axis=0)
        if prob_threshold > 0:
            labels[best < prob_threshold] = background_index
        return labels


@dataclass(frozen=True)
class SessionResult:
    """One session's latest run: the reusable image side (its `key` says what for), the segmentation as currently
    thresholded, and the downloadable files written for it. `upload_digest` identifies the uploaded file, so the
    same file sent again is not decoded again."""

    upload_digest: str
    embedding: ImageEmbedding
    segmentation: Segmentation
    relabeller: Relabeller
    reused_image_side: bool
    input_size: tuple[int, int]  # (width, height) of the upright input, which the label PNG keeps
    summary: dict[str, Any]
    label_path: str
    summary_path: str

    def nbytes(self) -> int:
        """Bytes held by the arrays and tensors of this result, each counted once."""
        return _nbytes(self.embedding, self.segmentation, self.relabeller)


def _buffers(value: Any) -> Iterable[np.ndarray | torch.Tensor]:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _buffers(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in fields(value):
            yield from _buffers(getattr(value, field.name))


def _nbytes(*values: Any) -> int:
    seen: dict[int, int] = {}
    for buffer in _buffers(values):
        size = buffer.nbytes if isinstance(buffer, np.ndarray) else buffer.element_size() * buffer.nelement()
        seen[id(buffer)] = size
    return sum(seen.values())


def compact_trace(trace: list | None) -> list | None:
    """The inside-view matrices (only ever drawn) and the vanilla patch embeddings (only ranked against text) in
    float16; the parts never shown are dropped."""
    if trace is None:
        return None
    empty = torch.empty(0, dtype=torch.float16)
    return [
        replace(crop, shallow_similarity=empty, **{name: getattr(crop, name).half() for name in _HALF_PRECISION_VIEWS})
        for crop in trace
    ]


def compact(embedding: ImageEmbedding, segmentation: Segmentation) -> tuple[ImageEmbedding, Segmentation, Relabeller]:
    """The parts of a run that a session keeps: the trace in float16 (shared by embedding and segmentation),
    and the segmentation's working-size scores replaced by a `Relabeller`."""
    trace = compact_trace(embedding.trace)
    relabeller = Relabeller.from_segmentation(segmentation)
    return (
        replace(embedding, trace=trace),
        replace(segmentation, pixel_scores=None, trace=trace),
        relabeller,
    )


class SessionStore:
    """Every visitor's latest result under one byte budget: least recently used first out, and nothing kept
    longer than `ttl_s` after its last use. Thread-safe."""

    def __init__(
        self,
        budget_bytes: int = DEFAULT_BUDGET_MB << 20,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[SessionResult, int, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def put(self, session_id: str, result: SessionResult) -> None:
        """Keep `result` as the session's latest, evicting the least recently used sessions beyond the budget
        (the newest result always stays, even alone over the budget)."""
        size = result.nbytes()
        with self._lock:
            self._pop(session_id)
            self._entries[session_id] = (result, size, self._clock())
            self._bytes += size
            freed = self._expire()
            while self._bytes > self.budget_bytes and len(self._entries) > 1:
                self._pop(next(iter(self._entries)))
                freed = True
        if freed:
            release_freed_memory()

    def get(self, session_id: str) -> SessionResult | None:
        """The session's latest result, or None when it never ran, expired or was evicted."""
        with self._lock:
            freed = self._expire()
            entry = self._entries.get(session_id)
            if entry is not None:
                self._entries[session_id] = (entry[0], entry[1], self._clock())
                self._entries.move_to_end(session_id)
        if freed:
            release_freed_memory()
        return None if entry is None else entry[0]

    def discard(self, session_id: str) -> None:
        """Forget a session (its tab was closed)."""
        with self._lock:
            freed = self._pop(session_id)
        if freed:
            release_freed_memory()

    def _pop(self, session_id: str) -> bool:
        entry = self._entries.pop(session_id, None)
        if entry is None:
            return False
        self._bytes -= entry[1]
        return True

    def _expire(self) -> bool:
        cutoff = self._clock() - self.ttl_s
        expired = [key for key, (_, _, used) in self._entries.items() if used < cutoff]
        for key in expired:
            self._pop(key)
        return bool(expired)
