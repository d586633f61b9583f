"""Parts of the blockwise engine and the CPU watershed that the memory/speed work changed."""

from __future__ import annotations

import numpy as np
import pytest

from dls_microscopy._allocator import bound_allocator, release_memory
from dls_microscopy.blocks import plan_blocks
from dls_microscopy.sample_data import make_synthetic_nuclei
from dls_microscopy.segment._watershed_cpu import _smooth_cpu
from dls_microscopy.segment._watershed_numpy import _jump_to_roots
from dls_microscopy.segment.blockwise import _outer_voxels, _plan
from dls_microscopy.segment.watershed import WatershedSegmenter, _unique_edges


def _reference_edges(a, b, saddle, n):
    best: dict[tuple[int, int], float] = {}
    for x, y, s in zip(a.tolist(), b.tolist(), saddle.tolist(), strict=True):
        key = (min(x, y), max(x, y))
        best[key] = max(best.get(key, -np.inf), s)
    keys = sorted(best)
    high = np.array([best[k] for k in keys], np.float32)
    flat = np.array([k[0] * n + k[1] for k in keys], np.int64)
    order = np.lexsort((flat, -high))
    return flat[order] // n, flat[order] % n, high[order]


@pytest.mark.parametrize("table_limit", [0, 10**6])
@pytest.mark.parametrize("n_basins", [3, 900, 70_000])
def test_unique_edges_is_sparse_and_exact(n_basins, table_limit):
    """Sorted (sparse) and table (dense, when n_basins**2 <= table_limit) paths: one answer."""
    rng = np.random.default_rng(n_basins)
    e = 20_000
    a = rng.integers(0, n_basins, e).astype(np.int32)
    b = rng.integers(0, n_basins, e).astype(np.int32)
    saddle = rng.normal(size=e).astype(np.float32)
    saddle[::5] = 0.0
    saddle[::7] = -0.0
    got = _unique_edges(a, b, saddle, n_basins=n_basins, table_limit=table_limit)
    want = _reference_edges(a, b, saddle, n_basins)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_pointer_jumping_reaches_the_roots():
    rng = np.random.default_rng(1)
    n = 50_000
    parent = np.arange(n, dtype=np.int32)
    # a random forest: each node points to an earlier one, or is a root
    links = rng.random(n) < 0.95
    parent[links] = (rng.random(links.sum()) * np.flatnonzero(links)).astype(np.int32)
    root = parent.copy()
    for i in range(n):  # reference: follow the chain (parents come first)
        root[i] = root[parent[i]]
    np.testing.assert_array_equal(_jump_to_roots(parent), root)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_threaded_smoothing_equals_scipy(dtype):
    rng = np.random.default_rng(0)
    img = (rng.random((40, 96, 80)) * 1000).astype(dtype)
    one = _smooth_cpu(img, (0.8, 2.5, 2.5), threads=1)
    two = _smooth_cpu(img, (0.8, 2.5, 2.5), threads=3)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(
        _smooth_cpu(img, (0.0, 1.5, 0.0), threads=2), _smooth_cpu(img, (0.0, 1.5, 0.0), threads=1)
    )


def test_threads_do_not_change_labels():
    s = make_synthetic_nuclei((32, 128, 128), spacing=(1.0, 0.3, 0.3), diameter_um=7.0, seed=4)
    seg = WatershedSegmenter(diameter_um=7.0, device="cpu", backend="cpu")
    seg.threads = 1
    one = seg.segment(s.image[0], spacing=s.spacing)
    seg.threads = 2
    two = seg.segment(s.image[0], spacing=s.spacing)
    np.testing.assert_array_equal(one, two)
    assert one.max() > 20


@pytest.mark.parametrize("spacing", [(1.0, 0.3, 0.3), (2.0, 0.4, 0.4)])
def test_sparse_and_dense_drainage_give_identical_labels(monkeypatch, spacing):
    """Below ``_SPARSE_FRACTION`` foreground the numpy path's slopes run only at foreground
    voxels: same labels.  (The compiled path always visits the foreground only.)"""
    from dls_microscopy.segment import _watershed_numpy, _watershed_shared

    monkeypatch.setattr(_watershed_shared, "_KERNELS", None)  # the numpy path
    s = make_synthetic_nuclei((24, 96, 96), spacing=spacing, diameter_um=7.0, seed=5)
    seg = WatershedSegmenter(diameter_um=7.0, device="cpu", backend="cpu")
    out = {}
    for mode, fraction in (("dense", 0.0), ("sparse", 1.01)):
        monkeypatch.setattr(_watershed_numpy, "_SPARSE_FRACTION", fraction)
        out[mode] = seg.segment(s.image[0], spacing=s.spacing)
    assert out["dense"].dtype == out["sparse"].dtype
    np.testing.assert_array_equal(out["dense"], out["sparse"])
    assert out["dense"].max() > 5


