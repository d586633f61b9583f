"""The napari plugin and desktop app with real viewers (pytest-qt under Xvfb; few and small)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

IDR = "omezarr_idr0062A_6001240/6001240_labels.zarr"


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 2-channel synthetic image with ground truth, as an OME-Zarr file."""
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    sample = make_synthetic_nuclei((20, 64, 64), spacing=(1.0, 0.5, 0.5), diameter_um=6.0, seed=3)
    path = tmp_path_factory.mktemp("gui") / "small.ome.zarr"
    write_ome_zarr(sample.as_volume(), path, labels={"truth": sample.labels})
    return path


def _full(layer) -> np.ndarray:
    """The full-resolution data of a layer, loaded."""
    return np.asarray(layer.data[0] if layer.multiscale else layer.data)


def _run(qtbot, widget, action, timeout: int = 60_000) -> None:
    with qtbot.waitSignal(widget.finished, timeout=timeout) as blocker:
        action()
    error = blocker.args[0]
    assert error is None, f"{type(widget).__name__} failed: {widget.status.text()}"


def test_reader_real_idr_layers_scale_and_no_full_resolution_reads(
    make_napari_viewer, shared_data, count_reads
):
    """npe2 reader on the real IDR OME-Zarr: 2 channels + labels, µm scale, level 0 never read whole."""
    reads = count_reads
    viewer = make_napari_viewer()
    path = shared_data / IDR
    layers = viewer.open(str(path), plugin="dls-microscopy")
    assert [lay.name for lay in layers] == ["LaminB1", "Dapi", "labels/0"]
    assert [type(lay).__name__ for lay in layers] == ["Image", "Image", "Labels"]
    for lay in layers:
        assert lay.multiscale
        np.testing.assert_allclose(lay.scale, [0.5002025531914894, 0.3603981534640209, 0.3603981534640209])
    assert len(layers[0].data) == 3 and len(layers[2].data) == 4
    assert tuple(layers[0].data[0].shape) == (236, 275, 271)
    assert layers[0].colormap.name == "green" and layers[1].colormap.name == "magenta"
    viewer.reset_view()
    viewer.dims.set_point(0, 60.0)
    level0 = [n for p, n in reads if p in ("0", "labels/0/0")]
    full = 2 * 236 * 275 * 271
    # napari reads a few planes of what it shows, never a whole full-resolution volume
    assert sum(level0) < 0.1 * full, (sum(level0), full)
    assert all(n <= 275 * 271 * 10 for n in level0)
    # the sample data contributions
    samples = viewer.open_sample("dls-microscopy", "nuclei_1135")
    assert [type(lay).__name__ for lay in samples] == ["Image", "Labels"]


