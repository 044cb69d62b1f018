"""Frozen configuration: SC-CLIP's layer choices per backbone, stage flags, hyperparameters, the inference
protocol and the labelling rules, and the one list of each kind of choice (methods, detectors, precisions,
template sets). Free of torch, so the command line can build them before loading a model."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, fields
from typing import Literal, get_args

from .errors import InputError

Detector = Literal["lof", "l2norm"]
DETECTORS: tuple[Detector, ...] = get_args(Detector)
Method = str
"""A method's name, one of the registry's (`scclip_core.methods.METHODS`)."""
DEFAULT_METHOD: Method = "sc-clip"
Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
TemplateSet = Literal["openai", "simple"]
TEMPLATE_SET_NAMES: tuple[TemplateSet, ...] = get_args(TemplateSet)
DEFAULT_MODEL = "ViT-B/16"
PAMR_DILATIONS: tuple[int, ...] = (8, 16)
PAMR = "pamr"  # the refinement whose steps `pamr_steps` sets
TLP = "tlp"  # PEARL's text-aware Laplacian propagation, whose settings `SegmenterConfig.tlp` holds
PAMR_STEPS = 10  # NACLIP's, the number of steps "refine edges" runs (PAMR is off by default, as in SC-CLIP)
DEFAULT_PROBS_BUDGET = 1 << 30  # bytes: the largest probability array kept at the input size


def detector_named(name: object) -> Detector:
    """`name` as a `Detector`; raises InputError listing the detectors (the one check of a detector name)."""
    for detector in DETECTORS:
        if name == detector:
            return detector
    raise InputError(f"detector must be one of {list(DETECTORS)}, not {name!r}")


def check_range(
    name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise InputError unless `value` is a finite real number in the interval (open ends as flagged)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or math.isinf(high) else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number in {interval}, not {value!r}")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        raise InputError(f"{name} must be in {interval}, not {value!r}")


@dataclass(frozen=True)
class LayerConfig:
    """Which block outputs SC-CLIP reads, as 0-based indices into the list of block outputs.

    `pre_adjust_idx` gives the mid-layer affinity, `post_adjust_idx` the shallow-layer affinity,
    `[multi_start_idx, multi_end_idx)` the layers summed for the second pass, `res_cls` the CLS add-back weight.
    """

    pre_adjust_idx: int
    post_adjust_idx: int
    multi_start_idx: int
    multi_end_idx: int
    res_cls: float

    def validate(self, depth: int) -> None:
        """Raise InputError unless every index addresses one of the first `depth - 1` block outputs."""
        last = depth - 2
        for name in ("pre_adjust_idx", "post_adjust_idx", "multi_start_idx"):
            value = getattr(self, name)
            if not 0 <= value <= last:
                raise InputError(f"{name}={value} is outside 0..{last} for a {depth}-block backbone")
        if not self.multi_start_idx < self.multi_end_idx <= last + 1:
            raise InputError(
                f"multi-level range [{self.multi_start_idx}, {self.multi_end_idx}) must be non-empty "
                f"and end at most at {last + 1} for a {depth}-block backbone"
            )


LAYER_CONFIGS: dict[str, LayerConfig] = {
    "ViT-B/16": LayerConfig(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10, res_cls=0.3),
    "ViT-L/14": LayerConfig(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19, res_cls=0.1),
}


def layers_for_depth(depth: int) -> LayerConfig:
    """Layers for any depth, scaled from the ViT-B/16 ones (12 blocks); exact for 12 and 24 blocks."""
    for known, known_depth in ((LAYER_CONFIGS["ViT-B/16"], 12), (LAYER_CONFIGS["ViT-L/14"], 24)):
        if depth == known_depth:
            return known
    if depth < 4:
        raise InputError(f"SC-CLIP needs at least 4 blocks; this backbone has {depth}")

    def scaled(index: int) -> int:
        return min(max(round(index * depth / 12), 0), depth - 2)

    start = scaled(3)
    end = max(min(round(10 * depth / 12), depth - 1), start + 1)
    return LayerConfig(
        pre_adjust_idx=scaled(8),
        post_adjust_idx=scaled(3),
        multi_start_idx=start,
        multi_end_idx=end,
        res_cls=0.3 if depth <= 16 else 0.1,
    )


def resolve_layers(layers: str | LayerConfig, depth: int) -> LayerConfig:
    """Layers by model name (`ViT-B/16`, `ViT-L/14`), `auto` (scaled to the depth) or as given, checked against
    the depth."""
    if isinstance(layers, LayerConfig):
        chosen = layers
    elif layers == "auto":
        chosen = layers_for_depth(depth)
    elif layers in LAYER_CONFIGS:
        chosen = LAYER_CONFIGS[layers]
    else:
        raise InputError(
            f"unknown layer config {layers!r}; use one of {sorted(LAYER_CONFIGS)}, 'auto' or a LayerConfig"
        )
    chosen.validate(depth)
    return chosen


@dataclass(frozen=True)
class Stages:
    """Switches for SC-CLIP's calibration stages; all on reproduces the paper."""

    anomaly: bool = True
    pre_aggregation: bool = True
    attention_prior: bool = True
    post_aggregation: bool = True
    multi_level: bool = True

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The stage names as command-line options spell them (`pre-aggregation`)."""
        return tuple(name.replace("_", "-") for name in cls.names())

    @classmethod
    def check_names(cls, names: Iterable[str]) -> tuple[str, ...]:
        """`names` as field names, each once in the order given: the one validator of stage names from every
        front end (dashes as on the command line and surrounding spaces are accepted). Raises InputError."""
        normalised = tuple(dict.fromkeys(name.strip().replace("-", "_") for name in names))
        unknown = [name for name in normalised if name not in cls.names()]
        if unknown:
            raise InputError(f"unknown stage(s) {unknown}; stages are {list(cls.names())}")
        return normalised

    @classmethod
    def without(cls, *names: str) -> Stages:
        """All stages on except `names` (see `check_names`)."""
        off = cls.check_names(names)
        return cls(**{name: name not in off for name in cls.names()})

    @classmethod
    def only(cls, *names: str) -> Stages:
        """Only `names` on (see `check_names`)."""
        on = cls.check_names(names)
        return cls(**{name: name in on for name in cls.names()})


@dataclass(frozen=True)
class Variant:
    """One way to run the last block: a method, SC-CLIP's calibration stages and the method's own settings.

    `stages` apply to methods whose spec says so (SC-CLIP) and `params` to methods with a settings dataclass of
    their own (ResCLIP, PEARL); each is set to its default where it does not apply, so that equal runs compare
    equal. `params=None` takes the method's defaults. Every variant reads the same frozen blocks 1..L-1, so several
    of them can share one pass over those blocks.
    """

    method: Method = DEFAULT_METHOD
    stages: Stages = Stages()
    params: Hashable = None

    def __post_init__(self) -> None:
        from .methods import method_spec  # the registry imports this module

        spec = method_spec(self.method)
        if not spec.stages:
            object.__setattr__(self, "stages", Stages())
        object.__setattr__(self, "params", spec.checked_params(self.params))

    def stage_on(self, name: str) -> bool:
        """Whether SC-CLIP's calibration stage `name` runs: never for methods without those stages, whose `stages`
        are set to the default and ignored."""
        from .methods import method_spec

        return method_spec(self.method).stages and getattr(self.stages, name)


def ablation_variants(methods: Iterable[str] | None = None) -> tuple[Variant, ...]:
    """Each of `methods` (None: every registered method) as published, each followed by its own ablation: SC-CLIP
    with each calibration stage off in turn, and the settings a method's spec lists (ResCLIP's RCS off, SFR off);
    in the registry's order."""
    from .methods import METHOD_SPECS, method_named

    chosen = set(METHOD_SPECS) if methods is None else {method_named(name) for name in methods}
    variants: list[Variant] = []
    for spec in (spec for spec in METHOD_SPECS.values() if spec.name in chosen):
        variants.append(Variant(spec.name))
        if spec.stages:
            variants.extend(Variant(spec.name, Stages.without(name)) for name in Stages.names())
        variants.extend(Variant(spec.name, params=params) for _, params in spec.ablations)
    return tuple(variants)


