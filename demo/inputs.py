"""What a visitor sends, checked before any model work: the image file's header, the class list against the
per-request limits, and the raw values of the settings widgets (or of an API call)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demo.labels import METHOD_REFINEMENTS, REFINE_CHOICES
from scclip_core import (
    PAMR_STEPS,
    TEMPLATE_SET_NAMES,
    CalibrationParams,
    InputError,
    LabelRules,
    SegmenterConfig,
    Stages,
    Variant,
    Vocabulary,
    parse_classes,
    parse_words,
    preset_queries,
    probe_size,
    to_rgb_array,
)
from scclip_core.config import PAMR, TemplateSet, detector_named
from scclip_core.images import cap_size
from scclip_core.methods import method_named
from scclip_core.refinements import NO_REFINEMENT, refinement_named

DEFAULT_METHOD = Variant.method
DEFAULT_DETECTOR = CalibrationParams.detector
DEFAULT_BETA = CalibrationParams.beta
DEFAULT_TEMPLATES = SegmenterConfig.templates
TRAINED_PROB_THRESHOLD = 0.15


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the shared model, so that no visitor holds it for long.

    Images larger than `max_image_pixels` are refused before any pixel is decoded (the engine reads up to
    `MAX_READ_PIXELS`, but one visitor must not make a shared server decode that much). Classes whose every name
    comes from a vocabulary preset (`preset_names`) are free: their text is embedded
    once, when the app starts. A request with more than `full_template_names` new names (not embedded yet) runs
    with the 7 short templates instead of the paper's 80, and says so. 100 names with the 80 templates take 14.7 s
    of text on 2 vCPUs in the demo's turns of 6 names; before prompts shared their template prefixes, 30 names took
    15.6 s in turns of 2 (`python -m benchmarks.text --templates openai --sizes 100 --chunk 6`, `--sizes 30
    --chunk 2`).
    """

    max_classes: int = 100
    max_names: int = 200
    full_template_names: int = 100
    max_image_pixels: int = 80_000_000  # per upload, checked from the header; below the engine's MAX_READ_PIXELS
    max_video_seconds: float = 20.0  # per uploaded clip; a longer one is refused before any frame is decoded
    max_video_frames: int = 300  # segmented frames per clip; beyond that, frames are sampled evenly
    max_batch_files: int = 16  # images per batch request
    live_side: int = 224  # a live webcam frame's long side as segmented: one 224x224 window, to keep up
    preset_names: frozenset[str] = field(default_factory=lambda: frozenset(name.lower() for name in preset_queries()))

    def check(self, vocabulary: Vocabulary) -> None:
        """Raise InputError when the class list (besides preset classes) is longer than one request may be."""
        own = [
            synonyms
            for index, synonyms in enumerate(vocabulary.classes)
            if index != vocabulary.background_index and not self._from_presets(synonyms)
        ]
        if len(own) > self.max_classes:
            raise InputError(
                f"{len(own)} classes of your own given; this demo takes at most {self.max_classes} per request (the "
                "vocabulary presets' classes do not count) so that other visitors are not kept waiting. Split the "
                "list, or run the command-line tool for larger vocabularies."
            )
        names = sum(len(synonyms) for synonyms in vocabulary.classes if not self._from_presets(synonyms))
        if names > self.max_names:
            raise InputError(
                f"{names} names given (classes, synonyms and background words together, besides the presets'); "
                f"this demo takes at most {self.max_names} per request. Drop some synonyms or background words."
            )

    def _from_presets(self, synonyms: Sequence[str]) -> bool:
        return all(name.lower() in self.preset_names for name in synonyms)

    def describe(self) -> str:
        return (
            f"up to {self.max_classes} classes and {self.max_names} names of your own (synonyms and background words "
            "included) per request, besides any classes of the vocabulary presets; above "
            f"{self.full_template_names} new names, the 7 short prompt templates are used; images up to "
            f"{self.max_image_pixels / 1e6:.0f} megapixels; videos up to {self.max_video_seconds:g} s, of which at "
            f"most {self.max_video_frames} frames are segmented (sampled evenly); batches of up to "
            f"{self.max_batch_files} images; live webcam frames segmented with the long side at {self.live_side} px"
        )


LIMITS = RequestLimits()


@dataclass(frozen=True)
class RequestSettings:
    """One request's choices as the engine's types (which validate themselves), from `parse_settings`."""

    variant: Variant
    params: CalibrationParams
    rules: LabelRules
    background: tuple[str, ...] | None
    templates: TemplateSet
    refine: tuple[str, ...] | None = None
    pamr_steps: int = 0

    @property
    def image_side(self) -> dict[str, Any]:
        """The keywords of `Segmenter.embed_image` (and `image_key`) that this request sets: what the image side
        depends on."""
        variant = self.variant
        return {
            "method": variant.method,
            "stages": variant.stages,
            "params": self.params,
            "method_params": variant.params,
        }

    @property
    def prediction(self) -> dict[str, Any]:
        """The keywords of `Segmenter.predict` that this request sets: its label rules and refinements."""
        return {"rules": self.rules, "pamr_steps": self.pamr_steps, "refine": self.refine}


def template_set(value: str | None) -> TemplateSet:
    """A template set's name (None or '' means the default), refusing unknown ones."""
    for name in TEMPLATE_SET_NAMES:
        if (value or DEFAULT_TEMPLATES) == name:
            return name
    raise InputError(f"unknown template set {value!r}; choose one of {', '.join(TEMPLATE_SET_NAMES)}")


