"""The ablation's cost against one segmentation (random ViT-B/16 weights: timings do not depend on the values).

    python -m benchmarks.ablation                  # from the repository root
    python -m benchmarks.ablation --repeats 5 --threads 2 --separate
    python -m benchmarks.ablation --methods sc-clip clip maskclip clearclip sclip naclip resclip pearl

A 1024x768 synthetic photo (resized to 336x448: 6 windows) and 5 classes whose text embeddings are already cached.
"One segmentation" is `set_image` + `predict` on a new image; "the ablation" is `set_image_variants` with the
ablation's variants for `--methods` (default: the demo's default set; full SC-CLIP, each stage off, then each
method with its own ablation) + one `predict` per variant.
The two alternate on fresh images, and medians over the repeats are printed as a Markdown table. As in the app,
the ablation's labels are predicted at preview size (`--preview-side`, default 480 px as the app's gallery; 0: at
the input size like the single segmentation); the image side is the same either way.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from scclip_core import DEFAULT_MODEL, METHOD_SPECS, METHODS, Segmenter, Variant, ablation_variants, load_model
from scclip_core.images import cap_size
from scclip_core.methods import DEFAULT_ABLATION_METHODS

CLASSES = "person; dog; grass; sky, cloud; car"


def synthetic_photo(seed: int, height: int = 768, width: int = 1024) -> np.ndarray:
    """A smooth sky-to-ground gradient with a few flat rectangles and mild noise, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    image = (1 - rows) * np.array([110, 160, 230]) + rows * np.array([70, 120, 40])
    image = np.broadcast_to(image, (height, width, 3)).copy()
    for _ in range(4):
        top, left = rng.integers(0, height - 200), rng.integers(0, width - 200)
        image[top : top + rng.integers(80, 200), left : left + rng.integers(80, 200)] = rng.integers(0, 256, 3)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def one_segmentation(segmenter: Segmenter, image: np.ndarray) -> dict[str, float]:
    """Seconds of one segmentation and of its image side (`set_image`)."""
    start = time.perf_counter()
    segmenter.set_image(image)
    image_side = time.perf_counter() - start
    segmenter.predict(CLASSES)
    return {"total": time.perf_counter() - start, "image_side": image_side}


def ablation(
    segmenter: Segmenter, image: np.ndarray, preview_side: int, variants: tuple[Variant, ...]
) -> dict[str, object]:
    """Seconds of the whole ablation and its split: shared pass once, then each variant's last block and predict."""
    start = time.perf_counter()
    embeddings = segmenter.set_image_variants(image, variants)
    if preview_side:
        preview, _ = cap_size(image, preview_side)
        embeddings = [replace(embedding, image=preview) for embedding in embeddings]
    image_side = time.perf_counter() - start
    predict_seconds = []
    for embedding in embeddings:
        predict_start = time.perf_counter()
        segmenter.predict(CLASSES, embedding=embedding)
        predict_seconds.append(time.perf_counter() - predict_start)
    total = time.perf_counter() - start
    timings = embeddings[0].timings
    return {
        "total": total,
        "image_side": image_side,
        "preprocess": timings["preprocess"],
        "shared": timings["backbone_shared"],
        "last_blocks": [embedding.timings["last_block"] for embedding in embeddings],
        "predicts": predict_seconds,
    }


def separate_ablation(segmenter: Segmenter, image: np.ndarray, variants: tuple[Variant, ...]) -> float:
    """The ablation as it was: one full segmentation per variant."""
    start = time.perf_counter()
    for variant in variants:
        segmenter.segment(image, CLASSES, method=variant.method, stages=variant.stages, method_params=variant.params)
    return time.perf_counter() - start


def _variant_name(variant: Variant) -> str:
    spec = METHOD_SPECS[variant.method]
    own = [label for label, params in spec.ablations if params == variant.params]
    if own:
        return f"{variant.method} ({own[0]})"
    off = [name for name in variant.stages.names() if not getattr(variant.stages, name)]
    if spec.stages:
        return f"{variant.method} without {off[0]}" if off else f"{variant.method} (full)"
    return variant.method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--separate", action="store_true", help="also time the configurations run separately")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=DEFAULT_ABLATION_METHODS,
        help="the methods ticked, each with its own ablation (default: the ablation's default set, "
        + ", ".join(DEFAULT_ABLATION_METHODS)
        + ")",
    )
    parser.add_argument(
        "--preview-side",
        type=int,
        default=480,
        help="long side of the ablation's labels, as in the app (0: the input size)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(DEFAULT_MODEL, weights="random", device=args.device)
    segmenter = Segmenter(model)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {model.device.type}\n"
    )
    variants = ablation_variants(args.methods)
    print(f"methods: {', '.join(args.methods)}\n")
    segmenter.segment(synthetic_photo(0), CLASSES)
    singles, runs, separate = [], [], []
    for repeat in range(args.repeats):
        singles.append(one_segmentation(segmenter, synthetic_photo(2 * repeat + 1)))
        runs.append(ablation(segmenter, synthetic_photo(2 * repeat + 2), args.preview_side, variants))
        if args.separate:
            separate.append(separate_ablation(segmenter, synthetic_photo(1000 + repeat), variants))
    single = statistics.median(one["total"] for one in singles)
    single_image_side = statistics.median(one["image_side"] for one in singles)
    total = statistics.median(run["total"] for run in runs)
    image_side = statistics.median(run["image_side"] for run in runs)
    count = len(variants)
    per_repeat = statistics.median(run["total"] / one["total"] for run, one in zip(runs, singles))
    rows = [
        ("one segmentation (set_image + predict, new image, text cached)", f"{single:.2f} s"),
        ("  of which set_image", f"{single_image_side:.2f} s"),
        (f"{count} configurations, shared pass (set_image_variants + {count} predicts)", f"{total:.2f} s"),
        ("  of which set_image_variants", f"{image_side:.2f} s"),
        ("ratio (goal: at most 2)", f"{total / single:.2f}"),
        ("ratio, median of per-repeat ratios", f"{per_repeat:.2f}"),
        (f"image side only: set_image_variants ({count}) / set_image (1)", f"{image_side / single_image_side:.2f}"),
        ("  preprocess, once", f"{statistics.median(run['preprocess'] for run in runs):.2f} s"),
        (
            "  shared frozen pass (stem, blocks 1..L-1, shared values), once",
            f"{statistics.median(run['shared'] for run in runs):.2f} s",
        ),
        (
            f"  last blocks, sum over the {count} variants",
            f"{statistics.median(sum(run['last_blocks']) for run in runs):.2f} s",
        ),
        (
            f"  predict, sum over the {count} variants",
            f"{statistics.median(sum(run['predicts']) for run in runs):.2f} s",
        ),
    ]
    if separate:
        rows.append((f"{count} configurations run separately (before)", f"{statistics.median(separate):.2f} s"))
    print("| measurement | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    print("\n| variant | own last block | predict |\n|---|---|---|")
    for index, variant in enumerate(variants):
        last_block = statistics.median(run["last_blocks"][index] for run in runs)
        predict = statistics.median(run["predicts"][index] for run in runs)
        print(f"| {_variant_name(variant)} | {last_block * 1000:.0f} ms | {predict * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
