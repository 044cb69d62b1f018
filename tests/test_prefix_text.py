"""Prefix-shared prompt encoding equals open_clip's `encode_text` of the full 77-token prompts."""

import copy
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP

from scclip_core import TextEmbeddingCache, TextEncoder
from scclip_core.prompt_encoding import SharedPrefixTower
from scclip_core.text import TEMPLATE_SETS, encode_prompts

TRUNCATED = " ".join(["word"] * 90)  # its prompts fill the 77-token context, end token at the last position
NAMES = [
    "cat",
    "traffic light",
    "a very long description of a small brown dog sitting in a sunny garden",
    "crème brûlée, 東京 and ŵëïrd spellings",
    TRUNCATED,
]


def _relative_error(features: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest per-prompt relative error, |f - r| / |r|."""
    return float(((features.float() - reference.float()).norm(dim=-1) / reference.float().norm(dim=-1)).max())


def _encode_both(clip, tokenizer, names, templates, batch_size=512):
    """(prefix-shared, open_clip full-context) features of names x templates, each (N, T, E)."""
    tower = SharedPrefixTower.of(clip)
    assert tower is not None
    tokens = tokenizer([template(name) for name in names for template in templates]).view(
        len(names), len(templates), -1
    )
    with torch.inference_mode():
        shared = tower.encode(tokens, batch_size)
        full = clip.encode_text(tokens.flatten(0, 1)).view(len(names), len(templates), -1)
    return shared, full, tower.split(tokens)


@pytest.fixture(scope="module")
def vit_b16():
    """ViT-B/16's CLIP with random weights (the text tower's form and size, not its values, matter here)."""
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-16-quickgelu", pretrained=None), open_clip.get_tokenizer("ViT-B-16-quickgelu")


@pytest.mark.parametrize("template_set", ["openai", "simple"])
def test_tiny_model_features_equal_full_prompts(tiny_model, template_set):
    templates = TEMPLATE_SETS[template_set]
    shared, full, (prefix_lengths, ends) = _encode_both(tiny_model.clip, tiny_model.tokenizer, NAMES, templates, 7)
    assert _relative_error(shared, full) < 1e-5
    assert int(prefix_lengths.min()) >= 2, "every template shares its start token and at least one word"
    assert bool((ends[NAMES.index(TRUNCATED)] == 76).all()), "the truncated name's end token is the last position"
    assert len(set((ends + 1 - prefix_lengths).flatten().tolist())) >= 4, "prompts of many lengths in one call"


@pytest.mark.parametrize("template_set", ["openai", "simple"])
def test_vit_b16_text_tower_features_equal_full_prompts(vit_b16, template_set):
    clip, tokenizer = vit_b16
    shared, full, _ = _encode_both(clip, tokenizer, ["cat", NAMES[2], TRUNCATED], TEMPLATE_SETS[template_set])
    assert _relative_error(shared, full) < 1e-5


def test_a_single_name_and_no_names(tiny_model):
    templates = TEMPLATE_SETS["openai"]
    shared, full, (prefix_lengths, ends) = _encode_both(tiny_model.clip, tiny_model.tokenizer, ["cat"], templates)
    assert _relative_error(shared, full) < 1e-5
    assert torch.equal(prefix_lengths, ends[0]), "one name: everything up to its end token is the shared prefix"
    tower = SharedPrefixTower.of(tiny_model.clip)
    none = tower.encode(torch.zeros(0, len(templates), 77, dtype=torch.long))
    assert none.shape == (0, len(templates), 64)
    assert TextEncoder(tiny_model, cache=TextEmbeddingCache()).embed([]).numel() == 0


def test_small_batches_give_the_features_of_one_batch(tiny_model):
    templates = TEMPLATE_SETS["simple"]
    tokens = tiny_model.tokenizer([t(name) for name in NAMES for t in templates]).view(len(NAMES), len(templates), -1)
    tower = SharedPrefixTower.of(tiny_model.clip)
    with torch.inference_mode():
        assert _relative_error(tower.encode(tokens, batch_size=1), tower.encode(tokens, batch_size=4096)) < 1e-6


def _shortened_embeddings(model, names, templates):
    """Embeddings as the shortened context computes them (today's path before prefix sharing)."""
    tokens = model.tokenizer([template(name) for name in names for template in templates])
    with torch.inference_mode():
        features = F.normalize(encode_prompts(model.clip, tokens).float(), dim=-1)
    return F.normalize(features.view(len(names), len(templates), -1).mean(dim=1), dim=-1)


@pytest.mark.parametrize("template_set", ["openai", "simple"])
def test_text_encoder_uses_the_shared_prefixes_and_equals_the_shortened_path(
    tiny_model, tmp_path, monkeypatch, template_set
):
    encoder = TextEncoder(tiny_model, templates=template_set, cache=TextEmbeddingCache(tmp_path))
    assert encoder.tower is not None
    monkeypatch.setattr("scclip_core.text.encode_prompts", lambda *args, **kwargs: pytest.fail("shortened path"))
    with pytest.warns(UserWarning, match="truncated"):
        embeddings = encoder.embed(NAMES)
    expected = _shortened_embeddings(tiny_model, NAMES, encoder.templates)
    assert _relative_error(embeddings, expected) < 1e-5
    fresh = TextEncoder(tiny_model, templates=template_set, cache=TextEmbeddingCache(tmp_path))
    monkeypatch.setattr(fresh, "_encode_names", lambda names: pytest.fail(f"re-encoded {names}"))
    assert _relative_error(fresh.embed(NAMES), expected) < 1e-5, "the disk entries, under unchanged keys"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_equals_full_prompts_to_its_rounding(tiny_model, dtype):
    clip = copy.deepcopy(tiny_model.clip).to(dtype)
    shared, full, _ = _encode_both(clip, tiny_model.tokenizer, NAMES, TEMPLATE_SETS["openai"])
    assert shared.dtype == dtype
    assert _relative_error(shared, full) < 4 * torch.finfo(dtype).eps


def test_end_token_pooling_equals_full_prompts(tiny_model):
    clip = copy.deepcopy(tiny_model.clip)
    clip.text_pool_type, clip.text_eos_id = "eos", tiny_model.tokenizer.eot_token_id
    shared, full, _ = _encode_both(clip, tiny_model.tokenizer, NAMES, TEMPLATE_SETS["simple"])
    assert _relative_error(shared, full) < 1e-5


def _custom_text_clip(**text_cfg) -> CustomTextCLIP:
    """A tiny CustomTextCLIP whose text tower is open_clip's TextTransformer with `text_cfg`."""
    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 64}
    text = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2} | text_cfg
    return CustomTextCLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()


