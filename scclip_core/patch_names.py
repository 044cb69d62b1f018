"""What is this patch? The names whose text embeddings are closest to one patch embedding.

A `PatchNamer` embeds a vocabulary once (by default the union of the vocabulary presets) and ranks it by cosine
similarity against a patch, optionally with extra names such as the visitor's classes. `locate_patch` maps a point
of the input image to the window and grid cell of an `ImageEmbedding`; `PatchNamer.name_point` names that patch in
a calibrated embedding and in vanilla CLIP's, either from a second embedding of the same image or by encoding the
one window on demand (`window_embeddings`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .encoder import encode_dense_variants
from .errors import InputError
from .images import cap_size
from .presets import Variant
from .segmenter import ImageEmbedding, Segmenter, Window, _fingerprint
from .text import TextEncoder
from .vocabularies import builtin_vocabulary

VANILLA = Variant("clip")


@dataclass(frozen=True)
class NameMatch:
    """One name and the cosine similarity of its text embedding to the patch embedding."""

    name: str
    cosine: float


@dataclass(frozen=True)
class PatchLocation:
    """Where a point fell: the window (index into `ImageEmbedding.windows`) and its grid cell.

    Boxes are (y0, x0, y1, x1) in input-image pixels, like the windows; near the image's edge they may reach
    past it, where the engine padded the canvas.
    """

    window: int
    row: int
    col: int
    grid: tuple[int, int]
    window_box: Window
    patch_box: Window

    @property
    def patch_index(self) -> int:
        """The flat token index in the window (row-major), as the encoder's traces count patches."""
        return self.row * self.grid[1] + self.col


@dataclass(frozen=True)
class PointNames:
    """The top names of one patch in the calibrated embedding and in vanilla CLIP's."""

    location: PatchLocation
    calibrated: list[NameMatch]
    vanilla: list[NameMatch]


