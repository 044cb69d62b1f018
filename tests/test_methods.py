"""The registry of methods is the one list of methods: the `Method` type, both command lines, the eval's own
protocols, the demo's dropdown, ablation checkboxes and labels, `model_info`, the `/segment` description and the
documentation's published table all name exactly the registered methods, with what their modules declare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scclip_core import METHODS, CalibrationParams
from scclip_core.cli import main
from scclip_core.eval import BENCHMARKS, OWN_PROTOCOLS, get_benchmark
from scclip_core.methods import METHOD_SPECS, PUBLISHED_DATASETS
from tests.serving import FAST_CONFIG
from tools.docs_hooks import MARKERS, on_page_markdown

ROOT = Path(__file__).resolve().parents[1]
_PUBLISHED_ROW = re.compile(r"^\|[^|]*`(--method [^`]*)`[^|]*\| published \|(.*)\|$", re.MULTILINE)


def test_the_method_type_names_exactly_the_registered_methods() -> None:
    assert tuple(METHOD_SPECS) == METHODS
    assert all(name == spec.name for name, spec in METHOD_SPECS.items())


def test_each_module_declares_a_full_valid_method() -> None:
    known = {field for field in CalibrationParams.__dataclass_fields__}
    for spec in METHOD_SPECS.values():
        assert spec.label and spec.published and set(spec.settings) <= known, spec.name
        assert all(len(row.scores) == len(PUBLISHED_DATASETS) for row in spec.published), spec.name
        assert spec.text_dependent == (spec.name == "resclip"), "only ResCLIP's image side reads the class text"
        assert (spec.params is None) == (spec.name not in ("resclip", "pearl")), spec.name
        assert all(spec.checked_params(params) == params for _, params in spec.ablations), spec.name


@pytest.mark.parametrize("command", [["segment", "--help"], ["eval", "--help"]])
def test_both_command_lines_offer_every_method(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(command)
    assert "--method {" + ",".join(METHOD_SPECS) + "}" in capsys.readouterr().out


def test_the_own_protocol_of_each_method_is_its_modules() -> None:
    assert OWN_PROTOCOLS == {name: spec.protocol for name, spec in METHOD_SPECS.items() if spec.protocol}
    assert METHOD_SPECS["sc-clip"].protocol is None, "SC-CLIP's own protocol is the default one"
    for name, spec in METHOD_SPECS.items():
        if spec.protocol is not None:
            for dataset, benchmark in BENCHMARKS.items():
                own = benchmark.with_overrides(**spec.protocol.changes(dataset))
                assert get_benchmark(dataset, method=name, protocol="own") == own, (name, dataset)


def _built(page: str) -> str:
    """A documentation page's markdown as the site build leaves it, the registry's tables in place."""
    text = (ROOT / page).read_text(encoding="utf-8")
    assert any(marker in text for marker in MARKERS), f"{page} holds no registry marker"
    return on_page_markdown(text)


def test_the_documented_published_rows_are_the_modules() -> None:
    text = _built("docs/evaluation.md")
    documented = {
        command: tuple(float(cell.strip("* ")) for cell in cells.split("|"))
        for command, cells in _PUBLISHED_ROW.findall(text)
    }
    expected = {}
    for name, spec in METHOD_SPECS.items():
        for row in spec.published:
            command = " ".join(
                part for part in (f"--method {name}", "--protocol own" if spec.protocol else "", row.flags) if part
            )
            expected[command] = (*row.scores, row.average)
    assert documented == expected


def test_the_library_example_names_every_other_method() -> None:
    others = ", ".join(name for name in METHOD_SPECS if name != "sc-clip")
    assert others in _built("docs/library.md")


@pytest.mark.parametrize("page", ["README.md", "docs/demo.md"])
def test_the_api_examples_list_no_methods_by_hand(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    assert "scclip_core.METHODS" in text and ", ".join(list(METHOD_SPECS)[1:3]) not in text


def test_the_method_table_describes_every_other_method() -> None:
    text = _built("docs/method.md")
    for name, spec in METHOD_SPECS.items():
        assert (f"| `{name}` | {spec.venue} | {spec.summary} |" in text) == (name != "sc-clip"), name


def test_the_documented_own_protocols_and_sources_are_the_modules() -> None:
    text = _built("docs/evaluation.md")
    protocol_rows = set(re.findall(r"^\| `([\w-]+)` \|", text, re.MULTILINE))
    assert protocol_rows == {name for name, spec in METHOD_SPECS.items() if spec.protocol}
    for spec in METHOD_SPECS.values():
        if spec.repository is not None:
            assert f"[{spec.repository}](https://github.com/{spec.repository})" in text, spec.name
        if spec.commit is not None:
            assert spec.commit in text, spec.name


def test_the_demo_offers_and_describes_every_method(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    from app import build_demo
    from demo.events import Events
    from demo.events.segmenting import SegmentEvents
    from demo.host import ModelHost
    from demo.labels import COMPARISON_METHODS, METHOD_LABELS, SCCLIP, VANILLA

    assert METHOD_LABELS == {name: spec.label for name, spec in METHOD_SPECS.items()}
    assert set(COMPARISON_METHODS) | {SCCLIP, VANILLA} == set(METHOD_SPECS)
    *first, last = METHOD_SPECS
    listed = f"{first[0]} (default), {', '.join(first[1:])} or {last}."
    assert f"method: {listed}" in SegmentEvents.segment.__doc__

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    demo = build_demo("ViT-B/16", "openai", config=FAST_CONFIG)
    blocks = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}
    assert [value for _, value in blocks["method"].choices] == list(METHOD_SPECS)
    assert [value for _, value in blocks["comparisons"].choices] == list(COMPARISON_METHODS)
    assert Events(ModelHost("tiny-test", "random", config=FAST_CONFIG)).segmenting.model_info()["methods"] == list(
        METHOD_SPECS
    )


NINTH_METHOD = '''"""A test method: MaskCLIP's last block under another name."""