def test_desktop_app_widgets_and_actions(qtbot, small_sample, tmp_path, monkeypatch):
    """The app: our title and docks; Segment → Meshes → Features (linked selection) → Export → Pipeline."""
    from dls_microscopy.napari.app import WIDGETS, make_viewer

    viewer = make_viewer(small_sample, show=False)
    try:
        assert viewer.title.startswith("DLS Microscopy")
        docks = viewer.window.dock_widgets
        assert [t for t, _ in WIDGETS] == [t for t in docks if t in dict(WIDGETS)]
        seg = docks["Segment"]
        assert "cellpose" in [seg.method.itemText(i) for i in range(seg.method.count())]
        seg.method.setCurrentText("cellpose")
        assert "model_path" in seg.param_inputs and "diameter_um" in seg.param_inputs
        assert not seg.estimate_button.isVisibleTo(seg)  # the estimate is the watershed's
        assert "flow3D_smooth" in seg.param_inputs["flow3d_smooth"].toolTip()  # the field's docstring
        seg.method.setCurrentText("watershed")
        contrast = seg.param_inputs["seed_contrast"]
        assert contrast.placeholderText() == "off" and "packed" in contrast.toolTip()
        assert seg.param_inputs["smoothing_um"].placeholderText() == "automatic"
        tip = seg.param_inputs["smoothing_um"].toolTip()  # rich text (Qt wraps it), one paragraph
        assert tip.startswith("<p>") and "``" not in tip and "\n" not in tip
        seg.image.setCurrentText("DAPI")
        # "Estimate diameter" fills in diameter_um with what the API finds in the same image
        assert seg.estimate_button.isVisibleTo(seg)
        _run(qtbot, seg, seg.estimate)
        from dls_microscopy.io import open_volume
        from dls_microscopy.segment import estimate_diameter

        expected = estimate_diameter(open_volume(small_sample), channel="DAPI").diameter_um
        assert float(seg.param_inputs["diameter_um"].text()) == expected
        assert seg.status.text().startswith(f"estimated diameter {expected:g} µm")
        seg.set_param("diameter_um", 6.0)
        seg.device.setCurrentText("cpu")
        seg.memory.setText("64MB")
        # the labels name is a file in the session folder and a layer: no paths, no image's name
        for bad, said in (("../elsewhere/x", "no folders"), ("DAPI", "name of an image layer")):
            seg.label_name.setText(bad)
            seg.run()
            assert said in seg.status.text() and "DAPI" in viewer.layers
        seg.label_name.setText("nuclei")
        _run(qtbot, seg, seg.run)
        labels = viewer.layers["nuclei"]
        assert type(labels).__name__ == "Labels"
        np.testing.assert_allclose(labels.scale, viewer.layers["DAPI"].scale)
        n_objects = int(_full(labels).max())
        assert n_objects > 5
        # File > Save Selected Layer with our writer: NGFF labels inside the image
        import napari

        from dls_microscopy.io import open_labels

        napari.save_layers(str(small_sample / "labels" / "from_gui"), [labels], plugin="dls-microscopy")
        np.testing.assert_array_equal(open_labels(small_sample, "from_gui").load(), _full(labels))

        mesh = docks["Meshes"]
        mesh.labels.setCurrentText("nuclei")
        mesh.smooth.setValue(5)
        # Cancel stops a running task at its next progress report, and the widget recovers
        with qtbot.waitSignal(mesh.finished, timeout=60_000) as blocker:
            mesh.run()
            mesh.cancel()
        assert type(blocker.args[0]).__name__ == "CancelledError" and mesh.status.text() == "cancelled"
        assert mesh.progress_bar.format() == "cancelled"  # not "failed"
        assert "nuclei meshes" not in viewer.layers and mesh.run_button.isEnabled()
        _run(qtbot, mesh, mesh.run)
        surface = viewer.layers["nuclei meshes"]
        assert type(surface).__name__ == "Surface"
        vertices = surface.data[0]
        # meshes are in µm: they span the image's physical extent, not its voxel grid
        assert vertices[:, 1].max() > 20 and vertices[:, 1].max() < 64 * 0.5 + 1
        mesh.colour_by.setCurrentText("volume_um3")
        np.testing.assert_allclose(surface.vertex_values, mesh.state.meshes.vertex_values("volume_um3"))

        feat = docks["Features"]
        feat.labels.setCurrentText("nuclei")
        assert set(feat.chosen_channels()) == {"DAPI", "LaminB1"}
        _run(qtbot, feat, feat.run)
        table = feat.table
        assert table.num_rows == len(np.unique(_full(labels))) - 1
        assert feat.table_view.model().rowCount() == table.num_rows
        # long column names: the end shows in the header, the whole name as its tooltip
        from qtpy.QtCore import Qt

        header = feat.table_view.horizontalHeader()
        assert header.textElideMode() == Qt.TextElideMode.ElideLeft
        model, across = feat.table_view.model(), Qt.Orientation.Horizontal
        tip = model.headerData(1, across, Qt.ItemDataRole.ToolTipRole)
        assert tip == model.headerData(1, across, Qt.ItemDataRole.DisplayRole) and tip in table.column_names
        # the plot's axes are titled with the columns chosen
        assert feat.plot.x_axis.axis.axis_label == feat.x_column.currentText() != ""
        assert feat.plot.y_axis.axis.axis_label == feat.y_column.currentText() != ""
        # plot → table and viewer
        x, y = feat.plot.x, feat.plot.y
        box = (float(np.nanmin(x)), float(np.nanmedian(x)), float(np.nanmin(y)), float(np.nanmax(y)))
        chosen = feat.plot.select_box(box)
        assert chosen and set(feat.selected_rows()) == chosen
        colour = labels.colormap.map(np.array([min(chosen)]))[0]
        np.testing.assert_allclose(colour, [1.0, 0.85, 0.0, 1.0], atol=0.01)
        # viewer click → table and plot
        other = int(next(i for i in feat.ids if int(i) not in chosen))
        feat.pick_object(other)
        assert feat.selected_rows() == [other] and feat.plot.selected == {other}
        # table → plot
        feat.table_view.selectRow(0)
        first = feat.selected_rows()
        assert feat.plot.selected == set(first)

        export = docks["Export"]
        _run(qtbot, export, lambda: export.save("folder", tmp_path / "export"))
        assert {p.name for p in (tmp_path / "export").iterdir()} == {
            "objects.parquet",
            "images.parquet",
            "meshes.glb",
        }

        pipe = docks["Pipeline"]
        # the preview takes the dock's height, not 160 px above empty space (the scroll area's
        # content fills the dock: test_plugin_docks_stacked_fit_a_screen_and_scroll)
        pipe.content.resize(320, 1000)
        pipe.outer.activate()
        assert pipe.preview.height() > 600
        pipe.output.setText(str(tmp_path / "run"))
        text = pipe.save(tmp_path / "with_mesh.yaml").read_text()
        assert "watershed" in text and "diameter_um: 6.0" in text and str(small_sample) in text
        assert "spacing: null" in text  # the file's voxel size: each file's own in a run
        assert "mesh:" in text and "smooth: 5" in text
        pipe.state.recorder.mesh = None  # keep the test fast: the CLI run below segments and measures
        written = pipe.save(tmp_path / "pipeline.yaml")
        _check_pipeline_matches_gui(written, table)
        # the same file run from the Pipeline tab on the open image: resumes the finished run
        _run(qtbot, pipe, lambda: pipe.run_config(written))
        assert pipe.summary.count("skipped") == 1 and pipe.state.features.num_rows == table.num_rows
        assert feat.table is pipe.state.features  # shown in the Features tab
    finally:
        viewer.close()


def _check_pipeline_matches_gui(config_path: Path, gui_table) -> None:
    """The saved pipeline, run with the CLI, measures the same objects with the same values."""
    import pyarrow.parquet as pq

    from dls_microscopy import cli
    from dls_microscopy.pipeline.config import load_config

    assert cli.main(["run", str(config_path)]) == 0
    ran = pq.read_table(Path(load_config(config_path).output.path) / "objects.parquet")
    columns = [c for c in gui_table.column_names if c != "Metadata_ImageID"]
    assert ran.num_rows == gui_table.num_rows
    for c in columns:
        assert c in ran.column_names, c
        a = np.asarray(gui_table.column(c).to_numpy(zero_copy_only=False))
        b = np.asarray(ran.column(c).to_numpy(zero_copy_only=False))
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True, err_msg=c)
        else:
            np.testing.assert_array_equal(a, b, err_msg=c)


def test_the_app_opens_our_formats_without_asking_and_a_plate_gets_its_tab(qtbot, small_plate):
    """File > Open asked which reader every time; a plate opened later had no Plate tab (GUI review).

    Before the tests that use napari's viewer fixture: a plain viewer after those registers
    the plugin's commands twice.
    """
    from napari.plugins.utils import get_preferred_reader

    from dls_microscopy.napari.app import make_viewer

    viewer = make_viewer(None, show=False)
    try:
        assert get_preferred_reader(small_plate) == "dls-microscopy"
        assert get_preferred_reader(small_plate.parent / "stack.ome.tif") == "dls-microscopy"
        assert "Plate" not in viewer.window.dock_widgets
        # a field of the plate opened later (as the reader tags its layers)
        viewer.add_image(np.zeros((4, 8, 8), np.uint16), metadata={"dls_plate": str(small_plate)})
        assert "Plate" in viewer.window.dock_widgets
    finally:
        viewer.close()


