"""Tests of OME-NGFF metadata validation.

The official NGFF 0.4 / 0.5 validation suites, the spec's examples, the
ome-zarr-models fixtures and a real IDR store are read from ../shared/data;
their tests are skipped where that folder is missing.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from ome_zarr_models.v05.image import ImageAttrs as ImageAttrsV05
from ome_zarr_models.v05.image_label import ImageLabelAttrs as ImageLabelAttrsV05
from pydantic import ValidationError

from dls_microscopy.errors import MetadataError
from dls_microscopy.io.ngff_metadata import detect_ngff_version, validate_ngff_attrs

# Warnings of ome-zarr-models must come out as log records, never as warnings.  pydantic's
# deprecation warnings are napari's (its autouse Qt fixture imports it when this module runs alone).
pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SPEC = DATA / "ngff_spec"
FIXTURES = DATA / "ome_zarr_models_py_fixtures" / "tests" / "data"
IDR = DATA / "omezarr_idr0062A_6001240" / "6001240_labels.zarr"
LOGGER = "dls_microscopy.io.ngff_metadata"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_example(path: Path) -> Any:
    """An example of the spec: JSON with whole-line ``//`` comments (stripped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads("\n".join(line for line in lines if not line.lstrip().startswith("//")))


def _group_attrs(document: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a whole ``zarr.json`` document (0.5 examples), else itself."""
    return document["attributes"] if "zarr_format" in document else document


# -- the spec's own validation suites -----------------------------------------------


def _suite_params() -> list[Any]:
    """One case per test of every ``ngff_spec/{0.4,0.5}/tests/*_suite.json``.

    The file name gives the kind (image, label, plate, well) and the strictness
    (``strict_`` prefix); the ids read ``<version>/<suite>/<formerly>``.
    """
    params: list[Any] = []
    seen: set[str] = set()
    for version in ("0.4", "0.5"):
        for suite in sorted((SPEC / version / "tests").glob("*_suite.json")):
            stem = suite.name.removesuffix("_suite.json")
            for index, test in enumerate(_read_json(suite)["tests"]):
                name = test.get("formerly") or test.get("description") or f"case{index}"
                case_id = f"{version}/{stem}/{name}"
                if case_id in seen:  # e.g. 0.4 plate suite has "duplicate_rows" twice
                    case_id += f"#{index}"
                seen.add(case_id)
                kind = stem.removeprefix("strict_")
                strict = stem.startswith("strict_")
                params.append(pytest.param(version, kind, strict, test["data"], test["valid"], id=case_id))
    return params


SUITE_PARAMS = _suite_params() if SPEC.is_dir() else []


@pytest.mark.shared_data
@pytest.mark.parametrize(("version", "kind", "strict", "data", "valid"), SUITE_PARAMS)
def test_spec_suite_case(shared_data, version, kind, strict, data, valid):
    if valid:
        validate_ngff_attrs(data, kind=kind, version=version, strict=strict)
    else:
        with pytest.raises(MetadataError, match=r"\S"):
            validate_ngff_attrs(data, kind=kind, version=version, strict=strict)


@pytest.mark.shared_data
def test_every_suite_is_collected(shared_data):
    suites = {(p.parent.parent.name, p.name) for p in SPEC.glob("0.[45]/tests/*_suite.json")}
    assert len(suites) == 16
    assert len(SUITE_PARAMS) == sum(len(_read_json(SPEC / v / "tests" / name)["tests"]) for v, name in suites)


# -- the spec's examples ------------------------------------------------------------

# Each examples folder has a .config.json naming the schema its examples satisfy.
SCHEMA_KINDS = {
    "bf2raw": "bioformats2raw",
    "image": "image",
    "label": "label",
    "plate": "plate",
    "well": "well",
}
SCHEMA_SKIPS = {"ome": "the OME/ group's 'series' list: not a group kind validated here"}


def _example_params() -> list[Any]:
    params: list[Any] = []
    for version in ("0.4", "0.5"):
        for config in sorted((SPEC / version / "examples").glob("*/.config.json")):
            schema = Path(_read_json(config)["schema"]).stem  # e.g. "strict_plate"
            strict, name = schema.startswith("strict_"), schema.removeprefix("strict_")
            for path in sorted(config.parent.glob("[!.]*.json")):
                case_id = f"{version}/{config.parent.name}/{path.stem}"
                if name in SCHEMA_SKIPS:
                    mark = pytest.mark.skip(reason=SCHEMA_SKIPS[name])
                    params.append(pytest.param(version, path, None, False, id=case_id, marks=mark))
                    continue
                kind = SCHEMA_KINDS.get(name)  # None fails the test: a schema not mapped yet
                params.append(pytest.param(version, path, kind, strict, id=case_id))
                if kind == "bioformats2raw" and "plate" in path.read_text(encoding="utf-8"):
                    params.append(pytest.param(version, path, "plate", strict, id=case_id + "+plate"))
    return params


@pytest.mark.shared_data
@pytest.mark.parametrize(("version", "path", "kind", "strict"), _example_params() if SPEC.is_dir() else [])
def test_spec_example_validates(shared_data, version, path, kind, strict):
    assert kind is not None, f"no kind known for the examples in {path.parent}"
    attrs = _group_attrs(_read_example(path))
    assert detect_ngff_version(attrs) in (version, None)
    validate_ngff_attrs(attrs, kind=kind, version=version, strict=strict)


# -- ome-zarr-models fixtures ---------------------------------------------------------

# (file under tests/data, version, kind, key wrapping a fragment or None)
FIXTURE_CASES = [
    ("spec_example_multiscales.json", "0.4", "image", None),
    ("examples/v04/multiscales_example.json", "0.4", "image", None),
    ("examples/v04/image_label_example.json", "0.4", "label", None),
    ("examples/v04/bioformats2raw_example.json", "0.4", "bioformats2raw", None),
    ("examples/v04/bioformats2raw_example.json", "0.4", "plate", None),
    ("examples/v04/plate_example_1.json", "0.4", "plate", "plate"),  # the "plate" value only
    ("examples/v04/plate_example_2.json", "0.4", "plate", "plate"),
    ("examples/v04/well_example_1.json", "0.4", "well", None),
    ("examples/v04/well_example_2.json", "0.4", "well", None),
    ("examples/v04/hcs_example.ome.zarr/.zattrs", "0.4", "plate", None),
    ("examples/v04/hcs_example.ome.zarr/B/03/.zattrs", "0.4", "well", None),
    ("examples/v04/hcs_example.ome.zarr/B/03/0/.zattrs", "0.4", "image", None),
    ("examples/v05/image_example.json", "0.5", "image", None),
    ("examples/v05/labels_image_example.json", "0.5", "image", None),
    ("examples/v05/labels_example.json", "0.5", "labels", None),
    ("examples/v05/image_label_example.json", "0.5", "label", None),
    ("examples/v05/bioformats2raw_example.json", "0.5", "bioformats2raw", None),
    ("examples/v05/bioformats2raw_example.json", "0.5", "plate", None),
    ("examples/v05/hcs_example.json", "0.5", "plate", None),
    ("examples/v05/plate_example_1.json", "0.5", "plate", None),
    ("examples/v05/plate_example_2.json", "0.5", "plate", None),
    ("examples/v05/well_example.json", "0.5", "well", None),
]


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "version", "kind", "wrap"),
    [pytest.param(*case, id=f"{case[0]}-{case[2]}") for case in FIXTURE_CASES],
)
def test_ome_zarr_models_fixture_validates(shared_data, name, version, kind, wrap):
    attrs = _read_json(FIXTURES / name)
    if wrap is not None:
        attrs = {wrap: attrs}
    validate_ngff_attrs(attrs, kind=kind, version=version)


