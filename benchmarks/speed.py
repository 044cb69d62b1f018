"""Speed and memory of the engine on this machine (random weights: timings do not depend on the values).

    python -m benchmarks.speed                 # ViT-B/16 timings, peak memory of ViT-B/16 and ViT-L/14
    python -m benchmarks.speed --repeats 20 --device cuda
    python -m benchmarks.speed --only dense --repeats 5   # the dense forward against a plain forward only
    python -m benchmarks.speed --only methods --repeats 5 # every method's forward against a plain forward

Prints a Markdown table that docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scclip_core import (
    DEFAULT_MODEL,
    LAYER_CONFIGS,
    Segmenter,
    SegmenterConfig,
    TextEmbeddingCache,
    TextEncoder,
    encode_dense,
    load_model,
)
from scclip_core.methods import METHOD_SPECS
from scclip_core.text import encode_prompts, parse_classes

ROOT = Path(__file__).resolve().parents[1]
CLASSES = "person; dog; grass; sky, cloud; car"


def _median_seconds(*functions, repeats: int, device: torch.device) -> list[float]:
    """The median wall time of each function over `repeats` runs after one warm-up; the functions take turns, so a
    change in the machine's load (other processes) falls on all of them alike."""
    for function in functions:
        function()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, seconds in zip(functions, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            function()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


def dense_overhead(model, repeats: int) -> dict:
    """SC-CLIP dense forward over the 6 crops of a 336x448 image, against open_clip's plain image forward."""
    crops = torch.randn(6, 3, 224, 224, device=model.device, dtype=model.dtype)
    visual = model.visual

    def plain():
        with torch.inference_mode():
            visual(crops)

    def scclip():
        encode_dense(visual, crops, layers=model.layers)

    plain_s, scclip_s = _median_seconds(plain, scclip, repeats=repeats, device=model.device)
    return {"plain_forward_s": plain_s, "scclip_dense_s": scclip_s, "ratio": scclip_s / plain_s}


def method_costs(model, repeats: int) -> dict[str, dict[str, float]]:
    """Each registered method's dense forward over the same 6 crops against the plain forward; for a method whose
    image side depends on the class text, its text pass for the 5 classes; for a method with refinements of its
    own, those refinements of one 336x448 image's logits."""
    crops = torch.randn(6, 3, 224, 224, device=model.device, dtype=model.dtype)
    visual = model.visual
    segmenter = Segmenter(model, SegmenterConfig(), text_cache=TextEmbeddingCache())
    vocabulary = parse_classes(CLASSES)
    text = segmenter.text.embed(vocabulary.queries).to(model.device)

    def plain():
        with torch.inference_mode():
            visual(crops)

    def dense(method: str):
        return lambda: encode_dense(visual, crops, layers=model.layers, method=method)

    costs = {}
    for name, spec in METHOD_SPECS.items():
        plain_s, method_s = _median_seconds(plain, dense(name), repeats=repeats, device=model.device)
        cost = {"plain_forward_s": plain_s, "dense_s": method_s, "ratio": method_s / plain_s}
        if spec.text_pass is not None:
            output = encode_dense(visual, crops, layers=model.layers, method=name)
            first = F.normalize(output.patch_embeddings.float(), dim=-1)

            def text_pass(state=output.state, first=first, run=spec.text_pass):
                with torch.inference_mode():
                    run(state, first, text)

            (cost["text_pass_s"],) = _median_seconds(text_pass, repeats=repeats, device=model.device)
        if spec.refinements:
            image = np.random.default_rng(0).integers(0, 256, (336, 448, 3), dtype=np.uint8)
            embedding = segmenter.set_image(image, method=name)

            def predict(refine=None, embedding=embedding):
                return lambda: segmenter.predict(vocabulary, embedding=embedding, refine=refine)

            refined, unrefined = _median_seconds(predict(), predict(()), repeats=repeats, device=model.device)
            cost["refinements_s"] = refined - unrefined
        costs[name] = cost
    return costs


def end_to_end(model, repeats: int) -> dict:
    """A 336x448 image with 5 classes: cold (nothing cached), warm (new image, text cached), same image."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (336, 448, 3), dtype=np.uint8) for _ in range(repeats + 1)]
    segmenter = Segmenter(model, SegmenterConfig())
    start = time.perf_counter()
    segmenter.segment(images[0], CLASSES)
    cold = time.perf_counter() - start
    warm = []
    for image in images[1:]:
        start = time.perf_counter()
        segmenter.segment(image, CLASSES)
        warm.append(time.perf_counter() - start)
    start = time.perf_counter()
    segmenter.segment(images[-1], "cat; tree; road")
    new_classes = time.perf_counter() - start
    return {"cold_s": cold, "warm_s": statistics.median(warm), "same_image_new_classes_s": new_classes}


def text_encoding(model, repeats: int) -> dict:
    """80-template embeddings of 5 class names: full 77-token context, shortened context, warm cache."""
    names = ["person", "dog", "grass", "sky", "car"]
    encoder = TextEncoder(model)
    tokens = model.tokenizer([template(name) for name in names for template in encoder.templates]).to(model.device)

    def run(shorten: bool):
        def encode():
            with torch.inference_mode():
                encode_prompts(model.clip, tokens, shorten=shorten)

        return encode

    full, short = _median_seconds(run(False), run(True), repeats=repeats, device=model.device)
    cached = TextEncoder(model, cache=TextEmbeddingCache())
    cached.embed(names)
    (warm,) = _median_seconds(lambda: cached.embed(names), repeats=repeats, device=model.device)
    return {"full_context_s": full, "short_context_s": short, "warm_cache_s": warm}


def peak_memory(name: str, device: str) -> dict:
    """Peak memory of loading `name` and segmenting one 336x448 image, measured in a fresh process."""
    code = f"""
import json, resource, sys, numpy as np, torch
from scclip_core import Segmenter, load_model
model = load_model({name!r}, "random", device={device!r})
Segmenter(model).segment(np.zeros((336, 448, 3), np.uint8), {CLASSES!r})
gpu = torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else None
print(json.dumps({{"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mib": gpu}}))
"""
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _dense_rows(model, repeats: int) -> list[tuple[str, str]]:
    dense = dense_overhead(model, repeats)
    return [
        (f"{model.name} plain open_clip forward, 6 crops 224x224", f"{dense['plain_forward_s'] * 1000:.0f} ms"),
        (f"{model.name} SC-CLIP dense forward, same crops", f"{dense['scclip_dense_s'] * 1000:.0f} ms"),
        ("ratio SC-CLIP / plain forward", f"{dense['ratio']:.3f}"),
    ]


def _method_rows(model, repeats: int) -> list[tuple[str, str]]:
    rows = []
    for name, cost in method_costs(model, repeats).items():
        rows.append(
            (
                f"{name} dense forward, 6 crops 224x224 (plain forward {cost['plain_forward_s'] * 1000:.0f} ms)",
                f"{cost['dense_s'] * 1000:.0f} ms, ratio {cost['ratio']:.3f}",
            )
        )
        if "text_pass_s" in cost:
            rows.append((f"{name} text pass, same crops, 5 classes", f"{cost['text_pass_s'] * 1000:.0f} ms"))
        if "refinements_s" in cost:
            rows.append((f"{name} own refinements, 336x448 image, 5 classes", f"{cost['refinements_s'] * 1000:.0f} ms"))
    return rows


def _end_to_end_rows(model, repeats: int) -> list[tuple[str, str]]:
    e2e = end_to_end(model, max(3, repeats // 2))
    return [
        ("end to end, 336x448 image, 5 classes, cold", f"{e2e['cold_s']:.2f} s"),
        ("end to end, new 336x448 image, text cached (warm)", f"{e2e['warm_s']:.2f} s"),
        ("same image, 3 new classes (image side cached)", f"{e2e['same_image_new_classes_s']:.2f} s"),
    ]


def _text_rows(model, repeats: int) -> list[tuple[str, str]]:
    text = text_encoding(model, repeats)
    return [
        ("text: 5 names x 80 templates, full 77-token context", f"{text['full_context_s'] * 1000:.0f} ms"),
        ("text: same, context cut to the longest prompt", f"{text['short_context_s'] * 1000:.0f} ms"),
        ("text: same names, warm cache", f"{text['warm_cache_s'] * 1000:.3f} ms"),
    ]


def _memory_rows(model, repeats: int) -> list[tuple[str, str]]:
    rows = []
    for name in LAYER_CONFIGS:  # the models SC-CLIP has layer settings for
        memory = peak_memory(name, model.device.type)
        gpu = f", {memory['peak_gpu_mib']:.0f} MiB GPU" if memory["peak_gpu_mib"] else ""
        rows.append((f"peak memory, {name} load + one image", f"{memory['peak_rss_mib']:.0f} MiB RSS{gpu}"))
    return rows


SECTIONS = {
    "dense": _dense_rows,
    "methods": _method_rows,
    "end-to-end": _end_to_end_rows,
    "text": _text_rows,
    "memory": _memory_rows,
}
"""Each measured section and the table rows it prints, in the table's order."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default=None)
    parser.add_argument("--skip-memory", action="store_true", help="the same as leaving 'memory' out of --only")
    parser.add_argument(
        "--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="measure these sections only"
    )
    args = parser.parse_args()
    model = load_model(DEFAULT_MODEL, "random", device=args.device)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {model.device.type}, dtype {str(model.dtype).removeprefix('torch.')}\n"
    )
    chosen = [name for name in SECTIONS if name in args.only and not (args.skip_memory and name == "memory")]
    rows = [row for name in chosen for row in SECTIONS[name](model, args.repeats)]
    print("| measurement | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
