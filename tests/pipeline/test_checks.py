"""Mistakes every field would meet are refused before the run writes anything (exit 2)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from pipeline_inputs import write_config

from dls_microscopy.cli import main
from dls_microscopy.errors import ConfigError, InputError
from dls_microscopy.pipeline.checks import check_inputs
from dls_microscopy.pipeline.config import load_config
from dls_microscopy.pipeline.run import run_pipeline

FEATURES = "segment: {channel: DAPI, params: {diameter_um: 7}}\nfeatures: {}\n"


def _listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _refused(cfg, match, tmp_path, out="out"):
    with pytest.raises(InputError, match=match):
        check_inputs(load_config(cfg))
    assert main(["config", "validate", str(cfg)]) == 2
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize("output", ["plate.ome.zarr", "plate.ome.zarr/results", "plate.ome.zarr/A/01/0"])
def test_an_output_in_or_over_the_input_plate_is_refused(plate_copy, tmp_path, output):
    before = _listing(plate_copy)
    cfg = write_config(tmp_path, plate_copy, output=output, steps=FEATURES)
    with pytest.raises(
        InputError, match=r"line 4: output.path: \S+: the output (is|contains|lies inside) the input"
    ):
        run_pipeline(cfg, progress=False)
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert _listing(plate_copy) == before  # inputs are never written


def test_an_output_that_is_a_file_is_refused(small_plate, tmp_path):
    (tmp_path / "results").write_text("a file")
    cfg = write_config(tmp_path, small_plate, output="results", steps=FEATURES)
    with pytest.raises(InputError, match=r"output\.path: is a file, not a folder"):
        check_inputs(load_config(cfg))
    assert main(["config", "validate", str(cfg)]) == 2


@pytest.mark.parametrize("output", ["blocker/out", "blocker/deeper/out"])
def test_an_output_under_a_file_is_refused_by_config_validate(small_plate, tmp_path, capsys, output):
    (tmp_path / "blocker").write_text("a file")
    cfg = write_config(tmp_path, small_plate, output=output, steps=FEATURES)
    with pytest.raises(
        InputError, match=rf"output\.path: cannot be made: {tmp_path / 'blocker'} is not a folder"
    ):
        check_inputs(load_config(cfg))
    assert main(["config", "validate", str(cfg)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {cfg}: line 4: output.path: {tmp_path / output}: ")


def test_an_output_that_cannot_be_written_is_refused_by_config_validate(small_plate, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "existing").mkdir()
    locked.chmod(0o555)
    (locked / "existing").chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("file permissions do not bind this user (root)")
        for output, reason in (
            ("locked/new/out", f"cannot be made: {locked} is not writable"),
            ("locked/existing", "this folder is not writable"),
        ):
            cfg = write_config(tmp_path, small_plate, output=output, steps=FEATURES)
            with pytest.raises(InputError, match=rf"output\.path: {reason}"):
                check_inputs(load_config(cfg))
            assert main(["config", "validate", str(cfg)]) == 2
            assert f"line 4: output.path: {tmp_path / output}: {reason}" in capsys.readouterr().err
            assert main(["run", str(cfg), "--no-progress"]) == 2
        # a folder that can be made: any missing parents too, as the run makes them
        cfg = write_config(tmp_path, small_plate, output="new/deeper/out", steps=FEATURES)
        assert main(["config", "validate", str(cfg)]) == 0
        assert not (tmp_path / "new").exists()  # validate writes nothing
    finally:
        (locked / "existing").chmod(0o755)
        locked.chmod(0o755)


def test_a_recursive_glob_leaves_the_runs_own_outputs_out(small_plate, tmp_path):
    import shutil

    shutil.copytree(small_plate, tmp_path / "data" / "plate.ome.zarr")
    cfg = write_config(tmp_path, "data/**/*.ome.zarr", output="data/out", steps=FEATURES)
    first = run_pipeline(cfg, progress=False)
    assert first.ok and first.count("done") == 4
    assert any((tmp_path / "data" / "out" / "fields").rglob("*.ome.zarr"))  # labels the glob matches
    again = run_pipeline(cfg, progress=False)
    assert again.count("skipped") == 4 and len(again.fields) == 4


def test_one_file_inputs_that_cannot_be_read_as_configured(tmp_path):
    with h5py.File(tmp_path / "n.h5", "w") as f:
        f["raw"] = np.zeros((8, 16, 16), np.uint8)
        f["label"] = np.zeros((8, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((16, 16), np.uint16))
    steps = "segment: {params: {diameter_um: 4}}\n"
    for source, match in (
        ("n.h5:/nope", r"no dataset '/nope' in the file"),
        ("n.h5", r"the file holds 2 datasets"),
        ("flat.tif", r"3D data required"),
    ):
        _refused(write_config(tmp_path, tmp_path / source, steps=steps), match, tmp_path)
    # labels inside the file are for OME-Zarr inputs: say so, not "no zarr group here"
    cfg = write_config(tmp_path, tmp_path / "n.h5:/raw", steps="features: {}\n")
    cfg.write_text(cfg.read_text().replace("\noutput:", "\n  labels: label\noutput:"))
    only_zarr = r"input.labels: names a label image inside an OME-Zarr input, and this input is HDF5"
    _refused(cfg, only_zarr, tmp_path)


def test_a_missing_input_and_float_labels_name_the_yaml_line(tmp_path, capsys):
    """Both named the file only; float labels passed `config validate` and failed every field."""
    from dls_microscopy.io import write_ome_zarr

    cfg = write_config(tmp_path, tmp_path / "nothere.tif")
    _refused(cfg, r"nothere.tif: input.path: input does not exist", tmp_path)
    assert main(["config", "validate", str(cfg)]) == 2
    assert "line 2: input.path: " in capsys.readouterr().err
    image = np.zeros((8, 16, 16), np.uint16)
    store = write_ome_zarr(image, tmp_path / "f.ome.zarr", spacing=(1, 1, 1), labels={"nuclei": image})
    group = zarr.open_group(str(store / "labels" / "nuclei"), mode="r+")  # another tool's float labels
    group.create_array("0", shape=image.shape, dtype=np.float32, overwrite=True)[...] = 1.5
    cfg = write_config(tmp_path, store, steps="features: {}\n")
    cfg.write_text(cfg.read_text().replace("\noutput:", "\n  labels: nuclei\noutput:"))
    _refused(cfg, r"input.labels: labels must be an integer label image, got dtype float32", tmp_path)
    assert main(["config", "validate", str(cfg)]) == 2
    assert "line 3: input.labels: " in capsys.readouterr().err


def test_channels_named_twice_and_a_series_of_a_plate(small_plate, tmp_path):
    cfg = write_config(tmp_path, small_plate, steps=FEATURES)
    cfg.write_text(cfg.read_text().replace("\noutput:", "\n  channels: [DAPI, 0]\noutput:"))
    _refused(cfg, r"input.channels: channels listed twice", tmp_path)
    cfg = write_config(tmp_path, small_plate, steps=FEATURES)
    cfg.write_text(cfg.read_text().replace("\noutput:", "\n  series: 2\noutput:"))
    _refused(cfg, r"input.series: picks one series of a multi-series file", tmp_path)


@pytest.mark.parametrize(
    ("key", "line", "old", "new", "name"),
    [
        ("input.channels", 3, "\noutput:", "\n  channels: [DAPI, GFP]\noutput:", "GFP"),
        ("steps.features.channels", 8, "features: {}", "features:\n    channels: [Nope]", "Nope"),
    ],
    ids=["input", "features"],
)
def test_a_channel_the_image_lacks_names_the_yaml_line_and_the_image(
    small_plate, tmp_path, capsys, key, line, old, new, name
):
    cfg = write_config(tmp_path, small_plate, steps=FEATURES)
    cfg.write_text(cfg.read_text().replace(old, new, 1))
    assert cfg.read_text().splitlines()[line - 1].strip().startswith("channels:")
    image = small_plate / "A" / "01" / "0"
    expected = f"{cfg}: line {line}: {key}: {image}: no channel named '{name}'"
    with pytest.raises(ConfigError) as exc:
        check_inputs(load_config(cfg), source=cfg)
    assert str(exc.value).startswith(expected)
    assert exc.value.path == cfg and [i[:2] for i in exc.value.issues] == [(key, line)]
    with pytest.raises(InputError, match=f"^{image}: {key}: no channel named"):
        check_inputs(load_config(cfg))  # without the file: the key and the image
    for command in (["config", "validate", str(cfg)], ["run", str(cfg), "--no-progress"]):
        assert main(command) == 2
        assert capsys.readouterr().err.startswith(f"error: {expected}")
    assert not (tmp_path / "out").exists()


def test_a_multi_series_file_says_which_series_runs(tmp_path, caplog):
    with tifffile.TiffWriter(tmp_path / "two.ome.tif") as tw:
        for _ in range(2):
            tw.write(np.zeros((4, 16, 16), np.uint16), metadata={"axes": "ZYX"})
    cfg = write_config(tmp_path, tmp_path / "two.ome.tif", steps="segment: {params: {diameter_um: 4}}\n")
    with caplog.at_level("WARNING", logger="dls_microscopy.pipeline.checks"):
        assert len(check_inputs(load_config(cfg))) == 1
    assert "holds 2 series; the run analyses series 0 (input.series)" in caplog.text


def test_a_glob_of_hdf5_files_names_the_dataset_of_each(tmp_path):
    from dls_microscopy.pipeline.fields import discover_fields

    for well in ("a", "b"):
        (tmp_path / "g" / well).mkdir(parents=True)
        with h5py.File(tmp_path / "g" / well / "x.h5", "w") as f:
            f["raw"] = np.zeros((8, 16, 16), np.uint8)
    fields = discover_fields(str(tmp_path / "g" / "*" / "x.h5:/raw"))
    assert [f.source for f in fields] == [str(tmp_path / "g" / w / "x.h5:/raw") for w in ("a", "b")]
    assert len({f.key for f in fields}) == 2


def test_a_plate_field_is_named_as_a_run_names_it(small_plate, tmp_path):
    """The desktop app names a plate's field with this, so that its tables join a run's (GUI review)."""
    from dls_microscopy.pipeline.fields import discover_fields, plate_field

    for spec in discover_fields(str(small_plate)):
        assert plate_field(small_plate, spec.source) == spec
        assert "/" not in spec.well and spec.image_id == spec.key  # the app had "A/01" and "0"
    assert plate_field(small_plate, tmp_path) is None
    assert plate_field(tmp_path, small_plate) is None  # not a plate


def test_a_memory_budget_too_small_for_one_block_is_refused_before_any_field(small_plate, tmp_path):
    # every field failed alone with the same reason (exit 3), and `config validate` said valid
    cfg = write_config(tmp_path, small_plate, steps=FEATURES)
    cfg.write_text(cfg.read_text().replace("memory_budget: 256MB", "memory_budget: 1KB"))
    too_small = r"compute\.memory_budget: memory budget 0.98 kiB is too small: one block .* needs [\d.]+ MiB"
    _refused(cfg, too_small, tmp_path)
