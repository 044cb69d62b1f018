"""SC-CLIP's calibration steps as pure, batched tensor functions (one per step of the method, Bai et al. 2024).

Every function takes a batch of crops, works per crop, and never builds an N x N x C tensor. Callers pass
float32 tensors: anomaly scores and affinities are computed in float32 whatever the backbone precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError


def squared_distances(tokens: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances, (B, N, D) -> (B, N, N), through one batched matrix product."""
    squared_norms = tokens.square().sum(dim=2)
    gram = tokens @ tokens.transpose(1, 2)
    return (squared_norms.unsqueeze(2) + squared_norms.unsqueeze(1) - 2 * gram).clamp_min_(0)


def lof_scores(tokens: Tensor, k: int = 30) -> Tensor:
    """The official simplified Local Outlier Factor of each token, (B, N, D) -> (B, N).

    With reachability max(d(p, o), kd(p)) every reachability distance of p equals its own k-distance kd(p),
    so LOF(p) = kd(p) * mean over the k nearest neighbours o of 1 / kd(o). `k` is capped at N - 1.
    """
    num_tokens = tokens.shape[1]
    if num_tokens < 2:
        return torch.ones(tokens.shape[:2], dtype=tokens.dtype, device=tokens.device)
    k = min(k, num_tokens - 1)
    distances = squared_distances(tokens)
    distances.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    neighbour_distances, neighbours = distances.topk(k, dim=2, largest=False)
    k_distance = neighbour_distances[..., -1]
    inverse_neighbour_k_distance = torch.gather(1.0 / k_distance, 1, neighbours.flatten(1)).view_as(neighbours)
    return k_distance * inverse_neighbour_k_distance.mean(dim=2)


def outliers_by_quantile(scores: Tensor, contamination: float = 0.05) -> Tensor:
    """Mark scores strictly above their per-crop (1 - contamination) quantile, (B, N) -> bool (B, N)."""
    if contamination <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.quantile(scores, 1.0 - contamination, dim=1, keepdim=True, interpolation="linear")
    return scores > threshold


def outliers_by_norm(tokens: Tensor, contamination: float = 0.05) -> Tensor:
    """The authors' earlier detector: the round(contamination * N) tokens of largest L2 norm, bool (B, N)."""
    count = round(contamination * tokens.shape[1])
    mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    if count > 0:
        mask.scatter_(1, tokens.norm(dim=2).topk(count, dim=1).indices, True)
    return mask


def neighbour_ring(grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """(N, N) bool: True where token j is one of the 8 spatial neighbours of token i on a row-major grid."""
    height, width = grid
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    row_gap = (rows[:, None] - rows[None, :]).abs()
    col_gap = (cols[:, None] - cols[None, :]).abs()
    return (row_gap <= 1) & (col_gap <= 1) & ((row_gap + col_gap) > 0)


def resolution_matrix(outliers: Tensor, grid: tuple[int, int], dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, N, N) R such that R @ tokens replaces each outlier token by the mean of its valid 3x3 spatial neighbours.

    A neighbour is valid if it lies inside the grid and is not an outlier; the centre is excluded, all
    replacements use the original features, and an outlier without valid neighbours stays as it is. Every token
    that stays has an identity row, so the product leaves it exactly unchanged. `outliers` is bool (B, N) over a
    row-major (H, W) grid. One matrix serves every token set of the same crops.
    """
    height, width = grid
    num_tokens = outliers.shape[1]
    if num_tokens != height * width:
        raise InputError(f"{num_tokens} tokens do not fill a {height}x{width} grid")
    ring = neighbour_ring(grid, outliers.device).unsqueeze(0)
    valid = ring & ~outliers.unsqueeze(1) & outliers.unsqueeze(2)
    counts = valid.sum(dim=2, keepdim=True)
    means = valid.to(dtype) / counts.clamp_min(1).to(dtype)
    identity = torch.eye(num_tokens, dtype=dtype, device=outliers.device)
    return torch.where(counts > 0, means, identity)


def resolve_anomalies(tokens: Tensor, outliers: Tensor, grid: tuple[int, int]) -> Tensor:
    """Replace each outlier token (bool `outliers`, (B, N)) of `tokens` (B, N, D) by the mean of its valid 3x3
    spatial neighbours, as `resolution_matrix` describes."""
    return resolution_matrix(outliers, grid, tokens.dtype) @ tokens


def cosine_affinity(tokens: Tensor) -> Tensor:
    """Cosine similarity between all tokens of each crop, (B, N, D) -> (B, N, N)."""
    normalised = F.normalize(tokens, dim=2)
    return normalised @ normalised.transpose(1, 2)


def aggregation_weights(affinity: Tensor, beta: float = 0.4, eps: float = 1e-6) -> Tensor:
    """Zero affinities below `beta`, then divide each row by its sum (+ eps)."""
    thresholded = affinity.masked_fill(affinity < beta, 0.0)
    return thresholded / (thresholded.sum(dim=2, keepdim=True) + eps)


def aggregate(weights: Tensor, tokens: Tensor) -> Tensor:
    """Each token becomes the weighted average of the tokens its row of `weights` selects."""
    return weights @ tokens


def attention_prior(affinity: Tensor, temperature: float = 3.0) -> Tensor:
    """Softmax of temperature * (S - mean(S)) over each row, keeping only entries at or above the mean.

    The mean is one scalar per crop over all N^2 entries, diagonal included; the diagonal (cosine 1) always
    survives, so no row is empty.
    """
    centred = temperature * (affinity - affinity.mean(dim=(1, 2), keepdim=True))
    return centred.masked_fill(centred < 0, -math.inf).softmax(dim=2)


def gaussian_neighbourhood(grid: tuple[int, int], sigma: float, device: torch.device | None = None) -> Tensor:
    """NACLIP's additive attention bias exp(-|pos_i - pos_j|^2 / 2 sigma^2) over a row-major grid, (N, N)."""
    height, width = grid
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    positions = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    return torch.exp(-torch.cdist(positions, positions).square() / (2 * sigma**2))
