"""CellposeSegmenter: the conformance suite on real cellpose 3D inference, and the rest."""

from __future__ import annotations

import hashlib
import json

import dask.array as da
import numpy as np
import pytest
from dls_microscopy.errors import InputError
from dls_microscopy.segment import get_segmenter
from dls_microscopy.segment.metrics import match_objects
from dls_microscopy.testing import SegmenterTests

from dls_microscopy_cellpose import CellposeSegmenter
from tiny_cpsam import DIAMETER_UM


class TestCellposeConforms(SegmenterTests):
    """The shared contract, unchanged thresholds, with the tiny trained network.

    The sample holds ~26 nuclei of 8 µm at (1, 0.5, 0.5) µm: 16 px across in y/x, the
    network's training size, so cellpose resizes only z (anisotropy 2).  Blocks of
    16×32×32 give 4 blocks with seams along y and x; the halo is 8×16×16 voxels.
    """

    blockwise_block_shape = (16, 32, 32)

    @pytest.fixture
    def segmenter(self, tiny_weights):
        return CellposeSegmenter(
            device="cpu", model_path=str(tiny_weights), diameter_um=DIAMETER_UM
        )

    @pytest.fixture
    def sample(self, nuclei):
        return nuclei.image[0], nuclei.spacing


@pytest.fixture
def segmenter(tiny_weights):
    return CellposeSegmenter(device="cpu", model_path=str(tiny_weights), diameter_um=DIAMETER_UM)


def test_finds_the_nuclei_and_leaves_its_input_alone(segmenter, nuclei):
    image = nuclei.image[0].astype(np.float32)  # cellpose normalises float32 input in place
    before = image.copy()
    labels = segmenter.segment(image, spacing=nuclei.spacing)
    np.testing.assert_array_equal(image, before)
    result = match_objects(labels, nuclei.labels, thresholds=(0.5,))[0.5]
    # measured: F1 0.83, 27 objects for 26 (the network trains for ~10 s)
    assert result.f1 >= 0.6, result.to_dict()
    assert abs(int(labels.max()) - int(nuclei.labels.max())) <= 0.3 * nuclei.labels.max()


def test_registered_under_its_name(tiny_weights):
    seg = get_segmenter("cellpose", {"model_path": str(tiny_weights)}, device="cpu")
    assert isinstance(seg, CellposeSegmenter)
    assert seg.weights_path == tiny_weights


def test_halo_is_one_diameter_plus_flow_smoothing(tiny_weights):
    spacing = (1.0, 0.5, 0.5)
    seg = CellposeSegmenter(device="cpu", model_path=str(tiny_weights), diameter_um=8.0)
    assert seg.halo(spacing) == (8, 16, 16)
    # σ = 2 resized voxels; the tiny network's 16 px = 8 µm, so a resized voxel is 0.5 µm
    smooth = CellposeSegmenter(
        device="cpu", model_path=str(tiny_weights), diameter_um=8.0, flow3d_smooth=2.0
    )
    assert smooth.halo(spacing) == (11, 22, 22)


def test_provenance_holds_the_weights_hash(segmenter, tiny_weights):
    expected = hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert segmenter.model_sha256 == expected
    record = segmenter.provenance()
    json.dumps(record)  # goes into manifest.json as it is
    assert record["model_sha256"] == expected
    assert record["model_bytes"] == tiny_weights.stat().st_size
    assert record["model_path"] == str(tiny_weights.resolve())
    assert record["cellpose_version"].startswith("4.")
    assert record["network"]["embed_dim"] == 32 and record["network"]["depth"] == 0
    assert record["model_diameter_px"] == 16.0
    assert record["device"] == "cpu" and record["precision"] == "float32"
    assert 1 <= record["batch_size"] <= 8
    assert record["parameters"]["diameter_um"] == DIAMETER_UM


def test_explicit_batch_size_and_precision(tiny_weights):
    seg = CellposeSegmenter(
        device="cpu", model_path=str(tiny_weights), batch_size=3, precision="bfloat16"
    )
    record = seg.provenance()
    assert record["batch_size"] == 3 and record["precision"] == "bfloat16"


def test_global_stats_sample_a_large_lazy_volume(segmenter):
    shape = (80, 256, 256)  # 5.2 M voxels: more than the 4 M read whole
    volume = (da.arange(np.prod(shape), chunks=1 << 20) % 1000).reshape(shape).rechunk(64)
    stats = segmenter.global_stats(volume, spacing=(1.0, 0.5, 0.5))
    assert stats["low"] == pytest.approx(10, abs=3) and stats["high"] == pytest.approx(989, abs=3)


def test_global_stats_ignore_nan_and_constant_volumes(segmenter):
    image = np.full((4, 16, 16), 5.0, np.float32)
    image[0, 0, :4] = np.nan
    stats = segmenter.global_stats(image, spacing=(1.0, 1.0, 1.0))
    assert np.isfinite(stats["low"]) and stats["high"] > stats["low"]


def test_segment_needs_the_normalisation_stats(segmenter, nuclei):
    with pytest.raises(InputError, match="stats lack"):
        segmenter.segment(nuclei.image[0], spacing=nuclei.spacing, stats={"low": 0.0})


@pytest.mark.parametrize("percentiles", [(99.0, 1.0), (-1.0, 50.0), (1.0, 101.0)])
def test_bad_percentiles_are_an_input_error(tiny_weights, percentiles):
    with pytest.raises(InputError, match="percentiles"):
        CellposeSegmenter(device="cpu", model_path=str(tiny_weights), percentiles=percentiles)
