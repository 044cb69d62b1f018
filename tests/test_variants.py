"""Several last-block variants from one shared frozen pass: equal to separate runs, honest timings, no wasted work."""

import time

import numpy as np
import pytest
import torch
from open_clip.model import CLIPVisionCfg, _build_vision_tower

from scclip_core import (
    METHOD_SPECS,
    METHODS,
    CalibrationParams,
    InputError,
    LabelRules,
    LayerConfig,
    Segmenter,
    SegmenterConfig,
    Stages,
    Variant,
    ablation_variants,
    calibration,
    encode_dense,
    encode_dense_variants,
)
from scclip_core import encoder as encoder_module
from scclip_core.encoder import _SharedValues

ABLATION = ablation_variants()
# Stage combinations the ablation does not contain, so that every shared value is reached by several keys.
EXTRA = (
    Variant(stages=Stages(anomaly=False, pre_aggregation=False)),
    Variant(stages=Stages.without("anomaly", "attention_prior")),
    Variant(stages=Stages(**{name: False for name in Stages.names()})),
)


@pytest.fixture(scope="module")
def parity_tower(parity_fixture):
    visual = _build_vision_tower(
        parity_fixture["embed_dim"],
        CLIPVisionCfg(**parity_fixture["vision_cfg"]),
        quick_gelu=parity_fixture["quick_gelu"],
    )
    visual.load_state_dict(parity_fixture["visual_state_dict"], strict=True)
    return visual.eval()


def _assert_same_output(shared, alone):
    assert shared.patch_embeddings.shape == alone.patch_embeddings.shape
    assert (shared.patch_embeddings - alone.patch_embeddings).abs().max() <= 1e-5
    if alone.trace is None:
        assert shared.trace is None
        return
    for shared_crop, alone_crop in zip(shared.trace, alone.trace, strict=True):
        assert shared_crop.anomaly_indices.tolist() == alone_crop.anomaly_indices.tolist()
        assert shared_crop.anomalies_resolved == alone_crop.anomalies_resolved
        for name in (
            "lof_scores",
            "mid_similarity",
            "shallow_similarity",
            "last_similarity",
            "calibrated_similarity",
            "attention_uncalibrated",
            "attention_calibrated",
            "token_norms",
            "vanilla_embeddings",
        ):
            assert torch.allclose(getattr(shared_crop, name), getattr(alone_crop, name), atol=1e-5), name


def _assert_each_equals_its_own_call(visual, images, variants, outputs, **options):
    """Every output of a shared pass equals `encode_dense` run for its variant alone with the same options."""
    assert len(outputs) == len(variants)
    for variant, output in zip(variants, outputs):
        alone = encode_dense(
            visual, images, method=variant.method, stages=variant.stages, method_params=variant.params, **options
        )
        _assert_same_output(output, alone)


@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("size", [(224, 224), (160, 288)])
def test_each_variant_from_the_shared_pass_equals_its_own_call(tiny_model, size, trace):
    torch.manual_seed(1)
    images = torch.randn(2, 3, *size)
    variants = (*ABLATION, *EXTRA)
    result = encode_dense_variants(tiny_model.visual, images, variants, layers=tiny_model.layers, trace=trace)
    _assert_each_equals_its_own_call(
        tiny_model.visual, images, variants, result.outputs, layers=tiny_model.layers, trace=trace
    )


