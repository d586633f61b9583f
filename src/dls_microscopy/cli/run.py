"""The ``run`` command: a whole pipeline over every field of its input (exit 3: some fields failed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dls_microscopy.cli._common import app, err, out
from dls_microscopy.errors import InputError

# -- run ---------------------------------------------------------------------

#: Exit code of ``run`` when the run finished but some fields failed.
EXIT_FIELDS_FAILED = 3


@app.command(
    "run",
    epilog="Example: dls-microscopy run pipeline.yaml --workers 2   (exit 3: some fields failed)",
)
def run_command(
    config: Annotated[Path, typer.Argument(help="Pipeline configuration (YAML; see 'config schema').")],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Fields in parallel (a local Dask cluster of N workers).")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option(help="Compute backend: local, slurm or pbs (overrides the config).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo every field, even those already committed.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Run a pipeline over every field of its input: resumable; failed fields are listed (exit 3)."""
    from dls_microscopy.pipeline.run import run_pipeline

    if cluster is not None and cluster not in ("local", "slurm", "pbs"):
        raise InputError(f"--cluster must be local, slurm or pbs, got {cluster!r}")
    summary = run_pipeline(
        config, workers=workers, cluster=cluster, force=force, progress=progress and err.is_terminal
    )
    if as_json:
        out.print_json(json.dumps(summary.to_dict(), default=str))
    else:
        table = Table(
            title=f"run: {summary.count('done')} done, {summary.count('skipped')} skipped, "
            f"{summary.count('failed')} failed in {summary.seconds:.1f} s"
        )
        table.add_column("field", no_wrap=True)
        for column in ("well", "site", "status", "objects", "seconds"):
            table.add_column(column, no_wrap=True)
        table.add_column("reason", overflow="fold")
        shown = [f for f in summary.fields if f.status == "failed"]
        shown += [f for f in summary.fields if f.status != "failed"][: max(0, 20 - len(shown))]
        for f in sorted(shown, key=summary.fields.index):
            md = f.metadata
            objects = "" if f.n_objects is None else str(f.n_objects)
            well, site = md.get("Metadata_Well", ""), str(md.get("Metadata_Site", ""))
            table.add_row(f.key, well, site, f.status, objects, f"{f.seconds:.1f}", f.reason)
        if len(shown) < len(summary.fields):
            table.caption = f"{len(summary.fields) - len(shown)} more fields in run_summary.json"
        out.print(table)
        for name, p in summary.tables.items():
            out.print(f"{name}: {p}", highlight=False, soft_wrap=True)
        out.print(
            f"outputs, run.log and pipeline.resolved.yaml: {summary.output}", highlight=False, soft_wrap=True
        )
    if not summary.ok:
        err.print(f"[red]{summary.count('failed')} field(s) failed[/red] (see run_summary.json)", markup=True)
        raise typer.Exit(EXIT_FIELDS_FAILED)
