"""Benchmark evaluation: dataset layouts, the metric, benchmarks, resume, the CLI and two-process sharding.

Everything runs on CPU with the tiny random-weight model (conftest's `tiny_model`) and a few synthetic images
written to a temp dir.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_core import (
    DEFAULT_BACKGROUND_WORDS,
    METHODS,
    InputError,
    LabelRules,
    Segmenter,
    WeightsUnavailableError,
    resolve_weights,
)
from scclip_core.eval import (
    BENCHMARKS,
    LAYOUTS,
    OWN_PROTOCOLS,
    Benchmark,
    DatasetLayoutError,
    coco_object,
    confusion_matrix,
    evaluate,
    get_benchmark,
    list_samples,
    read_image,
    read_label,
    run_benchmark,
    scores,
)
from scclip_core.eval.cli import main
from scclip_core.eval.runner import EvalSettings, build_segmenter, build_vocabulary, predict_labels

REPO_ROOT = Path(__file__).resolve().parents[1]

# Sample ids shaped like the real ones, including Cityscapes' per-city sub-folders.
SAMPLE_IDS = {
    "voc2012": ["2007_000033", "2007_000042", "2007_000061"],
    "pascal_context": ["2008_000002", "2008_000003", "2008_000007"],
    "coco_stuff164k": ["000000000139", "000000000285", "000000000632"],
    "coco_object": ["000000000139", "000000000285", "000000000632"],
    "cityscapes": [
        "frankfurt/frankfurt_000000_000294",
        "frankfurt/frankfurt_000000_000576",
        "lindau/lindau_000000_000019",
    ],
    "ade20k": ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"],
    "ade20k_full": ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"],
    "pascal_context_459": ["2008_000002", "2008_000003", "2008_000007"],
}
SIZES = [(41, 57), (64, 48), (50, 50)]


def write_sample(root: Path, layout_name: str, sample_id: str, image: np.ndarray, label: np.ndarray) -> Path:
    """Write one image and its label map where the layout expects them; returns the image path."""
    layout = LAYOUTS[layout_name]
    image_path = root / layout.image_dir / f"{sample_id}{layout.image_suffix}"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, quality=95)
    write_label(root, layout_name, sample_id, label)
    return image_path


def write_label(root: Path, layout_name: str, sample_id: str, label: np.ndarray) -> None:
    """A grey PNG of label values, a palette PNG for VOC/Context, or a 16-bit TIFF for the large vocabularies,
    as in the real datasets."""
    layout = LAYOUTS[layout_name]
    label_path = root / layout.label_dir / f"{sample_id}{layout.label_suffix}"
    label_path.parent.mkdir(parents=True, exist_ok=True)
    if layout.label_suffix == ".tif":
        Image.fromarray(label.astype(np.uint16)).save(label_path)
        return
    label_image = Image.fromarray(label.astype(np.uint8), mode="L")
    if layout_name in ("voc2012", "pascal_context"):
        label_image = label_image.convert("P")
        label_image.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist())
    label_image.save(label_path)


def write_split(root: Path, layout_name: str, ids: list[str]) -> None:
    layout = LAYOUTS[layout_name]
    if layout.split_file is not None:
        (root / layout.split_file).parent.mkdir(parents=True, exist_ok=True)
        (root / layout.split_file).write_text("".join(f"{sample_id}\n" for sample_id in ids))


def raw_labels(
    rng: np.random.Generator, shape: tuple[int, int], num_classes: int, reduce_zero: bool, ignore_index: int = 255
) -> np.ndarray:
    """Label values as stored on disk: 0..C-1 (or 0..C with reduce_zero_label) plus some ignored pixels."""
    top = num_classes + 1 if reduce_zero else num_classes
    labels = rng.integers(0, top, size=shape)
    labels[rng.random(shape) < 0.1] = ignore_index
    labels[0, 0] = 0
    return labels


@pytest.mark.parametrize("dataset", list(BENCHMARKS))
def test_layout_is_read_with_the_right_labels_and_ignore_index(tmp_path: Path, dataset: str) -> None:
    benchmark = BENCHMARKS[dataset]
    rng = np.random.default_rng(1)
    ids = SAMPLE_IDS[benchmark.layout]
    stored = {}
    for sample_id, shape in zip(ids, SIZES):
        image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        stored[sample_id] = raw_labels(
            rng, shape, benchmark.num_classes, benchmark.reduce_zero_label, benchmark.ignore_index
        )
        write_sample(tmp_path, benchmark.layout, sample_id, image, stored[sample_id])
    split = [ids[2], ids[0]]  # a split file decides both membership and order
    write_split(tmp_path, benchmark.layout, split)

    samples = list_samples(LAYOUTS[benchmark.layout], tmp_path)
    expected_ids = split if LAYOUTS[benchmark.layout].split_file else sorted(ids)
    assert [sample.id for sample in samples] == expected_ids
    for sample in samples:
        raw = stored[sample.id]
        labels = read_label(sample.label_path, benchmark.reduce_zero_label)
        if benchmark.reduce_zero_label:
            expected = np.where((raw == 0) | (raw == 255), 255, raw - 1)
        else:
            expected = raw
        np.testing.assert_array_equal(labels, expected)
        assert set(np.unique(labels)) - {benchmark.ignore_index} <= set(range(benchmark.num_classes))
        assert read_image(sample.image_path).shape == (*raw.shape, 3)
    assert [s.id for s in list_samples(LAYOUTS[benchmark.layout], tmp_path, limit=1)] == expected_ids[:1]


def test_root_may_be_the_parent_folder_and_wrong_roots_say_what_is_missing(tmp_path: Path) -> None:
    dataset_root = tmp_path / "VOCdevkit" / "VOC2012"
    write_sample(dataset_root, "voc2012", "2007_000033", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)))
    write_split(dataset_root, "voc2012", ["2007_000033"])
    assert [s.id for s in list_samples(LAYOUTS["voc2012"], tmp_path)] == ["2007_000033"]

    with pytest.raises(DatasetLayoutError, match="JPEGImages"):
        list_samples(LAYOUTS["voc2012"], tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass")
    with pytest.raises(DatasetLayoutError, match="leftImg8bit/val"):
        list_samples(LAYOUTS["cityscapes"], tmp_path)
    (dataset_root / "SegmentationClass" / "2007_000033.png").unlink()
    with pytest.raises(DatasetLayoutError, match="1 of 1 label files are missing"):
        list_samples(LAYOUTS["voc2012"], dataset_root)


def test_metric_matches_a_hand_computed_confusion_matrix() -> None:
    # 4 classes: class 2 is predicted but absent from the ground truth (IoU 0, counted in the mean);
    # class 3 is in neither (IoU undefined, left out); 255 pixels are ignored whatever is predicted.
    truth = np.array([[0, 0, 1, 1], [0, 1, 1, 255], [255, 255, 0, 1]])
    predicted = np.array([[0, 1, 1, 1], [2, 1, 0, 3], [3, 0, 0, 2]])
    matrix = confusion_matrix(truth, predicted, num_classes=4)
    expected = np.array(
        [
            [2, 1, 1, 0],  # truth 0: (0,0) (2,2) -> 0; (0,1) -> 1; (1,0) -> 2
            [1, 3, 1, 0],  # truth 1: (0,2) (0,3) (1,1) -> 1; (1,2) -> 0; (2,3) -> 2
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(matrix, expected)

    result = scores(matrix, ["a", "b", "c", "d"])
    assert result.iou[0] == pytest.approx(100 * 2 / (4 + 3 - 2))
    assert result.iou[1] == pytest.approx(100 * 3 / (5 + 4 - 3))
    assert result.iou[2] == 0.0
    assert math.isnan(result.iou[3])
    assert result.miou == pytest.approx((40.0 + 50.0 + 0.0) / 3)
    assert result.aacc == pytest.approx(100 * 5 / 9)
    assert result.accuracy[:2] == pytest.approx((50.0, 60.0))
    assert result.to_json()["per_class"][3]["IoU"] is None


def test_presets_follow_the_spec() -> None:
    expected = {  # name: (classes, queries, short side, logit scale, prob threshold, area threshold, background)
        "voc21": (21, 56, 336, 50, 0.15, 0.1, 0),
        "context60": (60, 60, 336, 40, 0.15, None, 0),
        "coco_object": (81, 113, 336, 55, 0.35, None, 0),
        "voc20": (20, 30, 336, 40, 0.0, None, None),
        "context59": (59, 59, 336, 40, 0.0, None, None),
        "coco_stuff164k": (171, 171, 336, 40, 0.0, None, None),
        "cityscapes": (19, 19, 560, 40, 0.0, None, None),
        "ade20k": (150, 150, 336, 40, 0.0, None, None),
    }
    for name, (classes, queries, short, scale, prob, area, background) in expected.items():
        benchmark = get_benchmark(name)
        assert (benchmark.num_classes, sum(map(len, benchmark.queries))) == (classes, queries), name
        config, rules = benchmark.config, benchmark.rules
        assert (config.short_side, config.max_long_side, config.crop, config.stride) == (short, 2048, 224, 112)
        assert (config.max_input_side, config.templates) == (None, "openai"), name
        assert (rules.logit_scale, rules.prob_threshold, rules.area_threshold) == (scale, prob, area), name
        assert benchmark.background_index == background
    assert BENCHMARKS["voc21"].queries[0] == DEFAULT_BACKGROUND_WORDS == BENCHMARKS["coco_object"].queries[0]
    assert BENCHMARKS["context60"].queries[0] == ("background",)
    assert BENCHMARKS["voc21"].queries[15] == (
        "person",
        "person in shirt",
        "person in jeans",
        "person in dress",
        "person in sweater",
        "person in skirt",
        "person in jacket",
    )
    assert BENCHMARKS["coco_object"].queries[1][-1] == "body"
    assert BENCHMARKS["voc20"].queries[-1] == ("television monitor", "tv monitor", "monitor", "television", "screen")
    assert BENCHMARKS["voc21"].class_names[:5] == ["background", "aeroplane", "bicycle", "bird", "ship"]
    large = get_benchmark("VOC21", "ViT-L/14").rules
    assert (large.logit_scale, large.prob_threshold, large.area_threshold) == (40, 0.2, 0.1)
    assert get_benchmark("coco-object", "ViT-L/14").rules.prob_threshold == 0.25
    overridden = get_benchmark("voc21").with_overrides(area_threshold=None, logit_scale=30, crop=448, precision="fp32")
    assert overridden.rules == LabelRules(prob_threshold=0.15, area_threshold=None, logit_scale=30)
    assert (overridden.config.crop, overridden.precision) == (448, "fp32")
    with pytest.raises(InputError, match="unknown benchmark field"):
        get_benchmark("voc21").with_overrides(threshold=0.2)
    with pytest.raises(InputError, match="stride <= crop"):
        get_benchmark("voc21").with_overrides(crop=64)
    with pytest.raises(InputError, match="no background class"):
        get_benchmark("ade20k").with_overrides(prob_threshold=0.2)
    with pytest.raises(InputError, match="unknown dataset"):
        get_benchmark("voc22")


PROTOCOL_FIELDS = (
    "short_side",
    "crop",
    "stride",
    "logit_scale",
    "prob_threshold",
    "area_threshold",
    "pamr_steps",
    "precision",
)


def _protocol(benchmark: Benchmark) -> tuple:
    return tuple(benchmark.settings()[name] for name in PROTOCOL_FIELDS)


def test_own_protocol_takes_each_method_settings_from_its_official_configs() -> None:
    expected = {  # (method, dataset): short side, crop, stride, logit scale, prob, area, PAMR steps, precision
        ("sclip", "voc21"): (336, 224, 112, 65, 0.1, 0.1, 0, "fp16"),
        ("sclip", "context60"): (336, 224, 112, 50, 0.1, None, 0, "fp16"),
        ("sclip", "coco_stuff164k"): (448, 224, 112, 40, 0.0, None, 0, "fp16"),
        ("sclip", "cityscapes"): (560, 224, 112, 40, 0.0, None, 0, "fp16"),
        ("clearclip", "voc21"): (448, 448, 224, 50, 0.5, None, 0, "fp16"),
        ("clearclip", "coco_object"): (448, 448, 224, 50, 0.4, None, 0, "fp16"),
        ("clearclip", "cityscapes"): (448, 224, 224, 50, 0.0, None, 0, "fp16"),
        ("clearclip", "ade20k"): (448, 448, 224, 50, 0.0, None, 0, "fp16"),
        ("naclip", "voc21"): (336, 224, None, 40, 0.1, None, 10, "fp16"),
        ("naclip", "voc20"): (336, 224, None, 40, 0.0, None, 10, "fp16"),
        ("naclip", "context59"): (336, 224, 112, 40, 0.0, None, 10, "fp16"),
        ("naclip", "coco_stuff164k"): (448, 224, 112, 40, 0.0, None, 10, "fp16"),
        ("clip", "voc21"): (336, 224, 112, 65, 0.1, 0.1, 0, "fp16"),
    }
    for (method, dataset), settings in expected.items():
        assert _protocol(get_benchmark(dataset, method=method, protocol="own")) == settings, (method, dataset)
    for dataset in BENCHMARKS:
        maskclip = get_benchmark(dataset, method="maskclip", protocol="own")
        assert _protocol(maskclip) == _protocol(get_benchmark(dataset, method="clearclip", protocol="own"))
        for method in METHODS:  # the default protocol is SC-CLIP's whatever the method
            assert get_benchmark(dataset, method=method) == BENCHMARKS[dataset]
        assert get_benchmark(dataset, "ViT-L/14", method="sc-clip", protocol="own") == get_benchmark(
            dataset, "ViT-L/14"
        )
        assert get_benchmark(dataset, "ViT-L/14", method="sclip", protocol="own") == get_benchmark(
            dataset, method="sclip", protocol="own"
        )
    assert set(OWN_PROTOCOLS) == set(METHODS) - {"sc-clip"}
    assert all(set(PROTOCOL_FIELDS) <= set(protocol.common) for protocol in OWN_PROTOCOLS.values())
    with pytest.raises(InputError, match="unknown protocol"):
        get_benchmark("voc21", protocol="official")


def test_own_protocol_runs_end_to_end_with_whole_images_and_pamr(tmp_path: Path, tiny_model) -> None:
    data = tmp_path / "data"
    make_random_dataset(data)
    common = {"method": "naclip", "templates": "simple", "show_progress": False}
    own = evaluate("voc21", data, tiny_model, protocol="own", out=tmp_path / "out", **common)
    assert own.settings.protocol == "own" and own.to_json()["protocol"] == "own"
    assert (own.settings.benchmark.config.stride, own.settings.benchmark.config.pamr_steps) == (None, 10)
    assert own.settings.benchmark.precision == "fp32"  # what ran: the tiny model on the CPU
    assert "protocol own, PAMR steps 10" in own.table()
    without_pamr = evaluate(own.settings.benchmark.with_overrides(pamr_steps=0), data, tiny_model, **common)
    assert not np.array_equal(own.confusion, without_pamr.confusion)
    assert build_segmenter(tiny_model, own.settings.benchmark).config.pamr_steps == 10


def test_run_names_are_those_earlier_runs_resume_from() -> None:
    """The run folder is named by a hash of the settings: benchmarks holding a config and rules hash as before."""
    expected = {
        ("voc21", "sc-clip", "scclip"): "voc21-sc-clip-ViT-B-16-cf18783d",
        ("cityscapes", "sc-clip", "scclip"): "cityscapes-sc-clip-ViT-B-16-e4b175c4",
        ("voc21", "naclip", "own"): "voc21-naclip-ViT-B-16-be137ecf",
    }
    for (dataset, method, protocol), name in expected.items():
        benchmark = get_benchmark(dataset, "ViT-B/16", method=method, protocol=protocol)
        settings = EvalSettings(benchmark, "ViT-B/16", "openai", method=method, protocol=protocol)
        assert settings.run_name() == name
        assert settings.to_json()["templates"] == "openai"


def test_the_segmenter_runs_the_preset_config_and_predict_gets_its_rules(
    tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_random_dataset(tmp_path, count=1)
    benchmark = get_benchmark("voc21").with_overrides(short_side=112, crop=112, stride=112, templates="simple")
    received = []
    original = Segmenter.predict

    def recording(self, *args, **kwargs):
        received.append((self.config, kwargs["rules"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "predict", recording)
    evaluate(benchmark, tmp_path, tiny_model, show_progress=False)
    ran = benchmark.with_overrides(precision="fp32")  # the tiny model on the CPU
    assert received == [(ran.config, ran.rules)] and ran.rules == LabelRules(0.15, 0.1, 50.0)


def write_predictions_as_ground_truth(root: Path, benchmark: Benchmark, model) -> None:
    """Segment synthetic images with the evaluation settings and store the labels as the dataset's labels."""
    benchmark = benchmark.with_overrides(templates="simple")
    segmenter = build_segmenter(model, benchmark)
    settings = EvalSettings(benchmark=benchmark, model_name=model.name, weights=model.weights)
    rng = np.random.default_rng(2)
    ids = SAMPLE_IDS[benchmark.layout][:2]
    for sample_id, shape in zip(ids, [(90, 120), (111, 73)]):
        image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        stored = read_image(write_sample(root, benchmark.layout, sample_id, image, np.zeros(shape)))
        labels = predict_labels(segmenter, build_vocabulary(benchmark), stored, settings)
        write_label(root, benchmark.layout, sample_id, labels + 1 if benchmark.reduce_zero_label else labels)
    write_split(root, benchmark.layout, ids)


