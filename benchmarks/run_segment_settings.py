#!/usr/bin/env python
"""Object accuracy of the watershed's seed settings, on synthetic, semi-synthetic and real nuclei.

    .venv/bin/python benchmarks/run_segment_settings.py [--quick] [--out DIR] [--tmp DIR]

What it answers: how each way of finding one seed per nucleus (``seed_contrast`` on or off,
``seed_method`` distance / intensity / combined), and the ``depth_correction`` of the
threshold, do on volumes of different kinds, so that settings are chosen across them rather
than for one.  The baseline is the default setting
(``seed_method: distance``, ``seed_contrast: null``).

Volumes (each segmented in memory with ``diameter_um`` = its nuclei's diameter):

* five from ``make_synthetic_nuclei`` (touching nuclei, no dim line between them): dense
  near-isotropic, anisotropic (2 µm z), denser (``density=0.7``), dimming with depth (the
  deepest nuclei of the 48 µm stack at a quarter of the top ones') and sparse;
* ``load_nuclei_1135()``: real confocal nuclei of a plant ovule, 54 gold labels;
* from ``../shared/data`` when present: StarDist's synthetic 3D nuclei (their authors flag
  them synthetic; 1 µm voxels assumed) and the IDR image 6001240, a mouse blastocyst whose
  inner-cell-mass nuclei are packed against each other (DAPI, levels 0 and 1; 61 labelled
  nuclei, not exhaustive: predictions that overlap no label are ignored).

Real-data diameters are the median equivalent diameter of the labelled nuclei away from the
border.  Scores: F1 at IoU 0.5 and 0.75 (:func:`dls_microscopy.segment.metrics.match_objects`),
and their mean over the volumes.  ``--quick``: the sparse synthetic volume and the real crop,
two settings.
Markdown to stdout and ``benchmarks/results/segment-settings-<date>.md``, JSON beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_segment import SHARED_DATA, Case, idr_case, median_diameter, real_crop_case, scores  # noqa: E402

#: name -> WatershedParams overrides; the first is the baseline.
SETTINGS: dict[str, dict[str, Any]] = {
    "distance (default, baseline)": {},
    "distance, seed_contrast 0.6": {"seed_contrast": 0.6},
    "distance, seed_contrast 0.7": {"seed_contrast": 0.7},
    "distance, seed_contrast 0.8": {"seed_contrast": 0.8},
    "intensity": {"seed_method": "intensity"},
    "combined": {"seed_method": "combined"},
    "combined, seed_contrast 0.7": {"seed_method": "combined", "seed_contrast": 0.7},
    "distance, depth_correction": {"depth_correction": True},
    "distance, seed_contrast 0.7, depth_correction": {"seed_contrast": 0.7, "depth_correction": True},
}

#: The settings of ``--quick``.
QUICK = ("distance (default, baseline)", "distance, seed_contrast 0.7")
#: (name, shape, spacing µm, diameter µm, seed, density, attenuation length µm) of the
#: synthetic volumes (200 µm: the generator's default, a 48 µm stack dims by a fifth).
SYNTHETIC = (
    ("dense", (48, 192, 192), (1.0, 0.3, 0.3), 7.0, 0, 0.5, 200.0),
    ("anisotropic", (24, 128, 128), (2.0, 0.4, 0.4), 10.0, 0, 0.5, 200.0),
    ("denser", (48, 160, 160), (1.0, 0.3, 0.3), 7.0, 1, 0.7, 200.0),
    ("dimming with depth", (48, 160, 160), (1.0, 0.3, 0.3), 7.0, 3, 0.5, 35.0),
    ("sparse", (32, 128, 128), (0.5, 0.25, 0.25), 6.0, 2, 0.3, 200.0),
)


def log(msg: str) -> None:
    """Progress on stderr."""
    print(msg, file=sys.stderr, flush=True)


def cases(tmp: Path, quick: bool) -> list[Case]:
    """The volumes, in the order of the table."""
    from dls_microscopy.sample_data import make_synthetic_nuclei

    out = []
    for name, shape, spacing, diameter, seed, density, attenuation in SYNTHETIC[-1:] if quick else SYNTHETIC:
        s = make_synthetic_nuclei(
            shape,
            spacing=spacing,
            diameter_um=diameter,
            seed=seed,
            density=density,
            attenuation_length_um=attenuation,
        )
        out.append(Case(f"synthetic {name}", s.image[0], s.labels, s.spacing, diameter, tmp, 0))
    out.append(real_crop_case(tmp))
    if quick:
        return out
    star = SHARED_DATA / "stardist_synthetic3d"
    if star.is_dir():
        import tifffile

        mask = tifffile.imread(star / "mask3d.tif")
        out.append(Case("StarDist synthetic 3D", tifffile.imread(star / "img3d.tif"), mask, (1.0, 1.0, 1.0),
                        median_diameter(mask, (1.0, 1.0, 1.0)), tmp, 0))  # fmt: skip
    for level in (0, 1):
        case = idr_case(level)
        if case is not None:
            out.append(case)
    return out


def score(case: Case, params: dict[str, Any]) -> dict[str, Any]:
    """Segment ``case`` with ``params``; :func:`run_segment.scores` of the result and the seconds taken."""
    from dls_microscopy.segment.watershed import WatershedSegmenter

    seg = WatershedSegmenter(diameter_um=case.diameter, device="cpu", backend="cpu", **params)
    t = time.perf_counter()
    labels = seg.segment(case.image, spacing=case.spacing)
    seconds = time.perf_counter() - t
    return {**scores(labels, case), "seconds": round(seconds, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small volumes, two settings")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = {k: SETTINGS[k] for k in QUICK} if args.quick else SETTINGS
    tmp = Path(tempfile.mkdtemp(prefix="dls-bench-segment-settings-", dir=args.tmp))
    try:
        volumes = cases(tmp, args.quick)
        results: dict[str, Any] = {"date": dt.date.today().isoformat(), "quick": args.quick, "volumes": []}
        for case in volumes:
            row: dict[str, Any] = {
                "name": case.name,
                "diameter_um": round(case.diameter, 2),
                "spacing_um": list(case.spacing),
                "shape": list(case.image.shape),
                "scores": {},
            }
            for name, params in settings.items():
                row["scores"][name] = score(case, params)
            log(f"{case.name}: " + ", ".join(f"{s['f1_05']:.3f}" for s in row["scores"].values()))
            results["volumes"].append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["mean"] = {
        name: {
            k: float(np.mean([v["scores"][name][k] for v in results["volumes"]])) for k in ("f1_05", "f1_075")
        }
        for name in settings
    }
    _report(results, list(settings), args.out)
    return 0


def _report(results: dict[str, Any], names: list[str], outdir: Path) -> None:
    lines = [
        f"# Watershed seed settings ({results['date']})",
        "",
        "F1 at IoU 0.5 / 0.75 per volume (CPU path, in memory, diameter = the nuclei's).",
        "",
        "| volume | d (µm) | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for v in results["volumes"]:
        cells = [f"{v['scores'][n]['f1_05']:.3f} / {v['scores'][n]['f1_075']:.3f}" for n in names]
        lines.append(f"| {v['name']} | {v['diameter_um']:g} | " + " | ".join(cells) + " |")
    mean = [f"**{results['mean'][n]['f1_05']:.3f} / {results['mean'][n]['f1_075']:.3f}**" for n in names]
    lines.append("| mean | | " + " | ".join(mean) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    outdir.mkdir(parents=True, exist_ok=True)
    stem = f"segment-settings-{results['date']}" + ("-quick" if results["quick"] else "")
    (outdir / f"{stem}.md").write_text(text, encoding="utf-8")
    (outdir / f"{stem}.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
