"""Vanilla CLIP: its own last block, the baseline every training-free method starts from. It has no repository
of its own, so it runs under SCLIP's protocol, the framework that ClearCLIP and NACLIP are built on."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from . import sclip
from .base import LastBlockOutput, MethodSpec, Published

if TYPE_CHECKING:
    from ..config import Variant
    from ..encoder import SharedPass


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """CLIP's own last block: the baseline every training-free method starts from."""
    from ..encoder import patches_only

    return patches_only(*shared.vanilla())


SPEC = MethodSpec(
    name="clip",
    label="CLIP (vanilla)",
    summary="CLIP's own last block: the baseline every training-free method starts from",
    repository=None,
    commit=None,
    venue="ICML'21",
    year=2021,
    last_block=last_block,
    published=(Published((16.2, 7.7, 5.5, 41.8, 9.2, 4.4, 5.5, 2.1), 11.6),),
    protocol=dataclasses.replace(
        sclip.PROTOCOL, source="SCLIP's settings (CLIP has no repository of its own), " + sclip.PROTOCOL.source
    ),
)
