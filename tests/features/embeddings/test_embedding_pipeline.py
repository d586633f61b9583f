"""Embeddings and mesh descriptors in run_features, the manifest, and the embed CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from dls_microscopy.cli import main
from dls_microscopy.errors import ModelNotFoundError
from dls_microscopy.features import units_of
from dls_microscopy.features.embeddings import sha256_file
from dls_microscopy.pipeline.features import run_features
from dls_microscopy.pipeline.verify import verify_manifest


def _well(plate, i=0):
    root, layout = plate
    return root / sorted(w["path"] for w in layout.values())[i]


def test_features_with_meshes_and_embeddings(plate, models, tmp_path):
    image = _well(plate)
    paths = [models["image"][0], models["shape"][0]]
    a = tmp_path / "a"
    res = run_features(image, "nuclei", a, well="A01", meshes=True, embeddings=paths, device="cpu")
    table = pq.read_table(a / "objects.parquet")
    names = table.column_names
    first_emb = names.index("Embedding_Image_000")
    assert all(n.startswith("Embedding_") for n in names[first_emb:])
    assert names[first_emb + 32] == "Embedding_Shape_000" and len(names) == first_emb + 64
    assert names.index("Nuclei_AreaShape_MeshVolume") < first_emb
    units = units_of(table)
    assert units["Nuclei_AreaShape_MeshVolume"] == "µm³"
    assert units["Nuclei_AreaShape_MeshSurfaceArea"] == "µm²"
    assert units["Nuclei_AreaShape_MeshMeanCurvatureMean"] == "1/µm"
    voxel = table.column("Nuclei_AreaShape_Volume").to_numpy()
    mesh = table.column("Nuclei_AreaShape_MeshVolume").to_numpy()
    np.testing.assert_allclose(mesh, voxel, rtol=0.1)  # two estimates of one volume
    emb = np.stack([table.column(n).to_numpy() for n in names[first_emb:]], axis=1)
    assert np.all(np.isfinite(emb)) and emb.shape[0] == res["n_objects"]
    manifest = json.loads((a / "manifest.json").read_text())
    assert [m["sha256"] for m in manifest["models"]] == [sha256_file(p) for p in paths]
    assert manifest["parameters"]["meshes"] is True
    assert verify_manifest(a) == []


def test_two_cpu_runs_give_identical_bytes(plate, models, tmp_path):
    paths = [models["image"][0], models["shape"][0]]
    a, b = tmp_path / "a", tmp_path / "b"
    for out, workers in ((a, 1), (b, 2)):
        run_features(_well(plate, 1), "nuclei", out, well="B01", embeddings=paths, workers=workers)
    for name in ("objects.parquet", "images.parquet", "wells.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_verify_detects_a_replaced_model(plate, models, tmp_path):
    model = tmp_path / "shape.pt"
    shutil.copy(models["shape"][0], model)
    shutil.copy(models["shape"][0].with_suffix(".json"), model.with_suffix(".json"))
    out = tmp_path / "out"
    run_features(_well(plate), "nuclei", out, embeddings=model, radial_shells=0, percentiles=())
    assert verify_manifest(out) == []
    shutil.copy(models["image"][0], model)
    assert any("embedding_model_0" in str(m) for m in verify_manifest(out))


def test_missing_model_fails_before_any_work(plate, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ModelNotFoundError, match="embed train"):
        run_features(_well(plate), "nuclei", out, embeddings=tmp_path / "missing.pt")
    assert not out.exists()


def test_cli_embed_train_apply_and_features(plate, capsys, tmp_path):
    w0, w1 = (str(_well(plate, i)) for i in (0, 1))
    model = tmp_path / "shape.pt"
    args = ["--epochs", "2", "--batch-size", "4", "--device", "cpu", "--threads", "1", "--json"]
    code = main(["embed", "train", w0, "nuclei", w1, "nuclei", "--kind", "shape", "--out", str(model), *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)["record"]
    assert record["weights_sha256"] == sha256_file(model) and record["training"]["epochs"] == 2
    out = tmp_path / "emb.parquet"
    code = main(["embed", "apply", w1, "nuclei", str(model), str(out), "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pq.read_table(out)
    assert table.column_names[0] == "Metadata_ObjectID" and table.num_columns == 33
    assert json.loads(captured.out)["n_objects"] == table.num_rows > 0
    # an existing output is refused before anything is read, unless --overwrite
    apply = ["embed", "apply", w1, "nuclei", str(model), str(out), "--device", "cpu"]
    before = out.read_bytes()
    assert main(apply) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "--overwrite" in err
    assert out.read_bytes() == before
    assert main([*apply, "--overwrite"]) == 0, capsys.readouterr().err
    assert pq.read_table(out).equals(table)
    code = main(["features", w1, "nuclei", str(tmp_path / "f"), "--embeddings", str(model), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "Embedding_Shape_031" in pq.read_schema(tmp_path / "f" / "objects.parquet").names
    code = main(["embed", "apply", w1, "nuclei", str(tmp_path / "none.pt"), str(tmp_path / "x.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "embed train" in err
    assert main(["embed", "train", w0, "--kind", "shape", "--out", str(model)]) == 2
    capsys.readouterr()
    # an existing model is refused before anything is read or trained, unless --overwrite
    before = model.read_bytes()
    train = ["embed", "train", w0, "nuclei", "--kind", "shape", "--out", str(model), *args[:-1]]
    assert main(train) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(model) in err and "--overwrite" in err
    assert model.read_bytes() == before
    assert main([*train, "--overwrite", "--seed", "1"]) == 0, capsys.readouterr().err
    assert model.read_bytes() != before


def test_gui_measure_with_embeddings_equals_features_command(plate, models, tmp_path):
    """The Features widget's function adds the same Embedding_* columns as `features --embeddings`,
    and the session recorder saves them as an embeddings step that the pipeline accepts."""
    from dls_microscopy.io import open_labels, open_volume
    from dls_microscopy.pipeline.interactive import SessionRecorder, measure_volumes

    image = _well(plate)
    paths = [models["image"][0], models["shape"][0]]
    run_features(image, "nuclei", tmp_path / "cli", embeddings=paths, device="cpu")
    cli = pq.read_table(tmp_path / "cli" / "objects.parquet")
    gui = measure_volumes(open_volume(image), open_labels(image, "nuclei"), embedding_models=paths)
    emb = [n for n in cli.column_names if n.startswith("Embedding_")]
    assert len(emb) == 64 and [n for n in gui.column_names if n.startswith("Embedding_")] == emb
    for name in emb:
        np.testing.assert_array_equal(gui.column(name).to_numpy(), cli.column(name).to_numpy())
    rec = SessionRecorder()
    rec.set_input(image)
    rec.record_existing_labels("nuclei")
    rec.record_features(channels=None, compartment="Nuclei")
    rec.record_embeddings(paths)
    cfg = rec.to_config(tmp_path / "out")
    assert cfg.steps.names() == ["features", "embeddings"]
    assert cfg.steps.embeddings.model == [str(p) for p in paths]


def test_image_model_embeds_its_own_channel_whatever_is_measured(plate, models, tmp_path):
    """A DAPI model on a (GFP, DAPI) image embeds DAPI, also when only GFP is measured,
    in the features command and in the GUI's measure function alike."""
    from dls_microscopy.io import open_labels, open_volume, write_ome_zarr
    from dls_microscopy.pipeline.interactive import measure_volumes

    well = _well(plate)
    image, lab = open_volume(well), open_labels(well, "nuclei")
    dapi = np.asarray(image.data)
    dapi = dapi if dapi.ndim == 4 else dapi[None]
    gfp = dapi[:, :, ::-1] // 2 + 7  # another stain: a different image
    two = write_ome_zarr(
        np.concatenate([gfp, dapi]), tmp_path / "two.ome.zarr", axes="czyx", spacing=image.spacing,
        channel_names=("GFP", "DAPI"), labels={"nuclei": np.asarray(lab.data)},
    )  # fmt: skip
    model = models["image"][0]
    run_features(well, "nuclei", tmp_path / "one", embeddings=model, device="cpu")
    run_features(two, "nuclei", tmp_path / "gfp", channels=["GFP"], embeddings=model, device="cpu")
    ref = pq.read_table(tmp_path / "one" / "objects.parquet")
    got = pq.read_table(tmp_path / "gfp" / "objects.parquet")
    emb = [n for n in ref.column_names if n.startswith("Embedding_Image_")]
    assert len(emb) == 32
    assert [n for n in got.column_names if "MeanIntensity" in n] == ["Nuclei_Intensity_MeanIntensity_GFP"]
    gui = measure_volumes(
        open_volume(two), open_labels(two, "nuclei"), channels=["GFP"], embedding_models=[model]
    )
    for name in emb:
        np.testing.assert_array_equal(got.column(name).to_numpy(), ref.column(name).to_numpy())
        np.testing.assert_array_equal(gui.column(name).to_numpy(), ref.column(name).to_numpy())


def test_embed_apply_at_a_coarser_level(plate, models, capsys, tmp_path):
    """``embed apply --level 1`` embeds the objects of level 1 of the image and of its labels."""
    from dls_microscopy.io import open_labels, open_volume, write_ome_zarr

    well = _well(plate, 0)
    image, labels = open_volume(well), open_labels(well, "nuclei")
    store = write_ome_zarr(
        np.asarray(image.data), tmp_path / "p.ome.zarr", axes=image.axes, spacing=image.spacing,
        channel_names=image.channel_names, n_levels=2, labels={"nuclei": np.asarray(labels.data)},
    )  # fmt: skip
    out = tmp_path / "l1.parquet"
    code = main(["embed", "apply", str(store), "nuclei", str(models["image"][0]), str(out), "--level", "1",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    coarse = np.asarray(open_labels(store, "nuclei", level=1).data)
    table = pq.read_table(out)
    assert table.column("Metadata_ObjectID").to_pylist() == [int(i) for i in np.unique(coarse) if i]
    meta = json.loads(table.schema.metadata[b"dls_microscopy"])
    assert meta["level"] == 1 and meta["spacing_um"] == list(open_volume(store, level=1).spacing)
