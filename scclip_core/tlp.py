"""PEARL's text-aware Laplacian propagation (TLP): logits smoothed along the image's edges by a screened Laplace
equation solved with conjugate gradients, on a grid of about `grid` cells per side.

Re-implemented from the description of the official code (PGSmall/PEARL, pearl/prop.py): the logits and the
guide are resized to the output size and average-pooled to the grid; each cell keeps its own logits in proportion
to its confidence (the data term) and pulls toward its 4 neighbours in proportion to the edge weights, which are
high where the grey level is flat and where neighbouring class distributions agree (weighted by the text matrix's
diagonal). Every step is a small function so that each intermediate can be checked; `propagate` runs them all.

Resizing then pooling is linear and separable, so it is applied as one (grid x working) matrix per axis: the
output-size logits (Q x H x W) are never built, and memory beyond the inputs and the result does not grow with Q.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import TlpSettings
from .errors import InputError

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""Weights of the R, G, B channels of the normalised guide in its grey level."""
_EPSILON = 1e-6
"""Keeps the text matrix's row sums and the mean gradient away from zero."""
_CG_EPSILON = 1e-12
"""Keeps the conjugate-gradient step sizes finite once the residual vanishes."""


def text_matrix(text: Tensor, settings: TlpSettings) -> Tensor:
    """The row-normalised text matrix S (Q, Q) of query embeddings (Q, D): softmax of the cosine similarities over
    the temperature, plus `self_weight` on the diagonal, rows divided by their sum. Only its diagonal is used."""
    normalised = F.normalize(text.float(), dim=-1)
    similarity = (normalised @ normalised.T / settings.text_temperature).softmax(dim=-1)
    similarity = similarity + settings.self_weight * torch.eye(len(text), device=text.device)
    return similarity / (similarity.sum(dim=-1, keepdim=True) + _EPSILON)


def pool_factors(size: tuple[int, int], grid: int) -> tuple[int, int]:
    """The average-pooling factors (sh, sw) that bring an (H, W) image to about `grid` cells per side: Python's
    round (half to even) of side / grid, at least 1."""
    return max(1, round(size[0] / grid)), max(1, round(size[1] / grid))


def _resize_pool_matrix(source: int, target: int, factor: int, device: torch.device) -> Tensor:
    """(target // factor, source): a 1-D bilinear resize (align_corners=False) from `source` to `target` samples,
    then the mean of each run of `factor` samples (the remainder dropped)."""
    identity = torch.eye(source, device=device)[None]
    resized = F.interpolate(identity, size=target, mode="linear", align_corners=False)
    return F.avg_pool1d(resized, factor)[0].T


def resize_and_pool(maps: Tensor, out_size: tuple[int, int], factors: tuple[int, int]) -> Tensor:
    """(C, h, w) maps bilinearly resized (align_corners=False) to `out_size`, then average-pooled by `factors`
    (stride = kernel, remainder dropped) -> (C, H // sh, W // sw) float32, without building the (C, H, W) resize."""
    maps = maps.float()
    rows = _resize_pool_matrix(maps.shape[1], out_size[0], factors[0], maps.device)
    columns = _resize_pool_matrix(maps.shape[2], out_size[1], factors[1], maps.device)
    return rows @ (maps @ columns.T)


