"""SC-CLIP (Self-Calibrated CLIP) for training-free open-vocabulary segmentation: the engine.

    model = load_model("ViT-B/16")                       # or weights="path/to/ViT-B-16.pt" / "random"
    segmenter = Segmenter(model)
    result = segmenter.segment("photo.jpg", "sky, cloud; grass; person")
    result.labels, result.class_names                   # labels at the input size, any number of classes
    result.probs                                         # class probabilities, computed when first read
"""

from .backbones import LoadedModel, available_models, load_model
from .encoder import CropTrace, DenseOutput, DenseVariants, encode_dense, encode_dense_variants
from .errors import InputError, ScclipError, UnknownModelError, WeightsUnavailableError
from .images import to_rgb_array
from .pamr import PAMR_DILATIONS, pamr_refine
from .presets import LAYER_PRESETS, METHODS, CalibrationParams, LayerPreset, Stages, Variant, ablation_variants
from .scores import PixelScores, assign_labels, label_dtype
from .segmenter import ImageEmbedding, Segmentation, Segmenter, SegmenterConfig
from .text import (
    DEFAULT_BACKGROUND_WORDS,
    TextEmbeddingCache,
    TextEncoder,
    Vocabulary,
    parse_classes,
    parse_words,
)

__all__ = [
    "CalibrationParams",
    "CropTrace",
    "DEFAULT_BACKGROUND_WORDS",
    "DenseOutput",
    "DenseVariants",
    "ImageEmbedding",
    "InputError",
    "LAYER_PRESETS",
    "LayerPreset",
    "LoadedModel",
    "METHODS",
    "PAMR_DILATIONS",
    "PixelScores",
    "ScclipError",
    "Segmentation",
    "Segmenter",
    "SegmenterConfig",
    "Stages",
    "TextEmbeddingCache",
    "TextEncoder",
    "UnknownModelError",
    "Variant",
    "Vocabulary",
    "WeightsUnavailableError",
    "ablation_variants",
    "assign_labels",
    "available_models",
    "encode_dense",
    "encode_dense_variants",
    "label_dtype",
    "load_model",
    "pamr_refine",
    "parse_classes",
    "parse_words",
    "to_rgb_array",
]
