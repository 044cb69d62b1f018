"""The demo as a shared service: bounded memory per visitor, turns at the model, per-request limits, input
validation, header-only size checks, quiet logs for expected errors, and a fast start without weights."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from demo.events import Events
from demo.events.common import LOCAL_SESSION
from demo.host import TURN_PROMPTS, ModelHost, ModelTurns, stop_warm_ups
from demo.inputs import LIMITS, parse_settings, probe_image, stage_list
from demo.labels import number_word
from demo.sessions import KEPT_PROBS_BYTES, RUN_AGAIN, SessionStore
from scclip_core import (
    DETECTORS,
    PAMR_STEPS,
    TEMPLATE_SET_NAMES,
    VOCABULARY_PRESETS,
    InputError,
    LabelRules,
    builtin_vocabulary,
    preset_queries,
    vocabulary_preset,
)
from tests.serving import FAST_CONFIG, serve

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("service") / "halves.png"
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    rgb[:, :48] = (220, 30, 30)
    rgb[:, 48:] = (30, 30, 220)
    Image.fromarray(rgb).save(path)
    return path


class _Sized:
    """A stand-in result of a given size for the store."""

    def __init__(self, size: int) -> None:
        self.size = size

    def nbytes(self) -> int:
        return self.size


def test_the_store_evicts_the_least_recently_used_beyond_its_budget() -> None:
    store = SessionStore(budget_bytes=300)
    for name in "abc":
        store.put(name, _Sized(100))
    assert store.get("a") is not None  # a is now the most recently used
    store.put("d", _Sized(100))
    assert store.get("b") is None, "b was the least recently used"
    assert [store.get(name) is not None for name in "acd"] == [True, True, True]
    assert store.total_bytes == 300
    store.put("huge", _Sized(1000))
    assert len(store) == 1 and store.get("huge") is not None, "the newest result stays even alone over the budget"
    store.discard("huge")
    assert len(store) == 0 and store.total_bytes == 0


def test_the_store_forgets_results_after_their_time_to_live() -> None:
    now = [0.0]
    store = SessionStore(budget_bytes=1 << 20, ttl_s=60, clock=lambda: now[0])
    store.put("a", _Sized(10))
    store.put("b", _Sized(10))
    now[0] = 50.0
    assert store.get("a") is not None  # used again: a lives on
    now[0] = 100.0
    assert store.get("b") is None and store.get("a") is not None
    now[0] = 200.0
    assert store.get("a") is None and store.total_bytes == 0


def test_turns_at_the_model_are_served_in_arrival_order() -> None:
    turns = ModelTurns()
    order: list[int] = []
    asked = {index: threading.Event() for index in range(6)}
    release_first = threading.Event()

    class Announcing(threading.Condition):
        """The turns' condition, saying when a thread has taken its ticket (it then waits for its turn)."""

        def wait_for(self, predicate, timeout=None):
            asked[int(threading.current_thread().name)].set()
            return super().wait_for(predicate, timeout)

    turns._condition = Announcing()

    def worker(index: int) -> None:
        with turns.turn():
            if index == 0:
                release_first.wait(5)
            order.append(index)

    threads = [threading.Thread(target=worker, args=(index,), name=str(index)) for index in range(6)]
    for thread in threads:
        thread.start()
        assert asked[int(thread.name)].wait(5), "each asks after the previous one"
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4, 5]


def test_a_long_class_list_takes_many_short_turns(photo: Path) -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # no names embedded yet
    text = host.segmenter("simple").text
    turns_taken, new_per_call = [], []
    original_turn, original_embed = host.turns.turn, text.embed

    def counting_turn():
        turns_taken.append(1)
        return original_turn()

    def counting_embed(names, *args, **kwargs):
        new_per_call.append(len(text.uncached(names)))
        return original_embed(names, *args, **kwargs)

    host.turns.turn, text.embed = counting_turn, counting_embed
    classes = "; ".join(f"thing {index}" for index in range(host.limits.max_classes))
    Events(host).segmenting.segment(str(photo), classes, "", 0.0, templates="simple", progress=None)
    chunks = [count for count in new_per_call if count]
    assert sum(chunks) == host.limits.max_classes and max(chunks) == TURN_PROMPTS // len(text.templates)
    assert len(turns_taken) >= 2 + len(chunks) >= 4, "image side, text in chunks of a turn each, prediction"


