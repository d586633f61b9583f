"""``benchmarks/run_segment_robustness.py`` runs end to end and scores both methods on every condition."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_segment_robustness.py"


def test_quick_run_scores_both_methods_on_every_condition(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--quick", out=out, tmp=False)  # it writes no scratch files
    assert res.returncode == 0, res.stderr
    for text in ("| reference |", "| noise × 6 |", "| diameter said 25 % large |", "| **mean** |"):
        assert text in res.stdout
    (path,) = out.glob("segment-robustness-*-quick.json")
    data = json.loads(path.read_text())
    assert [c["name"] for c in data["conditions"]] == ["reference", "noise × 6", "diameter said 25 % large"]
    told = [c["diameter_told_um"] for c in data["conditions"]]
    assert told == [7.0, 7.0, 8.75]
    for c in data["conditions"]:
        assert set(c["scores"]) == {"ours", "skimage baseline"} and c["n_true"] > 100
        for s in c["scores"].values():
            assert s["n_pred"] > 0 and 0.0 <= s["f1_075"] <= s["f1_05"] <= 1.0
    # the reference volume is one our defaults segment well (0.945 at IoU 0.5 when written)
    assert data["conditions"][0]["scores"]["ours"]["f1_05"] > 0.9
