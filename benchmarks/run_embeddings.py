#!/usr/bin/env python
"""Quality and speed of learned embeddings against handcrafted features, measured in one run.

    .venv/bin/python benchmarks/run_embeddings.py [--quick] [--out DIR] [--tmp DIR]
        [--replicates N] [--train-replicates N] [--epochs-image N] [--epochs-shape N] [--threads N]
        [--strength S] [--model-seed N] [--tables DIR]

Data: the seeded synthetic phenotype set (:mod:`dls_microscopy.sample_data.phenotypes`): five
treatments (control, enlarged, elongated, lobed, granular) × ``replicates`` wells (the training
plate: ``train-replicates``, default the same; it is unlabelled data, and users train on whole
screens), written as OME-Zarr with our writers. ``--strength`` scales every treatment's change
from control (1: as stated; 0.5: a half dose, where no feature set reaches the ceiling). Three
independent plates: ``train`` (seed 0) trains the encoders (self-supervised: treatments are
never seen), ``val`` (seed 2) was the only plate looked at while choosing architectures and
training settings, ``test`` (seed 1) is the result. Both evaluated plates use the same trained
models. Handcrafted features, meshes and embeddings of an evaluated plate come from
``run_features(..., meshes=True, embeddings=[image.pt, shape.pt])``, i.e. the product path.

Feature sets: ``handcrafted`` = every ``Nuclei_*`` column (voxel morphology, intensity,
radial distribution, mesh descriptors); ``image``/``shape`` = ``Embedding_Image_*`` /
``Embedding_Shape_*``; ``image+shape``; ``all`` = handcrafted + image + shape.

Metrics (definitions):

* **Replicate-retrieval mAP.**  Well profile = per-well median of each object feature; each
  feature z-scored across the wells of the plate (constant features dropped); a combined set
  concatenates its blocks, each divided by sqrt(its feature count) so that every block weighs
  the same.  Each well queries all other wells ranked by cosine similarity; positives are the
  other replicate wells of its treatment; AP = mean over positives of precision at the
  positive's rank; mAP = mean AP over all query wells.  Chance ≈ (replicates-1)/(wells-1).
* **k-NN treatment accuracy, per object, leave-one-well-out.**  Object features z-scored across
  the plate's objects (blocks weighted as above); each object's treatment is the majority of
  its k=10 most cosine-similar objects *from other wells*; accuracy over all objects.
* **Well 1-NN accuracy.**  Leave-one-out nearest well profile (cosine) has the same treatment.
* **Paired k-NN comparison.**  Two feature sets are judged on the same objects, so their
  k-NN difference is tested on the objects only one of them gets right (McNemar's exact
  test): p well above 0.05 means the plate cannot tell the two sets apart.  McNemar treats
  objects as independent, but objects of one well share its culture; so the difference of
  the two accuracies also gets a 95 % interval from a bootstrap over *wells* (each
  treatment's wells resampled with replacement, 2,000 times, seeded): "at least as good"
  is supported when the interval's lower end is near or above 0.

* **Size diagnostics** (:func:`size_dependence`; object-level sets, where the table has
  ``Nuclei_AreaShape_Volume``): the share of the object profiles' variance that log volume
  explains (how much a cosine k-NN weighs size) and the leave-one-well-out R² of log volume
  predicted linearly from the profiles (whether size is in them at all).

Speed: objects/s of each stage of ``run_features`` on the test plate (CPU, same run):
``measure_objects`` (handcrafted, the baseline), mesh descriptors, and each embedding model
(``apply_embeddings``: crop extraction or meshing + network), with ratios to the baseline.

Markdown goes to stdout and ``benchmarks/results/embeddings-<date>.md``, JSON beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
TRAIN_SEED = 0
EVAL_PLATES = {"val": 2, "test": 1}
KNN_K = 10


def log(msg: str) -> None:
    """Progress on stderr."""
    print(msg, file=sys.stderr, flush=True)


# -- metrics --------------------------------------------------------------------------


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isfinite(x), x, np.nan)
    med = np.nanmedian(x, axis=0)
    x = np.where(np.isnan(x), med, x)
    sd = x.std(axis=0)
    keep = sd > 1e-12 * np.maximum(1.0, np.abs(x).max(axis=0))
    return (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]


def combine(blocks: list[np.ndarray]) -> np.ndarray:
    """z-score each block's columns, weight each block by 1/sqrt(its width), concatenate."""
    out = []
    for b in blocks:
        z = _zscore(b)
        if z.shape[1]:
            out.append(z / np.sqrt(z.shape[1]))
    return np.concatenate(out, axis=1)