def test_a_causal_custom_text_tower_is_shared_too(tiny_model):
    shared, full, _ = _encode_both(_custom_text_clip(), tiny_model.tokenizer, NAMES, TEMPLATE_SETS["simple"])
    assert _relative_error(shared, full) < 1e-5


@pytest.mark.parametrize(
    "text_cfg",
    [
        pytest.param({"no_causal_mask": True, "pool_type": "last"}, id="non-causal"),
        pytest.param({"qk_norm": True}, id="custom-blocks"),
        pytest.param({"embed_cls": True}, id="class-token"),
        pytest.param({"pool_type": "last"}, id="last-token-pool"),
    ],
)
def test_other_text_towers_fall_back_to_open_clips_forward(tiny_model, text_cfg, monkeypatch):
    clip = _custom_text_clip(**text_cfg)
    assert SharedPrefixTower.of(clip) is None
    model = dataclasses.replace(tiny_model, clip=clip, key=f"{tiny_model.key}|other tower")
    encoder = TextEncoder(model, templates="simple", cache=TextEmbeddingCache())
    assert encoder.tower is None
    monkeypatch.setattr(SharedPrefixTower, "encode", lambda *args: pytest.fail("prefix sharing on another tower"))
    embeddings = encoder.embed(["cat", "traffic light"])
    with torch.inference_mode():
        assert (
            _relative_error(embeddings, _shortened_embeddings(model, ["cat", "traffic light"], encoder.templates))
            < 1e-5
        )


