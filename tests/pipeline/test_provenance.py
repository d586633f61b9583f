"""manifest.json: digests of inputs and outputs, and verification that finds every change."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from dls_microscopy.errors import InputError
from dls_microscopy.pipeline import _environment
from dls_microscopy.pipeline.provenance import MANIFEST_NAME, digest_input, read_manifest, write_manifest
from dls_microscopy.pipeline.verify import verify_manifest


@pytest.fixture
def store(tmp_path):
    """A small zarr-like directory: metadata files and chunk files."""
    root = tmp_path / "in.zarr"
    (root / "0" / "c" / "0").mkdir(parents=True)
    (root / "zarr.json").write_text('{"zarr_format": 3}')
    (root / "0" / "zarr.json").write_text('{"shape": [2]}')
    (root / "0" / "c" / "0" / "0").write_bytes(b"\x01\x02\x03")
    (root / "0" / "c" / "0" / "1").write_bytes(b"\x04\x05")
    return root


def _output(tmp_path, store, **params):
    out = tmp_path / "out"
    out.mkdir()
    (out / "table.csv").write_text("a,b\n1,2\n")
    write_manifest(out, command="test", inputs={"image": store}, parameters=params or {"k": 1})
    return out


def test_digest_separates_metadata_and_chunks(store, tmp_path):
    d = digest_input(store)
    assert d["kind"] == "directory" and d["n_files"] == 4 and d["size"] == 3 + 2 + 18 + 14
    (store / "0" / "c" / "0" / "1").write_bytes(b"\x04\x06")
    d2 = digest_input(store)
    assert d2["sha256_metadata"] == d["sha256_metadata"] and d2["sha256_data"] != d["sha256_data"]
    (store / "0" / "zarr.json").write_text('{"shape": [3]}')
    assert digest_input(store)["sha256_metadata"] != d["sha256_metadata"]
    f = tmp_path / "image.tif"
    f.write_bytes(b"II*\x00" + bytes(100))
    assert digest_input(f)["kind"] == "file" and digest_input(f)["size"] == 104
    with pytest.raises(InputError, match="does not exist"):
        digest_input(tmp_path / "missing")


def test_recompute_without_an_entry_point_says_so(store, tmp_path):
    """A manifest without a command to re-run (fields of earlier versions): a clear error, not a mismatch."""
    out = _output(tmp_path, store)
    assert verify_manifest(out) == []
    with pytest.raises(InputError, match="records no command to re-run"):
        verify_manifest(out, recompute=True)


def test_clean_folder_verifies(store, tmp_path):
    out = _output(tmp_path, store)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["outputs"] == [
        {"path": "table.csv", "size": 8, "sha256": manifest["outputs"][0]["sha256"]}
    ]
    assert {"python", "packages"} <= set(manifest["software"])
    assert set(manifest["created"]) == {"utc", "host", "user"} and manifest["created"]["utc"].endswith(
        "+00:00"
    )
    assert verify_manifest(out) == []


def test_changed_input_byte_is_reported(store, tmp_path):
    out = _output(tmp_path, store)
    chunk = store / "0" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    found = verify_manifest(out)
    assert [(m.kind, m.field) for m in found] == [("input", "sha256_data")]
    assert "image" in str(found[0])


def test_removed_input_changed_output_and_extra_file(store, tmp_path):
    out = _output(tmp_path, store)
    (out / "table.csv").write_text("a,b\n1,3\n")
    (out / "extra.txt").write_text("x")
    shutil.rmtree(store)
    found = {(m.kind, m.item, m.field) for m in verify_manifest(out)}
    assert ("output", "table.csv", "sha256") in found
    assert ("output", "extra.txt", "exists") in found
    assert any(kind == "input" and field == "exists" for kind, _, field in found)


def test_edited_parameter_is_reported(store, tmp_path):
    out = _output(tmp_path, store, threshold=0.5)
    path = out / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["parameters"]["threshold"] = 0.6
    path.write_text(json.dumps(manifest))
    found = verify_manifest(out)
    assert [(m.kind, m.field) for m in found] == [("manifest", "manifest_sha256")]


def _resigned(out, **changes):
    """The manifest of ``out`` with ``changes``, and a matching manifest_sha256 (a tidy hand edit)."""
    from dls_microscopy.pipeline.provenance import _self_digest

    path = out / MANIFEST_NAME
    manifest = {**json.loads(path.read_text()), **changes}
    manifest["manifest_sha256"] = _self_digest(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("changes", "item", "want"),
    [
        ({"inputs": "in.zarr"}, '"inputs"', ("object", "string")),
        ({"inputs": {"image": "in.zarr"}}, "\"inputs\"['image']", ("object", "string")),
        (
            {"inputs": {"image": {"path": "in.zarr", "excluded": 3}}},
            "\"inputs\"['image']",
            ("an array", "number"),
        ),
        ({"outputs": {"table.csv": 8}}, '"outputs"', ("array", "object")),
        ({"outputs": ["table.csv"]}, '"outputs"[0]', ("object", "string")),
        ({"outputs": [{"size": 8}]}, '"outputs"[0]', ("a string", "null")),
        ({"models": "m.pt"}, '"models"', ("array", "string")),
        ({"models": [None]}, '"models"[0]', ("object", "null")),
        ({"external_outputs": ["x"]}, '"external_outputs"', ("object", "array")),
        ({"arguments": "x"}, '"arguments"', ("object", "string")),
    ],
)
def test_a_manifest_section_of_the_wrong_json_type_is_a_mismatch(
    store, tmp_path, capsys, changes, item, want
):
    """Not a TypeError or AttributeError from deep inside verify."""
    from dls_microscopy.cli import main

    out = _output(tmp_path, store)
    _resigned(out, **changes)
    found = [m for m in verify_manifest(out) if m.kind == "manifest"]
    assert [(m.item, (m.expected, m.actual)) for m in found] == [(f"{MANIFEST_NAME} {item}", want)]
    assert main(["verify", str(out)]) == 1
    captured = capsys.readouterr()
    assert "internal error" not in captured.err and f"{MANIFEST_NAME} {item}" in captured.out


def test_a_run_manifest_with_fields_of_the_wrong_json_type_is_a_mismatch(tmp_path):
    from dls_microscopy.pipeline.provenance import MANIFEST_FORMAT, RUN_COMMAND, _self_digest

    manifest = {"format": MANIFEST_FORMAT, "command": RUN_COMMAND, "fields": "fields/A_1_0", "outputs": []}
    manifest["manifest_sha256"] = _self_digest(manifest)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    found = verify_manifest(tmp_path)
    assert [(m.kind, m.item, m.actual) for m in found] == [
        ("manifest", f'{MANIFEST_NAME} "fields"', "string")
    ]


def test_missing_or_foreign_manifest(tmp_path):
    with pytest.raises(InputError, match=r"no manifest\.json"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{}")
    with pytest.raises(InputError, match="not a dls-microscopy manifest"):
        verify_manifest(tmp_path)
    with pytest.raises(TypeError):
        write_manifest(tmp_path, command="x", inputs={}, parameters={"bad": object()})


def test_features_run_recompute_detects_changed_parameter(tmp_path):
    """End to end: run_features' manifest; recompute re-runs the recorded arguments."""
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.pipeline.features import run_features

    rng = np.random.default_rng(0)
    labels = np.zeros((6, 20, 24), np.uint16)
    labels[1:4, 2:9, 3:10], labels[2:6, 11:18, 12:22] = 1, 2
    image = rng.integers(100, 400, (1, *labels.shape)).astype(np.uint16)
    src = write_ome_zarr(
        image, tmp_path / "img.ome.zarr", axes="czyx", spacing=(1, 0.5, 0.5), labels={"n": labels}
    )
    out = tmp_path / "features"
    run_features(src, "n", out)
    assert verify_manifest(out, recompute=True) == []
    path = out / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["arguments"]["percentiles"] = [10.0, 50.0]
    manifest["parameters"]["percentiles"] = [10.0, 50.0]
    path.write_text(json.dumps(manifest))
    found = verify_manifest(out, recompute=True)
    kinds = {(m.kind, m.item) for m in found}
    assert ("manifest", MANIFEST_NAME) in kinds
    assert ("recompute", "objects.parquet") in kinds


