"""A clip as the Video tab takes and returns it, apart from the page itself: the checks before any frame is
decoded, the even sampling of frames within the limits, and the files of a run (the overlay video, a zip of label
maps, per-frame shares and a COCO file) with the plot of each class's share over time."""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from demo.inputs import RequestLimits
from demo.outputs import input_label_map, untrained_suffix
from demo.views import overlay_picture, palette_colours
from scclip_core import InputError, Segmentation, render
from scclip_core.cli import FRAME_NAME
from scclip_core.coco import CocoFile
from scclip_core.video import VIDEO_SUFFIXES, Frame, VideoInfo, VideoWriter, probe_video

SHARES_NAME = "shares.json"


def check_clip(path: str | None, limits: RequestLimits) -> VideoInfo:
    """The clip's stream as probed (no frame decoded), or one InputError: no clip, an unsupported container, an
    unreadable file, or a clip longer than the limit (or of unknown length)."""
    if not path:
        raise InputError("no video: upload a clip first")
    if not Path(path).is_file():
        raise InputError("the uploaded video is gone from the server; please upload it again")
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(
            f"a {suffix or 'suffix-less'} file is no video this demo reads; upload one of "
            f"{', '.join(sorted(VIDEO_SUFFIXES))}"
        )
    info = probe_video(path)
    if info.duration is None and info.frames is None:
        raise InputError("the video states neither its length nor its frame count, so its length cannot be checked")
    seconds = info.duration if info.duration is not None else float((info.frames or 0) / info.frame_rate)
    if seconds > limits.max_video_seconds:
        raise InputError(
            f"the video lasts {seconds:.1f} s; this demo takes clips of at most {limits.max_video_seconds:g} s, so "
            "that other visitors are not kept waiting. Trim it, or run the command-line tool on the whole video."
        )
    return info


def frame_count(info: VideoInfo) -> int:
    """The clip's frames: as stated, else from its duration and frame rate."""
    if info.frames is not None:
        return info.frames
    return max(1, round((info.duration or 0.0) * info.frame_rate))


def sampling(frames: int, max_frames: int) -> tuple[int, int]:
    """(every, count): every `every`-th of `frames` frames, evenly spread and at most `max_frames` of them."""
    every = max(1, math.ceil(frames / max_frames))
    return every, min(max_frames, math.ceil(frames / every))


@dataclass(frozen=True)
class ClipFiles:
    """What a run leaves for the visitor: the overlay video, the zip and the per-frame shares."""

    video: Path
    zip: Path
    frames: list[dict[str, Any]]


class ClipOutputs:
    """The files of one clip's run, written frame by frame into `folder` (nothing of a frame is kept in memory):
    the overlay as the Segment tab draws it into an H.264 MP4 at `frame_rate`, each label map as a palette PNG at
    the frame's size (`frame_000000.png`, by decoded frame index, as the command line names them), its shares, and
    the COCO file of every frame. Untrained weights put `_UNTRAINED` in the file names."""

    def __init__(
        self,
        folder: Path,
        class_names: Sequence[str],
        background_index: int | None,
        frame_rate: Any,
        *,
        untrained: bool,
    ) -> None:
        self.folder = folder
        self.class_names = list(class_names)
        self.background_index = background_index
        self.frame_rate = frame_rate
        self.suffix = untrained_suffix(untrained)
        self.coco = CocoFile(class_names, background_index)
        self.frames: list[dict[str, Any]] = []
        self.archive = zipfile.ZipFile(folder / f"scclip_video{self.suffix}.zip", "w", zipfile.ZIP_DEFLATED)
        self.writer: VideoWriter | None = None

    def add(self, frame: Frame, segmentation: Segmentation) -> None:
        """One segmented frame (its segmentation at the size it was processed)."""
        picture = np.asarray(overlay_picture(segmentation))
        if self.writer is None:
            size = (picture.shape[1], picture.shape[0])
            self.writer = VideoWriter(self.folder / f"scclip_overlay{self.suffix}.mp4", self.frame_rate, size)
        self.writer.write(picture)
        name = FRAME_NAME.format(index=frame.index)
        png = input_label_map(segmentation, (frame.rgb.shape[1], frame.rgb.shape[0]))
        with self.archive.open(name, "w") as file:
            png.save(file, format="PNG")
        self.coco.add(np.asarray(png), name)
        self.frames.append({"frame": frame.index, "time": round(frame.time, 4), "shares": segmentation.shares()})

    def __enter__(self) -> ClipOutputs:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        """A run that failed part-way closes its files (the folder goes with the other old outputs)."""
        if kind is not None:
            if self.writer is not None:
                self.writer.__exit__(kind, error, traceback)
            self.archive.close()

    def finish(self) -> ClipFiles:
        """Close the video and the zip (adding the shares and the COCO file); InputError when no frame came."""
        if self.writer is None:
            self.archive.close()
            raise InputError("the video holds no frames to segment")
        self.writer.close()
        self.archive.writestr(SHARES_NAME, json.dumps(self.frames, indent=1))
        self.archive.writestr(f"scclip_coco{self.suffix}.json", json.dumps(self.coco.to_dict()))
        self.archive.close()
        assert self.archive.filename is not None
        return ClipFiles(self.writer.path, Path(self.archive.filename), self.frames)


def mean_shares(class_names: Sequence[str], frames: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each class's share averaged over the segmented frames."""
    return {name: float(np.mean([frame["shares"].get(name, 0.0) for frame in frames])) for name in class_names}


def shares_figure(
    class_names: Sequence[str], background_index: int | None, frames: Sequence[dict[str, Any]], *, note: str | None
) -> Figure:
    """Each class's share of the frame over the clip's time, one line per class in its overlay colour (the
    background grey, dashed), with every class named in the legend."""
    colours = palette_colours(len(class_names), background_index)
    figure = Figure(figsize=(7.0, 3.2), layout="constrained")
    axis = figure.add_subplot()
    times = [frame["time"] for frame in frames]
    for index, name in enumerate(class_names):
        is_background = index == background_index
        axis.plot(
            times,
            [100 * frame["shares"].get(name, 0.0) for frame in frames],
            color="#9ca3af" if is_background else colours[index],
            linestyle="--" if is_background else "-",
            marker="o" if len(frames) < 30 else None,
            markersize=3,
            label=name,
        )
    axis.set_xlabel("time in the clip (s)")
    axis.set_ylabel("share of the frame (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    if note:
        axis.set_title(note, color=render.WARNING_COLOUR, fontsize="small")
    return figure
