"""Object tables as Arrow tables, their per-image/per-well aggregates, and byte-stable Parquet.

Column order: ``Metadata_`` columns (plate, well, site, image id, object id,
then positions), features (``{Compartment}_...``), then ``Embedding_*``.
Rows are sorted by ``Metadata_ObjectID``.  Every field carries its unit in
the field metadata (``b"unit"``) and the schema metadata has a
``b"dls_microscopy"`` JSON entry with all units, the voxel spacing, channels
and feature definitions.  Descriptor tables computed elsewhere (geometry,
embeddings) are added with :func:`join_object_columns`, keyed by
``Metadata_ObjectID``.

Parquet files are written with pinned options (fixed row groups, no
timestamps, deterministic column order and dictionary use), so the same
table gives the same bytes for a given pyarrow version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dls_microscopy.errors import InputError
from dls_microscopy.features.measure import ObjectMeasurements
from dls_microscopy.features.schema import Column, check_compartment, feature_columns, position_columns

__all__ = [
    "IMAGE_KEYS",
    "METADATA_KEYS",
    "ROW_GROUP_SIZE",
    "SITE_COUNT",
    "TIME_KEY",
    "WELL_KEYS",
    "aggregate_table",
    "group_keys",
    "join_object_columns",
    "objects_table",
    "parquet_options",
    "units_of",
    "with_site_count",
    "write_csv",
    "write_parquet",
]

#: Metadata columns that identify where an object comes from, in table order.
METADATA_KEYS = ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ImageID", "Metadata_ObjectID")
IMAGE_KEYS = METADATA_KEYS[:4]
WELL_KEYS = METADATA_KEYS[:2]
#: The time point of an image of a time series (after ``Metadata_Site``; only in the tables
#: of time series, whose wells and plates are aggregated per time point).
TIME_KEY = "Metadata_TimePoint"


def group_keys(level: str, *, timed: bool = False) -> tuple[str, ...]:
    """The columns that identify an ``"image"``, ``"well"`` or ``"plate"`` of the aggregates.

    ``timed``: the tables of a time series, whose images, wells and plates are one per
    time point (``Metadata_TimePoint``, after ``Metadata_Site`` in an image's keys).
    """
    keys = {"image": IMAGE_KEYS, "well": WELL_KEYS, "plate": WELL_KEYS[:1]}[level]
    if not timed:
        return keys
    return (*keys[:3], TIME_KEY, *keys[3:]) if level == "image" else (*keys, TIME_KEY)


#: The images (fields) that a row of ``wells``/``plates`` aggregates: pycytominer's name for a
#: well's number of fields (``cyto_utils.aggregate_fields_count``); ``Metadata_``, so profiling
#: (``features="infer"``) leaves it out of the features and keeps it as metadata.
SITE_COUNT = "Metadata_Site_Count"

#: Rows per Parquet row group (pinned: part of the byte-stable output).
ROW_GROUP_SIZE = 65536
SCHEMA_KEY = b"dls_microscopy"
SCHEMA_VERSION = 1


def objects_table(
    measurements: ObjectMeasurements,
    *,
    compartment: str = "Nuclei",
    plate: str = "",
    well: str = "",
    site: int = 0,
    image_id: str = "",
    time_point: int | None = None,
    level: int = 0,
) -> pa.Table:
    """One row per object: metadata, positions and features.

    Parameters
    ----------
    measurements : ObjectMeasurements
    compartment : str
        Prefix of the feature names (``"Nuclei"``, ``"Cells"``...).
    plate, well, site, image_id : optional
        Where the image comes from; strings default to ``""`` (never null,
        so that grouping by them keeps every row).
    time_point : int, optional
        The image's time point in a time series: adds ``Metadata_TimePoint``
        (:data:`TIME_KEY`) after ``Metadata_Site``.
    level : int
        The resolution level measured, recorded in the schema metadata when not 0
        (bounding boxes are in its voxels).

    Returns
    -------
    pyarrow.Table
        Rows sorted by ``Metadata_ObjectID``.
    """
    check_compartment(compartment)
    k = measurements.n_objects
    ids = measurements.ids
    if k > 1 and not np.all(ids[1:] > ids[:-1]):
        raise InputError("measurement ids must be unique and sorted")
    ident = [
        Column("Metadata_Plate", np.full(k, str(plate), dtype=object), ""),
        Column("Metadata_Well", np.full(k, str(well), dtype=object), ""),
        Column("Metadata_Site", np.full(k, int(site), dtype=np.int32), ""),
        Column("Metadata_ImageID", np.full(k, str(image_id), dtype=object), ""),
        Column("Metadata_ObjectID", ids.astype(np.uint64), ""),
    ]
    if time_point is not None:
        ident.insert(3, Column(TIME_KEY, np.full(k, int(time_point), dtype=np.int32), ""))
    cols = ident + position_columns(measurements) + feature_columns(measurements, compartment)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "compartment": compartment,
        "spacing_um": list(measurements.spacing),
        **({"level": int(level)} if level else {}),  # absent at 0: earlier tables stay byte-identical
        "channels": list(measurements.channel_names),
        "percentiles": list(measurements.percentiles),
        "radial_shells": measurements.radial_shells,
        "definitions": {
            "moments": "regionprops moments_central (order 2) and inertia tensor in µm",
            "percentiles": "numpy.percentile, method='linear', over each object's voxels (exact)",
            "radial": "ellipsoidal shells of rho = sqrt(d' (cov + s^2/12)^-1 d / 5); last shell open; "
            "a shell without voxels has FracAtD 0 and MeanFrac 0 (as CellProfiler)",
            "positions": "Metadata_ columns; bounding boxes in voxels, max exclusive",
        },
    }
    return _build(cols, meta)


def _arrow_array(values: np.ndarray) -> pa.Array:
    if values.dtype == object:
        return pa.array(values.tolist(), type=pa.string())
    return pa.array(values)


def _build(cols: Sequence[Column], meta: dict[str, Any]) -> pa.Table:
    fields, arrays = [], []
    for c in cols:
        arr = _arrow_array(np.asarray(c.values))
        fields.append(pa.field(c.name, arr.type, metadata={b"unit": c.unit.encode()} if c.unit else None))
        arrays.append(arr)
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"duplicate column names: {dup}")
    meta = dict(meta, units={c.name: c.unit for c in cols if c.unit})
    schema = pa.schema(fields, metadata={SCHEMA_KEY: json.dumps(meta, sort_keys=True).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def units_of(table: pa.Table) -> dict[str, str]:
    """``{column: unit}`` from a table's field metadata."""
    out = {}
    for f in table.schema:
        if f.metadata and b"unit" in f.metadata:
            out[f.name] = f.metadata[b"unit"].decode()
    return out


def _column_rank(name: str) -> int:
    if name in METADATA_KEYS or name == TIME_KEY:
        return 0
    if name.startswith("Metadata_"):
        return 1
    if name.startswith("Embedding_"):
        return 3
    return 2


def join_object_columns(objects: pa.Table, other: pa.Table) -> pa.Table:
    """Add the columns of ``other`` to ``objects``, matched by ``Metadata_ObjectID``.

    ``other`` (e.g. shape descriptors from geometry, or embeddings) has one
    row per object id, in any order, and may miss objects (nulls there).
    Columns are then ordered metadata, features, ``Embedding_*``; rows keep
    ``objects``' order.
    """
    key = "Metadata_ObjectID"
    if key not in other.column_names:
        raise InputError(f"the table to join has no {key} column")
    new = [n for n in other.column_names if n != key]
    clash = sorted(set(new) & set(objects.column_names))
    if clash:
        raise InputError(f"columns already present: {clash}")
    other_ids = other.column(key).to_numpy().astype(np.uint64)
    if len(np.unique(other_ids)) != len(other_ids):
        raise InputError(f"the table to join has duplicate {key} values")
    ids = objects.column(key).to_numpy().astype(np.uint64)
    order = np.argsort(other_ids, kind="stable")
    pos = np.searchsorted(other_ids[order], ids)
    pos_c = np.minimum(pos, max(len(order) - 1, 0))
    found = (pos < len(order)) & (other_ids[order][pos_c] == ids) if len(order) else np.zeros(len(ids), bool)
    take = pa.array(np.where(found, order[pos_c] if len(order) else 0, 0), mask=~found)
    table = objects
    for name in new:
        col = (
            other.column(name).take(take) if len(order) else pa.nulls(len(ids), other.schema.field(name).type)
        )
        table = table.append_column(other.schema.field(name), col)
    names = sorted(table.column_names, key=lambda n: (_column_rank(n), table.column_names.index(n)))
    meta = dict(objects.schema.metadata or {})
    if SCHEMA_KEY in meta:
        info = json.loads(meta[SCHEMA_KEY])
        info.setdefault("units", {}).update(units_of(other))
        meta[SCHEMA_KEY] = json.dumps(info, sort_keys=True).encode()
    return table.select(names).replace_schema_metadata(meta)


def aggregate_table(
    objects: pa.Table,
    by: Sequence[str],
    *,
    compartment: str = "Nuclei",
    empty_group: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Per-group ``Count_{compartment}``, ``Mean_{feature}`` and ``Median_{feature}``.

    Groups are the distinct values of the ``by`` columns (sorted); NaN values
    are ignored (an all-NaN group gives NaN).  Features are the numeric
    columns that are not ``Metadata_``.  An empty table gives no rows, or one
    row with count 0 for ``empty_group`` (``{column: value}`` of the ``by``
    columns) when given.
    """
    missing = [b for b in by if b not in objects.column_names]
    if missing:
        raise InputError(f"cannot group by missing column(s) {missing}")
    features = [
        f.name
        for f in objects.schema
        if not f.name.startswith("Metadata_")
        and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
    ]
    keys = [objects.column(b).to_numpy(zero_copy_only=False) for b in by]
    n = objects.num_rows
    if n:
        codes = [np.unique(k, return_inverse=True)[1].reshape(-1) for k in keys]
        order = np.lexsort(codes[::-1])
        sorted_codes = np.stack([c[order] for c in codes], axis=1)
        starts = np.flatnonzero(np.r_[True, np.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)])
    else:
        order = np.zeros(0, np.int64)
        starts = np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n].astype(np.int64) if n else np.zeros(0, np.int64)
    data = (
        np.stack(
            [objects.column(f).to_numpy(zero_copy_only=False).astype(np.float64) for f in features], axis=1
        )[order]
        if features
        else np.zeros((n, 0))
    )
    cols = [Column(b, keys[i][order][starts], "") for i, b in enumerate(by)]
    counts = (ends - starts).astype(np.int64)
    if n == 0 and empty_group is not None:
        cols = [Column(b, np.asarray([empty_group[b]], dtype=keys[i].dtype), "") for i, b in enumerate(by)]
        counts = np.zeros(1, np.int64)
    cols.append(Column(f"Count_{compartment}", counts, "1"))
    means = np.full((len(counts), len(features)), np.nan)
    medians = np.full((len(counts), len(features)), np.nan)
    for g, (a, b) in enumerate(zip(starts, ends, strict=True)):  # a loop over groups, not objects
        block = data[a:b]
        valid = ~np.isnan(block)
        cnt = valid.sum(axis=0)
        ok = cnt > 0
        means[g, ok] = np.where(valid, block, 0).sum(axis=0)[ok] / cnt[ok]
        if ok.any():
            medians[g, ok] = np.nanmedian(block[:, ok], axis=0)
    units = units_of(objects)
    for stat, arr in (("Mean", means), ("Median", medians)):
        cols += [Column(f"{stat}_{f}", arr[:, j], units.get(f, "")) for j, f in enumerate(features)]
    meta = {}
    if objects.schema.metadata and SCHEMA_KEY in objects.schema.metadata:
        meta = json.loads(objects.schema.metadata[SCHEMA_KEY])
        meta.pop("units", None)
    meta["aggregated_by"] = list(by)
    return _build(cols, meta)


def with_site_count(table: pa.Table, by: Sequence[str], counts: Mapping[tuple[Any, ...], int]) -> pa.Table:
    """``table``, an aggregate by ``by``, with ``Metadata_Site_Count`` after the ``by`` columns.

    Parameters
    ----------
    table : pyarrow.Table
        One row per group (:func:`aggregate_table`).
    by : sequence of str
        The group columns of ``table``.
    counts : mapping
        Images (fields) per group, keyed by the group's values of ``by`` as a tuple; a
        group absent from it counts 0.

    Returns
    -------
    pyarrow.Table
        ``table`` with the ``int64`` column (unit ``1``) inserted, its unit also in the
        schema's ``dls_microscopy`` metadata.
    """
    groups = zip(*(table.column(b).to_pylist() for b in by), strict=True)
    values = pa.array([int(counts.get(tuple(g), 0)) for g in groups], pa.int64())
    out = table.add_column(len(by), pa.field(SITE_COUNT, pa.int64(), metadata={b"unit": b"1"}), values)
    meta = dict(out.schema.metadata or {})
    if SCHEMA_KEY in meta:
        info = json.loads(meta[SCHEMA_KEY])
        info.setdefault("units", {})[SITE_COUNT] = "1"
        meta[SCHEMA_KEY] = json.dumps(info, sort_keys=True).encode()
    return out.replace_schema_metadata(meta)


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` as Parquet with pinned, deterministic options.

    zstd level 3, dictionary encoding for strings only, ``ROW_GROUP_SIZE`` rows
    per group, Parquet format 2.6, statistics on, no page index or checksums;
    Parquet stores no timestamps, and the Arrow schema (with units) is embedded.
    """
    path = Path(path)
    pq.write_table(table, path, row_group_size=ROW_GROUP_SIZE, **parquet_options(table.schema))
    return path


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """The pinned :class:`pyarrow.parquet.ParquetWriter` options of :func:`write_parquet`.

    For writers that stream a table in pieces (``ParquetWriter(path, schema,
    **parquet_options(schema))``, row groups of ``ROW_GROUP_SIZE`` rows): the
    same rows in the same row groups then give the same bytes as
    :func:`write_parquet`.

    Parameters
    ----------
    schema : pyarrow.Schema
        Schema of the table to write (string columns get dictionary encoding;
        ``Metadata_ObjectID``, when present, is recorded as the sorting column).

    Returns
    -------
    dict of str to Any
        Keyword arguments of :class:`pyarrow.parquet.ParquetWriter`.
    """
    names = schema.names
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    sorting = [pq.SortingColumn(names.index("Metadata_ObjectID"))] if "Metadata_ObjectID" in names else []
    return {
        "version": "2.6",
        "compression": "zstd",
        "compression_level": 3,
        "use_dictionary": strings,
        "write_statistics": True,
        "data_page_version": "1.0",
        "write_page_index": False,
        "write_page_checksum": False,
        "store_schema": True,
        "sorting_columns": sorting or None,
    }


def write_csv(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` as CSV (header row, ``.`` decimal point; units are not kept)."""
    path = Path(path)
    pacsv.write_csv(table, path)
    return path


def metadata_defaults(
    plate: str | None, well: str | None, site: int | None, image_id: str | None
) -> Mapping[str, Any]:
    """Metadata values with ``""``/0 for unknown ones (never null)."""
    return {
        "plate": plate or "",
        "well": well or "",
        "site": int(site or 0),
        "image_id": image_id or "",
    }
