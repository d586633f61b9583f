"""The run's output folder: made and proved writable, locked, logged to, its temporaries swept.

Part of :mod:`dls_microscopy.pipeline.run`, which names everything here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from dls_microscopy.errors import ClusterConfigError, DlsError, OutputError
from dls_microscopy.io._output_checks import RUN_LOCK

log = logging.getLogger("dls_microscopy.pipeline.run")

FIELDS_DIR = "fields"
#: Held (flock) while a run writes into the folder; see :func:`_run_lock`.
LOCK_FILE = RUN_LOCK  # named once, in io, whose --overwrite rule knows a run folder by it
#: The output folder's write test, named as the run's temporaries (``.NAME.PID.tmp``): one
#: left by a kill is removed by the next run and is no output to verify.
WRITE_TEST = ".write-test.{pid}.tmp"


def _prepare_output(out: Path) -> None:
    """Create ``out`` and prove it writable, or raise :class:`OutputError` (nothing committed)."""
    probe = out / WRITE_TEST.format(pid=os.getpid())
    try:
        (out / FIELDS_DIR).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the output folder: {exc.strerror or exc}", path=out) from exc


def _remove_stale_temporaries(out: Path) -> None:
    """Remove the temporary files of a killed run directly in ``out``.

    ``.NAME.PID.tmp`` (summary, resolved config) and ``.NAME.partial-...`` (tables,
    manifest).  Only under the run's lock (:func:`_run_lock`): another run holding it
    writes its own temporaries here, and its process number says nothing about it when
    it runs on another login node; a second run refused by the lock removed them.
    """
    for f in out.iterdir():
        name = f.name
        pid = name.rsplit(".", 2)[-2] if name.endswith(".tmp") and name.count(".") >= 3 else ""
        ours = pid == str(os.getpid())
        if name.startswith(".") and f.is_file() and ((pid.isdigit() and not ours) or ".partial-" in name):
            log.info("removing %s, left by a run that was killed", name)
            f.unlink(missing_ok=True)


@contextlib.contextmanager
def _removed_if_refused(out: Path, created: bool) -> Iterator[None]:
    """Remove ``out`` again, when this run made it, if the cluster refuses the configuration.

    Slurm checks a worker job (``sbatch --test-only``) only once the job script exists,
    which is after the output folder was made; a refused job is a configuration
    error like a bad key, and leaves no folder behind either.
    """
    try:
        yield
    except ClusterConfigError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write: {exc.strerror or exc}", path=path) from exc


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for the run: a second run into it is refused.

    Two runs into one folder would compute the same fields twice and race on the
    run's tables.  ``fcntl.flock`` on ``out/.run.lock``: the kernel drops the lock
    when the process ends, however it ends, so a killed run leaves nothing stale.
    Where ``fcntl`` does not exist (Windows) runs are not locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = out / LOCK_FILE
    try:
        fh = open(path, "a+", encoding="utf-8")  # held open (and locked) for the whole run
    except OSError as exc:
        raise OutputError(f"cannot create the run lock: {exc.strerror or exc}", path=path) from exc
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise OutputError(
                f"another run is writing into this folder (process {holder}); wait for it to "
                "finish or choose another output path",
                path=out,
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} on {socket.gethostname()}\n")  # several login nodes: which one
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


@contextlib.contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """Append INFO and above of every ``dls_microscopy`` logger to ``path`` while the run lasts."""
    logger = logging.getLogger("dls_microscopy")
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write the run log: {exc.strerror or exc}", path=path) from exc
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous, effective = logger.level, logger.getEffectiveLevel()
    # the log file wants INFO; consoles keep showing what they showed before
    quiet = [h for h in logging.getLogger().handlers + logger.handlers if h.level == logging.NOTSET]
    logger.addHandler(handler)
    if effective > logging.INFO:
        for h in quiet:
            h.setLevel(effective)
        logger.setLevel(logging.INFO)
    # Python warnings of the fields run here go to run.log as well (a field on a Dask worker
    # sends its warnings back with its records: pipeline._field_log)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(handler)
    captured = getattr(logging, "_warnings_showwarning", None) is not None  # by the caller already
    logging.captureWarnings(True)
    try:
        yield
    except KeyboardInterrupt:
        log.warning("run interrupted: committed fields are kept; run again to resume")
        raise
    except Exception as exc:
        # the console shows the error once, from the command line; run.log says why the run stopped
        handler.handle(
            log.makeRecord(
                log.name,
                logging.ERROR,
                __file__,
                0,
                "run stopped: %s",
                (_reason(exc),),
                None if isinstance(exc, DlsError) else sys.exc_info(),
            )
        )
        raise
    finally:
        logging.captureWarnings(captured)
        warnings_logger.removeHandler(handler)
        logger.removeHandler(handler)
        logger.setLevel(previous)
        for h in quiet:
            h.setLevel(logging.NOTSET)
        handler.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DlsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
