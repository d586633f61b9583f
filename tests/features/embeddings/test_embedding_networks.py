"""What the encoders can and cannot see, checked on the networks themselves (no training)."""

from __future__ import annotations

import pytest
import torch

from dls_microscopy.features.embeddings.networks import PointEncoder, build_network


def _cloud(n: int = 256) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(1, n, 3, generator=gen) * torch.tensor([3.0, 2.0, 1.5])
    return p - p.mean(dim=1, keepdim=True)


def test_group_norm_alone_cannot_see_size_group_scale_can():
    torch.manual_seed(0)
    x = _cloud()
    for norm, sees_size in (("group", False), ("group+scale", True), ("none", True)):
        torch.manual_seed(0)
        net = PointEncoder(width=16, dim=8, norm=norm).eval()
        with torch.no_grad():
            a, b = net(x), net(1.3 * x)  # the same form, 30 % larger
        assert torch.allclose(a, b, atol=1e-4) is not sees_size, norm


def test_group_scale_does_not_depend_on_point_order():
    torch.manual_seed(0)
    net = PointEncoder(width=16, dim=8).eval()
    x = _cloud()
    perm = torch.randperm(x.shape[1])
    with torch.no_grad():
        assert torch.allclose(net(x), net(x[:, perm]), atol=1e-5)


def test_records_without_norm_build_the_first_models_network():
    old = build_network("shape", {"width": 16, "dim": 8})  # arch of a record saved before ``norm``
    new = build_network("shape", {"width": 16, "dim": 8, "norm": "group+scale"})
    assert isinstance(old.encoder.features[0][1], torch.nn.GroupNorm)
    assert old.encoder.out.in_features == 8 * 16 and new.encoder.out.in_features == 8 * 16 + 1
    with pytest.raises(ValueError, match="norm"):
        PointEncoder(16, 8, norm="batch")
