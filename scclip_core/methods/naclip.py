"""NACLIP (Hajimiri et al., WACV'25): key-key attention biased by a Gaussian neighbourhood in the last block, no
residual, no feed-forward network; PAMR on the logits in its own protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import PAMR_STEPS
from .base import LastBlockOutput, MethodProtocol, MethodSpec, Published

if TYPE_CHECKING:
    from ..config import Variant
    from ..encoder import SharedPass


PROTOCOL = MethodProtocol(
    source="sinahmr/NACLIP (commit defb7c9): naclip.py defaults (PAMR 10 steps, dilations 8 and 16) and "
    "configs/cfg_*.py",
    common=dict(
        short_side=336,
        crop=224,
        stride=112,
        logit_scale=40.0,
        prob_threshold=0.0,
        area_threshold=None,
        pamr_steps=PAMR_STEPS,
        precision="fp16",
    ),
    per_dataset={
        "voc21": dict(stride=None, prob_threshold=0.1),
        "voc20": dict(stride=None),
        "context60": dict(prob_threshold=0.1),
        "coco_object": dict(prob_threshold=0.1),
        "coco_stuff164k": dict(short_side=448),
        "cityscapes": dict(short_side=560),
    },
)


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """NACLIP: key-key attention biased by a Gaussian neighbourhood, no residual, no feed-forward network."""
    import torch

    from ..calibration import gaussian_neighbourhood
    from ..encoder import PENULTIMATE, attend, out_proj, patches_only

    num_tokens = shared.features.penultimate.shape[1]
    device = shared.features.penultimate.device
    bias = torch.zeros(num_tokens, num_tokens, device=device)
    bias[1:, 1:] = gaussian_neighbourhood(shared.grid, shared.params.naclip_sigma, device)
    key, value = shared.projection(PENULTIMATE, "k"), shared.projection(PENULTIMATE, "v")
    heads, weights = attend(key, key, value, bias, shared.trace)
    return patches_only(out_proj(shared.block, heads), weights)


SPEC = MethodSpec(
    name="naclip",
    label="NACLIP",
    summary=(
        "NACLIP: key-key attention plus a Gaussian neighbourhood prior, no residual or FFN; PAMR on the "
        "logits in its own protocol"
    ),
    repository="sinahmr/NACLIP",
    commit="defb7c9",
    venue="WACV'25",
    year=2025,
    last_block=last_block,
    published=(
        Published((58.9, 32.2, 33.2, 79.7, 35.2, 23.3, 35.5, 17.4), 39.4, flags="--pamr-steps 0", note="no PAMR"),
        Published((64.07, 34.99, 36.19, 83.03, 38.35, 25.69, 38.27, 19.05), 42.46, note="PAMR"),
    ),
    settings=("naclip_sigma",),
    protocol=PROTOCOL,
)