#: A small laptop screen's height: the window must fit it with every dock open.
SCREEN_HEIGHT = 768


def test_app_docks_scroll_so_the_window_fits_a_screen(qtbot):
    """Each dock scrolls its content: a dock's minimum height no longer adds to the window's."""
    from qtpy.QtWidgets import QScrollArea

    from dls_microscopy.napari.app import PLATE_WIDGET, make_viewer

    viewer = make_viewer(None, show=False)
    try:
        window = viewer.window._qt_window
        viewer.window.add_plugin_dock_widget("dls-microscopy", "Plate", tabify=True)
        assert len(viewer.window.dock_widgets) == 6 and PLATE_WIDGET[0] not in viewer.window.dock_widgets
        assert window.minimumSizeHint().height() < SCREEN_HEIGHT  # 852 px before
        for widget in viewer.window.dock_widgets.values():
            assert isinstance(widget, QScrollArea)
            # as wide as the content needs: never a sideways scroll bar
            assert widget.minimumSizeHint().width() > widget.content.minimumSizeHint().width()
    finally:
        with _keeping_window_settings(window):
            viewer.close()


def test_plugin_docks_stacked_fit_a_screen_and_scroll(make_napari_viewer, qtbot):
    """The six widgets opened from napari's Plugins menu (stacked, not tabbed): 2,535 px tall before."""
    viewer = make_napari_viewer(show=True)
    names = ["Segment", "Meshes and shape", "Features and embeddings", "Export", "Pipeline", "Plate"]
    for name in names:
        viewer.window.add_plugin_dock_widget("dls-microscopy", name)
    window = viewer.window._qt_window
    qtbot.wait(50)  # the docks' layouts settle
    assert window.minimumSizeHint().height() < SCREEN_HEIGHT
    window.resize(1200, SCREEN_HEIGHT)
    qtbot.wait(50)
    features = viewer.window.dock_widgets["Features and embeddings (dls-microscopy)"]
    assert features.height() < features.content.minimumSizeHint().height()
    assert features.verticalScrollBar().maximum() > 0  # what does not fit scrolls
    assert features.horizontalScrollBar().maximum() == 0
    assert features.content.width() == features.viewport().width()  # the content fills the width
    # and the height where the dock is taller than the content needs: the Pipeline preview grows
    pipeline = viewer.window.dock_widgets["Pipeline (dls-microscopy)"]
    pipeline.parent().setFloating(True)
    pipeline.parent().resize(420, 1000)
    qtbot.wait(50)
    assert pipeline.verticalScrollBar().maximum() == 0
    assert pipeline.content.height() == pipeline.viewport().height() and pipeline.preview.height() > 600
    # the widgets still work inside their scroll areas
    viewer.add_image(np.zeros((4, 8, 8), np.uint16), name="raw")
    viewer.add_labels(np.zeros((4, 8, 8), np.uint16), name="nuclei")
    assert features.labels.currentText() == "nuclei" and features.chosen_channels() == ["raw"]


