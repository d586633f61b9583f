"""The default compute backend (a thread pool, no services) and argument checks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cluster_tasks import logged_field, square

from dls_microscopy.errors import ClusterConfigError, ClusterError, CorruptDataError, InputError
from dls_microscopy.pipeline.cluster import check_backend, compute_context, usable_cpus
from dls_microscopy.pipeline.config import ClusterConfig, ComputeConfig, load_config


def test_local_threads_default(tmp_path: Path) -> None:
    with compute_context(ComputeConfig(memory_budget="3GB")) as ctx:
        assert ctx.kind == "local" and ctx.client is None and ctx.dashboard_link is None
        assert ctx.n_workers == 1 and ctx.memory_per_worker == 3_000_000_000
        assert ctx.threads_per_worker == usable_cpus()
        items = [(i, str(tmp_path), 0.0) for i in range(7)]
        results = {args[0]: res for args, res in ctx.submit_fields(logged_field, items)}
    assert isinstance(results[3], CorruptDataError)
    # no retries locally: the transient failure is reported as it is
    assert isinstance(results[5], RuntimeError) and "first attempt" in str(results[5])
    assert {i: r for i, r in results.items() if i not in (3, 5)} == {
        i: (i * i, results[i][1]) for i in (0, 1, 2, 4, 6)
    }


def test_closing_the_iterator_cancels_the_rest() -> None:
    calls: list[int] = []

    def field(x: int) -> int:
        calls.append(x)
        time.sleep(0.05)
        return x

    with compute_context(ComputeConfig()) as ctx:
        it = ctx.submit_fields(field, range(20))
        first = next(it)
        it.close()
    assert first == (0, 0)
    assert len(calls) < 5


def test_empty_input_yields_nothing() -> None:
    with compute_context(ComputeConfig()) as ctx:
        assert list(ctx.submit_fields(square, [])) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"workers": 0}, "at least 1"), ({"cluster": "kubernetes"}, "unknown cluster kind")],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message), compute_context(ComputeConfig(), **kwargs):
        pass


def test_batch_system_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    cfg = ComputeConfig(cluster=ClusterConfig(kind="pbs"))
    with pytest.raises(ClusterConfigError, match="'qsub' is not on PATH"), compute_context(cfg):
        pass


def test_run_on_a_missing_batch_system_exits_2_before_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration problem, like a bad key: exit 2 and one line, no output folder."""
    import numpy as np
    import tifffile

    from dls_microscopy.cli import main

    tifffile.imwrite(tmp_path / "img.tif", np.zeros((8, 16, 16), np.uint16), metadata={"axes": "ZYX"})
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        "input:\n  path: img.tif\noutput:\n  path: out\nsteps:\n  segment: {params: {diameter_um: 4}}\n"
    )
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["run", str(cfg), "--cluster", "pbs", "--no-progress"]) == 2
    assert not (tmp_path / "out").exists()


