"""ClearCLIP (Lan et al., ECCV'24): query-query attention in the last block, no residual, no feed-forward
network."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import LastBlockOutput, MethodProtocol, MethodSpec, Published

if TYPE_CHECKING:
    from ..config import Variant
    from ..encoder import SharedPass


PROTOCOL = MethodProtocol(
    source="mc-lan/ClearCLIP: clearclip_segmentor.py defaults (open_clip, fp16) and configs/cfg_*.py; ADE20K and "
    "COCO-Stuff have no config there, so they get its defaults and the 448 short side of all its configs",
    common=dict(
        short_side=448,
        crop=448,
        stride=224,
        logit_scale=50.0,
        prob_threshold=0.0,
        area_threshold=None,
        pamr_steps=0,
        precision="fp16",
    ),
    per_dataset={
        "voc21": dict(prob_threshold=0.5),
        "context60": dict(prob_threshold=0.15),
        "coco_object": dict(prob_threshold=0.4),
        "cityscapes": dict(crop=224),
    },
)


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """ClearCLIP: query-query attention, no residual, no feed-forward network."""
    from ..encoder import PENULTIMATE, attend, out_proj, patches_only

    query, value = shared.projection(PENULTIMATE, "q"), shared.projection(PENULTIMATE, "v")
    heads, weights = attend(query, query, value, None, shared.trace)
    return patches_only(out_proj(shared.block, heads), weights)


SPEC = MethodSpec(
    name="clearclip",
    label="ClearCLIP",
    summary="ClearCLIP: query-query attention, no residual or FFN",
    repository="mc-lan/ClearCLIP",
    commit=None,
    venue="ECCV'24",
    year=2024,
    last_block=last_block,
    published=(Published((51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7), 38.1),),
    protocol=PROTOCOL,
)
