"""Real pycytominer on an ``objects.parquet`` that also carries mesh descriptors and embeddings.

The table is built end to end by ``dls-microscopy features IMAGE LABELS OUTDIR --meshes
--embeddings image.pt --embeddings shape.pt`` on two tiny wells, read back with pandas
unchanged, and given to pycytominer ``aggregate``, ``normalize`` and ``feature_select``.

pycytominer's ``features="infer"`` (``infer_cp_features``) only takes columns that start
with a CellProfiler compartment (``Cells``, ``Nuclei``, ``Cytoplasm``; ``Image`` with
``image_features=True``).  Our mesh descriptors (``Nuclei_AreaShape_Mesh*``) are inferred;
our embedding columns (``Embedding_Image_000``, ``Embedding_Shape_000``, ...) are not, so
``aggregate`` and ``normalize`` with ``features="infer"`` drop them.  pycytominer's route
for non-CellProfiler columns is an explicit ``features=`` list, tested here as well.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dls_microscopy.cli import main

pycytominer = pytest.importorskip("pycytominer")  # before pandas warnings are made errors
pd = pytest.importorskip("pandas")

from pycytominer import aggregate, feature_select, normalize  # noqa: E402
from pycytominer.cyto_utils import infer_cp_features  # noqa: E402

STRATA = ["Metadata_Plate", "Metadata_Well"]
SELECT = ["variance_threshold", "correlation_threshold", "drop_na_columns"]


@pytest.fixture(scope="module")
def objects(plate, models, tmp_path_factory):
    """Both wells' ``objects.parquet`` from the CLI, read with pandas and stacked (rows only)."""
    root, layout = plate
    out = tmp_path_factory.mktemp("pycytominer_emb")
    frames = []
    for well, info in sorted(layout.items()):
        target = out / well
        args = ["features", str(root / info["path"]), "nuclei", str(target), "--meshes"]
        args += ["--embeddings", str(models["image"][0]), "--embeddings", str(models["shape"][0])]
        args += ["--plate", info["plate"], "--well", well, "--no-progress"]
        assert main(args) == 0
        frames.append(pd.read_parquet(target / "objects.parquet"))
    df = pd.concat(frames, ignore_index=True)
    assert df["Metadata_Well"].nunique() == 2
    return df


def _mesh(columns):
    return [c for c in columns if c.startswith("Nuclei_AreaShape_Mesh")]


def _embedding(columns):
    return [c for c in columns if c.startswith("Embedding_")]


def _no_nan(frame, columns):
    values = frame[list(columns)].to_numpy(dtype=float)
    assert np.all(np.isfinite(values)), [c for c in columns if not np.isfinite(frame[c]).all()]


def test_table_naming_is_inferable(objects):
    """Every column is metadata, an inferred compartment feature, or an embedding."""
    inferred = infer_cp_features(objects)
    meta = infer_cp_features(objects, metadata=True)
    emb = _embedding(objects.columns)
    assert len(_mesh(objects.columns)) >= 10 and set(_mesh(objects.columns)) <= set(inferred)
    assert {c for c in emb if c.startswith("Embedding_Image_")} and {
        c for c in emb if c.startswith("Embedding_Shape_")
    }
    assert len(emb) == 64
    assert set(inferred) == {c for c in objects.columns if c.startswith("Nuclei_")}
    assert sorted(meta + inferred + emb) == sorted(objects.columns)
    _no_nan(objects, inferred + emb)  # any NaN below comes from processing, not from us


