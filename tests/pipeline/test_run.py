"""Pipeline runs: plates, globs, resume, failures, unwritable output, the CLI."""

from __future__ import annotations

import io
import json
import logging
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pipeline_inputs import write_config
from rich.console import Console

from dls_microscopy.cli import main
from dls_microscopy.errors import InputError, ModelNotFoundError, OutputError
from dls_microscopy.pipeline.checks import check_inputs
from dls_microscopy.pipeline.config import load_config
from dls_microscopy.pipeline.fields import discover_fields
from dls_microscopy.pipeline.progress import RunProgress
from dls_microscopy.pipeline.provenance import read_manifest
from dls_microscopy.pipeline.run import run_pipeline
from dls_microscopy.pipeline.verify import verify_manifest

TABLES = ("objects.parquet", "images.parquet", "wells.parquet", "plates.parquet")
KEYS = [f"pipeline-test_A0{w}_{f}" for w in (1, 2) for f in (0, 1)]


def table_bytes(out):
    return {name: (out / name).read_bytes() for name in TABLES}


def test_plate_run_tables_and_files(small_plate, tmp_path):
    cfg = write_config(tmp_path, small_plate)
    summary = run_pipeline(cfg, progress=False)
    out = tmp_path / "out"
    assert summary.ok and summary.count("done") == 4
    assert [f.key for f in summary.fields] == KEYS
    assert set(summary.tables) == {"objects", "images", "wells", "plates"}
    objects = pq.read_table(out / "objects.parquet").to_pandas()
    # plate layout in Metadata_ columns, rows in field order, then object id
    assert set(objects["Metadata_Plate"]) == {"pipeline-test"}
    assert list(dict.fromkeys(objects["Metadata_Well"])) == ["A01", "A02"]
    assert list(dict.fromkeys(objects["Metadata_ImageID"])) == KEYS
    for _, group in objects.groupby("Metadata_ImageID"):
        assert np.all(np.diff(group["Metadata_ObjectID"].to_numpy().astype(np.int64)) > 0)
    assert "Nuclei_Intensity_MeanIntensity_DAPI" in objects.columns or any(
        c.startswith("Nuclei_") and c.endswith("DAPI") for c in objects.columns
    )
    images = pq.read_table(out / "images.parquet").to_pandas()
    assert list(images["Metadata_ImageID"]) == KEYS
    assert images["Count_Nuclei"].tolist() == [f.n_objects for f in summary.fields]
    wells = pq.read_table(out / "wells.parquet").to_pandas()
    assert wells["Metadata_Well"].tolist() == ["A01", "A02"]
    assert wells["Count_Nuclei"].sum() == len(objects)
    assert wells["Metadata_Site_Count"].tolist() == [2, 2]  # the fields each well aggregates
    plates = pq.read_table(out / "plates.parquet").to_pandas()
    assert plates["Count_Nuclei"].tolist() == [len(objects)]
    assert plates["Metadata_Site_Count"].tolist() == [4]
    # run log, resolved config, summary, one committed folder with a manifest per field
    assert "4 done, 0 skipped, 0 failed" in (out / "run.log").read_text()
    resolved = load_config(out / "pipeline.resolved.yaml")
    assert resolved == load_config(cfg)
    assert json.loads((out / "run_summary.json").read_text())["done"] == 4
    for key in KEYS:
        assert (out / "fields" / key / "manifest.json").is_file()
        assert (out / "fields" / key / "labels.ome.zarr").is_dir()
    assert not [p for p in (out / "fields").iterdir() if p.name.startswith(".")]
    # a field folder verifies, and recomputes to the same bytes (labels, meshes, tables, field.json)
    assert main(["verify", str(out / "fields" / KEYS[0])]) == 0
    assert main(["verify", str(out / "fields" / KEYS[0]), "--recompute"]) == 0


def test_resume_skips_committed_and_redoes_deleted(small_plate, tmp_path, monkeypatch):
    cfg = write_config(tmp_path, small_plate)
    out = tmp_path / "out"
    run_pipeline(cfg, progress=False)
    first = table_bytes(out)

    def no_cluster(*args, **kwargs):
        raise AssertionError("workers were started for a run with nothing to compute")

    with monkeypatch.context() as m:  # nothing left: no workers (on a cluster, jobs waited for)
        m.setattr("dls_microscopy.pipeline._local_cluster._local_cluster", no_cluster)
        again = run_pipeline(cfg, progress=False, workers=2)
    assert again.count("skipped") == 4 and again.count("done") == 0
    assert table_bytes(out) == first
    shutil.rmtree(out / "fields" / KEYS[2])
    (out / "fields" / KEYS[1] / "objects.parquet").write_bytes(b"truncated")  # a damaged field
    third = run_pipeline(cfg, progress=False)
    assert {f.key: f.status for f in third.fields} == {
        KEYS[0]: "skipped",
        KEYS[1]: "done",
        KEYS[2]: "done",
        KEYS[3]: "skipped",
    }
    assert table_bytes(out) == first
    forced = run_pipeline(cfg, progress=False, force=True)
    assert forced.count("done") == 4
    assert table_bytes(out) == first


