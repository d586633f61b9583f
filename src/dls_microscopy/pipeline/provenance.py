"""Provenance of an output folder: writing and reading its ``manifest.json``.

The manifest records what produced the folder: every input (path, size,
sha256 of its metadata files and of its data chunks, streamed), the
parameters and the function that ran with them, software versions, model
hashes, seeds, timings, and the sha256 of every output file.  Its own digest
(``manifest_sha256``, over the canonical JSON of everything else) reveals
edits of the manifest itself.

Checking a folder against its manifest (``dls-microscopy verify``) is
:mod:`dls_microscopy.pipeline.verify`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dls_microscopy.errors import InputError, InputNotFoundError, OutputError
from dls_microscopy.io._output_checks import MANIFEST
from dls_microscopy.io.atomic import partial_file, release_partial
from dls_microscopy.pipeline._digests import (
    _digest_external,
    _walk,
    digest_file,
    digest_input,
    image_excludes,
)
from dls_microscopy.pipeline._environment import created_by, software_versions

#: Names that moved to :mod:`dls_microscopy.pipeline.verify` (2026-11-28), still importable here
_MOVED_TO_VERIFY = frozenset(
    {"Mismatch", "Moved", "check_models", "check_outputs", "check_self_digest", "relocate",
     "verify_folder", "verify_manifest"}
)  # fmt: skip


def __getattr__(name: str) -> Any:
    """``provenance.verify_manifest`` and the other checks, as before they moved (lazily: verify
    imports this module)."""
    if name in _MOVED_TO_VERIFY:
        from dls_microscopy.pipeline import verify

        return getattr(verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MANIFEST_NAME",
    "RUN_COMMAND",
    "digest_file",
    "digest_input",
    "read_manifest",
    "save_manifest",
    "software_versions",
    "write_manifest",
]

# named once, in io, whose --overwrite rule recognises our outputs by them
MANIFEST_NAME, MANIFEST_FORMAT = MANIFEST
#: The ``command`` of a pipeline run folder's manifest (its run-level tables).
RUN_COMMAND = "run-tables"
MANIFEST_VERSION = 1


# -- digests: in _digests ------------------------------------------------------------


def _digest_outputs(outdir: Path) -> list[dict[str, Any]]:
    return [
        {"path": f.relative_to(outdir).as_posix(), "size": f.stat().st_size, "sha256": digest_file(f)}
        for f in _walk(outdir)
        if f.relative_to(outdir).as_posix() != MANIFEST_NAME
    ]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _self_digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(
        _canonical({k: v for k, v in manifest.items() if k != "manifest_sha256"})
    ).hexdigest()


# -- writing -----------------------------------------------------------------------


def write_manifest(
    outdir: str | os.PathLike[str],
    *,
    command: str,
    inputs: Mapping[str, str | os.PathLike[str]],
    parameters: Mapping[str, Any],
    entry_point: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    models: Sequence[Mapping[str, Any]] = (),
    seeds: Mapping[str, int] | None = None,
    external_outputs: Mapping[str, str | os.PathLike[str]] | None = None,
    execution: Mapping[str, Any] | None = None,
    external_pending: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """Write ``outdir/manifest.json`` describing the files already in ``outdir``.

    Call it last: the digests of all other files in ``outdir`` are recorded.

    Parameters
    ----------
    outdir : path
        The output folder.
    command : str
        What ran (e.g. ``"features"``).
    inputs : mapping
        Role → input path (``{"image": ..., "labels": ...}``).
    parameters : mapping
        JSON-serialisable parameters as given.
    entry_point : str, optional
        ``"module:function"`` that re-creates the outputs when called with
        ``**arguments, outdir=..., overwrite=True`` (enables ``recompute``).
    arguments : mapping, optional
        Keyword arguments of ``entry_point`` (defaults to ``parameters``).
    timings : mapping, optional
        Seconds per stage.
    models : sequence of mapping
        Model name, version and sha256 of weights used, if any.
    seeds : mapping, optional
        Random seeds used, if any.
    external_outputs : mapping, optional
        Files the command wrote outside ``outdir`` (``mesh --descriptors FILE``): the
        ``entry_point`` argument that names each → its path.  Recorded with size and
        sha256 (``external_outputs``), so verify checks them; a recompute writes them
        into its scratch folder instead (the argument is pointed there).
    execution : mapping, optional
        How the outputs were computed (devices as resolved, threads, memory:
        :func:`~dls_microscopy.pipeline._environment.execution_record`).
    external_pending : mapping, optional
        Role → where an external output is now, complete, when it is renamed to its
        path in ``external_outputs`` only after ``outdir`` is in place: its size and
        sha256 are read there, its final path is recorded.

    Returns
    -------
    Path
        The manifest.
    """
    out = Path(outdir)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "command": command,
        # the fields of a run share inputs (every time point of a series reads one store)
        "inputs": {
            role: digest_input(p, reuse=True, exclude=image_excludes(p) if role == "image" else ())
            for role, p in inputs.items()
        },
        "parameters": dict(parameters),
        "entry_point": entry_point,
        "arguments": dict(arguments if arguments is not None else parameters),
        "software": software_versions(),
        "created": created_by(),
        "models": [dict(m) for m in models],
        "seeds": dict(seeds or {}),
        "timings_s": {k: round(float(v), 6) for k, v in (timings or {}).items()},
        "outputs": _digest_outputs(out),
    }
    if execution is not None:
        manifest["execution"] = dict(execution)
    if external_outputs:
        pending = {role: Path(os.fspath(p)) for role, p in (external_pending or {}).items()}
        manifest["external_outputs"] = {
            role: _digest_external(Path(os.fspath(p)), pending.get(role))
            for role, p in sorted(external_outputs.items())
        }
    return save_manifest(out, manifest)


def save_manifest(outdir: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Seal ``manifest`` with its ``manifest_sha256`` and write it as ``outdir/manifest.json``.

    Written under a temporary name and renamed: the manifest appears whole or not at all.

    Raises
    ------
    TypeError
        A value JSON cannot hold.
    OutputError
        The file cannot be written.
    """
    sealed = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    _canonical(sealed)  # raises TypeError early for values JSON cannot hold
    sealed["manifest_sha256"] = _self_digest(sealed)
    path = Path(outdir) / MANIFEST_NAME
    try:
        tmp = partial_file(path)  # this writer's own name
        try:
            tmp.write_text(
                json.dumps(sealed, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            os.replace(tmp, path)
        finally:
            release_partial(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write the manifest: {exc.strerror or exc}", path=path) from exc
    return path


# -- verification --------------------------------------------------------------------


def read_manifest(outdir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of ``outdir``; :class:`InputError` when absent or not a manifest."""
    path = Path(outdir) / MANIFEST_NAME
    if Path(outdir).is_file():
        raise InputError(
            "a file, not an output folder: verify takes the folder that holds manifest.json",
            path=Path(outdir),
        )
    if not Path(outdir).is_dir():
        raise InputNotFoundError("no such folder", path=Path(outdir))
    if not path.is_file():
        if (Path(outdir) / "fields").is_dir():
            raise InputError(
                f"a run folder without {MANIFEST_NAME}: its run did not finish (it was stopped "
                "while redoing fields or writing the run's tables: run it again to resume), or a "
                "version before 2026-11-28 made it; each "
                f"field has its own: verify {os.fspath(Path(outdir) / 'fields' / '<field>')}",
                path=Path(outdir),
            )
        raise InputError(f"no {MANIFEST_NAME} in this folder", path=Path(outdir))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"manifest is not valid JSON: {exc}", path=path) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError("not a dls-microscopy manifest", path=path)
    return manifest
