"""Object-matching metrics: hand-computed cases, sparse/dask paths, files, references."""

from __future__ import annotations

import json
import logging
import time
import tracemalloc

import dask.array as da
import numpy as np
import pytest

from dls_microscopy.errors import InputError, UnsupportedDtypeError
from dls_microscopy.segment import metrics, overlaps
from dls_microscopy.segment.metrics import (
    contingency,
    evaluate_paths,
    match_objects,
    match_overlaps,
)

RNG = np.random.default_rng(7)


def _blobs(shape, n, rng, *, fill=0.6, max_id=None):
    """Random label image: Voronoi cells of ``n`` seeds, part of them on background."""
    from scipy import ndimage as ndi

    seeds = np.zeros(shape, np.int64)
    ids = rng.choice(max_id, n, replace=False) + 1 if max_id else np.arange(1, n + 1)
    seeds.flat[rng.choice(seeds.size, n, replace=False)] = ids
    _, index = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[tuple(index)]
    smooth = ndi.gaussian_filter(rng.random(shape), 1.5)
    return np.where(smooth < np.quantile(smooth, fill), labels, 0)


def _pair_oracle(pred, gt):
    """Contingency by brute force: {(p, g): n} over all voxels, zeros included."""
    pairs, counts = np.unique(
        np.stack([pred.ravel().astype(np.uint64), gt.ravel().astype(np.uint64)]),
        axis=1,
        return_counts=True,
    )
    return {(int(p), int(g)): int(n) for (p, g), n in zip(pairs.T, counts, strict=True)}


def _greedy(pred, gt, t):
    """Greedy matching by decreasing IoU (what the optimal matching must beat below 0.5)."""
    ov = contingency(pred, gt)
    taken_p, taken_g, tp = set(), set(), 0
    for k in np.argsort(-ov.iou(), kind="stable"):
        p, g = int(ov.pred_ids[k]), int(ov.gt_ids[k])
        if ov.iou()[k] >= t and p not in taken_p and g not in taken_g:
            taken_p.add(p), taken_g.add(g)
            tp += 1
    return tp


def _check_counts(m, *, tp, fp, fn):
    assert (m.tp, m.fp, m.fn) == (tp, fp, fn)
    assert m.n_pred == tp + fp and m.n_true == tp + fn


# -- hand-computed cases ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.uint64])
@pytest.mark.parametrize("ndim", [2, 3])
def test_perfect_match(dtype, ndim):
    gt = _blobs((12, 16, 16)[-ndim:], 9, np.random.default_rng(ndim)).astype(dtype)
    r = match_objects(gt, gt.copy(), thresholds=(0.5, 0.9, 1.0))
    for m in r.per_threshold:
        _check_counts(m, tp=9, fp=0, fn=0)
        assert m.precision == m.recall == m.f1 == m.average_precision == 1.0
        assert m.mean_matched_iou == m.panoptic_quality == m.mean_true_iou == 1.0
        np.testing.assert_array_equal(m.matched_pred, m.matched_gt)


def test_split_object_into_equal_halves_matches_one():
    gt = np.zeros((10, 10), np.uint16)
    gt[1:9, 1:9] = 3
    pred = np.zeros_like(gt)
    pred[1:9, 1:5], pred[1:9, 5:9] = 1, 2
    ov = contingency(pred, gt)
    assert ov.iou().tolist() == [0.5, 0.5]  # 32 / 64 each: both >= 0.5
    r = match_objects(pred, gt, thresholds=(0.5, 0.3, 0.6))
    for t in (0.5, 0.3):
        _check_counts(r[t], tp=1, fp=1, fn=0)
        assert r[t].matched_iou.tolist() == [0.5]
        assert r[t].precision == 0.5 and r[t].recall == 1.0
        assert r[t].panoptic_quality == pytest.approx(0.5 / 1.5)
    _check_counts(r[0.6], tp=0, fp=2, fn=1)


