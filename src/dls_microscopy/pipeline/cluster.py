"""Compute backends of a pipeline run: local threads, a local Dask cluster, SLURM or PBS jobs.

A run's unit of work is one field (one image).  :func:`compute_context` turns
the ``compute`` section of a pipeline configuration into a place where field
functions run, and :meth:`ComputeContext.submit_fields` runs one function per
field there and hands the results back as they finish:

========================  =====================================================
backend                   what runs the fields
========================  =====================================================
``local`` (default)       a thread pool in this process; no services, no ports
``local`` + ``workers=N`` a :class:`distributed.LocalCluster` of N worker
                          processes sharing this machine's cores and the budget
``slurm`` / ``pbs``       Dask workers in batch jobs submitted through
                          :mod:`dask_jobqueue` (queue, account, cores, memory,
                          walltime, ... from :class:`ClusterConfig`)
========================  =====================================================

On a Dask cluster each field task may be retried: a task whose worker died
(killed, out of memory, node lost) is rescheduled on another worker by the
scheduler (up to ``distributed.scheduler.allowed-failures`` times), and a task
that raised an unexpected exception is run again ``retries`` times.  Errors
of the *input* (:class:`~dls_microscopy.errors.InputError`, e.g. a corrupt
file) are deterministic and are reported at once without retrying.

What a field logs on a Dask worker (and the Python warnings it raises) travels back
with its result and is logged here, in the driver, as one block per field tagged
``[KEY]``: a run's ``run.log`` has the same lines on every backend
(:mod:`dls_microscopy.pipeline._field_log`; the task wrapper is in
:mod:`dls_microscopy.pipeline._field_task`).

The Dask backends are started by private modules, imported only when one is
asked for: :mod:`dls_microscopy.pipeline._local_cluster` (worker processes on
this machine) and :mod:`dls_microscopy.pipeline._batch` (SLURM/PBS jobs through
dask-jobqueue, job-script checks, job states).

>>> from dls_microscopy.pipeline.config import ComputeConfig
>>> with compute_context(ComputeConfig(), workers=2) as ctx:  # doctest: +SKIP
...     for field, result in ctx.submit_fields(process_field, fields):
...         ...
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from dls_microscopy.errors import ClusterError, InputError

if TYPE_CHECKING:
    from distributed import Client

    from dls_microscopy.pipeline.config import ComputeConfig

__all__ = [
    "DEFAULT_RETRIES",
    "ClusterKind",
    "ComputeContext",
    "check_backend",
    "compute_context",
    "usable_cpus",
]

log = logging.getLogger(__name__)

ClusterKind = Literal["local", "slurm", "pbs"]
T = TypeVar("T")
R = TypeVar("R")

#: How often a field task that raised an unexpected exception is run again on a Dask cluster.
DEFAULT_RETRIES = 2
#: Seconds to wait for local workers (batch jobs, which may queue: ``compute.cluster.start_timeout``).
DEFAULT_LOCAL_TIMEOUT = 120.0
#: Thread-count variables of OpenMP/BLAS set to a worker's share of the cores.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Below this much of the budget per local worker, blocks get small and fields slow: say so.
_SMALL_WORKER_MEMORY = 512 << 20

#: Memory of a worker process beyond its share of the budget: the interpreter with numpy, dask,
#: zarr and torch imported is 330-350 MiB before any field, about 850 MiB while segmenting with
#: a 476 MiB share (measured on Linux, torch 2.14 CPU).  Dask restarts a worker at 95 % of its
#: limit, so a limit of only the budget's share killed every field of the sample pipeline with
#: ``--workers 2`` at 1 GB.
PROCESS_BASELINE = 1 << 30


def usable_cpus() -> int:
    """Number of CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# -- the context -------------------------------------------------------------------------


