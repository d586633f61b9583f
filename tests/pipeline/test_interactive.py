"""The GUI's actions as pure functions (headless): segment, mesh, measure, export, record, cancel."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.pipeline.interactive import (
    CancelledError,
    CancelToken,
    SessionRecorder,
    descriptor_table,
    export_meshes,
    export_table,
    feature_projection,
    ids_in_box,
    measure_volumes,
    memory_budget_bytes,
    mesh_columns,
    mesh_labels,
    plot_values,
    segment_volume,
    segmenter_parameters,
    session_field,
    session_tables,
    volume_from_layer,
)
from dls_microscopy.sample_data import make_synthetic_nuclei


@pytest.fixture(scope="module")
def sample():
    return make_synthetic_nuclei((16, 48, 48), spacing=(1.0, 0.5, 0.5), diameter_um=6.0, seed=5)


def _cubes() -> np.ndarray:
    lab = np.zeros((12, 16, 20), np.uint16)
    lab[2:6, 2:6, 2:6] = 3  # 4×4×4 voxels
    lab[5:11, 8:14, 10:18] = 9  # 6×6×8 voxels
    return lab


def test_volume_from_layer_multiscale_spacing():
    levels = [np.zeros((8, 32, 32), np.uint8), da.zeros((8, 16, 16), dtype=np.uint8)]
    vol = volume_from_layer(levels, scale=(2.0, 0.5, 0.5), channel_names=["DAPI"])
    assert vol.axes == "zyx" and vol.spacing == (2.0, 0.5, 0.5)
    assert vol.level_spacings[1] == (2.0, 1.0, 1.0)
    with pytest.raises(InputError, match="3D layer"):
        volume_from_layer(np.zeros((4, 4)), scale=(1, 1))


def test_segmenter_parameters_come_from_the_params_model():
    params = segmenter_parameters("watershed")
    assert params["diameter_um"]["default"] == 8.0
    assert "seed_method" in params
    # every parameter carries its docstring (the app's tooltip) and what None means
    assert [k for k, p in params.items() if not p["description"]] == []
    assert "diameter" in params["diameter_um"]["description"]
    assert params["seed_contrast"]["unset"] == "off" and params["smoothing_um"]["unset"] == "automatic"


def _watershed(image, output, **kwargs):
    """The sample's nuclei segmented as the app does (diameter 6 µm, CPU, 64 MB blocks)."""
    return segment_volume(
        image, method="watershed", params={"diameter_um": 6.0}, device="cpu", memory_budget="64MB",
        output=output, **kwargs,
    )  # fmt: skip


def test_segment_volume_and_cancel(sample, tmp_path):
    image = sample.as_volume().select(c=0)
    res = _watershed(image, tmp_path / "nuclei.ome.zarr")
    assert res.n_objects > 5 and res.labels.spatial_shape == image.spatial_shape
    assert res.labels.spacing == image.spacing
    record = res.labels.metadata["dls_microscopy"]
    assert record["command"] == "dls-microscopy app: Segment"
    seg = record["segmentation"]
    assert seg["time_point"] is None and seg["spacing_um"] == [1.0, 0.5, 0.5]
    assert "spacing_from_file_um" not in seg  # none given: the voxel size is the file's

    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        segment_volume(
            image,
            method="watershed",
            params={"diameter_um": 6.0},
            device="cpu",
            output=tmp_path / "cancelled.ome.zarr",
            progress=token.wrap(),
        )
    assert not (tmp_path / "cancelled.ome.zarr").exists()


def test_segment_volume_records_the_time_point_and_the_files_voxel_size(sample, tmp_path):
    """The app's labels say what the segment command's say: which time point of a series, and
    the file's voxel size where the app's is another (as ``--spacing`` records it)."""
    image = sample.as_volume().select(c=0)
    res = _watershed(image, tmp_path / "t2.ome.zarr", source_time_point=2, spacing_from_file=(2, 1, 1))
    seg = res.labels.metadata["dls_microscopy"]["segmentation"]
    assert seg["time_point"] == 2 and seg["n_objects"] == res.n_objects
    assert seg["spacing_um"] == [1.0, 0.5, 0.5] and seg["spacing_from_file_um"] == [2.0, 1.0, 1.0]
    assert res.labels.spacing == image.spacing  # recorded, not used
    assert "spacing_from_file_um" not in image.metadata  # the caller's volume is unchanged


