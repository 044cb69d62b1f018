"""The demo's Batch tab in process (tiny random model): several images as /segment runs each, a bad file reported in
its row while the others run, one zip of label maps, JSON summaries and a COCO file that pycocotools decodes to
exactly those label maps, and a batch over the limit refused."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from demo.events import Events
from demo.events.batch import SEGMENTED
from demo.host import ModelHost
from tests.serving import FAST_CONFIG
from tests.test_app import coco_label_maps, header_only_png

pytestmark = pytest.mark.timeout(180)
CLASSES = "red; blue"
BACKGROUND = "sky, wall"


class Recorder:
    """Stands in for gr.Progress: keeps each description."""

    def __init__(self) -> None:
        self.descriptions: list[str] = []

    def __call__(self, fraction: float, desc: str = "") -> None:
        self.descriptions.append(desc)


@pytest.fixture(scope="module")
def events() -> Events:
    torch.manual_seed(0)  # random weights under which the batch's label maps hold several classes
    return Events(ModelHost("tiny-test", "random", config=FAST_CONFIG))


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("batch")
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    rgb[:, :48] = (220, 30, 30)
    rgb[:, 48:] = (30, 30, 220)
    files = [folder / "halves.png", folder / "notes.png", folder / "flipped.jpg", folder / "wide.png"]
    Image.fromarray(rgb).save(files[0])
    files[1].write_text("this is not a picture")
    Image.fromarray(rgb[::-1, ::-1].copy()).resize((80, 50)).save(files[2])
    Image.fromarray(np.tile(rgb, (2, 8, 1))[:100, :700].copy()).save(files[3])  # above the 512 px cap: scaled
    files.append(header_only_png(folder / "huge.png", 12000, 9000))
    return files


def test_a_batch_segments_each_image_as_segment_does_and_reports_bad_files(
    events: Events, batch_files: list[Path]
) -> None:
    progress = Recorder()
    result = events.batch.segment_batch(
        [str(path) for path in batch_files], CLASSES, BACKGROUND, 0.0, progress=progress
    )
    assert progress.descriptions == [f"image {i}/5" for i in range(1, 6)]
    good = ["halves.png", "flipped.jpg", "wide.png"]
    assert [caption for _, caption in result.batch_gallery] == good
    assert "3 of 5 images segmented" in result.batch_status

    table = result.batch_table
    assert table["headers"] == ["file", "red (%)", "blue (%)", "background (%)", "status"]
    assert [row[0] for row in table["data"]] == [path.name for path in batch_files]
    statuses = {row[0]: row[-1] for row in table["data"]}
    assert {statuses[name] for name in good} == {SEGMENTED}
    assert "not" in statuses["notes.png"] and "image" in statuses["notes.png"], statuses["notes.png"]
    assert "megapixel" in statuses["huge.png"] or "large" in statuses["huge.png"], statuses["huge.png"]
    for row in table["data"]:
        if row[-1] == SEGMENTED:
            assert sum(row[1:-1]) == pytest.approx(100, abs=0.05)
        else:
            assert row[1:-1] == [None, None, None]

    with zipfile.ZipFile(result.batch_zip) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(
            [
                "01_halves_labels.png",
                "01_halves_summary.json",
                "03_flipped_labels.png",
                "03_flipped_summary.json",
                "04_wide_labels.png",
                "04_wide_summary.json",
                "coco.json",
            ]
        )
        coco = json.loads(archive.read("coco.json"))
        labels = {
            name: np.asarray(Image.open(io.BytesIO(archive.read(name)))) for name in names if name.endswith("png")
        }
        summaries = {name: json.loads(archive.read(name)) for name in names if name.endswith("json") and "_" in name}
    assert [image["file_name"] for image in coco["images"]] == good
    class_names = summaries["01_halves_summary.json"]["classes"]
    decoded = coco_label_maps(coco, class_names)
    assert any(len(np.unique(label_map)) > 1 for label_map in decoded.values()), "masks of several classes"
    for stem, name in zip(["01_halves", "03_flipped", "04_wide"], good):
        label_map = labels[f"{stem}_labels.png"]
        assert np.array_equal(decoded[name], label_map), f"the COCO masks of {name} are its label map"
        data = summaries[f"{stem}_summary.json"]
        assert data["file_name"] == name and data["classes"] == ["red", "blue", "background"]
        assert data["label_png_size"] == [label_map.shape[1], label_map.shape[0]] and "coco.json" in data["coco"]
        for entry in data["legend"]:
            assert abs(np.mean(label_map == entry["index"]) - entry["share"]) < 1e-6

        path = next(path for path in batch_files if path.name == name)
        single = events.segmenting.segment(str(path), CLASSES, BACKGROUND, 0.0, progress=None)
        assert np.array_equal(np.asarray(Image.open(single.label_file)), label_map), "as /segment labels it"
    assert labels["04_wide_labels.png"].shape == (100, 700), "the label map comes back at the input size"


def test_a_batch_over_the_limit_or_empty_is_refused_with_one_message(events: Events, batch_files: list[Path]) -> None:
    limit = events.host.limits.max_batch_files
    with pytest.raises(gr.Error, match=f"{limit + 1} files given; this demo takes at most {limit} images"):
        events.batch.segment_batch([str(batch_files[0])] * (limit + 1), CLASSES, progress=Recorder())
    with pytest.raises(gr.Error, match="no images"):
        events.batch.segment_batch([], CLASSES, progress=Recorder())


def test_a_batch_of_only_bad_files_says_so_without_a_zip(events: Events, batch_files: list[Path]) -> None:
    result = events.batch.segment_batch([str(batch_files[1])], CLASSES, BACKGROUND, 0.0, progress=Recorder())
    assert result.batch_zip is None and result.batch_gallery == [] and "0 of 1" in result.batch_status
    assert result.batch_table["data"][0][0] == "notes.png" and result.batch_table["data"][0][-1] != SEGMENTED