def test_a_non_causal_clip_mask_falls_back(tiny_model):
    clip = copy.deepcopy(tiny_model.clip)
    assert isinstance(clip, CLIP) and SharedPrefixTower.of(clip) is not None
    clip.attn_mask = torch.zeros_like(clip.attn_mask)
    assert SharedPrefixTower.of(clip) is None


def test_segmenting_and_patch_naming_encode_their_names_prefix_shared(tiny_model, monkeypatch):
    from scclip_core import Segmenter
    from scclip_core.patch_names import PatchNamer
    from tests.serving import FAST_CONFIG

    encode = SharedPrefixTower.encode
    encoded: list[tuple[int, ...]] = []
    monkeypatch.setattr(
        SharedPrefixTower, "encode", lambda self, *args: encoded.append(args[0].shape) or encode(self, *args)
    )
    monkeypatch.setattr("scclip_core.text.encode_prompts", lambda *args, **kwargs: pytest.fail("shortened path"))
    segmenter = Segmenter(tiny_model, FAST_CONFIG, text_cache=TextEmbeddingCache())
    segmenter.segment(np.zeros((64, 96, 3), np.uint8), "teapot; saucer", background=None)
    assert PatchNamer(segmenter.text, ["cup", "kettle", "table"]).embeddings.shape == (3, 64)
    assert encoded == [(2, 7, 77), (3, 7, 77)]


ODD_NAMES = ["3d printer", "-ish", "'s thing", ".hidden file", "(brackets)", "&amp; co", "<|endoftext|> x", "7"]


def _kept(model, template_set):
    """A fresh encoder's kept prefixes and its tower."""
    encoder = TextEncoder(model, templates=template_set, cache=TextEmbeddingCache())
    kept = encoder.prefixes()
    assert kept is not None and encoder.tower is not None
    return encoder.tower, kept


def _tokens(tokenizer, names, templates):
    return tokenizer([t(name) for name in names for t in templates]).view(len(names), len(templates), -1)


@pytest.mark.parametrize("template_set", ["openai", "simple"])
def test_kept_prefixes_are_each_templates_words_before_the_name(tiny_model, template_set):
    _, kept = _kept(tiny_model, template_set)
    for index, template in enumerate(TEMPLATE_SETS[template_set]):
        before = template("\x01").split("\x01")[0]
        assert before == "" or before.endswith(" "), "CLIP's pre-tokeniser splits at the space before the name"
        expected = tiny_model.tokenizer([before])[0]
        length = int((expected != 0).sum()) - 1  # the start token and the words, not the end token
        assert int(kept.lengths[index]) == length
        assert torch.equal(kept.tokens[index, :length], expected[:length])


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("template_set", ["openai", "simple"])
def test_calls_of_few_names_reuse_the_kept_prefixes_and_equal_full_prompts(
    tiny_model, template_set, chunk, monkeypatch
):
    templates = TEMPLATE_SETS[template_set]
    tower, kept = _kept(tiny_model, template_set)
    monkeypatch.setattr(SharedPrefixTower, "_run_prefixes", lambda *args: pytest.fail("a prefix ran again"))
    names = ODD_NAMES + NAMES
    for start in range(0, len(names), chunk):
        tokens = _tokens(tiny_model.tokenizer, names[start : start + chunk], templates)
        with torch.inference_mode():
            assert bool(kept.fit(tokens, tower.split(tokens)[1], tower.dtype).all())
            shared = tower.encode(tokens, 512, kept)
            full = tiny_model.clip.encode_text(tokens.flatten(0, 1)).view_as(shared)
        assert _relative_error(shared, full) < 1e-5, names[start : start + chunk]


