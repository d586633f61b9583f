"""Self-supervised training of the encoders (SimCLR, NT-Xent loss).

Why SimCLR rather than VICReg: with one positive pair per object and the other
``2(B - 1)`` views of the batch as negatives, the NT-Xent loss has a single
hyper-parameter (the temperature) and cannot collapse to a point; VICReg avoids
negatives but balances three loss weights and needs wide projectors and large
batches, which a CPU-sized model trained on a few thousand objects does not
have.  Measured: VICReg's loss (weights 25 / 25 / 1) in place of NT-Xent, same
projection, gave image+shape object k-NN 0.620 against 0.785 on the phenotype
set's validation plate (docs/embeddings.md).  NT-Xent does let the embedding
collapse onto a few *dimensions*, so one term of VICReg's kind is kept: a
penalty on the correlations between the embedding's dimensions
(:data:`DEFAULT_DECORRELATION`).  Both views of an object
are augmented (:mod:`.augment`); the encoder output before the projection head is
the embedding.

Reproducibility: weights are initialised after ``torch.manual_seed(seed)``;
shuffling and augmentations come from one ``torch.Generator(seed)`` on the CPU;
``torch.use_deterministic_algorithms(True)`` and a fixed number of CPU threads
hold during training and inference, so the same data, seed, device and thread
count give the same bytes on the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from dls_microscopy.errors import InputError
from dls_microscopy.features.embeddings._training_data import (
    POOL_FACTOR,
    TrainingSample,
    image_data,
    shape_data,
    subset_indexes,
)
from dls_microscopy.features.embeddings.store import KINDS, ModelRecord, check_model_output, save_model

__all__ = [
    "TrainingSample",
    "decorrelation_loss",
    "default_epochs",
    "deterministic",
    "nt_xent",
    "train_embedding_model",
]

log = logging.getLogger(__name__)

#: Default training length: ``DEFAULT_EPOCHS`` epochs, or more where that is fewer than
#: ``MIN_STEPS`` optimisation steps.  What a contrastive encoder learns depends on how many
#: steps it takes, not on how often it sees each object: 30 epochs of 373 objects in
#: batches of 64 are only 150 steps.  On the half-dose phenotype set
#: (``benchmarks/run_embeddings.py --strength 0.5``, 373 training objects; axis-aligned
#: crops, no decorrelation term), image+shape embeddings, test plate, training seeds 0
#: and 1: replicate mAP 0.936 and 0.899 after 50 image / 40 shape epochs, 0.979 and
#: 0.978 after 150 / 120-150 epochs (seed 2: 0.976); object k-NN 0.630 and 0.622 -> 0.735
#: and 0.705 (seed 2: 0.756).  300 / 240 epochs did not help further (0.931 on seed 0).
#: Large training sets (4,096 objects: 64 steps per epoch) keep 30 epochs.
DEFAULT_EPOCHS = 30
MIN_STEPS = 750
#: Default weight of the decorrelation term, per model kind.  NT-Xent alone let the
#: embeddings collapse onto a few directions (dimensional collapse): on the phenotype
#: set's validation plate the first 4 principal components of the image embedding held
#: 99 % of its variance, the shape embedding's first one 93 % (elongation), so what
#: told lobed nuclei apart sat in directions a z-scored, cosine-compared profile barely
#: weighs.  Penalising the squared off-diagonal correlations of the embedding (the
#: encoder's output, not the projection; the covariance term of VICReg/Barlow Twins)
#: spreads it.  Validation plate, half dose, training seeds 0/1/2, object k-NN: image
#: embedding 0.566/0.553/0.569 (weight 0) -> 0.699/0.702/0.689 (weight 4); image+shape
#: 0.678/0.697/0.710 -> 0.739/0.705/0.729 (image 4, shape 1).  The shape encoder, whose
#: input is already pose-free, lost accuracy above 1 (0.55 -> 0.42 at 4).
DEFAULT_DECORRELATION = {"image": 4.0, "shape": 1.0}


def default_epochs(n_objects: int, batch_size: int) -> int:
    """Epochs :func:`train_embedding_model` runs by default for ``n_objects`` in batches of ``batch_size``."""
    steps_per_epoch = max(1, int(n_objects) // max(1, min(int(batch_size), int(n_objects))))
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))


def default_threads() -> int:
    """CPU threads used by training and inference unless told: usable cores, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