def test_more_new_names_than_the_limit_switch_to_the_short_templates_with_a_notice(photo: Path) -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # no names embedded yet
    host.limits = dataclasses.replace(host.limits, full_template_names=3)
    handlers = Events(host).segmenting
    _, many = handlers.segment(str(photo), "a; b; c; d", "", 0.0, templates="openai", progress=None)
    assert any("4 class names needed new text embeddings, more than 3" in notice for notice in many["notices"])
    assert host.segmenter("openai").text.uncached(["a"]) == ["a"], "embedded with the short templates only"
    _, few = handlers.segment(str(photo), "e; f; g", "", 0.0, templates="openai", progress=None)
    assert not any("short prompt templates" in notice for notice in few["notices"])
    assert host.segmenter("openai").text.uncached(["e", "f", "g"]) == []
    assert f"above {LIMITS.full_template_names} new names, the 7 short prompt templates" in LIMITS.describe()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("beta", -1, "β must be a number between 0 and 1"),
        ("beta", 7, "β must be a number between 0 and 1"),
        ("beta", float("nan"), "β must be a number between 0 and 1"),
        ("beta", float("-inf"), "β must be a number between 0 and 1"),
        ("beta", "abc", "β must be a number between 0 and 1, not 'abc'"),
        ("prob_threshold", "high", "the background threshold must be a number between 0 and 1, not 'high'"),
        ("prob_threshold", 1.5, "the background threshold must be a number"),
        ("area_threshold", -0.1, "the area threshold must be a number"),
        ("stage_names", "anomaly, bogus", r"unknown stage\(s\) \['bogus'\]"),
        ("stage_names", 5, "stage_names must be a list"),
        ("detector", "nope", re.escape(f"detector must be one of {list(DETECTORS)}")),
        ("method", "segformer", "unknown method 'segformer'"),
    ],
)
def test_every_setting_is_validated_with_its_own_message(field: str, value: object, message: str) -> None:
    arguments = {
        "method": None,
        "stage_names": None,
        "detector": None,
        "beta": None,
        "background_words": None,
        "prob_threshold": None,
        "area_threshold": None,
        "templates": None,
    }
    arguments[field] = value
    with pytest.raises(InputError, match=message):
        parse_settings(**arguments)


def test_a_stage_list_sent_as_one_string_works() -> None:
    assert stage_list("anomaly") == ("anomaly",)
    assert stage_list("anomaly, multi-level") == ("anomaly", "multi_level")
    settings = parse_settings("sc-clip", "pre_aggregation", None, 0.5, "", None, None, None)
    stages = settings.variant.stages
    assert stages.pre_aggregation and not stages.anomaly and settings.params.beta == 0.5
    assert settings.rules == LabelRules(prob_threshold=0.15), "the trained-weights default; area 0 means off"


@pytest.fixture(scope="module")
def small_store_app():
    """The app with a session budget so small that each new visitor's result evicts the previous one's."""
    with serve("tiny-test", "random", FAST_CONFIG, session_budget_mb=1) as (_, url):
        yield url


def test_limits_validation_and_eviction_through_the_api(small_store_app: str, photo: Path) -> None:
    first, second = Client(small_store_app, verbose=False), Client(small_store_app, verbose=False)
    with pytest.raises(AppError, match="β must be a number between 0 and 1"):
        first.predict(handle_file(str(photo)), "red; blue", beta=7, api_name="/segment")
    with pytest.raises(AppError, match="at most 100 per request"):
        first.predict(handle_file(str(photo)), ";".join(f"c{index}" for index in range(120)), api_name="/segment")
    _, summary = first.predict(handle_file(str(photo)), "red; blue", stage_names="anomaly", api_name="/segment")
    assert summary["stages"] == {
        "anomaly": True,
        "pre_aggregation": False,
        "attention_prior": False,
        "post_aggregation": False,
        "multi_level": False,
    }
    assert summary["description"].startswith("SC-CLIP without pre-aggregation")
    label_path, relabelled = first.predict(1.0, 0.0, api_name="/rethreshold")
    assert relabelled["shares"]["background"] == 1.0 and Image.open(label_path).size == (96, 64)

    second.predict(handle_file(str(photo)), "red; green", api_name="/segment")  # the budget holds one result
    label_path, expired = first.predict(0.5, 0.0, api_name="/rethreshold")
    assert label_path is None and expired["expired"] is True
    assert "no longer kept" in expired["message"] and "/segment" in expired["message"]
    _, again = second.predict(0.0, 0.0, api_name="/rethreshold")
    assert again["classes"] == ["red", "green", "background"]