def test_mesh_labels_in_micrometres_with_descriptors():
    lab = _cubes()
    vol = volume_from_layer(lab, scale=(2.0, 0.5, 0.5))
    reports: list[tuple[str, int, int]] = []
    meshes = mesh_labels(vol, smooth=0, progress=lambda *a: reports.append(a))
    assert meshes.ids.tolist() == [3, 9]
    assert reports
    # voxel counts × voxel volume (0.5 µm³), less the corners marching cubes cuts off
    np.testing.assert_allclose(meshes.descriptors["volume_um3"], [64 * 0.5, 288 * 0.5], rtol=0.1)
    assert meshes.vertices[:, 0].max() <= 12 * 2.0 and meshes.vertices[:, 2].max() <= 20 * 0.5
    values = meshes.vertex_values("volume_um3")
    assert values.shape == (len(meshes.vertices),)
    assert set(np.unique(values)) == set(meshes.descriptors["volume_um3"])
    assert "volume_um3" in meshes.numeric_columns() and "object_id" not in meshes.numeric_columns()
    assert descriptor_table(meshes).column("object_id").to_pylist() == [3, 9]
    with pytest.raises(InputError):
        meshes.vertex_values("nope")


def test_session_tables_of_meshes_only_are_those_of_a_run_with_a_mesh_step():
    """No features measured: the image's Metadata_* and the mesh columns, as a run's objects table."""
    from dls_microscopy.features.mesh_columns import descriptor_column

    meshes = mesh_labels(volume_from_layer(_cubes(), scale=(2.0, 0.5, 0.5)), smooth=0)
    field = session_field(source="/data/cubes.ome.tif", name="layer")
    assert field.metadata() == {
        "Metadata_Plate": "",
        "Metadata_Well": "",
        "Metadata_Site": 0,
        "Metadata_ImageID": "cubes.ome.tif",
    }
    assert session_field(source=None, name="layer", time_point=2).image_id == "layer_t2"
    tables = session_tables(None, meshes, metadata=field.metadata())
    objects = tables["objects"]
    assert objects.column_names[:5] == [*field.metadata(), "Metadata_ObjectID"]
    assert objects.column("Metadata_ObjectID").to_pylist() == [3, 9]
    volume, unit = descriptor_column("volume_um3", "um^3", "Nuclei")
    assert volume == "Nuclei_AreaShape_MeshVolume" and unit == "µm³"
    assert objects.schema.field(volume).metadata[b"unit"] == unit.encode()
    assert objects.column(volume).to_pylist() == meshes.descriptors["volume_um3"].tolist()
    assert tables["images"].column("Count_Nuclei").to_pylist() == [2]
    assert mesh_columns(meshes).column_names == ["Metadata_ObjectID", *objects.column_names[5:]]
    assert session_tables(None, None, metadata=field.metadata()) == {}


def test_session_field_names_an_hdf5_dataset_and_a_series_as_a_run_does(tmp_path):
    """An HDF5 dataset is named by its file, as a run names it (the app's export said ``raw``, the
    run ``nuclei_1135.h5``: the tables did not join) (QA)."""
    import h5py

    from dls_microscopy.pipeline.fields import discover_fields

    path = tmp_path / "nuclei 1135.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.zeros((4, 8, 8), np.uint8)
    run = discover_fields(f"{path}:/raw")[0]
    assert run.image_id == "nuclei_1135.h5"
    assert session_field(source=f"{path}:/raw", name="raw").image_id == run.image_id
    assert session_field(source=f"{path}:/raw", name="raw", time_point=1).image_id == "nuclei_1135.h5_t1"
    assert session_field(source="/data/multi.lif", name="x", series=2).image_id == "multi.lif_s2"