from __future__ import annotations

from .base import MethodSpec, Published
from .maskclip import last_block

SPEC = MethodSpec(
    name="ninth",
    label="Ninth",
    summary="a test method: MaskCLIP's last block under another name",
    repository=None,
    commit=None,
    venue="test'99",
    year=2099,
    last_block=last_block,
    published=(Published((1.0,) * 8, 1.0),),
)
'''

NINTH_CHECKS = """
import contextlib, io, json, numpy as np
from scclip_core import METHODS, Segmenter, SegmenterConfig, ablation_variants, load_model
from scclip_core.cli import main
from tools.docs_hooks import methods_table, published_table
from demo.labels import COMPARISON_METHODS, METHOD_LABELS
usage = io.StringIO()
with contextlib.redirect_stdout(usage), contextlib.suppress(SystemExit):
    main(["segment", "--help"])
result = Segmenter(load_model("tiny-test", "random"), SegmenterConfig(templates="simple")).segment(
    np.zeros((64, 64, 3), np.uint8), "a; b", method="ninth")
print(json.dumps({
    "methods": list(METHODS),
    "cli": "--method {" + ",".join(METHODS) + "}" in usage.getvalue(),
    "ablation": [variant.method for variant in ablation_variants()],
    "docs": ["`ninth`" in methods_table(), "--method ninth`" in published_table()],
    "demo": ["ninth" in COMPARISON_METHODS, METHOD_LABELS.get("ninth")],
    "ran": result.method,
}))
"""


def test_a_ninth_method_is_one_module(tmp_path: Path) -> None:
    """A copy of the code with one more module in scclip_core/methods/ offers it everywhere, with no other edit."""
    import shutil
    import subprocess
    import sys

    for folder in ("scclip_core", "demo", "tools"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "scclip_core" / "methods" / "ninth.py").write_text(NINTH_METHOD, encoding="utf-8")
    output = subprocess.run(
        [sys.executable, "-c", NINTH_CHECKS], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(output.strip().splitlines()[-1])
    assert found["methods"][-1] == found["ablation"][-1] == "ninth" and found["cli"]
    assert found["docs"] == [True, True] and found["demo"] == [True, "Ninth"] and found["ran"] == "ninth"
