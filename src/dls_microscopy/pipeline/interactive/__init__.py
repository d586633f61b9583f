"""What the GUI does, as pure functions: segment, mesh, measure, export, record a pipeline.

The napari widgets are thin: they collect parameters, call these functions
in a worker thread and show the results.  Everything here is Qt-free and
tested headless.  Long functions take a ``progress(description, done,
total)`` callback; wrap it with :meth:`CancelToken.wrap` to make the work
stoppable (the next progress report raises :class:`CancelledError`).

:class:`SessionRecorder` records the steps run in the GUI and turns them into
a :class:`~dls_microscopy.pipeline.config.PipelineConfig` that
``dls-microscopy run`` accepts unchanged.

One private module per widget family, all re-exported here (import from
``dls_microscopy.pipeline.interactive``): ``_cancel`` (stopping a task),
``_layers`` (layer data → volume), ``_segment``, ``_meshes``, ``_measure``
(the per-object table), ``_views`` (feature plots and selection),
``_export``, ``_recorder`` (saving the session as a pipeline), ``_spacing`` (a
voxel size set in the app against the file's) and ``_run`` (running a pipeline
file on the open data).
"""

from __future__ import annotations

import logging

from dls_microscopy.pipeline.interactive._cancel import CancelledError, CancelToken
from dls_microscopy.pipeline.interactive._export import (
    descriptor_table,
    export_meshes,
    export_table,
    mesh_columns,
    session_field,
    session_tables,
)
from dls_microscopy.pipeline.interactive._layers import volume_from_layer
from dls_microscopy.pipeline.interactive._measure import measure_volumes
from dls_microscopy.pipeline.interactive._meshes import MeshSet, mesh_labels
from dls_microscopy.pipeline.interactive._recorder import SessionRecorder
from dls_microscopy.pipeline.interactive._run import CallbackRunProgress, run_config_on
from dls_microscopy.pipeline.interactive._segment import (
    memory_budget_bytes,
    segment_volume,
    segmenter_parameters,
)
from dls_microscopy.pipeline.interactive._spacing import (
    SpacingAgainstFile,
    input_spacing,
    spacing_against_file,
)
from dls_microscopy.pipeline.interactive._views import (
    PROJECTION_COLUMNS,
    feature_projection,
    ids_in_box,
    numeric_feature_columns,
    plot_values,
)

__all__ = [
    "PROJECTION_COLUMNS",
    "CallbackRunProgress",
    "CancelToken",
    "CancelledError",
    "MeshSet",
    "SessionRecorder",
    "SpacingAgainstFile",
    "descriptor_table",
    "export_meshes",
    "export_table",
    "feature_projection",
    "ids_in_box",
    "input_spacing",
    "measure_volumes",
    "memory_budget_bytes",
    "mesh_columns",
    "mesh_labels",
    "numeric_feature_columns",
    "plot_values",
    "run_config_on",
    "segment_volume",
    "segmenter_parameters",
    "session_field",
    "session_tables",
    "spacing_against_file",
    "volume_from_layer",
]

log = logging.getLogger(__name__)
