"""``benchmarks/run_pipeline.py`` still runs end to end and reports every section (tiny size)."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_pipeline.py"


def test_run_pipeline_tiny_reports_every_section(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--sizes", "tiny", "--no-mesh", out=out, timeout=300)
    assert res.returncode == 0, res.stderr
    for heading in ("## 1. Whole runs", "## 2. Per-step time", "fields/hour", "RSS ÷ budget"):
        assert heading in res.stdout
    (path,) = out.glob("pipeline-*.json")
    data = json.loads(path.read_text())
    assert data["n_fields"] == 2
    assert set(data["steps_s"]) >= {"segment", "features"}
    for run in ("pipeline", "baseline", "resume"):
        assert data[run]["wall_s"] > 0 and data[run]["peak_rss_bytes"] > 10 * 2**20
    assert not list(tmp_path.glob("dls-bench-pipeline-*"))
