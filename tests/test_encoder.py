"""The dense encoder: parity with the official code, stage flags, methods, batching, odd crops, trace.

The parity checks need the fixtures in ../shared/fixtures; every other test runs on the tiny random model (the same
tower layout as the fixtures) and synthetic crops, so a clone without ../shared runs them too.
"""

import dataclasses

import pytest
import torch
from open_clip.model import CLIPVisionCfg, _build_vision_tower

from scclip_core import METHODS, CalibrationParams, InputError, LayerConfig, Stages, ablation_variants, encode_dense
from scclip_core import encoder as encoder_module
from scclip_core.calibration import squared_distances
from scclip_core.encoder import _positional_embedding, _run_frozen_blocks, _stem
from scclip_core.methods.resclip import ResclipParams


def _official_tower(fixture: dict) -> torch.nn.Module:
    visual = _build_vision_tower(
        fixture["embed_dim"], CLIPVisionCfg(**fixture["vision_cfg"]), quick_gelu=fixture["quick_gelu"]
    )
    visual.load_state_dict(fixture["visual_state_dict"], strict=True)
    return visual.eval()


def _synthetic_crops() -> torch.Tensor:
    """Three normalised 224 crops like the fixture's: noise, four flat quadrants, a gradient with two blobs."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 224, 224, generator=generator)
    colours = torch.randn(4, 3, generator=generator)
    quadrants = colours.T.reshape(3, 2, 2).repeat_interleave(112, dim=1).repeat_interleave(112, dim=2)
    ramp = torch.linspace(-2, 2, 224)
    gradient = (ramp[None, :, None] + ramp[None, None, :]).expand(3, -1, -1).clone()
    gradient[:, 40:80, 40:80] = 2.5
    gradient[:, 150:190, 120:170] = -2.5
    return torch.stack([noise, quadrants, gradient])


@pytest.fixture(scope="module")
def tower(tiny_model):
    return tiny_model.visual


@pytest.fixture(scope="module")
def layers(tiny_model):
    return tiny_model.layers


@pytest.fixture(scope="module")
def images():
    return _synthetic_crops()


@pytest.fixture(scope="module")
def full_output(tower, images, layers):
    return encode_dense(tower, images, layers=layers, trace=True)


@pytest.fixture(scope="module")
def parity_tower(parity_fixture):
    return _official_tower(parity_fixture)


@pytest.fixture(scope="module")
def parity_output(parity_tower, parity_fixture):
    layers = LayerConfig(**parity_fixture["scclip_layers"])
    return encode_dense(parity_tower, parity_fixture["images"], layers=layers, trace=True)


def test_parity_with_the_official_implementation(parity_output, parity_fixture):
    expected = parity_fixture["expected_patch_embeddings"]
    got = parity_output.patch_embeddings.reshape(expected.shape)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_parity_anomaly_tokens_and_lof_scores(parity_output, parity_fixture):
    for crop, expected in zip(parity_output.trace, parity_fixture["expected_anomaly_indices"]):
        assert crop.anomaly_indices.tolist() == expected.tolist()
    scores = torch.stack([crop.lof_scores for crop in parity_output.trace])
    assert torch.allclose(scores, parity_fixture["expected_lof_scores"], rtol=1e-4, atol=1e-5)


def test_parity_one_crop_at_a_time(parity_tower, parity_output, parity_fixture):
    """The official code runs one crop at a time; the batched encoder gives each crop the same result."""
    layers = LayerConfig(**parity_fixture["scclip_layers"])
    for index, crop in enumerate(parity_fixture["images"]):
        single = encode_dense(parity_tower, crop[None], layers=layers).patch_embeddings
        assert torch.allclose(single[0], parity_output.patch_embeddings[index], atol=1e-5)


@pytest.fixture(scope="module")
def tower_448(parity_fixture_448):
    return _official_tower(parity_fixture_448)


@pytest.fixture(scope="module")
def output_448(tower_448, parity_fixture_448):
    layers = LayerConfig(**parity_fixture_448["scclip_layers"])
    return encode_dense(tower_448, parity_fixture_448["images"], layers=layers, trace=True)


def test_parity_at_448_where_the_positional_embedding_is_resized(output_448, parity_fixture_448):
    expected = parity_fixture_448["expected_patch_embeddings"]
    got = output_448.patch_embeddings.reshape(expected.shape)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    for crop, indices in zip(output_448.trace, parity_fixture_448["expected_anomaly_indices"]):
        assert crop.grid == (28, 28)
        assert crop.anomaly_indices.tolist() == indices.tolist()


def test_parity_at_448_lof_scores_wherever_the_kth_neighbour_is_unambiguous(tower_448, output_448, parity_fixture_448):
    """Where the 30th and 31st nearest neighbours are equally far to float32 precision, which one counts is
    rounding (in the official code too) and the score may differ; everywhere else it must match."""
    layers = LayerConfig(**parity_fixture_448["scclip_layers"])
    with torch.inference_mode():
        tokens, _ = _stem(tower_448, parity_fixture_448["images"])
        penultimate = _run_frozen_blocks(tower_448, tokens, layers, keep_multi_level=False, trace=False).penultimate
    distances = squared_distances(penultimate[:, 1:].double())
    distances.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    nearest = distances.topk(31, dim=2, largest=False).values
    tied = nearest[..., 30] - nearest[..., 29] <= 3e-5 * nearest[..., 29]
    scores = torch.stack([crop.lof_scores for crop in output_448.trace])
    close = torch.isclose(scores, parity_fixture_448["expected_lof_scores"], rtol=1e-4, atol=1e-5)
    assert int(tied.sum()) <= 15
    assert close[~tied].all()


def test_positional_embedding_is_kept_at_the_native_grid_and_resized_to_any_other(tower):
    native = tower.positional_embedding
    assert _positional_embedding(tower, (14, 14)) is native
    for grid in ((28, 28), (21, 21), (10, 18), (1, 1)):
        resized = _positional_embedding(tower, grid)
        assert resized.shape == (1 + grid[0] * grid[1], native.shape[1])
        assert torch.equal(resized[0], native[0])


def test_batched_crops_equal_one_crop_at_a_time(tower, images, layers, full_output):
    for index in range(images.shape[0]):
        single = encode_dense(tower, images[index : index + 1], layers=layers).patch_embeddings
        assert torch.allclose(single[0], full_output.patch_embeddings[index], atol=1e-5)


def test_trace_changes_nothing_in_the_embeddings(tower, images, layers, full_output):
    plain = encode_dense(tower, images, layers=layers)
    assert plain.trace is None
    assert torch.allclose(plain.patch_embeddings, full_output.patch_embeddings, atol=1e-6)


def test_trace_carries_vanilla_clip_patch_embeddings(tower, images, layers, full_output):
    """What a patch matches before calibration: the trace's vanilla embeddings are CLIP's own, normalised."""
    vanilla = encode_dense(tower, images, layers=layers, method="clip").patch_embeddings
    for index, crop in enumerate(full_output.trace):
        expected = torch.nn.functional.normalize(vanilla[index].reshape(-1, vanilla.shape[-1]).float(), dim=-1)
        assert crop.vanilla_embeddings.shape == expected.shape
        assert torch.allclose(crop.vanilla_embeddings, expected, atol=1e-5)


@pytest.mark.parametrize("stage", Stages.names())
def test_each_stage_flag_changes_the_output(tower, images, layers, full_output, stage):
    output = encode_dense(tower, images, layers=layers, stages=Stages.without(stage))
    assert (output.patch_embeddings - full_output.patch_embeddings).abs().max() > 1e-3


def test_hyperparameters_are_honoured(tower, images, layers, full_output):
    for params in (
        CalibrationParams(beta=0.2),
        CalibrationParams(prior_temperature=1.0),
        CalibrationParams(prior_mix=0.2),
        CalibrationParams(lof_k=10),
        CalibrationParams(contamination=0.1),
        CalibrationParams(detector="l2norm"),
    ):
        output = encode_dense(tower, images, layers=layers, params=params)
        assert (output.patch_embeddings - full_output.patch_embeddings).abs().max() > 1e-4, params
    heavier_cls = dataclasses.replace(layers, res_cls=0.9)
    output = encode_dense(tower, images, layers=heavier_cls)
    assert (output.patch_embeddings - full_output.patch_embeddings).abs().max() > 1e-3


def test_multi_level_features_are_the_plain_sum_of_the_chosen_blocks(tower, images, layers):
    with torch.inference_mode():
        tokens, _ = _stem(tower, images)
        features = _run_frozen_blocks(tower, tokens, layers, keep_multi_level=True, trace=True)
        outputs, x = [], tokens
        for block in tower.transformer.resblocks[:-1]:
            x = block(x)
            outputs.append(x)
    expected = torch.stack(outputs[layers.multi_start_idx : layers.multi_end_idx]).sum(0)
    assert torch.allclose(features.multi_level_sum, expected, atol=1e-5)
    assert torch.equal(features.mid, outputs[layers.pre_adjust_idx])
    assert torch.equal(features.shallow, outputs[layers.post_adjust_idx])
    assert features.token_norms.shape == (images.shape[0], len(outputs), 196)


def test_all_stages_off_is_the_plain_attention_only_block(tower, images, layers):
    off = Stages(**{name: False for name in Stages.names()})
    output = encode_dense(tower, images, layers=layers, stages=off)
    with torch.inference_mode():
        tokens, _ = _stem(tower, images)
        for block in tower.transformer.resblocks[:-1]:
            tokens = block(tokens)
        last = tower.transformer.resblocks[-1]
        patches = last.ln_1(tokens[:, 1:])
        q, k, v = torch.nn.functional.linear(patches, last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, -1)
        num_heads, head_width = last.attn.num_heads, last.attn.head_dim
        heads = lambda t: t.view(t.shape[0], t.shape[1], num_heads, head_width).transpose(1, 2)  # noqa: E731
        attention = (heads(k) @ heads(k).transpose(-2, -1) / head_width**0.5).softmax(-1) @ heads(v)
        out = last.attn.out_proj(attention.transpose(1, 2).reshape(patches.shape)) + layers.res_cls * tokens[:, :1]
        expected = tower.ln_post(out) @ tower.proj
    assert torch.allclose(output.patch_embeddings.reshape(expected.shape), expected, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size", [(224, 224), (160, 288), (96, 96)])
def test_every_method_runs_on_batches_and_odd_crop_sizes(tower, layers, method, size):
    images = torch.randn(2, 3, *size)
    output = encode_dense(tower, images, layers=layers, method=method, trace=True)
    grid = (size[0] // 16, size[1] // 16)
    assert output.patch_embeddings.shape == (2, *grid, 64)
    assert torch.isfinite(output.patch_embeddings).all()
    n = grid[0] * grid[1]
    crop = output.trace[1]
    assert crop.grid == grid
    assert crop.attention_calibrated.shape == (n, n) and crop.attention_uncalibrated.shape == (n, n)
    row_mass = crop.attention_calibrated.sum(-1)
    if method in ("sc-clip", "maskclip"):
        assert torch.allclose(row_mass, torch.ones(n), atol=1e-4)
    else:
        # SCLIP adds two softmaxes; ResCLIP's RCS scales its mix by tau (rows sum to tau, at most).
        bound = {"sclip": 2.0, "resclip": ResclipParams().rcs_weights[0]}.get(method, 1.0)
        assert (row_mass > 0).all() and (row_mass <= bound + 1e-4).all()
    assert crop.token_norms.shape == (12, n)


def test_methods_differ_from_each_other(tower, images, layers):
    outputs = {m: encode_dense(tower, images[:1], layers=layers, method=m).patch_embeddings for m in METHODS}
    for first in METHODS:
        for second in METHODS:
            if first < second:
                assert (outputs[first] - outputs[second]).abs().max() > 1e-4, (first, second)


def test_clip_method_equals_open_clips_own_token_output(tower, images, layers):
    tower.output_tokens = True
    try:
        with torch.inference_mode():
            _, tokens = tower(images)
    finally:
        tower.output_tokens = False
    expected = tokens @ tower.proj
    output = encode_dense(tower, images, layers=layers, method="clip").patch_embeddings
    assert torch.allclose(output.reshape(expected.shape), expected, atol=1e-5)


def test_bad_arguments_are_rejected(tower, images, layers, monkeypatch):
    with pytest.raises(InputError, match="unknown method"):
        encode_dense(tower, images, layers=layers, method="nope")
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        encode_dense(tower, images[0], layers=layers)
    with pytest.raises(InputError, match="outside"):
        encode_dense(tower, images, layers=LayerConfig(20, 3, 3, 10, 0.3))
    with pytest.raises(InputError, match=r"missing: \['conv1', 'class_embedding'.*CoCa"):
        encode_dense(torch.nn.Linear(3, 3), images, layers=layers)
    monkeypatch.setattr(tower, "attn_pool", torch.nn.Identity(), raising=False)
    with pytest.raises(InputError, match=r"no attention pooling \(missing: none\)"):
        encode_dense(tower, images, layers=layers)


@pytest.fixture
def attention_calls(monkeypatch):
    """The number of (query) rows of every attention the encoder runs, one entry per call."""
    calls = []
    original = encoder_module.attend

    def counting(query, *args, **kwargs):
        calls.append(query.shape[0])
        return original(query, *args, **kwargs)

    monkeypatch.setattr(encoder_module, "attend", counting)
    return calls


@pytest.mark.parametrize("multi_level", [True, False])
def test_the_two_passes_of_the_last_block_share_one_batched_attention(
    tower, images, layers, attention_calls, multi_level
):
    stages = Stages(multi_level=multi_level)
    encode_dense(tower, images, layers=layers, stages=stages)
    assert attention_calls == [(2 if multi_level else 1) * images.shape[0]]


def test_the_ablation_attends_each_pass_once(tower, images, layers, attention_calls):
    """Each SC-CLIP stage-off variant attends only the passes no earlier variant attended with the same prior."""
    variants = [variant for variant in ablation_variants() if variant.method == "sc-clip"]
    assert [variant.stages for variant in variants[1:]] == [Stages.without(name) for name in Stages.names()]
    encoder_module.encode_dense_variants(tower, images, variants, layers=layers)
    crops = images.shape[0]
    # full: both passes; no anomaly: both (another prior); no pre-aggregation: the first pass; no prior: both;
    # no post-aggregation and no multi-level: nothing new.
    assert attention_calls == [2 * crops, 2 * crops, crops, 2 * crops]