@dataclass
class ComputeContext:
    """Where the fields of a run execute; made by :func:`compute_context`.

    Attributes
    ----------
    kind : {"local", "slurm", "pbs"}
        The backend.  ``local`` with ``client`` set is a :class:`distributed.LocalCluster`.
    client : distributed.Client or None
        ``None`` for the default thread pool.
    dashboard_link : str or None
        Address of the Dask dashboard, when there is one (needs ``bokeh``).
    n_workers : int
        Fields that run at once: threads of the pool, or Dask workers asked for.
    memory_per_worker : int
        Bytes one running field may use: the budget divided among the local
        workers, or a batch job's memory divided among its worker processes.
    threads_per_worker : int
        Threads each field may use for its own blockwise work.
    retries : int
        Re-runs of a field task that raised an unexpected exception (Dask only).
    cluster : object or None
        The :class:`distributed.LocalCluster` or dask-jobqueue cluster object.
    lost_workers_timeout : float
        Seconds without any worker after which :meth:`submit_fields` gives up.
    """

    kind: ClusterKind
    client: Client | None
    dashboard_link: str | None
    n_workers: int
    memory_per_worker: int
    threads_per_worker: int
    retries: int = DEFAULT_RETRIES
    cluster: Any = None
    lost_workers_timeout: float = DEFAULT_LOCAL_TIMEOUT
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def describe(self) -> str:
        """One line for logs and progress output, e.g. ``slurm: 2 workers × 1 thread``."""
        what = (
            "local threads" if self.client is None else ("local dask" if self.kind == "local" else self.kind)
        )
        text = (
            f"{what}: {self.n_workers} worker{'s' if self.n_workers != 1 else ''} × "
            f"{self.threads_per_worker} thread{'s' if self.threads_per_worker != 1 else ''}, "
            f"{_format_bytes(self.memory_per_worker)} each"
        )
        if self.dashboard_link:
            text += f"; dashboard {self.dashboard_link}"
        return text

    def _wait_text(self) -> str:
        """``lost_workers_timeout`` for messages, with the key that sets it for batch jobs."""
        text = f"{self.lost_workers_timeout:g} s"
        return text if self.kind == "local" else f"{text} (compute.cluster.start_timeout)"

    def submit_fields(
        self, fn: Callable[[T], R], items: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Run ``fn(item)`` for every item; yield ``(item, result or exception)`` as each finishes.

        Parameters
        ----------
        fn : callable
            The per-field function.  On a Dask cluster it travels to the workers with
            cloudpickle: functions of installed modules by reference (the workers must
            import them: the ``python`` of ``compute.cluster``), closures by value.
        items : iterable
            One (small, picklable) description per field; all are submitted at once.

        Yields
        ------
        item, result
            In completion order.  ``result`` is the return value, or the exception the
            field ended with: an :class:`~dls_microscopy.errors.InputError` raised by
            ``fn`` (not retried), the last exception after ``retries`` re-runs, or a
            :class:`~dls_microscopy.errors.ClusterError` when the field's worker died
            too often.  One field's failure never stops the others.  When every worker
            of the cluster has been gone for ``lost_workers_timeout`` seconds (all
            worker jobs ended), the fields not finished are cancelled and each is
            yielded with that :class:`~dls_microscopy.errors.ClusterError`, so a run
            still writes the tables of its committed fields and its summary.

            On a Dask cluster, the records that ``fn`` logged on the worker (at the level
            of this process's ``dls_microscopy`` logger and above) and its warnings are
            logged here just before the field is yielded, each message tagged with the
            item's ``key`` attribute (else its repr), e.g. ``[A01_0] 21 objects``.

        Notes
        -----
        Closing the iterator early (``break``, an exception in the caller) cancels the
        fields that have not finished.
        """
        items = list(items)
        if not items:
            return
        if self.client is None:
            yield from self._submit_threads(fn, items)
        else:
            yield from self._submit_dask(fn, items)

    def _submit_threads(self, fn: Callable[[T], R], items: list[T]) -> Iterator[tuple[T, R | BaseException]]:
        assert self._pool is not None
        pending: dict[Future[R], T] = {self._pool.submit(fn, item): item for item in items}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    exc = fut.exception()
                    yield item, (exc if exc is not None else fut.result())
        finally:
            for fut in pending:
                fut.cancel()

    def _submit_dask(self, fn: Callable[[T], R], items: list[T]) -> Iterator[tuple[T, R | BaseException]]:
        import time

        from distributed import as_completed

        from dls_microscopy.pipeline._field_log import relay_field_log
        from dls_microscopy.pipeline._field_task import FIELD_RESOURCE, _FieldTask, _label
        from dls_microscopy.pipeline._worker_watch import WorkerWatch

        assert self.client is not None
        client = self.client
        # the workers collect what the driver would log: INFO and above while run.log is open
        level = logging.getLogger("dls_microscopy").getEffectiveLevel()
        task = _FieldTask(fn, self.threads_per_worker, level)
        inner = getattr(fn, "func", fn)  # functools.partial: name the task after the function
        name = getattr(inner, "__name__", type(inner).__name__)
        token = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                task,
                item,
                key=f"{name}-{i}-{token}",
                retries=self.retries,
                pure=False,
                resources={FIELD_RESOURCE: 1},
            ): item
            for i, item in enumerate(items)
        }
        remaining = set(futures)
        done = as_completed(futures, loop=client.loop)
        watch = WorkerWatch(client, self.lost_workers_timeout, self._wait_text())

        def lost() -> Iterator[tuple[T, R | BaseException]]:
            error = ClusterError(
                f"all Dask workers are gone and none came back within {self._wait_text()}; "
                f"{len(remaining)} of {len(futures)} fields did not finish (worker jobs ended, "
                "hit their walltime, or cannot start? see the job logs; run again to resume)"
            )
            client.cancel(list(remaining))
            for fut in sorted(remaining, key=lambda f: str(f.key)):
                yield futures[fut], error
            remaining.clear()

        try:
            while remaining:
                batch = done.next_batch(block=False)
                if not batch:
                    # a cluster whose workers are all gone (jobs ended, walltime) never finishes
                    if watch.expired(len(remaining), len(futures)):
                        yield from lost()
                        return
                    time.sleep(0.05)
                    continue
                for fut in batch:
                    # a result whose worker died before it was gathered is computed again: back
                    # to the queue, not waited for (its result() waited for good for workers that
                    # might never come; the watch above sees them gone)
                    got = _gathered(fut)
                    if got is None:
                        done.add(fut)
                        continue
                    outcome, records = got
                    remaining.discard(fut)
                    watch.progress()
                    # forget the result on the cluster before handing it over: were its worker
                    # lost now, the scheduler would otherwise run the field a second time
                    fut.release()
                    relay_field_log(records, _label(futures[fut]))  # before the caller logs the outcome
                    yield futures[fut], outcome
        finally:
            if remaining:
                client.cancel(list(remaining))


def _gathered(fut: Any, wait: float = 0.5) -> tuple[Any, list[dict[str, Any]]] | None:
    """The outcome of the Dask future ``fut`` (:func:`._field_task._outcome`), or None if it has
    none after ``wait`` seconds (its result was lost with its worker: computed again)."""
    from dls_microscopy.pipeline._field_task import NotReady, _outcome

    try:
        return _outcome(fut, timeout=wait)
    except NotReady:
        return None


# -- making one --------------------------------------------------------------------------


@contextmanager
def compute_context(
    compute: ComputeConfig,
    *,
    workers: int | None = None,
    cluster: str | None = None,
    timeout: float | None = None,
    min_workers: int | None = None,
    log_directory: str | os.PathLike[str] | None = None,
    retries: int = DEFAULT_RETRIES,
) -> Iterator[ComputeContext]:
    """Start the compute backend of a run, and stop it on exit.

    Parameters
    ----------
    compute : ComputeConfig
        The ``compute`` section of the pipeline configuration.
    workers : int, optional
        Overrides ``compute.workers``.  Locally, any number starts a
        :class:`distributed.LocalCluster` of that many worker processes (the
        default runs one field at a time in a thread, with no services).  For
        ``slurm``/``pbs`` it sets the number of jobs to ``ceil(workers / processes)``.
    cluster : {"local", "slurm", "pbs"}, optional
        Overrides ``compute.cluster.kind``.
    timeout : float, optional
        Seconds to wait for workers to start, and to come back when all are gone mid-run:
        ``compute.cluster.start_timeout`` (600 by default) for batch jobs, which may
        queue; 120 for a local cluster.
    min_workers : int, optional
        Batch jobs: workers that must have connected before fields are submitted
        (default 1; the others join as their jobs start).
    log_directory : path-like, optional
        Batch jobs: where the job scripts' output goes (default: the batch system's,
        usually the current directory).
    retries : int
        Re-runs of a field task that raised an unexpected exception (Dask only).

    Yields
    ------
    ComputeContext

    Raises
    ------
    InputError
        Unknown cluster kind, or a worker count below 1.
    ClusterError
        The cluster cannot start: dask-jobqueue missing, the batch system's commands
        not found, job submission refused, or no worker connected within ``timeout``
        (the message lists the jobs' states, e.g. ``PENDING (Resources)``).
    """
    ccfg = compute.cluster
    kind = check_backend(compute, workers=workers, cluster=cluster)
    n = workers if workers is not None else compute.workers
    budget = int(compute.memory_budget_bytes)
    with ExitStack() as stack:
        if kind == "local" and n is None:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="dls-field"))
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            ctx = ComputeContext(
                kind="local",
                client=None,
                dashboard_link=None,
                n_workers=1,
                memory_per_worker=budget,
                threads_per_worker=usable_cpus(),
                retries=0,
                _pool=pool,
            )
        elif kind == "local":
            from dls_microscopy.pipeline._local_cluster import _local_cluster

            assert n is not None
            wait = timeout if timeout is not None else DEFAULT_LOCAL_TIMEOUT
            ctx = _local_cluster(stack, n, budget, ccfg, wait, retries)
        else:
            from dls_microscopy.pipeline._batch import _batch_cluster

            ctx = _batch_cluster(
                stack,
                kind,  # type: ignore[arg-type]
                ccfg,
                n,
                budget,
                timeout if timeout is not None else ccfg.start_timeout,
                min_workers,
                log_directory,
                retries,
            )
        log.info("compute backend: %s", ctx.describe())
        yield ctx


def check_backend(compute: ComputeConfig, *, workers: int | None = None, cluster: str | None = None) -> str:
    """Check, without starting anything, that the compute backend can start here; return its kind.

    Parameters are those of :func:`compute_context`.

    Raises
    ------
    InputError
        Unknown cluster kind, or a worker count below 1.
    ClusterConfigError
        A batch kind whose submit command (``sbatch``, ``qsub``) is not on PATH.
    ClusterError
        dask-jobqueue (or dask.distributed) is not installed.
    """
    kind = (cluster or compute.cluster.kind).lower()
    if kind not in ("local", "slurm", "pbs"):
        raise InputError(f"unknown cluster kind {kind!r}; expected local, slurm or pbs")
    n = workers if workers is not None else compute.workers
    if n is not None and n < 1:
        raise InputError(f"the number of workers must be at least 1, got {n}")
    if kind in ("slurm", "pbs"):
        from dls_microscopy.pipeline._batch import check_job_memory, require_batch_system

        require_batch_system(kind)  # type: ignore[arg-type]
        check_job_memory(compute.cluster)
    return kind


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:  # pragma: no cover - dev installs have it
        raise ClusterError("workers need dask.distributed: install dls-microscopy[cluster]") from exc


def _format_bytes(n: int) -> str:
    from dask.utils import format_bytes

    return format_bytes(n)
