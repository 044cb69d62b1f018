"""The Video tab's events: checks before decoding, even sampling within the limits, the files of a run (label maps
equal to `Segmenter.segment` on the decoded frames, COCO masks equal to them), the legend and plot, and turns at
the model shared with another visitor's photo while a clip runs. Tiny synthetic clips, the tiny random model."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from demo.events import Events
from demo.host import ModelTurns
from demo.video import frame_count, sampling, shares_figure
from scclip_core.refinements import NO_REFINEMENT
from scclip_core.video import VideoInfo, VideoWriter, read_frames

SIZE = (64, 48)  # width, height
CLASSES = "red; blue"


def scene(index: int) -> np.ndarray:
    """A red square sliding right over a blue-to-green gradient (uint8 RGB)."""
    width, height = SIZE
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[..., 1] = np.linspace(0, 200, width, dtype=np.uint8)
    frame[..., 2] = 180
    left = (6 * index) % (width - 16)
    frame[12:28, left : left + 16] = (230, 30, 30)
    return frame


def write_clip(path: Path, frames: int, rate: int = 10) -> Path:
    with VideoWriter(path, Fraction(rate), SIZE) as writer:
        for index in range(frames):
            writer.write(scene(index))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", frames=8)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "short.mp4", frames=3)


class Progress:
    """A stand-in for gr.Progress that keeps what the bar was told."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, fraction: float, desc: str = "") -> None:
        self.messages.append(desc)


def visitor(name: str) -> SimpleNamespace:
    """A stand-in for gr.Request: one visitor's session."""
    return SimpleNamespace(session_hash=name, client=None, headers={})


def limited(events: Events, monkeypatch: pytest.MonkeyPatch, **limits: float) -> None:
    monkeypatch.setattr(events.host, "limits", dataclasses.replace(events.host.limits, **limits))


def test_frames_are_sampled_evenly_and_capped() -> None:
    assert sampling(5, 300) == (1, 5)
    assert sampling(600, 300) == (2, 300)
    assert sampling(601, 300) == (3, 201)
    assert sampling(8, 3) == (3, 3)
    unstated = VideoInfo(Fraction(10), SIZE, frames=None, duration=2.0)  # as a webm states it
    assert frame_count(unstated) == 20 and frame_count(dataclasses.replace(unstated, frames=7)) == 7


