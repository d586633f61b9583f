"""Recording the steps run in the GUI as a ``pipeline.yaml`` (:class:`SessionRecorder`)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dls_microscopy.errors import InputError
from dls_microscopy.pipeline.interactive._spacing import _SAME

__all__ = ["SessionRecorder"]


@dataclasses.dataclass
class SessionRecorder:
    """The steps done in the GUI, to save as a ``pipeline.yaml``.

    Each ``record_*`` call replaces the previous record of that step, so the
    file describes the latest state of the analysis.  Segmentations are kept per
    labels layer (:meth:`record_segment` gives a key), and Meshes and Features record
    which labels they worked on (:meth:`use_segmentation`, :meth:`record_existing_labels`,
    :meth:`record_unusable_labels` before them): the pipeline's segment step is the one
    that made those labels, not the latest one, and labels no pipeline can make (read
    from an HDF5 file, drawn) are refused with the reason.  A step records the voxel
    size it used where that is not the file's (``spacing=``, set in the app):
    the pipeline gives it as ``input.spacing``, so that a run measures in the
    same µm.  Steps of one pipeline share one voxel size.  Likewise a step records
    the resolution level it ran at (``level=``), which the pipeline gives as
    ``input.level``: steps of one pipeline share one level.
    """

    input_path: str | None = None
    series: int = 0
    mesh: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    embeddings: dict[str, Any] | None = None
    compute: dict[str, Any] = dataclasses.field(default_factory=dict)
    segmentations: dict[str, _Labels] = dataclasses.field(default_factory=dict)
    """per key (:meth:`record_segment`): the segmentation that made a labels layer"""
    labels_of: dict[str, _Labels | None] = dataclasses.field(default_factory=dict)
    """per step recorded of ``mesh`` and ``features``: the labels it worked on"""
    current: _Labels | None = None
    """the labels the next mesh or features step works on (the latest segmentation, or
    those named by :meth:`use_segmentation` and the like)"""
    spacing: dict[str, list[float] | None] = dataclasses.field(default_factory=dict)
    _session: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:6], repr=False)
    """in every key: one of another recorder (viewer) is never taken for one of this"""
    """per step recorded: its voxel size in µm at full resolution, or None for the file's"""
    level: dict[str, int] = dataclasses.field(default_factory=dict)
    """per step recorded: the resolution level of the image it ran at (0: full resolution)"""

    def set_input(self, path: str | os.PathLike[str] | None, *, series: int = 0) -> None:
        """The file the analysis runs on (a layer opened from a file), made absolute.

        A pipeline reads relative paths against its own folder, not the folder the app
        was started in (``dls-microscopy gui sample/x.tif``).
        """
        self.input_path = _absolute(path) if path is not None else None
        self.series = int(series)

    def record_segment(
        self,
        *,
        method: str,
        params: Mapping[str, Any],
        channel: str | int | None,
        device: str = "auto",
        memory_budget: str | int = "2GB",
        spacing: Sequence[float] | None = None,
        level: int = 0,
        labels: str = "labels",
    ) -> str:
        """Record a segmentation (the parameters as the segmenter's model accepts them).

        ``spacing``: the voxel size segmented at (µm, full resolution), where not the file's;
        ``level``: the resolution level of the image segmented; ``labels``: the name of the
        labels layer it made.  The next mesh or features step works on these labels unless
        told otherwise (:meth:`use_segmentation`).

        Returns
        -------
        str
            The key of this segmentation, for :meth:`use_segmentation` (unique: a layer
            renamed, or a name used again, does not take another's record).
        """
        values = {k: _plain(v) for k, v in params.items()}
        model = values.pop("model_path", None)
        step: dict[str, Any] = {"method": method, "channel": channel, "params": values}
        if model:
            step["model"] = _absolute(model, only_if_found=True)
        self.compute.update(device=device, memory_budget=memory_budget)
        key = f"{labels}#{self._session}-{len(self.segmentations) + 1}"
        self.segmentations[key] = self.current = _Labels(
            name=labels,
            input_path=self.input_path,
            series=self.series,
            segment=step,
            compute=(("device", device), ("memory_budget", memory_budget)),
            spacing=tuple(float(v) for v in spacing) if spacing is not None else None,
            level=int(level),
        )
        return key

    def use_segmentation(self, key: str, *, labels: str | None = None) -> None:
        """The next mesh or features step works on the labels of segmentation ``key``.

        ``labels``: the layer's name now, for messages.  A key this recorder did not give
        (a layer of another session) makes labels that no pipeline is known to make.
        """
        made = self.segmentations.get(key)
        if made is None:
            name = labels or key.rpartition("#")[0] or key
            self.record_unusable_labels(
                name,
                f"the labels '{name}' were segmented in another session, whose settings were not "
                "recorded here: segment the image again in the Segment tab",
            )
            return
        self.current = dataclasses.replace(made, name=labels or made.name)

    def record_unusable_labels(self, labels: str, reason: str) -> None:
        """The next mesh or features step works on labels that no pipeline can make (``reason``,
        a sentence for the user: why, and what to do)."""
        self.current = _Labels(name=labels, unusable=reason)

    def record_mesh(
        self,
        *,
        smooth: int,
        decimate: float | None,
        descriptors: bool = True,
        format: str = "glb",
        spacing: Sequence[float] | None = None,
        level: int = 0,
    ) -> None:
        """Record meshing options (``spacing``: of the labels meshed, where not the file's;
        ``level``: the image level the labels are of)."""
        self.mesh = {
            "format": format,
            "smooth": int(smooth),
            "decimate": decimate,
            "descriptors": descriptors,
        }
        self.labels_of["mesh"] = self.current
        self._record_spacing("mesh", spacing)
        self.level["mesh"] = int(level)

    def record_features(
        self,
        *,
        channels: Sequence[str | int] | None,
        compartment: str,
        spacing: Sequence[float] | None = None,
        level: int = 0,
    ) -> None:
        """Record the feature step (``spacing``: of the image measured, where not the file's;
        ``level``: the resolution level measured)."""
        self.features = {
            "channels": list(channels) if channels is not None else None,
            "compartment": compartment,
        }
        self.labels_of["features"] = self.current
        self._record_spacing("features", spacing)
        self.level["features"] = int(level)

    def _steps(self) -> list[str]:
        """The steps recorded, of those that read the image or its labels."""
        return [n for n in ("segment", "mesh", "features") if getattr(self, n) is not None]

    def _record_spacing(self, step: str, spacing: Sequence[float] | None) -> None:
        self.spacing[step] = [float(v) for v in spacing] if spacing is not None else None

    def record_embeddings(self, models: Sequence[str | os.PathLike[str]]) -> None:
        """Record the embedding models applied with the features (none: no embeddings step)."""
        self.embeddings = {"model": [_absolute(m, only_if_found=True) for m in models]} if models else None

    def record_existing_labels(self, name: str | None, *, labels: str | None = None) -> None:
        """The next mesh or features step works on the input file's NGFF label image ``name``
        (``input.labels``, no segment step: an earlier segmentation is not what it used).

        ``labels``: the layer's name, for messages.  The input is the one set last
        (:meth:`set_input`).
        """
        if name is None:
            return
        self.current = _Labels(
            name=labels or name, input_path=self.input_path, series=self.series, file_labels=name
        )

    @property
    def segment(self) -> dict[str, Any] | None:
        """The pipeline's segment step: the segmentation that made the labels the steps used."""
        made = self._labels(strict=False)
        return made.segment if made is not None else None

    @property
    def labels_name(self) -> str | None:
        """The pipeline's ``input.labels``: the input's label image the steps used, if any."""
        made = self._labels(strict=False)
        return made.file_labels if made is not None else None

    def _labels(self, *, strict: bool = True) -> _Labels | None:
        """The labels the pipeline makes or reads: those Meshes and Features used, else the
        latest segmentation.

        Raises
        ------
        InputError
            (``strict``) The labels cannot be made by a pipeline, or Meshes and Features
            worked on labels made differently (a pipeline makes one label image).
        """
        used = {n: self.labels_of.get(n) for n in ("mesh", "features") if getattr(self, n) is not None}
        known = {n: v for n, v in used.items() if v is not None}
        if not strict:
            if "features" in known:
                return known["features"]
            return next(iter(known.values()), self._latest())
        for made in known.values():
            if made.unusable:
                raise InputError(made.unusable)
        if len({v.same() for v in known.values()}) > 1:
            mesh, features = known["mesh"], known["features"]
            raise InputError(
                f"Meshes were made of the labels '{mesh.name}' and Features measured "
                f"'{features.name}', which were made differently: a pipeline makes one label "
                f"image for both; make the meshes of '{features.name}' again (or measure "
                f"'{mesh.name}'), then save"
            )
        return next(iter(known.values()), self._latest())

    def _latest(self) -> _Labels | None:
        """The latest segmentation, when no step names its labels (segment alone)."""
        if self.current is not None and self.current.segment is not None:
            return self.current
        return next(reversed(self.segmentations.values()), None)

    def steps(self) -> list[str]:
        """Names of the recorded steps, in run order."""
        return [n for n in ("segment", "mesh", "features", "embeddings") if getattr(self, n) is not None]

    def input_spacing(self) -> list[float] | None:
        """The voxel size the recorded steps used (``input.spacing``), or None for the file's.

        Raises
        ------
        InputError
            The steps used different voxel sizes (it was set in the app between
            them): no pipeline repeats that.
        """
        used = {n: self._spacing_of(n) for n in self._steps()}
        first = next(iter(used.values()), None)
        if not all(_same_spacing(first, v) for v in used.values()):
            said = "; ".join(f"{n}: {_spacing_text(v)}" for n, v in used.items())
            raise InputError(
                f"the steps used different voxel sizes ({said}): run them again with one voxel "
                "size, so that a pipeline can repeat them"
            )
        # meshes of labels of a coarser level give theirs through the file's factor, rounded
        # (12 digits): the image's, of segment or features, is the voxel size as it was set
        return next((used[n] for n in ("segment", "features") if n in used), first)

    def _spacing_of(self, step: str) -> list[float] | None:
        """The voxel size ``step`` used (the segment step's: that of the segmentation used)."""
        made = self._labels(strict=False)
        if step == "segment" and made is not None:
            return list(made.spacing) if made.spacing is not None else None
        return self.spacing.get(step)

    def input_level(self) -> int:
        """The resolution level the recorded steps ran at (``input.level``).

        Raises
        ------
        InputError
            The steps ran at different levels (segment at 1, features at 0): a pipeline
            runs every step at one.
        """
        made = self._labels(strict=False)
        used = {
            n: (made.level if n == "segment" and made is not None else self.level.get(n, 0))
            for n in self._steps()
        }
        if len(set(used.values())) > 1:
            said = ", ".join(f"{n} at {v}" for n, v in used.items())
            raise InputError(
                f"the steps ran at different resolution levels ({said}): a pipeline runs every "
                "step at one level (input.level); run them again at one level"
            )
        return next(iter(used.values()), 0)

    def to_config(self, output: str | os.PathLike[str], *, input_path: str | None = None) -> Any:
        """A validated :class:`~dls_microscopy.pipeline.config.PipelineConfig`.

        Raises
        ------
        InputError
            Nothing was recorded, the data was not opened from a file, the steps
            worked on labels no pipeline makes (or on two made differently), they used
            different voxel sizes or resolution levels, or a setting is invalid in a
            pipeline (the message names it, and where the app sets it).
        """
        from pydantic import ValidationError

        from dls_microscopy.pipeline.config import PipelineConfig

        made = self._labels()  # labels no pipeline makes: say why, before anything else
        recorded = made.input_path if made is not None and made.input_path else self.input_path
        path = _absolute(input_path) if input_path else recorded
        series = made.series if made is not None and made.input_path else self.series
        if not path:
            raise InputError(
                "the image was not opened from a file, so a pipeline cannot name it; "
                "open the image with File > Open (or `dls-microscopy gui PATH`). Sample data "
                "from File > Open Sample is made in memory: `dls-microscopy sample DIR` writes "
                "it as files to open"
            )
        if not self.steps():
            raise InputError("nothing to save yet: run Segment, Meshes or Features first")
        data: dict[str, Any] = {
            "input": {"path": str(path), "series": series},
            "output": {"path": os.fspath(output)},
            "steps": {n: getattr(self, n) for n in self.steps()},
        }
        if made is not None and made.file_labels is not None:
            data["input"]["labels"] = made.file_labels
        spacing = self.input_spacing()
        if spacing is not None:
            data["input"]["spacing"] = spacing
        level = self.input_level()
        if level:
            data["input"]["level"] = level
        compute = dict(made.compute) if made is not None and made.segment is not None else self.compute
        if compute:
            data["compute"] = dict(compute)
        try:
            return PipelineConfig.model_validate(data)
        except ValidationError as exc:  # a sentence naming the setting, not pydantic's report
            raise InputError(_invalid_settings(exc, data)) from None


