"""Whether a field of an earlier run can be kept: what a committed field is compared by.

A run keeps a field folder only when it was made with the same settings
(:func:`config_digest`), from the same input, and its outputs, inputs and
models are as its manifest records them (:func:`committed_field`).  No input is
read for this: sizes, file counts and change times (:func:`_input_stat`) and the
models' sha256 (:func:`model_digests`).  Split from :mod:`.field`, which runs a field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dls_microscopy.pipeline.config import PipelineConfig
from dls_microscopy.pipeline.fields import FieldSpec

__all__ = ["FIELD_FILE", "committed_field", "config_digest", "model_digests"]

log = logging.getLogger(__name__)

#: A field folder's record of what ran and what came out.
FIELD_FILE = "field.json"


def model_digests(cfg: PipelineConfig) -> dict[str, str]:
    """sha256 of the model files ``cfg`` names, by absolute path (missing ones left out).

    The embedding models, and the segment step's ``model`` where it is a file (not a
    name the segmenter looks up itself, such as cellpose's ``cpsam``).
    """
    from dls_microscopy.pipeline.provenance import digest_file

    paths = list(cfg.steps.embeddings.model) if cfg.steps.embeddings is not None else []
    if cfg.steps.segment is not None and cfg.steps.segment.model is not None:
        paths.append(cfg.steps.segment.model)
    found = {}
    for p in paths:
        path = Path(p).absolute()
        with contextlib.suppress(OSError):
            found[str(path)] = digest_file(path)
    return found


def _segment_model(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The ``models`` entry of the segment step's model file, read as the field begins.

    None without one, or for a model name the segmenter looks up itself.  Recorded so that
    a model retrained into the same file redoes the field (:func:`committed_field`) and
    ``verify`` names it, as for the embedding models.
    """
    from dls_microscopy.pipeline.provenance import digest_file

    s = cfg.steps.segment
    if s is None or s.model is None:
        return None
    path = Path(s.model).absolute()
    try:
        sha256 = digest_file(path)
    except OSError:  # a name (cellpose's "cpsam"), or a folder: the segmenter resolves it
        return None
    return {"name": path.name, "path": str(path), "step": "segment", "sha256": sha256}


def config_digest(cfg: PipelineConfig) -> str:
    """sha256 of what decides a field's outputs (input selection, steps, seed)."""
    relevant = {
        "input": cfg.input.model_dump(mode="json", exclude={"path"}),
        "steps": cfg.steps.model_dump(mode="json"),
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def committed_field(
    folder: Path,
    digest: str,
    model_sha256: Mapping[str, str] | None = None,
    spec: FieldSpec | None = None,
) -> bool:
    """Whether ``folder`` holds a complete field made with the same settings.

    Checks the settings digest, that the field was made from ``spec`` (the
    same image, series and time point: the settings digest leaves
    ``input.path`` out, and another plate's field has the same key), that every
    output listed in the manifest exists with its size, that the inputs (the
    image, and a label image read from it) still have the recorded size,
    number of files and latest change time (no file is read: an edit that also
    restores the change time is not detected; ``force`` redoes), and that the
    models it used still have the sha256 in ``model_sha256`` (absolute path →
    sha256 of the files now): a model retrained into the same file would
    otherwise mix two encoders' columns in one table.
    """
    from dls_microscopy.pipeline.provenance import MANIFEST_NAME

    try:
        info = json.loads((folder / FIELD_FILE).read_text(encoding="utf-8"))
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if info.get("config_sha256") != digest:
        log.info("%s was made with other settings: redoing it", folder.name)
        return False
    if spec is not None and not _same_field(spec, info, manifest):
        log.info("%s was made from another input (%s): redoing it", folder.name, info.get("source"))
        return False
    for entry in manifest.get("outputs", []):
        f = folder / entry["path"]
        if not f.is_file() or f.stat().st_size != entry.get("size"):
            log.info("%s is incomplete (%s): redoing it", folder.name, entry["path"])
            return False
    for entry in manifest.get("models", []):
        now = (model_sha256 or {}).get(str(entry.get("path")))
        if now is not None and now != entry.get("sha256"):
            log.info("%s: its model %s changed: redoing it", folder.name, entry.get("path"))
            return False
    # the inputs' change time as the field began (field.json held the image's before 2026-11-28;
    # a label image's was not recorded before 2026-11-29: only its size and files are compared)
    resume = manifest.get("parameters", {}).get("resume", {})
    changed = {
        "image": resume.get("input_changed_ns", info.get("input_mtime_ns")),
        **(resume.get("inputs_changed_ns") or {}),
    }
    for name, entry in manifest.get("inputs", {}).items():
        path = str(entry.get("path", ""))
        stat = _input_stat(Path(path), tuple(entry.get("excluded", ())))
        mtime = changed.get(name)
        recorded = (entry.get("size"), entry.get("n_files"), mtime if mtime is not None else stat and stat[2])
        if stat != recorded:
            log.info("%s: its input %s changed: redoing it", folder.name, path)
            return False
    return True


def _same_field(spec: FieldSpec, info: Mapping[str, Any], manifest: Mapping[str, Any]) -> bool:
    """Whether a committed field (its ``field.json`` and manifest) was made from ``spec``.

    The manifest's ``arguments.field`` is the spec the field ran with; without it, the
    image path of ``field.json`` (``source``) is compared.  Paths are compared with
    symbolic links resolved: one input reached through another spelling is the same.
    """
    want = json.loads(json.dumps(dataclasses.asdict(spec)))
    recorded = (manifest.get("arguments") or {}).get("field")
    if isinstance(recorded, Mapping):
        rest = {k: v for k, v in recorded.items() if k != "source"}
        if rest != {k: v for k, v in want.items() if k != "source"}:
            return False
        return _same_source(str(recorded.get("source", "")), spec.source)
    return _same_source(str(info.get("source", "")), spec.source)


def _same_source(a: str, b: str) -> bool:
    """Whether two field sources (paths, ``file.h5:/dataset`` allowed) name one input."""
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _changed_ns(st: os.stat_result) -> int:
    # ctime too: a copy that keeps the modification time (cp -p, rsync -t, touch -r) still
    # changes the inode's change time, which nothing but the system sets
    return max(st.st_mtime_ns, st.st_ctime_ns)


def _input_stat(path: Path, exclude: tuple[str, ...] = ()) -> tuple[int, int, int] | None:
    """Bytes, files and latest change time of an input (a cheap change check: no file is read).

    ``exclude``: subfolders left out, as the manifest's digest of the input left them out.
    """
    if path.is_file():
        st = path.stat()
        return st.st_size, 1, _changed_ns(st)
    if not path.is_dir():
        return None
    from dls_microscopy.pipeline._digests import _walk

    stats = [f.stat() for f in _walk(path, exclude)]
    return sum(s.st_size for s in stats), len(stats), max((_changed_ns(s) for s in stats), default=0)