def pooled_inputs(
    logits: Tensor, guide: Tensor, out_size: tuple[int, int], factors: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """The guide's grey level (gh, gw) and the logits (Q, gh, gw), both resized to `out_size` then pooled by
    `factors`, as the official code does at the output size (gh = H // sh, gw = W // sw)."""
    weights = torch.tensor(GREY_WEIGHTS, device=guide.device)
    grey = torch.einsum("c,chw->hw", weights, guide.float())[None]
    return resize_and_pool(grey, out_size, factors)[0], resize_and_pool(logits, out_size, factors)


def confidence_weight(probs: Tensor, self_similarity: Tensor, settings: TlpSettings) -> Tensor:
    """The data term's per-cell weight (gh, gw) from the query probabilities (Q, gh, gw) and the text matrix's
    diagonal (Q,): max(confidence, min_confidence)^2 · (1 + clamp(Σ_q S_qq p_q^2, 0, 1))."""
    confidence = probs.max(dim=0).values.clamp_min(settings.min_confidence)
    agreement = torch.einsum("q,qhw->hw", self_similarity, probs.square()).clamp(0, 1)
    return confidence.square() * (1 + agreement)


def _edge_weight(grey_step: Tensor, agreement: Tensor, settings: TlpSettings) -> Tensor:
    """clamp(exp(-k · step / mean step) · (1 + clamp(agreement, 0, 1)), 0, 1) over the real edges."""
    image_weight = torch.exp(-settings.edge_sharpness * grey_step / (grey_step.mean() + _EPSILON))
    return (image_weight * (1 + agreement.clamp(0, 1))).clamp(0, 1)


def edge_weights(grey: Tensor, probs: Tensor, self_similarity: Tensor, settings: TlpSettings) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical edge weights (w_h, w_v), each (gh, gw): w_h[i, j] joins cells (i, j-1) and (i, j),
    w_v[i, j] joins (i-1, j) and (i, j); column 0 of w_h and row 0 of w_v join nothing and hold 1 (the official
    layout)."""
    weighted = probs * self_similarity[:, None, None]
    w_h = _edge_weight((grey[:, 1:] - grey[:, :-1]).abs(), (weighted[:, :, :-1] * probs[:, :, 1:]).sum(dim=0), settings)
    w_v = _edge_weight((grey[1:] - grey[:-1]).abs(), (weighted[:, :-1] * probs[:, 1:]).sum(dim=0), settings)
    return F.pad(w_h, (1, 0), value=1.0), F.pad(w_v, (0, 0, 1, 0), value=1.0)


def apply_operator(maps: Tensor, confidence: Tensor, w_h: Tensor, w_v: Tensor) -> Tensor:
    """A X = Cw ⊙ X + Σ_{v ~ u} w_uv (X[u] - X[v]) over 4-neighbour edges, for each query map of X (Q, gh, gw)."""
    out = confidence * maps
    flow_h = w_h[:, 1:] * (maps[:, :, 1:] - maps[:, :, :-1])
    out[:, :, 1:] += flow_h
    out[:, :, :-1] -= flow_h
    flow_v = w_v[1:] * (maps[:, 1:] - maps[:, :-1])
    out[:, 1:] += flow_v
    out[:, :-1] -= flow_v
    return out


def conjugate_gradients(start: Tensor, confidence: Tensor, w_h: Tensor, w_v: Tensor, iterations: int) -> Tensor:
    """Solve A X = Cw ⊙ start from X = start by `iterations` conjugate-gradient steps, no early stop; the inner
    products run over all queries and cells jointly."""
    solution = start.clone()
    residual = confidence * start - apply_operator(start, confidence, w_h, w_v)
    direction = residual.clone()
    norm = residual.square().sum()
    for _ in range(iterations):
        product = apply_operator(direction, confidence, w_h, w_v)
        step = norm / ((direction * product).sum() + _CG_EPSILON)
        solution.add_(step * direction)
        residual.sub_(step * product)
        new_norm = residual.square().sum()
        direction = residual + new_norm / (norm + _CG_EPSILON) * direction
        norm = new_norm
    return solution


def propagate(
    logits: Tensor, guide: Tensor, text: Tensor, out_size: tuple[int, int], settings: TlpSettings | None = None
) -> Tensor:
    """TLP of one image's logits, float32.

    `logits` (Q, h, w) at any working size, `guide` (3, h', w') the normalised network input at any size, `text`
    (Q, D) the query embeddings, `out_size` (H, W) the size the official code propagates at. Returns the solution
    at the pooled grid size (Q, H // sh, W // sw), or at `out_size` when no pooling happens (sh = sw = 1); the
    caller resizes it bilinearly (align_corners=False) to `out_size`. `settings` None: PEARL's.
    """
    settings = settings or TlpSettings()
    if logits.ndim != 3 or guide.ndim != 3 or guide.shape[0] != len(GREY_WEIGHTS) or text.ndim != 2:
        raise InputError(
            f"TLP needs (Q, h, w) logits, a (3, h, w) guide and (Q, D) text, got {tuple(logits.shape)}, "
            f"{tuple(guide.shape)} and {tuple(text.shape)}"
        )
    if len(text) != len(logits):
        raise InputError(f"TLP got {len(logits)} logit maps but {len(text)} query embeddings")
    if len(out_size) != 2 or min(out_size) < 1:
        raise InputError(f"TLP needs a positive (H, W) output size, not {out_size!r}")
    with torch.inference_mode():
        factors = pool_factors(out_size, settings.grid)
        grey, small = pooled_inputs(logits, guide.to(logits.device), out_size, factors)
        self_similarity = text_matrix(text.to(logits.device), settings).diagonal()
        probs = small.softmax(dim=0)
        confidence = confidence_weight(probs, self_similarity, settings)
        w_h, w_v = edge_weights(grey, probs, self_similarity, settings)
        return conjugate_gradients(small, confidence, w_h, w_v, settings.iterations)
