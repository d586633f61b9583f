"""The pipeline configuration: one YAML file for the CLI, the GUI and the cluster.

A ``pipeline.yaml`` names the input (an image, a glob of images, or an
OME-Zarr HCS plate), the output folder, the steps to run on every field
(segment → mesh → features → embeddings, each optional) and the compute
resources.  :class:`PipelineConfig` is its pydantic model; every section
forbids unknown keys.  :func:`load_config` reads a file and reports every
problem with the file name, the YAML line and the dotted key::

    pipeline.yaml: line 14: steps.segment.params.diameter: unknown key ...

Relative paths in a file (``input.path``, ``output.path``,
``steps.segment.model``, ``steps.embeddings.model``) are relative to the
file's folder; :func:`load_config` makes them absolute.  The JSON schema of
the model, :func:`config_json_schema`, is published as
``pipeline.schema.json`` next to this module, so editors can validate and
complete configs.

Examples
--------
>>> cfg = PipelineConfig.model_validate(
...     {"input": {"path": "img.ome.zarr"}, "output": {"path": "out"},
...      "steps": {"segment": {"method": "watershed", "params": {"diameter_um": 7}}}})
>>> cfg.compute.memory_budget_bytes, cfg.steps.segment.params
(2000000000, {'diameter_um': 7})
"""

from __future__ import annotations

import glob as _glob
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dls_microscopy.errors import ConfigError, DlsError

__all__ = [
    "SCHEMA_PATH",
    "ClusterConfig",
    "ComputeConfig",
    "EmbeddingsStep",
    "FeaturesStep",
    "InputConfig",
    "MeshStep",
    "OutputConfig",
    "PipelineConfig",
    "SegmentStep",
    "StepsConfig",
    "config_json_schema",
    "dump_config",
    "load_config",
    "parse_size",
]

#: The published JSON schema of :class:`PipelineConfig` (kept up to date by a test).
SCHEMA_PATH = Path(__file__).with_name("pipeline.schema.json")
SCHEMA_ID = "https://example.invalid/dls-microscopy/pipeline.schema.json"

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40})
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")


