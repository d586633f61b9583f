#!/usr/bin/env python
"""Pipeline benchmark: ``dls-microscopy run`` on the sample plate against the same steps called directly.

    .venv/bin/python benchmarks/run_pipeline.py [--sizes tiny|sample] [--budget 1GB] [--out DIR]
                                                [--tmp DIR] [--no-mesh] [--repeats N]

Data: the synthetic HCS plate of ``dls-microscopy sample --plate`` (``sample``: 2 × 2 wells ×
2 fields of (24, 64, 64) voxels, 2 channels; ``tiny``: 1 × 2 wells × 1 field of (16, 40, 40)).
Steps: segment (watershed) → mesh (GLB + shape descriptors) → features, as in the example
``pipeline.yaml``.

Every run is a fresh process (so its peak RSS is its own, read with ``os.wait4``):

1. ``pipeline``: ``dls-microscopy run`` on every field, from nothing: fields/hour, wall time,
   peak RSS against ``compute.memory_budget``.
2. ``baseline``: the same steps called directly, field after field, in one process
   (``segment_blockwise`` → ``export_meshes_command`` → ``run_features``, no manifests,
   no resume, no tables at the end): the ratio pipeline ÷ baseline is the runner's cost.
3. ``resume``: the pipeline again on the finished output (every field skipped).
4. Per-step time breakdown: seconds per step summed over fields, from the fields' manifests.

Markdown goes to stdout and ``benchmarks/results/pipeline-<date>.md``, JSON to
``benchmarks/results/pipeline-<date>.json`` (or ``--out DIR``).  The 1 vs 2 worker scaling
table belongs to the cluster benchmark (``compute_context``), not here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"rows": ("A",), "columns": ("01", "02"), "fields": 1, "shape": (16, 40, 40)},
    "sample": {"rows": ("A", "B"), "columns": ("01", "02"), "fields": 2, "shape": (24, 64, 64)},
}

BASELINE = """
import json, sys, time
from pathlib import Path
from dls_microscopy.geometry.command import export_meshes_command
from dls_microscopy.io import open_volume
from dls_microscopy.pipeline.features import run_features
from dls_microscopy.pipeline.fields import discover_fields
from dls_microscopy.segment import get_segmenter, segment_blockwise

plate, out, budget, mesh = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
steps = {"segment": 0.0, "mesh": 0.0, "features": 0.0}
for f in discover_fields(plate):
    t = time.perf_counter()
    vol = open_volume(f.source)
    seg = get_segmenter("watershed", {"diameter_um": 7.0}, device="cpu")
    lab = out / f.key / "labels.ome.zarr"
    segment_blockwise(vol, seg, channel="DAPI", memory_budget=budget, output=lab, label_name="nuclei")
    steps["segment"] += time.perf_counter() - t
    t = time.perf_counter()
    if mesh:
        export_meshes_command(lab, out / f.key / "meshes", smooth=20,
                              descriptors_path=out / f.key / "shape.parquet", memory_budget=budget)
    steps["mesh"] += time.perf_counter() - t
    t = time.perf_counter()
    run_features(f.source, lab, out / f.key / "features", plate=f.plate, well=f.well, site=f.site,
                 memory_budget=budget)
    steps["features"] += time.perf_counter() - t