def test_job_shapes_no_worker_can_use_are_refused_before_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little memory per worker process (every field died 4 times), fewer cores than processes."""
    import numpy as np
    import tifffile

    from dls_microscopy.cli import main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((8, 16, 16), np.uint16), metadata={"axes": "ZYX"})
    base = "input:\n  path: img.tif\noutput:\n  path: out\nsteps:\n  segment: {params: {diameter_um: 4}}\n"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(base + "compute:\n  cluster: {kind: slurm, memory: 200MB}\n")
    with pytest.raises(ClusterConfigError, match=r"compute\.cluster\.memory: 200MB per job gives each"):
        check_backend(load_config(cfg).compute)
    assert main(["config", "validate", str(cfg)]) == 2
    assert main(["run", str(cfg), "--no-progress"]) == 2
    cfg.write_text(base + "compute:\n  cluster: {kind: slurm, memory: 8GB, cores: 1, processes: 2}\n")
    with pytest.raises(InputError, match=r"line 8: compute\.cluster\.cores: cores \(1\) must be at least"):
        load_config(cfg)
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert not (tmp_path / "out").exists()


def _stand_in_pbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """qsub/qstat/qdel on PATH for a PBS whose job 4242 stays queued; returns where qsub copies it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = tmp_path / "submitted"
    scripts.mkdir()
    (bin_dir / "qsub").write_text(f'#!/bin/sh\ncp "$1" {scripts}/job.sh\necho 4242.pbs-test\n')
    (bin_dir / "qdel").write_text(f'#!/bin/sh\necho "$@" >> {scripts}/deleted\n')
    (bin_dir / "qstat").write_text(
        '#!/bin/sh\necho \'{"Jobs": {"4242.pbs-test": {"job_state": "Q", '
        '"comment": "Not Running: Insufficient amount of resource: ncpus"}}}\'\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return scripts


def test_pbs_jobs_from_the_config_and_a_queued_job_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PBS through stand-in qsub/qstat/qdel: the job script carries the settings, a queued job
    that never starts ends in a ClusterError naming its state."""
    scripts = _stand_in_pbs(tmp_path, monkeypatch)
    cfg = ComputeConfig(
        memory_budget="8GB",
        cluster=ClusterConfig(
            kind="pbs",
            queue="short",
            account="proj42",
            cores=4,
            processes=2,
            memory="6GB",
            walltime="02:30:00",
            job_extra_directives=["-l place=scatter"],
            python="/opt/venv/bin/python",
        ),
    )
    with pytest.raises(ClusterError) as info, compute_context(cfg, timeout=2):
        pass
    message = str(info.value)
    assert "only 0 of 1 Dask worker(s) connected within 2 s (compute.cluster.start_timeout)" in message
    assert "jobs: 4242 Q (Not Running: Insufficient amount of resource: ncpus) (jobs" in message
    script = (scripts / "job.sh").read_text()
    for line in ("#PBS -q short", "#PBS -A proj42", "#PBS -l walltime=02:30:00", "#PBS -l place=scatter"):
        assert line in script, script
    assert "/opt/venv/bin/python -m distributed.cli.dask_worker" in script
    assert "--nthreads 2" in script and "--nworkers 2" in script
    assert "export OMP_NUM_THREADS=2" in script
    # a field's memory is its blocks: the workers neither spill nor pause (a paused busy worker stalls)
    for key in ("TARGET", "SPILL", "PAUSE"):
        assert f"export DASK_DISTRIBUTED__WORKER__MEMORY__{key}=False" in script
    assert (scripts / "deleted").read_text().split() == ["4242"]  # the job is cancelled on the way out


@pytest.mark.parametrize("imported_first", [False, True])
def test_ctrl_c_still_interrupts_once_dask_jobqueue_is_imported(imported_first):
    # dask-jobqueue 0.9 sets a SIGINT handler calling sys.exit(): Ctrl-C on a Slurm run exited 0
    import subprocess
    import sys

    pytest.importorskip("dask_jobqueue")
    code = (
        ("import dask_jobqueue\n" if imported_first else "")
        + "import signal\n"
        + "from dls_microscopy.pipeline._batch import require_batch_system\n"
        + "try:\n    require_batch_system('slurm')\nexcept Exception:\n    pass  # no sbatch here\n"
        + "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        + "signal.raise_signal(signal.SIGINT)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr, proc.stderr


def test_start_timeout_ends_a_run_whose_worker_job_stays_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compute.cluster.start_timeout: 3``: the run gives up after 3 s (not 600), exit 1, the job's
    state and the key to raise in the one error line, the queued job deleted."""
    import numpy as np
    import tifffile

    from dls_microscopy.cli import main

    scripts = _stand_in_pbs(tmp_path, monkeypatch)
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((8, 16, 16), np.uint16), metadata={"axes": "ZYX"})
    cfg = tmp_path / "pipeline.yaml"
    base = "input:\n  path: img.tif\noutput:\n  path: out\nsteps:\n  segment: {params: {diameter_um: 4}}\n"
    cfg.write_text(base + "compute:\n  cluster:\n    kind: pbs\n    start_timeout: 3\n")
    assert load_config(cfg).compute.cluster.start_timeout == 3.0
    capsys.readouterr()
    t0 = time.monotonic()
    assert main(["run", str(cfg), "--no-progress"]) == 1
    assert time.monotonic() - t0 < 60
    error = " ".join(capsys.readouterr().err.split())
    assert "error: only 0 of 1 Dask worker(s) connected within 3 s (compute.cluster.start_timeout)" in error
    assert "4242 Q (Not Running: Insufficient amount of resource: ncpus)" in error
    assert (scripts / "deleted").read_text().split() == ["4242"]
    # a value that is not a positive number of seconds: exit 2 naming the file, line and key
    cfg.write_text(base + "compute:\n  cluster:\n    kind: pbs\n    start_timeout: 10 minutes\n")
    assert main(["config", "validate", str(cfg)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert f"{cfg}: line 10: compute.cluster.start_timeout: a number of seconds, e.g. 1800" in error


def test_cluster_configuration_errors_name_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job Slurm refuses, a network interface that does not exist, a job too small for a worker:
    exit 2 with the configuration file named (as for a bad key), and no stray warning of Dask's."""
    import numpy as np
    import tifffile

    from dls_microscopy.cli import main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nif [ "$1" = --test-only ]; then\n'
        "  echo 'sbatch: error: invalid partition specified: nope' >&2\n  exit 1\nfi\nexit 0\n"
    )
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((8, 16, 16), np.uint16), metadata={"axes": "ZYX"})
    base = "input:\n  path: img.tif\noutput:\n  path: out\nsteps:\n  segment: {params: {diameter_um: 4}}\n"
    cfg = tmp_path / "pipeline.yaml"
    cases = {
        "queue: nope": "slurm refuses the worker job (check queue, account, cores, memory, walltime and "
        "job_extra_directives in compute.cluster): sbatch: error: invalid partition specified: nope",
        "interface: nope0": "could not set up the slurm cluster from compute.cluster: Cluster failed to "
        "start: 'nope0' is not a valid network interface",
        "memory: 200MB": "compute.cluster.memory: 200MB per job gives each",
    }
    for setting, message in cases.items():
        cfg.write_text(base + f"compute:\n  cluster: {{kind: slurm, {setting}}}\n")
        capsys.readouterr()
        caplog.clear()
        assert main(["run", str(cfg), "--no-progress"]) == 2, setting
        error = " ".join(capsys.readouterr().err.split())
        assert f"error: {cfg}: {message}" in error, error
        assert not (tmp_path / "out").exists()
        assert [r.getMessage() for r in caplog.records if r.name.startswith("distributed")] == []
    assert main(["config", "validate", str(cfg)]) == 2  # the job too small: found without a run
    assert f"error: {cfg}: {cases['memory: 200MB']}" in " ".join(capsys.readouterr().err.split())