def test_the_shared_segmenters_never_remember_a_visitor_image(photo: Path, events: Events) -> None:
    host = events.host
    events.segmenting.segment(str(photo), "red; blue", "", 0.0, progress=None)
    _, again = events.segmenting.segment(str(photo), "red; green", "", 0.0, progress=None)
    assert again["reused_image_side"] is True, "reused through the session's own embedding"
    events.comparing.ablate(str(photo), "red; blue", "", 0.0, templates="simple", comparisons=[], progress=None)
    for templates in ("openai", "simple"):
        with pytest.raises(InputError, match="no image set"):
            host.segmenter(templates).predict("red")


def test_rerendering_after_eviction_says_run_again_instead_of_failing(photo: Path, demo_host: ModelHost) -> None:
    events = Events(demo_host, SessionStore(budget_bytes=1))
    events.segmenting.segment(str(photo), "red; blue", "", 0.0, progress=None)
    events.store.put("someone else", events.store.get(LOCAL_SESSION))
    assert events.rendering.rethreshold(0.3, 0.0, 0.5, []).status == RUN_AGAIN
    assert events.rendering.rerender(0.5, []).status == RUN_AGAIN
    assert events.rendering.show_result(0.5).status == RUN_AGAIN
    views = events.inside.patch_views(None)
    assert views.patch_message == views.similarity_message == RUN_AGAIN
    assert events.rendering.rethreshold_api(0.3).summary_json["expired"] is True


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tiff", ".gif"])
def test_the_size_check_reads_only_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    path = tmp_path / f"rotated{suffix}"
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8))
    if suffix == ".gif":
        picture.save(path)
        expected = (70, 40)
    else:
        picture.save(path, exif=_exif(6))
        expected = (40, 70)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    monkeypatch.setattr("PIL.Image.Image.load", no_decoding)
    assert probe_image(str(path)) == expected


def test_a_huge_png_is_refused_before_its_pixels_are_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.png"
    Image.new("L", (12000, 12000)).save(path, exif=_exif(6))  # compresses to a few hundred kB

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(InputError, match="144 megapixels.*limit is 80"):
        probe_image(str(path))


def test_expected_errors_are_one_log_line_and_print_no_traceback(
    photo: Path, events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="demo")
    with pytest.raises(gr.Error) as error:
        events.segmenting.segment(str(photo), "", progress=None)
    assert error.value.print_exception is False
    records = [record for record in caplog.records if record.name.startswith("demo")]
    assert len(records) == 1 and records[0].levelno == logging.INFO and records[0].exc_info is None
    assert "no classes given" in records[0].getMessage()


def test_unexpected_errors_keep_their_traceback_in_the_log(
    photo: Path, events: Events, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events.host, "text_segmenter", lambda *args: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(gr.Error, match="unexpected RuntimeError: boom"):
        events.segmenting.segment(str(photo), "red", progress=None)
    assert any(record.exc_info for record in caplog.records if record.name.startswith("demo"))


def test_without_cached_weights_the_app_starts_with_the_exact_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from app import build_demo

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    demo = build_demo("ViT-B/16", "openai", config=FAST_CONFIG)
    banner = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "status-banner")
    assert "hf download timm/vit_base_patch16_clip_224.openai open_clip_model.safetensors" in banner.value
    assert str(tmp_path / "empty-cache") in banner.value


def test_refine_edges_runs_pamr_on_the_kept_image_side(photo: Path, events: Events) -> None:
    handlers = events.segmenting
    _, plain = handlers.segment(str(photo), "red; blue", "", 0.0, progress=None)
    _, refined = handlers.segment(str(photo), "red; blue", "", 0.0, refine_edges=True, progress=None)
    assert plain["pamr_steps"] == 0 and plain["refine"] == [] and refined["pamr_steps"] == 10
    assert refined["refine"] == ["pamr"] and refined["reused_image_side"] is True
    assert refined["description"] == "SC-CLIP, all five stages, logits refined by PAMR (10 steps)"
    with pytest.raises(gr.Error, match="refine_edges must be true or false"):
        handlers.segment(str(photo), "red; blue", refine_edges="maybe", progress=None)
    with pytest.raises(gr.Error, match="refine_edges=true asks for PAMR, refine for 'tlp'"):
        handlers.segment(str(photo), "red; blue", refine="tlp", refine_edges=True, progress=None)
    with pytest.raises(gr.Error, match="unknown refine choice 'crf'; choose one of default, none, pamr, tlp"):
        handlers.segment(str(photo), "red; blue", refine="crf", progress=None)


