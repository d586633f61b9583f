"""Checking an output folder against its ``manifest.json``: ``dls-microscopy verify``.

:func:`verify_manifest` recomputes the digests of the inputs, models and outputs
a manifest (:mod:`dls_microscopy.pipeline.provenance`) records and reports every
:class:`Mismatch`; with ``recompute=True`` it also re-runs the recorded function
with the recorded parameters into a scratch folder and compares the outputs byte
for byte (outputs are deterministic on CPU).  A pipeline run's folder is checked
field by field (:func:`~dls_microscopy.pipeline.run_manifest.verify_run`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dls_microscopy.errors import InputError
from dls_microscopy.pipeline._digests import _walk, digest_file, digest_input
from dls_microscopy.pipeline.provenance import (
    MANIFEST_NAME,
    RUN_COMMAND,
    _digest_outputs,
    _self_digest,
    read_manifest,
)

__all__ = [
    "Mismatch",
    "Moved",
    "check_models",
    "check_outputs",
    "check_self_digest",
    "relocate",
    "verify_folder",
    "verify_manifest",
    "well_formed",
]


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One difference between a manifest and what is on disk now.

    Attributes
    ----------
    kind : str
        ``"manifest"``, ``"input"``, ``"model"``, ``"output"`` or ``"recompute"``.
    item : str
        The input path, output file or manifest entry concerned.
    field : str
        What differs (``"sha256_data"``, ``"size"``, ``"exists"``...).
    expected, actual : object
        Recorded and current values.
    folder : str
        The folder whose manifest records ``item``, relative to the folder verified
        (``"fields/KEY"`` for a field of a run folder); ``""`` for that folder itself.
    reason : str
        What is wrong, in words, where "``field`` was ``expected``, now ``actual``" does not
        say it (``""``: that sentence).
    """

    kind: str
    item: str
    field: str
    expected: Any
    actual: Any
    folder: str = ""
    reason: str = ""

    def __str__(self) -> str:
        where = f"{self.folder}: " if self.folder else ""
        if self.reason:
            return f"{where}{self.kind} {self.item}: {self.reason}"
        return f"{where}{self.kind} {self.item}: {self.field} was {self.expected!r}, now {self.actual!r}"


#: Where recorded input paths are read now: ``(recorded prefix, current prefix)`` pairs.
Moved = Sequence[tuple[str, str]]


def relocate(path: str, moved: Moved) -> str:
    """``path`` under its new prefix: the first pair of ``moved`` whose recorded prefix holds it.

    Examples
    --------
    >>> relocate("/old/data/a.zarr", [("/old/data", "/mnt/archive")])
    '/mnt/archive/a.zarr'
    >>> relocate("/old/database/a.zarr", [("/old/data", "/mnt/archive")])  # whole components only
    '/old/database/a.zarr'
    """
    for old, new in moved:
        old = old.rstrip("/") or "/"
        if path == old or path.startswith(old if old.endswith("/") else old + "/"):
            return new.rstrip("/") + path[len(old.rstrip("/")) :]
    return path


def verify_manifest(
    outdir: str | os.PathLike[str], *, recompute: bool = False, moved: Moved = ()
) -> list[Mismatch]:
    """Compare an output folder and its inputs with its manifest.

    A pipeline run's folder is checked as a whole
    (:func:`~dls_microscopy.pipeline.run_manifest.verify_run`): the run's tables
    against the run's manifest, and every field folder against its own.

    Parameters
    ----------
    outdir : path
        A folder with ``manifest.json``.
    recompute : bool
        Also re-run the recorded ``entry_point`` with the recorded arguments
        into a scratch folder and compare every output file's sha256 (for a
        run folder: every field, and the run's tables rebuilt from the fields' tables).
    moved : sequence of (str, str)
        Inputs, models and external outputs recorded under the first path of a pair
        are read under the second (:func:`relocate`): for data moved since, such as
        an archive restored elsewhere.  Not with ``recompute``, which re-runs the
        recorded command with its recorded paths.

    Returns
    -------
    list of Mismatch
        Empty when everything matches.

    Raises
    ------
    InputError
        No manifest, not a manifest, ``recompute`` asked of a manifest that records
        no ``entry_point`` (pipeline fields of earlier versions), or with ``moved``.
    """
    out = Path(outdir)
    if recompute and moved:
        raise InputError(
            "--recompute re-runs the recorded command, which reads its inputs at their recorded "
            "paths (its outputs name them): verify the moved inputs without --recompute",
            path=out,
        )
    manifest = read_manifest(out)
    if manifest.get("command") == RUN_COMMAND:
        from dls_microscopy.pipeline.run_manifest import verify_run

        return verify_run(out, manifest, recompute=recompute, moved=moved)
    return verify_folder(out, manifest, recompute=recompute, digests={}, moved=moved)


