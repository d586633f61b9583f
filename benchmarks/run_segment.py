#!/usr/bin/env python
"""Segmentation benchmarks of dls_microscopy against a scikit-image baseline, in the same run.

    .venv/bin/python benchmarks/run_segment.py [--quick] [--sizes tiny|quick|full] [--out DIR]
                                               [--keep] [--tmp DIR]

Sections (every number is reported beside the named baseline, with ratios):

1. ``accuracy``: speed (Mvox/s) and object accuracy (F1 and AP at IoU 0.5, mean matched IoU,
   F1 at IoU 0.75) of ours, ``WatershedSegmenter`` on the CPU path, called in memory
   (``segment()``) and through ``segment_blockwise`` (OME-Zarr in, OME-Zarr out, default memory
   budget), against the **scikit-image baseline** (Gaussian + Otsu + distance-transform
   watershed, sizes derived from the same diameter), on the same volumes: synthetic nuclei
   (``make_synthetic_nuclei``, one near-isotropic and one anisotropic configuration), the
   packaged real crop ``load_nuclei_1135()`` and the IDR image 6001240 (DAPI channel, sparse
   labels: ``restrict_to_gt=True``; skipped when ``../shared/data`` is absent).  Real-data
   diameters are the median equivalent diameter of the labelled nuclei that do not touch the
   border.  ``segment_blockwise`` is also compared with the baseline doing the same job (the
   same OME-Zarr read and NGFF label write around it).  Methods run interleaved, best of N.
2. ``memory``: ``segment_blockwise`` of an on-disk OME-Zarr 4x larger than ``memory_budget``
   (full size; ``--memory-budget MIB`` picks another budget), in a fresh process: peak RSS
   growth over the RSS after imports (Linux ``VmHWM`` reset through
   ``/proc/self/clear_refs``), its ratio to the budget (target <= 1.5) and the peak of each
   pass (global statistics / segment / stitch / write).  When over the target, the run is
   repeated with ``MALLOC_ARENA_MAX=2`` (glibc arenas) and both are reported.
   ``--trace-memory`` adds the peak of live Python/numpy memory per pass (tracemalloc).
3. ``gpu``: the torch path on CUDA against the CPU path, only where ``torch.cuda`` is available.

The full run takes ~6-7 min on 2 shared cores, ``--quick`` ~40 s, ``--sizes tiny`` ~15 s.
Markdown goes to stdout, progress to stderr, the results as JSON to
``benchmarks/results/segment-<date>.json`` (or ``--out DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MiB = 2**20
SHARED_DATA = Path(os.environ.get("DLS_SHARED_DATA", REPO.parent / "shared" / "data"))
IDR_STORE = "omezarr_idr0062A_6001240/6001240_labels.zarr"
IDR_CHANNEL = "Dapi"
THRESHOLDS = (0.5, 0.75)
#: Target of the memory section: peak RSS growth <= this many times the budget.
RSS_TARGET = 1.5
LIBRARIES = (
    "dls-microscopy",
    "numpy",
    "scipy",
    "scikit-image",
    "edt",
    "fastremap",
    "dask",
    "zarr",
    "tensorstore",
    "torch",
)

#: Per size: synthetic configurations (shape, spacing µm, diameter µm), the IDR level, the
#: memory section (budget; on-disk uint16 volume at 1 µm isotropic voxels made of one
#: synthetic tile, mirrored; nuclei diameter µm; whether a run over the target is repeated
#: with MALLOC_ARENA_MAX=2) and the number of interleaved repeats (best of) for volumes under
#: 8 Mvox.  The full memory run segments 4x its budget (512 MiB, ~2.5 min here);
#: ``--memory-budget 256`` gives the 1 GiB run (~5 min, twice with the MALLOC_ARENA_MAX
#: rerun).  tiny and quick only smoke-test the section: 2x the budget, no rerun, smaller
#: nuclei so that the blocks of a small budget are not all halo; at budgets of 8-16 MiB the
#: fixed costs (thread arenas, the global-statistics sample) dominate the ratio.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "synthetic": [
            ("dense", (24, 96, 96), (1.0, 0.3, 0.3), 7.0),
            ("anisotropic", (16, 64, 64), (2.0, 0.4, 0.4), 10.0),
        ],
        "idr_level": 2,
        "memory": {
            "budget_mib": 8,
            "shape": (32, 512, 512),
            "tile": (32, 128, 128),
            "diameter": 3.0,
            "arena_rerun": False,
        },
        "repeats": 1,
    },
    "quick": {
        "synthetic": [
            ("dense", (48, 192, 192), (1.0, 0.3, 0.3), 7.0),
            ("anisotropic", (24, 128, 128), (2.0, 0.4, 0.4), 10.0),
        ],
        "idr_level": 1,
        "memory": {
            "budget_mib": 16,
            "shape": (64, 512, 512),
            "tile": (64, 256, 256),
            "diameter": 4.0,
            "arena_rerun": False,
        },
        "repeats": 2,
    },
    "full": {
        "synthetic": [
            ("dense", (128, 512, 512), (1.0, 0.3, 0.3), 7.0),
            ("anisotropic", (64, 384, 384), (2.0, 0.4, 0.4), 10.0),
        ],
        "idr_level": 0,
        "memory": {
            "budget_mib": 128,
            "shape": (256, 1024, 1024),
            "tile": (64, 256, 256),
            "diameter": 6.0,
            "arena_rerun": True,
        },
        "repeats": 3,
    },
}
#: The memory section's voxels: isotropic 1 µm (6 µm nuclei: a halo of 11 voxels).
MEMORY_SPACING = (1.0, 1.0, 1.0)


def log(message: str) -> None:
    print(f"[run_segment {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the baseline ------------------------------------------------------------------------------


def skimage_baseline(image: np.ndarray, *, spacing: Sequence[float], diameter_um: float) -> np.ndarray:
    """Classical nuclei segmentation with scikit-image/scipy, every size from ``diameter_um``.

    Gaussian of σ = d/8 µm, Otsu threshold of the smoothed image, Euclidean distance to the
    background in µm (``sampling=spacing``), seeds = maxima of the distance at least a radius
    (d/2 µm, per axis in voxels) apart within each connected component, watershed of the
    negated distance restricted to the mask.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
    spacing : sequence of 3 float
        Voxel size (z, y, x) in µm.
    diameter_um : float
        Expected nucleus diameter in µm.

    Returns
    -------
    (Z, Y, X) ndarray of int32
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    sp = np.asarray(spacing, dtype=float)
    smooth = gaussian(image.astype(np.float32), sigma=diameter_um / 8 / sp, preserve_range=True)
    mask = smooth > threshold_otsu(smooth)
    dist = ndi.distance_transform_edt(mask, sampling=sp)
    radius = np.maximum(1, np.round(diameter_um / 2 / sp)).astype(int)  # min distance, voxels
    components, _ = ndi.label(mask)
    peaks = peak_local_max(
        dist,
        min_distance=int(radius.min()),
        footprint=np.ones(tuple(2 * radius + 1), bool),
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    return watershed(-dist, markers, mask=mask)


# -- data --------------------------------------------------------------------------------------


def median_diameter(labels: np.ndarray, spacing: Sequence[float]) -> float:
    """Median equivalent diameter (µm) of the labelled objects that do not touch the border."""
    labels = np.asarray(labels).astype(np.int64, copy=False)
    faces = [np.take(labels, [0, -1], axis=ax).ravel() for ax in range(labels.ndim)]
    border = np.unique(np.concatenate(faces))
    counts = np.bincount(labels.ravel())
    ids = np.flatnonzero(counts)
    inner = counts[ids[(ids > 0) & ~np.isin(ids, border)]]
    if inner.size == 0:
        raise ValueError("no labelled object away from the border")
    return float(np.median(np.cbrt(6 / math.pi * inner * float(np.prod(spacing)))))


class Case:
    """One benchmark volume: image, ground truth, spacing, diameter and an OME-Zarr to read."""

    def __init__(
        self,
        name: str,
        image: np.ndarray,
        gt: np.ndarray,
        spacing: Sequence[float],
        diameter: float,
        store: Path,
        channel: int | str,
        *,
        level: int = 0,
        restrict_to_gt: bool = False,
        note: str = "",
    ) -> None:
        self.name, self.image, self.gt = name, image, gt
        self.spacing = tuple(float(s) for s in spacing)
        self.diameter, self.store, self.channel, self.level = diameter, store, channel, level
        self.restrict_to_gt, self.note = restrict_to_gt, note

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.image.shape),
            "dtype": str(self.image.dtype),
            "spacing_um": list(self.spacing),
            "diameter_um": self.diameter,
            "n_true": int(len(np.unique(self.gt)) - 1),
            "restrict_to_gt": self.restrict_to_gt,
            "level": self.level,
            "note": self.note,
        }


