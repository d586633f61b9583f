"""A run folder's manifest: the run's tables and the fields they come from, and ``verify RUN``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pipeline_inputs import write_config

from dls_microscopy.cli import main
from dls_microscopy.errors import InputError
from dls_microscopy.pipeline import collect
from dls_microscopy.pipeline.provenance import (
    MANIFEST_NAME,
    RUN_COMMAND,
    digest_file,
    read_manifest,
    save_manifest,
)
from dls_microscopy.pipeline.run import run_pipeline
from dls_microscopy.pipeline.verify import verify_manifest

KEYS = [f"pipeline-test_A0{w}_{f}" for w in (1, 2) for f in (0, 1)]
TABLES = ["objects.parquet", "images.parquet", "wells.parquet", "plates.parquet"]


@pytest.fixture(scope="module")
def finished_run(small_plate, tmp_path_factory):
    """A complete run of the small plate (segment + features), kept read-only: tests copy it."""
    root = tmp_path_factory.mktemp("run")
    assert run_pipeline(write_config(root, small_plate), progress=False).ok
    return root / "out"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    return out


def _flip(path, at=100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_run_manifest_records_its_tables_and_fields(finished_run, capsys):
    manifest = read_manifest(finished_run)
    assert manifest["command"] == RUN_COMMAND
    assert [o["path"] for o in manifest["outputs"]] == [*TABLES, "pipeline.resolved.yaml"]
    for o in manifest["outputs"]:
        assert o["sha256"] == digest_file(finished_run / o["path"])
    assert [f["path"] for f in manifest["fields"]] == [f"fields/{k}" for k in KEYS]  # row order
    for f in manifest["fields"]:
        assert f["sha256_manifest"] == digest_file(finished_run / f["path"] / MANIFEST_NAME)
    assert manifest["fields_failed"] == []
    assert manifest["parameters"]["table_format"] == "parquet"
    assert manifest["parameters"]["config"]["steps"]["segment"]["params"] == {"diameter_um": 7}
    assert "pyarrow" in manifest["software"]["packages"]
    assert verify_manifest(finished_run) == []
    assert main(["verify", str(finished_run)]) == 0
    assert "the run's 4 tables and its 4 fields match their manifests" in capsys.readouterr().out


def test_a_changed_byte_in_a_run_table_is_reported(run_copy, capsys):
    _flip(run_copy / "wells.parquet")
    found = verify_manifest(run_copy)
    assert [(m.folder, m.kind, m.item, m.field) for m in found] == [("", "output", "wells.parquet", "sha256")]
    assert main(["verify", str(run_copy)]) == 1
    assert "output wells.parquet: sha256 was" in capsys.readouterr().out
    (run_copy / "objects.csv").write_text("a table no run wrote")
    (run_copy / "images.parquet").unlink()
    found = {(m.folder, m.item, m.field, m.actual) for m in verify_manifest(run_copy)}
    assert ("", "objects.csv", "exists", True) in found
    assert ("", "images.parquet", "exists", False) in found


def test_the_resolved_config_and_stray_files_of_a_run_folder_are_checked(run_copy):
    """An edited pipeline.resolved.yaml and a stray file at the run's root passed verify."""
    resolved = run_copy / "pipeline.resolved.yaml"
    resolved.write_text(resolved.read_text() + "# seed: 42\n")
    (run_copy / "notes.txt").write_text("added by hand")
    (run_copy / "run_summary.json").write_text("{}")  # a report: not covered
    found = {(m.item, m.field) for m in verify_manifest(run_copy)}
    assert found == {
        ("pipeline.resolved.yaml", "sha256"),
        ("pipeline.resolved.yaml", "size"),
        ("notes.txt", "exists"),
    }


def test_a_run_killed_while_writing_its_summary_still_verifies(run_copy, small_plate, monkeypatch):
    """Killed after its manifest, while writing run_summary.json: the tables and manifest are
    complete, but verify reported the summary's temporary file (``exists was False, now True``)."""
    from dls_microscopy.pipeline import run

    cfg = write_config(run_copy.parent, small_plate)
    real = run._write_text

    def killed_writing_the_summary(path, text):
        if path.name == run.SUMMARY_FILE:  # as SIGKILL leaves it: written, never renamed
            path.with_name(f".{path.name}.999999999.tmp").write_text(text[:10], encoding="utf-8")
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(run, "_write_text", killed_writing_the_summary)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, force=True, progress=False)
    assert (run_copy / ".run_summary.json.999999999.tmp").is_file()
    (run_copy / ".objects.parquet.partial-1-abcd1234@another-node").write_bytes(b"PAR1")  # a table's
    (run_copy / run.WRITE_TEST.format(pid=999999999)).write_bytes(b"ok")  # the write test's, killed
    assert verify_manifest(run_copy) == []
    (run_copy / ".notes").write_text("a hidden file that is not a run's temporary")
    assert [(m.item, m.field) for m in verify_manifest(run_copy)] == [(".notes", "exists")]


