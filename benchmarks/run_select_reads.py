#!/usr/bin/env python
"""Voxels read by a small slice after selecting a channel: ``Volume.select`` vs dask indexing.

    .venv/bin/python benchmarks/run_select_reads.py [STORE] [--reader tensorstore|zarr]

Opens an OME-Zarr image (default: the IDR NGFF 0.5 store in ``../shared/data``) and
its first label image, and counts the voxels its file reader is asked for when
reading one z plane, one 64³ block and one 32³ crop of one channel.  Baseline:
the same read through plain dask indexing of the level (``level[c][...]``, which is
what ``select`` did before levels were rebuilt at the source; dask 2026.8 does not
fuse the two ``getitem`` calls).  Output: a markdown table with the ratio
baseline / select.  Voxel counts do not depend on the machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("run_select_reads")

DEFAULT = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "omezarr_idr0062A_6001240"
    / "6001240_labels.zarr"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--reader", choices=("tensorstore", "zarr"), default="tensorstore")
    args = parser.parse_args()
    os.environ["DLS_ZARR_READER"] = args.reader

    from dls_microscopy.io import open_zarr
    from dls_microscopy.io._zarr_chunks import _ZarrReader
    from dls_microscopy.io.zarr_read import open_labels

    counted = [0]
    original = _ZarrReader.__call__

    def counting(self: Any, key: tuple[slice, ...]) -> np.ndarray:
        counted[0] += int(np.prod([s.stop - s.start for s in key]))
        return original(self, key)

    _ZarrReader.__call__ = counting  # type: ignore[method-assign]

    vol = open_zarr(args.store)
    c = vol.n_channels - 1
    c_ax = vol.axes.index("c")
    z = vol.axis_size("z") // 2
    rows: list[tuple[str, int, int, int]] = []

    def measure(what: str, baseline: Any, ours: Any) -> None:
        counted[0] = 0
        a = np.asarray(baseline.compute())
        base_vox = counted[0]
        counted[0] = 0
        b = np.asarray(ours.compute())
        our_vox = counted[0]
        if not np.array_equal(a, b):
            raise SystemExit(f"{what}: results differ")
        rows.append((what, base_vox, our_vox, a.size))

    take = (slice(None),) * c_ax + (c,)
    level = vol.data[take]
    sel = vol.select(c=c).data
    zs, ys, xs = (min(n, 64) for n in sel.shape[-3:])
    measure(f"channel {c}, plane z={z}", level[z], sel[z])
    measure(f"channel {c}, block {zs}x{ys}x{xs}", level[:zs, :ys, :xs], sel[:zs, :ys, :xs])
    measure(
        f"channel {c}, crop 32³ at z={z}",
        level[z : z + 32, 100:132, 100:132],
        sel[z : z + 32, 100:132, 100:132],
    )
    if vol.labels:
        raw = open_zarr(args.store / "labels" / vol.labels[0])
        if "c" in raw.axes:
            lab_level = raw.data[(slice(None),) * raw.axes.index("c") + (0,)]
            measure(
                f"labels {vol.labels[0]}, plane z={z}",
                lab_level[z],
                open_labels(args.store, vol.labels[0]).data[z],
            )
    print(
        f"store: {args.store} (reader: {args.reader}); level 0 shape {vol.shape}, "
        f"{int(np.prod(vol.shape))} voxels\n"
    )
    print(
        "| read | voxels read, dask indexing (baseline) | voxels read, select | "
        "voxels returned | baseline / select |"
    )
    print("|---|---:|---:|---:|---:|")
    for what, base_vox, our_vox, size in rows:
        print(f"| {what} | {base_vox:,} | {our_vox:,} | {size:,} | {base_vox / our_vox:.1f}× |")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(main())
