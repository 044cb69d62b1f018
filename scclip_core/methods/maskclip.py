"""MaskCLIP (Zhou et al., ECCV'22): the last block's value embeddings through its output projection, attention
replaced by the identity. Its published row is ClearCLIP's re-implementation, so it runs under ClearCLIP's
protocol."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from . import clearclip
from .base import LastBlockOutput, MethodSpec, Published

if TYPE_CHECKING:
    from ..config import Variant
    from ..encoder import SharedPass


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """MaskCLIP: the value embeddings through the output projection (attention replaced by the identity)."""
    import torch

    from ..encoder import PENULTIMATE, out_proj, patches_only

    x = shared.features.penultimate
    weights = torch.eye(x.shape[1], device=x.device).expand(x.shape[0], 1, -1, -1) if shared.trace else None
    return patches_only(out_proj(shared.block, shared.projection(PENULTIMATE, "v")), weights)


SPEC = MethodSpec(
    name="maskclip",
    label="MaskCLIP",
    summary="MaskCLIP: the value embeddings through the output projection",
    repository="mc-lan/ClearCLIP",
    commit=None,
    venue="ECCV'22",
    year=2022,
    last_block=last_block,
    published=(Published((38.8, 23.6, 20.6, 74.9, 26.4, 16.4, 12.6, 9.8), 27.9),),
    protocol=dataclasses.replace(
        clearclip.PROTOCOL, source="ClearCLIP's re-implementation, " + clearclip.PROTOCOL.source
    ),
)
