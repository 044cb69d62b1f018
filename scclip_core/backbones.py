"""Model names -> open_clip architecture, weights and SC-CLIP layer config; weight resolution and loading.

Architecture configs (open_clip's, plus a tiny test config shipped here) are separate from the weights: a
pretrained tag read through the Hugging Face cache, a local checkpoint file, or the explicit word `random`.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from .cache import default_cache_dir, file_fingerprint, tensor_fingerprint
from .config import DEFAULT_MODEL, LAYER_CONFIGS, PRECISIONS, LayerConfig, Precision, layers_for_depth
from .errors import InputError, UnknownModelError, WeightsUnavailableError

RANDOM_WEIGHTS = "random"
_CONFIG_DIR = Path(__file__).parent / "model_configs"
_DTYPES: dict[Precision, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ModelSpec:
    """A model name users type, the open_clip architecture behind it, and its defaults."""

    name: str
    arch: str
    default_weights: str
    layers: LayerConfig | None


MODEL_SPECS: dict[str, ModelSpec] = {
    "ViT-B/16": ModelSpec("ViT-B/16", "ViT-B-16-quickgelu", "openai", LAYER_CONFIGS["ViT-B/16"]),
    "ViT-L/14": ModelSpec("ViT-L/14", "ViT-L-14-quickgelu", "openai", LAYER_CONFIGS["ViT-L/14"]),
    "tiny-test": ModelSpec("tiny-test", "SCCLIP-Tiny-Test", RANDOM_WEIGHTS, LAYER_CONFIGS["ViT-B/16"]),
}


@dataclass
class LoadedModel:
    """A CLIP model ready for inference, with what it is and where its weights came from.

    `key` names the weights by content (architecture, fingerprint of the file or tensor values, dtype), so
    cached text embeddings are shared exactly when the weights are the same.
    """

    clip: nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    name: str
    arch: str
    weights: str
    is_random: bool
    layers: LayerConfig
    device: torch.device
    dtype: torch.dtype
    patch_size: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    key: str

    @property
    def visual(self) -> VisionTransformer:
        return image_tower(self.clip, self.name)


def image_tower(clip: nn.Module, name: str) -> VisionTransformer:
    """The image tower of a CLIP model: SC-CLIP runs on open_clip's VisionTransformer only (not on ResNets)."""
    visual = clip.visual
    if not isinstance(visual, VisionTransformer):
        raise InputError(
            f"{name} has a {type(visual).__name__} image tower; SC-CLIP needs a ViT (see available_models())"
        )
    return visual


def _register_configs() -> None:
    if "SCCLIP-Tiny-Test" not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def available_models() -> list[str]:
    """Friendly names first, then every open_clip ViT architecture."""
    _register_configs()
    return list(MODEL_SPECS) + [
        name for name in open_clip.list_models() if name.startswith("ViT") and name not in MODEL_SPECS
    ]


def resolve_model(name: str) -> ModelSpec:
    """A ModelSpec for a friendly name (`ViT-B/16`) or any open_clip architecture name (`ViT-B-32`)."""
    _register_configs()
    if name in MODEL_SPECS:
        return MODEL_SPECS[name]
    if name in open_clip.list_models():
        tags = open_clip.list_pretrained_tags_by_model(name)
        return ModelSpec(name, name, tags[0] if tags else RANDOM_WEIGHTS, None)
    close = [known for known in available_models() if name.lower().replace("/", "-") in known.lower()]
    hint = f" Did you mean {close[:5]}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Use {list(MODEL_SPECS)} or an open_clip architecture name "
        "(python -c 'import open_clip; print(open_clip.list_models())')."
    )


def resolve_weights(name: str, weights: str | None = None) -> str:
    """`weights` as given, or the default tag of model `name` (its `ModelSpec.default_weights`) when None or empty.

    The one place where "no weights given" becomes a tag, for the library, both command lines and the app.
    """
    return weights or resolve_model(name).default_weights