def _cosine(x: np.ndarray) -> np.ndarray:
    n = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return n @ n.T


def mean_average_precision(profiles: np.ndarray, labels: np.ndarray) -> float:
    """Replicate-retrieval mAP of well profiles (see the module docstring)."""
    sim = _cosine(profiles)
    aps = []
    for q in range(len(labels)):
        others = np.array([i for i in range(len(labels)) if i != q])
        order = others[np.argsort(-sim[q, others], kind="stable")]
        hits = labels[order] == labels[q]
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return float(np.mean(aps))


def well_1nn_accuracy(profiles: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest-profile accuracy."""
    sim = _cosine(profiles)
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[np.argmax(sim, axis=1)] == labels))


def knn_correct(features: np.ndarray, labels: np.ndarray, wells: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Per object: is its k-NN treatment vote right (neighbours from other wells only)?"""
    sim = _cosine(features)
    sim[wells[:, None] == wells[None, :]] = -np.inf
    classes, codes = np.unique(labels, return_inverse=True)
    nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(labels), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(labels)), k), codes[nn].ravel()), 1)
    return np.argmax(votes, axis=1) == codes


def knn_accuracy(features: np.ndarray, labels: np.ndarray, wells: np.ndarray, k: int = KNN_K) -> float:
    """Per-object k-NN treatment accuracy, neighbours from other wells only."""
    return float(np.mean(knn_correct(features, labels, wells, k)))


def paired_knn(
    correct: dict[str, np.ndarray],
    a: str,
    b: str,
    wells: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Objects only ``a`` classifies right, only ``b`` does, and McNemar's exact two-sided p.

    The two feature sets are judged on the same objects, so their difference is tested on
    the discordant objects alone (binomial, p = 1/2): a p well above 0.05 means the plate
    cannot tell the two apart.  With each object's ``wells`` and treatment ``labels``, the
    accuracy difference ``a - b`` and its well-bootstrap 95 % interval are added
    (:func:`well_bootstrap_interval`).
    """
    from scipy.stats import binom

    only_a = int(np.sum(correct[a] & ~correct[b]))
    only_b = int(np.sum(correct[b] & ~correct[a]))
    n = only_a + only_b
    p = 1.0 if n == 0 else min(1.0, 2 * float(binom.cdf(min(only_a, only_b), n, 0.5)))
    out = {"only_a": only_a, "only_b": only_b, "p_mcnemar": p}
    if wells is not None and labels is not None:
        diff = correct[a].astype(np.float64) - correct[b].astype(np.float64)
        low, high = well_bootstrap_interval(diff, wells, labels)
        out.update(difference=float(diff.mean()), ci95_low=low, ci95_high=high)
    return out


def well_bootstrap_interval(
    values: np.ndarray, wells: np.ndarray, labels: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of the mean of per-object ``values``, resampling wells.

    Each treatment's wells are drawn with replacement (stratified: every resample keeps
    the plate's design) and the mean is taken over all objects of the drawn wells.
    ``values``, ``wells`` and ``labels`` are ``(n_objects,)``.
    """
    names, inverse = np.unique(wells, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(names))
    counts = np.bincount(inverse, minlength=len(names)).astype(np.float64)
    well_label = np.empty(len(names), dtype=labels.dtype)
    well_label[inverse] = labels
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(well_label == t) for t in np.unique(well_label)]
    draws = np.concatenate([rng.choice(s, size=(n_boot, len(s))) for s in strata], axis=1)
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def size_dependence(
    features: np.ndarray, log_volume: np.ndarray, wells: np.ndarray, ridge: float = 1.0
) -> dict[str, float]:
    """How much of a feature set is object size, and how much it knows about size.

    ``features`` ``(n_objects, n_features)`` are the object profiles as k-NN compares them
    (z-scored, blocks weighted: :func:`combine`); ``log_volume`` and ``wells`` are ``(n_objects,)``.

    * ``size_share``: the share of the profiles' total variance that log volume explains
      (per feature, its variance times its squared correlation with log volume, summed,
      over the summed variances).  A cosine k-NN weighs size by this share.
    * ``size_r2``: R² of log volume predicted linearly from the features, leave one well
      out (ridge on standardised features, penalty ``ridge``): whether size can be read
      from the features at all.

    A set can know size well (high R²) and still weigh it little (low share), when size
    sits in a few of many dimensions; the handcrafted set has many size-like columns.
    """
    y = (log_volume - log_volume.mean()) / log_volume.std()
    var = features.var(axis=0)
    corr = (features - features.mean(axis=0)).T @ y / len(y) / np.sqrt(np.maximum(var, 1e-300))
    share = float(np.sum(var * corr**2) / np.sum(var))
    return {"size_share": share, "size_r2": readout_r2(features, log_volume, wells, ridge)}