def unique_names(names: Iterable[str], exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """Names with whitespace collapsed, each once (compared without case), empty ones and `exclude` left out."""
    seen = {" ".join(name.split()).lower() for name in exclude}
    kept = []
    for name in names:
        cleaned = " ".join(str(name).split())
        if cleaned and cleaned.lower() not in seen:
            seen.add(cleaned.lower())
            kept.append(cleaned)
    return tuple(kept)


def top_names(patch_embedding: Tensor, text_embeddings: Tensor, names: Sequence[str], k: int = 10) -> list[NameMatch]:
    """The `k` names whose embeddings (V, E) are most cosine-similar to `patch_embedding` (E,), best first.

    Both sides are normalised here, in float32 on the CPU; equal cosines keep the order of `names`.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, not {k!r}")
    if patch_embedding.ndim != 1:
        raise InputError(f"the patch embedding must be one vector (E,), not {tuple(patch_embedding.shape)}")
    if text_embeddings.ndim != 2 or text_embeddings.shape[1] != patch_embedding.shape[0]:
        raise InputError(
            f"text embeddings {tuple(text_embeddings.shape)} do not match the patch embedding "
            f"{tuple(patch_embedding.shape)}: need (V, {patch_embedding.shape[0]})"
        )
    if len(names) != text_embeddings.shape[0]:
        raise InputError(f"{len(names)} names for {text_embeddings.shape[0]} text embeddings")
    with torch.inference_mode():
        patch = patch_embedding.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(patch).all()):
            raise InputError("the patch embedding has non-finite values")
        text = F.normalize(text_embeddings.detach().to("cpu", torch.float32), dim=1)
        cosines = text @ F.normalize(patch, dim=0)
        order = torch.sort(cosines, descending=True, stable=True).indices[:k]
    return [NameMatch(names[index], float(cosines[index])) for index in order.tolist()]


def _to_pixels(box: tuple[float, float, float, float], scale_y: float, scale_x: float) -> Window:
    y0, x0 = round(box[0] / scale_y), round(box[1] / scale_x)
    return y0, x0, max(round(box[2] / scale_y), y0 + 1), max(round(box[3] / scale_x), x0 + 1)


def locate_patch(embedding: ImageEmbedding, x: float, y: float) -> PatchLocation:
    """The patch under pixel (x, y) of the input image (`embedding.image`): among the windows that contain the
    pixel's centre on the resized canvas, the one whose centre is nearest (the first on a tie)."""
    height, width = embedding.image.shape[:2]
    if not (0 <= x < width and 0 <= y < height):
        raise InputError(f"point x={x}, y={y} is outside the {width}x{height} image")
    scale_y, scale_x = embedding.resized_size[0] / height, embedding.resized_size[1] / width
    v, u = (y + 0.5) * scale_y, (x + 0.5) * scale_x
    inside = [i for i, (y0, x0, y1, x1) in enumerate(embedding.windows) if y0 <= v < y1 and x0 <= u < x1]
    if not inside:
        raise InputError(f"no window of this embedding covers x={x}, y={y}")

    def distance(index: int) -> float:
        y0, x0, y1, x1 = embedding.windows[index]
        return ((y0 + y1) / 2 - v) ** 2 + ((x0 + x1) / 2 - u) ** 2

    window = min(inside, key=distance)
    y0, x0, y1, x1 = embedding.windows[window]
    rows, cols = (int(size) for size in embedding.embeddings.shape[1:3])
    cell_height, cell_width = (y1 - y0) / rows, (x1 - x0) / cols
    row = min(math.floor((v - y0) / cell_height), rows - 1)
    col = min(math.floor((u - x0) / cell_width), cols - 1)
    cell = (y0 + row * cell_height, x0 + col * cell_width, y0 + (row + 1) * cell_height, x0 + (col + 1) * cell_width)
    return PatchLocation(
        window=window,
        row=row,
        col=col,
        grid=(rows, cols),
        window_box=_to_pixels((y0, x0, y1, x1), scale_y, scale_x),
        patch_box=_to_pixels(cell, scale_y, scale_x),
    )


def window_embeddings(
    segmenter: Segmenter, embedding: ImageEmbedding, window: int, variants: Sequence[Variant] = (VANILLA,)
) -> Tensor:
    """One window of `embedding`'s image encoded under each of `variants` (one shared frozen pass):
    (len(variants), h, w, E) normalised float32, equal to what `set_image_variants` gives for that window.

    `segmenter` must be the one (model and config) that made `embedding`.
    """
    if embedding.model_key != segmenter.model.key:
        raise InputError("this image embedding was computed with other weights than the segmenter's")
    if not 0 <= window < len(embedding.windows):
        raise InputError(f"window {window} does not exist; the embedding has {len(embedding.windows)}")
    if not variants:
        raise InputError("give at least one variant")
    if _fingerprint(embedding.image) != embedding.fingerprint:
        raise InputError("the embedding's image is not the one it was computed from")
    rgb, _ = cap_size(embedding.image, segmenter.config.max_input_side)
    resized, windows, crops = segmenter._windows(rgb)
    if resized != tuple(embedding.resized_size) or windows != list(embedding.windows):
        raise InputError("this image embedding was computed with other resize or window settings")
    result = encode_dense_variants(
        segmenter.model.visual,
        crops[window : window + 1],
        variants,
        layers=segmenter.model.preset,
        params=embedding.params,
    )
    with torch.inference_mode():
        return torch.stack([F.normalize(output.patch_embeddings[0].float(), dim=-1) for output in result.outputs])


def _check_same_geometry(calibrated: ImageEmbedding, vanilla: ImageEmbedding) -> None:
    same = (
        calibrated.fingerprint == vanilla.fingerprint
        and calibrated.model_key == vanilla.model_key
        and tuple(calibrated.resized_size) == tuple(vanilla.resized_size)
        and list(calibrated.windows) == list(vanilla.windows)
        and calibrated.embeddings.shape == vanilla.embeddings.shape
    )
    if not same:
        raise InputError("the two embeddings are not of the same image, weights and windows")


class PatchNamer:
    """Names patches from a fixed vocabulary, embedded once with `text` (default: `builtin_vocabulary()`).

    Extra names (e.g. the visitor's classes, `Vocabulary.queries`) are added per call; they go through `text`'s
    cache, so names already embedded for a segmentation cost nothing. Safe to share between threads.
    """

    def __init__(self, text: TextEncoder, names: Sequence[str] | None = None) -> None:
        self.text = text
        self.names = unique_names(builtin_vocabulary() if names is None else names)
        if not self.names:
            raise InputError("the vocabulary to name patches from is empty")
        self._embeddings: Tensor | None = None
        self._lock = threading.Lock()

    @property
    def embeddings(self) -> Tensor:
        """(len(names), E) float32 unit vectors on the CPU, computed on first use."""
        with self._lock:
            if self._embeddings is None:
                self._embeddings = self.text.embed(self.names).float().cpu()
            return self._embeddings

    def vocabulary(self, extra_names: Sequence[str] = ()) -> tuple[tuple[str, ...], Tensor]:
        """The names and their embeddings with `extra_names` appended (those not already in the vocabulary)."""
        extra = unique_names(extra_names, exclude=self.names)
        if not extra:
            return self.names, self.embeddings
        extra_embeddings = self.text.embed(extra).float().cpu()
        return self.names + extra, torch.cat([self.embeddings, extra_embeddings])

    def name(self, patch_embedding: Tensor, k: int = 10, extra_names: Sequence[str] = ()) -> list[NameMatch]:
        """The `k` best names for one patch embedding (E,)."""
        names, embeddings = self.vocabulary(extra_names)
        return top_names(patch_embedding, embeddings, names, k)

    def name_point(
        self,
        calibrated: ImageEmbedding,
        vanilla: ImageEmbedding | Segmenter,
        x: float,
        y: float,
        *,
        k: int = 10,
        extra_names: Sequence[str] = (),
    ) -> PointNames:
        """The top `k` names of the patch under pixel (x, y) in `calibrated` and in vanilla CLIP.

        `vanilla` is vanilla CLIP's embedding of the same image and windows (e.g. from one
        `set_image_variants(image, [Variant(), Variant("clip")])` pass), or the segmenter that made `calibrated`,
        which then encodes just the window under the point (one window's backbone pass).
        """
        if calibrated.model_key != self.text.model.key:
            raise InputError("this image embedding was computed with other weights than the namer's text encoder")
        location = locate_patch(calibrated, x, y)
        if isinstance(vanilla, Segmenter):
            vanilla_patch = window_embeddings(vanilla, calibrated, location.window)[0, location.row, location.col]
        else:
            _check_same_geometry(calibrated, vanilla)
            vanilla_patch = vanilla.embeddings[location.window, location.row, location.col]
        calibrated_patch = calibrated.embeddings[location.window, location.row, location.col]
        names, embeddings = self.vocabulary(extra_names)
        return PointNames(
            location=location,
            calibrated=top_names(calibrated_patch, embeddings, names, k),
            vanilla=top_names(vanilla_patch, embeddings, names, k),
        )