def test_vit_b16_calls_of_few_names_with_kept_prefixes_equal_full_prompts(tiny_model, vit_b16):
    clip, tokenizer = vit_b16
    model = dataclasses.replace(tiny_model, clip=clip, tokenizer=tokenizer, key=f"{tiny_model.key}|vit-b16")
    tower, kept = _kept(model, "openai")
    # 12 layers' keys and values, 80 templates x 9 positions (the longest prefix) x width 512 in float32: ~35 MB
    assert kept.nbytes == 2 * 12 * 80 * 9 * 512 * 4 + kept.tokens.nbytes + kept.lengths.nbytes
    for names in (["cat"], ["3d printer", "-ish"], [NAMES[2], TRUNCATED]):
        tokens = _tokens(tokenizer, names, TEMPLATE_SETS["openai"])
        with torch.inference_mode():
            shared = tower.encode(tokens, 512, kept)
            full = clip.encode_text(tokens.flatten(0, 1)).view_as(shared)
        assert _relative_error(shared, full) < 1e-5, names


def test_a_kept_prefix_that_does_not_fit_gives_way_to_the_calls_own(tiny_model):
    """Prefixes kept from probe names that share their first word "x": they fit only calls whose names do."""
    templates = TEMPLATE_SETS["simple"]
    tower = SharedPrefixTower.of(tiny_model.clip)
    with torch.inference_mode():
        kept = tower.keep_prefixes(_tokens(tiny_model.tokenizer, ["x ray", "x men"], templates))
        for names, fits in ((["x wing", "x files"], True), (["cat", "dog"], False), (["x wing", "cat"], False)):
            tokens = _tokens(tiny_model.tokenizer, names, templates)
            assert bool((kept.fit(tokens, tower.split(tokens)[1], tower.dtype) == fits).all())
            full = tiny_model.clip.encode_text(tokens.flatten(0, 1)).view(len(names), len(templates), -1)
            assert _relative_error(tower.encode(tokens, 512, kept), full) < 1e-5, names
        tokens = _tokens(tiny_model.tokenizer, ["x wing"], templates)
        altered = kept.tokens.clone()
        altered[3, 1] += 1  # one template's kept prefix no longer fits: it runs its own, the others reuse theirs
        one_off = dataclasses.replace(kept, tokens=altered)
        ends = tower.split(tokens)[1]
        assert one_off.fit(tokens, ends, tower.dtype).tolist() == [index != 3 for index in range(len(templates))]
        full = tiny_model.clip.encode_text(tokens.flatten(0, 1)).view(1, len(templates), -1)
        assert _relative_error(tower.encode(tokens, 512, one_off), full) < 1e-5
        assert not bool(kept.fit(tokens, kept.lengths[None] - 1, tower.dtype).any()), "pooled inside the prefix"
        assert not bool(kept.fit(tokens, ends, torch.float16).any()), "kept in another dtype"


def test_an_encoder_keeps_its_prefixes_across_calls_and_threads(tiny_model, monkeypatch):
    runs = SharedPrefixTower._run_prefixes
    counted: list[int] = []
    monkeypatch.setattr(
        SharedPrefixTower, "_run_prefixes", lambda self, *args: counted.append(len(args[0])) or runs(self, *args)
    )
    encoder = TextEncoder(tiny_model, templates="openai", cache=TextEmbeddingCache())
    barrier = threading.Barrier(4)

    def first_call() -> object:
        barrier.wait()
        return encoder.prefixes()

    with ThreadPoolExecutor(4) as pool:
        kept = list(pool.map(lambda _: first_call(), range(4)))
    assert all(k is kept[0] for k in kept) and counted == [80], "made once, by one of the threads"
    names = ODD_NAMES[:5]
    for name in names:
        encoder.embed([name])
    assert counted == [80], "later calls reuse the kept prefixes"
    cold = TextEncoder(tiny_model, templates="openai", cache=TextEmbeddingCache())
    monkeypatch.setattr(cold, "prefixes", lambda: None)
    assert _relative_error(encoder.embed(names), cold.embed(names)) < 1e-5
    assert counted[1:] == [80], "the cold encoder ran the shared prefixes of its one call"