@pytest.mark.parametrize(
    ("method", "refine", "ran", "description"),
    [
        ("pearl", "default", ["tlp"], "PEARL, logits refined by TLP"),
        ("pearl", "none", [], "PEARL"),
        ("pearl", "pamr", ["pamr"], "PEARL, logits refined by PAMR (10 steps)"),
        ("resclip", "default", [], "ResCLIP"),
        ("resclip", "tlp", ["tlp"], "ResCLIP, logits refined by TLP"),
        ("sc-clip", "tlp", ["tlp"], "SC-CLIP, all five stages, logits refined by TLP"),
    ],
)
def test_the_refine_choice_runs_the_methods_own_or_the_chosen_refinement(
    photo: Path, events: Events, method: str, refine: str, ran: list[str], description: str
) -> None:
    _, summary = events.segmenting.segment(
        str(photo), "red; blue", "", 0.0, method=method, refine=refine, progress=None
    )
    assert summary["method"] == method and summary["refine"] == ran and summary["description"] == description
    assert abs(sum(summary["shares"].values()) - 1.0) < 1e-6


def test_the_refine_choice_maps_onto_the_engines_refine_and_pamr_steps() -> None:
    from demo.inputs import refine_choice

    assert refine_choice(None) == refine_choice("") == refine_choice("default") == (None, 0)
    assert refine_choice("none") == ((), 0) and refine_choice("tlp") == (("tlp",), 0)
    assert refine_choice("pamr") == refine_choice(None, True) == (("pamr",), PAMR_STEPS)
    assert refine_choice(True) == (("pamr",), PAMR_STEPS), "a share link made before the choice: its checkbox"
    assert refine_choice(False) == (None, 0)


def test_a_kept_resclip_result_counts_its_text_states_and_text_side(photo: Path, events: Events) -> None:
    events.segmenting.segment(str(photo), "red; blue", "", 0.0, method="resclip", progress=None)
    kept = events.store.get(LOCAL_SESSION)
    embedding = kept.embedding
    assert embedding.text_states and embedding.text_side is not None, "the second pass's states are kept for reuse"
    tensors = [embedding.text_side[1]]
    for text_state in embedding.text_states:
        state = text_state.state
        tensors += [state.key, state.value, state.rcs_attention, state.crops]
    states = sum({id(t.untyped_storage()): t.untyped_storage().nbytes() for t in tensors}.values())
    without = dataclasses.replace(kept, embedding=dataclasses.replace(embedding, text_states=[], text_side=None))
    assert states > 0 and kept.nbytes() == without.nbytes() + states
    assert events.store.total_bytes == kept.nbytes()
    rcs = embedding.text_states[0].state.rcs_attention
    assert rcs[:1].element_size() * rcs[:1].nelement() < rcs.untyped_storage().nbytes()
    sliced = dataclasses.replace(without, embedding=dataclasses.replace(without.embedding, embeddings=rcs[:1]))
    assert sliced.nbytes() >= rcs.untyped_storage().nbytes(), "a slice keeps its whole storage alive"


@pytest.fixture(scope="module")
def scored(photo: Path):
    """A segmentation of the photo into four classes with a background class, on the tiny model."""
    import torch

    from scclip_core import Segmenter, load_model

    torch.manual_seed(3)
    segmenter = Segmenter(load_model("tiny-test", "random", device="cpu"), FAST_CONFIG)
    return segmenter.segment(str(photo), "red; blue; green; grey", background=["sky", "wall"])


@pytest.mark.parametrize("prob_threshold", [0.0, 0.2, 0.26, 0.3, 1.0])
def test_the_kept_scores_apply_the_probability_rule_exactly(scored, prob_threshold: float) -> None:
    kept = scored.compact(KEPT_PROBS_BYTES)
    expected = scored.with_thresholds(prob_threshold).labels
    assert np.array_equal(kept.with_thresholds(prob_threshold).labels, expected)


