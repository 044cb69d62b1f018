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
    builtin_vocabulary,
    top_names,
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
def traced(segmenter):
    """A traced SC-CLIP embedding of a 200x300 image: two 224 windows on a 224x336 canvas."""
    return segmenter.embed_image(_image(200, 300), trace=True)


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
    missing = segmenter.text.uncached(namer.names)  # other tests in this process may have embedded a few names
    assert len(missing) > len(namer.names) // 2
    first = namer.embeddings
    assert first.shape == (len(namer.names), segmenter.model.clip.visual.output_dim)
    assert first.dtype == torch.float32 and torch.allclose(first.norm(dim=1), torch.ones(len(namer.names)))
    assert calls == [missing], "the names not embedded yet, in one call"
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


def test_locate_patch_at_the_corners_of_a_sliding_window_layout(traced):
    assert traced.resized_size == (224, 336) and traced.grid == (14, 14)
    assert traced.windows == [(0, 0, 224, 224), (0, 112, 224, 336)]
    corners = {(0, 0): (0, 0, 0), (299, 199): (1, 13, 13), (299, 0): (1, 0, 13), (0, 199): (0, 13, 0)}
    for (x, y), expected in corners.items():
        location = traced.locate_patch(x, y)
        assert (location.window, location.row, location.column) == expected
        assert location.index == location.row * 14 + location.column
    # In the overlap the window whose centre is nearer wins: x=150 is 168.6 px on the canvas, centres 112 and 224.
    middle = traced.locate_patch(150, 100)
    assert (middle.window, middle.column) == (1, 3)


def test_every_pixel_centre_lies_in_its_patch_on_the_canvas(traced):
    scale_y, scale_x = 224 / 200, 336 / 300
    for y in range(0, 200, 7):
        for x in range(0, 300, 7):
            location = traced.locate_patch(x, y)
            y0, x0, _, _ = traced.windows[location.window]
            v, u = (y + 0.5) * scale_y, (x + 0.5) * scale_x
            assert y0 + 16 * location.row <= v < y0 + 16 * (location.row + 1)
            assert x0 + 16 * location.column <= u < x0 + 16 * (location.column + 1)


def test_locate_patch_in_whole_image_mode_and_on_a_downscaled_input(tiny_model):
    whole = Segmenter(tiny_model, SegmenterConfig(short_side=None, stride=None, templates="simple"))
    embedding = whole.embed_image(_image(40, 50))
    assert embedding.windows == [(0, 0, 48, 64)] and embedding.grid == (3, 4)
    corner = embedding.locate_patch(49, 39)
    assert (corner.window, corner.row, corner.column) == (0, 2, 3)
    capped = Segmenter(tiny_model, SegmenterConfig(short_side=224, max_input_side=256, templates="simple"))
    big = capped.embed_image(_image(400, 600))
    assert big.image.shape[:2] == (400, 600) and big.resized_size == (224, 335)
    far = big.locate_patch(599, 399)
    assert (far.window, far.row, far.column) == (1, 13, 13)


@pytest.mark.parametrize(("x", "y"), [(-1, 0), (0, -0.5), (300, 0), (0, 200)])
def test_points_outside_the_image_are_rejected(traced, x, y):
    with pytest.raises(InputError, match="outside the 300x200 image"):
        traced.locate_patch(x, y)


# Calibrated and vanilla names of one point


def test_name_point_names_the_calibrated_and_the_vanilla_patch(segmenter, traced, monkeypatch):
    namer = PatchNamer(segmenter.text)
    assert len(namer.embeddings) == len(builtin_vocabulary())
    calls = _count_encodings(segmenter.text, monkeypatch)
    named = namer.name_point(traced, 150, 100, k=10, extra_names=["my red kite"])
    location = named.location
    assert (location.window, location.row, location.column) == (1, 7, 3)
    assert len(named.calibrated) == len(named.vanilla) == 10
    assert named.calibrated == namer.name(traced.embeddings[1, 7, 3], k=10, extra_names=["my red kite"])
    vanilla = segmenter.embed_image(_image(200, 300), method="clip").embeddings[1, 7, 3]
    expected = namer.name(vanilla, k=10, extra_names=["my red kite"])
    assert [match.name for match in named.vanilla] == [match.name for match in expected]
    assert [match.cosine for match in named.vanilla] == pytest.approx([m.cosine for m in expected], abs=1e-5)
    assert named.calibrated != named.vanilla
    assert calls == [["my red kite"]], "the vocabulary and the extra name are each encoded once"
    namer.name_point(traced, 10, 10, extra_names=["my red kite"])
    assert len(calls) == 1


def test_name_point_needs_a_trace_and_the_same_weights(segmenter, traced):
    namer = PatchNamer(segmenter.text, ["cat", "dog"])
    with pytest.raises(InputError, match="traced image embedding"):
        namer.name_point(segmenter.embed_image(_image(200, 300)), 10, 10)
    with pytest.raises(InputError, match="other weights"):
        namer.name_point(replace(traced, key=replace(traced.key, model_key="elsewhere")), 10, 10)
