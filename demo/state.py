"""What one browser session keeps between events, and how long.

Everything here lives in a `gr.State` per session (dropped after `SESSION_TTL_S`); nothing is shared between users.
The image side (`ImageEmbedding`) is reused while the image and the image-side settings stay the same, so changing
classes or the background words only re-runs the text side, and opacity, thresholds and hidden classes re-render
from the stored `Segmentation` without touching the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from scclip_core import CalibrationParams, ImageEmbedding, Segmentation, Stages

SESSION_TTL_S = 20 * 60


def file_digest(path: str) -> str:
    """SHA-1 of a file's bytes: the same picture uploaded twice gets the same key."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageSideKey:
    """Everything the image side of a run depends on; equal keys mean the embedding can be reused."""

    image_digest: str
    method: str
    stages: Stages
    params: CalibrationParams


@dataclass(frozen=True)
class SessionResult:
    """One session's latest run: the reusable image side, the segmentation as currently thresholded, and the
    downloadable files written for it."""

    key: ImageSideKey
    embedding: ImageEmbedding
    segmentation: Segmentation
    reused_image_side: bool
    input_size: tuple[int, int]  # (width, height) of the upright input, which the label PNG keeps
    summary: dict[str, Any]
    label_path: str
    summary_path: str
