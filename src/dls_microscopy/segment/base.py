"""The segmenter contract: one block in, labels out; halo and global statistics declared.

A segmenter is a class registered in the entry-point group
``dls_microscopy.segmenters``.  The blockwise engine
(:func:`dls_microscopy.segment.blockwise.segment_blockwise`) calls

1. ``global_stats(image, spacing=...)`` once on the whole (lazy) volume, so
   that every block uses the same threshold/normalisation;
2. ``segment(block, spacing=..., stats=...)`` on each block grown by
   ``halo(spacing)`` voxels on every side.

Results of a block must depend only on the block's pixels and ``stats``
(no randomness, no dependence on block position), which is what makes the
blockwise result equal to the whole-volume one.  A segmenter whose statistics
vary over the volume (e.g. a brightness that falls with depth) adds the
block's position to them in ``block_stats(stats, origin)``, which the engine
calls for every block; the whole volume has origin ``(0, 0, 0)``, the default
when ``segment`` gets no position.
"""

from __future__ import annotations

import abc
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from dls_microscopy.errors import DimensionalityError, InputError
from dls_microscopy.volume import check_dtype, replace_nonfinite

__all__ = [
    "BaseSegmenter",
    "EmptyResultWarning",
    "Segmenter",
    "SegmenterParams",
    "get_segmenter",
    "segmenter_names",
    "segmenters",
]

log = logging.getLogger(__name__)


def no_model_file(name: str) -> str:
    """What is said when a model file is given to segmenter ``name``, which loads none.

    One wording for the command line (:class:`BaseSegmenter`) and the pipeline
    configuration (``steps.segment.model``), which each add where it was given.
    """
    return f"segmenter {name!r} takes no model file"


class EmptyResultWarning(UserWarning):
    """A segmentation found no object (empty or constant image)."""


