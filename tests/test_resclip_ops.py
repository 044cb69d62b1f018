"""ResCLIP's tensor operations (`scclip_core.methods.resclip`): parity with the official code's intermediates in
the methods fixture (image 0: one 224x224 window, 14x14 patches), each step fed the fixture's own input so that a
difference shows where it starts, and known answers on synthetic inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from scclip_core import load_model
from scclip_core.calibration import gaussian_neighbourhood
from scclip_core.config import PAMR_DILATIONS, PAMR_STEPS
from scclip_core.encoder import _in_projection, out_proj
from scclip_core.errors import InputError
from scclip_core.methods import resclip
from scclip_core.methods.resclip import (
    feedback_matrix,
    first_pass_probs,
    patch_categories,
    resclip_attention,
)
from tests.conftest import FIXTURES

FIXTURE = FIXTURES / "methods_parity_tiny.pt"
RCS_BLOCKS = range(5, 9)  # blocks 6..9 counted from 1
TOLERANCE = 1e-4


def relative_difference(actual: Tensor, expected: Tensor) -> float:
    """The fixture's parity measure: largest absolute difference over the largest absolute expected value."""
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def settings(fixture) -> dict:
    return fixture["resclip"]["settings"]


@pytest.fixture(scope="module")
def expected(fixture) -> dict[str, Tensor]:
    return fixture["resclip"]["intermediates"]