def test_the_wheel_over_a_choice_scrolls_the_dock_not_the_choice(make_napari_viewer, qtbot):
    """Scrolling down a dock over a combo box the user has not clicked must not change it."""
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    for name in ["Segment", "Meshes and shape", "Features and embeddings", "Export", "Pipeline", "Plate"]:
        viewer.window.add_plugin_dock_widget("dls-microscopy", name)
    viewer.window._qt_window.resize(1200, SCREEN_HEIGHT)
    viewer.add_labels(np.zeros((4, 8, 8), np.uint16), name="cells")
    viewer.add_labels(np.zeros((4, 8, 8), np.uint16), name="nuclei")
    qtbot.wait(50)
    features = viewer.window.dock_widgets["Features and embeddings (dls-microscopy)"]
    combo, bar = features.labels, features.verticalScrollBar()
    assert combo.count() == 2 and bar.maximum() > 0 and not combo.hasFocus()
    combo.setCurrentIndex(0)  # so that the wheel down would choose the next one
    index, start = combo.currentIndex(), bar.value()
    for _ in range(3):
        centre = QPointF(combo.rect().center())
        wheel = QWheelEvent(
            centre,
            QPointF(combo.mapToGlobal(centre.toPoint())),
            QPoint(0, 0),
            QPoint(0, -120),  # down
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(combo, wheel)
    assert combo.currentIndex() == index
    assert bar.value() > start  # the dock scrolled down instead


def _keeping_window_settings(window):
    """Close without saving the window's size to the user's napari settings (as napari's fixture)."""
    from unittest.mock import patch

    return patch.object(window, "_save_current_window_settings")


def test_plate_reader_opens_one_field_and_chooser_switches(make_napari_viewer, qtbot, small_plate):
    """An HCS plate opens one field; the Plate widget switches to another field."""
    from dls_microscopy.napari._plate import PlateWidget

    plate = small_plate
    viewer = make_napari_viewer()
    layers = viewer.open(str(plate), plugin="dls-microscopy")
    assert {lay.metadata["dls_well"] for lay in layers} == {"A/1"}
    widget = PlateWidget(viewer)
    assert widget.field.count() == 2
    widget.field.setCurrentIndex(1)
    _run(qtbot, widget, widget.run)
    assert {lay.metadata["dls_well"] for lay in viewer.layers} == {"B/2"}


def test_features_checks_the_image_layers_of_the_labels_field(make_napari_viewer, qtbot, small_plate):
    """Two fields of a plate open: their same-named channels were both checked and measuring failed."""
    from qtpy.QtCore import Qt

    from dls_microscopy.napari._features import FeaturesWidget
    from dls_microscopy.napari.layers import read_path

    viewer = make_napari_viewer()
    (first,) = viewer.open(str(small_plate), plugin="dls-microscopy")  # field A/1
    for data, kwargs, kind in read_path(small_plate, well="B/2"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    second = viewer.layers[-1]
    assert second.metadata["dls_well"] == "B/2" and second.name != first.name
    labels = np.zeros((8, 32, 32), np.uint32)
    labels[2:5, 4:12, 4:12], labels[3:6, 18:28, 16:26] = 1, 2
    # labels as Segment makes them of field A/1: that layer's metadata and scale
    viewer.add_labels(
        labels, name="nuclei", scale=first.scale, metadata={**first.metadata, "dls_label": None}
    )
    feat = FeaturesWidget(viewer)
    viewer.add_image(np.ones((8, 16, 16), np.uint16), name="other", scale=first.scale)  # another grid
    listed = [feat.channels.item(i) for i in range(feat.channels.count())]
    assert [i.data(Qt.ItemDataRole.UserRole) for i in listed] == [first.name, second.name, "other"]
    assert listed[1].text() == f"{second.name}  (plate.ome.zarr B/2 field 0)"  # which field each is
    assert feat.chosen_channels() == [first.name]
    _run(qtbot, feat, feat.run)
    table = feat.table.to_pandas()
    assert len(table) == 2 and set(table["Metadata_Well"]) == {"A1"}
    # layers the user checks that cannot be measured with these labels: a plain message, no task
    feat.set_channels([first.name, second.name])
    feat.run()
    assert "are both channel" in feat.status.text() and not feat.running
    feat.set_channels([first.name, "other"])
    feat.run()
    assert feat.status.text().startswith("cannot measure 'other' with the labels 'nuclei'")
    assert not feat.running and feat.table.num_rows == 2
    # labels of field B/2: its layer is the one checked now
    viewer.add_labels(
        labels, name="nuclei B", scale=second.scale, metadata={**second.metadata, "dls_label": None}
    )
    assert feat.labels.currentText() == "nuclei B" and feat.chosen_channels() == [second.name]


def test_session_export_has_the_tables_of_a_pipeline_run(make_napari_viewer, qtbot, tmp_path):
    """The sample plate, segment → mesh → features in the GUI, then the saved pipeline run: the same tables.

    The GUI's objects.parquet lacked the 43 mesh columns of a run's, and its shape.parquet
    named the descriptors otherwise (volume_um3, unit um^3; a run: Nuclei_AreaShape_MeshVolume, µm³).
    """
    import pyarrow.parquet as pq

    from dls_microscopy import cli
    from dls_microscopy.napari._export import ExportWidget
    from dls_microscopy.napari._features import FeaturesWidget
    from dls_microscopy.napari._meshes import MeshesWidget
    from dls_microscopy.napari._pipeline import PipelineWidget
    from dls_microscopy.napari._segment import SegmentWidget

    assert cli.main(["sample", str(tmp_path / "sample"), "--plate"]) == 0
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "sample" / "synthetic_plate.ome.zarr"), plugin="dls-microscopy")
    seg, mesh, feat = SegmentWidget(viewer), MeshesWidget(viewer), FeaturesWidget(viewer)
    export, pipe = ExportWidget(viewer), PipelineWidget(viewer)
    seg.image.setCurrentText("DAPI")
    seg.set_param("diameter_um", 7.0)
    seg.device.setCurrentText("cpu")
    _run(qtbot, seg, seg.run)
    assert mesh.labels.currentText() == feat.labels.currentText() == "nuclei"
    _run(qtbot, mesh, mesh.run, timeout=120_000)
    _run(qtbot, feat, feat.run)
    _run(qtbot, export, lambda: export.save("folder", tmp_path / "gui"))
    assert {p.name for p in (tmp_path / "gui").iterdir()} == {
        "objects.parquet",
        "images.parquet",
        "meshes.glb",
    }
    pipe.output.setText(str(tmp_path / "run"))
    assert cli.main(["run", str(pipe.save(tmp_path / "pipeline.yaml")), "--no-progress"]) == 0
    for name in ("objects", "images"):
        gui, ran = (
            pq.read_table(tmp_path / "gui" / f"{name}.parquet"),
            pq.read_table(tmp_path / "run" / f"{name}.parquet"),
        )
        assert gui.schema.names == ran.schema.names, name  # names and order
        for f in ran.schema:  # types and units
            assert gui.schema.field(f.name).type == f.type, f.name
            assert (gui.schema.field(f.name).metadata or {}).get(b"unit") == (f.metadata or {}).get(
                b"unit"
            ), f.name
    gui = pq.read_table(tmp_path / "gui" / "objects.parquet")
    assert sum(c.startswith(("Nuclei_AreaShape_Mesh", "Metadata_Mesh")) for c in gui.column_names) == 43
    assert gui.schema.field("Nuclei_AreaShape_MeshVolume").metadata[b"unit"] == "µm³".encode()
    # and the field measured in the GUI has the same values in the run
    ran = pq.read_table(tmp_path / "run" / "objects.parquet").to_pandas()
    gui = gui.to_pandas()
    ran = ran[ran["Metadata_ImageID"] == gui["Metadata_ImageID"][0]].reset_index(drop=True)
    assert len(ran) == len(gui) > 5
    for c in gui.columns:
        if gui[c].dtype.kind == "f":
            np.testing.assert_allclose(gui[c], ran[c], rtol=1e-9, equal_nan=True, err_msg=c)
        else:
            assert gui[c].tolist() == ran[c].tolist(), c
    # the descriptors alone: the run's names and units too
    _run(qtbot, export, lambda: export.save("descriptors", tmp_path / "shape.parquet"))
    shape = pq.read_table(tmp_path / "shape.parquet")
    assert shape.schema.names == ["Metadata_ObjectID"] + [
        c for c in ran.columns if c.startswith(("Nuclei_AreaShape_Mesh", "Metadata_Mesh"))
    ]


