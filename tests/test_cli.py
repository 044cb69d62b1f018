"""The command line end to end, with random weights saved to a file in each supported format."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_core.cli import main

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
    code = main(["segment", str(photos[0]), "--model", "tiny-test", "--weights", str(weights), "--classes",
                 "sky, cloud; grass; person", "--out", str(out), "--save-probs", str(probs), "--json",
                 "--templates", "simple", "--prob-threshold", "0.2"])
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
    code = main(["segment", *map(str, photos), "--model", "tiny-test", "--weights", "random", "--classes", "cat; dog",
                 "--no-background", "--out", str(tmp_path / "labels"), "--save-probs", str(tmp_path / "probs"),
                 "--json", "--method", "naclip", "--templates", "simple"])
    captured = capsys.readouterr()
    assert code == 0
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["method"] for line in lines] == ["naclip", "naclip"]
    assert lines[1]["classes"] == ["cat", "dog"] and lines[1]["image_size"] == [48, 64]
    assert (tmp_path / "labels" / "wide.png").is_file() and (tmp_path / "labels" / "gray.png").is_file()
    assert np.load(tmp_path / "probs" / "gray.npy").shape == (2, 64, 48)
    assert "segmenting" in captured.err and "random" in captured.err


def test_stage_switches_and_options_reach_the_engine(photos, capsys):
    code = main(["segment", str(photos[1]), "--model", "tiny-test", "--weights", "random", "--classes", "cat",
                 "--disable", "anomaly", "--disable", "multi-level", "--detector", "l2norm", "--stride", "0",
                 "--short-side", "0", "--json", "--templates", "simple", "--background", "wall, floor"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stages"]["anomaly"] is False and summary["stages"]["multi_level"] is False
    assert summary["stages"]["pre_aggregation"] is True
    assert summary["windows"] == 1 and summary["resized_size"] == [48, 64]


def test_pamr_options_reach_the_engine(photos, tmp_path, capsys):
    common = ["segment", str(photos[0]), "--model", "tiny-test", "--weights", "random", "--classes", "cat; dog",
              "--json", "--templates", "simple"]
    assert main([*common, "--save-probs", str(tmp_path / "plain.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["pamr_steps"] == 0
    assert main([*common, "--pamr-steps", "3", "--pamr-dilations", "2,4", "--save-probs", str(tmp_path / "pamr.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["pamr_steps"] == 3
    assert np.abs(np.load(tmp_path / "pamr.npy") - np.load(tmp_path / "plain.npy")).max() > 1e-4
    with pytest.raises(SystemExit):
        main([*common, "--pamr-dilations", "8,x"])
    assert "comma-separated whole numbers" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [(["--classes", " ; "], "no classes"), (["--classes", "cat", "--weights", "/missing/w.pt"], "not found"),
     (["--classes", "cat", "--model", "ViT-Q"], "unknown model"),
     (["--classes", "cat", "--prob-threshold", "3"], "prob_threshold"),
     (["--classes", "cat", "--pamr-steps", "-1"], "pamr_steps"), (["--classes", "cat", "--pamr-dilations", "0,8"], "pamr_dilations")],
)
def test_bad_input_exits_non_zero_with_a_message(photos, capsys, arguments, message):
    defaults = ["--model", "tiny-test", "--weights", "random"]
    code = main(["segment", str(photos[0]), *defaults, *arguments])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_missing_image_among_several_fails_that_image_only(photos, tmp_path, capsys):
    code = main(["segment", str(photos[0]), str(tmp_path / "missing.jpg"), "--model", "tiny-test", "--weights",
                 "random", "--classes", "cat", "--templates", "simple"])
    captured = capsys.readouterr()
    assert code == 1
    assert "missing.jpg" in captured.err and "not found" in captured.err
    assert str(photos[0]) in captured.out


def test_module_entry_point_runs_as_a_program(photos):
    completed = subprocess.run(
        [sys.executable, "-m", "scclip_core", "segment", str(photos[0]), "--model", "tiny-test", "--weights",
         "random", "--classes", "cat; dog", "--json", "--templates", "simple"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["classes"] == ["cat", "dog", "background"]
    bad = subprocess.run([sys.executable, "-m", "scclip_core", "segment"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "required" in bad.stderr