def test_a_changed_field_is_reported_per_field(run_copy, capsys):
    field = run_copy / "fields" / KEYS[2]
    _flip(field / "objects.parquet", at=200)
    found = verify_manifest(run_copy)
    assert [(m.folder, m.kind, m.item, m.field) for m in found] == [
        (f"fields/{KEYS[2]}", "output", "objects.parquet", "sha256")
    ]
    assert main(["verify", str(run_copy), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["folder"] == f"fields/{KEYS[2]}"
    assert main(["verify", str(run_copy)]) == 1
    assert f"fields/{KEYS[2]}: output objects.parquet: sha256" in capsys.readouterr().out


def test_a_field_redone_after_the_tables_is_reported(run_copy):
    """A field whose own manifest is sound but is not the one the run's tables were built from."""
    field = run_copy / "fields" / KEYS[1]
    manifest = read_manifest(field)
    manifest["timings_s"]["open"] += 1.0
    save_manifest(field, manifest)
    assert verify_manifest(field) == []
    found = [(m.folder, m.kind, m.item, m.field) for m in verify_manifest(run_copy)]
    assert found == [("", "field", f"fields/{KEYS[1]}/{MANIFEST_NAME}", "sha256")]
    # a field folder gone, one that no table holds, an unreadable field manifest
    shutil.rmtree(run_copy / "fields" / KEYS[3])
    shutil.copytree(run_copy / "fields" / KEYS[0], run_copy / "fields" / "pipeline-test_B01_0")
    (run_copy / "fields" / KEYS[0] / MANIFEST_NAME).write_text("{not json")
    found = {(m.folder, m.kind, m.item, m.field) for m in verify_manifest(run_copy)}
    assert ("", "field", f"fields/{KEYS[3]}", "exists") in found
    assert ("", "field", "fields/pipeline-test_B01_0", "in the run's tables") in found
    (foreign,) = [m for m in verify_manifest(run_copy) if m.item == "fields/pipeline-test_B01_0"]
    # it read "in the run's tables was False, now True" (QA)
    assert str(foreign).startswith(
        "field fields/pipeline-test_B01_0: a field folder in none of the run's tables"
    )
    assert (f"fields/{KEYS[0]}", "manifest", MANIFEST_NAME, "readable") in found


def test_recompute_rebuilds_the_run_tables_from_the_fields(run_copy, monkeypatch):
    assert verify_manifest(run_copy, recompute=True) == []
    # tables that the fields do not give, with a manifest that records them (edited to match)
    _flip(run_copy / "plates.parquet")
    manifest = read_manifest(run_copy)
    for o in manifest["outputs"]:
        if o["path"] == "plates.parquet":
            o["sha256"] = digest_file(run_copy / "plates.parquet")
    save_manifest(run_copy, manifest)
    monkeypatch.setattr(  # the fields were checked above: rebuild only the run's tables
        "dls_microscopy.pipeline.run_manifest.verify_folder", lambda *a, **k: []
    )
    assert verify_manifest(run_copy) == []
    found = [(m.kind, m.item, m.field) for m in verify_manifest(run_copy, recompute=True)]
    assert found == [("recompute", "plates.parquet", "sha256")]


def test_a_run_stopped_while_writing_its_tables_leaves_no_manifest_then_resumes(
    run_copy, small_plate, monkeypatch
):
    cfg = write_config(run_copy.parent, small_plate)  # the copy's own run: its fields are committed
    before = read_manifest(run_copy)
    real = collect.collect_tables

    def killed_after_the_tables(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as a kill between the last table and the manifest

    monkeypatch.setattr(collect, "collect_tables", killed_after_the_tables)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=False)
    assert not (run_copy / MANIFEST_NAME).exists()
    with pytest.raises(InputError, match="its run did not finish"):
        verify_manifest(run_copy)
    monkeypatch.setattr(collect, "collect_tables", real)
    again = run_pipeline(cfg, progress=False)
    assert again.count("skipped") == 4
    assert verify_manifest(run_copy) == []
    after = read_manifest(run_copy)
    tables = [o for o in after["outputs"] if o["path"] in TABLES]  # the config names this copy's folder
    assert (
        tables == [o for o in before["outputs"] if o["path"] in TABLES]
        and after["fields"] == before["fields"]
    )


def test_a_run_with_other_settings_stopped_after_its_resolved_config_leaves_no_manifest(
    run_copy, small_plate, monkeypatch
):
    """Stopped once it had written its pipeline.resolved.yaml: the old manifest stayed, and verify
    said the resolved configuration had been changed (``sha256 was ..., now ...``)."""
    from dls_microscopy.pipeline import run

    steps = "segment:\n  channel: DAPI\n  params: {diameter_um: 6}\nfeatures: {}\n"
    cfg = write_config(run_copy.parent, small_plate, steps=steps)
    real = run._write_text

    def stopped_after_the_resolved_config(path, text):
        real(path, text)
        if path.name == run.RESOLVED_CONFIG:
            raise KeyboardInterrupt  # as a kill before the first field

    monkeypatch.setattr(run, "_write_text", stopped_after_the_resolved_config)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=False)
    assert not (run_copy / MANIFEST_NAME).exists()
    with pytest.raises(InputError, match="its run did not finish"):
        verify_manifest(run_copy)
    monkeypatch.setattr(run, "_write_text", real)
    assert run_pipeline(cfg, progress=False).count("done") == 4
    assert verify_manifest(run_copy) == []


def test_a_forced_rerun_stopped_mid_field_leaves_no_manifest_of_the_old_tables(run_copy, small_plate):
    """``run --force`` stopped after one field: the old tables' manifest must not vouch for them."""
    from dls_microscopy.pipeline.progress import NoProgress

    class StoppedAfterOneField(NoProgress):
        def field_done(self, key: str, status: str) -> None:
            raise KeyboardInterrupt

    cfg = write_config(run_copy.parent, small_plate)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, force=True, progress=StoppedAfterOneField())
    assert not (run_copy / MANIFEST_NAME).exists()  # it said a redone field was tampered with
    with pytest.raises(InputError, match="its run did not finish"):
        verify_manifest(run_copy)
    assert run_pipeline(cfg, progress=False).ok
    assert verify_manifest(run_copy) == []