def test_widgets_work_on_the_time_point_shown(make_napari_viewer, qtbot, tmp_path):
    """A (T, C, Z, Y, X) image: Segment, Meshes and Features take the time point on screen."""
    from dls_microscopy.io import open_volume, write_ome_zarr
    from dls_microscopy.napari._features import FeaturesWidget
    from dls_microscopy.napari._meshes import MeshesWidget
    from dls_microscopy.napari._segment import SegmentWidget
    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    points = [
        make_synthetic_nuclei((16, 48, 48), spacing=(1.0, 0.5, 0.5), diameter_um=6.0, seed=40 + t)
        for t in range(3)
    ]
    s = points[0]
    path = write_ome_zarr(
        np.stack([p.image for p in points]), tmp_path / "movie.ome.zarr", axes="tczyx",
        spacing=s.spacing, channel_names=s.channel_names, n_levels=1,
    )  # fmt: skip
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="dls-microscopy")
    assert viewer.layers["DAPI"].ndim == 4
    viewer.dims.set_current_step(0, 2)  # the time slider on the last time point
    seg, mesh, feat = SegmentWidget(viewer), MeshesWidget(viewer), FeaturesWidget(viewer)
    seg.image.setCurrentText("DAPI")
    seg.set_param("diameter_um", 6.0)
    seg.device.setCurrentText("cpu")
    seg.memory.setText("64MB")
    _run(qtbot, seg, seg.run)
    assert "at time point 2" in seg.status.text()
    # the labels record it, as those of `segment --time-point 2` do
    record = open_volume(viewer.layers["nuclei"].metadata["dls_labels_path"]).metadata["dls_microscopy"]
    assert record["segmentation"]["time_point"] == 2
    assert "spacing_from_file_um" not in record["segmentation"]  # the file's voxel size
    labels = _full(viewer.layers["nuclei"])
    alone = segment_blockwise(
        open_volume(path), get_segmenter("watershed", {"diameter_um": 6.0}, device="cpu"),
        channel="DAPI", time_point=2, output=tmp_path / "t2.ome.zarr", memory_budget=64 * 2**20,
    )  # fmt: skip
    np.testing.assert_array_equal(labels, open_volume(alone.path).load())
    mesh.labels.setCurrentText("nuclei")
    _run(qtbot, mesh, mesh.run)
    assert mesh.state.meshes is not None and len(mesh.state.meshes.ids) == alone.n_objects
    feat.labels.setCurrentText("nuclei")
    assert set(feat.chosen_channels()) == {"DAPI", "LaminB1"}
    viewer.dims.set_current_step(0, 1)  # the labels are time point 2's: not measured on time point 1
    feat.run()
    assert "labels are of time point 2" in feat.status.text() and feat.table is None
    viewer.dims.set_current_step(0, 2)
    _run(qtbot, feat, feat.run)
    table = feat.table.to_pandas()
    assert len(table) == alone.n_objects
    assert (table["Metadata_TimePoint"] == 2).all()
    assert (table["Metadata_ImageID"] == "movie.ome.zarr_t2").all()
    # intensities are those of time point 2, not of another one
    dapi = np.asarray(points[2].image[0], np.float64)
    mean = {i: dapi[labels == i].mean() for i in np.unique(labels)[1:]}
    got = dict(zip(table["Metadata_ObjectID"], table["Nuclei_Intensity_MeanIntensity_DAPI"], strict=True))
    np.testing.assert_allclose([got[i] for i in mean], list(mean.values()), rtol=1e-9)


def test_the_voxel_size_set_in_the_app_is_what_the_steps_and_the_saved_pipeline_use(
    make_napari_viewer, qtbot, tmp_path
):
    """A plain TIFF has no voxel size and is read as 1 µm: set in the Segment tab, Segment, Features,
    the saved pipeline.yaml (input.spacing) and a pipeline run on the open image all use it."""
    import tifffile

    from dls_microscopy.io import open_volume
    from dls_microscopy.napari._features import FeaturesWidget
    from dls_microscopy.napari._pipeline import PipelineWidget
    from dls_microscopy.napari._segment import SegmentWidget
    from dls_microscopy.pipeline.config import dump_config, load_config
    from dls_microscopy.sample_data import make_synthetic_nuclei

    sample = make_synthetic_nuclei((20, 64, 64), spacing=(1.0, 0.5, 0.5), diameter_um=6.0, seed=3)
    tifffile.imwrite(tmp_path / "stack.tif", sample.image[0])
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tmp_path / "stack.tif"), plugin="dls-microscopy")
    seg, feat, pipe = SegmentWidget(viewer), FeaturesWidget(viewer), PipelineWidget(viewer)
    assert tuple(image.scale) == (1.0, 1.0, 1.0) and seg.voxel_size.text.text() == "1, 1, 1"
    seg.voxel_size.text.setText("1, 0.5 0.5")
    seg.voxel_size.apply_button.click()
    assert tuple(image.scale) == (1.0, 0.5, 0.5)
    assert seg.status.text() == "voxel size 1, 0.5, 0.5 µm (z, y, x) set on stack"
    image.scale = (1.0, 0.5, 0.25)  # set elsewhere (the console): the control shows it
    assert seg.voxel_size.text.text() == "1, 0.5, 0.25"
    seg.voxel_size.text.setText("1, 0.5, 0")
    seg.voxel_size.apply_button.click()
    assert seg.status.text() == "error: the voxel size of axis x must be a positive number of µm, got 0.0"
    seg.voxel_size.text.setText("1, 0.5, 0.5")
    seg.set_voxel_size()
    # Segment and Features measure in these µm
    seg.set_param("diameter_um", 6.0)
    seg.device.setCurrentText("cpu")
    seg.memory.setText("64MB")
    _run(qtbot, seg, seg.run)
    labels = viewer.layers["nuclei"]
    assert tuple(labels.scale) == (1.0, 0.5, 0.5)
    # the labels record the voxel size used and the file's, as those of `segment --spacing` do
    record = open_volume(labels.metadata["dls_labels_path"]).metadata["dls_microscopy"]["segmentation"]
    assert record["spacing_um"] == [1.0, 0.5, 0.5] and record["spacing_from_file_um"] == [1.0, 1.0, 1.0]
    assert record["time_point"] is None  # no time series
    feat.labels.setCurrentText("nuclei")
    _run(qtbot, feat, feat.run)
    table = feat.table.to_pandas()
    ids, counts = np.unique(_full(labels), return_counts=True)
    voxels = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    volumes = [voxels[i] * 0.25 for i in table["Metadata_ObjectID"]]
    np.testing.assert_allclose(table["Nuclei_AreaShape_Volume"], volumes)
    # the saved pipeline gives the voxel size, and the CLI run of it measures the same
    pipe.output.setText(str(tmp_path / "run"))
    written = pipe.save(tmp_path / "pipeline.yaml")
    assert load_config(written).input.spacing == [1.0, 0.5, 0.5]
    _check_pipeline_matches_gui(written, feat.table)
    # a pipeline without input.spacing run on the open image: the voxel size set in the app
    cfg = load_config(written)
    plain = cfg.model_copy(
        update={
            "input": cfg.input.model_copy(update={"spacing": None}),
            "output": cfg.output.model_copy(update={"path": str(tmp_path / "run on open")}),
        }
    )
    _run(qtbot, pipe, lambda: pipe.run_config(dump_config(plain, tmp_path / "plain.yaml")))
    np.testing.assert_allclose(pipe.state.features.column("Nuclei_AreaShape_Volume").to_numpy(), volumes)
    # another voxel size after segmenting: no pipeline repeats steps done with two
    seg.voxel_size.text.setText("2, 0.5, 0.5")
    seg.set_voxel_size()
    assert tuple(labels.scale) == (2.0, 0.5, 0.5)
    assert seg.status.text().endswith("segment, features done before used the old one: run again")
    _run(qtbot, feat, feat.run)
    assert pipe.preview.toPlainText().startswith("# the steps used different voxel sizes")


