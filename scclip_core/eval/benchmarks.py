"""Per-benchmark evaluation settings: class lists, resize, windows, logit scale, thresholds, PAMR and precision.

Two protocols. `scclip` (the default) evaluates every method with SC-CLIP's official per-dataset settings; `own`
evaluates each comparison method with the settings of its own official configs (`OWN_PROTOCOLS`), so that its
published numbers can be reproduced. The class lists are the engine's (`scclip_core/classes/<name>.txt`, read by
`scclip_core.vocabularies`), one class per line with comma-separated synonyms; the eight standard ones are
byte-for-byte the lists SC-CLIP, SCLIP and NACLIP evaluate with, and both protocols use them. The two
large-vocabulary ones follow the open-vocabulary segmentation literature as CAT-Seg's and SAN's dataset scripts
prepare it: `ade847.txt` is ADE20K-Full's 847 class names in train-id order (CAT-Seg `datasets/ade847.json`, the
same names as SAN's `register_ade20k_full.py`), `context459.txt` is PASCAL Context's 459 names in label order
(CAT-Seg `datasets/pc459.json`). SC-CLIP reports neither, so they use the default protocol (short side 336, 224/112
windows, logit scale 40, no background rules).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..config import PRECISIONS, LabelRules, Precision, SegmenterConfig
from ..errors import InputError
from ..methods import METHOD_SPECS, MethodProtocol
from ..methods.base import settings_json
from ..vocabularies import CLASSES_DIR, display_names, read_class_file

IGNORE_INDEX = 255
PROTOCOLS: tuple[str, ...] = ("scclip", "own")


EVAL_CONFIG = SegmenterConfig(max_input_side=None)  # the paper's protocol; images are never downscaled first


@dataclass(frozen=True)
class Benchmark:
    """Everything that defines how one benchmark is evaluated: its classes, the inference protocol (`config`,
    whose templates are the text side's), the labelling rules, and the model's precision.

    `background_index` is the class that pixels rejected by the rules' thresholds fall back to;
    `reduce_zero_label` maps ground-truth 0 to the ignore index and shifts the other labels down by one,
    as MMSegmentation does for VOC20, Context59 and ADE20K. `precision` is the model's on CUDA (every
    official implementation runs fp16 there; on the CPU the engine always uses fp32). `method_params` are the
    evaluated method's own settings under this protocol (None: the method's defaults; `--protocol own` sets
    ResCLIP's and PEARL's per dataset).
    """

    name: str
    title: str
    layout: str
    classes_file: str
    background_index: int | None
    reduce_zero_label: bool
    config: SegmenterConfig = EVAL_CONFIG
    rules: LabelRules = LabelRules()
    precision: Precision = "fp16"
    ignore_index: int = IGNORE_INDEX
    method_params: Hashable = None

    def __post_init__(self) -> None:
        config, rules = self.config, self.rules
        if config.short_side is None or config.max_long_side < config.short_side:
            raise InputError(
                f"short_side={config.short_side} must be set and at most max_long_side={config.max_long_side}"
            )
        if config.stride is not None and config.stride > config.crop:
            raise InputError(f"need stride <= crop, got crop={config.crop}, stride={config.stride}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {list(PRECISIONS)}, not {self.precision!r}")
        if (rules.prob_threshold > 0 or rules.area_threshold is not None) and self.background_index is None:
            raise InputError(
                f"{self.name} has no background class, so prob/area thresholds have nowhere to send pixels"
            )

    def with_overrides(self, **changes: Any) -> Benchmark:
        """A copy with the given fields replaced: the benchmark's own, or those of its config or rules by name
        (`short_side`, `prob_threshold`, ...). Values of any type are accepted here and checked by the dataclasses
        themselves, so a bad value raises InputError."""
        own = {f.name for f in dataclasses.fields(self)}
        of_config = {f.name for f in dataclasses.fields(SegmenterConfig)}
        of_rules = {f.name for f in dataclasses.fields(LabelRules)}
        unknown = sorted(set(changes) - own - of_config - of_rules)
        if unknown:
            raise InputError(f"unknown benchmark field(s) {unknown}")
        replaced = {name: value for name, value in changes.items() if name in own}
        config: SegmenterConfig = replaced.get("config", self.config)
        rules: LabelRules = replaced.get("rules", self.rules)
        replaced["config"] = dataclasses.replace(
            config, **{name: value for name, value in changes.items() if name in of_config}
        )
        replaced["rules"] = dataclasses.replace(
            rules, **{name: value for name, value in changes.items() if name in of_rules}
        )
        return dataclasses.replace(self, **replaced)

    @property
    def queries(self) -> tuple[tuple[str, ...], ...]:
        """Text queries per class (synonyms), in label order: class index == ground-truth label value."""
        return read_class_file(CLASSES_DIR / self.classes_file)

    @property
    def class_names(self) -> list[str]:
        """Names for reports (see `display_names`)."""
        return display_names(self.queries, self.background_index)

    @property
    def num_classes(self) -> int:
        return len(self.queries)

    def settings(self) -> dict[str, object]:
        """The protocol as flat JSON-ready data. These keys name run folders (`EvalSettings.run_name`), so they
        stay as they were; image-side config fields beyond them appear only when changed from EVAL_CONFIG."""
        config, rules = self.config, self.rules
        changed: dict[str, object] = {
            name: settings_json(getattr(config, name))
            for name in ("max_input_side", "pamr_dilations", "refine", "tlp")
            if getattr(config, name) != getattr(EVAL_CONFIG, name)
        }
        if self.method_params is not None:
            changed["method_params"] = settings_json(self.method_params)
        return {
            "name": self.name,
            "title": self.title,
            "layout": self.layout,
            "classes_file": self.classes_file,
            "background_index": self.background_index,
            "reduce_zero_label": self.reduce_zero_label,
            "short_side": config.short_side,
            "max_long_side": config.max_long_side,
            "crop": config.crop,
            "stride": config.stride,
            "logit_scale": rules.logit_scale,
            "prob_threshold": rules.prob_threshold,
            "area_threshold": rules.area_threshold,
            "pamr_steps": config.pamr_steps,
            "precision": self.precision,
            "ignore_index": self.ignore_index,
            **changed,
        }


BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        Benchmark(
            name="voc21",
            title="PASCAL VOC 2012 val, 21 classes with background",
            layout="voc2012",
            classes_file="voc21.txt",
            background_index=0,
            reduce_zero_label=False,
            rules=LabelRules(prob_threshold=0.15, area_threshold=0.1, logit_scale=50.0),
        ),
        Benchmark(
            name="context60",
            title="PASCAL Context val, 60 classes with background",
            layout="pascal_context",
            classes_file="context60.txt",
            background_index=0,
            reduce_zero_label=False,
            rules=LabelRules(prob_threshold=0.15),
        ),
        Benchmark(
            name="coco_object",
            title="COCO-Object val2017, background + 80 things",
            layout="coco_object",
            classes_file="coco_object.txt",
            background_index=0,
            reduce_zero_label=False,
            rules=LabelRules(prob_threshold=0.35, logit_scale=55.0),
        ),
        Benchmark(
            name="voc20",
            title="PASCAL VOC 2012 val, 20 classes without background",
            layout="voc2012",
            classes_file="voc20.txt",
            background_index=None,
            reduce_zero_label=True,
        ),
        Benchmark(
            name="context59",
            title="PASCAL Context val, 59 classes without background",
            layout="pascal_context",
            classes_file="context59.txt",
            background_index=None,
            reduce_zero_label=True,
        ),
        Benchmark(
            name="coco_stuff164k",
            title="COCO-Stuff 164k val2017, 171 classes",
            layout="coco_stuff164k",
            classes_file="coco_stuff164k.txt",
            background_index=None,
            reduce_zero_label=False,
        ),
        Benchmark(
            name="cityscapes",
            title="Cityscapes val, 19 classes",
            layout="cityscapes",
            classes_file="cityscapes.txt",
            background_index=None,
            reduce_zero_label=False,
            config=dataclasses.replace(EVAL_CONFIG, short_side=560),
        ),
        Benchmark(
            name="ade20k",
            title="ADE20K val, 150 classes",
            layout="ade20k",
            classes_file="ade20k.txt",
            background_index=None,
            reduce_zero_label=True,
        ),
        Benchmark(
            name="ade847",
            title="ADE20K-Full val, 847 classes (CAT-Seg / SAN preparation)",
            layout="ade20k_full",
            classes_file="ade847.txt",
            background_index=None,
            reduce_zero_label=False,
            ignore_index=65535,
        ),
        Benchmark(
            name="context459",
            title="PASCAL Context val, 459 classes (CAT-Seg / SAN preparation)",
            layout="pascal_context_459",
            classes_file="context459.txt",
            background_index=None,
            reduce_zero_label=False,
            ignore_index=459,
        ),
    )
}

# The ViT-L/14 settings that differ, from the official SuleBai/SC-CLIP configs at its `init` commit
# (the logit scales are inferred).
VIT_L14_CHANGES: dict[str, dict[str, float]] = {
    "voc21": {"logit_scale": 40.0, "prob_threshold": 0.2},
    "coco_object": {"logit_scale": 40.0, "prob_threshold": 0.25},
}


OWN_PROTOCOLS: dict[str, MethodProtocol] = {
    name: spec.protocol for name, spec in METHOD_SPECS.items() if spec.protocol is not None
}
"""Each comparison method's own protocol, as its module declares it; SC-CLIP's own protocol is the default one."""

ALIASES = {
    "coco_stuff": "coco_stuff164k",
    "cocostuff": "coco_stuff164k",
    "ade": "ade20k",
    "city_scapes": "cityscapes",
    "ade20k_full": "ade847",
    "ade_847": "ade847",
    "pc459": "context459",
    "pascal_context_459": "context459",
}


def dataset_names() -> list[str]:
    return list(BENCHMARKS)


def get_benchmark(
    dataset: str, model_name: str | None = None, *, method: str = "sc-clip", protocol: str = "scclip"
) -> Benchmark:
    """The benchmark for a benchmark name (dashes or underscores, any case) under a protocol.

    `scclip`: SC-CLIP's settings, with its ViT-L/14 changes for that model. `own`: `method`'s official settings
    (`OWN_PROTOCOLS`); for SC-CLIP itself that is the `scclip` protocol.
    """
    key = dataset.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(BENCHMARKS)}")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    benchmark = BENCHMARKS[key]
    if protocol == "own" and method in OWN_PROTOCOLS:
        return benchmark.with_overrides(**OWN_PROTOCOLS[method].changes(key))
    if model_name == "ViT-L/14" and key in VIT_L14_CHANGES:
        benchmark = benchmark.with_overrides(**VIT_L14_CHANGES[key])
    return benchmark