def test_uneven_split_matches_larger_part():
    gt = np.zeros((8, 8), np.uint8)
    gt[:, :] = 1  # 64 voxels
    pred = np.zeros_like(gt)
    pred[:, :5], pred[:, 5:] = 4, 9  # 40 and 24 voxels: IoU 0.625 and 0.375
    r = match_objects(pred, gt, thresholds=(0.5, 0.3))
    for t in (0.5, 0.3):
        _check_counts(r[t], tp=1, fp=1, fn=0)
        assert r[t].matched_pred.tolist() == [4]
        assert r[t].matched_iou.tolist() == [0.625]


def test_merged_object():
    gt = np.zeros((6, 12), np.uint32)
    gt[1:5, 1:6], gt[1:5, 6:8] = 1, 2  # 20 and 8 voxels
    pred = np.zeros_like(gt)
    pred[1:5, 1:8] = 5  # 28 voxels: IoU 20/28 and 8/28
    r = match_objects(pred, gt, thresholds=(0.5,))
    _check_counts(r[0.5], tp=1, fp=0, fn=1)
    assert r[0.5].matched_gt.tolist() == [1]
    assert r[0.5].matched_iou[0] == pytest.approx(20 / 28)
    assert r[0.5].precision == 1.0 and r[0.5].recall == 0.5
    assert r[0.5].f1 == pytest.approx(2 / 3) and r[0.5].average_precision == 0.5


def test_shifted_cubes_iou_one_third():
    gt = np.zeros((6, 6, 12), np.uint16)
    pred = np.zeros_like(gt)
    gt[1:5, 1:5, 1:5] = 1
    pred[1:5, 1:5, 3:7] = 1  # overlap 4*4*2 = 32, union 64 + 64 - 32 = 96
    ov = contingency(pred, gt)
    assert ov.counts.tolist() == [32]
    assert ov.pred_sizes.tolist() == ov.gt_sizes.tolist() == [64]
    assert ov.iou()[0] == pytest.approx(1 / 3, abs=1e-15)
    r = match_objects(pred, gt, thresholds=(0.3, 0.5))
    _check_counts(r[0.3], tp=1, fp=0, fn=0)
    assert r[0.3].mean_matched_iou == pytest.approx(1 / 3)
    assert r[0.3].panoptic_quality == pytest.approx(1 / 3)
    _check_counts(r[0.5], tp=0, fp=1, fn=1)
    assert r[0.5].precision == r[0.5].recall == r[0.5].f1 == r[0.5].panoptic_quality == 0


def test_extra_and_missing_objects():
    gt = np.zeros((10, 40), np.uint16)
    gt[2:8, 1:7], gt[2:8, 11:17], gt[2:8, 21:27] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[2:8, 1:7], pred[2:8, 12:17] = 1, 2  # IoU 1 and 30/36
    pred[0:2, 30:34], pred[6:9, 35:39] = 3, 4  # on background
    m = match_objects(pred, gt)[0.5]
    _check_counts(m, tp=2, fp=2, fn=1)
    assert (m.precision, m.recall) == (0.5, pytest.approx(2 / 3))
    assert m.f1 == pytest.approx(4 / 7) and m.average_precision == pytest.approx(2 / 5)
    assert m.mean_matched_iou == pytest.approx((1 + 30 / 36) / 2)
    assert m.mean_true_iou == pytest.approx((1 + 30 / 36) / 3)
    assert m.panoptic_quality == pytest.approx((1 + 30 / 36) / (2 + 1 + 0.5))


