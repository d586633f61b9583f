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
    # ours told the diameter it estimates, once per image (not on the "diameter said" rows)
    assert "## Ours told the diameter it estimates" in res.stdout
    assert ["estimated" in c for c in data["conditions"]] == [True, True, False]
    ref = data["conditions"][0]["estimated"]
    assert abs(ref["diameter_um"] - ref["gold_median_um"]) < 0.1 * ref["gold_median_um"]
    assert ref["f1_05"] > 0.9 and data["mean_estimated"]["refused"] == 0


def test_seed_contrast_option_changes_only_ours(run_benchmark, tmp_path):
    """``--seed-contrast`` judges that option as a default: ours changes, the baseline does not."""
    runs = {}
    for tag, extra in (("default", ()), ("contrast", ("--seed-contrast", "0.8"))):
        out = tmp_path / tag
        res = run_benchmark(SCRIPT, "--quick", *extra, out=out, tmp=False)
        assert res.returncode == 0, res.stderr
        (path,) = out.glob("segment-robustness-*.json")
        runs[tag] = (path.name, json.loads(path.read_text()))
    assert runs["contrast"][0].endswith("-quick-seed-contrast0.8.json")
    assert runs["contrast"][1]["seed_contrast"] == 0.8 and runs["default"][1]["seed_contrast"] is None
    pairs = list(zip(runs["default"][1]["conditions"], runs["contrast"][1]["conditions"], strict=True))
    assert all(
        a["scores"]["skimage baseline"]["f1_05"] == b["scores"]["skimage baseline"]["f1_05"] for a, b in pairs
    )
    assert any(a["scores"]["ours"]["f1_05"] != b["scores"]["ours"]["f1_05"] for a, b in pairs)


def test_depth_correction_option_is_recorded_and_named(run_benchmark, tmp_path):
    """``--depth-correction`` runs ours with that option, says so, and names the results after it."""
    out = tmp_path / "depth"
    res = run_benchmark(SCRIPT, "--quick", "--depth-correction", out=out, tmp=False)
    assert res.returncode == 0, res.stderr
    (path,) = out.glob("segment-robustness-*.json")
    assert path.name.endswith("-quick-depth-correction.json")
    data = json.loads(path.read_text())
    assert data["ours"] == {"depth_correction": True} and data["seed_contrast"] is None
    assert "Ours with `depth_correction: true`." in res.stdout
