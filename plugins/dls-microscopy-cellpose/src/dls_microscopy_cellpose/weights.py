"""Where Cellpose weights come from: an explicit file or cellpose's own model cache.

Nothing here touches the network.  Cellpose itself downloads missing weights when a
model is created by name (``CellposeModel()``); this plugin never does that: weights
are an explicit file (parameter ``model_path``, CLI ``--model PATH``; a bare name such
as ``--model cpsam`` is also looked up in the cache) or a file that cellpose's cache
already holds (``$CELLPOSE_LOCAL_MODELS_PATH/NAME``, then ``~/.cellpose/models/NAME``).
When neither exists, :class:`ModelNotFoundError` says where to put the file and how to
fetch it on a machine with internet access.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dls_microscopy.errors import FormatError, InputError, ModelNotFoundError

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MODEL",
    "cache_dirs",
    "check_weights_file",
    "download_url",
    "find_weights",
    "sha256_file",
]

#: cellpose 4's default model (``CellposeModel(pretrained_model="cpsam_v2")``)
DEFAULT_MODEL = "cpsam_v2"
#: environment variable naming cellpose's model folder
CACHE_ENV = "CELLPOSE_LOCAL_MODELS_PATH"
#: where cellpose downloads its models from (file name appended)
_DOWNLOAD_BASE = "https://huggingface.co/mouseland/cellpose-sam/resolve/main/"
_HASH_CHUNK = 1 << 22


def cache_dirs() -> list[Path]:
    """Cellpose's model folders, searched in this order.

    ``$CELLPOSE_LOCAL_MODELS_PATH`` (when set), then ``~/.cellpose/models``.
    Read at call time, so a changed environment is honoured.
    """
    dirs = []
    env = os.environ.get(CACHE_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    default = Path.home() / ".cellpose" / "models"
    if default not in dirs:
        dirs.append(default)
    return dirs


def download_url(model_name: str) -> str:
    """The address cellpose fetches ``model_name`` from."""
    return _DOWNLOAD_BASE + model_name


def _check_name(model_name: str) -> None:
    if not model_name or Path(model_name).name != model_name or model_name in (".", ".."):
        raise InputError(
            f"model_name must be a file name in cellpose's model folder, got {model_name!r}; "
            "give a weights file with model_path / --model PATH instead"
        )


#: the models cellpose 4 publishes (``cellpose.models.MODEL_NAMES``); others are the user's own
PUBLISHED_MODELS = ("cpsam_v2", "cpsam", "cpdino", "cpdino-vitb")


def _how_to_fetch(model_name: str, destination: Path) -> str:
    if model_name not in PUBLISHED_MODELS:  # a model of one's own: there is nothing to fetch
        published = ", ".join(PUBLISHED_MODELS)
        return (
            f"{model_name!r} is not one of cellpose's published models ({published}): "
            f"check the path, or copy your trained weights to {destination}"
        )
    url = download_url(model_name)
    return (
        f"This program never downloads weights. On a machine with internet access, fetch "
        f'{url} (e.g. `curl -L -o {model_name} {url}`, or run `python -c "from cellpose '
        f"import models; models.CellposeModel(pretrained_model='{model_name}')\"`, which "
        f"saves it as ~/.cellpose/models/{model_name}), then copy the file to {destination}"
    )


#: how the files ``torch.save`` writes begin: a zip archive, or (the legacy format) a pickle
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def check_weights_file(path: Path) -> Path:
    """Refuse a file that cannot be PyTorch weights, from its first bytes (nothing is loaded).

    A text file, an HTML page left by a failed download or an image given as the model is
    refused here, when the segmenter is made, not when the first block is segmented.

    Raises
    ------
    FormatError
        The file is empty, or does not begin as ``torch.save`` writes.
    InputError
        The file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise InputError(f"cannot read the weights file: {exc.strerror or exc}", path=path) from exc
    if not head:
        raise FormatError("cannot read the file as PyTorch weights: the file is empty", path=path)
    if not head.startswith(_TORCH_MAGIC):
        text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)
        raise FormatError(
            "cannot read the file as PyTorch weights: it is not what torch.save writes "
            f"(a zip archive or a pickle){'; it holds text' if text else ''}",
            path=path,
        )
    return path


def find_weights(
    model_path: str | os.PathLike[str] | None = None, *, model_name: str = DEFAULT_MODEL
) -> Path:
    """The weights file to load.

    Parameters
    ----------
    model_path : path-like, optional
        An explicit weights file.  A bare file name that is not a file in the working
        directory is also looked up in :func:`cache_dirs` (``--model cpsam``).
    model_name : str
        File name looked up in :func:`cache_dirs` when ``model_path`` is None.

    Returns
    -------
    Path
        An existing file that begins as PyTorch weights do (:func:`check_weights_file`).

    Raises
    ------
    ModelNotFoundError
        When the file is missing or is a folder; the message says where to put it and how
        to fetch it.
    FormatError
        The file is not PyTorch weights (a text file, an HTML page).
    InputError
        For a ``model_name`` that is not a plain file name.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if path.is_file():
            return check_weights_file(path)
        if os.fspath(model_path) == path.name and path.name not in ("", ".", ".."):
            # a bare name such as "cpsam": also look in cellpose's model folders
            try:
                found = _find_in_cache(path.name, also_looked=[path.resolve()])
            except ModelNotFoundError:
                if not path.is_dir():
                    raise
            else:
                return check_weights_file(found)
        if path.is_dir():
            raise ModelNotFoundError(
                "Cellpose weights: this is a folder, not a weights file; give the weights file "
                f"itself (e.g. {path / DEFAULT_MODEL})",
                path=path,
            )
        raise ModelNotFoundError(
            f"Cellpose weights file not found. {_how_to_fetch(path.name or DEFAULT_MODEL, path)}.",
            path=path,
        )
    _check_name(model_name)
    return check_weights_file(_find_in_cache(model_name))


def _find_in_cache(model_name: str, *, also_looked: list[Path] | None = None) -> Path:
    dirs = cache_dirs()
    for folder in dirs:
        candidate = folder / model_name
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(p) for p in [*(also_looked or []), *(d / model_name for d in dirs)])
    raise ModelNotFoundError(
        f"Cellpose weights {model_name!r} not found (looked in: {looked}). "
        f"{_how_to_fetch(model_name, dirs[0] / model_name)} (or into the folder named by "
        f"${CACHE_ENV}), or pass the file with --model PATH (parameter model_path)."
    )


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 4 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
