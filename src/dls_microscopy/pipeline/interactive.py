"""What the GUI does, as pure functions: segment, mesh, measure, export, record a pipeline.

The napari widgets are thin: they collect parameters, call these functions
in a worker thread and show the results.  Everything here is Qt-free and
tested headless.  Long functions take a ``progress(description, done,
total)`` callback; wrap it with :meth:`CancelToken.wrap` to make the work
stoppable (the next progress report raises :class:`CancelledError`).

:class:`SessionRecorder` records the steps run in the GUI and turns them into
a :class:`~dls_microscopy.pipeline.config.PipelineConfig` that
``dls-microscopy run`` accepts unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import DlsError, InputError
from dls_microscopy.volume import Volume

__all__ = [
    "PROJECTION_COLUMNS",
    "CallbackRunProgress",
    "CancelToken",
    "CancelledError",
    "MeshSet",
    "SessionRecorder",
    "descriptor_table",
    "export_meshes",
    "export_table",
    "feature_projection",
    "ids_in_box",
    "measure_volumes",
    "mesh_labels",
    "numeric_feature_columns",
    "plot_values",
    "run_config_on",
    "segment_volume",
    "segmenter_parameters",
    "volume_from_layer",
]

log = logging.getLogger(__name__)


class CancelledError(DlsError):
    """The user stopped a running task."""


class CancelToken:
    """A flag a GUI sets to stop a task at its next progress report."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the task to stop."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`CancelledError` when cancelled."""
        if self._event.is_set():
            raise CancelledError("cancelled by the user")

    def wrap(self, progress: ProgressCallback | None = None) -> ProgressCallback:
        """A progress callback that first checks the flag, then forwards to ``progress``."""

        def report(description: str, done: int, total: int) -> None:
            self.check()
            if progress is not None:
                progress(description, done, total)

        return report


# -- layers → volumes ----------------------------------------------------------------------


def volume_from_layer(
    data: Any,
    *,
    scale: Sequence[float],
    channel_names: Sequence[str] = (),
    source: str | os.PathLike[str] | None = None,
) -> Volume:
    """A :class:`Volume` over a napari layer's data (no copy, nothing read).

    Parameters
    ----------
    data : array-like or list of array-like
        ``(Z, Y, X)`` (or ``(C, Z, Y, X)``) array, or a multiscale list of them,
        full resolution first.
    scale : sequence of float
        The layer's scale; its last three values are the voxel size in µm.
    channel_names : sequence of str
        Names of the channels.
    source : path-like, optional
        Where the data comes from (for messages and provenance).
    """
    levels = list(data) if isinstance(data, list | tuple) else [data]
    arrays = [_as_dask(lv) for lv in levels]
    base = arrays[0]
    if base.ndim not in (3, 4):
        raise InputError(
            f"a 3D layer is needed (Z, Y, X), got {base.ndim} dimensions of shape {tuple(base.shape)}",
            path=source,
        )
    spacing = tuple(float(s) for s in list(scale)[-3:])
    level_spacings = tuple(
        tuple(sp * b / max(1, s) for sp, b, s in zip(spacing, base.shape[-3:], lv.shape[-3:], strict=True))
        for lv in arrays
    )
    return Volume(
        data=base,
        axes="zyx" if base.ndim == 3 else "czyx",
        spacing=spacing,
        channel_names=tuple(channel_names),
        levels=tuple(arrays),
        level_spacings=level_spacings,
        source=Path(source) if source else None,
        format="napari-layer",
    )


def _as_dask(array: Any) -> da.Array:
    """A dask array over ``array`` without reading it (objects with ``to_dask()`` supply their own)."""
    if isinstance(array, da.Array):
        return array
    if hasattr(array, "to_dask"):
        return array.to_dask()
    return da.from_array(np.asarray(array))


# -- segment -----------------------------------------------------------------------------


def segmenter_parameters(method: str) -> dict[str, dict[str, Any]]:
    """Parameters of a registered segmenter: name → ``{"default", "annotation", "description"}``.

    Taken from the segmenter's pydantic ``Params`` model, so a GUI can build
    one input per parameter.
    """
    from dls_microscopy.segment.base import segmenters

    params_model = segmenters().get(method).Params
    out: dict[str, dict[str, Any]] = {}
    for name, field in params_model.model_fields.items():
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        out[name] = {
            "default": default,
            "annotation": field.annotation,
            "description": field.description or "",
            "required": field.is_required(),
        }
    return out


def segment_volume(
    image: Volume,
    *,
    method: str,
    params: Mapping[str, Any] | None = None,
    device: str = "auto",
    memory_budget: int | str = "2GB",
    output: str | os.PathLike[str],
    label_name: str = "nuclei",
    channel: int | str | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> Any:
    """Segment ``image`` blockwise and write the labels as a standalone NGFF label image.

    Parameters
    ----------
    image : Volume
        ``(Z, Y, X)`` or multi-channel (then ``channel`` picks one).
    method, params, device
        Segmenter name in the registry, its parameters, torch device.
    memory_budget : int or str
        Bytes (or ``"2GB"``) for all workers; sets the block size.
    output : path-like
        The ``.ome.zarr`` label image to (over)write.
    progress : callable, optional
        ``progress(description, done, total)``.

    Returns
    -------
    BlockwiseResult
        ``.labels`` is the lazy label :class:`Volume` with all pyramid levels.
    """
    from dls_microscopy.pipeline.config import parse_size
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    seg = get_segmenter(method, dict(params or {}), device=device)
    return segment_blockwise(
        image,
        seg,
        channel=channel,
        memory_budget=parse_size(memory_budget),
        output=output,
        label_name=label_name,
        overwrite=True,
        workers=workers,
        progress=progress,
    )


# -- meshes ------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class MeshSet:
    """The meshes of many objects, concatenated for display, and their descriptors.

    Attributes
    ----------
    meshes : list of ObjectMesh
        One per object, in µm.
    vertices : (V, 3) ndarray of float64
        All vertices, ``(z, y, x)`` µm.
    faces : (F, 3) ndarray of int64
        Triangles indexing :attr:`vertices`.
    vertex_object : (V,) ndarray of int64
        Index (into :attr:`ids`) of the object of each vertex.
    ids : (n,) ndarray of uint64
        Object ids.
    descriptors : dict of str to (n,) ndarray
        Shape descriptors per object (:func:`~dls_microscopy.geometry.shape_descriptors`
        columns), empty when not computed.
    units : dict of str to str
        Unit of each descriptor column.
    """

    meshes: list[Any]
    vertices: np.ndarray
    faces: np.ndarray
    vertex_object: np.ndarray
    ids: np.ndarray
    descriptors: dict[str, np.ndarray]
    units: dict[str, str]

    def vertex_values(self, column: str) -> np.ndarray:
        """``(V,)`` value of descriptor ``column`` at every vertex (NaN → column minimum)."""
        if column not in self.descriptors:
            raise InputError(f"no descriptor {column!r} (have: {', '.join(self.descriptors)})")
        values = np.asarray(self.descriptors[column], dtype=np.float64)
        finite = np.isfinite(values)
        fill = float(values[finite].min()) if finite.any() else 0.0
        values = np.where(finite, values, fill)
        return values[self.vertex_object] if len(values) else np.zeros(0)

    def numeric_columns(self) -> list[str]:
        """Descriptor columns that can colour meshes (numbers, not ids or flags)."""
        skip = {"object_id", "watertight", "sh_star_like"}
        return [c for c, v in self.descriptors.items() if c not in skip and np.asarray(v).dtype.kind in "fiu"]


def mesh_labels(
    labels: Volume,
    *,
    smooth: int = 20,
    decimate: float | None = None,
    descriptors: bool = True,
    memory_budget: int | str | None = None,
    progress: ProgressCallback | None = None,
) -> MeshSet:
    """Mesh every object of a 3D label volume in µm and (optionally) describe its shape.

    The labels are read block by block; the meshes are kept (they are what
    a viewer shows), so the memory used grows with the number of faces.
    """
    from dls_microscopy.geometry import descriptor_units, mesh_objects, shape_descriptors
    from dls_microscopy.pipeline.config import parse_size

    budget = parse_size(memory_budget) if memory_budget is not None else None
    meshes = []
    rows: list[dict[str, Any]] = []
    for mesh in mesh_objects(
        labels, smooth=smooth, decimate=decimate, memory_budget=budget, progress=progress
    ):
        meshes.append(mesh)
        if descriptors:  # cancellable: mesh_objects reports progress between objects
            rows.append(shape_descriptors(mesh))
    meshes.sort(key=lambda m: m.id)
    rows.sort(key=lambda r: r["object_id"])
    units = descriptor_units() if descriptors else {}
    columns = {c: np.array([r[c] for r in rows]) for c in units} if rows else {c: np.zeros(0) for c in units}
    return _concatenate(meshes, columns, units)


def _concatenate(meshes: list[Any], columns: dict[str, np.ndarray], units: dict[str, str]) -> MeshSet:
    nv = np.array([m.n_vertices for m in meshes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(nv)])[:-1] if len(meshes) else np.zeros(0, np.int64)
    if meshes:
        vertices = np.concatenate([m.vertices for m in meshes]).astype(np.float64)
        faces = np.concatenate(
            [m.faces.astype(np.int64) + off for m, off in zip(meshes, offsets, strict=True)]
        )
    else:
        vertices, faces = np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    return MeshSet(
        meshes=meshes,
        vertices=vertices,
        faces=faces,
        vertex_object=np.repeat(np.arange(len(meshes), dtype=np.int64), nv),
        ids=np.array([m.id for m in meshes], dtype=np.uint64),
        descriptors=columns,
        units=units,
    )


# -- features ----------------------------------------------------------------------------


def measure_volumes(
    image: Volume,
    labels: Volume,
    *,
    channels: Sequence[int | str] | None = None,
    compartment: str = "Nuclei",
    image_id: str = "",
    plate: str = "",
    well: str = "",
    site: int = 0,
    memory_budget: int | str = "1GB",
    workers: int | None = None,
    embedding_models: Sequence[str | os.PathLike[str]] = (),
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> Any:
    """The per-object table (one row per object) of ``labels`` measured on ``image``.

    Same columns and values as ``objects.parquet`` of ``dls-microscopy features``
    (with ``--embeddings`` for each of ``embedding_models``: ``Embedding_*`` columns
    after the features, from models trained with ``dls-microscopy embed train``).

    Parameters
    ----------
    image : Volume
        ``(C, Z, Y, X)`` or ``(Z, Y, X)``; the channels to measure are picked by
        ``channels`` (names or indices, default all).
    labels : Volume
        ``(Z, Y, X)`` integer labels with the image's spatial shape.

    Returns
    -------
    pyarrow.Table
    """
    from dls_microscopy.features import measure_objects, objects_table
    from dls_microscopy.pipeline.config import parse_size

    lab = labels.select(c=0) if "c" in labels.axes else labels
    if image.spatial_shape != lab.spatial_shape:
        raise InputError(
            f"image and labels differ in shape: image {image.spatial_shape} vs labels "
            f"{lab.spatial_shape} (zyx)"
        )
    data = image.data if "c" in image.axes else image.data[None]
    names = list(image.channel_names)
    if channels is not None:
        # the same checks and the same fusable selection as `dls-microscopy features`
        from dls_microscopy.pipeline.features import _channel_index, select_channels

        index = [_channel_index(c, names, image.source) for c in channels]
        data = select_channels(data, index)
        names = [names[i] for i in index]
    m = measure_objects(
        data,
        lab.data,
        spacing=image.spacing,
        channel_names=names,
        memory_budget=parse_size(memory_budget),
        workers=workers,
        progress=progress,
    )
    table = objects_table(m, compartment=compartment, plate=plate, well=well, site=site, image_id=image_id)
    if embedding_models:
        from dls_microscopy.features import join_object_columns
        from dls_microscopy.features.embeddings import apply_embeddings

        emb = apply_embeddings(
            data,
            lab.data,
            [os.fspath(p) for p in embedding_models],
            spacing=image.spacing,
            channel_names=names,
            device=device,
            progress=progress,
        )
        table = join_object_columns(table, emb)
    return table


# -- export ------------------------------------------------------------------------------


def export_table(table: Any, path: str | os.PathLike[str]) -> Path:
    """Write a pyarrow table as Parquet (``.parquet``) or CSV (``.csv``), by the suffix."""
    from dls_microscopy.features import write_csv, write_parquet

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        return write_parquet(table, target)
    if suffix == ".csv":
        return write_csv(table, target)
    raise InputError("tables are saved as .parquet or .csv", path=target)


def descriptor_table(meshes: MeshSet) -> Any:
    """The shape descriptors of ``meshes`` as a pyarrow table with units in its schema."""
    import pyarrow as pa

    from dls_microscopy.geometry.table import descriptor_schema

    schema = descriptor_schema(meshes.units)
    return pa.table(
        {c: pa.array(meshes.descriptors[c], type=schema.field(c).type) for c in meshes.units}, schema=schema
    )


def export_meshes(meshes: MeshSet | Iterable[Any], path: str | os.PathLike[str]) -> list[Path]:
    """Write meshes: one ``.glb`` (a node per object) or a folder of ``.ply``/``.obj``/``.stl``.

    ``path`` ending in ``.glb`` writes one file; otherwise ``path`` is a folder
    and ``path``'s name decides nothing: files are ``object_<id>.ply``.
    """
    from dls_microscopy.geometry.export import GlbWriter, object_file_name, write_mesh_file

    items = meshes.meshes if isinstance(meshes, MeshSet) else list(meshes)
    target = Path(path)
    if target.suffix.lower() == ".glb":
        with GlbWriter(target) as glb:
            for m in items:
                glb.add(m)
        return [target]
    fmt = "ply"
    for candidate in ("ply", "obj", "stl"):
        if target.name.lower().endswith("_" + candidate) or target.suffix.lower() == "." + candidate:
            fmt = candidate
    target.mkdir(parents=True, exist_ok=True)
    return [write_mesh_file(m, target / object_file_name(m.id, fmt), fmt) for m in items]


# -- recording a pipeline ----------------------------------------------------------------


@dataclasses.dataclass
class SessionRecorder:
    """The steps done in the GUI, to save as a ``pipeline.yaml``.

    Each ``record_*`` call replaces the previous record of that step, so the
    file describes the latest state of the analysis.
    """

    input_path: str | None = None
    series: int = 0
    segment: dict[str, Any] | None = None
    mesh: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    embeddings: dict[str, Any] | None = None
    compute: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels_name: str | None = None

    def set_input(self, path: str | os.PathLike[str] | None, *, series: int = 0) -> None:
        """The file the analysis runs on (a layer opened from a file)."""
        self.input_path = os.fspath(path) if path is not None else None
        self.series = int(series)

    def record_segment(
        self,
        *,
        method: str,
        params: Mapping[str, Any],
        channel: str | int | None,
        device: str = "auto",
        memory_budget: str | int = "2GB",
    ) -> None:
        """Record a segmentation (the parameters as the segmenter's model accepts them)."""
        values = {k: _plain(v) for k, v in params.items()}
        model = values.pop("model_path", None)
        self.segment = {"method": method, "channel": channel, "params": values}
        if model:
            self.segment["model"] = str(model)
        self.compute.update(device=device, memory_budget=memory_budget)

    def record_mesh(
        self, *, smooth: int, decimate: float | None, descriptors: bool = True, format: str = "glb"
    ) -> None:
        """Record meshing options."""
        self.mesh = {
            "format": format,
            "smooth": int(smooth),
            "decimate": decimate,
            "descriptors": descriptors,
        }

    def record_features(self, *, channels: Sequence[str | int] | None, compartment: str) -> None:
        """Record the feature step."""
        self.features = {
            "channels": list(channels) if channels is not None else None,
            "compartment": compartment,
        }

    def record_embeddings(self, models: Sequence[str | os.PathLike[str]]) -> None:
        """Record the embedding models applied with the features (none: no embeddings step)."""
        self.embeddings = {"model": [os.fspath(m) for m in models]} if models else None

    def record_existing_labels(self, name: str | None) -> None:
        """Labels came from the input file's NGFF labels (no segment step)."""
        self.labels_name = name

    def steps(self) -> list[str]:
        """Names of the recorded steps, in run order."""
        return [n for n in ("segment", "mesh", "features", "embeddings") if getattr(self, n) is not None]

    def to_config(self, output: str | os.PathLike[str], *, input_path: str | None = None) -> Any:
        """A validated :class:`~dls_microscopy.pipeline.config.PipelineConfig`.

        Raises
        ------
        InputError
            Nothing was recorded, or the data was not opened from a file.
        """
        from dls_microscopy.pipeline.config import PipelineConfig

        path = input_path or self.input_path
        if not path:
            raise InputError(
                "the image was not opened from a file, so a pipeline cannot name it; "
                "open the image with File > Open (or `dls-microscopy gui PATH`)"
            )
        if not self.steps():
            raise InputError("nothing to save yet: run Segment, Meshes or Features first")
        data: dict[str, Any] = {
            "input": {"path": str(path), "series": self.series},
            "output": {"path": os.fspath(output)},
            "steps": {n: getattr(self, n) for n in self.steps()},
        }
        if self.segment is None and self.labels_name is not None:
            data["input"]["labels"] = self.labels_name
        if self.compute:
            data["compute"] = dict(self.compute)
        return PipelineConfig.model_validate(data)


def _plain(value: Any) -> Any:
    """YAML-safe value: numpy scalars and tuples become Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# -- feature views -----------------------------------------------------------------------

#: pseudo-columns of a 2D projection of the features (or of ``Embedding_*`` columns)
PROJECTION_COLUMNS = ("PCA 1", "PCA 2")


def numeric_feature_columns(table: Any) -> list[str]:
    """Columns of an objects table that can be plotted: numbers that are not ``Metadata_*``."""
    import pyarrow as pa

    return [
        f.name
        for f in table.schema
        if not f.name.startswith("Metadata_")
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]


def feature_projection(table: Any, columns: Sequence[str] | None = None) -> np.ndarray:
    """``(n, 2)`` principal-component projection of standardised feature columns.

    ``Embedding_*`` columns are used when the table has them, else every
    numeric feature.  Missing values become the column mean; constant columns
    are dropped; signs are fixed so that each component's largest loading is
    positive (deterministic).
    """
    if columns is None:
        numeric = numeric_feature_columns(table)
        emb = [c for c in numeric if c.startswith("Embedding_")]
        columns = emb or numeric
    n = table.num_rows
    if n == 0 or not columns:
        return np.zeros((n, 2))
    x = np.column_stack(
        [np.asarray(table.column(c).to_numpy(zero_copy_only=False), np.float64) for c in columns]
    )
    x[~np.isfinite(x)] = np.nan
    mean = np.nanmean(x, axis=0) if n else np.zeros(x.shape[1])
    x = np.where(np.isnan(x), mean, x)
    std = x.std(axis=0)
    keep = std > 0
    if not keep.any():
        return np.zeros((n, 2))
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    vt = vt[:2]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    proj = z @ (vt * signs[:, None]).T
    if proj.shape[1] < 2:
        proj = np.column_stack([proj, np.zeros(n)])
    return proj


def plot_values(table: Any, column: str) -> np.ndarray:
    """``(n,)`` float values of ``column`` (or of a :data:`PROJECTION_COLUMNS` entry) for a scatter plot."""
    if column in PROJECTION_COLUMNS:
        return feature_projection(table)[:, PROJECTION_COLUMNS.index(column)]
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)


def ids_in_box(
    ids: np.ndarray, x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]
) -> np.ndarray:
    """Ids of the points inside ``box = (x0, x1, y0, y1)`` (bounds in any order, inclusive)."""
    x0, x1, y0, y1 = box
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return np.asarray(ids)[inside]


# -- running a pipeline file on the open data --------------------------------------------


class CallbackRunProgress:
    """Adapts :func:`~dls_microscopy.pipeline.run.run_pipeline`'s progress interface to a callback.

    ``progress("fields", done, total)`` as fields finish and
    ``progress("<field>: <step>", done, total)`` as steps start.  With a
    :meth:`CancelToken.wrap`-ed callback, cancelling makes the next report
    raise, which fails the running field; the run then stops at the next
    field (each one fails at its first step).
    """

    def __init__(self, progress: ProgressCallback) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0
        self.lock = threading.Lock()

    def __enter__(self) -> CallbackRunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, *, total: int, done: int, link: str | None) -> None:
        """The run starts."""
        self.total, self.done = total, done
        self.progress("fields", done, total)

    def step(self, key: str, step: str) -> None:
        """Field ``key`` starts ``step``."""
        self.progress(f"{key}: {step}", self.done, self.total)

    def field_done(self, key: str, status: str) -> None:
        """Field ``key`` ended."""
        with self.lock:
            self.done += 1
        self.progress("fields", self.done, self.total)


def run_config_on(
    config: Any,
    input_path: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressCallback | None = None,
    token: CancelToken | None = None,
) -> Any:
    """Run a pipeline configuration (or its file), optionally on another input image.

    Parameters
    ----------
    config : PipelineConfig or path
        The configuration (a path is read with ``load_config``).
    input_path : path-like, optional
        Replaces ``input.path`` (the GUI runs a config on the image it shows).
    progress : callable, optional
        ``progress(description, done, total)``.
    token : CancelToken, optional
        Cancelling stops the run at the next field and raises :class:`CancelledError`.

    Returns
    -------
    RunSummary
    """
    from dls_microscopy.pipeline.config import load_config
    from dls_microscopy.pipeline.run import run_pipeline

    cfg = load_config(config) if isinstance(config, str | os.PathLike) else config
    if input_path is not None:
        cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"path": os.fspath(input_path)})})
    report = token.wrap(progress) if token is not None else progress
    summary = run_pipeline(cfg, progress=CallbackRunProgress(report) if report is not None else False)
    if token is not None:
        token.check()
    return summary
