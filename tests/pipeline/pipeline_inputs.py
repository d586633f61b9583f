"""Pipeline configuration files for the run tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_config(
    folder: Path, input_path: str | Path, *, output: str = "out", steps: str | None = None, extra: str = ""
) -> Path:
    """A pipeline.yaml in ``folder`` (segment + features by default, CPU, small budget)."""
    steps = (
        steps
        or """\
        segment:
          channel: DAPI
          params: {diameter_um: 7}
        features:
          channels: [DAPI, LaminB1]
    """
    )
    text = (
        f"input:\n  path: {input_path}\noutput:\n  path: {output}\nsteps:\n"
        + textwrap.indent(textwrap.dedent(steps), "  ")
        + "compute:\n  memory_budget: 256MB\n  device: cpu\n"
        + extra
    )
    p = folder / "pipeline.yaml"
    p.write_text(text)
    return p
