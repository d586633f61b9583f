"""The Pipeline widget's run: a pipeline configuration run on the open data, with progress."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.pipeline.interactive._cancel import CancelToken
from dls_microscopy.volume import check_spacing

__all__ = ["CallbackRunProgress", "run_config_on"]

log = logging.getLogger(__name__)


class CallbackRunProgress:
    """Adapts :func:`~dls_microscopy.pipeline.run.run_pipeline`'s progress interface to a callback.

    ``progress("fields", done, total)`` as fields finish and
    ``progress("<field>: <step>", done, total)`` as steps start.  With a
    :meth:`CancelToken.wrap`-ed callback, cancelling makes the next report
    raise, which fails the running field; the run then stops at the next
    field (each one fails at its first step).
    """

    def __init__(self, progress: ProgressCallback) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0
        self.lock = threading.Lock()

    def __enter__(self) -> CallbackRunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, *, total: int, done: int, link: str | None) -> None:
        """The run starts."""
        self.total, self.done = total, done
        self.progress("fields", done, total)

    def step(self, key: str, step: str) -> None:
        """Field ``key`` starts ``step``."""
        self.progress(f"{key}: {step}", self.done, self.total)

    def field_done(self, key: str, status: str) -> None:
        """Field ``key`` ended."""
        with self.lock:
            self.done += 1
        self.progress("fields", self.done, self.total)


def run_config_on(
    config: Any,
    input_path: str | os.PathLike[str] | None = None,
    *,
    spacing: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    token: CancelToken | None = None,
) -> Any:
    """Run a pipeline configuration (or its file), optionally on another input image.

    Parameters
    ----------
    config : PipelineConfig or path
        The configuration (a path is read with ``load_config``).
    input_path : path-like, optional
        Replaces ``input.path`` (the GUI runs a config on the image it shows).
    spacing : sequence of float, optional
        The voxel size in µm at full resolution, ``(dz, dy, dx)``, used when the
        configuration gives no ``input.spacing`` (one it gives wins): the GUI's
        voxel size of the image it shows, where that is not the file's.
    progress : callable, optional
        ``progress(description, done, total)``.
    token : CancelToken, optional
        Cancelling stops the run at the next field and raises :class:`CancelledError`.

    Returns
    -------
    RunSummary
    """
    from dls_microscopy.pipeline.config import load_config
    from dls_microscopy.pipeline.run import run_pipeline

    cfg = load_config(config) if isinstance(config, str | os.PathLike) else config
    section = cfg.input.model_copy()  # assignments are validated (_Section)
    if input_path is not None:
        section.path = os.fspath(input_path)
    if spacing is not None and cfg.input.spacing is None:
        section.spacing = list(check_spacing(spacing, "zyx"))
        log.info("input.spacing %s µm: the voxel size of the open image", section.spacing)
    cfg = cfg.model_copy(update={"input": section})
    report = token.wrap(progress) if token is not None else progress
    summary = run_pipeline(cfg, progress=CallbackRunProgress(report) if report is not None else False)
    if token is not None:
        token.check()
    return summary
