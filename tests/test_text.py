"""Class parsing, prompt encoding with a shortened context, and the text-embedding cache."""

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scclip_core import (
    DEFAULT_BACKGROUND_WORDS,
    InputError,
    TextEmbeddingCache,
    TextEncoder,
    Vocabulary,
    load_model,
    parse_classes,
)
from scclip_core.cache import CacheWarning, file_fingerprint
from scclip_core.config import TEMPLATE_SET_NAMES
from scclip_core.text import ENTRY_SUFFIX, TEMPLATE_SETS, encode_prompts, parse_words

from .weights import save_checkpoint


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
    [("", "no classes"), (" ;\n ; ,, ", "no classes"), ("cat; Cat", "listed twice"), ("x" * 300, "characters long")],
)
def test_bad_class_text_gets_a_clear_message(text, message):
    with pytest.raises(InputError, match=message):
        parse_classes(text)


def test_vocabularies_of_any_size_are_accepted():
    vocabulary = parse_classes("\n".join(f"c{i}, synonym {i}" for i in range(1000)))
    assert len(vocabulary.classes) == 1001 and vocabulary.background_index == 1000
    assert len(vocabulary.queries) == 2000 + len(DEFAULT_BACKGROUND_WORDS)


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
    monkeypatch.setattr(
        other_templates, "_encode_names", lambda names: calls.append(names) or torch.zeros(len(names), 64)
    )
    other_templates.embed(["cat"])
    assert calls == [["cat"]]


def test_overlong_names_are_truncated_with_a_warning(tiny_model):
    encoder = TextEncoder(tiny_model, templates="simple")
    notices: list[str] = []
    with pytest.warns(UserWarning, match="truncated"):
        embedding = encoder.embed([" ".join(["word"] * 90)], notices)
    assert torch.isfinite(embedding).all() and notices


def test_default_cache_lives_under_scclip_cache(private_cache):
    cache = TextEmbeddingCache.default()
    assert cache.directory == private_cache / "text-embeddings"
    cache.put(("model", "simple", "cat"), torch.ones(4))
    assert len(list(private_cache.glob(f"text-embeddings/*/*{ENTRY_SUFFIX}"))) == 1


def test_cache_key_is_the_content_of_the_weights(tmp_path):
    torch.manual_seed(0)
    first = load_model("tiny-test", weights="random", device="cpu")
    torch.manual_seed(0)
    same_values = load_model("tiny-test", weights="random", device="cpu")
    torch.manual_seed(1)
    other_values = load_model("tiny-test", weights="random", device="cpu")
    assert first.key == same_values.key != other_values.key
    path = save_checkpoint(first.clip, tmp_path / "tiny.bin", "open_clip")
    copy = tmp_path / "copy" / "tiny.bin"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    from_file, from_copy = load_model("tiny-test", weights=str(path)), load_model("tiny-test", weights=str(copy))
    assert from_file.key == from_copy.key and from_file.key != first.key
    torch.save({"other": torch.zeros(1)}, path)
    assert file_fingerprint(path) != file_fingerprint(copy)


def test_second_encoder_reads_every_name_from_disk(tiny_model, tmp_path, monkeypatch):
    names = ["cat", "dog", "traffic light"]
    first = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(tmp_path)).embed(names)
    second = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(tmp_path))
    monkeypatch.setattr(second, "_encode_names", lambda names: pytest.fail(f"re-encoded {names}"))
    assert torch.equal(second.embed(names), first)


def test_concurrent_writers_leave_whole_files_and_no_temporaries(tmp_path):
    caches = [TextEmbeddingCache(tmp_path) for _ in range(8)]
    values = [torch.full((512,), float(index)) for index in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda pair: [pair[0].put(("m", "t", f"name{k}"), pair[1]) for k in range(20)], zip(caches, values)
            )
        )
    assert not list(tmp_path.rglob("*.tmp"))
    reader = TextEmbeddingCache(tmp_path)
    for k in range(20):
        value = reader.get(("m", "t", f"name{k}"))
        assert value.shape == (512,) and bool((value == value[0]).all())


def test_disk_cache_stays_under_its_size_bound_dropping_the_oldest(tmp_path):
    cache = TextEmbeddingCache(tmp_path, max_bytes=40_000)
    for index in range(60):
        cache.put(("m", "t", f"name{index}"), torch.randn(512))
        os.utime(cache._file(tmp_path, ("m", "t", f"name{index}")), ns=(index * 10**9, index * 10**9))
    cache.prune()
    sizes = [path.stat().st_size for path in tmp_path.glob(f"*/*{ENTRY_SUFFIX}")]
    assert 0 < sum(sizes) <= 40_000
    fresh = TextEmbeddingCache(tmp_path)
    assert fresh.get(("m", "t", "name59")) is not None and fresh.get(("m", "t", "name0")) is None


def test_unwritable_cache_folder_falls_back_to_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="memory only"):
        cache = TextEmbeddingCache(blocker / "cache")
    cache.put(("m", "t", "cat"), torch.ones(3))
    assert cache.directory is None and torch.equal(cache.get(("m", "t", "cat")), torch.ones(3))


def test_every_template_set_name_has_its_templates(tiny_model):
    assert tuple(TEMPLATE_SETS) == TEMPLATE_SET_NAMES
    for name in TEMPLATE_SET_NAMES:
        assert TextEncoder(tiny_model, templates=name).templates == TEMPLATE_SETS[name]
    with pytest.raises(InputError, match="templates must be one of"):
        TextEncoder(tiny_model, templates="imagenet")


def test_more_names_than_the_memory_cache_holds_still_embed(tiny_model):
    small = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(max_entries=1))
    roomy = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache())
    names = ["cat", "dog", "bird", "cat"]
    torch.testing.assert_close(small.embed(names), roomy.embed(names))


def test_entries_of_the_older_npy_format_are_a_quiet_miss_and_pruned(tmp_path):
    key = ("m", "t", "cat")
    cache = TextEmbeddingCache(tmp_path, max_bytes=1)
    old = cache._file(tmp_path, key).with_suffix(".npy")
    old.parent.mkdir(parents=True)
    np.save(old, np.ones(4, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(key, 4) is None
    cache.prune()
    assert not old.exists()


def test_a_cached_entry_of_any_width_is_served_when_no_width_is_asked(tmp_path):
    TextEmbeddingCache(tmp_path).put(("m", "t", "cat"), torch.ones(5))
    assert torch.equal(TextEmbeddingCache(tmp_path).get(("m", "t", "cat")), torch.ones(5))
    with pytest.warns(CacheWarning, match="5 values, not the model's 4"):
        assert TextEmbeddingCache(tmp_path).get(("m", "t", "cat"), 4) is None


@pytest.mark.parametrize("memo", ["[1]", '{"digest": 5}', "{", ""])
def test_a_damaged_fingerprint_memo_is_hashed_again(tmp_path, memo):
    weights, memos = tmp_path / "weights.bin", tmp_path / "memo"
    weights.write_bytes(b"weights")
    expected = file_fingerprint(weights)
    file_fingerprint(weights, memos)
    (written,) = memos.iterdir()
    written.write_text(memo)
    assert file_fingerprint(weights, memos) == expected
    assert json.loads(written.read_text())["digest"] == expected
