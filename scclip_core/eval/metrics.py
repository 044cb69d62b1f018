"""Confusion matrices and the scores MMSegmentation's IoUMetric reports (IoU, Acc, mIoU, mAcc, aAcc).

Rows of a confusion matrix are ground-truth classes, columns predicted classes. Pixels whose ground truth is
the ignore index (or outside the class range) are not counted. A class that is neither in the ground truth
nor predicted has no IoU (NaN, left out of the mean); one that is predicted but absent from the ground truth
has IoU 0 and pulls the mean down, as in MMSegmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .benchmarks import IGNORE_INDEX


def confusion_matrix(
    ground_truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(C, C) int64 counts of (ground-truth class, predicted class) pixel pairs."""
    if ground_truth.shape != prediction.shape:
        raise InputError(f"ground truth {ground_truth.shape} and prediction {prediction.shape} differ in shape")
    truth = ground_truth.reshape(-1).astype(np.int64)
    predicted = prediction.reshape(-1).astype(np.int64)
    counted = (truth != ignore_index) & (truth >= 0) & (truth < num_classes)
    truth, predicted = truth[counted], predicted[counted]
    if predicted.size and (predicted.min() < 0 or predicted.max() >= num_classes):
        raise InputError(f"predicted labels must lie in [0, {num_classes}), got {predicted.min()}..{predicted.max()}")
    return np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def to_sparse(matrix: np.ndarray) -> list[list[int]]:
    """The non-zero cells as [row, column, count] triples (compact for per-image records)."""
    rows, columns = np.nonzero(matrix)
    return [[int(r), int(c), int(matrix[r, c])] for r, c in zip(rows, columns)]


def from_sparse(cells: list[list[int]], num_classes: int) -> np.ndarray:
    """Inverse of `to_sparse`; raises InputError for cells that are not [row, column, count] in range."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for cell in cells:
        if not (
            isinstance(cell, list)
            and len(cell) == 3
            and all(isinstance(value, int) and not isinstance(value, bool) for value in cell)
            and 0 <= cell[0] < num_classes
            and 0 <= cell[1] < num_classes
            and cell[2] >= 0
        ):
            raise InputError(f"confusion cell {cell!r} is not [row, column, count] for {num_classes} classes")
        row, column, count = cell
        matrix[row, column] += count
    return matrix


@dataclass(frozen=True)
class SegmentationScores:
    """Scores in percent; per-class values are NaN for classes with no pixels in ground truth or prediction."""

    class_names: tuple[str, ...]
    iou: tuple[float, ...]
    accuracy: tuple[float, ...]
    ground_truth_pixels: tuple[int, ...]
    miou: float
    macc: float
    aacc: float

    def to_json(self) -> dict[str, object]:
        """Plain data; NaN becomes null."""
        return {
            "mIoU": _finite_or_none(self.miou),
            "mAcc": _finite_or_none(self.macc),
            "aAcc": _finite_or_none(self.aacc),
            "per_class": [
                {"class": name, "IoU": _finite_or_none(iou), "Acc": _finite_or_none(acc), "gt_pixels": pixels}
                for name, iou, acc, pixels in zip(self.class_names, self.iou, self.accuracy, self.ground_truth_pixels)
            ],
        }


def scores(matrix: np.ndarray, class_names: list[str] | tuple[str, ...]) -> SegmentationScores:
    """IoU and accuracy per class and their means from a confusion matrix, as MMSegmentation computes them."""
    if matrix.shape != (len(class_names), len(class_names)):
        raise InputError(f"confusion matrix {matrix.shape} does not match {len(class_names)} class names")
    matrix = matrix.astype(np.float64)
    intersection = np.diag(matrix)
    ground_truth = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    union = ground_truth + predicted - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / union * 100.0
        accuracy = intersection / ground_truth * 100.0
        aacc = intersection.sum() / ground_truth.sum() * 100.0
    return SegmentationScores(
        class_names=tuple(class_names),
        iou=tuple(float(v) for v in iou),
        accuracy=tuple(float(v) for v in accuracy),
        ground_truth_pixels=tuple(int(v) for v in ground_truth),
        miou=_nanmean(iou),
        macc=_nanmean(accuracy),
        aacc=float(aacc),
    )


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _finite_or_none(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)
