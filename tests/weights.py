"""Writers for the checkpoint formats users bring: what the loader must read."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

OPENAI_EXTRAS = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}


class _OpenAIArchive(nn.Module):
    """Same parameter names as OpenAI's CLIP plus its three integer entries, so a trace looks like ViT-B-16.pt."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        for name, child in clip.named_children():
            self.add_module(name, child)
        for name, parameter in clip.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, value in OPENAI_EXTRAS.items():
            self.register_buffer(name, torch.tensor(value))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def save_checkpoint(clip: nn.Module, path: Path, fmt: str) -> Path:
    """Write `clip`'s weights as `fmt`: torchscript, openai-state-dict, open_clip, wrapped or safetensors."""
    state = {key: value.detach().clone() for key, value in clip.state_dict().items()}
    if fmt == "torchscript":
        traced = torch.jit.trace(_OpenAIArchive(clip), torch.randn(1, 3, 224, 224), check_trace=False)
        traced.save(str(path))
    elif fmt == "openai-state-dict":
        torch.save({**state, **{k: torch.tensor(v) for k, v in OPENAI_EXTRAS.items()}}, path)
    elif fmt == "open_clip":
        torch.save(state, path)
    elif fmt == "wrapped":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        raise ValueError(fmt)
    return path


FORMATS = {
    "torchscript": ".pt",
    "openai-state-dict": ".pt",
    "open_clip": ".bin",
    "wrapped": ".pth",
    "safetensors": ".safetensors",
}
