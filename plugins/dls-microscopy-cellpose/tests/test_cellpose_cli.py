"""``dls-microscopy segment IN OUT --method cellpose --model PATH``, in process."""

from __future__ import annotations

import json

import pytest
from dls_microscopy.cli import main
from dls_microscopy.io import open_volume, write_ome_zarr
from dls_microscopy.segment.metrics import match_objects


@pytest.fixture
def two_channel_store(tmp_path, nuclei):
    """The nuclei as a 2-channel OME-Zarr (DAPI, LaminB1): the channel must be chosen."""
    return write_ome_zarr(nuclei.as_volume(), tmp_path / "nuclei.ome.zarr")


def test_segment_with_a_model_file(two_channel_store, tmp_path, tiny_weights, nuclei, capsys):
    out = tmp_path / "labels.ome.zarr"
    code = main(
        [
            "segment",
            str(two_channel_store),
            str(out),
            "--method",
            "cellpose",
            "--model",
            str(tiny_weights),
            "--channel",
            "DAPI",
            "--diameter",
            "8",
            "--device",
            "cpu",
            "--workers",
            "1",
            "--no-progress",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["method"] == "cellpose" and summary["device"] == "cpu"
    assert summary["halo"] == [8, 16, 16]
    labels = open_volume(out).data.compute()
    assert summary["objects"] == int(labels.max()) >= 5
    assert match_objects(labels, nuclei.labels, thresholds=(0.5,))[0.5].f1 >= 0.6


def test_missing_model_file_exits_2_with_instructions(two_channel_store, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "cpsam_v2"
    code = main(
        [
            "segment",
            str(two_channel_store),
            str(tmp_path / "out.ome.zarr"),
            "--method",
            "cellpose",
            "--model",
            str(missing),
            "--channel",
            "DAPI",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    err = " ".join(capsys.readouterr().err.split())  # undo the console's line wrapping
    assert code == 2, err
    assert str(missing) in err and "huggingface.co" in err and "never downloads" in err
    assert not (tmp_path / "out.ome.zarr").exists()


def test_no_model_and_empty_cache_exits_2(two_channel_store, tmp_path, empty_model_cache, capsys):
    code = main(
        [
            "segment",
            str(two_channel_store),
            str(tmp_path / "out.ome.zarr"),
            "--method",
            "cellpose",
            "--channel",
            "DAPI",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert str(empty_model_cache / "cpsam_v2") in err and "--model PATH" in err


@pytest.mark.parametrize("kind", ["folder", "text file"])
def test_a_model_that_is_not_a_weights_file_exits_2_in_one_line(
    two_channel_store, tmp_path, kind, capsys
):
    model = tmp_path / "model"
    if kind == "folder":
        model.mkdir()
    else:
        model.write_text("not weights\n")
    out = tmp_path / "out.ome.zarr"
    args = [str(two_channel_store), str(out), "--method", "cellpose", "--model", str(model)]
    code = main(["segment", *args, "--channel", "DAPI", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {model}: ") and err.count("\n") == 1, err
    assert ("is a folder" if kind == "folder" else "not what torch.save writes") in err
    assert not out.exists()


def test_a_pipeline_with_a_text_file_as_model_is_refused_before_any_field(
    two_channel_store, tmp_path, capsys
):
    model = tmp_path / "notes.txt"
    model.write_text("not weights\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"version: 1\ninput: {{path: {two_channel_store}}}\noutput: {{path: {tmp_path / 'run'}}}\n"
        f"steps:\n  segment:\n    method: cellpose\n    model: {model}\n    channel: DAPI\n"
    )
    code = main(["run", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "steps.segment.model" in err and str(model) in err and "PyTorch weights" in err
    assert not (tmp_path / "run" / "fields").exists()