@pytest.mark.shared_data
def test_omero_fragment_fixture_validates(shared_data):
    # examples/v04/omero_example.json is the value of an "omero" key alone
    attrs = {**_image_v04(), "omero": _read_json(FIXTURES / "examples/v04/omero_example.json")}
    validate_ngff_attrs(attrs, kind="image")
    for version in ("0.4", "0.5"):
        broken = _image_v04() if version == "0.4" else _image_v05()
        omero = _read_json(FIXTURES / "examples/v04/omero_example.json")
        omero["channels"][0]["window"]["end"] = "1500"
        broken.get("ome", broken)["omero"] = omero
        with pytest.raises(MetadataError, match=r"omero\.channels\[0\]\.window\.end"):
            validate_ngff_attrs(broken, kind="image")


@pytest.mark.shared_data
def test_fixture_without_ome_version_is_rejected(shared_data):
    # ome-zarr-models' own tests expect this 0.5 image without ome.version to fail
    attrs = _read_json(FIXTURES / "examples/v05/image_no_version_example.json")
    with pytest.raises(MetadataError, match="version"):
        validate_ngff_attrs(attrs, kind="image", version="0.5")


@pytest.mark.shared_data
def test_fixture_of_unsupported_version_is_rejected(shared_data):
    attrs = _read_json(FIXTURES / "examples/v06/image_example.json")
    assert detect_ngff_version(attrs) == "0.6.dev4"
    with pytest.raises(MetadataError, match=r"'0\.6\.dev4' is not supported.*0\.4, 0\.5"):
        validate_ngff_attrs(attrs, kind="image")


