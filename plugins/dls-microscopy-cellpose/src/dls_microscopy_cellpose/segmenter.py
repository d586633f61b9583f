"""Cellpose 4 (Cellpose-SAM) 3D segmentation as a DLS Microscopy segmenter.

Each block goes through cellpose's own 3D pipeline (``CellposeModel.eval`` with
``do_3D=True``): the volume is resized so that objects of ``diameter_um`` appear at
the network's training diameter and z is sampled like x/y (``anisotropy`` =
z spacing / in-plane spacing), the network runs on the YX, ZY and ZX planes, the flows
are averaged and followed, and masks are resized back.  What makes blocks agree with
the whole volume:

* *Global normalisation*: cellpose maps the 1st/99th intensity percentiles of its input
  to 0/1.  A block's percentiles differ from the volume's, so they are computed once by
  :meth:`CellposeSegmenter.global_stats` and passed to every block (``lowhigh``).
* *Halo*: one object diameter on every side (the distance over which flows gather an
  object's voxels to its centre), plus the reach of ``flow3d_smooth``.
* *No size-relative filtering*: cellpose removes masks larger than 40 % of its input
  (``max_size_fraction``), which depends on the block size; it is disabled here.

Weights come only from a local file (see :mod:`.weights`); the file's SHA-256 is part
of :meth:`CellposeSegmenter.provenance`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from dls_microscopy.device import resolve_device
from dls_microscopy.errors import InputError
from dls_microscopy.segment.base import BaseSegmenter, SegmenterParams
from pydantic import Field, field_validator

from dls_microscopy_cellpose.weights import DEFAULT_MODEL, find_weights, sha256_file

__all__ = ["CellposeParams", "CellposeSegmenter", "cellpose_scale"]

log = logging.getLogger(__name__)

#: Voxels read by ``global_stats`` (the whole volume when it is smaller).
_SAMPLE_VOXELS = 1 << 22
#: Edge of the sub-blocks sampled from larger volumes.
_SAMPLE_EDGE = 64
#: Anisotropy of x and y spacing tolerated before a warning (cellpose assumes square pixels).
_SQUARE_TOLERANCE = 0.01


class CellposeParams(SegmenterParams):
    """Parameters of :class:`CellposeSegmenter`; lengths in µm.

    Defaults are cellpose's (``cellprob_threshold=0``, ``niter=None``,
    ``flow3D_smooth=0``, ``min_size=15``, percentiles 1 and 99).  cellpose's
    ``flow_threshold`` is not offered: cellpose ignores it in 3D.
    """

    model_path: str | None = None
    """weights file; None looks up ``model_name`` in cellpose's model folder"""
    model_name: str = DEFAULT_MODEL
    """file name in ``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``"""
    diameter_um: float = Field(8.0, gt=0)
    """expected object diameter, µm (converted to voxels with the in-plane spacing)"""
    rescale: bool = True
    """resize so that objects of ``diameter_um`` appear at the network's training diameter (30
    px for cellpose's models); False keeps the image's own sampling
    """
    cellprob_threshold: float = 0.0
    """voxels with cell probability above this (logit) follow the flows"""
    niter: int | None = Field(None, gt=0)
    """steps of flow following; None: cellpose's 200 / rescaling factor"""
    flow3d_smooth: float = Field(0.0, ge=0)
    """Gaussian smoothing of the 3D flows, in voxels of the resized volume (cellpose's
    ``flow3D_smooth``; raise it when objects break up along z)
    """
    min_size_voxels: int = Field(15, ge=0)
    """smaller masks are removed, voxels (cellpose's ``min_size``)"""
    percentiles: tuple[float, float] = (1.0, 99.0)
    """intensity percentiles mapped to 0 and 1, over the whole volume"""
    batch_size: int | None = Field(None, gt=0)
    """256×256 tiles per forward pass; None: from the free memory of the device"""
    precision: Literal["auto", "bfloat16", "float32"] = "auto"
    """network precision; "auto": bfloat16 on CUDA (cellpose's default), float32 elsewhere"""

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {value}")
        return value


