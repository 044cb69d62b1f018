"""From an image and class text to a segmentation: resize, sliding windows, stitching and post-processing.

The expensive image side (`set_image`) is kept apart from the cheap text side (`predict`), as in
segment-anything's predictor: new class names or thresholds on the same image re-run only the text side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .backbones import LoadedModel
from .coco import CocoFile
from .config import (
    DEFAULT_METHOD,
    DEFAULT_PROBS_BUDGET,
    PAMR,
    CalibrationParams,
    LabelRules,
    Method,
    SegmenterConfig,
    Stages,
    Variant,
    check_pamr_settings,
)
from .encoder import CropTrace, encode_dense_variants
from .errors import InputError
from .images import cap_size, fingerprint, to_rgb_array
from .methods import METHOD_SPECS
from .methods.base import settings_json
from .refinements import REFINEMENTS, RefineInput
from .scores import CompactScores, PixelScores
from .text import DEFAULT_BACKGROUND_WORDS, TextEmbeddingCache, TextEncoder, Vocabulary, parse_classes
from .vocabularies import BACKGROUND_NAME

Progress = Callable[[float, str], None]
Window = tuple[int, int, int, int]
_STITCH_ELEMENTS = 1 << 24
MAX_WHOLE_IMAGE_TOKENS = 6400
SHARED_VARIANT_TIMINGS = ("preprocess", "backbone_shared")


@dataclass(frozen=True)
class ImageSideKey:
    """Everything an image side depends on besides its segmenter's protocol: equal keys, equal embeddings.

    `image` is the `fingerprint` of the RGB array the embedding was made from (and labels come out at).
    """

    image: str
    variant: Variant
    params: CalibrationParams
    model_key: str


@dataclass
class ImageEmbedding:
    """The image side of a segmentation: everything `predict` needs that does not depend on the classes.

    `image` is the input as given (labels come out at its size); the windows ran on it resized to `resized_size`.
    `embeddings` are (windows, grid rows, grid columns, E). For a method whose image side depends on the class
    text (ResCLIP), `embeddings` are its first pass, `text_states` what its text pass continues from, and
    `text_side` the last vocabulary's final embeddings with their key (`Segmenter.text_side_embeddings`).
    `shared_timings` names the `timings` entries spent once for a group of embeddings (`set_image_variants`):
    whoever adds up the group counts them once.
    """

    image: np.ndarray
    resized_size: tuple[int, int]
    windows: list[Window]
    embeddings: Tensor
    key: ImageSideKey
    trace: list[CropTrace] | None = None
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    shared_timings: tuple[str, ...] = ()
    text_states: list[TextState] = field(default_factory=list)
    text_side: tuple[Hashable, Tensor] | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """Patch rows and columns of every window."""
        return int(self.embeddings.shape[1]), int(self.embeddings.shape[2])

    def locate_patch(self, x: int, y: int) -> PatchLocation:
        """The window and patch that input pixel (x, y) falls in (see `locate_patch`)."""
        return locate_patch(self.windows, self.resized_size, self.image.shape[:2], self.grid, x, y)

    def serves(self, key: ImageSideKey, trace: bool = False) -> bool:
        """Whether this embedding is the image side `key` asks for (with a trace, when one is asked for)."""
        return self.key == key and (self.trace is not None or not trace)


class TextState(NamedTuple):
    """What a method's text pass continues from for the windows `windows` (a slice of the embedding's windows)."""

    windows: slice
    state: object


@dataclass(frozen=True)
class PatchLocation:
    """Where an input pixel falls: window `window`, patch (`row`, `column`) of its grid, `index` as traces
    number patches (row-major)."""

    window: int
    row: int
    column: int
    index: int


def window_boxes(windows: Sequence[Window], resized_size: tuple[int, int], input_size: tuple[int, int]) -> list[Window]:
    """Windows (y0, x0, y1, x1) on the resized canvas mapped to input pixels, each at least one pixel.

    Windows of small images reach past the image (the canvas is padded), so boxes may exceed it.
    """
    scale_y, scale_x = input_size[0] / resized_size[0], input_size[1] / resized_size[1]
    return [
        (
            round(y0 * scale_y),
            round(x0 * scale_x),
            max(round(y1 * scale_y), round(y0 * scale_y) + 1),
            max(round(x1 * scale_x), round(x0 * scale_x) + 1),
        )
        for y0, x0, y1, x1 in windows
    ]


def locate_patch(
    windows: Sequence[Window],
    resized_size: tuple[int, int],
    input_size: tuple[int, int],
    grid: tuple[int, int],
    x: int,
    y: int,
) -> PatchLocation:
    """The patch under input pixel (x, y): the pixel's centre is mapped onto the resized canvas, and among the
    windows containing it the one whose centre is nearest wins (the first on a tie); the patch is its `grid` cell
    there. Raises InputError for a point outside the image."""
    height, width = input_size
    if not (0 <= x < width and 0 <= y < height):
        raise InputError(f"point x={x}, y={y} is outside the {width}x{height} image")
    v, u = (y + 0.5) * resized_size[0] / height, (x + 0.5) * resized_size[1] / width

    def distance(index: int) -> float:
        y0, x0, y1, x1 = windows[index]
        return ((y0 + y1) / 2 - v) ** 2 + ((x0 + x1) / 2 - u) ** 2

    inside = [index for index, (y0, x0, y1, x1) in enumerate(windows) if y0 <= v < y1 and x0 <= u < x1]
    window = min(inside, key=distance)
    y0, x0, y1, x1 = windows[window]
    rows, columns = grid
    row = min(math.floor((v - y0) * rows / (y1 - y0)), rows - 1)
    column = min(math.floor((u - x0) * columns / (x1 - x0)), columns - 1)
    return PatchLocation(window, row, column, row * columns + column)


@dataclass
class Segmentation:
    """Per-pixel labels at the input resolution, with what produced them; class probabilities on request.

    `pixel_scores` relabel the result under other rules (`with_rules`) and give `probs`, computed when first read
    at `rules.logit_scale`. Full `PixelScores` (working-size logits) give (C, H, W) float32 at the input size when
    that fits `probs_budget_bytes`, otherwise at the working size `resized_size`; `CompactScores` (`compact()`)
    give them at their kept size. `probs_size` says which before anything is computed and `probs_note` explains a
    reduced size. `windows` are on the resized canvas, each a `grid` of patches. `timings` are seconds by step;
    `image_side_reused` says that `Segmenter.segment` served a remembered image side, whose steps are then left out
    of `timings` (they were spent by an earlier call).
    """

    image: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    background_index: int | None
    rules: LabelRules
    timings: dict[str, float]
    notices: list[str]
    is_random_weights: bool
    method: Method
    stages: Stages
    model_name: str
    weights: str
    windows: list[Window]
    resized_size: tuple[int, int]
    grid: tuple[int, int]
    pixel_scores: PixelScores | CompactScores
    trace: list[CropTrace] | None = None
    pamr_steps: int = 0
    refinements: tuple[str, ...] = ()
    method_params: Hashable = None
    image_side_reused: bool = False
    probs_budget_bytes: int = DEFAULT_PROBS_BUDGET

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    @property
    def probs_size(self) -> tuple[int, int]:
        """(H, W) of `probs`; raises InputError when probabilities would not fit the budget at any size."""
        return self.pixel_scores.probs_size(self.input_size, self.probs_budget_bytes)

    @property
    def probs_note(self) -> str | None:
        """Why `probs` is smaller than the input, or None when it is at the input size."""
        return self.pixel_scores.probs_note(self.input_size, self.probs_budget_bytes)

    @cached_property
    def probs(self) -> np.ndarray:
        """Class probabilities (C, H, W) float32 at `probs_size`, computed on first use."""
        return self.pixel_scores.probabilities(self.probs_size, self.rules.logit_scale)

    def to_coco(self, image_id: int = 1, file_name: str = "image.png") -> dict:
        """This result as a one-image COCO dataset (see `scclip_core.coco`): one RLE annotation per class present."""
        coco = CocoFile(self.class_names, self.background_index)
        coco.add(self, file_name, image_id=image_id)
        return coco.to_dict()

    def shares(self) -> dict[str, float]:
        """Fraction of the pixels given to each class."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        return {name: float(count) / self.labels.size for name, count in zip(self.class_names, counts)}

    def compact(self, probs_bytes: int) -> Segmentation:
        """The same result holding `CompactScores` (class probabilities in at most `probs_bytes`), to keep for a
        while: relabelling at the same logit scale stays exact for the probability rule."""
        if isinstance(self.pixel_scores, CompactScores):
            return self
        scores = CompactScores.from_scores(self.pixel_scores, self.input_size, self.rules.logit_scale, probs_bytes)
        return replace(self, pixel_scores=scores)

    def with_rules(self, rules: LabelRules) -> Segmentation:
        """The same scores relabelled under other rules (in bands, at the input size); no model involved.

        A threshold on a vocabulary without background adds a query-less background class, as `predict` does.
        Compact scores relabel only at the logit scale they were made at.
        """
        scores, names, background = self.pixel_scores, self.class_names, self.background_index
        if background is None and rules.needs_background:
            names, background = [*names, BACKGROUND_NAME], len(names)
            scores = scores.with_num_classes(len(names))
        labels = scores.labels(self.input_size, background, rules)
        return replace(
            self, pixel_scores=scores, labels=labels, class_names=names, background_index=background, rules=rules
        )

    def with_thresholds(self, prob_threshold: float, area_threshold: float | None = None) -> Segmentation:
        """`with_rules` at the same logit scale with other thresholds."""
        return self.with_rules(replace(self.rules, prob_threshold=prob_threshold, area_threshold=area_threshold))

    def window_boxes(self) -> list[Window]:
        """The windows (y0, x0, y1, x1) in input pixels; they may reach past the image (the canvas is padded)."""
        return window_boxes(self.windows, self.resized_size, self.input_size)

    def locate_patch(self, x: int, y: int) -> PatchLocation:
        """The window and patch that input pixel (x, y) falls in (see `locate_patch`)."""
        return locate_patch(self.windows, self.resized_size, self.input_size, self.grid, x, y)

    def to_json(self) -> dict:
        """A plain summary: what ran, on what, and how the pixels were shared."""
        return {
            "model": self.model_name,
            "weights": self.weights,
            "random_weights": self.is_random_weights,
            "method": self.method,
            "stages": {name: getattr(self.stages, name) for name in Stages.names()},
            "pamr_steps": self.pamr_steps,
            "refine": list(self.refinements),
            "method_params": settings_json(self.method_params),
            "classes": self.class_names,
            "background_index": self.background_index,
            "prob_threshold": self.rules.prob_threshold,
            "area_threshold": self.rules.area_threshold,
            "shares": self.shares(),
            "image_size": [int(self.labels.shape[1]), int(self.labels.shape[0])],
            "resized_size": [int(self.resized_size[1]), int(self.resized_size[0])],
            "windows": len(self.windows),
            "timings": {name: round(seconds, 4) for name, seconds in self.timings.items()},
            "image_side_reused": self.image_side_reused,
            "notices": self.notices,
        }


