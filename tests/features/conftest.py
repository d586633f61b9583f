"""Fixtures of the feature tests: a small synthetic nuclei image, in memory and as OME-Zarr."""

from __future__ import annotations

import pytest

from dls_microscopy.sample_data.synthetic import make_synthetic_nuclei

#: Anisotropic voxels (z coarser than y, x), as in confocal stacks.
SPACING = (1.0, 0.3, 0.25)


@pytest.fixture(scope="session")
def nuclei():
    """Two-channel uint16 image (24, 64, 72) with ~20 touching nuclei cut by the faces."""
    return make_synthetic_nuclei((24, 64, 72), spacing=SPACING, diameter_um=6.0, seed=7)


@pytest.fixture(scope="session")
def nuclei_zarr(nuclei, tmp_path_factory):
    """The image as OME-Zarr 0.5 with its labels stored as ``labels/nuclei``."""
    from dls_microscopy.io import write_ome_zarr

    path = tmp_path_factory.mktemp("features") / "nuclei.ome.zarr"
    return write_ome_zarr(
        nuclei.image,
        path,
        axes="czyx",
        spacing=nuclei.spacing,
        channel_names=nuclei.channel_names,
        labels={"nuclei": nuclei.labels},
        chunks=16,
        n_levels=1,
    )
