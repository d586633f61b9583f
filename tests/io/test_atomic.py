"""Partial output folders: who may remove whose (same host by process, other hosts never)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dls_microscopy.errors import OutputError
from dls_microscopy.io.atomic import (
    atomic_directory,
    check_output_dir,
    partial_file,
    release_partial,
    remove_partials,
)

#: Root metadata of a store we wrote: our writers name us in it (a pyramid's method, a record)
OURS = (
    '{"attributes": {"ome": {"multiscales": [{"metadata": {"method": "dls_microscopy.io.pyramid (mean)"}}]}}}'
)
OURS_V2 = '{"multiscales": [{"metadata": {"method": "dls_microscopy.io.pyramid (mean)"}}]}'


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def partials(tmp_path):
    """Partial folders of ``out``: a dead local writer, a live local one, another host's, an old-style one."""
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    names = {
        "dead": f".out.partial-{_dead_pid()}-aaaa1111@{host}",
        "live": f".out.partial-{live.pid}-bbbb2222@{host}",
        "other_host": f".out.partial-{_dead_pid()}-cccc3333@{host}-elsewhere",
        "unnamed_host": f".out.partial-{_dead_pid()}-dddd4444",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "half").write_bytes(b"x")
    yield {key: tmp_path / name for key, name in names.items()}
    live.kill()
    live.wait()


def test_a_write_removes_only_what_it_can_prove_stale(tmp_path, partials):
    with atomic_directory(tmp_path / "out") as tmp:
        assert tmp.name.endswith("@" + socket.gethostname())
        (tmp / "done").write_bytes(b"ok")
    assert (tmp_path / "out" / "done").read_bytes() == b"ok"
    assert not partials["dead"].exists()
    assert not partials["unnamed_host"].exists()  # written before names carried the host: this host's
    assert partials["live"].exists(), "a live process's folder was removed"
    assert partials["other_host"].exists(), "another host's process number was checked here"


