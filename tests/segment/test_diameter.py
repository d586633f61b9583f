"""Estimating the nucleus diameter from the image (``estimate_diameter``, ``estimate-diameter``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dls_microscopy.cli import main
from dls_microscopy.errors import InputError
from dls_microscopy.io import open_volume, write_ome_zarr
from dls_microscopy.sample_data import make_synthetic_nuclei
from dls_microscopy.segment import estimate_diameter
from dls_microscopy.segment.diameter import _central_region, median_object_diameter

# (shape, spacing µm, generator diameter µm, options, relative error allowed): anisotropic 7 µm
# nuclei, small 4 µm nuclei at finer sampling, coarse 3 µm z with axial blur, where the estimate
# runs low (5.54 µm for a gold median of 6.53 µm on this seed: objects come out smaller than told
# there, and the steps drift down slowly)
VOLUMES = [
    ((48, 160, 160), (1.0, 0.3, 0.3), 7.0, {}, 0.1),
    ((48, 160, 160), (0.5, 0.2, 0.2), 4.0, {"psf_sigma_um": (0.4, 0.1, 0.1)}, 0.1),
    ((16, 160, 160), (3.0, 0.3, 0.3), 7.0, {"psf_sigma_um": (1.5, 0.15, 0.15)}, 0.2),
]


@pytest.mark.parametrize(("shape", "spacing", "diameter", "extra", "error"), VOLUMES)
def test_estimate_finds_the_nuclei_median_diameter(shape, spacing, diameter, extra, error):
    s = make_synthetic_nuclei(shape, spacing=spacing, diameter_um=diameter, seed=3, **extra)
    gold, n_gold = median_object_diameter(s.labels, s.spacing)
    est = estimate_diameter(s.image[0], spacing=s.spacing)
    assert n_gold > 20 and est.n_objects > 20
    assert abs(est.diameter_um - gold) <= error * gold, (est, gold)
    assert est.steps_um[0] == 20.0 and est.steps_um[-1] == pytest.approx(est.diameter_um, abs=0.01)
    # where it starts (above the nuclei) does not matter
    other = estimate_diameter(s.image[0], spacing=s.spacing, start_um=30.0)
    assert abs(other.diameter_um - est.diameter_um) <= 0.05 * est.diameter_um


def test_median_object_diameter_leaves_out_cut_objects():
    zz, yy, xx = np.ogrid[:40, :40, :40]
    labels = np.zeros((40, 40, 40), np.uint32)
    centres = [(10, 10, 10), (10, 30, 10), (30, 10, 30), (30, 30, 30), (20, 20, 20), (10, 10, 30)]
    for i, c in enumerate(centres, 1):
        labels[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 16] = i
    labels[:, :, :3] = 99  # a slab cut by the volume's face
    d, n = median_object_diameter(labels, (1.0, 1.0, 1.0))
    sphere_voxels = np.count_nonzero(labels == 1)
    assert n == 6 and d == pytest.approx((6 * sphere_voxels / np.pi) ** (1 / 3))
    # too few whole objects: every object counts
    _, n_all = median_object_diameter(labels[:, :, :20], (1.0, 1.0, 1.0))
    assert n_all == 4


def test_noise_and_empty_images_are_refused_with_a_reason():
    rng = np.random.default_rng(0)
    noise = rng.normal(100, 10, (32, 128, 128)).astype(np.float32)
    with pytest.raises(InputError, match=r"no nuclei resolved.*give the diameter"):
        estimate_diameter(noise, spacing=(1.0, 0.3, 0.3))
    with pytest.raises(InputError, match="no objects found"):
        estimate_diameter(np.zeros((16, 64, 64), np.uint16), spacing=(1.0, 0.3, 0.3))
    with pytest.raises(InputError, match="spacing"):
        estimate_diameter(noise)


def test_a_volume_is_read_in_a_central_region_only(tmp_path):
    s = make_synthetic_nuclei((48, 192, 192), spacing=(1.0, 0.3, 0.3), diameter_um=7.0, seed=4)
    store = write_ome_zarr(s.image, tmp_path / "n.ome.zarr", axes="czyx", spacing=s.spacing, n_levels=1)
    vol = open_volume(store)
    est = estimate_diameter(vol, channel=0, max_voxels=600_000)
    region = tuple(slice(a, b) for a, b in est.region)
    assert region == _central_region((48, 192, 192), s.spacing, 600_000)
    size = [b - a for a, b in est.region]
    assert np.prod(size) <= 600_000 and size[1] < 192 and size[1] == size[2]
    # the box is as long in µm on every axis that fits: z (1 µm) has a third of y's voxels
    assert abs(size[0] * 1.0 - size[1] * 0.3) <= 1.0
    alone = estimate_diameter(s.image[0][region], spacing=s.spacing, max_voxels=600_000)
    assert alone.diameter_um == est.diameter_um and alone.steps_um == est.steps_um


def test_cli_estimate_diameter_and_segment_diameter_auto(capsys, tmp_path):
    s = make_synthetic_nuclei((32, 128, 128), spacing=(1.0, 0.3, 0.3), diameter_um=7.0, seed=5)
    store = write_ome_zarr(s.image[:1], tmp_path / "n.ome.zarr", axes="czyx", spacing=s.spacing, n_levels=1)
    assert main(["estimate-diameter", str(store), "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["diameter_um"] == estimate_diameter(s.image[0], spacing=s.spacing).diameter_um
    assert main(["estimate-diameter", str(store)]) == 0
    assert f"--diameter {est['diameter_um']:g}" in capsys.readouterr().out
    out = tmp_path / "labels.ome.zarr"
    assert main(["segment", str(store), str(out), "--diameter", "auto", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["diameter_estimated"]["diameter_um"] == est["diameter_um"] and summary["objects"] > 10
    assert (summary["diameter_um"], summary["diameter_source"]) == (est["diameter_um"], "estimated")
    # the diameter used is said, also without --json and when it is the default (it was silent)
    assert main(["segment", str(store), str(tmp_path / "d.ome.zarr"), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "diameter 8 µm (default; give --diameter, or --diameter auto to estimate it)" in said
    assert (
        main(["segment", str(store), str(tmp_path / "a.ome.zarr"), "--diameter", "auto", "--no-progress"])
        == 0
    )
    assert f"diameter {est['diameter_um']:g} µm (estimated)" in capsys.readouterr().out
    assert main(["segment", str(store), str(tmp_path / "x.ome.zarr"), "--diameter", "big"]) == 2
    assert "--diameter takes a number of µm or 'auto'" in capsys.readouterr().err
    assert not (tmp_path / "x.ome.zarr").exists()
    assert main(["estimate-diameter", str(store), "--start", "-3"]) == 2
    assert "--start must be > 0" in capsys.readouterr().err


def test_an_estimate_alternating_between_two_close_diameters_settles_between_them(monkeypatch):
    """Told 6.97 µm a small image gave 5.91, told 5.91 it gave 6.97, until it gave up."""
    from dls_microscopy.segment import base, diameter

    told: list[float] = []

    class Fake:
        def __init__(self, d: float) -> None:
            self.d = d

        def segment(self, data, spacing):
            told.append(self.d)
            return np.zeros((4, 4, 4), np.uint32)

    answers = {20.0: 12.0, 12.0: 7.0, 7.0: 6.0, 6.0: 7.0}  # 7 and 6 alternate
    monkeypatch.setattr(base, "get_segmenter", lambda name, params, device=None: Fake(params["diameter_um"]))
    monkeypatch.setattr(diameter, "median_object_diameter", lambda labels, spacing: (answers[told[-1]], 9))
    est = estimate_diameter(np.zeros((8, 8, 8)), spacing=(0.1, 0.1, 0.1))
    assert est.diameter_um == pytest.approx(np.sqrt(42), abs=0.01)
    assert est.steps_um[-1] == pytest.approx(6.481)
    assert told == [20.0, 12.0, 7.0, 6.0]  # one segmentation per diameter told
    # two values too far apart: the image does not hold one
    answers.update({7.0: 5.0, 5.0: 7.0})
    told.clear()
    with pytest.raises(InputError, match="did not settle"):
        estimate_diameter(np.zeros((8, 8, 8)), spacing=(0.1, 0.1, 0.1))


def test_progress_is_reported_between_rounds_and_may_stop_the_estimate():
    # the app's Cancel raises from its progress callback: the estimate stops at the next round
    s = make_synthetic_nuclei((24, 96, 96), spacing=(1.0, 0.5, 0.5), diameter_um=7.0, seed=3)
    reports: list[tuple[str, int, int]] = []
    est = estimate_diameter(s.image[0], spacing=s.spacing, progress=lambda *a: reports.append(a))
    rounds = len(est.steps_um) - 1
    assert [r[1] for r in reports] == [0, *range(rounds)] and {r[2] for r in reports} == {12}

    class Stop(Exception):
        pass

    def stop_at_round_1(description: str, done: int, total: int) -> None:
        if done == 1 and len(calls) > 1:
            raise Stop
        calls.append(done)

    calls: list[int] = []
    with pytest.raises(Stop):
        estimate_diameter(s.image[0], spacing=s.spacing, progress=stop_at_round_1)
    assert calls == [0, 0]  # the region read, one round segmented: no second
