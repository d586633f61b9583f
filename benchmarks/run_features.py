#!/usr/bin/env python
"""Feature-extraction benchmark of dls_microscopy against scikit-image, measured in the same run.

    .venv/bin/python benchmarks/run_features.py [--quick] [--sizes tiny|quick|full] [--out DIR]
                                                [--repeats N] [--tmp DIR]

Data: a seeded synthetic two-channel uint16 nuclei image (``make_synthetic_nuclei``) with its
ground-truth labels; ``full`` is 256 x 512 x 512 voxels with about 2,000 nuclei.

Sections (every number is reported with its ratio to the named baseline):

1. ``measure``: objects/s of ``measure_objects`` on in-memory arrays against
   ``skimage.measure.regionprops_table`` computing the same features: built-in properties
   (area, bbox, centroid, second-order central moments, inertia eigenvalues, axis lengths,
   intensity mean/std/min/max, weighted centroid) for "pass 1", and the same plus
   ``extra_properties`` for quartiles and 4 radial shells for "all features".  Best of N,
   methods interleaved round-robin (the machine is shared); agreement with regionprops is
   checked and reported.
2. ``run``: ``run_features`` end to end from an OME-Zarr 0.5 store (image + ``labels/``) to
   Parquet tables and manifest (single run, warm page cache).

Markdown goes to stdout and ``benchmarks/results/features-<date>.md``, progress to stderr, the
results as JSON to ``benchmarks/results/features-<date>.json`` (or ``--out DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SPACING = (1.0, 0.5, 0.5)
#: make_synthetic_nuclei parameters per size: shape (z, y, x), diameter µm, density.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"shape": (32, 96, 96), "diameter_um": 8.0, "density": 0.3},
    "quick": {"shape": (96, 256, 256), "diameter_um": 12.0, "density": 0.3},
    "full": {"shape": (256, 512, 512), "diameter_um": 16.0, "density": 0.28},
}
QUARTILES = (25.0, 50.0, 75.0)
SHELLS = 4
BUILTIN = [
    "label",
    "area",
    "bbox",
    "centroid",
    "moments_central",
    "inertia_tensor_eigvals",
    "axis_major_length",
    "axis_minor_length",
    "intensity_mean",
    "intensity_std",
    "intensity_min",
    "intensity_max",
    "centroid_weighted",
]
LIBRARIES = ("dls-microscopy", "numpy", "scipy", "scikit-image", "pyarrow", "dask", "zarr")


def log(message: str) -> None:
    print(f"[run_features {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- methods ---------------------------------------------------------------------------


def quartiles(regionmask: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """regionprops extra property: quartiles of the object's voxels (called per channel)."""
    return np.percentile(intensity[regionmask], QUARTILES, axis=0)


def radial_shells(spacing: tuple[float, ...]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """regionprops extra property: FracAtD of ``SHELLS`` ellipsoidal shells, as ours defines them."""
    sp = np.asarray(spacing)

    def shells(regionmask: np.ndarray, intensity: np.ndarray) -> np.ndarray:
        zyx = np.argwhere(regionmask) * sp
        d = zyx - zyx.mean(axis=0)
        cov = d.T @ d / len(d) + np.diag(sp**2 / 12)
        rho = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) / 5)
        shell = np.minimum((rho * SHELLS).astype(int), SHELLS - 1)
        values = intensity[regionmask].astype(np.float64)  # one channel per call
        out = np.bincount(shell, weights=values, minlength=SHELLS)
        return out / out.sum()

    return shells