def test_a_worker_runs_one_field_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each field may use a worker's whole memory share: a worker with 4 threads still runs one field."""
    from cluster_tasks import overlap_probe

    import dls_microscopy.pipeline._local_cluster as local_cluster

    monkeypatch.setattr(local_cluster, "usable_cpus", lambda: 4)
    with compute_context(ComputeConfig(memory_budget="2GB"), workers=1, retries=0) as ctx:
        assert ctx.threads_per_worker == 4
        most = dict(ctx.submit_fields(overlap_probe, [(i, str(tmp_path), 0.5) for i in range(4)]))
    assert all(not isinstance(m, BaseException) for m in most.values()), most
    assert max(most.values()) == 1, most


def test_ctrl_c_on_a_local_cluster_stops_quietly(tmp_path: Path) -> None:
    """Ctrl-C reaches every process of the terminal's group, the worker processes too: they
    printed asyncio KeyboardInterrupt tracebacks and "ended with CancelledError" warnings."""
    import signal
    import subprocess
    import sys

    pytest.importorskip("distributed")
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, time\n"
        "from dls_microscopy.pipeline.cluster import compute_context\n"
        "from dls_microscopy.pipeline.config import ComputeConfig\n"
        "def nap(seconds):\n    time.sleep(seconds)\n    return seconds\n"
        "if __name__ == '__main__':\n"
        "    try:\n"
        "        with compute_context(ComputeConfig(), workers=2) as ctx:\n"
        "            fields = ctx.submit_fields(nap, [60, 60, 60])\n"
        "            print('started', flush=True)\n"
        "            for _ in fields:\n                pass\n"
        "    except KeyboardInterrupt:\n"
        "        print('interrupted', flush=True)\n        sys.exit(130)\n"
    )

    def own_group() -> None:  # a terminal's foreground group, with Ctrl-C's default handling
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=own_group, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    time.sleep(3)  # the naps are running on the workers
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in out, err
    assert "Traceback" not in err and "CancelledError" not in err and "leaked" not in err, err
    assert "still alive" not in err, err  # the busy workers are killed: what the run wants
