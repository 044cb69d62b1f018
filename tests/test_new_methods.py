"""ResCLIP and PEARL end to end: parity with their official segmentors' outputs (`methods_parity_tiny.pt`), their
intermediates as this engine computes them, the class-dependent image side of ResCLIP, the refinements registry,
and both command lines."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from scclip_core import (
    InputError,
    SegmenterConfig,
    Variant,
    ablation_variants,
    encode_dense_variants,
    load_model,
)
from scclip_core.cli import main
from scclip_core.eval import get_benchmark
from scclip_core.methods import DEFAULT_ABLATION_METHODS, METHOD_SPECS, method_spec
from scclip_core.methods.pearl import PearlParams
from scclip_core.methods.resclip import (
    ResclipParams,
    ResclipState,
    feedback_matrix,
    first_pass_probs,
    patch_categories,
)
from scclip_core.refinements import REFINEMENTS, refine_from_choices
from scclip_core.segmenter import Segmenter
from scclip_core.text import parse_classes
from tests.conftest import FIXTURES, _load_fixture

METHODS_FIXTURE = FIXTURES / "methods_parity_tiny.pt"
TOLERANCE = 1e-4
CLASSES = "sky, cloud; grass, lawn; red car, vehicle; person; tree"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return _load_fixture(METHODS_FIXTURE)


@pytest.fixture(scope="module")
def fixture_model(fixture: dict):
    """The fixture's weights (skipped with the fixture when its file is absent)."""
    return load_model("tiny-test", str(METHODS_FIXTURE), device="cpu")


def _segmenter(model, batch_size: int = 8, **changes) -> Segmenter:
    return Segmenter(model, SegmenterConfig(short_side=None, batch_size=batch_size, **changes))


