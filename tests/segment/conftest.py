"""Fixtures of the segmentation tests."""

from __future__ import annotations

import pytest

from local_segmenter import ThresholdSegmenter


@pytest.fixture
def threshold_segmenter():
    return ThresholdSegmenter(device="cpu")
