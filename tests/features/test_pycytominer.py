"""Real pycytominer runs aggregate, normalize and feature_select on our objects.parquet unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dls_microscopy.pipeline.features import run_features

pycytominer = pytest.importorskip("pycytominer")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def objects_parquet(nuclei_zarr, tmp_path_factory):
    """One plate, two wells (two fields of view of the sample written as two runs)."""
    root = tmp_path_factory.mktemp("pycytominer")
    parts = []
    for well, site in (("B03", 0), ("B04", 1)):
        out = root / well
        run_features(nuclei_zarr, "nuclei", out, plate="P1", well=well, site=site)
        parts.append(pq.read_table(out / "objects.parquet"))
    path = root / "objects.parquet"
    pq.write_table(pa.concat_tables(parts), path)
    return path


def _ours(df):
    return [c for c in df.columns if c.startswith("Nuclei_")]


def test_aggregate_normalize_feature_select(objects_parquet):
    from pycytominer import aggregate, feature_select, normalize

    df = pd.read_parquet(objects_parquet)
    features = _ours(df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our table needs no workaround
        profiles = aggregate(
            df, strata=["Metadata_Plate", "Metadata_Well"], features="infer", operation="median"
        )
        normalized = normalize(df, features="infer", meta_features="infer", method="standardize")
        selected = feature_select(
            normalized,
            features="infer",
            operation=["variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist"],
        )
    assert profiles.shape[0] == 2
    assert set(_ours(profiles)) == set(features)
    # pycytominer's median per well equals the per-object median we would compute
    b03 = df[df["Metadata_Well"] == "B03"]["Nuclei_AreaShape_Volume"]
    got = profiles.set_index("Metadata_Well").loc["B03", "Nuclei_AreaShape_Volume"]
    np.testing.assert_allclose(got, b03.median())
    assert normalized.shape == df.shape
    assert list(normalized.columns[:5]) == [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_Site",
        "Metadata_ImageID",
        "Metadata_ObjectID",
    ]
    volume = normalized["Nuclei_AreaShape_Volume"]
    np.testing.assert_allclose([volume.mean(), volume.std(ddof=0)], [0, 1], atol=1e-9)
    kept = _ours(selected)
    assert 0 < len(kept) < len(features)
    assert all(c.startswith("Metadata_") for c in selected.columns if c not in kept)
