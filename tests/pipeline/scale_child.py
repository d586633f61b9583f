"""Child process of the scale test: run a pipeline and report its own peak RSS growth.

    python scale_child.py WARMUP.yaml RUN.yaml REPORT.json [CGROUP_PROCS]

1. imports the pipeline and runs ``WARMUP.yaml`` (a small field through the same
   steps and the same multi-block code paths), so that lazily imported modules,
   compiled kernels and thread pools are part of the baseline and not of the
   measured run;
2. resets the kernel's peak-RSS mark (``VmHWM``, through ``/proc/self/clear_refs``)
   and takes the RSS as the baseline; writes it to ``REPORT.json.base`` (the
   parent's watchdog reads it) and, given ``CGROUP_PROCS``, moves itself into that
   memory cgroup (whose limit the parent set: from now on its new memory is charged
   there, so the limit applies to the growth over the baseline);
3. runs ``RUN.yaml`` and records the RSS growth when each step starts, the peak
   growth of each step (the mark is reset when a step starts; it includes what
   earlier steps still hold) and of the whole run; writes ``REPORT.json``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path


def _status(key: str) -> int:
    """``VmRSS``/``VmHWM`` of this process in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


class _StepPeaks:
    """Progress hook of ``run_pipeline``: peak RSS growth of each step over ``base``."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.current: str | None = None
        self.peaks: dict[str, int] = {}
        self.starts: dict[str, int] = {}
        self.overall = 0

    def _close(self) -> None:
        peak = _status("VmHWM") - self.base
        self.overall = max(self.overall, peak)
        if self.current is not None:
            self.peaks[self.current] = max(self.peaks.get(self.current, 0), peak)
        _reset_peak()

    def __enter__(self) -> _StepPeaks:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, *, total: int, done: int, link: str | None) -> None:
        return None

    def step(self, key: str, step: str) -> None:
        self._close()
        self.current = step
        self.starts[step] = _status("VmRSS") - self.base

    def field_done(self, key: str, status: str) -> None:
        self._close()
        self.current = "collect"


def main(argv: list[str]) -> int:
    warmup, config, report = argv[0], argv[1], Path(argv[2])
    procs = argv[3] if len(argv) > 3 else None
    from dls_microscopy.pipeline.run import run_pipeline

    t0 = time.perf_counter()
    warm = run_pipeline(warmup, progress=False, force=True)
    if not warm.ok:
        print(f"warm-up failed: {warm.to_dict()['fields']}", flush=True)
        return 1
    warm_s = time.perf_counter() - t0
    gc.collect()
    _reset_peak()
    base = _status("VmRSS")
    # the watchdog's baseline: anonymous memory (see test_scale._Watchdog._rss)
    Path(f"{report}.base").write_text(str(_status("RssAnon") + _status("RssShmem")))
    if procs is not None:
        Path(procs).write_text(str(os.getpid()))
    hook = _StepPeaks(base)
    t0 = time.perf_counter()
    summary = run_pipeline(config, progress=hook, force=True)
    seconds = time.perf_counter() - t0
    hook._close()
    result = {
        "base_rss": base,
        "peak_growth": hook.overall,
        "step_peak_growth": hook.peaks,
        "step_start_growth": hook.starts,
        "seconds": seconds,
        "warmup_seconds": warm_s,
        "summary": summary.to_dict(),
    }
    report.write_text(json.dumps(result, indent=2))
    for f in summary.failed:
        print(f"{f.key} failed: {f.reason}", flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
