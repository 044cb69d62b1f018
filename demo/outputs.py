"""The files the demo writes for visitors (the downloads of each run) and the folders it cleans up."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import anyio
import gradio as gr
import numpy as np
from gradio.routes import DEEP_LINK_PATTERN
from PIL import Image

from demo.sessions import SESSION_TTL_S
from scclip_core import Segmentation, render
from scclip_core.cache import atomic_write
from scclip_core.coco import CocoFile

LOGGER = logging.getLogger(__name__)


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


class RunFiles(NamedTuple):
    """The downloads of one run: the label PNG, the JSON summary and the COCO file of the same label map."""

    label_path: str
    summary_path: str
    coco_path: str


def input_label_map(segmentation: Segmentation, input_size: tuple[int, int]) -> Image.Image:
    """The label map as a palette PNG image (pixel value = class index; 16-bit above 256 classes) at the input's
    (width, height): inputs the engine downscaled get their labels scaled back up (nearest neighbour)."""
    label_map = render.label_map_image(
        segmentation.labels, len(segmentation.class_names), segmentation.background_index
    )
    if label_map.size != input_size:
        label_map = label_map.resize(input_size, Image.Resampling.NEAREST)
    return label_map


def coco_of(segmentation: Segmentation) -> CocoFile:
    """An empty COCO file over the segmentation's classes (background last), to `add` label maps to."""
    return CocoFile(segmentation.class_names, segmentation.background_index)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def untrained_suffix(untrained: bool) -> str:
    """What the names of a run's files carry when the weights were untrained, so a saved file says so too."""
    return "_UNTRAINED" if untrained else ""


def write_outputs(segmentation: Segmentation, data: dict[str, Any], input_size: tuple[int, int]) -> RunFiles:
    """The label map at the input's (width, height) (`input_label_map`), the summary, and the COCO file of exactly
    the label PNG's pixels, as files."""
    folder = output_dir()
    suffix = untrained_suffix(segmentation.is_random_weights)
    label_path = folder / f"scclip_labels{suffix}.png"
    label_map = input_label_map(segmentation, input_size)
    data["label_png_size"] = list(input_size)
    label_map.save(label_path)
    coco = coco_of(segmentation)
    coco.add(np.asarray(label_map), label_path.name)
    coco_path = coco.write(folder / f"scclip_coco{suffix}.json")
    json_path = folder / f"scclip_summary{suffix}.json"
    json_path.write_text(json.dumps(data, indent=2))
    return RunFiles(str(label_path), str(json_path), str(coco_path))


def write_zip(name: str, members: Mapping[str, bytes]) -> str:
    """One zip file (deflated) of `members` (file name in the zip: its bytes), in a fresh output folder."""
    path = output_dir() / name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return str(path)


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


def share_link_problem(saved: object) -> str | None:
    """Why a share-link snapshot (as read from its JSON) is no snapshot at all, or None: a snapshot is a list of
    components, each with an integer id, its type and its properties. Ids and types the page no longer has are
    fine: an older page saved them, and Gradio leaves out what the page lacks."""
    if not isinstance(saved, list):
        return f"a {type(saved).__name__}, not a list of components"
    for item in saved:
        if not isinstance(item, dict) or type(item.get("id")) is not int:
            return "an entry that is no component"
        if not isinstance(item.get("props", {}), dict) or not isinstance(item.get("type", ""), str):
            return f"component {item['id']} has no properties or type"
    return None


def check_share_link(state: Path, components: list[dict[str, Any]]) -> bool:
    """Make one share-link snapshot (`deep_links/<link>/state.json`) safe to open on this page (`components`, as
    in its config), before Gradio reads it: a torn, unreadable or foreign one is deleted with a warning, so that
    Gradio opens the plain page and says the link is not valid (it would fail on some of them); one saved by an
    older page gets the components it lacks, with the page's defaults, since Gradio refuses a page whose layout
    names an id the snapshot lacks. Rewritten atomically (a crash leaves the old one or the new one, never a
    part). Returns whether the link can be opened."""
    try:
        saved = json.loads(state.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as error:
        problem: str | None = f"unreadable ({type(error).__name__})"
    else:
        problem = share_link_problem(saved)
    if problem is not None:
        LOGGER.warning("deleted the share-link snapshot %s: %s", state.parent.name, problem)
        shutil.rmtree(state.parent, ignore_errors=True)
        return False
    present = {item["id"] for item in saved}
    missing = [component for component in components if component["id"] not in present]
    if missing:
        atomic_write(state, json.dumps([*saved, *missing], default=str).encode())
    return True


def complete_share_links(folder: Path, components: list[dict[str, Any]]) -> int:
    """`check_share_link` for every snapshot in `folder` (Gradio's `deep_links`), as the app starts. Returns how
    many can be opened."""
    if not folder.is_dir():
        return 0
    return sum(check_share_link(state, components) for state in folder.glob("*/state.json"))


class ShareLinkCheck:
    """ASGI middleware: a request that opens a share link (`?deep_link=<link>`: the page or its config) has the
    link's snapshot checked (`check_share_link`) before Gradio reads it, so a snapshot damaged while the app runs
    never fails the page."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            link = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("deep_link", [""])[0]
            if DEEP_LINK_PATTERN.fullmatch(link):
                components = scope["app"].get_blocks().config["components"]
                await anyio.to_thread.run_sync(check_share_link, share_links_folder() / link / "state.json", components)
        await self.app(scope, receive, send)