def parse_size(text: str | int) -> int:
    """Bytes in ``"2GB"``, ``"512MiB"``, ``"1e9"`` or an integer.

    Raises
    ------
    ValueError
        The text is not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").lower().rstrip("b") if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"cannot read memory size {text!r} (examples: 2GB, 512MiB, 4e9)")
    return int(float(m.group(1)) * _UNITS[unit])


def _check_size(value: str | int) -> str | int:
    if parse_size(value) <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# -- input / output --------------------------------------------------------------------


class InputConfig(_Section):
    """What to analyse."""

    #: an image (any readable format, HDF5 as ``file.h5:/dataset``), a glob of images
    #: (``"images/*.ome.tif"``), or an OME-Zarr HCS plate (every well and field is run)
    path: str = Field(min_length=1)
    #: resolution level to analyse (0 = full resolution)
    level: int = Field(0, ge=0)
    #: series of a multi-series file (ignored for plates, whose fields are all run)
    series: int = Field(0, ge=0)
    #: channels, by name or index, that features measure (unless steps.features.channels says
    #: otherwise) and embeddings see (default: all)
    channels: list[str | int] | None = None
    #: name of an existing NGFF label image of the input to use when there is no
    #: ``segment`` step (for mesh, features and embeddings)
    labels: str | None = None

    def is_glob(self) -> bool:
        """Whether :attr:`path` is a glob pattern rather than one path."""
        return _glob.has_magic(self.path)


class OutputConfig(_Section):
    """Where results go: one folder per run, one subfolder per field, tables at the top."""

    #: the run's output folder (created; a rerun resumes in it)
    path: str = Field(min_length=1)
    #: format of the tables (per object, image, well and plate)
    table_format: Literal["parquet", "csv"] = "parquet"


# -- steps -------------------------------------------------------------------------------


class SegmentStep(_Section):
    """Blockwise 3D segmentation (:func:`~dls_microscopy.segment.segment_blockwise`)."""

    #: registered segmenter name (``dls-microscopy segment --help`` lists them)
    method: str = "watershed"
    #: channel to segment, by name or index (default: the only or first channel)
    channel: str | int | None = None
    #: the segmenter's own parameters, checked against its parameter model
    params: dict[str, Any] = Field(default_factory=dict)
    #: model weights file, for segmenters that take one (sets ``model_path``)
    model: str | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from dls_microscopy.segment import segmenter_names

        names = segmenter_names()
        if value not in names:
            raise PydanticCustomError(
                "unknown_segmenter",
                "unknown segmenter {method!r} (installed: {names})",
                {"method": value, "names": ", ".join(names)},
            )
        return value

    @model_validator(mode="after")
    def _check_params(self) -> SegmentStep:
        from dls_microscopy.segment.base import segmenters

        try:
            params_model = segmenters().get(self.method).Params
        except DlsError:  # not importable: reported when the run starts
            return self
        values = dict(self.params)
        if self.model is not None:
            if "model_path" not in params_model.model_fields:
                raise PydanticCustomError(
                    "segmenter_params",
                    "segmenter {method!r} takes no model file",
                    {"method": self.method, "subloc": ("model",)},
                )
            values["model_path"] = self.model
        try:
            params_model(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            sub = tuple(first["loc"])
            known = ", ".join(params_model.model_fields)
            msg = (
                f"unknown parameter of segmenter {self.method!r} (parameters: {known})"
                if first["type"] == "extra_forbidden"
                else first["msg"]
            )
            where = ("model",) if sub[:1] == ("model_path",) and self.model is not None else ("params", *sub)
            raise PydanticCustomError("segmenter_params", "{msg}", {"msg": msg, "subloc": where}) from exc
        return self


class MeshStep(_Section):
    """Per-object surface meshes in µm (:mod:`dls_microscopy.geometry`)."""

    #: ``glb``: one file per field, a node per object; ``ply``/``obj``/``stl``: a file per object
    format: Literal["glb", "ply", "obj", "stl"] = "glb"
    #: Taubin smoothing iterations (0: exact voxel surface)
    smooth: int = Field(20, ge=0)
    #: fraction of faces to keep, in (0, 1] (default: all)
    decimate: float | None = Field(None, gt=0, le=1)
    #: also compute shape descriptors (one table row per object)
    descriptors: bool = True


class FeaturesStep(_Section):
    """Morphology and intensity features per object (:mod:`dls_microscopy.features`)."""

    #: channels to measure, by name or index (default: all loaded channels)
    channels: list[str | int] | None = None
    #: feature-name prefix, e.g. ``Nuclei`` or ``Cells``
    compartment: str = Field("Nuclei", min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9]*$")


class EmbeddingsStep(_Section):
    """Learned per-object embeddings (``Embedding_*`` columns)."""

    #: model file(s) of the embedding model(s) to apply
    model: list[str] = Field(min_length=1)

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class StepsConfig(_Section):
    """The steps run on every field, in this order; a missing step is skipped."""

    segment: SegmentStep | None = None
    mesh: MeshStep | None = None
    features: FeaturesStep | None = None
    embeddings: EmbeddingsStep | None = None

    def names(self) -> list[str]:
        """Names of the configured steps, in run order."""
        return [n for n in ("segment", "mesh", "features", "embeddings") if getattr(self, n) is not None]


# -- compute -----------------------------------------------------------------------------


class ClusterConfig(_Section):
    """Where fields run: local threads/processes, or batch jobs through dask-jobqueue."""

    #: ``local`` (this machine), ``slurm`` or ``pbs`` (dask-jobqueue)
    kind: Literal["local", "slurm", "pbs"] = "local"
    #: queue / partition of the batch system
    queue: str | None = None
    #: account / project charged for the jobs
    account: str | None = None
    #: cores per job
    cores: int = Field(1, ge=1)
    #: memory per job, e.g. ``4GB``
    memory: str = "4GB"
    #: wall time per job, ``HH:MM:SS`` or ``D-HH:MM:SS``
    walltime: str = "01:00:00"
    #: dask worker processes per job
    processes: int = Field(1, ge=1)
    #: number of jobs to start
    jobs: int = Field(1, ge=1)
    #: extra lines for the job script header, e.g. ``["--gres=gpu:1"]``
    job_extra_directives: list[str] = Field(default_factory=list)
    #: network interface of the workers, e.g. ``ib0``
    interface: str | None = None
    #: scratch folder on the worker nodes
    local_directory: str | None = None
    #: Python interpreter of the workers (default: this one)
    python: str = Field(default_factory=lambda: sys.executable)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        _check_size(value)
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if not _WALLTIME.match(value):
            raise ValueError(f"wall time must be HH:MM:SS or D-HH:MM:SS, got {value!r}")
        return value


class ComputeConfig(_Section):
    """Resources for the run."""

    #: memory the blockwise steps may use at once, e.g. ``2GB`` (sets block sizes)
    memory_budget: str | int = "2GB"
    #: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda`` or ``mps``
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    #: fields run in parallel (default: 1 field at a time locally; one per worker on a cluster)
    workers: int | None = Field(None, ge=1)
    #: the cluster backend and its job settings
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_validator("memory_budget")
    @classmethod
    def _budget(cls, value: str | int) -> str | int:
        return _check_size(value)

    @property
    def memory_budget_bytes(self) -> int:
        """:attr:`memory_budget` in bytes."""
        return parse_size(self.memory_budget)


# -- the whole file ------------------------------------------------------------------------


class PipelineConfig(_Section):
    """A ``pipeline.yaml``: input, output, steps, compute and seed (see the module docstring)."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        title="DLS Microscopy pipeline configuration",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID},
    )

    #: version of this file format
    version: Literal[1] = 1
    input: InputConfig
    output: OutputConfig
    steps: StepsConfig
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    #: seed of every random choice (none of the built-in steps draws random numbers)
    seed: int = 0

    @field_validator("steps")
    @classmethod
    def _some_step(cls, steps: StepsConfig) -> StepsConfig:
        if not steps.names():
            raise ValueError("no step configured: give at least one of segment, mesh, features, embeddings")
        return steps

    @model_validator(mode="after")
    def _labels_source(self) -> PipelineConfig:
        needs_labels = [n for n in ("mesh", "features", "embeddings") if getattr(self.steps, n) is not None]
        if needs_labels and self.steps.segment is None and self.input.labels is None:
            raise PydanticCustomError(
                "missing_labels",
                "step(s) {steps} need labels: add a 'segment' step or set input.labels",
                {"steps": ", ".join(needs_labels), "subloc": ("steps",)},
            )
        return self

    def to_yaml(self) -> str:
        """The configuration as YAML text (every value, defaults included)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def with_paths_relative_to(self, base: str | os.PathLike[str]) -> PipelineConfig:
        """A copy whose relative paths are made absolute against the folder ``base``."""

        def absolute(p: str) -> str:
            file_part, sep, internal = p.partition(".h5:") if ".h5:" in p else (p, "", "")
            q = Path(os.path.expanduser(file_part))
            q = q if q.is_absolute() else Path(base) / q
            return os.path.normpath(q) + sep + internal

        data = self.model_dump()
        data["input"]["path"] = absolute(data["input"]["path"])
        data["output"]["path"] = absolute(data["output"]["path"])
        seg = data["steps"].get("segment")
        if seg and seg.get("model"):
            seg["model"] = absolute(seg["model"])
        emb = data["steps"].get("embeddings")
        if emb:
            emb["model"] = [absolute(m) for m in emb["model"]]
        return PipelineConfig.model_validate(data)


# -- reading and writing -------------------------------------------------------------------


def config_json_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of :class:`PipelineConfig`."""
    return PipelineConfig.model_json_schema()


