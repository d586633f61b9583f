"""The run's tables: every committed field's rows, concatenated in a fixed order, out of core.

``objects`` and ``images`` are the fields' own tables concatenated in field
order (plate, well, site, key: never completion order, so a resumed or
parallel run gives the same bytes); ``wells`` and ``plates`` aggregate the
objects per ``Metadata_Well`` and per ``Metadata_Plate`` when the input is a
plate, each row with the number of images (fields) it holds, ``Metadata_Site_Count``: those
of the images tables, so a field without objects counts and a failed field does not.  Files
are written under a temporary name and renamed.

Memory does not grow with the number of fields:

* the fields' schemas are unified from the Parquet footers alone, then each
  field's table is read, cast to that schema and streamed to the output
  (Parquet row groups of ``ROW_GROUP_SIZE`` rows, as
  :func:`~dls_microscopy.features.tables.write_parquet` cuts them, so the
  bytes are those of writing the whole concatenated table at once);
* the aggregates (:mod:`._collect_aggregate`) are computed one group (well, plate) at a
  time and, inside a group, a few feature columns at a time: only the group's fields are read,
  and only the columns of the current block (``_BLOCK_BYTES`` of float64
  values, at least two columns), so a plate costs one or two of its columns.
  Each block goes through :func:`~dls_microscopy.features.tables.aggregate_table`,
  so counts, means and medians are bit for bit those of one call on the whole
  objects table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dls_microscopy.errors import DlsError, FormatError, OutputError
from dls_microscopy.io.atomic import partial_file, release_partial
from dls_microscopy.pipeline._collect_aggregate import Group, _aggregate, _Groups

__all__ = ["TABLE_NAMES", "collect_tables"]

#: The run's tables, in the order they are written.
TABLE_NAMES = ("objects", "images", "wells", "plates")

log = logging.getLogger(__name__)


def _read_table(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowInvalid) as exc:
        raise FormatError(f"cannot read the field table: {exc}", path=path) from exc


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise FormatError(f"cannot read the field table: {exc}", path=path) from exc


@dataclass
class _Parts:
    """One of the run's tables across the fields: files in field order and their common schema.

    ``schema`` is the fields' schemas unified as ``pa.concat_tables(...,
    promote_options="permissive")`` unifies them, with the first field's
    schema metadata; ``missing[i]`` holds the columns of ``schema`` that file
    ``i`` lacks (absent when none).
    """

    files: list[Path]
    schema: pa.Schema
    missing: dict[int, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def survey(cls, files: list[Path]) -> _Parts:
        """Unify the schemas from the Parquet footers (no data is read)."""
        meta: dict[bytes, bytes] | None = None
        schemas = []
        for i, f in enumerate(files):
            s = _read_schema(f)
            if i == 0:
                meta = s.metadata
            schemas.append(_with_metadata(s, meta))
        schema = _with_metadata(pa.unify_schemas(schemas, promote_options="permissive"), meta)
        names = frozenset(schema.names)
        missing = {i: names - set(s.names) for i, s in enumerate(schemas) if len(s.names) < len(names)}
        return cls(files, schema, missing)

    def read(self, i: int, columns: Sequence[str] | None = None) -> pa.Table:
        """File ``i`` (only ``columns`` when given) cast to the unified schema (absent columns null)."""
        target = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        absent = self.missing.get(i, frozenset())
        table = _read_table(
            self.files[i], None if columns is None else [c for c in columns if c not in absent]
        )
        return _conform(table, target)


def _with_metadata(schema: pa.Schema, meta: dict[bytes, bytes] | None) -> pa.Schema:
    return schema.with_metadata(meta) if meta else schema.remove_metadata()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, types and metadata (absent columns as nulls).

    As ``pa.concat_tables(promote_options="permissive")`` promotes each table:
    a cast per chunk, one null chunk for an absent column.
    """
    columns = []
    for f in schema:
        i = table.schema.get_field_index(f.name)
        if i < 0:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, f.type)], f.type))
        else:
            col = table.column(i)
            columns.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


