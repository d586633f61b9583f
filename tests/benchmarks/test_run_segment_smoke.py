"""``benchmarks/run_segment.py`` still runs end to end and reports every section (tiny sizes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_segment.py"


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _fraction(value: object) -> bool:
    return isinstance(value, int | float) and 0.0 <= value <= 1.0


def test_run_segment_tiny_reports_every_section(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--sizes", "tiny", out=out)
    assert res.returncode == 0, res.stderr
    for heading in (
        "## 1. Speed and accuracy",
        "**Summary**",
        "## 2. Peak memory",
        "## 3. GPU vs CPU",
        "speed ÷ baseline",
        "÷ budget",
    ):
        assert heading in res.stdout
    (path,) = out.glob("segment-*.json")
    data = json.loads(path.read_text())
    assert data["sizes"] == "tiny"
    assert set(data["machine"]["versions"]) >= {"numpy", "scikit-image", "torch"}

    cases = data["accuracy"]["cases"]
    names = [c["name"] for c in cases]
    assert sum(n.startswith("synthetic") for n in names) == 2
    assert any(n.startswith("real crop") for n in names)
    # the IDR image is benchmarked where ../shared/data exists, otherwise noted as skipped
    assert any(n.startswith("IDR") for n in names) or data["accuracy"]["skipped"]
    for case in cases:
        assert case["diameter_um"] > 0 and case["n_true"] > 0
        assert set(case["methods"]) == {
            "ours segment()",
            "ours segment_blockwise",
            "skimage baseline",
            "skimage baseline + I/O",
        }
        # the baseline with I/O gives the baseline's labels and takes longer
        io, base = case["methods"]["skimage baseline + I/O"], case["methods"]["skimage baseline"]
        assert io["f1_05"] == base["f1_05"] and io["n_pred"] == base["n_pred"]
        assert _positive(case["methods"]["ours segment_blockwise"]["speedup_vs_baseline_io"])
        for r in case["methods"].values():
            assert _positive(r["best_s"]) and _positive(r["mvox_per_s"])
            assert _positive(r["speedup_vs_baseline"])
            for key in ("precision", "recall", "f1_05", "ap_05", "mean_iou_05", "f1_075"):
                assert _fraction(r[key]), (key, r[key])
            assert math.isfinite(r["f1_05_minus_baseline"])
        assert case["methods"]["ours segment_blockwise"]["blockwise"]["blocks"] >= 1

    mem = data["memory"]
    assert mem["volume_over_budget"] >= 2  # 4 in the full run
    assert "default glibc malloc" in mem["runs"]
    for run in mem["runs"].values():
        assert run["blocks"] >= 8 and _positive(run["seconds"])
        assert _positive(run["peak_rss_growth_bytes"]) and _positive(run["rss_over_budget"])
        assert {p["pass"] for p in run["passes"]} >= {
            "global statistics",
            "segment blocks",
            "stitch",
            "relabel + write",
        }

    gpu = data["gpu"]
    if "skipped" in gpu:
        assert f"{gpu['skipped']}: skipped" in res.stdout
    else:
        assert all(_positive(r["mvox_per_s"]) for r in gpu["methods"].values())
    # the temporary data went away with the run
    assert not list(tmp_path.glob("dls-bench-segment-*"))