# -- a real NGFF 0.5 store (IDR 6001240, written by omero-zarr) -----------------------


@pytest.mark.shared_data
def test_idr_image_validates(shared_data):
    attrs = _read_json(IDR / "zarr.json")["attributes"]
    assert detect_ngff_version(attrs) == "0.5"
    model = validate_ngff_attrs(attrs, kind="image", path=IDR)
    assert isinstance(model, ImageAttrsV05)
    multiscale = model.multiscales[0]
    assert [axis.name for axis in multiscale.axes] == ["c", "z", "y", "x"]
    assert [dataset.path for dataset in multiscale.datasets] == ["0", "1", "2"]


@pytest.mark.shared_data
def test_idr_label_image_validates(shared_data):
    attrs = _read_json(IDR / "labels" / "0" / "zarr.json")["attributes"]
    model = validate_ngff_attrs(attrs, kind="label")
    assert isinstance(model, ImageLabelAttrsV05)
    assert model.image_label is not None and len(model.image_label.colors) > 0


@pytest.mark.shared_data
def test_idr_labels_group_without_version(shared_data, caplog):
    # omero-zarr writes {"ome": {"labels": ["0"]}}: no version, inherited from the image
    attrs = _read_json(IDR / "labels" / "zarr.json")["attributes"]
    assert detect_ngff_version(attrs) is None
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        model = validate_ngff_attrs(attrs, kind="labels", version="0.5")
    assert model.labels == ["0"]
    assert "ome.version" in caplog.text
    with pytest.raises(MetadataError, match="version"):
        validate_ngff_attrs(attrs, kind="labels", version="0.5", strict=True)


# -- detect_ngff_version -------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"ome": {"version": "0.5", "multiscales": []}}, "0.5"),
        ({"ome": {"version": "0.6"}}, "0.6"),
        ({"multiscales": [{"version": "0.4", "axes": []}]}, "0.4"),
        ({"plate": {"version": "0.4"}}, "0.4"),
        ({"well": {"images": [], "version": "0.3"}}, "0.3"),
        ({"image-label": {"version": "0.4"}}, "0.4"),
        ({"multiscales": [{"axes": []}], "image-label": {"version": "0.4"}}, "0.4"),
        ({"multiscales": [{"axes": []}]}, None),
        ({"ome": {"labels": ["0"]}}, None),
        ({"ome": "0.5"}, None),
        ({"ome": {"version": 0.5}}, None),
        ({"multiscales": "not a list"}, None),
        ({"bioformats2raw.layout": 3}, None),
        ({}, None),
        ({"foo": 1}, None),
        (["not", "a", "mapping"], None),
    ],
)
def test_detect_ngff_version(attrs, expected):
    assert detect_ngff_version(attrs) == expected


# -- messages and behaviour on small hand-made documents -----------------------------


