"""How the page names the engine's choices: one table of display labels per kind of choice (methods, stages,
detectors, template sets, refinements), keyed by the engine's own names, and what ran, in words."""

from __future__ import annotations

from scclip_core import PAMR_DILATIONS, PAMR_STEPS, Method, Segmentation, Stages, Variant
from scclip_core.config import PAMR
from scclip_core.methods import DEFAULT_ABLATION_METHODS, METHOD_SPECS
from scclip_core.refinements import NO_REFINEMENT, REFINEMENTS

SCCLIP: Method = Variant.method
VANILLA: Method = "clip"
COMPARISON_METHODS: tuple[Method, ...] = tuple(method for method in METHOD_SPECS if method not in (SCCLIP, VANILLA))
DEFAULT_COMPARISONS: tuple[Method, ...] = tuple(
    method for method in COMPARISON_METHODS if method in DEFAULT_ABLATION_METHODS
)
"""The comparison methods the ablation runs unless asked otherwise (the engine's default set: ResCLIP's
per-vocabulary second pass would take it past twice one segmentation)."""
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
METHOD_REFINEMENTS = "default"
"""The refine choice that runs what each method's official code runs on its logits (PEARL: TLP; the others:
nothing), as `Segmenter.predict(refine=None)` does."""
REFINE_CHOICES: tuple[str, ...] = (METHOD_REFINEMENTS, NO_REFINEMENT, *REFINEMENTS)
"""The demo's refine choice, first the default: the method's own, none, or one of the engine's refinements."""
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def number_word(count: int) -> str:
    """A count as the page writes it: in words up to nine."""
    return NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def own_refinements() -> str:
    """The methods whose official code refines its logits, and with what: "PEARL: TLP"."""
    return "; ".join(
        f"{spec.label}: {' then '.join(REFINEMENTS[name].label for name in spec.refinements)}"
        for spec in METHOD_SPECS.values()
        if spec.refinements
    )


def refine_labels() -> dict[str, str]:
    """The refine choice's display labels, by `REFINE_CHOICES` value."""
    own = own_refinements()
    return {
        METHOD_REFINEMENTS: f"method's own ({own})" if own else "method's own",
        NO_REFINEMENT: "none",
        **{name: refinement.label for name, refinement in REFINEMENTS.items()},
    }


def refine_help() -> str:
    """What each refine choice does, for the page and the API's parameter description."""
    dilations = " and ".join(str(dilation) for dilation in PAMR_DILATIONS)
    settings = {PAMR: f", {PAMR_STEPS} steps at dilations {dilations}: sharper edges, a few seconds more"}
    refinements = "; ".join(
        f"{refinement.label}{settings.get(name, '')} ({refinement.source})" for name, refinement in REFINEMENTS.items()
    )
    return (
        f"method's own: what the method's official code runs ({own_refinements() or 'nothing'}; the others: "
        f"nothing); none: the method's output alone; {refinements}. Any method can take any refinement."
    )


def ablation_label(variant: Variant) -> str | None:
    """The label of the method's own ablation this variant is ("RCS off"), or None when it runs as published."""
    spec = METHOD_SPECS[variant.method]
    return next((label for label, params in spec.ablations if params == variant.params), None)


def own_ablation_note() -> str:
    """Which configurations are this project's own ablation of a method, not switches of its official code."""
    return " ".join(
        f"{spec.label}'s {' and '.join(label for label, _ in spec.ablations)} are this project's own ablation: "
        "its official code has no switch to turn them off."
        for spec in METHOD_SPECS.values()
        if spec.ablations
    )


def variant_label(variant: Variant) -> str:
    """A configuration's short name, as the ablation captions it: "SC-CLIP (full)", "− anomaly resolution",
    "NACLIP", "ResCLIP (RCS off)"."""
    if variant.method != SCCLIP:
        own = ablation_label(variant)
        return method_label(variant.method) if own is None else f"{method_label(variant.method)} ({own})"
    off = [STAGE_LABELS[name] for name in Stages.names() if not getattr(variant.stages, name)]
    return f"{method_label(SCCLIP)} (full)" if not off else " ".join(f"− {name}" for name in off)


def describe_refinements(refinements: tuple[str, ...], pamr_steps: int) -> str:
    """ ", logits refined by PAMR (10 steps) then TLP" for the refinements that ran, "" for none."""
    steps = {PAMR: f" ({pamr_steps} steps)"}
    ran = " then ".join(f"{REFINEMENTS[name].label}{steps.get(name, '')}" for name in refinements)
    return f", logits refined by {ran}" if ran else ""


def describe_run(segmentation: Segmentation) -> str:
    """What ran, in words: "SC-CLIP, all five stages", "SC-CLIP without anomaly resolution", "NACLIP", with the
    refinements that ran ("PEARL, logits refined by TLP")."""
    refined = describe_refinements(segmentation.refinements, segmentation.pamr_steps)
    label = method_label(segmentation.method)
    if segmentation.method != SCCLIP:
        return label + refined
    off = [STAGE_LABELS[name] for name in Stages.names() if not getattr(segmentation.stages, name)]
    if not off:
        return f"{label}, all {number_word(len(STAGE_LABELS))} stages{refined}"
    if len(off) == len(STAGE_LABELS):
        return f"{label} with every stage off{refined}"
    return f"{label} without {', '.join(off)}{refined}"
