"""The ``config`` group: the JSON schema of pipeline.yaml and its validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from dls_microscopy.cli._common import app, out

config_app = typer.Typer(help="Pipeline configuration: JSON schema and validation.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("schema", epilog="Example: dls-microscopy config schema > pipeline.schema.json")
def config_schema() -> None:
    """Print the JSON schema of pipeline.yaml."""
    from dls_microscopy.pipeline.config import config_json_schema

    sys.stdout.write(json.dumps(config_json_schema(), indent=2, sort_keys=True) + "\n")


@config_app.command("validate", epilog="Example: dls-microscopy config validate pipeline.yaml --resolved")
def config_validate(
    path: Annotated[Path, typer.Argument(help="Pipeline configuration (YAML).")],
    resolved: Annotated[
        bool, typer.Option(help="Print the configuration with every default and absolute paths.")
    ] = False,
    inputs: Annotated[
        bool,
        typer.Option(
            help="Also check the data (the input's fields; the first field's level, channels and labels), "
            "the embedding models and the batch system of compute.cluster (--no-inputs: the file alone)."
        ),
    ] = True,
) -> None:
    """Check a pipeline.yaml and its inputs; exit 2 naming the key (and line) of every problem."""
    from dls_microscopy.pipeline.config import load_config, naming_config_file

    cfg = load_config(path)
    found = ""
    if inputs:
        from dls_microscopy.pipeline.checks import check_inputs
        from dls_microscopy.pipeline.cluster import check_backend

        n = len(check_inputs(cfg, source=path))
        with naming_config_file(path):
            check_backend(cfg.compute)
        found = f"; {n} field{'s' if n != 1 else ''} in {cfg.input.path}"
    if resolved:
        sys.stdout.write(cfg.to_yaml())
    else:
        steps = ", ".join(cfg.steps.names())
        out.print(f"{path}: valid (steps: {steps}{found})", highlight=False, soft_wrap=True)