def _image_v04() -> dict[str, Any]:
    return {
        "multiscales": [
            {
                "version": "0.4",
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}
                ],
            }
        ]
    }


def _image_v05() -> dict[str, Any]:
    multiscale = _image_v04()["multiscales"][0]
    del multiscale["version"]
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}


def _plate(path: str = "A/1") -> dict[str, Any]:
    return {
        "rows": [{"name": "A"}],
        "columns": [{"name": "1"}],
        "wells": [{"path": path, "rowIndex": 0, "columnIndex": 0}],
    }


def test_valid_hand_made_documents():
    validate_ngff_attrs(_image_v04(), kind="image")
    validate_ngff_attrs(_image_v05(), kind="image")
    validate_ngff_attrs({"plate": {**_plate(), "version": "0.4"}}, kind="plate")


def test_missing_axes_message_names_axes():
    attrs = _image_v04()
    del attrs["multiscales"][0]["axes"]
    with pytest.raises(MetadataError) as info:
        validate_ngff_attrs(attrs, kind="image")
    message = str(info.value)
    assert message.startswith("NGFF 0.4 image metadata invalid: multiscales[0].axes")
    assert "required" in message
    assert isinstance(info.value.__cause__, ValidationError)


def test_duplicate_axes_message():
    attrs = _image_v05()
    attrs["ome"]["multiscales"][0]["axes"][1]["name"] = "y"
    with pytest.raises(MetadataError, match=r"multiscales\[0\]\.axes: axis names must be unique"):
        validate_ngff_attrs(attrs, kind="image")


def test_message_names_the_path():
    attrs = _image_v04()
    del attrs["multiscales"][0]["datasets"]
    with pytest.raises(MetadataError) as info:
        validate_ngff_attrs(attrs, kind="image", path="stores/a.zarr")
    assert str(info.value).startswith(f"{Path('stores/a.zarr')}: NGFF 0.4 image metadata invalid")
    assert info.value.path == Path("stores/a.zarr")


@pytest.mark.parametrize("explicit", [False, True])
def test_unsupported_version_message(explicit):
    attrs = _image_v04()
    attrs["multiscales"][0]["version"] = "0.1"
    with pytest.raises(MetadataError, match=r"'0\.1' is not supported \(supported: 0\.4, 0\.5\)"):
        validate_ngff_attrs(attrs, kind="image", version="0.1" if explicit else None)


def test_undeclared_version_must_be_given():
    attrs = _image_v04()
    del attrs["multiscales"][0]["version"]
    with pytest.raises(MetadataError, match="version="):
        validate_ngff_attrs(attrs, kind="image")
    validate_ngff_attrs(attrs, kind="image", version="0.4")


def test_declared_version_must_match_requested():
    with pytest.raises(MetadataError, match=r"declare OME-NGFF version '0\.5', not '0\.4'"):
        validate_ngff_attrs(_image_v05(), kind="image", version="0.4")


def test_v05_needs_ome_namespace():
    with pytest.raises(MetadataError, match="'ome'"):
        validate_ngff_attrs(_image_v05()["ome"], kind="image", version="0.5")


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind") as info:
        validate_ngff_attrs(_image_v04(), kind="picture")  # type: ignore[arg-type]
    assert not isinstance(info.value, MetadataError)
    with pytest.raises(MetadataError, match="JSON object"):
        validate_ngff_attrs([], kind="image", version="0.4")  # type: ignore[arg-type]


def test_library_warning_becomes_log_record(caplog):
    # ome-zarr-models warns (ValidationWarning) on a 0.5 plate without plate.version
    attrs = {"ome": {"version": "0.5", "plate": _plate()}}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        validate_ngff_attrs(attrs, kind="plate")
    assert any("version" in r.getMessage() and r.name == LOGGER for r in caplog.records)