class _ParquetSink:
    """Appends tables to one Parquet file in row groups of exactly ``ROW_GROUP_SIZE`` rows.

    Holds back at most one row group plus the last table written, so the file
    has the row groups (and the bytes) of ``write_parquet`` on the
    concatenated table.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        from dls_microscopy.features import tables

        self._rows = tables.ROW_GROUP_SIZE
        self._writer = pq.ParquetWriter(path, schema, **tables.parquet_options(schema))
        self._pending: list[pa.Table] = []
        self._n_pending = 0
        self._wrote = False

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._n_pending += table.num_rows
        while self._n_pending >= self._rows:
            buffer = pa.concat_tables(self._pending)
            self._writer.write_table(buffer.slice(0, self._rows), row_group_size=self._rows)
            self._wrote = True
            rest = buffer.slice(self._rows)
            self._pending, self._n_pending = [rest], rest.num_rows

    def close(self) -> None:
        if self._n_pending or not self._wrote:  # an all-empty table still gets its one empty row group
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=self._rows)
        self._pending = []
        self._writer.close()

    def abort(self) -> None:
        self._pending = []
        self._writer.close()


class _CsvSink:
    """Appends tables to one CSV file (one header; the options of ``write_csv``)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pacsv.CSVWriter(path, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()

    abort = close


def _tmp_name(path: Path) -> Path:
    """This writer's own temporary name beside ``path`` (:func:`~dls_microscopy.io.atomic.partial_file`)."""
    return partial_file(path)


def write_table(table: pa.Table, path: Path, fmt: str) -> Path:
    """Write ``table`` as ``fmt`` (``"parquet"`` or ``"csv"``) under a temporary name, then rename it.

    The file appears whole or not at all (the run's tables, the app's export).

    Raises
    ------
    OutputError
        The file cannot be written.
    """
    from dls_microscopy.features.tables import write_csv, write_parquet

    tmp = _tmp_name(path)
    try:
        (write_csv if fmt == "csv" else write_parquet)(table, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write the table: {exc.strerror or exc}", path=path) from exc
    finally:
        release_partial(tmp)  # never a half-written table beside the others
    return path


def _stream(parts: _Parts, path: Path, fmt: str, visit: Callable[[int, pa.Table], None]) -> Path:
    """Write the fields' tables one after the other into ``path``; ``visit(i, table)`` sees each."""
    tmp = _tmp_name(path)
    opened: list[_ParquetSink | _CsvSink] = []
    try:
        sink = (_CsvSink if fmt == "csv" else _ParquetSink)(tmp, parts.schema)
        opened.append(sink)
        for i in range(len(parts.files)):
            table = parts.read(i)
            visit(i, table)
            sink.write(table)
            del table
        opened.clear()
        sink.close()
        os.replace(tmp, path)
    except BaseException as exc:
        for sink in opened:
            try:
                sink.abort()
            except Exception:  # the first error is the one to report
                log.debug("closing %s after an error failed", tmp, exc_info=True)
        if isinstance(exc, OSError) and not isinstance(exc, DlsError):
            raise OutputError(f"cannot write the table: {exc.strerror or exc}", path=path) from exc
        raise
    finally:
        release_partial(tmp)
    return path


def collect_tables(
    field_dirs: Sequence[Path],
    outdir: Path,
    *,
    table_format: Literal["parquet", "csv"] = "parquet",
    compartment: str = "Nuclei",
) -> dict[str, Path]:
    """Concatenate the fields' tables and write the run's tables into ``outdir``.

    Streams: memory holds one field's table (plus one Parquet row group) while
    writing ``objects``/``images``, and one block of feature columns of one
    well or plate while aggregating; it does not grow with the number of fields.

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

    Raises
    ------
    FormatError
        A field's table cannot be read.
    OutputError
        A table cannot be written (nothing is left under its name then).
    """
    from dls_microscopy.features.tables import TIME_KEY, group_keys, with_site_count

    files = {
        name: [d / f"{name}.parquet" for d in field_dirs if (d / f"{name}.parquet").is_file()]
        for name in ("objects", "images")
    }
    written: dict[str, Path] = {}
    ext = "csv" if table_format == "csv" else "parquet"
    objects = _Parts.survey(files["objects"]) if files["objects"] else None
    images = _Parts.survey(files["images"]) if files["images"] else None
    timed = objects is not None and TIME_KEY in objects.schema.names  # wells, plates per time point
    well_keys, plate_keys = group_keys("well", timed=timed), group_keys("plate", timed=timed)
    groups = _Groups([k for k in well_keys if objects is not None and k in objects.schema.names])
    if "Metadata_Well" not in groups.keys:
        groups.keys = []
    # the images of each well and plate: {keys: {group: {image's keys, ...}}}
    image_groups: dict[tuple[str, ...], dict[Group, set[Group]]] = {}
    image_keys = group_keys("image", timed=timed)

    def visit_images(_: int, table: pa.Table) -> None:
        if not all(k in table.column_names for k in image_keys):
            return
        ids = list(zip(*(table.column(k).to_pylist() for k in image_keys), strict=True))
        for keys in (well_keys, plate_keys):
            if all(k in table.column_names for k in keys):
                rows = zip(*(table.column(k).to_pylist() for k in keys), strict=True)
                members = image_groups.setdefault(tuple(keys), {})
                for g, image in zip(rows, ids, strict=True):
                    members.setdefault(g, set()).add(image)

    def visit_objects(i: int, table: pa.Table) -> None:
        groups.visit(i, table)
        if images is None:  # no images tables: the images are those that have objects
            visit_images(i, table)

    if objects is not None:
        log.info("objects: %d fields, %d columns", len(objects.files), len(objects.schema))
        written["objects"] = _stream(objects, outdir / f"objects.{ext}", table_format, visit_objects)
    if images is not None:
        written["images"] = _stream(images, outdir / f"images.{ext}", table_format, visit_images)
    well_at = groups.keys.index("Metadata_Well") if groups.keys else 0
    if objects is not None and any(g[well_at] for counts in groups.counts for g in counts):  # a plate
        for name, keys in (("wells", well_keys), ("plates", plate_keys)):
            table = _aggregate(objects, groups, keys, compartment)
            members = image_groups.get(tuple(keys), {})
            known = members.keys() if images is not None else None  # wells without objects too
            table = _with_empty_groups(table, known, keys, compartment)
            table = with_site_count(table, keys, {g: len(m) for g, m in members.items()})
            written[name] = write_table(table, outdir / f"{name}.{ext}", table_format)
    for name in TABLE_NAMES:  # tables of an earlier run that this run did not write are stale
        for stale_ext in ("parquet", "csv"):
            stale = outdir / f"{name}.{stale_ext}"
            if stale.exists() and stale not in written.values():
                log.info("removing %s: not produced by this run", stale.name)
                stale.unlink()
    log.info("tables: %s", ", ".join(f"{k} → {v.name}" for k, v in written.items()) or "none")
    return written


def _with_empty_groups(
    table: pa.Table, groups: Collection[Group] | None, keys: Sequence[str], compartment: str
) -> pa.Table:
    """Add count-0 rows for the wells/plates of ``groups`` (from the images table) without objects.

    Rows stay sorted by ``keys``.
    """
    if groups is None:
        return table
    have = set(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    want = sorted(set(groups))
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
