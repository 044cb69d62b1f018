"""The package as users get it: a wheel built from the checkout, installed elsewhere, run from another folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


HELP_PROBE = """
import sys
from scclip_core import cli
try:
    cli.main(sys.argv[1:], prog="scclip")
finally:
    print(cli.__file__, "torch" in sys.modules or "open_clip" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("command", [["--help"], ["segment", "--help"], ["eval", "--help"], ["eval", "--list"]])
def test_help_and_listings_never_import_torch(installed, tmp_path, command):
    """What makes `--help` fast: answering it imports neither torch nor open_clip (timed in benchmarks/startup.py)."""
    target, env = installed
    shown = _run(["scclip", *command], tmp_path, env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: scclip") or "--protocol scclip" in shown.stdout
    probed = _run([sys.executable, "-c", HELP_PROBE, *command], tmp_path, env)
    where, heavy_loaded = probed.stderr.split()[-2:]
    assert Path(where).is_relative_to(target) and heavy_loaded == "False", probed.stderr


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
    found = []
    for path in sorted(Path(scclip_core.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = ast.unparse(node.exc.func)
                if name in builtin and name not in allowed:
                    found.append(f"{path.name}:{node.lineno} raises {name}")
    assert not found, found


def test_the_engine_never_imports_its_eval_package() -> None:
    """Class lists and process sharding live in the engine and eval uses them, never the other way round; only the
    command line, the front end that serves `scclip eval`, reaches into eval."""
    import ast

    import scclip_core

    root = Path(scclip_core.__file__).parent
    reaching = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                modules = [node.module or ""] + ([alias.name for alias in node.names] if not node.module else [])
            elif isinstance(node, ast.Import):
                modules = [alias.name.removeprefix("scclip_core.") for alias in node.names]
            else:
                continue
            if any(module == "eval" or module.startswith("eval.") for module in modules):
                reaching.append(path.name)
    assert sorted(set(reaching)) == ["cli.py"]


@pytest.mark.parametrize("package", ["scclip_core", "scclip_core.eval"])
def test_type_checkers_see_exactly_the_lazy_exports(package: str) -> None:
    """The `if TYPE_CHECKING:` imports name the same things, from the same modules, as the lazy `_EXPORTS`."""
    import ast
    import importlib

    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    (block,) = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    imported = {
        statement.module: sorted(alias.name for alias in statement.names)
        for statement in block.body
        if isinstance(statement, ast.ImportFrom) and statement.level == 1
    }
    assert len(imported) == len(block.body), "the block holds only `from .module import ...` statements"
    assert imported == {name: sorted(names) for name, names in module._EXPORTS.items()}
    assert sorted(name for names in imported.values() for name in names) == module.__all__
    for name in module.__all__:
        assert getattr(module, name) is getattr(importlib.import_module(f"{package}.{module._MODULE_OF[name]}"), name)