def test_optimal_matching_beats_greedy_below_one_half():
    # 1-D strips: gt A = [0, 10), B = [10, 20); pred Y = [0, 4), X = [4, 14)
    gt = np.zeros((1, 24), np.uint8)
    gt[0, :10], gt[0, 10:20] = 1, 2
    pred = np.zeros_like(gt)
    pred[0, :4], pred[0, 4:14] = 7, 8
    ov = contingency(pred, gt)
    iou = dict(
        zip(
            zip(ov.pred_ids.tolist(), ov.gt_ids.tolist(), strict=True),
            ov.iou().tolist(),
            strict=True,
        )
    )
    assert iou == {(7, 1): 0.4, (8, 1): pytest.approx(3 / 7), (8, 2): 0.25}
    assert _greedy(pred, gt, 0.2) == 1  # X-A first, then Y has nothing left
    m = match_objects(pred, gt, thresholds=0.2)[0.2]
    _check_counts(m, tp=2, fp=0, fn=0)
    pairs = zip(m.matched_pred.tolist(), m.matched_gt.tolist(), strict=True)
    assert sorted(pairs) == [(7, 1), (8, 2)]
    _check_counts(match_objects(pred, gt, thresholds=0.3)[0.3], tp=1, fp=1, fn=1)


def test_ties_broken_by_total_iou():
    # pred 5 overlaps gt 1 and 2 equally well; pred 6 only gt 2 (better) -> 5-1, 6-2
    gt = np.zeros((1, 30), np.uint8)
    gt[0, 0:10], gt[0, 10:20] = 1, 2
    pred = np.zeros_like(gt)
    pred[0, 5:15], pred[0, 15:22] = 5, 6
    m = match_objects(pred, gt, thresholds=0.3)[0.3]
    _check_counts(m, tp=2, fp=0, fn=0)
    assert dict(zip(m.matched_pred.tolist(), m.matched_gt.tolist(), strict=True)) == {5: 1, 6: 2}


@pytest.mark.parametrize("pred_empty,gt_empty", [(True, True), (True, False), (False, True)])
def test_empty_images_follow_stardist(pred_empty, gt_empty):
    full = np.zeros((8, 8), np.uint16)
    full[2:6, 2:6] = 1
    pred = np.zeros_like(full) if pred_empty else full
    gt = np.zeros_like(full) if gt_empty else full
    m = match_objects(pred, gt, thresholds=(0.5,))[0.5]
    _check_counts(m, tp=0, fp=int(not pred_empty), fn=int(not gt_empty))
    for name in metrics._SCORES:  # every ratio is 0, even for two empty images
        assert getattr(m, name) == 0.0
    assert m.matched_pred.dtype == np.uint64 and m.matched_pred.size == 0


def test_f1_is_a_function_of_ap():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        gt, pred = _blobs((30, 30), 12, rng), _blobs((30, 30), 15, rng)
        for m in match_objects(pred, gt, thresholds=(0.1, 0.3, 0.5)).per_threshold:
            ap = m.average_precision
            assert m.f1 == pytest.approx(2 * ap / (1 + ap))
            assert m.precision * (m.tp + m.fp) == pytest.approx(m.tp)


def test_restrict_to_gt_ignores_predictions_outside_annotations():
    gt = np.zeros((10, 40), np.uint16)
    gt[2:8, 1:7], gt[2:8, 11:17] = 1, 2
    pred = np.zeros_like(gt)
    pred[2:8, 1:7] = 1  # matched
    pred[2:8, 14:20] = 2  # overlaps gt 2 (IoU 18/54): a false positive either way
    pred[2:8, 25:31] = 3  # an unlabelled nucleus: ignored when restricted
    plain = match_objects(pred, gt)
    restricted = match_objects(pred, gt, restrict_to_gt=True)
    _check_counts(plain[0.5], tp=1, fp=2, fn=1)
    _check_counts(restricted[0.5], tp=1, fp=1, fn=1)
    assert restricted.n_pred_ignored == 1 and plain.n_pred_ignored == 0
    assert restricted[0.5].recall == plain[0.5].recall == 0.5
    assert restricted[0.5].precision == 0.5


