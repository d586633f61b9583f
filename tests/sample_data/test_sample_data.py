"""Tests of the bundled sample data: the synthetic nuclei generator, the real volume, the writer."""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from dls_microscopy.errors import InputError
from dls_microscopy.sample_data import (
    NUCLEI_1135_SHA256,
    SAMPLE_FILES,
    SyntheticNuclei,
    load_nuclei_1135,
    make_synthetic_nuclei,
    nuclei_1135_resource,
    write_sample_data,
)

SMALL = (16, 64, 64)


@pytest.fixture(scope="module")
def sample() -> SyntheticNuclei:
    """The default sample (48×160×160, seed 0), made once for the module."""
    return make_synthetic_nuclei(seed=0)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique ``(a, b)``, ``a < b``, of different nuclei sharing a 6-connected face."""
    pairs = []
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        u, v = a[:-1].ravel(), a[1:].ravel()
        face = (u != v) & (u > 0) & (v > 0)
        pairs.append(np.sort(np.stack([u[face], v[face]], axis=1), axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


# -- synthetic generator -----------------------------------------------------------------
def test_shapes_dtypes_axes(sample):
    assert sample.image.shape == (2, 48, 160, 160)
    assert sample.image.dtype == np.uint16
    assert sample.axes == "czyx"
    assert sample.labels.shape == (48, 160, 160)
    assert sample.labels.dtype == np.uint32
    assert sample.spacing == (1.0, 0.3, 0.3)
    assert sample.channel_names == ("DAPI", "LaminB1")
    assert sample.seed == 0
    volume = sample.as_volume()
    assert volume.axes == "czyx" and volume.spacing == (1.0, 0.3, 0.3)
    assert volume.channel_names == ("DAPI", "LaminB1")


def test_same_seed_same_arrays_other_seed_differs():
    a = make_synthetic_nuclei(SMALL, seed=7)
    b = make_synthetic_nuclei(SMALL, seed=7)
    c = make_synthetic_nuclei(SMALL, seed=8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert not np.array_equal(a.image, c.image)


def test_labels_consecutive_and_count_plausible(sample):
    n = sample.n_nuclei
    np.testing.assert_array_equal(np.unique(sample.labels), np.arange(n + 1))
    # Nominal count: density × box volume / mean ellipsoid volume (radii uniform ±25 %).
    r_lo, r_hi = 3.5 * 0.75, 3.5 * 1.25
    mean_volume = math.pi / 3 * (r_lo + r_hi) * (r_lo**2 + r_hi**2)
    box = 47 * 1.0 * (159 * 0.3) ** 2
    assert 0.7 * 0.5 * box / mean_volume <= n <= 1.05 * 0.5 * box / mean_volume
    assert 0.25 < (sample.labels > 0).mean() < 0.6


def test_every_nucleus_is_one_connected_piece(sample):
    for i, box in enumerate(ndimage.find_objects(sample.labels), start=1):
        _, pieces = ndimage.label(sample.labels[box] == i)
        assert pieces == 1, f"nucleus {i} has {pieces} pieces"


def test_many_nuclei_touch_a_neighbour(sample):
    pairs = _touching_pairs(sample.labels)
    touching = np.unique(pairs)
    assert len(touching) >= 0.5 * sample.n_nuclei
    assert len(pairs) >= 0.5 * sample.n_nuclei


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((20, 64, 64), (1.0, 0.3, 0.3)),
        ((12, 48, 48), (2.0, 0.4, 0.4)),
        ((24, 40, 40), (0.5, 0.5, 0.5)),
    ],
    ids=["z3.3x", "z5x", "isotropic"],
)
def test_anisotropy_follows_spacing(shape, spacing):
    s = make_synthetic_nuclei(shape, spacing=spacing, diameter_um=5.0, noise=0.0, seed=3)
    z_over_x = []
    for i, box in enumerate(ndimage.find_objects(s.labels), start=1):
        if any(b.start == 0 or b.stop == n for b, n in zip(box, s.labels.shape, strict=True)):
            continue  # cut by the volume's border
        zz, _, xx = np.nonzero(s.labels[box] == i)
        z_over_x.append(zz.std() / xx.std())  # spread in voxels along z relative to x
    assert len(z_over_x) >= 3
    expected = spacing[2] / spacing[0]  # same physical size → extent in voxels ∝ 1 / spacing
    assert 0.7 * expected < np.median(z_over_x) < 1.4 * expected


def test_nuclei_brighter_than_background_and_envelope_on_the_rim(sample):
    stain, envelope = (c.astype(np.float64) for c in sample.image)
    inside = sample.labels > 0
    # Background: voxels at least 2 µm (two z steps, ~7 xy pixels) away from any nucleus.
    far = ~ndimage.binary_dilation(inside, np.ones((5, 15, 15), bool))
    assert far.sum() > 1000
    assert stain[inside].mean() > stain[far].mean() + 5 * stain[far].std()
    # The envelope stain peaks on the surface of the nuclei, not in their core.
    core = ndimage.binary_erosion(inside, np.ones((3, 7, 7), bool))
    rim = inside & ~ndimage.binary_erosion(inside, np.ones((1, 3, 3), bool))
    assert envelope[rim].mean() > 1.3 * envelope[core].mean()
    assert envelope[core].mean() > envelope[far].mean()


def test_noise_zero_is_smooth_and_noise_scales():
    quiet = make_synthetic_nuclei(SMALL, seed=2, noise=0.0)
    loud = make_synthetic_nuclei(SMALL, seed=2, noise=3.0)
    np.testing.assert_array_equal(quiet.labels, loud.labels)
    residual = loud.image.astype(np.float64) - quiet.image
    assert abs(residual.mean()) < 2.0  # noise does not shift the mean
    assert residual.std() > 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (10, 10)},
        {"shape": (0, 10, 10)},
        {"spacing": (1.0, 0.0, 0.3)},
        {"spacing": (1.0, float("nan"), 0.3)},
        {"density": 0.0},
        {"noise": -1.0},
        {"diameter_um": 0.0},
        {"channel_names": ("DAPI",)},
    ],
)
def test_bad_parameters_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_synthetic_nuclei(**kwargs)


# -- the packaged real volume --------------------------------------------------------------
def test_packaged_real_volume_is_intact():
    with importlib.resources.as_file(nuclei_1135_resource()) as path:
        assert _sha256(path) == NUCLEI_1135_SHA256
    real = load_nuclei_1135()
    assert real.image.shape == (1, 100, 100, 100) and real.image.dtype == np.uint8
    assert real.n_nuclei == 54 and len(np.unique(real.labels)) == 55
    np.testing.assert_allclose(real.spacing, (0.2837, 0.1268, 0.1268), atol=1e-3)


@pytest.mark.shared_data
def test_packaged_real_volume_matches_its_source(shared_data):
    assert _sha256(shared_data / "nuclei_gold_crops" / "1135_mini.h5") == NUCLEI_1135_SHA256


# -- write_sample_data ---------------------------------------------------------------------
# Audit hooks cannot be removed once added, so this one records only while asked to.
_OPENED: list[str] = []
_HOOK = {"installed": False, "recording": False}


def _record_opens(event: str, args: tuple) -> None:
    if _HOOK["recording"] and event == "open" and isinstance(args[0], str | bytes | Path):
        _OPENED.append(str(args[0]))


def _ome_pixels(path: Path) -> ET.Element:
    with tifffile.TiffFile(path) as tf:
        root = ET.fromstring(tf.ome_metadata)
    ns = {"ome": root.tag[1:].split("}")[0]}
    return root.find("ome:Image/ome:Pixels", ns), ns


def test_write_sample_data(tmp_path, sample):
    if not _HOOK["installed"]:
        sys.addaudithook(_record_opens)
        _HOOK["installed"] = True
    outdir = tmp_path / "new" / "sample"
    _OPENED.clear()
    _HOOK["recording"] = True
    try:
        paths = write_sample_data(outdir, seed=0)
    finally:
        _HOOK["recording"] = False
    assert tuple(paths) == SAMPLE_FILES
    assert all(p.parent == outdir and p.is_file() for p in paths.values())
    # The generator and the writer never look at ../shared (the project must work without it).
    assert any(Path(p).parent == outdir for p in _OPENED)  # the hook did see the writes
    assert not [p for p in _OPENED if "shared" in Path(p).parts], _OPENED

    image_path = paths["synthetic_nuclei.ome.tif"]
    with tifffile.TiffFile(image_path) as tf:
        assert tf.is_ome
        assert tf.series[0].axes == "CZYX"
        np.testing.assert_array_equal(tf.series[0].asarray(), sample.image)
        assert tf.pages[0].compression != tifffile.COMPRESSION.NONE
    pixels, ns = _ome_pixels(image_path)
    assert (pixels.get("SizeC"), pixels.get("SizeZ"), pixels.get("SizeY")) == ("2", "48", "160")
    for axis, size in zip("ZYX", sample.spacing, strict=True):
        assert float(pixels.get(f"PhysicalSize{axis}")) == pytest.approx(size)
        assert pixels.get(f"PhysicalSize{axis}Unit") == "µm"
    names = [c.get("Name") for c in pixels.findall("ome:Channel", ns)]
    assert names == ["DAPI", "LaminB1"]

    labels_path = paths["synthetic_nuclei_labels.ome.tif"]
    with tifffile.TiffFile(labels_path) as tf:
        assert tf.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tf.series[0].asarray(), sample.labels)
    pixels, _ = _ome_pixels(labels_path)
    assert float(pixels.get("PhysicalSizeZ")) == pytest.approx(1.0)
    assert float(pixels.get("PhysicalSizeX")) == pytest.approx(0.3)

    h5_path = paths["nuclei_1135.h5"]
    with importlib.resources.as_file(nuclei_1135_resource()) as packaged:
        assert _sha256(h5_path) == _sha256(packaged) == NUCLEI_1135_SHA256
    with h5py.File(h5_path, "r") as f:
        assert f["raw"].shape == f["label"].shape == (100, 100, 100)
        assert "element_size_um" in f["raw"].attrs

    readme = paths["README.md"].read_text(encoding="utf-8")
    assert "seed=0" in readme and NUCLEI_1135_SHA256 in readme and "S-BIAD1026" in readme


def test_write_sample_data_replaces_existing_files(tmp_path):
    for name in SAMPLE_FILES:
        (tmp_path / name).write_bytes(b"stale")
    paths = write_sample_data(tmp_path, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SAMPLE_FILES)  # no temp left
    with tifffile.TiffFile(paths["synthetic_nuclei.ome.tif"]) as tf:
        assert tf.series[0].shape == (2, 48, 160, 160)
    assert "seed=1" in paths["README.md"].read_text(encoding="utf-8")


def test_attenuation_length_dims_deep_nuclei_and_is_checked():
    """Thick samples: the signal falls with depth; the default (200 µm) keeps the image as before."""
    clear = make_synthetic_nuclei((24, 64, 64), seed=3)
    thick = make_synthetic_nuclei((24, 64, 64), seed=3, attenuation_length_um=12.0)
    np.testing.assert_array_equal(clear.labels, thick.labels)
    inside = clear.labels > 0

    def ratio(s):  # mean nucleus signal of the deepest quarter over the top quarter
        img = s.image[0].astype(float) - np.percentile(s.image[0], 5)
        top, deep = inside.copy(), inside.copy()
        top[6:], deep[:18] = False, False
        return img[deep].mean() / img[top].mean()

    assert ratio(thick) < 0.5 * ratio(clear)
    with pytest.raises(InputError, match="attenuation_length_um"):
        make_synthetic_nuclei((8, 16, 16), attenuation_length_um=0)
