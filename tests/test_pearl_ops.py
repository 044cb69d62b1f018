"""PEARL's operations against the official code's intermediates (methods_parity_tiny.pt, image 0: one 224x224
window, 14x14 patches): the Procrustes-aligned attention, the last block recomputed from the fixture's weights, and
every step of the text-aware Laplacian propagation; then known answers of the propagation on synthetic inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from scclip_core import InputError, load_model
from scclip_core.encoder import _in_projection, _stem, out_proj, project
from scclip_core.methods.pearl import aligned_attention, procrustes_alignment
from scclip_core.tlp import (
    TlpSettings,
    apply_operator,
    confidence_weight,
    conjugate_gradients,
    edge_weights,
    pool_factors,
    pooled_inputs,
    propagate,
    resize_and_pool,
    text_matrix,
)
from tests.conftest import FIXTURES, _load_fixture

FIXTURE = FIXTURES / "methods_parity_tiny.pt"
TOLERANCE = 1e-4
"""The fixture's parity rule: max abs difference <= TOLERANCE x max abs expected value."""
ALPHA_KK, POLAR_ITERATIONS = 0.08, 5
"""The official settings the fixture was made with (pearl_ovss.py defaults)."""
WINDOW, GRID = 224, 14


def assert_relative(actual: torch.Tensor, expected: torch.Tensor) -> None:
    difference = ((actual.float() - expected).abs().max() / expected.abs().max()).item()
    assert difference <= TOLERANCE, f"relative difference {difference:.2e}"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return _load_fixture(FIXTURE)


@pytest.fixture(scope="module")
def pearl(fixture: dict) -> dict:
    return fixture["pearl"]["intermediates"]


@pytest.fixture(scope="module")
def model(fixture: dict):
    return load_model("tiny-test", str(FIXTURE), device="cpu")


@pytest.fixture(scope="module")
def image(fixture: dict, model) -> torch.Tensor:
    """Image 0 normalised as the network gets it, (3, 224, 224)."""
    mean = torch.tensor(model.mean)[:, None, None] * 255
    std = torch.tensor(model.std)[:, None, None] * 255
    return (fixture["images"][0].permute(2, 0, 1).float() - mean) / std


@pytest.fixture(scope="module")
def qkv(pearl: dict) -> tuple[torch.Tensor, ...]:
    return tuple(pearl[f"last_block_{part}"][None] for part in "qkv")


@pytest.fixture(scope="module")
def grid_logits(pearl: dict) -> torch.Tensor:
    """The window's logits (Q, 14, 14): normalised patch embeddings times the query features."""
    patches = F.normalize(pearl["patch_embeddings"][1:], dim=-1)
    return (patches @ pearl["query_features"].T).T.reshape(-1, GRID, GRID)


def test_procrustes_alignment_matches_the_official_m_and_r(pearl: dict, qkv: tuple[torch.Tensor, ...]) -> None:
    cross, rotation = procrustes_alignment(qkv[0], qkv[1], POLAR_ITERATIONS)
    assert_relative(cross[0], pearl["procrustes_M"])
    assert_relative(rotation[0], pearl["procrustes_R"])


def test_aligned_attention_matches_the_official_output(pearl: dict, qkv: tuple[torch.Tensor, ...]) -> None:
    assert_relative(aligned_attention(*qkv, ALPHA_KK, POLAR_ITERATIONS)[0], pearl["attention_output"])


def test_aligned_attention_is_batched_over_windows_and_keeps_the_value_dtype(qkv: tuple[torch.Tensor, ...]) -> None:
    other = tuple(part.flip(-2) * 0.5 for part in qkv)
    batched = aligned_attention(*(torch.cat(pair) for pair in zip(qkv, other)), ALPHA_KK, POLAR_ITERATIONS)
    assert torch.allclose(batched[:1], aligned_attention(*qkv, ALPHA_KK, POLAR_ITERATIONS), atol=1e-6)
    assert torch.allclose(batched[1:], aligned_attention(*other, ALPHA_KK, POLAR_ITERATIONS), atol=1e-6)
    half = tuple(part.half() for part in qkv)
    result = aligned_attention(*half, ALPHA_KK, POLAR_ITERATIONS)
    assert result.dtype == torch.float16
    reference = aligned_attention(*(part.float() for part in half), ALPHA_KK, POLAR_ITERATIONS)
    assert torch.allclose(result.float(), reference, atol=1e-3)


