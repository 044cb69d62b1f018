"""The README and the documentation site stay true to the repository: the README fits on a screen, its set-up
commands are the ones that work on a fresh machine, and every page and relative link it or the site names exists.
(`mkdocs build --strict` in .ci/run checks the site's own links, anchors and docstrings.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 150
APP_COMMAND = "pip install -r requirements.txt && python app.py"
TEST_COMMAND = "bash .ci/run"
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def _section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of that level."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _nav_pages(entries: list) -> list[str]:
    """Every page file named in an MkDocs nav, in order."""
    pages: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _segment_keywords(text: str) -> list[str]:
    """The keyword arguments of the `/segment` call in a `gradio_client` example."""
    call = next(block for _, block in _FENCE.findall(text) if 'api_name="/segment"' in block)
    return re.findall(r"^\s+(\w+)=", call.split('api_name="/segment"')[0], re.MULTILINE)


def test_readme_fits_on_a_screen() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_keeps_the_spaces_front_matter() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front_matter = yaml.safe_load(text.split("---\n")[1])
    assert (ROOT / front_matter["app_file"]).is_file()
    assert front_matter["sdk"] == "gradio"


def test_readme_set_up_commands_are_the_ones_that_work_on_a_fresh_machine() -> None:
    commands = [
        block.strip() for _, block in _FENCE.findall(_section(README.read_text(encoding="utf-8"), "Quick start"))
    ]
    assert commands == [APP_COMMAND, TEST_COMMAND]
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert "python3 -m pip install -q -r requirements-dev.txt" in ci_lines
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines(), (
        "the test install must include the app's own"
    )
    assert any("-m mkdocs build --strict" in line for line in ci_lines), "the site is built in CI"
    assert ci_lines[-1] == "python3 -m pytest"


def test_every_page_of_the_site_is_in_its_nav_and_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = _nav_pages(config["nav"])
    assert len(pages) == len(set(pages))
    assert sorted(pages) == sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))


def test_relative_links_of_the_readme_exist() -> None:
    for target in _LINK.findall(README.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (ROOT / target.split("#")[0]).exists(), f"README.md links to {target}, which does not exist"


def test_the_docs_speak_to_people_who_clone_the_repository() -> None:
    for page in [README, *DOCS.rglob("*.md")]:
        assert "../shared" not in page.read_text(encoding="utf-8"), f"{page.name} points outside the repository"


def test_the_gradio_client_examples_name_every_input_of_segment_alike() -> None:
    in_readme = _segment_keywords(README.read_text(encoding="utf-8"))
    in_docs = _segment_keywords((DOCS / "demo.md").read_text(encoding="utf-8"))
    assert in_readme == in_docs
    assert in_readme[:2] == ["image", "classes_text"] and "refine_edges" in in_readme
