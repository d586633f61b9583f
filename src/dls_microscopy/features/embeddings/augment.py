"""Training augmentations, drawn from an explicit ``torch.Generator`` (reproducible).

Volumes ``(B, C, S, S, S)`` (isotropic crops): a random element of the 48
rotations/reflections of the cube (axis permutation and flips), a small
arbitrary rotation (uniform axis, angle up to ``max_angle_deg``, trilinear),
an intensity gain, and Gaussian noise inside the object.  No rescaling: size is
a phenotype.

Points ``(B, P, 3)`` (canonical frames): a random subset of ``n`` of the ``P``
pooled points, random flips of each axis, a small arbitrary rotation, and
Gaussian jitter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment_points", "augment_volumes", "random_rotations"]


def random_rotations(n: int, max_angle_deg: float, gen: torch.Generator) -> torch.Tensor:
    """``(n, 3, 3)`` rotations about uniform random axes by angles uniform in ``[0, max]``."""
    axis = torch.randn(n, 3, generator=gen)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    angle = torch.rand(n, generator=gen) * math.radians(max_angle_deg)
    k = torch.zeros(n, 3, 3)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3).expand(n, 3, 3) + s * k + (1 - c) * (k @ k)


def augment_volumes(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    max_angle_deg: float = 20.0,
    gain: float = 0.1,
    noise: float = 0.03,
) -> torch.Tensor:
    """One augmented view of a batch of crops (same device and dtype as ``x``)."""
    b = x.shape[0]
    views = []
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(b)])
    flips = torch.rand(b, 3, generator=gen) < 0.5
    for i in range(b):
        v = x[i].permute(0, *(int(p) + 1 for p in perms[i]))
        dims = [d + 1 for d in range(3) if flips[i, d]]
        views.append(v.flip(dims) if dims else v)
    y = torch.stack(views)
    if max_angle_deg > 0:
        rot = random_rotations(b, max_angle_deg, gen)
        theta = torch.cat([rot, torch.zeros(b, 3, 1)], dim=2).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(y.shape), align_corners=False)
        y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    g = 1 + gain * (2 * torch.rand(b, 1, 1, 1, 1, generator=gen) - 1)
    eps = torch.randn(y.shape, generator=gen) * noise
    inside = (y != 0).to(y.dtype)
    return y * g.to(y.device, y.dtype) + eps.to(y.device, y.dtype) * inside


def augment_points(
    pool: torch.Tensor,
    n: int,
    gen: torch.Generator,
    *,
    max_angle_deg: float = 20.0,
    jitter: float = 0.01,
) -> torch.Tensor:
    """One augmented view ``(B, n, 3)`` of pooled point clouds ``(B, P, 3)``."""
    b, p, _ = pool.shape
    idx = torch.argsort(torch.rand(b, p, generator=gen), dim=1)[:, :n].to(pool.device)
    pts = torch.gather(pool, 1, idx[..., None].expand(b, n, 3))
    sign = torch.where(torch.rand(b, 1, 3, generator=gen) < 0.5, -1.0, 1.0)
    rot = random_rotations(b, max_angle_deg, gen)
    pts = (pts * sign.to(pool.device, pool.dtype)) @ rot.to(pool.device, pool.dtype).transpose(1, 2)
    return pts + (torch.randn(pts.shape, generator=gen) * jitter).to(pool.device, pool.dtype)
