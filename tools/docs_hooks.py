"""The documentation's method tables, generated from the method registry when the site is built (an mkdocs hook,
named in mkdocs.yml): a page holds a marker such as `<!-- registry: methods -->` and the build puts the table
there, so adding a method module adds its rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scclip_core.config import DEFAULT_METHOD, PAMR_DILATIONS
from scclip_core.eval import BENCHMARKS
from scclip_core.methods import METHOD_SPECS, PUBLISHED_DATASETS, MethodProtocol
from scclip_core.refinements import REFINEMENTS

DATASET_LABELS = {
    "voc21": "VOC21",
    "context60": "Context60",
    "coco_object": "COCO-Object",
    "voc20": "VOC20",
    "context59": "Context59",
    "coco_stuff164k": "COCO-Stuff",
    "cityscapes": "Cityscapes",
    "ade20k": "ADE20K",
    "ade847": "ADE-847",
    "context459": "Context-459",
}
"""How the tables name the benchmarks."""
PUBLISHED_COLUMNS = ("VOC21", "C60", "Obj", "VOC20", "C59", "Stuff", "City", "ADE")
"""The published table's column heads, one per `PUBLISHED_DATASETS` entry."""


def methods_table() -> str:
    """Every method other than the default one: its name, venue and what its last block does."""
    rows = ["| method | venue | last block |", "|---|---|---|"]
    rows += [
        f"| `{name}` | {spec.venue} | {spec.summary} |" for name, spec in METHOD_SPECS.items() if name != DEFAULT_METHOD
    ]
    return "\n".join(rows)


def method_names() -> str:
    """The other methods' names, comma separated, as the examples list them."""
    return ", ".join(name for name in METHOD_SPECS if name != DEFAULT_METHOD)


def published_table() -> str:
    """Each published row with the command that reproduces it, and an empty measured row under it."""
    head = "| Method (ViT-B/16, OpenAI CLIP) | | " + " | ".join(PUBLISHED_COLUMNS) + " | Avg |"
    rows = [head, "|" + "---|" * (len(PUBLISHED_COLUMNS) + 3)]
    for name, spec in METHOD_SPECS.items():
        for published in spec.published:
            parts = (f"--method {name}", "--protocol own" if spec.protocol else "", published.flags)
            command = " ".join(part for part in parts if part)
            label = f"{spec.label}, {published.note}" if published.note else spec.label
            if name == DEFAULT_METHOD:
                label, average = f"**{label}**", f"**{published.average}**"
            else:
                average = f"{published.average}"
            scores = " | ".join(f"{score}" for score in published.scores)
            rows.append(f"| {label} `{command}` | published | {scores} | {average} |")
            rows.append("| | measured |" + " |" * (len(PUBLISHED_COLUMNS) + 1))
    assert len(PUBLISHED_COLUMNS) == len(PUBLISHED_DATASETS)
    return "\n".join(rows)


def _by_dataset(protocol: MethodProtocol, read: Callable[[Mapping[str, Any]], str]) -> str:
    """One protocol setting as the table says it: its common value, then each other value with its datasets."""
    common = read(protocol.common)
    exceptions: dict[str, list[str]] = {}
    for dataset in BENCHMARKS:
        value = read(protocol.changes(dataset))
        if value != common and dataset in DATASET_LABELS:
            exceptions.setdefault(value, []).append(DATASET_LABELS[dataset])
    return "; ".join([common, *(f"{', '.join(datasets)} {value}" for value, datasets in exceptions.items())])


def _windows(settings: Mapping[str, Any]) -> str:
    return "whole" if settings["stride"] is None else f"{settings['crop']}/{settings['stride']}"


def _thresholds(settings: Mapping[str, Any]) -> str:
    area = settings["area_threshold"]
    return f"{settings['prob_threshold']:g} / {'–' if area is None else f'{area:g}'}"


def _refinements(name: str) -> Callable[[Mapping[str, Any]], str]:
    def read(settings: Mapping[str, Any]) -> str:
        steps = settings["pamr_steps"]
        pamr = [f"PAMR {steps} steps, dilations {', '.join(map(str, PAMR_DILATIONS))}"] if steps else []
        own = [REFINEMENTS[refinement].label for refinement in METHOD_SPECS[name].refinements]
        return " + ".join(pamr + own) or "none"

    return read


def protocols_table() -> str:
    """Each method's own protocol: where it comes from and its settings, with the datasets that differ."""
    rows = [
        "| `--method` under `--protocol own` | source | short side | windows | logit scale "
        "| prob / area thresholds | refinements |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, spec in METHOD_SPECS.items():
        protocol = spec.protocol
        if protocol is None:
            continue
        source = protocol.source
        if spec.repository is not None:
            link = f"[{spec.repository}](https://github.com/{spec.repository})"
            source = source.replace(spec.repository, link, 1) if spec.repository in source else f"{link}: {source}"
        cells = [
            _by_dataset(protocol, lambda settings: f"{settings['short_side']}"),
            _by_dataset(protocol, _windows),
            _by_dataset(protocol, lambda settings: f"{settings['logit_scale']:g}"),
            _by_dataset(protocol, _thresholds),
            _by_dataset(protocol, _refinements(name)),
        ]
        rows.append(f"| `{name}` | {source} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


MARKERS: dict[str, Callable[[], str]] = {
    "<!-- registry: methods -->": methods_table,
    "<!-- registry: method names -->": method_names,
    "<!-- registry: published -->": published_table,
    "<!-- registry: protocols -->": protocols_table,
}
"""Each marker a page may hold and the table that replaces it."""


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs: put the registry's tables where a page's markers are."""
    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
