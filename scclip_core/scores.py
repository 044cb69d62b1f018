"""From cosine logits at the working size to labels and probabilities at any output size, in row bands.

Bilinear upsampling (as `F.interpolate(..., align_corners=False)`), the softmax at the logit scale and the max
over each class's synonyms run a band of output rows at a time, so a label map at the input size never needs
Q x H x W or C x H x W at that size. Probabilities at the output size exist only when asked for.

`CompactScores` is the form a long-lived result keeps (the demo keeps one per visitor): relabelling under new
thresholds from memory that does not grow with the number of classes at the input size. Both forms label through
the one `label_map`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from .config import LabelRules
from .errors import InputError

BAND_ELEMENTS = 1 << 20
SOFTMAX_LANES = 64
BandProbabilities = Callable[[int, int], Tensor]
BandChoices = Callable[[int, int, bool], "Choices"]
BandPixels = Callable[[int, int, np.ndarray], Tensor]
T = TypeVar("T")


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned type that holds every class index: uint8 up to 256 classes, then uint16, uint32."""
    for dtype in (np.uint8, np.uint16):
        if num_classes <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


def softmax_width(pixels: int, device: torch.device) -> int:
    """`pixels` rounded up so that a softmax over dim 0 of (Q, width) runs every pixel on torch's SIMD path.

    On the CPU, that softmax splits the pixels evenly between the threads and takes a scalar path, with another
    exp and other rounding, for what is left of each share after whole SIMD vectors; a multiple of
    `SOFTMAX_LANES` (at least the widest vector) per thread leaves nothing, so a pixel's probabilities do not
    depend on the band it falls in or on the thread count.
    """
    if device.type != "cpu":
        return pixels
    lanes = SOFTMAX_LANES * torch.get_num_threads()
    return -(-pixels // lanes) * lanes


def in_bands(
    function: Callable[[int, int], T], bands: Sequence[tuple[int, int]]
) -> Iterator[tuple[tuple[int, int], T]]:
    """Each band with `function(top, bottom)` of it, in order, computed by as many worker threads as torch has
    intra-op threads, each running its torch operations on one thread.

    Torch's intra-op threads wait for each other at the end of every operation, which on a busy machine costs a
    scheduler slice each time (a band is a few dozen operations: the 9000x6000 labels of `benchmarks.labels`
    took 65 s so and 4 to 9 s in worker threads, on a shared 2-core machine); whole bands per thread never wait.
    Torch's thread count is per thread, and threads started meanwhile inherit the last one set: it is set back
    when the bands are done.
    """
    threads = torch.get_num_threads()
    if threads == 1 or len(bands) == 1:
        yield from ((band, function(*band)) for band in bands)
        return

    def run(band: tuple[int, int]) -> T:
        torch.set_num_threads(1)
        with torch.inference_mode():
            return function(*band)

    pool = ThreadPoolExecutor(threads)
    try:
        yield from zip(bands, pool.map(run, bands))
    finally:
        pool.shutdown(cancel_futures=True)
        torch.set_num_threads(threads)


def synonym_max(query_probs: Tensor, query_classes: Tensor, num_classes: int) -> Tensor:
    """(Q, ...) query probabilities -> (C, ...) the highest of each class's queries (0 for a class without any)."""
    index = query_classes.view(-1, *([1] * (query_probs.ndim - 1))).expand_as(query_probs)
    probs = torch.zeros((num_classes, *query_probs.shape[1:]), dtype=query_probs.dtype, device=query_probs.device)
    return probs.scatter_reduce_(0, index, query_probs, reduce="amax", include_self=True)


def class_probabilities(logits: Tensor, query_classes: Tensor, num_classes: int, logit_scale: float) -> Tensor:
    """Softmax over all queries at `logit_scale`, then the max over each class's synonyms, (Q, ...) -> (C, ...)."""
    return synonym_max((logit_scale * logits).softmax(dim=0), query_classes, num_classes)


@dataclass(frozen=True)
class Choices:
    """Each pixel's highest class probability and its class in some rows; with the area rule, also its runner-up
    class and probability (the highest of the other classes), or no runner-up where the reader has none.

    A runner-up is the answer of the area rule's second pass whenever the runner-up class is kept (exactly: the
    dropped classes are zeroed and only ties at 0 could pick another, so a runner-up of probability 0 is given
    as the best class itself, which sends the pixel to the full second pass).
    """

    best: np.ndarray
    best_class: np.ndarray
    runner: np.ndarray | None = None
    runner_class: np.ndarray | None = None

    @classmethod
    def of(cls, probs: Tensor, runner_up: bool, pick: Callable[[Tensor], Tensor] = lambda x: x) -> Choices:
        """From class probabilities (C, ...); `pick` selects the pixels to keep from each (...) result."""
        best, best_class = probs.max(dim=0)
        if not runner_up:
            return cls(pick(best).cpu().numpy(), pick(best_class).cpu().numpy())
        runner, runner_class = probs.scatter(0, best_class.unsqueeze(0), -1.0).max(dim=0)
        runner_class = torch.where(runner > 0, runner_class, best_class)
        return cls(*(pick(part).cpu().numpy() for part in (best, best_class, runner, runner_class)))


def small_classes(areas: np.ndarray, background_index: int, area_threshold: float) -> np.ndarray:
    """Non-background classes whose area is at most `area_threshold` times the whole non-background area."""
    areas = areas.astype(np.float64)
    areas[background_index] = 0
    small = areas <= area_threshold * areas.sum()
    small[background_index] = False
    return small


def label_map(
    band_choices: BandChoices,
    band_pixels: BandPixels,
    size: tuple[int, int],
    num_classes: int,
    band_rows: int,
    background_index: int | None,
    rules: LabelRules,
) -> np.ndarray:
    """Argmax labels (H, W) after the background rules, reading class probabilities band by band: the one home of
    the labelling rules, whatever holds the probabilities.

    `band_choices(top, bottom, runner_up)` gives the `Choices` of those rows; `band_pixels(top, bottom, moved)`
    every class's probabilities (C, n) at the `moved` pixels (a boolean mask of those rows). Area rule: a
    non-background class whose predicted area is at most `rules.area_threshold` times the whole non-background
    area has its probabilities zeroed before the final argmax. Probability rule: pixels whose (remaining)
    highest probability is below `rules.prob_threshold` go to the background class. The area rule needs every
    class's area before any pixel is final, so it takes two passes: the first takes each band's argmax and counts
    areas, keeping each pixel's runner-up; the second moves the pixels of a too-small class to their runner-up
    where that class is kept, and reads every class's probabilities only for the rest (every other pixel keeps
    its argmax, which masking cannot change).
    """
    if background_index is None and rules.needs_background:
        raise InputError("thresholds need a background class to assign rejected pixels to")
    prob_threshold, area_threshold = rules.prob_threshold, rules.area_threshold
    height = size[0]
    dtype = label_dtype(num_classes)
    labels = np.empty(size, dtype=dtype)
    uncertain = np.zeros(size, dtype=bool) if prob_threshold > 0 else None
    runner_class = np.empty(size, dtype=dtype) if area_threshold else None
    runner_uncertain = np.zeros(size, dtype=bool) if area_threshold and prob_threshold > 0 else None
    areas = np.zeros(num_classes, dtype=np.int64)
    bands = [(top, min(top + band_rows, height)) for top in range(0, height, band_rows)]
    runner_up = bool(area_threshold)
    for (top, bottom), choices in in_bands(lambda top, bottom: band_choices(top, bottom, runner_up), bands):
        labels[top:bottom] = choices.best_class
        if uncertain is not None:
            uncertain[top:bottom] = choices.best < prob_threshold
        if runner_class is not None:
            areas += np.bincount(choices.best_class.ravel(), minlength=num_classes)
            unknown = choices.runner_class is None or choices.runner is None
            runner_class[top:bottom] = choices.best_class if unknown else choices.runner_class
            if runner_uncertain is not None and choices.runner is not None:
                runner_uncertain[top:bottom] = choices.runner < prob_threshold
    if area_threshold:
        assert background_index is not None and runner_class is not None  # rules.needs_background
        small = small_classes(areas, background_index, area_threshold)
        if small.any():
            mask = torch.from_numpy(small)
            rests: dict[int, np.ndarray] = {}
            for top, bottom in bands:
                moved = small[labels[top:bottom]]
                runner = runner_class[top:bottom]
                to_runner = moved & ~small[runner]
                labels[top:bottom][to_runner] = runner[to_runner]
                if uncertain is not None and runner_uncertain is not None:
                    uncertain[top:bottom][to_runner] = runner_uncertain[top:bottom][to_runner]
                rest = moved & ~to_runner
                if rest.any():
                    rests[top] = rest

            def second_choice(top: int, bottom: int) -> tuple[np.ndarray, np.ndarray]:
                probs = band_pixels(top, bottom, rests[top])
                second, second_class = probs.masked_fill(mask.to(probs.device).view(-1, 1), 0.0).max(dim=0)
                return second.cpu().numpy(), second_class.cpu().numpy()

            pending = [band for band in bands if band[0] in rests]
            for (top, bottom), (second, second_class) in in_bands(second_choice, pending):
                labels[top:bottom][rests[top]] = second_class
                if uncertain is not None:
                    uncertain[top:bottom][rests[top]] = second < prob_threshold
    if uncertain is not None:
        labels[uncertain] = background_index
    return labels


def band_readers(band_probs: BandProbabilities) -> tuple[BandChoices, BandPixels]:
    """`label_map`'s two readers for probabilities made band by band."""

    def band_choices(top: int, bottom: int, runner_up: bool) -> Choices:
        return Choices.of(band_probs(top, bottom), runner_up)

    def band_pixels(top: int, bottom: int, moved: np.ndarray) -> Tensor:
        probs = band_probs(top, bottom)
        return probs[:, torch.from_numpy(moved).to(probs.device)]

    return band_choices, band_pixels


def assign_labels(probs: Tensor, background_index: int | None, rules: LabelRules | None = None) -> Tensor:
    """`label_map` for class probabilities already in memory, (C, ...) -> (...) int64; the probabilities were made
    at some logit scale already, so only the thresholds of `rules` (default: none) apply."""
    flat = probs.reshape(probs.shape[0], 1, -1)
    labels = label_map(
        *band_readers(lambda top, bottom: flat[:, top:bottom]),
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
class ColumnBlocks:
    """`AxisResampling` of columns in blocks of up to `weight.shape[0]` output columns that mix the same two
    inputs, so that a band is resampled by broadcasting (Q, rows, 1, blocks) against the weights (width, blocks),
    with no gather at the output size (the long last dimension keeps the lerp vectorised); `columns` finds each
    output column in that flattened layout (whose unused slots have weight 0). The same `torch.lerp` of the same
    three values gives each output column."""

    low: Tensor
    high: Tensor
    weight: Tensor
    columns: Tensor

    @classmethod
    def bilinear(cls, out_size: int, in_size: int, device: torch.device) -> ColumnBlocks:
        axis = AxisResampling.bilinear(out_size, in_size, torch.device("cpu"))
        low = axis.low.numpy()
        starts = np.flatnonzero(np.r_[True, low[1:] != low[:-1]])
        lengths = np.diff(np.r_[starts, out_size])
        width = -(-out_size // len(starts))
        within = np.arange(out_size) - np.repeat(starts, lengths)
        first_block = np.r_[0, np.cumsum(-(-lengths // width))[:-1]]
        block = np.repeat(first_block, lengths) + within // width
        count = int(block[-1]) + 1
        columns = torch.from_numpy(within % width * count + block)
        weight = torch.zeros(width * count)
        weight[columns] = axis.weight
        block_low, block_high = torch.zeros(count, dtype=torch.long), torch.zeros(count, dtype=torch.long)
        block_low[torch.from_numpy(block)] = axis.low
        block_high[torch.from_numpy(block)] = axis.high
        return cls(
            block_low.to(device), block_high.to(device), weight.view(width, count).to(device), columns.to(device)
        )

    @property
    def flat_width(self) -> int:
        return int(self.weight.numel())


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

    def probs_size(self, input_size: tuple[int, int], budget_bytes: int) -> tuple[int, int]:
        """Where probabilities are made: the input size when they fit `budget_bytes`, else the (smaller) working size.

        Raises InputError, saying how much memory they would need, when neither fits.
        """
        if self.probs_bytes(input_size) <= budget_bytes:
            return input_size
        working = self.working_size
        if working[0] * working[1] < input_size[0] * input_size[1] and self.probs_bytes(working) <= budget_bytes:
            return working
        smallest = min((input_size, working), key=lambda size: size[0] * size[1])
        raise InputError(
            f"class probabilities for {self.num_classes} classes would take "
            f"{self.probs_bytes(smallest) / 2**30:.2f} GiB "
            f"even at {smallest[1]}x{smallest[0]}, over the budget of {budget_bytes / 2**30:.2f} GiB "
            "(SegmenterConfig.probs_budget_bytes, --probs-budget); labels need no probabilities"
        )

    def probs_note(self, input_size: tuple[int, int], budget_bytes: int) -> str | None:
        """Why probabilities are smaller than the input, or None when they are at the input size."""
        size = self.probs_size(input_size, budget_bytes)
        if size == input_size:
            return None
        return (
            f"probabilities are at the working size {size[1]}x{size[0]}, not the input size "
            f"{input_size[1]}x{input_size[0]}: {self.num_classes} classes at the input size would "
            f"take {self.probs_bytes(input_size) / 2**30:.2f} GiB, over the budget of {budget_bytes / 2**30:.2f} GiB"
        )

    def band_rows(self, width: int) -> int:
        """Output rows per band: a band's query planes stay near BAND_ELEMENTS values (a few MiB, in cache)."""
        return max(1, BAND_ELEMENTS // (self.logits.shape[0] * width))

    def bands(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """(top, bottom) of each band of `band_rows` output rows at `size`."""
        step = self.band_rows(size[1])
        return [(top, min(top + step, size[0])) for top in range(0, size[0], step)]

    def band_class_probabilities(
        self, size: tuple[int, int], logit_scale: float
    ) -> tuple[BandProbabilities, Callable[[Tensor], Tensor]]:
        """A function (top, bottom) -> class probabilities (C, bottom - top, L) of those rows at `size` in the
        columns' resampling layout (`ColumnBlocks`, L >= W), and the function that picks the W output columns
        from the last dimension of any tensor in that layout.

        Each band's query logits are resampled (rows, then columns, each one `torch.lerp` as `AxisResampling`
        gives) into one buffer padded to `softmax_width`, scaled, and put through the softmax over the queries;
        the max over synonyms follows (`synonym_max`). A pixel's probabilities are thus those of the whole-image
        computation, whichever band it falls in.
        """
        logits = self.logits
        queries, device = logits.shape[0], logits.device
        rows = None if size[0] == logits.shape[1] else AxisResampling.bilinear(size[0], logits.shape[1], device)
        blocks = None if size[1] == logits.shape[2] else ColumnBlocks.bilinear(size[1], logits.shape[2], device)
        width = size[1] if blocks is None else blocks.flat_width

        def band(top: int, bottom: int) -> Tensor:
            band_logits = logits[:, top:bottom]
            if rows is not None:
                low, high = logits.index_select(1, rows.low[top:bottom]), logits.index_select(1, rows.high[top:bottom])
                band_logits = torch.lerp(low, high, rows.weight[top:bottom].view(1, -1, 1))
            pixels = (bottom - top) * width
            flat = torch.empty((queries, softmax_width(pixels, device)), dtype=logits.dtype, device=device)
            flat[:, pixels:] = 0
            out = flat[:, :pixels].view(queries, bottom - top, -1)
            if blocks is None:
                out.copy_(band_logits)
            else:
                low = band_logits.index_select(2, blocks.low).unsqueeze(2)
                high = band_logits.index_select(2, blocks.high).unsqueeze(2)
                torch.lerp(low, high, blocks.weight, out=out.view(queries, bottom - top, *blocks.weight.shape))
            probs = synonym_max(flat.mul_(logit_scale).softmax(dim=0), self.query_classes, self.num_classes)
            return probs[:, :pixels].view(self.num_classes, bottom - top, width)

        def pick(layout: Tensor) -> Tensor:
            return layout if blocks is None else layout.index_select(-1, blocks.columns)

        return band, pick

    def band_probabilities(self, size: tuple[int, int], logit_scale: float) -> BandProbabilities:
        """A function (top, bottom) -> class probabilities (C, bottom - top, W) of those rows at `size`."""
        band, pick = self.band_class_probabilities(size, logit_scale)
        return lambda top, bottom: pick(band(top, bottom))

    def best(self, size: tuple[int, int], logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Each pixel's highest class probability (float32) and its class at `size`, band by band."""
        band, pick = self.band_class_probabilities(size, logit_scale)
        best_prob = np.empty(size, dtype=np.float32)
        best_class = np.empty(size, dtype=label_dtype(self.num_classes))
        bands = self.bands(size)
        with torch.inference_mode():
            for (top, bottom), choices in in_bands(lambda t, b: Choices.of(band(t, b), False, pick), bands):
                best_prob[top:bottom] = choices.best
                best_class[top:bottom] = choices.best_class
        return best_prob, best_class

    def labels(self, size: tuple[int, int], background_index: int | None, rules: LabelRules) -> np.ndarray:
        """The label map at `size` under `rules`, computed in bands."""
        band, pick = self.band_class_probabilities(size, rules.logit_scale)

        def band_choices(top: int, bottom: int, runner_up: bool) -> Choices:
            return Choices.of(band(top, bottom), runner_up, pick)

        def band_pixels(top: int, bottom: int, moved: np.ndarray) -> Tensor:
            probs = pick(band(top, bottom))
            return probs[:, torch.from_numpy(moved).to(probs.device)]

        with torch.inference_mode():
            return label_map(
                band_choices, band_pixels, size, self.num_classes, self.band_rows(size[1]), background_index, rules
            )

    def probabilities(self, size: tuple[int, int], logit_scale: float) -> np.ndarray:
        """Class probabilities (C, H, W) float32 at `size`, filled band by band."""
        band = self.band_probabilities(size, logit_scale)
        probs = np.empty((self.num_classes, *size), dtype=np.float32)
        bands = self.bands(size)
        with torch.inference_mode():
            for (top, bottom), values in in_bands(lambda t, b: band(t, b).cpu().numpy(), bands):
                probs[:, top:bottom] = values
        return probs


@dataclass(frozen=True)
class CompactScores:
    """Scores for relabelling one result at its `size` and `logit_scale`, in memory that does not grow with the
    number of classes at that size.

    `best_prob` and `best_class` are each pixel's unthresholded highest probability and its class at `size`, which
    makes the probability rule exact; `probs` holds every class's probability (C, h, w) in float16 at a reduced
    size, for the second choices of pixels whose class the area rule drops (read at the nearest kept pixel) and
    for probability maps. With `probs` at `size` the area rule is exact too, up to float16 rounding.
    """

    best_prob: np.ndarray
    best_class: np.ndarray
    probs: np.ndarray
    logit_scale: float

    @classmethod
    def from_scores(
        cls, scores: PixelScores, size: tuple[int, int], logit_scale: float, probs_bytes: int
    ) -> CompactScores:
        """Made band by band from full scores (never C x H x W at `size`); `probs` takes at most `probs_bytes`."""
        best_prob, best_class = scores.best(size, logit_scale)
        scale = min(1.0, math.sqrt(probs_bytes / (2 * scores.num_classes * size[0] * size[1])))
        reduced = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
        probs = scores.probabilities(reduced, logit_scale).astype(np.float16)
        return cls(best_prob, best_class, probs, logit_scale)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the labels these scores make."""
        return int(self.best_class.shape[0]), int(self.best_class.shape[1])

    @property
    def kept_size(self) -> tuple[int, int]:
        """(h, w) of the kept class probabilities."""
        return int(self.probs.shape[1]), int(self.probs.shape[2])

    def with_num_classes(self, num_classes: int) -> CompactScores:
        """The same scores with query-less classes appended (zero probability: no pixel prefers them)."""
        empty = np.zeros((num_classes - self.num_classes, *self.kept_size), dtype=self.probs.dtype)
        return replace(self, probs=np.concatenate([self.probs, empty]))

    def probs_size(self, input_size: tuple[int, int], budget_bytes: int) -> tuple[int, int]:
        """The kept size: the only one these scores have probabilities at."""
        return self.kept_size

    def probs_note(self, input_size: tuple[int, int], budget_bytes: int) -> str | None:
        """Why probabilities are smaller than the input, or None when they are at the input size."""
        if self.kept_size == input_size:
            return None
        return (
            f"probabilities are kept at {self.kept_size[1]}x{self.kept_size[0]}, not the input size "
            f"{input_size[1]}x{input_size[0]}, in a compact result"
        )

    def _check(self, size: tuple[int, int], kept: tuple[int, int], logit_scale: float) -> None:
        """Raise InputError unless asked at `kept` (the only size they have) and their own logit scale."""
        if size != kept:
            raise InputError(f"compact scores answer at {kept[1]}x{kept[0]} only, not at {size[1]}x{size[0]}")
        if logit_scale != self.logit_scale:
            raise InputError(
                f"compact scores were made at logit scale {self.logit_scale:g}, not {logit_scale:g}; "
                "relabel from the full scores instead"
            )

    def probabilities(self, size: tuple[int, int], logit_scale: float) -> np.ndarray:
        """Class probabilities (C, h, w) float32 at the kept size (the only size they are kept at)."""
        self._check(size, self.kept_size, logit_scale)
        return self.probs.astype(np.float32)

    def labels(self, size: tuple[int, int], background_index: int | None, rules: LabelRules) -> np.ndarray:
        """The label map at `size` (this result's own) under `rules`, at the logit scale the scores were made at."""
        self._check(size, self.size, rules.logit_scale)
        height, width = size
        kept_height, kept_width = self.kept_size

        def band_choices(top: int, bottom: int, runner_up: bool) -> Choices:
            return Choices(self.best_prob[top:bottom], self.best_class[top:bottom])

        def band_pixels(top: int, bottom: int, moved: np.ndarray) -> Tensor:
            rows, columns = np.nonzero(moved)
            kept = self.probs[:, (rows + top) * kept_height // height, columns * kept_width // width]
            return torch.from_numpy(kept.astype(np.float32))

        return label_map(band_choices, band_pixels, size, self.num_classes, height, background_index, rules)
