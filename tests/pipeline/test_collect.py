"""The run's tables, streamed: same bytes as the in-memory concatenation, memory bounded.

``_reference_collect`` is the earlier in-memory implementation (every field's
table concatenated with ``pa.concat_tables``, aggregates over the whole
objects table), kept here as the oracle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dls_microscopy.errors import FormatError, OutputError
from dls_microscopy.features import tables
from dls_microscopy.features.tables import IMAGE_KEYS, WELL_KEYS, aggregate_table, write_csv, write_parquet
from dls_microscopy.pipeline import _collect_aggregate as collect_aggregate
from dls_microscopy.pipeline import collect
from dls_microscopy.pipeline.collect import TABLE_NAMES, collect_tables


# --- the oracle: the earlier in-memory implementation -------------------------------------------
def _reference_concat(parts: Sequence[pa.Table]) -> pa.Table:
    meta = parts[0].schema.metadata
    same = [t.replace_schema_metadata(meta) for t in parts]
    return pa.concat_tables(same, promote_options="permissive").replace_schema_metadata(meta)


def _reference_collect(
    field_dirs: Sequence[Path], outdir: Path, table_format: str = "parquet", compartment: str = "Nuclei"
) -> dict[str, Path]:
    write = write_csv if table_format == "csv" else write_parquet
    pieces: dict[str, list[pa.Table]] = {"objects": [], "images": []}
    for d in field_dirs:
        for name in pieces:
            f = d / f"{name}.parquet"
            if f.is_file():
                pieces[name].append(pq.read_table(f))
    written = {}
    for name, parts in pieces.items():
        if parts:
            written[name] = write(_reference_concat(parts), outdir / f"{name}.{table_format}")
    if pieces["objects"]:
        objects = _reference_concat(pieces["objects"])
        if any(objects.column("Metadata_Well").to_pylist()):
            images = _reference_concat(pieces["images"]) if pieces["images"] else None
            for name, keys in (("wells", WELL_KEYS), ("plates", WELL_KEYS[:1])):
                table = aggregate_table(objects, keys, compartment=compartment)
                table = _reference_with_empty_groups(table, images, keys, compartment)
                table = tables.with_site_count(table, keys, _reference_site_counts(images or objects, keys))
                written[name] = write(table, outdir / f"{name}.{table_format}")
    return written


def _reference_site_counts(images: pa.Table, keys: Sequence[str]) -> dict[tuple, int]:
    """Distinct images (rows of the images table, by their keys) per group of ``keys``."""
    rows = images.select(list(IMAGE_KEYS)).to_pylist()
    distinct = {tuple(r.values()) for r in rows}
    counts: dict[tuple, int] = {}
    for image in distinct:
        group = tuple(image[IMAGE_KEYS.index(k)] for k in keys)
        counts[group] = counts.get(group, 0) + 1
    return counts


def _reference_with_empty_groups(
    table: pa.Table, images: pa.Table | None, keys: Sequence[str], compartment: str
) -> pa.Table:
    if images is None:
        return table
    have = set(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    want = sorted(set(zip(*(images.column(k).to_pylist() for k in keys), strict=True)))
    missing = [g for g in want if g not in have]
    if not missing:
        return table
    extra = {k: [g[i] for g in missing] for i, k in enumerate(keys)}
    rows = {
        f.name: pa.array(extra[f.name], f.type)
        if f.name in extra
        else pa.array([0] * len(missing), f.type)
        if f.name == f"Count_{compartment}"
        else pa.nulls(len(missing), f.type)
        for f in table.schema
    }
    both = pa.concat_tables([table, pa.table(rows, schema=table.schema)])
    order = sorted(range(both.num_rows), key=lambda i: tuple(both.column(k)[i].as_py() for k in keys))
    return both.take(pa.array(order, pa.int64()))


# --- synthetic committed fields ----------------------------------------------------------------
UNITS = {"Nuclei_Volume": "µm³", "Nuclei_Mean_DAPI": "a.u.", "Embedding_0": ""}


def _objects(
    plate: str, wells: Sequence[str], site: int, n: int, rng: np.random.Generator, variant: int
) -> pa.Table:
    """An objects table like a field's, with the schema varying by ``variant``.

    0: all columns; 1: ``Nuclei_Count`` int64 with nulls, no ``Embedding_0``;
    2: ``Nuclei_Volume`` null-typed (as in a field whose column had no values),
    ``Nuclei_Extra`` only here.  Rows are spread over ``wells`` (one or more).
    """
    well = [wells[i % len(wells)] for i in range(n)]
    cols: dict[str, pa.Array] = {
        "Metadata_Plate": pa.array([plate] * n, pa.string()),
        "Metadata_Well": pa.array(well, pa.string()),
        "Metadata_Site": pa.array([site] * n, pa.int32()),
        "Metadata_ImageID": pa.array([f"{plate}_{wells[0]}_{site}"] * n, pa.string()),
        "Metadata_ObjectID": pa.array(np.arange(1, n + 1, dtype=np.uint64)),
        "Metadata_Centroid_Z": pa.array(rng.uniform(0, 9, n)),
        "Nuclei_Volume": pa.array(rng.lognormal(3, 1, n) * 1e3) if variant != 2 else pa.nulls(n),
        "Nuclei_Mean_DAPI": pa.array(
            np.where(rng.random(n) < 0.2, np.nan, rng.normal(5, 2, n)), pa.float32()
        ),
        "Nuclei_Count": pa.array(rng.integers(0, 50, n), pa.int32())
        if variant != 1
        else pa.array(
            [None if i % 3 == 0 else int(v) for i, v in enumerate(rng.integers(0, 9, n))], pa.int64()
        ),
    }
    if variant == 0:
        cols["Embedding_0"] = pa.array(rng.normal(0, 1, n))
    if variant == 2:
        cols["Nuclei_Extra"] = pa.array(rng.normal(0, 1, n) * 1e12)
    fields = [
        pa.field(k, v.type, metadata={b"unit": UNITS[k].encode()} if UNITS.get(k) else None)
        for k, v in cols.items()
    ]
    meta = {"compartment": "Nuclei", "schema_version": 1, "units": {k: u for k, u in UNITS.items() if u}}
    meta["site"] = site  # schema metadata differs between fields; the first field's is kept
    schema = pa.schema(fields, metadata={b"dls_microscopy": json.dumps(meta, sort_keys=True).encode()})
    return pa.Table.from_arrays(list(cols.values()), schema=schema)


def _write_field(d: Path, objects: pa.Table | None, where: dict[str, object]) -> Path:
    d.mkdir(parents=True)
    if objects is not None:
        write_parquet(objects, d / "objects.parquet")
        images = aggregate_table(objects, IMAGE_KEYS, compartment="Nuclei", empty_group=where)
        write_parquet(images, d / "images.parquet")
    return d


LAYOUT = [  # (plate, wells of the field's rows, objects, schema variant); None: a field without tables
    ("P1", ("A01",), 23, 0),
    ("P1", ("A01",), 0, 2),  # no objects, null-typed column
    ("P1", ("A02",), 31, 1),
    ("P1", ("A02", "B01"), 17, 0),  # one table, two wells
    ("P2", ("A01",), 40, 2),
    None,
    ("P2", ("B02",), 0, 1),  # a well whose only field has no objects: a count-0 row
    ("P2", ("A02",), 12, 0),
    ("P1", ("A01",), 9, 1),  # out of plate → well order
]


def _fields(root: Path, layout=LAYOUT, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    dirs = []
    for i, spec in enumerate(layout):
        d = root / f"f{i:03d}"
        if spec is None:
            d.mkdir(parents=True)
            dirs.append(d)
            continue
        plate, wells, n, variant = spec
        where = {
            "Metadata_Plate": plate,
            "Metadata_Well": wells[0],
            "Metadata_Site": np.int32(i),
            "Metadata_ImageID": f"{plate}_{wells[0]}_{i}",
        }
        dirs.append(_write_field(d, _objects(plate, wells, i, n, rng, variant), where))
    return dirs


def _compare(dirs: Sequence[Path], tmp_path: Path, fmt: str) -> dict[str, Path]:
    (tmp_path / "new").mkdir(parents=True)
    (tmp_path / "ref").mkdir(parents=True)
    got = collect_tables(dirs, tmp_path / "new", table_format=fmt)
    want = _reference_collect(dirs, tmp_path / "ref", fmt)
    assert list(got) == list(want)
    for name in want:
        assert got[name].name == want[name].name
        assert got[name].read_bytes() == want[name].read_bytes(), name
    assert not list((tmp_path / "new").glob(".*.tmp"))
    return got


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("small_blocks", [False, True], ids=["default", "small-row-groups-and-blocks"])
def test_same_bytes_as_in_memory_concatenation(tmp_path, monkeypatch, fmt, small_blocks):
    dirs = _fields(tmp_path / "fields")
    if small_blocks:  # row groups that end inside fields; aggregates 2-3 columns at a time
        monkeypatch.setattr(tables, "ROW_GROUP_SIZE", 10)
        monkeypatch.setattr(collect_aggregate, "_BLOCK_BYTES", 1)
    got = _compare(dirs, tmp_path, fmt)
    assert set(got) == set(TABLE_NAMES)
    if fmt == "parquet":
        wells = pq.read_table(got["wells"])
        assert list(zip(*(wells.column(k).to_pylist() for k in WELL_KEYS), strict=True)) == [
            ("P1", "A01"),
            ("P1", "A02"),
            ("P1", "B01"),
            ("P2", "A01"),
            ("P2", "A02"),
            ("P2", "B02"),
        ]
        assert wells.column("Count_Nuclei").to_pylist() == [32, 40, 8, 40, 12, 0]
        # the fields (images) of each well, those without objects included; then of each plate
        assert wells.column("Metadata_Site_Count").to_pylist() == [3, 2, 1, 1, 1, 1]
        assert wells.column_names[:4] == [*WELL_KEYS, "Metadata_Site_Count", "Count_Nuclei"]
        plates = pq.read_table(got["plates"])
        assert plates.column("Metadata_Site_Count").to_pylist() == [6, 3]
        assert tables.units_of(wells)["Metadata_Site_Count"] == "1"
        assert "Mean_Nuclei_Extra" in wells.column_names and "Mean_Embedding_0" in wells.column_names
        assert tables.units_of(wells)["Median_Nuclei_Volume"] == "µm³"
        objects = pq.ParquetFile(got["objects"])
        assert objects.metadata.num_rows == 132
        assert objects.metadata.num_row_groups == (14 if small_blocks else 1)


def test_one_feature_and_plate_without_wells(tmp_path, monkeypatch):
    """One feature column (numpy then sums pairwise); fields outside plates: no aggregates."""
    monkeypatch.setattr(collect_aggregate, "_BLOCK_BYTES", 1)
    rng = np.random.default_rng(1)
    dirs = []
    for i, n in enumerate((5, 0, 8)):
        t = _objects("P", ("W",), i, n, rng, 0).select([*tables.METADATA_KEYS, "Nuclei_Volume"])
        where = {
            "Metadata_Plate": "P",
            "Metadata_Well": "W",
            "Metadata_Site": np.int32(i),
            "Metadata_ImageID": "",
        }
        dirs.append(_write_field(tmp_path / f"f{i}", t, where))
    assert set(_compare(dirs, tmp_path / "a", "parquet")) == set(TABLE_NAMES)
    dirs = []
    for i in range(2):
        t = _objects("", ("",), i, 6, rng, 0)
        where = {
            "Metadata_Plate": "",
            "Metadata_Well": "",
            "Metadata_Site": np.int32(i),
            "Metadata_ImageID": "",
        }
        dirs.append(_write_field(tmp_path / f"g{i}", t, where))
    assert set(_compare(dirs, tmp_path / "b", "parquet")) == {"objects", "images"}


def test_deterministic_and_stale_tables_removed(tmp_path):
    dirs = _fields(tmp_path / "fields")
    out = tmp_path / "out"
    out.mkdir()
    (out / "wells.csv").write_text("stale")
    first = {k: p.read_bytes() for k, p in collect_tables(dirs, out).items()}
    assert not (out / "wells.csv").exists()
    again = {k: p.read_bytes() for k, p in collect_tables(dirs, out).items()}
    assert first == again
    # a later run over fields without wells leaves no aggregates of the earlier one
    flat = _fields(tmp_path / "flat", [("", ("",), 4, 0)])
    assert set(collect_tables(flat, out)) == {"objects", "images"}
    assert sorted(p.name for p in out.iterdir()) == ["images.parquet", "objects.parquet"]


def test_errors_leave_no_partial_table(tmp_path, monkeypatch):
    dirs = _fields(tmp_path / "fields")
    out = tmp_path / "out"
    out.mkdir()
    (dirs[4] / "objects.parquet").write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(FormatError, match="cannot read the field table") as err:
        collect_tables(dirs, out)
    assert err.value.path == dirs[4] / "objects.parquet"
    assert list(out.iterdir()) == []
    dirs = _fields(tmp_path / "fields2")

    def full(self, table):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(collect._ParquetSink, "write", full)
    with pytest.raises(OutputError, match="No space left on device"):
        collect_tables(dirs, out)
    assert list(out.iterdir()) == []


# --- memory ------------------------------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import json, sys, tracemalloc
    from pathlib import Path
    import pyarrow as pa
    sys.path.insert(0, {tests!r})
    from dls_microscopy.features import tables
    from test_collect import _reference_collect
    from dls_microscopy.pipeline.collect import collect_tables
    tables.ROW_GROUP_SIZE = 4096
    run = _reference_collect if {reference} else collect_tables
    dirs = sorted(Path({fields!r}).iterdir())
    out = Path({out!r})
    (out / "warm-up").mkdir(parents=True)
    run(dirs[:2], out / "warm-up")  # lazy imports (pyarrow.dataset...) are not what we measure
    pa.set_memory_pool(pa.system_memory_pool())  # a singleton unused so far: its peak starts at 0
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run(dirs[: {n}], out)
    python = tracemalloc.get_traced_memory()[1] - base
    print(json.dumps({{"arrow": pa.system_memory_pool().max_memory(), "python": python}}))
    """
)


