"""The Live tab's frames on the tiny random model: the reduced size, the legend, dropped frames, the settings and bad
input."""

from __future__ import annotations

import threading
import warnings
from types import SimpleNamespace
from typing import Any

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demo.events import Events
from demo.events.live import LiveFrame, live_sides

pytestmark = pytest.mark.timeout(120)
SKIP = gr.skip()


def visitor(name: str) -> Any:
    """What the events read from Gradio's request: the session id."""
    return SimpleNamespace(session_hash=name)


@pytest.fixture(scope="module")
def events(demo_host) -> Events:
    return Events(demo_host)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A 640x480 webcam frame: two halves."""
    rgb = np.zeros((480, 640, 3), dtype=np.uint8)
    rgb[:, :320] = (220, 30, 30)
    rgb[:, 320:] = (30, 30, 220)
    return rgb


def test_a_frame_gives_an_overlay_at_the_reduced_size_and_a_legend(events: Events, frame: np.ndarray) -> None:
    result = events.live.frame(frame, "red wall; blue sky", request=visitor("sizes"))
    side = events.host.limits.live_side
    assert isinstance(result.live_output, Image.Image)
    assert result.live_output.size == (side, side * 3 // 4)
    assert "red wall" in result.live_legend and "blue sky" in result.live_legend
    assert f"{side}x{side * 3 // 4}" in result.live_status and "1 segmented, 0 dropped" in result.live_status
    larger = events.live.frame(frame, "red wall; blue sky", side=str(live_sides(events.host.limits)[-1]))
    assert max(larger.live_output.size) == live_sides(events.host.limits)[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refused = events.live.frame(frame, "red wall", side=10_000)
    sides = ", ".join(map(str, live_sides(events.host.limits)))
    assert f"must be one of {sides} px" in refused.live_status and refused.live_output == SKIP


def test_a_frame_arriving_while_the_visitors_previous_one_runs_is_dropped(
    events: Events, frame: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    held: list[bool] = []

    segment = events.live.segment

    def held_first(*args: Any) -> Any:
        if not held:
            held.append(True)
            entered.set()
            assert release.wait(60)
        return segment(*args)

    monkeypatch.setattr(events.live, "segment", held_first)
    results: list[LiveFrame] = []
    first = threading.Thread(target=lambda: results.append(events.live.frame(frame, "cat", request=visitor("a"))))
    first.start()
    assert entered.wait(60)
    try:
        dropped = events.live.frame(frame, "cat", request=visitor("a"))
        other = events.live.frame(frame, "cat", request=visitor("b"))
    finally:
        release.set()
        first.join(60)
    assert tuple(dropped) == (SKIP, SKIP, SKIP)
    assert isinstance(other.live_output, Image.Image)
    assert isinstance(results[0].live_output, Image.Image)
    assert "1 segmented, 1 dropped" in results[0].live_status
    after = events.live.frame(frame, "cat", request=visitor("a"))
    assert "2 segmented, 1 dropped" in after.live_status


def test_the_left_columns_settings_reach_the_run(
    events: Events, frame: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    segment = events.live.segment

    def recorded(rgb: np.ndarray, vocabulary: Any, settings: Any, side: int) -> Any:
        seen.append((vocabulary, settings, side))
        return segment(rgb, vocabulary, settings, side)

    monkeypatch.setattr(events.live, "segment", recorded)
    events.live.frame(frame, "cat; dog", "", 0.0, "clip", None, "lof", 0.4, 0.0, "simple", "pamr", side="112")
    vocabulary, settings, side = seen[0]
    assert vocabulary.names == ("cat", "dog") or list(vocabulary.names) == ["cat", "dog"]
    assert settings.variant.method == "clip" and settings.refine == ("pamr",) and settings.background is None
    assert side == 112


def test_no_classes_is_said_in_the_status_line_and_warned_once(events: Events, frame: np.ndarray) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = events.live.frame(frame, "  ", request=visitor("empty"))
        second = events.live.frame(frame, "", request=visitor("empty"))
    assert first.live_output == SKIP and first.live_legend == SKIP
    assert "Cannot run" in first.live_status and "class" in first.live_status
    assert second.live_status == first.live_status
    assert len([warning for warning in caught if "class" in str(warning.message)]) == 1
    assert "1 segmented" in events.live.frame(frame, "cat", request=visitor("empty")).live_status


def test_no_frame_yet_asks_for_the_webcam(events: Events) -> None:
    result = events.live.frame(None, "cat")
    assert result.live_output == SKIP and "webcam" in result.live_status


def test_the_live_segmenter_shares_the_text_encoder_of_its_segmenter(events: Events) -> None:
    host = events.host
    segmenter = host.segmenter(host.config.templates)
    live = host.live_segmenter(segmenter)
    assert live.text is segmenter.text and live.config.short_side is None
    assert host.live_segmenter(segmenter) is live
