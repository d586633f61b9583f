"""run_features: files in, Parquet tables and a manifest out, atomically and deterministically."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

from dls_microscopy.errors import InputError, ModelNotFoundError, OutputError, UnsupportedDtypeError
from dls_microscopy.features import NoObjectsWarning
from dls_microscopy.pipeline.features import run_features

PARQUET = ("objects.parquet", "images.parquet", "wells.parquet")


def test_run_writes_tables_and_manifest(nuclei, nuclei_zarr, tmp_path):
    out = tmp_path / "out"
    res = run_features(nuclei_zarr, "nuclei", out, plate="P1", well="B03", site=1, csv=True)
    assert res["n_objects"] == nuclei.n_nuclei
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*PARQUET, "objects.csv", "images.csv", "wells.csv", "manifest.json"]
    )
    objects = pq.read_table(out / "objects.parquet")
    assert objects.num_rows == nuclei.n_nuclei
    assert objects.column("Metadata_Site").to_pylist() == [1] * nuclei.n_nuclei
    assert objects.column("Metadata_ImageID")[0].as_py() == "nuclei.ome.zarr"
    assert "Nuclei_Intensity_MeanIntensity_LaminB1" in objects.column_names
    images = pq.read_table(out / "images.parquet")
    assert images.column("Count_Nuclei").to_pylist() == [nuclei.n_nuclei]
    wells = pq.read_table(out / "wells.parquet")  # the one image, as a run's wells count fields
    assert wells.column_names[:4] == [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_Site_Count",
        "Count_Nuclei",
    ]
    assert wells.column("Metadata_Site_Count").to_pylist() == [1]
    # no partial folder is left beside the output
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_two_runs_give_identical_bytes(nuclei_zarr, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_features(nuclei_zarr, "nuclei", a, plate="P1", well="B03", workers=1)
    run_features(nuclei_zarr, "nuclei", b, plate="P1", well="B03", workers=2, memory_budget=2**22)
    for name in PARQUET:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_channels_compartment_and_overwrite(nuclei_zarr, tmp_path):
    out = tmp_path / "out"
    run_features(nuclei_zarr, "nuclei", out, channels=["LaminB1"], compartment="Cells")
    names = pq.read_schema(out / "objects.parquet").names
    assert "Cells_Intensity_MeanIntensity_LaminB1" in names
    assert not any(n.endswith("_DAPI") for n in names)
    assert not (out / "wells.parquet").exists()  # the well is unknown
    with pytest.raises(OutputError, match="exists"):
        run_features(nuclei_zarr, "nuclei", out)
    run_features(nuclei_zarr, "nuclei", out, channels=[0], overwrite=True)
    assert "Nuclei_Intensity_MeanIntensity_DAPI" in pq.read_schema(out / "objects.parquet").names


def test_separate_label_file_and_bad_inputs(nuclei, nuclei_zarr, tmp_path):
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, nuclei.labels, metadata={"axes": "ZYX"})
    with pytest.warns(UserWarning, match="spacing"):  # a TIFF without physical sizes
        res = run_features(nuclei_zarr, labels, tmp_path / "tif")
    assert res["n_objects"] == nuclei.n_nuclei

    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, nuclei.labels[:, :-3], metadata={"axes": "ZYX"})
    with pytest.raises(InputError, match="differ in shape"):
        run_features(nuclei_zarr, cut, tmp_path / "x")
    floats = tmp_path / "float.tif"
    tifffile.imwrite(floats, nuclei.labels.astype(np.float32), metadata={"axes": "ZYX"})
    with pytest.raises(UnsupportedDtypeError, match=r"float\.tif: labels must be an integer"):
        run_features(nuclei_zarr, floats, tmp_path / "x")  # before any other check of the labels
    with pytest.raises(InputError, match="neither an existing path nor a label image") as err:
        run_features(nuclei_zarr, "cells", tmp_path / "x")
    assert err.value.path == nuclei_zarr  # the message names the image it looked in
    assert str(err.value).startswith(f"{nuclei_zarr}: labels 'cells'")
    with pytest.raises(ModelNotFoundError, match="embed train"):
        run_features(nuclei_zarr, "nuclei", tmp_path / "x", embeddings="dino.pt")
    with pytest.raises(InputError, match="no channel named"):
        run_features(nuclei_zarr, "nuclei", tmp_path / "x", channels=["GFP"])
    assert not (tmp_path / "x").exists()


def test_empty_labels_write_empty_tables(nuclei, nuclei_zarr, tmp_path):
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros(nuclei.labels.shape, np.uint16), metadata={"axes": "ZYX"})
    with pytest.warns(NoObjectsWarning), pytest.warns(UserWarning, match="spacing"):
        res = run_features(nuclei_zarr, empty, tmp_path / "out", well="A01")
    assert res["n_objects"] == 0
    objects = pq.read_table(tmp_path / "out" / "objects.parquet")
    assert objects.num_rows == 0 and "Nuclei_AreaShape_Volume" in objects.column_names
    for name in ("images.parquet", "wells.parquet"):
        agg = pq.read_table(tmp_path / "out" / name)
        assert agg.column("Count_Nuclei").to_pylist() == [0]
        assert agg.column("Metadata_Well").to_pylist() == ["A01"]
        assert np.isnan(agg.column("Mean_Nuclei_AreaShape_Volume").to_numpy()).all()
    wells = pq.read_table(tmp_path / "out" / "wells.parquet")
    assert wells.column("Metadata_Site_Count").to_pylist() == [1]  # an image without objects counts


def test_manifest_names_the_hdf5_dataset_of_image_and_labels(tmp_path, nuclei):
    """Both inputs of one HDF5 file are recorded with their dataset (the labels' was dropped)."""
    import json

    import h5py

    path = tmp_path / "both.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = nuclei.image[0]
        f["label"] = nuclei.labels
        for name in ("raw", "label"):
            f[name].attrs["element_size_um"] = nuclei.spacing
    run_features(f"{path}:/raw", f"{path}:/label", tmp_path / "out")
    inputs = json.loads((tmp_path / "out" / "manifest.json").read_text())["inputs"]
    assert inputs["image"]["dataset"] == "/raw" and inputs["labels"]["dataset"] == "/label"


def test_a_label_name_means_the_label_image_even_beside_a_folder_of_that_name(
    nuclei, nuclei_zarr, tmp_path, monkeypatch, caplog
):
    """``features IMAGE nuclei OUT`` failed ("not a zarr store") where ./nuclei was a folder."""
    import json
    import logging

    (tmp_path / "nuclei").mkdir()
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        res = run_features(nuclei_zarr, "nuclei", tmp_path / "out")
    assert res["n_objects"] == nuclei.n_nuclei
    assert any("write ./nuclei for the path" in r.getMessage() for r in caplog.records)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["parameters"]["labels_path_or_name"] == "nuclei"
    with pytest.raises(InputError):  # the folder, when asked for as a path
        run_features(nuclei_zarr, "./nuclei", tmp_path / "out2")