@contextlib.contextmanager
def deterministic(threads: int | None) -> Iterator[int]:
    """Deterministic algorithms and a fixed CPU thread count, restored on exit."""
    import torch

    n = int(threads) if threads else default_threads()
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(n)
    _set_deterministic(True, warn_only=True)
    try:
        yield n
    finally:
        torch.set_num_threads(old_threads)
        _set_deterministic(old_det, warn_only=old_warn)


def _set_deterministic(mode: bool, *, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without importing ``torch._inductor``.

    The public function also sets inductor's flag, importing inductor and triton to do
    so: seconds of import time, and a segmentation fault when triton's LLVM loads into
    a process where Qt/Mesa already loaded theirs (napari: measuring with embedding
    models from the Features widget crashed the app).  We never compile with
    inductor, so only the eager flag matters.
    """
    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # pragma: no cover - a torch without the private setter
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


def nt_xent(z1: Any, z2: Any, temperature: float) -> Any:
    """SimCLR's normalised-temperature cross entropy of two views ``(B, D)``."""
    import torch
    import torch.nn.functional as F

    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def decorrelation_loss(e: Any) -> Any:
    """Mean squared off-diagonal correlation of a batch of embeddings ``(B, D)`` (0: decorrelated)."""
    c = e - e.mean(dim=0)
    c = c / c.norm(dim=0).clamp_min(1e-6)
    corr = c.T @ c
    d = corr.shape[0]
    return (corr.pow(2).sum() - corr.diagonal().pow(2).sum()) / (d * (d - 1))


def train_embedding_model(
    samples: Sequence[TrainingSample],
    kind: str,
    out: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: str | None = "auto",
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    temperature: float = 0.2,
    decorrelation: float | None = None,
    dim: int = 32,
    width: int | None = None,
    crop_size: int = 24,
    fov_um: float | None = None,
    mask_channel: bool = True,
    crop_frame: str = "principal",
    input_stats: bool = True,
    n_points: int = 256,
    scale_um: float | None = None,
    max_objects: int = 4096,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    overwrite: bool = False,
) -> ModelRecord:
    """Learn an image or shape encoder from objects of the user's own data and save it.

    Parameters
    ----------
    samples : sequence of TrainingSample
        Images (for ``kind="image"``) and labels with their spacing.
    kind : {"image", "shape"}
        A 3D CNN on object crops, or a PointNet on surface point clouds.
    out : path
        Weights file (``.pt``); the record is written beside it (``.json``).
    epochs, batch_size, learning_rate, temperature
        AdamW (weight decay 1e-4) with a cosine learning-rate schedule; NT-Xent temperature.
        ``epochs`` defaults to :func:`default_epochs`: 30, or enough for 750 steps.
    decorrelation : float, optional
        Weight of :func:`decorrelation_loss` of both views' embeddings, added to
        NT-Xent (default :data:`DEFAULT_DECORRELATION` of ``kind``; 0: plain SimCLR).
    seed : int
        Seeds initialisation, subsampling, point sampling, shuffling, augmentations.
    device : str
        ``"auto"`` (cuda > mps > cpu) or a torch device string.
    dim, width
        Embedding size; network width (default 12 for image, 32 for shape models).
    crop_size, fov_um
        Image crops: edge in voxels and µm (default: 1.2× the 95th percentile of
        the objects' largest bounding-box extent, rounded up to a µm).
    mask_channel : bool
        Image models: give the network the object's mask as one more input
        channel (see :mod:`.object_crops`).
    crop_frame : {"principal", "axes"}
        Image models: crops rotated onto each object's principal axes (pose
        removed before the network, as for shape models' point clouds) or
        aligned with the image axes (models before this option).
    input_stats : bool
        Image models: the crop's per-channel mean and standard deviation go to
        the encoder's last layer beside the pooled features (see
        :class:`~.networks.ImageEncoder`).
    n_points, scale_um
        Shape models: points per cloud; µm per coordinate unit (default: half
        the median largest extent, to 0.5 µm).
    max_objects : int
        Train on a seeded random subset when there are more objects (memory:
        ``max_objects × channels × crop_size³ × 4`` bytes for image models).
    threads : int, optional
        CPU threads (default :func:`default_threads`).
    progress : callable, optional
        ``progress("train", epoch, epochs)``.
    overwrite : bool
        Replace an existing model at ``out`` (weights and record); without it an existing
        one is refused before any training.

    Returns
    -------
    ModelRecord
        As saved, with ``weights_sha256`` and ``training["loss_history"]``.
    """
    import torch

    from dls_microscopy.device import resolve_device
    from dls_microscopy.features.embeddings.augment import augment_points, augment_volumes
    from dls_microscopy.features.embeddings.networks import build_network

    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if not samples:
        raise InputError("no training images given")
    if (epochs is not None and epochs < 1) or batch_size < 2:
        raise InputError(f"need epochs >= 1 and batch_size >= 2 (got {epochs}, {batch_size})")
    check_model_output(out, overwrite=overwrite)  # now, not after minutes of training
    dev = resolve_device(device)
    t0 = time.perf_counter()
    indexes = subset_indexes(samples, max_objects, seed)
    if kind == "image":
        data, pre = image_data(samples, indexes, crop_size, fov_um, mask_channel, crop_frame)
        arch = {
            "in_channels": int(data.shape[1]),
            "width": int(width or 12),
            "dim": int(dim),
            "input_stats": bool(input_stats),
        }
    else:
        data, pre = shape_data(samples, indexes, n_points, scale_um, seed)
        arch = {"width": int(width or 32), "dim": int(dim), "norm": "group+scale"}
    n = len(data)
    if n < 2:
        raise InputError(f"need at least 2 objects to train, found {n}")
    data_sha = hashlib.sha256(memoryview(np.ascontiguousarray(data)).cast("B")).hexdigest()  # no copy
    t_data = time.perf_counter()
    bs = min(int(batch_size), n)
    steps_per_epoch = n // bs
    if epochs is None:
        epochs = default_epochs(n, bs)
    decor = float(DEFAULT_DECORRELATION[kind] if decorrelation is None else decorrelation)
    history: list[float] = []
    with deterministic(threads if dev.type == "cpu" else None) as n_threads:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = build_network(kind, arch).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
        tensor = torch.from_numpy(data)
        net.train()
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for step in range(steps_per_epoch):
                x = tensor[perm[step * bs : (step + 1) * bs]].to(dev)
                if kind == "image":
                    v1, v2 = augment_volumes(x, gen), augment_volumes(x, gen)
                else:
                    v1, v2 = augment_points(x, n_points, gen), augment_points(x, n_points, gen)
                e1, z1 = net(v1)
                e2, z2 = net(v2)
                loss = nt_xent(z1, z2, temperature)
                if decor:
                    loss = loss + decor * (decorrelation_loss(e1) + decorrelation_loss(e2)) / 2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
            history.append(total / steps_per_epoch)
            log.info("%s model, epoch %d/%d: loss %.4f", kind, epoch + 1, epochs, history[-1])
            if progress:
                progress("train", epoch + 1, epochs)
    t_train = time.perf_counter()
    training = {
        "method": "SimCLR (NT-Xent) + decorrelation" if decor else "SimCLR (NT-Xent)",
        "epochs": int(epochs),
        "batch_size": bs,
        "learning_rate": float(learning_rate),
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "temperature": float(temperature),
        "decorrelation": decor,
        "augmentations": (
            "cube rotations/flips, rotation <= 20 deg, gain +-10 %, noise 0.03 inside"
            if kind == "image"
            else f"{n_points} of {POOL_FACTOR * n_points} points, axis flips, rotation <= 20 deg, jitter 0.01"
        ),
        "n_objects": int(n),
        "n_images": len(samples),
        "device": dev.type,
        "threads": int(n_threads),
        "torch": torch.__version__,
        "loss_history": [round(v, 6) for v in history],
        "seconds": {"data": round(t_data - t0, 3), "train": round(t_train - t_data, 3)},
    }
    record = ModelRecord(kind, arch, pre, training, int(seed), data_sha)
    return save_model(net, record, out)
