"""What the server keeps for each visitor between events, and how much of it in total.

A visitor's latest result lives in one server-side store keyed by Gradio's session id, not in `gr.State`: the
store holds every session's result under one byte budget, drops the least recently used first, and forgets a
result `SESSION_TTL_S` after its last use or when the browser tab closes. A result is kept compact: what
re-rendering needs (the image as processed, its labels, the engine's `CompactScores`, whose size at the input size
does not grow with the number of classes, float16 inside-view matrices) and the image side for new classes on the
same image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from demo.memory import release_freed_memory
from demo.timings import RequestTimings
from scclip_core import ImageEmbedding, Segmentation
from scclip_core.scores import CompactScores

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
class SessionResult:
    """One session's latest run: the reusable image side (its `key` says what for), the segmentation as currently
    thresholded (holding `CompactScores`: see `compact`), where the visitor's wait went, and the downloadable files
    written for it.
    `upload_digest` identifies the uploaded file, so the same file sent again is not decoded again."""

    upload_digest: str
    embedding: ImageEmbedding
    segmentation: Segmentation
    timings: RequestTimings
    input_size: tuple[int, int]  # (width, height) of the upright input, which the label PNG keeps
    summary: dict[str, Any]
    label_path: str
    summary_path: str
    coco_path: str  # the COCO masks of the label PNG's pixels

    @property
    def reused_image_side(self) -> bool:
        """Whether the kept image side of the session's previous run served this one."""
        return self.timings.image is None

    def nbytes(self) -> int:
        """Bytes held by the arrays and tensors of this result, each counted once."""
        return _nbytes(self.embedding, self.segmentation)

    @property
    def scores(self) -> CompactScores:
        """The kept scores: what relabelling and the probability maps read."""
        scores = self.segmentation.pixel_scores
        if not isinstance(scores, CompactScores):
            raise TypeError("a kept result holds compact scores; build it with `compact`")
        return scores


def _buffers(value: Any) -> Iterable[np.ndarray | torch.Tensor]:
    """Every array and tensor inside `value`: through lists, tuples (`TextState`) and dataclasses (`ImageEmbedding`,
    a method's text-pass state such as ResCLIP's keys, values, RCS attention and crops), not into modules (the model's
    own weights, which a state may point to, are no session's)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _buffers(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in fields(value):
            yield from _buffers(getattr(value, field.name))


def _nbytes(*values: Any) -> int:
    """Bytes held by the arrays and tensors inside `values`, each memory block counted once: a tensor counts its
    whole storage (a slice keeps all of it alive), an array the buffer it views."""
    seen: dict[int, int] = {}
    for buffer in _buffers(values):
        if isinstance(buffer, torch.Tensor):
            storage = buffer.untyped_storage()
            seen[storage.data_ptr() or id(storage)] = storage.nbytes()
        else:
            base = buffer if buffer.base is None else buffer.base
            seen[id(base)] = base.nbytes if isinstance(base, np.ndarray) else buffer.nbytes
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


def compact(embedding: ImageEmbedding, segmentation: Segmentation) -> tuple[ImageEmbedding, Segmentation]:
    """The parts of a run that a session keeps: the trace in float16 (shared by embedding and segmentation), and
    the segmentation's working-size scores made `CompactScores` (class probabilities in KEPT_PROBS_BYTES)."""
    trace = compact_trace(embedding.trace)
    return replace(embedding, trace=trace), replace(segmentation.compact(KEPT_PROBS_BYTES), trace=trace)


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