# -- ids, dtypes, errors -----------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 2**20, 2**40, 2**63])
def test_large_and_sparse_ids_all_encodings(offset):
    """Small ids (bincount), medium (sorted keys) and huge (ranked) give the same table."""
    rng = np.random.default_rng(3)
    gt = _blobs((10, 24, 24), 30, rng).astype(np.uint64)
    pred = _blobs((10, 24, 24), 40, rng).astype(np.uint64)
    pred_big = np.where(pred > 0, pred * 7919 + np.uint64(offset), 0).astype(np.uint64)
    if offset == 2**63:
        pred_big[pred == 1] = np.uint64(2**64 - 1)
    ov = contingency(pred_big, gt)
    oracle = _pair_oracle(pred_big, gt)
    got = dict(
        zip(
            zip(ov.pred_ids.tolist(), ov.gt_ids.tolist(), strict=True),
            ov.counts.tolist(),
            strict=True,
        )
    )
    assert got == {k: v for k, v in oracle.items() if k[0] and k[1]}
    assert dict(zip(ov.pred_labels.tolist(), ov.pred_sizes.tolist(), strict=True)) == {
        int(i): int(n) for i, n in zip(*np.unique(pred_big[pred_big > 0], return_counts=True), strict=True)
    }
    ref = match_objects(pred, gt, thresholds=(0.2, 0.5))
    big = match_objects(pred_big, gt, thresholds=(0.2, 0.5))
    for a, b in zip(ref.per_threshold, big.per_threshold, strict=True):
        assert (a.tp, a.fp, a.fn) == (b.tp, b.fp, b.fn)
        assert a.panoptic_quality == pytest.approx(b.panoptic_quality)


def test_bool_and_int8_labels():
    gt = np.zeros((6, 6), bool)
    gt[1:4, 1:4] = True
    m = match_objects(gt.astype(np.int8) * 100, gt)[0.5]
    _check_counts(m, tp=1, fp=0, fn=0)
    assert m.matched_pred.tolist() == [100] and m.matched_gt.tolist() == [1]


@pytest.mark.parametrize("lazy", [False, True])
def test_negative_ids_rejected(lazy):
    gt = np.zeros((8, 8), np.int16)
    pred = gt.copy()
    pred[3, 3] = -2
    if lazy:
        pred, gt = da.from_array(pred, chunks=4), da.from_array(gt, chunks=4)
    with pytest.raises(InputError, match="negative"):
        contingency(pred, gt)


def test_bad_inputs_rejected():
    a = np.zeros((4, 4), np.uint8)
    with pytest.raises(InputError, match="shape"):
        match_objects(a, np.zeros((4, 5), np.uint8))
    with pytest.raises(UnsupportedDtypeError, match="integers"):
        contingency(a.astype(np.float32), a)
    for bad in (0, -0.1, 1.5):
        with pytest.raises(InputError, match="thresholds"):
            match_objects(a, a, thresholds=(0.5, bad))
    with pytest.raises(InputError, match="at least one"):
        match_objects(a, a, thresholds=())


# -- equivalences ----------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [(3, 7, 5), (10, 32, 32), (4, 16, 9)])
def test_dask_equals_numpy(chunks):
    rng = np.random.default_rng(11)
    gt = _blobs((10, 32, 32), 40, rng, max_id=10**6).astype(np.uint32)
    pred = _blobs((10, 32, 32), 50, rng).astype(np.int16)
    eager = contingency(pred, gt)
    variants = [
        (da.from_array(pred, chunks=chunks), da.from_array(gt, chunks=chunks)),
        (da.from_array(pred, chunks=chunks), da.from_array(gt, chunks=(5, 16, 16))),
        (pred, da.from_array(gt, chunks=chunks)),
    ]
    for p, g in variants:
        lazy = contingency(p, g)
        for field in (
            "pred_ids",
            "gt_ids",
            "counts",
            "pred_labels",
            "pred_sizes",
            "gt_labels",
            "gt_sizes",
        ):
            np.testing.assert_array_equal(getattr(lazy, field), getattr(eager, field))
    a = match_objects(pred, gt, thresholds=(0.3, 0.5)).to_dict(include_matches=True)
    b = match_objects(*variants[0], thresholds=(0.3, 0.5)).to_dict(include_matches=True)
    assert a == b


