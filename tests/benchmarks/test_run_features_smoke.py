"""``benchmarks/run_features.py`` still runs end to end and reports every section (tiny size)."""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_features.py"


def test_run_features_tiny_reports_every_section(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--sizes", "tiny", out=out)
    assert res.returncode == 0, res.stderr
    for heading in ("## 1. measure_objects vs regionprops_table", "## 2. run_features", "objects/s"):
        assert heading in res.stdout
    (path,) = out.glob("features-*.json")
    data = json.loads(path.read_text())
    assert data["sizes"] == "tiny"
    measure = data["measure"]
    assert measure["n_objects"] > 10
    assert len(measure["methods"]) == 6
    for r in measure["methods"].values():
        assert math.isfinite(r["objects_per_s"]) and r["objects_per_s"] > 0
    agree = measure["agreement_max_rel_diff"]
    assert agree["ids_equal"] == 1.0
    assert max(v for k, v in agree.items() if k != "ids_equal") < 1e-9
    assert data["run"]["n_objects"] == measure["n_objects"]
    assert not list(tmp_path.glob("dls-bench-features-*"))