def test_changed_settings_redo_fields(small_plate, tmp_path):
    cfg = write_config(tmp_path, small_plate)
    run_pipeline(cfg, progress=False)
    cfg2 = write_config(
        tmp_path,
        small_plate,
        steps="""\
        segment:
          channel: DAPI
          params: {diameter_um: 6}
        features: {}
    """,
    )
    assert run_pipeline(cfg2, progress=False).count("done") == 4


def test_corrupt_field_fails_with_reason_and_others_complete(plate_copy, tmp_path, capsys):
    level0 = plate_copy / "A" / "02" / "0" / "0"
    chunks = [p for p in level0.rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    for c in chunks:
        c.write_bytes(b"\x00garbage")
    cfg = write_config(tmp_path, plate_copy)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "objects.csv").write_text("stale table of an earlier run")
    assert main(["run", str(cfg), "--no-progress"]) == 3
    assert not (tmp_path / "out" / "objects.csv").exists()
    captured = capsys.readouterr()
    assert "1 field(s) failed" in captured.err
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    status = {f["key"]: f for f in summary["fields"]}
    bad = status["pipeline-test_A02_0"]
    assert bad["status"] == "failed" and bad["reason"]
    assert "A/02/0" in bad["reason"]  # the reason names the corrupt field's file
    assert [f["status"] for k, f in status.items() if k != "pipeline-test_A02_0"] == ["done"] * 3
    images = pq.read_table(tmp_path / "out" / "images.parquet").to_pandas()
    assert "pipeline-test_A02_0" not in set(images["Metadata_ImageID"])
    assert len(images) == 3
    assert not (tmp_path / "out" / "fields" / "pipeline-test_A02_0").exists()
    wells = pq.read_table(tmp_path / "out" / "wells.parquet").to_pandas()
    assert wells["Metadata_Site_Count"].tolist() == [2, 1]  # A02 from its field that ran
    # the run's manifest records the fields its tables hold, and the one that failed
    manifest = read_manifest(tmp_path / "out")
    assert manifest["fields_failed"] == ["pipeline-test_A02_0"] and len(manifest["fields"]) == 3
    assert verify_manifest(tmp_path / "out") == []
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "out")]) == 0  # true to its manifest, which says a field failed
    said = capsys.readouterr().out
    assert "1 field of the run failed and is in no table: pipeline-test_A02_0" in said


def test_unwritable_output_is_a_clear_error(small_plate, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should go")
    cfg = write_config(tmp_path, small_plate, output=str(blocker / "out"))
    with pytest.raises(InputError, match=r"line 4: output\.path: \S+: cannot be made: \S+ is not a folder"):
        run_pipeline(cfg, progress=False)  # found by the checks, before the run writes anything
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert f"output.path: {blocker / 'out'}: cannot be made" in capsys.readouterr().err
    assert blocker.read_text().startswith("a file")


def test_a_second_run_into_the_same_folder_is_refused(small_plate, tmp_path, capsys):
    """A run holds ``.run.lock``; another run into the folder is a clear error, and the lock
    of a run killed with SIGKILL is gone with its process."""
    import fcntl
    import signal
    import subprocess
    import sys

    cfg = write_config(tmp_path, small_plate)
    out = Path(load_config(cfg).output.path)
    out.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; "
            "from dls_microscopy.pipeline.run import _run_lock\n"
            "with _run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)"
        ), str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # the holder's files being written, as a run on another login node names them: its process
    # number means nothing here (a refused run removed them, and the holder's rename failed)
    writing = [out / ".run_summary.json.999999999.tmp", out / ".objects.parquet.partial-1-ab12@node2"]
    try:
        assert holder.stdout.readline().strip() == "locked"
        for f in writing:
            f.write_text("being written")
        busy = rf"another run is writing into this folder \(process {holder.pid} on {socket.gethostname()}\)"
        with pytest.raises(OutputError, match=busy):
            run_pipeline(cfg, progress=False)
        assert main(["run", str(cfg), "--no-progress"]) == 2
        assert "another run is writing" in capsys.readouterr().err
        assert not any((out / "fields").glob("*")) and not (out / "objects.parquet").exists()
        assert all(f.exists() for f in writing)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    summary = run_pipeline(cfg, progress=False)  # the killed holder's lock went with it
    assert summary.ok and summary.count("done") == len(KEYS)
    assert not any(f.exists() for f in writing)  # left by a killed run: removed under the lock
    with open(out / ".run.lock") as fh:  # released at the end of the run
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_glob_of_images_and_mesh_step(tmp_path):
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    for i in range(2):
        s = make_synthetic_nuclei((16, 40, 40), seed=10 + i)
        write_ome_zarr(
            s.image,
            tmp_path / "imgs" / f"img{i}.ome.zarr",
            axes="czyx",
            spacing=s.spacing,
            channel_names=s.channel_names,
        )
    cfg = write_config(
        tmp_path,
        "imgs/*.ome.zarr",
        steps="""\
        segment:
          channel: DAPI
          params: {diameter_um: 7}
        mesh:
          smooth: 0
          descriptors: true
    """,
        extra="seed: 3\n",
    )
    summary = run_pipeline(cfg, progress=False)
    assert [f.key for f in summary.fields] == ["img0.ome.zarr", "img1.ome.zarr"]
    assert set(summary.tables) == {"objects", "images"}  # no wells outside plates
    table = pq.read_table(tmp_path / "out" / "objects.parquet")
    objects = table.to_pandas()
    # named and with units as `dls-microscopy features --meshes` does
    assert table.schema.field("Nuclei_AreaShape_MeshVolume").metadata[b"unit"] == "µm³".encode()
    assert (objects["Nuclei_AreaShape_MeshVolume"] > 0).all()
    assert objects["Metadata_MeshWatertight"].all()
    assert len(objects) == sum(f.n_objects for f in summary.fields)
    assert (tmp_path / "out" / "fields" / "img0.ome.zarr" / "meshes" / "meshes.glb").is_file()
    # the mesh index names the labels where they are now, not the field's temporary folder:
    # relative to the meshes folder, so that the field folder can be moved or recomputed
    meshes = tmp_path / "out" / "fields" / "img0.ome.zarr" / "meshes"
    index = json.loads((meshes / "meshes.json").read_text())
    assert index["source"] == "../labels.ome.zarr"
    assert (meshes / index["source"]).resolve() == (meshes.parent / "labels.ome.zarr").resolve()


