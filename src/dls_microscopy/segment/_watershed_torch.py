"""Torch backend of :class:`~dls_microscopy.segment.watershed.WatershedSegmenter`.

:mod:`._watershed_cpu` with torch on any device (used on CUDA/MPS): a separable
``conv3d`` Gaussian with scipy's kernel, an exact windowed distance transform and
tensor drainage with pointer jumping; the basin graph is copied to the host and
merged by the shared code in :mod:`dls_microscopy.segment._watershed_shared`.  torch is
imported inside each function, so this module imports without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dls_microscopy.segment._watershed_shared import (
    _DIRECTIONS,
    _INTENSITY_WEIGHT,
    _TRUNCATE,
    _Basins,
    _FloodConfig,
)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy.ndimage's 1D Gaussian kernel: same radius, same normalisation."""
    radius = int(_TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return k / k.sum()


def _separable_torch(x: Any, kernels: Sequence[np.ndarray | None]) -> Any:
    """Correlate a ``(Z, Y, X)`` float32 tensor with one odd 1D kernel per axis, edges replicated.

    ``kernels[ax]`` is None for no pass along that axis; returns a ``(Z, Y, X)``
    float32 tensor on ``x``'s device.
    """
    import torch
    import torch.nn.functional as F

    out = x[None, None]
    for ax, kernel in enumerate(kernels):
        if kernel is None:
            continue
        k = torch.as_tensor(kernel, dtype=torch.float32, device=x.device)
        r = (len(k) - 1) // 2
        pad = [0] * 6
        pad[2 * (2 - ax)] = pad[2 * (2 - ax) + 1] = r
        view = [1, 1, 1, 1, 1]
        view[2 + ax] = len(k)
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(view))
    return out[0, 0]


def _smooth_torch(x: Any, sigma_vox: Sequence[float]) -> Any:
    """Separable Gaussian of a ``(Z, Y, X)`` float32 tensor, edges replicated.

    Same kernels as :func:`~dls_microscopy.segment._watershed_cpu._smooth_cpu`
    (``sigma_vox`` per axis, voxels; as scipy, no pass where it is 0); returns a
    ``(Z, Y, X)`` float32 tensor.
    """
    return _separable_torch(x, [_gaussian_kernel(s) if s > 1e-15 else None for s in sigma_vox])


def _box_torch(x: Any, size: Sequence[int]) -> Any:
    """Mean over a box of ``size`` voxels (odd) of a ``(Z, Y, X)`` float32 tensor, edges replicated.

    :func:`scipy.ndimage.uniform_filter` with ``mode="nearest"``; returns a
    ``(Z, Y, X)`` float32 tensor.
    """
    return _separable_torch(x, [np.full(int(n), 1.0 / int(n)) if n > 1 else None for n in size])


def _edt_torch(mask: Any, spacing: Sequence[float], cap: float) -> Any:
    """Euclidean distance (µm) to the nearest background voxel, clamped at ``cap``.

    Separable lower envelope of parabolas, each 1D pass over a window of
    ``cap / spacing`` voxels: exact wherever the distance is below ``cap``; the
    array edge is not background (as ``edt(..., black_border=False)``).
    ``mask`` is a ``(Z, Y, X)`` bool tensor (True: foreground); returns a ``(Z, Y, X)``
    float32 tensor on its device.
    """
    import torch

    cap2 = float(cap) ** 2
    d = torch.where(
        mask, torch.full_like(mask, cap2, dtype=torch.float32), torch.zeros_like(mask, dtype=torch.float32)
    )
    for ax, sp in enumerate(spacing):
        n = d.shape[ax]
        out = d.clone()
        for k in range(1, min(n - 1, math.floor(cap / float(sp))) + 1):
            add = float(np.float32((k * float(sp)) ** 2))
            hi = out.narrow(ax, k, n - k)
            torch.minimum(hi, d.narrow(ax, 0, n - k) + add, out=hi)
            lo = out.narrow(ax, 0, n - k)
            torch.minimum(lo, d.narrow(ax, k, n - k) + add, out=lo)
        d = out
    return torch.clamp(torch.sqrt(d), max=float(cap))


