"""Text encoding against its floor: open_clip's full-context `encode_text`, the shortened context, and prefix-shared
encoding (what `TextEncoder` runs), on ViT-B/16 with random weights (timings do not depend on the values).

    python -m benchmarks.text                                  # 8, 100 and 847 names x the 80 and the 7 templates
    python -m benchmarks.text --sizes 8 --templates openai     # the issue's goal: 8 names x 80 templates
    python -m benchmarks.text --sizes 12 --templates openai --chunk 6 --threads 2     # the demo's turns
    python -m benchmarks.text --sizes 8 100 --full-sample 2000 --repeats 3 --device cuda
    python -m benchmarks.text --class-list context459 --sizes 459 --templates openai --paths kept   # an eval's list

The names are the first N classes of `--class-list` (default ADE-847; first synonyms), encoded in calls of `--chunk`
names (default: all in one call), as the demo embeds a new visitor's names a few per turn at the model. `--paths` leaves
out the slow ones; open_clip's full context, the reference of every ratio, always runs. All paths encode the same
tokenised prompts, each call in batches of `--batch-size` prompts; tokenising them, which every path needs, is timed on
its own. Prefix-shared encoding runs twice: "per call" shares only the prefixes within each call (a cold encoder),
"kept" reuses the templates' prefixes that `TextEncoder` keeps from its first call on (`KeptPrefixes`); keeping them,
once per encoder and template set, is timed on its own ("keep prefixes (once)", not part of "kept"). Each timing is the
median of `--repeats` runs after one warm-up of every path, and the paths take turns, so a change in the machine's load
falls on all of them alike. open_clip's full context runs 77 positions for every prompt, so its time does not depend on
which prompts it encodes: above `--full-sample` prompts it is timed on that many (spread evenly over the prompts, in
batches of one call's prompts at most) and scaled linearly to all of them, and the table marks it "(scaled)".

"tokens" counts the positions each path runs through the text transformer: 77 per prompt at full context; the
longest prompt of each batch times its prompts with the shortened context; each template's shared prefix once per
call plus each prompt's own tokens (no padding) with prefix sharing per call; only each prompt's own tokens with
kept prefixes. "rate" is tokens per second over the full-context forward's tokens per second: below 1, a path runs
its positions less efficiently than the plain forward. "ms/call" is a path's time over the number of calls.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from open_clip import CLIP, CustomTextCLIP

from scclip_core import load_model
from scclip_core.prompt_encoding import SharedPrefixTower
from scclip_core.text import PROBE_NAMES, TEMPLATE_SETS, encode_prompts, shortened_length
from scclip_core.vocabularies import read_class_list

SIZES = (8, 100, 847)
TEMPLATE_SET_ORDER = ("openai", "simple")
FULL = "open_clip full context"
PATHS = ("shortened", "per-call", "kept")
PATH_LABELS = {"shortened": "shortened context", "per-call": "prefix-shared, per call", "kept": "prefix-shared, kept"}
ONCE = ("tokenise (every path)", "keep prefixes (once)")  # not per call: tokenising is timed for all calls at once


def _timed(functions: Sequence[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """The median seconds of each function over `repeats` rounds in which they take turns."""
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, seconds in zip(functions, times):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with torch.inference_mode():
                function()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


def _batches(tokens: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [tokens[start : start + batch_size] for start in range(0, len(tokens), batch_size)]


def measure(
    clip: CLIP | CustomTextCLIP,
    tower: SharedPrefixTower,
    tokenizer: Callable[[list[str]], torch.Tensor],
    names: list[str],
    template_set: str,
    args: argparse.Namespace,
    device: torch.device,
) -> list[tuple[str, float, int, bool]]:
    """(path, seconds, tokens run, scaled) for tokenising, keeping the prefixes and each path on `names` x the
    templates, the names in calls of `args.chunk`."""
    templates = TEMPLATE_SETS[template_set]  # type: ignore[index]
    chunk = args.chunk or len(names)
    prompts = [template(name) for name in names for template in templates]
    start = time.perf_counter()
    tokens = tokenizer(prompts).to(device)
    tokenise_seconds = time.perf_counter() - start
    context, per_call = tokens.shape[1], chunk * len(templates)
    sample = tokens
    if len(prompts) > args.full_sample:
        sample = tokens[torch.linspace(0, len(prompts) - 1, args.full_sample, device=device).long()]
    calls = list(tokens.view(len(names), len(templates), context).split(chunk))
    sample_batches = _batches(sample, min(args.batch_size, per_call))
    batches = [batch for call in calls for batch in _batches(call.flatten(0, 1), args.batch_size)]
    probes = tokenizer([template(name) for name in PROBE_NAMES for template in templates]).to(device)
    probes = probes.view(len(PROBE_NAMES), len(templates), context)
    with torch.inference_mode():
        kept = tower.keep_prefixes(probes)
    optional: dict[str, Callable[[], object]] = {
        "shortened": lambda: [encode_prompts(clip, batch) for batch in batches],
        "per-call": lambda: [tower.encode(call, args.batch_size) for call in calls],
        "kept": lambda: [tower.encode(call, args.batch_size, kept) for call in calls],
    }
    chosen = [path for path in PATHS if path in args.paths]
    reference: list[Callable[[], object]] = [
        lambda: tower.keep_prefixes(probes),
        lambda: [clip.encode_text(batch) for batch in sample_batches],
    ]
    keep, full, *timed = _timed(
        [*reference, *(optional[path] for path in chosen)],
        args.repeats,
        device,
    )
    seconds = dict(zip(chosen, timed))
    splits = [tower.split(call) for call in calls]
    own_tokens = sum(int((ends + 1 - prefix_lengths).sum()) for prefix_lengths, ends in splits)
    with torch.inference_mode():
        if not all(bool(kept.fit(call, ends, tower.dtype).all()) for call, (_, ends) in zip(calls, splits)):
            raise SystemExit("a kept prefix does not fit these names: the kept path is not what it is meant to time")
    tokens_run = {
        "shortened": sum(len(batch) * shortened_length(batch) for batch in batches),
        "per-call": own_tokens + sum(int(lengths.sum()) for lengths, _ in splits),
        "kept": int(sum((ends + 1 - kept.lengths).sum() for _, ends in splits)),
    }
    return [
        ("tokenise (every path)", tokenise_seconds, 0, False),
        ("keep prefixes (once)", keep, int(kept.lengths.sum()), False),
        (FULL, full * len(prompts) / len(sample), context * len(prompts), len(sample) < len(tokens)),
        *((PATH_LABELS[path], seconds[path], tokens_run[path], False) for path in chosen),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of names")
    parser.add_argument("--class-list", default="ade847", help="the packaged class list the names come from")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="besides the full context")
    parser.add_argument("--templates", nargs="+", choices=TEMPLATE_SET_ORDER, default=list(TEMPLATE_SET_ORDER))
    parser.add_argument("--model", default="ViT-B/16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, the cores)")
    parser.add_argument("--batch-size", type=int, default=512, help="prompts per batch (TextEncoder's default)")
    parser.add_argument("--full-sample", type=int, default=640, help="most prompts the full context is timed on")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=None, help="names per call (default: all names in one call)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args.model, "random", device=device)
    tower = SharedPrefixTower.of(model.clip)
    if tower is None:
        parser.error(f"{args.model}'s text tower does not admit prefix sharing")
    classes = [synonyms[0] for synonyms in read_class_list(args.class_list)]
    if max(args.sizes) > len(classes):
        parser.error(f"{args.class_list} has {len(classes)} names")
    warm_up = argparse.Namespace(**{**vars(args), "repeats": 1})
    measure(model.clip, tower, model.tokenizer, classes[:8], "simple", warm_up, device)
    chunked = f"calls of {args.chunk} names" if args.chunk else "all names in one call"
    print(
        f"{model.name}, random weights, {device}, {model.dtype}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; {chunked}, batches of {args.batch_size} prompts; "
        f"median of {args.repeats} run(s)\n"
    )
    print("| names | templates | prompts | path | seconds | x full | ms/call | tokens | tokens/s | rate |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for template_set in args.templates:
            rows = measure(model.clip, tower, model.tokenizer, classes[:size], template_set, args, device)
            full_seconds, full_tokens = next((seconds, tokens) for path, seconds, tokens, _ in rows if path == FULL)
            full_rate = full_tokens / full_seconds
            count, calls = len(TEMPLATE_SETS[template_set]), -(-size // (args.chunk or size))
            for path, seconds, tokens, scaled in rows:
                rate = f"{tokens / seconds:,.0f} | {tokens / seconds / full_rate:.2f}" if tokens else "- | -"
                per_call = "-" if path in ONCE else f"{1000 * seconds / calls:.0f}"
                print(
                    f"| {size} | {count} | {size * count} | {path}{' (scaled)' if scaled else ''} | {seconds:.2f} | "
                    f"{seconds / full_seconds:.3f} | {per_call} | {tokens or '-'} | {rate} |"
                )


if __name__ == "__main__":
    main()