def test_shared_pass_on_the_parity_tower_matches_separate_calls_and_the_official_output(parity_tower, parity_fixture):
    layers = LayerConfig(**parity_fixture["scclip_layers"])
    images = parity_fixture["images"]
    reversed_order = ABLATION[::-1]
    result = encode_dense_variants(parity_tower, images, reversed_order, layers=layers)
    _assert_each_equals_its_own_call(parity_tower, images, reversed_order, result.outputs, layers=layers)
    full = result.outputs[reversed_order.index(Variant())].patch_embeddings
    expected = parity_fixture["expected_patch_embeddings"]
    assert (full.reshape(expected.shape) - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_hyperparameters_reach_every_variant(tiny_model):
    images = torch.randn(2, 3, 224, 224)
    params = CalibrationParams(beta=0.2, detector="l2norm", prior_temperature=1.5, naclip_sigma=2.0)
    result = encode_dense_variants(tiny_model.visual, images, ABLATION, layers=tiny_model.layers, params=params)
    _assert_each_equals_its_own_call(
        tiny_model.visual, images, ABLATION, result.outputs, layers=tiny_model.layers, params=params
    )


@pytest.fixture
def lof_calls(monkeypatch):
    calls = []
    original = calibration.lof_scores
    monkeypatch.setattr(calibration, "lof_scores", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_anomaly_detection_runs_once_and_only_when_a_variant_or_the_trace_needs_it(tiny_model, lof_calls):
    images = torch.randn(2, 3, 224, 224)

    def run(variants, trace=False):
        lof_calls.clear()
        encode_dense_variants(tiny_model.visual, images, variants, layers=tiny_model.layers, trace=trace)
        return len(lof_calls)

    no_anomaly_stage = [Variant(stages=Stages.without("anomaly")), *(v for v in ABLATION if v.method != "sc-clip")]
    assert run(no_anomaly_stage) == 0
    assert run(no_anomaly_stage, trace=True) == 1
    assert run(ABLATION) == 1
    assert run([Variant()]) == 1


def test_shared_values_account_for_time_spent_once(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(encoder_module.time, "perf_counter", lambda: clock[0])
    values = _SharedValues()

    def costing(seconds, value, then=None):
        def compute():
            clock[0] += seconds
            if then:
                then()
            return value

        return compute

    values.variant = 0
    assert values.get("parent", costing(1.0, "p", lambda: values.get("child", costing(2.0, "c")))) == "p"
    values.get("alone", costing(8.0, "a"))
    values.variant = 1
    assert values.get("parent", costing(100.0, "never")) == "p"
    values.get("own", costing(4.0, "o"))
    assert values.shared_seconds() == 3.0
    assert values.shared_seconds(computed_by=0) == 3.0
    assert values.shared_seconds(computed_by=1) == 0.0


def test_shared_values_compute_the_missing_keys_of_a_group_in_one_call(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(encoder_module.time, "perf_counter", lambda: clock[0])
    values = _SharedValues()
    calls = []

    def squares(keys):
        calls.append(list(keys))
        clock[0] += len(keys)
        return [key * key for key in keys]

    values.variant = 0
    assert values.get_many([2, 3], squares) == [4, 9]
    values.variant = 1
    assert values.get_many([3, 5, 2], squares) == [9, 25, 4]
    assert values.get_many([5], squares) == [25]
    assert calls == [[2, 3], [5]]
    assert values.shared_seconds() == 2.0
    assert values.shared_seconds(computed_by=1) == 0.0


def test_timings_split_the_call_into_shared_and_own_seconds(tiny_model):
    images = torch.randn(4, 3, 224, 224)
    start = time.perf_counter()
    result = encode_dense_variants(tiny_model.visual, images, ABLATION, layers=tiny_model.layers)
    wall = time.perf_counter() - start
    assert 0 < result.shared_seconds + sum(output.seconds for output in result.outputs) <= wall
    assert all(output.seconds > 0 for output in result.outputs)
    single = encode_dense_variants(tiny_model.visual, images, [Variant()], layers=tiny_model.layers)
    assert single.outputs[0].seconds > 0 and single.shared_seconds > 0


def test_bad_variants_are_rejected(tiny_model):
    with pytest.raises(InputError, match="unknown method"):
        Variant("nope")
    with pytest.raises(InputError, match="at least one variant"):
        encode_dense_variants(tiny_model.visual, torch.randn(1, 3, 224, 224), [], layers=tiny_model.layers)


def test_ablation_lists_full_each_stage_off_then_every_method_with_its_own_ablation():
    assert len(set(ABLATION)) == len(ABLATION)
    assert ABLATION[0] == Variant()
    assert [v.stages for v in ABLATION[1:6]] == [Stages.without(name) for name in Stages.names()]
    others = [
        variant
        for spec in METHOD_SPECS.values()
        if not spec.stages
        for variant in (Variant(spec.name), *(Variant(spec.name, params=params) for _, params in spec.ablations))
    ]
    assert list(ABLATION[6:]) == others
    assert [v.method for v in ABLATION[6:11]] == ["clip", "maskclip", "clearclip", "sclip", "naclip"]


def test_segmenter_variants_give_the_labels_and_probs_of_separate_segmentations(tiny_model):
    segmenter = Segmenter(tiny_model, SegmenterConfig(short_side=224, templates="simple", batch_size=2))
    image = np.random.default_rng(5).integers(0, 256, (200, 400, 3), dtype=np.uint8)
    embeddings = segmenter.set_image_variants(image, ABLATION)
    assert len(embeddings) == len(ABLATION) and len(embeddings[0].windows) == 3
    shared = {name: embeddings[0].timings[name] for name in embeddings[0].shared_timings}
    assert set(shared) == {"preprocess", "backbone_shared"}
    for variant, embedding in zip(ABLATION, embeddings):
        assert embedding.key.variant == variant
        assert set(embedding.timings) == {"preprocess", "backbone_shared", "last_block"}
        assert {name: embedding.timings[name] for name in embedding.shared_timings} == shared
        assert embedding.timings["last_block"] > 0
        rules = LabelRules(prob_threshold=0.3)
        from_variants = segmenter.predict("cat; dog; sky", embedding=embedding, rules=rules)
        alone = segmenter.segment(
            image,
            "cat; dog; sky",
            method=variant.method,
            stages=variant.stages,
            method_params=variant.params,
            rules=rules,
        )
        assert np.abs(from_variants.probs - alone.probs).max() <= 1e-5
        assert np.array_equal(from_variants.labels, alone.labels)
        assert from_variants.class_names == alone.class_names


def test_segmenter_variants_leave_the_set_image_cache_alone(tiny_model):
    segmenter = Segmenter(tiny_model, SegmenterConfig(templates="simple"))
    first = np.random.default_rng(6).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    second = np.random.default_rng(7).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    remembered = segmenter.set_image(first)
    segmenter.set_image_variants(second, [Variant(), Variant("clip")])
    assert segmenter.set_image(first) is remembered
    assert np.array_equal(segmenter.predict("cat; dog").image, first)


def test_every_method_has_exactly_one_last_block() -> None:
    assert tuple(METHOD_SPECS) == METHODS
    assert len({spec.last_block for spec in METHOD_SPECS.values()}) == len(METHODS)


def test_the_stages_of_a_comparison_method_are_ignored_so_equal_runs_compare_equal() -> None:
    off = Stages.without("anomaly", "multi_level")
    assert Variant("clip", off) == Variant("clip")
    assert Variant("clip", off).stages == Stages()
    assert not Variant("naclip").stage_on("anomaly")
    assert Variant("sc-clip", off) != Variant("sc-clip")
    assert not Variant("sc-clip", off).stage_on("anomaly") and Variant("sc-clip", off).stage_on("pre_aggregation")


def test_an_unknown_method_is_refused_with_the_choices() -> None:
    with pytest.raises(InputError, match="unknown method 'segformer'.*sc-clip"):
        Variant("segformer")  # type: ignore[arg-type]
