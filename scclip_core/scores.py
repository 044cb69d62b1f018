"""From cosine logits at the working size to labels and probabilities at any output size, in row bands.

Bilinear upsampling (as `F.interpolate(..., align_corners=False)`), the softmax at the logit scale and the max
over each class's synonyms run a band of output rows at a time, so a label map at the input size never needs
Q x H x W or C x H x W at that size. Probabilities at the output size exist only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from .config import LabelRules
from .errors import InputError

BAND_ELEMENTS = 1 << 22
BandProbabilities = Callable[[int, int], Tensor]


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned type that holds every class index: uint8 up to 256 classes, then uint16, uint32."""
    for dtype in (np.uint8, np.uint16):
        if num_classes <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


def class_probabilities(logits: Tensor, query_classes: Tensor, num_classes: int, logit_scale: float) -> Tensor:
    """Softmax over all queries at `logit_scale`, then the max over each class's synonyms, (Q, ...) -> (C, ...)."""
    query_probs = (logit_scale * logits).softmax(dim=0)
    index = query_classes.view(-1, *([1] * (logits.ndim - 1))).expand_as(query_probs)
    probs = torch.zeros((num_classes, *logits.shape[1:]), dtype=query_probs.dtype, device=logits.device)
    return probs.scatter_reduce_(0, index, query_probs, reduce="amax", include_self=True)


def small_classes(areas: np.ndarray, background_index: int, area_threshold: float) -> np.ndarray:
    """Non-background classes whose area is at most `area_threshold` times the whole non-background area."""
    areas = areas.astype(np.float64)
    areas[background_index] = 0
    small = areas <= area_threshold * areas.sum()
    small[background_index] = False
    return small


def label_map(
    band_probs: BandProbabilities,
    size: tuple[int, int],
    num_classes: int,
    band_rows: int,
    background_index: int | None,
    rules: LabelRules,
) -> np.ndarray:
    """Argmax labels (H, W) after the background rules, from class probabilities made band by band.

    Area rule: a non-background class whose predicted area is at most `rules.area_threshold` times the whole
    non-background area has its probabilities zeroed before the final argmax. Probability rule: pixels whose
    (remaining) highest probability is below `rules.prob_threshold` go to the background class. The area rule
    needs every class's area before any pixel is final, so it takes two passes: the first takes each band's
    argmax and counts areas; the second recomputes only the bands holding pixels of a too-small class and gives
    those pixels their best remaining class (every other pixel keeps its argmax, which masking cannot change).
    """
    if background_index is None and rules.needs_background:
        raise InputError("thresholds need a background class to assign rejected pixels to")
    prob_threshold, area_threshold = rules.prob_threshold, rules.area_threshold
    height, width = size
    labels = np.empty(size, dtype=label_dtype(num_classes))
    uncertain = np.zeros(size, dtype=bool) if prob_threshold > 0 else None
    areas = np.zeros(num_classes, dtype=np.int64)
    bands = [(top, min(top + band_rows, height)) for top in range(0, height, band_rows)]
    for top, bottom in bands:
        best, best_class = band_probs(top, bottom).max(dim=0)
        best_class = best_class.cpu().numpy()
        labels[top:bottom] = best_class
        if uncertain is not None:
            uncertain[top:bottom] = (best < prob_threshold).cpu().numpy()
        if area_threshold:
            areas += np.bincount(best_class.ravel(), minlength=num_classes)
    if area_threshold:
        small = small_classes(areas, background_index, area_threshold)
        if small.any():
            mask = torch.from_numpy(small)
            for top, bottom in bands:
                moved = small[labels[top:bottom]]
                if not moved.any():
                    continue
                probs = band_probs(top, bottom)
                best, best_class = probs.masked_fill(mask.to(probs.device).view(-1, 1, 1), 0.0).max(dim=0)
                labels[top:bottom][moved] = best_class.cpu().numpy()[moved]
                if uncertain is not None:
                    uncertain[top:bottom][moved] = (best < prob_threshold).cpu().numpy()[moved]
    if uncertain is not None:
        labels[uncertain] = background_index
    return labels


def assign_labels(probs: Tensor, background_index: int | None, rules: LabelRules | None = None) -> Tensor:
    """`label_map` for class probabilities already in memory, (C, ...) -> (...) int64; the probabilities were made
    at some logit scale already, so only the thresholds of `rules` (default: none) apply."""
    flat = probs.reshape(probs.shape[0], 1, -1)
    labels = label_map(
        lambda top, bottom: flat[:, top:bottom],
        (1, flat.shape[2]),
        probs.shape[0],
        1,
        background_index,
        rules or LabelRules(),
    )
    return torch.from_numpy(labels.astype(np.int64)).view(probs.shape[1:])


