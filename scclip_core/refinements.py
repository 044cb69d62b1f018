"""Refinements of the stitched logits that any method can use, a small registry: PAMR (pixel-adaptive mask
refinement, NACLIP's post-processing) and TLP (PEARL's text-aware Laplacian propagation).

Each takes the working-size logits (Q, h, w), the normalised network input (3, h, w) as its guide, the query
embeddings (Q, E) and the output size, and gives logits at any size (the scores resample them bilinearly to the
output size). Free of torch until one runs, so the command line can list them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .config import PAMR, PAMR_STEPS, TLP, SegmenterConfig
from .errors import InputError

if TYPE_CHECKING:
    from torch import Tensor


class RefineInput(NamedTuple):
    """What a refinement reads: logits (Q, h, w), the normalised network input (3, h', w'), the query embeddings
    (Q, E) and the (H, W) the labels come out at."""

    logits: Tensor
    guide: Tensor
    text: Tensor
    out_size: tuple[int, int]


@dataclass(frozen=True)
class Refinement:
    """One refinement: its name (as `--refine` spells it), display label, where it comes from, and the function
    that applies it with a `SegmenterConfig`'s settings."""

    name: str
    label: str
    source: str
    apply: Callable[[RefineInput, SegmenterConfig], Tensor]


def _pamr(inputs: RefineInput, config: SegmenterConfig) -> Tensor:
    """PAMR at the output size on the logits and the guide resized there, as NACLIP's and ResCLIP's code does."""
    import torch.nn.functional as F

    from .pamr import pamr_refine

    logits = F.interpolate(inputs.logits[None], size=inputs.out_size, mode="bilinear", align_corners=False)[0]
    guide = F.interpolate(inputs.guide[None], size=inputs.out_size, mode="bilinear", align_corners=False)[0]
    return pamr_refine(logits, guide, config.pamr_steps, config.pamr_dilations)


def _tlp(inputs: RefineInput, config: SegmenterConfig) -> Tensor:
    """TLP on a grid of about `config.tlp.grid` cells per side, as PEARL's code does at the output size."""
    from .tlp import propagate

    return propagate(inputs.logits, inputs.guide, inputs.text, inputs.out_size, config.tlp)


REFINEMENTS: dict[str, Refinement] = {
    refinement.name: refinement
    for refinement in (
        Refinement(PAMR, "PAMR", "NACLIP (Hajimiri et al., WACV'25), after Araslanov and Roth (CVPR'20)", _pamr),
        Refinement(TLP, "TLP", "PEARL's text-aware Laplacian propagation (CVPR'26)", _tlp),
    )
}
"""Each refinement by name, in the order they are listed everywhere."""

NO_REFINEMENT = "none"
"""How the command line and the demo say that no refinement runs (not even the method's own)."""


REFINE_CHOICES: tuple[str, ...] = (*REFINEMENTS, NO_REFINEMENT)
"""What `--refine` accepts."""


def refine_from_choices(choices: Sequence[str] | None) -> tuple[str, ...] | None:
    """Refinements from the command line's repeated `--refine` (None: not given, the method's own); `none` must
    stand alone and means no refinement at all."""
    if choices is None:
        return None
    if NO_REFINEMENT in choices:
        if len(choices) > 1:
            raise InputError(f"--refine {NO_REFINEMENT} cannot be combined with other refinements ({list(choices)})")
        return ()
    return tuple(refinement_named(choice) for choice in choices)


def pamr_steps_for(refine: tuple[str, ...] | None, steps: int | None) -> int:
    """The PAMR steps a front end asks for: those given, else NACLIP's when PAMR is named, else none."""
    if steps is not None:
        return steps
    return PAMR_STEPS if refine is not None and PAMR in refine else 0


def refinement_named(name: object) -> str:
    """`name` as a registered refinement; raises InputError listing them (the one check of a refinement name)."""
    if isinstance(name, str) and name in REFINEMENTS:
        return name
    raise InputError(f"unknown refinement {name!r}; choose from {list(REFINEMENTS)}")