def _relative(got: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> float:
    got, expected = torch.as_tensor(got).float(), torch.as_tensor(expected).float()
    assert got.shape == expected.shape
    return float((got - expected).abs().max() / expected.abs().max())


def _labels_agree(labels: np.ndarray, probs: np.ndarray, expected: np.ndarray) -> int:
    """Pixels whose label differs although the expected two best probabilities differ by more than the bar."""
    top_two = np.sort(probs, axis=0)[-2:]
    decided = top_two[1] - top_two[0] > TOLERANCE * np.abs(probs).max()
    return int(((labels != expected) & decided).sum())


@pytest.mark.parametrize("method", ["resclip", "pearl"])
@pytest.mark.parametrize("batch_size", [8, 1])
def test_the_default_output_matches_the_official_code(fixture, fixture_model, method: str, batch_size: int) -> None:
    segmenter = _segmenter(fixture_model, batch_size)
    for image, probs, labels in zip(fixture["images"], fixture[method]["probs"], fixture[method]["labels"]):
        result = segmenter.segment(image.numpy(), CLASSES, method=method, background=None)
        assert _relative(result.probs, probs) <= TOLERANCE, (method, tuple(image.shape))
        assert _labels_agree(result.labels, probs.numpy(), labels.numpy()) == 0
    assert segmenter.segment(fixture["images"][1].numpy(), CLASSES, method=method, background=None).windows == [
        (0, 0, 192, 224),
        (0, 96, 192, 320),
    ], "an image side below the crop gets windows that short, as in the official slide inference"


def _first_window(fixture, model, method: str, params=None):
    image = fixture["images"][0].numpy()
    segmenter = _segmenter(model)
    _, _, crops = segmenter._windows(image)
    output = encode_dense_variants(model.visual, crops, [Variant(method, params=params)], layers=model.layers)
    return segmenter, output.outputs[0]


def test_resclip_intermediates_match_step_by_step(fixture, fixture_model) -> None:
    expected = fixture["resclip"]["intermediates"]
    segmenter, output = _first_window(fixture, fixture_model, "resclip")
    state = output.state
    assert isinstance(state, ResclipState)
    text = segmenter.text.embed(parse_classes(CLASSES, background=None).queries, [])
    assert _relative(text, expected["query_features"]) <= TOLERANCE
    assert _relative(state.rcs_attention[0], expected["rcs_attention"]) <= TOLERANCE
    first = output.patch_embeddings.reshape(-1, output.patch_embeddings.shape[-1])
    assert _relative(first, expected["first_pass_patch_embeddings"][1:]) <= TOLERANCE
    normalised = torch.nn.functional.normalize(output.patch_embeddings.float(), dim=-1)
    logits = torch.einsum("bhwe,qe->bqhw", normalised, text)
    params = state.params
    with torch.inference_mode():
        probs = first_pass_probs(
            logits, state.crops, params.feedback_logit_scale, params.feedback_pamr_steps, params.feedback_pamr_dilations
        )
        categories = patch_categories(probs, params.threshold, state.patch)
        feedback = feedback_matrix(categories, params.sigma, True)
        final = METHOD_SPECS["resclip"].text_pass(state, normalised, text)
    assert _relative(probs[0], expected["first_pass_probs"]) <= TOLERANCE
    assert torch.equal(categories[0], expected["patch_categories"])
    assert _relative(feedback[0], expected["sfr_attention"]) <= TOLERANCE
    assert _relative(final.reshape(-1, final.shape[-1]), expected["patch_embeddings"][1:]) <= TOLERANCE


def test_pearl_patch_embeddings_match(fixture, fixture_model) -> None:
    _, output = _first_window(fixture, fixture_model, "pearl")
    embeddings = output.patch_embeddings.reshape(-1, output.patch_embeddings.shape[-1])
    assert _relative(embeddings, fixture["pearl"]["intermediates"]["patch_embeddings"][1:]) <= TOLERANCE


def test_resclip_on_a_cached_image_with_other_classes_equals_a_fresh_run(fixture, fixture_model) -> None:
    image = fixture["images"][1].numpy()
    other = "road; building, house; sky"
    cached = _segmenter(fixture_model)
    first = cached.segment(image, CLASSES, method="resclip", background=None)
    image_side = cached._last
    assert image_side is not None and image_side.text_states
    second = cached.segment(image, other, method="resclip", background=None)
    assert cached._last is image_side, "the frozen blocks, the RCS attention and the first pass are reused"
    fresh = _segmenter(fixture_model).segment(image, other, method="resclip", background=None)
    assert np.array_equal(second.probs, fresh.probs) and np.array_equal(second.labels, fresh.labels)
    assert "text_pass" in second.timings
    again = cached.segment(image, CLASSES, method="resclip", background=None)
    assert np.array_equal(again.probs, first.probs)
    synonyms_as_classes = cached.segment(image, CLASSES.replace(",", ";"), method="resclip", background=None)
    assert synonyms_as_classes.class_names != first.class_names


def test_resclip_own_ablation_switches_its_stages_off(fixture, fixture_model) -> None:
    image = fixture["images"][0].numpy()
    segmenter = _segmenter(fixture_model)
    variants = [variant for variant in ablation_variants(["resclip"]) if variant.method == "resclip"]
    assert [variant.params for variant in variants] == [
        ResclipParams(),
        ResclipParams(rcs=False),
        ResclipParams(sfr=False),
    ]
    embeddings = segmenter.set_image_variants(image, variants)
    full, no_rcs, no_sfr = (segmenter.predict(CLASSES, embedding=e, background=None).probs for e in embeddings)
    assert not embeddings[2].text_states, "without SFR the image side does not depend on the classes"
    assert np.abs(full - no_rcs).max() > 1e-3 and np.abs(full - no_sfr).max() > 1e-3
    alone = segmenter.segment(image, CLASSES, method="resclip", method_params=ResclipParams(rcs=False), background=None)
    assert np.allclose(alone.probs, no_rcs, atol=1e-6)


def test_resclip_is_left_out_of_the_default_ablation_only() -> None:
    assert "resclip" not in DEFAULT_ABLATION_METHODS and "pearl" in DEFAULT_ABLATION_METHODS
    assert {variant.method for variant in ablation_variants(DEFAULT_ABLATION_METHODS)} == set(DEFAULT_ABLATION_METHODS)
    assert len(ablation_variants()) == len(ablation_variants(DEFAULT_ABLATION_METHODS)) + 3


def test_method_settings_are_validated_and_parsed() -> None:
    with pytest.raises(InputError, match="threshold"):
        ResclipParams(threshold=1.5)
    with pytest.raises(InputError, match="tau, lambda"):
        ResclipParams(rcs_weights=(2.0,))
    with pytest.raises(InputError, match="alpha_kk"):
        PearlParams(alpha_kk=-1.0)
    with pytest.raises(InputError, match="takes ResclipParams"):
        Variant("resclip", params=PearlParams())
    with pytest.raises(InputError, match="no settings of its own"):
        Variant("clip", params=PearlParams())
    spec = method_spec("resclip")
    assert spec.params_with(["threshold=0.5", "rcs_weights=2,0.3", "sfr=off"]) == ResclipParams(
        threshold=0.5, rcs_weights=(2.0, 0.3), sfr=False
    )
    with pytest.raises(InputError, match="NAME one of threshold"):
        spec.params_with(["gamma=1"])
    with pytest.raises(InputError, match="takes a value like"):
        spec.params_with(["sfr=maybe"])


def test_own_protocols_take_each_datasets_settings() -> None:
    voc21 = get_benchmark("voc21", method="resclip", protocol="own")
    assert voc21.method_params == ResclipParams(threshold=0.5, rcs_weights=(2.0, 0.3), sfr_weights=(2.2, 0.7))
    assert voc21.config.stride is None and voc21.rules.prob_threshold == 0.1
    assert get_benchmark("context59", method="resclip", protocol="own").method_params == ResclipParams()
    cityscapes = get_benchmark("cityscapes", method="pearl", protocol="own")
    assert cityscapes.method_params == PearlParams(alpha_kk=0.3) and cityscapes.config.tlp.grid == 224
    assert cityscapes.config.refinements("pearl") == ("tlp",)
    assert cityscapes.settings()["method_params"]["alpha_kk"] == 0.3
    assert "method_params" not in get_benchmark("voc21").settings(), "older run folders keep their names"


def test_pearl_runs_tlp_by_default_and_its_attention_alone_with_no_refinement(fixture, fixture_model) -> None:
    image = fixture["images"][1].numpy()
    segmenter = _segmenter(fixture_model)
    default = segmenter.segment(image, CLASSES, method="pearl", background=None)
    alone = segmenter.predict(CLASSES, background=None, refine=())
    assert default.refinements == ("tlp",) and alone.refinements == () and default.to_json()["refine"] == ["tlp"]
    assert np.abs(default.probs - alone.probs).max() > 1e-3
    on_scclip = segmenter.segment(image, CLASSES, background=None, refine=("tlp",))
    plain = segmenter.predict(CLASSES, background=None)
    assert on_scclip.refinements == ("tlp",) and plain.refinements == ()
    assert np.abs(on_scclip.probs - plain.probs).max() > 1e-3
    both = segmenter.predict(CLASSES, background=None, refine=("pamr", "tlp"), pamr_steps=2)
    assert both.refinements == ("pamr", "tlp") and both.pamr_steps == 2


def test_refinement_choices_are_checked() -> None:
    assert tuple(REFINEMENTS) == ("pamr", "tlp")
    config = SegmenterConfig()
    assert config.refinements("pearl") == ("tlp",) and config.refinements("sc-clip") == ()
    assert replace(config, pamr_steps=3).refinements("pearl") == ("pamr", "tlp")
    with pytest.raises(InputError, match="pamr_steps=0"):
        SegmenterConfig(refine=("pamr",))
    with pytest.raises(InputError, match="unknown refinement"):
        SegmenterConfig(refine=("crf",))
    with pytest.raises(InputError, match="not the string"):
        config.refinements("sc-clip", "tlp")  # type: ignore[arg-type]
    assert refine_from_choices(["none"]) == () and refine_from_choices(None) is None
    with pytest.raises(InputError, match="cannot be combined"):
        refine_from_choices(["none", "tlp"])


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict | str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


@pytest.mark.parametrize(
    ("extra", "method", "refine", "params_key", "params_value"),
    [
        (["--method", "resclip", "--method-param", "threshold=0.3"], "resclip", [], "threshold", 0.3),
        (["--method", "pearl"], "pearl", ["tlp"], "alpha_kk", 0.08),
        (["--method", "pearl", "--refine", "none"], "pearl", [], "alpha_kk", 0.08),
        (["--refine", "pamr", "--refine", "tlp"], "sc-clip", ["pamr", "tlp"], None, None),
    ],
)
def test_the_command_line_runs_both_methods_and_the_refinements(
    fixture: dict, tmp_path: Path, capsys, extra, method, refine, params_key, params_value
) -> None:
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(image)
    common = ["segment", str(image), "--classes", "sky, cloud; grass; car", "--model", "tiny-test"]
    code, result = _run_cli([*common, "--weights", str(METHODS_FIXTURE), "--no-text-cache", "--json", *extra], capsys)
    assert code == 0 and isinstance(result, dict)
    assert result["method"] == method and result["refine"] == refine
    if params_key is None:
        assert result["method_params"] is None
    else:
        assert result["method_params"][params_key] == params_value
    if "pamr" in refine:
        assert result["pamr_steps"] == 10, "--refine pamr alone runs NACLIP's 10 steps"


def test_the_command_line_refuses_a_bad_method_setting(tmp_path: Path, capsys) -> None:
    code, message = _run_cli(
        ["segment", "x.png", "--classes", "a; b", "--method", "resclip", "--method-param", "nope=1"], capsys
    )
    assert code == 2 and "NAME one of threshold" in str(message)


_DATASET_ROW = {
    "VOC21": "voc21",
    "Context60": "context60",
    "COCO-Object": "coco_object",
    "VOC20": "voc20",
    "Context59": "context59",
    "COCO-Stuff": "coco_stuff164k",
    "Cityscapes": "cityscapes",
    "ADE20K": "ade20k",
}


def test_the_documented_per_dataset_settings_are_the_modules() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] in _DATASET_ROW and len(cells) == 6:
            rows[_DATASET_ROW[cells[0]]] = cells[1:]
    assert set(rows) == set(_DATASET_ROW.values())
    for dataset, (threshold, rcs, sfr, alpha_kk, grid) in rows.items():
        resclip = get_benchmark(dataset, method="resclip", protocol="own").method_params
        pearl = get_benchmark(dataset, method="pearl", protocol="own")
        assert (float(threshold), *map(float, rcs.split(", ")), *map(float, sfr.split(", "))) == (
            resclip.threshold,
            *resclip.rcs_weights,
            *resclip.sfr_weights,
        ), dataset
        assert (float(alpha_kk), int(grid)) == (pearl.method_params.alpha_kk, pearl.config.tlp.grid), dataset


def test_every_method_runs_in_half_precision_with_a_trace() -> None:
    """The dtype path a GPU takes (fp16 there; bfloat16 here, on the CPU): float32 biases, maps and refinements
    meet half-precision activations in every last block, text pass and refinement."""
    torch.manual_seed(0)
    model = load_model("tiny-test", "random", device="cpu", precision="bf16")
    segmenter = Segmenter(model, SegmenterConfig(templates="simple"))
    image = np.random.default_rng(0).integers(0, 256, (120, 250, 3), dtype=np.uint8)
    for method in METHOD_SPECS:
        result = segmenter.segment(image, "sky; grass; car", method=method, trace=True, refine=("tlp",))
        assert np.isfinite(result.probs).all() and result.trace is not None, method
