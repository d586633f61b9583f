"""Peak memory of ``segment_blockwise`` follows the memory budget, not the volume size.

A fresh interpreter imports what the run uses and segments a tiny volume first: the
watershed's numba kernels compile there (or load from numba's on-disk cache), which leaves
LLVM's memory in the process (about 50 MiB loaded from the cache, up to about 145 MiB when
compiling, as in a fresh clone).  Its RSS is the *compiled baseline*, a fixed cost like the
imports.  A warm-up on a small volume follows (first use of the reader's and the thread pools'
buffers: tensorstore's context ~16 MiB, the sampled global statistics' first run ~14 MiB), then
the RSS is recorded again (the *warm baseline*).  Finally it segments an on-disk OME-Zarr 8x
larger than the budget into a standalone OME-Zarr label image (with its pyramid).  Two bounds
on the peak RSS of that run (Linux ``VmHWM``):

* over the warm baseline, at most 1.5x the budget (measured 0.1 to 45 MiB);
* over the compiled baseline, at most 2x the budget: what the warm-up kept (glibc keeps freed
  pages in per-thread arenas) plus the run's growth (measured -29 to 48 MiB; 48 in fresh-clone
  CI at 4x the budget).

Both bounds are at most half the labels' size (192 MiB, uint32) and a quarter of the image's
(384 MiB), so a whole-volume buffer fails the test.  Peak RSS over the after-imports RSS is
reported but not asserted: it includes the kernels' compilation (12 to 191 MiB measured,
depending on numba's cache).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads VmHWM from /proc/self/status"
)

BUDGET_MIB = 48
#: volume 8x the budget, in float64: (48, 1024, 1024) voxels = 384 MiB (the labels,
#: uint32, are 192 MiB); float64 keeps the voxel count, hence the run time, small
SHAPE = (48, 1024, 1024)

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import dask.array as da
    import numpy as np
    import scipy.ndimage, edt, fastremap, numcodecs, tensorstore, zarr.codecs  # noqa: F401
    import ome_zarr_models.v05.image, ome_zarr_models.v05.image_label  # noqa: F401

    from dls_microscopy.io import open_volume, write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.segment.blockwise import segment_blockwise
    from dls_microscopy.segment.watershed import WatershedSegmenter

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise OSError(field)

    out = Path(sys.argv[1])
    budget = int(sys.argv[2]) * 2**20
    shape = tuple(int(s) for s in sys.argv[3].split(","))
    spacing = (1.0, 1.0, 1.0)
    tile = (shape[0], 256, 256)
    base_tile = make_synthetic_nuclei(tile, spacing=spacing, diameter_um=4.0, seed=2).image[0]
    base_tile = base_tile.astype(np.float64)

    def block(_, block_info=None):
        arr = base_tile
        for ax, i in enumerate(block_info[None]["chunk-location"]):
            if i % 2:
                arr = np.flip(arr, axis=ax)  # mirrored tiles: continuous across tile faces
        return np.ascontiguousarray(arr)

    lazy = da.empty(shape, dtype=np.float64, chunks=tile).map_blocks(block, dtype=np.float64)
    store = write_ome_zarr(lazy, out / "big.ome.zarr", spacing=spacing, n_levels=1,
                           memory_budget=budget, workers=2)
    # 2.6 Mvox: more than global_stats reads whole, so the warm-up samples like the run
    small = write_ome_zarr(np.tile(base_tile[:16], (1, 1, 3))[:, :, :640],
                           out / "small.ome.zarr", spacing=spacing)
    tiny = write_ome_zarr(base_tile[:16, :64, :64], out / "tiny.ome.zarr", spacing=spacing)
    seg = WatershedSegmenter(diameter_um=4.0, device="cpu")
    after_imports = status("VmRSS")
    # the watershed's numba kernels compile here (or load from numba's on-disk cache): up to
    # ~125 MiB of LLVM's that stays in the process, a fixed cost like the imports
    segment_blockwise(open_volume(tiny), seg, output=out / "tiny.zarr", workers=2)
    compiled = status("VmRSS")
    segment_blockwise(open_volume(small), seg, output=out / "warm.zarr", workers=2,
                      block_shape=(16, 128, 128))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    baseline = status("VmRSS")
    res = segment_blockwise(open_volume(store), seg, memory_budget=budget, workers=2,
                            output=out / "labels.ome.zarr")
    peak = status("VmHWM")
    print(json.dumps({
        "rss_after_imports_mib": after_imports / 2**20, "baseline_mib": baseline / 2**20,
        "peak_growth_mib": (peak - baseline) / 2**20,
        "peak_over_imports_mib": (max(peak, baseline) - after_imports) / 2**20,
        "rss_compiled_mib": compiled / 2**20,
        "peak_over_compiled_mib": (max(peak, baseline) - compiled) / 2**20,
        "budget_mib": budget / 2**20,
        "volume_mib": float(np.prod(shape)) * 8 / 2**20, "blocks": res.plan.n_blocks,
        "n_objects": res.n_objects, "timings": res.timings,
        "levels": len(res.labels.levels)}))
    """
)


def test_peak_rss_follows_the_budget_on_a_volume_8x_larger(tmp_path, measured):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(BUDGET_MIB), ",".join(map(str, SHAPE))],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    measured(str(r))  # baselines and the peak, for the record
    assert r["volume_mib"] >= 8 * r["budget_mib"]
    assert r["blocks"] >= 8 and r["n_objects"] > 100 and r["levels"] >= 2
    assert r["peak_growth_mib"] <= 1.5 * r["budget_mib"], r
    assert r["peak_over_compiled_mib"] <= 2 * r["budget_mib"], r