def test_a_rerun_with_nothing_to_do_leaves_tables_and_manifest_as_they_were(run_copy, small_plate):
    """A no-op rerun rewrites nothing (the manifest's created record stays the making run's);
    a table that is gone or changed is built again, with a new manifest."""
    cfg = write_config(run_copy.parent, small_plate)  # the copy's own config: its first rerun rebuilds
    assert run_pipeline(cfg, progress=False).count("skipped") == 4
    files = [MANIFEST_NAME, *TABLES]

    def state():
        return {n: ((run_copy / n).read_bytes(), (run_copy / n).stat().st_mtime_ns) for n in files}

    before = state()
    again = run_pipeline(cfg, progress=False)
    assert again.count("skipped") == 4 and set(again.tables) == {Path(t).stem for t in TABLES}
    assert state() == before
    assert "the tables and their manifest are up to date" in (run_copy / "run.log").read_text()
    (run_copy / "wells.parquet").unlink()
    run_pipeline(cfg, progress=False)
    assert (run_copy / "wells.parquet").read_bytes() == before["wells.parquet"][0]
    assert (run_copy / MANIFEST_NAME).stat().st_mtime_ns != before[MANIFEST_NAME][1]  # written again
    assert verify_manifest(run_copy) == []


def test_a_rerun_after_a_failed_field_left_the_input_rewrites_the_manifest(tmp_path):
    """The failed field's file is removed: nothing to do, but the manifest must not name it."""
    import numpy as np
    import tifffile

    from dls_microscopy.sample_data import make_synthetic_nuclei

    img = tmp_path / "img"
    img.mkdir()
    tifffile.imwrite(img / "a.tif", np.asarray(make_synthetic_nuclei((12, 40, 40), seed=1).image[0]))
    (img / "b.tif").write_text("not a tiff")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"input:\n  path: {img}/*.tif\noutput:\n  path: {tmp_path / 'out'}\nsteps:\n"
        "  segment: {params: {diameter_um: 7.0}}\n  features: {}\n"
        "compute: {device: cpu, memory_budget: 256MB}\n"
    )
    assert run_pipeline(cfg, progress=False).count("failed") == 1
    assert read_manifest(tmp_path / "out")["fields_failed"] == ["b.tif"]
    (img / "b.tif").unlink()
    again = run_pipeline(cfg, progress=False)
    assert again.count("skipped") == 1 and again.count("failed") == 0
    assert read_manifest(tmp_path / "out")["fields_failed"] == []
    assert verify_manifest(tmp_path / "out") == []
