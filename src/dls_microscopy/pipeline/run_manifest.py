"""Provenance of a pipeline run's folder: the manifest of the run's tables, and its verification.

Each field folder (``fields/KEY``) has its own ``manifest.json``
(:mod:`~dls_microscopy.pipeline.provenance`).  The run's tables
(``objects``, ``images``, ``wells``, ``plates``), built from the fields'
tables by :func:`~dls_microscopy.pipeline.collect.collect_tables`, are
recorded in the run folder's ``manifest.json``:

* ``outputs``: every run table and the resolved configuration (path, size, sha256); a
  file in the run folder that is neither these, a report (``RUN_REPORTS``) nor the temporary
  file of a killed write is reported;
* ``fields``: the fields they were built from, in row order, each with the
  sha256 of its ``manifest.json`` (which records the field's tables);
* ``fields_failed``: the fields of the run that are in no table;
* ``parameters``: table format, compartment, the configuration (without its
  compute settings, which decide no byte) and its settings digest;
* ``software``, ``seeds``, ``timings_s`` and ``manifest_sha256``, as in a field's manifest.

The run removes its manifest before it writes the tables and writes the new one
(under a temporary name, renamed) once every table is written: a run killed in
between leaves no manifest, so a manifest always describes the tables beside it.

:func:`verify_run` checks the run's tables against the manifest, every field
folder against its own manifest (reported as ``fields/KEY``), that each field's
manifest is the one the tables were built from, and with ``recompute`` re-runs
every field and rebuilds the run's tables from the fields' tables, byte for byte.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dls_microscopy.errors import InputError
from dls_microscopy.pipeline.provenance import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    RUN_COMMAND,
    created_by,
    digest_file,
    read_manifest,
    save_manifest,
    software_versions,
)
from dls_microscopy.pipeline.verify import (
    Mismatch,
    Moved,
    check_outputs,
    check_self_digest,
    verify_folder,
    well_formed,
)

if TYPE_CHECKING:
    from dls_microscopy.pipeline.config import PipelineConfig

__all__ = ["ENTRY_POINT", "current_tables", "remove_run_manifest", "verify_run", "write_run_manifest"]

log = logging.getLogger(__name__)

#: What rebuilds the run's tables (``verify --recompute``), with the recorded ``arguments``
#: (field folders relative to the run folder).
ENTRY_POINT = "dls_microscopy.pipeline.collect:collect_tables"


def remove_run_manifest(out: Path) -> None:
    """Remove the run folder's manifest before its tables are rewritten."""
    (Path(out) / MANIFEST_NAME).unlink(missing_ok=True)


