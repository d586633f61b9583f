"""Fixed-size object crops for the image encoder, streamed in batches.

Each object is seen through a cube of ``fov_um`` µm centred on the centre of its
bounding box, resampled to ``size``³ isotropic voxels (trilinear,
:func:`scipy.ndimage.map_coordinates`), so anisotropic stacks and objects of
every size give crops in one physical scale: an object twice as large looks
twice as large, and size stays part of what the encoder sees.  Objects larger
than the field of view are cut, never shrunk.

With ``frame="principal"`` (what new models use) the cube is centred on the
object's centroid and rotated onto its principal axes, the frame the shape
encoder's point clouds are put in: nuclei lie in every 3D orientation, and the
cube's 48 symmetries that training and test-time augmentation cover leave up to
63° of pose for the network to learn to ignore.  In this frame pose is gone
before the network; the axes' remaining ambiguities (signs, swaps of near-equal
axes) are among those 48 symmetries.  ``frame="axes"`` keeps the image's axes
(models saved before the option).

Intensities are normalised per image and channel, ``(x - p_lo) / (p_hi - p_lo)``
with the 0.5th and 99.8th percentiles of the image (computed once, over a
strided subsample; :func:`intensity_range`), so the same object gives the same
crop in any block plan, while contrast between images is evened out.  Crops are
*masked*: voxels outside the object (its nearest-neighbour resampled mask) are 0,
so neighbours never leak into an object's embedding.

With ``mask_channel`` the object's mask itself is appended as one more channel
(1 inside, 0 outside).  The intensity channels carry size and shape only
through the object's brightness, which varies from nucleus to nucleus and
between wells; the mask carries them independently of it.  On the synthetic
phenotype set it raised the image embedding's replicate mAP from 0.76 to 0.90
(``benchmarks/run_embeddings.py``, validation plate).

Memory: one batch of crops plus the union of their source regions (read at once
when under ``max_read_voxels``, else object by object).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from dls_microscopy.errors import InputError
from dls_microscopy.features.embeddings.point_clouds import principal_axes

__all__ = ["CropSpec", "intensity_range", "iter_object_crops", "principal_frame"]

log = logging.getLogger(__name__)

#: Percentiles that map to 0 and 1.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.8
#: Voxels of one channel sampled at most for the percentiles.
_PERCENTILE_SAMPLES = 1 << 22
#: The union of a batch's regions is read at once up to this many voxels.
_MAX_READ_VOXELS = 1 << 24


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """How objects are cropped for the image encoder.

    Attributes
    ----------
    size : int
        Crop edge in voxels (isotropic).
    fov_um : float
        Crop edge in µm; voxel size is ``fov_um / size``.
    mask : bool
        Zero every voxel outside the object.
    mask_channel : bool
        Append the object's mask as a last channel.
    frame : {"axes", "principal"}
        ``"axes"``: the crop's axes are the image's ``(z, y, x)``, centred on the
        bounding box.  ``"principal"``: centred on the object's centroid and
        rotated onto its principal axes (see :func:`principal_frame`).
    """

    size: int = 24
    fov_um: float = 16.0
    mask: bool = True
    mask_channel: bool = False
    frame: str = "axes"

    @property
    def extra_channels(self) -> int:
        """Channels added to the image's (1 with ``mask_channel``, else 0)."""
        return int(bool(self.mask_channel))

    def __post_init__(self) -> None:
        if int(self.size) < 8:
            raise InputError(f"crop size must be >= 8 voxels, got {self.size}")
        if not self.fov_um > 0:
            raise InputError(f"crop field of view must be > 0 µm, got {self.fov_um}")
        if self.frame not in ("axes", "principal"):
            raise InputError(f"crop frame must be 'axes' or 'principal', got {self.frame!r}")


def intensity_range(data: Any) -> np.ndarray:
    """Per-channel ``(p_lo, p_hi)`` of an image, from a strided subsample.

    Parameters
    ----------
    data : (C, Z, Y, X) ndarray or dask array

    Returns
    -------
    (C, 2) float64 ndarray
        ``p_hi > p_lo`` always (1 is added to a flat channel's ``p_hi``).
    """
    n = int(np.prod(data.shape[1:]))
    step = max(1, int(np.ceil((n / _PERCENTILE_SAMPLES) ** (1 / 3))))
    out = np.zeros((data.shape[0], 2))
    for c in range(data.shape[0]):
        sample = np.asarray(data[c, ::step, ::step, ::step], dtype=np.float64).ravel()
        lo, hi = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
        out[c] = lo, hi if hi > lo else lo + 1.0
    return out