def verify_folder(
    out: Path,
    manifest: Mapping[str, Any],
    *,
    recompute: bool,
    digests: dict[str, dict[str, Any]],
    moved: Moved = (),
) -> list[Mismatch]:
    """:func:`verify_manifest` of one output folder whose ``manifest`` is read.

    ``digests`` holds the inputs digested so far in this verification (input
    path → :func:`digest_input`): the fields of a run that share an input (the
    time points of one store) read it once.  ``moved`` as for :func:`verify_manifest`.
    """
    if recompute and not manifest.get("entry_point"):
        raise InputError(
            "this manifest records no command to re-run (a pipeline field committed by a version "
            "before 2026-11-27: run the pipeline again with --force into another output folder and "
            "compare the tables); verify without --recompute checks its inputs and outputs",
            path=out,
        )
    found = check_self_digest(manifest)
    manifest, malformed = well_formed(manifest)
    found += malformed
    for role, entry in sorted(manifest.get("inputs", {}).items()):
        found += _check_input(role, entry, digests, moved)
    found += check_models(manifest, digests, moved)
    found += check_outputs(out, manifest.get("outputs", []))
    for role, entry in sorted(manifest.get("external_outputs", {}).items()):
        found += _check_external(role, entry, moved)
    if recompute and not malformed:  # what it would re-run is not what was recorded
        found += _recompute(manifest)
    return found


#: JSON names of the types a manifest holds
_JSON_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
#: The sections verify reads: the JSON type of each, and of each of its entries (None: any)
_SECTIONS: dict[str, tuple[type, type | None]] = {
    "inputs": (dict, dict),
    "models": (list, dict),
    "outputs": (list, dict),
    "external_outputs": (dict, dict),
    "fields": (list, dict),
    "arguments": (dict, None),
}


def _json_name(value: Any) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


def well_formed(manifest: Mapping[str, Any]) -> tuple[dict[str, Any], list[Mismatch]]:
    """The manifest without the sections and entries of the wrong JSON type, and a mismatch for each.

    A hand-edited or damaged manifest (``"inputs": "x"``, an output without a path) is a
    verification failure that says where, not an error deep inside the checks.
    """
    clean = dict(manifest)
    found = []
    for key, (kind, entry_kind) in _SECTIONS.items():
        if key not in manifest:
            continue
        value = manifest[key]
        where = f'{MANIFEST_NAME} "{key}"'
        if not isinstance(value, kind):
            found.append(Mismatch("manifest", where, "JSON type", _JSON_NAMES[kind], _json_name(value)))
            del clean[key]
            continue
        if entry_kind is None:
            continue
        entries = value.items() if isinstance(value, dict) else enumerate(value)
        kept: dict[Any, Any] = {}
        for name, entry in entries:
            item = f"{where}[{name!r}]" if isinstance(value, dict) else f"{where}[{name}]"
            if not isinstance(entry, entry_kind):
                found.append(
                    Mismatch("manifest", item, "JSON type", _JSON_NAMES[entry_kind], _json_name(entry))
                )
            elif key == "outputs" and not isinstance(entry.get("path"), str):
                found.append(Mismatch("manifest", item, "path", "a string", _json_name(entry.get("path"))))
            elif key == "inputs" and not isinstance(entry.get("excluded", []), list):
                found.append(
                    Mismatch("manifest", item, "excluded", "an array", _json_name(entry.get("excluded")))
                )
            else:
                kept[name] = entry
        clean[key] = kept if isinstance(value, dict) else list(kept.values())
    return clean, found


def check_models(
    manifest: Mapping[str, Any], digests: dict[str, dict[str, Any]], moved: Moved = ()
) -> list[Mismatch]:
    """Mismatches between the model files a manifest's ``models`` records and those on disk now.

    A model also listed as an input (``features --embeddings`` lists it as both) is
    checked there, once.  ``digests`` caches the files' sha256 (key ``"model:PATH"``);
    ``moved`` as for :func:`verify_manifest`.
    """
    inputs = {str(e.get("path")) for e in manifest.get("inputs", {}).values()}
    found = []
    for entry in manifest.get("models", []):
        path, recorded = entry.get("path"), entry.get("sha256")
        if not path or not recorded or str(path) in inputs:
            continue
        item = f"{entry.get('name', Path(path).name)} ({_where(str(path), moved)})"
        path = relocate(str(path), moved)
        key = f"model:{path}"
        if key not in digests:
            try:
                digests[key] = {"sha256": digest_file(Path(path))}
            except OSError:
                digests[key] = {}
        now = digests[key].get("sha256")
        if now is None:
            found.append(Mismatch("model", item, "exists", True, False))
        elif now != recorded:
            found.append(Mismatch("model", item, "sha256", recorded, now))
    return found


