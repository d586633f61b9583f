"""Descriptor rows must not depend on how many BLAS threads the process runs."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from dls_microscopy.geometry import mesh_objects
from dls_microscopy.geometry.descriptors import shape_descriptors


def _blob_labels(n: int = 64) -> np.ndarray:
    # ~11k vertices: large enough that OpenBLAS splits the Gram-matrix products over
    # threads (smaller meshes stay single-threaded and would not exercise the fix).
    z, y, x = np.mgrid[:n, :n, :n]
    c = n / 2
    r = np.sqrt(((z - c) / 1.3) ** 2 + ((y - c) / 0.9) ** 2 + (x - c) ** 2)
    return (r + 2 * np.sin(3 * np.arctan2(y - c, x - c)) < 0.35 * n).astype(np.uint16)


def test_descriptors_identical_for_any_blas_thread_count() -> None:
    (mesh,) = list(mesh_objects(_blob_labels(), spacing=(0.8, 0.4, 0.4)))
    rows = []
    for threads in (1, 2, 4):
        with threadpool_limits(limits=threads, user_api="blas"):
            rows.append(shape_descriptors(mesh))
    for row in rows[1:]:
        assert row.keys() == rows[0].keys()
        for key, value in row.items():
            ref = rows[0][key]
            if isinstance(value, float) and np.isnan(value):
                assert np.isnan(ref), key
            else:
                assert np.asarray(value).tobytes() == np.asarray(ref).tobytes(), key
