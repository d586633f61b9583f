"""Fixtures of the embedding tests: a tiny phenotype plate (OME-Zarr) and models trained on it once."""

from __future__ import annotations

import pytest

from dls_microscopy.features.embeddings import TrainingSample, train_embedding_model
from dls_microscopy.sample_data.phenotypes import make_phenotype_well, write_phenotype_plate

#: Small wells: about 6 nuclei each, anisotropic voxels.
WELL = {"shape": (30, 96, 96), "n_nuclei": 6}
#: Fast training settings (a few seconds on 2 cores).
FAST = {"epochs": 6, "batch_size": 8, "device": "cpu", "threads": 1}


@pytest.fixture(scope="session")
def fast():
    """Training keyword arguments for tests."""
    return dict(FAST)


@pytest.fixture(scope="session")
def wells():
    """Four in-memory wells: two control, two lobed."""
    return [
        make_phenotype_well(t, seed=3, well_index=i, well=f"A0{i}", **WELL)
        for i, t in enumerate(("control", "lobed", "control", "lobed"))
    ]


@pytest.fixture(scope="session")
def samples(wells):
    return [TrainingSample(w.image, w.labels, w.spacing, ("DAPI",)) for w in wells]


@pytest.fixture(scope="session")
def models(samples, tmp_path_factory):
    """``{"image": path, "shape": path}`` trained once for the session, and their records."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("image", "shape"):
        record = train_embedding_model(samples, kind, root / f"{kind}.pt", seed=5, **FAST)
        out[kind] = (root / f"{kind}.pt", record)
    return out


@pytest.fixture(scope="session")
def plate(tmp_path_factory):
    """Two wells written as OME-Zarr (labels inside as ``nuclei``) and the layout."""
    root = tmp_path_factory.mktemp("plate")
    layout = write_phenotype_plate(
        root, plate="T", seed=4, replicates=1, treatments=("control", "lobed"), **WELL
    )
    return root, layout
