"""``benchmarks/run_embeddings.py``: its metrics on hand-made cases, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run_embeddings.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("run_embeddings", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_metrics_on_separable_and_on_uninformative_features(bench):
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 40)
    wells = np.array([f"{t}{i // 10}" for i, t in enumerate(labels)])  # 4 wells per treatment
    centres = {"a": [5.0, 0, 0], "b": [0, 5.0, 0], "c": [0, 0, 5.0]}
    good = np.array([centres[t] for t in labels]) + rng.normal(0, 0.5, (120, 3))
    noise = rng.normal(0, 1, (120, 3))
    assert bench.knn_correct(good, labels, wells).all()
    assert bench.knn_accuracy(noise, labels, wells) < 0.6
    names = sorted(set(wells))
    well_labels = np.array([n[0] for n in names])
    profiles = np.stack([good[wells == n].mean(axis=0) for n in names])
    assert bench.mean_average_precision(profiles, well_labels) == 1.0
    assert bench.well_1nn_accuracy(profiles, well_labels) == 1.0


def test_paired_knn_counts_discordant_objects_and_tests_them(bench):
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [False] * 2 + [True] * 5)
    c = bench.paired_knn({"A": a, "B": b}, "A", "B")
    assert (c["only_a"], c["only_b"]) == (10, 0)
    assert c["p_mcnemar"] == pytest.approx(2 * 0.5**10)
    assert bench.paired_knn({"A": a, "B": a}, "A", "B") == {"only_a": 0, "only_b": 0, "p_mcnemar": 1.0}


def test_well_bootstrap_interval_follows_wells_not_objects(bench):
    labels = np.repeat(["a", "b"], 40)
    wells = np.array([f"{t}{i // 10}" for i, t in enumerate(labels)])  # 4 wells of 10 per treatment
    b = np.zeros(80, bool)
    everywhere = np.tile([True, True] + [False] * 8, 8)  # A right on 2 more objects in every well
    one_well = np.zeros(80, bool)
    one_well[:16] = True  # the same 16 objects more, but from one and a half wells of treatment a
    c = bench.paired_knn({"A": everywhere, "B": b}, "A", "B", wells, labels)
    assert c["difference"] == pytest.approx(0.2)
    assert c["ci95_low"] == pytest.approx(0.2) and c["ci95_high"] == pytest.approx(0.2)
    d = bench.paired_knn({"A": one_well, "B": b}, "A", "B", wells, labels)
    assert d["difference"] == pytest.approx(0.2) and d["p_mcnemar"] < 1e-4  # objects: "significant"
    assert d["ci95_low"] < 0.1 < 0.3 < d["ci95_high"]  # wells: one or two wells do not make a plate
    same = bench.paired_knn({"A": one_well, "B": one_well}, "A", "B", wells, labels)
    assert (same["difference"], same["ci95_low"], same["ci95_high"]) == (0.0, 0.0, 0.0)


def test_quick_half_dose_run_reports_every_feature_set(run_benchmark, tmp_path):
    out = tmp_path / "results"
    res = run_benchmark(SCRIPT, "--quick", "--strength", "0.5", out=out, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "strength 0.5" in res.stdout and "McNemar" in res.stdout
    assert "After pycytominer's feature selection" in res.stdout
    (path,) = out.glob("embeddings-*-quick-strength0.5.json")
    data = json.loads(path.read_text())
    assert data["strength"] == 0.5
    for plate in ("val", "test"):
        metrics = data["plates"][plate]["metrics"]
        for name in ("handcrafted", "image", "shape", "image+shape", "all"):
            assert all(math.isfinite(metrics[name][k]) for k in ("mAP", "object_knn_accuracy")), name
        pairs = {"image+shape vs handcrafted", "all vs handcrafted", "all vs image+shape"}
        assert set(metrics["paired"]) == pairs
        selected = data["plates"][plate]["metrics_selected"]
        assert set(selected["paired"]) == pairs
        assert data["plates"][plate]["coverage"], "no coverage rows"
        for name in ("handcrafted", "all"):  # the handcrafted set repeats size: some columns go
            assert 0 < selected[name]["n_features"] < metrics[name]["n_features"], name
        for c in metrics["paired"].values():  # a percentile interval need not hold the estimate
            assert -1 <= c["ci95_low"] <= c["ci95_high"] <= 1 and -1 <= c["difference"] <= 1
    assert all(r["objects_per_s"] > 0 for r in data["speed"].values())


def test_size_dependence_separates_knowing_size_from_weighing_it(bench):
    rng = np.random.default_rng(1)
    wells = np.repeat([f"w{i}" for i in range(6)], 30)
    size = rng.normal(0, 1, 180)
    other = rng.normal(0, 1, (180, 9))
    # size in one column of ten: fully known, a tenth of the variance
    few = bench.size_dependence(np.c_[size, other], size, wells)
    assert few["size_r2"] > 0.99
    assert few["size_share"] == pytest.approx(0.1, abs=0.03)
    # the share weighs columns by their variance (as a cosine k-NN does): scaled by 3, the
    # size column holds about half the variance (an unweighted mean of r² would stay at 0.1)
    scaled = bench.size_dependence(np.c_[3 * size, other], size, wells)["size_share"]
    assert scaled == pytest.approx(9 * size.var() / (9 * size.var() + other.var(axis=0).sum()), abs=0.03)
    assert scaled > 0.35
    # size in every column (plus noise): known and weighed
    many = bench.size_dependence(size[:, None] + 0.3 * other, size, wells)
    assert many["size_share"] > 0.8 and many["size_r2"] > 0.95
    # no size at all, in as many columns as a third of the objects: nothing weighed, and
    # nothing read from wells left out (an in-sample fit would find R² near 0.35 here)
    noise = rng.normal(0, 1, (180, 60))
    none = bench.size_dependence(noise, size, wells)
    assert none["size_r2"] < 0.0 and none["size_share"] < 0.05


def test_selected_columns_keep_one_of_each_correlated_group(bench):
    import pandas as pd

    rng = np.random.default_rng(2)
    size, texture = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
    table = pd.DataFrame(
        {
            "Nuclei_Volume": np.exp(size),
            "Nuclei_Radius": np.exp(size / 3) + rng.normal(0, 1e-3, 300),  # same order as volume
            "Nuclei_Texture": texture,
            "Nuclei_Constant": np.ones(300),
            "Embedding_Image_000": rng.normal(0, 1, 300),
        }
    )
    kept = bench.selected_columns(table, list(table.columns))
    assert "Nuclei_Texture" in kept and "Embedding_Image_000" in kept
    assert "Nuclei_Constant" not in kept
    assert len({"Nuclei_Volume", "Nuclei_Radius"} & set(kept)) == 1


def test_coverage_ranks_discriminating_features_and_reads_them_from_embeddings(bench):
    import pandas as pd

    rng = np.random.default_rng(3)
    treatment = np.repeat(["a", "b"], 120)
    wells = np.array([f"{t}{i // 20}" for i, t in enumerate(treatment)])  # 6 wells per treatment
    carried = (treatment == "b") * 2.0 + rng.normal(0, 1, 240)  # in the embeddings
    missed = (treatment == "b") * 3.0 + rng.normal(0, 1, 240)  # not in them, and more telling
    table = pd.DataFrame(
        {
            "Metadata_Well": wells,
            "Metadata_Treatment": treatment,
            "Nuclei_Carried": carried,
            "Nuclei_Missed": missed,
            "Nuclei_Noise": rng.normal(0, 1, 240),
            "Embedding_Image_000": carried + rng.normal(0, 0.05, 240),
            "Embedding_Image_001": rng.normal(0, 1, 240),
        }
    )
    rows = bench.coverage(table, n=2)
    assert [r["feature"] for r in rows] == ["Nuclei_Missed", "Nuclei_Carried"]
    assert rows[1]["r2_from_embeddings"] > 0.99
    assert rows[0]["r2_from_embeddings"] < 0.6  # only what it shares with the treatment
