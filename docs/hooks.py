"""MkDocs hooks: fill the generated parts of the site at build time.

A page asks for generated content with a marker comment on a line of its own:

* ``<!-- generated: cli -->`` — the command line reference (:mod:`gen_cli`);
* ``<!-- generated: pipeline-config -->`` — the ``pipeline.yaml`` reference (:mod:`gen_config`);
* ``<!-- generated: pipeline-example -->`` — the example ``pipeline.yaml`` shipped in the package.

The published JSON schema is copied into the site as ``reference/pipeline.schema.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_cli
import gen_config


def _example() -> str:
    return "```yaml\n" + gen_config.example_yaml().rstrip() + "\n```\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "<!-- generated: cli -->": gen_cli.render_cli_markdown,
    "<!-- generated: pipeline-config -->": gen_config.render_config_markdown,
    "<!-- generated: pipeline-example -->": _example,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace every marker of ``GENERATORS`` on the page by its generated Markdown."""
    for marker, generate in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


def on_files(files: Any, config: Any) -> Any:
    """Publish the pipeline configuration's JSON schema with the site."""
    from mkdocs.structure.files import File

    from dls_microscopy.pipeline.config import SCHEMA_PATH

    files.append(
        File.generated(config, "reference/pipeline.schema.json", content=Path(SCHEMA_PATH).read_bytes())
    )
    return files
