"""Benchmark evaluation of scclip_core: the eight standard open-vocabulary segmentation benchmarks.

`python -m scclip_core.eval --dataset voc21 --root data/VOCdevkit/VOC2012` or, as a library call,
`run_benchmark("voc21", root)` / `evaluate("voc21", root, model)`. COCO-Object label maps are made from
COCO-Stuff164k ones with `python -m scclip_core.eval.coco_object <coco_stuff164k root>`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "datasets": ("LAYOUTS", "DatasetLayoutError", "Layout", "Sample", "list_samples", "read_image", "read_label"),
    "metrics": ("SegmentationScores", "confusion_matrix", "scores"),
    "benchmarks": (
        "OWN_PROTOCOLS",
        "BENCHMARKS",
        "PROTOCOLS",
        "Benchmark",
        "MethodProtocol",
        "dataset_names",
        "get_benchmark",
    ),
    "runner": ("EvalResult", "EvalSettings", "evaluate", "run_benchmark"),
}
if TYPE_CHECKING:  # the real types for type checkers and IDEs; test_package keeps this equal to _EXPORTS
    from .benchmarks import (  # noqa: F401 (exported through __getattr__)
        BENCHMARKS,
        OWN_PROTOCOLS,
        PROTOCOLS,
        Benchmark,
        MethodProtocol,
        dataset_names,
        get_benchmark,
    )
    from .datasets import (  # noqa: F401 (exported through __getattr__)
        LAYOUTS,
        DatasetLayoutError,
        Layout,
        Sample,
        list_samples,
        read_image,
        read_label,
    )
    from .metrics import (  # noqa: F401 (exported through __getattr__)
        SegmentationScores,
        confusion_matrix,
        scores,
    )
    from .runner import (  # noqa: F401 (exported through __getattr__)
        EvalResult,
        EvalSettings,
        evaluate,
        run_benchmark,
    )

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Import the submodule that defines `name` on first access (the runner loads torch), then keep the name here."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