def test_manifests_reuse_an_input_digest_while_its_files_are_unchanged(store, tmp_path, monkeypatch):
    """The fields of a run share an input (a time series): it is read once, not once per field."""
    import os

    from dls_microscopy.pipeline import _digests

    reads = []
    real = _digests.digest_file
    monkeypatch.setattr(_digests, "digest_file", lambda p: reads.append(p) or real(p))
    first = digest_input(store, reuse=True)
    n = len(reads)
    assert n == 2  # the two chunks (metadata files are read whole, not through digest_file)
    assert digest_input(store, reuse=True) == first and len(reads) == n  # not read again
    chunk = store / "0" / "c" / "0" / "0"
    st = chunk.stat()
    chunk.write_bytes(b"\x09\x09\x09")  # same size; the modification time moves on
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = digest_input(store, reuse=True)
    assert len(reads) == 2 * n and again["sha256_data"] != first["sha256_data"]
    # an edit that keeps size and time is only seen when reading: as verify does (reuse=False)
    chunk.write_bytes(b"\x07\x07\x07")
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert digest_input(store, reuse=True) == again
    assert digest_input(store)["sha256_data"] != again["sha256_data"]


def test_verify_says_what_a_folder_is_when_it_has_no_manifest(tmp_path):
    from dls_microscopy.errors import InputNotFoundError
    from dls_microscopy.pipeline.provenance import read_manifest

    with pytest.raises(InputNotFoundError, match="no such folder"):
        read_manifest(tmp_path / "missing")
    (tmp_path / "objects.csv").write_text("a table")  # it said "no such folder"
    with pytest.raises(InputError, match="a file, not an output folder"):
        read_manifest(tmp_path / "objects.csv")
    (tmp_path / "run" / "fields" / "a").mkdir(parents=True)  # a run stopped before its tables
    with pytest.raises(InputError, match=r"its run did not finish .* verify \S*fields"):
        read_manifest(tmp_path / "run")