def _peak(fields: Path, n: int, out: Path, *, reference: bool = False) -> int:
    code = _CHILD.format(
        tests=str(Path(__file__).parent), fields=str(fields), n=n, out=str(out), reference=reference
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    return peaks["arrow"] + peaks["python"]


def test_memory_does_not_grow_with_fields(tmp_path, measured):
    """Peak Arrow + Python allocations with 40 fields stay within 3x those with 4 fields.

    10 plates x 2 wells x 2 fields of 2,000 objects x 24 features (~0.4 MB each,
    16 MB in all): the in-memory concatenation (the oracle) needs several times the
    whole table, the streamed one about one plate's block.
    """
    rng = np.random.default_rng(2)
    root = tmp_path / "fields"
    for i in range(40):
        plate, well = f"P{i // 4:02d}", f"A0{(i // 2) % 2 + 1}"
        t = _objects(plate, (well,), i, 2000, rng, 0)
        extra = {f"Nuclei_F{j:02d}": pa.array(rng.normal(0, 1, 2000)) for j in range(20)}
        for name, col in extra.items():
            t = t.append_column(name, col)
        where = {
            "Metadata_Plate": plate,
            "Metadata_Well": well,
            "Metadata_Site": np.int32(i),
            "Metadata_ImageID": "",
        }
        _write_field(root / f"f{i:03d}", t, where)
    whole = sum(pq.read_table(f).nbytes for f in root.glob("*/objects.parquet"))
    few = _peak(root, 4, tmp_path / "few")
    many = _peak(root, 40, tmp_path / "many")
    oracle = _peak(root, 40, tmp_path / "oracle", reference=True)
    measured(f"peak allocations: 4 fields {few}, 40 fields {many}, oracle {oracle}; table {whole}")
    assert many < 3 * few, (few, many)
    assert many < whole / 2 < oracle, (many, whole, oracle)
    for name in ("objects", "images", "wells", "plates"):
        assert (tmp_path / "many" / f"{name}.parquet").read_bytes() == (
            tmp_path / "oracle" / f"{name}.parquet"
        ).read_bytes()


def test_pycytominer_keeps_the_site_count_as_metadata(tmp_path):
    """Real pycytominer on ``wells.parquet``: ``Metadata_Site_Count`` is inferred as metadata,
    passed through normalize and feature_select unchanged, and never taken as a feature."""
    pytest.importorskip("pycytominer")
    pd = pytest.importorskip("pandas")
    from pycytominer import feature_select, normalize
    from pycytominer.cyto_utils import infer_cp_features

    out = tmp_path / "out"
    out.mkdir()
    got = collect_tables(_fields(tmp_path / "fields"), out)
    wells = pd.read_parquet(got["wells"])
    assert "Metadata_Site_Count" in infer_cp_features(wells, metadata=True)
    features = [c for c in wells.columns if c.startswith(("Mean_", "Median_"))]
    normalized = normalize(wells, features=features, meta_features="infer", method="standardize")
    pd.testing.assert_series_equal(normalized["Metadata_Site_Count"], wells["Metadata_Site_Count"])
    selected = feature_select(
        normalized, features=features, operation=["variance_threshold", "drop_na_columns"]
    )
    assert selected["Metadata_Site_Count"].tolist() == [3, 2, 1, 1, 1, 1]
    assert "Metadata_Site_Count" not in infer_cp_features(wells, compartments=["Nuclei", "Mean_Nuclei"])
