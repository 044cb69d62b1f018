"""What the server keeps for each visitor between events, and how much of it in total.

A visitor's latest result lives in one server-side store keyed by Gradio's session id, not in `gr.State`: the
store holds every session's result under one byte budget, drops the least recently used first, and forgets a
result `SESSION_TTL_S` after its last use or when the browser tab closes. A result is kept compact: what
re-rendering needs (the image as processed, uint8 labels, float16 probabilities, float16 inside-view matrices)
and the image side for new classes on the same image.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from scclip_core import CalibrationParams, CropTrace, ImageEmbedding, Segmentation, Stages

SESSION_TTL_S = 20 * 60
DEFAULT_BUDGET_MB = 256
RUN_AGAIN = (
    "Your previous result is no longer kept on the server (results are kept for {minutes} minutes after their last "
    "use, and the oldest go first when many people use the demo). Press **Segment** to run again."
).format(minutes=SESSION_TTL_S // 60)
_TRACE_MATRICES = (
    "mid_similarity", "shallow_similarity", "last_similarity", "calibrated_similarity",
    "attention_uncalibrated", "attention_calibrated",
)


def file_digest(path: str) -> str:
    """SHA-1 of a file's bytes: the same picture uploaded twice gets the same key."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageSideKey:
    """Everything the image side of a run depends on; equal keys mean the embedding can be reused."""

    image_digest: str
    method: str
    stages: Stages
    params: CalibrationParams


@dataclass(frozen=True)
class SessionResult:
    """One session's latest run: the reusable image side, the segmentation as currently thresholded, and the
    downloadable files written for it."""

    key: ImageSideKey
    embedding: ImageEmbedding
    segmentation: Segmentation
    reused_image_side: bool
    input_size: tuple[int, int]  # (width, height) of the upright input, which the label PNG keeps
    summary: dict[str, Any]
    label_path: str
    summary_path: str

    def nbytes(self) -> int:
        """Bytes held by the arrays and tensors of this result, each counted once."""
        return _nbytes(self.embedding, self.segmentation)


def _buffers(value: Any) -> Iterable[np.ndarray | torch.Tensor]:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _buffers(item)
    elif isinstance(value, (ImageEmbedding, Segmentation, CropTrace)):
        for field in fields(value):
            yield from _buffers(getattr(value, field.name))


def _nbytes(*values: Any) -> int:
    seen: dict[int, int] = {}
    for buffer in _buffers(values):
        size = buffer.nbytes if isinstance(buffer, np.ndarray) else buffer.element_size() * buffer.nelement()
        seen[id(buffer)] = size
    return sum(seen.values())


def compact_trace(trace: list[CropTrace] | None) -> list[CropTrace] | None:
    """The inside-view matrices in float16: they are only ever drawn."""
    if trace is None:
        return None
    return [replace(crop, **{name: getattr(crop, name).half() for name in _TRACE_MATRICES}) for crop in trace]


def compact_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return labels.astype(np.uint8 if num_classes <= 256 else np.uint16)


def compact(embedding: ImageEmbedding, segmentation: Segmentation) -> tuple[ImageEmbedding, Segmentation]:
    """The parts of a run that a session keeps, in compact dtypes; the trace is shared by both."""
    trace = compact_trace(embedding.trace)
    kept_embedding = replace(embedding, trace=trace)
    kept_segmentation = replace(
        segmentation,
        image=embedding.image,
        labels=compact_labels(segmentation.labels, len(segmentation.class_names)),
        probs=segmentation.probs.astype(np.float16),
        trace=trace,
    )
    return kept_embedding, kept_segmentation


def _release_freed_memory() -> Callable[[], None]:
    """glibc's malloc_trim, which hands freed heap pages back to the system; a no-op elsewhere."""
    library = ctypes.util.find_library("c") if os.name == "posix" else None
    try:
        trim = ctypes.CDLL(library).malloc_trim if library else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    return lambda: trim(0)


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
        self._release = _release_freed_memory()

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
            self._release()

    def get(self, session_id: str) -> SessionResult | None:
        """The session's latest result, or None when it never ran, expired or was evicted."""
        with self._lock:
            freed = self._expire()
            entry = self._entries.get(session_id)
            if entry is not None:
                self._entries[session_id] = (entry[0], entry[1], self._clock())
                self._entries.move_to_end(session_id)
        if freed:
            self._release()
        return None if entry is None else entry[0]

    def discard(self, session_id: str) -> None:
        """Forget a session (its tab was closed)."""
        with self._lock:
            freed = self._pop(session_id)
        if freed:
            self._release()

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
