"""Exception hierarchy of DLS Microscopy.

Every error we raise on purpose derives from :class:`DlsError` and from the
builtin exception a Python user would expect (``ValueError``,
``FileNotFoundError``...), so both ``except DlsError`` and ``except
ValueError`` work.  Errors caused by the user's input derive from
:class:`InputError`; the CLI maps those to exit code 2 and prints their
message, which always names the offending file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ClusterConfigError",
    "ClusterError",
    "ConfigError",
    "CorruptDataError",
    "DimensionalityError",
    "DlsError",
    "FormatError",
    "InputError",
    "InputNotFoundError",
    "MetadataError",
    "ModelNotFoundError",
    "NonFiniteDataWarning",
    "OutputError",
    "UnsupportedDtypeError",
    "UnsupportedFormatError",
]


def _with_path(message: str, path: str | os.PathLike[str] | None) -> str:
    if path is None:
        return message
    return f"{os.fspath(path)}: {message}"


class DlsError(Exception):
    """Base class of every error raised by DLS Microscopy.

    Parameters
    ----------
    message : str
        What went wrong, in words a user understands.
    path : path-like, optional
        The file or store concerned; it is prefixed to the message.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else None
        self.reason = message
        super().__init__(_with_path(message, path))

    def __str__(self) -> str:  # OSError subclasses would otherwise format errno
        return _with_path(self.reason, self.path)


class InputError(DlsError, ValueError):
    """The input (a file, a parameter value) cannot be used as given."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input path does not exist."""


class ConfigError(InputError):
    """A pipeline configuration file is invalid: unknown key, wrong type, bad YAML.

    The message names the file, and for each problem the YAML line and the
    dotted key (``line 12: steps.segment.params.diameter_um: ...``).

    Attributes
    ----------
    issues : list of (key, line, message)
        Every problem found; ``line`` is 1-based or ``None`` when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        issues: list[tuple[str, int | None, str]] | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.issues = list(issues or [])


class FormatError(InputError):
    """The file exists but is not in a format we can read."""


class UnsupportedFormatError(FormatError):
    """No reader handles this path (unknown extension or content)."""


class MetadataError(FormatError):
    """Metadata is malformed or violates its specification (e.g. OME-NGFF)."""


class CorruptDataError(FormatError):
    """Pixel data cannot be decoded: truncated file, corrupt or missing chunk."""


class UnsupportedDtypeError(InputError, TypeError):
    """The array's data type cannot be processed (complex, object, strings...)."""


class DimensionalityError(InputError):
    """The data has the wrong number of axes (e.g. 2D where 3D is required) or an empty axis."""


class OutputError(DlsError, OSError):
    """An output cannot be written (exists, unwritable, disk full)."""


class ClusterError(DlsError, RuntimeError):
    """The compute backend failed: workers did not start or connect, jobs refused or stuck
    in the queue, or a task's worker died too often."""


class ClusterConfigError(InputError, ClusterError):
    """``compute.cluster`` cannot work here: its batch system is not installed, or the
    scheduler refuses its job (queue, account, memory, walltime).  A configuration
    problem (exit code 2), found before any job runs."""


class ModelNotFoundError(DlsError, FileNotFoundError):
    """Model weights are not available locally; the message says how to get them."""


class NonFiniteDataWarning(UserWarning):
    """Floating point data contains NaN or infinite values."""
