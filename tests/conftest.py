"""Shared fixtures: the read-only real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DLS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; tests that need it are skipped where it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


_MEASURED = pytest.StashKey[list[str]]()


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``measured(text)``: a line for the "measured" section of pytest's terminal summary.

    Tests that measure memory or time (asserting only bounds) report their numbers
    here, so that CI logs carry them without ``-s``.
    """
    lines = request.config.stash.setdefault(_MEASURED, [])

    def record(text: str) -> None:
        lines.append(f"{request.node.nodeid}: {text.strip()}")

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Print the lines tests gave :func:`measured`, after the run."""
    lines = config.stash.get(_MEASURED, [])
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
