"""Class parsing, prompt encoding with a shortened context, and the text-embedding cache."""

import pytest
import torch
import torch.nn.functional as F

from scclip_core import DEFAULT_BACKGROUND_WORDS, MAX_CLASSES, InputError, TextEmbeddingCache, TextEncoder, Vocabulary, parse_classes
from scclip_core.text import encode_prompts, parse_words


def test_classes_synonyms_and_background_last():
    vocabulary = parse_classes("sky, cloud; grass\n person ;")
    assert vocabulary.classes[:3] == (("sky", "cloud"), ("grass",), ("person",))
    assert vocabulary.background_index == 3
    assert vocabulary.names == ["sky", "grass", "person", "background"]
    background_words = vocabulary.classes[3]
    assert "sky" not in background_words and "grass" not in background_words and "wall" in background_words
    assert vocabulary.query_classes[:4] == [0, 0, 1, 2]
    assert "cloud" not in background_words
    assert len(vocabulary.queries) == 4 + len(DEFAULT_BACKGROUND_WORDS) - 3


def test_no_background_and_user_background_class():
    assert parse_classes("cat; dog", background=None).background_index is None
    assert parse_classes("cat; dog", background=()).names == ["cat", "dog"]
    vocabulary = parse_classes("background; cat")
    assert vocabulary.background_index == 0 and vocabulary.classes[0] == ("background",)


@pytest.mark.parametrize(
    "text, message",
    [("", "no classes"), (" ;\n ; ,, ", "no classes"), ("cat; Cat", "listed twice"), ("x" * 300, "characters long"),
     (";".join(f"c{i}" for i in range(300)), "at most")],
)
def test_bad_class_text_gets_a_clear_message(text, message):
    with pytest.raises(InputError, match=message):
        parse_classes(text)


def test_class_limit_counts_the_background():
    names = ";".join(f"c{i}" for i in range(MAX_CLASSES))
    assert len(parse_classes(names, background=None).classes) == MAX_CLASSES
    with pytest.raises(InputError):
        parse_classes(names)


def test_control_characters_and_spaces_are_cleaned():
    assert parse_classes("  big\t  dog \x00; cat", background=None).classes == (("big dog",), ("cat",))
    assert parse_words("sky, wall;\nfloor,,") == ("sky", "wall", "floor")


def test_vocabulary_needs_a_query():
    with pytest.raises(InputError):
        Vocabulary(((),), background_index=0)
    assert Vocabulary((("cat",),)).with_background().names == ["cat", "background"]


def test_shortened_context_equals_full_length_encoding(tiny_model):
    tokens = tiny_model.tokenizer(["a photo of a cat.", "a very long description of a small brown dog in a garden."])
    with torch.inference_mode():
        full = tiny_model.clip.encode_text(tokens)
        short = encode_prompts(tiny_model.clip, tokens)
    assert torch.allclose(short, full, atol=1e-5)


def test_embeddings_average_normalised_templates(tiny_model):
    encoder = TextEncoder(tiny_model, templates="simple")
    embedding = encoder.embed(["cat"])[0]
    prompts = [template("cat") for template in encoder.templates]
    with torch.inference_mode():
        features = F.normalize(tiny_model.clip.encode_text(tiny_model.tokenizer(prompts)), dim=-1)
    assert torch.allclose(embedding, F.normalize(features.mean(0), dim=0), atol=1e-5)
    assert embedding.norm() == pytest.approx(1.0, abs=1e-5)


def test_cache_makes_repeated_names_free_and_persists_on_disk(tiny_model, tmp_path, monkeypatch):
    cache = TextEmbeddingCache(tmp_path)
    encoder = TextEncoder(tiny_model, templates="simple", cache=cache)
    first = encoder.embed(["cat", "dog", "cat"])
    assert torch.equal(first[0], first[2]) and len(cache) == 2
    calls = []
    monkeypatch.setattr(encoder, "_encode_names", lambda names: calls.append(names) or torch.zeros(len(names), 64))
    assert torch.equal(encoder.embed(["dog"])[0], first[1]) and not calls
    fresh = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(tmp_path))
    monkeypatch.setattr(fresh, "_encode_names", lambda names: calls.append(names) or torch.zeros(len(names), 64))
    assert torch.equal(fresh.embed(["cat"])[0], first[0]) and not calls
    other_templates = TextEncoder(tiny_model, templates="openai", cache=cache)
    monkeypatch.setattr(other_templates, "_encode_names", lambda names: calls.append(names) or torch.zeros(len(names), 64))
    other_templates.embed(["cat"])
    assert calls == [["cat"]]


def test_overlong_names_are_truncated_with_a_warning(tiny_model):
    encoder = TextEncoder(tiny_model, templates="simple")
    notices: list[str] = []
    with pytest.warns(UserWarning, match="truncated"):
        embedding = encoder.embed([" ".join(["word"] * 90)], notices)
    assert torch.isfinite(embedding).all() and notices