def test_csv_tables(small_plate, tmp_path):
    cfg = write_config(tmp_path, small_plate, extra="")
    text = cfg.read_text().replace("  path: out\n", "  path: out\n  table_format: csv\n")
    cfg.write_text(text)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    summary = run_pipeline(cfg, progress=RunProgress(console))
    drawn = console.file.getvalue()
    assert "fields" in drawn and "4/4" in drawn and "ETA" in drawn
    assert sorted(p.name for p in summary.tables.values()) == [
        "images.csv",
        "objects.csv",
        "plates.csv",
        "wells.csv",
    ]
    assert verify_manifest(tmp_path / "out") == []  # the run's manifest covers CSV tables too


def test_ngff_04_plate_fixture_fields(shared_data, tmp_path):
    src = shared_data / "ome_zarr_models_py_fixtures/tests/data/examples/v04/hcs_example.ome.zarr"
    plate = tmp_path / "hcs.ome.zarr"
    shutil.copytree(src, plate)
    fields = discover_fields(str(plate))
    assert fields, "the fixture has fields"
    assert {f.well for f in fields} == {"B03"}
    assert [f.site for f in fields] == list(range(len(fields)))
    # channels the plate does not have: refused before any field
    with pytest.raises(InputError, match=r"steps\.features\.channels: \S+: no channel named 'LaminB1'"):
        run_pipeline(write_config(tmp_path, plate), progress=False)
    # metadata only (no chunks): every field fails with its reason, the run still completes
    steps = "segment: {params: {diameter_um: 7}}\nfeatures: {}\n"
    cfg = write_config(tmp_path, plate, steps=steps)
    summary = run_pipeline(cfg, progress=False)
    assert summary.count("failed") == len(fields)
    assert all(f.reason for f in summary.failed)
    assert summary.tables == {}


def test_bad_inputs_before_any_field(tmp_path, small_plate):
    with pytest.raises(InputError, match="does not exist"):
        run_pipeline(write_config(tmp_path, tmp_path / "absent.ome.zarr"), progress=False)
    with pytest.raises(InputError, match="no file matches"):
        run_pipeline(write_config(tmp_path, tmp_path / "*.tif"), progress=False)
    emb = write_config(tmp_path, small_plate, extra="")
    emb.write_text(emb.read_text().replace("steps:\n", "steps:\n  embeddings:\n    model: m.pt\n"))
    with pytest.raises(ModelNotFoundError, match=r"m\.pt"):
        run_pipeline(emb, progress=False)
    for steps, key in (
        ("segment: {channel: DAPl}\n", r"line 6: steps.segment.channel: \S+: no channel named 'DAPl'"),
        (
            "segment: {channel: DAPI}\nfeatures: {channels: [DAPI, 7]}\n",
            r"steps.features.channels: \S+: channel 7 out of range \(0..1\)",
        ),
    ):
        cfg = write_config(tmp_path, small_plate, steps=steps)
        with pytest.raises(InputError, match=key):
            run_pipeline(cfg, progress=False)
        assert main(["run", str(cfg), "--no-progress"]) == 2
    # a level or label image the data does not have: refused before any field, and by 'config validate'
    for steps, input_key, key in (
        (
            "segment: {channel: DAPI}\n",
            "level: 3",
            r"line 3: input.level: \S+: resolution level 3 does not exist",
        ),
        (
            "features: {}\n",
            "labels: cells",
            r"line 3: input.labels: \S+: no label image 'cells' \(available: truth\)",
        ),
    ):
        cfg = write_config(tmp_path, small_plate, steps=steps)
        cfg.write_text(cfg.read_text().replace("\noutput:", f"\n  {input_key}\noutput:"))
        with pytest.raises(InputError, match=key):
            run_pipeline(cfg, progress=False)
        assert main(["run", str(cfg), "--no-progress"]) == 2
        assert main(["config", "validate", str(cfg)]) == 2
        assert main(["config", "validate", str(cfg), "--no-inputs"]) == 0
    assert not (tmp_path / "out").exists()
    # the configuration that runs validates with its inputs, and says how many fields it found
    good = write_config(tmp_path, small_plate, steps="features: {}\n", extra="")
    good.write_text(good.read_text().replace("\noutput:", "\n  labels: truth\noutput:"))
    assert check_inputs(load_config(good))


