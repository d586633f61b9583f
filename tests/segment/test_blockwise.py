"""Blockwise segmentation equals whole-volume segmentation; seams; output placement."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dls_microscopy.errors import DimensionalityError, InputError, OutputError
from dls_microscopy.io import open_labels, open_volume, write_ome_zarr
from dls_microscopy.segment.blockwise import segment_blockwise
from dls_microscopy.segment.stitch import band_matches, global_relabel_table
from local_segmenter import ThresholdSegmenter as ThresholdSegmenterForTests
from local_segmenter import blob_volume


def _same_partition(a, b):
    """True when two label images are equal up to a renaming of ids."""
    if ((a > 0) != (b > 0)).any():
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("block", [(16, 32, 32), (24, 64, 40), (40, 96, 96)])
def test_blockwise_equals_whole(tmp_path, threshold_segmenter, block):
    img, n = blob_volume()
    store = write_ome_zarr(img, tmp_path / "b.ome.zarr", spacing=(1, 1, 1))
    whole = threshold_segmenter.segment(img, spacing=(1, 1, 1))
    res = segment_blockwise(open_volume(store), threshold_segmenter, block_shape=block, workers=2)
    got = open_labels(store, "nuclei").load()
    assert res.n_objects == whole.max() == n
    assert _same_partition(got, whole)
    # consecutive ids, ordered deterministically
    assert set(np.unique(got)) == set(range(n + 1))
    if block != (40, 96, 96):
        assert res.plan.n_blocks > 1
        assert res.seam_qc["merged_pairs"] > 0
        assert res.seam_qc["objects_before_stitching"] > n


def test_blockwise_is_deterministic(tmp_path, threshold_segmenter):
    img, _ = blob_volume(seed=3)
    store = write_ome_zarr(img, tmp_path / "d.ome.zarr", spacing=(1, 1, 1))
    a = segment_blockwise(
        open_volume(store),
        threshold_segmenter,
        block_shape=(16, 32, 32),
        workers=2,
        output=tmp_path / "a.zarr",
    ).labels.load()
    b = segment_blockwise(
        open_volume(store),
        threshold_segmenter,
        block_shape=(16, 32, 32),
        workers=1,
        output=tmp_path / "b.zarr",
    ).labels.load()
    np.testing.assert_array_equal(a, b)


def test_too_small_halo_leaves_seams_visible_in_qc(tmp_path, threshold_segmenter):
    img, n = blob_volume(seed=5)
    store = write_ome_zarr(img, tmp_path / "h.ome.zarr", spacing=(1, 1, 1))
    # a halo of 0 cannot see across faces: objects get cut, QC reports touching objects
    from local_segmenter import ThresholdSegmenter

    seg = ThresholdSegmenter(device="cpu", reach=0)
    res = segment_blockwise(open_volume(store), seg, block_shape=(16, 32, 32), output=tmp_path / "o.zarr")
    assert res.n_objects > n
    assert res.seam_qc["objects_touching_faces"] > 0
    assert res.seam_qc["merged_pairs"] == 0


def test_memory_budget_sets_blocks(tmp_path, threshold_segmenter):
    img, _ = blob_volume()
    store = write_ome_zarr(img, tmp_path / "m.ome.zarr", spacing=(1, 1, 1))
    res = segment_blockwise(
        open_volume(store),
        threshold_segmenter,
        memory_budget=8 * 2**20,
        workers=1,
        output=tmp_path / "o.zarr",
    )
    assert res.plan.outer_nbytes(40) <= 8 * 2**20
    with pytest.raises(InputError, match="too small"):
        segment_blockwise(
            open_volume(store), threshold_segmenter, memory_budget=2**20, output=tmp_path / "p.zarr"
        )


def test_multichannel_needs_channel_and_labels_go_into_store(tmp_path, threshold_segmenter):
    img, n = blob_volume()
    two = np.stack([np.zeros_like(img), img])
    store = write_ome_zarr(
        two,
        tmp_path / "c.ome.zarr",
        axes="czyx",
        spacing=(2, 0.5, 0.5),
        channel_names=["bg", "nuc"],
    )
    with pytest.raises(InputError, match="2 channels"):
        segment_blockwise(open_volume(store), threshold_segmenter)
    res = segment_blockwise(open_volume(store), threshold_segmenter, channel="nuc", block_shape=(24, 48, 48))
    assert res.n_objects == n
    assert open_volume(store).labels == ("nuclei",)
    lab = open_labels(store, "nuclei")
    assert lab.spacing == pytest.approx((2, 0.5, 0.5))
    assert len(lab.levels) == len(open_volume(store).levels)
    with pytest.raises(OutputError, match="already exists"):
        segment_blockwise(open_volume(store), threshold_segmenter, channel=1)


@pytest.mark.parametrize("channel", [0, -1, "0", "channel_0", "Channel_0", "channel0"])
def test_single_channel_answers_to_every_spelling_a_channel_axis_takes(tmp_path, channel):
    from dls_microscopy.segment.blockwise import select_image

    img, _ = blob_volume()
    vol = open_volume(write_ome_zarr(img, tmp_path / "one.ome.zarr", spacing=(1, 1, 1)))
    assert "c" not in vol.axes and vol.channel_names == ("channel_0",)
    assert select_image(vol, channel=channel).axes == "zyx"


@pytest.mark.parametrize("channel", [1, "DAPI", "channel_1"])
def test_single_channel_refuses_another_channel(tmp_path, channel):
    from dls_microscopy.segment.blockwise import select_image

    img, _ = blob_volume()
    vol = open_volume(write_ome_zarr(img, tmp_path / "one.ome.zarr", spacing=(1, 1, 1)))
    with pytest.raises(InputError, match=r"single channel \(channel_0\); channel .* does not exist"):
        select_image(vol, channel=channel)


def test_tiff_input_needs_output(tmp_path, threshold_segmenter):
    import tifffile

    from local_segmenter import ThresholdSegmenter

    img, n = blob_volume()
    tifffile.imwrite(tmp_path / "in.tif", (img * 100).astype(np.uint8))
    vol = open_volume(tmp_path / "in.tif")
    with pytest.raises(InputError, match="give an output path"):
        segment_blockwise(vol, threshold_segmenter)
    seg = ThresholdSegmenter(device="cpu", threshold=50)
    res = segment_blockwise(vol, seg, output=tmp_path / "labels.ome.zarr", block_shape=(20, 48, 48))
    assert res.n_objects == n
    assert open_volume(tmp_path / "labels.ome.zarr").metadata["label"] is True


def test_2d_rejected(tmp_path, threshold_segmenter):
    store = write_ome_zarr(np.ones((32, 32), np.uint8), tmp_path / "2d.ome.zarr")
    with pytest.raises(DimensionalityError, match="3D data required"):
        segment_blockwise(open_volume(store), threshold_segmenter)


def test_band_matching_iou():
    lower = np.zeros((4, 6), np.uint32)
    upper = np.zeros((4, 6), np.uint32)
    lower[:, 0:3] = 1  # same object seen by both
    upper[:, 0:3] = 5
    lower[:, 4] = 2  # seen differently: IoU 1/2 -> merged only at threshold <= 0.5
    upper[:, 4:6] = 7
    m = band_matches(lower, upper, axis=0, width_lower=2, iou_threshold=0.6)
    assert m.pairs.tolist() == [[1, 5]]
    m = band_matches(lower, upper, axis=0, width_lower=2, iou_threshold=0.5)
    assert sorted(m.pairs.tolist()) == [[1, 5], [2, 7]]
    assert m.touching_lower == 2 and m.touching_upper == 2


def test_global_relabel_is_order_independent():
    edges = [np.array([[5, 2]]), np.array([[2, 7], [3, 4]])]
    table, k = global_relabel_table(8, edges)
    # components {1},{2,5,7},{3,4},{6},{8}, numbered by smallest member
    assert k == 5
    assert table.tolist() == [0, 1, 2, 3, 3, 2, 4, 2, 5]
    table2, _ = global_relabel_table(8, edges[::-1])
    np.testing.assert_array_equal(table, table2)


def test_objects_larger_than_the_halo_are_counted_and_warned_about(tmp_path, caplog):
    """The halo covers objects up to 1.5 diameters; nuclei of 20 µm told 8 µm stay whole, reach past
    it, and the run says so (a review found a packed blastocyst differing from its one-block run)."""
    import logging

    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.segment import get_segmenter

    s = make_synthetic_nuclei((40, 160, 160), spacing=(1, 0.5, 0.5), diameter_um=20.0, density=0.3, seed=2)
    store = write_ome_zarr(s.image[:1], tmp_path / "i.ome.zarr", axes="czyx", spacing=s.spacing, n_levels=1)
    results = {}
    for told in (8.0, 20.0):
        seg = get_segmenter("watershed", {"diameter_um": told}, device="cpu")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
            res = segment_blockwise(
                open_volume(store), seg, output=tmp_path / f"l{told}.ome.zarr",
                memory_budget=(24 if told < 10 else 56) * 2**20, workers=1,
            )  # fmt: skip
        warned = any("reach past their block's halo" in r.getMessage() for r in caplog.records)
        results[told] = (res.plan.n_blocks, res.seam_qc["objects_beyond_halo"], warned)
    assert results[8.0][0] > 1 and results[8.0][1] >= 10 and results[8.0][2]
    # told the right diameter, the halo holds them (56 MiB: the smallest budget, many blocks)
    assert results[20.0][0] > 1 and results[20.0][1] == 0 and not results[20.0][2]


def test_a_diameter_far_beyond_the_image_is_refused_at_once(tmp_path):
    """5,000 µm on a crop of a few µm took minutes, 1e9 µm ran out of memory (GUI review)."""
    from dls_microscopy.segment import get_segmenter

    image = blob_volume()[0]
    vol = open_volume(write_ome_zarr(image, tmp_path / "b.ome.zarr", axes="zyx", spacing=(1, 0.5, 0.5)))
    for diameter in (5000.0, 1e9):
        seg = get_segmenter("watershed", {"diameter_um": diameter}, device="cpu")
        with pytest.raises(InputError, match=r"more than twice the image's diagonal"):
            segment_blockwise(vol, seg, output=tmp_path / "o.ome.zarr")
    assert not (tmp_path / "o.ome.zarr").exists()


def test_blocks_mostly_halo_are_warned_about_once_and_the_default_is_not(tmp_path, caplog, monkeypatch):
    """A 300 MB budget made a real volume's blocks mostly halo and the run 21x slower, silently."""
    import logging

    from dls_microscopy.segment import _blockwise_plan

    monkeypatch.setattr(_blockwise_plan, "_warned", set())
    img, _ = blob_volume()
    store = write_ome_zarr(img, tmp_path / "w.ome.zarr", spacing=(1, 1, 1))
    seg = ThresholdSegmenterForTests(device="cpu")
    warnings = {}
    for name, budget in (("tiny", 4 * 2**20), ("tiny again", 4 * 2**20), ("default", None)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
            res = segment_blockwise(
                open_volume(store), seg, memory_budget=budget, workers=1, output=tmp_path / f"{name}.zarr"
            )
        warnings[name] = [r.getMessage() for r in caplog.records if "the blocks compute" in r.getMessage()]
        if name == "tiny":
            overhead = res.plan.halo_overhead
    assert overhead > _blockwise_plan.HALO_OVERHEAD_WARNING
    (message,) = warnings["tiny"]
    assert f"{overhead:.1f}×" in message
    assert " × ".join(map(str, res.plan.halo)) in message  # the halo, and what to do
    assert re.search(r"--memory-budget.*compute\.memory_budget.* to about \d[\d.]*[MG]B", message)
    assert warnings["tiny again"] == []  # once per run: a pipeline's fields of one shape warn once
    assert warnings["default"] == [] and res.plan.halo_overhead == 1.0


def test_the_suggested_budget_brings_the_halo_overhead_down():
    from dls_microscopy.segment._blockwise_plan import HALO_OVERHEAD_TARGET, _plan, suggested_budget

    shape, halo, per_voxel = (236, 275, 271), (28, 39, 39), 60.0  # the IDR blastocyst at 8 µm
    plan, _ = _plan(shape, halo, 300 * 10**6, per_voxel, 2, None)
    assert plan.halo_overhead > 3
    better = suggested_budget(plan, 300 * 10**6, per_voxel, 2)
    assert _plan(shape, halo, better, per_voxel, 2, None)[0].halo_overhead <= HALO_OVERHEAD_TARGET
    # the smallest such budget in steps of √2: one step less is not enough
    assert _plan(shape, halo, int(better / 2**0.5) - 1, per_voxel, 2, None)[0].halo_overhead > 2


@pytest.mark.parametrize(
    ("shape", "spacing", "diameter"),
    [
        ((236, 275, 271), (0.5, 0.36, 0.36), 8.0),  # IDR 6001240 (mouse blastocyst), full resolution
        ((200, 2048, 2048), (0.5, 0.36, 0.36), 8.0),  # a large confocal stack
        ((1000, 2048, 2048), (1.0, 0.4, 0.4), 10.0),  # a light-sheet stack
        ((512, 1024, 1024), (1.0, 1.0, 1.0), 6.0),  # isotropic 1 µm
    ],
)
@pytest.mark.parametrize("workers", [2, 8])
def test_default_settings_on_typical_data_do_not_warn(shape, spacing, diameter, workers, caplog):
    import logging

    from dls_microscopy.segment import get_segmenter
    from dls_microscopy.segment._blockwise_plan import block_bytes_per_voxel, warn_if_halo_dominates
    from dls_microscopy.segment.blockwise import DEFAULT_MEMORY_BUDGET, plan_segmentation

    seg = get_segmenter("watershed", {"diameter_um": diameter}, device="cpu")
    plan, _ = plan_segmentation(shape, np.uint16, spacing, seg, DEFAULT_MEMORY_BUDGET, workers)
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        warned = warn_if_halo_dominates(
            plan,
            budget=DEFAULT_MEMORY_BUDGET,
            bytes_per_voxel=block_bytes_per_voxel(seg, np.uint16),
            workers=workers,
        )
    assert not warned and not caplog.records


def test_a_diameter_below_one_voxel_is_refused_and_a_few_voxels_warned(tmp_path, caplog):
    """0.01 µm on 0.2 µm voxels (or a file in parsecs) made hundreds of noise objects, exit 0."""
    import logging

    from dls_microscopy.segment import get_segmenter

    image = blob_volume()[0]
    vol = open_volume(write_ome_zarr(image, tmp_path / "b.ome.zarr", axes="zyx", spacing=(1, 0.5, 0.5)))
    seg = get_segmenter("watershed", {"diameter_um": 0.4}, device="cpu")
    with pytest.raises(InputError, match=r"diameter_um 0.4 µm is less than one voxel \(0.5 µm in y and x\)"):
        segment_blockwise(vol, seg, output=tmp_path / "o.ome.zarr")
    assert not (tmp_path / "o.ome.zarr").exists()
    with caplog.at_level(logging.WARNING):
        seg = get_segmenter("watershed", {"diameter_um": 1.2}, device="cpu")
        segment_blockwise(vol, seg, output=tmp_path / "few.ome.zarr")
    assert any("2.4 voxels across" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("block", [None, (16, 32, 32)])
def test_nan_pixels_are_segmented_as_background_with_a_warning_once(tmp_path, threshold_segmenter, block):
    """convert warned and features refused; segment said nothing (QA)."""
    from dls_microscopy.errors import NonFiniteDataWarning

    img, n = blob_volume()
    img = img.astype(np.float32)
    img[0, :2, :3] = np.nan  # 6 values, in one block's core
    with pytest.warns(NonFiniteDataWarning, match="written unchanged"):
        store = write_ome_zarr(img, tmp_path / "n.ome.zarr", spacing=(1, 1, 1))
    with pytest.warns(
        NonFiniteDataWarning, match=r"n.ome.zarr: 6 NaN/inf value\(s\) in float data; segmented as background"
    ) as caught:
        res = segment_blockwise(
            open_volume(store), threshold_segmenter, block_shape=block, output=tmp_path / "o.ome.zarr"
        )
    assert sum(issubclass(w.category, NonFiniteDataWarning) for w in caught) == 1
    assert res.n_objects == n and (res.plan.n_blocks > 1) == (block is not None)


KILLED_RUN = """
import sys, time
from dls_microscopy.io import open_volume
from dls_microscopy.segment import blockwise
from local_segmenter import ThresholdSegmenter

blockwise._stitch = lambda *args, **kwargs: time.sleep(600)  # killed here, its scratch folder made
output = sys.argv[2] if len(sys.argv) > 2 else None
segmenter = ThresholdSegmenter(device="cpu")
blockwise.segment_blockwise(open_volume(sys.argv[1]), segmenter, block_shape=(16, 32, 32), output=output)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("standalone", [False, True])
def test_a_killed_runs_scratch_is_removed_by_the_next_run_and_a_live_ones_kept(
    tmp_path, threshold_segmenter, standalone
):
    """SIGKILL mid-run left a '.nuclei.scratch-XXXX' folder in the store's labels/ (or beside the
    output) that no later run removed, while partial label images were swept."""
    img, _ = blob_volume()
    store = write_ome_zarr(img, tmp_path / "k.ome.zarr", spacing=(1, 1, 1))
    output = tmp_path / "out.ome.zarr" if standalone else None
    where = tmp_path if standalone else store / "labels"
    before = set(os.listdir(tmp_path))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    args = [sys.executable, "-c", KILLED_RUN, str(store), *([str(output)] if standalone else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if where.is_dir() and any(".partial-" in p or "scratch" in p for p in os.listdir(where)):
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.5)  # its scratch store is being written into
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        left = [p for p in os.listdir(where) if p.startswith(".")]
        assert len(left) == 1, left
        # a concurrent run's scratch folder, its process alive: not a leftover
        name = f"{'out.ome.zarr' if standalone else 'nuclei'}.partial-{live.pid}-scratch-bbbb2222"
        (where / f".{name}@{socket.gethostname()}").mkdir()
        segment_blockwise(open_volume(store), threshold_segmenter, block_shape=(16, 32, 32), output=output)
    finally:
        for p in (proc, live):
            p.kill()
            p.wait()
    hidden = sorted(p for p in os.listdir(where) if p.startswith("."))
    assert hidden == [f".{name}@{socket.gethostname()}"]
    if standalone:
        assert set(os.listdir(tmp_path)) - before == {"out.ome.zarr", hidden[0]}


def _mark_read_only(store: Path, which: str) -> list[Path]:
    """chmod as shared reference data is kept: ``which`` zarr.json (444), or every file and folder."""
    if which != "all":
        (store / which).chmod(0o444)
        return [store / which]
    paths = sorted(store.rglob("*"), key=lambda p: -len(p.parts))  # folders after their contents
    for p in [*paths, store]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    return [*paths, store]


@pytest.mark.parametrize("which", ["zarr.json", "labels/zarr.json", "all"])
def test_a_store_marked_read_only_is_not_written_into(tmp_path, threshold_segmenter, which):
    """Root ignores permissions: segment wrote labels into a store whose files were all mode 444."""
    from dls_microscopy.io import write_labels

    img, _ = blob_volume()
    lab = np.zeros(img.shape, np.uint8)
    store = write_ome_zarr(img, tmp_path / "r.ome.zarr", spacing=(1, 1, 1), labels={"cells": lab})
    before = sorted(p.relative_to(store).as_posix() for p in store.rglob("*"))
    marked = _mark_read_only(store, which)
    try:
        # as root the mark is what refuses; another user is refused by the permissions themselves
        reason = "marked read-only" if which != "all" or os.geteuid() == 0 else "not writable"
        with pytest.raises(OutputError, match=f"{reason}.*give an output path") as info:
            segment_blockwise(open_volume(store), threshold_segmenter, block_shape=(16, 32, 32))
        assert str(store) in str(info.value)
        with pytest.raises(OutputError, match=reason):
            write_labels(store, "nuclei", lab)
        assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*")) == before
        # an output path is the way out
        res = segment_blockwise(open_volume(store), threshold_segmenter, output=tmp_path / "n.ome.zarr")
        assert res.n_objects > 0
    finally:
        for p in reversed(marked):
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_another_tools_label_image_in_the_store_is_refused_before_segmenting(tmp_path, threshold_segmenter):
    """--overwrite of labels/<name> another tool wrote was refused only after segmenting (review)."""
    import json

    img, _ = blob_volume()
    store = write_ome_zarr(
        img, tmp_path / "s.ome.zarr", spacing=(1, 1, 1), labels={"nuclei": (img > 0).astype(np.uint8)}
    )
    meta = store / "labels" / "nuclei" / "zarr.json"
    doc = json.loads(meta.read_text())
    for ms in doc["attributes"]["ome"]["multiscales"]:
        ms.pop("metadata", None)  # as another tool writes it: no mark of ours
    meta.write_text(json.dumps(doc))
    calls = []
    threshold_segmenter.segment = lambda *a, **k: calls.append(1)  # must not be reached
    with pytest.raises(OutputError, match="did not write"):
        segment_blockwise(open_volume(store), threshold_segmenter, overwrite=True)
    assert not calls