def coverage(table: Any, n: int = 12) -> list[dict[str, Any]]:
    """What the embeddings hold of the handcrafted features that tell treatments apart best.

    For the ``n`` handcrafted features with the largest one-way ANOVA F over treatments
    (per object, ``table["Metadata_Treatment"]``), the leave-one-well-out R² of a linear
    read-out of the feature from image + shape (:func:`readout_r2`).  A
    low R² for a discriminating feature is a property the encoders do not carry linearly.
    """
    from scipy.stats import f_oneway

    emb = [c for c in table.columns if c.startswith("Embedding_")]
    if not emb:
        return []
    wells = table["Metadata_Well"].to_numpy()
    treatment = table["Metadata_Treatment"].to_numpy()
    x = _zscore(table[emb].to_numpy(np.float64))
    rows = []
    for col in (c for c in table.columns if c.startswith("Nuclei_")):
        y = table[col].to_numpy(np.float64)
        if not np.isfinite(y).all() or y.std() == 0:
            continue
        f = float(f_oneway(*[y[treatment == t] for t in np.unique(treatment)]).statistic)
        rows.append({"feature": col, "anova_f": f})
    rows = sorted(rows, key=lambda r: -r["anova_f"])[:n]
    for r in rows:
        r["r2_from_embeddings"] = readout_r2(x, table[r["feature"]].to_numpy(np.float64), wells)
    return rows


#: Object k-NN comparisons reported with paired counts: (a, b).
PAIRS = (("image+shape", "handcrafted"), ("all", "handcrafted"), ("all", "image+shape"))


def readout_r2(features: np.ndarray, values: np.ndarray, wells: np.ndarray, ridge: float = 1.0) -> float:
    """R² of ``values`` ``(n_objects,)`` read linearly from ``features``, leave one well out.

    Ridge regression (penalty ``ridge``, intercept not shrunk) on standardised features,
    fitted without the objects of the well predicted.
    """
    y = (values - values.mean()) / values.std()
    var = features.var(axis=0)
    x = (features - features.mean(axis=0)) / np.sqrt(np.maximum(var, 1e-300))
    pred = np.empty_like(y)
    for w in np.unique(wells):
        train = wells != w
        a = np.c_[x[train], np.ones(int(train.sum()))]
        penalty = ridge * np.eye(a.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        beta = np.linalg.solve(a.T @ a + penalty, a.T @ y[train])
        pred[~train] = np.c_[x[~train], np.ones(int((~train).sum()))] @ beta
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum(y**2))


#: pycytominer's usual feature selection before profiling (:func:`selected_columns`).
SELECT_OPERATIONS = ["variance_threshold", "correlation_threshold", "drop_na_columns"]


def selected_columns(table: Any, columns: list[str]) -> list[str]:
    """The ``columns`` that pycytominer's ``feature_select`` keeps (:data:`SELECT_OPERATIONS`).

    Its defaults: among features correlated above 0.9 (Pearson, over the objects), one is
    kept; near-constant and mostly missing features are dropped.  Profiling pipelines do
    this before comparing profiles, so a feature set that measures one property many
    times (size: volume, surface area, axis lengths, integrated intensity...) no longer
    weighs it many times.
    """
    from pycytominer import feature_select

    kept = feature_select(table[columns], features=list(columns), operation=SELECT_OPERATIONS)
    return [c for c in columns if c in kept.columns]


