"""Segmenting a coarser resolution level in the app; Meshes, Features and the saved pipeline follow it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dls_microscopy.errors import InputError, OutputError


def _layer(levels, scale, *, translate=(0.0, 0.0, 0.0), metadata=None):
    """A stand-in for a napari layer: what the level helpers read of one."""
    return SimpleNamespace(
        data=levels if len(levels) > 1 else levels[0],
        multiscale=len(levels) > 1,
        ndim=len(scale),
        scale=np.asarray(scale, float),
        translate=np.asarray(translate, float),
        metadata=dict(metadata or {}),
        name="DAPI",
    )


def test_level_voxel_sizes_are_the_files_and_follow_a_voxel_size_set_in_the_app():
    from dls_microscopy.napari._levels import labels_placement, layer_level_spacings, level_choices

    levels = [np.zeros((21, 100, 100)), np.zeros((21, 50, 50)), np.zeros((11, 25, 25))]
    file = [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    layer = _layer(levels, (1.0, 0.5, 0.5), metadata={"dls_level_spacings": file})
    # z of 21 planes halved is 11: the file's factor 2, not the shapes' 21 / 11
    assert layer_level_spacings(layer) == [tuple(s) for s in file]
    assert level_choices(layer) == [
        "0: 21×100×100 (1, 0.5, 0.5 µm)",
        "1: 21×50×50 (1, 1, 1 µm)",
        "2: 11×25×25 (2, 2, 2 µm)",
    ]
    # a voxel size set in the app: each level keeps the file's factor (as input.spacing does)
    layer.scale = np.array([2.0, 0.25, 0.25])
    np.testing.assert_allclose(layer_level_spacings(layer), [[2, 0.25, 0.25], [2, 0.5, 0.5], [4, 1, 1]])
    # labels of level 2: their voxel centre is that of the box of full-resolution voxels it averages
    layer.translate = np.array([10.0, 5.0, 0.0])
    scale, translate = labels_placement(layer, 2)
    np.testing.assert_allclose(scale, [4, 1, 1])
    np.testing.assert_allclose(translate, [10 + 1.0, 5 + 0.375, 0.375])
    assert labels_placement(layer, 0) == ((2.0, 0.25, 0.25), (10.0, 5.0, 0.0))
    # a layer of no file: the ratio of the shapes
    plain = _layer(levels[:2], (1.0, 0.5, 0.5))
    assert layer_level_spacings(plain) == [(1.0, 0.5, 0.5), (1.0, 1.0, 1.0)]
    assert level_choices(_layer(levels[:1], (1.0, 0.5, 0.5))) == ["0: 21×100×100 (1, 0.5, 0.5 µm)"]


def test_only_levels_that_napari_numbers_as_the_file_does_are_offered(tmp_path):
    """A file level no smaller than the one before it is not shown (napari needs shrinking levels):
    the levels after it moved up, and the app's level 1 was the file's level 2 while the saved
    pipeline's input.level and the labels' record said 1 (the file's full-resolution copy)."""
    import zarr
    from ome_zarr.writer import write_multiscale

    from dls_microscopy.io import open_volume
    from dls_microscopy.napari._levels import level_choices
    from dls_microscopy.napari.layers import volume_layer_data

    a = np.zeros((4, 16, 16), np.float32)
    root = zarr.open_group(str(tmp_path / "odd.ome.zarr"), mode="w", zarr_format=2)
    scales = ([1.0, 0.5, 0.5], [1.0, 0.5, 0.5], [1.0, 1.0, 1.0])
    transforms = [[{"type": "scale", "scale": sc}] for sc in scales]
    write_multiscale(
        [a, a.copy(), a[:, ::2, ::2].copy()], root, axes="zyx", coordinate_transformations=transforms
    )
    volume = open_volume(tmp_path / "odd.ome.zarr")
    assert [lv.shape for lv in volume.levels] == [(4, 16, 16), (4, 16, 16), (4, 8, 8)]
    ((data, kwargs, _),) = volume_layer_data(volume)
    layer = _layer(data, kwargs["scale"], metadata=kwargs["metadata"])
    assert len(data) == 2  # napari shows the file's levels 0 and 2
    assert level_choices(layer) == ["0: 4×16×16 (1, 0.5, 0.5 µm)"]
    # a pyramid napari shows whole: every level
    ((data, kwargs, _),) = volume_layer_data(
        dataclasses.replace(volume, levels=volume.levels[1:], level_spacings=volume.level_spacings[1:])
    )
    assert len(level_choices(_layer(data, kwargs["scale"], metadata=kwargs["metadata"]))) == 2


def test_labels_of_a_level_are_measured_with_the_images_at_that_level():
    from dls_microscopy.napari._channel_choice import channel_choices, measurement_problem

    file = [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0]]
    meta = {"dls_source": "/data/x.ome.zarr", "dls_level_spacings": file}
    image = _layer([np.zeros((8, 32, 32)), np.zeros((8, 16, 16))], (1.0, 0.5, 0.5), metadata=meta)
    labels = _layer([np.zeros((8, 16, 16), np.uint16)], (1.0, 1.0, 1.0), metadata={**meta, "dls_level": 1})
    labels.name = "nuclei"
    assert measurement_problem(labels, [image]) is None
    assert [c.checked for c in channel_choices(labels, [image])] == [True]
    single = _layer([np.zeros((8, 32, 32))], (1.0, 0.5, 0.5), metadata=meta)
    single.name = "other"
    assert measurement_problem(labels, [single]) == (
        "cannot measure 'other' with the labels 'nuclei': the labels were segmented at resolution "
        "level 1 and the image has no level 1; check only image layers of the image the labels "
        "were made from"
    )
    (choice,) = channel_choices(labels, [single])
    assert not choice.checked
    # said plainly (it was "unchecked:  voxels of  µm at level 1")
    said = "unchecked: of no resolution level 1, 'nuclei' 8×16×16 voxels of 1 × 1 × 1 µm"
    assert choice.note.endswith(said)
    # full-resolution labels with the image: level 0 as before
    full = _layer([np.zeros((8, 32, 32), np.uint16)], (1.0, 0.5, 0.5), metadata=meta)
    full.name = "truth"
    assert measurement_problem(full, [image]) is None
    assert "the image is 8×16×16 voxels of 1 × 1 × 1 µm at level 1" in measurement_problem(
        _layer([np.zeros((8, 15, 15), np.uint16)], (1.0, 1.0, 1.0), metadata={**meta, "dls_level": 1}),
        [image],
    )


