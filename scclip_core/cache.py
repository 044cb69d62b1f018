"""The on-disk cache folder and the two things it needs: atomic writes and content fingerprints.

The folder is `$SCCLIP_CACHE`, else `$XDG_CACHE_HOME/scclip`, else `~/.cache/scclip`. Files are written to a
unique temporary name and renamed into place, so processes sharing the folder never read half a file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

CACHE_ENV = "SCCLIP_CACHE"
_HASH_CHUNK = 1 << 24
_TEMPORARY_SUFFIX = ".tmp"


class CacheWarning(UserWarning):
    """A cache entry or folder could not be used; the run goes on without it (recomputing, or in memory only)."""


def default_cache_dir() -> Path:
    """Where scclip keeps caches, read from the environment at call time."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scclip"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` if the block succeeds, else removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_temporaries(path: Path) -> None:
    """Delete the temporaries that killed writers of `path` left beside it; only while nobody else writes `path`."""
    for leftover in path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*{_TEMPORARY_SUFFIX}"):
        try:
            leftover.unlink(missing_ok=True)
        except OSError:
            continue


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def file_fingerprint(path: Path, memo_dir: Path | None = None) -> str:
    """blake2b of a file's bytes.

    With `memo_dir`, the digest is remembered there per (real path, size, modification time), so loading the
    same weights again costs a `stat` instead of reading hundreds of megabytes.
    """
    real = Path(os.path.realpath(path))
    status = real.stat()
    stamp = {"path": str(real), "size": status.st_size, "mtime_ns": status.st_mtime_ns}
    memo = memo_dir / f"{hashlib.sha256(str(real).encode()).hexdigest()[:32]}.json" if memo_dir else None
    if memo is not None and memo.is_file():
        try:
            remembered = json.loads(memo.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            remembered = None  # unreadable or torn: hashed again below, and rewritten
        if isinstance(remembered, dict) and isinstance(remembered.get("digest"), str):
            if {key: remembered.get(key) for key in stamp} == stamp:
                return remembered["digest"]
    digest = hashlib.blake2b(digest_size=16)
    with real.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    if memo is not None:
        try:
            atomic_write(memo, json.dumps({**stamp, "digest": value}).encode())
        except OSError:
            pass
    return value


def tensor_fingerprint(module: nn.Module) -> str:
    """blake2b over a module's state: names, dtypes, shapes and values (for weights that have no file)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
