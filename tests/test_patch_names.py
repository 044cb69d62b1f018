"""What is this patch: ranking names by cosine, the namer's one-time text encoding, and point-to-patch mapping."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from scclip_core import (
    InputError,
    NameMatch,
    PatchNamer,
    Segmenter,
    SegmenterConfig,
    Variant,
    builtin_vocabulary,
    locate_patch,
    top_names,
    window_embeddings,
)
from scclip_core.patch_names import unique_names

FAST = SegmenterConfig(short_side=224, max_input_side=512, templates="simple")


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _count_encodings(encoder, monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    original = encoder._encode_names

    def counting(names):
        calls.append(list(names))
        return original(names)

    monkeypatch.setattr(encoder, "_encode_names", counting)
    return calls


@pytest.fixture(scope="module")
def segmenter(tiny_model):
    return Segmenter(tiny_model, FAST)


@pytest.fixture(scope="module")
def pair(segmenter):
    """SC-CLIP and vanilla CLIP embeddings of a 200x300 image: two 224 windows on a 224x336 canvas."""
    return segmenter.set_image_variants(_image(200, 300), [Variant(), Variant("clip")])


# top_names on synthetic embeddings


def test_top_names_ranks_the_matching_one_hot_first():
    names = ["a", "b", "c", "d", "e"]
    matches = top_names(torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0]), torch.eye(5) * 2, names, k=3)
    assert matches[0] == NameMatch("c", 1.0)
    assert [match.name for match in matches] == ["c", "a", "b"]  # equal cosines keep the names' order
    assert [match.cosine for match in matches[1:]] == [0.0, 0.0]


def test_top_names_orders_by_cosine_and_normalises_both_sides():
    text = torch.tensor([[1.0, 0.0], [0.0, 5.0], [-2.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    matches = top_names(torch.tensor([10.0, 0.0], dtype=torch.float16), text, ["x", "y", "z", "w"], k=10)
    assert [match.name for match in matches] == ["x", "w", "y", "z"]  # k beyond the vocabulary: all of it
    assert [match.cosine for match in matches] == pytest.approx([1.0, 2**-0.5, 0.0, -1.0], abs=1e-6)
    assert all(isinstance(match.cosine, float) for match in matches)


@pytest.mark.parametrize(
    ("patch", "text", "names", "k", "message"),
    [
        (torch.ones(3), torch.eye(3), "abc", 0, "k must be"),
        (torch.ones(3), torch.eye(3), "abc", 2.0, "k must be"),
        (torch.ones(1, 3), torch.eye(3), "abc", 1, "one vector"),
        (torch.ones(4), torch.eye(3), "abc", 1, "do not match"),
        (torch.ones(3), torch.eye(3), "ab", 1, "2 names for 3"),
        (torch.tensor([1.0, float("nan"), 0.0]), torch.eye(3), "abc", 1, "non-finite"),
    ],
)
def test_top_names_rejects_bad_input(patch, text, names, k, message):
    with pytest.raises(InputError, match=message):
        top_names(patch, text, list(names), k)


def test_unique_names_collapses_whitespace_and_case():
    assert unique_names(["Sky", " sky ", "blue  sky", "", "  ", "Tree"], exclude=["tree"]) == ("Sky", "blue sky")


# PatchNamer


def test_namer_embeds_its_vocabulary_once(segmenter, monkeypatch):
    calls = _count_encodings(segmenter.text, monkeypatch)
    namer = PatchNamer(segmenter.text)
    assert namer.names == builtin_vocabulary()
    first = namer.embeddings
    assert first.shape == (len(namer.names), segmenter.model.clip.visual.output_dim)
    assert first.dtype == torch.float32 and torch.allclose(first.norm(dim=1), torch.ones(len(namer.names)))
    assert len(calls) == 1 and calls[0] == list(namer.names)
    patch = first[5] + 0.01 * first[7]
    for _ in range(3):
        assert namer.name(patch, k=1)[0].name == namer.names[5]
    assert namer.embeddings is first
    assert len(calls) == 1
    again = PatchNamer(segmenter.text)  # a new namer on the same text encoder reads its cache
    assert torch.equal(again.embeddings, first) and len(calls) == 1
    assert segmenter.text.uncached(namer.names) == []


def test_namer_knows_its_own_names(segmenter):
    namer = PatchNamer(segmenter.text, ["cat", "dog", "Cat ", "bird"])
    assert namer.names == ("cat", "dog", "bird")
    for index, name in enumerate(namer.names):
        best = namer.name(namer.embeddings[index], k=10)
        assert best[0].name == name and best[0].cosine == pytest.approx(1.0, abs=1e-5)
        assert len(best) == 3
        assert [match.cosine for match in best] == sorted((match.cosine for match in best), reverse=True)


def test_extra_names_are_deduplicated_and_encoded_once(segmenter, monkeypatch):
    namer = PatchNamer(segmenter.text, ["cat", "dog"])
    assert len(namer.embeddings) == 2
    calls = _count_encodings(segmenter.text, monkeypatch)
    names, embeddings = namer.vocabulary(["Dog", "zebra crossing", "zebra  crossing", "  "])
    assert names == ("cat", "dog", "zebra crossing")
    assert embeddings.shape[0] == 3 and calls == [["zebra crossing"]]
    zebra = namer.name(embeddings[2], extra_names=["zebra crossing"])
    assert zebra[0].name == "zebra crossing" and len(calls) == 1
    assert namer.vocabulary() == (namer.names, namer.embeddings)
    assert [match.name for match in namer.name(embeddings[2])] != ["zebra crossing"]


def test_empty_vocabulary_is_rejected(segmenter):
    with pytest.raises(InputError, match="empty"):
        PatchNamer(segmenter.text, [" ", ""])


# Points to patches


def test_locate_patch_at_the_corners_of_a_sliding_window_layout(pair):
    embedding = pair[0]
    assert embedding.resized_size == (224, 336)
    assert embedding.windows == [(0, 0, 224, 224), (0, 112, 224, 336)]
    top_left = locate_patch(embedding, 0, 0)
    assert (top_left.window, top_left.row, top_left.col, top_left.grid) == (0, 0, 0, (14, 14))
    assert top_left.patch_index == 0
    assert top_left.window_box == (0, 0, 200, 200)  # scaled back by 200/224
    assert top_left.patch_box[:2] == (0, 0)
    bottom_right = locate_patch(embedding, 299, 199)
    assert (bottom_right.window, bottom_right.row, bottom_right.col) == (1, 13, 13)
    assert bottom_right.patch_index == 14 * 14 - 1
    assert bottom_right.window_box == (0, 100, 200, 300) and bottom_right.patch_box[2:] == (200, 300)
    top_right, bottom_left = locate_patch(embedding, 299, 0), locate_patch(embedding, 0, 199)
    assert (top_right.window, top_right.row, top_right.col) == (1, 0, 13)
    assert (bottom_left.window, bottom_left.row, bottom_left.col) == (0, 13, 0)
    # In the overlap the window whose centre is nearer wins: x=150 is 168.6 px on the canvas, centres 112 and 224.
    middle = locate_patch(embedding, 150, 100)
    assert (middle.window, middle.col) == (1, 3)


def test_every_pixel_lies_in_its_patch_box(pair):
    embedding = pair[0]
    for y in range(0, 200, 7):
        for x in range(0, 300, 7):
            location = locate_patch(embedding, x, y)
            y0, x0, y1, x1 = location.patch_box
            assert y0 <= y < y1 and x0 <= x < x1
            wy0, wx0, wy1, wx1 = location.window_box
            assert wy0 <= y0 and wx0 <= x0 and y1 <= wy1 and x1 <= wx1


def test_locate_patch_in_whole_image_mode_and_on_a_downscaled_input(tiny_model):
    whole = Segmenter(tiny_model, SegmenterConfig(short_side=None, stride=None, templates="simple"))
    embedding = whole.set_image(_image(40, 50))
    assert embedding.windows == [(0, 0, 48, 64)] and embedding.embeddings.shape[1:3] == (3, 4)
    corner = locate_patch(embedding, 49, 39)
    assert (corner.window, corner.row, corner.col) == (0, 2, 3)
    assert corner.patch_box == (32, 48, 48, 64)  # the last cell reaches into the padding
    capped = Segmenter(tiny_model, SegmenterConfig(short_side=224, max_input_side=256, templates="simple"))
    big = capped.set_image(_image(400, 600))
    assert big.image.shape[:2] == (400, 600) and big.resized_size == (224, 335)
    far = locate_patch(big, 599, 399)
    assert (far.window, far.row, far.col) == (1, 13, 13) and far.patch_box[2:] == (400, 600)


@pytest.mark.parametrize(("x", "y"), [(-1, 0), (0, -0.5), (300, 0), (0, 200)])
def test_points_outside_the_image_are_rejected(pair, x, y):
    with pytest.raises(InputError, match="outside the 300x200 image"):
        locate_patch(pair[0], x, y)


# Calibrated and vanilla names of one point


def test_window_embeddings_equal_the_shared_pass(segmenter, pair):
    for window in range(len(pair[0].windows)):
        both = window_embeddings(segmenter, pair[0], window, [Variant(), Variant("clip")])
        assert both.shape == (2, *pair[0].embeddings.shape[1:])
        assert torch.allclose(both[0], pair[0].embeddings[window], atol=1e-5)
        assert torch.allclose(both[1], pair[1].embeddings[window], atol=1e-5)
    vanilla = window_embeddings(segmenter, pair[0], 1)
    assert torch.allclose(vanilla[0], pair[1].embeddings[1], atol=1e-5)


def test_window_embeddings_check_their_embedding(segmenter, tiny_model, pair):
    with pytest.raises(InputError, match="window 2 does not exist"):
        window_embeddings(segmenter, pair[0], 2)
    other = Segmenter(tiny_model, SegmenterConfig(short_side=256, templates="simple"))
    with pytest.raises(InputError, match="other resize or window settings"):
        window_embeddings(other, pair[0], 0)
    with pytest.raises(InputError, match="not the one it was computed from"):
        window_embeddings(segmenter, replace(pair[0], image=_image(200, 300, seed=1)), 0)


def test_name_point_from_two_embeddings_or_on_demand(segmenter, pair, monkeypatch):
    namer = PatchNamer(segmenter.text)
    assert len(namer.embeddings) == len(builtin_vocabulary())
    calls = _count_encodings(segmenter.text, monkeypatch)
    calibrated, vanilla = pair
    named = namer.name_point(calibrated, vanilla, 150, 100, k=10, extra_names=["my red kite"])
    location = named.location
    assert (location.window, location.row, location.col) == (1, 7, 3)
    assert len(named.calibrated) == len(named.vanilla) == 10
    expected = namer.name(calibrated.embeddings[1, 7, 3], k=10, extra_names=["my red kite"])
    assert named.calibrated == expected
    assert named.vanilla == namer.name(vanilla.embeddings[1, 7, 3], k=10, extra_names=["my red kite"])
    assert named.calibrated != named.vanilla
    assert calls == [["my red kite"]]
    on_demand = namer.name_point(calibrated, segmenter, 150, 100, k=10, extra_names=["my red kite"])
    assert on_demand.location == location and on_demand.calibrated == named.calibrated
    assert [match.name for match in on_demand.vanilla] == [match.name for match in named.vanilla]
    assert [match.cosine for match in on_demand.vanilla] == pytest.approx([m.cosine for m in named.vanilla], abs=1e-5)
    assert len(calls) == 1


def test_name_point_refuses_mismatched_embeddings(segmenter, tiny_model, pair):
    namer = PatchNamer(segmenter.text, ["cat", "dog"])
    other_image = segmenter.set_image_variants(_image(200, 300, seed=2), [Variant("clip")])[0]
    with pytest.raises(InputError, match="not of the same image"):
        namer.name_point(pair[0], other_image, 10, 10)
    with pytest.raises(InputError, match="other weights"):
        namer.name_point(replace(pair[0], model_key="elsewhere"), pair[1], 10, 10)