def test_last_block_from_the_fixture_weights_matches_q_k_v_and_patch_embeddings(model, pearl: dict, image) -> None:
    visual = model.visual
    with torch.inference_mode():
        tokens, grid = _stem(visual, image[None])
        assert grid == (GRID, GRID)
        for block in visual.transformer.resblocks[:-1]:
            tokens = block(tokens)
        last = visual.transformer.resblocks[-1]
        normed = last.ln_1(tokens)
        query, key, value = (_in_projection(last, normed, part) for part in "qkv")
        for part, tensor in zip("qkv", (query, key, value)):
            assert_relative(tensor[0], pearl[f"last_block_{part}"])
        heads = aligned_attention(query, key, value, ALPHA_KK, POLAR_ITERATIONS)
        assert_relative(project(visual, out_proj(last, heads))[0], pearl["patch_embeddings"])


def test_text_matrix_matches(pearl: dict) -> None:
    assert_relative(text_matrix(pearl["query_features"], TlpSettings()), pearl["tlp_text_matrix"])


@pytest.mark.parametrize("working", [GRID, WINDOW], ids=["working-14", "working-224"])
def test_grey_and_pooled_logits_match_from_any_working_size(
    pearl: dict, grid_logits: torch.Tensor, image: torch.Tensor, working: int
) -> None:
    logits = F.interpolate(grid_logits[None], size=(working, working), mode="bilinear", align_corners=False)[0]
    factors = pool_factors((WINDOW, WINDOW), TlpSettings().grid)
    assert factors == (3, 3)
    grey, pooled = pooled_inputs(logits, image, (WINDOW, WINDOW), factors)
    assert_relative(grey, pearl["tlp_gray"])
    assert_relative(pooled, pearl["tlp_downsampled_logits"])


def test_confidence_and_edge_weights_match(pearl: dict) -> None:
    settings = TlpSettings()
    probs = pearl["tlp_downsampled_logits"].softmax(dim=0)
    diagonal = pearl["tlp_text_matrix"].diagonal()
    assert_relative(confidence_weight(probs, diagonal, settings), pearl["tlp_confidence_weight"])
    w_h, w_v = edge_weights(pearl["tlp_gray"], probs, diagonal, settings)
    assert_relative(w_h, pearl["tlp_w_h"])
    assert_relative(w_v, pearl["tlp_w_v"])


def test_conjugate_gradients_match_the_solution(pearl: dict) -> None:
    solution = conjugate_gradients(
        pearl["tlp_downsampled_logits"],
        pearl["tlp_confidence_weight"],
        pearl["tlp_w_h"],
        pearl["tlp_w_v"],
        TlpSettings().iterations,
    )
    assert_relative(solution, pearl["tlp_solution_small"])


def test_propagate_end_to_end_matches_the_official_probs_and_labels(
    fixture: dict, pearl: dict, grid_logits: torch.Tensor, image: torch.Tensor
) -> None:
    solution = propagate(grid_logits, image, pearl["query_features"], (WINDOW, WINDOW))
    assert_relative(solution, pearl["tlp_solution_small"])
    logits = F.interpolate(solution[None], size=(WINDOW, WINDOW), mode="bilinear", align_corners=False)[0]
    query_probs = (40 * logits).softmax(dim=0)
    classes = torch.tensor([index for index, synonyms in enumerate(fixture["classes"]) for _ in synonyms])
    probs = torch.stack([query_probs[classes == index].max(dim=0).values for index in range(len(fixture["classes"]))])
    expected = fixture["pearl"]["probs"][0]
    assert_relative(probs, expected)
    best_two = expected.topk(2, dim=0).values
    decided = best_two[0] - best_two[1] > TOLERANCE * expected.abs().max()
    labels = fixture["pearl"]["labels"][0].long()
    assert torch.equal(probs.argmax(dim=0)[decided], labels[decided])