# background + thresholds; reduce_zero_label; 847 classes in 16-bit label maps
@pytest.mark.parametrize("dataset", ["voc21", "voc20", "ade847"])
def test_ground_truth_equal_to_the_prediction_scores_100(tmp_path: Path, tiny_model, dataset: str) -> None:
    benchmark = get_benchmark(dataset).with_overrides(short_side=112, crop=112, stride=112)  # few small windows
    write_predictions_as_ground_truth(tmp_path, benchmark, tiny_model)
    result = evaluate(benchmark, tmp_path, tiny_model, templates="simple", show_progress=False)
    assert result.images == result.images_this_run == 2
    assert result.scores.miou == pytest.approx(100.0)
    assert result.scores.aacc == pytest.approx(100.0)
    assert np.count_nonzero(result.confusion - np.diag(np.diag(result.confusion))) == 0


def make_random_dataset(root: Path, count: int = 3) -> None:
    rng = np.random.default_rng(3)
    ids = SAMPLE_IDS["voc2012"][:count]
    for sample_id, shape in zip(ids, SIZES):
        write_sample(
            root,
            "voc2012",
            sample_id,
            rng.integers(0, 256, (*shape, 3), dtype=np.uint8),
            raw_labels(rng, shape, 21, False),
        )
    write_split(root, "voc2012", ids)


