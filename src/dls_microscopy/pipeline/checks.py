"""What ``run`` (and ``config validate``) check before any field runs or anything is written.

A mistake that every field would meet (a level, channel, dataset or series the
data lacks, a missing model, an output inside the input) is one line and exit
code 2 before the output folder exists, not the same failure once per field.
Only the first field is opened (a plate's fields share their metadata).  When
the input has several files, a first field that cannot be opened is left to
fail on its own, with its reason, so that one broken file does not stop a
screen; an input of one file has no such excuse.

A problem of one key (``input.channels`` naming a channel the image lacks) is a
:class:`~dls_microscopy.errors.ConfigError` with that key; given the
``pipeline.yaml`` it came from, it names that file and the key's line, as
:func:`~dls_microscopy.pipeline.config.load_config` does, and the data's file::

    pipeline.yaml: line 3: input.channels: plate.ome.zarr/A/01/0: no channel named 'GFP' ...
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dls_microscopy.errors import ConfigError, DlsError, InputError
from dls_microscopy.pipeline.config import PipelineConfig, in_config_file
from dls_microscopy.pipeline.fields import FieldSpec, discover_fields

__all__ = ["check_inputs"]

log = logging.getLogger(__name__)


def check_inputs(cfg: PipelineConfig, *, source: str | os.PathLike[str] | None = None) -> list[FieldSpec]:
    """Check a configuration against its data; return the fields to run.

    Checked: the segmenter's and the embedding models' files exist; ``output.path``
    is a folder this user can write, or can be made (its nearest existing parent is
    one); ``input.path`` gives fields (a glob's matches inside ``output.path``, the
    run's own outputs, are left out); the output is not an input, does not hold one
    and does not lie inside one (a plate store included); the first field opens at ``input.level``
    as a 3D image with every channel the configuration names (once each) and,
    without a segment step, the label image ``input.labels``.

    Parameters
    ----------
    cfg : PipelineConfig
        The configuration.
    source : path, optional
        The ``pipeline.yaml`` that ``cfg`` was read from: a problem of one key names
        it and the key's line.

    Raises
    ------
    ConfigError
        A key that does not suit the data: the dotted key and the data's file (and,
        with ``source``, that file and the key's line).
    InputError, ModelNotFoundError
        An input that cannot be read at all, a model file missing: the file.
    """
    try:
        return _check_inputs(cfg)
    except ConfigError as exc:
        if source is None or not exc.issues:
            raise
        raise in_config_file(exc, source) from exc


def _keyed(key: str, reason: str, path: str | os.PathLike[str] | None) -> ConfigError:
    """The configuration's ``key`` does not suit the file ``path`` (an image, the output)."""
    where = f"{os.fspath(path)}: " if path is not None else ""
    return ConfigError(f"{key}: {reason}", path=path, issues=[(key, None, where + reason)])


def _check_inputs(cfg: PipelineConfig) -> list[FieldSpec]:
    from dls_microscopy.io.atomic import refuse_output_over_inputs

    segmenter = _check_models(cfg)
    out = Path(cfg.output.path).absolute()
    _check_output_writable(out)
    try:
        fields = discover_fields(cfg.input.path, series=cfg.input.series, exclude=out)
    except InputError as exc:  # no such input, no image in a folder...: the YAML line too
        raise _keyed("input.path", exc.reason, exc.path) from None
    if cfg.input.series and any(f.plate for f in fields):
        raise _keyed(
            "input.series",
            "picks one series of a multi-series file; a plate's fields are its wells' images",
            cfg.input.path,
        )
    sources = {_file(f) for f in fields}
    try:
        refuse_output_over_inputs(out, [*sources, *{_store_root(p) for p in sources}])
    except InputError as exc:
        raise _keyed("output.path", exc.reason, exc.path) from None
    _check_first_field(cfg, fields[0], segmenter, only_source=len(sources) == 1)
    return fields


def _check_output_writable(out: Path) -> None:
    """``out`` is a folder this user can write, or its nearest existing parent is one.

    The run makes ``out`` with any missing parents; ``os.access`` asks without writing
    anything (``config validate`` writes nothing), so a full disk or a quota is still
    found only by the run.
    """
    if os.path.lexists(out) and not out.is_dir():
        raise _keyed("output.path", "is a file, not a folder", out)
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise _keyed("output.path", "this folder is not writable (permission denied)", out)
        return
    parent = out.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise _keyed("output.path", f"cannot be made: {parent} is not a folder", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _keyed("output.path", f"cannot be made: {parent} is not writable (permission denied)", out)


def _file(spec: FieldSpec) -> Path:
    from dls_microscopy.io import split_dataset_path

    return Path(split_dataset_path(spec.source)[0])


def _store_root(path: Path) -> Path:
    """The outermost zarr group holding ``path`` (a plate for its fields), else ``path``."""
    root = path
    for parent in path.absolute().parents:
        if not ((parent / "zarr.json").is_file() or (parent / ".zgroup").is_file()):
            break
        root = parent
    return root


def _check_models(cfg: PipelineConfig) -> Any:
    """The segmenter (its weights are found when it is made) and the embedding models exist.

    Returns the segmenter, made on the CPU (a CUDA device is the workers' business,
    not this machine's), or None without a segment step.
    """
    segmenter = None
    s = cfg.steps.segment
    if s is not None:
        from dls_microscopy.segment import get_segmenter

        params = dict(s.params) if s.model is None else {**s.params, "model_path": s.model}
        try:
            segmenter = get_segmenter(s.method, params, device="cpu")
        except InputError as exc:
            key = "steps.segment.model" if s.model is not None else "steps.segment"
            raise _keyed(key, exc.reason, exc.path) from None
    if cfg.steps.embeddings is not None:
        from dls_microscopy.features.embeddings import read_record

        for path in cfg.steps.embeddings.model:
            read_record(path)  # ModelNotFoundError names the file and how to train one
    return segmenter


def _check_budget(cfg: PipelineConfig, image: Any, segmenter: Any) -> None:
    """One segmentation block with its halo fits ``compute.memory_budget`` (for one worker).

    Field memory is planned per field, so a budget too small for one block made
    every field fail alone.  The other steps plan down to single voxels.
    """
    from dls_microscopy.segment.blockwise import plan_segmentation

    try:
        plan_segmentation(
            image.spatial_shape, image.dtype, image.spacing, segmenter, cfg.compute.memory_budget_bytes
        )
    except InputError as exc:
        raise _keyed("compute.memory_budget", exc.reason, exc.path) from None


def _check_first_field(cfg: PipelineConfig, spec: FieldSpec, segmenter: Any, *, only_source: bool) -> None:
    from dls_microscopy.channels import channel_data, channel_index
    from dls_microscopy.io import open_volume
    from dls_microscopy.spacing import spacing_given

    with spacing_given(cfg.input.spacing is not None):  # no "using 1 µm" when it is given
        try:
            image = open_volume(spec.source, series=spec.series, level=cfg.input.level)
        except DlsError as exc:
            if cfg.input.level != 0:
                try:  # a field that opens at full resolution: the level is what is wrong
                    open_volume(spec.source, series=spec.series, level=0)
                except DlsError:
                    pass
                else:
                    raise _keyed("input.level", exc.reason, exc.path) from None
            if only_source:
                raise
            return
    n_series = int(image.metadata.get("series_count", 1) or 1)
    if n_series > 1:
        log.warning(
            "%s holds %d series; the run analyses series %d (input.series) of each file",
            _file(spec),
            n_series,
            spec.series,
        )
    try:
        image = image.at_time_point(spec.time_point)
        image.require_spatial_ndim(3)
    except InputError:
        if only_source:
            raise
        return
    if cfg.input.spacing is not None:  # after the 3D check: a 2D image's reason is its dimensions
        try:
            image = image.with_spacing(cfg.input.spacing)
        except InputError as exc:
            raise _keyed("input.spacing", exc.reason, exc.path) from None
    # each list as the field reads it (channel_data: every name known, none twice)
    lists = [("input.channels", cfg.input.channels)]
    if cfg.steps.features is not None:
        lists.append(("steps.features.channels", cfg.steps.features.channels))
    for key, channels in lists:
        try:
            channel_data(image, channels)  # lazy: no data is read
        except InputError as exc:
            raise _keyed(key, exc.reason, exc.path) from None
    if cfg.steps.segment is not None and cfg.steps.segment.channel is not None:
        names = (
            list(image.channel_names) if "c" in image.axes else list(image.channel_names)[:1] or ["channel_0"]
        )
        try:
            channel_index(cfg.steps.segment.channel, names, spec.source)
        except InputError as exc:
            raise _keyed("steps.segment.channel", exc.reason, exc.path) from None
    if segmenter is not None:
        _check_budget(cfg, image, segmenter)
    if cfg.steps.segment is None and cfg.input.labels is not None:
        _check_labels(cfg, spec)


def _check_labels(cfg: PipelineConfig, spec: FieldSpec) -> None:
    from dls_microscopy.io import detect_format, open_labels

    kind = detect_format(_file(spec))
    if kind != "zarr":
        raise _keyed(
            "input.labels",
            f"names a label image inside an OME-Zarr input, and this input is {kind.upper()}: "
            "add a segment step, or convert the image with its labels first "
            "(dls-microscopy convert IMAGE OUT.ome.zarr --labels NAME=LABELS)",
            _file(spec),
        )
    from dls_microscopy.features.runs import check_label_dtype

    try:
        labels = open_labels(spec.source, cfg.input.labels, level=cfg.input.level, spacing=cfg.input.spacing)
        check_label_dtype(labels.dtype, path=labels.source)  # float labels: refused here, not by the run
    except InputError as exc:
        raise _keyed("input.labels", exc.reason, exc.path) from None
