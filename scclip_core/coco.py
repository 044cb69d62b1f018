"""Label maps as COCO files: one run-length-encoded mask per (image, class present), torch-free.

The RLE is COCO's compressed form, byte for byte what `pycocotools.mask.encode` writes, computed here with numpy so
that the project needs no compiled dependency: the mask is read in column-major (Fortran) order as run lengths that
start with a run of zeros, and the counts become text as COCO's `rleToString` does (each count after the second is
taken relative to the count two places back, then written as 5-bit groups with a continuation bit, plus 48).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .cache import atomic_write
from .errors import InputError, output_errors

if TYPE_CHECKING:
    from .segmenter import Segmentation

_GROUP_BITS = 5  # one character of COCO's counts string holds 5 bits of a count
_CONTINUE = 0x20  # set when another character of the same count follows
_ASCII_OFFSET = 48  # the 5 bits plus the continuation bit are written from '0' on


class _Runs:
    """The maximal runs of equal labels of a label map read in column-major order: [start, end) and label."""

    def __init__(self, labels: np.ndarray) -> None:
        self.height, self.width = int(labels.shape[0]), int(labels.shape[1])
        flat = labels.ravel(order="F")
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        self.starts = np.concatenate(([0], changes)).astype(np.int64)
        self.ends = np.concatenate((changes, [flat.size])).astype(np.int64)
        self.labels = flat[self.starts]

    def of(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.labels == label
        return self.starts[chosen], self.ends[chosen]


def _counts(starts: np.ndarray, ends: np.ndarray, total: int) -> np.ndarray:
    """COCO's uncompressed counts of a mask whose pixels are the runs [starts, ends): zeros first, then alternating."""
    if starts.size == 0:
        return np.array([total], dtype=np.int64)
    zeros = starts - np.concatenate(([0], ends[:-1]))
    counts = np.column_stack((zeros, ends - starts)).ravel()
    tail = total - int(ends[-1])
    return np.concatenate((counts, [tail])) if tail else counts


def _counts_string(counts: np.ndarray) -> str:
    """COCO's `rleToString`, vectorised: counts (from the fourth on, less the one two back) as 5-bit groups."""
    values = counts.astype(np.int64)
    values[3:] -= counts[1:-2]  # maskApi.c's `if (i > 2) x -= cnts[i-2]`: the first three counts stay as they are
    # A value takes the fewest groups n whose 5n bits hold it as a signed number: -2^(5n-1) <= x < 2^(5n-1).
    groups = np.ones(values.size, dtype=np.int8)
    bound = 1 << (_GROUP_BITS - 1)
    while True:
        wider = (values < -bound) | (values >= bound)
        if not wider.any():
            break
        groups += wider
        bound <<= _GROUP_BITS
    # Every value's groups side by side (arithmetic shifts keep the sign), then each row cut to its own length.
    positions = np.arange(int(groups.max(initial=1)), dtype=np.int64)
    bits = ((values[:, None] >> (_GROUP_BITS * positions)) & ((1 << _GROUP_BITS) - 1)).astype(np.uint8)
    bits |= np.where(positions < groups[:, None] - 1, _CONTINUE, 0).astype(np.uint8)
    text = bits[positions < groups[:, None]] + _ASCII_OFFSET
    return text.tobytes().decode("ascii")


def _rle(starts: np.ndarray, ends: np.ndarray, size: tuple[int, int]) -> dict:
    return {"size": [size[0], size[1]], "counts": _counts_string(_counts(starts, ends, size[0] * size[1]))}