def _synthetic(queries: int = 5, working: tuple[int, int] = (30, 40), guide: tuple[int, int] = (50, 45)):
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(queries, *working, generator=generator),
        torch.randn(3, *guide, generator=generator),
        torch.randn(queries, 16, generator=generator),
    )


@pytest.mark.parametrize(
    ("working", "out_size", "factors"), [((30, 40), (250, 170), (3, 2)), ((96, 64), (47, 33), (4, 5))]
)
def test_factored_resize_and_pool_equals_the_resize_then_pool(working, out_size, factors) -> None:
    maps = _synthetic(working=working)[0]
    full = F.interpolate(maps[None], size=out_size, mode="bilinear", align_corners=False)
    reference = F.avg_pool2d(full, factors)[0]
    assert torch.allclose(resize_and_pool(maps, out_size, factors), reference, atol=1e-5)


def test_pool_factors_round_half_to_even_and_stay_positive() -> None:
    assert pool_factors((200, 280), 80) == (2, 4)
    assert pool_factors((2048, 30), 80) == (26, 1)


def test_constant_logits_stay_constant() -> None:
    _, guide, text = _synthetic()
    levels = torch.linspace(-2, 3, len(text))
    logits = levels[:, None, None].expand(-1, 30, 40)
    solution = propagate(logits, guide, text, (400, 330))
    assert solution.shape == (len(text), 400 // 5, 330 // 4)
    assert torch.allclose(solution, levels[:, None, None].expand_as(solution), atol=1e-5)


def test_zero_iterations_give_the_pooled_input_and_small_outputs_are_not_pooled() -> None:
    logits, guide, text = _synthetic()
    settings = TlpSettings(iterations=0)
    out_size = (400, 330)
    pooled = resize_and_pool(logits, out_size, pool_factors(out_size, settings.grid))
    assert torch.equal(propagate(logits, guide, text, out_size, settings), pooled)
    small = propagate(logits, guide, text, (100, 70), settings)
    expected = F.interpolate(logits[None], size=(100, 70), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(small, expected, atol=1e-5)


def test_the_solver_reduces_the_residual() -> None:
    logits, guide, text = _synthetic()
    settings = TlpSettings()
    grey, start = pooled_inputs(logits, guide, (240, 240), pool_factors((240, 240), settings.grid))
    diagonal = text_matrix(text, settings).diagonal()
    probs = start.softmax(dim=0)
    confidence = confidence_weight(probs, diagonal, settings)
    w_h, w_v = edge_weights(grey, probs, diagonal, settings)

    def residual(iterations: int) -> float:
        solution = conjugate_gradients(start, confidence, w_h, w_v, iterations)
        return (confidence * start - apply_operator(solution, confidence, w_h, w_v)).norm().item()

    assert residual(25) < 1e-2 * residual(0)


@pytest.mark.parametrize(
    "change",
    [
        dict(grid=0),
        dict(grid=2.5),
        dict(iterations=-1),
        dict(iterations=True),
        dict(text_temperature=0.0),
        dict(self_weight=-1.0),
        dict(edge_sharpness=float("nan")),
        dict(min_confidence=1.5),
    ],
)
def test_bad_settings_raise(change: dict) -> None:
    with pytest.raises(InputError):
        dataclasses.replace(TlpSettings(), **change)


def test_mismatched_inputs_raise() -> None:
    logits, guide, text = _synthetic()
    with pytest.raises(InputError):
        propagate(logits, guide, text[:-1], (100, 100))
    with pytest.raises(InputError):
        propagate(logits, guide[:2], text, (100, 100))
    with pytest.raises(InputError):
        propagate(logits, guide, text, (0, 100))