def test_a_failed_write_leaves_nothing_and_an_overwrite_keeps_the_old_until_done(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as tmp:
        (tmp / "v").write_text("1")
        (tmp / "zarr.json").write_text(OURS)  # a store of ours: overwriting replaces only those
    with pytest.raises(RuntimeError), atomic_directory(final, overwrite=True) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("killed")
    assert (final / "v").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_remove_partials_takes_every_host(tmp_path, partials):
    (tmp_path / "kept").mkdir()
    removed = remove_partials(tmp_path)
    assert sorted(removed) == sorted(partials.values())
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_partial_files_are_each_writers_own_and_a_gone_writers_are_removed(tmp_path):

    final = tmp_path / "table.parquet"
    stale = tmp_path / f".table.parquet.partial-{_dead_pid()}-aaaa1111@{socket.gethostname()}"
    stale.write_bytes(b"half a table")
    a, b = partial_file(final), partial_file(final)
    assert a != b and a.parent == b.parent == tmp_path  # beside the file: the rename stays on its disk
    assert a.name.startswith(".table.parquet.partial-") and not stale.exists()


def test_a_second_writer_in_this_process_leaves_the_first_ones_partials_alone(tmp_path, monkeypatch):
    """Another thread writing the same output took the first writer's partial for a leftover."""
    import dls_microscopy.io.atomic as atomic

    final = tmp_path / "table.parquet"
    a = partial_file(final)
    a.write_bytes(b"being written")
    b = partial_file(final)
    assert a.exists() and a != b
    release_partial(a)
    assert not a.exists()
    with atomic_directory(tmp_path / "out") as first:
        (first / "x").write_text("1")
        with pytest.raises(OutputError), atomic_directory(tmp_path / "out") as second:
            (second / "y").write_text("2")
            raise OSError(5, "I/O error")
        assert (first / "x").exists()
    assert (tmp_path / "out" / "x").read_text() == "1"
    # a scan between another writer's mkdir and its registration removed the folder: the name
    # is now registered before the folder exists
    scan, real_mkdir = atomic._remove_stale_partials, Path.mkdir

    def mkdir_then_scan(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if ".partial-" in self.name:
            scan(tmp_path / "raced")  # another thread's write of the same output looks now

    monkeypatch.setattr(Path, "mkdir", mkdir_then_scan)
    with atomic_directory(tmp_path / "raced") as tmp:
        assert tmp.is_dir()
        (tmp / "x").write_text("1")
    monkeypatch.undo()
    assert (tmp_path / "raced" / "x").read_text() == "1"


def test_a_leftover_of_this_process_number_is_removed(tmp_path):
    """A killed run whose process number this one has again (a container's pid 1) left these."""
    host = socket.gethostname()
    left_dir = tmp_path / f".out.partial-{os.getpid()}-aaaa1111@{host}"
    left_file = tmp_path / f".t.csv.partial-{os.getpid()}-bbbb2222@{host}"
    left_dir.mkdir()
    left_file.write_text("half")
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "x").write_text("1")
    partial_file(tmp_path / "t.csv")
    assert not left_dir.exists() and not left_file.exists()


def _failing_overwrite(tmp_path, monkeypatch, error, *, restore_fails=False, on_aside=None):
    """An output ``out`` holding ``v`` = "1", and ``os.replace`` failing with ``error`` to give
    it the new folder (and, with ``restore_fails``, the old one back); ``on_aside(final)`` runs
    once the old output is set aside."""
    final = tmp_path / "out"
    with atomic_directory(final) as tmp:
        (tmp / "v").write_text("1")
        (tmp / "zarr.json").write_text(OURS)  # a store of ours: overwriting replaces only those
    real = os.replace

    def replace(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        if "old-" in dst:  # the old output goes aside
            real(src, dst)
            if on_aside is not None:
                on_aside(final)
            return None
        if dst == os.fspath(final) and (restore_fails or "old-" not in src):
            raise error
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return final


@pytest.mark.parametrize("scan_while_aside", [False, True])
def test_an_overwrite_whose_final_rename_fails_puts_the_old_output_back(
    tmp_path, monkeypatch, scan_while_aside
):
    """The old folder stayed under its hidden 'old-' name, where the next write removed it; and
    another thread's scan removed it while it waited there, so it could not come back."""
    import dls_microscopy.io.atomic as atomic

    # another writer of the same output looks while the old one waits aside
    scan = atomic._remove_stale_partials if scan_while_aside else None
    final = _failing_overwrite(tmp_path, monkeypatch, OSError(28, "No space left on device"), on_aside=scan)
    with pytest.raises(OutputError, match="disk full"), atomic_directory(final, overwrite=True) as tmp:
        (tmp / "v").write_text("2")
    assert (final / "v").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_old_output_that_cannot_be_put_back_is_named_in_the_error(tmp_path, monkeypatch):
    """Both renames failing left the old output under its hidden name, unsaid, where a later
    write would remove it as a leftover; the error now says where it is."""
    error = OSError(13, "Permission denied")
    final = _failing_overwrite(tmp_path, monkeypatch, error, restore_fails=True)
    with pytest.raises(OutputError, match="could not be put back") as err:
        with atomic_directory(final, overwrite=True) as tmp:
            (tmp / "v").write_text("2")
    (aside,) = [p for p in tmp_path.iterdir() if "old-" in p.name]
    assert str(aside) in str(err.value) and (aside / "v").read_text() == "1"


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_write(tmp_path, monkeypatch):
    """Another user's partial file in a shared (sticky) folder: its removal raised PermissionError
    out of every later write of that output (an internal error) instead of being left alone."""
    stale = tmp_path / f".t.csv.partial-{_dead_pid()}-aaaa1111@{socket.gethostname()}"
    stale.write_text("half")
    real = Path.unlink

    def unlink(self, *args, **kwargs):
        if self.name == stale.name:
            raise PermissionError(1, "Operation not permitted")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    tmp = partial_file(tmp_path / "t.csv")
    tmp.write_text("whole")
    os.replace(tmp, tmp_path / "t.csv")
    release_partial(tmp)
    assert (tmp_path / "t.csv").read_text() == "whole" and stale.exists()


@pytest.mark.parametrize("depth", ["out", "new/out"])
def test_an_output_under_a_regular_file_is_refused(tmp_path, depth):
    """``notes.txt/out``: a NotADirectoryError from removing the partial folder never made."""
    (tmp_path / "notes.txt").write_text("mine")
    final = tmp_path / "notes.txt" / depth
    with pytest.raises(OutputError, match=r"notes\.txt is not a folder") as info:
        with atomic_directory(final):
            pass
    assert str(final) in str(info.value)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    release_partial(tmp_path / "notes.txt" / ".x.partial-1-a@h")  # never made: nothing to remove


def _manifest(folder: Path, fmt: str = "dls-microscopy-manifest") -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text(f'{{"format": "{fmt}"}}')
    return folder


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.mkdir(),
        lambda p: _manifest(p),
        lambda p: (p.mkdir(), (p / "zarr.json").write_text(OURS)),
        lambda p: (p.mkdir(), (p / ".zgroup").write_text("{}"), (p / ".zattrs").write_text(OURS_V2)),
        lambda p: (p.mkdir(), (p / ".run.lock").write_text("")),
        lambda p: (p.mkdir(), (p / "meshes.json").write_text('{"objects": []}')),
    ],
    ids=["empty", "manifest", "zarr v3", "zarr v2", "run folder", "meshes"],
)
def test_an_overwrite_replaces_an_output_of_ours(tmp_path, make):
    make(tmp_path / "out")
    with atomic_directory(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("1")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize(
    "make",
    [
        lambda p: (p.mkdir(), (p / "thesis.docx").write_text("years")),
        lambda p: (_manifest(p, "someone-elses"), (p / "thesis.docx").write_text("years")),
        lambda p: (
            p.mkdir(),
            (p / "manifest.json").write_text("not json"),
            (p / "thesis.docx").write_text("y"),
        ),
        lambda p: (p.mkdir(), (p / "meshes.json").write_text("[]"), (p / "thesis.docx").write_text("y")),
        lambda p: p.write_text("a file"),
        lambda p: (p.mkdir(), (p / "zarr.json").write_text('{"attributes": {"ome": {}}}')),
        lambda p: (p.mkdir(), (p / ".zgroup").write_text("{}"), (p / ".zattrs").write_text("{}")),
    ],
    ids=[
        "documents",
        "another manifest",
        "bad manifest",
        "another meshes.json",
        "file",
        "zarr v3",
        "zarr v2",
    ],
)
def test_an_overwrite_refuses_what_is_not_an_output_of_ours(tmp_path, make):
    """--overwrite deleted any folder given as the output, whatever it held."""
    out = tmp_path / "out"
    make(out)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(OutputError, match="remove it yourself or choose another path") as info:
        with atomic_directory(out, overwrite=True) as tmp:
            (tmp / "new").write_text("1")
    assert str(out) in str(info.value) and any(
        why in str(info.value) for why in ("not an output", "is a file", "did not write")
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    with pytest.raises(OutputError, match="remove it yourself"):
        check_output_dir(out, overwrite=True)


def test_a_store_that_only_mentions_us_in_a_path_is_not_ours(tmp_path):
    """The mark was a substring: another tool's store naming /data/dls_microscopy_runs passed (review)."""
    out = tmp_path / "theirs.zarr"
    out.mkdir()
    (out / "zarr.json").write_text('{"attributes": {"origin": "/data/dls_microscopy_runs/a.tif"}}')
    with pytest.raises(OutputError, match="did not write"):
        check_output_dir(out, overwrite=True)
    (out / "zarr.json").write_text('{"attributes": {"dls_microscopy": {"sample": "x"}}}')
    assert check_output_dir(out, overwrite=True) == out


def test_a_plate_whose_images_we_wrote_is_ours_though_its_root_is_unmarked(tmp_path):
    """The sample plate of earlier versions had no mark at its root: `sample --overwrite` refused it."""
    import json

    from dls_microscopy.sample_data.plate import write_synthetic_plate

    plate = write_synthetic_plate(tmp_path / "p.ome.zarr", seed=0)
    root = json.loads((plate / "zarr.json").read_text())
    root["attributes"].pop("dls_microscopy")  # as written before 2026-11-29
    (plate / "zarr.json").write_text(json.dumps(root))
    assert check_output_dir(plate, overwrite=True) == plate
    # a plate of another tool: its images carry no mark of ours
    for image in plate.glob("*/*/*/zarr.json"):
        doc = json.loads(image.read_text())
        for ms in doc["attributes"]["ome"]["multiscales"]:
            ms.pop("metadata", None)
        image.write_text(json.dumps(doc))
    with pytest.raises(OutputError, match="did not write"):
        check_output_dir(plate, overwrite=True)
