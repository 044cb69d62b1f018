"""SCLIP (Wang et al., ECCV'24): query-query plus key-key attention inside the full residual last block."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import LastBlockOutput, MethodProtocol, MethodSpec, Published

if TYPE_CHECKING:
    from ..config import Variant
    from ..encoder import SharedPass


PROTOCOL = MethodProtocol(
    source="wangf3014/SCLIP: clip_segmentor.py defaults and configs/cfg_*.py",
    common=dict(
        short_side=336,
        crop=224,
        stride=112,
        logit_scale=40.0,
        prob_threshold=0.0,
        area_threshold=None,
        pamr_steps=0,
        precision="fp16",
    ),
    per_dataset={
        "voc21": dict(logit_scale=65.0, prob_threshold=0.1, area_threshold=0.1),
        "context60": dict(logit_scale=50.0, prob_threshold=0.1),
        "coco_object": dict(logit_scale=50.0, prob_threshold=0.1),
        "coco_stuff164k": dict(short_side=448),
        "cityscapes": dict(short_side=560),
    },
)


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """SCLIP: query-query plus key-key attention inside the full residual block."""
    from ..encoder import PENULTIMATE, attend, patches_only, residual_block

    query, key, value = (shared.projection(PENULTIMATE, part) for part in "qkv")
    query_out, query_map = attend(query, query, value, None, shared.trace)
    key_out, key_map = attend(key, key, value, None, shared.trace)
    tokens = residual_block(shared.block, shared.features.penultimate, query_out + key_out)
    return patches_only(tokens, None if query_map is None or key_map is None else query_map + key_map)


SPEC = MethodSpec(
    name="sclip",
    label="SCLIP",
    summary="SCLIP: query-query plus key-key attention, residual and FFN kept",
    repository="wangf3014/SCLIP",
    commit=None,
    venue="ECCV'24",
    year=2024,
    last_block=last_block,
    published=(Published((59.1, 30.4, 30.5, 80.4, 34.2, 22.4, 32.2, 16.1), 38.2),),
    protocol=PROTOCOL,
)