#: Where the app sets a setting of the pipeline, by the start of its dotted key: (start,
#: the setting as the app names it, its tab).
_SETTINGS = (
    ("compute.memory_budget", "the memory budget", "Segment"),
    ("compute.device", "the device", "Segment"),
    ("steps.segment.params.", "the segmenter parameter {rest}", "Segment"),
    ("steps.segment", "the segmenter", "Segment"),
    ("steps.mesh", "the mesh settings", "Meshes"),
    ("steps.features", "the feature settings", "Features"),
    ("output.path", "the output folder", "Pipeline"),
)


def _invalid_settings(exc: Any, data: Mapping[str, Any]) -> str:
    """A pydantic ``ValidationError`` of the recorded pipeline as one sentence per setting.

    Each names the setting as the app shows it, its key in ``pipeline.yaml`` and its tab,
    and what is wrong, in the words ``config validate`` uses for a file.
    """
    import yaml

    from dls_microscopy.pipeline._config_yaml import _issue

    root = yaml.compose(yaml.safe_dump(_plain_data(data), sort_keys=False))
    said = []
    for err in exc.errors():
        key, _, problem = _issue(err, root)
        where = next(((s, n, t) for s, n, t in _SETTINGS if key.startswith(s)), None)
        if where is None:
            said.append(f"{key or 'the pipeline'}: {problem}")
        else:
            start, name, tab = where
            said.append(f"{name.format(rest=key[len(start) :])} ({key}, {tab} tab): {problem}")
    return "this session cannot be saved as a pipeline: " + "; ".join(said)