@dataclasses.dataclass(frozen=True)
class _Loaded:
    model: Any  # cellpose.models.CellposeModel
    geometry: Any  # network.NetworkGeometry
    model_diameter_px: float
    dtype: Any  # torch.dtype
    batch_size: int


class CellposeSegmenter(BaseSegmenter):
    """Cellpose-SAM 3D segmentation, block by block (see the module docstring).

    The weights file is located when the segmenter is created (so a missing file is
    reported before any image is read) and loaded on first use, on the device chosen
    by ``device`` (``"auto"``: cuda > mps > cpu).

    Parameters
    ----------
    params : CellposeParams or mapping, optional
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    **overrides
        Individual parameters, e.g. ``model_path="cpsam_v2"``, ``diameter_um=7``.

    Raises
    ------
    ModelNotFoundError
        When the weights file does not exist (nothing is downloaded).
    InputError
        For unknown or invalid parameters.

    Attributes
    ----------
    weights_path : Path
        The weights file used.
    """

    name: ClassVar[str] = "cellpose"
    Params: ClassVar[type[SegmenterParams]] = CellposeParams
    #: peak host memory per input voxel of a block (resized copies, flows of the three
    #: plane orientations, dynamics): measured 250 at rescaling 1 and anisotropy 2, 146 when
    #: objects are halved; upsampling (objects smaller than the network's size) costs more
    bytes_per_voxel: ClassVar[float] = 256.0

    params: CellposeParams

    def __init__(
        self,
        params: SegmenterParams | Mapping[str, Any] | None = None,
        *,
        device: str = "auto",
        **overrides: Any,
    ) -> None:
        super().__init__(params, device=device, **overrides)
        self.weights_path: Path = find_weights(
            self.params.model_path, model_name=self.params.model_name
        )
        self._lock = threading.Lock()
        self._loaded_model: _Loaded | None = None
        self._sha256: str | None = None
        self._warned_pixels = False

    # -- weights and provenance -----------------------------------------------------------

    @property
    def model_sha256(self) -> str:
        """Hex SHA-256 of the weights file (computed once)."""
        with self._lock:
            if self._sha256 is None:
                self._sha256 = sha256_file(self.weights_path)
            return self._sha256

    def provenance(self) -> dict[str, Any]:
        """What a run's manifest needs to reproduce this segmentation.

        Returns
        -------
        dict
            ``segmenter``, ``cellpose_version``, ``model_path``, ``model_sha256``,
            ``model_bytes``, ``network`` (encoder geometry), ``model_diameter_px``,
            ``device``, ``precision``, ``batch_size`` and ``parameters``.
        """
        from importlib.metadata import version

        from dls_microscopy_cellpose.network import describe_dtype

        loaded = self._load()
        return {
            "segmenter": self.name,
            "cellpose_version": version("cellpose"),
            "model_path": str(self.weights_path.resolve()),
            "model_sha256": self.model_sha256,
            "model_bytes": self.weights_path.stat().st_size,
            "network": loaded.geometry.describe(),
            "model_diameter_px": loaded.model_diameter_px,
            "device": self.device,
            "precision": describe_dtype(loaded.dtype),
            "batch_size": loaded.batch_size,
            "parameters": self.params.model_dump(mode="json"),
        }

    def _load(self) -> _Loaded:
        with self._lock:
            if self._loaded_model is None:
                self._loaded_model = self._load_unlocked()
            return self._loaded_model

    def _load_unlocked(self) -> _Loaded:
        import torch

        from dls_microscopy_cellpose import network

        device = resolve_device(self._device_request)
        precision = self.params.precision
        if precision == "auto":
            precision = "bfloat16" if device.type == "cuda" else "float32"
        dtype = getattr(torch, precision)
        net, geometry = network.load_network(self.weights_path, device=device, dtype=dtype)
        batch = self.params.batch_size or network.batch_size_for(
            geometry,
            dtype,
            network.free_memory_bytes(device),
            most=8 if device.type == "cpu" else 64,
        )
        loaded = _Loaded(
            network.cellpose_model(net, self.weights_path, device),
            geometry,
            network.model_diameter(net),
            dtype,
            batch,
        )
        log.info(
            "cellpose weights %s: %s on %s, %s, %d tiles per batch",
            self.weights_path,
            geometry.describe(),
            device,
            precision,
            batch,
        )
        return loaded

    # -- geometry -------------------------------------------------------------------------

    def _in_plane_spacing(self, spacing: Sequence[float]) -> float:
        dy, dx = float(spacing[1]), float(spacing[2])
        if abs(dy - dx) > _SQUARE_TOLERANCE * max(dy, dx) and not self._warned_pixels:
            self._warned_pixels = True
            log.warning(
                "cellpose assumes square pixels; y and x spacing differ (%g, %g µm): "
                "using their geometric mean",
                dy,
                dx,
            )
        return math.sqrt(dy * dx)

    def halo(self, spacing: Sequence[float]) -> tuple[int, ...]:
        """Voxels per axis: ``ceil((diameter_um + 3 σ) / spacing)``.

        One object diameter (flows gather an object's voxels over at most that
        distance) plus three standard deviations of ``flow3d_smooth``, in µm.
        """
        reach = self.params.diameter_um
        if self.params.flow3d_smooth > 0:
            dxy = self._in_plane_spacing(spacing)
            factor = 1.0
            if self.params.rescale:
                factor = self._load().model_diameter_px / (self.params.diameter_um / dxy)
            reach += 3.0 * self.params.flow3d_smooth * dxy / factor
        return tuple(math.ceil(reach / float(d) - 1e-9) for d in spacing)

    # -- statistics and segmentation ------------------------------------------------------

    def global_stats(self, image: Any, *, spacing: Sequence[float]) -> dict[str, float]:
        """The intensities mapped to 0 and 1 (``percentiles``), from the whole volume.

        Volumes of up to ``2**22`` voxels are read whole; from larger ones, sub-blocks
        of 64³ spread evenly over the volume (only those are read; ``image`` may be a
        huge dask array).  NaN and infinities are ignored.

        Returns
        -------
        dict
            ``low`` and ``high``, in image units (``high > low``).
        """
        if len(image.shape) != 3:
            raise InputError(f"global_stats needs a (Z, Y, X) array, got shape {image.shape}")
        sample = _intensity_sample(image, _SAMPLE_VOXELS)
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return {"low": 0.0, "high": 1.0}
        low, high = (float(v) for v in np.percentile(sample, self.params.percentiles))
        if not high > low:  # mostly constant: fall back to the full range
            low, high = float(sample.min()), float(sample.max())
        if not high > low:
            high = low + 1.0
        return {"low": low, "high": high}

    def _segment(
        self, image: np.ndarray, *, spacing: tuple[float, ...], stats: Mapping[str, float]
    ) -> np.ndarray:
        import fastremap
        import torch

        missing = {"low", "high"} - set(stats)
        if missing:
            raise InputError(f"stats lack {sorted(missing)}; compute them with global_stats()")
        loaded = self._load()
        p = self.params
        diameter, anisotropy = cellpose_scale(
            spacing,
            diameter_um=p.diameter_um,
            model_diameter_px=loaded.model_diameter_px,
            rescale=p.rescale,
            in_plane_um=self._in_plane_spacing(spacing),
        )
        # cellpose normalises a float32 input in place: give it its own copy
        pixels = np.array(image, dtype=np.float32, copy=True)
        with torch.sparse.check_sparse_tensor_invariants(enable=False):  # as cellpose, quietly
            masks = loaded.model.eval(
                pixels,
                z_axis=0,
                channel_axis=None,
                do_3D=True,
                anisotropy=anisotropy,
                diameter=diameter,
                resample=True,
                batch_size=loaded.batch_size,
                normalize={
                    "normalize": True,
                    "lowhigh": [float(stats["low"]), float(stats["high"])],
                },
                cellprob_threshold=p.cellprob_threshold,
                niter=p.niter,
                flow3D_smooth=p.flow3d_smooth,
                min_size=p.min_size_voxels,
                max_size_fraction=1.0,
                augment=False,
                compute_masks=True,
            )[0]
        masks = np.asarray(masks).reshape(image.shape)  # cellpose squeezes length-1 axes
        # numbered 1..N by first voxel in C order (cellpose's order follows its seeds)
        labels, _ = fastremap.renumber(masks.astype(np.uint32), preserve_zero=True, in_place=True)
        return labels.astype(np.uint32, copy=False)