def test_the_recorder_gives_the_level_and_refuses_steps_at_two(tmp_path):
    from dls_microscopy.pipeline.interactive import SessionRecorder

    rec = SessionRecorder()
    rec.set_input(tmp_path / "img.ome.zarr")
    rec.record_segment(method="watershed", params={"diameter_um": 6.0}, channel="DAPI", level=1)
    rec.record_features(channels=None, compartment="Nuclei", level=1)
    assert rec.to_config(tmp_path / "out").input.level == 1
    rec.record_mesh(smooth=5, decimate=None, level=0)
    with pytest.raises(InputError, match=r"different resolution levels \(segment at 1, mesh at 0, features"):
        rec.to_config(tmp_path / "out")
    rec.record_segment(method="watershed", params={}, channel="DAPI")  # all at 0 again
    rec.record_mesh(smooth=5, decimate=None)
    rec.record_features(channels=None, compartment="Nuclei")
    assert rec.to_config(tmp_path / "out").input.level == 0


def test_meshes_of_a_level_and_the_image_share_one_voxel_size_set_in_the_app(tmp_path):
    """Meshes of labels of level 1 give their voxel size through the file's factor, rounded to 12
    digits; Segment gives the image's as set: a file voxel size of more digits (1 / 9.23 px per µm)
    with z set in the app made 'the steps used different voxel sizes', and no pipeline was saved."""
    import dask.array as da

    from dls_microscopy.io import open_volume, write_ome_zarr
    from dls_microscopy.napari._levels import labels_placement
    from dls_microscopy.pipeline.interactive import SessionRecorder, spacing_against_file
    from dls_microscopy.volume import Volume

    fine = 0.10834236186348862
    data = da.zeros((8, 32, 32), np.float32)
    path = write_ome_zarr(
        Volume(data=data, axes="zyx", spacing=(1.0, fine, fine)), tmp_path / "a.ome.zarr", n_levels=2
    )
    file = open_volume(path)
    set_in_app = np.array([1.5, *file.spacing[1:]])  # the voxel size row: z changed
    image = _layer(list(file.levels), set_in_app, metadata={"dls_level_spacings": file.level_spacings})
    labels_scale, _ = labels_placement(image, 1)
    segment = spacing_against_file(set_in_app, file.levels[0].shape, source=path).input_spacing
    mesh = spacing_against_file(labels_scale, file.levels[1].shape, source=path).input_spacing
    rec = SessionRecorder()
    rec.set_input(path)
    rec.record_segment(method="watershed", params={}, channel=None, spacing=segment, level=1)
    rec.record_mesh(smooth=5, decimate=None, spacing=mesh, level=1)
    assert rec.to_config(tmp_path / "out").input.spacing == segment  # as set, not rounded
    rec.record_features(channels=None, compartment="Nuclei", spacing=[1.5, 0.1, 0.1], level=1)
    with pytest.raises(InputError, match="the steps used different voxel sizes"):
        rec.to_config(tmp_path / "out")


