"""The command line end to end, with random weights saved to a file in each supported format."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_core import DEFAULT_BACKGROUND_WORDS, Stages, TextEncoder
from scclip_core.cli import main
from scclip_core.text import ENTRY_SUFFIX

from .weights import FORMATS, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    paths = []
    for name, size in (("wide.jpg", (90, 160)), ("gray.png", (64, 48))):
        array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        image = Image.fromarray(array)
        (image.convert("L") if name.startswith("gray") else image).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_segment_with_weights_from_every_format(tiny_model, photos, tmp_path, capsys, fmt):
    weights = save_checkpoint(tiny_model.clip, tmp_path / f"w{FORMATS[fmt]}", fmt)
    out, probs = tmp_path / "labels.png", tmp_path / "probs.npy"
    code = main(
        [
            "segment",
            str(photos[0]),
            "--model",
            "tiny-test",
            "--weights",
            str(weights),
            "--classes",
            "sky, cloud; grass; person",
            "--out",
            str(out),
            "--save-probs",
            str(probs),
            "--json",
            "--templates",
            "simple",
            "--prob-threshold",
            "0.2",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip())
    assert summary["classes"] == ["sky", "grass", "person", "background"]
    assert summary["random_weights"] is False and str(weights) in summary["weights"]
    labels = Image.open(out)
    assert labels.mode == "P" and labels.size == (160, 90)
    assert set(np.unique(np.asarray(labels))) <= {0, 1, 2, 3}
    array = np.load(probs)
    assert array.dtype == np.float32 and array.shape == (4, 90, 160)
    assert np.all(array.max(0) <= 1.0 + 1e-6)


def test_several_images_write_into_a_folder_and_report_progress(photos, tmp_path, capsys):
    code = main(
        [
            "segment",
            *map(str, photos),
            "--model",
            "tiny-test",
            "--weights",
            "random",
            "--classes",
            "cat; dog",
            "--no-background",
            "--out",
            str(tmp_path / "labels"),
            "--save-probs",
            str(tmp_path / "probs"),
            "--json",
            "--method",
            "naclip",
            "--templates",
            "simple",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["method"] for line in lines] == ["naclip", "naclip"]
    assert lines[1]["classes"] == ["cat", "dog"] and lines[1]["image_size"] == [48, 64]
    assert (tmp_path / "labels" / "wide.png").is_file() and (tmp_path / "labels" / "gray.png").is_file()
    assert np.load(tmp_path / "probs" / "gray.npy").shape == (2, 64, 48)
    assert "segmenting" in captured.err and "random" in captured.err


def test_stage_switches_and_options_reach_the_engine(photos, capsys):
    code = main(
        [
            "segment",
            str(photos[1]),
            "--model",
            "tiny-test",
            "--weights",
            "random",
            "--classes",
            "cat",
            "--disable",
            "anomaly",
            "--disable",
            "multi-level",
            "--detector",
            "l2norm",
            "--stride",
            "0",
            "--short-side",
            "0",
            "--json",
            "--templates",
            "simple",
            "--background",
            "wall, floor",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stages"]["anomaly"] is False and summary["stages"]["multi_level"] is False
    assert summary["stages"]["pre_aggregation"] is True
    assert summary["windows"] == 1 and summary["resized_size"] == [48, 64]


def test_stage_names_have_one_validator_on_both_command_lines(capsys):
    assert Stages.check_names([" multi-level", "anomaly", "multi_level"]) == ("multi_level", "anomaly")
    only = Stages.only("pre-aggregation")
    assert [name for name in Stages.names() if getattr(only, name)] == ["pre_aggregation"]
    for command in (["segment", "x.png", "--classes", "cat"], ["eval"]):
        with pytest.raises(SystemExit):
            main([*command, "--disable", "bogus"])
        assert "unknown stage(s) ['bogus']; stages are" in capsys.readouterr().err


def test_pamr_options_reach_the_engine(photos, tmp_path, capsys):
    common = [
        "segment",
        str(photos[0]),
        "--model",
        "tiny-test",
        "--weights",
        "random",
        "--classes",
        "cat; dog",
        "--json",
        "--templates",
        "simple",
    ]
    assert main([*common, "--save-probs", str(tmp_path / "plain.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["pamr_steps"] == 0
    assert (
        main([*common, "--pamr-steps", "3", "--pamr-dilations", "2,4", "--save-probs", str(tmp_path / "pamr.npy")]) == 0
    )
    assert json.loads(capsys.readouterr().out)["pamr_steps"] == 3
    assert np.abs(np.load(tmp_path / "pamr.npy") - np.load(tmp_path / "plain.npy")).max() > 1e-4
    with pytest.raises(SystemExit):
        main([*common, "--pamr-dilations", "8,x"])
    assert "comma-separated whole numbers" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--classes", " ; "], "no classes"),
        (["--classes", "cat", "--weights", "/missing/w.pt"], "not found"),
        (["--classes", "cat", "--model", "ViT-Q"], "unknown model"),
        (["--classes", "cat", "--prob-threshold", "3"], "prob_threshold"),
        (["--classes", "cat", "--pamr-steps", "-1"], "pamr_steps"),
        (["--classes", "cat", "--pamr-dilations", "0,8"], "pamr_dilations"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(photos, capsys, arguments, message):
    defaults = ["--model", "tiny-test", "--weights", "random"]
    code = main(["segment", str(photos[0]), *defaults, *arguments])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_missing_image_among_several_fails_that_image_only(photos, tmp_path, capsys):
    code = main(
        [
            "segment",
            str(photos[0]),
            str(tmp_path / "missing.jpg"),
            "--model",
            "tiny-test",
            "--weights",
            "random",
            "--classes",
            "cat",
            "--templates",
            "simple",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "missing.jpg" in captured.err and "not found" in captured.err
    assert str(photos[0]) in captured.out


def test_module_entry_point_runs_as_a_program(photos):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "scclip_core",
            "segment",
            str(photos[0]),
            "--model",
            "tiny-test",
            "--weights",
            "random",
            "--classes",
            "cat; dog",
            "--json",
            "--templates",
            "simple",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["classes"] == ["cat", "dog", "background"]
    bad = subprocess.run(
        [sys.executable, "-m", "scclip_core", "segment"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "required" in bad.stderr


TINY = ["--model", "tiny-test", "--weights", "random", "--templates", "simple"]


def test_second_run_reads_every_text_embedding_from_the_disk_cache(photos, private_cache, capsys, monkeypatch):
    arguments = ["segment", str(photos[1]), *TINY, "--classes", "cat; dog", "--json"]
    assert main(arguments) == 0
    first = json.loads(capsys.readouterr().out)
    written = list(private_cache.glob(f"text-embeddings/*/*{ENTRY_SUFFIX}"))
    assert len(written) == 2 + len(DEFAULT_BACKGROUND_WORDS)
    monkeypatch.setattr(TextEncoder, "_encode_names", lambda self, names: pytest.fail(f"re-encoded {names}"))
    assert main(arguments) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["shares"] == first["shares"]


def test_no_text_cache_writes_nothing(photos, private_cache):
    assert main(["segment", str(photos[1]), *TINY, "--classes", "cat", "--no-text-cache"]) == 0
    assert not list(private_cache.glob(f"text-embeddings/*/*{ENTRY_SUFFIX}"))


def test_labels_are_at_the_input_size_whatever_the_working_size(photos, tmp_path, capsys):
    out, probs = tmp_path / "labels.png", tmp_path / "probs.npy"
    code = main(
        [
            "segment",
            str(photos[0]),
            *TINY,
            "--classes",
            "cat; dog",
            "--max-side",
            "40",
            "--short-side",
            "45",
            "--out",
            str(out),
            "--save-probs",
            str(probs),
            "--probs-budget",
            str(3 * 90 * 160 * 4 / 2**30 / 2),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out)
    assert Image.open(out).size == (160, 90) and summary["image_size"] == [160, 90]
    assert any("downscaled to 40x22" in notice for notice in summary["notices"])
    working = summary["resized_size"]
    assert np.load(probs).shape == (3, working[1], working[0]) and summary["outputs"]["probs_size"] == working
    assert "probabilities are at the working size" in captured.err


def test_more_than_256_classes_give_a_16_bit_label_map(photos, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"thing {index}, item {index}\n" for index in range(300)))
    out = tmp_path / "labels.png"
    code = main(
        [
            "segment",
            str(photos[1]),
            *TINY,
            "--classes-file",
            str(classes),
            "--no-background",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    labels = Image.open(out)
    assert labels.mode == "I;16" and labels.size == (48, 64) and len(summary["classes"]) == 300
    values = np.asarray(labels)
    shares = np.bincount(values.ravel(), minlength=300) / values.size
    assert np.allclose(shares, [summary["shares"][name] for name in summary["classes"]])


def test_a_folder_run_resumes_and_keeps_one_summary(photos, tmp_path, capsys):
    out = tmp_path / "out"
    arguments = ["segment", str(photos[0].parent), *TINY, "--classes", "cat; dog", "--out", str(out)]
    assert main(arguments) == 0
    summary = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [(Path(r["image"]).name, r["status"]) for r in summary] == [("gray.png", "done"), ("wide.jpg", "done")]
    assert summary[0]["outputs"]["labels"] == str(out / "gray.png")
    (out / "wide.png").unlink()
    capsys.readouterr()
    assert main([*arguments, "--json"]) == 0
    captured = capsys.readouterr()
    assert [Path(json.loads(line)["image"]).name for line in captured.out.splitlines()] == ["wide.jpg"]
    assert "skipped 1 image" in captured.err
    again = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in again] == ["gray.png", "wide.jpg"] and again[0] == summary[0]
    assert sorted(path.name for path in out.iterdir()) == ["gray.png", "summary.jsonl", "wide.png"]


def test_two_processes_with_gloo_write_what_one_process_writes(tmp_path):
    """Label maps, summaries and the COCO file (written by process 0 from every process's label maps)."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for index, size in enumerate([(40, 56), (64, 30), (33, 33)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"photo{index}.png")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    arguments = [
        "segment",
        str(images / "*.png"),
        *TINY,
        "--classes",
        "cat; dog, puppy",
        "--short-side",
        "112",
        "--crop",
        "112",
        "--stride",
        "56",
        "--device",
        "cpu",
    ]
    launchers = {
        "one": [sys.executable],
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    }
    for folder, launcher in launchers.items():
        command = [*launcher, "-m", "scclip_core", *arguments, "--out", str(tmp_path / folder)]
        command += ["--coco", str(tmp_path / f"{folder}.json")]
        completed = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
    for index in range(3):
        one = np.asarray(Image.open(tmp_path / "one" / f"photo{index}.png"))
        two = np.asarray(Image.open(tmp_path / "two" / f"photo{index}.png"))
        assert np.array_equal(one, two)
    summaries = {}
    for folder in ("one", "two"):
        lines = [json.loads(line) for line in (tmp_path / folder / "summary.jsonl").read_text().splitlines()]
        summaries[folder] = lines
        assert [Path(line["image"]).name for line in lines] == ["photo0.png", "photo1.png", "photo2.png"]
    assert {line["rank"] for line in summaries["two"]} == {0, 1}
    assert [line["shares"] for line in summaries["one"]] == [line["shares"] for line in summaries["two"]]
    assert json.loads((tmp_path / "one.json").read_text()) == json.loads((tmp_path / "two.json").read_text())
