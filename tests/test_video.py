"""Video: decoding every container, frame sampling, per-frame consistency with images, temporal smoothing, the
H.264 overlay and the command line's errors; tiny synthetic clips written with PyAV, the tiny random model."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from scclip_core import LabelRules, Segmenter, SegmenterConfig, TextEmbeddingCache, TextEncoder, parse_classes
from scclip_core.cli import main
from scclip_core.video import VIDEO_SUFFIXES, VideoWriter, probe_video, read_frames, segment_video

SIZE = (128, 96)  # width, height
RATE = 10
CODECS = {".mp4": ("libx264", "yuv420p"), ".mov": ("libx264", "yuv420p"), ".webm": ("libvpx", "yuv420p")}
CODECS |= {".avi": ("mpeg4", "yuv420p"), ".gif": ("gif", "rgb8")}
CLASSES = "sky; grass; person"
MODEL = ["--model", "tiny-test", "--weights", "random", "--templates", "simple", "--short-side", "0", "--no-background"]


def scene(index: int, size: tuple[int, int] = SIZE, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A bright square sliding right over a gradient, with optional per-frame noise (uint8 RGB)."""
    width, height = size
    gradient = np.linspace(40, 200, width, dtype=np.float32)
    frame = np.stack(
        [np.tile(gradient, (height, 1)), np.full((height, width), 90.0), np.tile(gradient[::-1], (height, 1))], axis=-1
    )
    left = (8 * index) % max(1, width - 32)
    frame[height // 4 : height // 4 + 32, left : left + 32] = (250, 230, 40)
    if noise:
        frame += np.random.default_rng(seed + index).normal(0, noise, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: int = 4, size: tuple[int, int] = SIZE, noise: float = 0.0) -> Path:
    codec, pixel_format = CODECS[path.suffix]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height = size
        stream.pix_fmt = pixel_format
        for index in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(scene(index, size, noise), format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def segmenter(tiny_model) -> Segmenter:
    return Segmenter(tiny_model, SegmenterConfig(short_side=None, templates="simple"), text_cache=TextEmbeddingCache())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=5, noise=40.0)


@pytest.mark.parametrize("suffix", sorted(VIDEO_SUFFIXES))
def test_each_container_decodes_every_frame(tmp_path, suffix):
    path = write_clip(tmp_path / f"clip{suffix}", frames=4)
    frames = list(read_frames(path))
    assert [frame.index for frame in frames] == [0, 1, 2, 3]
    assert [frame.time for frame in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=0.011)
    assert all(frame.rgb.shape == (96, 128, 3) and frame.rgb.dtype == np.uint8 for frame in frames)
    assert probe_video(path).size == SIZE
    assert probe_video(path).duration == pytest.approx(0.4, abs=0.011)  # 4 frames at 10 per second
    # the square slides right: the decoded frames follow the scene, not a still picture
    assert np.abs(frames[3].rgb.astype(int) - scene(3)).mean() < np.abs(frames[0].rgb.astype(int) - scene(3)).mean()


def test_every_and_max_frames_pick_frames(tmp_path):
    path = write_clip(tmp_path / "seven.mp4", frames=7)
    assert [frame.index for frame in read_frames(path, every=3)] == [0, 3, 6]
    assert [frame.index for frame in read_frames(path, every=2, max_frames=2)] == [0, 2]
    assert [frame.index for frame in read_frames(path, max_frames=1)] == [0]


def test_frame_labels_equal_segment_on_the_frame_saved_as_png(segmenter, clip, tmp_path):
    vocabulary = parse_classes(CLASSES, background=())
    rules = LabelRules(area_threshold=0.01)  # the area rule adds a background class for what it drops
    results = list(segment_video(segmenter, clip, vocabulary, rules=rules, every=2))
    assert [frame.index for frame, _ in results] == [0, 2, 4]
    for frame, result in results:
        assert len(np.unique(result.labels)) > 1
        png = tmp_path / f"frame{frame.index}.png"
        Image.fromarray(frame.rgb).save(png)
        alone = Segmenter(segmenter.model, segmenter.config, text_cache=TextEmbeddingCache()).segment(
            png, vocabulary, rules=rules
        )
        np.testing.assert_array_equal(result.labels, alone.labels)
        assert result.class_names == alone.class_names


def flicker(labels: list[np.ndarray]) -> float:
    """The share of pixels whose label changes between consecutive frames."""
    return float(np.mean([np.mean(a != b) for a, b in zip(labels, labels[1:])]))


def test_smoothing_averages_the_logits_and_reduces_flicker(segmenter, tmp_path):
    noisy = write_clip(tmp_path / "noisy.mp4", frames=4, noise=40.0)
    vocabulary = parse_classes(CLASSES, background=())
    off = list(segment_video(segmenter, noisy, vocabulary))
    zero = list(segment_video(segmenter, noisy, vocabulary, temporal_smoothing=0.0))
    smooth = list(segment_video(segmenter, noisy, vocabulary, temporal_smoothing=0.7))
    for (_, plain), (_, alpha_zero) in zip(off, zero):
        np.testing.assert_array_equal(plain.labels, alpha_zero.labels)
    first, second = off[0][1].pixel_scores.logits, off[1][1].pixel_scores.logits
    torch.testing.assert_close(smooth[1][1].pixel_scores.logits, 0.7 * first + 0.3 * second)
    assert flicker([result.labels for _, result in off]) > 0
    assert flicker([result.labels for _, result in smooth]) < flicker([result.labels for _, result in off])


def test_text_is_encoded_once_per_clip(segmenter, clip, monkeypatch):
    calls = []
    encode = TextEncoder._encode_names

    def counting(self, names):
        calls.append(list(names))
        return encode(self, names)

    monkeypatch.setattr(TextEncoder, "_encode_names", counting)
    frames = list(segment_video(segmenter, clip, parse_classes(CLASSES, background=())))
    assert len(frames) == 5 and len(calls) == 1


def test_writer_pads_odd_sizes_with_the_edge(tmp_path):
    path = tmp_path / "odd.mp4"
    frame = np.zeros((95, 127, 3), dtype=np.uint8)
    frame[:, -1] = 255  # a white last column: the padding column repeats it
    with VideoWriter(path, Fraction(RATE), (127, 95)) as writer:
        writer.write(frame)
        writer.write(frame)
    assert writer.size == (128, 96)
    (decoded, _) = [frame.rgb for frame in read_frames(path)]
    assert decoded.shape == (96, 128, 3)
    assert decoded[:, -1].mean() > 200 and decoded[:, :100].mean() < 30


def cli(*args: str) -> int:
    return main(["segment", *args, "--classes", CLASSES, *MODEL, "--no-text-cache"])


def test_cli_writes_frames_json_lines_and_an_h264_overlay(clip, tmp_path, capsys):
    frames, video = tmp_path / "frames", tmp_path / "overlay.mp4"
    code = cli(str(clip), "--out", str(frames), "--overlay-video", str(video), "--json", "--every", "2")
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["frame"] for line in lines] == [0, 2, 4]
    assert [line["time"] for line in lines] == pytest.approx([0.0, 0.2, 0.4])
    assert all(sum(line["shares"].values()) == pytest.approx(1.0) for line in lines)
    assert sorted(path.name for path in frames.iterdir()) == [f"frame_00000{index}.png" for index in (0, 2, 4)]
    label_map = Image.open(frames / "frame_000002.png")
    assert label_map.mode == "P" and label_map.size == SIZE
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == SIZE
        assert stream.average_rate == Fraction(RATE, 2)  # --every 2 keeps the clip's duration
        assert sum(1 for _ in container.decode(stream)) == 3


