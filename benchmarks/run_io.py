#!/usr/bin/env python
"""IO benchmarks of dls_microscopy against named baselines, measured in the same run.

    .venv/bin/python benchmarks/run_io.py [--quick] [--sizes tiny|quick|full] [--out DIR]
                                          [--keep] [--tmp DIR]

Sections (every number is reported with its ratio to the named baseline):

1. ``open``: opening a metadata-only, virtual 1 TB NGFF 0.5 store (3 levels, sharded and
   unsharded) with ``open_volume``; baselines zarr-python (group + arrays) and tensorstore.
   Wall time (median), RSS growth on open (psutil, own subprocess per method) and the time
   (best of N) to read a 32 MiB region whose chunks exist.
2. ``read``: full reads of an on-disk NGFF 0.5 store (uint16, 64³ chunks, blosc-zstd 1
   + shuffle; unsharded and 256³ shards), best of 5 (``--quick``: 3) after a warm-up,
   methods interleaved round-robin (the machine is shared), warm page cache.
   Baselines: tensorstore and the codec limit (Blosc zstd decode of the chunk bytes, already
   in memory, on 2 threads).
3. ``convert``: ``convert`` of an OME-Zarr 8x larger than ``memory_budget``, in a subprocess
   (clean peak RSS); baseline a naive eager conversion (whole volume in memory, one
   ``zarr.create_array(data=...)``).

Markdown goes to stdout, progress to stderr, the results as JSON to
``benchmarks/results/io-<date>.json`` (or ``--out DIR``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MiB = 2**20

#: Volume shapes (z, y, x) of uint16 per size: section 2 reads, section 3 converts.
SIZES: dict[str, dict[str, tuple[int, int, int]]] = {
    "tiny": {"read": (64, 128, 128), "convert": (64, 256, 256)},  # 2 MiB, 8 MiB
    "quick": {"read": (128, 512, 512), "convert": (256, 512, 512)},  # 64 MiB, 128 MiB
    "full": {"read": (256, 1024, 1024), "convert": (512, 1024, 1024)},  # 512 MiB, 1 GiB
}
#: Virtual store: (t, c, z, y, x) uint16 of 2 * 8192³ B = 1.1e12 B, 3 levels.
VIRTUAL_SHAPE = (1, 1, 8192, 8192, 8192)
VIRTUAL_LEVELS = 3
#: Region read from the virtual store: 64 x 512 x 512 uint16 = 32 MiB (its chunks exist).
VIRTUAL_REGION = (0, 0, slice(0, 64), slice(0, 512), slice(0, 512))
CHUNK = 64
SHARD = 256
LIBRARIES = ("dls-microscopy", "zarr", "tensorstore", "numcodecs", "dask", "numpy", "psutil")


def log(message: str) -> None:
    print(f"[run_io {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data --------------------------------------------------------------------------------


def blob_photons(shape: tuple[int, ...], *, seed: int, factor: int = 4) -> np.ndarray:
    """Expected photon counts at ``1/factor`` resolution: background 100, nuclei up to 1000.

    Gaussian blobs about 20 px across at full resolution fill roughly a third of the volume.
    """
    from scipy import ndimage

    low = tuple(-(-s // factor) for s in shape)
    rng = np.random.default_rng(seed)
    n_blobs = max(4, math.prod(low) // 400)
    field = np.zeros(low, np.float32)
    np.add.at(
        field,
        tuple(rng.integers(0, s, n_blobs) for s in low),
        rng.uniform(0.4, 1.0, n_blobs).astype(np.float32),
    )
    field = ndimage.gaussian_filter(field, sigma=1.8)
    field *= 900.0 / max(float(field.max()), 1e-12)
    return field + 100.0


def realistic_volume(shape: tuple[int, int, int], *, seed: int, factor: int = 4) -> Any:
    """Lazy uint16 volume: smooth blobs plus shot noise, deterministic per block.

    Shot noise is Poisson in its normal approximation (λ ≥ 100 everywhere, where the two
    agree closely), which is ~6x faster to draw than ``Generator.poisson``.
    """
    import dask.array as da

    photons = blob_photons(shape, seed=seed, factor=factor)

    def block(_: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        info = block_info[None]  # type: ignore[index]
        loc = info["array-location"]
        lam = photons[tuple(slice(a // factor, -(-b // factor)) for a, b in loc)]
        for ax in range(3):  # nearest upsampling; the noise hides the 4-voxel steps
            lam = np.repeat(lam, factor, axis=ax)
        lam = lam[tuple(slice(a % factor, a % factor + b - a) for a, b in loc)]
        rng = np.random.default_rng([seed, *info["chunk-location"]])
        counts = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
        return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)

    chunks = tuple(min(c, s) for c, s in zip((CHUNK, 4 * CHUNK, 4 * CHUNK), shape, strict=True))
    return da.empty(shape, dtype=np.uint16, chunks=chunks).map_blocks(block, dtype=np.uint16)


def write_store(data: Any, path: Path, *, shards: int) -> Path:
    """NGFF 0.5 store of one level written by our writer: 64³ chunks, zstd 1 + shuffle."""
    from dls_microscopy.io import write_ome_zarr

    return write_ome_zarr(
        data,
        path,
        spacing=(1.0, 0.25, 0.25),
        chunks=CHUNK,
        shards=shards,
        compression="zstd",
        clevel=1,
        n_levels=1,
        memory_budget=256 * MiB,
    )


def blosc_zstd1() -> Any:
    from zarr.codecs import BloscCodec, BloscShuffle

    return BloscCodec(cname="zstd", clevel=1, shuffle=BloscShuffle.shuffle)


def make_virtual_store(path: Path, *, sharded: bool) -> Path:
    """Metadata-only 1.1 TB NGFF 0.5 store; only the chunks of ``VIRTUAL_REGION`` exist."""
    import zarr

    from dls_microscopy.io.ngff_build import image_attrs

    root = zarr.open_group(store=str(path), mode="w", zarr_format=3)
    chunks = (1, 1, CHUNK, CHUNK, CHUNK)
    scales = []
    for level in range(VIRTUAL_LEVELS):
        f = 2**level
        shape = VIRTUAL_SHAPE[:2] + tuple(s // f for s in VIRTUAL_SHAPE[2:])
        arr = root.create_array(
            name=str(level),
            shape=shape,
            dtype=np.uint16,
            chunks=chunks,
            shards=(1, 1, SHARD, SHARD, SHARD) if sharded else None,
            compressors=blosc_zstd1(),
            fill_value=0,
            dimension_names=tuple("tczyx"),
        )
        scales.append([1.0, 1.0, 1.0 * f, 0.25 * f, 0.25 * f])
        if level == 0:
            region = VIRTUAL_REGION[2:]
            data = realistic_volume(tuple(r.stop - r.start for r in region), seed=1).compute()
            arr[VIRTUAL_REGION] = data
    root.attrs.update(image_attrs("0.5", "tczyx", scales, channel_names=("virtual",)))
    return path


def store_nbytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- measurement helpers -------------------------------------------------------------------


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def reset_peak_rss() -> tuple[int, str]:
    """Reset the peak-RSS mark where Linux allows it; return (current RSS, how peaks are read).

    ``ru_maxrss`` of a child also carries the peak RSS of the *parent* it was spawned from
    (the kernel folds the old address space's high-water mark into it on exec), so a child
    of a parent holding big arrays would start with the parent's peak. ``VmHWM`` after
    ``clear_refs`` = 5 is this process's own peak; ``ru_maxrss`` is the fallback.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status("VmRSS"), "VmHWM"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"


def peak_rss_bytes(how: str) -> int:
    if how == "VmHWM":
        return _proc_status("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise OSError(f"no {field} in /proc/self/status")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


@contextlib.contextmanager
def env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def run_child(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run ``kind`` in a fresh interpreter (clean RSS); return its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(params)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"child {kind} {params} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- section 1: open a virtual 1 TB store ---------------------------------------------------


def _openers(method: str) -> tuple[Callable[[Path], Any], Callable[[Any], np.ndarray]]:
    """``open(path) -> handle`` and ``read(handle) -> region`` of one method."""
    if method == "ours":
        from dls_microscopy.io import open_volume

        return open_volume, lambda vol: vol.data[VIRTUAL_REGION].compute()
    if method == "zarr-python":
        import zarr

        def open_zarr_python(path: Path) -> list[Any]:
            group = zarr.open_group(store=str(path), mode="r")
            datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
            return [group[ds["path"]] for ds in datasets]

        return open_zarr_python, lambda arrays: arrays[0][VIRTUAL_REGION]
    if method == "tensorstore":
        import tensorstore as ts

        def open_tensorstore(path: Path) -> list[Any]:
            attrs = json.loads((path / "zarr.json").read_text())["attributes"]
            datasets = attrs["ome"]["multiscales"][0]["datasets"]
            futures = [
                ts.open(
                    {
                        "driver": "zarr3",
                        "kvstore": {"driver": "file", "path": str(path / ds["path"])},
                    },
                    read=True,
                )
                for ds in datasets
            ]
            return [f.result() for f in futures]

        return open_tensorstore, lambda arrays: arrays[0][VIRTUAL_REGION].read().result()
    raise ValueError(method)


def child_open(params: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: RSS growth of the first open, median open and region-read time."""
    opener, reader = _openers(params["method"])
    warm = opener(Path(params["warmup"]))  # imports and first-use caches are not the open's cost
    reader(warm)
    del warm
    gc.collect()
    out: dict[str, Any] = {}
    kept = []
    for name, path in params["stores"].items():
        before = rss_bytes()
        seconds, handle = timed(lambda p=Path(path): opener(p))
        kept.append(handle)
        out[name] = {"rss_delta_mib": (rss_bytes() - before) / MiB, "first_open_s": seconds}
    for name, path in params["stores"].items():
        opens = [timed(lambda p=Path(path): opener(p))[0] for _ in range(params["repeats"])]
        handle = opener(Path(path))
        reads = [timed(lambda h=handle: reader(h))[0] for _ in range(params["repeats"])]
        out[name].update(
            open_s=statistics.median(opens),
            read_s=min(reads),
            read_median_s=statistics.median(reads),
        )
    return out


def bench_open(tmp: Path, repeats: int) -> dict[str, Any]:
    stores = {
        name: str(make_virtual_store(tmp / f"virtual-{name}.ome.zarr", sharded=sharded))
        for name, sharded in (("sharded", True), ("unsharded", False))
    }
    warmup = make_virtual_store(tmp / "warmup.ome.zarr", sharded=True)
    results: dict[str, Any] = {
        "virtual_shape": list(VIRTUAL_SHAPE),
        "levels": VIRTUAL_LEVELS,
        "virtual_level0_bytes": math.prod(VIRTUAL_SHAPE) * 2,
        "region": "[0, 0, 0:64, 0:512, 0:512]",
        "region_bytes": 64 * 512 * 512 * 2,
        "repeats": repeats,
        "methods": {},
    }
    for method in ("ours", "zarr-python", "tensorstore"):
        log(f"open: {method}")
        results["methods"][method] = run_child(
            "open", {"method": method, "stores": stores, "warmup": str(warmup), "repeats": repeats}
        )
    return results


# -- section 2: full-read throughput ------------------------------------------------------


def chunk_payloads(array_dir: Path) -> list[bytes]:
    """Compressed bytes of every (inner) chunk of a zarr v3 array, read into memory."""
    meta = json.loads((array_dir / "zarr.json").read_text())
    files = sorted(p for p in (array_dir / "c").rglob("*") if p.is_file())
    blobs = [p.read_bytes() for p in files]
    codec = meta["codecs"][0]
    if codec["name"] != "sharding_indexed":
        return blobs
    inner = codec["configuration"]
    outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
    n_inner = math.prod(o // i for o, i in zip(outer, inner["chunk_shape"], strict=True))
    assert inner.get("index_location", "end") == "end"
    index_bytes = 16 * n_inner + 4  # (offset, nbytes) uint64 pairs + crc32c
    payloads = []
    for blob in blobs:
        index = np.frombuffer(blob[-index_bytes:-4], dtype="<u8").reshape(-1, 2)
        payloads.extend(blob[int(o) : int(o + n)] for o, n in index if o != 2**64 - 1)
    return payloads


def codec_limit(payloads: list[bytes], chunk_nbytes: int, threads: int = 2) -> float:
    """Seconds to Blosc-decode all payloads on ``threads`` threads into reused buffers."""
    from numcodecs import blosc

    def decode(part: list[bytes]) -> None:
        dest = np.empty(chunk_nbytes, np.uint8)
        for payload in part:
            blosc.decompress(payload, dest)  # not the main thread: 1 blosc thread, no GIL

    parts = [payloads[i::threads] for i in range(threads)]
    with cf.ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        list(pool.map(decode, parts))
        return time.perf_counter() - t0


def read_methods(store: Path) -> dict[str, Callable[[], np.ndarray]]:
    import tensorstore as ts
    import zarr

    from dls_microscopy.io import open_volume

    def with_reader(reader: str | None, fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with env("DLS_ZARR_READER", reader):  # read in the reader's constructor, at open
                return fn()

        return run

    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / "0")}}
    return {
        "ours load() [tensorstore]": with_reader(None, lambda: open_volume(store).load()),
        "ours data.compute() [tensorstore]": with_reader(None, lambda: open_volume(store).data.compute()),
        "ours load() [zarr]": with_reader("zarr", lambda: open_volume(store).load()),
        "ours data.compute() [zarr]": with_reader("zarr", lambda: open_volume(store).data.compute()),
        "zarr-python open_array[...]": lambda: zarr.open_array(store=str(store / "0"), mode="r")[...],
        "tensorstore read()": lambda: ts.open(spec, read=True).result().read().result(),
    }


def bench_read(tmp: Path, shape: tuple[int, int, int], repeats: int) -> dict[str, Any]:
    log(f"read: generating {shape} uint16 ({math.prod(shape) * 2 / MiB:.0f} MiB)")
    truth = realistic_volume(shape, seed=0).compute()
    nbytes = truth.nbytes
    results: dict[str, Any] = {
        "shape": list(shape),
        "nbytes": nbytes,
        "repeats": repeats,
        "cache": "warm",
        "layouts": {},
    }
    for layout, shards in (("unsharded", 0), ("sharded", SHARD)):
        store = write_store(truth, tmp / f"read-{layout}.ome.zarr", shards=shards)
        entry: dict[str, Any] = {"store_bytes": store_nbytes(store), "methods": {}}
        entry["compression_ratio"] = nbytes / entry["store_bytes"]
        methods = read_methods(store)
        for name, fn in methods.items():
            log(f"read {layout}: warm-up {name}")
            out = fn()  # warm-up; also proves the method reads the right pixels
            if not np.array_equal(out, truth):
                raise AssertionError(f"{name} read wrong data from {store}")
            del out
        payloads = chunk_payloads(store / "0")
        limit_name = "codec limit (blosc zstd, 2 threads)"
        methods[limit_name] = lambda p=payloads: codec_limit(p, CHUNK**3 * 2)
        methods[limit_name]()
        times: dict[str, list[float]] = {name: [] for name in methods}
        for round_ in range(repeats):  # round-robin: load from other users hits every method
            log(f"read {layout}: round {round_ + 1}/{repeats}")
            for name, fn in methods.items():
                gc.collect()
                seconds, out = timed(fn)
                times[name].append(out if name == limit_name else seconds)
                del out
        for name, ts_ in times.items():
            entry["methods"][name] = {
                "best_s": min(ts_),
                "all_s": ts_,
                "gb_per_s": nbytes / min(ts_) / 1e9,
            }
        entry["methods"][limit_name]["n_chunks"] = len(payloads)
        del payloads, methods
        results["layouts"][layout] = entry
    return results


# -- section 3: conversion under a memory budget ------------------------------------------


def child_convert(params: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: time and peak-RSS growth of one conversion."""
    import ome_zarr_models.v05.image  # noqa: F401 - imported by the writer on validation
    import tensorstore  # noqa: F401 - imported by the reader on first read
    import zarr

    from dls_microscopy.io import convert

    src, dst, method = Path(params["src"]), Path(params["dst"]), params["method"]
    gc.collect()
    base, how = reset_peak_rss()
    t0 = time.perf_counter()
    if method == "naive":
        data = np.asarray(zarr.open_array(store=str(src / "0"), mode="r")[...])
        zarr.create_array(
            store=str(dst),
            data=data,
            chunks=(CHUNK,) * 3,
            shards=(SHARD,) * 3,
            compressors=blosc_zstd1(),
            fill_value=0,
        )
    else:
        convert(src, dst, memory_budget=params["budget"], n_levels=params["n_levels"])
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "peak_rss_growth_bytes": peak_rss_bytes(how) - base,
        "peak_rss_from": how,
    }


def bench_convert(tmp: Path, shape: tuple[int, int, int]) -> dict[str, Any]:
    nbytes = math.prod(shape) * 2
    log(f"convert: writing the source, {shape} uint16 ({nbytes / MiB:.0f} MiB)")
    src = write_store(realistic_volume(shape, seed=3), tmp / "convert-src.ome.zarr", shards=0)
    budget = nbytes // 8
    results: dict[str, Any] = {
        "shape": list(shape),
        "nbytes": nbytes,
        "memory_budget": budget,
        "source": "NGFF 0.5, 64³ chunks unsharded, blosc-zstd 1",
        "target": "NGFF 0.5, 64³ chunks in 256³ shards, blosc-zstd 1",
        "methods": {},
    }
    runs = {
        "naive eager (np.asarray + zarr.create_array)": {"method": "naive"},
        "ours convert (level 0 only)": {"method": "ours", "n_levels": 1},
        "ours convert (default pyramid)": {"method": "ours", "n_levels": None},
    }
    for i, (name, extra) in enumerate(runs.items()):
        log(f"convert: {name}")
        dst = tmp / f"convert-dst-{i}.ome.zarr"
        res = run_child("convert", {"src": str(src), "dst": str(dst), "budget": budget, **extra})
        res["mb_per_s"] = nbytes / res["seconds"] / 1e6
        res["rss_over_budget"] = res["peak_rss_growth_bytes"] / budget
        res["rss_over_volume"] = res["peak_rss_growth_bytes"] / nbytes
        results["methods"][name] = res
        shutil.rmtree(dst, ignore_errors=True)
    return results


# -- report --------------------------------------------------------------------------------


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
        "physical_cores": psutil.cpu_count(logical=False),
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
    out = [
        f"# IO benchmarks ({res['date']}, sizes={res['sizes']}, run {res['wall_s']:.0f} s)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores "
        f"({m['affinity_cores']} usable), {m['ram_gib']:.1f} GiB RAM, Python {m['python']}; "
        f"1-min load average {m['load_avg_start'][0]:.1f} at start, "
        f"{m['load_avg_end'][0]:.1f} at the end (the machine is shared).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
    ]

    op = res["open"]
    out += [
        f"## 1. Open a virtual {op['virtual_level0_bytes'] / 1e12:.1f} TB NGFF 0.5 store",
        "",
        f"Level 0 {tuple(op['virtual_shape'])} uint16, {op['levels']} levels, metadata only "
        f"except the chunks of region {op['region']} ({op['region_bytes'] / MiB:.0f} MiB). "
        f"Open = median, read = best of {op['repeats']} (ours: `open_volume`, all levels "
        "as dask arrays, read via `data[...].compute()`; "
        "zarr-python: `open_group` + every level's array; tensorstore: `ts.open` of every "
        "level). RSS Δ: first open in a fresh process after a warm-up open of another "
        "store. Ratios are ours ÷ this method (> 1: ours slower/larger).",
        "",
    ]
    ours = op["methods"]["ours"]
    for store in ("sharded", "unsharded"):
        rows = []
        for name, r in op["methods"].items():
            o, s = ours[store], r[store]
            rows.append(
                [
                    name,
                    f"{s['open_s'] * 1e3:.2f}",
                    f"{ratio(o['open_s'], s['open_s']):.2f}",
                    f"{s['rss_delta_mib']:.2f}",
                    f"{s['read_s'] * 1e3:.1f}",
                    f"{ratio(o['read_s'], s['read_s']):.2f}",
                ]
            )
        out += [
            f"**{store}**",
            "",
            table(
                [
                    "method",
                    "open ms",
                    "ours ÷ this",
                    "RSS Δ on open MiB",
                    "read region ms",
                    "ours ÷ this",
                ],
                rows,
            ),
            "",
        ]

    rd = res["read"]
    out += [
        f"## 2. Full-read throughput ({rd['nbytes'] / MiB:.0f} MiB uint16, warm page cache)",
        "",
        f"Shape {tuple(rd['shape'])}, 64³ chunks, blosc-zstd 1 + shuffle; best of "
        f"{rd['repeats']} after a warm-up (every read checked equal to the written data), "
        "methods interleaved round-robin; "
        "GB/s = uncompressed 1e9 B/s; open included. Codec limit: Blosc decode of every "
        "(inner) chunk's bytes, already in memory, on 2 threads. **Warm cache**: the store "
        "is in the page cache.",
        "",
    ]
    for layout, entry in rd["layouts"].items():
        ts_rate = entry["methods"]["tensorstore read()"]["gb_per_s"]
        limit = entry["methods"]["codec limit (blosc zstd, 2 threads)"]["gb_per_s"]
        rows = [
            [
                name,
                f"{r['best_s']:.3f}",
                f"{r['gb_per_s']:.3f}",
                f"{r['gb_per_s'] / ts_rate:.2f}",
                f"{r['gb_per_s'] / limit:.2f}",
            ]
            for name, r in entry["methods"].items()
        ]
        out += [
            f"**{layout}** (compression ratio {entry['compression_ratio']:.2f})",
            "",
            table(["method", "best s", "GB/s", "÷ tensorstore", "÷ codec limit"], rows),
            "",
        ]

    cv = res["convert"]
    out += [
        f"## 3. Conversion, {cv['nbytes'] / MiB:.0f} MiB with memory_budget "
        f"{cv['memory_budget'] / MiB:.0f} MiB (1/8)",
        "",
        f"Source {cv['source']}; target {cv['target']}. Each run in a fresh process; peak "
        "RSS growth = peak RSS during the conversion − RSS after imports (Linux `VmHWM` "
        "reset through `/proc/self/clear_refs`; a child's `ru_maxrss` would include its "
        "parent's peak). MB/s = uncompressed 1e6 B/s of level 0. Ours also writes and "
        "validates the NGFF metadata, whose contrast limits are sampled from the smallest "
        "level (with one level: a strided read of all of level 0).",
        "",
    ]
    naive = cv["methods"]["naive eager (np.asarray + zarr.create_array)"]
    rows = [
        [
            name,
            f"{r['seconds']:.2f}",
            f"{r['mb_per_s']:.0f}",
            f"{r['mb_per_s'] / naive['mb_per_s']:.2f}",
            f"{r['peak_rss_growth_bytes'] / MiB:.0f}",
            f"{r['rss_over_budget']:.2f}",
            f"{r['rss_over_volume']:.2f}",
        ]
        for name, r in cv["methods"].items()
    ]
    out += [
        table(
            ["method", "s", "MB/s", "÷ naive MB/s", "peak RSS growth MiB", "÷ budget", "÷ volume"],
            rows,
        ),
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick sizes (~40 s)")
    parser.add_argument("--sizes", choices=sorted(SIZES), help="override the data sizes")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    parser.add_argument("--tmp", type=Path, default=None, help="where temporary data goes")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, params = args.child
        result = {"open": child_open, "convert": child_convert}[kind](json.loads(params))
        print(json.dumps(result))
        return 0

    sizes = args.sizes or ("quick" if args.quick else "full")
    repeats = 5 if args.quick else 11
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dls-bench-io-", dir=args.tmp))
    try:
        res: dict[str, Any] = {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "sizes": sizes,
            "machine": machine(),
        }
        res["open"] = bench_open(tmp, repeats)
        res["read"] = bench_read(tmp, SIZES[sizes]["read"], repeats=3 if args.quick else 5)
        res["convert"] = bench_convert(tmp, SIZES[sizes]["convert"])
    finally:
        if args.keep:
            log(f"kept the data in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["wall_s"] = time.perf_counter() - t0
    res["machine"]["load_avg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"io-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(res, indent=2))
    print(markdown(res))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
