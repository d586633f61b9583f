"""Which image layers the Features widget measures with a labels layer (headless: layers as stand-ins)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dls_microscopy.napari._channel_choice import channel_choices, measurement_problem


def _layer(name, shape=(8, 32, 32), scale=(1.0, 0.5, 0.5), **meta):
    return SimpleNamespace(
        name=name, data=np.zeros(shape, np.uint8), multiscale=False, scale=scale, metadata=meta
    )


def _checked(labels, images):
    return [c.name for c in channel_choices(labels, images) if c.checked]


def test_the_labels_own_field_is_checked_other_fields_listed_unchecked():
    a = {"dls_source": "p.ome.zarr/A/1/0", "dls_plate": "p.ome.zarr", "dls_well": "A/1", "dls_field": 0}
    b = {**a, "dls_source": "p.ome.zarr/B/2/0", "dls_well": "B/2"}
    images = [
        _layer("DAPI", dls_channel="DAPI", **a),
        _layer("DAPI [1]", dls_channel="DAPI", **b),
        _layer("big", shape=(8, 64, 64), dls_channel="DAPI", **a),  # same field, other grid
        _layer("fine", scale=(1.0, 0.25, 0.25), dls_channel="DAPI", **a),
    ]
    labels = _layer("nuclei", **a, dls_label=None)
    choices = channel_choices(labels, images)
    assert [c.name for c in choices] == ["DAPI", "DAPI [1]", "big", "fine"]
    assert _checked(labels, images) == ["DAPI"]
    assert [c.where for c in choices[:2]] == ["p.ome.zarr A/1 field 0", "p.ome.zarr B/2 field 0"]
    assert "not of the image that 'nuclei' were made from" in choices[1].note
    assert "8×64×64 voxels of 1 × 0.5 × 0.5 µm, 'nuclei' 8×32×32 voxels" in choices[2].note
    assert "0.25" in choices[3].note
    assert _checked(_layer("nuclei B", **b), images) == ["DAPI [1]"]
    assert _checked(None, images) == ["DAPI", "DAPI [1]", "big", "fine"]  # no labels yet: all


def test_labels_of_no_known_image_take_the_one_image_on_their_grid():
    """Labels of another plugin, or read from their own file: the image on their grid if only one."""
    one = [
        _layer("c1", dls_source="c1.tif", dls_channel="c1"),
        _layer("c2", dls_source="c1.tif", dls_channel="c2"),
    ]
    for labels in (_layer("painted"), _layer("mask", dls_source="mask.tif")):
        assert _checked(labels, one) == ["c1", "c2"]
        two = [*one, _layer("c1 [1]", dls_source="other.tif", dls_channel="c1")]
        assert _checked(labels, two) == []  # which one? the user checks
    # the samples: their layers and labels say which sample they are
    synthetic = [_layer("DAPI", dls_sample="synthetic"), _layer("DAPI [1]", dls_sample="nuclei_1135")]
    assert _checked(_layer("ground truth", dls_sample="synthetic"), synthetic) == ["DAPI"]


def test_measurement_problem_names_the_layer_and_says_what_to_do():
    labels = _layer("nuclei", dls_source="a.zarr")
    dapi = _layer("DAPI", dls_source="a.zarr", dls_channel="DAPI")
    assert measurement_problem(labels, [dapi]) is None
    said = measurement_problem(labels, [dapi, _layer("big", shape=(4, 8, 8))])
    assert said.startswith("cannot measure 'big' with the labels 'nuclei'") and "4×8×8 voxels" in said
    same = _layer("DAPI [1]", dls_source="b.zarr", dls_channel="DAPI")
    said = measurement_problem(labels, [dapi, same])
    assert "'DAPI' and 'DAPI [1]' are both channel 'DAPI'" in said and "one layer per channel" in said
    # a time series (T, Z, Y, X) image with the labels of one time point is on their grid
    assert (
        measurement_problem(labels, [_layer("movie", shape=(3, 8, 32, 32), scale=(1, 1, 0.5, 0.5))]) is None
    )
