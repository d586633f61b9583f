"""A field's tables from its steps' results: ``objects`` (features, mesh, embedding columns), ``images``.

A pipeline run writes them for every field (:func:`~dls_microscopy.pipeline.field.run_field`);
the desktop app's export writes them for the field of its session, so that both have the
same columns, names and units for the same steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["identity_table", "object_tables"]


def identity_table(metadata: Mapping[str, Any], ids: pa.Array) -> pa.Table:
    """The ``Metadata_*`` columns of an object table without measured features.

    Parameters
    ----------
    metadata : mapping
        The field's ``Metadata_*`` values (:meth:`~dls_microscopy.pipeline.fields.FieldSpec.metadata`).
    ids : pyarrow.Array
        Object ids (``Metadata_ObjectID``), ascending.
    """
    n = len(ids)
    types = {"Metadata_Site": pa.int32(), "Metadata_TimePoint": pa.int32()}  # the others: strings
    columns = {k: pa.array([v] * n, types.get(k, pa.string())) for k, v in metadata.items()}
    return pa.table({**columns, "Metadata_ObjectID": ids.cast(pa.uint64())})


def object_tables(
    objects: pa.Table | None,
    extra: Sequence[pa.Table],
    *,
    metadata: Mapping[str, Any],
    compartment: str,
) -> dict[str, pa.Table]:
    """The field's ``objects`` table (features, then mesh and embedding columns) and its aggregate.

    Parameters
    ----------
    objects : pyarrow.Table or None
        The features step's table (:func:`~dls_microscopy.features.objects_table`), if it ran.
    extra : sequence of pyarrow.Table
        Columns per object to join (``Metadata_ObjectID`` and others): mesh descriptors
        (:func:`~dls_microscopy.features.mesh_columns.descriptor_columns`), embeddings.
    metadata : mapping
        The field's ``Metadata_*`` values; with ``Metadata_TimePoint`` for a time point.
    compartment : str
        Feature prefix (names the count column of the aggregate).

    Returns
    -------
    dict of str to pyarrow.Table
        ``objects`` and ``images`` (one row: count, means and medians), or empty when
        no step made a table.
    """
    from dls_microscopy.features.tables import TIME_KEY, aggregate_table, group_keys, join_object_columns

    if objects is None and not extra:
        return {}
    if objects is None:
        ids = np.unique(np.concatenate([t.column("Metadata_ObjectID").to_numpy() for t in extra]))
        objects = identity_table(metadata, pa.array(ids.astype(np.uint64)))
    for table in extra:
        objects = join_object_columns(objects, table)
    where = {**metadata, "Metadata_Site": np.int32(metadata.get("Metadata_Site", 0))}
    timed = metadata.get(TIME_KEY) is not None
    if timed:
        where[TIME_KEY] = np.int32(metadata[TIME_KEY])
    keys = group_keys("image", timed=timed)
    images = aggregate_table(objects, keys, compartment=compartment, empty_group=where)
    return {"objects": objects, "images": images}
