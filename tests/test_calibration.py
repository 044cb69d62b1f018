"""Known answers for each SC-CLIP step on synthetic inputs."""

import math

import pytest
import torch

from scclip_core import InputError
from scclip_core import calibration as cal


def _grid_tokens(height: int, width: int, dim: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, height * width, dim, generator=generator)


def test_lof_matches_a_direct_implementation_of_the_formula():
    tokens = _grid_tokens(5, 6, dim=8)[0]
    k = 4
    distances = ((tokens[:, None] - tokens[None]) ** 2).sum(-1)
    distances.fill_diagonal_(float("inf"))
    k_distance = distances.sort(dim=1).values[:, k - 1]
    neighbours = distances.argsort(dim=1)[:, :k]
    expected = torch.stack([k_distance[p] * (1 / k_distance[neighbours[p]]).mean() for p in range(len(tokens))])
    assert torch.allclose(cal.lof_scores(tokens[None], k)[0], expected, rtol=1e-5)


def test_planted_outlier_gets_the_top_lof_score_and_is_the_only_one_marked():
    tokens = _grid_tokens(8, 8, dim=16) * 0.1
    tokens[0, 27] += 25.0
    scores = cal.lof_scores(tokens, k=30)
    assert int(scores.argmax()) == 27
    marked = cal.outliers_by_quantile(scores, contamination=1 / 64 - 1e-4)
    assert marked[0].nonzero().flatten().tolist() == [27]


def test_quantile_marks_strictly_above_and_the_expected_count():
    scores = torch.arange(196, dtype=torch.float32)[None]
    assert int(cal.outliers_by_quantile(scores, 0.05).sum()) == 10
    assert int(cal.outliers_by_quantile(torch.arange(256.0)[None], 0.05).sum()) == 13
    assert not cal.outliers_by_quantile(scores, 0.0).any()


def test_lof_with_fewer_tokens_than_k_does_not_fail():
    tokens = _grid_tokens(2, 2)
    assert cal.lof_scores(tokens, k=30).shape == (1, 4)
    assert torch.equal(cal.lof_scores(tokens[:, :1], k=30), torch.ones(1, 1))


def test_norm_detector_takes_the_largest_norms():
    tokens = torch.ones(1, 20, 3)
    tokens[0, [3, 17]] *= 10
    assert cal.outliers_by_norm(tokens, contamination=0.1)[0].nonzero().flatten().tolist() == [3, 17]


def test_resolution_replaces_an_interior_outlier_by_its_eight_neighbours_mean():
    tokens = torch.arange(25, dtype=torch.float32).view(1, 25, 1).repeat(1, 1, 2)
    outliers = torch.zeros(1, 25, dtype=torch.bool)
    outliers[0, 12] = True
    resolved = cal.resolve_anomalies(tokens, outliers, (5, 5))
    neighbours = [6, 7, 8, 11, 13, 16, 17, 18]
    assert resolved[0, 12].tolist() == [sum(neighbours) / 8] * 2
    assert torch.equal(resolved[0, :12], tokens[0, :12])


def test_resolution_at_a_corner_and_next_to_another_outlier():
    height, width = 4, 5
    tokens = torch.randn(1, height * width, 3)
    outliers = torch.zeros(1, height * width, dtype=torch.bool)
    outliers[0, [0, 1]] = True
    resolved = cal.resolve_anomalies(tokens, outliers, (height, width))
    assert torch.allclose(resolved[0, 0], tokens[0, [5, 6]].mean(0))
    assert torch.allclose(resolved[0, 1], tokens[0, [2, 5, 6, 7]].mean(0))


def test_outlier_without_valid_neighbours_is_left_unchanged():
    tokens = torch.randn(1, 4, 2)
    outliers = torch.ones(1, 4, dtype=torch.bool)
    assert torch.equal(cal.resolve_anomalies(tokens, outliers, (2, 2)), tokens)


def test_resolution_uses_row_major_indices_on_non_square_grids():
    height, width = 3, 7
    tokens = torch.zeros(1, height * width, 1)
    outliers = torch.zeros(1, height * width, dtype=torch.bool)
    index = 1 * width + 6
    outliers[0, index] = True
    tokens[0, [0 * width + 5, 0 * width + 6, 1 * width + 5, 2 * width + 5, 2 * width + 6]] = 1.0
    resolved = cal.resolve_anomalies(tokens, outliers, (height, width))
    assert resolved[0, index, 0] == pytest.approx(1.0)
    with pytest.raises(InputError, match="21 tokens do not fill a 7x4 grid"):
        cal.resolve_anomalies(tokens, outliers, (7, 4))