def test_meshes_of_empty_labels_say_so(make_napari_viewer, qtbot):
    """No objects: a plain status, no numpy error about zero-size arrays (GUI review)."""
    from dls_microscopy.napari._meshes import MeshesWidget

    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((8, 16, 16), np.uint16), name="empty")
    widget = MeshesWidget(viewer)
    widget.labels.setCurrentText("empty")
    _run(qtbot, widget, widget.run)
    assert widget.status.text() == "empty: no objects in the labels, nothing to mesh"
    assert [layer.name for layer in viewer.layers] == ["empty"]


def test_the_saved_pipeline_segments_as_the_labels_measured_were(make_napari_viewer, qtbot, small_sample):
    """Segment as nuclei_a (6 µm), then nuclei_b (12 µm), measure nuclei_a: the pipeline said 12 µm,
    the Pipeline tab remembered only the last segmentation (QA)."""
    from dls_microscopy.napari._features import FeaturesWidget
    from dls_microscopy.napari._pipeline import PipelineWidget
    from dls_microscopy.napari._segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.open(str(small_sample), plugin="dls-microscopy")
    seg, feat, pipe = SegmentWidget(viewer), FeaturesWidget(viewer), PipelineWidget(viewer)
    seg.image.setCurrentText("DAPI")
    seg.device.setCurrentText("cpu")
    for name, diameter in (("nuclei_a", 6.0), ("nuclei_b", 12.0)):
        seg.set_param("diameter_um", diameter)
        seg.label_name.setText(name)
        _run(qtbot, seg, seg.run)
    assert pipe.config().steps.segment.params["diameter_um"] == 12.0  # segment alone: the latest
    feat.labels.setCurrentText("nuclei_a")
    _run(qtbot, feat, feat.run)
    assert pipe.config().steps.segment.params["diameter_um"] == 6.0
    assert "diameter_um: 6" in pipe.preview.toPlainText()


def test_steps_on_the_files_own_labels_are_saved_as_such(tmp_path):
    """Meshes or features on labels read from the file: the pipeline reads them (input.labels), and an
    earlier segmentation is not what the steps used (GUI review: 'not opened from a file')."""
    from types import SimpleNamespace

    from dls_microscopy.napari._tasks import record_labels_used
    from dls_microscopy.pipeline.interactive import SessionRecorder

    rec = SessionRecorder()
    key = rec.record_segment(method="watershed", params={"diameter_um": 7.0}, channel="DAPI", labels="nuclei")
    source = str(tmp_path / "img.ome.zarr")
    segmented = SimpleNamespace(
        name="nuclei", metadata={"dls_source": source, "dls_label": None, "dls_segmented": key}
    )
    record_labels_used(rec, segmented)
    rec.record_features(channels=None, compartment="Nuclei")
    assert rec.segment is not None and rec.labels_name is None  # its own segmentation: kept
    from_file = SimpleNamespace(name="labels/0", metadata={"dls_source": source, "dls_label": "0"})
    record_labels_used(rec, from_file)
    rec.record_features(channels=None, compartment="Nuclei")
    cfg = rec.to_config(tmp_path / "out")
    assert cfg.steps.segment is None and cfg.input.labels == "0"
    assert cfg.input.path == source and cfg.compute.cluster.python is None


