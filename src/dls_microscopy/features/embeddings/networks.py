"""The encoders: a small 3D CNN for image crops, a PointNet for surface point clouds.

Both map one object to an ``dim``-vector (the embedding) and carry a small
projection head used only by the training loss (SimCLR's finding: the loss is
computed on a projection, the representation before it transfers better).
GroupNorm instead of BatchNorm: an object's embedding never depends on the
other objects in its batch, and small batches train stably.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["EmbeddingNet", "ImageEncoder", "PointEncoder", "build_network"]


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, max(1, cout // 4)), cout),
        nn.ReLU(inplace=True),
    )


class ImageEncoder(nn.Module):
    """3D CNN: ``(B, C, S, S, S)`` crops → ``(B, dim)``.

    A 2×2×2 stride-2 stem (``width`` channels), a stride-2 and a stride-1
    3×3×3 convolution (``2 width``), a stride-2 one (``4 width``), each with
    GroupNorm and ReLU; global average and max pooling concatenated, then a
    linear layer.  About 6 M multiply-adds per 24³ crop at ``width=12``: sized to
    train in minutes on a CPU.

    Parameters
    ----------
    in_channels : int
    width : int
        Channels of the stem.
    dim : int
        Embedding size.
    input_stats : bool
        Append each input channel's mean and standard deviation over the crop
        to the pooled features.  The GroupNorm after the stem divides out what
        these carry (with a mask channel, its mean is the object's volume
        fraction of the crop; an intensity channel's spread is its texture
        contrast), just as GroupNorm hid size from the point encoder
        (:class:`PointEncoder`'s ``"group+scale"``).  On the half-dose phenotype
        set's validation plate (``benchmarks/run_embeddings.py``), training seeds
        0/1/2, the image embedding's replicate mAP went from 0.960/0.967/0.947
        to 0.983/0.985/1.000 and image+shape's from 0.929/0.972/0.912 to
        0.949/0.963/0.957 (object k-NN within noise: 0.713/0.726/0.726 to
        0.729/0.731/0.718).  Models saved before the option have it off.
    """

    def __init__(self, in_channels: int, width: int = 12, dim: int = 32, input_stats: bool = False) -> None:
        super().__init__()
        w = int(width)
        self.input_stats = bool(input_stats)
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, w, 2, stride=2, bias=False),
            nn.GroupNorm(min(4, w), w),
            nn.ReLU(inplace=True),
            _conv(w, 2 * w, 2),
            _conv(2 * w, 2 * w, 1),
            _conv(2 * w, 4 * w, 2),
        )
        self.out = nn.Linear(8 * w + 2 * in_channels * self.input_stats, dim)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)

    def _last(self, pooled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.input_stats:
            flat = x.flatten(2)
            var, mean = torch.var_mean(flat, dim=2)
            pooled = torch.cat([pooled, mean, var.sqrt()], dim=1)
        return self.out(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._last(self._pooled(x), x)

    def forward_views(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The mean of :meth:`forward` over ``views`` of the same crops, ``(B, dim)``.

        The views must be symmetries of the cube (permuted, flipped axes), which
        leave the input statistics unchanged; the last layer is linear, so the
        pooled features are averaged and the statistics computed once (they
        read every voxel, a third of the cost of a forward pass here).
        """
        pooled = torch.stack([self._pooled(v) for v in views]).mean(dim=0)
        return self._last(pooled, views[0])


class PointEncoder(nn.Module):
    """PointNet: ``(B, N, 3)`` points → ``(B, dim)``.

    A shared per-point MLP (3 → ``width`` → 2 ``width`` → 4 ``width``),
    symmetric max and mean pooling over points (order-invariant), then a linear
    layer.

    Parameters
    ----------
    width : int
        Channels of the first per-point layer.
    dim : int
        Embedding size.
    norm : {"group+scale", "group", "none"}
        ``"group"``: GroupNorm (over channels and points) after each per-point
        layer, the first models' choice.  It divides every cloud's features by
        their own spread, so a cloud scaled by any factor gives the same
        embedding: such an encoder cannot see size (on the phenotype set, object
        k-NN could not tell ``enlarged`` from ``control``).  ``"group+scale"``
        keeps GroupNorm and hands the scale it removes back to the last layer:
        the log of the cloud's RMS radius is appended to the pooled features.
        ``"none"`` drops normalisation (size is kept, but on the phenotype set
        the encoder then spent its capacity on size and lost the lobes).
        Nothing couples the objects of a batch in any of them.
    """

    def __init__(self, width: int = 32, dim: int = 32, norm: str = "group+scale") -> None:
        super().__init__()
        if norm not in ("group+scale", "group", "none"):
            raise ValueError(f"norm must be 'group+scale', 'group' or 'none', got {norm!r}")
        w = int(width)
        self.scale_input = norm == "group+scale"

        def layer(cin: int, cout: int) -> nn.Sequential:
            if norm == "none":
                return nn.Sequential(nn.Conv1d(cin, cout, 1), nn.ReLU(inplace=True))
            return nn.Sequential(
                nn.Conv1d(cin, cout, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True)
            )

        self.features = nn.Sequential(layer(3, w), layer(w, 2 * w), layer(2 * w, 4 * w))
        self.out = nn.Linear(8 * w + int(self.scale_input), dim)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.transpose(1, 2))
        return torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1)

    def _last(self, pooled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.scale_input:
            centred = x - x.mean(dim=1, keepdim=True)
            rms = centred.pow(2).sum(dim=2).mean(dim=1, keepdim=True).sqrt()
            pooled = torch.cat([pooled, torch.log(rms.clamp_min(1e-6))], dim=1)
        return self.out(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._last(self._pooled(x), x)

    def forward_views(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The mean of :meth:`forward` over ``views`` (reflections) of the same clouds, ``(B, dim)``.

        Reflections keep the cloud's RMS radius, and the last layer is linear:
        the pooled features are averaged and the scale computed once.
        """
        pooled = torch.stack([self._pooled(v) for v in views]).mean(dim=0)
        return self._last(pooled, views[0])


class EmbeddingNet(nn.Module):
    """An encoder and its projection head (``dim`` → ``2 dim`` → ``dim``)."""

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=True), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embedding, projection)``, both ``(B, dim)``."""
        e = self.encoder(x)
        return e, self.head(e)


def build_network(kind: str, arch: dict[str, Any]) -> EmbeddingNet:
    """The network described by a model record's ``arch`` (see :mod:`.store`)."""
    dim = int(arch["dim"])
    if kind == "image":
        # records saved before ``input_stats`` existed had none
        enc: nn.Module = ImageEncoder(
            int(arch["in_channels"]), int(arch["width"]), dim, bool(arch.get("input_stats", False))
        )
    elif kind == "shape":
        # records saved before ``norm`` existed used GroupNorm
        enc = PointEncoder(int(arch["width"]), dim, str(arch.get("norm", "group")))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return EmbeddingNet(enc, dim)
