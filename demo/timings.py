"""Where the time a visitor waited went, from the moment Gradio received the request: the one place that builds
the timings the status line, the timings panel, the JSON summary (and so the API) and `SessionResult.timings` show.

The queue wait is read from Gradio's own record of when it queued the event (`Event.enqueue_time`, found through
the event id Gradio sets for the running handler); where Gradio exposes none (a direct call, a test), it counts from
the handler's start. The model's parts are wall time, turns at the model included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import NamedTuple

from gradio.context import LocalContext

REUSED = "reused"


def gradio_queue_seconds() -> float:
    """Seconds since Gradio queued the running event, or 0 when no queued event is running this thread."""
    event_id = LocalContext.event_id.get(None)
    blocks = LocalContext.blocks.get(None)
    queue = getattr(blocks, "_queue", None)
    event = getattr(queue, "event_ids_to_events", {}).get(event_id) if event_id else None
    enqueued = getattr(event, "enqueue_time", None)
    return max(0.0, time.monotonic() - enqueued) if isinstance(enqueued, float) else 0.0


class ModelTimes(NamedTuple):
    """The model's share of a run, in seconds: the text encoded for this request (all its turns), the image side
    (None: the kept one served) and the prediction."""

    text: float
    image: float | None
    prediction: float


@dataclass(frozen=True)
class RequestTimings:
    """Every part of one request's wait, in seconds: `queue` (in Gradio's queue, then for a slot at the model),
    the model's parts, and `total` from receipt to the result; `other` is the rest (reading and checking the
    input, keeping the result)."""

    queue: float
    text: float
    image: float | None
    prediction: float
    total: float

    @property
    def other(self) -> float:
        return max(0.0, self.total - self.queue - self.text - (self.image or 0.0) - self.prediction)

    def as_json(self) -> dict[str, float | str]:
        """The summary's `timings`: seconds per part, the image side "reused" when the kept one served."""
        return {
            "queue": round(self.queue, 4),
            "text": round(self.text, 4),
            "image": REUSED if self.image is None else round(self.image, 4),
            "prediction": round(self.prediction, 4),
            "other": round(self.other, 4),
            "total": round(self.total, 4),
        }

    def line(self) -> str:
        """One line for the page: "queue 0.12 s · text 1.40 s · image reused · ... · total 2.10 s"."""
        return " · ".join(
            f"{name} {value}" if isinstance(value, str) else f"{name} {value:.2f} s"
            for name, value in self.as_json().items()
        )


@dataclass(frozen=True)
class RequestClock:
    """Started when the handler starts, knowing the seconds the request spent in Gradio's queue before it;
    `slot_wait` adds the wait for a slot at the model, which is queue too."""

    started: float
    gradio_queue: float
    slot_wait: float = 0.0

    @classmethod
    def start(cls) -> RequestClock:
        return cls(time.perf_counter(), gradio_queue_seconds())

    def waited(self, seconds: float) -> RequestClock:
        """The same clock, having waited `seconds` for a slot at the model."""
        return replace(self, slot_wait=self.slot_wait + seconds)

    def timings(self, model: ModelTimes) -> RequestTimings:
        """The request's timings, its total ending now."""
        total = self.gradio_queue + time.perf_counter() - self.started
        return RequestTimings(self.gradio_queue + self.slot_wait, model.text, model.image, model.prediction, total)
