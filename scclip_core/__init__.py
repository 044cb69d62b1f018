"""SC-CLIP (Self-Calibrated CLIP) for training-free open-vocabulary segmentation: the engine.

    model = load_model("ViT-B/16")                       # or weights="path/to/ViT-B-16.pt" / "random"
    segmenter = Segmenter(model)
    result = segmenter.segment("photo.jpg", "sky, cloud; grass; person")
    result.labels, result.class_names                   # labels at the input size, any number of classes
    result.probs                                         # class probabilities, computed when first read
    result.with_rules(LabelRules(prob_threshold=0.3))    # relabelled from the kept scores, no model

Names are imported when first used, so the command line answers `--help` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "backbones": ("LoadedModel", "available_models", "load_model", "resolve_weights"),
    "encoder": ("CropTrace", "DenseOutput", "DenseVariants", "encode_dense", "encode_dense_variants"),
    "cache": ("CacheWarning",),
    "errors": ("InputError", "OutputError", "ScclipError", "UnknownModelError", "WeightsUnavailableError"),
    "images": ("MAX_READ_PIXELS", "probe_size", "to_rgb_array"),
    "methods": ("METHODS", "METHOD_SPECS", "MethodSpec", "method_named"),
    "pamr": ("pamr_refine",),
    "refinements": ("REFINEMENTS", "Refinement"),
    "patch_names": (
        "NameMatch",
        "PatchNamer",
        "PointNames",
        "top_names",
    ),
    "config": (
        "DEFAULT_METHOD",
        "DEFAULT_MODEL",
        "DETECTORS",
        "LAYER_CONFIGS",
        "PAMR_DILATIONS",
        "PAMR_STEPS",
        "PRECISIONS",
        "TEMPLATE_SET_NAMES",
        "CalibrationParams",
        "LabelRules",
        "LayerConfig",
        "Method",
        "SegmenterConfig",
        "Stages",
        "TlpSettings",
        "Variant",
        "ablation_variants",
        "detector_named",
    ),
    "scores": ("CompactScores", "PixelScores", "assign_labels", "label_dtype"),
    "segmenter": ("ImageEmbedding", "ImageSideKey", "PatchLocation", "Segmentation", "Segmenter"),
    "text": (
        "DEFAULT_BACKGROUND_WORDS",
        "TextEmbeddingCache",
        "TextEncoder",
        "Vocabulary",
        "parse_classes",
        "parse_words",
    ),
    "vocabularies": (
        "BACKGROUND_NAME",
        "VOCABULARY_PRESETS",
        "VocabularyPreset",
        "builtin_vocabulary",
        "class_list_names",
        "preset_queries",
        "read_class_list",
        "vocabulary_preset",
    ),
}
if TYPE_CHECKING:  # the real types for type checkers and IDEs; test_package keeps this equal to _EXPORTS
    from .backbones import (  # noqa: F401 (exported through __getattr__)
        LoadedModel,
        available_models,
        load_model,
        resolve_weights,
    )
    from .cache import (  # noqa: F401 (exported through __getattr__)
        CacheWarning,
    )
    from .config import (  # noqa: F401 (exported through __getattr__)
        DEFAULT_METHOD,
        DEFAULT_MODEL,
        DETECTORS,
        LAYER_CONFIGS,
        PAMR_DILATIONS,
        PAMR_STEPS,
        PRECISIONS,
        TEMPLATE_SET_NAMES,
        CalibrationParams,
        LabelRules,
        LayerConfig,
        Method,
        SegmenterConfig,
        Stages,
        TlpSettings,
        Variant,
        ablation_variants,
        detector_named,
    )
    from .encoder import (  # noqa: F401 (exported through __getattr__)
        CropTrace,
        DenseOutput,
        DenseVariants,
        encode_dense,
        encode_dense_variants,
    )
    from .errors import (  # noqa: F401 (exported through __getattr__)
        InputError,
        OutputError,
        ScclipError,
        UnknownModelError,
        WeightsUnavailableError,
    )
    from .images import (  # noqa: F401 (exported through __getattr__)
        MAX_READ_PIXELS,
        probe_size,
        to_rgb_array,
    )
    from .methods import (  # noqa: F401 (exported through __getattr__)
        METHOD_SPECS,
        METHODS,
        MethodSpec,
        method_named,
    )
    from .pamr import (  # noqa: F401 (exported through __getattr__)
        pamr_refine,
    )
    from .patch_names import (  # noqa: F401 (exported through __getattr__)
        NameMatch,
        PatchNamer,
        PointNames,
        top_names,
    )
    from .refinements import (  # noqa: F401 (exported through __getattr__)
        REFINEMENTS,
        Refinement,
    )
    from .scores import (  # noqa: F401 (exported through __getattr__)
        CompactScores,
        PixelScores,
        assign_labels,
        label_dtype,
    )
    from .segmenter import (  # noqa: F401 (exported through __getattr__)
        ImageEmbedding,
        ImageSideKey,
        PatchLocation,
        Segmentation,
        Segmenter,
    )
    from .text import (  # noqa: F401 (exported through __getattr__)
        DEFAULT_BACKGROUND_WORDS,
        TextEmbeddingCache,
        TextEncoder,
        Vocabulary,
        parse_classes,
        parse_words,
    )
    from .vocabularies import (  # noqa: F401 (exported through __getattr__)
        BACKGROUND_NAME,
        VOCABULARY_PRESETS,
        VocabularyPreset,
        builtin_vocabulary,
        class_list_names,
        preset_queries,
        read_class_list,
        vocabulary_preset,
    )

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Import the submodule that defines `name` on first access, then keep the name here."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
