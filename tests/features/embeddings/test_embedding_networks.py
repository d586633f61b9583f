"""What the encoders can and cannot see, checked on the networks themselves (no training)."""

from __future__ import annotations

import pytest
import torch

from dls_microscopy.features.embeddings.networks import ImageEncoder, PointEncoder, build_network


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


def test_image_group_norm_alone_cannot_see_input_scale_input_stats_can():
    x = torch.rand(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    for input_stats in (False, True):
        torch.manual_seed(0)
        net = ImageEncoder(2, width=4, dim=8, input_stats=input_stats).eval()
        with torch.no_grad():
            a, b = net(x), net(1.5 * x)  # the same pattern, 50 % more contrast
        assert torch.allclose(a, b, atol=1e-4) is not input_stats


def test_records_without_input_stats_build_the_earlier_image_network():
    old = build_network("image", {"in_channels": 2, "width": 4, "dim": 8})
    new = build_network("image", {"in_channels": 2, "width": 4, "dim": 8, "input_stats": True})
    assert old.encoder.out.in_features == 8 * 4 and new.encoder.out.in_features == 8 * 4 + 2 * 2


@pytest.mark.parametrize("input_stats", [False, True])
def test_cube48_embeddings_are_invariant_to_every_cube_symmetry(input_stats):
    import numpy as np

    from dls_microscopy.errors import InputError
    from dls_microscopy.features.embeddings.inference import embed_batches

    torch.manual_seed(0)
    arch = {"in_channels": 2, "width": 4, "dim": 8, "input_stats": input_stats}
    net = build_network("image", arch).eval()
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


@pytest.mark.parametrize("input_stats", [False, True])
def test_forward_views_is_the_mean_of_forward_over_the_views(input_stats):
    torch.manual_seed(0)
    net = ImageEncoder(2, width=4, dim=8, input_stats=input_stats).eval()
    x = torch.rand(3, 2, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    views = [x, x.flip(2), x.permute(0, 1, 4, 2, 3), x.permute(0, 1, 3, 4, 2).flip(3, 4)]
    with torch.no_grad():
        expected = torch.stack([net(v) for v in views]).mean(dim=0)
        torch.testing.assert_close(net.forward_views(views), expected, rtol=1e-5, atol=1e-6)


def test_point_forward_views_is_the_mean_of_forward_over_reflections():
    torch.manual_seed(0)
    net = PointEncoder(width=16, dim=8).eval()
    x = _cloud()
    views = [x * torch.tensor(signs) for signs in ([1.0, 1, 1], [-1.0, 1, 1], [1.0, -1, -1])]
    with torch.no_grad():
        expected = torch.stack([net(v) for v in views]).mean(dim=0)
        torch.testing.assert_close(net.forward_views(views), expected, rtol=1e-5, atol=1e-6)