print(json.dumps(steps))
"""


def log(message: str) -> None:
    print(f"[run_pipeline {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_with_rss(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` and read its own peak RSS with ``os.wait4`` (POSIX)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed with exit code {proc.returncode}")
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "stdout": stdout}


def write_config(folder: Path, plate: Path, budget: str, mesh: bool) -> Path:
    mesh_step = "  mesh:\n    smooth: 20\n    descriptors: true\n" if mesh else ""
    text = (
        f"input:\n  path: {plate}\noutput:\n  path: {folder / 'run'}\nsteps:\n"
        "  segment:\n    channel: DAPI\n    params: {diameter_um: 7.0}\n"
        + mesh_step
        + f"  features: {{}}\ncompute:\n  memory_budget: {budget}\n  device: cpu\n"
    )
    cfg = folder / "pipeline.yaml"
    cfg.write_text(text)
    return cfg


def step_breakdown(run_dir: Path) -> dict[str, float]:
    total: dict[str, float] = {}
    for manifest in sorted((run_dir / "fields").glob("*/manifest.json")):
        for step, s in json.loads(manifest.read_text())["timings_s"].items():
            total[step] = total.get(step, 0.0) + s
    order = ["open", "segment", "mesh", "features", "embeddings", "write"]
    return {k: total[k] for k in sorted(total, key=lambda k: order.index(k) if k in order else len(order))}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def markdown(res: dict[str, Any]) -> str:
    p, b, r = res["pipeline"], res["baseline"], res["resume"]
    n = res["n_fields"]
    out = [
        f"# Pipeline benchmark ({res['date']}, sizes={res['sizes']}, {n} fields, run {res['wall_s']:.0f} s)",
        "",
        f"Machine: {res['machine']['cpus']} usable cores, Python {res['machine']['python']}, "
        f"1-min load {res['machine']['load_start']:.1f} at start (shared machine). "
        f"Steps: {', '.join(res['steps'])}; memory budget {res['budget']} "
        f"({res['budget_bytes'] / 2**20:.0f} MiB).",
        "",
        f"## 1. Whole runs (fresh processes, best of {res['repeats']} interleaved rounds; "
        "baseline = the same steps called directly)",
        "",
        table(
            ["run", "wall s", "fields/hour", "peak RSS MiB", "RSS ÷ budget", "÷ baseline wall"],
            [
                [
                    k,
                    f"{v['wall_s']:.1f}",
                    f"{3600 * n / v['wall_s']:.0f}" if v is not r else "–",
                    f"{v['peak_rss_bytes'] / 2**20:.0f}",
                    f"{v['peak_rss_bytes'] / res['budget_bytes']:.2f}",
                    f"{v['wall_s'] / b['wall_s']:.2f}",
                ]
                for k, v in (
                    ("pipeline (`dls-microscopy run`)", p),
                    ("baseline (direct calls)", b),
                    ("resume (all skipped)", r),
                )
            ],
        ),
        "",
        "## 2. Per-step time, summed over fields (from the best round of each)",
        "",
        table(
            ["step", "pipeline s", "share", "baseline s", "pipeline ÷ baseline"],
            [
                [
                    s,
                    f"{t:.2f}",
                    f"{100 * t / max(sum(res['steps_s'].values()), 1e-9):.0f} %",
                    f"{res['baseline_steps_s'].get(s, float('nan')):.2f}"
                    if s in res["baseline_steps_s"]
                    else "–",
                    f"{t / res['baseline_steps_s'][s]:.2f}" if res["baseline_steps_s"].get(s) else "–",
                ]
                for s, t in res["steps_s"].items()
            ],
        ),
        "",
        "Wall time includes Python start-up and imports (both runs) and, for the pipeline, input "
        "digests for the manifests, the run log and the run's tables.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", choices=sorted(SIZES), default="sample")
    parser.add_argument("--budget", default="1GB", help="compute.memory_budget of the runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--no-mesh", action="store_true", help="leave the mesh step out")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; best of each is kept")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE.parent / "src"))
    from dls_microscopy.pipeline.config import parse_size
    from dls_microscopy.sample_data.plate import write_synthetic_plate

    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dls-bench-pipeline-", dir=args.tmp))
    try:
        size = SIZES[args.sizes]
        plate = write_synthetic_plate(tmp / "plate.ome.zarr", **size)
        n_fields = len(size["rows"]) * len(size["columns"]) * size["fields"]
        cfg = write_config(tmp, plate, args.budget, not args.no_mesh)
        cli = [sys.executable, "-m", "dls_microscopy.cli", "run", str(cfg), "--no-progress", "--json"]
        budget = parse_size(args.budget)
        base_cmd = [sys.executable, "-c", BASELINE, str(plate), "", str(budget), "0" if args.no_mesh else "1"]
        pipeline: dict[str, Any] = {}
        baseline: dict[str, Any] = {}
        steps_s: dict[str, float] = {}
        baseline_steps: dict[str, float] = {}
        for r in range(args.repeats):  # interleaved, best wall time of each (the machine is shared)
            log(f"round {r + 1}/{args.repeats}: pipeline on {n_fields} fields")
            shutil.rmtree(tmp / "run", ignore_errors=True)
            p = run_with_rss(cli)
            assert json.loads(p.pop("stdout"))["done"] == n_fields
            if not pipeline or p["wall_s"] < pipeline["wall_s"]:
                pipeline, steps_s = p, step_breakdown(tmp / "run")
            log(f"round {r + 1}/{args.repeats}: baseline")
            base_cmd[4] = str(tmp / f"baseline{r}")
            b = run_with_rss(base_cmd)
            b_steps = json.loads(b.pop("stdout").strip().splitlines()[-1])
            if not baseline or b["wall_s"] < baseline["wall_s"]:
                baseline, baseline_steps = b, b_steps
        log("resume")
        resume = run_with_rss(cli)
        assert json.loads(resume.pop("stdout"))["skipped"] == n_fields
        res = {
            "date": dt.date.today().isoformat(),
            "sizes": args.sizes,
            "n_fields": n_fields,
            "budget": args.budget,
            "budget_bytes": budget,
            "steps": ["segment", *([] if args.no_mesh else ["mesh"]), "features"],
            "pipeline": pipeline,
            "resume": resume,
            "baseline": baseline,
            "repeats": args.repeats,
            "steps_s": steps_s,
            "baseline_steps_s": {k: v for k, v in baseline_steps.items() if v > 0},
            "machine": {
                "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "python": platform.python_version(),
                "load_start": os.getloadavg()[0],
            },
        }
        res["wall_s"] = time.perf_counter() - t_all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = markdown(res)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"pipeline-{res['date']}.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / f"pipeline-{res['date']}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