def test_infer_processes_mesh_descriptors(objects):
    """aggregate, normalize (standardize, mad_robustize) and feature_select with ``infer``."""
    inferred = infer_cp_features(objects)
    volume = "Nuclei_AreaShape_MeshVolume"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our table needs no workaround
        profiles = aggregate(objects, strata=STRATA, features="infer", operation="median")
        standard = normalize(objects, features="infer", meta_features="infer", samples="all")
        robust = normalize(
            objects, features="infer", meta_features="infer", samples="all", method="mad_robustize"
        )
        selected = feature_select(standard, features="infer", operation=SELECT)
    assert list(profiles.columns) == STRATA + inferred and profiles.shape[0] == 2
    _no_nan(profiles, inferred)
    well = objects["Metadata_Well"].iloc[-1]
    got = profiles.set_index("Metadata_Well").loc[well, volume]
    np.testing.assert_allclose(got, objects.loc[objects["Metadata_Well"] == well, volume].median())
    for frame in (standard, robust):
        assert frame.shape[0] == objects.shape[0] and set(_mesh(objects.columns)) <= set(frame)
        _no_nan(frame, inferred)
    np.testing.assert_allclose([standard[volume].mean(), standard[volume].std(ddof=0)], [0, 1], atol=1e-9)
    np.testing.assert_allclose(robust[volume].median(), 0, atol=1e-9)
    kept = [c for c in selected.columns if c in inferred]
    assert 0 < len(kept) < len(inferred) and _mesh(kept)
    _no_nan(selected, kept)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="pycytominer infer_cp_features only infers Cells_/Nuclei_/Cytoplasm_ (Image_) columns; "
    "Embedding_Image_*/Embedding_Shape_* have no compartment prefix, so aggregate and normalize "
    "with features='infer' drop them (issue 5 naming)",
)
def test_infer_keeps_embeddings(objects):
    emb = _embedding(objects.columns)
    profiles = aggregate(objects, strata=STRATA, features="infer")
    standard = normalize(objects, features="infer", meta_features="infer", samples="all")
    assert set(emb) <= set(profiles.columns) and set(emb) <= set(standard.columns)


def test_infer_drops_embeddings_today(objects):
    """Pins the behaviour the xfail above describes, so a change of either side is noticed."""
    profiles = aggregate(objects, strata=STRATA, features="infer")
    standard = normalize(objects, features="infer", meta_features="infer", samples="all")
    passed = feature_select(objects, features="infer", operation=SELECT)
    assert not _embedding(profiles.columns) and not _embedding(standard.columns)
    # feature_select only drops what it selects against: embeddings pass through untouched
    assert _embedding(passed.columns) == _embedding(objects.columns)


def test_explicit_feature_list_processes_embeddings(objects):
    """pycytominer's route for non-CellProfiler columns: pass them in ``features=``."""
    emb = _embedding(objects.columns)
    features = infer_cp_features(objects) + emb
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profiles = aggregate(objects, strata=STRATA, features=features, operation="median")
        standard = normalize(objects, features=features, meta_features="infer", samples="all")
        robust = normalize(
            objects, features=features, meta_features="infer", samples="all", method="mad_robustize"
        )
        selected = feature_select(standard, features=features, operation=SELECT)
    assert list(profiles.columns) == STRATA + features
    _no_nan(profiles, features)
    by_well = objects.groupby("Metadata_Well")[emb].median()
    got = profiles.set_index("Metadata_Well").loc[by_well.index, emb]
    np.testing.assert_allclose(got, by_well, rtol=1e-6)
    for frame in (standard, robust):
        assert frame.shape == objects.shape
        _no_nan(frame, features)
    varying = [c for c in emb if objects[c].std(ddof=0) > 1e-6 * (objects[c].abs().max() + 1e-12)]
    assert len(varying) > len(emb) // 2
    np.testing.assert_allclose(standard[varying].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(standard[varying].std(ddof=0), 1, atol=1e-4)
    np.testing.assert_allclose(robust[emb].median(), 0, atol=1e-5)
    kept = _embedding(selected.columns)
    # processed, not passed through: correlated embedding dimensions are removed, both kinds remain
    assert 0 < len(kept) < len(emb)
    assert any(c.startswith("Embedding_Image_") for c in kept)
    assert any(c.startswith("Embedding_Shape_") for c in kept)
    _no_nan(selected, [c for c in selected.columns if c in features])
