"""Per-object measurements (morphology, intensity) and profiling tables.

Core functions are pure and array-first: :func:`measure_objects` on arrays,
:func:`objects_table` / :func:`write_parquet` for tables;
:func:`dls_microscopy.pipeline.features.run_features` is the file-to-folder
entry point used by the CLI.
"""

from __future__ import annotations

from dls_microscopy.features.measure import NoObjectsWarning, ObjectMeasurements, measure_objects
from dls_microscopy.features.tables import (
    aggregate_table,
    join_object_columns,
    objects_table,
    units_of,
    write_csv,
    write_parquet,
)

__all__ = [
    "NoObjectsWarning",
    "ObjectMeasurements",
    "aggregate_table",
    "join_object_columns",
    "measure_objects",
    "objects_table",
    "units_of",
    "write_csv",
    "write_parquet",
]