def test_v04_scale_length_tolerated_unless_strict(caplog):
    attrs = _image_v04()
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1, 1, 1]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        validate_ngff_attrs(attrs, kind="image")
    assert "scale has 3 values for 2 axes" in caplog.text
    with pytest.raises(MetadataError, match="scale has 3 values for 2 axes"):
        validate_ngff_attrs(attrs, kind="image", strict=True)
    v05 = _image_v05()
    v05["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1]
    with pytest.raises(MetadataError, match="axes"):  # 0.5 is checked by the models
        validate_ngff_attrs(v05, kind="image")


def test_v04_well_path_order(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        validate_ngff_attrs({"plate": _plate("1/A")}, kind="plate", version="0.4")
    assert "column before the row" in caplog.text
    with pytest.raises(MetadataError, match="expected 'A/1'"):
        validate_ngff_attrs({"plate": _plate("A/2")}, kind="plate", version="0.4")
    with pytest.raises(MetadataError, match="rowIndex"):
        bad_index = _plate()
        bad_index["wells"][0]["rowIndex"] = 3
        validate_ngff_attrs({"plate": bad_index}, kind="plate", version="0.4")


@pytest.mark.parametrize(
    ("well", "message"),
    [
        ({"images": []}, "at least one"),
        ({"images": [{"path": "0"}, {"path": "0"}]}, "duplicate"),
        ({"images": [{"path": "0", "acquisition": "0"}]}, "must be an integer"),
    ],
)
def test_v05_well_rules(well, message):
    # the 0.5 well suite's invalid cases lack the "ome" key: the same rules, wrapped
    with pytest.raises(MetadataError, match=message):
        validate_ngff_attrs({"ome": {"version": "0.5", "well": well}}, kind="well")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["wells"].append(dict(p["wells"][0])), "listed twice"),
        (lambda p: p.update(rows=[]), "rows"),
        (lambda p: p.update(acquisitions=[{"id": 0, "endtime": -5}]), "endtime: must be >= 0"),
        (lambda p: p.update(acquisitions=[{"id": "1"}]), "id: must be an integer"),
    ],
    ids=["duplicate_wells", "empty_rows", "negative_endtime", "string_id"],
)
def test_v05_plate_rules(change, message):
    plate = _plate()
    change(plate)
    with pytest.raises(MetadataError, match=message):
        validate_ngff_attrs({"ome": {"version": "0.5", "plate": plate}}, kind="plate")


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ({"color": "FF00", "window": {"min": 0, "max": 1, "start": 0, "end": 1}}, "color"),
        ({"color": "FF0000", "window": {"min": 0, "max": 1, "start": 0}}, "window.end"),
        ({"color": "FF0000", "window": {"min": 0, "max": True, "start": 0, "end": 1}}, "max"),
        ({"color": "FF0000"}, "window"),
    ],
)
def test_omero_channel_rules(channel, message):
    for attrs in (_image_v04(), _image_v05()):
        target = attrs.get("ome", attrs)
        target["omero"] = {"channels": [copy.deepcopy(channel)]}
        with pytest.raises(MetadataError, match=message):
            validate_ngff_attrs(attrs, kind="image")


def test_label_kind():
    label = {"colors": [{"label-value": 1, "rgba": [255, 0, 0, 255]}]}
    only_label = validate_ngff_attrs({"ome": {"version": "0.5", "image-label": label}}, kind="label")
    assert only_label.image_label.colors[0].label_value == 1
    with_image = _image_v05()
    with pytest.raises(MetadataError, match="image-label"):
        validate_ngff_attrs(with_image, kind="label")
    with_image["ome"]["image-label"] = label
    assert isinstance(validate_ngff_attrs(with_image, kind="label"), ImageLabelAttrsV05)
    with pytest.raises(MetadataError, match="label-value: must be an integer"):
        label["properties"] = [{"label-value": "1"}]
        validate_ngff_attrs({"image-label": label}, kind="label", version="0.4")


def test_strict_requires_should_level_keys():
    attrs = _image_v05()
    validate_ngff_attrs(attrs, kind="image")
    with pytest.raises(MetadataError, match=r"multiscales\[0\]: 'name' is required \(strict\)"):
        validate_ngff_attrs(attrs, kind="image", strict=True)
    attrs["ome"]["multiscales"][0].update(name="a", type="gaussian", metadata={})
    validate_ngff_attrs(attrs, kind="image", strict=True)