def methods(image: np.ndarray, labels: np.ndarray) -> dict[str, Callable[[], Any]]:
    from skimage.measure import regionprops_table

    from dls_microscopy.features import measure_objects

    channels_last = np.moveaxis(image, 0, -1)
    extra = [quartiles, radial_shells(SPACING)]

    def ours(workers: int, full: bool) -> Callable[[], Any]:
        kw: dict[str, Any] = {"percentiles": QUARTILES, "radial_shells": SHELLS}
        if not full:
            kw = {"percentiles": (), "radial_shells": 0}
        return lambda: measure_objects(image, labels, spacing=SPACING, workers=workers, **kw)

    return {
        "regionprops_table, built-in properties": lambda: regionprops_table(
            labels, intensity_image=channels_last, spacing=SPACING, properties=BUILTIN
        ),
        "regionprops_table, + quartiles, radial shells": lambda: regionprops_table(
            labels,
            intensity_image=channels_last,
            spacing=SPACING,
            properties=BUILTIN,
            extra_properties=extra,
        ),
        "ours pass 1 (1 thread)": ours(1, False),
        "ours pass 1 (2 threads)": ours(2, False),
        "ours all features (1 thread)": ours(1, True),
        "ours all features (2 threads)": ours(2, True),
    }


def agreement(ours: Any, rp: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest relative difference of ours from regionprops, per feature group."""

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.asarray(a, float), np.asarray(b, float)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)) if b.size else 0.0

    out = {
        "ids_equal": float(np.array_equal(ours.ids, rp["label"])),
        "volume": rel(ours.volume, rp["area"]),
        "centroid": max(rel(ours.centroid[:, i], rp[f"centroid-{i}"]) for i in range(3)),
        "inertia_eigvals": max(
            rel(ours.inertia_eigvals[:, i], rp[f"inertia_tensor_eigvals-{i}"]) for i in range(3)
        ),
        "axis_major_length": rel(ours.axis_lengths[:, 0], rp["axis_major_length"]),
        "intensity_mean": max(rel(ours.intensity_mean[:, c], rp[f"intensity_mean-{c}"]) for c in range(2)),
        "intensity_std": max(rel(ours.intensity_std[:, c], rp[f"intensity_std-{c}"]) for c in range(2)),
        "quartiles": max(
            rel(ours.intensity_percentiles[:, c, j], rp[f"quartiles-{j}-{c}"])
            for c in range(2)
            for j in range(3)
        ),
        "radial_frac_at_d": max(
            rel(ours.radial_frac_at_d[:, c, j], rp[f"shells-{j}-{c}"])
            for c in range(2)
            for j in range(SHELLS)
        ),
    }
    return out


def bench_measure(image: np.ndarray, labels: np.ndarray, repeats: int) -> dict[str, Any]:
    n_objects = int(len(np.unique(labels)) - 1)
    table = methods(image, labels)
    log("measure: warm-up and agreement check")
    ours = table["ours all features (1 thread)"]()
    rp = table["regionprops_table, + quartiles, radial shells"]()
    agree = agreement(ours, rp)
    del ours, rp
    times: dict[str, list[float]] = {name: [] for name in table}
    for round_ in range(repeats):
        log(f"measure: round {round_ + 1}/{repeats}")
        for name, fn in table.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    results = {
        name: {"best_s": min(ts), "all_s": ts, "objects_per_s": n_objects / min(ts)}
        for name, ts in times.items()
    }
    return {
        "n_objects": n_objects,
        "shape": list(labels.shape),
        "voxels": int(labels.size),
        "foreground_fraction": float(np.count_nonzero(labels) / labels.size),
        "repeats": repeats,
        "agreement_max_rel_diff": agree,
        "methods": results,
    }


def bench_run(image: np.ndarray, labels: np.ndarray, tmp: Path) -> dict[str, Any]:
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.pipeline.features import run_features

    log("run: writing the OME-Zarr input")
    src = write_ome_zarr(
        image,
        tmp / "nuclei.ome.zarr",
        axes="czyx",
        spacing=SPACING,
        channel_names=("DAPI", "LaminB1"),
        labels={"nuclei": labels},
        n_levels=1,
    )
    log("run: run_features")
    t0 = time.perf_counter()
    res = run_features(src, "nuclei", tmp / "features", plate="P1", well="A01")
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "objects_per_s": res["n_objects"] / seconds,
        "n_objects": res["n_objects"],
        "timings_s": res["timings_s"],
        "objects_parquet_bytes": (tmp / "features" / "objects.parquet").stat().st_size,
    }


# -- report ------------------------------------------------------------------------------


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
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "affinity_cores": usable,
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


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    me = res["measure"]
    out = [
        f"# Feature benchmarks ({res['date']}, sizes={res['sizes']}, run {res['wall_s']:.0f} s)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['affinity_cores']} usable), "
        f"{m['ram_gib']:.1f} GiB RAM, Python {m['python']}; 1-min load average "
        f"{m['load_avg_start'][0]:.1f} at start, {m['load_avg_end'][0]:.1f} at the end (shared machine).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        f"## 1. measure_objects vs regionprops_table ({me['n_objects']} objects)",
        "",
        f"Synthetic uint16 nuclei, 2 channels, shape {tuple(me['shape'])} "
        f"({me['voxels'] / 1e6:.1f} M voxels, {100 * me['foreground_fraction']:.0f} % in objects), "
        f"spacing {SPACING} µm, in memory. Best of {me['repeats']}, methods interleaved. "
        "'pass 1' = morphology + intensity sums/min/max/std/weighted centroid (regionprops built-ins); "
        "'all features' adds quartiles and 4 radial shells (regionprops: `extra_properties`). "
        "Ratios: objects/s ÷ the regionprops row computing the same features.",
        "",
    ]
    rp_builtin = me["methods"]["regionprops_table, built-in properties"]["objects_per_s"]
    rp_all = me["methods"]["regionprops_table, + quartiles, radial shells"]["objects_per_s"]
    rows = []
    for name, r in me["methods"].items():
        base = rp_all if "all features" in name or "+ quartiles" in name else rp_builtin
        rows.append(
            [name, f"{r['best_s']:.3f}", f"{r['objects_per_s']:.0f}", f"{r['objects_per_s'] / base:.2f}"]
        )
    out += [table(["method", "best s", "objects/s", "÷ regionprops (same features)"], rows), ""]
    agree = me["agreement_max_rel_diff"]
    out += [
        "Agreement with regionprops (max relative difference): "
        + ", ".join(f"{k} {v:.1e}" for k, v in agree.items() if k != "ids_equal")
        + f"; same object ids: {bool(agree['ids_equal'])}.",
        "",
    ]
    if res.get("run"):
        r = res["run"]
        out += [
            "## 2. run_features end to end (OME-Zarr → Parquet + manifest)",
            "",
            table(
                ["objects", "s", "objects/s", "open s", "measure s", "write s", "objects.parquet KiB"],
                [
                    [
                        str(r["n_objects"]),
                        f"{r['seconds']:.2f}",
                        f"{r['objects_per_s']:.0f}",
                        f"{r['timings_s']['open']:.2f}",
                        f"{r['timings_s']['measure']:.2f}",
                        f"{r['timings_s']['write']:.2f}",
                        f"{r['objects_parquet_bytes'] / 1024:.0f}",
                    ]
                ],
            ),
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick sizes")
    parser.add_argument("--sizes", choices=sorted(SIZES), help="override the data size")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3, tiny 1)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for JSON")
    parser.add_argument("--tmp", type=Path, default=None, help="where temporary data goes")
    args = parser.parse_args(argv)
    sizes = args.sizes or ("quick" if args.quick else "full")
    repeats = args.repeats or (1 if sizes == "tiny" else 3)

    from dls_microscopy.sample_data.synthetic import make_synthetic_nuclei

    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "sizes": sizes,
        "machine": machine(),
    }
    params = SIZES[sizes]
    log(f"generating synthetic nuclei {params['shape']}")
    sample = make_synthetic_nuclei(
        params["shape"], spacing=SPACING, diameter_um=params["diameter_um"], density=params["density"], seed=0
    )
    res["data"] = {"generator": "make_synthetic_nuclei", "seed": 0, "spacing_um": list(SPACING), **params}
    res["measure"] = bench_measure(sample.image, sample.labels, repeats)
    tmp = Path(tempfile.mkdtemp(prefix="dls-bench-features-", dir=args.tmp))
    try:
        res["run"] = bench_run(sample.image, sample.labels, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["wall_s"] = time.perf_counter() - t0
    res["machine"]["load_avg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"features-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(res, indent=2))
    report = markdown(res)
    path.with_suffix(".md").write_text(report + "\n")
    print(report)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
