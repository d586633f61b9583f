"""The pipeline configuration: good and bad files, line numbers, schema, round trip."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from dls_microscopy.errors import ConfigError, InputError
from dls_microscopy.pipeline.config import (
    SCHEMA_PATH,
    PipelineConfig,
    config_json_schema,
    dump_config,
    load_config,
    parse_size,
)
from dls_microscopy.sample_data import __file__ as sample_init

EXAMPLE = __import__("pathlib").Path(sample_init).with_name("pipeline.yaml")

GOOD = """\
version: 1
input:
  path: images/*.ome.tif
  channels: [DAPI, 1]
output:
  path: out
steps:
  segment:
    params:
      diameter_um: 6
  features: {}
"""


def write(tmp_path, text, name="pipeline.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_config_defaults_and_paths(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.input.is_glob()
    assert cfg.input.path == str(tmp_path / "images/*.ome.tif")
    assert cfg.output.path == str(tmp_path / "out")
    assert cfg.input.channels == ["DAPI", 1]
    assert cfg.steps.names() == ["segment", "features"]
    assert cfg.steps.segment.method == "watershed"
    assert cfg.compute.memory_budget_bytes == 2 * 10**9
    assert cfg.compute.cluster.kind == "local" and cfg.compute.cluster.cores == 1
    assert cfg.seed == 0


def test_example_config_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.steps.names() == ["segment", "mesh", "features"]
    assert cfg.input.path.endswith("synthetic_plate.ome.zarr")


def test_yaml_round_trip(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    again = load_config(dump_config(cfg, tmp_path / "again.yaml"))
    assert again == cfg


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        # unknown key in a section
        (GOOD.replace("  channels:", "  chanels:"), "input.chanels", 4, "unknown key"),
        # unknown segmenter parameter: named with its full dotted key and line
        (GOOD.replace("diameter_um: 6", "diameter: 6"), "steps.segment.params.diameter", 10, "unknown"),
        # wrong type of a segmenter parameter
        (
            GOOD.replace("diameter_um: 6", "diameter_um: big"),
            "steps.segment.params.diameter_um",
            10,
            "number",
        ),
        # wrong type in a section
        (GOOD + "compute:\n  workers: many\n", "compute.workers", 13, "integer"),
        (GOOD + "compute:\n  memory_budget: lots\n", "compute.memory_budget", 13, "memory size"),
        (GOOD + "compute:\n  cluster:\n    walltime: '1h'\n", "compute.cluster.walltime", 14, "HH:MM:SS"),
        # accepted, then Slurm's to judge (99:99:99) or read as no limit (00:00:00) (HPC QA)
        (
            GOOD + "compute:\n  cluster:\n    walltime: '99:99:99'\n",
            "compute.cluster.walltime",
            14,
            "59 minutes",
        ),
        (
            GOOD + "compute:\n  cluster:\n    walltime: '00:00:00'\n",
            "compute.cluster.walltime",
            14,
            "longer than",
        ),
        (GOOD + "compute:\n  cluster:\n    kind: lsf\n", "compute.cluster.kind", 14, "slurm"),
        (
            GOOD + "compute:\n  cluster:\n    start_timeout: 0\n",
            "compute.cluster.start_timeout",
            14,
            "greater than 0",
        ),
        (
            GOOD + "compute:\n  cluster:\n    kind: slurm\n    start_timeout: 30m\n",
            "compute.cluster.start_timeout",
            15,
            "a number of seconds, e.g. 1800 for 30 minutes, got '30m'",  # filled in (was "{value!r}")
        ),
        (
            GOOD + "compute:\n  cluster:\n    start_timeout: .inf\n",
            "compute.cluster.start_timeout",
            14,
            "finite",
        ),
        (GOOD.replace("version: 1", "version: 2"), "version", 1, "1"),
        (GOOD.replace("  segment:", "  segmnt:"), "steps.segmnt", 8, "unknown key"),
        (
            GOOD.replace("method: x\n", "").replace("  segment:\n", "  segment:\n    method: nope\n"),
            "steps.segment.method",
            9,
            "unknown segmenter 'nope' (installed:",  # the name filled in (was "{method!r}")
        ),
        (
            GOOD.replace("diameter_um: 6", "diameter_um: 6\n    model: m.pt"),
            "steps.segment.model",
            11,
            "segmenter 'watershed' takes no",
        ),
        (GOOD.replace("  channels:", "  level: true\n  channels:"), "input.level", 4, "integer"),
        # missing required key
        (GOOD.replace("output:\n  path: out\n", ""), "output", None, "missing"),
    ],
)
def test_bad_config_names_key_and_line(tmp_path, text, key, line, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    err = info.value
    assert isinstance(err, InputError)
    assert str(p) in str(err)
    keys = {k: (ln, msg) for k, ln, msg in err.issues}
    assert key in keys, err.issues
    if line is not None:
        assert keys[key][0] == line
        assert f"line {line}: {key}:" in str(err)
    assert words in keys[key][1]
    assert not re.search(r"\{\w+(!r)?\}", str(err)), "a message template left unfilled"


def test_yaml_syntax_and_duplicate_keys(tmp_path):
    with pytest.raises(ConfigError, match="line 3: invalid YAML"):
        load_config(write(tmp_path, "input:\n  path: a\n  - b\n"))
    with pytest.raises(ConfigError, match="line 7: output: key given twice"):
        load_config(write(tmp_path, GOOD.replace("steps:", "output:\n  path: again\nsteps:")))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="empty"):
        load_config(write(tmp_path, "\n"))
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_steps_needing_labels(tmp_path):
    text = GOOD.replace("  segment:\n    params:\n      diameter_um: 6\n", "")
    with pytest.raises(ConfigError, match="need labels"):
        load_config(write(tmp_path, text))
    cfg = load_config(write(tmp_path, text.replace("  path: images", "  labels: nuclei\n  path: images")))
    assert cfg.steps.segment is None and cfg.input.labels == "nuclei"
    with pytest.raises(ConfigError, match="no step"):
        load_config(write(tmp_path, GOOD.split("steps:")[0] + "steps: {}\n"))


def test_model_file_only_for_segmenters_that_take_one(tmp_path):
    text = GOOD.replace("    params:", "    model: weights.pt\n    params:")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.issues[0][:2] == ("steps.segment.model", 9)


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1e9") == 10**9
    assert parse_size(123) == 123
    with pytest.raises(ValueError, match="memory size"):
        parse_size("2 parsecs")


def test_published_schema_is_up_to_date():
    published = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert published == config_json_schema(), (
        "regenerate with: dls-microscopy config schema > src/dls_microscopy/pipeline/pipeline.schema.json"
    )
    assert published["additionalProperties"] is False
    assert set(published["required"]) == {"input", "output", "steps"}


def test_schema_accepts_the_example():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), config_json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"input": {"path": "x"}, "output": {"path": "y"}, "steps": {}, "bogus": 1}, config_json_schema()
        )


def test_model_assignment_is_validated():
    cfg = PipelineConfig.model_validate(
        json.loads(json.dumps({"input": {"path": "a"}, "output": {"path": "b"}, "steps": {"segment": {}}}))
    )
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        cfg.compute.workers = 0


def test_a_folder_given_for_the_configuration_says_what_run_takes(tmp_path):
    from dls_microscopy.errors import InputNotFoundError

    with pytest.raises(InputError, match="this is a folder; 'run' takes a pipeline configuration"):
        load_config(tmp_path)
    with pytest.raises(InputNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_an_image_given_for_the_configuration_says_what_run_takes(tmp_path):
    """It printed "'utf-8' codec can't decode byte 0xb6 in position 78" (QA)."""
    image = tmp_path / "stack.tif"
    image.write_bytes(b"II*\x00\x08\x00\x00\x00\xb6\xff\x00\x10")
    with pytest.raises(ConfigError, match=r"stack.tif: not a pipeline configuration: a YAML text") as err:
        load_config(image)
    assert "codec" not in str(err.value)