@dataclass(frozen=True)
class CalibrationParams:
    """The hyperparameters the official code hard-codes, settable here."""

    beta: float = 0.4
    prior_temperature: float = 3.0
    prior_mix: float = 0.5
    lof_k: int = 30
    contamination: float = 0.05
    detector: Detector = "lof"
    naclip_sigma: float = 5.0

    def __post_init__(self) -> None:
        detector_named(self.detector)
        check_range("beta", self.beta, -1.0, 1.0)
        check_range("prior_temperature", self.prior_temperature, 0.0, math.inf, low_open=True)
        check_range("prior_mix", self.prior_mix, 0.0, 1.0)
        check_range("contamination", self.contamination, 0.0, 1.0, high_open=True)
        check_range("naclip_sigma", self.naclip_sigma, 0.0, math.inf, low_open=True)
        if isinstance(self.lof_k, bool) or not isinstance(self.lof_k, int) or self.lof_k < 1:
            raise InputError(f"lof_k must be a whole number of at least 1, not {self.lof_k!r}")


@dataclass(frozen=True)
class LabelRules:
    """How class probabilities become labels: the softmax's logit scale, then the background rules.

    Pixels whose best probability is below `prob_threshold` go to the background class; a non-background class
    covering at most `area_threshold` of the non-background area is dropped first (None or 0: no area rule).
    Background words are not a rule but part of the vocabulary (they are text queries); a vocabulary without
    them gets a query-less background class that only takes the pixels these rules reject.
    """

    prob_threshold: float = 0.0
    area_threshold: float | None = None
    logit_scale: float = 40.0

    def __post_init__(self) -> None:
        check_range("prob_threshold", self.prob_threshold, 0.0, 1.0)
        if self.area_threshold is not None:
            check_range("area_threshold", self.area_threshold, 0.0, 1.0)
        check_range("logit_scale", self.logit_scale, 0.0, math.inf, low_open=True)

    @property
    def needs_background(self) -> bool:
        """Whether a rule can reject pixels, which then need a background class to go to."""
        return self.prob_threshold > 0 or bool(self.area_threshold)


