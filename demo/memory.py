"""How the server hands memory back to the system between requests.

glibc keeps freed memory in per-thread arenas, and after the first large free it raises its mmap threshold so
that later large blocks (activations, probability bands) come from those arenas too: a server that has served a
few concurrent requests then holds their peak forever. Capping the arenas, fixing the mmap threshold and
trimming after each heavy request keep the resident size near what is really in use. Elsewhere these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD_BYTES = 1 << 20


def _libc() -> ctypes.CDLL | None:
    library = ctypes.util.find_library("c") if os.name == "posix" else None
    try:
        libc = ctypes.CDLL(library) if library else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune_allocator() -> None:
    """Few malloc arenas, and blocks of 1 MiB or more always mmapped (so freeing them returns them at once).

    Call before the server starts its worker threads.
    """
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc's malloc_trim)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
