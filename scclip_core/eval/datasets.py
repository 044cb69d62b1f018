"""Benchmark folders in the MMSegmentation layouts, read without MMSegmentation.

A layout says where the validation images and label maps are under the dataset root and how an image's
file name turns into its label map's. Samples come in the order MMSegmentation uses: the split file's
order when there is one, otherwise the image paths sorted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .benchmarks import IGNORE_INDEX


class DatasetLayoutError(InputError):
    """The dataset root does not hold the folders or files the layout expects."""


@dataclass(frozen=True)
class Layout:
    """Where one benchmark's validation images and label maps live, relative to the dataset root."""

    name: str
    usual_root: str
    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    split_file: str | None = None


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "voc2012",
            "VOCdevkit/VOC2012",
            "JPEGImages",
            "SegmentationClass",
            ".jpg",
            ".png",
            "ImageSets/Segmentation/val.txt",
        ),
        Layout(
            "pascal_context",
            "VOCdevkit/VOC2010",
            "JPEGImages",
            "SegmentationClassContext",
            ".jpg",
            ".png",
            "ImageSets/SegmentationContext/val.txt",
        ),
        Layout(
            "coco_stuff164k", "coco_stuff164k", "images/val2017", "annotations/val2017", ".jpg", "_labelTrainIds.png"
        ),
        Layout("coco_object", "coco_object", "images/val2017", "annotations/val2017", ".jpg", "_instanceTrainIds.png"),
        Layout(
            "cityscapes", "cityscapes", "leftImg8bit/val", "gtFine/val", "_leftImg8bit.png", "_gtFine_labelTrainIds.png"
        ),
        Layout("ade20k", "ade/ADEChallengeData2016", "images/validation", "annotations/validation", ".jpg", ".png"),
        # The two large vocabularies as CAT-Seg's and SAN's preparation scripts leave them: 16-bit TIFF label
        # maps holding class indices directly (ADE20K-Full: 65535 unlabelled; Context-459: LabelMap - 1).
        Layout(
            "ade20k_full",
            "ADE20K_2021_17_01",
            "images_detectron2/validation",
            "annotations_detectron2/validation",
            ".jpg",
            ".tif",
        ),
        Layout(
            "pascal_context_459",
            "VOCdevkit/VOC2010",
            "JPEGImages",
            "annotations_detectron2/pc459_val",
            ".jpg",
            ".tif",
            "pascalcontext_val.txt",
        ),
    )
}


@dataclass(frozen=True)
class Sample:
    """One validation image: `id` is its path under the image folder without the image suffix."""

    id: str
    image_path: Path
    label_path: Path


def resolve_root(layout: Layout, root: str | os.PathLike[str]) -> Path:
    """The dataset root: `root` itself, or `root/<usual folder>` when given the parent (e.g. mmseg's `data/`)."""
    given = Path(root).expanduser()
    if not given.is_dir():
        raise DatasetLayoutError(f"dataset root {given} does not exist or is not a folder")
    for candidate in (given, given / layout.usual_root, given / Path(layout.usual_root).name):
        if (candidate / layout.image_dir).is_dir():
            return candidate
    missing = [part for part in (layout.image_dir, layout.label_dir) if not (given / part).is_dir()]
    raise DatasetLayoutError(
        f"{given} is not a {layout.name} dataset root: missing folder(s) {', '.join(missing)}. "
        f"Expected {layout.image_dir}/ and {layout.label_dir}/ under the root "
        f"(usually .../{layout.usual_root}, prepared as in MMSegmentation's dataset guide)."
    )


def list_samples(layout: Layout, root: str | os.PathLike[str], limit: int | None = None) -> list[Sample]:
    """The validation samples in MMSegmentation's order, the first `limit` of them if given.

    Raises `DatasetLayoutError` naming the first missing folder, split file, image or label map.
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1, not {limit}")
    base = resolve_root(layout, root)
    image_dir, label_dir = base / layout.image_dir, base / layout.label_dir
    if not label_dir.is_dir():
        raise DatasetLayoutError(f"label folder {label_dir} is missing ({layout.name} layout)")
    if layout.split_file is not None:
        split = base / layout.split_file
        if not split.is_file():
            raise DatasetLayoutError(f"split file {split} is missing ({layout.name} layout)")
        ids = [line.strip() for line in split.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        image_names = sorted(
            path.relative_to(image_dir).as_posix()
            for path in image_dir.rglob(f"*{layout.image_suffix}")
            if path.is_file()
        )
        ids = [name[: -len(layout.image_suffix)] for name in image_names]
    if limit is not None:
        ids = ids[:limit]
    samples = [
        Sample(
            id=sample_id,
            image_path=image_dir / f"{sample_id}{layout.image_suffix}",
            label_path=label_dir / f"{sample_id}{layout.label_suffix}",
        )
        for sample_id in ids
    ]
    if not samples:
        raise DatasetLayoutError(f"no {layout.image_suffix} images found under {image_dir}")
    for kind in ("image_path", "label_path"):
        absent = [getattr(sample, kind) for sample in samples if not getattr(sample, kind).is_file()]
        if absent:
            raise DatasetLayoutError(
                f"{len(absent)} of {len(samples)} {kind.split('_')[0]} files are missing, e.g. {absent[0]}"
            )
    return samples


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) as stored, with no EXIF rotation, so it lines up with the label map."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_label(path: Path, reduce_zero_label: bool, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A label map (H, W) int64 of class indices, `ignore_index` where unlabelled.

    Palette PNGs (VOC, Context) are read as their indices, not their colours. With `reduce_zero_label`,
    label 0 becomes `ignore_index` and every other label is shifted down by one.
    """
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
            raise DatasetLayoutError(
                f"{path} is a {image.mode} image; label maps must hold class indices (palette or grey PNG)"
            )
        labels = np.asarray(image).astype(np.int64)
    if reduce_zero_label:
        labels[labels == 0] = ignore_index
        labels -= 1
        labels[labels == ignore_index - 1] = ignore_index
    return labels