def _regions(
    lo: np.ndarray, hi: np.ndarray, spacing: np.ndarray, spec: CropSpec, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounding-box centres (voxels) and the clipped source regions ``[a, b)`` each crop reads.

    Axis-aligned crops read their field of view.  A rotated (principal-frame) crop of a
    masked object reads only the object's bounding box and the voxels that trilinear
    interpolation at its edge needs; unmasked, it reads the rotated cube's enclosing box.
    """
    centre = (lo + hi - 1) / 2.0
    if spec.frame == "principal" and spec.mask:
        a, b = lo.astype(np.int64) - 2, hi.astype(np.int64) + 2
    else:
        half = spec.fov_um / 2.0 / spacing * (np.sqrt(3.0) if spec.frame == "principal" else 1.0)
        a = np.floor(centre - half).astype(np.int64) - 1
        b = np.ceil(centre + half).astype(np.int64) + 2
    return centre, np.maximum(a, 0), np.minimum(b, np.asarray(shape, np.int64))


def principal_frame(inside: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (voxels) and principal axes (µm) of an object's mask.

    Parameters
    ----------
    inside : (Z, Y, X) bool ndarray
        The object's mask (any region holding all of it).
    spacing : (3,) float ndarray
        µm per voxel.

    Returns
    -------
    centroid : (3,) float64 ndarray
        In ``inside``'s voxel coordinates.
    axes : (3, 3) float64 ndarray
        Columns: unit principal axes in ``(z, y, x)`` µm, by decreasing variance of
        the voxel centres, signed by their third moment
        (:func:`~dls_microscopy.features.embeddings.point_clouds.principal_axes`, the
        shape encoder's canonical frame).
    """
    um = np.argwhere(inside) * spacing
    if len(um) == 0:
        return (np.asarray(inside.shape) - 1) / 2.0, np.eye(3)
    mean, axes, _ = principal_axes(um)
    return mean / spacing, axes


def _resample(
    image: np.ndarray,
    labels: np.ndarray,
    object_id: int,
    origin: np.ndarray,
    centre: np.ndarray,
    spacing: np.ndarray,
    spec: CropSpec,
    scale: np.ndarray,
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """One crop ``(C + spec.extra_channels, S, S, S)`` float32 from source arrays that start at ``origin``.

    ``box`` (the object's bounding box ``[lo, hi)`` in image voxels) is needed by
    principal-frame crops, whose centre and axes come from the mask inside it.
    """
    s = int(spec.size)
    t = (np.arange(s) + 0.5) * (spec.fov_um / s) - spec.fov_um / 2.0  # µm from the centre
    inside = labels == object_id
    if spec.frame == "principal":
        if box is None:
            raise ValueError("principal-frame crops need the object's bounding box")
        lo = np.maximum(box[0] - origin, 0)
        hi = box[1] - origin
        sub = tuple(slice(int(i), int(j)) for i, j in zip(lo, hi, strict=True))
        c, axes = principal_frame(inside[sub], spacing)
        grid = np.stack(np.meshgrid(t, t, t, indexing="ij"), axis=0).reshape(3, -1)  # crop-frame µm
        coords = ((c + lo)[:, None] + (axes @ grid) / spacing[:, None]).reshape(3, s, s, s)
    else:
        axes_t = [centre[i] - origin[i] + t / spacing[i] for i in range(3)]
        coords = np.stack(np.meshgrid(*axes_t, indexing="ij"), axis=0)
    n_ch = image.shape[0]
    out = np.empty((n_ch + spec.extra_channels, s, s, s), np.float32)
    for c in range(n_ch):
        norm = (image[c].astype(np.float32) - np.float32(scale[c, 0])) / np.float32(scale[c, 1] - scale[c, 0])
        out[c] = ndimage.map_coordinates(norm, coords, order=1, mode="constant", cval=0.0)
    if spec.mask or spec.mask_channel:
        inside = ndimage.map_coordinates(inside, coords, order=0, mode="constant", cval=False)
        if spec.mask:
            out[:n_ch] *= inside[None]
        if spec.mask_channel:
            out[n_ch] = inside
    return out


def iter_object_crops(
    data: Any,
    labels: Any,
    *,
    spacing: Sequence[float],
    spec: CropSpec,
    index: Any = None,
    scale: np.ndarray | None = None,
    batch_size: int = 64,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ids, crops)`` batches for every object, ids ascending.

    Parameters
    ----------
    data : (C, Z, Y, X) ndarray or dask array
        Image; read lazily, one batch region at a time.
    labels : (Z, Y, X) integer ndarray or dask array
    spacing : tuple of 3 float
        Voxel size in µm.
    spec : CropSpec
    index : ObjectIndex, optional
        Bounding boxes (built with one pass over ``labels`` when not given).
    scale : (C, 2) ndarray, optional
        Intensity range (default :func:`intensity_range` of ``data``).
    batch_size : int
        Objects per batch.

    Yields
    ------
    ids : (B,) uint64 ndarray
    crops : (B, C + spec.extra_channels, S, S, S) float32 ndarray
        The image's channels, then the object's mask when ``spec.mask_channel``.
    """
    from dls_microscopy.geometry.index import build_object_index

    if tuple(data.shape[1:]) != tuple(labels.shape):
        raise InputError(f"image {tuple(data.shape[1:])} and labels {tuple(labels.shape)} differ in shape")
    sp = np.asarray(spacing, np.float64)
    if index is None:
        index = build_object_index(labels, spacing=tuple(sp))
    if scale is None:
        scale = intensity_range(data)
    centre, a, b = _regions(index.lo, index.hi, sp, spec, labels.shape)
    n = len(index)
    for start in range(0, n, max(int(batch_size), 1)):
        rows = np.arange(start, min(start + batch_size, n))
        ua, ub = a[rows].min(axis=0), b[rows].max(axis=0)
        crops = np.empty((len(rows), data.shape[0] + spec.extra_channels) + (int(spec.size),) * 3, np.float32)
        if int(np.prod(ub - ua)) <= _MAX_READ_VOXELS:
            region = tuple(slice(int(i), int(j)) for i, j in zip(ua, ub, strict=True))
            img = np.asarray(data[(slice(None), *region)])
            lab = np.asarray(labels[region])
            for k, r in enumerate(rows):
                box = (index.lo[r], index.hi[r])
                crops[k] = _resample(img, lab, int(index.ids[r]), ua, centre[r], sp, spec, scale, box)
        else:
            for k, r in enumerate(rows):
                region = tuple(slice(int(i), int(j)) for i, j in zip(a[r], b[r], strict=True))
                img = np.asarray(data[(slice(None), *region)])
                lab = np.asarray(labels[region])
                box = (index.lo[r], index.hi[r])
                crops[k] = _resample(img, lab, int(index.ids[r]), a[r], centre[r], sp, spec, scale, box)
        yield index.ids[rows].astype(np.uint64), crops