def _field_models(fields: Sequence[Path]) -> list[dict[str, Any]]:
    """The models the fields' manifests list, each once (by path and sha256), in the order first seen."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for folder in fields:
        for entry in read_manifest(Path(folder)).get("models", []):
            seen.setdefault((str(entry.get("path")), str(entry.get("sha256"))), dict(entry))
    return list(seen.values())


def current_tables(out: Path, fields: Sequence[Path], cfg: PipelineConfig) -> dict[str, Path] | None:
    """The run's tables, when its manifest describes them as they are; else None.

    So a rerun that has nothing to do leaves the tables and their manifest (its
    ``created`` record included) as the run that made them wrote them.  Current means:
    the manifest is sealed, records the same settings (``config_sha256``, table format)
    and the same field folders in the same order, each with its manifest's sha256 as it
    is now, and every file it lists is there with its sha256.

    Parameters
    ----------
    out : Path
        The run folder.
    fields : sequence of Path
        The committed field folders, in row order.
    cfg : PipelineConfig
        The run's configuration.
    """
    from dls_microscopy.pipeline.field_resume import config_digest
    from dls_microscopy.pipeline.run import RESOLVED_CONFIG

    out = Path(out)
    try:
        manifest = read_manifest(out)
    except InputError:  # none (a run stopped while writing the tables), or damaged
        return None
    params = manifest.get("parameters") or {}
    if (
        check_self_digest(manifest)
        or well_formed(manifest)[1]
        or manifest.get("command") != RUN_COMMAND
        or params.get("config_sha256") != config_digest(cfg)
        or params.get("table_format") != cfg.output.table_format
        or manifest.get("fields_failed")  # a rerun with nothing to do had no failure
    ):
        return None
    recorded = [(e.get("path"), e.get("sha256_manifest")) for e in manifest.get("fields", [])]
    now = [
        (Path(d).relative_to(out).as_posix(), digest_file(Path(d) / MANIFEST_NAME))
        for d in fields
        if (Path(d) / MANIFEST_NAME).is_file()
    ]
    outputs = list(manifest.get("outputs", []))
    if recorded != now or len(now) != len(fields) or check_outputs(out, outputs, present=[]):
        return None
    return {Path(o["path"]).stem: out / o["path"] for o in outputs if o["path"] != RESOLVED_CONFIG}


def write_run_manifest(
    out: Path,
    *,
    fields: Sequence[Path],
    failed: Sequence[str],
    tables: Mapping[str, Path],
    cfg: PipelineConfig,
    seconds: float | None = None,
) -> Path:
    """Write ``out/manifest.json`` for the run's tables, once they are all written.

    Parameters
    ----------
    out : Path
        The run folder.
    fields : sequence of Path
        The committed field folders (``out/fields/KEY``) the tables were built from, in row order.
    failed : sequence of str
        Keys of the run's fields that failed (in no table).
    tables : mapping of str to Path
        The tables written (:func:`~dls_microscopy.pipeline.collect.collect_tables`).
    cfg : PipelineConfig
        The run's configuration.
    seconds : float, optional
        Time spent writing the tables.

    Returns
    -------
    Path
        The manifest.

    Raises
    ------
    OutputError
        The manifest cannot be written.
    """
    from dls_microscopy.pipeline.field_resume import config_digest

    out = Path(out)
    relative = [Path(d).relative_to(out).as_posix() for d in fields]
    table_format = cfg.output.table_format
    compartment = cfg.steps.features.compartment if cfg.steps.features is not None else "Nuclei"
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "command": RUN_COMMAND,
        "fields": [
            {"key": Path(rel).name, "path": rel, "sha256_manifest": digest_file(Path(d) / MANIFEST_NAME)}
            for rel, d in zip(relative, fields, strict=True)
        ],
        "fields_failed": list(failed),
        "parameters": {
            "table_format": table_format,
            "compartment": compartment,
            "config_sha256": config_digest(cfg),
            "config": cfg.model_dump(mode="json", exclude={"compute"}),
        },
        "entry_point": ENTRY_POINT,
        "arguments": {"field_dirs": relative, "table_format": table_format, "compartment": compartment},
        "software": software_versions(),
        "created": created_by(),
        "models": _field_models(fields),
        "seeds": {"seed": cfg.seed},
        "timings_s": {"tables": round(float(seconds), 6)} if seconds is not None else {},
        "outputs": [
            {"path": p.name, "size": p.stat().st_size, "sha256": digest_file(p)}
            for p in [*tables.values(), *_resolved_config(out)]
        ],
    }
    path = save_manifest(out, manifest)
    log.info("run manifest: %d tables from %d fields", len(tables), len(fields))
    return path


#: Files of a run folder that are reports, written after the manifest or as the run goes:
#: not covered by it.
RUN_REPORTS = frozenset({MANIFEST_NAME, "run.log", "run_summary.json", ".run.lock"})


def _resolved_config(out: Path) -> list[Path]:
    """The run's resolved configuration (written as it starts), where it is."""
    from dls_microscopy.pipeline.run import RESOLVED_CONFIG

    path = out / RESOLVED_CONFIG
    return [path] if path.is_file() else []


def _is_temporary(name: str) -> bool:
    """Whether ``name`` is a file being written, or left by a writer that was killed.

    A run writes its files under a temporary name and renames them: ``.NAME.PID.tmp``
    (``run_summary.json``, ``pipeline.resolved.yaml``) and ``.NAME.partial-...``
    (:func:`~dls_microscopy.io.atomic.partial_file`: tables, manifest).  A run killed
    while writing its summary, after its manifest, leaves one beside complete tables:
    it is no output, and the next run removes it.
    """
    return name.startswith(".") and (name.endswith(".tmp") or ".partial-" in name)


def _run_files_present(out: Path) -> list[str]:
    """The files directly in the run folder the manifest should list: all but reports and temporaries."""
    return sorted(
        p.name
        for p in out.iterdir()
        if p.is_file() and p.name not in RUN_REPORTS and not _is_temporary(p.name)
    )