def test_a_run_returns_the_overlay_the_zip_and_a_summary_sampled_within_the_limits(
    events: Events, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limited(events, monkeypatch, max_video_frames=3)
    progress = Progress()
    video, archive, summary = events.video.segment_video(str(clip), CLASSES, "", 0.0, progress=progress)
    assert [frame["frame"] for frame in summary["frames"]] == [0, 3, 6], "every 3rd of 8 frames, at most 3"
    assert summary["every"] == 3 and summary["frame_rate"] == pytest.approx(10 / 3)
    assert any(notice.startswith("1 frame in 3 segmented") for notice in summary["notices"])
    assert progress.messages == ["frame 1/3", "frame 2/3", "frame 3/3"]
    assert Path(video).name == "scclip_overlay_UNTRAINED.mp4" and Path(archive).name == "scclip_video_UNTRAINED.zip"
    overlay = list(read_frames(video))
    assert len(overlay) == 3 and overlay[0].rgb.shape == (SIZE[1], SIZE[0], 3)
    with zipfile.ZipFile(archive) as files:
        assert sorted(files.namelist()) == [
            "frame_000000.png",
            "frame_000003.png",
            "frame_000006.png",
            "scclip_coco_UNTRAINED.json",
            "shares.json",
        ]
        assert json.loads(files.read("shares.json")) == summary["frames"]
    assert summary["untrained_weights"] is True and "UNTRAINED" in summary["warning"]


def test_the_zip_holds_segment_s_labels_of_each_decoded_frame_and_coco_masks_of_them(
    events: Events, short_clip: Path
) -> None:
    """Method, stages and refinement reach every frame: the label maps are `Segmenter.segment`'s with them."""
    _, archive, summary = events.video.segment_video(
        str(short_clip), CLASSES, "sky", 0.0, "sc-clip", ["anomaly", "multi-level"], refine=NO_REFINEMENT
    )
    assert summary["method"] == "sc-clip" and summary["refine"] == []
    assert [name for name, on in summary["stages"].items() if on] == ["anomaly", "multi_level"]
    segmenter = events.host.segmenter(summary["templates"])  # the same text embeddings: random weights leave ties
    settings = events.segmenting.settings("sc-clip", ["anomaly", "multi-level"], None, None, "sky", 0.0, None, None)
    with zipfile.ZipFile(archive) as files:
        coco = json.loads(files.read("scclip_coco_UNTRAINED.json"))
        assert [category["name"] for category in coco["categories"]] == ["red", "blue", "background"]
        for frame in read_frames(short_clip):
            name = f"frame_{frame.index:06d}.png"
            labels = np.asarray(Image.open(io.BytesIO(files.read(name))))
            expected = segmenter.segment(
                frame.rgb,
                CLASSES,
                method=settings.variant.method,
                stages=settings.variant.stages,
                params=settings.params,
                background=["sky"],
                rules=settings.rules,
                refine=(),
            )
            assert np.array_equal(labels, expected.labels), name
            image = next(image for image in coco["images"] if image["file_name"] == name)
            for annotation in (entry for entry in coco["annotations"] if entry["image_id"] == image["id"]):
                mask = coco_mask.decode(annotation["segmentation"]).astype(bool)
                assert np.array_equal(mask, labels == annotation["category_id"] - 1), (name, annotation["id"])
    assert len(coco["images"]) == 3


def test_the_legend_and_the_plot_name_every_class(events: Events, short_clip: Path) -> None:
    *_, summary = events.video.segment_video(str(short_clip), "red; blue, navy; green", "sky", 0.0)
    views = events.video.show(summary)
    names = ["red", "blue", "green", "background"]
    assert all(f'data-class="{name}"' in views.video_legend for name in names) and "UNTRAINED" in views.video_legend
    assert sum(entry["mean_share"] for entry in summary["legend"]) == pytest.approx(1.0)
    assert isinstance(views.video_shares, Image.Image)
    figure = shares_figure(summary["classes"], summary["background_index"], summary["frames"], note=None)
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == names
    assert events.video.show(None) == ("", None)


def test_a_long_clip_is_refused_before_any_frame_is_decoded(
    events: Events, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limited(events, monkeypatch, max_video_seconds=0.5)
    monkeypatch.setattr("demo.events.video.read_frames", lambda *_, **__: pytest.fail("decoded a frame"))
    with pytest.raises(gr.Error, match=r"lasts 0\.8 s; this demo takes clips of at most 0\.5 s"):
        events.video.segment_video(str(clip), CLASSES)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.mp4", b"not a video at all", "could not read"),
        ("notes.txt", b"hello", "a .txt file is no video this demo reads"),
    ],
)
def test_a_bad_file_is_refused_with_one_message(
    events: Events, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(gr.Error, match=message):
        events.video.segment_video(str(path), CLASSES)
    with pytest.raises(gr.Error, match="no video: upload a clip first"):
        events.video.segment_video(None, CLASSES)


class LoggedTurns(ModelTurns):
    """Turns at the model that note which thread asked for and got each one."""

    def __init__(self) -> None:
        super().__init__()
        self.served: list[str] = []
        self.photo_asked = threading.Event()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if threading.current_thread().name == "photo":
            self.photo_asked.set()
        with super().turn():
            self.served.append(threading.current_thread().name)
            yield


def test_a_photo_sent_during_a_clip_takes_turns_between_its_frames(
    events: Events, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = LoggedTurns()
    monkeypatch.setattr(events.host, "turns", turns)
    photo_path = tmp_path / "photo.png"
    Image.fromarray(scene(3)).save(photo_path)
    photo = threading.Thread(
        target=lambda: events.segmenting.segment(
            str(photo_path), "yellow; purple", progress=None, request=visitor("photo")
        ),
        name="photo",
    )

    class SendThePhoto(Progress):
        """At the second frame, the other visitor's photo asks for its first turn before the clip goes on."""

        def __call__(self, fraction: float, desc: str = "") -> None:
            if desc == "frame 2/8":
                photo.start()
                assert turns.photo_asked.wait(60)

    result: list[dict] = []
    video = threading.Thread(
        target=lambda: result.append(
            events.video.segment_video(
                str(clip), CLASSES, progress=SendThePhoto(), request=visitor("video")
            ).video_summary
        ),
        name="video",
    )
    video.start()
    video.join(120)
    photo.join(120)
    assert result and result[0]["frames_segmented"] == 8
    first, last = turns.served.index("photo"), len(turns.served) - 1 - turns.served[::-1].index("photo")
    assert turns.served.count("video") >= 16, "each frame: one turn for its image side, one for its prediction"
    assert "video" in turns.served[:first] and "video" in turns.served[last:], (
        "the photo was served between the clip's frames, not after the whole clip",
        turns.served,
    )