def precision_name(dtype: torch.dtype) -> Precision:
    """The `config.PRECISIONS` name of a dtype a model can run at."""
    for name, known in _DTYPES.items():
        if known == dtype:
            return name
    raise InputError(f"{dtype} is not one of the precisions {list(PRECISIONS)}")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_dtype(device: torch.device, precision: str | None) -> torch.dtype:
    if precision is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    for name, dtype in _DTYPES.items():
        if precision == name:
            return dtype
    raise InputError(f"precision must be one of {list(PRECISIONS)}, not {precision!r}")


def _looks_like_path(weights: str) -> bool:
    return weights.endswith(_CHECKPOINT_SUFFIXES) or "/" in weights or "\\" in weights or Path(weights).exists()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from OpenAI's TorchScript archive, a `.safetensors` file or a torch pickle."""
    state: object
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsUnavailableError(
            f"could not read weights from {path}: {error}. Expected OpenAI's TorchScript .pt, an OpenAI- or "
            "open_clip-format state dict saved with torch.save, or a .safetensors file."
        ) from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items() if key not in _OPENAI_EXTRA_KEYS}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, spec: ModelSpec) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        details = []
        if wrong_shape:
            key = wrong_shape[0]
            details.append(
                f"{len(wrong_shape)} tensors have other shapes (e.g. {key}: file {tuple(state[key].shape)}, "
                f"model {tuple(expected[key].shape)})"
            )
        if missing:
            details.append(f"{len(missing)} keys missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise WeightsUnavailableError(
            f"the weights in {source} do not fit {spec.name} ({spec.arch}): {'; '.join(details)}. "
            "Pass the model name these weights were trained for (--model / SCCLIP_MODEL)."
        )
    model.load_state_dict(state, strict=True)


class _RandomInitNotice(logging.Filter):
    """Drops open_clip's own random-initialisation warning: this package reports random weights itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _create(arch: str, pretrained: str | None, cache_dir: str | None, *, force_quick_gelu: bool = False) -> nn.Module:
    notice_filter = _RandomInitNotice()
    logging.getLogger().addFilter(notice_filter)
    try:
        return open_clip.create_model(
            arch,
            pretrained=pretrained,
            cache_dir=cache_dir,
            require_pretrained=pretrained is not None,
            force_quick_gelu=force_quick_gelu,
        )
    finally:
        logging.getLogger().removeFilter(notice_filter)


def _weights_fingerprint(path: str | Path) -> str:
    return file_fingerprint(Path(path), default_cache_dir() / "weights-fingerprints")


def _load_weights(spec: ModelSpec, weights: str, cache_dir: str | None) -> tuple[nn.Module, str, bool, str]:
    """The model, a description of its weights, whether they are random, and a fingerprint of their content."""
    if weights == RANDOM_WEIGHTS:
        model = _create(spec.arch, None, cache_dir)
        return model, "random (untrained) weights", True, tensor_fingerprint(model)
    if _looks_like_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file {path} not found. Give the path of a checkpoint for {spec.name}, a pretrained tag "
                f"({', '.join(open_clip.list_pretrained_tags_by_model(spec.arch)) or 'none known'}), or 'random'."
            )
        model = _create(spec.arch, None, cache_dir)
        _load_state(model, read_checkpoint(path), str(path), spec)
        return model, f"file {path}", False, _weights_fingerprint(path)
    tags = open_clip.list_pretrained_tags_by_model(spec.arch)
    if weights not in tags:
        raise WeightsUnavailableError(
            f"{weights!r} is neither a file nor a pretrained tag of {spec.name}; its tags are {tags or 'none'}. "
            "Pass a tag, a checkpoint path, or 'random'."
        )
    pretrained = open_clip.get_pretrained_cfg(spec.arch, weights)
    repo = pretrained.get("hf_hub", "").rstrip("/")
    if not repo:
        model = _create_pretrained(spec, weights, cache_dir)
        resolved = open_clip.pretrained.download_pretrained(pretrained, cache_dir=cache_dir)
        return model, f"open_clip pretrained '{weights}'", False, _weights_fingerprint(resolved)
    path = hub_weights_file(spec, weights, repo, cache_dir)
    model = _create(spec.arch, None, cache_dir, force_quick_gelu=bool(pretrained.get("quick_gelu")))
    _load_state(model, read_checkpoint(path), str(path), spec)
    visual = image_tower(model, spec.name)
    visual.image_mean = tuple(pretrained.get("mean") or open_clip.OPENAI_DATASET_MEAN)
    visual.image_std = tuple(pretrained.get("std") or open_clip.OPENAI_DATASET_STD)
    return model, f"open_clip pretrained '{weights}'", False, _weights_fingerprint(path)


def _create_pretrained(spec: ModelSpec, weights: str, cache_dir: str | None) -> nn.Module:
    """open_clip's own download for the few tags that live at a plain URL rather than on the Hugging Face Hub."""
    try:
        return _create(spec.arch, weights, cache_dir)
    except Exception as error:
        raise WeightsUnavailableError(
            f"could not load the {weights!r} weights of {spec.name}: {type(error).__name__}: {error}. Run once with "
            "internet access to download them, or pass a local checkpoint file."
        ) from error