def test_verify_json_gives_errors_as_json_and_says_what_recompute_did(tmp_path, store, capsys):
    from dls_microscopy.cli import main

    capsys.readouterr()
    assert main(["verify", str(tmp_path / "missing"), "--json"]) == 2
    said = json.loads(capsys.readouterr().out)  # it printed plain text
    assert "no such folder" in said["error"] and said["path"] == str(tmp_path / "missing")
    out = _output(tmp_path, store)
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("everything matches its manifest")


def test_a_label_image_added_to_the_image_store_changes_no_verify(tmp_path, capsys):
    """``segment`` writes labels into the image store: outputs made before still verify.

    The image's digest covered ``labels/``, so features and mesh folders made from the
    store failed verify once another label image was added; a label image used is an
    input of its own (``store/labels/NAME``), and a change to it is still found.
    """
    from dls_microscopy.cli import main
    from dls_microscopy.io import write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((12, 48, 48), spacing=(1, 0.5, 0.5), diameter_um=6.0, seed=4)
    img = write_ome_zarr(s.image[:1], tmp_path / "img.ome.zarr", axes="czyx", spacing=s.spacing,
                         labels={"truth": s.labels})  # fmt: skip
    feat, mesh = tmp_path / "feat", tmp_path / "mesh"
    assert main(["features", str(img), "truth", str(feat), "--no-progress"]) == 0
    assert main(["mesh", str(img), str(mesh), "--label-name", "truth", "--no-progress"]) == 0
    assert read_manifest_inputs(feat)["image"]["excluded"] == ["labels"]
    assert read_manifest_inputs(mesh)["labels"]["path"].endswith("labels/truth")
    assert main(["segment", str(img), "--diameter", "6", "--no-progress"]) == 0  # adds labels/nuclei
    capsys.readouterr()
    assert verify_manifest(feat) == [] and verify_manifest(mesh) == []
    # the label image measured is still checked
    chunk = next(
        p for p in (img / "labels" / "truth" / "0").rglob("*") if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(chunk.read_bytes() + b"\0")
    assert [m.item for m in verify_manifest(feat)] == [f"labels ({img / 'labels' / 'truth'})"] * 2


def read_manifest_inputs(folder):
    return json.loads((folder / MANIFEST_NAME).read_text())["inputs"]


def test_a_field_manifest_records_the_device_used_not_auto(small_plate, tmp_path):
    """compute.device: auto is what was asked; execution says what ran (here the CPU, by name)."""
    from pipeline_inputs import write_config

    from dls_microscopy.pipeline.run import run_pipeline

    cfg = write_config(tmp_path, small_plate)
    cfg.write_text(cfg.read_text().replace("device: cpu", "device: auto"))
    assert run_pipeline(cfg, progress=False).ok
    field = next((tmp_path / "out" / "fields").iterdir())
    manifest = read_manifest(field)
    assert manifest["arguments"]["config"]["compute"]["device"] == "auto"
    execution = manifest["execution"]
    assert set(execution["devices"]) == {"segment"}  # the steps that chose a device
    used = execution["devices"]["segment"]
    assert used["device"] == "cpu" and used.get("name") == _environment._cpu_name()
    assert execution["cpus_usable"] >= 1 and execution["memory_budget_bytes"] > 0
    assert verify_manifest(field) == []


def test_describe_device_names_a_gpu(monkeypatch):
    """On a GPU the record holds its index and name (a stand-in for torch here: no GPU in CI)."""
    import types

    cuda = types.SimpleNamespace(current_device=lambda: 1, get_device_name=lambda i: f"GPU #{i}")
    fake = types.SimpleNamespace(device=lambda d: types.SimpleNamespace(index=None), cuda=cuda)
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert _environment.describe_device("cuda") == {"device": "cuda:1", "name": "GPU #1"}
    assert _environment.describe_device("mps") == {"device": "mps"}


def test_verify_reads_moved_inputs_under_their_new_path(tmp_path, capsys):
    """An archive restored elsewhere: --moved OLD=NEW finds its inputs; a moved, changed input
    is still a mismatch; --recompute with --moved is refused (it re-runs with recorded paths)."""
    import tifffile

    from dls_microscopy.cli import main

    data = tmp_path / "data"
    data.mkdir()
    lab = np.zeros((6, 24, 24), np.uint16)
    lab[1:5, 3:10, 3:10], lab[2:5, 12:20, 12:22] = 1, 2
    tifffile.imwrite(data / "img.tif", (lab * 100 + 7).astype(np.uint16))
    tifffile.imwrite(data / "lab.tif", lab)
    out = tmp_path / "feat"
    assert main(["features", str(data / "img.tif"), str(data / "lab.tif"), str(out), "--no-progress"]) == 0
    capsys.readouterr()
    data.rename(tmp_path / "restored")
    assert main(["verify", str(out)]) == 1
    assert "image (" in capsys.readouterr().out
    moved = f"{data}={tmp_path / 'restored'}"
    assert main(["verify", str(out), "--moved", moved]) == 0
    capsys.readouterr()
    tifffile.imwrite(tmp_path / "restored" / "lab.tif", lab[::-1].copy())
    assert main(["verify", str(out), "--moved", moved, "--json"]) == 1
    (found,) = json.loads(capsys.readouterr().out)
    assert found["item"] == f"labels ({data / 'lab.tif'}, read at {tmp_path / 'restored' / 'lab.tif'})"
    assert main(["verify", str(out), "--moved", moved, "--recompute"]) == 2
    assert "--recompute re-runs the recorded command" in capsys.readouterr().err
    assert main(["verify", str(out), "--moved", "nothing"]) == 2
    assert "--moved takes OLD=NEW" in capsys.readouterr().err


def test_relocate_replaces_whole_leading_components_only():
    from dls_microscopy.pipeline.verify import relocate

    moved = [("/a/b", "/x"), ("/a", "/y/")]
    assert relocate("/a/b/c.zarr", moved) == "/x/c.zarr"  # the first pair that holds it
    assert relocate("/a/bc/d", moved) == "/y/bc/d"
    assert relocate("/a", moved) == "/y"
    assert relocate("/ab", moved) == "/ab"


def test_label_provenance_of_a_model_the_segmenter_looks_up_by_name(tmp_path, monkeypatch):
    """cellpose's ``--model cpsam`` names no file here: recorded by name, not an internal error."""
    monkeypatch.chdir(tmp_path)
    assert _environment.label_provenance("segment", "cpsam")["model"] == {"name": "cpsam", "sha256": None}
    (tmp_path / "w.pt").write_bytes(b"weights")
    model = _environment.label_provenance("segment", "w.pt")["model"]
    assert model["path"] == str(tmp_path / "w.pt") and len(model["sha256"]) == 64
