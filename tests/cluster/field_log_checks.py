"""Checks of the field log lines relayed from workers, shared by the local and the Slurm tests."""

from __future__ import annotations

import re

#: Logger of :func:`cluster_tasks.chatty_field`.
CHATTY = "dls_microscopy.tests.chatty"


def assert_chatty_fields_relayed(lines: list[str], items: range) -> None:
    """Each field's records came back, tagged, in one block, in the order the worker emitted them."""
    for item in items:
        tag = f"[{item}] "
        mine = [line for line in lines if tag in line]
        expected = [
            f"INFO {CHATTY}: {tag}field {item}: starting",
            f"INFO {CHATTY}: {tag}field {item}: inside a dask task",
            f"WARNING {CHATTY}: {tag}field {item}: something odd",
        ]
        assert mine[:3] == expected, mine
        assert re.fullmatch(
            rf"WARNING py\.warnings: \[{item}\] .*:\d+: UserWarning: field {item}: a Python warning",
            mine[3],
        ), mine
        assert mine[4:] == ([f"INFO {CHATTY}: {tag}field {item}: done"] if item not in (2, 3) else [])
        first = lines.index(mine[0])
        assert lines[first : first + len(mine)] == mine  # one block per field
        assert not any("below the run's level" in line for line in mine)


def assert_run_log_has_fields(text: str, keys: list[str], *, mesh: bool = True) -> None:
    """Each field's lines of a segment (+ mesh) + features run are in run.log, tagged, in one block."""
    lines = text.splitlines()
    for key in keys:
        mine = [i for i, line in enumerate(lines) if f": [{key}] " in line]
        assert mine == list(range(mine[0], mine[0] + len(mine))), f"{key}'s lines are not one block"
        block = "\n".join(lines[i] for i in mine)
        for pattern in (
            rf"dls_microscopy\.pipeline\.field: \[{key}\] {key}: segment",
            rf"dls_microscopy\.segment\.blockwise: \[{key}\] segmenting .* with watershed",
            rf"dls_microscopy\.segment\.blockwise: \[{key}\] \d+ objects",
            *([rf"dls_microscopy\.geometry\.command: \[{key}\] meshed \d+ objects"] if mesh else []),
            rf"dls_microscopy\.pipeline\.field: \[{key}\] {key}: features",
            rf"dls_microscopy\.pipeline\.field: \[{key}\] {key}: committed \(\d+ objects\)",
        ):
            assert re.search(pattern, block), f"{pattern!r} not in run.log:\n{text}"
