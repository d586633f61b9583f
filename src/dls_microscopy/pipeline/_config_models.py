"""The pydantic models of a ``pipeline.yaml``, one per section.

Part of :mod:`dls_microscopy.pipeline.config`, which documents the file and
re-exports every model.  Every section forbids unknown keys.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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

from dls_microscopy.errors import DlsError
from dls_microscopy.pipeline._config_size import _check_size, parse_size

SCHEMA_ID = "https://example.invalid/dls-microscopy/pipeline.schema.json"
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")


class _Section(BaseModel):
    # each field's docstring is its description in the published JSON schema (editors show it)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


# -- input / output --------------------------------------------------------------------


#: a length in µm: positive and finite (YAML's `true` is not 1, hence strict)
_Micrometres = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
_SPACING_SCHEMA = [  # what ``input.spacing`` takes, a number included (its validator makes it a list)
    {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1, "maxItems": 3},
    {"type": "number", "exclusiveMinimum": 0},
    {"type": "null"},
]


class InputConfig(_Section):
    """What to analyse."""

    path: str = Field(min_length=1)
    """an image (any readable format, HDF5 as ``file.h5:/dataset``), a glob of images
    (``"images/*.ome.tif"``), or an OME-Zarr HCS plate (every well and field is run); a time
    series runs one field per time point (``Metadata_TimePoint``; its folder and
    ``Metadata_ImageID`` end in ``_tN``), and wells and plates are aggregated per time point
    """
    level: int = Field(0, ge=0, strict=True)  # strict: YAML's `true` is not level 1
    """resolution level to analyse (0 = full resolution)"""
    series: int = Field(0, ge=0, strict=True)
    """series of a multi-series file (a plate's fields are all run: no series there)"""
    channels: list[str | int] | None = None
    """channels, by name or index, that features measure (unless steps.features.channels says
    otherwise) and embeddings see (default: all)
    """
    labels: str | None = None
    """name of an existing NGFF label image of the input to use when there is no ``segment``
    step (for mesh, features and embeddings)
    """
    spacing: list[_Micrometres] | None = Field(
        None, min_length=1, max_length=3, json_schema_extra={"anyOf": _SPACING_SCHEMA}
    )
    """voxel size in µm at full resolution, ``[z, y, x]`` (or one number for all axes), in
    place of the files' metadata: for files that lack it or have it wrong. Every step uses it;
    the input files are not changed
    """

    @field_validator("spacing", mode="before")
    @classmethod
    def _one_for_all(cls, value: Any) -> Any:
        # one number for every axis (the schema above says so too); YAML's `true` is no number
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value

    def is_glob(self) -> bool:
        """Whether :attr:`path` is a glob pattern rather than one path."""
        return _glob.has_magic(self.path)


class OutputConfig(_Section):
    """Where results go: one folder per run, one subfolder per field, tables at the top."""

    path: str = Field(min_length=1)
    """the run's output folder (created; a rerun resumes in it)"""
    table_format: Literal["parquet", "csv"] = "parquet"
    """format of the run's tables (per object, image, well and plate); csv holds no units, and the
    field folders keep Parquet
    """


# -- steps -------------------------------------------------------------------------------


class SegmentStep(_Section):
    """Blockwise 3D segmentation (:func:`~dls_microscopy.segment.segment_blockwise`)."""

    method: str = "watershed"
    """registered segmenter name (``dls-microscopy segment --help`` lists them)"""
    channel: str | int | None = None
    """channel to segment, by name or index (default: the only or first channel)"""
    params: dict[str, Any] = Field(default_factory=dict)
    """the segmenter's own parameters, checked against its parameter model"""
    model: str | None = None
    """model weights file, for segmenters that take one (sets ``model_path``)"""

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from dls_microscopy.segment import segmenter_names

        names = segmenter_names()
        if value not in names:
            raise PydanticCustomError(
                "unknown_segmenter",
                "unknown segmenter '{method}' (installed: {names})",
                {"method": value, "names": ", ".join(names)},
            )
        return value

    @model_validator(mode="after")
    def _check_params(self) -> SegmentStep:
        from dls_microscopy.segment.base import no_model_file, segmenters

        try:
            params_model = segmenters().get(self.method).Params
        except DlsError:  # not importable: reported when the run starts
            return self
        values = dict(self.params)
        if self.model is not None:
            if "model_path" not in params_model.model_fields:
                raise PydanticCustomError(
                    "segmenter_params", "{msg}", {"msg": no_model_file(self.method), "subloc": ("model",)}
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

    format: Literal["glb", "ply", "obj", "stl"] = "glb"
    """``glb``: one file per field, a node per object; ``ply``/``obj``/``stl``: a file per
    object
    """
    smooth: int = Field(20, ge=0)
    """Taubin smoothing iterations (0: exact voxel surface); raise it where z is sampled much
    more coarsely than x and y (2 µm z at 0.3 µm pixels: areas ~9 % too large at 20, ~4 % at 100)
    """
    decimate: float | None = Field(None, gt=0, le=1)
    """fraction of faces to keep, in (0, 1] (default: all)"""
    descriptors: bool = True
    """also compute shape descriptors (one table row per object)"""


class FeaturesStep(_Section):
    """Morphology and intensity features per object (:mod:`dls_microscopy.features`)."""

    channels: list[str | int] | None = None
    """channels to measure, by name or index (default: all loaded channels)"""
    compartment: str = Field("Nuclei", min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    """feature-name prefix, e.g. ``Nuclei`` or ``Cells``"""


class EmbeddingsStep(_Section):
    """Learned per-object embeddings (``Embedding_*`` columns)."""

    model: list[str] = Field(min_length=1)
    """model file(s) of the embedding model(s) to apply"""

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

    kind: Literal["local", "slurm", "pbs"] = "local"
    """``local`` (this machine), ``slurm`` or ``pbs`` (dask-jobqueue)"""
    queue: str | None = None
    """queue / partition of the batch system"""
    account: str | None = None
    """account / project charged for the jobs"""
    cores: int = Field(1, ge=1)
    """cores per job"""
    memory: str = "4GB"
    """memory per job, e.g. ``4GB``"""
    walltime: str = "01:00:00"
    """wall time per job, ``HH:MM:SS`` or ``D-HH:MM:SS``"""
    processes: int = Field(1, ge=1)
    """dask worker processes per job"""
    jobs: int = Field(1, ge=1)
    """number of jobs to start"""
    job_extra_directives: list[str] = Field(default_factory=list)
    """extra lines for the job script header, e.g. ``["--gres=gpu:1"]``"""
    interface: str | None = None
    """network interface of the workers, e.g. ``ib0``"""
    local_directory: str | None = None
    """scratch folder on the worker nodes"""
    python: str | None = None
    """Python interpreter of the workers (default: the one that starts the run; a saved
    configuration stays portable)
    """
    start_timeout: float = Field(600.0, gt=0, strict=True, allow_inf_nan=False)
    """seconds to wait for the first worker job to start and connect (jobs may queue), and for
    workers to come back when every worker job has ended mid-run (``slurm``/``pbs``)
    """

    @field_validator("start_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if isinstance(value, str | bool):
            raise PydanticCustomError(
                "seconds",
                "a number of seconds, e.g. 1800 for 30 minutes, got {value}",
                {"value": repr(value)},
            )
        return value

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
        *_, minutes, seconds = (int(part) for part in value.replace("-", ":").split(":"))
        if minutes > 59 or seconds > 59:
            raise ValueError(f"wall time {value!r} has more than 59 minutes or seconds (HH:MM:SS)")
        if not any(int(part) for part in value.replace("-", ":").split(":")):
            # Slurm reads 0 as no limit at all: not what a zero was meant to say
            raise ValueError("wall time must be longer than 00:00:00")
        return value

    @model_validator(mode="after")
    def _cores_for_processes(self) -> ClusterConfig:
        if self.cores < self.processes:
            raise PydanticCustomError(
                "cores_below_processes",
                "cores ({cores}) must be at least processes ({processes}): each worker process needs a core",
                {"cores": self.cores, "processes": self.processes, "subloc": ("cores",)},
            )
        return self


class ComputeConfig(_Section):
    """Resources for the run."""

    memory_budget: str | int = "2GB"
    """memory the blockwise steps may use at once, e.g. ``2GB`` (sets block sizes)"""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """``auto`` (cuda > mps > cpu), ``cpu``, ``cuda`` or ``mps``"""
    workers: int | None = Field(None, ge=1)
    """fields run in parallel (default: 1 field at a time locally; one per worker on a cluster)"""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """the cluster backend and its job settings"""

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
        use_attribute_docstrings=True,
        title="DLS Microscopy pipeline configuration",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID},
    )

    version: Literal[1] = 1
    """version of this file format"""
    input: InputConfig
    output: OutputConfig
    steps: StepsConfig
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    seed: int = 0
    """seed of every random choice (none of the built-in steps draws random numbers)"""

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
