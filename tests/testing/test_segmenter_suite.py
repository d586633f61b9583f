"""The conformance suite itself, run on the engine's exactly-local test segmenter."""

from __future__ import annotations

import numpy as np
import pytest

from dls_microscopy.segment.base import segmenters
from dls_microscopy.testing import SegmenterTests
from local_segmenter import ThresholdSegmenter, blob_volume


class TestThresholdSegmenterConforms(SegmenterTests):
    blockwise_block_shape = (16, 32, 32)

    @pytest.fixture
    def segmenter(self):
        segmenters().register(ThresholdSegmenter.name, lambda: ThresholdSegmenter)
        return ThresholdSegmenter(device="cpu")

    @pytest.fixture
    def sample(self):
        img, _ = blob_volume(shape=(32, 80, 80), n=30)
        return (img * 1000).astype(np.uint16), (1.0, 1.0, 1.0)


class BrokenSegmenter(ThresholdSegmenter):
    """Ignores its halo: blockwise results differ from the whole volume."""

    name = "test-broken"

    def halo(self, spacing):
        return (0, 0, 0)


def test_suite_catches_a_segmenter_that_ignores_its_halo(tmp_path):
    suite = TestThresholdSegmenterConforms()
    img, _ = blob_volume(shape=(32, 80, 80), n=30)
    with pytest.raises(AssertionError):
        suite.test_blockwise_equals_whole(
            BrokenSegmenter(device="cpu"),
            ((img * 1000).astype(np.uint16), (1.0, 1.0, 1.0)),
            tmp_path,
        )