@pytest.mark.parametrize("area_threshold", [0.05, 0.3, 0.6])
def test_the_kept_scores_apply_the_area_rule_like_the_engine(scored, area_threshold: float) -> None:
    exact = scored.compact(probs_bytes=1 << 30)
    expected = scored.with_thresholds(0.2, area_threshold).labels
    assert np.array_equal(exact.with_thresholds(0.2, area_threshold).labels, expected)
    small = scored.compact(probs_bytes=2000)
    assert small.pixel_scores.probs.nbytes <= 2000
    assert np.mean(small.with_thresholds(0.2, area_threshold).labels == expected) > 0.9, (
        "with reduced probabilities only the pixels of dropped classes can differ"
    )


def test_preset_classes_do_not_count_against_the_per_request_limits(photo: Path, events: Events) -> None:
    handlers = events.segmenting
    coco = vocabulary_preset("coco_stuff").as_text()
    _, summary = handlers.segment(str(photo), coco, "", 0.0, templates="simple", progress=None)
    assert len(summary["classes"]) == 171, "171 classes, over the 100 a visitor may type, run as a preset"
    own = "; ".join(f"thing {index}" for index in range(101))
    with pytest.raises(gr.Error, match="101 classes of your own"):
        handlers.segment(str(photo), f"{coco}\n{own}", "", 0.0, templates="simple", progress=None)
    with pytest.raises(gr.Error, match="101 classes of your own"):
        handlers.segment(str(photo), own, "", 0.0, templates="simple", progress=None)


def test_warm_up_embeds_the_presets_so_a_preset_costs_no_text_encoding(photo: Path) -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # not warmed up yet
    assert host.segmenter("openai").text.uncached(preset_queries())
    host.warm_up().join(60)
    for templates in TEMPLATE_SET_NAMES:
        assert host.segmenter(templates).text.uncached(preset_queries()) == [], templates
    assert host.segmenter("simple").text.uncached(host.namer.names) == []
    ade20k = vocabulary_preset("ade20k")
    assert len(ade20k.classes) > host.limits.full_template_names
    _, summary = Events(host).segmenting.segment(str(photo), ade20k.as_text(), "", 0.0, progress=None)
    assert not any("short prompt templates" in notice for notice in summary["notices"]), "the paper's 80 templates"


def test_a_patch_is_named_after_calibration_and_in_vanilla_clip(photo: Path) -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # the namer's vocabulary not embedded yet
    embedding = host.segmenter("simple").embed_image(str(photo), trace=True)
    assert host.name_patch(embedding, (10, 10), ["red square"]) is None, "no waiting while the names are embedded"
    host.warm_up().join(60)
    named = host.name_patch(embedding, (10, 10), ["red square"])
    assert len(named.calibrated) == len(named.vanilla) == 10
    assert named.location.window == 0 and named.calibrated != named.vanilla
    assert "red square" in host.namer.vocabulary(["red square"])[0]


def test_the_inside_views_name_the_picked_patch_before_and_after_calibration(photo: Path) -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # the namer's vocabulary not embedded yet
    events = Events(host)
    events.segmenting.segment(str(photo), "red square; blue square", "", 0.0, templates="simple", progress=None)
    pending, _ = events.inside.patch_names((5, 5))
    assert "still being embedded" in pending, "a click never waits for the vocabulary"
    assert f"{number_word(len(VOCABULARY_PRESETS))} vocabulary presets, {len(builtin_vocabulary())} names" in pending
    host.warm_up().join(60)
    anomaly_view, similarity_view = events.inside.patch_names((5, 5))
    assert anomaly_view == similarity_view
    assert anomaly_view.count("<li") == 20, "10 names after calibration, 10 in vanilla CLIP"
    assert "SC-CLIP (as run)" in anomaly_view and "vanilla CLIP" in anomaly_view and "UNTRAINED" in anomaly_view


def test_picking_a_vocabulary_preset_fills_the_class_box(events: Events) -> None:
    handlers = events.segmenting
    text = handlers.preset_classes("pascal_voc")
    assert text.startswith("aeroplane; bicycle; bird") and text.count(";") == 19
    assert isinstance(handlers.preset_classes(""), type(gr.skip()))
    with pytest.raises(gr.Error, match="unknown vocabulary preset 'imagenet'"):
        handlers.preset_classes("imagenet")


