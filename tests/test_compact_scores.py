"""The compact relabelling form (`CompactScores`) labels through the same rules as the full scores: identical
labels wherever its kept probabilities are exact, and refusals where it has nothing to answer with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scclip_core import InputError, LabelRules
from scclip_core.scores import CompactScores, PixelScores

SIZE = (24, 31)


def distinct_scores(classes: int = 5, queries: int = 7, seed: int = 0) -> PixelScores:
    """Scores at the output size (no resampling) whose queries are ranked differently at every pixel, each pixel's
    ranks 0.005 to 0.05 apart (so the best probability varies): no two classes come near a tie, even in float16."""
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.stack([torch.randperm(queries, generator=generator) for _ in range(SIZE[0] * SIZE[1])], dim=1)
    steps = 0.005 + 0.045 * torch.rand(SIZE, generator=generator)
    logits = ranks.float().view(queries, *SIZE) * steps
    return PixelScores(logits, torch.tensor([index % classes for index in range(queries)]), classes)


RULES = [
    LabelRules(),
    LabelRules(prob_threshold=0.3),
    LabelRules(prob_threshold=0.2, area_threshold=0.2),
    LabelRules(area_threshold=0.25),
    LabelRules(prob_threshold=0.25, area_threshold=0.3, logit_scale=30.0),
]


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_scores_label_exactly_like_the_full_scores(rules: LabelRules, seed: int) -> None:
    full = distinct_scores(seed=seed)
    compact = CompactScores.from_scores(full, SIZE, rules.logit_scale, probs_bytes=1 << 30)
    assert compact.kept_size == SIZE, "everything kept at the output size: the compact form is exact"
    expected = full.labels(SIZE, 4, rules)
    assert np.array_equal(compact.labels(SIZE, 4, rules), expected)
    if rules.area_threshold:
        assert not np.array_equal(expected, full.labels(SIZE, 4, LabelRules(logit_scale=rules.logit_scale))), (
            "the area rule moved pixels, so their second choices were read from the kept probabilities"
        )


@pytest.mark.parametrize(
    "rules", [LabelRules(prob_threshold=0.5), LabelRules(prob_threshold=0.45, area_threshold=0.2, logit_scale=50.0)]
)
def test_a_query_less_background_class_is_added_alike(rules: LabelRules) -> None:
    full = distinct_scores(classes=4, queries=4)
    compact = CompactScores.from_scores(full, SIZE, rules.logit_scale, probs_bytes=1 << 30)
    expected = full.with_num_classes(5).labels(SIZE, 4, rules)
    with_background = compact.with_num_classes(5)
    assert with_background.num_classes == 5 and not with_background.probs[4].any()
    assert np.array_equal(with_background.labels(SIZE, 4, rules), expected)
    assert 0 < (expected == 4).mean() < 1, "the rules sent some pixels to the added background"


def test_compact_probabilities_are_the_full_ones_at_the_kept_size() -> None:
    full = distinct_scores()
    compact = CompactScores.from_scores(full, SIZE, 40.0, probs_bytes=2 * 5 * 12 * 15)
    assert compact.probs.dtype == np.float16 and compact.probs.nbytes <= 2 * 5 * 12 * 15
    assert compact.size == SIZE and compact.kept_size[0] < SIZE[0]
    expected = full.probabilities(compact.kept_size, 40.0)
    assert np.allclose(compact.probabilities(compact.kept_size, 40.0), expected, atol=1e-3)
    best_prob, best_class = full.best(SIZE, 40.0)
    assert np.array_equal(compact.best_class, best_class) and np.array_equal(compact.best_prob, best_prob)


def test_compact_scores_refuse_what_they_cannot_answer() -> None:
    compact = CompactScores.from_scores(distinct_scores(), SIZE, 40.0, probs_bytes=1 << 30)
    with pytest.raises(InputError, match="logit scale 40"):
        compact.labels(SIZE, 4, LabelRules(logit_scale=30.0))
    with pytest.raises(InputError, match="at 31x24 only, not at 62x48"):
        compact.labels((48, 62), 4, LabelRules())
    with pytest.raises(InputError, match="need a background class"):
        compact.labels(SIZE, None, LabelRules(prob_threshold=0.5))
