"""The ``dls-microscopy`` typer app and what every command shares.

The root callback (``--verbose``, ``--version``), the stdout/stderr consoles, size parsing
(``--memory-budget``) and rich progress bars. Commands register themselves on :data:`app` from
their own modules (see :mod:`dls_microscopy.cli`).
"""

from __future__ import annotations

import logging
import math
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dls_microscopy import __version__
from dls_microscopy.errors import InputError

app = typer.Typer(
    name="dls-microscopy",
    help="Out-of-core 3D microscopy analysis: inspect, convert and analyse huge images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# no markup in what is printed: paths and names may hold brackets ("plate[1]"), which rich read
# as style tags (dropped, or a MarkupError for "[/x]"), and colons (":ok:"), which it read as
# emoji codes; the few styled words pass markup=True
out = Console(markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)
log = logging.getLogger("dls_microscopy")


def parse_size(text: str) -> int:
    """Parse ``"2GB"``, ``"512MiB"``, ``"1e9"`` into bytes (the pipeline config's rules)."""
    from dls_microscopy.pipeline._config_size import positive_size

    return positive_size(text)


def channel_arg(text: str) -> int | str:
    """A ``--channel`` value: an index when it is all digits, else a channel name."""
    return int(text) if text.isdigit() else text


SPACING_HELP = (
    "Voxel size in µm at full resolution, in place of the file's: Z,Y,X (e.g. 2,0.65,0.65) "
    "or one value for all axes."
)
SpacingOption = Annotated[str | None, typer.Option("--spacing", metavar="<z,y,x>", help=SPACING_HELP)]
"""The ``--spacing`` option of every command that opens an image."""

LevelOption = Annotated[
    int,
    typer.Option(
        min=0, help="Resolution level to read, of the images and their labels (0: full resolution)."
    ),
]
"""The ``--level`` option of the commands that read an image with its labels."""


def parse_spacing(text: str | None) -> tuple[float, ...] | None:
    """A ``--spacing`` value (``"2,0.65,0.65"`` or ``"0.5"``) as floats; None when not given.

    Only the numbers are checked here; their count against the image's axes is checked
    when the image is opened (:meth:`~dls_microscopy.volume.Volume.with_spacing`).
    """
    if text is None:
        return None
    parts = text.strip().replace(" ", ",").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise InputError(
            f"--spacing {text!r} is not a voxel size: give positive numbers of µm, Z,Y,X "
            "(e.g. 2,0.65,0.65) or one for all axes"
        )
    return values


class RichProgress:
    """A :data:`~dls_microscopy.io.zarr_write.ProgressCallback` drawing rich bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),  # may name a file or label image
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, description: str, done: int, total: int) -> None:
        if description not in self.tasks:
            self.tasks[description] = self.progress.add_task(description, total=total)
        self.progress.update(self.tasks[description], completed=done, total=total)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"dls-microscopy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")
    ] = 0,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
) -> None:
    """DLS Microscopy command line."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    # before worker threads exist: fixed glibc mmap threshold and 2 malloc arenas keep
    # RSS near the memory budget (DLS_MALLOC_TUNING=0 turns this off)
    from dls_microscopy._allocator import bound_allocator

    bound_allocator()