def test_every_display_label_table_names_exactly_the_engine_choices() -> None:
    from demo.labels import DETECTOR_LABELS, METHOD_LABELS, REFINE_CHOICES, STAGE_LABELS, TEMPLATE_LABELS, refine_labels
    from scclip_core import METHODS, TEMPLATE_SET_NAMES, Stages
    from scclip_core.refinements import NO_REFINEMENT, REFINEMENTS

    assert list(METHOD_LABELS) == list(METHODS) and list(STAGE_LABELS) == list(Stages.names())
    assert list(DETECTOR_LABELS) == list(DETECTORS) and list(TEMPLATE_LABELS) == list(TEMPLATE_SET_NAMES)
    assert list(refine_labels()) == list(REFINE_CHOICES) == ["default", NO_REFINEMENT, *REFINEMENTS]
    assert refine_labels()["default"] == "method's own (PEARL: TLP)"


def test_every_ablation_configuration_has_its_own_label() -> None:
    from demo.labels import own_ablation_note, variant_label
    from scclip_core import METHOD_SPECS, ablation_variants

    labels = [variant_label(variant) for variant in ablation_variants()]
    assert len(set(labels)) == len(labels)
    assert labels[-4:] == ["ResCLIP", "ResCLIP (RCS off)", "ResCLIP (SFR off)", "PEARL"]
    note = own_ablation_note()
    for spec in METHOD_SPECS.values():
        assert all(label in note for label, _ in spec.ablations)
    assert "ResCLIP's RCS off and SFR off are this project's own ablation" in note


def test_the_segment_parameter_descriptions_state_the_engine_defaults() -> None:
    from demo.events.segmenting import SegmentEvents
    from demo.inputs import DEFAULT_BETA, DEFAULT_DETECTOR, DEFAULT_METHOD, DEFAULT_TEMPLATES, TRAINED_PROB_THRESHOLD
    from demo.labels import REFINE_CHOICES
    from scclip_core import METHODS, PAMR_DILATIONS

    described = SegmentEvents.segment.__doc__
    assert f"{DEFAULT_METHOD} (default)" in described and f"{DEFAULT_DETECTOR} (default)" in described
    assert f"(default {DEFAULT_BETA})" in described and f"(default {TRAINED_PROB_THRESHOLD})" in described
    assert f"templates: prompt templates: {DEFAULT_TEMPLATES} (" in described
    assert f"PAMR, {PAMR_STEPS} steps at dilations {' and '.join(map(str, PAMR_DILATIONS))}" in described
    method_line = next(line for line in described.splitlines() if line.strip().startswith("method:"))
    assert all(name in method_line for name in METHODS), "every registered method, from the registry"
    refine_line = next(line for line in described.splitlines() if line.strip().startswith("refine:"))
    *first, last = REFINE_CHOICES
    assert f"{', '.join(first)} or {last} (default default)" in refine_line and "PEARL: TLP" in refine_line


class _Visitor:
    """A stand-in for gr.Request: a session, the direct peer's address and the headers."""

    def __init__(self, session: str, peer: str = "203.0.113.7", **headers: str) -> None:
        self.session_hash = session
        self.client = type("Client", (), {"host": peer})()
        self.headers = headers


