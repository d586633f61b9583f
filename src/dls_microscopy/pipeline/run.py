"""``dls-microscopy run pipeline.yaml``: every field through the steps, resumable, fault tolerant.

A run:

1. finds the fields of ``input.path`` (:func:`~dls_microscopy.pipeline.fields.discover_fields`);
2. checks that ``output.path`` can be written, writes ``pipeline.resolved.yaml``
   (every value, defaults included) and appends to ``run.log``;
3. skips fields committed by an earlier run with the same settings (unless
   ``force``) and runs the others (:func:`~dls_microscopy.pipeline.field.run_field`),
   each committed atomically with its manifest, one at a time in this process
   or spread over workers by :mod:`dls_microscopy.pipeline.cluster`;
4. records a field that fails (corrupt input, ...) with its reason and goes on;
5. writes the run's tables from all committed fields
   (:func:`~dls_microscopy.pipeline.collect.collect_tables`), the run folder's
   ``manifest.json`` that records them
   (:func:`~dls_microscopy.pipeline.run_manifest.write_run_manifest`) and
   ``run_summary.json``.

Killing a run at any moment leaves committed fields intact and partial ones
under temporary names; the next run removes those and redoes their fields,
so the final tables are the same bytes as those of an uninterrupted run.

The output folder's own machinery (write test, lock, ``run.log``, sweeping a killed
run's temporaries) is in :mod:`._run_folder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dls_microscopy.errors import DlsError
from dls_microscopy.io.atomic import remove_partials
from dls_microscopy.pipeline._run_folder import (  # noqa: F401  LOCK_FILE, WRITE_TEST: named here too
    FIELDS_DIR,
    LOCK_FILE,
    WRITE_TEST,
    _prepare_output,
    _reason,
    _remove_stale_temporaries,
    _removed_if_refused,
    _run_lock,
    _run_log,
    _write_text,
)
from dls_microscopy.pipeline.checks import check_inputs
from dls_microscopy.pipeline.config import PipelineConfig, load_config, naming_config_file
from dls_microscopy.pipeline.field import run_field
from dls_microscopy.pipeline.field_resume import committed_field, config_digest, model_digests
from dls_microscopy.pipeline.fields import FieldSpec

__all__ = ["FieldOutcome", "RunSummary", "run_pipeline"]

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "pipeline.resolved.yaml"
RUN_LOG = "run.log"
SUMMARY_FILE = "run_summary.json"


@dataclasses.dataclass
class FieldOutcome:
    """What happened to one field: ``status`` is ``done``, ``skipped`` or ``failed``."""

    key: str
    status: str
    reason: str = ""
    n_objects: int | None = None
    seconds: float = 0.0
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunSummary:
    """The outcome of :func:`run_pipeline`."""

    output: Path
    fields: list[FieldOutcome]
    tables: dict[str, Path]
    seconds: float
    backend: str = "local"
    dashboard_link: str | None = None

    def count(self, status: str) -> int:
        """Number of fields with this status."""
        return sum(f.status == status for f in self.fields)

    @property
    def failed(self) -> list[FieldOutcome]:
        """The fields that failed."""
        return [f for f in self.fields if f.status == "failed"]

    @property
    def ok(self) -> bool:
        """No field failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "output": str(self.output),
            "done": self.count("done"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "seconds": round(self.seconds, 3),
            "backend": self.backend,
            "dashboard_link": self.dashboard_link,
            "tables": {k: str(v) for k, v in self.tables.items()},
            "fields": [dataclasses.asdict(f) for f in self.fields],
        }


# -- the run -------------------------------------------------------------------------------


