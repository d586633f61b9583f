"""Parquet tables of shape descriptors, written row batch by row batch.

Column names carry units (``volume_um3``); each field also holds its unit in
its Arrow metadata (``unit``) and the schema metadata holds a JSON map
``units`` of column → unit, plus whatever the caller adds (spacing, source,
mesh options).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dls_microscopy.errors import OutputError
from dls_microscopy.io.atomic import partial_file, release_partial

__all__ = ["DescriptorTableWriter", "descriptor_schema"]

#: Rows buffered before a Parquet row group is written.
ROW_GROUP = 4096


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise ImportError("writing descriptor tables needs pyarrow: pip install pyarrow") from exc
    return pa, pq


def descriptor_schema(units: Mapping[str, str], metadata: Mapping[str, Any] | None = None) -> Any:
    """The Arrow schema of a descriptor table: id uint64, flags bool, counts int64, rest float64."""
    pa, _ = _pyarrow()
    fields = []
    for name, unit in units.items():
        if name == "object_id":
            typ = pa.uint64()
        elif name in ("watertight", "sh_star_like"):
            typ = pa.bool_()
        elif name in ("n_vertices", "n_faces"):
            typ = pa.int64()
        else:
            typ = pa.float64()
        fields.append(pa.field(name, typ, metadata={"unit": unit}))
    meta = {"units": json.dumps(dict(units))}
    meta.update({str(k): json.dumps(v) for k, v in (metadata or {}).items()})
    return pa.schema(fields, metadata=meta)


class DescriptorTableWriter:
    """Write descriptor rows (dicts) to a Parquet file in row groups; atomic on close.

    Parameters
    ----------
    path : path-like
        Destination ``.parquet`` file; written under a temporary name and
        renamed when the writer closes without error.
    units : mapping of str to str
        Columns in order, with units.
    metadata : mapping, optional
        Extra schema metadata (values JSON-encoded).
    commit_on_close : bool
        Rename the table into place as the writer closes.  ``False`` leaves the
        complete table under its temporary name (:attr:`pending`) for the caller
        to :meth:`commit` (or :meth:`discard`) once what it describes is in place.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        units: Mapping[str, str],
        metadata: Mapping[str, Any] | None = None,
        *,
        commit_on_close: bool = True,
    ) -> None:
        self.path = Path(path)
        self.schema = descriptor_schema(units, metadata)
        self._tmp = partial_file(self.path)  # this writer's own name: two writers never share it
        self._commit_on_close = commit_on_close
        self._rows: list[dict[str, Any]] = []
        self._writer: Any = None
        self.n_rows = 0

    def __enter__(self) -> DescriptorTableWriter:
        _, pq = _pyarrow()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        except OSError as exc:
            raise OutputError(f"cannot write table: {exc.strerror or exc}", path=self.path) from exc
        return self

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (missing columns become null)."""
        for row in rows:
            self._rows.append(dict(row))
            if len(self._rows) >= ROW_GROUP:
                self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        pa, _ = _pyarrow()
        columns = {f.name: [r.get(f.name) for r in self._rows] for f in self.schema}
        self._writer.write_table(pa.Table.from_pydict(columns, schema=self.schema))
        self.n_rows += len(self._rows)
        self._rows.clear()

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self._flush()
        finally:
            self._writer.close()
        if exc_type is not None:
            self.discard()
        elif self._commit_on_close:
            self.commit()

    @property
    def pending(self) -> Path:
        """The table under its temporary name: complete once the writer closed, until :meth:`commit`."""
        return self._tmp

    def commit(self) -> None:
        """Rename the closed, complete table to :attr:`path` (replacing a file there).

        Raises
        ------
        OutputError
            The rename failed (permissions, a folder at :attr:`path`).
        """
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write table: {exc.strerror or exc}", path=self.path) from exc
        finally:
            release_partial(self._tmp)  # renamed, or (failed) removed

    def discard(self) -> None:
        """Remove the table under its temporary name (nothing at :attr:`path` is touched)."""
        release_partial(self._tmp)
