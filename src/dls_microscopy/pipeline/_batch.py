"""The batch backends: Dask workers in SLURM or PBS jobs, through :mod:`dask_jobqueue`.

Started by :func:`dls_microscopy.pipeline.cluster.compute_context` for
``--cluster slurm`` / ``--cluster pbs``: builds the jobqueue cluster from
:class:`~dls_microscopy.pipeline.config.ClusterConfig`, lets Slurm check the
worker job script (``sbatch --test-only``), submits the jobs and waits for the
first workers; when none connect in time, the error names the jobs' states
(``squeue``/``qstat``).  :mod:`distributed` and :mod:`dask_jobqueue` are
imported only when a cluster starts.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dls_microscopy.errors import ClusterConfigError, ClusterError
from dls_microscopy.pipeline._field_task import FIELD_RESOURCE_ARGS
from dls_microscopy.pipeline.cluster import (
    _THREAD_VARIABLES,
    PROCESS_BASELINE,
    ComputeContext,
    _format_bytes,
    _require_distributed,
)

if TYPE_CHECKING:
    from distributed import Client

    from dls_microscopy.pipeline.config import ClusterConfig

# records keep the name of the public module the backend belongs to
log = logging.getLogger("dls_microscopy.pipeline.cluster")


_SUBMIT_COMMAND = {"slurm": "sbatch", "pbs": "qsub"}

#: Least memory of one batch worker process.  Its blocks get half of it (:func:`_batch_cluster`),
#: and the interpreter with torch takes about 350 MiB: below about 780 MiB the two pass Dask's
#: limit (95 %) together, the worker is killed, and every field fails.
MIN_WORKER_MEMORY = 768 << 20


def _import_dask_jobqueue() -> None:
    """Import dask-jobqueue, keeping this process's Ctrl-C handler.

    dask-jobqueue 0.9 replaces the SIGINT handler on import with one that calls
    ``sys.exit()``: Ctrl-C then ended a run with exit code 0, in silence, as if it
    had succeeded, instead of raising ``KeyboardInterrupt`` (exit 130, "interrupted").
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()  # only it may set handlers
    before = signal.getsignal(signal.SIGINT) if main else None
    import dask_jobqueue  # noqa: F401

    if not main:
        return
    now = signal.getsignal(signal.SIGINT)
    if getattr(now, "__module__", "").startswith("dask_jobqueue"):
        ours = before if before is not None and before is not now else signal.default_int_handler
        signal.signal(signal.SIGINT, ours)


def check_job_memory(ccfg: ClusterConfig) -> None:
    """Each worker process of a job gets at least :data:`MIN_WORKER_MEMORY` of its memory.

    Below that, an interpreter with torch loaded is near its Dask memory limit before
    it reads a block: every field's worker was killed four times and every field
    failed, with a reason that did not point at ``compute.cluster.memory``.
    """
    from dls_microscopy.pipeline.config import parse_size

    share = parse_size(ccfg.memory) // max(1, ccfg.processes)
    if share < MIN_WORKER_MEMORY:
        raise ClusterConfigError(
            f"compute.cluster.memory: {ccfg.memory} per job gives each of its {ccfg.processes} worker "
            f"process(es) {_format_bytes(share)}; a worker needs at least {_format_bytes(MIN_WORKER_MEMORY)} "
            "(the interpreter and torch take about 350 MiB before any block): raise memory or lower processes"
        )


def require_batch_system(kind: Literal["slurm", "pbs"]) -> None:
    """Raise unless dask-jobqueue is installed and ``kind``'s submit command is on PATH."""
    _require_distributed()
    try:
        _import_dask_jobqueue()
    except ImportError as exc:
        raise ClusterError(f"--cluster {kind} needs dask-jobqueue: install dls-microscopy[cluster]") from exc
    submit = _SUBMIT_COMMAND[kind]
    if shutil.which(submit) is None:
        raise ClusterConfigError(
            f"--cluster {kind}: the batch command {submit!r} is not on PATH on this machine"
        )