def _warn_foreign_fields(fields_dir: Path, keys: set[str]) -> list[str]:
    """Warn about field folders in ``fields_dir`` that are none of this run's fields.

    An earlier run into the folder with another input (or other wells) left them: they
    are in none of this run's tables, and ``verify`` reports each.  They are not removed
    (nothing is lost); the warning says what to do.

    Returns
    -------
    list of str
        Their names, sorted.
    """
    folders = [d.name for d in fields_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    others = sorted(name for name in folders if name not in keys)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        log.warning(
            "%d field folder(s) in %s are not fields of this run (an earlier run's, with another "
            "input?): they are in none of its tables, and verify reports them; move them away, or "
            "use another output folder: %s",
            len(others),
            fields_dir,
            shown,
        )
    return others


def run_pipeline(
    config: PipelineConfig | str | os.PathLike[str],
    *,
    workers: int | None = None,
    cluster: str | None = None,
    force: bool = False,
    progress: bool | Any = True,
) -> RunSummary:
    """Run a pipeline configuration over all its fields.

    Parameters
    ----------
    config : PipelineConfig or path
        The configuration, or its YAML file (:func:`~dls_microscopy.pipeline.config.load_config`).
    workers : int, optional
        Fields in parallel (overrides ``compute.workers``; more than 1 starts a
        ``dask.distributed.LocalCluster`` through the cluster backend).
    cluster : {"local", "slurm", "pbs"}, optional
        Overrides ``compute.cluster.kind``.
    force : bool
        Redo every field, even those committed by an earlier run.
    progress : bool or RunProgress-like
        Show rich progress bars on stderr (``True``), nothing (``False``), or
        an object with the methods of :class:`~dls_microscopy.pipeline.progress.RunProgress`.

    Returns
    -------
    RunSummary
        Per-field outcomes (failed ones with their reason), the tables written.

    Raises
    ------
    ConfigError, InputError
        Bad configuration or input (before any field runs), a cluster kind whose batch
        system is not installed here (:class:`~dls_microscopy.errors.ClusterConfigError`).
    OutputError
        The output folder cannot be written.
    """
    from dls_microscopy._allocator import release_memory
    from dls_microscopy.pipeline.cluster import check_backend, compute_context
    from dls_microscopy.pipeline.collect import collect_tables
    from dls_microscopy.pipeline.progress import NoProgress, RunProgress
    from dls_microscopy.pipeline.run_manifest import (
        current_tables,
        remove_run_manifest,
        write_run_manifest,
    )

    t_start = time.perf_counter()
    cfg = config if isinstance(config, PipelineConfig) else load_config(config)
    source = None if isinstance(config, PipelineConfig) else Path(config)  # named in cluster config errors
    fields = check_inputs(cfg, source=source)
    with naming_config_file(source):  # e.g. sbatch missing: before any output
        check_backend(cfg.compute, workers=workers, cluster=cluster)
    out = Path(cfg.output.path)
    created = not out.exists()
    _prepare_output(out)
    fields_dir = out / FIELDS_DIR
    digest = config_digest(cfg)
    reporter = progress if not isinstance(progress, bool) else (RunProgress() if progress else NoProgress())
    outcomes: dict[str, FieldOutcome] = {}
    with (
        naming_config_file(source),
        _removed_if_refused(out, created),
        _run_lock(out),
        _run_log(out / RUN_LOG),
    ):
        log.info(
            "run: %d fields from %s → %s (steps: %s)",
            len(fields),
            cfg.input.path,
            out,
            ", ".join(cfg.steps.names()),
        )
        # the lock is ours: no other run (nor its workers) writes here
        _remove_stale_temporaries(out)
        remove_partials(fields_dir)
        resolved = cfg.to_yaml()
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if (out / RESOLVED_CONFIG).read_text(encoding="utf-8") != resolved:
                # the run manifest records the configuration it replaces: without a manifest, a run
                # stopped from here says it did not finish, not that the configuration was tampered with
                remove_run_manifest(out)
        _write_text(out / RESOLVED_CONFIG, resolved)
        todo: list[FieldSpec] = []
        models = model_digests(cfg) if not force else {}
        for spec in fields:
            if not force and committed_field(fields_dir / spec.key, digest, models, spec):
                info = json.loads((fields_dir / spec.key / "field.json").read_text(encoding="utf-8"))
                outcomes[spec.key] = FieldOutcome(
                    spec.key, "skipped", "already committed", info.get("n_objects"), 0.0, spec.metadata()
                )
            else:
                todo.append(spec)
        log.info("run: %d fields to do, %d already committed", len(todo), len(fields) - len(todo))
        _warn_foreign_fields(fields_dir, {spec.key for spec in fields})
        if todo:
            # the run's tables no longer describe the fields from here on: without a manifest,
            # verify says the run did not finish, rather than that its fields were tampered with
            remove_run_manifest(out)
        if todo:
            compute = compute_context(
                cfg.compute, workers=workers, cluster=cluster, log_directory=out / "logs"
            )
        else:  # only the tables to collect: no worker jobs to submit and wait for
            compute = compute_context(cfg.compute, workers=None, cluster="local")
        with compute as ctx, reporter:
            reporter.start(total=len(fields), done=len(fields) - len(todo), link=ctx.dashboard_link)
            in_process = ctx.client is None
            threads = getattr(ctx, "threads_per_worker", None)
            if threads is None and in_process:
                threads = max(1, (os.cpu_count() or 1) // max(1, ctx.n_workers))
            fn = functools.partial(
                run_field,
                cfg=cfg,
                fields_dir=fields_dir,
                threads=threads,
                memory_budget=getattr(ctx, "memory_per_worker", None),
                on_step=reporter.step if in_process else None,
            )
            last = time.perf_counter()
            for spec, result in ctx.submit_fields(fn, todo):
                now = time.perf_counter()
                seconds, last = now - last, now  # for failures: time since the previous field ended
                if isinstance(result, BaseException):
                    if isinstance(result, KeyboardInterrupt):
                        raise result
                    reason = _reason(result)
                    log.error(
                        "%s failed: %s",
                        spec.key,
                        reason,
                        exc_info=(type(result), result, result.__traceback__)
                        if not isinstance(result, DlsError)
                        else None,
                    )
                    outcomes[spec.key] = FieldOutcome(
                        spec.key, "failed", reason, None, seconds, spec.metadata()
                    )
                else:
                    seconds = sum(result.get("timings_s", {}).values())
                    outcomes[spec.key] = FieldOutcome(
                        spec.key, "done", "", result.get("n_objects"), seconds, spec.metadata()
                    )
                reporter.field_done(spec.key, outcomes[spec.key].status)
            backend, link = str(ctx.kind), ctx.dashboard_link
        ordered = [outcomes[s.key] for s in fields]
        committed = [fields_dir / o.key for o in ordered if o.status != "failed"]
        compartment = cfg.steps.features.compartment if cfg.steps.features is not None else "Nuclei"
        release_memory()  # the last field's tables are freed: give their pages back before collecting
        # nothing done: tables and manifest as the run that made them left them, if they still are
        kept = None if todo else current_tables(out, committed, cfg)
        if kept is not None:
            tables = kept
            log.info("run: nothing to do; the tables and their manifest are up to date")
        else:
            # no manifest while the tables change: one that exists describes the tables beside it
            remove_run_manifest(out)
            t_tables = time.perf_counter()
            tables = collect_tables(
                committed, out, table_format=cfg.output.table_format, compartment=compartment
            )
            write_run_manifest(
                out,
                fields=committed,
                failed=[o.key for o in ordered if o.status == "failed"],
                tables=tables,
                cfg=cfg,
                seconds=time.perf_counter() - t_tables,
            )
        summary = RunSummary(out, ordered, tables, time.perf_counter() - t_start, backend, link)
        _write_text(out / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2) + "\n")
        log.info(
            "run: %d done, %d skipped, %d failed in %.1f s",
            summary.count("done"),
            summary.count("skipped"),
            summary.count("failed"),
            summary.seconds,
        )
    return summary