def evaluate(table: Any, treatments: dict[str, str], *, select: bool = False) -> dict[str, dict[str, Any]]:
    """All metrics for all feature sets of an object table (pandas DataFrame).

    ``out["paired"]`` compares the object k-NN of the feature sets in :data:`PAIRS`.  With
    ``select``, each set is first reduced to the columns pycytominer's feature selection
    keeps (:func:`selected_columns`, over the set's own columns).
    """
    cols = {
        "handcrafted": [c for c in table.columns if c.startswith("Nuclei_")],
        "image": [c for c in table.columns if c.startswith("Embedding_Image_")],
        "shape": [c for c in table.columns if c.startswith("Embedding_Shape_")],
    }
    sets = {
        "handcrafted": ["handcrafted"],
        "image": ["image"],
        "shape": ["shape"],
        "image+shape": ["image", "shape"],
        "all": ["handcrafted", "image", "shape"],
    }
    wells = table["Metadata_Well"].to_numpy()
    labels = np.array([treatments[w] for w in wells])
    well_names = sorted(set(wells))
    well_labels = np.array([treatments[w] for w in well_names])
    out: dict[str, dict[str, Any]] = {}
    correct = {}
    volume = None
    if "Nuclei_AreaShape_Volume" in table:
        volume = table["Nuclei_AreaShape_Volume"].to_numpy(np.float64)
    for name, parts in sets.items():
        chosen = {p: cols[p] for p in parts}
        if select:
            kept = set(selected_columns(table, [c for p in parts for c in cols[p]]))
            chosen = {p: [c for c in cols[p] if c in kept] for p in parts}
        blocks = [table[chosen[p]].to_numpy(np.float64) for p in parts if chosen[p]]
        per_object = combine(blocks)
        profile_blocks = [np.stack([np.nanmedian(b[wells == w], axis=0) for w in well_names]) for b in blocks]
        profiles = combine(profile_blocks)
        correct[name] = knn_correct(per_object, labels, wells)
        out[name] = {
            "n_features": int(sum(b.shape[1] for b in blocks)),
            "mAP": mean_average_precision(profiles, well_labels),
            "well_1nn_accuracy": well_1nn_accuracy(profiles, well_labels),
            "object_knn_accuracy": float(np.mean(correct[name])),
        }
        if volume is not None:
            out[name].update(size_dependence(per_object, np.log(volume), wells))
    n_wells, reps = len(well_names), len(well_names) // len(set(well_labels))
    out["chance"] = {
        "n_features": 0,
        "mAP": float("nan") if n_wells < 2 else (reps - 1) / (n_wells - 1),
        "well_1nn_accuracy": 1 / len(set(well_labels)),
        "object_knn_accuracy": 1 / len(set(well_labels)),
    }
    out["paired"] = {f"{a} vs {b}": paired_knn(correct, a, b, wells, labels) for a, b in PAIRS}
    return out


