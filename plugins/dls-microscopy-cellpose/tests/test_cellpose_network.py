"""Networks rebuilt from checkpoints: any SAM encoder size, cellpose's own forward pass."""

from __future__ import annotations

import logging

import pytest
import torch
from dls_microscopy.errors import FormatError

from dls_microscopy_cellpose.network import (
    NetworkGeometry,
    batch_size_for,
    build_network,
    infer_geometry,
    load_network,
    model_diameter,
)

CPU = torch.device("cpu")
#: two transformer blocks whose relative-position tables have different lengths (as in
#: CPSAM, where windowed blocks keep 27-long tables and global ones 127-long tables)
SMALL = NetworkGeometry(
    patch_size=16,
    embed_dim=32,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    out_chans=16,
    rel_pos_lengths=((27, 27), (31, 31)),
)


def _randomised(geometry: NetworkGeometry) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(geometry)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "W2":  # W2 is cellpose's fixed reshaping of token outputs to pixels
                p.normal_(0.0, 0.1)
    return net.eval()


def test_checkpoint_round_trip_gives_the_same_network(tmp_path):
    net = _randomised(SMALL)
    torch.save(net.state_dict(), tmp_path / "small")
    loaded, geometry = load_network(tmp_path / "small", device=CPU)
    assert geometry == SMALL
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], net(x)[0], rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_cellpose_vit_l_geometry_is_recognised():
    from cellpose.vit import CPSAM

    with torch.device("meta"):  # cellpose's own CPSAM, without memory
        reference = CPSAM()
    state = reference.state_dict()
    g = infer_geometry(state)
    assert (g.patch_size, g.embed_dim, g.depth, g.num_heads, g.mlp_ratio, g.out_chans) == (
        8,
        1024,
        24,
        16,
        4.0,
        256,
    )
    global_blocks = {i for i, (n, _) in enumerate(g.rel_pos_lengths) if n == 127}
    assert global_blocks == {5, 11, 17, 23}  # SAM ViT-L; the other blocks had 14-px windows
    rebuilt = build_network(g, device="meta").state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in state.items()}


def test_bfloat16_and_defaults_of_older_checkpoints(tmp_path, caplog):
    state = _randomised(SMALL).state_dict()
    del state["diam_mean"], state["diam_labels"]
    state = {"module." + k: v for k, v in state.items()}  # saved from DataParallel
    state["module.extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "old")
    with caplog.at_level(logging.WARNING):
        net, _ = load_network(tmp_path / "old", device=CPU, dtype=torch.bfloat16)
    assert "ignoring 1 tensors" in caplog.text
    assert model_diameter(net) == 30.0  # cellpose's diam_mean
    assert net.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in net.parameters())


def test_incomplete_checkpoint_is_a_format_error(tmp_path):
    state = _randomised(SMALL).state_dict()
    del state["encoder.blocks.1.mlp.lin2.weight"]
    torch.save(state, tmp_path / "broken")
    with pytest.raises(FormatError, match="lacks 1 tensors"):
        load_network(tmp_path / "broken", device=CPU)
    state = _randomised(SMALL).state_dict()
    state["encoder.blocks.1.mlp.lin1.weight"] = torch.zeros(8, 32)  # narrower than block 0
    torch.save(state, tmp_path / "mixed")
    with pytest.raises(FormatError, match="do not form one"):
        load_network(tmp_path / "mixed", device=CPU)


def test_tiles_other_than_256_pixels_are_refused():
    state = _randomised(SMALL).state_dict()
    state["encoder.pos_embed"] = torch.zeros(1, 8, 8, 32)  # 128-pixel tiles
    with pytest.raises(FormatError, match="256-pixel tiles"):
        infer_geometry(state)


def test_batch_size_follows_the_memory_budget():
    sizes = [batch_size_for(SMALL, torch.float32, budget) for budget in (0, 1e8, 1e9, 1e12)]
    assert sizes[0] == 1 and sizes == sorted(sizes) and sizes[-1] == 64
    assert batch_size_for(SMALL, torch.float32, 1e12, most=8) == 8
    assert batch_size_for(SMALL, torch.bfloat16, 1e8) >= batch_size_for(SMALL, torch.float32, 1e8)