def cellpose_scale(
    spacing: Sequence[float],
    *,
    diameter_um: float,
    model_diameter_px: float,
    rescale: bool = True,
    in_plane_um: float | None = None,
) -> tuple[float | None, float]:
    """The ``diameter`` and ``anisotropy`` arguments of cellpose's ``eval``.

    cellpose resizes every axis by ``30 / diameter`` and z also by ``anisotropy``.  The
    diameter returned makes that factor ``model_diameter_px / diameter_px``, with
    ``diameter_px = diameter_um / in-plane spacing``: objects then appear at the size
    the network was trained for (cellpose's own behaviour for its 30 px models).

    Parameters
    ----------
    spacing : sequence of 3 float
        Voxel size (z, y, x), µm.
    diameter_um : float
        Expected object diameter, µm.
    model_diameter_px : float
        The network's training diameter, pixels (``diam_mean`` of the checkpoint).
    rescale : bool
        False: no resizing in y and x (``diameter=None``).
    in_plane_um : float, optional
        In-plane spacing; default the geometric mean of the y and x spacing.

    Returns
    -------
    diameter : float or None
    anisotropy : float
        z spacing over in-plane spacing.

    Examples
    --------
    >>> cellpose_scale((1.0, 0.25, 0.25), diameter_um=7.5, model_diameter_px=30.0)
    (30.0, 4.0)
    >>> cellpose_scale((1.0, 0.25, 0.25), diameter_um=7.5, model_diameter_px=15.0)
    (60.0, 4.0)
    """
    dxy = math.sqrt(float(spacing[1]) * float(spacing[2])) if in_plane_um is None else in_plane_um
    anisotropy = float(spacing[0]) / dxy
    if not rescale:
        return None, anisotropy
    return diameter_um / dxy * 30.0 / model_diameter_px, anisotropy


#: Golden-ratio steps spread the sampled sub-blocks evenly over the volume.
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _intensity_sample(image: Any, budget: int) -> np.ndarray:
    """Voxels of the whole volume or of sub-blocks spread over it, 1D float32."""
    shape = tuple(int(s) for s in image.shape)
    if math.prod(shape) <= budget:
        whole = image.compute() if hasattr(image, "compute") else image
        return np.asarray(whole, dtype=np.float32).ravel()
    edge = [min(n, _SAMPLE_EDGE) for n in shape]
    tiles = [n // e for n, e in zip(shape, edge, strict=True)]
    n_tiles = math.prod(tiles)
    count = max(1, min(n_tiles, budget // math.prod(edge)))
    picks = np.unique((np.arange(count) * _GOLDEN % 1.0 * n_tiles).astype(np.int64))
    regions = [
        tuple(slice(i * e, (i + 1) * e) for i, e in zip(index, edge, strict=True))
        for index in zip(*np.unravel_index(picks, tiles), strict=True)
    ]
    blocks = [image[r] for r in regions]
    if hasattr(image, "dask"):
        import dask

        blocks = list(dask.compute(*blocks))
    return np.concatenate([np.asarray(b, dtype=np.float32).ravel() for b in blocks])