def check_self_digest(manifest: Mapping[str, Any]) -> list[Mismatch]:
    """A mismatch when the manifest's content no longer gives its recorded ``manifest_sha256``."""
    recorded = manifest.get("manifest_sha256")
    actual = _self_digest(manifest)
    if recorded != actual:
        return [Mismatch("manifest", MANIFEST_NAME, "manifest_sha256", recorded, actual)]
    return []


def _where(path: str, moved: Moved) -> str:
    """A recorded path, and where it was read when that is elsewhere."""
    now = relocate(path, moved)
    return path if now == path else f"{path}, read at {now}"


def _check_input(
    role: str, entry: Mapping[str, Any], digests: dict[str, dict[str, Any]], moved: Moved = ()
) -> list[Mismatch]:
    recorded = str(entry.get("path", ""))
    item = f"{role} ({_where(recorded, moved)})"
    path = relocate(recorded, moved)
    target = f"{path}:{entry['dataset']}" if entry.get("dataset") else path
    try:
        excluded = tuple(entry.get("excluded", ()))
        cache = f"{target}|{','.join(excluded)}"
        if cache not in digests:
            digests[cache] = digest_input(target, exclude=excluded)  # a check reads every byte again
        now = digests[cache]
    except InputError:
        return [Mismatch("input", item, "exists", True, False)]
    return [
        Mismatch("input", item, key, entry.get(key), now.get(key))
        for key in ("kind", "size", "n_files", "sha256_metadata", "sha256_data")
        if entry.get(key) != now.get(key)
    ]


def check_outputs(
    out: Path, outputs: Sequence[Mapping[str, Any]], present: Iterable[str] | None = None
) -> list[Mismatch]:
    """Mismatches between the files ``outputs`` records and those in ``out``.

    ``present``: the files (relative paths) that the manifest should list, for an
    unlisted one to be reported; default every file under ``out`` but the manifest.
    """
    found = []
    listed = {o["path"] for o in outputs}
    for o in outputs:
        f = out / o["path"]
        if not f.is_file():
            found.append(Mismatch("output", o["path"], "exists", True, False))
            continue
        if f.stat().st_size != o.get("size"):
            found.append(Mismatch("output", o["path"], "size", o.get("size"), f.stat().st_size))
        digest = digest_file(f)
        if digest != o.get("sha256"):
            found.append(Mismatch("output", o["path"], "sha256", o.get("sha256"), digest))
    if present is None:
        present = [f.relative_to(out).as_posix() for f in _walk(out)]
    for extra in present:
        if extra not in listed and extra != MANIFEST_NAME:
            found.append(Mismatch("output", extra, "exists", False, True))
    return found


def _check_external(role: str, entry: Mapping[str, Any], moved: Moved = ()) -> list[Mismatch]:
    """An output written outside the folder (``external_outputs``) against its record."""
    recorded = str(entry.get("path", ""))
    f, item = Path(relocate(recorded, moved)), f"{role} ({_where(recorded, moved)})"
    if not f.is_file():
        return [Mismatch("output", item, "exists", True, False)]
    found = []
    if f.stat().st_size != entry.get("size"):
        found.append(Mismatch("output", item, "size", entry.get("size"), f.stat().st_size))
    digest = digest_file(f)
    if digest != entry.get("sha256"):
        found.append(Mismatch("output", item, "sha256", entry.get("sha256"), digest))
    return found


def _recompute(manifest: Mapping[str, Any]) -> list[Mismatch]:
    entry = manifest["entry_point"]
    module, _, name = str(entry).partition(":")
    try:
        func = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        return [Mismatch("recompute", str(entry), "importable", True, f"{type(exc).__name__}: {exc}")]
    scratch = Path(tempfile.mkdtemp(prefix="dls-verify-"))
    externals = dict(manifest.get("external_outputs", {}))
    try:
        redo = scratch / "out"
        arguments = dict(manifest.get("arguments", {}))
        elsewhere = {  # files written outside the folder go to the scratch folder, never over the real ones
            role: scratch / "external" / role / Path(str(e.get("path", role))).name
            for role, e in externals.items()
        }
        arguments.update({role: str(p) for role, p in elsewhere.items()})
        func(**arguments, outdir=redo, overwrite=True)
        again = {o["path"]: o["sha256"] for o in _digest_outputs(redo)}
        again_external = {role: digest_file(p) if p.is_file() else None for role, p in elsewhere.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    found = []
    recorded = {o["path"]: o.get("sha256") for o in manifest.get("outputs", [])}
    for path in sorted(set(recorded) | set(again)):
        if recorded.get(path) != again.get(path):
            found.append(Mismatch("recompute", path, "sha256", recorded.get(path), again.get(path)))
    for role, e in sorted(externals.items()):
        if e.get("sha256") != again_external[role]:
            item = f"{role} ({e.get('path', '')})"
            found.append(Mismatch("recompute", item, "sha256", e.get("sha256"), again_external[role]))
    return found