def test_outer_voxels_counts_halos():
    plan = plan_blocks((50, 70, 90), halo=(3, 5, 0), grid=(16, 16, 16), block_shape=(16, 32, 48))
    total = sum(int(np.prod([s.stop - s.start for s in blk.outer])) for blk in plan)
    assert _outer_voxels(plan) == total


def test_plan_prefers_fewer_larger_blocks_when_halos_are_wide():
    # a wide halo: two half-budget blocks compute much more halo than one large block
    shape, halo = (128, 256, 256), (40, 40, 40)
    plan, at_once = _plan(shape, halo, 2**30, 50.0, 2, None)
    assert at_once == 1 and plan.n_blocks <= 2
    # a thin halo: both workers get blocks
    plan, at_once = _plan((256, 1024, 1024), (2, 2, 2), 256 * 2**20, 50.0, 2, None)
    assert at_once == 2 and plan.n_blocks > 2
    assert plan.outer_nbytes(50.0) <= 128 * 2**20
    # an explicit block shape runs on all workers
    plan, at_once = _plan(shape, halo, 2**30, 50.0, 2, (64, 64, 64))
    assert at_once == 2 and plan.block_shape == (64, 64, 64)


def test_allocator_helpers_are_safe_to_call_repeatedly():
    first = bound_allocator()
    assert bound_allocator() is first
    assert isinstance(first, bool)
    assert bound_allocator(2**31) is first and bound_allocator(2**31) is first
    release_memory()


def test_mmap_threshold_grows_with_the_budget_within_bounds():
    from dls_microscopy._allocator import MMAP_THRESHOLD, MMAP_THRESHOLD_MAX, mmap_threshold_for

    assert mmap_threshold_for(None) == MMAP_THRESHOLD == 2**20
    assert mmap_threshold_for(40 * 2**20) == 2**20  # small budgets: everything big is mmapped
    assert mmap_threshold_for(2**31) == 8 * 2**20
    assert mmap_threshold_for(2**40) == MMAP_THRESHOLD_MAX


def test_trim_threshold_grows_with_the_budget_within_bounds():
    from dls_microscopy._allocator import TRIM_THRESHOLD, TRIM_THRESHOLD_MAX, trim_threshold_for

    assert trim_threshold_for(None) == TRIM_THRESHOLD == 4 * 2**20
    assert trim_threshold_for(128 * 2**20) == TRIM_THRESHOLD  # small budgets keep 4 MiB
    assert trim_threshold_for(2**31) == 32 * 2**20  # at most 1/64 of the budget is kept free
    assert trim_threshold_for(2**40) == TRIM_THRESHOLD_MAX


@pytest.mark.parametrize("combine", [None, "add"])
def test_run_parallel_runs_a_single_item_in_the_calling_thread(combine):
    import operator
    import threading

    from dls_microscopy.blocks import run_parallel

    seen, progress = [], []

    def work(item):
        seen.append(threading.get_ident())
        return item * 2

    kwargs = {"combine": operator.add, "initial": 10} if combine else {}
    got = run_parallel([4], work, workers=4, progress=lambda *a: progress.append(a), **kwargs)
    assert got == (18 if combine else [8])
    assert seen == [threading.get_ident()]
    assert progress == [("blocks", 0, 1), ("blocks", 1, 1)]
    with pytest.raises(ZeroDivisionError):
        run_parallel([0], lambda x: 1 // x, workers=2)


def test_top_pad_is_a_small_fraction_of_the_budget():
    from dls_microscopy._allocator import TOP_PAD_MIN, top_pad_for

    assert top_pad_for(None) == TOP_PAD_MIN == 128 * 2**10  # glibc's default
    assert top_pad_for(8 * 2**20) == TOP_PAD_MIN
    assert top_pad_for(256 * 2**20) == TOP_PAD_MIN  # small budgets: glibc's behaviour
    assert top_pad_for(2**31) == 32 * 2**20
