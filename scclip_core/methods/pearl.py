"""PEARL (CVPR'26, PGSmall/PEARL): in the last block, the keys are rotated toward the queries by a Procrustes step
(Newton-Schulz polar factor of the centred cross-covariance) and attended to with a small key-key term, no residual,
no feed-forward network; then its text-aware Laplacian propagation (`scclip_core.tlp`) refines the logits.

The attention operations here work on (B, heads, T, d) tensors, CLS first, batched over windows, in float32 even for
float16 inputs, as the official code computes them. Torch is imported when they run, so listing methods does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import TLP, TlpSettings, check_range
from ..errors import InputError
from . import naclip
from .base import LastBlockOutput, MethodSpec, Published

if TYPE_CHECKING:
    from torch import Tensor

    from ..config import Variant
    from ..encoder import SharedPass

_WEIGHT_EPSILON = 1e-6
"""Added to the sum of the q-norm weights before normalising them."""
_POLAR_FLOOR = 1e-6
"""Lower bound of ||M^T M||_F, the scale the Newton-Schulz iteration divides by."""
_POLAR_RIDGE = 1e-6
"""Added to the diagonal of the scaled M^T M before the Newton-Schulz iteration."""


def _centred(query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """q and k (float32) minus their means weighted by the q norms, the CLS token weighing 0."""
    query, key = query.float(), key.float()
    weights = query.norm(dim=-1, keepdim=True)
    weights[..., 0, :] = 0
    weights = weights / (weights.sum(dim=-2, keepdim=True) + _WEIGHT_EPSILON)
    query_mean = (weights * query).sum(dim=-2, keepdim=True)
    key_mean = (weights * key).sum(dim=-2, keepdim=True)
    return query - query_mean, key - key_mean


def _polar_factor(cross: Tensor, iterations: int) -> Tensor:
    """M (M^T M)^-1/2 by `iterations` fixed Newton-Schulz steps, no tolerance (so not orthogonal in general)."""
    import torch

    gram = cross.transpose(-2, -1) @ cross
    scale = torch.linalg.matrix_norm(gram).clamp_min(_POLAR_FLOOR)[..., None, None]
    identity = torch.eye(cross.shape[-1], dtype=cross.dtype, device=cross.device)
    y = gram / scale + _POLAR_RIDGE * identity
    z = identity.expand_as(gram)
    for _ in range(iterations):
        step = (3 * identity - z @ y) / 2
        y = y @ step
        z = step @ z
    return cross @ z / scale.sqrt()


def _alignment(query: Tensor, key: Tensor, iterations: int) -> tuple[Tensor, Tensor, Tensor]:
    """M, R and the centred keys k_c (see `procrustes_alignment`)."""
    query_centred, key_centred = _centred(query, key)
    cross = key_centred.transpose(-2, -1) @ query_centred
    return cross, _polar_factor(cross, iterations), key_centred


def procrustes_alignment(query: Tensor, key: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """PEARL's alignment of the keys to the queries, q and k (B, heads, T, d) CLS first -> (M, R), each
    (B, heads, d, d), float32: M = k_c^T q_c of the centred keys and queries, R its Newton-Schulz polar factor."""
    cross, rotation, _ = _alignment(query, key, iterations)
    return cross, rotation


def aligned_weights(query: Tensor, key: Tensor, alpha_kk: float, iterations: int) -> Tensor:
    """PEARL's attention weights (B, heads, T, T) float32: softmax(s q (k R)^T + alpha_kk s k_c k_c^T) with
    s = d^-1/2, q and k uncentred in the first term, the centred keys in the second."""
    _, rotation, key_centred = _alignment(query, key, iterations)
    scale = query.shape[-1] ** -0.5
    query32, key32 = query.float(), key.float()
    logits = scale * (query32 @ (key32 @ rotation).transpose(-2, -1))
    logits = logits + alpha_kk * scale * (key_centred @ key_centred.transpose(-2, -1))
    return logits.softmax(dim=-1)


def aligned_attention(query: Tensor, key: Tensor, value: Tensor, alpha_kk: float, iterations: int) -> Tensor:
    """PEARL's attended heads (B, heads, T, d) in value's dtype: `aligned_weights` applied to v in float32."""
    return (aligned_weights(query, key, alpha_kk, iterations) @ value.float()).to(value.dtype)


@dataclass(frozen=True)
class PearlParams:
    """PEARL's attention settings; the defaults are those of its main results (pearl_ovss.py; ADE20K and Cityscapes
    use alpha_kk 0.3). TLP's settings (the grid) are the refinement's: `SegmenterConfig.tlp`."""

    alpha_kk: float = 0.08
    """Weight of the centred key-key term added to the aligned query-key logits."""
    polar_iterations: int = 5
    """Newton-Schulz iterations of the polar factor (fixed, no tolerance)."""

    def __post_init__(self) -> None:
        check_range("alpha_kk", self.alpha_kk, 0.0, math.inf)
        if isinstance(self.polar_iterations, bool) or not isinstance(self.polar_iterations, int):
            raise InputError(f"polar_iterations must be a whole number, not {self.polar_iterations!r}")
        if self.polar_iterations < 0:
            raise InputError(f"polar_iterations must be >= 0, not {self.polar_iterations}")


PROTOCOL = naclip.PROTOCOL.extended(
    source="PGSmall/PEARL (commit c26062b): pearl_ovss.py defaults, run.sh (TLP on) and configs/cfg_*.py, on "
    "NACLIP's framework and settings except PAMR (off: TLP instead) and COCO-Stuff's short side (336)",
    common=dict(pamr_steps=0, method_params=PearlParams(), tlp=TlpSettings()),
    per_dataset={
        "coco_stuff164k": dict(short_side=336),
        "cityscapes": dict(method_params=PearlParams(alpha_kk=0.3), tlp=TlpSettings(grid=224)),
        "ade20k": dict(method_params=PearlParams(alpha_kk=0.3)),
    },
)


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """PEARL: the keys aligned to the queries by a Procrustes step, attended with a small key-key term, no
    residual, no feed-forward network."""
    from ..encoder import PENULTIMATE, out_proj, patches_only

    params = variant.params
    assert isinstance(params, PearlParams)
    query, key, value = (shared.projection(PENULTIMATE, part) for part in "qkv")
    weights = aligned_weights(query, key, params.alpha_kk, params.polar_iterations)
    heads = (weights @ value.float()).to(value.dtype)
    return patches_only(out_proj(shared.block, heads), weights if shared.trace else None)


SPEC = MethodSpec(
    name="pearl",
    label="PEARL",
    summary=(
        "PEARL: the keys rotated toward the queries by a Procrustes step plus a small key-key term, no "
        "residual or FFN; then TLP on the logits"
    ),
    repository="PGSmall/PEARL",
    commit="c26062b",
    venue="CVPR'26",
    year=2026,
    last_block=last_block,
    published=(Published((64.1, 35.1, 37.3, 86.9, 38.6, 26.3, 37.6, 19.4), 43.2),),
    params=PearlParams(),
    refinements=(TLP,),
    protocol=PROTOCOL,
)