def test_numpy_blocks_equal_single_block(monkeypatch):
    rng = np.random.default_rng(5)
    gt, pred = _blobs((12, 20, 20), 30, rng), _blobs((12, 20, 20), 30, rng)
    whole = contingency(pred, gt)
    monkeypatch.setattr(overlaps, "EAGER_BLOCK_VOXELS", 1000)  # slabs of 2 planes
    blocked = contingency(pred, gt)
    np.testing.assert_array_equal(blocked.counts, whole.counts)
    np.testing.assert_array_equal(blocked.gt_sizes, whole.gt_sizes)


def test_contingency_agrees_with_skimage():
    from skimage.metrics import contingency_table

    for seed in range(3):
        rng = np.random.default_rng(seed)
        gt = _blobs((8, 20, 20), 25, rng)
        pred = _blobs((8, 20, 20), 35, rng)
        table = contingency_table(gt, pred).tocoo()  # rows: gt ids, columns: pred ids
        ref = {
            (int(p), int(g)): int(n)
            for g, p, n in zip(table.row, table.col, table.data, strict=True)
            if p and g
        }
        ov = contingency(pred, gt)
        got = dict(
            zip(
                zip(ov.pred_ids.tolist(), ov.gt_ids.tolist(), strict=True),
                ov.counts.tolist(),
                strict=True,
            )
        )
        assert got == ref
        np.testing.assert_array_equal(
            ov.gt_sizes, np.asarray(table.tocsr().sum(axis=1)).ravel()[ov.gt_labels.astype(np.intp)]
        )


def test_sparse_solver_equals_dense_assignment(monkeypatch):
    rng = np.random.default_rng(9)
    gt, pred = _blobs((40, 40), 60, rng, fill=0.9), _blobs((40, 40), 70, rng, fill=0.9)
    ov = contingency(pred, gt)
    ths = (0.05, 0.1, 0.2, 0.3, 0.5)
    dense = match_overlaps(ov, thresholds=ths)
    calls = []
    real = metrics._solve_component_sparse
    monkeypatch.setattr(metrics, "DENSE_COMPONENT_LIMIT", 0)
    monkeypatch.setattr(metrics, "_solve_component_sparse", lambda *a: calls.append(a[3:]) or real(*a))
    sparse = match_overlaps(ov, thresholds=ths)
    assert len(calls) > 5  # non-trivial components went through the sparse solver
    for a, b in zip(dense.per_threshold, sparse.per_threshold, strict=True):
        assert a.tp == b.tp
        assert a.sum_matched_iou == pytest.approx(b.sum_matched_iou, rel=1e-12)
        assert len(set(b.matched_pred.tolist())) == len(set(b.matched_gt.tolist())) == b.tp


def test_matching_is_one_to_one_and_maximal():
    from scipy.optimize import linear_sum_assignment

    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        gt, pred = _blobs((30, 30), 20, rng), _blobs((30, 30), 25, rng)
        ov = contingency(pred, gt)
        dense = np.zeros((ov.n_pred, ov.n_true))
        pi, gi = ov.pair_indices()
        dense[pi, gi] = ov.iou()
        for m in match_objects(pred, gt, thresholds=(0.1, 0.25, 0.5)).per_threshold:
            assert len(set(m.matched_pred.tolist())) == len(set(m.matched_gt.tolist())) == m.tp
            rows, cols = linear_sum_assignment(dense >= m.threshold, maximize=True)
            assert m.tp == int((dense[rows, cols] >= m.threshold).sum())


# -- scale ---------------------------------------------------------------------------