def encode_rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE of a 2-D boolean mask: {"size": [h, w], "counts": str}, as `pycocotools` writes it."""
    if mask.ndim != 2:
        raise InputError(f"a mask must be 2-D, not of shape {mask.shape}")
    runs = _Runs(mask.astype(bool, copy=False))
    starts, ends = runs.of(True)
    return _rle(starts, ends, (runs.height, runs.width))


def _bbox(starts: np.ndarray, ends: np.ndarray, height: int) -> list[int]:
    """[x, y, width, height] of the pixels in the runs, as COCO measures it (a whole-pixel, inclusive box)."""
    first, last = starts, ends - 1
    columns_first, columns_last = first // height, last // height
    if np.any(columns_first != columns_last):  # a run across a column covers the bottom and top rows
        top, bottom = 0, height - 1
    else:
        top, bottom = int((first % height).min()), int((last % height).max())
    left, right = int(columns_first[0]), int(columns_last[-1])
    return [left, top, right - left + 1, bottom - top + 1]


def category_ids(num_classes: int, background_index: int | None) -> list[int]:
    """The COCO category id (from 1) of each class index: the classes in order, the background class last."""
    order = [index for index in range(num_classes) if index != background_index]
    if background_index is not None:
        order.append(background_index)
    ids = [0] * num_classes
    for position, index in enumerate(order):
        ids[index] = position + 1
    return ids


def coco_categories(class_names: Sequence[str], background_index: int | None = None) -> list[dict]:
    """COCO `categories`: one per class, ids from 1, the background class (when there is one) last."""
    ids = category_ids(len(class_names), background_index)
    categories = [{"id": ids[index], "name": name, "supercategory": ""} for index, name in enumerate(class_names)]
    return sorted(categories, key=lambda category: category["id"])


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"a label map must be a non-empty 2-D integer array, not {labels.dtype} {labels.shape}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise InputError(f"label map values {low}..{high} do not fit {num_classes} classes")


def coco_annotations(
    labels: np.ndarray,
    class_names: Sequence[str],
    image_id: int,
    first_annotation_id: int,
    background_index: int | None = None,
) -> list[dict]:
    """COCO `annotations` of one label map: one per class present, ids counting up from `first_annotation_id`.

    Each has the class's mask as compressed RLE (`iscrowd: 1` says so), its `area` in pixels and its `bbox`
    [x, y, width, height]; `category_id` follows `coco_categories`.
    """
    _check_labels(labels, len(class_names))
    runs = _Runs(labels)
    ids = category_ids(len(class_names), background_index)
    annotations: list[dict] = []
    for index in range(len(class_names)):
        starts, ends = runs.of(index)
        if starts.size == 0:
            continue
        annotations.append(
            {
                "id": first_annotation_id + len(annotations),
                "image_id": image_id,
                "category_id": ids[index],
                "segmentation": _rle(starts, ends, (runs.height, runs.width)),
                "area": int((ends - starts).sum()),
                "bbox": _bbox(starts, ends, runs.height),
                "iscrowd": 1,
            }
        )
    return annotations


class CocoFile:
    """A COCO file gathered image by image (`add`), written whole at the end (`write`)."""

    def __init__(self, class_names: Sequence[str], background_index: int | None = None) -> None:
        if background_index is not None and not 0 <= background_index < len(class_names):
            raise InputError(f"background_index {background_index} is not a class index")
        self.class_names = list(class_names)
        self.background_index = background_index
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._image_ids: set[int] = set()

    def add(self, labels: np.ndarray | Segmentation, file_name: str, *, image_id: int | None = None) -> int:
        """Add one image's label map (or a `Segmentation` over the same classes); returns its image id.

        Ids count up from 1 unless `image_id` names one (which must be new to this file).
        """
        if not isinstance(labels, np.ndarray):
            if list(labels.class_names) != self.class_names or labels.background_index != self.background_index:
                raise InputError(
                    f"this COCO file has classes {self.class_names}, not {labels.class_names}"
                    f" (background {labels.background_index})"
                )
            labels = labels.labels
        if image_id is None:
            image_id = max(self._image_ids, default=0) + 1
        elif image_id in self._image_ids:
            raise InputError(f"image id {image_id} is already in this COCO file")
        annotations = coco_annotations(
            labels, self.class_names, image_id, len(self.annotations) + 1, self.background_index
        )
        self._image_ids.add(image_id)
        self.images.append(
            {"id": image_id, "file_name": file_name, "height": labels.shape[0], "width": labels.shape[1]}
        )
        self.annotations += annotations
        return image_id

    def to_dict(self) -> dict:
        """The COCO dataset: `images`, `categories` and `annotations`."""
        return {
            "images": self.images,
            "categories": coco_categories(self.class_names, self.background_index),
            "annotations": self.annotations,
        }

    def write(self, path: str | Path) -> Path:
        """Write the file atomically (a reader sees the previous file or the whole new one); returns its path."""
        target = Path(path)
        with output_errors(target):
            atomic_write(target, json.dumps(self.to_dict()).encode())
        return target
