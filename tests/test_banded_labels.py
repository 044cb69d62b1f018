"""The banded labels (`PixelScores.labels`, `CompactScores`) equal, pixel for pixel, a plain whole-image reference
of the computation they replaced: both bilinear passes at the output size, the softmax over all queries, the
synonym max by `scatter_reduce`, the argmax, and the area rule's second pass over every class."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scclip_core import LabelRules
from scclip_core.scores import AxisResampling, CompactScores, PixelScores, small_classes, softmax_width


def upsampled(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) at `size` as two gathers and lerps over the whole image."""
    rows = AxisResampling.bilinear(size[0], logits.shape[1], logits.device)
    columns = AxisResampling.bilinear(size[1], logits.shape[2], logits.device)
    logits = torch.lerp(logits[:, rows.low], logits[:, rows.high], rows.weight.view(1, -1, 1))
    return torch.lerp(logits[:, :, columns.low], logits[:, :, columns.high], columns.weight)


def reference_probabilities(scores: PixelScores, size: tuple[int, int], logit_scale: float) -> torch.Tensor:
    """Class probabilities (C, H, W) of the whole image at once. The softmax runs on pixels padded to
    `softmax_width`: torch's CPU softmax gives the last pixels of each thread's share a scalar path with its own
    rounding, which the old banded code also met at the end of some bands and the new code never meets."""
    queries = upsampled(scores.logits, size).reshape(scores.logits.shape[0], -1)
    padded = torch.zeros(queries.shape[0], softmax_width(queries.shape[1], queries.device))
    padded[:, : queries.shape[1]] = logit_scale * queries
    query_probs = padded.softmax(dim=0)[:, : queries.shape[1]].reshape(-1, *size)
    index = scores.query_classes.view(-1, 1, 1).expand_as(query_probs)
    probs = torch.zeros((scores.num_classes, *size))
    return probs.scatter_reduce_(0, index, query_probs, reduce="amax", include_self=True)


def reference_labels(scores: PixelScores, size: tuple[int, int], background: int, rules: LabelRules) -> np.ndarray:
    """Argmax, then the area rule (small classes zeroed for their pixels), then the probability rule."""
    probs = reference_probabilities(scores, size, rules.logit_scale)
    best, labels = probs.max(dim=0)
    if rules.area_threshold:
        areas = np.bincount(labels.numpy().ravel(), minlength=scores.num_classes)
        small = torch.from_numpy(small_classes(areas, background, rules.area_threshold))
        second, second_class = probs.masked_fill(small.view(-1, 1, 1), 0.0).max(dim=0)
        moved = small[labels]
        best, labels = torch.where(moved, second, best), torch.where(moved, second_class, labels)
    if rules.prob_threshold:
        labels[best < rules.prob_threshold] = background
    return labels.numpy()


def random_scores(query_classes: list[int], num_classes: int, working: tuple[int, int], seed: int) -> PixelScores:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.rand(len(query_classes), *working, generator=generator) * 0.2
    return PixelScores(logits, torch.tensor(query_classes), num_classes)


VOCABULARIES = {
    # synonyms side by side, a background run of three words (class 4)
    "synonyms": ([0, 1, 2, 2, 3, 4, 4, 4], 5),
    # 300 classes (16-bit labels); class 7 has two synonyms far apart, class 299 (background) has none
    "many": ([*range(299), 7, 7, 150], 300),
}
SIZES = [
    ((9, 13), (40, 57)),
    ((7, 11), (23, 29)),
    ((12, 16), (12, 16)),
    ((20, 30), (9, 13)),
    ((1, 5), (3, 17)),
    ((6, 1), (19, 2)),
]
RULES = [
    LabelRules(),
    LabelRules(prob_threshold=0.3),
    LabelRules(area_threshold=0.2),
    LabelRules(prob_threshold=0.25, area_threshold=0.3, logit_scale=30.0),
    LabelRules(prob_threshold=0.2, area_threshold=0.05),
]


@pytest.mark.parametrize("vocabulary", sorted(VOCABULARIES))
@pytest.mark.parametrize("working, size", SIZES)
@pytest.mark.parametrize("rules", RULES)
def test_banded_labels_equal_the_whole_image_reference(vocabulary, working, size, rules):
    query_classes, num_classes = VOCABULARIES[vocabulary]
    scores = random_scores(query_classes, num_classes, working, seed=len(query_classes) + size[1])
    background = num_classes - 1
    expected = reference_labels(scores, size, background, rules)
    assert np.array_equal(scores.labels(size, background, rules), expected)


