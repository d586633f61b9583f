"""Validation of written stores is skipped only for metadata byte-identical to a store that passed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dls_microscopy.errors import DlsError
from dls_microscopy.io import _validation_cache
from dls_microscopy.io._validation_cache import metadata_snapshot, validate_once
from dls_microscopy.io.zarr_write import write_label_image


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch):
    monkeypatch.setattr(_validation_cache, "_validated", type(_validation_cache._validated)())


def _labels(folder, spacing=(1.0, 0.5, 0.5)):
    folder.mkdir(parents=True, exist_ok=True)
    data = np.arange(4 * 6 * 6, dtype=np.uint32).reshape(4, 6, 6)
    return write_label_image(data, folder / "labels.zarr", spacing=spacing)


def test_same_metadata_is_validated_once_and_other_metadata_again(tmp_path):
    a, b = _labels(tmp_path / "a"), _labels(tmp_path / "b")
    c = _labels(tmp_path / "c", spacing=(2.0, 0.5, 0.5))
    calls = []
    for path in (a, b, c, a):
        validate_once(path, "check", lambda p=path: calls.append(p))
    assert calls == [a, c]  # b is byte-identical to a (same shape, spacing, name); c is not
    validate_once(a, "another check", lambda: calls.append("other"))
    assert calls[-1] == "other"  # the kind of check is part of the key


def test_snapshot_sees_attributes_and_members_but_not_chunks(tmp_path):
    root = _labels(tmp_path / "one")
    before = metadata_snapshot(root)
    (root / "0" / "c" / "extra").write_bytes(b"chunk bytes are not metadata")
    assert metadata_snapshot(root) == before
    doc = json.loads((root / "zarr.json").read_text())
    doc["attributes"]["note"] = 1
    (root / "zarr.json").write_text(json.dumps(doc))
    assert metadata_snapshot(root) != before
    (root / "zarr.json").write_text(json.dumps({**doc, "attributes": doc["attributes"] | {"note": 2}}))
    changed = metadata_snapshot(root)
    (root / "1").mkdir()
    assert metadata_snapshot(root) != changed  # a new member folder of the group


def test_failures_are_not_remembered(tmp_path):
    root = _labels(tmp_path / "one")

    def bad():
        raise ValueError("invalid")

    for _ in range(2):
        with pytest.raises(ValueError):
            validate_once(root, "check", bad)


def test_written_label_image_still_fails_validation_when_broken(tmp_path, monkeypatch):
    root = _labels(tmp_path / "one")  # passes, and is remembered
    doc = json.loads((root / "zarr.json").read_text())
    doc["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"] = "missing"
    (root / "zarr.json").write_text(json.dumps(doc))
    from dls_microscopy.io.zarr_write import _validate_label_root

    with pytest.raises(DlsError, match="failed validation"):
        _validate_label_root(root, "0.5")