def test_measure_volumes_equals_features_command(sample, tmp_path):
    """The GUI's table is the table of ``dls-microscopy features`` on the same data."""
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.pipeline.features import run_features

    path = tmp_path / "img.ome.zarr"
    write_ome_zarr(sample.as_volume(), path, labels={"truth": sample.labels})
    image = volume_from_layer(sample.image, scale=sample.spacing, channel_names=sample.channel_names)
    labels = volume_from_layer(sample.labels, scale=sample.spacing)
    gui = measure_volumes(image, labels, image_id="img.ome.zarr", memory_budget="8MB")
    run_features(path, "truth", tmp_path / "out")
    cli = pq.read_table(tmp_path / "out" / "objects.parquet")
    assert gui.column_names == cli.column_names
    assert gui.equals(cli.replace_schema_metadata(gui.schema.metadata))
    one = measure_volumes(image, labels, channels=["LaminB1"])
    assert not any("DAPI" in c for c in one.column_names)


def test_export_table_and_meshes(tmp_path):
    table = pa.table({"Metadata_ObjectID": pa.array([1, 2], pa.uint64()), "Nuclei_X": [1.0, 2.0]})
    assert pq.read_table(export_table(table, tmp_path / "t.parquet")).equals(table)
    assert export_table(table, tmp_path / "t.csv").read_text().startswith('"Metadata_ObjectID"')
    with pytest.raises(InputError):
        export_table(table, tmp_path / "t.xlsx")
    for name in ("t.parquet", "t.csv"):  # pyarrow's "Failed to open local file" before
        with pytest.raises(
            OutputError, match=r"t\.(parquet|csv): cannot save the table: .*missing does not exist"
        ):
            export_table(table, tmp_path / "missing" / name)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        export_table(table, tmp_path / "file" / "t.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "t.csv", "t.parquet"]  # no temporaries
    meshes = mesh_labels(volume_from_layer(_cubes(), scale=(1, 1, 1)), smooth=0, descriptors=False)
    (glb,) = export_meshes(meshes, tmp_path / "m.glb")
    assert glb.read_bytes()[:4] == b"glTF"
    plys = export_meshes(meshes, tmp_path / "folder_ply")
    assert sorted(p.suffix for p in plys) == [".ply", ".ply"]


def test_projection_and_selection():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    table = pa.table(
        {
            "Metadata_ObjectID": pa.array(np.arange(1, 51), pa.uint64()),
            "Nuclei_A": a,
            "Nuclei_B": 2 * a + 0.01 * rng.normal(size=50),
            "Nuclei_C": rng.normal(size=50),
            "Nuclei_Const": np.ones(50),
        }
    )
    p = feature_projection(table)
    assert p.shape == (50, 2) and p[:, 0].var() > p[:, 1].var()
    np.testing.assert_array_equal(p, feature_projection(table))
    np.testing.assert_allclose(plot_values(table, "PCA 1"), p[:, 0])
    assert (
        ids_in_box(np.arange(1, 51), a, a, (0.0, 10.0, 10.0, 0.0)).tolist()
        == (np.arange(1, 51)[a >= 0]).tolist()
    )


def test_session_recorder_builds_a_config_that_round_trips(tmp_path):
    from dls_microscopy.pipeline.config import dump_config, load_config

    rec = SessionRecorder()
    with pytest.raises(
        InputError,
        match=r"not opened from a file.*Open Sample is made in memory: `dls-microscopy sample DIR`",
    ):
        rec.to_config(tmp_path / "out")
    rec.set_input(tmp_path / "img.ome.zarr")
    with pytest.raises(InputError, match="nothing to save"):
        rec.to_config(tmp_path / "out")
    rec.record_segment(
        method="watershed",
        params={"diameter_um": np.float64(6.5), "seed_method": "intensity"},
        channel="DAPI",
        device="cpu",
        memory_budget="512MB",
    )
    rec.record_mesh(smooth=5, decimate=None)
    rec.record_features(channels=None, compartment="Nuclei")
    cfg = rec.to_config(tmp_path / "out")
    assert cfg.steps.names() == ["segment", "mesh", "features"]
    path = dump_config(cfg, tmp_path / "pipeline.yaml")
    again = load_config(path)
    assert again.steps.segment.params == {"diameter_um": 6.5, "seed_method": "intensity"}
    assert again.compute.memory_budget == "512MB" and again.compute.device == "cpu"
    assert again.input.path == str(tmp_path / "img.ome.zarr")
    rec.record_segment(method="watershed", params={"no_such": 1}, channel=None)
    rec.record_mesh(smooth=5, decimate=None)  # the steps on these labels: the pipeline's
    rec.record_features(channels=None, compartment="Nuclei")
    with pytest.raises(Exception, match=r"no_such|unknown parameter"):
        rec.to_config(tmp_path / "out")


def test_a_memory_budget_of_zero_is_refused_and_an_invalid_setting_is_named(sample, tmp_path):
    # "0" segmented in the app, then the Pipeline tab showed pydantic's report ("# 1 validation
    # error ... errors.pydantic.dev") and could not save (QA)
    assert memory_budget_bytes("512MiB") == 512 * 2**20
    for text, said in (("0", "a memory size must be positive"), ("lots", "cannot read memory size")):
        with pytest.raises(InputError, match=said):
            memory_budget_bytes(text)
    with pytest.raises(InputError, match="a memory size must be positive"):
        segment_volume(sample.as_volume(), method="watershed", memory_budget="0", output=tmp_path / "x.zarr")
    # Meshes and Features took "0" too (review)
    image = volume_from_layer(sample.image, scale=sample.spacing, channel_names=sample.channel_names)
    labels = volume_from_layer(sample.labels, scale=sample.spacing)
    with pytest.raises(InputError, match="a memory size must be positive"):
        mesh_labels(labels, smooth=0, memory_budget="0")
    with pytest.raises(InputError, match="a memory size must be positive"):
        measure_volumes(image, labels, memory_budget="0")
    rec = SessionRecorder(input_path=str(tmp_path / "img.ome.zarr"))
    params = {"diameter_um": 6.0, "threshold_scale": "abc"}
    rec.record_segment(method="watershed", params=params, channel="DAPI", memory_budget="0")
    with pytest.raises(InputError) as info:
        rec.to_config(tmp_path / "out")
    said = str(info.value)
    assert said.startswith("this session cannot be saved as a pipeline: ")
    assert "the memory budget (compute.memory_budget, Segment tab): memory size must be positive" in said
    assert "the segmenter parameter threshold_scale (steps.segment.params.threshold_scale, Segment" in said
    assert "pydantic" not in said and "validation error" not in said and "input_value" not in said


def test_session_recorder_saves_paths_opened_relative_to_the_apps_folder_as_absolute(tmp_path, monkeypatch):
    """``dls-microscopy gui sample/x.ome.tif``: the pipeline read input.path against its own folder
    and found no image (QA)."""
    from dls_microscopy.pipeline.config import dump_config, load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.pt").write_bytes(b"")
    rec = SessionRecorder()
    rec.set_input("sample/x.ome.tif")
    rec.record_segment(method="watershed", params={}, channel=None)
    (tmp_path / "elsewhere").mkdir()
    saved = dump_config(rec.to_config("out"), tmp_path / "elsewhere" / "pipeline.yaml")
    cfg = load_config(saved)
    assert cfg.input.path == str(tmp_path / "sample" / "x.ome.tif")
    assert cfg.output.path == str(tmp_path / "elsewhere" / "out")  # beside the pipeline, as the tab says
    rec.set_input("crops/a.h5:/raw")
    rec.record_segment(method="watershed", params={}, channel=None)
    assert rec.to_config("out").input.path == f"{tmp_path / 'crops' / 'a.h5'}:/raw"
    rec.record_embeddings(["models/net.pt", "no-such-name"])  # a model file; a name stays one
    assert rec.embeddings == {"model": [str(tmp_path / "models" / "net.pt"), "no-such-name"]}


def test_session_recorder_saves_the_segmentation_of_the_labels_measured_not_the_latest(tmp_path):
    """Segment as nuclei_a (6 µm), then as nuclei_b (12 µm), measure nuclei_a: the pipeline said
    12 µm, and its run found 147 objects where the table had 291 (QA)."""
    rec = SessionRecorder()
    rec.set_input(tmp_path / "img.ome.tif")
    a = rec.record_segment(method="watershed", params={"diameter_um": 6.0}, channel="DAPI", labels="nuclei_a")
    rec.set_input(tmp_path / "other.ome.tif")
    b = rec.record_segment(
        method="watershed", params={"diameter_um": 12.0}, channel="DAPI", level=1, labels="nuclei_b"
    )
    assert rec.to_config("out").steps.segment.params["diameter_um"] == 12.0  # segment alone: the latest
    rec.use_segmentation(a, labels="nuclei_a")
    rec.record_features(channels=None, compartment="Nuclei")
    cfg = rec.to_config("out")
    assert cfg.steps.segment.params["diameter_um"] == 6.0 and cfg.input.level == 0
    assert cfg.input.path == str(tmp_path / "img.ome.tif")  # the image nuclei_a was made of
    # meshes of the other labels: no one pipeline makes both
    rec.use_segmentation(b, labels="nuclei_b")
    rec.record_mesh(smooth=5, decimate=None, level=1)
    with pytest.raises(
        InputError, match=r"Meshes were made of the labels 'nuclei_b' and Features measured 'nuclei_a'"
    ):
        rec.to_config("out")
    rec.use_segmentation(a, labels="nuclei_a")
    rec.record_mesh(smooth=5, decimate=None)
    assert rec.to_config("out").steps.names() == ["segment", "mesh", "features"]
    # a layer segmented again under its name: the meshes keep the segmentation they were made of
    rec.record_segment(method="watershed", params={"diameter_um": 9.0}, channel="DAPI", labels="nuclei_a")
    rec.record_features(channels=None, compartment="Nuclei")
    with pytest.raises(InputError, match="made differently"):
        rec.to_config("out")


def test_session_recorder_refuses_labels_no_pipeline_makes_with_the_reason(tmp_path):
    """Features on an HDF5 file's labels: the pipeline took an earlier segmentation silently, or said
    the image was not opened from a file (QA)."""
    rec = SessionRecorder()
    rec.set_input(f"{tmp_path / 'nuclei.h5'}:/raw")
    rec.record_segment(method="watershed", params={}, channel=None)
    rec.record_unusable_labels("label", "the labels 'label' were read from nuclei.h5:/label")
    rec.record_features(channels=None, compartment="Nuclei")
    assert rec.steps() == ["features"]  # not the segmentation, which the features did not use
    with pytest.raises(InputError, match=r"^the labels 'label' were read from nuclei.h5:/label"):
        rec.to_config("out")
    empty = SessionRecorder()  # nothing opened from a file either: the labels' reason comes first
    empty.record_unusable_labels("drawn", "the labels 'drawn' were neither made by Segment")
    empty.record_features(channels=None, compartment="Nuclei")
    with pytest.raises(InputError, match="neither made by Segment"):
        empty.to_config("out")
    # a key of another session's recorder: no settings to save
    rec.use_segmentation("nuclei#7", labels="nuclei")
    rec.record_features(channels=None, compartment="Nuclei")
    with pytest.raises(InputError, match="segmented in another session"):
        rec.to_config("out")


def test_session_recorder_gives_the_voxel_size_set_in_the_app_as_input_spacing(tmp_path):
    rec = SessionRecorder()
    rec.set_input(tmp_path / "stack.tif")
    rec.record_segment(method="watershed", params={}, channel=None, spacing=(1.0, 0.5, 0.5))
    rec.record_features(channels=None, compartment="Nuclei", spacing=[1.0, 0.5, 0.5])
    assert rec.to_config(tmp_path / "out").input.spacing == [1.0, 0.5, 0.5]
    # the file's voxel size: no input.spacing, so the pipeline reads each file's own
    rec.record_segment(method="watershed", params={}, channel=None)
    rec.record_features(channels=None, compartment="Nuclei")
    assert rec.to_config(tmp_path / "out").input.spacing is None
    # set between two steps: no pipeline repeats what was done
    rec.record_features(channels=None, compartment="Nuclei", spacing=[2.0, 0.5, 0.5])
    with pytest.raises(InputError, match=r"segment: the file's; features: 2 × 0.5 × 0.5 µm"):
        rec.to_config(tmp_path / "out")
    rec.record_existing_labels("truth")  # the file's labels measured: the segmentation is dropped
    rec.record_features(channels=None, compartment="Nuclei", spacing=[2.0, 0.5, 0.5])
    assert rec.to_config(tmp_path / "out").input.spacing == [2.0, 0.5, 0.5]


def test_input_spacing_is_the_full_resolution_voxel_size_where_not_the_files(tmp_path):
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.pipeline.interactive import input_spacing

    img = np.zeros((16, 64, 64), np.uint16)
    store = write_ome_zarr(img, tmp_path / "s.ome.zarr", spacing=(1.0, 0.5, 0.5), n_levels=2)
    assert input_spacing((1.0, 0.5, 0.5), (16, 64, 64), source=store) is None
    assert input_spacing((3.0, 1.0, 0.5, 0.5), (2, 16, 64, 64), source=store) is None  # t kept out
    assert input_spacing((2.0, 0.25, 0.25), (16, 64, 64), source=store) == [2.0, 0.25, 0.25]
    # a layer of the file's level 1 (twice as coarse in y, x): the full-resolution value
    assert input_spacing((1.0, 1.0, 1.0), (16, 32, 32), source=store) is None
    assert input_spacing((1.0, 0.6, 0.6), (16, 32, 32), source=store) == [1.0, 0.3, 0.3]
    assert input_spacing((2.0, 0.25, 0.25), (16, 64, 64), source=None) is None  # not from a file
    # a file that cannot be read cannot be compared: the layer's voxel size is given
    assert input_spacing((1.0, 0.5, 0.5), (16, 64, 64), source=tmp_path / "gone.tif") == [1.0, 0.5, 0.5]


def test_spacing_against_file_gives_the_files_voxel_size_where_the_layers_differs(tmp_path):
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.pipeline.interactive import spacing_against_file

    img = np.zeros((16, 64, 64), np.uint16)
    store = write_ome_zarr(img, tmp_path / "s.ome.zarr", spacing=(1.0, 0.5, 0.5), n_levels=2)
    same = spacing_against_file((3.0, 1.0, 0.5, 0.5), (2, 16, 64, 64), source=store)
    assert same == (None, None)
    assert spacing_against_file((2.0, 0.25, 0.25), (16, 64, 64), source=store) == (
        [2.0, 0.25, 0.25],
        [1.0, 0.5, 0.5],
    )
    # a layer of the file's level 1: both at full resolution, as --spacing records them
    coarse = spacing_against_file((1.0, 0.6, 0.6), (16, 32, 32), source=store)
    assert coarse.input_spacing == [1.0, 0.3, 0.3] and coarse.file_spacing == [1.0, 0.5, 0.5]
    assert spacing_against_file((2.0, 0.25, 0.25), (16, 64, 64), source=None) == (None, None)
    # a file that cannot be read: the layer's voxel size is given, the file's is not known
    gone = spacing_against_file((1.0, 0.5, 0.5), (16, 64, 64), source=tmp_path / "gone.tif")
    assert gone.input_spacing == [1.0, 0.5, 0.5] and gone.file_spacing is None


@pytest.mark.parametrize(
    ("given", "open_image", "used"),
    [(None, [1.0, 0.5, 0.5], [1.0, 0.5, 0.5]), ([2.0, 0.2, 0.2], [1.0, 0.5, 0.5], [2.0, 0.2, 0.2])],
)
def test_run_config_on_takes_the_open_images_voxel_size_unless_the_pipeline_gives_one(
    tmp_path, monkeypatch, given, open_image, used
):
    from dls_microscopy.pipeline import run as run_module
    from dls_microscopy.pipeline.config import PipelineConfig
    from dls_microscopy.pipeline.interactive import run_config_on

    ran = []
    monkeypatch.setattr(run_module, "run_pipeline", lambda cfg, progress: ran.append(cfg) or "summary")
    cfg = PipelineConfig.model_validate(
        {
            "input": {"path": str(tmp_path / "other.tif"), "spacing": given, "labels": "nuclei"},
            "output": {"path": str(tmp_path / "out")},
            "steps": {"features": {}},
        }
    )
    assert run_config_on(cfg, tmp_path / "stack.tif", spacing=open_image) == "summary"
    assert ran[0].input.spacing == used and ran[0].input.path == str(tmp_path / "stack.tif")
    assert cfg.input.spacing == given  # the configuration given is not changed
    with pytest.raises(InputError, match="axis y must be a positive number of µm"):
        run_config_on(cfg.model_copy(update={"input": cfg.input.model_copy(update={"spacing": None})}),
                      spacing=[1.0, 0.0, 1.0])  # fmt: skip
