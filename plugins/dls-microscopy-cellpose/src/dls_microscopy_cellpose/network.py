"""Cellpose-SAM networks rebuilt from a checkpoint: the encoder's size is read from its tensors.

Cellpose 4 always builds a ViT-L (``CPSAM``) and then loads weights into it, leniently
(``strict=False``).  Here the geometry of the SAM image encoder (patch size, width,
depth, heads, MLP width, neck channels, relative-position tables) is read from the
shapes in the state dict, a :class:`cellpose.vit.CPSAM` of exactly that geometry is
built on the ``meta`` device (no memory, no random initialisation) and the checkpoint's
tensors are assigned to it.  Official weights thus give the same ViT-L cellpose builds,
and smaller (distilled, or test) encoders load as well.  The forward pass is
cellpose's own.

Import this module only when a network is needed: it imports torch and cellpose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from dls_microscopy.errors import FormatError
from torch import nn

__all__ = [
    "NetworkGeometry",
    "batch_size_for",
    "build_network",
    "cellpose_model",
    "infer_geometry",
    "load_network",
    "read_checkpoint",
]

log = logging.getLogger(__name__)

#: cellpose runs SAM-backbone models on tiles of this size (``bsize``); fixed by cellpose
TILE = 256
#: the outputs cellpose reads: flow along the plane's first axis, its second axis, cell probability
N_OUTPUTS = 3
#: parameters that BaseModel adds and that older checkpoints may lack (value when missing)
_OPTIONAL = {"diam_mean": 30.0, "diam_labels": 30.0}
#: SAM's attention heads have 64 channels (used only when no relative-position table tells)
_SAM_HEAD_DIM = 64
_BLOCK = re.compile(r"^encoder\.blocks\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class NetworkGeometry:
    """Sizes of a Cellpose-SAM network (a SAM ``ImageEncoderViT`` plus cellpose's readout).

    ``rel_pos_lengths`` holds, per transformer block, the lengths of its two
    relative-position tables (``2 × size - 1`` of the window it was trained with).
    """

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    out_chans: int
    in_chans: int = 3
    qkv_bias: bool = True
    use_rel_pos: bool = True
    rel_pos_lengths: tuple[tuple[int, int], ...] = ()
    tile: int = TILE
    n_outputs: int = N_OUTPUTS

    def describe(self) -> dict[str, Any]:
        """A short JSON-able summary (for provenance)."""
        return {
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "out_chans": self.out_chans,
            "tile": self.tile,
        }


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict stored in ``path`` (tensors only; no code is unpickled).

    Raises
    ------
    FormatError
        When the file is not a PyTorch state dict.
    """
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # files in the legacy (non-zip) format cannot be mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(
            f"cannot read the file as PyTorch weights: {type(exc).__name__}: {exc}", path=path
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise FormatError("not a state dict of tensors (is it a Cellpose 4 model?)", path=path)
    if any(k.startswith("module.") for k in state):  # saved from (Distributed)DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def infer_geometry(
    state: Mapping[str, torch.Tensor], *, path: str | os.PathLike[str] | None = None
) -> NetworkGeometry:
    """Read a Cellpose-SAM network's geometry from the shapes of its state dict.

    Raises
    ------
    FormatError
        For a checkpoint that is not a Cellpose-SAM (cellpose 4, SAM backbone) model.
    """
    if "encoder.cls_token" in state:
        raise FormatError(
            "this is a Cellpose-DINO model (cpdino); only Cellpose-SAM models "
            "(cpsam, cpsam_v2 and fine-tuned ones) are supported",
            path=path,
        )
    needed = ("W2", "out.weight", "encoder.patch_embed.proj.weight", "encoder.neck.0.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        hint = " (a Cellpose 3 model?)" if "W2" in missing else ""
        raise FormatError(
            f"not a Cellpose-SAM checkpoint{hint}: no {', '.join(missing)}", path=path
        )
    proj = state["encoder.patch_embed.proj.weight"]
    embed_dim, in_chans, patch, patch_x = proj.shape
    if patch != patch_x:
        raise FormatError(
            f"non-square patches {tuple(proj.shape[2:])} are not supported", path=path
        )
    pos = state.get("encoder.pos_embed")
    tile = int(pos.shape[1]) * patch if pos is not None else TILE
    if tile != TILE or (pos is not None and pos.shape[1] != pos.shape[2]):
        raise FormatError(
            f"the network works on {tile}-pixel tiles; cellpose runs SAM models on "
            f"{TILE}-pixel tiles",
            path=path,
        )
    w2 = state["W2"]
    n_out = int(w2.shape[1])
    if tuple(w2.shape) != (n_out * patch * patch, n_out, patch, patch) or n_out != N_OUTPUTS:
        raise FormatError(
            f"unexpected readout W2 of shape {tuple(w2.shape)} (want "
            f"{N_OUTPUTS} outputs: two flows and the cell probability)",
            path=path,
        )

    depth = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    rel_pos, lengths, heads, mlp_ratio, qkv_bias = False, (), 1, 4.0, True
    if depth:
        first = "encoder.blocks.0."
        mlp_ratio = float(state[first + "mlp.lin1.weight"].shape[0]) / float(embed_dim)
        qkv_bias = first + "attn.qkv.bias" in state
        rel_pos = first + "attn.rel_pos_h" in state
        if rel_pos:
            head_dim = int(state[first + "attn.rel_pos_h"].shape[1])
            lengths = tuple(
                (
                    int(state[f"encoder.blocks.{i}.attn.rel_pos_h"].shape[0]),
                    int(state[f"encoder.blocks.{i}.attn.rel_pos_w"].shape[0]),
                )
                for i in range(depth)
            )
        else:
            head_dim = _SAM_HEAD_DIM
        if embed_dim % head_dim:
            raise FormatError(
                f"cannot tell the attention heads of a {embed_dim}-wide encoder", path=path
            )
        heads = embed_dim // head_dim
    return NetworkGeometry(
        patch_size=int(patch),
        embed_dim=int(embed_dim),
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        out_chans=int(state["encoder.neck.0.weight"].shape[0]),
        in_chans=int(in_chans),
        qkv_bias=qkv_bias,
        use_rel_pos=rel_pos,
        rel_pos_lengths=lengths,
        tile=tile,
        n_outputs=n_out,
    )


class _DropOptionalBackboneNotice(logging.Filter):
    """Drops cellpose's import-time notice that the optional DINO backbone is missing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPDINO" not in record.getMessage()


@contextlib.contextmanager
def _quiet_cellpose_import() -> Any:
    loggers = [logging.getLogger(n) for n in ("cellpose.vit", "cellpose.models")]
    notice = _DropOptionalBackboneNotice()
    for logger in loggers:
        logger.addFilter(notice)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notice)


@functools.cache
def _network_class() -> type[nn.Module]:
    with _quiet_cellpose_import():
        from cellpose.vit import CPSAM, BaseModel

    class SizedCPSAM(CPSAM):
        """``cellpose.vit.CPSAM`` with an encoder of any size; forward pass unchanged.

        ``CPSAM.__init__`` (which builds a ViT-L) is skipped; the attributes it sets
        are set here from the geometry.
        """

        def __init__(self, geometry: NetworkGeometry) -> None:
            from segment_anything.modeling.image_encoder import ImageEncoderViT

            BaseModel.__init__(self, dtype=torch.float32)  # diam_mean, diam_labels
            g = geometry
            self.geometry = g
            self.backbone = "sam_vitl"  # what cellpose calls every SAM backbone
            self.rdrop = 0.0  # layer drop (training only)
            self.encoder = ImageEncoderViT(
                img_size=g.tile,
                patch_size=g.patch_size,
                in_chans=g.in_chans,
                embed_dim=g.embed_dim,
                depth=g.depth,
                num_heads=g.num_heads,
                mlp_ratio=g.mlp_ratio,
                out_chans=g.out_chans,
                qkv_bias=g.qkv_bias,
                norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
                use_rel_pos=g.use_rel_pos,
                window_size=0,  # cellpose uses global attention in every block
            )
            head_dim = g.embed_dim // g.num_heads
            for block, (n_h, n_w) in zip(self.encoder.blocks, g.rel_pos_lengths, strict=False):
                block.attn.rel_pos_h = nn.Parameter(torch.zeros(n_h, head_dim))
                block.attn.rel_pos_w = nn.Parameter(torch.zeros(n_w, head_dim))
            n = g.n_outputs * g.patch_size**2
            self.out = nn.Conv2d(g.out_chans, n, kernel_size=1)
            self.W2 = nn.Parameter(
                torch.eye(n).reshape(n, g.n_outputs, g.patch_size, g.patch_size),
                requires_grad=False,
            )
            self.nout = g.n_outputs
            self.ps = g.patch_size

    return SizedCPSAM


@functools.cache
def _model_class() -> type:
    with _quiet_cellpose_import():
        from cellpose.models import CellposeModel

    class LoadedCellposeModel(CellposeModel):
        """``cellpose.models.CellposeModel`` around a network loaded here.

        ``CellposeModel.__init__`` (which resolves, and may download, weights by name)
        is skipped; ``eval`` uses only the attributes set here.
        """

        def __init__(
            self, net: nn.Module, path: str | os.PathLike[str], device: torch.device
        ) -> None:
            self.net = net
            self.device = device
            self.gpu = device.type in ("cuda", "mps")
            self.pretrained_model = os.fspath(path)
            self.backbone = net.backbone

    return LoadedCellposeModel


def cellpose_model(net: nn.Module, path: str | os.PathLike[str], device: torch.device) -> Any:
    """A ``cellpose.models.CellposeModel`` that runs ``net`` (loaded from ``path``)."""
    return _model_class()(net, path, device)


def build_network(geometry: NetworkGeometry, *, device: str | torch.device = "cpu") -> nn.Module:
    """A freshly initialised Cellpose-SAM network of ``geometry`` (``cellpose.vit.CPSAM``).

    ``device="meta"`` builds it without memory (to load weights into).
    """
    with torch.device(device):
        return _network_class()(geometry)


def load_network(
    path: str | os.PathLike[str], *, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, NetworkGeometry]:
    """Read ``path``, build the network its tensors describe and load them into it.

    Returns
    -------
    net : cellpose.vit.CPSAM
        In eval mode on ``device``, parameters of ``dtype``.
    geometry : NetworkGeometry

    Raises
    ------
    FormatError
        When the file is not a usable Cellpose-SAM checkpoint.
    """
    state = read_checkpoint(path)
    geometry = infer_geometry(state, path=path)
    net = build_network(geometry, device="meta")
    try:
        result = net.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # tensors whose shapes contradict the inferred geometry
        raise FormatError(
            f"the tensors do not form one Cellpose-SAM network: {exc}", path=path
        ) from exc
    missing = [k for k in result.missing_keys if k not in _OPTIONAL]
    if missing:
        raise FormatError(
            f"the checkpoint lacks {len(missing)} tensors of the network it "
            f"describes, e.g. {', '.join(missing[:3])}",
            path=path,
        )
    if result.unexpected_keys:
        log.warning(
            "%s: ignoring %d tensors the network does not use, e.g. %s",
            path,
            len(result.unexpected_keys),
            ", ".join(result.unexpected_keys[:3]),
        )
    for name in result.missing_keys:  # only _OPTIONAL ones remain: still on "meta"
        setattr(net, name, nn.Parameter(torch.tensor([_OPTIONAL[name]]), requires_grad=False))
    net = net.to(device)
    net.dtype = dtype  # cellpose's BaseModel setter converts the parameters
    net.eval().requires_grad_(False)
    return net, geometry


def model_diameter(net: nn.Module) -> float:
    """The object diameter (pixels) the network expects after rescaling: ``diam_mean``."""
    return float(net.diam_mean.detach().float().cpu()[0])


def tile_activation_bytes(geometry: NetworkGeometry, dtype: torch.dtype) -> int:
    """Rough peak working memory of the forward pass for one tile, bytes.

    Per transformer block at a time: attention scores with the relative-position sum and
    the softmax (3 × heads × tokens²), token activations (about 8 × tokens × width) and
    the MLP (2 × tokens × hidden); plus the float32 tile in and the outputs.
    """
    g = geometry
    tokens = (g.tile // g.patch_size) ** 2
    item = torch.finfo(dtype).bits // 8
    block = 3 * g.num_heads * tokens**2 + 8 * tokens * g.embed_dim
    block += 2 * tokens * int(g.mlp_ratio * g.embed_dim)
    neck = 4 * tokens * max(g.out_chans, g.n_outputs * g.patch_size**2)
    return int(item * (block + neck) + 4 * (g.in_chans + 2 * g.n_outputs) * g.tile**2)


def batch_size_for(
    geometry: NetworkGeometry, dtype: torch.dtype, budget_bytes: float, *, most: int = 64
) -> int:
    """How many tiles fit in ``budget_bytes`` at once (1 to ``most``).

    Examples
    --------
    >>> vit_l = NetworkGeometry(patch_size=8, embed_dim=1024, depth=24, num_heads=16,
    ...                         mlp_ratio=4.0, out_chans=256)
    >>> batch_size_for(vit_l, torch.bfloat16, 16 * 2**30), batch_size_for(vit_l, torch.float32, 1e6)
    (64, 1)
    """
    per_tile = tile_activation_bytes(geometry, dtype)
    return int(max(1, min(most, budget_bytes // per_tile)))


def free_memory_bytes(device: torch.device) -> float:
    """Memory the forward pass may use on ``device``: half of what is free there.

    CUDA: free device memory; MPS: the recommended working set minus what the driver
    holds; CPU: available host memory, at most 4 GiB (larger batches do not run faster
    on a CPU).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.5 * free
    if device.type == "mps":
        held = torch.mps.driver_allocated_memory()
        return 0.5 * max(0, torch.mps.recommended_max_memory() - held)
    import psutil

    return 0.5 * min(psutil.virtual_memory().available, 8 * 2**30)


def describe_dtype(dtype: torch.dtype) -> str:
    """``"bfloat16"``, ``"float32"``..."""
    return str(dtype).removeprefix("torch.")
