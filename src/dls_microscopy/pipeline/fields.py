"""The units of work of a run: one field (image) each, found from ``input.path``.

``input.path`` is one image, a glob of images, or an OME-Zarr HCS plate;
:func:`discover_fields` turns it into a sorted list of :class:`FieldSpec`.
A plate gives one field per well and field (row-major wells, fields in well
order), with ``Metadata_Plate`` (the plate's name), ``Metadata_Well``
(``"B03"``: row name + column name) and ``Metadata_Site`` (the field's
index in its well).  Each field opens on its own, without the rest of the
plate (``source`` is the field's image group).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dls_microscopy.errors import InputError, InputNotFoundError

__all__ = ["FieldSpec", "discover_fields", "image_id_of", "plate_field"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True, order=True)
class FieldSpec:
    """One field of a run.

    Attributes
    ----------
    key : str
        Unique, file-name safe; the folder ``fields/KEY`` of the run holds its outputs.
    source : str
        What :func:`~dls_microscopy.io.open_volume` opens (``file.h5:/dataset`` allowed).
    series : int
        Series of a multi-series file.
    plate, well : str
        ``Metadata_Plate`` and ``Metadata_Well`` (``""`` outside plates).
    site : int
        ``Metadata_Site``: the field's index in its well (0 outside plates).
    image_id : str
        ``Metadata_ImageID`` (unique in the run).
    time_point : int or None
        The time point of a time series this field analyses (its key ends in ``_tN``,
        zero-padded to the largest time point's width, its image id in ``_tN``); None
        for an image without time points.
    """

    key: str
    source: str
    series: int = 0
    plate: str = ""
    well: str = ""
    site: int = 0
    image_id: str = ""
    time_point: int | None = None

    def metadata(self) -> dict[str, Any]:
        """The ``Metadata_*`` values of this field (``Metadata_TimePoint`` for a time point)."""
        time = {} if self.time_point is None else {"Metadata_TimePoint": self.time_point}
        return {
            "Metadata_Plate": self.plate,
            "Metadata_Well": self.well,
            "Metadata_Site": self.site,
            **time,
            "Metadata_ImageID": self.image_id,
        }


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "field"


def _plate_layout(path: Path) -> Any | None:
    """The plate layout when ``path`` is an OME-Zarr HCS plate, else ``None``."""
    from dls_microscopy.io import describe_plate, detect_format
    from dls_microscopy.io.zarr_read import ome_attrs, open_group

    if not path.is_dir() or detect_format(path) != "zarr":
        return None
    if "plate" not in ome_attrs(dict(open_group(path).attrs)):
        return None
    return describe_plate(path)


def _plate_fields(path: Path, layout: Any) -> list[FieldSpec]:
    name = layout.name or path.name.removesuffix(".zarr").removesuffix(".ome")
    fields = []
    for well, index, field_path in layout.iter_fields():
        well_name = f"{well.row}{well.column}"
        key = _safe(f"{name}_{well_name}_{field_path}")
        fields.append(
            FieldSpec(
                key=key,
                source=str(path / well.path / field_path),
                plate=str(name),
                well=well_name,
                site=index,
                image_id=key,
            )
        )
    return fields


def _expand(path: str, series: int) -> list[FieldSpec]:
    from dls_microscopy.io import split_dataset_path

    file_path, _ = split_dataset_path(path)
    if not Path(file_path).exists():
        raise InputNotFoundError("input does not exist", path=file_path)
    layout = _plate_layout(Path(file_path))
    if layout is not None:
        if layout.n_fields == 0:
            raise InputError("the plate has no fields", path=file_path)
        return _plate_fields(Path(file_path), layout)
    name = image_id_of(path, series)
    return [FieldSpec(key=name, source=path, series=series, image_id=name)]


def image_id_of(path: str | os.PathLike[str], series: int = 0) -> str:
    """``Metadata_ImageID`` (and field key) of one image that is not a plate's field.

    The file's name, with ``_sN`` for a series other than the first; an HDF5 dataset
    (``file.h5:/raw``) is named by its file, as every dataset of the file is one input.
    The desktop app names the image it measures with this too, so that its tables join a
    run's.
    """
    from dls_microscopy.io import split_dataset_path

    file_path, _ = split_dataset_path(os.fspath(path))
    return _safe(Path(file_path).name + (f"_s{series}" if series else ""))


def plate_field(plate: str | os.PathLike[str], source: str | os.PathLike[str]) -> FieldSpec | None:
    """The field of HCS plate ``plate`` whose image is ``source``, named as a pipeline run names it.

    The desktop app measures one field at a time; with this its ``Metadata_Plate``,
    ``Metadata_Well``, ``Metadata_Site`` and ``Metadata_ImageID`` are a run's, so that the
    tables join.  ``None`` when ``source`` is not a field of ``plate``.
    """
    from dls_microscopy.errors import DlsError

    root = Path(plate)
    try:
        layout = _plate_layout(root)
    except DlsError:  # not a store at all
        return None
    if layout is None:
        return None
    wanted = Path(source).absolute()
    for spec in _plate_fields(root, layout):
        if Path(spec.source).absolute() == wanted:
            return spec
    return None


@contextlib.contextmanager
def _quiet_readers() -> Iterator[None]:
    """Hold back the readers' warnings (e.g. "using a spacing of 1 µm").

    Discovery opens each image for its time axis only; the field's run opens it
    again and logs them there, once, beside the field.
    """
    readers = logging.getLogger("dls_microscopy.io")
    level = readers.level
    readers.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        readers.setLevel(level)


def _time_points(field: FieldSpec) -> list[FieldSpec]:
    """``field`` once per time point when its image is a time series, else ``[field]``.

    Only the metadata is read, quietly (:func:`_quiet_readers`).  An image that cannot
    be opened stays one field: it fails when it runs, with its reason in the run
    summary, like any other field.
    """
    from dls_microscopy.errors import DlsError
    from dls_microscopy.io import open_volume

    try:
        with _quiet_readers():
            vol = open_volume(field.source, series=field.series)
    except (DlsError, OSError, ValueError):
        return [field]
    n = vol.axis_size("t") if "t" in vol.axes else 1
    if n <= 1:
        return [field]
    width = len(str(n - 1))
    return [
        dataclasses.replace(
            field,
            key=f"{field.key}_t{t:0{width}d}",  # zero-padded: folders sort in time order
            image_id=f"{field.image_id}_t{t}",  # as `features --time-point` and the desktop app name it
            time_point=t,
        )
        for t in range(n)
    ]


def discover_fields(
    path: str, *, series: int = 0, exclude: str | os.PathLike[str] | None = None
) -> list[FieldSpec]:
    """All fields of an input: one image, a glob of images (and plates), or an HCS plate.

    A time series gives one field per time point (see :func:`_time_points`).

    Parameters
    ----------
    path : str
        The input (``input.path`` of the configuration, absolute).
    series : int
        Series of each (non-plate) image.
    exclude : path-like, optional
        A folder whose files a glob does not match (the run's output folder, which
        holds label stores a pattern such as ``**/*.ome.zarr`` would pick up).

    Returns
    -------
    list of FieldSpec
        Sorted by plate, well, site and key; keys are unique.

    Raises
    ------
    InputNotFoundError
        The path does not exist, or the glob matches nothing.
    InputError
        A plate without fields.
    """
    if glob.has_magic(path):
        from dls_microscopy.io import split_dataset_path

        pattern, dataset = split_dataset_path(path)  # "plates/*/crop.h5:/raw": the dataset of each file
        matches = sorted(glob.glob(str(pattern), recursive=True))
        if exclude is not None:
            skip = Path(exclude).absolute()
            matches = [
                m for m in matches if skip not in Path(m).absolute().parents and Path(m).absolute() != skip
            ]
        if not matches:
            where = " outside the output folder" if exclude is not None else ""
            raise InputNotFoundError(f"no file matches this pattern{where}", path=path)
        if dataset is not None:
            matches = [f"{m}:{dataset}" for m in matches]
        fields = [f for m in matches for f in _expand(m, series)]
        keys = [f.key for f in fields]
        if len(set(keys)) != len(keys):  # same file names in different folders
            root = os.path.commonpath([os.path.abspath(m) for m in matches])
            fields = [
                dataclasses.replace(
                    f,
                    key=_safe(os.path.relpath(f.source, root)),
                    image_id=_safe(os.path.relpath(f.source, root)),
                )
                for f in fields
            ]
    else:
        fields = _expand(path, series)
    fields = [f for field in fields for f in _time_points(field)]
    fields.sort(key=lambda f: (f.plate, f.well, f.site, f.key))
    keys = [f.key for f in fields]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise InputError(f"two inputs would share the output folder name(s) {dup}", path=path)
    return fields
