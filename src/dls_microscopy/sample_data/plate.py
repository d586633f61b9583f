"""A small synthetic HCS plate as OME-Zarr (NGFF 0.5 or 0.4): wells × fields of synthetic nuclei.

Every field is a :func:`~dls_microscopy.sample_data.make_synthetic_nuclei`
image (two channels, ``DAPI`` and ``LaminB1``) with its own seed, written by
:func:`~dls_microscopy.io.write_ome_zarr` with its ground truth as the NGFF
label image ``truth``; the plate and well groups carry NGFF plate/well
metadata.  The store appears complete or not at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

__all__ = ["PIPELINE_SAMPLE_FILES", "write_pipeline_samples", "write_synthetic_plate"]

log = logging.getLogger(__name__)


def write_synthetic_plate(
    path: str | os.PathLike[str],
    *,
    rows: Sequence[str] = ("A", "B"),
    columns: Sequence[str] = ("01", "02"),
    fields: int = 2,
    shape: Sequence[int] = (24, 64, 64),
    spacing: Sequence[float] = (1.0, 0.3, 0.3),
    seed: int = 0,
    name: str = "synthetic-plate",
    version: Literal["0.5", "0.4"] = "0.5",
    overwrite: bool = False,
) -> Path:
    """Write a plate of ``len(rows) × len(columns)`` wells with ``fields`` fields each.

    Parameters
    ----------
    path : path
        Destination ``.ome.zarr`` (created atomically).
    rows, columns : sequence of str
        Row and column names; every combination is a well (``"A/01"``...).
    fields : int
        Fields per well.
    shape : (3,) ints
        ``(Z, Y, X)`` of every field.
    spacing : (3,) floats
        Voxel size (z, y, x) in µm.
    seed : int
        Field ``i`` (row-major over wells, then fields) uses seed ``seed + i``.
    name : str
        The plate's name (``Metadata_Plate`` of a run).
    version : {"0.5", "0.4"}
        NGFF version (zarr v3 or v2).
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    Path
        The plate.
    """
    import zarr

    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.io.atomic import atomic_directory
    from dls_microscopy.sample_data import make_synthetic_nuclei

    out = Path(path)
    zarr_format = 3 if version == "0.5" else 2
    wells = [(r, c) for r in rows for c in columns]

    def ome(key: str, value: dict) -> dict:
        if version == "0.5":
            return {"ome": {"version": "0.5", key: value}}
        return {key: {**value, "version": "0.4"}}

    with atomic_directory(out, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        i = 0
        for r, c in wells:
            well = root.require_group(f"{r}/{c}")
            well.attrs.update(
                ome("well", {"images": [{"path": str(f), "acquisition": 0} for f in range(fields)]})
            )
            for f in range(fields):
                sample = make_synthetic_nuclei(shape, spacing=spacing, seed=seed + i)
                write_ome_zarr(
                    sample.image,
                    tmp / r / c / str(f),
                    axes="czyx",
                    spacing=sample.spacing,
                    channel_names=sample.channel_names,
                    labels={"truth": sample.labels},
                    version=version,
                    n_levels=1,
                    overwrite=True,
                )
                i += 1
        plate = {
            "name": name,
            "rows": [{"name": r} for r in rows],
            "columns": [{"name": c} for c in columns],
            "wells": [
                {"path": f"{r}/{c}", "rowIndex": list(rows).index(r), "columnIndex": list(columns).index(c)}
                for r, c in wells
            ],
            "field_count": fields,
            "acquisitions": [{"id": 0, "name": "synthetic"}],
            "version": version,  # ome-zarr-models expects it in 0.5 plates too
        }
        # beside NGFF's keys, what made it: `--overwrite` replaces only stores that say so
        made = {"sample": "synthetic plate", "seed": seed}
        root.attrs.update({**ome("plate", plate), "dls_microscopy": made})
    log.info("wrote a synthetic plate of %d wells × %d fields to %s", len(wells), fields, out)
    return out


#: What :func:`write_pipeline_samples` writes into its folder.
PIPELINE_SAMPLE_FILES = ("synthetic_plate.ome.zarr", "pipeline.yaml", "pipeline_nuclei_1135.yaml")


def write_pipeline_samples(outdir: str | os.PathLike[str], *, seed: int = 0) -> dict[str, Path]:
    """Write the synthetic plate and two ready-to-run pipeline configurations into ``outdir``.

    ``pipeline.yaml`` (the packaged example: segment → mesh → features on every
    field of ``synthetic_plate.ome.zarr``) and ``pipeline_nuclei_1135.yaml``
    (the same steps on the real volume ``nuclei_1135.h5``, which
    :func:`~dls_microscopy.sample_data.write_sample_data` writes), both with
    outputs beside ``outdir``.

    Returns
    -------
    dict of str to Path
        ``synthetic_plate.ome.zarr``, ``pipeline.yaml``, ``pipeline_nuclei_1135.yaml``.
    """
    import importlib.resources

    import yaml

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    plate_name, example_name, real_name = PIPELINE_SAMPLE_FILES
    plate = write_synthetic_plate(out / plate_name, seed=seed, overwrite=True)
    text = (importlib.resources.files("dls_microscopy.sample_data") / "pipeline.yaml").read_text("utf-8")
    example = out / example_name
    example.write_text(text, encoding="utf-8")
    real = yaml.safe_load(text)
    real["input"] = {"path": "nuclei_1135.h5:/raw"}
    real["output"]["path"] = "../pipeline_run_nuclei_1135"
    real["steps"]["segment"].update(channel=None, params={"diameter_um": 3.2})
    real["steps"]["features"]["channels"] = None
    real_path = out / real_name
    real_path.write_text(
        "# The real sample volume through the same steps (nuclei about 3.2 µm across).\n"
        + yaml.safe_dump(real, sort_keys=False),
        encoding="utf-8",
    )
    return {plate.name: plate, example.name: example, real_path.name: real_path}