def synthetic_case(
    tmp: Path, name: str, shape: tuple[int, int, int], spacing: tuple[float, float, float], diameter: float
) -> Case:
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei(shape, spacing=spacing, diameter_um=diameter, seed=0)
    store = write_ome_zarr(
        s.image,
        tmp / f"synthetic-{name}.ome.zarr",
        axes="czyx",
        spacing=s.spacing,
        channel_names=s.channel_names,
    )
    note = f"make_synthetic_nuclei(seed=0), {s.n_nuclei} nuclei, channel {s.channel_names[0]}"
    return Case(
        f"synthetic {name} {shape} @ {spacing} µm, d={diameter:g} µm",
        s.image[0],
        s.labels,
        s.spacing,
        diameter,
        store,
        s.channel_names[0],
        note=note,
    )


def real_crop_case(tmp: Path) -> Case:
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import load_nuclei_1135

    s = load_nuclei_1135()
    store = write_ome_zarr(
        s.image, tmp / "nuclei-1135.ome.zarr", axes="czyx", spacing=s.spacing, channel_names=s.channel_names
    )
    d = median_diameter(s.labels, s.spacing)
    return Case(
        f"real crop load_nuclei_1135() {s.labels.shape}",
        s.image[0],
        s.labels,
        s.spacing,
        d,
        store,
        0,
        note="54 gold nuclei, exhaustive labels",
    )


