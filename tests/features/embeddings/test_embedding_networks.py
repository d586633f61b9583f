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


def test_cube48_embeddings_are_invariant_to_every_cube_symmetry():
    import numpy as np

    from dls_microscopy.errors import InputError
    from dls_microscopy.features.embeddings.inference import embed_batches

    torch.manual_seed(0)
    net = build_network("image", {"in_channels": 2, "width": 4, "dim": 8}).eval()
    x = np.random.default_rng(0).random((2, 2, 8, 8, 8), dtype=np.float32)
    turned = np.flip(np.transpose(x, (0, 1, 4, 2, 3)), axis=3).copy()  # axes reordered, one flipped
    ids = np.array([1, 2], np.uint64)
    _, a = embed_batches(net, [(ids, x)], "cpu", kind="image", tta="cube48")
    _, b = embed_batches(net, [(ids, turned)], "cpu", kind="image", tta="cube48")
    _, c = embed_batches(net, [(ids, turned)], "cpu", kind="image", tta="flips8")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(a, c, atol=1e-4)  # flips alone do not cover axis orders
    with pytest.raises(InputError, match="test-time augmentation"):
        embed_batches(net, [(ids, x)], "cpu", kind="image", tta="cube24")
