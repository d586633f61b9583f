"""``benchmarks/run_io.py`` still runs end to end and reports every section (tiny sizes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_io.py"


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_run_io_quick_tiny_reports_every_section(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--quick", "--sizes", "tiny", out=out)
    assert res.returncode == 0, res.stderr
    for heading in ("## 1. Open", "## 2. Full-read", "## 3. Conversion", "÷ tensorstore"):
        assert heading in res.stdout
    (path,) = out.glob("io-*.json")
    data = json.loads(path.read_text())
    assert data["sizes"] == "tiny"
    assert data["machine"]["logical_cores"] >= 1
    assert set(data["machine"]["versions"]) >= {"zarr", "tensorstore", "numcodecs", "dask", "numpy"}

    methods = data["open"]["methods"]
    assert set(methods) == {"ours", "zarr-python", "tensorstore"}
    for per_store in methods.values():
        assert set(per_store) == {"sharded", "unsharded"}
        for r in per_store.values():
            assert _positive(r["open_s"]) and _positive(r["read_s"])
            assert math.isfinite(r["rss_delta_mib"])
    assert data["open"]["virtual_level0_bytes"] >= 1e12

    layouts = data["read"]["layouts"]
    assert set(layouts) == {"sharded", "unsharded"}
    for entry in layouts.values():
        assert len(entry["methods"]) == 7
        assert "tensorstore read()" in entry["methods"]
        assert all(_positive(r["gb_per_s"]) for r in entry["methods"].values())

    convert = data["convert"]["methods"]
    assert len(convert) == 3
    for r in convert.values():
        assert _positive(r["seconds"]) and _positive(r["mb_per_s"])
        assert r["peak_rss_growth_bytes"] >= 0
    # the temporary data went away with the run
    assert not list(tmp_path.glob("dls-bench-io-*"))
