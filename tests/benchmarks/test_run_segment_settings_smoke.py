"""``benchmarks/run_segment_settings.py`` runs end to end and reports every volume and setting."""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_segment_settings.py"


def test_quick_run_scores_every_volume_with_every_setting(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--quick", out=out)
    assert res.returncode == 0, res.stderr
    for text in ("distance (default, baseline)", "seed_contrast 0.7", "| mean |"):
        assert text in res.stdout
    (path,) = out.glob("segment-settings-*-quick.json")
    data = json.loads(path.read_text())
    names = [v["name"] for v in data["volumes"]]
    assert names[0] == "synthetic sparse" and names[1].startswith("real crop")
    for volume in data["volumes"]:
        assert len(volume["scores"]) == 2
        for s in volume["scores"].values():
            assert s["n_pred"] > 0 and 0.0 <= s["f1_075"] <= s["f1_05"] <= 1.0
    # the sparse synthetic nuclei are found whatever the seeds
    assert all(s["f1_05"] > 0.9 for s in data["volumes"][0]["scores"].values())
    assert all(math.isfinite(m["f1_05"]) for m in data["mean"].values())
