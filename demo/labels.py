"""How the page names the engine's choices: one table of display labels per kind of choice (methods, stages,
detectors, template sets), keyed by the engine's own names, and what ran, in words."""

from __future__ import annotations

from scclip_core import Method, Stages, Variant
from scclip_core.methods import METHOD_SPECS

SCCLIP: Method = Variant.method
VANILLA: Method = "clip"
COMPARISON_METHODS: tuple[Method, ...] = tuple(method for method in METHOD_SPECS if method not in (SCCLIP, VANILLA))
METHOD_LABELS: dict[str, str] = {name: spec.label for name, spec in METHOD_SPECS.items()}
STAGE_LABELS: dict[str, str] = {
    "anomaly": "anomaly resolution",
    "pre_aggregation": "pre-aggregation",
    "attention_prior": "attention prior",
    "post_aggregation": "post-aggregation",
    "multi_level": "multi-level fusion",
}
DETECTOR_LABELS: dict[str, str] = {"lof": "LOF", "l2norm": "top L2 norm"}
TEMPLATE_LABELS: dict[str, str] = {
    "openai": "80 OpenAI templates (as in the paper)",
    "simple": "7 short templates (faster text for long class lists)",
}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def number_word(count: int) -> str:
    """A count as the page writes it: in words up to nine."""
    return NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def variant_label(variant: Variant) -> str:
    """A configuration's short name, as the ablation captions it: "SC-CLIP (full)", "− anomaly resolution",
    "NACLIP"."""
    if variant.method != SCCLIP:
        return method_label(variant.method)
    off = [STAGE_LABELS[name] for name in Stages.names() if not getattr(variant.stages, name)]
    return f"{method_label(SCCLIP)} (full)" if not off else " ".join(f"− {name}" for name in off)


def describe_run(method: str, stages: Stages, pamr_steps: int = 0) -> str:
    """What ran, in words: "SC-CLIP, all five stages", "SC-CLIP without anomaly resolution", "NACLIP", with
    ", edges refined by PAMR (10 steps)" when PAMR ran."""
    refined = f", edges refined by PAMR ({pamr_steps} steps)" if pamr_steps else ""
    label = method_label(method)
    if method != SCCLIP:
        return label + refined
    off = [STAGE_LABELS[name] for name in Stages.names() if not getattr(stages, name)]
    if not off:
        return f"{label}, all {number_word(len(STAGE_LABELS))} stages{refined}"
    if len(off) == len(STAGE_LABELS):
        return f"{label} with every stage off{refined}"
    return f"{label} without {', '.join(off)}{refined}"
