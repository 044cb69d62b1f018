"""Model names, layer configs and weights from every source, with clear errors when they cannot be had."""

from pathlib import Path

import pytest
import torch

from scclip_core import (
    LAYER_CONFIGS,
    InputError,
    UnknownModelError,
    WeightsUnavailableError,
    available_models,
    load_model,
)
from scclip_core.backbones import image_tower, precision_name, resolve_model, resolve_weights
from scclip_core.config import PRECISIONS, LayerConfig, layers_for_depth, resolve_layers

from .weights import FORMATS, save_checkpoint


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_weights_round_trip_through_every_file_format(tiny_model, tmp_path, fmt):
    path = save_checkpoint(tiny_model.clip, tmp_path / f"tiny{FORMATS[fmt]}", fmt)
    loaded = load_model("tiny-test", str(path), device="cpu")
    assert not loaded.is_random and str(path) in loaded.weights
    expected = tiny_model.clip.state_dict()
    for key, value in loaded.clip.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_random_weights_are_said_to_be_random(tiny_model):
    assert tiny_model.is_random and "random" in tiny_model.weights
    assert tiny_model.dtype == torch.float32 and tiny_model.device.type == "cpu"


def test_weights_for_another_architecture_are_refused_with_the_reason(tmp_path, tiny_model):
    state = tiny_model.clip.state_dict()
    state["visual.proj"] = torch.zeros(128, 32)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError, match="other shapes.*visual.proj"):
        load_model("tiny-test", str(path))
    del state["visual.proj"]
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError, match="missing"):
        load_model("tiny-test", str(path))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_model("tiny-test", str(tmp_path / "nope.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="could not read"):
        load_model("tiny-test", str(garbage))


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(WeightsUnavailableError, match="openai"):
        load_model("ViT-B/16", "laion9000")


def test_offline_tag_says_where_weights_are_looked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="Hugging Face cache"):
        load_model("ViT-B/16", "openai", cache_dir=str(tmp_path))


def test_unknown_model_is_refused_with_suggestions():
    with pytest.raises(UnknownModelError, match="unknown model"):
        load_model("ViT-Q/99")
    with pytest.raises(UnknownModelError, match="Did you mean"):
        resolve_model("B-16")


def test_names_map_to_quickgelu_architectures_and_layer_configs():
    assert resolve_model("ViT-B/16").arch == "ViT-B-16-quickgelu"
    assert resolve_model("ViT-L/14").layers == LAYER_CONFIGS["ViT-L/14"]
    assert resolve_model("ViT-B-32").layers is None
    assert {"ViT-B/16", "ViT-L/14", "tiny-test"} <= set(available_models())


def test_layers_for_other_depths_are_valid_and_exact_for_known_ones():
    assert layers_for_depth(12) == LAYER_CONFIGS["ViT-B/16"]
    assert layers_for_depth(24) == LAYER_CONFIGS["ViT-L/14"]
    for depth in (4, 6, 8, 16, 32, 40, 48):
        layers = layers_for_depth(depth)
        layers.validate(depth)
        assert layers.post_adjust_idx < layers.pre_adjust_idx <= depth - 2
    with pytest.raises(InputError):
        layers_for_depth(3)
    assert resolve_layers("auto", 12) == LAYER_CONFIGS["ViT-B/16"]
    with pytest.raises(InputError):
        resolve_layers(LayerConfig(3, 3, 5, 12, 0.3), 12)


def test_other_open_clip_vits_build_with_a_derived_preset():
    model = load_model("ViT-S-16", "random", device="cpu") if "ViT-S-16" in available_models() else None
    if model is None:
        pytest.skip("open_clip has no ViT-S-16 config")
    assert model.layers == layers_for_depth(len(model.visual.transformer.resblocks))


@pytest.fixture
def hub_tag(monkeypatch, tmp_path):
    """A pretrained tag of the tiny model that lives on a (fake) Hub repo, and an empty Hugging Face cache."""
    import open_clip.pretrained as pretrained

    config = {"hf_hub": "scclip-test/tiny-clip/", "quick_gelu": True, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    monkeypatch.setitem(pretrained._PRETRAINED, "SCCLIP-Tiny-Test", {"hubtag": config})
    return tmp_path / "hf-cache"


def _put_in_hub_cache(cache: Path, repo: str, filename: str, model) -> None:
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    save_file({key: value.contiguous() for key, value in model.clip.state_dict().items()}, str(snapshot / filename))


def test_a_cached_hub_tag_loads_without_any_network_call(hub_tag, monkeypatch):
    import huggingface_hub

    source = load_model("tiny-test", "random", device="cpu")
    _put_in_hub_cache(hub_tag, "scclip-test/tiny-clip", "open_clip_model.safetensors", source)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was contacted although the weights are cached")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    model = load_model("tiny-test", "hubtag", device="cpu", cache_dir=str(hub_tag))
    assert not model.is_random and model.mean == (0.1, 0.2, 0.3) and model.std == (0.4, 0.5, 0.6)
    for key, value in source.clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[key], value), key


def test_a_missing_hub_tag_fails_offline_without_a_network_call_and_with_the_exact_command(hub_tag, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was contacted although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(WeightsUnavailableError) as error:
        load_model("tiny-test", "hubtag", device="cpu", cache_dir=str(hub_tag))
    message = str(error.value)
    assert "`hf download scclip-test/tiny-clip open_clip_model.safetensors`" in message
    assert str(hub_tag) in message and "HF_HUB_OFFLINE" in message


def test_an_unreachable_hub_fails_after_one_quick_check(hub_tag, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    calls = []

    def unreachable(url, timeout=None):
        calls.append((url, timeout))
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    with pytest.raises(WeightsUnavailableError, match="could not be reached.*Name or service"):
        load_model("tiny-test", "hubtag", device="cpu", cache_dir=str(hub_tag))
    assert len(calls) == 1 and calls[0][1] <= 10


NO_OPENAI_TAG = "ViT-H-14"  # an open_clip architecture whose pretrained tags do not include `openai`


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache that may not download: loading a Hub tag fails at once, naming the tag."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_a_model_without_an_openai_tag_defaults_to_its_own_tag(offline_hub):
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(NO_OPENAI_TAG)
    assert "openai" not in tags
    assert resolve_weights(NO_OPENAI_TAG) == resolve_model(NO_OPENAI_TAG).default_weights == tags[0]
    assert resolve_weights(NO_OPENAI_TAG, "random") == "random"
    assert resolve_weights("ViT-B/16") == "openai"
    with pytest.raises(WeightsUnavailableError, match=f"'{tags[0]}' weights of {NO_OPENAI_TAG} are not in"):
        load_model(NO_OPENAI_TAG)


def test_the_app_loads_a_model_without_an_openai_tag_with_its_own_tag(offline_hub, monkeypatch):
    pytest.importorskip("gradio")
    import app
    from demo.host import ModelHost

    hosts = []

    def recording_host(*args, **kwargs):
        hosts.append(ModelHost(*args, **kwargs))
        return hosts[-1]

    monkeypatch.setattr(app, "ModelHost", recording_host)
    monkeypatch.setattr(app, "build_interface", lambda host, store, mcp: None)
    monkeypatch.setenv("SCCLIP_MODEL", NO_OPENAI_TAG)
    monkeypatch.delenv("SCCLIP_WEIGHTS", raising=False)
    app.build_demo()
    (host,) = hosts
    tag = resolve_weights(NO_OPENAI_TAG)
    assert host.weights == tag and f"'{tag}' weights of {NO_OPENAI_TAG}" in host.load_error
    assert f"<code>{tag}</code>" in host.banner_html()


def test_every_precision_name_is_a_dtype_and_back(tiny_model):
    for name in PRECISIONS:
        model = load_model("tiny-test", "random", device="cpu", precision=name)
        assert precision_name(model.dtype) == name
    with pytest.raises(InputError, match="precision must be one of"):
        load_model("tiny-test", "random", device="cpu", precision="fp8")


def test_a_model_without_a_vit_image_tower_is_refused_by_name():
    clip = torch.nn.Module()
    clip.visual = torch.nn.Linear(2, 2)
    with pytest.raises(InputError, match="RN-like has a Linear image tower; SC-CLIP needs a ViT"):
        image_tower(clip, "RN-like")
