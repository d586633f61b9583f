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

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dls_microscopy.errors import ClusterConfigError, ConfigError
from dls_microscopy.pipeline._config_models import SCHEMA_ID as SCHEMA_ID

# The models in their source order, which the API docs keep.
# isort: off
from dls_microscopy.pipeline._config_models import InputConfig as InputConfig
from dls_microscopy.pipeline._config_models import OutputConfig as OutputConfig
from dls_microscopy.pipeline._config_models import SegmentStep as SegmentStep
from dls_microscopy.pipeline._config_models import MeshStep as MeshStep
from dls_microscopy.pipeline._config_models import FeaturesStep as FeaturesStep
from dls_microscopy.pipeline._config_models import EmbeddingsStep as EmbeddingsStep
from dls_microscopy.pipeline._config_models import StepsConfig as StepsConfig
from dls_microscopy.pipeline._config_models import ClusterConfig as ClusterConfig
from dls_microscopy.pipeline._config_models import ComputeConfig as ComputeConfig
from dls_microscopy.pipeline._config_models import PipelineConfig as PipelineConfig

# isort: on
from dls_microscopy.pipeline._config_size import parse_size as parse_size
from dls_microscopy.pipeline._config_yaml import _duplicate_keys, _format, _issue, key_line

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
    "in_config_file",
    "load_config",
    "naming_config_file",
    "parse_size",
]

#: The published JSON schema of :class:`PipelineConfig` (kept up to date by a test).
SCHEMA_PATH = Path(__file__).with_name("pipeline.schema.json")


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
    from dls_microscopy.errors import InputError, InputNotFoundError

    p = Path(path)
    if p.is_dir():
        raise InputError(
            "this is a folder; 'run' takes a pipeline configuration file (YAML) whose input.path "
            "names the images: see 'dls-microscopy sample --plate' for an example",
            path=p,
        )
    if not p.is_file():
        raise InputNotFoundError("configuration file does not exist", path=p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # an image given in place of the YAML, most often
        raise ConfigError(
            "not a pipeline configuration: a YAML text file is expected, and this is not text "
            "(UTF-8); 'run' takes the configuration, whose input.path names the images",
            path=p,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc}", path=p) from exc
    cfg = parse_config(text, source=p)
    return cfg.with_paths_relative_to(p.absolute().parent) if resolve_paths else cfg


@contextlib.contextmanager
def naming_config_file(source: str | os.PathLike[str] | None) -> Iterator[None]:
    """Name the configuration file in a :class:`~dls_microscopy.errors.ClusterConfigError` raised inside.

    The batch system refusing a worker job, a network interface that does not exist,
    a job too small for a worker: problems of ``compute.cluster`` found when the
    cluster is checked or started, where the file is no longer known.  With ``source``
    (the ``pipeline.yaml``) such an error is raised again naming it, as the errors of
    :func:`load_config` do; an error that names a path already is left as it is.
    """
    try:
        yield
    except ClusterConfigError as exc:
        if source is None or exc.path is not None:
            raise
        raise ClusterConfigError(exc.reason, path=source) from exc


def in_config_file(error: ConfigError, source: str | os.PathLike[str]) -> ConfigError:
    """``error``'s issues as problems of the file ``source``, each at its key's YAML line.

    The checks of the data (:func:`~dls_microscopy.pipeline.checks.check_inputs`) find
    problems of keys, such as a channel the image lacks, where the file is no longer
    known; their issues have no line, and their messages name the data's file.  An
    issue's line is that of its key in ``source`` (of its nearest parent when the key
    is a default), as :func:`load_config` gives it.
    """
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""  # gone or changed since it was read: the keys without lines
    issues = [(key, key_line(text, key) if line is None else line, msg) for key, line, msg in error.issues]
    return ConfigError(_format(issues), path=source, issues=issues)


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