def idr_case(level: int) -> Case | None:
    from dls_microscopy.io import open_labels, open_volume

    store = SHARED_DATA / IDR_STORE
    if not store.is_dir():
        return None
    vol = open_volume(store).at_level(level).select(c=IDR_CHANNEL)
    gt = open_labels(store, level=level).load()
    d = median_diameter(gt, vol.spacing)
    return Case(
        f"IDR 6001240 {IDR_CHANNEL} level {level} {vol.spatial_shape}",
        vol.load(),
        gt,
        vol.spacing,
        d,
        store,
        IDR_CHANNEL,
        level=level,
        restrict_to_gt=True,
        note="sparse labels: predictions overlapping no label are ignored",
    )


# -- measurement helpers -------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def scores(pred: np.ndarray, case: Case) -> dict[str, Any]:
    from dls_microscopy.segment.metrics import match_objects

    r = match_objects(pred, case.gt, thresholds=THRESHOLDS, restrict_to_gt=case.restrict_to_gt)
    m5, m75 = r[0.5], r[0.75]
    return {
        "n_pred": m5.n_pred,
        "n_true": m5.n_true,
        "n_pred_ignored": r.n_pred_ignored,
        "tp": m5.tp,
        "fp": m5.fp,
        "fn": m5.fn,
        "precision": m5.precision,
        "recall": m5.recall,
        "f1_05": m5.f1,
        "ap_05": m5.average_precision,
        "mean_iou_05": m5.mean_matched_iou,
        "f1_075": m75.f1,
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def rss_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux; needs /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def run_child(kind: str, params: dict[str, Any], *, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``kind`` in a fresh interpreter (clean RSS); return its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(params)]
    res = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, **(environ or {})}
    )
    if res.returncode != 0:
        raise RuntimeError(f"child {kind} {params} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- section 1: speed and accuracy -------------------------------------------------------------


METHODS = ("ours segment()", "ours segment_blockwise", "skimage baseline", "skimage baseline + I/O")
#: The baseline each of ours is compared with: in memory against in memory, and
#: ``segment_blockwise`` (OME-Zarr in, NGFF labels out) also against the baseline doing
#: the same job (the same read and the same label writer around it).
BASELINE = "skimage baseline"
BASELINE_IO = "skimage baseline + I/O"


def bench_case(case: Case, tmp: Path, repeats: int) -> dict[str, Any]:
    """Time the three methods interleaved (best of ``repeats``) and score their labels."""
    from dls_microscopy.io import open_volume
    from dls_microscopy.segment import segment_blockwise
    from dls_microscopy.segment.watershed import WatershedSegmenter

    seg = WatershedSegmenter(diameter_um=case.diameter, device="cpu", backend="cpu")
    blockwise_info: dict[str, Any] = {}

    def ours() -> tuple[float, np.ndarray]:
        return timed(lambda: seg.segment(case.image, spacing=case.spacing))

    def blockwise() -> tuple[float, np.ndarray]:
        out = tmp / "blockwise-labels.ome.zarr"
        shutil.rmtree(out, ignore_errors=True)
        vol = open_volume(case.store).at_level(case.level)
        seconds, res = timed(lambda: segment_blockwise(vol, seg, channel=case.channel, output=out))
        blockwise_info.update(
            blocks=res.plan.n_blocks,
            block_shape=list(res.plan.block_shape),
            halo=list(res.plan.halo),
            timings=res.timings,
            n_objects=res.n_objects,
            merged_pairs=res.seam_qc.get("merged_pairs"),
        )
        return seconds, res.labels.load()  # reading the labels back is not timed

    def baseline() -> tuple[float, np.ndarray]:
        return timed(lambda: skimage_baseline(case.image, spacing=case.spacing, diameter_um=case.diameter))

    def baseline_io() -> tuple[float, np.ndarray]:
        from dls_microscopy.io.zarr_write import write_label_image
        from dls_microscopy.segment.blockwise import select_image

        out = tmp / "baseline-labels.ome.zarr"
        shutil.rmtree(out, ignore_errors=True)
        vol = open_volume(case.store).at_level(case.level)  # opened untimed, as for blockwise

        def job() -> np.ndarray:
            image = select_image(vol, channel=case.channel)
            pixels = np.asarray(image.data.compute(scheduler="synchronous"))
            labels = skimage_baseline(pixels, spacing=image.spacing, diameter_um=case.diameter)
            write_label_image(labels, out, spacing=image.spacing)
            return labels

        return timed(job)

    runs = dict(zip(METHODS, (ours, blockwise, baseline, baseline_io), strict=True))
    reps = repeats if case.image.size < 8e6 else 1
    if case.image.size < 2e6:  # runs of ~0.1 s: scheduler noise is large, take more rounds
        reps = max(reps, 15)
    times: dict[str, list[float]] = {name: [] for name in runs}
    labels: dict[str, np.ndarray] = {}
    for rep in range(reps):
        for name, fn in runs.items():
            labels.pop(name, None)
            gc.collect()
            seconds, labels[name] = fn()
            times[name].append(seconds)
        log(
            f"  {case.name}: round {rep + 1}/{reps}: "
            + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items())
        )
    n_vox = int(case.image.size)
    result: dict[str, Any] = {**case.describe(), "n_voxels": n_vox, "repeats": reps, "methods": {}}
    base_s = min(times[BASELINE])
    for name in runs:
        best = min(times[name])
        entry = {
            "best_s": best,
            "all_s": times[name],
            "mvox_per_s": n_vox / best / 1e6,
            "speedup_vs_baseline": ratio(base_s, best),
            **scores(labels[name], case),
        }
        if name == "ours segment_blockwise":
            entry["blockwise"] = dict(blockwise_info)
            entry["speedup_vs_baseline_io"] = ratio(min(times[BASELINE_IO]), best)
        result["methods"][name] = entry
    base = result["methods"][BASELINE]
    for entry in result["methods"].values():
        entry["f1_05_minus_baseline"] = entry["f1_05"] - base["f1_05"]
        entry["ap_05_minus_baseline"] = entry["ap_05"] - base["ap_05"]
        entry["mean_iou_05_minus_baseline"] = entry["mean_iou_05"] - base["mean_iou_05"]
    return result