def test_steps_on_labels_no_pipeline_makes_say_why_when_saved(tmp_path):
    """Features on an HDF5 file's label dataset: the saved pipeline used an earlier segmentation
    silently, or said the image was not opened from a file (QA)."""
    from types import SimpleNamespace

    from dls_microscopy.errors import InputError
    from dls_microscopy.napari._tasks import record_labels_used
    from dls_microscopy.pipeline.interactive import SessionRecorder

    rec = SessionRecorder()
    rec.set_input(f"{tmp_path / 'nuclei.h5'}:/raw")
    rec.record_segment(method="watershed", params={"diameter_um": 3.2}, channel=None, labels="labels")
    h5 = SimpleNamespace(
        name="label", metadata={"dls_source": f"{tmp_path / 'nuclei.h5'}:/label", "dls_series": 0}
    )
    record_labels_used(rec, h5)
    rec.record_features(channels=None, compartment="Nuclei")
    with pytest.raises(InputError) as err:
        rec.to_config(tmp_path / "out")
    said = str(err.value)
    assert said.startswith(f"the labels 'label' were read from {tmp_path / 'nuclei.h5'}:/label")
    assert (
        "only from an OME-Zarr input" in said and f"--labels label={tmp_path / 'nuclei.h5'}:/label)" in said
    )
    drawn = SimpleNamespace(name="Labels", metadata={})
    record_labels_used(rec, drawn)
    rec.record_features(channels=None, compartment="Nuclei")
    with pytest.raises(InputError, match="'Labels' were neither made by Segment nor read from"):
        rec.to_config(tmp_path / "out")


def test_a_new_labels_layer_is_what_the_label_choosers_take(make_napari_viewer):
    # after Segment, Meshes and Features still pointed at the labels read with the file
    from dls_microscopy.napari._tasks import LayerChooser

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8)), name="raw")
    viewer.add_labels(np.zeros((4, 8, 8), np.uint16), name="labels/truth")
    labels, images = LayerChooser(viewer, ("labels",)), LayerChooser(viewer, ("image",))
    chosen = []
    labels.currentTextChanged.connect(chosen.append)
    viewer.add_labels(np.zeros((4, 8, 8), np.uint16), name="nuclei")
    viewer.add_image(np.zeros((4, 8, 8)), name="other")
    assert labels.currentText() == "nuclei" and chosen[-1] == "nuclei"
    assert images.currentText() == "raw"  # an image chooser keeps its choice
    labels.setCurrentText("labels/truth")
    viewer.layers.remove("other")
    assert labels.currentText() == "labels/truth"


def test_a_2d_time_series_is_refused_as_a_2d_image_is(make_napari_viewer, tmp_path):
    """(T, Y, X) is 3D to napari: Segment segmented time as depth, and the saved pipeline then failed
    in `dls-microscopy run` ('3D data required'); Meshes and Features refuse it too (QA)."""
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.napari._features import FeaturesWidget
    from dls_microscopy.napari._meshes import MeshesWidget
    from dls_microscopy.napari._segment import SegmentWidget

    image = np.random.default_rng(0).integers(0, 100, (5, 32, 32)).astype(np.uint16)
    truth = np.zeros((5, 32, 32), np.uint16)
    truth[:, 4:12, 4:12] = 1
    path = write_ome_zarr(
        image, tmp_path / "movie.ome.zarr", axes="tyx", spacing=(0.5, 0.5), channel_names=["DAPI"],
        labels={"truth": truth}, n_levels=1,
    )  # fmt: skip
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="dls-microscopy")
    assert viewer.layers["movie"].ndim == 3  # as a (Z, Y, X) volume would be
    seg, mesh, feat = SegmentWidget(viewer), MeshesWidget(viewer), FeaturesWidget(viewer)
    assert not seg.voxel_size.isEnabled() and seg.level.count() == 0
    seg.set_param("diameter_um", 3.0)
    for widget in (seg, mesh, feat):
        widget.run_button.click()
        assert not widget.running
        assert "a 3D layer is needed (Z, Y, X): " in widget.status.text(), widget.status.text()
        assert "2D time series (axes t, y, x" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == ["movie", "labels/truth"]
    assert not seg.state.recorder.steps()


def test_an_rgb_layer_and_a_2d_layer_of_another_reader_are_refused_in_words(make_napari_viewer):
    """A (Z, Y, X, 3) RGB layer was read as 48 channels ("choose one with channel=/--channel");
    a 2D layer not from our reader said "(axes ?, shape ...)" (plugin QA)."""
    from dls_microscopy.napari._segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((48, 16, 16, 3), np.uint8), rgb=True, name="colour")
    viewer.add_image(np.zeros((16, 16), np.uint16), name="flat")
    seg = SegmentWidget(viewer)
    seg.set_param("diameter_um", 3.0)
    said = {}
    for name in ("colour", "flat"):
        seg.image.setCurrentText(name)
        seg.run_button.click()
        assert not seg.running
        said[name] = seg.status.text()
    assert "'colour' is an RGB layer" in said["colour"] and "Split RGB" in said["colour"], said
    assert "channel=/--channel" not in said["colour"]
    assert "'flat' is a 2D image (shape 16 × 16)" in said["flat"] and "?" not in said["flat"], said


def test_cancel_stops_the_diameter_estimate_and_keeps_the_diameter_typed(
    make_napari_viewer, qtbot, small_sample, monkeypatch
):
    """Cancel during *Estimate diameter* said "cancelling…", yet the estimate ran on and replaced
    the 8 typed with its own, which the next Segment used silently (QA)."""
    import threading

    from dls_microscopy import segment
    from dls_microscopy.napari._segment import SegmentWidget
    from dls_microscopy.pipeline.interactive import CancelledError

    viewer = make_napari_viewer()
    viewer.open(str(small_sample), plugin="dls-microscopy")
    seg = SegmentWidget(viewer)
    seg.image.setCurrentText("DAPI")
    seg.set_param("diameter_um", 8)
    with qtbot.waitSignal(seg.finished, timeout=60_000) as blocker:
        seg.estimate()
        assert seg.cancel_button.isEnabled()
        seg.cancel()  # stopped before its next round
    assert isinstance(blocker.args[0], CancelledError) and seg.status.text() == "cancelled"
    assert seg.param_inputs["diameter_um"].text() == "8" and seg.progress_bar.format() == "cancelled"
    # an estimate that cannot stop (no progress report left) has its result dropped
    release = threading.Event()

    def deaf(volume, *, params, progress):
        release.wait(30)
        return segment.DiameterEstimate(11.86, 20, [20.0, 11.86], [])

    monkeypatch.setattr(segment, "estimate_diameter", deaf)
    with qtbot.waitSignal(seg.finished, timeout=60_000) as blocker:
        seg.estimate()
        seg.cancel()
        release.set()
    assert isinstance(blocker.args[0], CancelledError)
    assert seg.param_inputs["diameter_um"].text() == "8"
    monkeypatch.undo()
    _run(qtbot, seg, seg.estimate)  # not cancelled: it fills the diameter in
    assert seg.param_inputs["diameter_um"].text() != "8"