@pytest.fixture
def pyramid(tmp_path: Path) -> Path:
    """A 2-channel synthetic image with a 3-level pyramid (z of 21 planes: 11 at level 2)."""
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    sample = make_synthetic_nuclei((21, 100, 100), spacing=(1.0, 0.5, 0.5), diameter_um=6.0, seed=3)
    return write_ome_zarr(sample.as_volume(), tmp_path / "pyramid.ome.zarr", n_levels=3)


def test_labels_of_a_level_are_not_saved_into_the_images_store(pyramid):
    from dls_microscopy.napari._writer import write_labels_layer

    meta = {"name": "coarse", "scale": (1.0, 1.0, 1.0), "metadata": {"dls_level": 1}}
    with pytest.raises(OutputError, match="labels of resolution level 1 go to a label image of their own"):
        write_labels_layer(str(pyramid / "labels" / "coarse"), np.ones((21, 50, 50), np.uint16), meta)
    assert not (pyramid / "labels").exists()


@pytest.mark.gui
def test_segment_a_coarser_level_and_the_saved_pipeline_repeats_it(
    make_napari_viewer, qtbot, pyramid, tmp_path
):
    """Segment at level 1: the labels lie over the image, Meshes and Features take level 1, and the
    saved pipeline (input.level: 1) run by the CLI makes the same labels and the same table."""
    from test_gui import _check_pipeline_matches_gui, _full, _run  # tests/gui is on sys.path

    from dls_microscopy.io import open_volume
    from dls_microscopy.napari._features import FeaturesWidget
    from dls_microscopy.napari._meshes import MeshesWidget
    from dls_microscopy.napari._pipeline import PipelineWidget
    from dls_microscopy.napari._segment import SegmentWidget
    from dls_microscopy.pipeline.config import load_config

    viewer = make_napari_viewer()
    viewer.open(str(pyramid), plugin="dls-microscopy")
    seg, mesh = SegmentWidget(viewer), MeshesWidget(viewer)
    feat, pipe = FeaturesWidget(viewer), PipelineWidget(viewer)
    seg.image.setCurrentText("DAPI")
    texts = [seg.level.itemText(i) for i in range(seg.level.count())]
    assert texts == ["0: 21×100×100 (1, 0.5, 0.5 µm)", "1: 21×50×50 (1, 1, 1 µm)", "2: 11×25×25 (2, 2, 2 µm)"]
    assert seg.level.isEnabled()
    seg.level.setCurrentIndex(1)
    # Estimate diameter segments the level chosen, as the API does on that level of the file
    from dls_microscopy.segment import estimate_diameter

    _run(qtbot, seg, seg.estimate)
    expected = estimate_diameter(open_volume(pyramid, level=1), channel="DAPI").diameter_um
    assert float(seg.param_inputs["diameter_um"].text()) == expected
    seg.set_param("diameter_um", 6.0)
    seg.device.setCurrentText("cpu")
    seg.memory.setText("64MB")
    _run(qtbot, seg, seg.run)
    assert "at resolution level 1" in seg.status.text()
    image, labels = viewer.layers["DAPI"], viewer.layers["nuclei"]
    lab = _full(labels)
    assert lab.shape == (21, 50, 50) and lab.max() > 5
    np.testing.assert_allclose(labels.scale, [1.0, 1.0, 1.0])
    # a labels voxel's centre is the centre of the full-resolution voxels its image voxel averages
    for voxel in ([0, 0, 0], [3, 17, 40], [20, 49, 49]):
        z, y, x = voxel
        box = [(z, y * 2 + dy, x * 2 + dx) for dy in (0, 1) for dx in (0, 1)]
        centre = np.mean([image.data_to_world(v) for v in box], axis=0)
        np.testing.assert_allclose(labels.data_to_world(voxel), centre, atol=1e-12)
    record = open_volume(labels.metadata["dls_labels_path"]).metadata["dls_microscopy"]["segmentation"]
    assert record["level"] == 1 and record["spacing_um"] == [1.0, 1.0, 1.0]
    # Meshes: in µm over the labels; Features: the images at level 1, on the labels' grid
    mesh.labels.setCurrentText("nuclei")
    mesh.smooth.setValue(2)
    _run(qtbot, mesh, mesh.run)
    np.testing.assert_allclose(viewer.layers["nuclei meshes"].translate, labels.translate)
    feat.labels.setCurrentText("nuclei")
    assert set(feat.chosen_channels()) == {"DAPI", "LaminB1"}
    _run(qtbot, feat, feat.run)
    table = feat.table.to_pandas()
    dapi = np.asarray(image.data[1], np.float64)
    mean = {i: dapi[lab == i].mean() for i in np.unique(lab)[1:]}
    got = dict(zip(table["Metadata_ObjectID"], table["Nuclei_Intensity_MeanIntensity_DAPI"], strict=True))
    np.testing.assert_allclose([got[i] for i in mean], list(mean.values()), rtol=1e-9)
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    np.testing.assert_allclose(
        table["Nuclei_AreaShape_Volume"], counts[np.searchsorted(ids, table["Metadata_ObjectID"])]
    )
    # the saved pipeline runs every step at level 1; the CLI run makes the same labels and table
    pipe.output.setText(str(tmp_path / "run"))
    pipe.state.recorder.mesh = None  # keep the run short: segment and features
    written = pipe.save(tmp_path / "pipeline.yaml")
    assert load_config(written).input.level == 1 and "level: 1" in written.read_text()
    _check_pipeline_matches_gui(written, feat.table)
    (field,) = (tmp_path / "run" / "fields").iterdir()
    np.testing.assert_array_equal(open_volume(field / "labels.ome.zarr").load(), lab)
    # another voxel size: the levels listed and the labels' place follow it
    seg.voxel_size.text.setText("2, 1, 1")
    seg.set_voxel_size()
    assert seg.level.itemText(1) == "1: 21×50×50 (2, 2, 2 µm)" and seg.level.currentIndex() == 1
    np.testing.assert_allclose(labels.scale, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(labels.data_to_world([3, 17, 40]), np.mean(
        [image.data_to_world((3, 34 + dy, 80 + dx)) for dy in (0, 1) for dx in (0, 1)], axis=0
    ))  # fmt: skip
    # a single-scale image: level 0 only, not to be chosen
    viewer.add_image(np.zeros((4, 8, 8)), name="plain")
    seg.image.setCurrentText("plain")
    assert seg.level.count() == 1 and not seg.level.isEnabled() and seg.chosen_level() == 0
