"""Command line interface: ``dls-microscopy COMMAND``.

Parsing, progress bars and exit codes only; all work is done by the library.
Exit codes: 0 success, 2 bad input or configuration, a usage error, or unwritable
output (one line naming the file and the reason), 3 ``run`` finished but some fields
failed (listed with their reasons), 130 interrupted, 1 ``verify`` found a mismatch, a
cluster failed or an internal error (see :mod:`._entry`).

Modules: ``_common`` (the typer :data:`app`, consoles, ``--memory-budget`` parsing, progress
bars), ``_entry`` (:func:`main` and the exit codes), and one module per group of commands:
``data`` (info, convert), ``segment`` (segment, evaluate), ``features`` (mesh, features,
verify), ``run``, ``config``, ``embed``, ``sample`` and ``gui``. Importing a command module
registers its commands on :data:`app`; heavy libraries are imported only inside the commands.
"""

from __future__ import annotations

from dls_microscopy.cli._common import RichProgress, app, parse_size
from dls_microscopy.cli._entry import main

# isort: off
# The import order of the command modules is the order of the commands in ``--help`` and in the
# generated CLI reference of the docs.
from dls_microscopy.cli import data, segment, features, run, config, embed, sample, gui  # noqa: F401

# isort: on
from dls_microscopy.cli.run import EXIT_FIELDS_FAILED

__all__ = ["EXIT_FIELDS_FAILED", "RichProgress", "app", "main", "parse_size"]