@pytest.mark.parametrize("rows_per_band", [1, 2, 7, 1000])
def test_the_labels_do_not_depend_on_the_bands_or_the_threads(monkeypatch, rows_per_band):
    scores = random_scores(*VOCABULARIES["synonyms"], (9, 13), seed=3)
    rules = LabelRules(prob_threshold=0.25, area_threshold=0.3)
    expected = reference_labels(scores, (41, 53), 4, rules)
    monkeypatch.setattr(PixelScores, "band_rows", lambda self, width: rows_per_band)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = scores.labels((41, 53), 4, rules)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(single, expected) and np.array_equal(scores.labels((41, 53), 4, rules), expected)


def test_the_rules_act_in_these_cases():
    """The equality above is not vacuous: the area rule moves pixels, to runner-ups and (with many small classes)
    to second choices that need every class's probabilities, and the probability rule rejects some."""
    for vocabulary, rules in [("synonyms", RULES[2]), ("many", RULES[4])]:
        query_classes, num_classes = VOCABULARIES[vocabulary]
        scores = random_scores(query_classes, num_classes, (9, 13), seed=len(query_classes) + 57)
        plain = reference_labels(scores, (40, 57), num_classes - 1, LabelRules(logit_scale=rules.logit_scale))
        ruled = reference_labels(scores, (40, 57), num_classes - 1, rules)
        assert (plain != ruled).mean() > 0.05
    probs = reference_probabilities(scores, (40, 57), 40.0)
    top2 = probs.topk(2, dim=0).indices
    small = small_classes(np.bincount(plain.ravel(), minlength=300), 299, 0.05)
    assert small[top2.numpy()].all(axis=0).any(), "some pixels' two best classes are both dropped"


def test_probabilities_and_best_equal_the_reference_bit_for_bit():
    scores = random_scores(*VOCABULARIES["synonyms"], (7, 11), seed=5)
    expected = reference_probabilities(scores, (23, 29), 40.0)
    assert torch.equal(torch.from_numpy(scores.probabilities((23, 29), 40.0)), expected)
    best_prob, best_class = scores.best((23, 29), 40.0)
    best, labels = expected.max(dim=0)
    assert np.array_equal(best_prob, best.numpy()) and np.array_equal(best_class, labels.numpy())
    assert torch.allclose(
        upsampled(scores.logits, (23, 29)),
        F.interpolate(scores.logits[None], size=(23, 29), mode="bilinear", align_corners=False)[0],
        atol=1e-6,
    ), "the reference's resampling is bilinear"


@pytest.mark.parametrize("rules", [LabelRules(), LabelRules(prob_threshold=0.3), LabelRules(prob_threshold=0.45)])
def test_compact_scores_label_like_the_reference(rules):
    """Without the area rule the compact form labels from its exact float32 best probabilities and classes."""
    scores = random_scores(*VOCABULARIES["many"], (9, 13), seed=11)
    compact = CompactScores.from_scores(scores, (40, 57), rules.logit_scale, probs_bytes=1 << 20)
    assert np.array_equal(compact.labels((40, 57), 299, rules), reference_labels(scores, (40, 57), 299, rules))


def test_ties_go_to_the_lowest_class_and_a_probability_at_the_threshold_is_kept():
    logits = torch.zeros(5, 4, 6)
    logits[1] = logits[3] = 0.3  # classes 1 and 2 tie everywhere, above the rest
    logits[4] = 0.3  # a second synonym of class 2 equal to its first
    logits[0, :, :3] = 0.6  # class 0 wins the left half
    scores = PixelScores(logits, torch.tensor([0, 1, 3, 2, 2]), 4)
    size = (9, 14)
    labels = scores.labels(size, 3, LabelRules())
    assert np.array_equal(labels, reference_labels(scores, size, 3, LabelRules()))
    assert set(np.unique(labels)) == {0, 1}, "the tie between classes 1 and 2 goes to class 1"
    pair = PixelScores(torch.zeros(2, 3, 3), torch.tensor([0, 1]), 3)
    assert (pair.labels((5, 5), 2, LabelRules(prob_threshold=0.5)) == 0).all(), "0.5 is not below 0.5"
    assert (pair.labels((5, 5), 2, LabelRules(prob_threshold=0.5001)) == 2).all()


def test_bands_on_worker_threads_leave_torch_thread_count_as_it_was(monkeypatch):
    def fresh_thread_count() -> int:
        counts: list[int] = []
        worker = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
        worker.start()
        worker.join()
        return counts[0]

    monkeypatch.setattr(PixelScores, "band_rows", lambda self, width: 7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        scores = random_scores(*VOCABULARIES["synonyms"], (9, 13), seed=4)
        labels = scores.labels((300, 40), 4, LabelRules(prob_threshold=0.25, area_threshold=0.3))
        assert np.array_equal(labels, reference_labels(scores, (300, 40), 4, LabelRules(0.25, 0.3)))
        assert torch.get_num_threads() == 3 and fresh_thread_count() == 3
    finally:
        torch.set_num_threads(threads)
