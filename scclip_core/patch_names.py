"""What is this patch? The names whose text embeddings are closest to one patch embedding.

A `PatchNamer` embeds a vocabulary once (by default the union of the vocabulary presets) and ranks it by cosine
similarity against a patch, optionally with extra names such as the visitor's classes. `PatchNamer.name_point`
names the patch under a point of a traced image embedding twice: as the method computed it, and as vanilla CLIP
did (the trace carries CLIP's own last-block patch embeddings), so the difference calibration makes is visible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError
from .segmenter import ImageEmbedding, PatchLocation
from .text import TextEncoder
from .vocabularies import builtin_vocabulary


@dataclass(frozen=True)
class NameMatch:
    """One name and the cosine similarity of its text embedding to the patch embedding."""

    name: str
    cosine: float


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
        self, embedding: ImageEmbedding, x: int, y: int, *, k: int = 10, extra_names: Sequence[str] = ()
    ) -> PointNames:
        """The top `k` names of the patch under input pixel (x, y) in `embedding` and in vanilla CLIP.

        `embedding` must be traced (`Segmenter.set_image(..., trace=True)`): its trace holds vanilla CLIP's patch
        embeddings of the same windows.
        """
        if embedding.key.model_key != self.text.model.key:
            raise InputError("this image embedding was computed with other weights than the namer's text encoder")
        if not embedding.trace:
            raise InputError("naming a patch needs a traced image embedding: set_image(..., trace=True)")
        location = embedding.locate_patch(x, y)
        calibrated_patch = embedding.embeddings[location.window, location.row, location.column]
        vanilla_patch = embedding.trace[location.window].vanilla_embeddings[location.index]
        names, embeddings = self.vocabulary(extra_names)
        return PointNames(
            location=location,
            calibrated=top_names(calibrated_patch, embeddings, names, k),
            vanilla=top_names(vanilla_patch, embeddings, names, k),
        )
