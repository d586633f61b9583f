"""The ``sample`` command: write the bundled sample data (and, optionally, a plate and configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dls_microscopy.cli._common import app, out


@app.command(epilog="Example: dls-microscopy sample ./sample_data")
def sample(
    outdir: Annotated[Path, typer.Argument(help="Folder to write the sample data into.")],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic volume.")] = 0,
    plate: Annotated[
        bool, typer.Option(help="Also write a synthetic HCS plate and pipeline configs for 'run'.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace sample files that exist (an edited pipeline.yaml included).")
    ] = False,
) -> None:
    """Write the bundled sample data: a synthetic 2-channel nuclei volume with labels, and a real one."""
    from dls_microscopy.errors import OutputError
    from dls_microscopy.sample_data import SAMPLE_FILES, write_sample_data
    from dls_microscopy.sample_data.plate import PIPELINE_SAMPLE_FILES

    names = SAMPLE_FILES + (PIPELINE_SAMPLE_FILES if plate else ())
    there = [name for name in names if (outdir / name).exists()]
    if there and not overwrite:
        raise OutputError(
            f"{', '.join(there)} already there (use --overwrite to replace the sample files)", path=outdir
        )
    written = write_sample_data(outdir, seed=seed)
    if plate:
        from dls_microscopy.sample_data.plate import write_pipeline_samples

        written.update(write_pipeline_samples(outdir, seed=seed))
    for name, p in written.items():
        out.print(f"{name}: {p}")
