"""Live events: webcam frames segmented as they come, at a reduced size, under the left column's settings.

Gradio runs one stream per visitor as one long event: the browser captures a frame only while none is pending, and
the server keeps only the latest frame that arrived during a run, so frames are never queued. On top of that, a
frame that reaches `frame` while the same visitor's previous one is still running (another stream of the same
session) is dropped at once (`gr.skip()`) and counted, never waited for.
"""

from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from PIL import Image

from demo.events.common import leave_others, session_id, user_error
from demo.events.segmenting import DEFAULT_BACKGROUND, SegmentEvents
from demo.host import ModelHost, run_frame
from demo.inputs import (
    DEFAULT_BETA,
    DEFAULT_DETECTOR,
    DEFAULT_METHOD,
    DEFAULT_TEMPLATES,
    RequestLimits,
    RequestSettings,
    parse_vocabulary,
)
from demo.labels import METHOD_REFINEMENTS
from demo.timings import ModelTimes
from demo.views import legend_html, overlay_picture
from scclip_core import InputError, ScclipError, Segmentation, Vocabulary, to_rgb_array
from scclip_core.images import cap_size

FPS_WINDOW = 10  # the achieved frame rate is measured over the last frames done
LIVE_SESSIONS = 256  # visitors whose live counters are kept; the oldest are forgotten first
NO_FRAME = "Start the webcam (the record button under the picture): frames are segmented as they come."


def live_sides(limits: RequestLimits) -> tuple[int, ...]:
    """The long sides a visitor may choose for live frames: half to twice the default `limits.live_side`."""
    side = limits.live_side
    return (side // 2, side, side * 3 // 2, side * 2)


class LiveFrame(NamedTuple):
    live_output: Any
    live_legend: Any
    live_status: Any


@dataclass
class LiveSession:
    """One visitor's live stream: the lock a frame holds while it runs, the frames done and dropped, the last
    message shown as a warning (so bad input is announced once, not once per frame)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: deque[float] = field(default_factory=lambda: deque(maxlen=FPS_WINDOW))
    frames: int = 0
    dropped: int = 0
    warned: str | None = None

    def fps(self) -> float | None:
        """Frames per second over the last frames done; None before two are."""
        if len(self.done) < 2 or self.done[-1] <= self.done[0]:
            return None
        return (len(self.done) - 1) / (self.done[-1] - self.done[0])


def live_pictures(segmentation: Segmentation) -> tuple[Image.Image, str]:
    """The overlay and the legend of one frame, drawn as on the Segment tab."""
    return overlay_picture(segmentation), legend_html(segmentation)


def status_line(session: LiveSession, size: tuple[int, int], milliseconds: float) -> str:
    fps = session.fps()
    rate = f"{fps:.1f} frames/s" if fps is not None else "measuring frames/s"
    return (
        f"{rate} · last frame {milliseconds:.0f} ms at {size[0]}x{size[1]} · {session.frames} segmented, "
        f"{session.dropped} dropped (arrived while the previous one was running)"
    )


class LiveEvents:
    """Webcam frames through `run_frame`, one at a time per visitor."""

    def __init__(self, host: ModelHost, segmenting: SegmentEvents) -> None:
        self.host = host
        self.segmenting = segmenting
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()
        self._guard = threading.Lock()

    def session(self, key: str) -> LiveSession:
        """The visitor's live state, made on first use; the least recently used visitors' are forgotten."""
        with self._guard:
            session = self._sessions.pop(key, None) or LiveSession()
            self._sessions[key] = session
            while len(self._sessions) > LIVE_SESSIONS:
                self._sessions.popitem(last=False)
            return session

    def side(self, value: Any) -> int:
        """The chosen long side, one of `live_sides` (None: the default)."""
        if value is None or value == "":
            return self.host.limits.live_side
        sides = live_sides(self.host.limits)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or str(value) not in map(str, sides):
            raise InputError(f"the live frame size must be one of {', '.join(map(str, sides))} px, not {value!r}")
        return int(value)

    def segment(
        self, rgb: np.ndarray, vocabulary: Vocabulary, settings: RequestSettings, side: int
    ) -> tuple[Segmentation, ModelTimes]:
        """One frame with its long side at `side`, by the segmenter `text_segmenter` chooses, in `live_segmenter`'s
        copy that keeps the frame at that size; with the seconds each part took."""
        segmenter, notice = self.host.text_segmenter(vocabulary, settings.templates)
        small, _ = cap_size(rgb, side)
        segmentation, times = run_frame(self.host, small, vocabulary, settings, self.host.live_segmenter(segmenter))
        if notice:
            segmentation.notices.append(notice)
        return segmentation, times

    @user_error
    def frame(
        self,
        frame: np.ndarray | None,
        classes_text: str,
        background_words: str = DEFAULT_BACKGROUND,
        prob_threshold: float | None = None,
        method: str = DEFAULT_METHOD,
        stage_names: Any = None,
        detector: str = DEFAULT_DETECTOR,
        beta: float = DEFAULT_BETA,
        area_threshold: float = 0.0,
        templates: str = DEFAULT_TEMPLATES,
        refine: str = METHOD_REFINEMENTS,
        refine_edges: bool = False,
        side: Any = None,
        request: gr.Request | None = None,
    ) -> LiveFrame:
        """Segment one webcam frame at the reduced size; a frame that arrives while the visitor's previous one is
        running is dropped. Bad input (no classes) shows in the status line, and once as a warning."""
        if frame is None:
            return leave_others(LiveFrame, live_status=NO_FRAME)
        session = self.session(session_id(request))
        if not session.lock.acquire(blocking=False):
            session.dropped += 1
            return leave_others(LiveFrame)
        try:
            started = time.perf_counter()
            try:
                settings = self.segmenting.settings(
                    method,
                    stage_names,
                    detector,
                    beta,
                    background_words,
                    prob_threshold,
                    area_threshold,
                    templates,
                    refine_edges,
                    refine,
                )
                vocabulary = parse_vocabulary(classes_text, settings, self.host.limits)
                rgb = to_rgb_array(frame)
                segmentation, _ = self.segment(rgb, vocabulary, settings, self.side(side))
            except ScclipError as error:
                return self.refused(session, str(error))
            overlay, legend = live_pictures(segmentation)
            session.frames += 1
            session.done.append(time.perf_counter())
            session.warned = None
            size = (segmentation.labels.shape[1], segmentation.labels.shape[0])
            status = status_line(session, size, 1000 * (time.perf_counter() - started))
            return LiveFrame(live_output=overlay, live_legend=legend, live_status=status)
        finally:
            session.lock.release()

    @staticmethod
    def refused(session: LiveSession, message: str) -> LiveFrame:
        """Bad input while streaming: the reason in the status line each frame, as a warning only the first time
        (an error would end the stream; the visitor fixes the classes and the next frame runs)."""
        if session.warned != message:
            gr.Warning(message, title="Cannot run")
            session.warned = message
        return leave_others(LiveFrame, live_status=f"**Cannot run:** {html.escape(message)}")

    def forget(self, request: gr.Request | None = None) -> None:
        """The tab was closed: its live counters go."""
        with self._guard:
            self._sessions.pop(session_id(request), None)