@pytest.fixture(scope="module")
def by_hand(fixture) -> dict:
    """The fixture weights run by hand on image 0: stem, blocks 1..L-1 with blocks 6..9's attention maps computed
    explicitly per head, then the last block's key and value of `ln_1` of block L-1's output."""
    model = load_model("tiny-test", str(FIXTURE), device="cpu")
    visual = model.visual
    mean, std = (torch.tensor(values).view(3, 1, 1) * 255 for values in (model.mean, model.std))
    image = ((fixture["images"][0].permute(2, 0, 1).float() - mean) / std)[None]
    with torch.inference_mode():
        patches = visual.conv1(image)
        grid = (patches.shape[2], patches.shape[3])
        tokens = torch.cat([visual.class_embedding.view(1, 1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        x = visual.ln_pre(tokens + visual.positional_embedding)
        maps = []
        blocks = visual.transformer.resblocks
        for index, block in enumerate(blocks[:-1]):
            if index in RCS_BLOCKS:
                normed = block.ln_1(x)
                query, key = _in_projection(block, normed, "q"), _in_projection(block, normed, "k")
                maps.append((query @ key.transpose(-2, -1) * query.shape[-1] ** -0.5).softmax(dim=-1))
            x = block(x)
        last = blocks[-1]
        normed = last.ln_1(x)
        return dict(
            visual=visual,
            block=last,
            image=image,
            grid=grid,
            patch=model.patch_size,
            rcs=torch.stack(maps).mean(dim=0),
            key=_in_projection(last, normed, "k"),
            value=_in_projection(last, normed, "v"),
        )


def attention_settings(settings: dict) -> dict:
    return dict(
        sigma=settings["gaussian_std"],
        rcs_weights=tuple(settings["attn_rcs_weights"]),
        sfr_weights=tuple(settings["attn_sfr_weights"]),
    )


def embeddings(by_hand: dict, heads: Tensor) -> Tensor:
    """`ln_post(out_proj(heads)) @ proj` of the last block (no residual, no MLP), (T, E)."""
    visual = by_hand["visual"]
    with torch.inference_mode():
        return (visual.ln_post(out_proj(by_hand["block"], heads)) @ visual.proj)[0]


def test_rcs_attention_is_the_mean_map_of_blocks_6_to_9(by_hand, expected):
    assert relative_difference(by_hand["rcs"][0], expected["rcs_attention"]) <= TOLERANCE


def test_first_pass_patch_embeddings(by_hand, expected, settings):
    heads = resclip_attention(
        by_hand["key"],
        by_hand["value"],
        by_hand["grid"],
        rcs_attention=by_hand["rcs"],
        feedback=None,
        **attention_settings(settings),
    )
    assert heads.shape == by_hand["value"].shape and heads.dtype == by_hand["value"].dtype
    assert relative_difference(embeddings(by_hand, heads), expected["first_pass_patch_embeddings"]) <= TOLERANCE


def test_first_pass_probs(by_hand, expected, settings):
    patches = F.normalize(expected["first_pass_patch_embeddings"][1:], dim=-1)
    logits = (patches @ expected["query_features"].T).T.reshape(1, -1, *by_hand["grid"])
    probs = first_pass_probs(logits, by_hand["image"], settings["logit_scale"], PAMR_STEPS, PAMR_DILATIONS)
    assert probs.shape == (1, *expected["first_pass_probs"].shape)
    assert relative_difference(probs[0], expected["first_pass_probs"]) <= TOLERANCE


def test_patch_categories_exactly(by_hand, expected, settings):
    categories = patch_categories(expected["first_pass_probs"][None], settings["temp_thd"], by_hand["patch"])
    assert categories.dtype == torch.int64
    assert torch.equal(categories[0], expected["patch_categories"])


def test_feedback_matrix(expected, settings):
    matrix = feedback_matrix(
        expected["patch_categories"][None], settings["gaussian_std"], settings["delete_same_entity"]
    )
    assert matrix.dtype == torch.float32
    assert relative_difference(matrix[0], expected["sfr_attention"]) <= TOLERANCE
    without_path_check = feedback_matrix(expected["patch_categories"][None], settings["gaussian_std"], False)
    assert relative_difference(without_path_check[0], expected["sfr_attention"]) > 100 * TOLERANCE


def test_second_pass_patch_embeddings(by_hand, expected, settings):
    heads = resclip_attention(
        by_hand["key"],
        by_hand["value"],
        by_hand["grid"],
        rcs_attention=by_hand["rcs"],
        feedback=expected["sfr_attention"][None],
        **attention_settings(settings),
    )
    assert relative_difference(embeddings(by_hand, heads), expected["patch_embeddings"]) <= TOLERANCE


def one_hot_probs(categories: Tensor, queries: int) -> Tensor:
    """(B, H, W) per-pixel queries -> (B, Q, H, W) probabilities that put all their mass on them."""
    return F.one_hot(categories, queries).permute(0, 3, 1, 2).float()


def test_patch_categories_ties_go_to_the_smallest_query_and_blocks_tile_from_the_top_left():
    pixels = torch.tensor(
        [
            [3, 3, 2, 0, 7],
            [1, 1, 0, 2, 7],
            [3, 3, 3, 3, 7],
            [3, 1, 3, 2, 7],
            [7, 7, 7, 7, 7],
        ]
    )
    categories = patch_categories(one_hot_probs(pixels[None], 8), 0.25, 2)
    assert torch.equal(categories, torch.tensor([[[1, 0], [3, 3]]]))


def test_patch_categories_pixels_below_the_threshold_join_query_0_and_argmax_takes_the_first_max():
    probs = torch.zeros(2, 4, 2, 2)
    probs[:, 2] = 0.3
    probs[:, 1] = 0.3
    probs[:, 3] = 0.4
    probs[1, 3, 0, 0] = 0.0
    assert torch.equal(patch_categories(probs, 0.35, 2), torch.tensor([[[3]], [[3]]]))
    assert torch.equal(patch_categories(probs, 0.45, 2), torch.tensor([[[0]], [[0]]]))
    probs[1, 3] = 0.0
    assert torch.equal(patch_categories(probs, 0.25, 2), torch.tensor([[[3]], [[1]]]))


@pytest.mark.parametrize(("grid", "sigma", "taps"), [((4, 5), 1.0, 7), ((4, 5), 5.0, 21), ((28, 28), 5.0, 31)])
def test_one_category_gives_the_same_blurred_ones_in_every_row(grid, sigma, taps):
    num_patches = grid[0] * grid[1]
    matrix = feedback_matrix(torch.zeros(1, *grid, dtype=torch.long), sigma, True)[0]
    assert torch.all(matrix[0] == 0) and torch.all(matrix[:, 0] == 0)
    kernel = [math.exp(-(x**2) / (2 * sigma**2)) for x in range(-(taps // 2), taps // 2 + 1)]
    covered = [
        sum(kernel[x + taps // 2] for x in range(-(taps // 2), taps // 2 + 1) if 0 <= j + x < num_patches)
        for j in range(num_patches)
    ]
    row = torch.tensor(covered) / sum(covered)
    assert torch.allclose(matrix[1:, 1:], row.expand(num_patches, -1), atol=1e-6)
    assert torch.allclose(matrix[1:, 1:].sum(dim=1), torch.ones(num_patches))


def test_path_check_rounds_half_to_even_and_stops_after_d_steps():
    """3x5 grid (D = 4), all category 0 but patch (1, 1). With a one-tap blur G[i, j] / G[i, i] is the decayed
    same-category entry: from (0, 0) to (2, 1) the samples are (0, 0.5) -> (0, 0) and (1, 0.5) -> (1, 0) with
    rounding half to even, so the path avoids (1, 1) and stays 1; to (2, 2) it crosses (1, 1): exp(-2/4); to
    (0, 2) it never meets it; (1, 1) shares no category with (0, 0)."""
    categories = torch.zeros(1, 3, 5, dtype=torch.long)
    categories[0, 1, 1] = 1
    matrix = feedback_matrix(categories, 0.1, True)[0, 1:, 1:]
    row = matrix[0] / matrix[0, 0]
    assert row[2 * 5 + 1].item() == pytest.approx(1.0)
    assert row[2 * 5 + 2].item() == pytest.approx(math.exp(-0.5))
    assert row[0 * 5 + 2].item() == pytest.approx(1.0)
    assert row[1 * 5 + 1].item() == 0.0
    unchecked = feedback_matrix(categories, 0.1, False)[0, 1:, 1:]
    assert unchecked[0, 2 * 5 + 2] == unchecked[0, 0]


def naive_feedback_matrix(categories: np.ndarray, sigma: float) -> np.ndarray:
    """The SFR matrix of one (rows, cols) grid pair by pair, path points in float32 numpy scalars."""
    rows, cols = categories.shape
    num_patches = rows * cols
    longest = max(rows, cols) - 1
    steps = torch.linspace(0, 1, longest + 1).numpy()
    flat = categories.reshape(-1)
    same = np.zeros((num_patches, num_patches), dtype=np.float32)
    for i in range(num_patches):
        start = np.array(divmod(i, cols), dtype=np.float32)
        for j in range(num_patches):
            if flat[i] != flat[j]:
                continue
            end = np.array(divmod(j, cols), dtype=np.float32)
            distance = int(np.abs(end - start).max())
            points = [
                np.round(start * (np.float32(1) - steps[s]) + end * steps[s]).astype(int) for s in range(distance + 1)
            ]
            valid = all(categories[r, c] == flat[i] for r, c in points)
            same[i, j] = 1.0 if valid else np.exp(-distance / longest)
    taps = min(num_patches, int(6 * sigma + 1))
    taps += 1 - taps % 2
    kernel = np.exp(-((np.arange(taps) - taps // 2) ** 2) / (2 * sigma**2))
    blurred = np.stack([np.convolve(row, kernel / kernel.sum(), mode="same") for row in same])
    out = np.zeros((num_patches + 1, num_patches + 1))
    out[1:, 1:] = blurred / (blurred.sum(axis=1, keepdims=True) + 1e-8)
    return out


def blob_categories(grid: tuple[int, int]) -> Tensor:
    """Three categories in blobs and stripes, so that many same-category paths are broken and many are not."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    categories = ((rows // 3 + cols // 4) % 3).clone()
    categories[(rows - 5) ** 2 + (cols - 6) ** 2 < 9] = 1
    return categories


def test_feedback_matrix_on_a_12x14_grid_matches_a_pair_by_pair_reference():
    categories = blob_categories((12, 14))
    matrix = feedback_matrix(categories[None], 5.0, True)[0]
    reference = torch.from_numpy(naive_feedback_matrix(categories.numpy(), 5.0)).float()
    assert matrix.shape == (1 + 12 * 14, 1 + 12 * 14)
    assert relative_difference(matrix, reference) <= 1e-5


def test_feedback_matrix_is_per_window_whatever_the_batch_and_chunking(monkeypatch):
    windows = torch.stack([blob_categories((12, 14)), blob_categories((12, 14)).flip(1)])
    together = feedback_matrix(windows, 5.0, True)
    monkeypatch.setattr(resclip, "_CHUNK_ELEMENTS", 1000)
    chunked = feedback_matrix(windows, 5.0, True)
    assert torch.equal(chunked, together)
    for index in range(2):
        assert torch.equal(feedback_matrix(windows[index : index + 1], 5.0, True)[0], together[index])
    assert not torch.equal(together[0], together[1])


def test_feedback_matrix_of_a_single_patch():
    assert torch.equal(
        feedback_matrix(torch.zeros(1, 1, 1, dtype=torch.long), 5.0, True), torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    )


def reference_attention(
    key: Tensor, value: Tensor, grid: tuple[int, int], feedback: Tensor, rcs: Tensor, cast: bool
) -> Tensor:
    """ResCLIP's last-block attention window by window and head by head; `cast` rounds G' and lam G' to float16."""
    tau_sfr, lam_sfr, tau_rcs, lam_rcs, sigma = 1.8, 0.7, 2.0, 0.4, 5.0
    prior = torch.zeros(key.shape[2], key.shape[2])
    prior[1:, 1:] = gaussian_neighbourhood(grid, sigma)
    out = torch.empty_like(value)
    for b in range(key.shape[0]):
        scaled = feedback[b] / feedback[b].max()
        weighted = (scaled.half() * lam_sfr).float() if cast else scaled * lam_sfr
        for h in range(key.shape[1]):
            logits = key[b, h] @ key[b, h].T / math.sqrt(key.shape[3])
            logits = tau_sfr * ((1 - lam_sfr) * logits + weighted) + prior
            weights = tau_rcs * ((1 - lam_rcs) * logits.softmax(dim=-1) + lam_rcs * rcs[b, h])
            out[b, h] = weights @ value[b, h]
    return out


@pytest.mark.parametrize("grid", [(14, 14), (12, 14)])
def test_attention_rounds_the_feedback_to_float16_like_the_official_code(grid):
    generator = torch.Generator().manual_seed(0)
    tokens = 1 + grid[0] * grid[1]
    key, value = (torch.randn(2, 2, tokens, 16, generator=generator) for _ in range(2))
    rcs = torch.rand(2, 2, tokens, tokens, generator=generator).softmax(dim=-1)
    feedback = torch.rand(2, tokens, tokens, generator=generator) * 0.1
    heads = resclip_attention(
        key,
        value,
        grid,
        sigma=5.0,
        rcs_attention=rcs,
        rcs_weights=(2.0, 0.4),
        feedback=feedback,
        sfr_weights=(1.8, 0.7),
    )
    assert relative_difference(heads, reference_attention(key, value, grid, feedback, rcs, cast=True)) <= 1e-6
    assert relative_difference(heads, reference_attention(key, value, grid, feedback, rcs, cast=False)) > 1e-5


def test_attention_switches_rcs_and_sfr_off_and_keeps_the_value_dtype():
    grid = (2, 3)
    generator = torch.Generator().manual_seed(1)
    key, value = (torch.randn(1, 2, 7, 8, generator=generator) for _ in range(2))
    prior = torch.zeros(7, 7)
    prior[1:, 1:] = gaussian_neighbourhood(grid, 5.0)
    plain = resclip_attention(
        key, value, grid, sigma=5.0, rcs_attention=None, rcs_weights=(2.0, 0.4), feedback=None, sfr_weights=(1.8, 0.7)
    )
    expected = (key @ key.transpose(-2, -1) / math.sqrt(8) + prior).softmax(dim=-1) @ value
    assert torch.allclose(plain, expected, atol=1e-6)
    half = resclip_attention(
        key,
        value.half(),
        grid,
        sigma=5.0,
        rcs_attention=None,
        rcs_weights=(2.0, 0.4),
        feedback=None,
        sfr_weights=(1.8, 0.7),
    )
    assert half.dtype == torch.float16


def test_bad_shapes_raise_input_errors():
    with pytest.raises(InputError, match="tokens"):
        resclip_attention(
            torch.zeros(1, 2, 10, 8),
            torch.zeros(1, 2, 10, 8),
            (3, 4),
            sigma=5.0,
            rcs_attention=None,
            rcs_weights=(2.0, 0.4),
            feedback=None,
            sfr_weights=(1.8, 0.7),
        )
    with pytest.raises(InputError, match="patch"):
        patch_categories(torch.zeros(1, 3, 8, 8), 0.25, 16)
    with pytest.raises(InputError, match="categories"):
        feedback_matrix(torch.zeros(4, 4, dtype=torch.long), 5.0, True)
