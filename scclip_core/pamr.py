"""PAMR, pixel-adaptive mask refinement: class maps propagated along the image's local colour affinities.

The official SC-CLIP segmentor (inherited from SCLIP) has it as an off-by-default option, and NACLIP reports its
main numbers with it (10 steps, dilations 8 and 16). Re-implemented from its description: every pixel p looks at
8 neighbours p + d·(dy, dx) per dilation d (replicate padding at the borders); its affinity to neighbour j is
mean_k −|I_k(p) − I_k(p + o_j)| / (1e-8 + 0.1·σ_k(p)), where σ_k(p) is the unbiased standard deviation of guide
channel k over the 3×3 neighbourhoods (centre included) of all dilations together; the weights are the softmax
of the affinities over all neighbours; each step replaces every class map by the weighted sum of its neighbours.

Everything runs in row bands: no neighbour stack of the class maps (8 × dilations × C × H × W) is ever built,
only one band's padded rows; the guide's per-neighbour weights (8 × dilations × H × W, float32) are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import PAMR_DILATIONS, check_pamr_settings
from .errors import InputError

_BAND_ELEMENTS = 1 << 24
_SIGMA_WEIGHT = 0.1
_SIGMA_EPSILON = 1e-8


def neighbour_offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (dy, dx) of the 8 neighbours at each dilation, dilation by dilation, row-major, centre left out."""
    return [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _padded_rows(maps: Tensor, top: int, bottom: int, margin: int) -> Tensor:
    """Rows [top - margin, bottom + margin), columns [-margin, W + margin) of (C, H, W) `maps`, borders replicated."""
    height = maps.shape[1]
    first, last = max(0, top - margin), min(height, bottom + margin)
    pads = (margin, margin, margin - (top - first), margin - (last - bottom))
    return F.pad(maps[None, :, first:last], pads, mode="replicate")[0]


def _shifted(padded: Tensor, offset: tuple[int, int], margin: int, rows: int, width: int) -> Tensor:
    """The view of a `_padded_rows` band that holds, at each pixel, the value at pixel + `offset`."""
    dy, dx = offset
    return padded[:, margin + dy : margin + dy + rows, margin + dx : margin + dx + width]


def pamr_weights(guide: Tensor, dilations: tuple[int, ...] = PAMR_DILATIONS) -> Tensor:
    """Softmax-normalised affinities of every pixel to its neighbours, (K, H, W) guide -> (8·len(dilations), H, W)."""
    guide = guide.float()
    channels, height, width = guide.shape
    offsets = neighbour_offsets(dilations)
    window = [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    margin = max(dilations)
    weights = torch.empty(len(offsets), height, width, device=guide.device)
    band = max(1, _BAND_ELEMENTS // (4 * channels * (width + 2 * margin)))
    for top in range(0, height, band):
        bottom = min(height, top + band)
        padded = _padded_rows(guide, top, bottom, margin)
        views = [_shifted(padded, offset, margin, bottom - top, width) for offset in window]
        mean = sum(views[1:], views[0]) / len(views)
        spread = torch.zeros_like(mean)
        for view in views:
            spread += (view - mean).square_()
        inverse_scale = spread.div_(len(views) - 1).sqrt_().mul_(_SIGMA_WEIGHT).add_(_SIGMA_EPSILON).reciprocal_()
        centre = guide[:, top:bottom]
        for index, offset in enumerate(offsets):
            distance = (_shifted(padded, offset, margin, bottom - top, width) - centre).abs_().mul_(inverse_scale)
            weights[index, top:bottom] = distance.mean(dim=0).neg_()
        weights[:, top:bottom] = weights[:, top:bottom].softmax(dim=0)
    return weights


def _propagate(maps: Tensor, weights: Tensor, offsets: list[tuple[int, int]], out: Tensor) -> None:
    """One PAMR step into `out`: out(p) = sum_j w_j(p) · maps(p + o_j), row band by row band."""
    num_maps, height, width = maps.shape
    margin = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    band = max(1, _BAND_ELEMENTS // (num_maps * (width + 2 * margin)))
    for top in range(0, height, band):
        bottom = min(height, top + band)
        padded = _padded_rows(maps, top, bottom, margin)
        target = out[:, top:bottom]
        target.zero_()
        for index, offset in enumerate(offsets):
            target.addcmul_(_shifted(padded, offset, margin, bottom - top, width), weights[index, top:bottom])


def pamr_refine(logits: Tensor, guide: Tensor, steps: int, dilations: tuple[int, ...] = PAMR_DILATIONS) -> Tensor:
    """Refine (C, H, W) class maps with `steps` PAMR steps guided by a (K, H', W') image, -> (C, H', W') float32.

    The maps are first resized to the guide's size (bilinear, align_corners=True; nothing happens when the sizes
    agree). With 0 steps `logits` is returned as it is. The input is never modified. The steps work on a contiguous
    copy: on maps in another memory layout (a permuted einsum's output, say) each step is about ten times slower.
    """
    check_pamr_settings(steps, dilations)
    if logits.ndim != 3 or guide.ndim != 3:
        raise InputError(
            f"PAMR needs (C, H, W) maps and a (K, H, W) guide, got {tuple(logits.shape)} and {tuple(guide.shape)}"
        )
    if steps == 0:
        return logits
    with torch.inference_mode():
        maps = logits.float().contiguous()
        if tuple(maps.shape[1:]) != tuple(guide.shape[1:]):
            maps = F.interpolate(maps[None], size=tuple(guide.shape[1:]), mode="bilinear", align_corners=True)[0]
        weights = pamr_weights(guide.to(maps.device), dilations)
        offsets = neighbour_offsets(dilations)
        spare: Tensor | None = None
        for _ in range(steps):
            target = spare if spare is not None else torch.empty_like(maps)
            _propagate(maps, weights, offsets, target)
            spare = None if maps is logits else maps
            maps = target
    return maps