def test_cli_config_commands(tmp_path, capsys):
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "DLS Microscopy pipeline configuration"
    bad = tmp_path / "bad.yaml"
    bad.write_text("input:\n  path: x\n  colour: red\noutput:\n  path: y\nsteps:\n  segment: {}\n")
    assert main(["config", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "input.colour" in err and "unknown key" in err
    good = write_config(tmp_path, "x.ome.zarr")
    assert main(["config", "validate", str(good), "--resolved", "--no-inputs"]) == 0  # x.ome.zarr is absent
    assert "memory_budget: 256MB" in capsys.readouterr().out


def test_changed_input_redoes_its_field(plate_copy, tmp_path):
    cfg = write_config(tmp_path, plate_copy)
    run_pipeline(cfg, progress=False)
    extra = plate_copy / "A" / "01" / "1" / "0" / "c" / "extra"
    extra.write_bytes(b"x")  # the field's store changed (one file more)
    summary = run_pipeline(cfg, progress=False)
    assert {f.key: f.status for f in summary.fields}[KEYS[1]] == "done"
    assert summary.count("skipped") == 3


def test_input_edited_in_place_with_the_same_size_redoes_its_field(plate_copy, tmp_path):
    import os
    import time

    cfg = write_config(tmp_path, plate_copy)
    run_pipeline(cfg, progress=False)
    chunk = next(f for f in sorted((plate_copy / "A" / "02" / "0" / "0").rglob("*")) if f.is_file())
    # rewritten in place (here with its own bytes, so that the rerun can read it): same
    # size, same file count; only the modification time tells
    st = chunk.stat()
    chunk.write_bytes(chunk.read_bytes())
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    summary = run_pipeline(cfg, progress=False)
    assert {f.key: f.status for f in summary.fields}[KEYS[2]] == "done"
    assert summary.count("skipped") == 3
    # the same with the modification time put back (cp -p, rsync -t, touch -r): the change time tells
    st = chunk.stat()
    time.sleep(0.01)
    chunk.write_bytes(chunk.read_bytes())
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    summary = run_pipeline(cfg, progress=False)
    assert {f.key: f.status for f in summary.fields}[KEYS[2]] == "done"
    assert summary.count("skipped") == 3


def test_a_label_image_edited_in_place_with_the_same_size_redoes_its_field(plate_copy, tmp_path):
    import os

    cfg = write_config(tmp_path, plate_copy, steps="features: {compartment: Truth}\n")
    cfg.write_text(cfg.read_text().replace("input:\n", "input:\n  labels: truth\n"))
    run_pipeline(cfg, progress=False)
    truth = plate_copy / "A" / "02" / "0" / "labels" / "truth" / "0"
    chunk = next(f for f in sorted(truth.rglob("*")) if f.is_file() and f.name != "zarr.json")
    # relabelled in place (here with its own bytes): same size, same file count; the label
    # image's change time was not recorded, and the field kept the old labels' features
    st = chunk.stat()
    chunk.write_bytes(chunk.read_bytes())
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    summary = run_pipeline(cfg, progress=False)
    assert {f.key: f.status for f in summary.fields}[KEYS[2]] == "done"
    assert summary.count("skipped") == 3


def test_another_input_with_the_same_fields_redoes_them(small_plate, plate_copy, tmp_path):
    # plate_copy: another plate of the same name and layout, so its fields have the same keys;
    # input.path is not in the settings digest, and every field of the old plate was kept
    cfg = write_config(tmp_path, small_plate)
    run_pipeline(cfg, progress=False)
    cfg = write_config(tmp_path, plate_copy)
    summary = run_pipeline(cfg, progress=False)
    assert summary.count("done") == 4 and summary.count("skipped") == 0
    manifest = read_manifest(tmp_path / "out" / "fields" / KEYS[0])
    assert manifest["inputs"]["image"]["path"] == str(plate_copy / "A" / "01" / "0")
    assert run_pipeline(cfg, progress=False).count("skipped") == 4  # and kept from then on


def test_the_same_input_through_a_symbolic_link_keeps_its_fields(plate_copy, tmp_path):
    # the check that a field was made from the run's input compares paths with links resolved
    cfg = write_config(tmp_path, plate_copy)
    run_pipeline(cfg, progress=False)
    link = tmp_path / "link.ome.zarr"
    link.symlink_to(plate_copy, target_is_directory=True)
    assert run_pipeline(write_config(tmp_path, link), progress=False).count("skipped") == 4


def test_a_run_into_a_folder_with_another_inputs_fields_warns(small_plate, tmp_path, caplog):
    """The old plate's fields stayed beside the new input's, in no table: the run said nothing
    (exit 0), and only verify, afterwards, reported every one of them."""
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    run_pipeline(write_config(tmp_path, small_plate), progress=False)
    s = make_synthetic_nuclei((16, 40, 40), seed=3)
    image = write_ome_zarr(
        s.image, tmp_path / "one.ome.zarr", axes="czyx", spacing=s.spacing, channel_names=s.channel_names
    )
    cfg = write_config(tmp_path, image)
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        summary = run_pipeline(cfg, progress=False)
    assert summary.ok and summary.count("done") == 1
    warned = [r.getMessage() for r in caplog.records if "not fields of this run" in r.getMessage()]
    assert len(warned) == 1 and "4 field folder(s)" in warned[0] and KEYS[0] in warned[0]
    assert all((tmp_path / "out" / "fields" / k).is_dir() for k in KEYS)  # nothing removed
    assert "not fields of this run" in (tmp_path / "out" / "run.log").read_text()


def test_embeddings_step(small_plate, tmp_path):
    from dls_microscopy.features.embeddings import TrainingSample, train_embedding_model
    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((16, 40, 40), seed=21)
    sample = TrainingSample(s.image[:1], s.labels, s.spacing, ("DAPI",))
    model = tmp_path / "image.pt"
    train_embedding_model([sample], "image", model, seed=1, epochs=1, batch_size=8, device="cpu", threads=1)
    cfg = write_config(
        tmp_path,
        small_plate,
        steps=f"""\
        segment:
          channel: DAPI
          params: {{diameter_um: 7}}
        features: {{}}
        embeddings:
          model: {model}
    """,
    )
    cfg.write_text(
        cfg.read_text().replace("  path: " + str(small_plate), f"  path: {small_plate}\n  channels: [DAPI]")
    )
    summary = run_pipeline(cfg, progress=False)
    assert summary.ok, summary.failed
    objects = pq.read_table(tmp_path / "out" / "objects.parquet").to_pandas()
    emb = [c for c in objects.columns if c.startswith("Embedding_Image_")]
    assert emb and objects.columns[-1] == emb[-1]  # embeddings come last
    assert np.isfinite(objects[emb].to_numpy()).all()
    manifest = json.loads((tmp_path / "out" / "fields" / KEYS[0] / "manifest.json").read_text())
    assert manifest["models"] and manifest["models"][0]["sha256"]
    # without input.channels (DAPI and LaminB1) the DAPI model still embeds DAPI, by name
    both = tmp_path / "both"
    both.mkdir()
    cfg_both = both / "pipeline.yaml"
    cfg_both.write_text(cfg.read_text().replace("\n  channels: [DAPI]", ""))  # output: both/out
    summary = run_pipeline(cfg_both, progress=False)
    assert summary.ok, summary.failed
    again = pq.read_table(both / "out" / "objects.parquet").to_pandas()
    assert "Nuclei_Intensity_MeanIntensity_LaminB1" in again.columns
    np.testing.assert_array_equal(again[emb].to_numpy(), objects[emb].to_numpy())
    # a model retrained into the same file: verify names it, and a rerun redoes every field
    # (resuming kept the committed fields: two encoders' columns in one table, and verify passed)
    assert verify_manifest(tmp_path / "out") == []
    train_embedding_model(
        [sample], "image", model, seed=2, epochs=1, batch_size=8, device="cpu", threads=1, overwrite=True
    )
    found = [str(m) for m in verify_manifest(tmp_path / "out")]
    assert found and all(f"model image.pt ({model}): sha256 was" in m for m in found), found
    assert any(m.startswith(f"fields/{KEYS[0]}: ") for m in found)
    redone = run_pipeline(cfg, progress=False)
    assert redone.ok and redone.count("done") == len(KEYS), redone
    assert verify_manifest(tmp_path / "out") == []
    run_models = json.loads((tmp_path / "out" / "manifest.json").read_text())["models"]
    assert [m["path"] for m in run_models] == [str(model)]


def test_a_segmentation_model_retrained_into_the_same_file_redoes_the_fields(small_plate, tmp_path):
    """steps.segment.model: the file was in no manifest, so a rerun kept every field segmented
    with the old weights, and verify passed."""
    from dls_microscopy.segment.base import segmenters
    from local_segmenter import ThresholdParams, ThresholdSegmenter

    class FileParams(ThresholdParams):
        model_path: str | None = None

    class FileSegmenter(ThresholdSegmenter):
        """The threshold segmenter, its threshold read from a "weights" file."""

        name = "test-threshold-file"
        Params = FileParams

        def global_stats(self, image, *, spacing):
            return {"threshold": float(Path(self.params.model_path).read_text())}

    segmenters().register(FileSegmenter.name, lambda: FileSegmenter)
    model = tmp_path / "weights.txt"
    model.write_text("1000")
    cfg = write_config(
        tmp_path,
        small_plate,
        steps=f"""\
        segment:
          method: {FileSegmenter.name}
          model: {model}
        features: {{}}
    """,
    )
    assert run_pipeline(cfg, progress=False).count("done") == 4
    entry = read_manifest(tmp_path / "out" / "fields" / KEYS[0])["models"][0]
    assert entry["path"] == str(model) and entry["step"] == "segment"
    assert run_pipeline(cfg, progress=False).count("skipped") == 4
    model.write_text("2000")  # retrained into the same file
    found = [str(m) for m in verify_manifest(tmp_path / "out")]
    assert found and all(f"model weights.txt ({model}): sha256 was" in m for m in found), found
    assert run_pipeline(cfg, progress=False).count("done") == 4
    assert verify_manifest(tmp_path / "out") == []


def test_existing_labels_without_segment_step(small_plate, tmp_path):
    from dls_microscopy.io import open_labels

    cfg = write_config(tmp_path, small_plate, steps="features: {compartment: Truth}\n")
    cfg.write_text(cfg.read_text().replace("input:\n", "input:\n  labels: truth\n"))
    summary = run_pipeline(cfg, progress=False)
    assert summary.ok
    truth = [
        len(np.unique(open_labels(small_plate / "A" / w / f, "truth").data.compute())) - 1
        for w in ("01", "02")
        for f in ("0", "1")
    ]
    assert [f.n_objects for f in summary.fields] == truth
    images = pq.read_table(tmp_path / "out" / "images.parquet").to_pandas()
    assert images["Count_Truth"].tolist() == truth
    assert not (tmp_path / "out" / "fields" / KEYS[0] / "labels.ome.zarr").exists()


def test_existing_labels_are_meshed_at_the_level_the_features_measure(tmp_path):
    """input.labels with input.level 1: the mesh step meshed level 0 while the features measured level 1."""
    from dls_microscopy.geometry import mesh_objects
    from dls_microscopy.io import open_labels, write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((16, 48, 48), seed=3)
    source = write_ome_zarr(
        s.image, tmp_path / "img.ome.zarr", spacing=s.spacing, channel_names=s.channel_names,
        labels={"truth": s.labels}, n_levels=2,
    )  # fmt: skip
    level1 = open_labels(source, "truth", level=1)
    assert level1.spacing != open_labels(source, "truth").spacing  # a coarser level in the store
    steps = "mesh: {smooth: 0, descriptors: true}\nfeatures: {compartment: Truth}\n"
    cfg = write_config(tmp_path, source, steps=steps)
    cfg.write_text(cfg.read_text().replace("input:\n", "input:\n  labels: truth\n  level: 1\n"))
    summary = run_pipeline(cfg, progress=False)
    assert summary.ok, summary
    field = tmp_path / "out" / "fields" / "img.ome.zarr"
    index = json.loads((field / "meshes" / "meshes.json").read_text())
    # meshed at level 1's voxel size, and the index records the level meshed
    assert index["spacing_um"] == dict(zip("zyx", level1.spacing, strict=True))
    assert index["level"] == 1 and index["label_name"] == "truth"
    # the meshes are those of level 1, in µm at its voxel size: the objects the features measured
    expected = {m.id: m for m in mesh_objects(level1)}
    objects = pq.read_table(tmp_path / "out" / "objects.parquet").to_pandas()
    assert sorted(objects["Metadata_ObjectID"]) == sorted(expected)
    for _, row in objects.iterrows():
        mesh = expected[row["Metadata_ObjectID"]]
        assert row["Metadata_MeshNFaces"] == mesh.n_faces
        assert row["Truth_AreaShape_MeshVolume"] == pytest.approx(mesh.volume_um3, rel=1e-9)
    # the field's manifest records the level its features and meshes used
    manifest = read_manifest(field)
    assert manifest["parameters"]["config"]["input"]["level"] == 1
    assert verify_manifest(field) == []


def test_time_series_runs_one_field_per_time_point(tmp_path):
    """A TCZYX image: every time point is a field of its own, equal to segmenting that point alone."""
    from dls_microscopy.io import open_volume, write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    points = [make_synthetic_nuclei((16, 48, 48), seed=20 + t) for t in range(3)]
    movie = np.stack([s.image for s in points])  # (T, C, Z, Y, X)
    s = points[0]
    source = write_ome_zarr(
        movie, tmp_path / "movie.ome.zarr", axes="tczyx", spacing=s.spacing, channel_names=s.channel_names
    )
    fields = discover_fields(str(source))
    assert [(f.key, f.image_id, f.time_point) for f in fields] == [
        (f"movie.ome.zarr_t{t}", f"movie.ome.zarr_t{t}", t) for t in range(3)
    ]
    cfg = write_config(tmp_path, source)
    summary = run_pipeline(cfg, progress=False)
    assert summary.ok and [f.key for f in summary.fields] == [f.key for f in fields]
    objects = pq.read_table(tmp_path / "out" / "objects.parquet").to_pandas()
    assert sorted(objects["Metadata_ImageID"].unique()) == [f.image_id for f in fields]
    assert sorted(objects["Metadata_TimePoint"].unique()) == [0, 1, 2]
    assert set(summary.tables) == {"objects", "images"}  # no wells outside plates, time series or not
    field_dir = tmp_path / "out" / "fields" / "movie.ome.zarr_t2"
    assert json.loads((field_dir / "field.json").read_text())["time_point"] == 2
    # time point 2 as its own field = that time point segmented on its own (same settings)
    seg = get_segmenter("watershed", {"diameter_um": 7}, device="cpu")
    alone = segment_blockwise(
        open_volume(source), seg, channel="DAPI", time_point=2, output=tmp_path / "t2.ome.zarr",
        memory_budget=256 * 2**20,
    )  # fmt: skip
    n2 = next(f.n_objects for f in summary.fields if f.key.endswith("_t2"))
    assert n2 == alone.n_objects == int((objects["Metadata_ImageID"] == "movie.ome.zarr_t2").sum())
    np.testing.assert_array_equal(
        open_volume(field_dir / "labels.ome.zarr").load() > 0, open_volume(alone.path).load() > 0
    )


def test_discovery_leaves_the_readers_warnings_to_the_field(tmp_path, caplog):
    """Discovery opens each image for its time axis; a reader's warning is logged when the field runs."""
    import logging

    import tifffile

    from dls_microscopy.io import open_volume

    path = tmp_path / "uncalibrated.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5, 8, 8), np.uint16), metadata={"axes": "TZCYX"})
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        fields = discover_fields(str(path))
    assert [f.time_point for f in fields] == [0, 1, 2]
    assert not [r for r in caplog.records if "1 µm" in r.getMessage()]
    assert logging.getLogger("dls_microscopy.io").level == logging.NOTSET  # restored
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        open_volume(path)
    assert len([r for r in caplog.records if "1 µm" in r.getMessage()]) == 1


def test_time_series_plate_aggregates_wells_and_plates_per_time_point(tmp_path):
    """Metadata_TimePoint in every table of a time-series plate; wells and plates per time point."""
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.sample_data.plate import write_synthetic_plate

    plate = write_synthetic_plate(tmp_path / "movie.ome.zarr", rows=("A",), columns=("01", "02"), fields=1,
                                  shape=(12, 40, 40), name="movie")  # fmt: skip
    for w, col in enumerate(("01", "02")):  # each field becomes a 2-point time series
        points = [make_synthetic_nuclei((12, 40, 40), seed=50 + 2 * w + t) for t in range(2)]
        write_ome_zarr(np.stack([p.image for p in points]), plate / "A" / col / "0", axes="tczyx",
                       spacing=points[0].spacing, channel_names=points[0].channel_names, n_levels=1,
                       overwrite=True)  # fmt: skip
    summary = run_pipeline(write_config(tmp_path, plate), progress=False)
    assert summary.ok and len(summary.fields) == 4
    n = {(f.key.split("_")[1], int(f.key[-1])): f.n_objects for f in summary.fields}
    out = tmp_path / "out"
    objects = pq.read_table(out / "objects.parquet")
    assert objects.column_names[:6] == [
        "Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_TimePoint", "Metadata_ImageID",
        "Metadata_ObjectID",
    ]  # fmt: skip
    images = pq.read_table(out / "images.parquet").to_pandas()
    assert sorted(zip(images["Metadata_Well"], images["Metadata_TimePoint"], strict=True)) == sorted(n)
    wells = pq.read_table(out / "wells.parquet").to_pandas()
    got = {(r.Metadata_Well, r.Metadata_TimePoint): r.Count_Nuclei for r in wells.itertuples()}
    assert got == n  # one row per well and time point, not the time points summed
    assert wells["Metadata_Site_Count"].tolist() == [1] * 4  # one field per well and time point
    plates = pq.read_table(out / "plates.parquet").to_pandas()
    assert dict(zip(plates["Metadata_TimePoint"], plates["Count_Nuclei"], strict=True)) == {
        t: n[("A01", t)] + n[("A02", t)] for t in (0, 1)
    }
    assert plates["Metadata_Site_Count"].tolist() == [2, 2]


def test_an_interrupted_run_says_so_in_its_log_and_resumes(small_plate, tmp_path, capsys, monkeypatch):
    from dls_microscopy.pipeline.progress import NoProgress

    class CtrlC(NoProgress):
        def field_done(self, key: str, status: str) -> None:
            raise KeyboardInterrupt

    cfg = write_config(tmp_path, small_plate)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=CtrlC())
    assert "run interrupted: committed fields are kept" in (tmp_path / "out" / "run.log").read_text()
    again = run_pipeline(cfg, progress=False)
    assert again.ok and again.count("skipped") >= 1
    # the command line: exit 130 and one word, not silence
    import dls_microscopy.pipeline.run as run_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "run_pipeline", interrupted)
    assert main(["run", str(cfg), "--no-progress"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_run_log_has_the_fields_python_warnings_and_why_a_run_stopped(small_plate, tmp_path, monkeypatch):
    """On local threads too, a field's Python warning is in run.log; so is the error that ends a run."""
    import warnings

    import dls_microscopy.pipeline.run as run_module
    from dls_microscopy.errors import ClusterError
    from dls_microscopy.pipeline.progress import NoProgress

    real_run_field = run_module.run_field

    def warning_field(spec, *args, **kwargs):
        warnings.warn(f"odd pixels in {spec.key}", UserWarning, stacklevel=1)
        return real_run_field(spec, *args, **kwargs)

    class WorkersGone(NoProgress):
        def field_done(self, key: str, status: str) -> None:
            raise ClusterError("all Dask workers are gone")

    monkeypatch.setattr(run_module, "run_field", warning_field)
    cfg = write_config(tmp_path, small_plate)
    with pytest.raises(ClusterError):
        run_pipeline(cfg, progress=WorkersGone())
    text = (tmp_path / "out" / "run.log").read_text()
    assert "WARNING py.warnings:" in text and "UserWarning: odd pixels in pipeline-test_A01_0" in text
    assert "ERROR dls_microscopy.pipeline.run: run stopped: all Dask workers are gone" in text
    assert "Traceback" not in text  # our errors say what happened; an internal one has its traceback
    assert logging.getLogger("py.warnings").handlers == []  # the run put logging back as it was


def test_a_field_with_meshes_recomputes_to_the_same_bytes(small_plate, tmp_path):
    # the mesh index recorded the field folder's absolute path, which a recompute (built in a
    # scratch folder) can never match
    steps = "segment: {channel: DAPI, params: {diameter_um: 7}}\nmesh: {smooth: 0}\nfeatures: {}\n"
    cfg = write_config(tmp_path, small_plate, steps=steps)
    assert run_pipeline(cfg, progress=False).ok
    field = tmp_path / "out" / "fields" / KEYS[0]
    index = json.loads((field / "meshes" / "meshes.json").read_text())
    assert index["source"] == "../labels.ome.zarr" and (field / "meshes" / index["source"]).is_dir()
    assert main(["verify", str(field), "--recompute"]) == 0


def test_recompute_does_not_depend_on_the_inputs_file_times(plate_copy, tmp_path):
    """A chmod, copy or restore of unchanged inputs: verify --recompute said field.json changed."""
    import os

    cfg = write_config(tmp_path, plate_copy)
    assert run_pipeline(cfg, progress=False).ok
    for f in plate_copy.rglob("*"):
        if f.is_file():
            os.chmod(f, f.stat().st_mode)  # same mode: only the inode's change time moves
    field = tmp_path / "out" / "fields" / KEYS[0]
    assert verify_manifest(field, recompute=True) == []
    # resuming still treats the touched input as possibly edited: the field is redone
    assert run_pipeline(cfg, progress=False).count("done") == len(KEYS)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_ends_a_run_as_ctrl_c_does(small_plate, tmp_path):
    # a batch system ends a driver job with SIGTERM: it ended the process in silence, with
    # nothing in the log and queued worker jobs left behind
    import signal
    import subprocess
    import time

    cfg = write_config(tmp_path, small_plate)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dls_microscopy.cli", "run", str(cfg), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_file = tmp_path / "out" / "run.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log_file.exists() and "fields to do" in log_file.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr
    assert "run interrupted: committed fields are kept" in log_file.read_text()


def test_features_on_a_plate_root_measure_its_first_field_with_its_labels(small_plate, tmp_path):
    # the image opened was the first field, the labels were looked up at the plate root
    out = tmp_path / "features"
    assert main(["features", str(small_plate), "truth", str(out)]) == 0
    objects = pq.read_table(out / "objects.parquet").to_pandas()
    assert len(objects) > 0