def warm_up(tmp: Path) -> None:
    """Imports and first calls of every method, on a small volume, before anything is timed."""
    case = synthetic_case(tmp, "warmup", (16, 64, 64), (1.0, 0.3, 0.3), 7.0)
    bench_case(case, tmp, repeats=1)


def bench_accuracy(tmp: Path, size: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"cases": [], "skipped": []}
    builders: list[tuple[str, Callable[[], Case | None]]] = [
        (name, lambda n=name, sh=shape, sp=sp, d=d: synthetic_case(tmp, n, sh, sp, d))
        for name, shape, sp, d in size["synthetic"]
    ]
    builders.append(("real crop", lambda: real_crop_case(tmp)))
    builders.append(("IDR 6001240", lambda: idr_case(size["idr_level"])))
    for label, build in builders:
        log(f"accuracy: preparing {label}")
        case = build()
        if case is None:
            note = f"{label}: skipped, {SHARED_DATA / IDR_STORE} not found"
            log(note)
            results["skipped"].append(note)
            continue
        log(f"accuracy: {case.name}, diameter {case.diameter:.2f} µm")
        results["cases"].append(bench_case(case, tmp, size["repeats"]))
        del case
        gc.collect()
    return results


# -- section 2: memory bounded by the budget --------------------------------------------------


