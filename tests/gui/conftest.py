"""GUI tests need napari, Qt and a display; ``make test`` runs them under ``xvfb-run``."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_configure(config: pytest.Config) -> None:
    # napari saves settings (window size, reader choices, docks) to the user's config file:
    # tests get their own, before napari is imported
    if "NAPARI_CONFIG" not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="dls-napari-settings-"))
        os.environ["NAPARI_CONFIG"] = str(folder / "settings.yaml")
    # Before any viewer makes a GL context: triton (imported later by torch.optim in other
    # tests of the same session) must load before Mesa's LLVM, or the process segfaults.
    from dls_microscopy.napari.app import _load_triton_first

    _load_triton_first()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    if importlib.util.find_spec("napari") is None or importlib.util.find_spec("qtpy") is None:
        reason = "the gui extra (napari, qtpy) is not installed"
    elif not _has_display():
        reason = "no display (run GUI tests under xvfb-run -a)"
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("gui") is not None:
            item.add_marker(skip)


@pytest.fixture
def small_plate(tmp_path: Path) -> Path:
    """A 2-well NGFF 0.4 plate (one field each) made by ome-zarr-py's writer."""
    import zarr
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    path = tmp_path / "plate.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_plate_metadata(root, ["A", "B"], ["1", "2"], ["A/1", "B/2"])
    rng = np.random.default_rng(0)
    for well in ("A/1", "B/2"):
        row, col = well.split("/")
        wg = root.require_group(row).require_group(col)
        write_well_metadata(wg, ["0"])
        image = wg.require_group("0")
        write_image(
            rng.integers(0, 1000, (8, 32, 32), dtype=np.uint16),
            image,
            axes="zyx",
            scale_factors=[],
            coordinate_transformations=[[{"type": "scale", "scale": [1.0, 0.5, 0.5]}]],
        )
    return path


@pytest.fixture
def count_reads(monkeypatch):
    """Record (array path, voxels) of every zarr read."""
    from dls_microscopy.io import _zarr_chunks

    reads: list[tuple[str, int]] = []
    original = _zarr_chunks._ZarrReader.__call__

    def counting(self, key):
        out = original(self, key)
        reads.append((self.array.path, int(out.size)))
        return out

    monkeypatch.setattr(_zarr_chunks._ZarrReader, "__call__", counting)
    return reads
