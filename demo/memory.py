"""How the server hands memory back to the system between requests, without paying for it in every forward.

glibc gives each thread an arena of its own (up to eight per core) and keeps freed memory there, so a server that
has served a few concurrent requests holds their peak. What this module sets, where glibc is the allocator:

- at most two arenas;
- blocks of 32 MiB or more (the probability bands of large images) always mmapped, so they go back when freed;
- up to 64 MiB of free memory kept at the top of the heap instead of handed back at every free: a forward
  allocates and frees blocks of 1 to 32 MiB many times over, and handing them back each time made every page of
  them fault in again (with blocks of 1 MiB or more mmapped, text encoding and the image side ran 20 to 30 %
  slower: `python -m benchmarks.allocator`);
- after each heavy request, `release_freed_memory` hands every free page back (malloc_trim).

Elsewhere these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 64 << 20


def _libc() -> ctypes.CDLL | None:
    library = ctypes.util.find_library("c") if os.name == "posix" else None
    try:
        libc = ctypes.CDLL(library) if library else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune_allocator() -> None:
    """Two malloc arenas, blocks of 32 MiB or more mmapped, 64 MiB of free heap top kept between frees.

    Call before the server starts its worker threads.
    """
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc's malloc_trim)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