def dump_config(cfg: PipelineConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML to ``path`` and return the path."""
    out = Path(path)
    out.write_text(cfg.to_yaml(), encoding="utf-8")
    return out


def load_config(path: str | os.PathLike[str], *, resolve_paths: bool = True) -> PipelineConfig:
    """Read and validate a ``pipeline.yaml``.

    Parameters
    ----------
    path : path
        The YAML file.
    resolve_paths : bool
        Make relative paths absolute against the file's folder.

    Returns
    -------
    PipelineConfig

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    ConfigError
        Bad YAML, unknown keys, wrong types or values; the message names the
        file and, per problem, the YAML line and the dotted key.
    """
    from dls_microscopy.errors import InputNotFoundError

    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError("configuration file does not exist", path=p)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration: {exc}", path=p) from exc
    cfg = parse_config(text, source=p)
    return cfg.with_paths_relative_to(p.absolute().parent) if resolve_paths else cfg


def parse_config(text: str, *, source: str | os.PathLike[str] | None = None) -> PipelineConfig:
    """Validate YAML text as a :class:`PipelineConfig` (see :func:`load_config`)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        where = f"line {line}: " if line else ""
        raise ConfigError(
            f"{where}invalid YAML: {problem}", path=source, issues=[("", line, problem)]
        ) from exc
    if root is None:
        raise ConfigError("the configuration is empty", path=source, issues=[("", None, "empty")])
    duplicates = _duplicate_keys(root, ())
    if duplicates:
        issues = [(".".join(map(str, k)), line, "key given twice") for k, line in duplicates]
        raise ConfigError(_format(issues), path=source, issues=issues)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        issue = ("", root.start_mark.line + 1, "the configuration must be a mapping of sections")
        raise ConfigError(_format([issue]), path=source, issues=[issue])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        issues = [_issue(err, root) for err in exc.errors()]
        raise ConfigError(_format(issues), path=source, issues=issues) from exc


def _format(issues: Sequence[tuple[str, int | None, str]]) -> str:
    parts = []
    for key, line, msg in issues:
        where = f"line {line}: " if line is not None else ""
        parts.append(f"{where}{key + ': ' if key else ''}{msg}")
    return "; ".join(parts)


def _issue(err: Any, root: yaml.Node) -> tuple[str, int | None, str]:
    loc = list(err["loc"])
    ctx = err.get("ctx") or {}
    if "subloc" in ctx:  # our own validators say which key inside their section is wrong
        loc = [*loc, *ctx["subloc"]]
    keys = _data_path(loc, root)
    line = _line_of(keys, root)
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _allowed(keys[:-1])
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
    return ".".join(str(k) for k in keys), line, msg


def _data_path(loc: Sequence[Any], root: yaml.Node) -> list[Any]:
    """The part of a pydantic error location that addresses the data (drops union tags)."""
    keys: list[Any] = []
    node: yaml.Node | None = root
    for item in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(item, str):
            child = next((v for k, v in node.value if k.value == item), None)
            if child is None and item not in _model_keys(keys):
                continue  # a union member tag such as 'list[str]' or 'function-after[...]'
            keys.append(item)
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            keys.append(item)
            node = node.value[item] if item < len(node.value) else None
        elif node is None and isinstance(item, str) and item in _model_keys(keys):
            keys.append(item)
        # anything else is a tag of a union member: skip it
    return keys


def _section_model(keys: Sequence[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = PipelineConfig
    for k in keys:
        if model is None or not isinstance(k, str) or k not in model.model_fields:
            return None
        ann = model.model_fields[k].annotation
        args = getattr(ann, "__args__", ())
        candidates = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = candidates[0] if candidates else None
    return model


def _model_keys(keys: Sequence[Any]) -> set[str]:
    model = _section_model(keys)
    if model is None:
        return set()
    return set(model.model_fields)


def _allowed(keys: Sequence[Any]) -> str:
    model = _section_model(keys)
    if model is None:
        return ""
    return f" (allowed here: {', '.join(model.model_fields)})"


def _line_of(keys: Sequence[Any], root: yaml.Node) -> int | None:
    node = root
    line = root.start_mark.line + 1
    for k in keys:
        if isinstance(node, yaml.MappingNode):
            pair = next(((kn, vn) for kn, vn in node.value if kn.value == k), None)
            if pair is None:
                return line
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(k, int) and k < len(node.value):
            node = node.value[k]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(node: yaml.Node, where: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], int]]:
    found: list[tuple[tuple[Any, ...], int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            if k.value in seen:
                found.append(((*where, k.value), k.start_mark.line + 1))
            seen.add(k.value)
            found += _duplicate_keys(v, (*where, k.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found += _duplicate_keys(v, (*where, i))
    return found