def write_big_store(
    path: Path, shape: tuple[int, int, int], tile: tuple[int, int, int], *, diameter: float
) -> Path:
    """An OME-Zarr of ``shape`` uint16 made of one synthetic tile, mirrored at every tile face.

    Mirroring keeps the image continuous across tiles (nuclei cut by a tile face continue
    as their mirror image), and the volume is written block by block: only a tile and the
    writer's blocks are ever in memory.
    """
    import dask.array as da

    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    base = make_synthetic_nuclei(tile, spacing=MEMORY_SPACING, diameter_um=diameter, seed=1).image[0]

    def block(_: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        info = block_info[None]  # type: ignore[index]
        out = base
        for ax, i in enumerate(info["chunk-location"]):
            if i % 2:
                out = np.flip(out, axis=ax)
        return np.ascontiguousarray(out[tuple(slice(0, n) for n in info["chunk-shape"])])

    lazy = da.empty(shape, dtype=np.uint16, chunks=tile).map_blocks(block, dtype=np.uint16)
    return write_ome_zarr(lazy, path, spacing=MEMORY_SPACING, n_levels=1, memory_budget=256 * MiB)


def child_memory(params: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: time, blocks and peak RSS growth of one ``segment_blockwise``.

    The peak of each pass is read by resetting ``VmHWM`` when the pass starts (the engine's
    global-statistics call, ``_stitch`` and ``_relabelled`` are wrapped to mark the pass
    boundaries; the wrappers only record, they change nothing).
    """
    import dask.array  # noqa: F401 - imported by the engine
    import edt  # noqa: F401 - imported by the segmenter on first use
    import fastremap  # noqa: F401
    import ome_zarr_models.v05.image  # noqa: F401 - imported by the writer on validation
    import tensorstore  # noqa: F401 - imported by the reader on first read

    import dls_microscopy.segment.blockwise as blockwise
    from dls_microscopy.io import open_volume
    from dls_microscopy.segment.watershed import WatershedSegmenter

    seg = WatershedSegmenter(diameter_um=params["diameter"], device="cpu", backend="cpu")
    _ = seg.device  # imports torch to resolve the device: an import, not the run's memory
    # numba and LLVM (~70 MiB of RSS, mostly shared library code) and the compiled kernels,
    # which load from numba's cache on first call: a small segment() first, as an import
    from dls_microscopy.sample_data import make_synthetic_nuclei

    small = make_synthetic_nuclei(shape=(16, 64, 64), spacing=MEMORY_SPACING, seed=0)
    seg.segment(small.image[0], spacing=small.spacing)
    del small
    vol = open_volume(params["store"])
    passes: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    def mark(name: str | None) -> None:
        now = time.perf_counter()
        if current:
            traced = tracemalloc.get_traced_memory() if trace else (0, 0)
            passes.append(
                {
                    "pass": current["name"],
                    "seconds": now - current["t"],
                    "peak_growth_bytes": rss_status("VmHWM") - base,
                    "rss_growth_at_end_bytes": rss_status("VmRSS") - base,
                    "traced_peak_bytes": traced[1] - traced_base if trace else None,
                }
            )
        current.clear()
        if name is not None:
            if trace:
                tracemalloc.reset_peak()
            reset_peak_rss()
            current.update(name=name, t=time.perf_counter())

    def wrap(owner: Any, attr: str, name: str, then: str | None = None) -> None:
        fn = getattr(owner, attr)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            mark(name)
            out = fn(*args, **kwargs)
            if then is not None:
                mark(then)
            return out

        setattr(owner, attr, wrapped)

    per_pass = all(hasattr(blockwise, a) for a in ("_stitch", "_relabelled"))
    if per_pass:
        wrap(seg, "global_stats", "global statistics", then="segment blocks")
        wrap(blockwise, "_stitch", "stitch")
        wrap(blockwise, "_relabelled", "relabel + write")
    trace = bool(params.get("trace"))
    traced_base = 0
    if trace:  # numpy reports its buffers to tracemalloc: arrays alive, not allocator pages
        tracemalloc.start(1)
        traced_base = tracemalloc.get_traced_memory()[0]
    gc.collect()
    reset_peak_rss()
    base = rss_status("VmRSS")
    mark("setup")
    t0 = time.perf_counter()
    res = blockwise.segment_blockwise(vol, seg, memory_budget=params["budget"], output=params["output"])
    seconds = time.perf_counter() - t0
    mark(None)
    peak = max(p["peak_growth_bytes"] for p in passes)
    return {
        "seconds": seconds,
        "blocks": res.plan.n_blocks,
        "block_shape": list(res.plan.block_shape),
        "halo": list(res.plan.halo),
        "n_objects": res.n_objects,
        "timings": res.timings,
        "rss_after_imports_bytes": base,
        "peak_rss_growth_bytes": peak,
        "rss_growth_at_end_bytes": passes[-1]["rss_growth_at_end_bytes"],
        "passes": passes if per_pass else [],
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
    }


def bench_memory(tmp: Path, cfg: dict[str, Any], *, trace: bool = False) -> dict[str, Any]:
    shape, tile = tuple(cfg["shape"]), tuple(cfg["tile"])
    budget = cfg["budget_mib"] * MiB
    nbytes = math.prod(shape) * 2
    log(f"memory: writing {shape} uint16 ({nbytes / MiB:.0f} MiB) from mirrored {tile} tiles")
    t_write, store = timed(
        lambda: write_big_store(tmp / "big.ome.zarr", shape, tile, diameter=cfg["diameter"])
    )
    results: dict[str, Any] = {
        "shape": list(shape),
        "nbytes": nbytes,
        "memory_budget": budget,
        "volume_over_budget": nbytes / budget,
        "tile": list(tile),
        "spacing_um": list(MEMORY_SPACING),
        "diameter_um": cfg["diameter"],
        "input_write_s": t_write,
        "target_rss_over_budget": RSS_TARGET,
        "traced": trace,
        "arena_rerun": cfg.get("arena_rerun", True),
        "runs": {},
    }
    variants: list[tuple[str, dict[str, str]]] = [("default glibc malloc", {})]
    for name, environ in variants:
        log(f"memory: segment_blockwise, {name}")
        out = tmp / "big-labels.ome.zarr"
        run = run_child(
            "memory",
            {
                "store": str(store),
                "budget": budget,
                "output": str(out),
                "diameter": cfg["diameter"],
                "trace": trace,
            },
            environ=environ,
        )
        shutil.rmtree(out, ignore_errors=True)
        run["rss_over_budget"] = run["peak_rss_growth_bytes"] / budget
        run["mvox_per_s"] = math.prod(shape) / run["seconds"] / 1e6
        results["runs"][name] = run
        log(
            f"memory: {name}: {run['seconds']:.1f} s, peak growth "
            f"{run['peak_rss_growth_bytes'] / MiB:.0f} MiB = {run['rss_over_budget']:.2f} x budget"
        )
        if (
            name == "default glibc malloc"
            and run["rss_over_budget"] > RSS_TARGET
            and cfg.get("arena_rerun", True)
        ):
            variants.append(("MALLOC_ARENA_MAX=2", {"MALLOC_ARENA_MAX": "2"}))
    results["write_region"] = write_region(shape, budget)
    return results


def memory_config(budget_mib: int, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``budget_mib`` and a volume of 4x that, 256 x 1024 x N voxels of uint16."""
    voxels = 4 * budget_mib * MiB // 2
    z, y = 256, 1024
    x = max(64, -(-voxels // (z * y * 64)) * 64)
    return {**base, "budget_mib": budget_mib, "shape": (z, y, x), "arena_rerun": True}


def write_region(shape: Sequence[int], budget: int) -> dict[str, Any] | None:
    """The write pass's region per worker, as the label writer plans it (for the notes)."""
    try:
        from dls_microscopy.io.zarr_write import WriteOptions, block_shape_for
    except ImportError:
        return None
    workers = max(1, min(8, os.cpu_count() or 1))
    _, shards = WriteOptions().array_layout("zyx", list(shape))
    grid = shards or (64, 64, 64)
    workers = max(1, min(workers, budget // (4 * math.prod(grid) * 4)))
    per_block = max(budget // (workers * 8), math.prod(grid) * 4)
    block = block_shape_for(list(shape), grid, 4, per_block)
    return {
        "workers": workers,
        "shard": list(grid),
        "region": list(block),
        "region_uint32_bytes": math.prod(block) * 4,
    }


# -- section 3: GPU against CPU -----------------------------------------------------------------


def bench_gpu(size: dict[str, Any]) -> dict[str, Any]:
    """The torch path on CUDA against the CPU path, where a CUDA device exists."""
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"skipped": "no GPU"}
    return compare_devices(size, device="cuda", device_name=torch.cuda.get_device_name())


def compare_devices(size: dict[str, Any], *, device: str, device_name: str) -> dict[str, Any]:
    """Best-of-3 time and agreement of the torch path on ``device`` and the CPU path."""
    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.segment.metrics import match_objects
    from dls_microscopy.segment.watershed import WatershedSegmenter

    name, shape, spacing, d = size["synthetic"][0]
    s = make_synthetic_nuclei(shape, spacing=spacing, diameter_um=d, seed=0)
    image = s.image[0]
    cpu = WatershedSegmenter(diameter_um=d, device="cpu", backend="cpu")
    torch_path = WatershedSegmenter(diameter_um=d, device=device, backend="torch")
    stats = cpu.global_stats(image, spacing=s.spacing)
    cpu_key, torch_key = "CPU path (numpy/scipy/edt)", f"torch path on {device_name}"
    labels: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    for key, seg in ((cpu_key, cpu), (torch_key, torch_path)):
        seg.segment(image[:16, :64, :64], spacing=s.spacing, stats=stats)  # warm-up
        runs = [timed(lambda sg=seg: sg.segment(image, spacing=s.spacing, stats=stats)) for _ in range(3)]
        times[key] = min(t for t, _ in runs)
        labels[key] = runs[-1][1]
    agree = match_objects(labels[torch_key], labels[cpu_key], thresholds=(0.5,))[0.5]
    result: dict[str, Any] = {
        "volume": f"synthetic {name} {shape}",
        "device": device_name,
        "f1_05_gpu_vs_cpu_labels": agree.f1,
        "methods": {},
    }
    for key in (cpu_key, torch_key):
        truth = match_objects(labels[key], s.labels, thresholds=(0.5,))[0.5]
        result["methods"][key] = {
            "best_s": times[key],
            "mvox_per_s": image.size / times[key] / 1e6,
            "speedup_vs_cpu": ratio(times[cpu_key], times[key]),
            "f1_05_vs_truth": truth.f1,
        }
    return result


# -- report ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "load_avg_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [
        f"# Segmentation benchmarks ({res['date']}, sizes={res['sizes']}, run {res['wall_s']:.0f} s)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores "
        f"({m['affinity_cores']} usable), {m['ram_gib']:.1f} GiB RAM, Python {m['python']}; "
        f"1-min load average {m['load_avg_start'][0]:.1f} at start, "
        f"{m['load_avg_end'][0]:.1f} at the end (the machine is shared).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
    ]

    acc = res["accuracy"]
    out += [
        "## 1. Speed and accuracy: ours vs the scikit-image baseline",
        "",
        "Ours: `WatershedSegmenter` (CPU path) called in memory (`segment()`, global "
        "statistics included) and through `segment_blockwise` (OME-Zarr in a temp dir → "
        "standalone OME-Zarr labels, default 2 GiB budget, threads = CPU count; time of the "
        "call, reading the result back excluded). Baseline: `skimage.filters.gaussian` "
        "(σ = d/8) + `threshold_otsu` + `distance_transform_edt(sampling=spacing)` + "
        "`peak_local_max` (footprint and min_distance = d/2 per axis, per connected "
        "component) + `watershed(-dist, markers, mask)`, single thread; "
        "`skimage baseline + I/O` does what `segment_blockwise` does around it (reads the "
        "same OME-Zarr, writes its labels with the same `write_label_image`), so that the "
        "blockwise call is also compared with the same job. Same volume, "
        "same diameter d; methods interleaved, best of N (N = 1 above 8 Mvox). "
        "Speed ÷ baseline > 1: ours faster. F1/AP/mIoU at IoU 0.5 (AP = tp/(tp+fp+fn), "
        "mIoU = mean IoU of matched pairs); Δ = ours − baseline.",
        "",
    ]
    summary = []
    for case in acc["cases"]:
        meth = case["methods"]
        bw = meth["ours segment_blockwise"].get("blockwise", {})
        out += [
            f"**{case['name']}** — {case['n_voxels'] / 1e6:.1f} Mvox, "
            f"{case['n_true']} labelled nuclei, d = {case['diameter_um']:.2f} µm"
            + (
                " (median equivalent diameter of the labels not touching the border)"
                if not case["name"].startswith("synthetic")
                else ""
            )
            + f"; blockwise: {bw.get('blocks')} block(s) of {bw.get('block_shape')}, "
            f"halo {bw.get('halo')}. {case['note']}.",
            "",
        ]
        rows = []
        for name, r in meth.items():
            rows.append(
                [
                    name,
                    f"{r['best_s']:.2f}",
                    f"{r['mvox_per_s']:.2f}",
                    f"{r['speedup_vs_baseline']:.2f}",
                    f"{r['n_pred']}/{r['n_true']}",
                    f"{r['precision']:.3f}",
                    f"{r['recall']:.3f}",
                    f"{r['f1_05']:.3f}",
                    f"{r['ap_05']:.3f}",
                    f"{r['mean_iou_05']:.3f}",
                    f"{r['f1_075']:.3f}",
                    _signed(r["f1_05_minus_baseline"]),
                ]
            )
        out += [
            table(
                [
                    "method",
                    "s",
                    "Mvox/s",
                    "speed ÷ baseline",
                    "pred/true",
                    "P@0.5",
                    "R@0.5",
                    "F1@0.5",
                    "AP@0.5",
                    "mIoU@0.5",
                    "F1@0.75",
                    "ΔF1@0.5",
                ],
                rows,
            )
        ]
        if case["restrict_to_gt"]:
            ignored = ", ".join(f"{n}: {r['n_pred_ignored']}" for n, r in meth.items())
            out += ["", f"Predictions overlapping no labelled nucleus, ignored: {ignored}."]
        out += [""]
        o, b, base = meth["ours segment()"], meth["ours segment_blockwise"], meth[BASELINE]
        summary.append(
            [
                case["name"],
                f"{o['speedup_vs_baseline']:.2f}",
                f"{b['speedup_vs_baseline']:.2f}",
                f"{b['speedup_vs_baseline_io']:.2f}",
                _signed(o["f1_05_minus_baseline"]),
                _signed(b["f1_05_minus_baseline"]),
                _signed(o["ap_05_minus_baseline"]),
                _signed(o["mean_iou_05_minus_baseline"]),
                _signed(o["f1_075"] - base["f1_075"]),
            ]
        )
    for note in acc["skipped"]:
        out += [f"*{note}*", ""]
    out += [
        "**Summary** (ratios ours ÷ baseline for speed; differences ours − baseline for accuracy)",
        "",
        table(
            [
                "volume",
                "speed segment()",
                "speed blockwise",
                "speed blockwise ÷ baseline + I/O",
                "ΔF1@0.5 segment()",
                "ΔF1@0.5 blockwise",
                "ΔAP@0.5",
                "ΔmIoU@0.5",
                "ΔF1@0.75",
            ],
            summary,
        ),
        "",
    ]

    mem = res["memory"]
    if mem is None:
        out += ["## 2. Peak memory", "", "Section not run (`--sections`).", ""]
    else:
        out += [
            f"## 2. Peak memory: {mem['nbytes'] / MiB:.0f} MiB volume, memory_budget "
            f"{mem['memory_budget'] / MiB:.0f} MiB ({mem['volume_over_budget']:.0f}x)",
            "",
            f"`segment_blockwise` of an on-disk OME-Zarr {tuple(mem['shape'])} uint16 (synthetic "
            f"{tuple(mem['tile'])} tile of {mem['diameter_um']:g} µm nuclei at "
            f"{tuple(mem['spacing_um'])} µm, mirrored across tile faces; written block-wise in "
            f"{mem['input_write_s']:.0f} s) into a standalone OME-Zarr label image, in a fresh "
            "process. Peak RSS growth = Linux `VmHWM` (reset through `/proc/self/clear_refs`) "
            "− RSS after imports (torch, numba and the compiled kernels included). Target: ≤ "
            f"{mem['target_rss_over_budget']:g}x the budget."
            + (
                ""
                if mem.get("arena_rerun", True)
                else " *Smoke size*: at so small a budget fixed costs dominate the ratio, and the "
                "MALLOC_ARENA_MAX=2 rerun is left out; see the full run."
            ),
            "",
        ]
        rows = []
        for name, r in mem["runs"].items():
            rows.append(
                [
                    name,
                    f"{r['blocks']}",
                    str(tuple(r["block_shape"])),
                    str(tuple(r["halo"])),
                    f"{r['seconds']:.1f}",
                    f"{r['mvox_per_s']:.2f}",
                    f"{r['peak_rss_growth_bytes'] / MiB:.0f}",
                    f"{r['rss_over_budget']:.2f}",
                    f"{r['rss_growth_at_end_bytes'] / MiB:.0f}",
                    "yes" if r["rss_over_budget"] <= mem["target_rss_over_budget"] else "**no**",
                ]
            )
        out += [
            table(
                [
                    "malloc",
                    "blocks",
                    "block core",
                    "halo",
                    "s",
                    "Mvox/s",
                    "peak RSS growth MiB",
                    "÷ budget",
                    "RSS growth at end MiB",
                    "≤ target",
                ],
                rows,
            ),
            "",
        ]
        pass_rows = []
        traced = mem.get("traced", False)
        for name, r in mem["runs"].items():
            for p in r["passes"]:
                if p["pass"] == "setup":
                    continue
                row = [
                    name,
                    p["pass"],
                    f"{p['seconds']:.1f}",
                    f"{p['peak_growth_bytes'] / MiB:.0f}",
                    f"{p['peak_growth_bytes'] / mem['memory_budget']:.2f}",
                    f"{p['rss_growth_at_end_bytes'] / MiB:.0f}",
                ]
                if traced:
                    row.append(f"{(p['traced_peak_bytes'] or 0) / MiB:.0f}")
                pass_rows.append(row)
        if pass_rows:
            out += [
                "Per pass (peak RSS growth over the post-import RSS while the pass runs; "
                "`VmHWM` reset at each pass start"
                + ("; traced = peak of live Python/numpy memory, tracemalloc" if traced else "")
                + "):",
                "",
                table(
                    ["malloc", "pass", "s", "peak growth MiB", "÷ budget", "RSS growth at pass end MiB"]
                    + (["traced peak MiB"] if traced else []),
                    pass_rows,
                ),
                "",
            ]
        wr = mem.get("write_region")
        if wr:
            out += [
                f"The write pass computes regions of {tuple(wr['region'])} voxels "
                f"({wr['region_uint32_bytes'] / MiB:.0f} MiB of uint32) per worker "
                f"({wr['workers']} workers; label shards {tuple(wr['shard'])}).",
                "",
            ]

    gpu = res["gpu"]
    out += ["## 3. GPU vs CPU (torch path)", ""]
    if "skipped" in gpu:
        out += [f"{gpu['skipped']}: skipped.", ""]
    else:
        rows = [
            [
                name,
                f"{r['best_s']:.3f}",
                f"{r['mvox_per_s']:.1f}",
                f"{r['speedup_vs_cpu']:.2f}",
                f"{r['f1_05_vs_truth']:.3f}",
            ]
            for name, r in gpu["methods"].items()
        ]
        out += [
            f"{gpu['volume']}, same global statistics, best of 3 after a warm-up; "
            f"F1@0.5 of the GPU labels against the CPU labels: "
            f"{gpu['f1_05_gpu_vs_cpu_labels']:.3f}.",
            "",
            table(["path", "s", "Mvox/s", "speed ÷ CPU", "F1@0.5 vs truth"], rows),
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick sizes (< 60 s)")
    parser.add_argument("--sizes", choices=sorted(SIZES), help="override the data sizes")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    parser.add_argument("--tmp", type=Path, default=None, help="where temporary data goes")
    parser.add_argument(
        "--memory-budget",
        type=int,
        metavar="MIB",
        help="memory section: this budget (MiB) and a volume 4x larger",
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="memory section: also record the peak of live Python/numpy "
        "memory per pass (tracemalloc; ~4x slower, times not comparable)",
    )
    parser.add_argument(
        "--sections",
        default="accuracy,memory,gpu",
        help="comma-separated sections to run (accuracy, memory, gpu); default all",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, params = args.child
        result = {"memory": child_memory}[kind](json.loads(params))
        print(json.dumps(result))
        return 0

    sizes = args.sizes or ("quick" if args.quick else "full")
    size = dict(SIZES[sizes])
    if args.memory_budget:
        size["memory"] = memory_config(args.memory_budget, size["memory"])
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dls-bench-segment-", dir=args.tmp))
    try:
        res: dict[str, Any] = {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "sizes": sizes,
            "machine": machine(),
        }
        sections = {s.strip() for s in args.sections.split(",") if s.strip()}
        unknown = sections - {"accuracy", "memory", "gpu"}
        if unknown:
            parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
        res["accuracy"] = {"cases": [], "skipped": ["section not run"]}
        res["memory"] = None
        res["gpu"] = {"skipped": "section not run"}
        if "accuracy" in sections:
            log("warm-up")
            warm_up(tmp)
            res["accuracy"] = bench_accuracy(tmp, size)
        if "memory" in sections:
            res["memory"] = bench_memory(tmp, size["memory"], trace=args.trace_memory)
        if "gpu" in sections:
            res["gpu"] = bench_gpu(size)
        if "skipped" in res["gpu"]:
            print(f"{res['gpu']['skipped']}: skipped", file=sys.stderr)
    finally:
        if args.keep:
            log(f"kept the data in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["wall_s"] = time.perf_counter() - t0
    res["machine"]["load_avg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"segment-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(res, indent=2, default=_json_default))
    print(markdown(res))
    print(f"\nJSON: {path}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
    sys.exit(main())