def test_a_visitors_third_concurrent_request_is_refused_and_nobody_elses(
    photo: Path, demo_host: ModelHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    from demo.admission import Admission
    from demo.events.segmenting import SegmentEvents

    events = Events(demo_host, admission=Admission(max_per_visitor=2, slots=4))
    running = threading.Semaphore(0)
    finish = threading.Event()
    original = SegmentEvents.run

    def held_for_greedy(self, *args, **kwargs):
        if threading.current_thread().name.startswith("greedy"):
            running.release()
            assert finish.wait(60)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SegmentEvents, "run", held_for_greedy)
    greedy, other = _Visitor("greedy"), _Visitor("other")

    def segment(request: _Visitor) -> None:
        events.segmenting.segment(str(photo), "red; blue", "", 0.0, request=request, progress=None)

    threads = [threading.Thread(target=segment, args=(greedy,), name=f"greedy {index}") for index in range(2)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert running.acquire(timeout=60), "both of greedy's requests hold their places"
    with pytest.raises(gr.Error, match="already have 2 requests waiting or running"):
        segment(greedy)
    segment(other)  # another visitor is served while greedy holds both places
    segment(_Visitor("greedy", peer="198.51.100.1"))  # the same session hash from another address: someone else
    finish.set()
    for thread in threads:
        thread.join(60)
    assert events.admission.held("greedy 203.0.113.7") == 0, "both places given back"
    segment(greedy)  # and greedy is served again


def test_places_are_given_back_after_errors_and_cancellation_over_every_heavy_event(
    photo: Path, demo_host: ModelHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    from demo.admission import Admission

    events = Events(demo_host, admission=Admission(max_per_visitor=1, slots=1))
    visitor = _Visitor("tab")
    for _ in range(3):  # a limit of one place: each would be refused if a failed request kept its place
        with pytest.raises(gr.Error, match="could not read the file as an image"):
            events.segmenting.segment(__file__, "red", request=visitor, progress=None)
    monkeypatch.setattr(events.host, "embed_text", lambda *args: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(gr.Error, match="unexpected RuntimeError: boom"):
        events.segmenting.segment(str(photo), "red; blue", "", 0.0, request=visitor, progress=None)
    with pytest.raises(gr.Error, match="unexpected RuntimeError: boom"):
        events.comparing.ablate(str(photo), "red; blue", "", 0.0, comparisons=[], request=visitor, progress=None)
    with pytest.raises(asyncio.CancelledError):  # how a cancelled request's task ends
        with events.admission.enter("tab 203.0.113.7"):
            raise asyncio.CancelledError
    assert events.admission.held("tab 203.0.113.7") == 0
    monkeypatch.undo()
    with events.admission.place("tab 203.0.113.7"):  # the visitor's one place taken by a running segment
        with pytest.raises(gr.Error, match="already have 1 requests"):
            events.comparing.ablate(str(photo), "red; blue", "", 0.0, comparisons=[], request=visitor, progress=None)
        with pytest.raises(gr.Error, match="already have 1 requests"):
            events.sharing.segment_shared(
                str(photo), "red", "", 0.0, "sc-clip", None, "lof", 0.4, 0.0, "simple", "default", request=visitor
            )


def test_the_forwarded_address_counts_only_from_a_trusted_proxy() -> None:
    from demo.admission import client_address, trusted_proxies, visitor_key

    spaces = trusted_proxies("10.0.0.0/8, 127.0.0.1")
    assert client_address("203.0.113.7", "1.2.3.4", spaces) == "203.0.113.7", "a client's own header proves nothing"
    assert client_address("10.16.3.80", "203.0.113.7", spaces) == "203.0.113.7"
    assert client_address("10.16.3.80", "6.6.6.6, 203.0.113.7, 10.1.1.1", spaces) == "203.0.113.7", (
        "the right-most entry that is not a proxy: those further left were written by the client"
    )
    assert client_address("10.16.3.80", None, spaces) == "10.16.3.80"
    assert client_address("10.16.3.80", "203.0.113.7", trusted_proxies("")) == "10.16.3.80", "none trusted by default"
    with pytest.raises(ValueError, match="SCCLIP_TRUSTED_PROXIES"):
        trusted_proxies("10.0.0.0/8, proxy.example")
    tool_call = _Visitor("mcp-client", "127.0.0.1", **{"mcp-session-id": "agent-1", "x-forwarded-for": "203.0.113.9"})
    assert visitor_key(tool_call, "mcp-client", spaces) == "mcp-client 203.0.113.9 agent-1"
    assert visitor_key(None, "local", spaces) == "local"


def test_the_per_visitor_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from demo.admission import DEFAULT_MAX_QUEUED, MAX_QUEUED_ENV, Admission

    monkeypatch.delenv(MAX_QUEUED_ENV, raising=False)
    assert Admission().max_per_visitor == DEFAULT_MAX_QUEUED == 2
    monkeypatch.setenv(MAX_QUEUED_ENV, "5")
    assert Admission().max_per_visitor == 5
    monkeypatch.setenv(MAX_QUEUED_ENV, "0")
    with pytest.raises(ValueError, match="at least 1, not '0'"):
        Admission()


def test_the_models_slots_are_given_first_come_first_served() -> None:
    from demo.admission import ModelSlots

    slots = ModelSlots(2)
    holding = [threading.Event() for _ in range(2)]
    release = threading.Event()

    def holder(index: int) -> None:
        with slots.hold():
            holding[index].set()
            assert release.wait(60)

    holders = [threading.Thread(target=holder, args=(index,)) for index in range(2)]
    for thread in holders:
        thread.start()
    assert all(event.wait(60) for event in holding)
    queued = []
    original_wait_for = slots._condition.wait_for

    def announcing_wait_for(predicate, timeout=None):
        queued.append(threading.current_thread().name)
        return original_wait_for(predicate, timeout)

    slots._condition.wait_for = announcing_wait_for
    served: list[str] = []

    def waiter() -> None:
        with slots.hold():
            served.append(threading.current_thread().name)

    waiters = [threading.Thread(target=waiter, name=str(index)) for index in range(4)]
    for thread in waiters:  # each waits for a slot before the next one asks
        thread.start()
        while thread.name not in queued:
            thread.join(0.01)
    assert not served, "both slots are held"
    release.set()
    for thread in [*holders, *waiters]:
        thread.join(60)
    assert served == ["0", "1", "2", "3"]


class _Clock:
    """A stand-in for time.perf_counter that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_segment_reports_the_text_time_it_spent(tiny_model, photo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scclip_core import Segmenter
    from scclip_core.prompt_encoding import SharedPrefixTower

    clock = _Clock()
    encode = SharedPrefixTower.encode
    batches: list[int] = []

    def slow_encode(*args, **kwargs):
        batches.append(1)
        clock.now += 5.0  # each batch of prompts "takes" five seconds
        return encode(*args, **kwargs)

    segmenter = Segmenter(tiny_model, FAST_CONFIG)
    monkeypatch.setattr(SharedPrefixTower, "encode", slow_encode)
    monkeypatch.setattr("scclip_core.segmenter.time.perf_counter", clock)
    first = segmenter.segment(str(photo), "red; blue", background=None)
    encoded = len(batches)
    assert encoded and first.timings["text"] == 5.0 * encoded, "every second of encoding this call's text"
    again = segmenter.segment(str(photo), "red; blue", background=None)
    assert len(batches) == encoded and again.timings["text"] == 0.0, "cached: no encoding, no text time"


def test_the_timings_name_every_part_of_the_wait_and_agree_everywhere(photo: Path) -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # no class text embedded yet
    events = Events(host)
    _, first = events.segmenting.segment(str(photo), "teapot; saucer", "", 0.0, templates="simple", progress=None)
    timings = first["timings"]
    assert list(timings) == ["queue", "text", "image", "prediction", "other", "total"]
    assert timings["text"] > 0 and timings["image"] > 0, "this request's new class text and its image side"
    parts = [timings[name] for name in ("queue", "text", "image", "prediction", "other")]
    assert sum(parts) == pytest.approx(timings["total"], abs=1e-3), "the parts add up to the wait"
    kept = events.store.get(LOCAL_SESSION)
    assert kept.timings.as_json() == timings and not kept.reused_image_side

    _, again = events.segmenting.segment(str(photo), "teapot; spoon", "", 0.0, templates="simple", progress=None)
    assert again["timings"]["image"] == "reused" and again["reused_image_side"] is True
    kept = events.store.get(LOCAL_SESSION)
    shown = events.rendering.show_result(0.5)
    line = kept.timings.line()
    assert "image reused" in line and line in shown.status and line in shown.timings
    assert f"total {again['timings']['total']:.2f} s" in line
    relabelled = events.rendering.rethreshold_api(0.3).summary_json
    assert relabelled["timings"] == again["timings"], "relabelling keeps the run's timings"


def test_the_queue_wait_is_read_from_gradios_record_of_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from gradio.context import LocalContext

    from demo.timings import ModelTimes, RequestClock, gradio_queue_seconds

    assert gradio_queue_seconds() == 0.0, "no queued event runs this thread"
    event = type("Event", (), {"enqueue_time": time.monotonic() - 42.0})()
    blocks = type("Blocks", (), {"_queue": type("Queue", (), {"event_ids_to_events": {"e1": event}})()})()
    event_token, blocks_token = LocalContext.event_id.set("e1"), LocalContext.blocks.set(blocks)
    try:
        clock = RequestClock.start()
    finally:
        LocalContext.event_id.reset(event_token)
        LocalContext.blocks.reset(blocks_token)
    assert clock.gradio_queue >= 42.0
    timings = clock.waited(3.0).timings(ModelTimes(text=1.0, image=None, prediction=0.5))
    assert timings.queue == clock.gradio_queue + 3.0 and timings.total >= clock.gradio_queue


def test_at_exit_a_running_warm_up_stops_after_its_current_turn() -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # not warmed up yet
    thread = host.warm_up()
    stop_warm_ups()  # what the interpreter runs at exit, before it kills daemon threads (inside torch: an abort)
    assert not thread.is_alive()
    assert host.segmenter("openai").text.uncached(preset_queries()), "stopped before the 80 templates' part"
