"""Fault injection: damaged cache entries, unusable cache folders, killed runs and concurrent writers.

Each case breaks one thing the project persists or relies on, then checks that the run ends with the result of a
clean run (equal embeddings, equal label maps, equal confusion matrices) or with one clear message, and that
nothing else is broken.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scclip_core import TextEmbeddingCache, TextEncoder, load_model
from scclip_core.cache import CacheWarning
from scclip_core.cli import SUMMARY_NAME, main
from scclip_core.eval import cli as eval_cli
from scclip_core.text import ENTRY_SUFFIX

from .test_eval import make_random_dataset

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "traffic light"]
DAMAGED = "dog"
TINY = ["--model", "tiny-test", "--weights", "random", "--templates", "simple"]
SEGMENT = [*TINY, "--no-background"]
SMALL = ["--short-side", "112", "--crop", "112", "--stride", "112"]
EVAL = ["--dataset", "voc21", *TINY, *SMALL, "--device", "cpu", "--no-progress", "--json"]


@pytest.fixture(scope="module")
def other_model():
    """The tiny model with other random weights: another weights fingerprint, the same embedding width."""
    torch.manual_seed(1)
    return load_model("tiny-test", weights="random", device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    for index, size in enumerate([(40, 56), (64, 30), (33, 33)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"photo{index}.png")
    return folder


def clean_embeddings(model, recomputed: str | None = None) -> torch.Tensor:
    """NAMES embedded with an empty cache; with `recomputed`, that name's row is encoded on its own, as a run
    does that finds every other name cached (a batch of one rounds the last bit differently, by ~3e-8)."""
    embeddings = TextEncoder(model, templates="simple", cache=TextEmbeddingCache()).embed(NAMES)
    if recomputed is not None:
        alone = TextEncoder(model, templates="simple", cache=TextEmbeddingCache()).embed([recomputed])
        embeddings[NAMES.index(recomputed)] = alone[0]
    return embeddings


def entry_path(folder: Path, model, name: str) -> Path:
    return TextEmbeddingCache._file(folder, (model.key, "simple", name))


def truncate(path: Path, model, other) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def garbage(path: Path, model, other) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())


def zero_length(path: Path, model, other) -> None:
    path.write_bytes(b"")


def wrong_shape(path: Path, model, other) -> None:
    TextEmbeddingCache(path.parents[1]).put((model.key, "simple", DAMAGED), torch.ones(7))


def not_finite(path: Path, model, other) -> None:
    TextEmbeddingCache(path.parents[1]).put(
        (model.key, "simple", DAMAGED), torch.full((model.clip.visual.output_dim,), float("nan"))
    )


def wrong_checksum(path: Path, model, other) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # one flipped bit in the values: what bit rot does
    path.write_bytes(bytes(data))


def other_weights(path: Path, model, other) -> None:
    scratch = path.parents[2] / "other"
    TextEncoder(other, templates="simple", cache=TextEmbeddingCache(scratch)).embed([DAMAGED])
    path.write_bytes(entry_path(scratch, other, DAMAGED).read_bytes())


@pytest.mark.parametrize(
    "damage",
    [truncate, garbage, zero_length, wrong_shape, not_finite, wrong_checksum, other_weights],
    ids=lambda damage: damage.__name__,
)
def test_a_damaged_entry_is_reported_once_deleted_and_recomputed(
    tiny_model, other_model, tmp_path: Path, damage: Callable[[Path, object, object], None], monkeypatch
) -> None:
    """Breaks: one disk entry of the text cache (truncated, garbage, empty, 7 values, NaN, a flipped bit, or the
    entry of another model's weights). Expects: one CacheWarning naming the entry, the embeddings of a clean run,
    and a repaired entry that the next run reads without encoding anything."""
    folder = tmp_path / "cache"
    expected = clean_embeddings(tiny_model, recomputed=DAMAGED)
    TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(folder)).embed(NAMES)
    path = entry_path(folder, tiny_model, DAMAGED)
    damage(path, tiny_model, other_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeddings = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(folder)).embed(NAMES)
    assert torch.equal(embeddings, expected)
    reported = [str(warning.message) for warning in caught if issubclass(warning.category, CacheWarning)]
    assert len(reported) == 1 and str(path) in reported[0]
    again = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(folder))
    monkeypatch.setattr(again, "_encode_names", lambda names: pytest.fail(f"re-encoded {names}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(again.embed(NAMES), expected)


def test_the_command_line_heals_the_faults_of_the_issue(photos: Path, private_cache: Path, tiny_model, capsys) -> None:
    """Breaks: two entries of the shared cache, one empty (was `EOFError: No data left in file`) and one with 7
    values (was `RuntimeError: stack expects each tensor to be equal size`). Expects: exit 0, the label map of a
    clean run, one `warning:` line per damaged entry and no traceback."""
    image = photos / "photo0.png"
    arguments = ["segment", str(image), *SEGMENT, "--classes", "; ".join(NAMES)]
    assert main([*arguments, "--out", str(private_cache / "clean.png")]) == 0
    folder = private_cache / "text-embeddings"
    zero_length(entry_path(folder, tiny_model, "cat"), tiny_model, None)
    wrong_shape(entry_path(folder, tiny_model, DAMAGED), tiny_model, None)
    capsys.readouterr()
    assert main([*arguments, "--out", str(private_cache / "healed.png")]) == 0
    err = capsys.readouterr().err
    damaged = [line for line in err.splitlines() if "cache entry" in line]
    assert len(damaged) == 2 and all(line.startswith("warning: ") for line in damaged)
    assert "Traceback" not in err
    clean, healed = (np.asarray(Image.open(private_cache / name)) for name in ("clean.png", "healed.png"))
    assert np.array_equal(clean, healed)


def test_a_read_only_cache_folder_degrades_to_memory(tiny_model, tmp_path: Path, monkeypatch) -> None:
    """Breaks: write permission on the cache folder (as root, where the mode stops nothing, creating a file in it
    fails the way it does in a read-only folder). Expects: one warning, embeddings equal to a clean run's."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):

        def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        monkeypatch.setattr(os, "mkdir", refuse)
    try:
        with pytest.warns(CacheWarning, match="memory only") as caught:
            embeddings = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(folder)).embed(NAMES)
    finally:
        folder.chmod(0o755)
    assert len(caught) == 1 and torch.equal(embeddings, clean_embeddings(tiny_model))
    assert not list(folder.iterdir())