def _batch_cluster(
    stack: ExitStack,
    kind: Literal["slurm", "pbs"],
    ccfg: ClusterConfig,
    n: int | None,
    budget: int,
    timeout: float,
    min_workers: int | None,
    log_directory: str | os.PathLike[str] | None,
    retries: int,
) -> ComputeContext:
    require_batch_system(kind)
    from dask_jobqueue import PBSCluster, SLURMCluster
    from distributed import Client

    from dls_microscopy.pipeline.config import parse_size

    processes = ccfg.processes  # at most cores: the configuration's validator sees to it
    jobs = ccfg.jobs if n is None else math.ceil(n / processes)
    job_memory = parse_size(ccfg.memory)
    threads = ccfg.cores // processes
    share = job_memory // processes  # Dask's memory limit of each worker process
    # a field's blocks get the share less the interpreter's own memory, but at least half the
    # share, as on a local cluster; the run's budget caps it
    per_worker = min(budget, max(share // 2, share - PROCESS_BASELINE))
    logs = None
    if log_directory is not None:
        logs = Path(log_directory)
        logs.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "cores": ccfg.cores,
        "processes": processes,
        "memory": f"{job_memory}B",
        "walltime": ccfg.walltime,
        "queue": ccfg.queue,
        "account": ccfg.account,
        "job_extra_directives": list(ccfg.job_extra_directives),
        "interface": ccfg.interface,
        "local_directory": ccfg.local_directory,
        "python": ccfg.python or sys.executable,
        "job_name": "dls-microscopy",
        "log_directory": os.fspath(logs) if logs is not None else None,
        # inside a field, dask and torch use the worker's share of the job's cores
        "job_script_prologue": [
            *(f"export {v}={threads}" for v in _THREAD_VARIABLES),
            f"export DASK_NUM_WORKERS={threads}",
            # a field's memory is its blocks: no spilling, and no pausing of a busy worker
            *(f"export DASK_DISTRIBUTED__WORKER__MEMORY__{k}=False" for k in ("TARGET", "SPILL", "PAUSE")),
        ],
        "scheduler_options": {"dashboard_address": ":0"},
        "worker_extra_args": list(FIELD_RESOURCE_ARGS),  # one field at a time per worker
    }
    cls = SLURMCluster if kind == "slurm" else PBSCluster
    # a scheduler that cannot start (a bad interface) also logs "Cluster closed without starting
    # up" on the way out: a stray line before our error, which says what went wrong
    spec_log = logging.getLogger("distributed.deploy.spec")
    not_started = _DropMessage("Cluster closed without starting up")
    spec_log.addFilter(not_started)
    try:
        jq = cls(**common)
    except Exception as exc:
        raise ClusterConfigError(f"could not set up the {kind} cluster from compute.cluster: {exc}") from exc
    finally:
        spec_log.removeFilter(not_started)
    stack.callback(jq.close)
    script = jq.job_script()
    log.debug("%s job script:\n%s", kind, script)
    _check_job_script(kind, script)
    client = Client(jq, set_as_default=False)
    stack.callback(client.close)
    from dls_microscopy.pipeline._worker_setup import RunWorkerSetup

    client.register_plugin(RunWorkerSetup())  # every job's workers, also replacements
    # A fixed number of jobs, kept: a job that ends (wall time, preemption, a node lost) is
    # replaced by a new one, and its fields run again there.  ``scale`` submits the jobs once and
    # never replaces them; ``adapt`` with minimum = maximum checks every second that they are all
    # there, and never retires one.
    jq.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
    n_total = jobs * processes
    wait_for = min(n_total, min_workers if min_workers is not None else 1)
    _wait_for_workers(client, wait_for, timeout, kind=kind, cluster=jq, log_directory=logs)
    return ComputeContext(
        kind=kind,
        client=client,
        dashboard_link=jq.dashboard_link or None,
        n_workers=n_total,
        memory_per_worker=per_worker,
        threads_per_worker=threads,
        retries=retries,
        cluster=jq,
        lost_workers_timeout=timeout,
    )


class _DropMessage(logging.Filter):
    """Drops the records whose message is ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


def _wait_for_workers(
    client: Client, n: int, timeout: float, *, kind: str, cluster: Any, log_directory: Path | None
) -> None:
    """Wait until ``n`` workers are connected; fail early when the worker jobs died at once.

    Batch jobs whose worker cannot start (a ``python`` without the package or without
    ``distributed``) end within a second; the run used to wait all of
    ``compute.cluster.start_timeout`` (600 s by default) for them, then blamed the queue
    (HPC QA).  When every job has ended, twice :data:`_ENDED_CHECK` s apart, with nothing
    connected and a job log that says something, the wait ends there.  The error quotes
    the end of the newest job log.
    """
    import time

    start = time.monotonic()
    deadline = start + timeout
    ended_since: float | None = None
    next_check = start + _ENDED_CHECK
    while True:
        have = len(client.nthreads())
        if have >= n:
            return
        now = time.monotonic()
        if now >= deadline:
            break
        if kind != "local" and now >= next_check:
            next_check = now + _ENDED_CHECK
            if _all_jobs_ended(kind, cluster) and _job_log_tail(log_directory, _job_ids(cluster)):
                if ended_since is not None:
                    break
                ended_since = now
            else:
                ended_since = None
        time.sleep(0.2)
    waited = time.monotonic() - start
    shown = f"{timeout:g}" if waited >= timeout else f"{waited:.0f}"
    msg = f"only {have} of {n} Dask worker(s) connected within {shown} s"
    if kind != "local":
        msg += " (compute.cluster.start_timeout)" if waited >= timeout else " (every worker job ended)"
        ids = _job_ids(cluster)
        states = _job_states(kind, ids)
        if states:
            msg += "; jobs: " + ", ".join(f"{job} {state}" for job, state in states.items())
        elif not ids:
            msg += f"; no job was submitted ({_SUBMIT_COMMAND[kind]} failed? see the log above)"
        if log_directory is not None:
            msg += f"; job logs in {log_directory}"
        tail = _job_log_tail(log_directory, ids)
        if tail:
            msg += f"; the newest ends: {tail}"
        msg += " (jobs still queued? check the queue, cores, memory and walltime in compute.cluster"
        msg += "; a worker that cannot start: check compute.cluster.python)"
    raise ClusterError(msg)


#: Seconds between two looks at the worker jobs' states while waiting for workers.
_ENDED_CHECK = 10.0


#: Job states of the batch system that no longer run nor wait (Slurm lists ended jobs for a while)
_ENDED_STATES = frozenset(
    (
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "F",
    )
)


def _all_jobs_ended(kind: str, cluster: Any) -> bool:
    """Whether every worker job submitted so far has ended (gone from the queue, or in an end state)."""
    ids = _job_ids(cluster)
    states = _job_states(kind, ids)
    return (
        bool(ids)
        and bool(states)
        and all(
            s.startswith("finished or unknown") or s.split(" ")[0] in _ENDED_STATES for s in states.values()
        )
    )


def _job_log_tail(log_directory: Path | None, job_ids: list[str], lines: int = 3) -> str:
    """The last ``lines`` lines of the newest non-empty error log (``*.err``) of the jobs ``job_ids``.

    Only this run's jobs: the log folder keeps those of earlier runs into the same output.
    Only the file's end is read.  ``""`` when there is none.
    """
    if log_directory is None or not job_ids:
        return ""
    try:
        logs = [
            p
            for p in Path(log_directory).glob("*.err")
            if any(job in p.stem.replace(".", "-").split("-") for job in job_ids) and p.stat().st_size
        ]
        if not logs:
            return ""
        newest = max(logs, key=lambda p: p.stat().st_mtime)
        with open(newest, "rb") as fh:
            fh.seek(max(0, newest.stat().st_size - 4096))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [ln.strip()[:200] for ln in text.splitlines() if ln.strip()][-lines:]
    return f"{newest.name}: " + " | ".join(kept) if kept else ""


def _job_ids(cluster: Any) -> list[str]:
    return [
        str(job.job_id) for job in getattr(cluster, "workers", {}).values() if getattr(job, "job_id", None)
    ]


def _check_job_script(kind: str, script: str) -> None:
    """Let Slurm validate a worker job script (``sbatch --test-only``): bad partition, account, memory."""
    if kind != "slurm":
        return  # qsub has no dry run
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dls-jobscript-") as tmp:
        path = Path(tmp) / "worker.sh"
        path.write_text(script)
        try:
            proc = subprocess.run(
                ["sbatch", "--test-only", os.fspath(path)], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ClusterError(f"slurm: cannot run sbatch: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise ClusterConfigError(
            "slurm refuses the worker job (check queue, account, cores, memory, walltime and "
            "job_extra_directives in compute.cluster): " + "; ".join(lines)
        )


def _job_states(kind: str, job_ids: list[str]) -> dict[str, str]:
    """``{job id: "PENDING (Resources)"}`` from squeue/qstat; empty when the query fails."""
    if not job_ids:
        return {}
    if kind == "slurm":
        cmd = ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"]
    else:
        cmd = ["qstat", "-f", "-F", "json", *job_ids]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states: dict[str, str] = {}
    if kind == "slurm":
        for line in out.splitlines():
            job, state, reason = [*line.split("|"), "", ""][:3]
            states[job.strip()] = f"{state} ({reason})" if reason and reason != "None" else state
    else:
        import json

        try:
            data = json.loads(out).get("Jobs", {})
        except (ValueError, AttributeError):
            return {}
        short = {job.split(".")[0]: job for job in job_ids}  # qstat answers 4242.server for 4242
        for job, info in data.items():
            state = str(info.get("job_state", "?"))
            if info.get("comment"):
                state += f" ({info['comment']})"
            states[short.get(job.split(".")[0], job)] = state
    for job in job_ids:
        states.setdefault(job, "finished or unknown to the batch system")
    return states
