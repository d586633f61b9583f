"""Embedding models on disk: a ``state_dict`` file and a JSON record beside it.

``model.pt`` holds the weights (``torch.save`` of the ``state_dict``, read back
with ``torch.load(..., weights_only=True)``: no pickled code is ever executed);
``model.json`` (same stem) holds the :class:`ModelRecord`: kind, architecture,
preprocessing, training parameters and loss history, seed, the sha256 of the
training data and the sha256 of ``model.pt``.  Loading checks that digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dls_microscopy.errors import CorruptDataError, InputError, ModelNotFoundError
from dls_microscopy.io.atomic import check_output_file, partial_file, release_partial

__all__ = [
    "MODEL_FORMAT",
    "ModelRecord",
    "check_model_output",
    "load_model",
    "metadata_path",
    "save_model",
    "sha256_file",
]

MODEL_FORMAT = "dls-microscopy-embedding/1"
KINDS = ("image", "shape")


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """What a model is and how it was made.

    Attributes
    ----------
    kind : {"image", "shape"}
    arch : dict
        Network parameters (:func:`~.networks.build_network`).
    preprocessing : dict
        Image: ``size``, ``fov_um``, ``mask``, ``mask_channel``, ``channels``; shape: ``n_points``,
        ``scale_um``, ``sample_seed``, ``mesh_smooth``; both: ``tta`` (``"flips8"``:
        embeddings are averaged over the 8 reflections of the input).
    training : dict
        Epochs, batch size, learning rate, temperature, augmentations, objects,
        device, threads, ``loss_history`` (mean loss per epoch).
    seed : int
    data_sha256 : str
        Digest of the exact training arrays (crops or point pools).
    weights_sha256 : str
        Digest of the weights file (set by :func:`save_model`).
    format : str
    """

    kind: str
    arch: dict[str, Any]
    preprocessing: dict[str, Any]
    training: dict[str, Any]
    seed: int
    data_sha256: str
    weights_sha256: str = ""
    format: str = MODEL_FORMAT

    @property
    def prefix(self) -> str:
        """Column prefix of its embeddings, ``Embedding_Image_`` or ``Embedding_Shape_``."""
        return f"Embedding_{self.kind.capitalize()}_"

    def provenance(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The entry for a manifest's ``models`` list."""
        return {
            "name": Path(path).name,
            "path": str(Path(path).absolute()),
            "kind": self.kind,
            "format": self.format,
            "sha256": self.weights_sha256,
            "data_sha256": self.data_sha256,
            "seed": self.seed,
        }


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def metadata_path(path: str | os.PathLike[str]) -> Path:
    """The JSON record beside a weights file (``model.pt`` → ``model.json``)."""
    return Path(path).with_suffix(".json")


def check_model_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse a model output before training (which takes minutes), not after.

    Both the weights file and its record beside it (``.json``) must be writable and,
    without ``overwrite``, new: an existing model is never replaced unasked.

    Raises
    ------
    InputError
        ``path`` names the record (``.json``), not the weights.
    OutputError
        Either file exists (without ``overwrite``), or their folder cannot be written.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise InputError(
            "give the weights file name (e.g. model.pt); the .json record goes beside it", path=path
        )
    for file in (path, metadata_path(path)):
        check_output_file(file, overwrite=overwrite)
    return path


def save_model(net: Any, record: ModelRecord, path: str | os.PathLike[str]) -> ModelRecord:
    """Write the weights and the record; return the record with ``weights_sha256`` set."""
    import torch

    path = Path(path)
    if path.suffix == ".json":
        raise InputError("give the weights file name (e.g. model.pt); the .json record goes beside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = partial_file(path)
    # through a file object: given a path, torch names the archive's folder after the file,
    # and the same weights saved as a.pt and b.pt would differ in bytes and sha256
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    finally:
        release_partial(tmp)  # gone after the rename; a failed write leaves nothing
    record = dataclasses.replace(record, weights_sha256=sha256_file(path))
    meta = metadata_path(path)
    meta.write_text(json.dumps(dataclasses.asdict(record), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return record


def _missing(path: Path, what: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"embedding model {what} not found. Models are learned from your own data (no weights are "
        "downloaded): train one with `dls-microscopy embed train IMAGE LABELS [IMAGE LABELS...] "
        f"--kind image|shape --out {path.with_suffix('.pt').name}`",  # the weights, also for a record
        path=path,
    )


#: JSON type of each field of a record, and its name in messages
_RECORD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "kind": (str, "a string"),
    "arch": (dict, "an object"),
    "preprocessing": (dict, "an object"),
    "training": (dict, "an object"),
    "seed": (int, "an integer"),
    "data_sha256": (str, "a string"),
    "weights_sha256": (str, "a string"),
    "format": (str, "a string"),
}


def _record_problem(data: Any) -> str | None:
    """What makes ``data`` (a parsed record) unusable, or None: each field's JSON type is checked."""
    if not isinstance(data, dict):
        return f"the record is not a JSON object: {json.dumps(data)[:40]}"
    fields = {f.name for f in dataclasses.fields(ModelRecord)}
    required = {f.name for f in dataclasses.fields(ModelRecord) if f.default is dataclasses.MISSING}
    unknown, missing = sorted(set(data) - fields), sorted(required - set(data))
    if unknown or missing:
        return "; ".join(
            [
                *([f"unknown keys {unknown}"] if unknown else []),
                *([f"missing keys {missing}"] if missing else []),
            ]
        )
    for key, (kind, name) in _RECORD_TYPES.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            return f"{key!r} must be {name}, got {json.dumps(data[key])[:40]}"
    channels = data["preprocessing"].get("channels")
    if channels is not None and not (
        isinstance(channels, list) and all(isinstance(c, str) for c in channels)
    ):
        return f"'preprocessing.channels' must be a list of channel names, got {json.dumps(channels)[:40]}"
    return None


def read_record(path: str | os.PathLike[str]) -> ModelRecord:
    """Read the JSON record of a weights file (no weights are loaded)."""
    path = Path(path)
    meta = metadata_path(path)
    if not path.exists():
        raise _missing(path, "weights")
    if not meta.exists():
        raise _missing(meta, "record")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CorruptDataError(f"unreadable model record: {exc}", path=meta) from exc
    problem = _record_problem(data)
    if problem:
        raise CorruptDataError(f"unreadable model record: {problem}", path=meta)
    record = ModelRecord(**data)
    if record.format != MODEL_FORMAT or record.kind not in KINDS:
        raise CorruptDataError(
            f"not a {MODEL_FORMAT} record (format {record.format!r}, kind {record.kind!r})", path=meta
        )
    return record


def load_model(path: str | os.PathLike[str], *, device: Any = "cpu") -> tuple[Any, ModelRecord]:
    """Load a model for inference (eval mode) on ``device``.

    Raises
    ------
    ModelNotFoundError
        The weights or the record are missing (the message says how to train one).
    CorruptDataError
        The weights' sha256 differs from the record's, or they do not fit the architecture.
    """
    import torch

    from dls_microscopy.features.embeddings.networks import build_network

    path = Path(path)
    record = read_record(path)
    digest = sha256_file(path)
    if digest != record.weights_sha256:
        raise CorruptDataError(
            f"weights sha256 {digest[:12]}… differs from the record's {record.weights_sha256[:12]}… "
            "(file changed or replaced)",
            path=path,
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = build_network(record.kind, record.arch)
        net.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CorruptDataError(f"weights do not fit the recorded architecture: {exc}", path=path) from exc
    return net.to(device).eval(), record
