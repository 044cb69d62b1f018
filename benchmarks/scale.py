"""Scale figures for docs/benchmarks.md: the on-disk text cache, 847 classes, a 9000x6000 photo, torchrun sharding.

    python -m benchmarks.scale                      # everything, ViT-B/16 with random weights, on the CPU
    python -m benchmarks.scale --only text-cache huge
    python -m benchmarks.scale --only 847-classes --cold-847   # embed the 847 classes' text for real too

Every figure comes from running the CLI (`python -m scclip_core segment ...`) in a child process, with a fresh
SCCLIP_CACHE folder for the whole benchmark: peak RSS is that child's (os.wait4), text time is the JSON
`timings.text`. Random weights change neither timings nor memory. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scclip_core.config import DEFAULT_MODEL
from scclip_core.vocabularies import CLASSES_DIR

ROOT = Path(__file__).resolve().parents[1]
CLASSES = "person; dog; grass; sky, cloud; car"
MODEL = ["--model", DEFAULT_MODEL, "--weights", "random", "--device", "cpu"]


def photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A smooth synthetic photo (content does not change timings or memory)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def run_cli(arguments: list[str], environment: dict[str, str], launcher: list[str] | None = None) -> dict:
    """Run the CLI once; its JSON lines, wall time and peak RSS (GiB)."""
    command = [*(launcher or [sys.executable]), "-m", "scclip_core", "segment", *arguments, "--json"]
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {"lines": lines, "wall_s": wall, "command": " ".join(command)}


def peak_rss_gib(arguments: list[str], environment: dict[str, str]) -> dict:
    """`run_cli`, measuring the child's peak resident memory with wait4."""
    command = [sys.executable, "-m", "scclip_core", "segment", *arguments, "--json"]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {"lines": lines, "wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2**20, "command": " ".join(command)}


def ade847_classes(folder: Path) -> Path:
    """ADE20K-Full's 847 classes as a CLI class file; the 9 repeated display names get a suffix to stay distinct."""
    seen: dict[str, int] = {}
    lines = []
    for line in (CLASSES_DIR / "ade847.txt").read_text().splitlines():
        first, *rest = [part.strip() for part in line.split(",")]
        seen[first] = seen.get(first, 0) + 1
        name = first if seen[first] == 1 else f"{first} {seen[first]}"
        lines.append(", ".join([name, *[word for word in rest if word.lower() != name.lower()]]))
    path = folder / "ade847_cli.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def text_cache(work: Path, environment: dict[str, str]) -> dict:
    image = photo(work / "photo_640x480.jpg", 640, 480)
    arguments = [str(image), *MODEL, "--classes", CLASSES, "--out", str(work / "labels.png")]
    first = run_cli(arguments, environment)["lines"][0]["timings"]["text"]
    second = run_cli(arguments, environment)["lines"][0]["timings"]["text"]
    disabled = run_cli([*arguments, "--no-text-cache"], environment)["lines"][0]["timings"]["text"]
    return {
        "first_text_s": first,
        "second_text_s": second,
        "ratio": second / first,
        "no_cache_text_s": disabled,
        "command": f"python -m scclip_core segment photo_640x480.jpg {' '.join(MODEL)} --classes '{CLASSES}' "
        "--out labels.png --json  (twice, same SCCLIP_CACHE)",
    }


def seed_text_cache(classes: Path, templates: str, environment: dict[str, str]) -> None:
    """Put random unit vectors into the cache for every name the CLI will embed, under the key the CLI's
    model gets (the default model, random weights drawn after torch.manual_seed(0), float32 on the CPU)."""
    import torch

    from scclip_core import DEFAULT_BACKGROUND_WORDS, TextEmbeddingCache, load_model, parse_classes

    os.environ["SCCLIP_CACHE"] = environment["SCCLIP_CACHE"]
    torch.manual_seed(0)
    model = load_model(DEFAULT_MODEL, "random", device="cpu")
    cache = TextEmbeddingCache.default()
    names = parse_classes(classes.read_text(), background=DEFAULT_BACKGROUND_WORDS).queries
    for name in names:
        cache.put((model.key, templates, name), torch.nn.functional.normalize(torch.randn(512), dim=0))


def many_classes(work: Path, environment: dict[str, str], cold: bool = False) -> dict:
    """847 classes on a 2048x1365 photo. Cold embeds ~9000 prompts with ViT-B/16 first (tens of minutes on
    2 busy cores); without `cold`, the cache is seeded so the run measures everything but the text tower."""
    image = photo(work / "photo_2048x1365.jpg", 2048, 1365, seed=1)
    classes = ade847_classes(work)
    out = work / "labels_847.png"
    arguments = [str(image), *MODEL, "--classes-file", str(classes), "--templates", "simple", "--out", str(out)]
    if not cold:
        seed_text_cache(classes, "simple", environment)
    run = peak_rss_gib(arguments, environment)
    label_map = Image.open(out)
    return {
        "classes": len(run["lines"][0]["classes"]),
        "label_png": [label_map.mode, *label_map.size],
        "text_cache": "cold" if cold else "seeded",
        "peak_rss_gib": run["peak_rss_gib"],
        "wall_s": run["wall_s"],
        "timings": run["lines"][0]["timings"],
        "command": "python -m scclip_core segment photo_2048x1365.jpg "
        + " ".join(MODEL)
        + " --classes-file ade847_cli.txt --templates simple --out labels_847.png --json",
    }


def huge_photo(work: Path, environment: dict[str, str]) -> dict:
    image = photo(work / "photo_9000x6000.jpg", 9000, 6000, seed=2)
    out = work / "labels_9000.png"
    arguments = [
        str(image),
        *MODEL,
        "--classes",
        CLASSES,
        "--prob-threshold",
        "0.2",
        "--area-threshold",
        "0.05",
        "--out",
        str(out),
    ]
    run = peak_rss_gib(arguments, environment)
    return {
        "label_png": list(Image.open(out).size),
        "peak_rss_gib": run["peak_rss_gib"],
        "wall_s": run["wall_s"],
        "timings": run["lines"][0]["timings"],
        "resized_size": run["lines"][0]["resized_size"],
        "command": "python -m scclip_core segment photo_9000x6000.jpg "
        + " ".join(MODEL)
        + f" --classes '{CLASSES}' --prob-threshold 0.2 --area-threshold 0.05 --out labels_9000.png --json",
    }


def torchrun(work: Path, environment: dict[str, str], images: int = 8) -> dict:
    folder = work / "batch"
    folder.mkdir(exist_ok=True)
    for index in range(images):
        photo(folder / f"photo{index}.jpg", 640, 480, seed=10 + index)
    results = {}
    for processes in (1, 2):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        arguments = [str(folder / "*.jpg"), *MODEL, "--classes", CLASSES, "--out", str(work / f"out{processes}")]
        run = run_cli(
            arguments, {**environment, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}, launcher
        )
        results[f"{processes}_process_wall_s"] = run["wall_s"]
        results[f"{processes}_process_images_per_s"] = images / run["wall_s"]
    same = all(
        np.array_equal(
            np.asarray(Image.open(work / "out1" / f"photo{i}.png")),
            np.asarray(Image.open(work / "out2" / f"photo{i}.png")),
        )
        for i in range(images)
    )
    results.update(
        images=images,
        identical_outputs=same,
        command=f"torchrun --standalone --nproc_per_node=N -m scclip_core segment 'batch/*.jpg' {' '.join(MODEL)} "
        f"--classes '{CLASSES}' --out outN --json",
    )
    return results


BENCHMARKS = {"text-cache": text_cache, "847-classes": many_classes, "huge": huge_photo, "torchrun": torchrun}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--json", default="benchmark_scale.json", help="where to write the figures")
    parser.add_argument("--cold-847", action="store_true", help="embed the 847 classes' text for real first")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scclip-scale-"))
    environment = {**os.environ, "SCCLIP_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"
    figures = {"machine": machine}
    for name in args.only:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        options = {"cold": args.cold_847} if name == "847-classes" else {}
        figures[name] = BENCHMARKS[name](work, environment, **options)
        print(json.dumps({name: figures[name]}, indent=2), flush=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