@dataclass(frozen=True)
class AxisResampling:
    """1-D bilinear resampling with align_corners=False: output i mixes inputs low[i] and high[i] by weight[i]."""

    low: Tensor
    high: Tensor
    weight: Tensor

    @classmethod
    def bilinear(cls, out_size: int, in_size: int, device: torch.device) -> AxisResampling:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32, device=device)
        source = ((torch.arange(out_size, dtype=torch.float32, device=device) + 0.5) * scale - 0.5).clamp_min(0)
        low = source.floor().long().clamp_max(in_size - 1)
        high = (low + 1).clamp_max(in_size - 1)
        return cls(low, high, source - low)


@dataclass(frozen=True)
class PixelScores:
    """Every query's cosine logits at the working size (Q, h, w) and the class of each query; class
    probabilities follow at a logit scale (`LabelRules.logit_scale`)."""

    logits: Tensor
    query_classes: Tensor
    num_classes: int

    @property
    def working_size(self) -> tuple[int, int]:
        return int(self.logits.shape[1]), int(self.logits.shape[2])

    def with_num_classes(self, num_classes: int) -> PixelScores:
        """The same scores with query-less classes appended (e.g. a background that only takes rejected pixels)."""
        return replace(self, num_classes=num_classes)

    def probs_bytes(self, size: tuple[int, int]) -> int:
        """Bytes of float32 class probabilities at `size`."""
        return 4 * self.num_classes * size[0] * size[1]

    def band_rows(self, width: int) -> int:
        """Output rows per band: a band's query and class planes stay near BAND_ELEMENTS values."""
        return max(1, BAND_ELEMENTS // ((self.logits.shape[0] + self.num_classes) * width))

    def band_probabilities(self, size: tuple[int, int], logit_scale: float) -> BandProbabilities:
        """A function (top, bottom) -> class probabilities (C, bottom - top, W) of those rows at `size`."""
        rows = (
            None
            if size[0] == self.logits.shape[1]
            else AxisResampling.bilinear(size[0], self.logits.shape[1], self.logits.device)
        )
        columns = (
            None
            if size[1] == self.logits.shape[2]
            else AxisResampling.bilinear(size[1], self.logits.shape[2], self.logits.device)
        )

        def band(top: int, bottom: int) -> Tensor:
            logits = self.logits[:, top:bottom]
            if rows is not None:
                low, high = self.logits[:, rows.low[top:bottom]], self.logits[:, rows.high[top:bottom]]
                logits = torch.lerp(low, high, rows.weight[top:bottom].view(1, -1, 1))
            if columns is not None:
                logits = torch.lerp(logits[:, :, columns.low], logits[:, :, columns.high], columns.weight)
            return class_probabilities(logits, self.query_classes, self.num_classes, logit_scale)

        return band

    def labels(self, size: tuple[int, int], background_index: int | None, rules: LabelRules) -> np.ndarray:
        """The label map at `size` under `rules`, computed in bands."""
        with torch.inference_mode():
            return label_map(
                self.band_probabilities(size, rules.logit_scale),
                size,
                self.num_classes,
                self.band_rows(size[1]),
                background_index,
                rules,
            )

    def probabilities(self, size: tuple[int, int], logit_scale: float) -> np.ndarray:
        """Class probabilities (C, H, W) float32 at `size`, filled band by band."""
        band = self.band_probabilities(size, logit_scale)
        probs = np.empty((self.num_classes, *size), dtype=np.float32)
        step = self.band_rows(size[1])
        with torch.inference_mode():
            for top in range(0, size[0], step):
                bottom = min(top + step, size[0])
                probs[:, top:bottom] = band(top, bottom).cpu().numpy()
        return probs


def probs_size(scores: PixelScores, input_size: tuple[int, int], budget_bytes: int) -> tuple[int, int]:
    """Where probabilities are kept: the input size when they fit `budget_bytes`, else the (smaller) working size.

    Raises InputError, saying how much memory they would need, when neither fits.
    """
    if scores.probs_bytes(input_size) <= budget_bytes:
        return input_size
    working = scores.working_size
    if working[0] * working[1] < input_size[0] * input_size[1] and scores.probs_bytes(working) <= budget_bytes:
        return working
    smallest = min((input_size, working), key=lambda size: size[0] * size[1])
    raise InputError(
        f"class probabilities for {scores.num_classes} classes would take "
        f"{scores.probs_bytes(smallest) / 2**30:.2f} GiB "
        f"even at {smallest[1]}x{smallest[0]}, over the budget of {budget_bytes / 2**30:.2f} GiB "
        "(SegmenterConfig.probs_budget_bytes, --probs-budget); labels need no probabilities"
    )
