"""The files the demo writes for visitors (the downloads of each run) and the folders it cleans up."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from demo.sessions import SESSION_TTL_S
from scclip_core import Segmentation, render


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