def test_a_cache_shared_read_only_still_serves_its_entries(tiny_model, tmp_path: Path, monkeypatch) -> None:
    """Breaks: refreshing an entry's age (`os.utime`), as in a folder shared read-only (works as root too).
    Expects: every entry is still served from disk, with no warning and nothing encoded."""
    folder = tmp_path / "cache"
    expected = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(folder)).embed(NAMES)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "utime", refuse)
    reader = TextEncoder(tiny_model, templates="simple", cache=TextEmbeddingCache(folder))
    monkeypatch.setattr(reader, "_encode_names", lambda names: pytest.fail(f"re-encoded {names}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(reader.embed(NAMES), expected)


def test_a_cache_path_that_is_a_file_degrades_to_memory(photos: Path, tmp_path: Path, capsys) -> None:
    """Breaks: the cache folder is a file. Expects: exit 0, one `warning:` line, the clean run's label map, and
    the file untouched."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    arguments = ["segment", str(photos / "photo1.png"), *SEGMENT, "--classes", "cat; dog"]
    assert main([*arguments, "--no-text-cache", "--out", str(tmp_path / "clean.png")]) == 0
    capsys.readouterr()
    assert main([*arguments, "--text-cache", str(blocker), "--out", str(tmp_path / "blocked.png")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "memory only" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ")
    assert blocker.read_text() == "not a folder"
    clean, blocked = (np.asarray(Image.open(tmp_path / name)) for name in ("clean.png", "blocked.png"))
    assert np.array_equal(clean, blocked)


def test_a_full_disk_mid_write_degrades_to_memory(tiny_model, tmp_path: Path, monkeypatch) -> None:
    """Breaks: the disk fills up half way through writing the first entry (ENOSPC). Expects: one warning, the
    clean run's embeddings, and neither a torn entry nor a temporary file left in the folder."""
    real_write = Path.write_bytes

    def fill_up(self: Path, data: bytes) -> int:
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    folder = tmp_path / "cache"
    cache = TextEmbeddingCache(folder)
    monkeypatch.setattr(Path, "write_bytes", fill_up)
    with pytest.warns(CacheWarning, match="No space left") as caught:
        embeddings = TextEncoder(tiny_model, templates="simple", cache=cache).embed(NAMES)
    monkeypatch.undo()
    assert len(caught) == 1 and cache.directory is None
    assert torch.equal(embeddings, clean_embeddings(tiny_model))
    assert not [path for path in folder.rglob("*") if path.is_file()]


def killed_after(calls: int, target: str, module: str, body: str, arguments: list[str], cwd: Path) -> None:
    """Run `module.main(arguments)` in a fresh process whose `target` write is killed (SIGKILL) half way through
    its `calls`-th call; `body` writes half of what the call would write, from the call's own arguments."""
    program = f"""
import os, signal, sys
import json, numpy, {module}, scclip_core.eval.runner
calls = 0
real = {target}
def write(*args, **kwargs):
    global calls
    calls += 1
    if calls < {calls}:
        return real(*args, **kwargs)
{body}
    os.kill(os.getpid(), signal.SIGKILL)
{target} = write
sys.exit({module}.main({arguments!r}))
"""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", program], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == -9, completed.stderr[-3000:]


def test_a_segment_run_killed_while_writing_resumes_to_complete_outputs(photos: Path, tmp_path: Path, capsys) -> None:
    """Breaks: `scclip segment` on three images is killed (SIGKILL) half way through writing the second image's
    probabilities. Expects: the rerun does the unfinished images again, and ends with the files, label maps,
    probabilities and summary of a clean run, with nothing left over from the killed writer."""
    outputs = lambda name: ["--out", str(tmp_path / name / "labels"), "--save-probs", str(tmp_path / name / "probs")]  # noqa: E731
    arguments = ["segment", str(photos), *SEGMENT, *SMALL, "--classes", "cat; dog", "--device", "cpu"]
    assert main([*arguments, *outputs("clean")]) == 0
    half_written = "    args[0].write(b'\\x93NUMPY' + bytes(100)); args[0].flush()"
    killed_after(2, "numpy.save", "scclip_core.cli", half_written, [*arguments, *outputs("run")], tmp_path)
    assert len([path for path in (tmp_path / "run" / "probs").iterdir() if path.name.endswith(".tmp")]) == 1
    assert main([*arguments, *outputs("run")]) == 0
    assert "skipped 1 image" in capsys.readouterr().err
    for kind in ("labels", "probs"):
        clean, run = (sorted(p.name for p in (tmp_path / name / kind).iterdir()) for name in ("clean", "run"))
        assert clean == run
    for index in range(3):
        clean = np.asarray(Image.open(tmp_path / "clean" / "labels" / f"photo{index}.png"))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "run" / "labels" / f"photo{index}.png")), clean)
        clean_probs = np.load(tmp_path / "clean" / "probs" / f"photo{index}.npy")
        run_probs = np.load(tmp_path / "run" / "probs" / f"photo{index}.npy")
        np.testing.assert_allclose(run_probs, clean_probs, rtol=0, atol=1e-5)  # other processes round differently
    summary = [json.loads(line) for line in (tmp_path / "run" / "labels" / SUMMARY_NAME).read_text().splitlines()]
    assert [(Path(record["image"]).name, record["status"]) for record in summary] == [
        ("photo0.png", "done"),
        ("photo1.png", "done"),
        ("photo2.png", "done"),
    ]