def test_cli_pads_an_odd_sized_gif_and_says_so(tmp_path, capsys):
    gif = write_clip(tmp_path / "odd.gif", frames=3, size=(127, 95))
    video = tmp_path / "overlay.mp4"
    assert cli(str(gif), "--overlay-video", str(video)) == 0
    assert "is 128x96" in capsys.readouterr().err
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (128, 96)
        assert sum(1 for _ in container.decode(stream)) == 3


def test_cli_max_frames_and_smoothing(clip, tmp_path, capsys):
    frames = tmp_path / "frames"
    assert cli(str(clip), "--out", str(frames), "--max-frames", "2", "--temporal-smoothing", "0.5") == 0
    assert sorted(path.name for path in frames.iterdir()) == ["frame_000000.png", "frame_000001.png"]
    assert len(capsys.readouterr().out.splitlines()) == 2


def empty_mp4(path: Path) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height = SIZE
        container.start_encoding()  # the header alone: a video stream with no frames
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: folder / "missing.mp4", "does not exist"),
        (lambda folder: folder / "notes.mp4", "could not read"),
        (lambda folder: empty_mp4(folder / "empty.mp4"), "no video"),
    ],
)
def test_cli_bad_videos_get_one_error_line(tmp_path, capsys, make, message):
    path = make(tmp_path)
    if path.name == "notes.mp4":
        path.write_text("not a video\n")
    assert cli(str(path), "--out", str(tmp_path / "frames")) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and message in line and "Traceback" not in line


@pytest.mark.parametrize(
    "options",
    [
        ["--overlay-video", "o.mp4"],
        ["--temporal-smoothing", "1.0"],
        ["--every", "0"],
        ["--max-frames", "0"],
        ["--save-probs", "p.npy"],
        ["--out", "labels.png"],
    ],
)
def test_cli_refuses_misplaced_or_bad_video_options(clip, tmp_path, capsys, options):
    image = tmp_path / "still.png"
    Image.fromarray(scene(0)).save(image)
    target = image if options[0] == "--overlay-video" else clip
    assert cli(str(target), *options) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")


def test_cli_takes_one_video_alone_and_a_pattern_of_gifs_as_images(clip, tmp_path, capsys):
    still = tmp_path / "gifs" / "still.gif"
    still.parent.mkdir()
    Image.fromarray(scene(0)).save(still)
    assert cli(str(clip), str(still)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "one video file" in line
    assert cli(str(still.parent / "*.gif"), "--out", str(tmp_path / "labels"), "--json") == 0
    (summary,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert summary["image"] == str(still) and (tmp_path / "labels" / "still.png").is_file()


def test_cli_writes_the_frames_masks_as_one_coco_file(clip, tmp_path, capsys):
    from pycocotools import mask as coco_mask

    frames, masks = tmp_path / "frames", tmp_path / "masks.json"
    assert cli(str(clip), "--out", str(frames), "--coco", str(masks), "--max-frames", "2") == 0
    coco = json.loads(masks.read_text())
    assert [image["file_name"] for image in coco["images"]] == ["frame_000000.png", "frame_000001.png"]
    for image in coco["images"]:
        labels = np.asarray(Image.open(frames / image["file_name"]))
        entries = [entry for entry in coco["annotations"] if entry["image_id"] == image["id"]]
        assert entries, "every frame has at least one class present"
        for entry in entries:
            rle = {**entry["segmentation"], "counts": entry["segmentation"]["counts"].encode()}
            assert np.array_equal(coco_mask.decode(rle).astype(bool), labels == entry["category_id"] - 1)
