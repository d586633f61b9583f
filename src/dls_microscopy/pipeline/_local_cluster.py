"""The ``local`` backend with worker processes: a :class:`distributed.LocalCluster` on this machine.

Started by :func:`dls_microscopy.pipeline.cluster.compute_context` when a run asks
for ``workers``; :mod:`distributed` is imported only when the cluster starts.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from dls_microscopy.errors import ClusterError
from dls_microscopy.pipeline._batch import _wait_for_workers
from dls_microscopy.pipeline._field_task import FIELD_RESOURCE
from dls_microscopy.pipeline.cluster import (
    _SMALL_WORKER_MEMORY,
    _THREAD_VARIABLES,
    PROCESS_BASELINE,
    ComputeContext,
    _format_bytes,
    _require_distributed,
    usable_cpus,
)

if TYPE_CHECKING:
    from dls_microscopy.pipeline.config import ClusterConfig

# records keep the name of the public module the backend belongs to
log = logging.getLogger("dls_microscopy.pipeline.cluster")


def _local_cluster(
    stack: ExitStack, n: int, budget: int, ccfg: ClusterConfig, timeout: float, retries: int
) -> ComputeContext:
    _require_distributed()
    import dask
    from distributed import Client, LocalCluster

    threads = max(1, usable_cpus() // n)
    per_worker = max(1, budget // n)
    if per_worker < _SMALL_WORKER_MEMORY:
        log.warning(
            "each of the %d local workers gets %s of the %s memory budget: small blocks, slow fields "
            "(raise compute.memory_budget or use fewer workers)",
            n,
            _format_bytes(per_worker),
            _format_bytes(budget),
        )
    kwargs: dict[str, Any] = {}
    if ccfg.local_directory:
        kwargs["local_directory"] = ccfg.local_directory
    # A field's memory is its blocks (sized to per_worker), not task results that dask could
    # spill, and pausing a busy worker at 80 % of its limit stalled the run: only the restart at
    # 95 % stays.  Nannies hand the config in force when they start to their workers.
    no_spill = {f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause")}
    try:
        with dask.config.set(no_spill):
            lc = LocalCluster(
                n_workers=n,
                threads_per_worker=threads,
                processes=True,
                memory_limit=per_worker + PROCESS_BASELINE,  # blocks are sized to per_worker
                dashboard_address=":0",
                host="127.0.0.1",
                # inside a field, dask and torch use the worker's share of the cores
                config={"num_workers": threads},
                env={v: str(threads) for v in _THREAD_VARIABLES},
                resources={FIELD_RESOURCE: 1},  # one field at a time per worker
                **kwargs,
            )
    except Exception as exc:
        raise ClusterError(
            f"could not start a local Dask cluster of {n} workers: {exc} (workers are new processes: "
            "a script that starts them must guard its top level with `if __name__ == '__main__':`)"
        ) from exc
    from dls_microscopy.pipeline._worker_setup import RunWorkerSetup, quiet_nanny_kills

    stack.callback(quiet_nanny_kills())  # removed after the cluster closes (callbacks run last-first)
    stack.callback(lc.close)
    client = Client(lc, set_as_default=False)
    stack.callback(client.close)
    client.register_plugin(RunWorkerSetup())  # every worker, also those started later
    _wait_for_workers(client, n, timeout, kind="local", cluster=lc, log_directory=None)
    return ComputeContext(
        kind="local",
        client=client,
        dashboard_link=lc.dashboard_link or None,
        n_workers=n,
        memory_per_worker=per_worker,
        threads_per_worker=threads,
        retries=retries,
        cluster=lc,
        lost_workers_timeout=timeout,
    )