def test_segment_refuses_a_memory_budget_of_zero_and_the_pipeline_tab_names_a_bad_setting(
    make_napari_viewer, small_sample
):
    """ "0" was accepted; the Pipeline tab then showed pydantic's raw report and disabled Save (QA)."""
    from dls_microscopy.napari._pipeline import PipelineWidget
    from dls_microscopy.napari._segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.open(str(small_sample), plugin="dls-microscopy")
    seg, pipe = SegmentWidget(viewer), PipelineWidget(viewer)
    seg.image.setCurrentText("DAPI")
    seg.memory.setText("0")
    seg.run_button.click()
    assert not seg.running and "nuclei" not in viewer.layers
    assert seg.status.text() == "memory budget '0': a memory size must be positive (e.g. 2GB, 512MB)"
    # a setting a pipeline refuses, however recorded: a sentence naming it, not pydantic's report
    seg.state.recorder.set_input(str(small_sample))
    seg.state.recorder.record_segment(method="watershed", params={}, channel="DAPI", memory_budget="0")
    seg.state.changed("steps")
    text = pipe.preview.toPlainText()
    assert text.startswith("# this session cannot be saved as a pipeline: the memory budget"), text
    assert "pydantic" not in text and "validation error" not in text
    assert not pipe.save_button.isEnabled()


def _endless(progress) -> None:
    """A task that runs until cancelled (reports progress every 10 ms, at most 60 s)."""
    import time

    for i in range(6000):
        progress("working", i, 6000)
        time.sleep(0.01)


def test_closing_the_window_or_quitting_cancels_the_running_task(make_napari_viewer, qtbot):
    """The window closed (or the app quit) while Segment ran: the task ran on to its end, the process
    with it (55 s on the QA image, hours on a large one) (QA)."""
    import time

    from dls_microscopy.napari._tasks import TaskWidget
    from dls_microscopy.pipeline.interactive import CancelledError

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8)), name="raw")  # napari asks before closing a window of layers
    widget = TaskWidget(viewer, "Work")
    with qtbot.waitSignal(widget.finished, timeout=20_000) as blocker:
        widget.start(_endless, lambda _: None)
        qtbot.waitUntil(lambda: widget.progress_bar.format().startswith("working"))
        # napari lists the task (and asks, when the user closes it), then cancels it as Cancel does
        assert "DLS Microscopy: Work is running" in viewer.window._task_status_manager.get_status()
        viewer.close()
        assert widget.token.cancelled and widget.status.text() == "cancelling…"
    assert isinstance(blocker.args[0], CancelledError)
    assert not viewer.window._task_status_manager.is_busy()
    # quitting: cancelled, and waited for, before the session folder is removed at exit
    with qtbot.waitSignal(widget.finished, timeout=20_000) as blocker:
        widget.start(_endless, lambda _: None)
        qtbot.waitUntil(lambda: widget.progress_bar.format().startswith("working"))
        start = time.monotonic()
        widget._cancel_for_exit()
        assert time.monotonic() - start < 5 and widget.token.cancelled
    assert isinstance(blocker.args[0], CancelledError)
    widget._cancel_for_exit()  # nothing running: nothing to do
    assert widget.status.text() == "cancelled"


def test_the_window_registry_is_reached_through_naparis_proxy_without_a_warning(make_napari_viewer):
    """Plugin widgets get napari's PublicOnlyProxy: two FutureWarnings printed per task (plugin QA)."""
    import warnings

    from napari.utils._proxies import PublicOnlyProxy

    from dls_microscopy.napari._task_helpers import window_private as _window_private

    proxied = PublicOnlyProxy(make_napari_viewer())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = [_window_private(proxied, n) for n in ("_register_task_status", "_update_task_status")]
    assert all(callable(f) for f in found)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]


def test_saving_labels_that_do_not_fit_the_image_says_why(make_napari_viewer, tmp_path):
    """layer.save returned [] and napari warned "not a valid writer": the reason was lost (plugin QA)."""
    from dls_microscopy.errors import OutputError
    from dls_microscopy.io import write_ome_zarr

    image = write_ome_zarr(np.zeros((4, 16, 16), np.uint16), tmp_path / "img.ome.zarr", spacing=(1, 1, 1))
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.ones((4, 8, 8), np.uint16), name="small")
    with pytest.raises(OutputError, match=r"cannot save the labels layer: .*shape"):
        layer.save(str(image / "labels" / "small"), plugin="dls-microscopy")
    assert not (image / "labels").exists()


def test_quitting_waits_for_its_own_task_not_for_other_plugins_workers(make_napari_viewer, qtbot):
    """At quit the app waited for napari's whole thread pool: another plugin's long worker held
    every widget's quit for 60 s (review)."""
    import threading
    import time

    from qtpy.QtCore import QRunnable, QThreadPool

    from dls_microscopy.napari._tasks import TaskWidget
    from dls_microscopy.pipeline.interactive import CancelledError

    release = threading.Event()

    class _Theirs(QRunnable):
        def run(self) -> None:
            release.wait(30)

    QThreadPool.globalInstance().start(_Theirs())
    try:
        widget = TaskWidget(make_napari_viewer(), "Work")
        with qtbot.waitSignal(widget.finished, timeout=20_000) as blocker:
            widget.start(_endless, lambda _: None)
            qtbot.waitUntil(lambda: widget.progress_bar.format().startswith("working"))
            start = time.monotonic()
            widget._cancel_for_exit()
            assert time.monotonic() - start < 10 and not widget.running
        assert isinstance(blocker.args[0], CancelledError)
    finally:
        release.set()