def test_interrupted_run_resumes_without_redoing_recorded_images(tmp_path: Path, tiny_model) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    make_random_dataset(data)
    benchmark = get_benchmark("voc21").with_overrides(short_side=112, crop=112, stride=112)  # small and fast
    common = {"templates": "simple", "show_progress": False}
    fresh = evaluate(benchmark, data, tiny_model, **common)

    first = evaluate(benchmark, data, tiny_model, out=out, limit=1, **common)
    assert (first.images, first.images_this_run) == (1, 1)
    records = first.run_dir / "records" / "rank0.jsonl"
    assert len(records.read_text().splitlines()) == 1

    resumed = evaluate(benchmark, data, tiny_model, out=out, **common)
    assert (resumed.images, resumed.images_this_run) == (3, 2)
    np.testing.assert_array_equal(resumed.confusion, fresh.confusion)

    # A run killed while writing leaves half a line: that image is redone, the others are kept.
    text = records.read_text()
    records.write_text(text[: len(text) - 20])
    repaired = evaluate(benchmark, data, tiny_model, out=out, **common)
    assert repaired.images_this_run == 1
    np.testing.assert_array_equal(repaired.confusion, fresh.confusion)
    assert len(records.read_text().splitlines()) == 3

    saved = json.loads((repaired.run_dir / "results.json").read_text())
    assert saved["images"] == 3 and saved["mIoU"] == pytest.approx(repaired.scores.miou, abs=1e-3)
    np.testing.assert_array_equal(np.array(saved["confusion_matrix"]), fresh.confusion)
    assert (repaired.run_dir / "settings.json").is_file()

    restarted = evaluate(benchmark, data, tiny_model, out=out, resume=False, **common)
    assert restarted.images_this_run == 3 and len(records.read_text().splitlines()) == 3

    changed = EvalSettings(
        benchmark=benchmark.with_overrides(logit_scale=20, templates="simple"),
        model_name=tiny_model.name,
        weights=tiny_model.weights,
    )
    assert (out / changed.run_name()) != first.run_dir  # other settings never resume from these records


