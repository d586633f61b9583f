"""The documentation site: generated references are complete, and ``mkdocs build --strict`` passes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _typer_paths(app: object, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Command paths from the typer app's own registrations (not from click's tree)."""
    found = {prefix}
    for info in app.registered_commands:  # type: ignore[attr-defined]
        if not info.hidden:
            name = info.name or info.callback.__name__.replace("_", "-")
            found.add((*prefix, name))
    for group in app.registered_groups:  # type: ignore[attr-defined]
        sub = group.typer_instance
        name = group.name or sub.info.name
        found |= _typer_paths(sub, (*prefix, name))
    return found


def test_cli_reference_has_every_command_and_option() -> None:
    import typer.main

    from dls_microscopy.cli import app

    gen_cli = _load("gen_cli")
    text = gen_cli.render_cli_markdown()
    expected = _typer_paths(app, ("dls-microscopy",))
    assert len(expected) > 8
    headings = set(re.findall(r"^#+ `([^`]+)` \{ #", text, flags=re.MULTILINE))
    assert headings == {" ".join(p) for p in expected}
    # every option of every command is in the reference, in its command's section
    sections = dict(
        zip(
            re.findall(r"^#+ `([^`]+)`", text, flags=re.MULTILINE),
            re.split(r"^#+ `[^`]+`.*$", text, flags=re.MULTILINE)[1:],
            strict=True,
        )
    )
    for entry in gen_cli.walk(typer.main.get_command(app)):
        for param in entry.command.params:
            names = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
            for name in names:
                shown = name.upper() if not name.startswith("-") else name
                assert f"`{shown}`" in sections[entry.name], (entry.name, name)


def _schema_keys(node: dict, root: dict, prefix: str) -> set[str]:
    keys: set[str] = set()
    for name, sub in node.get("properties", {}).items():
        dotted = f"{prefix}.{name}" if prefix else name
        keys.add(dotted)
        refs = [sub, *sub.get("anyOf", [])]
        for ref in (r["$ref"] for r in refs if "$ref" in r):
            keys |= _schema_keys(root["$defs"][ref.rsplit("/", 1)[-1]], root, dotted)
    return keys


def test_config_reference_has_every_key_of_the_schema() -> None:
    from dls_microscopy.pipeline.config import SCHEMA_PATH
    from dls_microscopy.segment import segmenter_names
    from dls_microscopy.segment.base import segmenters

    gen_config = _load("gen_config")
    text = gen_config.render_config_markdown()
    schema = json.loads(Path(SCHEMA_PATH).read_text(encoding="utf-8"))
    keys = _schema_keys(schema, schema, "")
    assert {"input.path", "steps.segment.params", "compute.cluster.walltime"} <= keys
    rows = set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE))
    assert keys <= rows, sorted(keys - rows)
    for name in segmenter_names():  # the parameters of every installed segmenter
        for param in segmenters().get(name).Params.model_fields:
            assert f"steps.segment.params.{param}" in rows
    # descriptions come from the models' field docstrings: none is empty
    empty = [line for line in text.splitlines() if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not empty, empty


def test_images_are_used_and_exist() -> None:
    pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
    used = set(re.findall(r"\(images/([^)\s]+)\)", pages))
    present = {p.name for p in (DOCS / "images").glob("*.png")}
    assert used and used == present, used ^ present
    for name in present:  # real window grabs, not placeholders
        assert (DOCS / "images" / name).stat().st_size > 20_000, name


@pytest.mark.skipif(importlib.util.find_spec("mkdocstrings") is None, reason="dev extra: mkdocstrings")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert 'id="dls-microscopy-segment"' in cli and 'id="dls-microscopy-config-validate"' in cli
    config = (site / "pipeline-config" / "index.html").read_text(encoding="utf-8")
    assert 'id="key-compute-cluster"' in config and "steps.segment.params.diameter_um" in config
    from dls_microscopy.pipeline.config import SCHEMA_PATH

    published = site / "reference" / "pipeline.schema.json"
    assert published.read_bytes() == Path(SCHEMA_PATH).read_bytes()
    api = (site / "api" / "io" / "index.html").read_text(encoding="utf-8")
    assert 'id="dls_microscopy.io.open_volume"' in api
    assert (site / "images" / "segment.png").is_file()


def test_the_memory_budget_section_names_what_it_leaves_out_with_commands_that_run() -> None:
    """The process's own ~0.3-1 GB on top of the budget was nowhere: a job sized to the budget died."""
    import shlex

    import typer.main

    from dls_microscopy.cli import app

    text = (DOCS / "segmentation.md").read_text(encoding="utf-8")
    section = text.split("## What the memory budget covers", 1)[1].split("\n## ", 1)[0]
    assert "does not cover" in section and "torch" in section and "--device cpu" in section
    root = typer.main.get_command(app)
    commands = [shlex.split(c) for c in re.findall(r"`dls-microscopy ([^`]+)`", section)]
    assert {c[0] for c in commands} >= {"features", "segment"}
    for args in commands:
        if args[0].startswith("-"):
            continue  # --version
        with root.make_context("dls-microscopy", [args[0]]) as ctx:
            command = root.get_command(ctx, args[0])
            command.make_context(args[0], args[1:])  # a missing argument or an unknown option raises
    # the measured variants of the segment row are options of segment
    segment = root.get_command(root.make_context("dls-microscopy", ["segment"]), "segment")
    options = {o for p in segment.params for o in getattr(p, "opts", [])}
    assert {"--memory-budget", "--device"} <= options


def test_the_exit_code_table_has_every_code_the_cli_returns() -> None:
    """130 (interrupted) was missing from the reference, and what 3 leaves behind was not said."""
    from dls_microscopy.cli import EXIT_FIELDS_FAILED

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("<!-- generated", 1)[0]
    documented = {int(c) for c in re.findall(r"^\| `(\d+)` \|", section, flags=re.MULTILINE)}
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "src/dls_microscopy/cli").glob("*.py"))
    found = re.findall(r"\breturn (\d+)\b|typer\.Exit\((\d+)\)", sources)  # (return, Exit) pairs
    returned = {int(a or b) for a, b in found}
    assert returned | {0, EXIT_FIELDS_FAILED} == documented == {0, 1, 2, 3, 130}
    assert "run_summary.json" in section and "|| [ $? -eq 3 ]" in section  # what 3 means, how to accept it
