"""Keep the C allocator from holding on to memory that numpy has freed (glibc only).

Blockwise work allocates and frees arrays of a few to a few hundred MiB over and
over, from several threads.  glibc's ``malloc`` serves requests above its *mmap
threshold* with ``mmap`` (returned to the system by ``free``), and smaller ones from
per-thread heaps ("arenas") that keep freed pages.  The threshold is dynamic: it
rises to the size of every mmapped block freed, up to 32 MiB, so after the first
few blocks most arrays come from the arenas, and each worker thread's arena keeps
its own high-water mark.  Measured on a 512 MiB volume segmented under a 128 MiB
budget (``benchmarks/run_segment.py``), this made the peak RSS 4.1x the budget
(2.5x with ``MALLOC_ARENA_MAX=2``).

:func:`bound_allocator` fixes the mmap threshold (which turns the dynamic rise
off) and caps the number of arenas; :func:`release_memory` hands freed heap pages
back (``malloc_trim``).  Both are process-wide, idempotent and no-ops where the C
library is not glibc.  The CLI calls :func:`bound_allocator` at start-up;
:func:`~dls_microscopy.segment.blockwise.segment_blockwise` calls both.
``DLS_MALLOC_TUNING=0`` disables them (e.g. to compare).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from typing import Any

__all__ = ["bound_allocator", "release_memory"]

log = logging.getLogger(__name__)

#: mallopt parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Allocations from this size up are mmapped, and unmapped when freed.
MMAP_THRESHOLD = 1 << 20
#: Free memory at the top of a heap above this is returned at once.
TRIM_THRESHOLD = 4 << 20
#: Arenas (heaps) shared by all threads.
ARENA_MAX = 2


@functools.cache
def _glibc() -> Any:
    if os.environ.get("DLS_MALLOC_TUNING", "1") == "0":
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        return None
    return libc


@functools.cache
def bound_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds and cap its arenas (once per process).

    Returns
    -------
    bool
        True when the settings were applied (glibc, tuning not disabled).
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_ARENA_MAX, ARENA_MAX),
        )
    )
    log.debug("glibc malloc: mmap threshold %d, arenas %d (applied: %s)", MMAP_THRESHOLD, ARENA_MAX, ok)
    return ok


def release_memory() -> None:
    """Return the free pages of every malloc heap to the system (glibc ``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
