"""The files the demo writes for visitors (the downloads of each run) and the folders it cleans up."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from demo.sessions import SESSION_TTL_S
from scclip_core import Segmentation, render
from scclip_core.cache import atomic_write


def output_dir() -> Path:
    """A fresh folder for one run's downloadable files; folders older than the session lifetime are removed."""
    root = Path(tempfile.gettempdir()) / "scclip-demo-outputs"
    root.mkdir(exist_ok=True)
    cutoff = time.time() - SESSION_TTL_S
    for old in root.iterdir():
        if old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


def write_outputs(segmentation: Segmentation, data: dict[str, Any], input_size: tuple[int, int]) -> tuple[str, str]:
    """The label map as a palette PNG (pixel value = class index) at the input's (width, height), and the summary,
    as files. Inputs the engine downscaled get their labels scaled back up (nearest neighbour)."""
    folder = output_dir()
    suffix = "_UNTRAINED" if segmentation.is_random_weights else ""
    label_path = folder / f"scclip_labels{suffix}.png"
    label_map = render.label_map_image(
        segmentation.labels, len(segmentation.class_names), segmentation.background_index
    )
    if label_map.size != input_size:
        label_map = label_map.resize(input_size, Image.Resampling.NEAREST)
    data["label_png_size"] = list(input_size)
    label_map.save(label_path)
    json_path = folder / f"scclip_summary{suffix}.json"
    json_path.write_text(json.dumps(data, indent=2))
    return str(label_path), str(json_path)


def share_links_folder() -> Path:
    """Where Gradio keeps the share-link snapshots (its `deep_links`, one folder per link)."""
    return Path(gr.utils.get_upload_folder()) / "deep_links"


def prune_share_links(folder: Path, max_age_s: float = SESSION_TTL_S) -> int:
    """Delete the share-link snapshots in `folder` (Gradio's `deep_links`: one JSON of about 100 KB per click on
    Share, which Gradio never deletes) older than `max_age_s`, when the uploads they point to are gone too.
    Returns how many were deleted."""
    if not folder.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    old = [link for link in folder.iterdir() if link.is_dir() and link.stat().st_mtime < cutoff]
    for link in old:
        shutil.rmtree(link, ignore_errors=True)
    return len(old)


def complete_share_links(folder: Path, components: list[dict[str, Any]]) -> int:
    """Give the share-link snapshots in `folder` the components of the page (`components`, as in its config) that
    they lack, with the page's defaults, so that a link saved before a component was added still opens: Gradio keys
    a snapshot's components by id and refuses a page whose layout names an id the snapshot lacks. Each snapshot is
    rewritten atomically (a crash leaves the old one or the new one, never a part); unreadable or foreign ones are
    left alone. Returns how many were completed."""
    if not folder.is_dir():
        return 0
    completed = 0
    for state in folder.glob("*/state.json"):
        try:
            saved = json.loads(state.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(saved, list):
            continue
        present = {item.get("id") for item in saved if isinstance(item, dict)}
        missing = [component for component in components if component["id"] not in present]
        if missing:
            atomic_write(state, json.dumps([*saved, *missing], default=str).encode())
            completed += 1
    return completed