# -- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny plates, 2 epochs (smoke test)")
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--train-replicates", type=int, default=None)
    # default: the product's own (``default_epochs``: 30, or more for at least MIN_STEPS steps)
    parser.add_argument("--epochs-image", type=int, default=None)
    parser.add_argument("--epochs-shape", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--model-seed", type=int, default=0, help="seed of the encoders' training (the plates keep theirs)"
    )
    parser.add_argument("--strength", type=float, default=1.0, help="treatment effect size (0.5: half dose)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument(
        "--tables", type=Path, default=None,
        help="also keep each evaluated plate's object table here (<plate>-objects.parquet, with treatments)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    from dls_microscopy.pipeline.embeddings import train_from_files
    from dls_microscopy.pipeline.features import run_features
    from dls_microscopy.sample_data.phenotypes import write_phenotype_plate

    well_options: dict[str, Any] = {"strength": args.strength}
    if args.quick:
        args.replicates, args.epochs_image, args.epochs_shape = 2, 2, 2
        args.train_replicates = None
        well_options.update(shape=(36, 128, 128), n_nuclei=8)
    if args.train_replicates is None:
        args.train_replicates = args.replicates
    work = Path(tempfile.mkdtemp(prefix="dls-bench-embeddings-", dir=args.tmp))
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "platform": platform.platform(),
        "cpu_threads": args.threads,
        "torch": torch.__version__,
        "quick": args.quick,
        "replicates": args.replicates,
        "strength": args.strength,
        "train_replicates": args.train_replicates,
        "train_seed": TRAIN_SEED,
        "model_seed": args.model_seed,
        "eval_seeds": EVAL_PLATES,
    }
    try:
        t0 = time.perf_counter()
        train_layout = write_phenotype_plate(
            work / "train", plate="train", seed=TRAIN_SEED, replicates=args.train_replicates, **well_options
        )
        layouts = {
            name: write_phenotype_plate(
                work / name, plate=name, seed=seed, replicates=args.replicates, **well_options
            )
            for name, seed in EVAL_PLATES.items()
        }
        results["generate_s"] = round(time.perf_counter() - t0, 2)
        log(f"plates written in {results['generate_s']} s")
        pairs = [(str(work / "train" / w["path"]), "nuclei") for w in train_layout.values()]
        models, training = {}, {}
        for kind, epochs in (("image", args.epochs_image), ("shape", args.epochs_shape)):
            t = time.perf_counter()
            res = train_from_files(
                pairs, kind=kind, out=work / f"{kind}.pt", epochs=epochs, seed=args.model_seed, device="cpu",
                threads=args.threads,
            )  # fmt: skip
            rec = res["record"]
            training[kind] = {
                "seconds": round(time.perf_counter() - t, 2),
                "n_objects": rec["training"]["n_objects"],
                "epochs": rec["training"]["epochs"],
                "loss_first": rec["training"]["loss_history"][0],
                "loss_last": rec["training"]["loss_history"][-1],
                "preprocessing": rec["preprocessing"],
                "arch": rec["arch"],
                "weights_sha256": rec["weights_sha256"],
            }
            models[kind] = res["model"]
            log(f"{kind} model: {training[kind]}")
        results["training"] = training

        results["plates"] = {}
        for plate, layout in layouts.items():
            frames, stage_s = [], {"measure": 0.0, "meshes": 0.0, "embeddings": 0.0}
            for well, w in sorted(layout.items()):
                res = run_features(
                    work / plate / w["path"], "nuclei", work / "features" / plate / well, plate=plate,
                    well=well, meshes=True, embeddings=[models["image"], models["shape"]], device="cpu",
                )  # fmt: skip
                for k in stage_s:
                    stage_s[k] += res["timings_s"][k]
                frames.append(pq.read_table(work / "features" / plate / well / "objects.parquet").to_pandas())
            objects = pd.concat(frames, ignore_index=True)
            n_obj = len(objects)
            log(f"{plate}: {n_obj} objects evaluated")
            treatments = {well: w["treatment"] for well, w in layout.items()}
            if args.tables is not None:  # to evaluate other ways later, without training again
                args.tables.mkdir(parents=True, exist_ok=True)
                kept = objects.assign(Metadata_Treatment=objects["Metadata_Well"].map(treatments))
                kept.to_parquet(args.tables / f"{plate}-objects.parquet")
            results["plates"][plate] = {
                "seed": EVAL_PLATES[plate],
                "n_objects": n_obj,
                "n_wells": len(layout),
                "metrics": evaluate(objects, treatments),
                "metrics_selected": evaluate(objects, treatments, select=True),
                "coverage": coverage(
                    objects.assign(Metadata_Treatment=objects["Metadata_Well"].map(treatments))
                ),
            }
        results["speed"] = _speed(work / "test", layouts["test"], models, stage_s, n_obj, args.threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(results, args.out)
    return 0


def _speed(
    work: Path,
    layout: dict[str, Any],
    models: dict[str, str],
    stage_s: dict[str, float],
    n_obj: int,
    threads: int,
) -> dict[str, Any]:
    """objects/s of each stage; each embedding model timed alone with apply_embeddings."""
    from dls_microscopy.features.embeddings import apply_embeddings
    from dls_microscopy.pipeline.features import open_feature_inputs

    per_model = dict.fromkeys(models, 0.0)
    for w in layout.values():
        image, lab, (data, _) = open_feature_inputs(work / w["path"], "nuclei")
        img, labels = np.asarray(data), np.asarray(lab.data)  # in memory: time the computation, not IO
        for kind, path in models.items():
            t = time.perf_counter()
            apply_embeddings(img, labels, path, spacing=image.spacing, device="cpu", threads=threads)
            per_model[kind] += time.perf_counter() - t
    base = n_obj / stage_s["measure"]
    rows = {"measure_objects (handcrafted, baseline)": n_obj / stage_s["measure"]}
    rows["mesh descriptors"] = n_obj / stage_s["meshes"]
    rows["image embedding (crops + CNN)"] = n_obj / per_model["image"]
    rows["shape embedding (meshes + PointNet)"] = n_obj / per_model["shape"]
    return {k: {"objects_per_s": v, "ratio_to_baseline": v / base} for k, v in rows.items()}


def _quality_lines(metrics: dict[str, Any]) -> list[str]:
    """Markdown tables of one plate's metrics (:func:`evaluate`)."""
    lines = [
        "| features | n features | replicate mAP | well 1-NN acc. | object k-NN acc. (k=10, LOWO) "
        "| size: share of profile | size: R² (LOWO) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in metrics.items():
        if name == "paired":
            continue
        size = "| | |"
        if "size_share" in r:
            size = f"| {r['size_share']:.3f} | {r['size_r2']:.3f} |"
        lines.append(
            f"| {name} | {r['n_features']} | {r['mAP']:.3f} | {r['well_1nn_accuracy']:.3f} | "
            f"{r['object_knn_accuracy']:.3f} {size}"
        )
    lines += [
        "",
        "| object k-NN, A vs B | only A right | only B right | McNemar p (exact) "
        "| A − B [95 % interval, wells resampled] |",
        "|---|---:|---:|---:|---|",
    ]
    for pair, c in metrics["paired"].items():
        p_text = "< 0.001" if c["p_mcnemar"] < 0.001 else f"{c['p_mcnemar']:.3f}"
        ci = ""
        if "difference" in c:
            ci = f"{c['difference']:+.3f} [{c['ci95_low']:+.3f}, {c['ci95_high']:+.3f}]"
        lines.append(f"| {pair} | {c['only_a']} | {c['only_b']} | {p_text} | {ci} |")
    return lines


def _report(results: dict[str, Any], outdir: Path) -> None:
    lines = [
        f"# Embeddings benchmark ({results['date']})",
        "",
        f"Phenotype set: 5 treatments at strength {results.get('strength', 1.0)} × "
        f"{results['replicates']} wells per plate; encoders trained "
        f"self-supervised (seed {results.get('model_seed', 0)}) on plate seed {results['train_seed']} "
        f"({results.get('train_replicates', results['replicates'])} wells per treatment); "
        f"CPU, {results['cpu_threads']} threads, "
        f"torch {results['torch']}.",
    ]
    for plate, p in results["plates"].items():
        role = "tuning plate: the only one looked at while choosing settings" if plate == "val" else "result"
        lines += [
            "",
            f"## Quality, {plate} plate (seed {p['seed']}, {p['n_objects']} objects, {p['n_wells']} wells; "
            f"{role})",
            "",
        ]
        lines += _quality_lines(p["metrics"])
        if "metrics_selected" in p:
            lines += [
                "",
                "After pycytominer's feature selection (`feature_select`: "
                + ", ".join(SELECT_OPERATIONS)
                + ", over each set's columns):",
                "",
            ]
            lines += _quality_lines(p["metrics_selected"])
        if p.get("coverage"):
            lines += [
                "",
                "The handcrafted features that tell treatments apart best (one-way ANOVA F over objects), "
                "and the R² of their linear read-out from image + shape (wells left out):",
                "",
                "| feature | F | R² from embeddings |",
                "|---|---:|---:|",
            ]
            lines += [
                f"| {r['feature']} | {r['anova_f']:.0f} | {r['r2_from_embeddings']:.3f} |"
                for r in p["coverage"]
            ]
    lines += [
        "",
        "## Training",
        "",
        "| model | objects | epochs | seconds | loss first → last |",
        "|---|---:|---:|---:|---|",
    ]
    for kind, t in results["training"].items():
        lines.append(
            f"| {kind} | {t['n_objects']} | {t.get('epochs', '')} | {t['seconds']} | "
            f"{t['loss_first']:.3f} → {t['loss_last']:.3f} |"
        )
    lines += ["", "## Speed (CPU)", "", "| stage | objects/s | ratio to measure_objects |", "|---|---:|---:|"]
    for name, r in results["speed"].items():
        lines.append(f"| {name} | {r['objects_per_s']:.1f} | {r['ratio_to_baseline']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    outdir.mkdir(parents=True, exist_ok=True)
    stem = f"embeddings-{results['date']}" + ("-quick" if results["quick"] else "")
    if results.get("strength", 1.0) != 1.0:
        stem += f"-strength{results['strength']:g}"
    replicates = results.get("replicates", 4)
    if not results["quick"] and replicates != 4:  # nor overwrite the default plate's
        stem += f"-replicates{replicates}"
    if not results["quick"] and results.get("train_replicates", replicates) != replicates:
        stem += f"-train-replicates{results['train_replicates']}"
    if results.get("model_seed", 0) != 0:
        stem += f"-model-seed{results['model_seed']}"
    (outdir / f"{stem}.md").write_text(text, encoding="utf-8")
    (outdir / f"{stem}.json").write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
