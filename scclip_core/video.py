"""Video in and out with PyAV (no `ffmpeg` binary): decoded RGB frames, per-frame segmentation with optional
temporal smoothing of the logits, and an H.264 overlay video that browsers play.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, cast

import numpy as np

from .config import DEFAULT_METHOD, CalibrationParams, LabelRules, Method, Stages, check_pamr_settings
from .errors import InputError, OutputError, one_line

if TYPE_CHECKING:
    import av
    import av.container
    import av.video

    from .scores import PixelScores
    from .segmenter import Segmentation, Segmenter
    from .text import Vocabulary

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".avi", ".gif"})
FALLBACK_FRAME_RATE = Fraction(25)  # for a stream that states no rate (the overlay video needs one)
OVERLAY_CODEC = "libx264"
OVERLAY_PIXEL_FORMAT = "yuv420p"  # what Chromium plays; it needs even sides (see `VideoWriter`)


def is_video(path: str | Path) -> bool:
    """Whether `path` names a video by its suffix (a .gif counts as a video)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its index among all decoded frames, its time in seconds and its RGB uint8 (H, W, 3)."""

    index: int
    time: float
    rgb: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What the first video stream states: frame rate, size (width, height), frame count and duration in seconds
    (the stream's, else the container's; None: not stated)."""

    frame_rate: Fraction
    size: tuple[int, int]
    frames: int | None
    duration: float | None = None


def _unreadable(path: Path, error: BaseException) -> InputError:
    return InputError(f"could not read {path} as a video ({', '.join(sorted(VIDEO_SUFFIXES))}): {one_line(error)}")


def _open(path: Path) -> av.container.InputContainer:
    import av

    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as error:
        raise _unreadable(path, error) from error
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} holds no video stream")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """The frame rate, size, stated frame count and duration of `path`'s first video stream; InputError when
    unreadable."""
    import av

    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or FALLBACK_FRAME_RATE
        if stream.duration is not None and stream.time_base is not None:
            duration: float | None = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(Fraction(rate), (stream.width, stream.height), stream.frames or None, duration)


def check_sampling(every: int, max_frames: int | None) -> None:
    """Every `every`-th frame (at least 1), at most `max_frames` (None: no cap, else at least 1)."""
    if every < 1:
        raise InputError(f"every (--every) must be at least 1, not {every}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames (--max-frames) must be at least 1, not {max_frames}")


def read_frames(path: str | Path, *, every: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """Every `every`-th decoded frame of `path`'s first video stream (the first one included), at most `max_frames`.

    An unreadable, unsupported or empty file raises InputError with one message, also when decoding fails
    part-way (frames before the fault have been yielded).
    """
    import av

    check_sampling(every, max_frames)
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or FALLBACK_FRAME_RATE
        yielded = 0
        index = -1
        try:
            for index, decoded in enumerate(container.decode(stream)):
                if index % every:
                    continue
                seconds = decoded.time if decoded.time is not None else float(index / rate)
                yield Frame(index, float(seconds), decoded.to_ndarray(format="rgb24"))
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    return
        except (av.FFmpegError, OSError, ValueError) as error:
            raise _unreadable(path, error) from error
        if index < 0:
            raise InputError(f"{path} holds no video frames")


class VideoWriter:
    """Writes RGB frames as H.264 (libx264, yuv420p) in an MP4 container at `frame_rate`, so that Chromium plays it.

    yuv420p needs even sides: an odd width or height gets one more column or row repeating the edge pixels, so the
    video is then one pixel wider or taller than the frames (`size` says which).
    """

    def __init__(self, path: str | Path, frame_rate: Fraction, size: tuple[int, int]) -> None:
        import av

        self.path = Path(path)
        self.frame_size = size
        self.size = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        self.frames = 0
        try:
            self._container = av.open(str(self.path), mode="w", format="mp4")
        except (av.FFmpegError, OSError) as error:
            raise OutputError(f"could not write {self.path}: {one_line(error)}") from error
        self._stream = cast("av.video.VideoStream", self._container.add_stream(OVERLAY_CODEC, rate=frame_rate))
        self._stream.width, self._stream.height = self.size
        self._stream.pix_fmt = OVERLAY_PIXEL_FORMAT

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 frame of the size given at construction."""
        import av

        height, width = rgb.shape[:2]
        if (width, height) != self.frame_size:
            raise InputError(f"frame is {width}x{height}, the video {self.frame_size[0]}x{self.frame_size[1]}")
        padding = ((0, self.size[1] - height), (0, self.size[0] - width), (0, 0))
        self._encode(av.VideoFrame.from_ndarray(np.pad(rgb, padding, mode="edge"), format="rgb24"))
        self.frames += 1

    def _encode(self, frame: av.VideoFrame | None) -> None:
        """Encode `frame` (None: flush the encoder) and write its packets."""
        import av

        try:
            self._container.mux(self._stream.encode(frame))
        except (av.FFmpegError, OSError) as error:
            raise OutputError(f"could not write {self.path}: {one_line(error)}") from error

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        self._encode(None)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._container.close()