def _many_small_objects(n=20_000, shape=(64, 512, 512), cell=(4, 8, 8), seed=0):
    """``n`` gt boxes of 3x6x5 voxels on a grid of cells; pred = each box shifted by 0-2 in x."""
    rng = np.random.default_rng(seed)
    grid = tuple(s // c for s, c in zip(shape, cell, strict=True))
    ids = np.zeros(grid, np.uint32)
    ids.flat[rng.choice(ids.size, n, replace=False)] = rng.permutation(n) + 1
    shift = rng.integers(0, 3, grid)

    def paint(cell_ids, x0):
        box = np.zeros(cell, np.uint32)
        box[:3, :6, x0 : x0 + 5] = 1
        return (cell_ids[:, None, :, None, :, None] * box[None, :, None, :, None, :]).reshape(shape)

    gt = paint(ids, 0)
    pred = np.zeros(shape, np.uint32)
    for s in range(3):
        pred += paint(np.where((shift == s) & (ids > 0), ids + 50_000, 0).astype(np.uint32), s)
    counts = np.bincount(shift[ids > 0], minlength=3)  # objects shifted by 0, 1, 2
    return pred, gt, counts


@pytest.mark.slow
def test_large_sparse_volume_is_fast_and_never_dense(monkeypatch):
    pred, gt, n_shift = _many_small_objects()
    built = []
    real_lsa = metrics.linear_sum_assignment

    def spy(cost, *args, **kwargs):
        built.append(np.shape(cost))
        return real_lsa(cost, *args, **kwargs)

    monkeypatch.setattr(metrics, "linear_sum_assignment", spy)
    start = time.perf_counter()
    result = match_objects(pred, gt, thresholds=(0.3, 0.5, 0.75))
    elapsed = time.perf_counter() - start
    # shift 0: IoU 1; shift 1: 4/6; shift 2: 3/7
    assert result[0.3].tp == 20_000
    assert result[0.5].tp == n_shift[0] + n_shift[1]
    assert result[0.75].tp == n_shift[0]
    assert result[0.3].sum_matched_iou == pytest.approx(n_shift[0] + n_shift[1] * 4 / 6 + n_shift[2] * 3 / 7)
    assert all(r * c <= metrics.DENSE_COMPONENT_LIMIT for r, c in built)
    assert elapsed < 15, f"took {elapsed:.1f} s"

    # out of core: peak memory of the dask path is a few blocks, far below N x M bytes
    lazy_p = da.from_array(pred, chunks=(16, 256, 256))
    lazy_g = da.from_array(gt, chunks=(16, 256, 256))
    tracemalloc.start()
    try:
        lazy = match_objects(lazy_p, lazy_g, thresholds=(0.3, 0.5, 0.75))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lazy.to_dict() == result.to_dict()
    assert peak < 120 * 2**20 < 20_000 * 20_000, f"peak {peak / 2**20:.0f} MiB"


# -- output ---------------------------------------------------------------------------


def test_to_dict_and_table():
    gt = np.zeros((10, 40), np.uint64)
    gt[2:8, 1:7], gt[2:8, 11:17] = 2**40, 3
    pred = np.zeros_like(gt)
    pred[2:8, 1:7] = 9
    r = match_objects(pred, gt, thresholds=(0.5, 0.75), restrict_to_gt=True)
    d = json.loads(json.dumps(r.to_dict(include_matches=True)))
    assert d["restrict_to_gt"] is True and d["n_pred_ignored"] == 0
    first = d["thresholds"][0]
    assert first["matches"] == [{"pred": 9, "gt": 2**40, "iou": 1.0}]
    assert {
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "f1",
        "average_precision",
        "mean_matched_iou",
        "panoptic_quality",
        "n_pred",
        "n_true",
    } <= set(first)
    assert "matches" not in r.to_dict()["thresholds"][0]
    lines = r.table().splitlines()
    assert lines[0].split()[:6] == ["thresh", "n_pred", "n_true", "tp", "fp", "fn"]
    assert lines[1].split()[:6] == ["0.5", "1", "2", "1", "0", "1"]
    with pytest.raises(KeyError):
        r[0.9]


# -- files ---------------------------------------------------------------------------


def _write_store(path, gt, pred, spacing=(1.0, 0.5, 0.5)):
    from dls_microscopy.io import write_ome_zarr

    image = (gt > 0).astype(np.uint8)
    return write_ome_zarr(
        image, path, spacing=spacing, labels={"gt": gt, "pred": pred}, chunks=16, n_levels=1
    )


def test_evaluate_paths_zarr_labels_and_tiff(tmp_path, monkeypatch):
    import tifffile

    rng = np.random.default_rng(2)
    gt = _blobs((8, 32, 32), 20, rng).astype(np.uint16)
    pred = _blobs((8, 32, 32), 25, rng).astype(np.uint32)
    expected = match_objects(pred, gt, thresholds=(0.3, 0.5)).to_dict()
    store = _write_store(tmp_path / "s.ome.zarr", gt, pred)
    by_name = evaluate_paths(store, store, pred_label="pred", gt_label="gt", thresholds=(0.3, 0.5))
    assert {k: v for k, v in by_name.to_dict().items() if k == "thresholds"} == {
        "thresholds": expected["thresholds"]
    }
    assert by_name.info["shape"] == [8, 32, 32] and by_name.info["pred_label"] == "pred"
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    monkeypatch.chdir(tmp_path)  # relative paths work
    by_path = evaluate_paths("pred.tif", "s.ome.zarr/labels/gt", thresholds=(0.3, 0.5))
    assert by_path.to_dict()["thresholds"] == expected["thresholds"]


def test_evaluate_paths_shape_and_spacing(tmp_path, caplog):
    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 2:8, 2:8] = 1
    a = _write_store(tmp_path / "a.ome.zarr", gt, gt, spacing=(1.0, 0.5, 0.5))
    b = _write_store(tmp_path / "b.ome.zarr", gt, gt, spacing=(2.0, 0.5, 0.5))
    with caplog.at_level(logging.WARNING, logger="dls_microscopy.segment.metrics"):
        r = evaluate_paths(a / "labels" / "pred", b / "labels" / "gt")
    assert r[0.5].tp == 1
    assert "different spacing" in caplog.text
    c = _write_store(tmp_path / "c.ome.zarr", gt[:3], gt[:3])
    with pytest.raises(InputError, match="differ in shape"):
        evaluate_paths(a, c, pred_label="pred", gt_label="gt")


