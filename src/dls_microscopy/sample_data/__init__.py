"""The project's own sample data: a seeded synthetic nuclei generator and one small real volume.

* :func:`make_synthetic_nuclei` makes a two-channel 3D nuclei image with exact ground-truth
  labels in memory (see :mod:`dls_microscopy.sample_data.synthetic`).
* ``nuclei_1135.h5`` ships inside this package: a 100³ crop of real confocal nuclei with 54
  gold-standard labels (origin in ``SOURCE.md`` next to it); :func:`load_nuclei_1135` reads
  it and :func:`nuclei_1135_resource` locates it.
* :func:`write_sample_data` writes both to a folder as files the readers understand
  (what ``dls-microscopy sample OUTDIR`` does).

Nothing here reads ``../shared`` or the network.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import shutil
from collections.abc import Callable
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np

from dls_microscopy.errors import CorruptDataError, OutputError
from dls_microscopy.sample_data.synthetic import (
    NucleiSample,
    SyntheticNuclei,
    make_synthetic_nuclei,
)

__all__ = [
    "NUCLEI_1135_SHA256",
    "SAMPLE_FILES",
    "NucleiSample",
    "SyntheticNuclei",
    "load_nuclei_1135",
    "make_synthetic_nuclei",
    "nuclei_1135_resource",
    "write_sample_data",
]

logger = logging.getLogger(__name__)

#: SHA-256 of the packaged ``nuclei_1135.h5`` (byte-identical to its published source).
NUCLEI_1135_SHA256 = "aefcc5103479c959aca022f411c3260df1a5c99a69b0adb03d6bbea19e8afc2f"
_NUCLEI_1135 = "nuclei_1135.h5"

#: Files written by :func:`write_sample_data`, in the order they are written.
SAMPLE_FILES = (
    "synthetic_nuclei.ome.tif",
    "synthetic_nuclei_labels.ome.tif",
    _NUCLEI_1135,
    "README.md",
)


def nuclei_1135_resource() -> Traversable:
    """The packaged ``nuclei_1135.h5`` as an :mod:`importlib.resources` traversable.

    Use ``importlib.resources.as_file`` on it where a real file system path is needed.
    """
    return importlib.resources.files(__name__) / _NUCLEI_1135


def load_nuclei_1135() -> NucleiSample:
    """Read the packaged real nuclei volume.

    Returns
    -------
    NucleiSample
        ``image`` ``(1, 100, 100, 100)`` ``uint8`` (axes ``"czyx"``, channel ``"nuclei"``),
        ``labels`` ``(100, 100, 100)`` ``uint8`` with 54 gold-standard nuclei, ``spacing``
        from the file's ``element_size_um`` (about 0.284, 0.127, 0.127 µm).
    """
    import h5py

    with importlib.resources.as_file(nuclei_1135_resource()) as path:
        try:
            with h5py.File(path, "r") as f:
                raw = f["raw"][...]
                labels = f["label"][...]
                spacing = tuple(float(s) for s in f["raw"].attrs["element_size_um"])
        except (OSError, KeyError) as e:
            raise CorruptDataError(f"packaged sample volume is unreadable: {e}", path=path) from e
    return NucleiSample(image=raw[np.newaxis], labels=labels, spacing=spacing, channel_names=("nuclei",))


def write_sample_data(outdir: str | os.PathLike[str], *, seed: int = 0) -> dict[str, Path]:
    """Write the sample data set into ``outdir``.

    Writes a synthetic two-channel OME-TIFF (default :func:`make_synthetic_nuclei`
    parameters, ``seed``), its ground-truth labels as a second OME-TIFF, a copy of the
    packaged real volume ``nuclei_1135.h5`` and a ``README.md`` describing them.  The folder
    is created if needed; each file is written under a temporary name and then renamed
    over any existing file, so readers never see a half-written file.

    Parameters
    ----------
    outdir : path-like
        Destination folder.
    seed : int
        Seed of the synthetic image.

    Returns
    -------
    dict of str to Path
        File name → path of each file written (the keys are :data:`SAMPLE_FILES`).

    Raises
    ------
    OutputError
        When the folder or a file cannot be written.
    """
    import tifffile

    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the sample data folder: {e.strerror or e}", path=out) from e
    sample = make_synthetic_nuclei(seed=seed)
    image_name, labels_name, real_name, readme_name = SAMPLE_FILES
    paths = {name: out / name for name in SAMPLE_FILES}

    def tiff_writer(data: np.ndarray, axes: str, name: str) -> Callable[[Path], None]:
        metadata = {"axes": axes, "Name": name, **_ome_physical_sizes(sample.spacing)}
        if "C" in axes:
            metadata["Channel"] = {"Name": list(sample.channel_names)}

        def write(tmp: Path) -> None:
            tifffile.imwrite(
                tmp,
                data,
                ome=True,
                photometric="minisblack",
                compression="zlib",
                predictor=True,
                metadata=metadata,
            )

        return write

    _replace_atomically(paths[image_name], tiff_writer(sample.image, "CZYX", "synthetic_nuclei"))
    _replace_atomically(paths[labels_name], tiff_writer(sample.labels, "ZYX", "synthetic_nuclei_labels"))
    with importlib.resources.as_file(nuclei_1135_resource()) as src:
        _replace_atomically(paths[real_name], lambda tmp: shutil.copyfile(src, tmp))
    readme = _readme_text(sample)
    _replace_atomically(paths[readme_name], lambda tmp: tmp.write_text(readme, encoding="utf-8"))
    logger.info("wrote sample data (seed %d) to %s", seed, out)
    return paths


def _ome_physical_sizes(spacing: tuple[float, ...]) -> dict[str, float | str]:
    dz, dy, dx = spacing
    return {
        "PhysicalSizeZ": dz, "PhysicalSizeZUnit": "µm",
        "PhysicalSizeY": dy, "PhysicalSizeYUnit": "µm",
        "PhysicalSizeX": dx, "PhysicalSizeXUnit": "µm",
    }  # fmt: skip


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary name next to ``path``, then rename it to ``path``."""
    from dls_microscopy.io.atomic import partial_file, release_partial

    tmp = partial_file(path)  # this writer's own name
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write sample data: {e.strerror or e}", path=path) from e
    finally:
        release_partial(tmp)