def verify_run(
    out: Path, manifest: Mapping[str, Any], *, recompute: bool = False, moved: Moved = ()
) -> list[Mismatch]:
    """Compare a run folder with its manifest and every field folder with its own.

    Parameters
    ----------
    out : Path
        The run folder.
    manifest : mapping
        Its manifest (:func:`~dls_microscopy.pipeline.provenance.read_manifest`).
    recompute : bool
        Also re-run every field into a scratch folder and rebuild the run's
        tables from the fields' tables, comparing every file's sha256.
    moved : sequence of (str, str)
        Where inputs recorded under a prefix are read now
        (:func:`~dls_microscopy.pipeline.verify.verify_manifest`).

    Returns
    -------
    list of Mismatch
        Empty when everything matches; a field's mismatches carry
        ``folder="fields/KEY"``, those of the run's tables and of which fields
        they were built from ``folder=""``.
    """
    from dls_microscopy.pipeline.run import FIELDS_DIR, RESOLVED_CONFIG

    out = Path(out)
    found = check_self_digest(manifest)
    manifest, malformed = well_formed(manifest)
    found += malformed
    outputs = {o["path"] for o in manifest.get("outputs", [])}
    # run manifests of the first version (2026-11-27) did not list the resolved configuration
    present = [f for f in _run_files_present(out) if f in outputs or f != RESOLVED_CONFIG]
    found += check_outputs(out, manifest.get("outputs", []), present=present)
    recorded = list(manifest.get("fields", []))
    digests: dict[str, dict[str, Any]] = {}  # inputs shared by fields are read once
    for entry in recorded:
        rel = str(entry.get("path", ""))
        found += _check_field(
            out, rel, entry.get("sha256_manifest"), recompute=recompute, digests=digests, moved=moved
        )
    listed = {str(e.get("path", "")) for e in recorded}
    fields_dir = out / FIELDS_DIR
    if fields_dir.is_dir():
        for d in sorted(fields_dir.iterdir()):
            rel = f"{FIELDS_DIR}/{d.name}"
            if d.is_dir() and not d.name.startswith(".") and rel not in listed:
                # a run into a folder of an earlier run with another input warns of these
                foreign = (
                    "a field folder in none of the run's tables (an earlier run's, with another "
                    "input?): move it away, or run into another output folder"
                )
                found.append(Mismatch("field", rel, "in the run's tables", False, True, reason=foreign))
    if recompute and not malformed:
        found += _rebuild_tables(out, manifest)
    log.info("verified a run folder: %d fields, %d mismatches", len(recorded), len(found))
    return found


def _check_field(
    out: Path,
    rel: str,
    sha256: Any,
    *,
    recompute: bool,
    digests: dict[str, dict[str, Any]],
    moved: Moved = (),
) -> list[Mismatch]:
    """A field folder against its manifest, and its manifest against the run's record of it."""
    folder = out / rel
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return [Mismatch("field", rel, "exists", True, folder.is_dir() and "without manifest.json")]
    found = []
    now = digest_file(path)
    if now != sha256:  # the field changed (or was redone) since the run's tables were built
        found.append(Mismatch("field", f"{rel}/{MANIFEST_NAME}", "sha256", sha256, now))
    try:
        field_manifest = read_manifest(folder)
        mismatches = verify_folder(folder, field_manifest, recompute=recompute, digests=digests, moved=moved)
    except InputError as exc:
        return [*found, Mismatch("manifest", MANIFEST_NAME, "readable", True, exc.reason, folder=rel)]
    return found + [Mismatch(m.kind, m.item, m.field, m.expected, m.actual, folder=rel) for m in mismatches]


def _rebuild_tables(out: Path, manifest: Mapping[str, Any]) -> list[Mismatch]:
    """Rebuild the run's tables from the recorded fields' tables; compare sha256 per table."""
    from dls_microscopy.errors import DlsError
    from dls_microscopy.pipeline.collect import collect_tables

    args = dict(manifest.get("arguments", {}))
    scratch = Path(tempfile.mkdtemp(prefix="dls-verify-"))
    try:
        written = collect_tables(
            [out / rel for rel in args.get("field_dirs", [])],
            scratch,
            table_format=args.get("table_format", "parquet"),
            compartment=args.get("compartment", "Nuclei"),
        )
        again = {p.name: digest_file(p) for p in written.values()}
    except DlsError as exc:
        return [Mismatch("recompute", "run tables", "built", True, str(exc))]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from dls_microscopy.pipeline.run import RESOLVED_CONFIG

    # the tables; the resolved configuration is checked as it is, not rebuilt
    recorded = {
        o["path"]: o.get("sha256") for o in manifest.get("outputs", []) if o["path"] != RESOLVED_CONFIG
    }
    return [
        Mismatch("recompute", name, "sha256", recorded.get(name), again.get(name))
        for name in sorted(set(recorded) | set(again))
        if recorded.get(name) != again.get(name)
    ]
