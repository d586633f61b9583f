"""The ``wells`` and ``plates`` tables of :mod:`.collect`: aggregates out of core.

One group (well, plate) at a time and, inside a group, a few feature columns at
a time (``_BLOCK_BYTES`` of float64 values, at least two columns): only the
group's fields are read, and only the columns of the current block.  Each block
goes through :func:`~dls_microscopy.features.tables.aggregate_table`, so counts,
means and medians are bit for bit those of one call on the whole objects table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from dls_microscopy.pipeline.collect import _Parts

log = logging.getLogger("dls_microscopy.pipeline.collect")

#: Bytes of float64 feature values that one aggregation block holds (rows × columns × 8).
_BLOCK_BYTES = 32 * 2**20
#: Name of the constant grouping column of an aggregation block (``Metadata_``: not a feature).
_BLOCK_KEY = "Metadata__Block"

Group = tuple[Any, ...]


@dataclass
class _Groups:
    """Which fields hold which groups' objects, from the pass that writes the objects table.

    ``rows[i]`` is the number of rows of field ``i``; ``counts[i]`` maps each
    group (the values of ``keys``) present in field ``i`` to its rows there.
    """

    keys: list[str]
    rows: list[int] = field(default_factory=list)
    counts: list[dict[Group, int]] = field(default_factory=list)

    def visit(self, i: int, table: pa.Table) -> None:
        self.rows.append(table.num_rows)
        if not self.keys or table.num_rows == 0:
            self.counts.append({})
            return
        grouped = (
            table.select(self.keys).group_by(self.keys, use_threads=False).aggregate([([], "count_all")])
        )
        values = zip(*(grouped.column(k).to_pylist() for k in self.keys), strict=True)
        self.counts.append(dict(zip(values, grouped.column("count_all").to_pylist(), strict=True)))

    def by(self, keys: Sequence[str]) -> dict[Group, list[tuple[int, int]]]:
        """``{group: [(field, rows of the group there), ...]}`` for ``keys``, some of ``self.keys``."""
        missing = [k for k in keys if k not in self.keys]
        if missing:
            raise ValueError(f"{missing} not among {self.keys}")
        at = [self.keys.index(k) for k in keys]
        out: dict[Group, dict[int, int]] = {}
        for i, counts in enumerate(self.counts):
            for g, rows in counts.items():
                members = out.setdefault(tuple(g[j] for j in at), {})
                members[i] = members.get(i, 0) + rows
        return {g: sorted(m.items()) for g, m in out.items()}


def _column_blocks(features: Sequence[str], rows: int) -> list[list[str]]:
    """Consecutive feature columns in blocks of about ``_BLOCK_BYTES`` over ``rows`` rows.

    A block has at least two columns whenever there are two features:
    ``aggregate_table`` sums an ``(n, k)`` array over its rows, which numpy
    does sequentially column by column when ``k >= 2`` but pairwise when
    ``k == 1``; with ``k >= 2`` on both sides the sums are bit-identical to
    one call on all the features.
    """
    if not features:
        return []
    k = max(2, _BLOCK_BYTES // max(1, 8 * rows))
    blocks = [list(features[i : i + k]) for i in range(0, len(features), k)]
    if len(blocks) > 1 and len(blocks[-1]) == 1:
        last = blocks.pop()
        blocks[-1] += last
    return blocks


def _group_block(
    parts: _Parts,
    groups: _Groups,
    members: list[tuple[int, int]],
    group: Group,
    columns: list[str],
    keys: Sequence[str],
) -> pa.Table:
    """The rows of ``group`` (its values of ``keys``; in field order) and only ``columns``."""
    pieces = []
    for i, rows in members:
        if rows == groups.rows[i]:  # the whole field belongs to the group
            pieces.append(parts.read(i, columns))
            continue
        table = parts.read(i, list(dict.fromkeys([*columns, *keys])))
        mask = None
        for k, v in zip(keys, group, strict=True):
            col = table.column(k)
            this = pc.is_null(col) if v is None else pc.fill_null(pc.equal(col, v), False)
            mask = this if mask is None else pc.and_(mask, this)
        pieces.append(table.filter(mask).select(columns))
    return pa.concat_tables(pieces)


def _aggregate(parts: _Parts, groups: _Groups, keys: Sequence[str], compartment: str) -> pa.Table:
    """``aggregate_table(objects, keys)`` of the whole objects table, one group and column block at a time."""
    from dls_microscopy.features.tables import aggregate_table

    template = aggregate_table(parts.schema.empty_table(), keys, compartment=compartment)
    features = [
        f.name
        for f in parts.schema
        if not f.name.startswith("Metadata_")
        and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
    ]
    members = groups.by(keys)
    order = sorted(members)
    count = f"Count_{compartment}"
    stats: dict[str, np.ndarray] = {
        name: np.full(len(order), np.nan) for name in template.column_names[len(keys) :] if name != count
    }
    counts = np.zeros(len(order), np.int64)
    for g, group in enumerate(order):
        counts[g] = sum(rows for _, rows in members[group])
        for block in _column_blocks(features, int(counts[g])):
            table = _group_block(parts, groups, members[group], group, block, keys)
            table = table.append_column(_BLOCK_KEY, pa.array(np.zeros(table.num_rows, np.int8)))
            agg = aggregate_table(table, [_BLOCK_KEY], compartment=compartment)
            for name in agg.column_names[2:]:
                stats[name][g] = agg.column(name)[0].as_py()
            del table, agg
    values: dict[str, Any] = {k: [group[j] for group in order] for j, k in enumerate(keys)}
    values[count] = counts
    values.update(stats)
    arrays = [pa.array(values[f.name], f.type) for f in template.schema]
    log.debug("aggregated %d groups by %s", len(order), ", ".join(keys))
    return pa.Table.from_arrays(arrays, schema=template.schema)