@pytest.mark.parametrize("fault", ["empty", "torn"])
def test_outputs_written_torn_or_empty_are_not_taken_as_done(photos: Path, tmp_path: Path, capsys, fault) -> None:
    """Breaks: an image's label map or probabilities, left empty or cut short by a writer that did not write
    atomically. Expects: the resume does that image again (and only it) and ends with the clean outputs."""
    out, probs = tmp_path / "labels", tmp_path / "probs"
    arguments = ["segment", str(photos), *SEGMENT, *SMALL, "--classes", "cat; dog", "--out", str(out)]
    arguments += ["--save-probs", str(probs), "--device", "cpu"]
    assert main(arguments) == 0
    clean_labels, clean_probs = (out / "photo1.png").read_bytes(), (probs / "photo2.npy").read_bytes()
    for path in (out / "photo1.png", probs / "photo2.npy"):
        data = path.read_bytes()
        path.write_bytes(b"" if fault == "empty" else data[: len(data) // 2])
    capsys.readouterr()
    assert main([*arguments, "--json"]) == 0
    captured = capsys.readouterr()
    assert [Path(json.loads(line)["image"]).name for line in captured.out.splitlines()] == ["photo1.png", "photo2.png"]
    assert "skipped 1 image" in captured.err
    assert (out / "photo1.png").read_bytes() == clean_labels and (probs / "photo2.npy").read_bytes() == clean_probs


def test_an_unwritable_output_folder_is_one_error_line(photos: Path, tmp_path: Path, capsys) -> None:
    """Breaks: the output folder is a file. Expects: exit 2 and one `error:` line naming it, no traceback."""
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    arguments = ["segment", str(photos), *SEGMENT, "--classes", "cat", "--out", str(blocker), "--device", "cpu"]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: could not write {blocker}: File exists"
    ]
    assert "Traceback" not in err


def test_a_torn_checkpoint_is_one_error_line(photos: Path, tmp_path: Path, capsys) -> None:
    """Breaks: the weights file, cut short by an interrupted download (torch's own message spans lines).
    Expects: exit 2 and the whole message on one `error:` line, no traceback."""
    torn = tmp_path / "weights.pt"
    torn.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    arguments = ["segment", str(photos / "photo0.png"), "--model", "tiny-test", "--weights", str(torn)]
    assert main([*arguments, "--classes", "cat"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: could not read weights from {torn}")


def test_an_eval_run_killed_while_recording_resumes_to_the_clean_scores(tmp_path: Path, capsys) -> None:
    """Breaks: `python -m scclip_core.eval` on three images is killed (SIGKILL) half way through writing the second
    image's record. Expects: the rerun keeps the first image, does the other two again, and its confusion
    matrix and records equal a clean run's."""
    data = tmp_path / "data"
    make_random_dataset(data)
    assert eval_cli.main([*EVAL, "--root", str(data), "--out", str(tmp_path / "clean")]) == 0
    clean = json.loads(capsys.readouterr().out)
    half_line = "    args[0].write(json.dumps(args[1])[:30]); args[0].flush()"
    arguments = [*EVAL, "--root", str(data), "--out", str(tmp_path / "run")]
    killed_after(2, "scclip_core.eval.runner.append_record", "scclip_core.eval.cli", half_line, arguments, tmp_path)
    (records,) = (tmp_path / "run").glob("*/records/rank0.jsonl")
    assert len(records.read_text().splitlines()) == 2 and not records.read_text().endswith("\n")
    assert eval_cli.main(arguments) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert (resumed["images"], resumed["images_this_run"]) == (3, 2)
    assert resumed["confusion_matrix"] == clean["confusion_matrix"] and resumed["mIoU"] == clean["mIoU"]
    assert [json.loads(line)["id"] for line in records.read_text().splitlines()] == [
        json.loads(line)["id"]
        for line in next((tmp_path / "clean").glob("*/records/rank0.jsonl")).read_text().splitlines()
    ]


def _write_entries(folder: Path, values: dict[str, torch.Tensor], start, rounds: int) -> None:
    start.wait()
    for _ in range(rounds):
        cache = TextEmbeddingCache(folder)
        for name, value in values.items():
            cache.put(("model", "simple", name), value)


def test_two_processes_writing_the_same_entries_leave_valid_equal_entries(tmp_path: Path) -> None:
    """Breaks: two processes write the same 50 entries at the same moment, five times over. Expects: both exit
    0 without a warning, and every entry reads back valid and equal to what they wrote, with no temporaries."""
    folder = tmp_path / "cache"
    values = {f"name{index}": torch.randn(64, generator=torch.Generator().manual_seed(index)) for index in range(50)}
    context = multiprocessing.get_context("fork")
    start = context.Barrier(2)
    writers = [context.Process(target=_write_entries, args=(folder, values, start, 5)) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert not [path for path in folder.rglob("*") if path.is_file() and path.suffix != ENTRY_SUFFIX]
    reader = TextEmbeddingCache(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, value in values.items():
            assert torch.equal(reader.get(("model", "simple", name), 64), value)


def test_a_torn_dataset_image_is_one_error_line(tmp_path: Path, capsys) -> None:
    """Breaks: one image of the dataset, cut short by an interrupted copy. Expects: exit 2 and one `error:` line
    naming the file, no traceback."""
    data = tmp_path / "data"
    make_random_dataset(data)
    (image, *_) = sorted(data.rglob("*.jpg"))
    image.write_bytes(image.read_bytes()[:100])
    assert eval_cli.main([*EVAL, "--root", str(data)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: could not read {image}")