def _plain_data(value: Any) -> Any:
    """``value`` with tuples as lists and other objects as text, for ``yaml.safe_dump``."""
    if isinstance(value, Mapping):
        return {str(k): _plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_data(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclasses.dataclass(frozen=True)
class _Labels:
    """Labels a step worked on: made by a segmentation, read from the input, or neither.

    Kept by value: a mesh step keeps the segmentation of its labels when the layer is
    segmented again under the same name.
    """

    name: str
    """the labels layer's name (for messages)"""
    input_path: str | None = None
    series: int = 0
    segment: dict[str, Any] | None = None
    """the segment step that made them"""
    compute: tuple[tuple[str, Any], ...] = ()
    spacing: tuple[float, ...] | None = None
    level: int = 0
    file_labels: str | None = None
    """the input's NGFF label image they are (``input.labels``)"""
    unusable: str | None = None
    """why no pipeline can make them, and what to do"""

    def same(self) -> str:
        """What makes two labels the same for a pipeline (not the layer's name)."""
        return repr(dataclasses.replace(self, name=""))


def _same_spacing(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """One voxel size, within the float noise of a level's factor (or both the file's: None)."""
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and bool(np.allclose(a, b, rtol=_SAME, atol=0.0))


def _spacing_text(spacing: Sequence[float] | None) -> str:
    return " × ".join(f"{v:g}" for v in spacing) + " µm" if spacing else "the file's"


def _absolute(path: str | os.PathLike[str], *, only_if_found: bool = False) -> str:
    """``path`` against the current folder (an HDF5 file's, ``file.h5:/raw``, keeps its dataset).

    ``only_if_found``: a path that does not exist is kept as given (a model may be a name).
    """
    from dls_microscopy.io import split_dataset_path

    file_path, dataset = split_dataset_path(os.path.expanduser(os.fspath(path)))
    if only_if_found and not file_path.exists():
        return os.fspath(path)
    return os.path.abspath(file_path) + (f":{dataset}" if dataset is not None else "")


def _plain(value: Any) -> Any:
    """YAML-safe value: numpy scalars and tuples become Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
