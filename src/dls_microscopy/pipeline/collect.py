"""The run's tables: every committed field's rows, concatenated in a fixed order.

``objects`` and ``images`` are the fields' own tables concatenated in field
order (plate, well, site, key: never completion order, so a resumed or
parallel run gives the same bytes); ``wells`` and ``plates`` aggregate the
objects per ``Metadata_Well`` and per ``Metadata_Plate`` when the input is a
plate.  Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from dls_microscopy.errors import OutputError

__all__ = ["TABLE_NAMES", "collect_tables"]

#: The run's tables, in the order they are written.
TABLE_NAMES = ("objects", "images", "wells", "plates")

log = logging.getLogger(__name__)


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    first = tables[0]
    meta = first.schema.metadata
    same = [t.replace_schema_metadata(meta) for t in tables]
    return pa.concat_tables(same, promote_options="permissive").replace_schema_metadata(meta)


def _write(table: pa.Table, path: Path, fmt: str) -> Path:
    from dls_microscopy.features.tables import write_csv, write_parquet

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        (write_csv if fmt == "csv" else write_parquet)(table, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the table: {exc.strerror or exc}", path=path) from exc
    return path


def collect_tables(
    field_dirs: Sequence[Path],
    outdir: Path,
    *,
    table_format: Literal["parquet", "csv"] = "parquet",
    compartment: str = "Nuclei",
) -> dict[str, Path]:
    """Concatenate the fields' tables and write the run's tables into ``outdir``.

    Parameters
    ----------
    field_dirs : sequence of Path
        Committed field folders, in the order their rows should appear.
    outdir : Path
        The run's folder.
    table_format : {"parquet", "csv"}
        Format of the written tables.
    compartment : str
        Feature prefix (names the count column of the aggregates).

    Returns
    -------
    dict of str to Path
        ``objects``, ``images`` and, for plates, ``wells`` and ``plates``.
    """
    from dls_microscopy.features.tables import WELL_KEYS, aggregate_table

    pieces: dict[str, list[pa.Table]] = {"objects": [], "images": []}
    for d in field_dirs:
        for name in pieces:
            f = d / f"{name}.parquet"
            if f.is_file():
                pieces[name].append(pq.read_table(f))
    written: dict[str, Path] = {}
    ext = "csv" if table_format == "csv" else "parquet"
    for name, parts in pieces.items():
        if parts:
            written[name] = _write(_concat(parts), outdir / f"{name}.{ext}", table_format)
    if pieces["objects"]:
        objects = _concat(pieces["objects"])
        wells = objects.column("Metadata_Well").to_pylist()
        if any(wells):
            images = _concat(pieces["images"]) if pieces["images"] else None
            for name, keys in (("wells", WELL_KEYS), ("plates", WELL_KEYS[:1])):
                table = aggregate_table(objects, keys, compartment=compartment)
                table = _with_empty_groups(table, images, keys, compartment)
                written[name] = _write(table, outdir / f"{name}.{ext}", table_format)
    for name in TABLE_NAMES:  # tables of an earlier run that this run did not write are stale
        for stale_ext in ("parquet", "csv"):
            stale = outdir / f"{name}.{stale_ext}"
            if stale.exists() and stale not in written.values():
                log.info("removing %s: not produced by this run", stale.name)
                stale.unlink()
    log.info("tables: %s", ", ".join(f"{k} → {v.name}" for k, v in written.items()) or "none")
    return written


def _with_empty_groups(
    table: pa.Table, images: pa.Table | None, keys: Sequence[str], compartment: str
) -> pa.Table:
    """Add count-0 rows for wells/plates whose fields have no objects (kept sorted)."""
    if images is None:
        return table
    have = set(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    want = sorted(set(zip(*(images.column(k).to_pylist() for k in keys), strict=True)))
    missing = [g for g in want if g not in have]
    if not missing:
        return table
    extra = {k: [g[i] for g in missing] for i, k in enumerate(keys)}
    rows = {
        f.name: pa.array(extra[f.name], f.type)
        if f.name in extra
        else pa.array([0] * len(missing), f.type)
        if f.name == f"Count_{compartment}"
        else pa.nulls(len(missing), f.type)
        for f in table.schema
    }
    both = pa.concat_tables([table, pa.table(rows, schema=table.schema)])
    order = sorted(range(both.num_rows), key=lambda i: tuple(both.column(k)[i].as_py() for k in keys))
    return both.take(pa.array(order, pa.int64()))