def _flood_torch(image: np.ndarray, cfg: _FloodConfig, *, device: str = "cpu") -> _Basins | str | None:
    """:func:`~dls_microscopy.segment._watershed_cpu._flood_cpu` with torch on ``device``.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        The block, any real dtype (copied to ``device`` as float32).
    cfg : _FloodConfig
        Smoothing, threshold, spacing and flooding-image settings.
    device : str
        Torch device, e.g. ``"cuda"``, ``"mps"`` or ``"cpu"``.

    Returns
    -------
    _Basins or "all" or None
        The basin graph, as numpy arrays on the host; None when no voxel is above
        the threshold, "all" when every voxel is.
    """
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
        smooth = _smooth_torch(x, cfg.sigma_vox)
        del x
        mask = smooth > cfg.threshold
        n_fg = int(mask.sum())
        if n_fg == 0:
            return None
        if n_fg == mask.numel():
            return "all"
        f = None
        if cfg.method in ("distance", "combined"):
            core = mask
            if cfg.contrast is not None:
                # uploaded again, not kept since the smoothing: one block copy less on the device
                x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
                local = _box_torch(x, cfg.window_vox)
                del x
                c = float(np.float32(cfg.contrast))
                bg = float(np.float32(1 - np.float32(cfg.contrast)) * np.float32(cfg.background))
                core = mask & (smooth > local * c + bg)
                del local
            f = _edt_torch(core, cfg.spacing, cfg.cap_um) * cfg.inv_radius
            del core
        if cfg.method in ("intensity", "combined"):
            inten = (smooth - cfg.threshold) * cfg.inv_range
            f = inten if f is None else f + float(np.float32(_INTENSITY_WEIGHT)) * inten
        return _drain_torch(f, mask, smooth, cfg.spacing)


def _drain_torch(f: Any, mask: Any, smooth: Any, spacing: Sequence[float]) -> _Basins:
    """:func:`~dls_microscopy.segment._watershed_cpu._drain_cpu` with dense torch ops.

    ``f``, ``mask`` (bool) and ``smooth`` are ``(Z, Y, X)`` tensors on one device;
    steepest ascent, then pointer jumping.  Returns the basin graph on the host.
    """
    import torch

    shape = tuple(mask.shape)
    dev = mask.device
    neg_inf = torch.tensor(-math.inf, dtype=torch.float32, device=dev)
    fm = torch.where(mask, f, neg_inf)
    fpad = torch.nn.functional.pad(fm[None, None], (1, 1, 1, 1, 1, 1), value=-math.inf)[0, 0]
    strides = (shape[1] * shape[2], shape[2], 1)
    best = torch.full(shape, -math.inf, dtype=torch.float32, device=dev)
    step = torch.zeros(shape, dtype=torch.int64, device=dev)
    for ax, st in _DIRECTIONS:
        sl = [slice(1, -1)] * 3
        sl[ax] = slice(1 + st, shape[ax] + 1 + st)
        slope = (fpad[tuple(sl)] - fm) * float(np.float32(1.0 / float(spacing[ax])))
        better = slope > best
        best = torch.where(better, slope, best)
        step = torch.where(better, torch.full_like(step, st * strides[ax]), step)
    flat_mask = mask.ravel()
    up = (((best > 0) | ((best == 0) & (step > 0))) & mask).ravel()
    idx = torch.arange(mask.numel(), device=dev)
    parent = torch.where(up, idx + step.ravel(), idx)
    del best, step
    while True:
        nxt = parent[parent]
        if torch.equal(nxt, parent):
            break
        parent = nxt
    is_root = flat_mask & ~up
    bid = torch.cumsum(is_root.to(torch.int64), 0) - 1
    dense = torch.where(flat_mask, bid[parent], torch.full_like(bid, -1)).view(shape)
    ea, eb, sd = [], [], []
    for ax in range(3):
        n = shape[ax]
        a, b = dense.narrow(ax, 0, n - 1), dense.narrow(ax, 1, n - 1)
        cross = (a != b) & (a >= 0) & (b >= 0)
        ea.append(a[cross])
        eb.append(b[cross])
        sd.append(torch.minimum(fm.narrow(ax, 0, n - 1)[cross], fm.narrow(ax, 1, n - 1)[cross]))
    pos = torch.nonzero(flat_mask).ravel()
    roots = torch.nonzero(is_root).ravel()

    def host(t: Any) -> np.ndarray:
        return t.cpu().numpy()

    return _Basins(
        host(mask),
        host(dense.ravel()[pos]),
        host(smooth.ravel()[pos]),
        host(fm.ravel()[roots]),
        host(roots),
        (host(torch.cat(ea)), host(torch.cat(eb)), host(torch.cat(sd))),
    )