class SegmenterParams(BaseModel):
    """Base of every segmenter's parameter model: unknown keys are errors.

    Document each field with a docstring below it: it becomes the field's
    ``description`` (``use_attribute_docstrings``), which the desktop app shows as the
    input's tooltip.  A field whose ``None`` means something other than "chosen
    automatically" says so with ``json_schema_extra={"unset": "off"}`` (the input's
    placeholder).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@runtime_checkable
class Segmenter(Protocol):
    """What the engine needs from a segmenter (see the module docstring)."""

    name: ClassVar[str]
    params: SegmenterParams

    @property
    def device(self) -> str: ...

    def halo(self, spacing: Sequence[float]) -> tuple[int, ...]: ...

    def global_stats(self, image: Any, *, spacing: Sequence[float]) -> dict[str, float]: ...

    def block_stats(self, stats: Mapping[str, float], origin: Sequence[int]) -> Mapping[str, float]: ...

    def segment(
        self,
        image: np.ndarray,
        *,
        spacing: Sequence[float],
        stats: Mapping[str, float] | None = None,
    ) -> np.ndarray: ...


class BaseSegmenter(abc.ABC):
    """Input checking and device handling shared by segmenters.

    Subclasses set ``name`` and ``Params`` and implement :meth:`_segment`
    (and usually :meth:`global_stats` and :meth:`halo`).

    Parameters
    ----------
    params : SegmenterParams or mapping, optional
        Parameters; missing ones take the model's defaults.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...
    **overrides
        Individual parameters, e.g. ``diameter_um=6``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[SegmenterParams]] = SegmenterParams
    #: number of image channels the segmenter takes (the engine selects them)
    n_channels: ClassVar[int] = 1

    def __init__(
        self,
        params: SegmenterParams | Mapping[str, Any] | None = None,
        *,
        device: str = "auto",
        **overrides: Any,
    ) -> None:
        if isinstance(params, SegmenterParams):
            values = params.model_dump()
        else:
            values = dict(params or {})
        values.update(overrides)
        try:
            self.params = self.Params(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'parameters'}: "
                f"{'unknown parameter' if err['type'] == 'extra_forbidden' else err['msg']}"
                for err in exc.errors()
            )
            unknown = {str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]}
            known = f" (parameters: {', '.join(self.Params.model_fields)})" if unknown else ""
            if unknown == {"model_path"}:  # --model given to a segmenter without one: say so plainly
                raise InputError(
                    f"{no_model_file(self.name)}; give --model / model_path only to "
                    f"segmenters that load weights (e.g. cellpose){known}"
                ) from exc
            raise InputError(f"invalid parameters for segmenter {self.name!r}: {problems}{known}") from exc
        self._device_request = device

    @property
    def device(self) -> str:
        """The torch device this segmenter computes on (resolved on first use)."""
        from dls_microscopy.device import device_name

        return device_name(self._device_request)  # imports torch only where a GPU may be

    def halo(self, spacing: Sequence[float]) -> tuple[int, ...]:
        """Voxels of context needed on each side of a block, per spatial axis."""
        return tuple(0 for _ in spacing)

    def global_stats(self, image: Any, *, spacing: Sequence[float]) -> dict[str, float]:
        """Statistics computed once over the whole volume and passed to every block."""
        return {}

    def block_stats(self, stats: Mapping[str, float], origin: Sequence[int]) -> Mapping[str, float]:
        """The statistics for the block whose first voxel is at ``origin`` (z, y, x) in the volume.

        ``stats`` unchanged, unless a segmenter's statistics depend on position.
        """
        return stats

    def segment(
        self,
        image: np.ndarray,
        *,
        spacing: Sequence[float],
        stats: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """Segment one 3D block.

        Parameters
        ----------
        image : (Z, Y, X) ndarray, or (C, Z, Y, X) when ``n_channels > 1``
            Intensities of any supported dtype; NaN/inf are treated as
            background (see :func:`~dls_microscopy.volume.replace_nonfinite`).
        spacing : sequence of 3 float
            Voxel size (z, y, x) in µm.
        stats : mapping, optional
            Output of :meth:`global_stats` on the whole volume; computed from
            this block when omitted.

        Returns
        -------
        (Z, Y, X) ndarray of uint32
            0 = background, objects numbered 1..N consecutively.
        """
        image = np.asarray(image)
        check_dtype(image.dtype)
        want = 3 if self.n_channels == 1 else 4
        if image.ndim != want:
            raise DimensionalityError(
                f"segmenter {self.name!r} needs a {'(Z, Y, X)' if want == 3 else '(C, Z, Y, X)'} "
                f"array, got shape {image.shape}"
            )
        if any(s == 0 for s in image.shape):
            raise DimensionalityError(f"empty image of shape {image.shape}")
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
            raise InputError(f"spacing must be 3 positive numbers (z, y, x) in µm, got {spacing}")
        image = replace_nonfinite(image)
        if image.dtype == bool:
            image = image.astype(np.uint8)
        spatial = image.shape[-3:]
        if float(np.ptp(image)) == 0.0:
            # no contrast, no objects (a block inside a larger volume may legitimately
            # be constant, e.g. padding: warn only for a whole image)
            if stats is None:
                warnings.warn("constant image: no objects", EmptyResultWarning, stacklevel=2)
            return np.zeros(spatial, np.uint32)
        if stats is None:
            stats = self.global_stats(image, spacing=spacing)
        labels = self._segment(image, spacing=spacing, stats=stats)
        if labels.shape != spatial:
            raise AssertionError(f"{self.name}: labels shape {labels.shape} != image {spatial}")
        return labels.astype(np.uint32, copy=False)

    @abc.abstractmethod
    def _segment(
        self, image: np.ndarray, *, spacing: tuple[float, ...], stats: Mapping[str, float]
    ) -> np.ndarray:
        """Segment a validated block (see :meth:`segment`)."""


def _registry():
    from dls_microscopy.registry import Registry

    global _SEGMENTERS
    if _SEGMENTERS is None:
        _SEGMENTERS = Registry("dls_microscopy.segmenters", "segmenter")
    return _SEGMENTERS


_SEGMENTERS = None


def segmenters():
    """The registry of segmenter classes (entry-point group ``dls_microscopy.segmenters``)."""
    return _registry()


def segmenter_names() -> list[str]:
    """Names of all installed segmenters."""
    return _registry().names()


def get_segmenter(
    name: str, params: Mapping[str, Any] | None = None, *, device: str = "auto", **overrides: Any
) -> BaseSegmenter:
    """Instantiate the segmenter registered as ``name``."""
    cls = _registry().get(name)
    return cls(params, device=device, **overrides)