@pytest.mark.shared_data
def test_idr_labels_against_themselves(shared_data):
    store = shared_data / "omezarr_idr0062A_6001240" / "6001240_labels.zarr"
    r = evaluate_paths(store / "labels" / "0", store, gt_label="0", thresholds=(0.5, 0.9))
    assert r[0.9].tp == r[0.9].n_true == 61 and r[0.9].fp == 0


# -- StarDist's own implementation, where installed ---------------------------------


def test_against_stardist_matching():
    sd = pytest.importorskip("stardist.matching")
    ths = (0.1, 0.3, 0.5, 0.7)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        gt, pred = _blobs((40, 40), 25, rng), _blobs((40, 40), 30, rng)
        ours = match_objects(pred, gt, thresholds=ths)
        for m, ref in zip(ours.per_threshold, sd.matching(gt, pred, thresh=ths), strict=True):
            assert (m.tp, m.fp, m.fn, m.n_pred, m.n_true) == (
                ref.tp,
                ref.fp,
                ref.fn,
                ref.n_pred,
                ref.n_true,
            )
            for name, ref_name in (
                ("precision", "precision"),
                ("recall", "recall"),
                ("f1", "f1"),
                ("average_precision", "accuracy"),
            ):
                assert getattr(m, name) == pytest.approx(getattr(ref, ref_name))
            if m.threshold > 0.5:
                assert m.panoptic_quality == pytest.approx(ref.panoptic_quality, abs=1e-6)
            else:  # see match_overlaps' Notes
                assert m.panoptic_quality >= ref.panoptic_quality - 1e-6


def test_evaluate_paths_multichannel_image_needs_a_label_name(tmp_path):
    from dls_microscopy.io import write_ome_zarr

    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 2:8, 2:8] = 1
    store = write_ome_zarr(
        np.zeros((2, 4, 16, 16), np.uint8),
        tmp_path / "m.ome.zarr",
        axes="czyx",
        labels={"nuclei": gt},
        n_levels=1,
    )
    with pytest.raises(InputError, match="nuclei: name one"):
        evaluate_paths(store, store, gt_label="nuclei")
    assert evaluate_paths(store, store, pred_label="nuclei", gt_label="nuclei")[0.5].tp == 1
