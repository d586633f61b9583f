"""``SegmenterTests``: the contract every registered segmenter must pass.

Subclass it in a plugin's tests and provide the ``segmenter`` fixture (and,
if the defaults do not suit the method, ``sample``)::

    class TestMySegmenter(SegmenterTests):
        @pytest.fixture
        def segmenter(self):
            return MySegmenter(device="cpu", diameter_um=6)

The checks: registration under its ``name``, output dtype/shape, consecutive
labels, determinism, honoured halo (blockwise on several blocks equals the
whole-volume result: F1 at IoU 0.5 ≥ ``blockwise_min_f1`` and object count
within ``blockwise_count_tolerance``), and clear errors on bad input.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from dls_microscopy.errors import DimensionalityError, InputError, UnsupportedDtypeError
from dls_microscopy.segment.base import BaseSegmenter, EmptyResultWarning, segmenter_names

__all__ = ["SegmenterTests"]


class SegmenterTests:
    """Base class of a segmenter's conformance tests (see the module docstring)."""

    #: minimum F1@0.5 between blockwise and whole-volume results
    blockwise_min_f1: float = 0.99
    #: allowed relative difference of object counts, blockwise vs whole
    blockwise_count_tolerance: float = 0.01
    #: block core shape used for the blockwise check (several blocks on the sample)
    blockwise_block_shape: tuple[int, int, int] = (16, 64, 64)
    #: the sample must contain at least this many objects for the checks to mean anything
    min_objects: int = 5

    @pytest.fixture
    def segmenter(self) -> BaseSegmenter:  # pragma: no cover - subclasses provide it
        raise NotImplementedError("provide a `segmenter` fixture")

    @pytest.fixture
    def sample(self) -> tuple[np.ndarray, tuple[float, float, float]]:
        """A small synthetic nuclei volume (Z, Y, X) uint16 and its spacing (µm)."""
        from dls_microscopy.sample_data import make_synthetic_nuclei

        s = make_synthetic_nuclei(shape=(32, 128, 128), spacing=(1.0, 0.4, 0.4), seed=11)
        return s.image[0], s.spacing

    # -- contract ------------------------------------------------------------

    def test_registered(self, segmenter: BaseSegmenter) -> None:
        assert segmenter.name in segmenter_names(), (
            f"{segmenter.name!r} is not registered in the 'dls_microscopy.segmenters' entry points"
        )

    def test_output_dtype_shape_and_consecutive_ids(self, segmenter: BaseSegmenter, sample: Any) -> None:
        image, spacing = sample
        labels = segmenter.segment(image, spacing=spacing)
        assert labels.shape == image.shape[-3:]
        assert labels.dtype in (np.uint32, np.uint64)
        ids = np.unique(labels)
        n = int(labels.max())
        assert n >= self.min_objects, f"only {n} objects found in the sample"
        np.testing.assert_array_equal(ids, np.arange(n + 1))

    def test_deterministic(self, segmenter: BaseSegmenter, sample: Any) -> None:
        image, spacing = sample
        a = segmenter.segment(image, spacing=spacing)
        b = segmenter.segment(image.copy(), spacing=spacing)
        np.testing.assert_array_equal(a, b)

    def test_halo_shape(self, segmenter: BaseSegmenter, sample: Any) -> None:
        _, spacing = sample
        halo = segmenter.halo(spacing)
        assert len(halo) == 3 and all(int(h) == h and h >= 0 for h in halo)

    def test_blockwise_equals_whole(self, segmenter: BaseSegmenter, sample: Any, tmp_path: Any) -> None:
        from dls_microscopy.io import open_volume, write_ome_zarr
        from dls_microscopy.segment.blockwise import segment_blockwise
        from dls_microscopy.segment.metrics import match_objects

        image, spacing = sample
        store = write_ome_zarr(image, tmp_path / "sample.ome.zarr", spacing=spacing)
        vol = open_volume(store)
        stats = segmenter.global_stats(vol.data, spacing=spacing)
        whole = segmenter.segment(image, spacing=spacing, stats=stats)
        res = segment_blockwise(
            vol, segmenter, block_shape=self.blockwise_block_shape, stats=stats, workers=1
        )
        assert res.plan.n_blocks > 1
        got = res.labels.load()
        n_whole = int(whole.max())
        m = match_objects(got, whole, thresholds=(0.5,))[0.5]
        assert m.f1 >= self.blockwise_min_f1, (m.to_dict(), res.seam_qc)
        assert abs(res.n_objects - n_whole) <= max(1, self.blockwise_count_tolerance * n_whole)

    # -- bad input ---------------------------------------------------------------

    def test_rejects_2d(self, segmenter: BaseSegmenter) -> None:
        with pytest.raises(DimensionalityError):
            segmenter.segment(np.zeros((32, 32), np.uint16), spacing=(1.0, 1.0, 1.0))

    def test_rejects_empty_axis(self, segmenter: BaseSegmenter) -> None:
        with pytest.raises(DimensionalityError):
            segmenter.segment(np.zeros((0, 32, 32), np.uint16), spacing=(1.0, 1.0, 1.0))

    def test_rejects_complex(self, segmenter: BaseSegmenter) -> None:
        with pytest.raises(UnsupportedDtypeError):
            segmenter.segment(np.zeros((8, 32, 32), np.complex64), spacing=(1.0, 1.0, 1.0))

    def test_rejects_bad_spacing(self, segmenter: BaseSegmenter, sample: Any) -> None:
        image, _ = sample
        with pytest.raises(InputError):
            segmenter.segment(image, spacing=(0.0, 1.0, 1.0))

    def test_constant_image_gives_no_objects(self, segmenter: BaseSegmenter) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyResultWarning)
            labels = segmenter.segment(np.full((16, 48, 48), 7, np.uint16), spacing=(1.0, 0.5, 0.5))
        assert labels.shape == (16, 48, 48) and labels.max() == 0

    def test_nan_is_background(self, segmenter: BaseSegmenter, sample: Any) -> None:
        image, spacing = sample
        img = image.astype(np.float32)
        img[:, :8, :8] = np.nan
        labels = segmenter.segment(img, spacing=spacing)
        assert labels.shape == img.shape
        assert labels.max() >= self.min_objects

    def test_unknown_parameter_is_an_error(self, segmenter: BaseSegmenter) -> None:
        with pytest.raises(InputError, match="not_a_parameter"):
            type(segmenter)(device="cpu", not_a_parameter=1)
