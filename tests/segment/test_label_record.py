"""Labels say how they were made: method, parameters, channel, spacing, and, from a command, more."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from dls_microscopy.cli import main
from dls_microscopy.io import open_labels, open_volume, write_ome_zarr
from dls_microscopy.sample_data import make_synthetic_nuclei
from dls_microscopy.segment import get_segmenter, segment_blockwise


def _image(tmp_path):
    s = make_synthetic_nuclei((16, 48, 48), seed=2)
    return write_ome_zarr(
        np.asarray(s.image), tmp_path / "img.ome.zarr", axes="czyx", spacing=(1, 0.5, 0.5),
        channel_names=s.channel_names,
    )  # fmt: skip


def test_segment_command_records_settings_execution_and_software(tmp_path, capsys):
    store = _image(tmp_path)
    code = main(["segment", str(store), "--diameter", "6", "--channel", "0", "--no-progress", "--json",
                 "--spacing", "2,0.5,0.5", "--memory-budget", "64MB"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    n = json.loads(out)["objects"]
    labels = open_labels(store, "nuclei")
    record = labels.metadata["dls_microscopy"]
    seg = record["segmentation"]
    assert seg["method"] == "watershed" and seg["params"]["diameter_um"] == 6.0
    assert seg["channel"] == "DAPI" and seg["time_point"] is None and seg["n_objects"] == n
    assert seg["spacing_um"] == [2.0, 0.5, 0.5] and seg["spacing_from_file_um"] == [1.0, 0.5, 0.5]
    assert seg["source"] == str(store)
    execution = record["execution"]
    assert execution["device"] == "cpu" and execution["memory_budget_bytes"] == 64 * 10**6
    assert execution["seams"]["objects"] == n and execution["blocks"] >= 1
    assert record["command"] == "dls-microscopy segment"
    assert record["software"]["packages"]["dls-microscopy"] and record["created"]["utc"]
    # the store stays valid NGFF with the record beside "ome" (validated as it was written)
    written = json.loads((store / "labels" / "nuclei" / "zarr.json").read_text())
    assert "dls_microscopy" in written["attributes"] and "ome" in written["attributes"]
    # info shows it
    assert main(["info", str(store / "labels" / "nuclei"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dls_microscopy"]["segmentation"]["method"] == "watershed"


def test_a_call_without_provenance_records_only_what_determines_the_labels(tmp_path):
    """A pipeline field's labels: no execution details, so verify --recompute compares equal bytes."""
    s = make_synthetic_nuclei((16, 48, 48), seed=3)
    tif = tmp_path / "n.tif"
    tifffile.imwrite(tif, np.asarray(s.image[0]))
    seg = get_segmenter("watershed", {"diameter_um": 6}, device="cpu")
    vol = open_volume(tif)
    a = segment_blockwise(vol, seg, output=tmp_path / "a.ome.zarr", memory_budget=2 * 10**9)
    b = segment_blockwise(vol, seg, output=tmp_path / "b.ome.zarr", block_shape=(8, 24, 24))
    assert a.plan.n_blocks == 1 < b.plan.n_blocks
    record = open_volume(tmp_path / "a.ome.zarr").metadata["dls_microscopy"]
    assert set(record) == {"segmentation"}
    # the same labels from other blocks: the same record, byte for byte
    meta = [json.loads((tmp_path / f"{x}.ome.zarr" / "zarr.json").read_text()) for x in "ab"]
    assert meta[0]["attributes"]["dls_microscopy"] == meta[1]["attributes"]["dls_microscopy"]


def test_full_resolution_labels_record_no_level(tmp_path):
    """Level 0 records no 'level' (as meshes.json and the tables do): a pipeline field segmented
    before levels were recorded recomputes to the same labels, byte for byte."""
    s = make_synthetic_nuclei((16, 48, 48), seed=3)
    tif = tmp_path / "n.tif"
    tifffile.imwrite(tif, np.asarray(s.image[0]))
    seg = get_segmenter("watershed", {"diameter_um": 6}, device="cpu")
    segment_blockwise(open_volume(tif), seg, output=tmp_path / "a.ome.zarr")
    record = open_volume(tmp_path / "a.ome.zarr").metadata["dls_microscopy"]["segmentation"]
    assert "level" not in record


def test_a_selected_time_point_is_recorded(tmp_path):
    """A pipeline field of a time series segments its time point's volume: the record says which."""
    s = make_synthetic_nuclei((16, 48, 48), seed=5)
    tif = tmp_path / "n.tif"
    tifffile.imwrite(tif, np.asarray(s.image[0]))
    seg = get_segmenter("watershed", {"diameter_um": 6}, device="cpu")
    segment_blockwise(open_volume(tif), seg, output=tmp_path / "t.ome.zarr", source_time_point=3)
    assert open_volume(tmp_path / "t.ome.zarr").metadata["dls_microscopy"]["segmentation"]["time_point"] == 3


def test_a_coarser_level_records_both_voxel_sizes_at_that_level(tmp_path):
    """With input.level 1, spacing_um was level 1's and spacing_from_file_um level 0's."""
    s = make_synthetic_nuclei((16, 64, 64), seed=4)
    store = write_ome_zarr(
        np.asarray(s.image[0]), tmp_path / "p.ome.zarr", axes="zyx", spacing=(1, 0.5, 0.5), n_levels=2
    )
    vol = open_volume(store, level=1, spacing=(2, 0.25, 0.25))
    factor = np.array(vol.spacing) / np.array(vol.level_spacings[0])
    assert vol.level == 1 and factor[1] == 2  # the writer halves y and x
    seg = get_segmenter("watershed", {"diameter_um": 6}, device="cpu")
    segment_blockwise(vol, seg, output=tmp_path / "l1.ome.zarr")
    rec = open_volume(tmp_path / "l1.ome.zarr").metadata["dls_microscopy"]["segmentation"]
    assert rec["level"] == 1
    np.testing.assert_allclose(rec["spacing_um"], np.array([2, 0.25, 0.25]) * factor)
    np.testing.assert_allclose(rec["spacing_from_file_um"], np.array([1, 0.5, 0.5]) * factor)


def test_full_resolution_labels_record_the_files_voxel_size_as_it_is(tmp_path):
    """At level 0 the file's voxel size given over was rounded to 12 digits: a pipeline field
    with input.spacing, of a file whose voxel size has more, no longer recomputed byte for byte."""
    s = make_synthetic_nuclei((16, 48, 48), seed=3)
    tif = tmp_path / "n.ome.tif"
    fine = 0.10834236186348862  # 1 / 9.23 px per µm
    meta = {"axes": "ZYX", "PhysicalSizeX": fine, "PhysicalSizeY": fine, "PhysicalSizeZ": 1.0}
    tifffile.imwrite(tif, np.asarray(s.image[0]), metadata=meta)
    vol = open_volume(tif, spacing=(1.0, 0.3, 0.3))
    seg = get_segmenter("watershed", {"diameter_um": 6}, device="cpu")
    segment_blockwise(vol, seg, output=tmp_path / "a.ome.zarr")
    record = open_volume(tmp_path / "a.ome.zarr").metadata["dls_microscopy"]["segmentation"]
    assert record["spacing_from_file_um"] == vol.metadata["spacing_from_file_um"]
    assert record["spacing_from_file_um"][2] == open_volume(tif).spacing[2]
