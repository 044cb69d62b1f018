"""How closely the engine reproduces the official outputs stored in the parity fixtures.

    python -m benchmarks.parity                        # the fixtures in ../shared/fixtures beside the checkout
    python -m benchmarks.parity path/to/fixture.pt ...

Prints one JSON line per SC-CLIP fixture: crop size, largest absolute difference of the patch embeddings, the
tolerance the tests apply (1e-4 of the largest expected value), and whether the anomaly tokens are exactly the
expected ones. For the ResCLIP and PEARL fixture (`methods_parity_tiny.pt`), one line per method and image: the
largest difference of the class probabilities relative to the largest expected one (the tests' bar is 1e-4), and
the pixels whose label differs although their two best expected probabilities differ by more than that bar.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from open_clip.model import CLIPVisionCfg, _build_vision_tower

from scclip_core import LayerConfig, Segmenter, SegmenterConfig, encode_dense, load_model

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
DEFAULT_FIXTURES = (
    FIXTURES / "scclip_parity_tiny.pt",
    FIXTURES / "scclip_parity_tiny_448.pt",
    FIXTURES / "methods_parity_tiny.pt",
)
METHOD_FIXTURE_CLASSES = "sky, cloud; grass, lawn; red car, vehicle; person; tree"


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


def method_parity(path: Path) -> list[dict]:
    """Each method's end-to-end probabilities and labels on each image of a ResCLIP/PEARL fixture."""
    fixture = torch.load(path, weights_only=True)
    segmenter = Segmenter(load_model("tiny-test", str(path), device="cpu"), SegmenterConfig(short_side=None))
    lines = []
    for method in ("resclip", "pearl"):
        for image, probs, labels in zip(fixture["images"], fixture[method]["probs"], fixture[method]["labels"]):
            result = segmenter.segment(image.numpy(), METHOD_FIXTURE_CLASSES, method=method, background=None)
            expected = probs.numpy()
            largest = float(np.abs(expected).max())
            top_two = np.sort(expected, axis=0)[-2:]
            decided = top_two[1] - top_two[0] > 1e-4 * largest
            lines.append(
                {
                    "fixture": path.name,
                    "method": method,
                    "image": list(image.shape[:2]),
                    "windows": len(result.windows),
                    "relative_difference": float(f"{np.abs(result.probs - expected).max() / largest:.3g}"),
                    "decided_labels_differing": int(((result.labels != labels.numpy()) & decided).sum()),
                }
            )
    return lines


def main() -> None:
    paths = [Path(argument) for argument in sys.argv[1:]] or list(DEFAULT_FIXTURES)
    for path in paths:
        if "resclip" in torch.load(path, weights_only=False):
            for line in method_parity(path):
                print(json.dumps(line))
        else:
            print(json.dumps(parity(path)))


if __name__ == "__main__":
    main()
