"""select_channels: channel selection by basic slicing (block reads stay fusable and small)."""

from __future__ import annotations

import dask.array as da
import numpy as np

from dls_microscopy.pipeline.features import select_channels


def test_all_channels_in_order_are_the_array_itself_and_runs_are_slices():
    x = da.from_array(np.arange(3 * 2 * 4 * 4, dtype=np.uint16).reshape(3, 2, 4, 4), chunks=(1, 2, 4, 4))
    assert select_channels(x, [0, 1, 2]) is x
    run = select_channels(x, [1, 2])
    assert run.chunks[0] == (1, 1)  # a slice of the stored channels, not a re-chunked gather
    np.testing.assert_array_equal(run.compute(), x.compute()[1:3])
    np.testing.assert_array_equal(select_channels(x, [2, 0]).compute(), x.compute()[[2, 0]])
