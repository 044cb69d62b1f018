"""ResCLIP (Yang et al., CVPR'25): residual attention for training-free open-vocabulary segmentation.

The last block runs without residual or feed-forward network, with NACLIP's key-key attention and Gaussian
neighbourhood prior, mixed with two extra attentions: RCS (residual cross-correlation self-attention), the mean
attention map of intermediate blocks, and SFR (semantic feedback refinement), a patch-to-patch matrix built
from a first pass's own predictions (patches of the same predicted query attend to each other, less so when the
straight path between them leaves that query). The image side therefore depends on the class text.

This module holds its pure tensor operations, batched over windows (leading B), in float32 whatever the backbone
precision, as the official code computes them (yvhangyang/ResCLIP, commit 0e085f7).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import PAMR_DILATIONS, PAMR_STEPS, check_pamr_settings, check_range
from ..errors import InputError
from . import naclip
from .base import LastBlockOutput, MethodSpec, Published

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ..config import Variant
    from ..encoder import SharedPass

_CHUNK_ELEMENTS = 1 << 22
"""How many (window, patch, patch) entries the path check of `feedback_matrix` handles at once."""
_ROW_EPSILON = 1e-8


def patch_categories(probs: Tensor, threshold: float, patch: int) -> Tensor:
    """The most frequent per-pixel query of each patch x patch block, (B, Q, Hc, Wc) -> int64 (B, Hc//p, Wc//p).

    Each pixel takes its most probable query (the first on a tie), or query 0 where that probability is below
    `threshold`. Blocks tile the window from the top-left (a remainder is dropped); a count tie goes to the
    smallest query index, as `torch.mode` decides on the CPU (counted here, so it holds on every device).
    """
    import torch

    if probs.ndim != 4:
        raise InputError(f"probs must be (B, Q, H, W), got {tuple(probs.shape)}")
    batch, queries, height, width = probs.shape
    if patch < 1 or min(height, width) < patch:
        raise InputError(f"a {height}x{width} window holds no {patch}x{patch} patch")
    rows, cols = height // patch, width // patch
    best, pixel_categories = probs.float().max(dim=1)
    pixel_categories = pixel_categories.masked_fill(best < threshold, 0)[:, : rows * patch, : cols * patch]
    blocks = pixel_categories.reshape(batch, rows, patch, cols, patch).permute(0, 1, 3, 2, 4)
    blocks = blocks.reshape(batch, rows * cols, patch * patch)
    counts = torch.zeros(batch, rows * cols, queries, dtype=torch.int32, device=probs.device)
    counts.scatter_add_(2, blocks, torch.ones_like(blocks, dtype=torch.int32))
    return counts.argmax(dim=2).reshape(batch, rows, cols)


def _grid_positions(grid: tuple[int, int], device: torch.device) -> Tensor:
    """(N, 2) int64 (row, column) of every patch of a row-major grid."""
    import torch

    rows, cols = torch.meshgrid(
        torch.arange(grid[0], device=device), torch.arange(grid[1], device=device), indexing="ij"
    )
    return torch.stack([rows.flatten(), cols.flatten()], dim=1)


def _same_entity_decay(categories: Tensor, grid: tuple[int, int], same: Tensor) -> Tensor:
    """`same` (B, N, N) with every pair whose path check fails multiplied by exp(-d_ij / D).

    The path from i towards j is sampled at round(pos_i (1 - t_s) + pos_j t_s), t = linspace(0, 1, D + 1) in
    float32 with rounding half to even, for s = 0..d_ij only (d_ij the Chebyshev distance of i and j, D its maximum
    over the grid); it is valid when every sample has i's category. Rows are checked a chunk at a time.
    """
    import torch

    batch, num_patches = categories.shape
    longest = max(grid) - 1
    if longest == 0:
        return same
    positions = _grid_positions(grid, categories.device)
    steps = torch.linspace(0, 1, longest + 1, device=categories.device)
    distance = (positions[:, None] - positions[None]).abs().amax(dim=2)
    decay = torch.exp(-distance / longest)
    chunk = max(1, _CHUNK_ELEMENTS // (batch * num_patches))
    ends = positions[None].float()
    out = same.clone()
    for top in range(0, num_patches, chunk):
        bottom = min(num_patches, top + chunk)
        starts = positions[top:bottom, None].float()
        own = categories[:, top:bottom, None]
        valid = torch.ones(batch, bottom - top, num_patches, dtype=torch.bool, device=categories.device)
        for step in range(1, longest + 1):
            points = (starts * (1 - steps[step]) + ends * steps[step]).round().long()
            sampled = categories[:, points[..., 0] * grid[1] + points[..., 1]]
            valid &= (sampled == own) | (distance[top:bottom] < step)
        out[:, top:bottom] = torch.where(valid, same[:, top:bottom], same[:, top:bottom] * decay[top:bottom])
    return out


def _row_blur(matrix: Tensor, sigma: float) -> Tensor:
    """Each row of (B, N, N) `matrix` blurred by a normalised 1-D Gaussian over the flattened index, zero padded.

    The kernel has min(N, int(6 sigma + 1)) taps, one more when that is even, so the rows keep their length.
    """
    import torch
    import torch.nn.functional as F

    batch, num_patches, _ = matrix.shape
    size = min(num_patches, int(6 * sigma + 1))
    size += 1 - size % 2
    offsets = torch.arange(size, device=matrix.device) - size // 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    blurred = F.conv1d(matrix.reshape(-1, 1, num_patches), kernel.view(1, 1, -1), padding=size // 2)
    return blurred.view(batch, num_patches, num_patches)


def feedback_matrix(categories: Tensor, sigma: float, delete_same_entity: bool) -> Tensor:
    """SFR's semantic feedback matrix G from patch categories, (B, rows, cols) -> float32 (B, 1+N, 1+N).

    Patches of the same category get 1 (decayed with distance where `delete_same_entity` finds that the straight
    path between them leaves the category), every row is blurred by a 1-D Gaussian of width `sigma` over the
    flattened patch index, rectified and divided by its sum (+1e-8); the CLS row and column stay 0. G is returned
    before the division by its maximum, which `resclip_attention` does.
    """
    import torch

    if categories.ndim != 3:
        raise InputError(f"categories must be (B, rows, cols), got {tuple(categories.shape)}")
    if sigma <= 0:
        raise InputError(f"sigma must be positive, not {sigma!r}")
    batch, rows, cols = categories.shape
    num_patches = rows * cols
    flat = categories.reshape(batch, num_patches)
    same = (flat[:, :, None] == flat[:, None, :]).float()
    if delete_same_entity:
        same = _same_entity_decay(flat, (rows, cols), same)
    blurred = _row_blur(same, sigma).relu_()
    matrix = torch.zeros(batch, num_patches + 1, num_patches + 1, device=categories.device)
    matrix[:, 1:, 1:] = blurred / (blurred.sum(dim=2, keepdim=True) + _ROW_EPSILON)
    return matrix


def first_pass_probs(
    window_logits: Tensor, crops: Tensor, logit_scale: float, pamr_steps: int, pamr_dilations: tuple[int, ...]
) -> Tensor:
    """The first pass's query probabilities per pixel, (B, Q, rows, cols) logits -> (B, Q, Hc, Wc) float32.

    Bilinear upsampling (align_corners=False) to the window size of `crops` (B, 3, Hc, Wc), PAMR guided by each
    normalised window (`pamr_steps` 0: none), then softmax of `logit_scale` times the logits over the queries.
    """
    import torch
    import torch.nn.functional as F

    from ..pamr import pamr_refine

    if window_logits.ndim != 4 or crops.ndim != 4 or window_logits.shape[0] != crops.shape[0]:
        raise InputError(
            f"need (B, Q, rows, cols) logits and (B, 3, H, W) crops, got {tuple(window_logits.shape)} "
            f"and {tuple(crops.shape)}"
        )
    logits = F.interpolate(window_logits.float(), size=crops.shape[2:], mode="bilinear", align_corners=False)
    refined = torch.stack(
        [pamr_refine(window, crop, pamr_steps, pamr_dilations) for window, crop in zip(logits, crops.float())]
    )
    return (logit_scale * refined).softmax(dim=1)


def resclip_weights(
    key: Tensor,
    grid: tuple[int, int],
    *,
    sigma: float,
    rcs_attention: Tensor | None,
    rcs_weights: tuple[float, float],
    feedback: Tensor | None,
    sfr_weights: tuple[float, float],
) -> Tensor:
    """ResCLIP's last-block attention weights from its keys, (B, heads, T, d) -> float32 (B, heads, T, T).

    Key-key logits d^-1/2 k k^T; with `feedback` G (B, T, T) they become tau_sfr ((1 - lam_sfr) S + lam_sfr G'),
    where G' = G / max(G) per window and both G' and lam_sfr G' are rounded to float16 as the official code does
    (the sum stays float32); then NACLIP's Gaussian prior of width `sigma` between patches is added and the rows
    softmaxed; with `rcs_attention` (B, heads, T, T) the result becomes tau_rcs ((1 - lam_rcs) P + lam_rcs A_rcs).
    `sfr_weights` and `rcs_weights` are (tau, lam); None switches SFR (first pass) or RCS off.
    """
    import torch

    from ..calibration import gaussian_neighbourhood

    if key.ndim != 4:
        raise InputError(f"key must be (B, heads, T, d), got {tuple(key.shape)}")
    batch, _, num_tokens, width = key.shape
    if num_tokens != 1 + grid[0] * grid[1]:
        raise InputError(f"{num_tokens} tokens are not a CLS token and a {grid[0]}x{grid[1]} grid")
    if feedback is not None and feedback.shape != (batch, num_tokens, num_tokens):
        raise InputError(f"feedback must be (B, T, T) = {(batch, num_tokens, num_tokens)}, got {tuple(feedback.shape)}")
    if rcs_attention is not None and rcs_attention.shape != key.shape[:3] + (num_tokens,):
        raise InputError(f"rcs_attention must be (B, heads, T, T), got {tuple(rcs_attention.shape)}")
    keys = key.float()
    logits = (keys @ keys.transpose(-2, -1)) * width**-0.5
    if feedback is not None:
        tau_sfr, lam_sfr = sfr_weights
        feedback = feedback.float()
        scaled = feedback / feedback.amax(dim=(1, 2), keepdim=True)
        weighted = scaled.to(torch.float16) * lam_sfr
        logits = tau_sfr * ((1 - lam_sfr) * logits + weighted.unsqueeze(1))
    prior = torch.zeros(num_tokens, num_tokens, device=key.device)
    prior[1:, 1:] = gaussian_neighbourhood(grid, sigma, key.device)
    weights = (logits + prior).softmax(dim=-1)
    if rcs_attention is not None:
        tau_rcs, lam_rcs = rcs_weights
        weights = tau_rcs * ((1 - lam_rcs) * weights + lam_rcs * rcs_attention.float())
    return weights


def resclip_attention(
    key: Tensor,
    value: Tensor,
    grid: tuple[int, int],
    *,
    sigma: float,
    rcs_attention: Tensor | None,
    rcs_weights: tuple[float, float],
    feedback: Tensor | None,
    sfr_weights: tuple[float, float],
) -> Tensor:
    """ResCLIP's last-block attention (`resclip_weights`) applied to the values, (B, heads, T, d) in value's dtype."""
    if value.ndim != 4 or key.shape[:3] != value.shape[:3]:
        raise InputError(f"key and value must be (B, heads, T, d), got {tuple(key.shape)} and {tuple(value.shape)}")
    weights = resclip_weights(
        key,
        grid,
        sigma=sigma,
        rcs_attention=rcs_attention,
        rcs_weights=rcs_weights,
        feedback=feedback,
        sfr_weights=sfr_weights,
    )
    return (weights @ value.float()).to(value.dtype)


@dataclass(frozen=True)
class ResclipParams:
    """ResCLIP's settings. The official code has no dataset-free defaults; these are its Pascal Context-59 ones
    (configs/cfg_context59.py), the most common RCS/SFR pair, with a threshold that acts on small vocabularies.
    Under `--protocol own` each benchmark takes its own config's values (`PROTOCOL`)."""

    threshold: float = 0.25
    """The first pass's probability below which a pixel joins the first query's category (`temp_thd`)."""
    rcs: bool = True
    """Mix the mean attention of `rcs_blocks` into the last block's (RCS); off is this project's own ablation."""
    rcs_weights: tuple[float, float] = (2.0, 0.4)
    """(tau, lambda) of RCS (`attn_rcs_weights`)."""
    rcs_blocks: tuple[int, ...] = (5, 6, 7, 8)
    """The frozen blocks (0-based) whose attention RCS averages: blocks 6-9 counting from 1."""
    sfr: bool = True
    """Run the second pass steered by the first pass's segmentation (SFR); off is this project's own ablation."""
    sfr_weights: tuple[float, float] = (1.8, 0.7)
    """(tau, lambda) of SFR (`attn_sfr_weights`)."""
    sigma: float = 5.0
    """Width of the Gaussian neighbourhood prior and of SFR's row blur, in patches (`gaussian_std`)."""
    delete_same_entity: bool = True
    """Decay the feedback between same-category patches whose straight path leaves the category."""
    feedback_logit_scale: float = 40.0
    """The logit scale of the first pass's softmax (the segmentor's, 40)."""
    feedback_pamr_steps: int = PAMR_STEPS
    """PAMR steps on the first pass's window logits (always 10 in the official code)."""
    feedback_pamr_dilations: tuple[int, ...] = PAMR_DILATIONS

    def __post_init__(self) -> None:
        check_range("threshold", self.threshold, 0.0, 1.0)
        check_range("sigma", self.sigma, 0.0, math.inf, low_open=True)
        check_range("feedback_logit_scale", self.feedback_logit_scale, 0.0, math.inf, low_open=True)
        for name in ("rcs_weights", "sfr_weights"):
            weights = getattr(self, name)
            if not isinstance(weights, tuple) or len(weights) != 2:
                raise InputError(f"{name} must be a (tau, lambda) pair, not {weights!r}")
            check_range(f"{name} tau", weights[0], 0.0, math.inf, low_open=True)
            check_range(f"{name} lambda", weights[1], 0.0, 1.0)
        if not self.rcs_blocks or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in self.rcs_blocks):
            raise InputError(f"rcs_blocks must be one or more block indices >= 0, not {self.rcs_blocks!r}")
        check_pamr_settings(self.feedback_pamr_steps, self.feedback_pamr_dilations)


def _dataset(threshold: float, rcs: tuple[float, float], sfr: tuple[float, float]) -> ResclipParams:
    return ResclipParams(threshold=threshold, rcs_weights=rcs, sfr_weights=sfr)


PROTOCOL = naclip.PROTOCOL.extended(
    source="yvhangyang/ResCLIP (commit 0e085f7): resclip_segmentor.py defaults and configs/cfg_*.py, on NACLIP's "
    "framework and settings except PAMR (off) and COCO-Stuff's short side (336)",
    common=dict(pamr_steps=0, method_params=ResclipParams()),
    per_dataset={
        "voc21": dict(method_params=_dataset(0.5, (2.0, 0.3), (2.2, 0.7))),
        "voc20": dict(method_params=_dataset(0.1, (2.0, 0.6), (2.1, 0.6))),
        "context60": dict(method_params=_dataset(0.3, (2.0, 0.3), (1.8, 0.7))),
        "coco_object": dict(method_params=_dataset(0.11, (2.0, 0.4), (1.8, 0.7))),
        "coco_stuff164k": dict(short_side=336, method_params=_dataset(0.11, (2.0, 0.4), (1.8, 0.7))),
        "cityscapes": dict(method_params=_dataset(0.1, (2.0, 0.2), (2.1, 0.6))),
        "ade20k": dict(method_params=_dataset(0.25, (2.0, 0.3), (2.1, 0.7))),
    },
)


@dataclass(frozen=True)
class ResclipState:
    """What the second pass continues from, per batch of windows: the last block's keys and values (B, heads, T, d),
    the RCS attention (None: RCS off), the normalised window pixels (B, 3, Hc, Wc) that guide the first pass's PAMR,
    the patch grid and size, and the tower whose last block and projection finish the pass."""

    visual: Any
    key: Tensor
    value: Tensor
    rcs_attention: Tensor | None
    crops: Tensor
    grid: tuple[int, int]
    patch: int
    params: ResclipParams


def _rcs_blocks(params: Hashable) -> tuple[int, ...]:
    assert isinstance(params, ResclipParams)
    return params.rcs_blocks if params.rcs else ()


def _attention_kwargs(params: ResclipParams) -> dict[str, Any]:
    return dict(sigma=params.sigma, rcs_weights=params.rcs_weights, sfr_weights=params.sfr_weights)


def last_block(shared: SharedPass, variant: Variant) -> LastBlockOutput:
    """ResCLIP's first pass: key-key attention with the Gaussian prior, mixed with the RCS attention, no residual,
    no feed-forward network. With SFR on, its state lets `text_pass` run the second pass for a vocabulary."""
    from ..encoder import PENULTIMATE, out_proj, patches_only

    params = variant.params
    assert isinstance(params, ResclipParams)
    key, value = shared.projection(PENULTIMATE, "k"), shared.projection(PENULTIMATE, "v")
    rcs = shared.features.attention_mean(params.rcs_blocks) if params.rcs else None
    weights = resclip_weights(key, shared.grid, rcs_attention=rcs, feedback=None, **_attention_kwargs(params))
    heads = (weights @ value.float()).to(value.dtype)
    patches, attention, _ = patches_only(out_proj(shared.block, heads), weights if shared.trace else None)
    if not params.sfr:
        return LastBlockOutput(patches, attention)
    patch = shared.visual.conv1.stride[0]
    state = ResclipState(shared.visual, key, value, rcs, shared.images.float(), shared.grid, patch, params)
    return LastBlockOutput(patches, attention, state)


def text_pass(state: object, first: Tensor, text: Tensor) -> Tensor:
    """ResCLIP's second pass for one vocabulary: the first pass's window logits (from its normalised patch
    embeddings `first` (B, rows, cols, E) and the queries `text` (Q, E)), refined by PAMR and thresholded into per-patch
    query categories, steer the last block's attention through the SFR matrix. Returns (B, rows, cols, E) patch
    embeddings before normalisation."""
    import torch

    from ..encoder import out_proj, project

    assert isinstance(state, ResclipState)
    params = state.params
    window_logits = torch.einsum("bhwe,qe->bqhw", first.float(), text.float())
    probs = first_pass_probs(
        window_logits,
        state.crops,
        params.feedback_logit_scale,
        params.feedback_pamr_steps,
        params.feedback_pamr_dilations,
    )
    feedback = feedback_matrix(
        patch_categories(probs, params.threshold, state.patch), params.sigma, params.delete_same_entity
    )
    heads = resclip_attention(
        state.key,
        state.value,
        state.grid,
        rcs_attention=state.rcs_attention,
        feedback=feedback,
        **_attention_kwargs(params),
    )
    block = state.visual.transformer.resblocks[-1]
    patches = out_proj(block, heads)[:, 1:]
    return project(state.visual, patches).reshape(first.shape[0], *state.grid, -1)


SPEC = MethodSpec(
    name="resclip",
    label="ResCLIP",
    summary=(
        "ResCLIP: NACLIP's key-key attention and prior mixed with the mean attention of blocks 6–9 "
        "(RCS); then a second pass steered by the first pass's own segmentation (SFR), so the image side "
        "depends on the classes"
    ),
    repository="yvhangyang/ResCLIP",
    commit="0e085f7",
    venue="CVPR'25",
    year=2025,
    last_block=last_block,
    published=(Published((61.1, 33.5, 35.0, 86.0, 36.8, 24.7, 35.9, 18.0), 41.4),),
    params=ResclipParams(),
    ablations=(("RCS off", ResclipParams(rcs=False)), ("SFR off", ResclipParams(sfr=False))),
    kept_attention=_rcs_blocks,
    text_pass=text_pass,
    protocol=PROTOCOL,
    in_default_ablation=False,
)
