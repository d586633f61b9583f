"""``benchmarks/run_geometry.py`` still runs end to end on tiny data and reports every method."""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_geometry.py"
METHODS = {"skimage+trimesh", "zmesh raw", "ours", "ours, meshing only", "ours, zarr", "ours, smooth 30"}


def test_run_geometry_tiny_reports_every_method(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--sizes", "tiny", "--repeats", "1", out=out)
    assert res.returncode == 0, res.stderr
    assert "÷ skimage+trimesh" in res.stdout and "time ÷ zmesh raw" in res.stdout
    (path,) = out.glob("geometry-*.json")
    data = json.loads(path.read_text())
    assert data["sizes"] == "tiny"
    assert data["machine"]["logical_cores"] >= 1
    assert {"zmesh", "trimesh", "scikit-image"} <= set(data["machine"]["versions"])
    methods = data["result"]["methods"]
    assert set(methods) == METHODS
    n = data["result"]["n_objects"]
    assert n > 0
    for name, row in methods.items():
        assert row["meshes"] == n, name
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0
        assert row["meshes_per_s"] > 0
    for name in ("skimage+trimesh", "ours", "ours, zarr", "ours, smooth 30"):
        assert methods[name]["watertight"] == n, name
    # both marching-cubes routes enclose the same volume
    assert math.isclose(
        methods["ours"]["total_volume_um3"], methods["skimage+trimesh"]["total_volume_um3"], rel_tol=0.01
    )
    assert path.with_suffix(".md").read_text().startswith("## Meshing")
    assert not list(tmp_path.glob("dls-bench-geometry-*"))
