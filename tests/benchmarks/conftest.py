"""Shared by the benchmark smoke tests: run one benchmark script in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_benchmark(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_benchmark(script, *args, out=..., timeout=..., tmp=True)``: run with ``--out out``
    and, unless ``tmp=False`` (a script that writes no scratch files), ``--tmp tmp_path``.

    The timeout only catches a hang: the segment benchmark's tiny run takes about 60 s alone
    on 2 cores and passed 120 s beside another test worker and a busy machine."""

    def run(
        script: Path, *args: str, out: Path, timeout: float = 360, tmp: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(script), *args, "--out", str(out)]
        cmd += ["--tmp", str(tmp_path)] if tmp else []
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)

    return run