def check_smoothing(alpha: float | None) -> None:
    """`temporal_smoothing` is None (off) or a weight in [0, 1) of the past."""
    if alpha is not None and not 0.0 <= alpha < 1.0:
        raise InputError(f"temporal smoothing must be at least 0 and below 1, not {alpha}")


def smoothed(segmentation: Segmentation, average: PixelScores | None, alpha: float) -> tuple[Segmentation, PixelScores]:
    """`segmentation` relabelled (under its own rules) from `alpha * average + (1 - alpha) * its logits`, the
    running average of the working-size logits, and that new average; the first frame (`average` None) is its own
    average."""
    from .scores import PixelScores

    scores = segmentation.pixel_scores
    if not isinstance(scores, PixelScores):
        raise InputError("temporal smoothing needs full pixel scores, not compact ones")
    if average is not None:
        scores = dataclasses.replace(scores, logits=alpha * average.logits + (1.0 - alpha) * scores.logits)
    relabelled = dataclasses.replace(segmentation, pixel_scores=scores)
    return relabelled.with_rules(segmentation.rules), scores


def segment_video(
    segmenter: Segmenter,
    path: str | Path,
    vocabulary: Vocabulary,
    *,
    method: Method = DEFAULT_METHOD,
    stages: Stages | None = None,
    params: CalibrationParams | None = None,
    method_params: Hashable = None,
    rules: LabelRules | None = None,
    pamr_steps: int | None = None,
    refine: tuple[str, ...] | None = None,
    every: int = 1,
    max_frames: int | None = None,
    temporal_smoothing: float | None = None,
) -> Iterator[tuple[Frame, Segmentation]]:
    """Each read frame (see `read_frames`) with its segmentation, one at a time.

    The class text is embedded once for the clip (later frames find it in the segmenter's text cache); each frame's
    windows go through the backbone in batches (`Segmenter.embed_image`), then `predict`. With
    `temporal_smoothing` ALPHA the labels come from an exponential moving average of the working-size logits (see
    `smoothed`); None (the default) labels each frame exactly as `Segmenter.segment` labels that frame as an image.
    """
    check_smoothing(temporal_smoothing)
    config = segmenter.config
    check_pamr_settings(config.pamr_steps if pamr_steps is None else pamr_steps, config.pamr_dilations)
    config.refinements(method, refine, pamr_steps)
    segmenter.text.embed(vocabulary.queries)
    average: PixelScores | None = None
    for frame in read_frames(path, every=every, max_frames=max_frames):
        embedding = segmenter.embed_image(
            frame.rgb, method=method, stages=stages, params=params, method_params=method_params
        )
        result = segmenter.predict(vocabulary, embedding=embedding, rules=rules, pamr_steps=pamr_steps, refine=refine)
        if temporal_smoothing is not None:
            result, average = smoothed(result, average, temporal_smoothing)
        yield frame, result