def resized_shape(height: int, width: int, short_side: int | None, max_long_side: int) -> tuple[int, int]:
    """mmseg's keep-ratio resize: the largest scale with short side <= `short_side`, long side <= `max_long_side`."""
    if short_side is None:
        return height, width
    scale = min(max_long_side / max(height, width), short_side / min(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def sliding_windows(height: int, width: int, crop: int | tuple[int, int], stride: int) -> list[Window]:
    """Windows of `crop` (a side, or (rows, columns)) over an image at least `crop` on each side; the last ones are
    shifted back inside."""
    crop_rows, crop_columns = (crop, crop) if isinstance(crop, int) else crop

    def starts(size: int, side: int) -> list[int]:
        count = max(math.ceil((size - side) / stride), 0) + 1
        return [min(index * stride, size - side) for index in range(count)]

    return [
        (y, x, y + crop_rows, x + crop_columns) for y in starts(height, crop_rows) for x in starts(width, crop_columns)
    ]


class Segmenter:
    """Owns the inference protocol for one model: windows, text, stitching and post-processing.

    Without `text_cache`, text embeddings go to the shared on-disk cache (`TextEmbeddingCache.default()`). `text`
    shares another segmenter's encoder (same model and templates), with its cache and its kept template prefixes.
    """

    def __init__(
        self,
        model: LoadedModel,
        config: SegmenterConfig | None = None,
        *,
        text_cache: TextEmbeddingCache | None = None,
        text: TextEncoder | None = None,
    ) -> None:
        self.model = model
        self.config = config or SegmenterConfig()
        if text is not None and (text.model is not model or text.template_set != self.config.templates):
            raise InputError(
                f"a shared text encoder must be of this model and its {self.config.templates!r} templates, not "
                f"{text.model.name} with {text.template_set!r}"
            )
        self.text = text if text is not None else TextEncoder(model, self.config.templates, text_cache)
        self._last: ImageEmbedding | None = None

    def _normalised(self, rgb: np.ndarray, size: tuple[int, int]) -> Tensor:
        image = torch.tensor(rgb, device=self.model.device).permute(2, 0, 1).unsqueeze(0).float()
        if tuple(image.shape[2:]) != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.model.mean, device=image.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.model.std, device=image.device).view(1, 3, 1, 1) * 255
        return (image - mean) / std

    def _layout(self, height: int, width: int) -> tuple[tuple[int, int], list[Window]]:
        """The canvas and its windows. As in the official slide inference, a side shorter than the crop gets a
        window that short (every window keeps one size, so they batch); padding (at the mean colour) only brings a
        side up to one patch, or in whole-image mode up to a whole number of patches."""
        crop, patch = self.config.crop, self.model.patch_size
        if self.config.stride is None:
            padded = (math.ceil(height / patch) * patch, math.ceil(width / patch) * patch)
            tokens = padded[0] * padded[1] // patch**2
            if tokens > MAX_WHOLE_IMAGE_TOKENS:
                raise InputError(
                    f"whole-image mode on a {width}x{height} image means {tokens} tokens, and SC-CLIP's token-by-token "
                    f"matrices would need {tokens**2 * 4 / 2**30:.1f} GiB each; the limit is {MAX_WHOLE_IMAGE_TOKENS} "
                    "tokens. Use sliding windows or a smaller short side."
                )
            return padded, [(0, 0, *padded)]
        padded = (max(height, patch), max(width, patch))
        window = (min(crop, padded[0]), min(crop, padded[1]))
        return padded, sliding_windows(*padded, window, self.config.stride)

    def _windows(self, rgb: np.ndarray) -> tuple[tuple[int, int], list[Window], Tensor]:
        """The resized size, the windows over the padded canvas and the normalised crops (one batch)."""
        height, width = rgb.shape[:2]
        resized = resized_shape(height, width, self.config.short_side, self.config.max_long_side)
        padded, windows = self._layout(*resized)
        with torch.inference_mode():
            canvas = F.pad(self._normalised(rgb, resized), (0, padded[1] - resized[1], 0, padded[0] - resized[0]))
            crops = torch.cat([canvas[:, :, y0:y1, x0:x1] for y0, x0, y1, x1 in windows])
        return resized, windows, crops

    def _notices(self, original: np.ndarray, rgb: np.ndarray) -> list[str]:
        """What the result should say about how it was made: a downscaled image side, untrained weights."""
        notices = []
        if rgb.shape != original.shape:
            notices.append(
                f"image downscaled to {rgb.shape[1]}x{rgb.shape[0]} for the image side (size cap "
                f"{self.config.max_input_side} px); labels are at the input size "
                f"{original.shape[1]}x{original.shape[0]}"
            )
        if self.model.is_random:
            notices.append("weights are random (untrained): the segmentation is meaningless")
        return notices

    def _encode_windows(
        self,
        crops: Tensor,
        windows: list[Window],
        variants: Sequence[Variant],
        params: CalibrationParams,
        trace: bool,
        progress: Progress | None,
    ) -> tuple[list[Tensor], list[list[CropTrace]], float, list[float], list[list[TextState]]]:
        """Every variant's normalised window embeddings and traces, from one frozen pass per batch of windows;
        then the seconds of the shared passes, each variant's own seconds and each variant's text-pass states."""
        embeddings: list[list[Tensor]] = [[] for _ in variants]
        traces: list[list[CropTrace]] = [[] for _ in variants]
        states: list[list[TextState]] = [[] for _ in variants]
        shared_seconds, own_seconds = 0.0, [0.0] * len(variants)
        for first in range(0, len(windows), self.config.batch_size):
            if progress:
                progress(
                    first / len(windows),
                    f"encoding windows {first + 1}-{min(first + self.config.batch_size, len(windows))} "
                    f"of {len(windows)}",
                )
            result = encode_dense_variants(
                self.model.visual,
                crops[first : first + self.config.batch_size],
                variants,
                layers=self.model.layers,
                params=params,
                trace=trace,
            )
            shared_seconds += result.shared_seconds
            for index, output in enumerate(result.outputs):
                embeddings[index].append(F.normalize(output.patch_embeddings.float(), dim=-1))
                traces[index].extend(output.trace or [])
                own_seconds[index] += output.seconds
                if output.state is not None:
                    batch = slice(first, first + output.patch_embeddings.shape[0])
                    states[index].append(TextState(batch, output.state))
        for variant_traces in traces:
            for crop_trace, window in zip(variant_traces, windows):
                crop_trace.window = window
        if progress:
            progress(1.0, "windows encoded")
        return [torch.cat(parts) for parts in embeddings], traces, shared_seconds, own_seconds, states

    def image_key(
        self,
        image: object,
        *,
        method: Method = DEFAULT_METHOD,
        stages: Stages | None = None,
        params: CalibrationParams | None = None,
        method_params: Hashable = None,
    ) -> ImageSideKey:
        """The key of the image side that `embed_image` would compute for these arguments (cheap for arrays)."""
        return self._decode(image, method, stages, params, method_params)[1]

    def _decode(
        self,
        image: object,
        method: Method,
        stages: Stages | None,
        params: CalibrationParams | None,
        method_params: Hashable,
    ) -> tuple[np.ndarray, ImageSideKey]:
        """The input as RGB and the key of its image side under these arguments (defaults filled in)."""
        variant = Variant(method, stages or Stages(), method_params)
        rgb, digest = self._read(image)
        return rgb, self._key(digest, variant, params or CalibrationParams())

    @staticmethod
    def _read(image: object) -> tuple[np.ndarray, str]:
        """The input as an RGB array and its fingerprint."""
        rgb = to_rgb_array(image)
        return rgb, fingerprint(rgb)

    def _key(self, digest: str, variant: Variant, params: CalibrationParams) -> ImageSideKey:
        return ImageSideKey(digest, variant, params, self.model.key)

    def _embed(
        self,
        original: np.ndarray,
        digest: str,
        variants: Sequence[Variant],
        params: CalibrationParams,
        *,
        trace: bool,
        progress: Progress | None,
        started: float,
        shared: bool,
    ) -> list[ImageEmbedding]:
        """The one image-side path: cap the decoded input (fingerprint `digest`), lay out and cut its windows, and
        run the backbone once for all `variants` (`started`: when decoding began).

        Timings are `preprocess` and `backbone` for a single embedding; with `shared`, `backbone_shared` (spent once
        for the group, see `ImageEmbedding.shared_timings`) and each variant's own `last_block`.
        """
        rgb, _ = cap_size(original, self.config.max_input_side)
        resized, windows, crops = self._windows(rgb)
        preprocessed = time.perf_counter()
        embeddings, traces, shared_seconds, own_seconds, states = self._encode_windows(
            crops, windows, variants, params, trace, progress
        )
        encoded = time.perf_counter()
        results = []
        for variant, variant_embeddings, variant_traces, seconds, variant_states in zip(
            variants, embeddings, traces, own_seconds, states
        ):
            timings = {"preprocess": preprocessed - started}
            if shared:
                timings.update(backbone_shared=shared_seconds, last_block=seconds)
            else:
                timings.update(backbone=encoded - preprocessed)
            results.append(
                ImageEmbedding(
                    image=original,
                    resized_size=resized,
                    windows=windows,
                    embeddings=variant_embeddings,
                    key=self._key(digest, variant, params),
                    trace=variant_traces if trace else None,
                    notices=self._notices(original, rgb),
                    timings=timings,
                    shared_timings=SHARED_VARIANT_TIMINGS if shared else (),
                    text_states=variant_states,
                )
            )
        return results

    def _embed_one(
        self, original: np.ndarray, key: ImageSideKey, trace: bool, progress: Progress | None, started: float
    ) -> ImageEmbedding:
        (embedding,) = self._embed(
            original,
            key.image,
            [key.variant],
            key.params,
            trace=trace,
            progress=progress,
            started=started,
            shared=False,
        )
        return embedding

    def embed_image(
        self,
        image: object,
        *,
        method: Method = DEFAULT_METHOD,
        stages: Stages | None = None,
        params: CalibrationParams | None = None,
        method_params: Hashable = None,
        trace: bool = False,
        progress: Progress | None = None,
    ) -> ImageEmbedding:
        """Run the backbone over the image's windows, for `predict(..., embedding=...)`; nothing is remembered,
        so callers serving several users never share an image side by accident."""
        started = time.perf_counter()
        original, key = self._decode(image, method, stages, params, method_params)
        return self._embed_one(original, key, trace, progress, started)

    def set_image(
        self,
        image: object,
        *,
        method: Method = DEFAULT_METHOD,
        stages: Stages | None = None,
        params: CalibrationParams | None = None,
        method_params: Hashable = None,
        trace: bool = False,
        progress: Progress | None = None,
    ) -> ImageEmbedding:
        """`embed_image`, remembered for `predict` without an embedding; the remembered one is returned again
        when it serves the same key."""
        started = time.perf_counter()
        original, key = self._decode(image, method, stages, params, method_params)
        if self._last is None or not self._last.serves(key, trace):
            self._last = self._embed_one(original, key, trace, progress, started)
        return self._last

    def set_image_variants(
        self,
        image: object,
        variants: Sequence[Variant],
        *,
        params: CalibrationParams | None = None,
        progress: Progress | None = None,
    ) -> list[ImageEmbedding]:
        """One image embedding per variant, for `predict(..., embedding=...)`, from one shared frozen pass.

        Preprocessing, windowing and blocks 1..L-1 run once for all variants. Each embedding's timings hold
        `preprocess` and `backbone_shared` (the same seconds in every embedding, spent once for all of them; they
        are listed in `shared_timings`) and `last_block`, that variant's own cost. The embedding `set_image`
        remembers is left as it was.
        """
        if not variants:
            raise InputError("give at least one variant")
        started = time.perf_counter()
        original, digest = self._read(image)
        return self._embed(
            original,
            digest,
            variants,
            params or CalibrationParams(),
            trace=False,
            progress=progress,
            started=started,
            shared=True,
        )

    def _stitch(self, embedding: ImageEmbedding, windows: Tensor, text: Tensor) -> Tensor:
        """Window logits of the normalised window embeddings `windows` upsampled to their window, averaged where
        windows overlap, cropped to the image.

        Queries go through in chunks, so the upsampled windows never hold every query at once.
        """
        first = embedding.windows[0]
        crop = (first[2] - first[0], first[3] - first[1])
        padded = (max(w[2] for w in embedding.windows), max(w[3] for w in embedding.windows))
        height, width = embedding.resized_size
        counts = torch.zeros(1, *padded, device=text.device)
        for y0, x0, y1, x1 in embedding.windows:
            counts[:, y0:y1, x0:x1] += 1
        logits = torch.empty(text.shape[0], height, width, device=text.device)
        chunk = max(1, _STITCH_ELEMENTS // (len(embedding.windows) * crop[0] * crop[1]))
        for start in range(0, text.shape[0], chunk):
            window_logits = torch.einsum("nhwe,qe->nqhw", windows, text[start : start + chunk])
            window_logits = F.interpolate(window_logits, size=crop, mode="bilinear", align_corners=False)
            canvas = torch.zeros(window_logits.shape[1], *padded, device=text.device)
            for window, (y0, x0, y1, x1) in zip(window_logits, embedding.windows):
                canvas[:, y0:y1, x0:x1] += window
            logits[start : start + chunk] = (canvas / counts)[:, :height, :width]
        return logits

    def text_side_embeddings(self, embedding: ImageEmbedding, queries: Sequence[str], text: Tensor) -> Tensor:
        """The normalised window embeddings `predict` scores for these queries: the image side's own, or, for a
        method whose image side depends on the class text, its text pass from the kept states (the last
        vocabulary's result is kept on the embedding; another vocabulary recomputes it, never reuses it)."""
        spec = METHOD_SPECS[embedding.key.variant.method]
        if spec.text_pass is None or not embedding.text_states:
            return embedding.embeddings
        key = (tuple(queries), self.config.templates)
        kept = embedding.text_side
        if kept is not None and kept[0] == key:
            return kept[1]
        final = torch.empty_like(embedding.embeddings)
        for windows, state in embedding.text_states:
            patches = spec.text_pass(state, embedding.embeddings[windows], text)
            final[windows] = F.normalize(patches.float(), dim=-1)
        embedding.text_side = (key, final)
        return final

    def _refined(
        self,
        logits: Tensor,
        embedding: ImageEmbedding,
        text: Tensor,
        refinements: Sequence[str],
        config: SegmenterConfig,
    ) -> Tensor:
        """The stitched logits through `refinements` in order with `config`'s settings, each guided by the
        normalised network input."""
        if not refinements:
            return logits
        guide = self._normalised(embedding.image, embedding.resized_size)[0]
        out_size = (int(embedding.image.shape[0]), int(embedding.image.shape[1]))
        for name in refinements:
            logits = REFINEMENTS[name].apply(RefineInput(logits, guide, text, out_size), config)
        return logits

    def predict(
        self,
        classes: str | Vocabulary,
        *,
        embedding: ImageEmbedding | None = None,
        background: Sequence[str] | None = DEFAULT_BACKGROUND_WORDS,
        rules: LabelRules | None = None,
        pamr_steps: int | None = None,
        refine: Sequence[str] | None = None,
    ) -> Segmentation:
        """Segment the last image set (or `embedding`) into `classes`; only the text side runs (and, for a method
        whose image side depends on the class text, its text pass).

        `background` words join classes given as text. `rules` turn probabilities into labels (None: the
        defaults); `pamr_steps` and `refine` override the config's for this call (None: the config's; see
        `SegmenterConfig.refinements`).
        """
        embedding = embedding or self._last
        if embedding is None:
            raise InputError("no image set: call set_image first")
        if embedding.key.model_key != self.model.key:
            raise InputError("this image embedding was computed with other weights")
        rules = rules or LabelRules()
        start = time.perf_counter()
        vocabulary = parse_classes(classes, background=background) if isinstance(classes, str) else classes
        if vocabulary.background_index is None and rules.needs_background:
            vocabulary = vocabulary.with_background()
        config = self.config if pamr_steps is None else replace(self.config, pamr_steps=pamr_steps)
        refinements = config.refinements(embedding.key.variant.method, None if refine is None else tuple(refine))
        notices = list(embedding.notices)
        text = self.text.embed(vocabulary.queries, notices).to(embedding.embeddings.device)
        text_done = time.perf_counter()
        with torch.inference_mode():
            windows = self.text_side_embeddings(embedding, vocabulary.queries, text)
            text_pass_done = time.perf_counter()
            logits = self._refined(self._stitch(embedding, windows, text), embedding, text, refinements, config)
            query_classes = torch.tensor(vocabulary.query_classes, device=logits.device)
            scores = PixelScores(logits, query_classes, len(vocabulary.classes))
            logits_done = time.perf_counter()
            labels = scores.labels(embedding.image.shape[:2], vocabulary.background_index, rules)
        end = time.perf_counter()
        timings = dict(embedding.timings)
        timings.update(text=text_done - start)
        if windows is not embedding.embeddings:
            timings.update(text_pass=text_pass_done - text_done)
        timings.update(logits=logits_done - text_pass_done, postprocess=end - logits_done)
        timings["total"] = sum(timings.values())
        return Segmentation(
            image=embedding.image,
            labels=labels,
            class_names=vocabulary.names,
            background_index=vocabulary.background_index,
            rules=rules,
            timings=timings,
            notices=notices,
            is_random_weights=self.model.is_random,
            method=embedding.key.variant.method,
            stages=embedding.key.variant.stages,
            model_name=self.model.name,
            weights=self.model.weights,
            windows=embedding.windows,
            resized_size=embedding.resized_size,
            grid=embedding.grid,
            pixel_scores=scores,
            trace=embedding.trace,
            pamr_steps=config.pamr_steps if PAMR in refinements else 0,
            refinements=refinements,
            method_params=embedding.key.variant.params,
            probs_budget_bytes=self.config.probs_budget_bytes,
        )

    def segment(
        self,
        image: object,
        classes: str | Vocabulary,
        *,
        method: Method = DEFAULT_METHOD,
        stages: Stages | None = None,
        params: CalibrationParams | None = None,
        method_params: Hashable = None,
        trace: bool = False,
        progress: Progress | None = None,
        background: Sequence[str] | None = DEFAULT_BACKGROUND_WORDS,
        rules: LabelRules | None = None,
        pamr_steps: int | None = None,
        refine: Sequence[str] | None = None,
    ) -> Segmentation:
        """`set_image` then `predict`; classes and refinements are checked first, and an unchanged image with
        unchanged settings reuses the cached image side. `pamr_steps` and `refine` override the config's (None:
        the config's)."""
        vocabulary = parse_classes(classes, background=background) if isinstance(classes, str) else classes
        check_pamr_settings(self.config.pamr_steps if pamr_steps is None else pamr_steps, self.config.pamr_dilations)
        self.config.refinements(method, None if refine is None else tuple(refine), pamr_steps)
        remembered = self._last
        embedding = self.set_image(
            image,
            method=method,
            stages=stages,
            params=params,
            method_params=method_params,
            trace=trace,
            progress=progress,
        )
        result = self.predict(vocabulary, embedding=embedding, rules=rules, pamr_steps=pamr_steps, refine=refine)
        if embedding is not remembered:
            return result
        spent = {name: seconds for name, seconds in result.timings.items() if name not in embedding.timings}
        spent["total"] = sum(seconds for name, seconds in spent.items() if name != "total")
        return replace(result, timings=spent, image_side_reused=True)