def _readme_text(sample: SyntheticNuclei) -> str:
    z, y, x = sample.labels.shape
    dz, dy, dx = sample.spacing
    channels = ", ".join(f"{i} = {n}" for i, n in enumerate(sample.channel_names))
    return f"""# DLS Microscopy sample data

Written by `dls_microscopy.sample_data.write_sample_data` (`dls-microscopy sample OUTDIR`).

- `synthetic_nuclei.ome.tif`: synthetic nuclei, OME-TIFF (zlib), axes CZYX,
  shape (2, {z}, {y}, {x}), uint16, channels {channels}; voxel size (z, y, x)
  = ({dz}, {dy}, {dx}) µm.
- `synthetic_nuclei_labels.ome.tif`: its exact ground truth, OME-TIFF (zlib), axes ZYX,
  shape ({z}, {y}, {x}), uint32, 0 = background, nuclei 1..{sample.n_nuclei}; same voxel size.
- `nuclei_1135.h5`: real confocal nuclei, HDF5 datasets `raw` (image) and `label`
  (54 gold-standard nuclei), both (z, y, x) = (100, 100, 100) uint8, attribute
  `element_size_um` ≈ (0.284, 0.127, 0.127) µm.

## Synthetic image

Made by `make_synthetic_nuclei(seed={sample.seed})` with default parameters: {sample.n_nuclei}
ellipsoidal nuclei (7 µm mean diameter ± 25 %, random orientation and aspect), densely packed
so that many touch (touching nuclei share a face in the labels), imaged with an anisotropic
Gaussian PSF, a background gradient, Poisson and Gaussian read noise.  Channel 0 is a
DNA stain with chromatin texture and dark nucleoli, channel 1 a nuclear-envelope stain.  The
same seed always gives the same image.  It was made by this project and is distributed under
the project's licence (BSD-3-Clause).

## Real volume

`nuclei_1135.h5` is a crop of real confocal images of nuclei in an Arabidopsis ovule
(research unit FOR2581, BioImage Archive S-BIAD1026), taken from the test data of the
go-nuclear project; its publishers cast `raw` to uint8.  Its bytes are unchanged:
SHA-256 `{NUCLEI_1135_SHA256}`.  This project did not make it; for the terms under which
it may be reused, see BioImage Archive entry S-BIAD1026 and the go-nuclear project.
"""
