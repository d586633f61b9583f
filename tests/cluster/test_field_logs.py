"""What a field logs on a Dask worker reaches the driver's loggers, and so ``run.log``."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import dask
import pytest
from cluster_tasks import chatty_field
from field_log_checks import CHATTY, assert_chatty_fields_relayed, assert_run_log_has_fields

from dls_microscopy.errors import CorruptDataError
from dls_microscopy.pipeline._field_log import MAX_RECORDS, capture_field_log, relay_field_log
from dls_microscopy.pipeline.cluster import compute_context
from dls_microscopy.pipeline.config import ComputeConfig


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]


def test_records_of_fields_on_local_workers_reach_the_driver(caplog: pytest.LogCaptureFixture) -> None:
    """Records of a field run in a worker process (also one that failed) are logged by the driver."""
    caplog.set_level(logging.INFO, logger="dls_microscopy")
    with compute_context(ComputeConfig(memory_budget="2GB"), workers=2, retries=0) as ctx:
        results = dict(ctx.submit_fields(chatty_field, range(5)))
    assert results[0] == 0 and results[4] == 16
    assert isinstance(results[2], RuntimeError) and isinstance(results[3], CorruptDataError)
    assert_chatty_fields_relayed(_messages(caplog), range(5))
    # the records travelled as values: the exceptions handed over do not carry them
    assert not hasattr(results[2], "dls_field_log")


def test_concurrent_fields_keep_their_own_records() -> None:
    """Two fields in threads of one process (a worker with 2 threads) each get their records only."""
    logger = logging.getLogger(CHATTY)
    barrier = threading.Barrier(2)
    got: dict[int, list[str]] = {}

    def field(item: int) -> None:
        with capture_field_log(logging.INFO) as flog:
            barrier.wait()
            for step in range(3):
                logger.info("field %d step %d", item, step)
                dask.delayed(lambda s=step: logger.info("field %d task %d", item, s))().compute(
                    scheduler="threads", num_workers=2
                )
            barrier.wait()  # both capturing until both are done
        got[item] = [r["msg"] for r in flog.records()]

    threads = [threading.Thread(target=field, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for item in (0, 1):
        assert got[item] == [
            m for s in range(3) for m in (f"field {item} step {s}", f"field {item} task {s}")
        ], got[item]


def test_capture_is_bounded_and_leaves_logging_as_it_was() -> None:
    logger = logging.getLogger("dls_microscopy")
    level, handlers, show = logger.level, list(logger.handlers), warnings.showwarning
    with capture_field_log(logging.INFO) as flog:
        for i in range(3 * MAX_RECORDS):
            logging.getLogger(CHATTY).info("record %d %s", i, "x" * 10_000 if i == 0 else "")
    records = flog.records()
    assert len(records) == MAX_RECORDS + 1
    assert records[0]["msg"].startswith("record 0 ") and len(records[0]["msg"]) < 4100
    assert records[MAX_RECORDS // 2]["msg"] == (
        f"{2 * MAX_RECORDS} log records of this field left out (at most {MAX_RECORDS} are kept)"
    )
    last = [f"record {i} " for i in (3 * MAX_RECORDS - 2, 3 * MAX_RECORDS - 1)]
    assert [r["msg"] for r in records[-2:]] == last
    assert (logger.level, logger.handlers, warnings.showwarning) == (level, handlers, show)


def test_relayed_records_keep_time_level_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dls_microscopy")
    with capture_field_log(logging.INFO) as flog:
        try:
            raise ValueError("bad block")
        except ValueError:
            logging.getLogger(CHATTY).exception("block %d failed", 7)
    records = flog.records()
    caplog.clear()
    relay_field_log(records, "B02_1")
    (relayed,) = caplog.records
    assert relayed.getMessage() == "[B02_1] block 7 failed"
    assert (relayed.name, relayed.levelname, relayed.created) == (CHATTY, "ERROR", records[0]["created"])
    assert "ValueError: bad block" in logging.Formatter().format(relayed)


@pytest.mark.slow
def test_run_log_has_every_field_on_a_local_dask_cluster(tmp_path: Path) -> None:
    """``run --workers 2``: run.log has each field's segmentation, mesh and feature lines (it had none)."""
    from dls_microscopy.pipeline.run import run_pipeline
    from dls_microscopy.sample_data.plate import write_synthetic_plate

    plate = write_synthetic_plate(
        tmp_path / "plate.ome.zarr", rows=("A",), columns=("01", "02"), fields=1, shape=(12, 32, 32)
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"input:\n  path: {plate}\noutput:\n  path: {tmp_path / 'out'}\n"
        "steps:\n  segment:\n    channel: DAPI\n    params: {diameter_um: 7}\n  mesh: {}\n"
        "  features:\n    channels: [DAPI, LaminB1]\n"
        "compute:\n  memory_budget: 512MB\n  device: cpu\n"
    )
    summary = run_pipeline(config, workers=2, progress=False)
    assert summary.ok and summary.count("done") == 2
    assert_run_log_has_fields((tmp_path / "out" / "run.log").read_text(), [f.key for f in summary.fields])
