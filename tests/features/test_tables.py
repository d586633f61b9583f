"""Object tables: column order and names, units, aggregation, joins, byte-stable Parquet."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dls_microscopy.errors import InputError
from dls_microscopy.features import (
    aggregate_table,
    join_object_columns,
    measure_objects,
    objects_table,
    units_of,
    write_csv,
    write_parquet,
)
from dls_microscopy.features.tables import IMAGE_KEYS, METADATA_KEYS, WELL_KEYS


@pytest.fixture(scope="module")
def measured(nuclei):
    return measure_objects(
        nuclei.image, nuclei.labels, spacing=nuclei.spacing, channel_names=nuclei.channel_names
    )


def test_column_order_names_and_units(measured):
    t = objects_table(measured, compartment="Nuclei", plate="P1", well="B03", site=2, image_id="img")
    names = t.column_names
    assert tuple(names[:5]) == METADATA_KEYS
    n_meta = sum(n.startswith("Metadata_") for n in names)
    assert all(n.startswith("Metadata_") for n in names[:n_meta])
    assert all(n.startswith("Nuclei_") for n in names[n_meta:])
    for expected in (
        "Metadata_Centroid_Z",
        "Nuclei_AreaShape_Volume",
        "Nuclei_AreaShape_MajorAxisLength",
        "Nuclei_Intensity_MeanIntensity_DAPI",
        "Nuclei_Intensity_MedianIntensity_LaminB1",
        "Nuclei_Intensity_IntegratedIntensity_DAPI",
        "Nuclei_RadialDistribution_FracAtD_DAPI_1of4",
    ):
        assert expected in names
    assert t.column("Metadata_ObjectID").to_pylist() == measured.ids.tolist()
    assert t.column("Metadata_Plate").to_pylist() == ["P1"] * measured.n_objects
    units = units_of(t)
    assert units["Nuclei_AreaShape_Volume"] == "µm³"
    assert units["Metadata_Centroid_X"] == "µm"
    assert units["Nuclei_AreaShape_Extent"] == "1"
    info = json.loads(t.schema.metadata[b"dls_microscopy"])
    assert info["spacing_um"] == list(measured.spacing)
    assert info["channels"] == ["DAPI", "LaminB1"]
    assert info["units"]["Nuclei_AreaShape_Volume"] == "µm³"
    np.testing.assert_array_equal(t.column("Nuclei_AreaShape_Volume").to_numpy(), measured.volume)


def test_parquet_bytes_are_stable_and_keep_units(measured, tmp_path, nuclei):
    t = objects_table(measured, compartment="Nuclei", plate="P1", well="B03")
    a = write_parquet(t, tmp_path / "a.parquet")
    other = measure_objects(
        nuclei.image,
        nuclei.labels,
        spacing=nuclei.spacing,
        channel_names=nuclei.channel_names,
        block_shape=(5, 9, 11),
        workers=2,
    )
    b = write_parquet(
        objects_table(other, compartment="Nuclei", plate="P1", well="B03"), tmp_path / "b.parquet"
    )
    assert a.read_bytes() == b.read_bytes()
    back = pq.read_table(a)
    assert back.equals(t)
    assert units_of(back) == units_of(t)
    meta = pq.read_metadata(a)
    assert meta.row_group(0).num_rows == measured.n_objects
    csv = write_csv(t, tmp_path / "a.csv")
    assert csv.read_text().splitlines()[0].startswith('"Metadata_Plate","Metadata_Well"')


def test_aggregates_per_image_and_well(measured):
    t1 = objects_table(measured, plate="P1", well="B03", site=0, image_id="a")
    t2 = objects_table(measured, plate="P1", well="B03", site=1, image_id="b")
    t3 = objects_table(measured, plate="P1", well="A01", site=0, image_id="c")
    t = pa.concat_tables([t1, t2, t3])
    images = aggregate_table(t, IMAGE_KEYS)
    assert images.num_rows == 3
    assert images.column("Metadata_ImageID").to_pylist() == ["c", "a", "b"]  # sorted by well, site
    assert images.column("Count_Nuclei").to_pylist() == [measured.n_objects] * 3
    wells = aggregate_table(t, WELL_KEYS)
    assert wells.column("Metadata_Well").to_pylist() == ["A01", "B03"]
    assert wells.column("Count_Nuclei").to_pylist() == [measured.n_objects, 2 * measured.n_objects]
    vol = measured.volume
    np.testing.assert_allclose(wells.column("Mean_Nuclei_AreaShape_Volume").to_numpy(), vol.mean())
    np.testing.assert_allclose(wells.column("Median_Nuclei_AreaShape_Volume").to_numpy(), np.median(vol))
    assert units_of(wells)["Median_Nuclei_AreaShape_Volume"] == "µm³"
    # NaN-aware (an object whose intensity sums to 0 has NaN radial fractions)
    mf = t1.column("Nuclei_RadialDistribution_MeanFrac_DAPI_1of4").to_numpy()
    got = aggregate_table(t1, IMAGE_KEYS).column("Mean_Nuclei_RadialDistribution_MeanFrac_DAPI_1of4")
    np.testing.assert_allclose(got.to_numpy(), np.nanmean(mf))
    empty = aggregate_table(t1.slice(0, 0), IMAGE_KEYS)
    assert empty.num_rows == 0 and "Count_Nuclei" in empty.column_names


def test_join_descriptor_and_embedding_columns(measured):
    t = objects_table(measured)
    ids = measured.ids[::-1][:-1]  # reversed, one object missing
    geometry = pa.table(
        {
            "Nuclei_AreaShape_SurfaceArea": pa.array(np.arange(len(ids), dtype=float)),
            "Metadata_ObjectID": pa.array(ids),
        }
    )
    emb = pa.table({"Metadata_ObjectID": pa.array(measured.ids), "Embedding_0": np.ones(len(measured.ids))})
    joined = join_object_columns(join_object_columns(t, emb), geometry)
    names = joined.column_names
    assert names[-1] == "Embedding_0"
    assert names[-2] == "Nuclei_AreaShape_SurfaceArea"
    surface = joined.column("Nuclei_AreaShape_SurfaceArea").to_pylist()
    assert surface[0] is None  # the missing object (the smallest id)
    assert surface[1:] == list(np.arange(len(ids), dtype=float)[::-1])
    with pytest.raises(InputError, match="already present"):
        join_object_columns(joined, emb)
    with pytest.raises(InputError, match="duplicate"):
        join_object_columns(t, pa.concat_tables([emb.rename_columns(["Metadata_ObjectID", "X_1"])] * 2))


def test_empty_and_bad_compartment(nuclei):
    with pytest.warns(UserWarning, match="no object"):
        m = measure_objects(nuclei.image, np.zeros(nuclei.labels.shape, np.uint8), spacing=(1, 1, 1))
    t = objects_table(m)
    assert t.num_rows == 0 and "Nuclei_AreaShape_Volume" in t.column_names
    with pytest.raises(InputError, match="compartment"):
        objects_table(m, compartment="nuclei_1")
