"""How closely `encode_dense` reproduces the official SC-CLIP output stored in the parity fixtures.

    python -m benchmarks.parity                        # the fixtures in ../shared/fixtures beside the checkout
    python -m benchmarks.parity path/to/fixture.pt ...

Prints one JSON line per fixture: crop size, largest absolute difference of the patch embeddings, the tolerance
the tests apply (1e-4 of the largest expected value), and whether the anomaly tokens are exactly the expected ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from open_clip.model import CLIPVisionCfg, _build_vision_tower

from scclip_core import LayerConfig, encode_dense

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
DEFAULT_FIXTURES = (FIXTURES / "scclip_parity_tiny.pt", FIXTURES / "scclip_parity_tiny_448.pt")


def parity(path: Path) -> dict:
    fixture = torch.load(path, weights_only=False)
    visual = _build_vision_tower(
        fixture["embed_dim"], CLIPVisionCfg(**fixture["vision_cfg"]), quick_gelu=fixture["quick_gelu"]
    )
    visual.load_state_dict(fixture["visual_state_dict"], strict=True)
    output = encode_dense(visual.eval(), fixture["images"], layers=LayerConfig(**fixture["scclip_layers"]), trace=True)
    expected = fixture["expected_patch_embeddings"]
    difference = (output.patch_embeddings.reshape(expected.shape) - expected).abs().max().item()
    same_anomalies = all(
        crop.anomaly_indices.tolist() == indices.tolist()
        for crop, indices in zip(output.trace, fixture["expected_anomaly_indices"])
    )
    return {
        "fixture": path.name,
        "crop": list(fixture["images"].shape[2:]),
        "max_abs_difference": float(f"{difference:.3g}"),
        "tolerance": float(f"{1e-4 * expected.abs().max().item():.3g}"),
        "anomaly_tokens_exact": same_anomalies,
    }


def main() -> None:
    paths = [Path(argument) for argument in sys.argv[1:]] or list(DEFAULT_FIXTURES)
    for path in paths:
        print(json.dumps(parity(path)))


if __name__ == "__main__":
    main()
