"""PAMR refinement: known answers on tiny synthetic cases, banding, and its place in the segmenter."""

import math

import numpy as np
import pytest
import torch

from scclip_core import InputError, Segmenter, SegmenterConfig, pamr_refine
from scclip_core import pamr as pamr_module
from scclip_core.pamr import neighbour_offsets, pamr_weights


def _reference(maps: torch.Tensor, guide: torch.Tensor, steps: int, dilations: tuple[int, ...]) -> torch.Tensor:
    """PAMR pixel by pixel, straight from its description, in float64."""
    maps, guide = maps.double(), guide.double()
    _, height, width = guide.shape

    def at(tensor, y, x):
        return tensor[:, min(max(y, 0), height - 1), min(max(x, 0), width - 1)]

    offsets = [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    weights = {}
    for y in range(height):
        for x in range(width):
            window = torch.stack(
                [at(guide, y + d * dy, x + d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            )
            sigma = window.std(dim=0, unbiased=True)
            affinity = torch.stack(
                [
                    (-(guide[:, y, x] - at(guide, y + oy, x + ox)).abs() / (1e-8 + 0.1 * sigma)).mean()
                    for oy, ox in offsets
                ]
            )
            weights[y, x] = affinity.softmax(dim=0)
    for _ in range(steps):
        refined = torch.empty_like(maps)
        for y in range(height):
            for x in range(width):
                neighbours = torch.stack([at(maps, y + oy, x + ox) for oy, ox in offsets])
                refined[:, y, x] = (weights[y, x][:, None] * neighbours).sum(dim=0)
        maps = refined
    return maps


def test_known_answer_at_a_colour_edge():
    """1x4 image, dark | dark | bright | bright, one dilation of 1: worked out by hand.

    x=0 and x=3 see one colour only (sigma 0, equal weights 1/8); at x=1 sigma is 1/2, so the three bright
    neighbours get affinity -1/0.05 = -20 and the five dark ones 0.
    """
    guide = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    maps = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
    tiny = math.exp(-20)
    expected = torch.tensor([3 / 8, (2 + 3 * tiny) / (5 + 3 * tiny), 1.0, 1.0])
    assert torch.allclose(pamr_refine(maps, guide, 1, (1,)).flatten(), expected, atol=1e-7)


def test_known_answer_with_two_dilations_on_a_flat_guide():
    """A flat guide gives every one of the 16 neighbours weight 1/16; a delta at x=0 spreads by replicate padding."""
    maps = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 0.0]]])
    refined = pamr_refine(maps, torch.zeros(3, 1, 5), 1, (1, 2))
    assert torch.allclose(refined.flatten(), torch.tensor([10, 6, 3, 0, 0]) / 16)


def test_maps_are_first_resized_to_the_guide_with_aligned_corners():
    """[0, 1] becomes [0, 1/3, 2/3, 1] (align_corners=True), then one flat-guide step: worked out by hand."""
    refined = pamr_refine(torch.tensor([[[0.0, 1.0]]]), torch.zeros(1, 1, 4), 1, (1,))
    assert torch.allclose(refined.flatten(), torch.tensor([1 / 8, 1 / 3, 2 / 3, 7 / 8]))


def test_zero_steps_changes_nothing():
    maps = torch.randn(3, 5, 7)
    assert pamr_refine(maps, torch.randn(3, 9, 9), 0) is maps


@pytest.mark.parametrize("band_elements", [1, 200, 1 << 24])
def test_banded_refinement_equals_the_pixel_by_pixel_description(monkeypatch, band_elements):
    monkeypatch.setattr(pamr_module, "_BAND_ELEMENTS", band_elements)
    generator = torch.Generator().manual_seed(0)
    guide = torch.randn(3, 7, 9, generator=generator)
    maps = torch.randn(2, 7, 9, generator=generator)
    original = maps.clone()
    refined = pamr_refine(maps, guide, 3, (1, 2))
    assert torch.allclose(refined.double(), _reference(maps, guide, 3, (1, 2)), atol=1e-5)
    assert torch.equal(maps, original)


def test_weights_are_a_softmax_over_every_neighbour_of_every_dilation():
    weights = pamr_weights(torch.randn(3, 6, 5), (8, 16))
    assert weights.shape == (16, 6, 5) and weights.dtype == torch.float32
    assert torch.allclose(weights.sum(dim=0), torch.ones(6, 5))
    assert len(neighbour_offsets((8, 16))) == 16 and (0, 0) not in neighbour_offsets((8, 16))


def test_refinement_sharpens_blurry_maps_along_the_image_edge():
    guide = torch.zeros(3, 32, 32)
    guide[:, :, 16:] = 1.0
    blurry = torch.linspace(0, 1, 32).expand(32, 32).unsqueeze(0)
    refined = pamr_refine(blurry, guide, 10, (2, 4))
    jump_before = blurry[0, :, 16] - blurry[0, :, 15]
    jump_after = refined[0, :, 16] - refined[0, :, 15]
    assert (jump_after > 5 * jump_before).all()


@pytest.mark.parametrize(
    "steps, dilations", [(-1, (8, 16)), (1.5, (8, 16)), (True, (8,)), (1, ()), (1, (0, 8)), (1, (8.0,))]
)
def test_bad_settings_are_refused(steps, dilations):
    with pytest.raises(InputError, match="pamr"):
        pamr_refine(torch.zeros(1, 4, 4), torch.zeros(3, 4, 4), steps, dilations)
    with pytest.raises(InputError, match="pamr"):
        SegmenterConfig(pamr_steps=steps, pamr_dilations=dilations)


def _two_colour_photo() -> np.ndarray:
    photo = np.zeros((90, 130, 3), dtype=np.uint8)
    photo[:, :60] = (200, 40, 30)
    photo[:, 60:] = (20, 60, 210)
    return photo + np.random.default_rng(0).integers(0, 20, photo.shape, dtype=np.uint8)


def test_segmenter_runs_pamr_per_request_on_the_cached_image_side(tiny_model):
    segmenter = Segmenter(tiny_model, SegmenterConfig(templates="simple", short_side=64, crop=32, stride=16))
    plain = segmenter.segment(_two_colour_photo(), "red; blue", background=None)
    image_side = segmenter._last
    refined = segmenter.predict("red; blue", background=None, pamr_steps=2)
    assert segmenter._last is image_side
    assert refined.pamr_steps == 2 and plain.pamr_steps == 0 and refined.to_json()["pamr_steps"] == 2
    assert refined.probs.shape == plain.probs.shape == (2, 90, 130)
    assert np.abs(refined.probs - plain.probs).max() > 1e-4
    again = segmenter.predict("red; blue", background=None, pamr_steps=0)
    assert np.array_equal(again.probs, plain.probs)

    configured = Segmenter(
        tiny_model, SegmenterConfig(templates="simple", short_side=64, crop=32, stride=16, pamr_steps=2)
    )
    by_config = configured.segment(_two_colour_photo(), "red; blue", background=None)
    assert by_config.pamr_steps == 2
    assert np.allclose(by_config.probs, refined.probs, atol=1e-6)
    with pytest.raises(InputError, match="pamr_steps"):
        segmenter.predict("red; blue", pamr_steps=-2)
