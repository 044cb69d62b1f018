"""The package as users get it: a wheel built from the checkout, installed elsewhere, run from another folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The wheel installed into a folder of its own (dependencies come from this environment)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "scclip_core", source / "scclip_core", ignore=shutil.ignore_patterns("__pycache__"))
    wheels, target = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], source, dict(os.environ)
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("scclip_explorer-*.whl")
    done = _run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], source, dict(os.environ))
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "PYTHONPATH": str(target), "PATH": f"{target / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    return target, env


def test_console_script_answers_help_quickly_without_torch(installed, tmp_path):
    target, env = installed
    started = time.perf_counter()
    shown = _run(["scclip", "--help"], tmp_path, env)
    elapsed = time.perf_counter() - started
    assert shown.returncode == 0, shown.stderr
    assert "usage: scclip" in shown.stdout and "segment" in shown.stdout and "eval" in shown.stdout
    assert elapsed < 2.0, f"scclip --help took {elapsed:.2f} s"
    probe = "import sys, scclip_core.cli; print(scclip_core.cli.__file__); print('torch' in sys.modules)"
    where, torch_loaded = _run([sys.executable, "-c", probe], tmp_path, env).stdout.split()
    assert Path(where).is_relative_to(target) and torch_loaded == "False"


def test_installed_package_reads_its_class_lists_and_model_configs(installed, tmp_path):
    _, env = installed
    listing = _run(["scclip", "eval", "--list"], tmp_path, env)
    assert listing.returncode == 0, listing.stderr
    assert "ade847" in listing.stdout and "847 classes" in listing.stdout
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "photo.png")
    segmented = _run(
        [
            "scclip",
            "segment",
            "photo.png",
            "--model",
            "tiny-test",
            "--weights",
            "random",
            "--classes",
            "cat; dog",
            "--templates",
            "simple",
            "--no-text-cache",
            "--json",
        ],
        tmp_path,
        env,
    )
    assert segmented.returncode == 0, segmented.stderr
    assert json.loads(segmented.stdout.splitlines()[-1])["classes"] == ["cat", "dog", "background"]


def test_every_deliberate_raise_in_the_engine_is_a_scclip_error() -> None:
    """The engine raises only ScclipError subclasses on purpose, so front ends can tell bad input from a bug."""
    import ast
    import builtins

    import scclip_core

    builtin = set(dir(builtins))
    allowed = {"AttributeError", "argparse.ArgumentTypeError"}  # module __getattr__; argparse's own type errors
    pending = {"encoder.py"}  # the encoder's raises move to the family in its own change
    found = []
    for path in sorted(Path(scclip_core.__file__).parent.rglob("*.py")):
        if path.name in pending:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = ast.unparse(node.exc.func)
                if name in builtin and name not in allowed:
                    found.append(f"{path.name}:{node.lineno} raises {name}")
    assert not found, found
