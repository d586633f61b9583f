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
off), the trim threshold and top pad (free memory a heap keeps: a small fraction
of the budget) and caps the number of arenas; :func:`release_memory` hands freed heap pages
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
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Allocations from this size up are mmapped, and unmapped when freed (the smallest threshold).
MMAP_THRESHOLD = 1 << 20
#: Free memory at the top of a heap above this is returned at once (the smallest threshold).
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


#: The mmap threshold for a memory budget: ``budget / MMAP_BUDGET_DIVISOR``, clamped to
#: [MMAP_THRESHOLD, MMAP_THRESHOLD_MAX].  Heap (arena) allocations are page-faulted once
#: and reused; mmapped ones are page-faulted on every allocation: with a 1 MiB threshold,
#: ``segment()`` of a 1 Mvox volume took 0.108 s instead of 0.068 s (8 MiB: 0.072 s).
#: Arrays below 1/256 of the budget are small enough that what the arenas keep of them
#: stays negligible; a fixed 8 MiB threshold broke the 42.7 MiB budget of the scale test
#: (68 MiB growth instead of 53).
MMAP_BUDGET_DIVISOR = 256
MMAP_THRESHOLD_MAX = 32 << 20

#: The trim threshold for a memory budget: ``budget / TRIM_BUDGET_DIVISOR``, clamped to
#: [TRIM_THRESHOLD, TRIM_THRESHOLD_MAX].  Pages trimmed from a heap are page-faulted
#: again by the next allocation (~2 µs per 4 KiB page here): with a fixed 4 MiB, every
#: ``segment()`` of a 1 Mvox volume (24 MiB of heap at its peak) gave its heap back
#: and faulted it in again, ~9,000 faults and 15-20 % of its time, measured under the
#: 2 GiB default budget.  A heap keeps at most this much free, so the memory kept
#: stays within ~1.5 % of the budget per arena; budgets up to 256 MiB keep 4 MiB.
TRIM_BUDGET_DIVISOR = 64
TRIM_THRESHOLD_MAX = 64 << 20
#: glibc's default top pad: free memory a heap keeps when it is trimmed.
TOP_PAD_MIN = 128 << 10
_applied: dict[str, int] = {}


def mmap_threshold_for(memory_budget: int | None) -> int:
    """The mmap threshold :func:`bound_allocator` sets for ``memory_budget`` bytes."""
    if memory_budget is None:
        return MMAP_THRESHOLD
    return int(min(MMAP_THRESHOLD_MAX, max(MMAP_THRESHOLD, int(memory_budget) // MMAP_BUDGET_DIVISOR)))


def trim_threshold_for(memory_budget: int | None) -> int:
    """The trim threshold :func:`bound_allocator` sets for ``memory_budget`` bytes."""
    if memory_budget is None:
        return TRIM_THRESHOLD
    trim = int(memory_budget) // TRIM_BUDGET_DIVISOR
    return int(min(TRIM_THRESHOLD_MAX, max(TRIM_THRESHOLD, trim)))


def top_pad_for(memory_budget: int | None) -> int:
    """The top pad :func:`bound_allocator` sets: free memory a heap keeps when trimmed.

    The trim threshold (:func:`trim_threshold_for`) where it exceeds its smallest
    value, i.e. for budgets over 256 MiB; glibc's default 128 KiB otherwise (small
    budgets keep glibc's behaviour: the pipeline's scale test runs within 1.5 % of
    its limit).  A trim otherwise gives back *all* the free memory at the top of a
    heap once it passes the trim threshold, and the next call faults it in again: a
    ``segment()`` of a 1 Mvox volume run after another computation took ~3,500
    faults (~5 ms) with the default pad under the 2 GiB default budget, none with
    this one.
    """
    trim = trim_threshold_for(memory_budget)
    return trim if trim > TRIM_THRESHOLD else TOP_PAD_MIN


def bound_allocator(memory_budget: int | None = None) -> bool:
    """Fix glibc's mmap and trim thresholds and cap its arenas (process-wide).

    Parameters
    ----------
    memory_budget : int, optional
        Bytes the calling computation may use: the mmap and trim thresholds grow
        with it (:func:`mmap_threshold_for`, :func:`trim_threshold_for`).  Without
        it, the first call sets the smallest thresholds and later calls keep
        whatever was set last.

    Returns
    -------
    bool
        True when the settings are in effect (glibc, tuning not disabled).
    """
    libc = _glibc()
    if libc is None:
        return False
    if memory_budget is None and _applied:
        return bool(_applied.get("ok"))
    threshold = mmap_threshold_for(memory_budget)
    trim = trim_threshold_for(memory_budget)
    pad = top_pad_for(memory_budget)
    if _applied.get("threshold") == threshold and _applied.get("trim") == trim:
        return bool(_applied.get("ok"))
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, threshold),
            (_M_TRIM_THRESHOLD, trim),
            (_M_TOP_PAD, pad),
            (_M_ARENA_MAX, ARENA_MAX),
        )
    )
    _applied.update(threshold=threshold, trim=trim, ok=int(ok))
    log.debug(
        "glibc malloc: mmap threshold %d, trim threshold %d, top pad %d, arenas %d (applied: %s)",
        threshold, trim, pad, ARENA_MAX, ok,
    )  # fmt: skip
    return ok


def release_memory() -> None:
    """Return the free pages of every malloc heap to the system (glibc ``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
