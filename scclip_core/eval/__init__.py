"""Benchmark evaluation of scclip_core: the eight standard open-vocabulary segmentation benchmarks.

`python -m scclip_core.eval --dataset voc21 --root data/VOCdevkit/VOC2012` or, as a library call,
`run_benchmark("voc21", root)` / `evaluate("voc21", root, model)`. COCO-Object label maps are made from
COCO-Stuff164k ones with `python -m scclip_core.eval.coco_object <coco_stuff164k root>`.
"""

from .datasets import LAYOUTS, DatasetLayoutError, Layout, Sample, list_samples, read_image, read_label
from .metrics import SegmentationScores, confusion_matrix, scores
from .presets import OWN_PROTOCOLS, PRESETS, PROTOCOLS, DatasetPreset, MethodProtocol, dataset_names, get_preset
from .runner import EvalResult, RunSettings, evaluate, run_benchmark

__all__ = [
    "LAYOUTS",
    "OWN_PROTOCOLS",
    "PRESETS",
    "PROTOCOLS",
    "DatasetLayoutError",
    "DatasetPreset",
    "EvalResult",
    "Layout",
    "MethodProtocol",
    "RunSettings",
    "Sample",
    "SegmentationScores",
    "confusion_matrix",
    "dataset_names",
    "evaluate",
    "get_preset",
    "list_samples",
    "read_image",
    "read_label",
    "run_benchmark",
    "scores",
]