def test_batched_resolution_uses_each_crops_own_outliers():
    tokens = torch.randn(2, 9, 2)
    outliers = torch.zeros(2, 9, dtype=torch.bool)
    outliers[0, 4] = True
    resolved = cal.resolve_anomalies(tokens, outliers, (3, 3))
    assert torch.equal(resolved[1], tokens[1])
    assert torch.allclose(resolved[0, 4], tokens[0, [0, 1, 2, 3, 5, 6, 7, 8]].mean(0))


def test_resolution_matrix_is_the_identity_except_for_outliers_with_valid_neighbours():
    outliers = torch.zeros(2, 12, dtype=torch.bool)
    outliers[0, [0, 5]] = True
    outliers[1] = True
    matrix = cal.resolution_matrix(outliers, (3, 4))
    assert torch.equal(matrix[1], torch.eye(12))
    assert torch.equal(matrix[0, 1:5], torch.eye(12)[1:5]) and torch.equal(matrix[0, 6:], torch.eye(12)[6:])
    assert matrix[0, 0].nonzero().flatten().tolist() == [1, 4]
    assert matrix[0, 5].nonzero().flatten().tolist() == [1, 2, 4, 6, 8, 9, 10]
    assert torch.allclose(matrix.sum(-1), torch.ones(2, 12))
    tokens = torch.randn(2, 12, 3)
    assert torch.equal(cal.resolve_anomalies(tokens, outliers, (3, 4)), matrix @ tokens)


def test_aggregation_weights_threshold_and_normalise_rows():
    affinity = torch.tensor([[[1.0, 0.5, 0.3], [0.5, 1.0, -0.2], [0.3, -0.2, 1.0]]])
    weights = cal.aggregation_weights(affinity, beta=0.4)
    expected = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    expected = expected / (expected.sum(1, keepdim=True) + 1e-6)
    assert torch.allclose(weights[0], expected)
    tokens = torch.tensor([[[1.0], [4.0], [9.0]]])
    assert torch.allclose(cal.aggregate(weights, tokens)[0, :, 0], torch.tensor([2.0, 3.0, 9.0]), atol=1e-4)


def test_cosine_affinity_is_scale_invariant_with_unit_diagonal():
    tokens = torch.randn(2, 6, 5)
    affinity = cal.cosine_affinity(tokens)
    assert torch.allclose(affinity, cal.cosine_affinity(tokens * 7.0), atol=1e-6)
    assert torch.allclose(affinity.diagonal(dim1=1, dim2=2), torch.ones(2, 6), atol=1e-6)


def test_attention_prior_masks_entries_below_the_global_mean():
    affinity = torch.tensor([[[1.0, 0.8, 0.0], [0.8, 1.0, 0.1], [0.0, 0.1, 1.0]]])
    prior = cal.attention_prior(affinity, temperature=3.0)
    mean = affinity.mean()
    assert mean == pytest.approx(0.5333, abs=1e-4)
    assert prior[0, 0, 2] == 0 and prior[0, 2, 0] == 0 and prior[0, 2, 1] == 0
    assert prior[0, 2, 2] == pytest.approx(1.0)
    row0 = torch.softmax(3.0 * (torch.tensor([1.0, 0.8]) - mean), dim=0)
    assert torch.allclose(prior[0, 0, :2], row0)
    assert torch.allclose(prior.sum(-1), torch.ones(1, 3))


def test_gaussian_neighbourhood_is_one_on_the_diagonal_and_decays_with_grid_distance():
    bias = cal.gaussian_neighbourhood((2, 3), sigma=5.0)
    assert bias.shape == (6, 6)
    assert torch.allclose(bias.diagonal(), torch.ones(6))
    assert bias[0, 5] == pytest.approx(math.exp(-(1 + 4) / 50))


def test_squared_distances_match_the_direct_difference_and_are_never_negative():
    tokens = torch.randn(2, 30, 16) * 10
    direct = ((tokens[:, :, None] - tokens[:, None]) ** 2).sum(-1)
    distances = cal.squared_distances(tokens)
    assert torch.allclose(distances, direct, rtol=1e-4, atol=1e-2)
    assert (distances >= 0).all()


def test_neighbour_ring_has_eight_neighbours_inside_and_fewer_at_the_border():
    ring = cal.neighbour_ring((3, 4))
    assert ring.sum(1).tolist() == [3, 5, 5, 3, 5, 8, 8, 5, 3, 5, 5, 3]
    assert torch.equal(ring, ring.T) and not ring.diagonal().any()
