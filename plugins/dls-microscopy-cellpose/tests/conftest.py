"""Fixtures: a tiny trained Cellpose-SAM network, no downloads, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dls_microscopy.sample_data import SyntheticNuclei, make_synthetic_nuclei

from tiny_cpsam import DIAMETER_UM, SAMPLE_SPACING, train_tiny_cpsam


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: on the shared 2-core test machines, two torch threads
    competing with other processes made training 4× slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def no_downloads():
    """Any attempt by cellpose to download weights fails the test that made it."""
    import cellpose.utils

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"attempted download of {url}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cellpose.utils, "download_url_to_file", refuse)
        yield


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny network's weights (trained once per session, ~10 s on one CPU thread)."""
    return train_tiny_cpsam(tmp_path_factory.mktemp("weights") / "tiny_cpsam.pt")


@pytest.fixture(scope="session")
def nuclei() -> SyntheticNuclei:
    """16×64×64 synthetic nuclei of 8 µm, spacing (1, 0.5, 0.5) µm: ~26 objects."""
    return make_synthetic_nuclei(
        (16, 64, 64), spacing=SAMPLE_SPACING, diameter_um=DIAMETER_UM, seed=12
    )


@pytest.fixture
def empty_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cellpose's model folders point into an empty temporary folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = tmp_path / "cellpose-models"
    cache.mkdir()
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(cache))
    return cache
