"""SC-CLIP (Bai et al.): the last block on anomaly-resolved, pre-aggregated penultimate tokens with an attention
prior, a multi-level second pass and post-aggregation. Its own protocol is the default one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import LastBlockOutput, MethodSpec, Published

if TYPE_CHECKING:
    from ..config import Variant
    from ..encoder import SharedPass


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """SC-CLIP's steps 3-9 up to (not including) `ln_post`: (B, N, D) in the backbone dtype, and the calibrated
    attention (heads averaged) when tracing.

    The first pass (on the calibrated penultimate tokens) and the multi-level pass run through one batched
    attention; each adds back its own CLS token, and the post-aggregation (linear) is applied once to their sum.
    """
    import torch

    from ..calibration import aggregate
    from ..encoder import MULTI_LEVEL, calibrated_source

    stages = variant.stages
    first = calibrated_source(stages.anomaly, stages.pre_aggregation)
    prior_from = stages.anomaly if stages.attention_prior else None
    cls_tokens = {first: shared.features.penultimate[:, 0]}
    if stages.multi_level:
        cls_tokens[MULTI_LEVEL] = shared.features.multi_level()[:, 0]
    passes = shared.attention_only(list(cls_tokens), prior_from)
    result = torch.stack(
        [
            output + shared.layers.res_cls * cls.float().unsqueeze(1)
            for (output, _), cls in zip(passes, cls_tokens.values())
        ]
    ).sum(dim=0)
    if stages.post_aggregation:
        result = aggregate(shared.post_weights(), result)
    result = result.to(shared.dtype)
    first_map = passes[0][1]
    if first_map is None:
        return LastBlockOutput(result, None)
    key_mean = first_map.float().mean(dim=1)
    if prior_from is None:
        return LastBlockOutput(result, key_mean)
    mix = shared.params.prior_mix
    return LastBlockOutput(result, mix * shared.prior(prior_from) + (1 - mix) * key_mean)


SPEC = MethodSpec(
    name="sc-clip",
    label="SC-CLIP",
    summary=(
        "SC-CLIP: the last block on anomaly-resolved, pre-aggregated penultimate tokens with a mid-layer "
        "attention prior, a multi-level second pass and post-aggregation"
    ),
    repository="SuleBai/SC-CLIP",
    commit=None,
    venue="arXiv'24",
    year=2024,
    last_block=last_block,
    published=(Published((64.6, 36.8, 37.7, 84.3, 40.1, 26.6, 41.0, 20.1), 43.9),),
    settings=("beta", "prior_temperature", "prior_mix", "lof_k", "contamination", "detector"),
    stages=True,
)