def test_cli_lists_presets_and_reports_a_wrong_root(tmp_path: Path, capsys) -> None:
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "cityscapes" in listing and "560" in listing and "SegmentationClassContext" in listing
    assert "--protocol scclip" in listing and "--protocol own" in listing and "sinahmr/NACLIP" in listing
    naclip_voc21 = listing.split("  naclip, from")[1].splitlines()[1]
    assert naclip_voc21.split() == [
        "voc21",
        "short",
        "side",
        "336",
        "whole",
        "image",
        "logit",
        "scale",
        "40",
        "prob",
        "0.1",
        "area",
        "-",
        "PAMR",
        "10",
        "fp16",
    ]
    assert main(["--dataset", "voc21", "--root", str(tmp_path), "--model", "tiny-test", "--weights", "random"]) == 2
    assert "JPEGImages" in capsys.readouterr().err


def test_eval_loads_a_model_without_an_openai_tag_with_its_own_tag(tmp_path: Path, capsys, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    make_random_dataset(tmp_path / "data", count=1)
    model, tag = "ViT-H-14", resolve_weights("ViT-H-14")
    assert tag != "openai"
    assert main(["--dataset", "voc21", "--root", str(tmp_path / "data"), "--model", model, "--device", "cpu"]) == 2
    assert f"'{tag}' weights of {model} are not in the Hugging Face cache" in capsys.readouterr().err
    with pytest.raises(WeightsUnavailableError, match=f"'{tag}' weights of {model}"):
        run_benchmark("voc21", tmp_path / "data", model_name=model, device="cpu")


def test_two_processes_with_gloo_give_the_same_confusion_matrix_as_one(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    make_random_dataset(data)
    arguments = [
        "--dataset",
        "voc21",
        "--root",
        str(data),
        "--model",
        "tiny-test",
        "--weights",
        "random",
        "--templates",
        "simple",
        "--short-side",
        "112",
        "--crop",
        "112",
        "--stride",
        "112",
        "--device",
        "cpu",
        "--no-progress",
    ]

    assert main([*arguments, "--out", str(tmp_path / "one")]) == 0
    table = capsys.readouterr().out
    assert "mIoU" in table and "aeroplane" in table and "random" in table
    (single,) = (tmp_path / "one").glob("*/results.json")

    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "scclip_core.eval",
            *arguments,
            "--out",
            str(tmp_path / "two"),
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (double,) = (tmp_path / "two").glob("*/results.json")
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert two["world_size"] == 2 and two["images_this_run"] == one["images"] == 3
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert sorted(p.name for p in (double.parent / "records").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    assert "mIoU" in completed.stdout


def test_progress_is_shown_with_tqdm_on_stderr(tmp_path: Path, tiny_model, capsys) -> None:
    make_random_dataset(tmp_path, count=2)
    benchmark = get_benchmark("voc21").with_overrides(short_side=112, crop=112, stride=112)
    evaluate(benchmark, tmp_path, tiny_model, templates="simple")
    shown = capsys.readouterr().err
    assert "voc21: 100%" in shown and "2/2" in shown and "image/s" in shown
    evaluate(benchmark, tmp_path, tiny_model, templates="simple", show_progress=False)
    assert capsys.readouterr().err == ""


def test_coco_object_labels_are_made_from_coco_stuff_ones(tmp_path: Path) -> None:
    stuff = np.array([[0, 79, 80], [170, 255, 5]])
    write_sample(tmp_path, "coco_stuff164k", "000000000139", np.zeros((2, 3, 3), np.uint8), stuff)
    assert coco_object.main([str(tmp_path)]) == 0
    (sample,) = list_samples(LAYOUTS["coco_object"], tmp_path)
    np.testing.assert_array_equal(read_label(sample.label_path, reduce_zero_label=False), [[1, 80, 0], [0, 0, 6]])
    assert coco_object.main([str(tmp_path / "missing")]) == 2


def test_own_protocol_runs_resclip_and_pearl_with_each_datasets_settings(
    tmp_path: Path, tiny_model, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dataset's own method settings reach the image side (ResCLIP's VOC21 threshold) and the refinements
    (PEARL's TLP); `--method-param` changes them on top of the protocol's, and the run folder's name with them."""
    data = tmp_path / "data"
    make_random_dataset(data, count=1)
    common = {"templates": "simple", "show_progress": False, "out": tmp_path / "out"}
    resclip = evaluate("voc21", data, tiny_model, method="resclip", protocol="own", **common)
    assert resclip.settings.benchmark.method_params.threshold == 0.5
    lower = resclip.settings.benchmark.with_overrides(
        method_params=replace(resclip.settings.benchmark.method_params, threshold=0.0)
    )
    assert replace(resclip.settings, benchmark=lower).run_name() != resclip.settings.run_name()
    pearl = evaluate("voc21", data, tiny_model, method="pearl", protocol="own", **common)
    assert pearl.settings.benchmark.config.refinements("pearl") == ("tlp",)
    without = evaluate(pearl.settings.benchmark.with_overrides(refine=()), data, tiny_model, method="pearl", **common)
    assert not np.array_equal(pearl.confusion, without.confusion), "TLP ran under the own protocol"
    code = main(
        ["--dataset", "voc21", "--root", str(data), "--model", "tiny-test", "--weights", "random", "--method",
         "resclip", "--protocol", "own", "--method-param", "threshold=0.2", "--templates", "simple",
         "--out", str(tmp_path / "cli"), "--json", "--no-progress"]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["preset"]["method_params"]["threshold"] == 0.2