def hub_weights_file(spec: ModelSpec, weights: str, repo: str, cache_dir: str | None) -> Path:
    """The weight file of a Hub-hosted tag: from the local cache without any network call when it is there,
    otherwise downloaded after one quick reachability check, so an offline machine fails in seconds, not minutes.
    """
    import huggingface_hub
    from huggingface_hub import constants

    for filename in HUB_WEIGHT_FILES:
        cached = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(cached, str):
            return Path(cached)
    cache = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    advice = (
        f"The {weights!r} weights of {spec.name} are not in the Hugging Face cache ({cache}). Download them on a "
        f"machine with internet access: `hf download {repo} {HUB_WEIGHT_FILES[0]}` (set HF_HUB_CACHE={cache} "
        "or copy that folder's contents here), or pass a local checkpoint file (e.g. OpenAI's ViT-B-16.pt)."
    )
    if constants.HF_HUB_OFFLINE:
        raise WeightsUnavailableError(f"{advice} (HF_HUB_OFFLINE is set, so nothing was downloaded.)")
    try:
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, HUB_WEIGHT_FILES[0]), timeout=10)
        return Path(huggingface_hub.hf_hub_download(repo, HUB_WEIGHT_FILES[0], cache_dir=cache_dir))
    except Exception as error:
        raise WeightsUnavailableError(
            f"{advice} (The Hugging Face Hub could not be reached: {type(error).__name__}: {error}.)"
        ) from error


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | None = None,
    *,
    device: str | torch.device | None = None,
    precision: str | None = None,
    cache_dir: str | None = None,
) -> LoadedModel:
    """Build `name` with `weights` (tag, checkpoint path or 'random'; default: the model's usual tag).

    Runs on CUDA when available, else CPU; fp16 on GPU and fp32 on CPU unless `precision` says otherwise.
    Raises UnknownModelError or WeightsUnavailableError with a message that says how to fix the problem.
    """
    spec = resolve_model(name)
    model, description, is_random, fingerprint = _load_weights(spec, resolve_weights(name, weights), cache_dir)
    torch_device = torch.device(device) if device is not None else default_device()
    dtype = _resolve_dtype(torch_device, precision)
    model = model.to(device=torch_device, dtype=dtype).eval()
    visual = image_tower(model, spec.name)
    depth = len(visual.transformer.resblocks)
    layers = spec.layers or layers_for_depth(depth)
    layers.validate(depth)
    image_size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    patch_size = visual.patch_size if isinstance(visual.patch_size, int) else visual.patch_size[0]
    return LoadedModel(
        clip=model,
        tokenizer=open_clip.get_tokenizer(spec.arch),
        name=spec.name,
        arch=spec.arch,
        weights=description,
        is_random=is_random,
        layers=layers,
        device=torch_device,
        dtype=dtype,
        patch_size=patch_size,
        image_size=image_size,
        mean=tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
        key=f"{spec.arch}|{fingerprint}|{dtype}",
    )