@dataclass(frozen=True)
class TlpSettings:
    """TLP's settings; the defaults are PEARL's official values (pearl/prop.py, the grid from pearl_ovss.py), those
    of all its main results except Cityscapes (grid 224)."""

    grid: int = 80
    """Target number of grid cells per side: the pooling factor per axis is round(side / grid), at least 1."""
    text_temperature: float = 0.5
    """Temperature of the softmax over the queries' cosine similarities in the text matrix."""
    self_weight: float = 10.0
    """Added to the text matrix's diagonal before its rows are normalised (the diagonal boost)."""
    edge_sharpness: float = 5.0
    """k in exp(-k · gradient / mean gradient): how fast an edge weight falls across a grey-level step."""
    iterations: int = 25
    """Conjugate-gradient iterations (fixed, no early stop)."""
    min_confidence: float = 0.05
    """Floor of a cell's confidence (its largest query probability) in the data term's weight."""

    def __post_init__(self) -> None:
        for name in ("grid", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "grid" else 0):
                raise InputError(f"TLP {name} must be a whole number >= {1 if name == 'grid' else 0}, not {value!r}")
        check_range("TLP text_temperature", self.text_temperature, 0.0, math.inf, low_open=True)
        check_range("TLP self_weight", self.self_weight, 0.0, math.inf)
        check_range("TLP edge_sharpness", self.edge_sharpness, 0.0, math.inf)
        check_range("TLP min_confidence", self.min_confidence, 0.0, 1.0)


def check_pamr_settings(steps: int, dilations: tuple[int, ...]) -> None:
    """Raise InputError unless `steps` is a non-negative int and `dilations` are positive ints."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"pamr_steps must be a whole number >= 0 (0 switches PAMR off), not {steps!r}")
    if not dilations or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dilations):
        raise InputError(f"pamr_dilations must be one or more positive whole numbers, not {dilations!r}")


@dataclass(frozen=True)
class SegmenterConfig:
    """Inference protocol. Defaults are the paper's: short side 336, 224 windows with stride 112.

    `stride=None` runs the whole resized image as one window; `short_side=None` keeps the image size;
    `max_input_side` downscales larger inputs for the image side first (None: never); labels are always at the
    input size. `templates` names the prompt template set of the text side. `probs_budget_bytes` bounds
    `Segmentation.probs` (float32 C x H x W): above it they are kept at the working size instead of the input
    size. `refine` names the refinements of the logits, run in that order (`scclip_core.refinements`); None
    runs the method's own (PEARL: TLP; none for the others) after PAMR when `pamr_steps` > 0. PAMR runs
    `pamr_steps` steps at `pamr_dilations` (NACLIP uses 10 steps at 8 and 16; off by default, as in the paper);
    `tlp` holds TLP's settings.
    """

    short_side: int | None = 336
    max_long_side: int = 2048
    crop: int = 224
    stride: int | None = 112
    max_input_side: int | None = 2048
    batch_size: int = 8
    templates: TemplateSet = "openai"
    pamr_steps: int = 0
    pamr_dilations: tuple[int, ...] = PAMR_DILATIONS
    probs_budget_bytes: int = DEFAULT_PROBS_BUDGET
    refine: tuple[str, ...] | None = None
    tlp: TlpSettings = TlpSettings()

    def __post_init__(self) -> None:
        if self.short_side is not None and self.short_side < 1:
            raise InputError(f"short_side must be positive, not {self.short_side}")
        if self.crop < 1 or (self.stride is not None and self.stride < 1):
            raise InputError(f"crop and stride must be positive (crop={self.crop}, stride={self.stride})")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be positive, not {self.batch_size}")
        check_pamr_settings(self.pamr_steps, self.pamr_dilations)
        if self.refine is not None:
            self.refinements(DEFAULT_METHOD)

    def refinements(
        self, method: Method, refine: tuple[str, ...] | None = None, pamr_steps: int | None = None
    ) -> tuple[str, ...]:
        """The refinements that run for `method`, in order; `refine` and `pamr_steps` override the config's for one
        call (None: the config's). Raises InputError for an unknown name, or PAMR named with 0 steps."""
        from .methods import method_spec  # the registry imports this module
        from .refinements import refinement_named

        refine = self.refine if refine is None else refine
        steps = self.pamr_steps if pamr_steps is None else pamr_steps
        if refine is None:
            own = method_spec(method).refinements
            return own if steps == 0 or PAMR in own else (PAMR, *own)
        if isinstance(refine, str):
            raise InputError(f"refine must be a sequence of refinement names, not the string {refine!r}")
        chosen = tuple(refinement_named(name) for name in refine)
        if PAMR in chosen and steps == 0:
            raise InputError(f"PAMR is asked for with pamr_steps=0; give pamr_steps > 0 (NACLIP's is {PAMR_STEPS})")
        return chosen
