"""The layers of one image and setting its voxel size (headless: layers as stand-ins)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dls_microscopy.errors import InputError
from dls_microscopy.napari._image_layers import (
    image_layers,
    parse_voxel_size,
    set_voxel_size,
    voxel_size_text,
)


class Image(SimpleNamespace):
    """A stand-in for napari's Image layer (the kind is read from the class name)."""


class Labels(SimpleNamespace):
    """A stand-in for napari's Labels layer."""


def _layer(kind, name, shape=(8, 32, 32), scale=(1.0, 1.0, 1.0), **meta):
    return kind(
        name=name,
        data=np.zeros(shape, np.uint8),
        multiscale=False,
        ndim=len(shape),
        scale=tuple(scale),
        metadata=meta,
    )


def _names(layers):
    return [layer.name for layer in layers]


def test_the_layers_of_an_image_are_its_channels_and_labels_and_those_made_from_it():
    a, b = {"dls_source": "a.tif", "dls_series": 0}, {"dls_source": "b.tif", "dls_series": 0}
    layers = [
        dapi := _layer(Image, "DAPI", **a, dls_channel="DAPI"),
        _layer(Image, "LaminB1", **a, dls_channel="LaminB1"),
        _layer(Labels, "labels/truth", **a, dls_label="truth"),
        _layer(Image, "other", **b),  # another file on the same grid
        _layer(Labels, "labels of b", **b, dls_label="0"),
        _layer(Labels, "nuclei", **a, dls_label=None, dls_image_layer="DAPI"),  # Segment's
        _layer(Labels, "loose", **{"dls_source": "a_labels.tif"}),  # a labels file of its own
        _layer(Labels, "loose, finer", shape=(8, 64, 64), **{"dls_source": "c_labels.tif"}),
        _layer(Labels, "drawn"),  # by hand or a script, on the grid
        _layer(Image, "plane", shape=(32, 32), **a),  # 2D: no voxel size of z
    ]
    assert _names(image_layers(layers, dapi)) == [
        "DAPI",
        "LaminB1",
        "labels/truth",
        "nuclei",
        "loose",
        "drawn",
    ]
    # an image of no file: itself, and labels made from it or of no image on its grid
    script = _layer(Image, "raw")
    made = _layer(Labels, "raw labels", scale=(2.0, 1.0, 1.0), dls_image_layer="raw")
    assert _names(image_layers([script, made, *layers[3:5]], script)) == ["raw", "raw labels"]


def test_set_voxel_size_sets_the_spatial_scale_and_keeps_time_and_factors():
    meta = {"dls_source": "movie.ome.zarr", "dls_series": 0}
    movie = _layer(Image, "DAPI", shape=(3, 8, 32, 32), scale=(60.0, 1.0, 1.0, 1.0), **meta)
    labels = _layer(Labels, "nuclei", scale=(1.0, 1.0, 1.0), **meta, dls_label=None)
    coarse = _layer(Labels, "labels/coarse", shape=(8, 16, 16), scale=(1.0, 2.0, 2.0), **meta)
    other = _layer(Image, "other", scale=(1.0, 1.0, 1.0), dls_source="b.tif")
    changed = set_voxel_size([movie, labels, coarse, other], movie, [0.28, 0.13, 0.13])
    assert _names(changed) == ["DAPI", "nuclei", "labels/coarse"]
    assert movie.scale == [60.0, 0.28, 0.13, 0.13]  # the time increment is kept
    assert labels.scale == [0.28, 0.13, 0.13]
    np.testing.assert_allclose(coarse.scale, [0.28, 0.26, 0.26])  # twice as coarse, still
    assert other.scale == (1.0, 1.0, 1.0)
    assert set_voxel_size([movie, labels], movie, [0.28, 0.13, 0.13]) == []  # nothing to change
    with pytest.raises(InputError, match="2 dimensions"):
        set_voxel_size([], _layer(Image, "plane", shape=(32, 32)), [1.0, 1.0, 1.0])


def test_parse_voxel_size_says_what_is_wrong():
    assert parse_voxel_size(" 0.28 ,0.13, 0.13 ") == (0.28, 0.13, 0.13)
    assert parse_voxel_size("2 × 0.5 × 0.5") == (2.0, 0.5, 0.5)
    assert parse_voxel_size("0.5") == (0.5, 0.5, 0.5)
    assert voxel_size_text((0.3603981534640209, 1.0, 0.5)) == "0.360398, 1, 0.5"
    for text, said in (
        ("", "type the voxel size"),
        ("0.3, 0.1", r"one value per spatial axis \(z, y, x\)"),
        ("0.3, 0.1, abc", "'abc' is not a number of µm"),
        ("0.3, 0, 0.1", "axis y must be a positive number of µm"),
        ("1, 1, nan", "axis x must be a positive"),
    ):
        with pytest.raises(InputError, match=said):
            parse_voxel_size(text)