def number(value: Any, name: str, low: float, high: float, default: float) -> float:
    """A finite number in [low, high] from a widget or API value (None or '' means `default`)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number between {low:g} and {high:g}, not {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number between {low:g} and {high:g}, not {value!r}") from None
    if not math.isfinite(result) or not low <= result <= high:
        raise InputError(f"{name} must be a number between {low:g} and {high:g}, not {value!r}")
    return result


def stage_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Stage names from a checkbox group or an API call: a list, or one string such as "anomaly, multi-level".

    None means every stage. Dashes and underscores are both accepted; unknown names are refused.
    """
    if value is None:
        return Stages.names()
    if isinstance(value, str):
        items = [part for part in re.split(r"[,;\s]+", value) if part]
    elif isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise InputError(f"stage_names must be a list of stage names, not {value!r}")
    return Stages.check_names(items)


def refine_choice(refine: Any, refine_edges: Any = False) -> tuple[tuple[str, ...] | None, int]:
    """The refine choice (`REFINE_CHOICES`; None or '' means the method's own) as `Segmenter.predict`'s `refine` and
    `pamr_steps`: None runs the method's own refinements, () none, (name,) that one.

    Older share links and API calls send a boolean: `refine_edges` (or a boolean in place of the choice) true means
    PAMR, false the method's own.
    """
    if refine_edges not in (None, True, False):
        raise InputError(f"refine_edges must be true or false, not {refine_edges!r}")
    if isinstance(refine, bool):
        refine_edges, refine = refine_edges or refine, None
    choice = refine or METHOD_REFINEMENTS
    if not isinstance(choice, str) or choice not in REFINE_CHOICES:
        raise InputError(f"unknown refine choice {refine!r}; choose one of {', '.join(REFINE_CHOICES)}")
    if refine_edges and choice not in (METHOD_REFINEMENTS, PAMR):
        raise InputError(f"refine_edges=true asks for PAMR, refine for {choice!r}: give only refine")
    choice = PAMR if refine_edges else choice
    if choice == METHOD_REFINEMENTS:
        return None, 0
    if choice == NO_REFINEMENT:
        return (), 0
    return (refinement_named(choice),), PAMR_STEPS if choice == PAMR else 0


def parse_rules(prob_threshold: Any, area_threshold: Any, default_prob_threshold: float) -> LabelRules:
    """The background rules from the threshold sliders (an area threshold of 0 switches the area rule off)."""
    return LabelRules(
        prob_threshold=number(prob_threshold, "the background threshold", 0.0, 1.0, default_prob_threshold),
        area_threshold=number(area_threshold, "the area threshold", 0.0, 1.0, 0.0) or None,
    )


def parse_settings(
    method: str | None,
    stage_names: str | Sequence[str] | None,
    detector: str | None,
    beta: Any,
    background_words: str | None,
    prob_threshold: Any,
    area_threshold: Any,
    templates: str | None,
    refine_edges: Any = False,
    refine: Any = None,
    *,
    default_prob_threshold: float = TRAINED_PROB_THRESHOLD,
) -> RequestSettings:
    """Turn raw widget or API values into RequestSettings, raising InputError with a message per field."""
    chosen = stage_list(stage_names)
    variant = Variant(method_named(method or DEFAULT_METHOD), Stages.only(*chosen))
    params = CalibrationParams(
        beta=number(beta, "β", 0.0, 1.0, DEFAULT_BETA), detector=detector_named(detector or DEFAULT_DETECTOR)
    )
    rules = parse_rules(prob_threshold, area_threshold, default_prob_threshold)
    if background_words is not None and not isinstance(background_words, str):
        raise InputError(f"background words must be text, not {type(background_words).__name__}")
    refinements, pamr_steps = refine_choice(refine, refine_edges)
    return RequestSettings(
        variant=variant,
        params=params,
        rules=rules,
        background=parse_words(background_words) or None,
        templates=template_set(templates),
        refine=refinements,
        pamr_steps=pamr_steps,
    )


def parse_vocabulary(classes_text: Any, settings: RequestSettings, limits: RequestLimits = LIMITS) -> Vocabulary:
    """The class list as typed, with the background class, within the per-request limits."""
    if classes_text is not None and not isinstance(classes_text, str):
        raise InputError(f"classes must be text, not {type(classes_text).__name__}")
    vocabulary = parse_classes(classes_text or "", background=settings.background)
    limits.check(vocabulary)
    return vocabulary


def image_path(value: Any) -> str | None:
    """The file path of an image input, whether it arrives raw (a FileData dict) or preprocessed (a str)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("path")
    return str(value)


def probe_image(path: str | None, limits: RequestLimits = LIMITS) -> tuple[int, int]:
    """The (width, height) an uploaded image shows upright, from its header alone, within the request limits."""
    if not path:
        raise InputError("no image: upload, paste or pick an example image first")
    if not Path(path).is_file():
        raise InputError("the uploaded image is gone from the server; please upload it again")
    return probe_size(path, limits.max_image_pixels)


def load_image(path: str, max_side: int | None) -> np.ndarray:
    """The image as the demo processes and shows it: upright RGB with its long side at most `max_side`.

    The label PNG is scaled back to the input size; everything a session keeps stays this small.
    """
    rgb, _ = cap_size(to_rgb_array(path), max_side)
    return rgb
