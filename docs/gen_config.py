"""Generate the pipeline configuration reference (Markdown) from the schema and the model.

Types, defaults, allowed values and limits come from the published JSON schema
(``src/dls_microscopy/pipeline/pipeline.schema.json``, kept equal to
:func:`dls_microscopy.pipeline.config.config_json_schema` by the pipeline tests); the description
of each key is the schema's ``description``: the docstring below the field in the pydantic
model :class:`~dls_microscopy.pipeline.config.PipelineConfig` (``use_attribute_docstrings``).
The MkDocs hook (``docs/hooks.py``) inserts the result into ``docs/pipeline-config.md``.

Run ``python docs/gen_config.py`` to print the Markdown.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Section:
    """One mapping of the YAML file: its dotted key, schema and pydantic model."""

    key: str
    schema: dict[str, Any]
    model: type[BaseModel]


def load_schema() -> dict[str, Any]:
    """The published schema file of the pipeline configuration."""
    from dls_microscopy.pipeline.config import SCHEMA_PATH

    return json.loads(Path(SCHEMA_PATH).read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return root["$defs"][name]
    return node


def _object_ref(node: dict[str, Any]) -> str | None:
    """The ``$defs`` name when ``node`` is a (possibly optional) sub-section."""
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    for option in node.get("anyOf", []):
        if "$ref" in option:
            return option["$ref"].rsplit("/", 1)[-1]
    return None


def type_text(node: dict[str, Any], root: dict[str, Any]) -> str:
    """A short type for a schema node, e.g. ``list[string | integer] | null``."""
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor_of(name, root)})" if _anchor_of(name, root) else name
    if "anyOf" in node:
        return " \\| ".join(type_text(option, root) for option in node["anyOf"])
    kind = node.get("type")
    if isinstance(kind, list):
        return " \\| ".join(kind)
    if kind == "array" and "prefixItems" in node:
        return "[" + ", ".join(type_text(item, root) for item in node["prefixItems"]) + "]"
    if kind == "array":
        return f"list[{type_text(node.get('items', {}), root)}]"
    if kind == "object":
        return "mapping"
    return str(kind) if kind else "any"


_ANCHORS: dict[str, str] = {}


def _anchor_of(defname: str, root: dict[str, Any]) -> str:
    return _ANCHORS.get(defname, "")


def limits_text(node: dict[str, Any]) -> str:
    """Limits of a value (minimum, pattern, length...) as text."""
    parts = []
    for option in [node, *node.get("anyOf", [])]:
        for key, fmt in (
            ("minimum", "≥ {}"),
            ("exclusiveMinimum", "> {}"),
            ("maximum", "≤ {}"),
            ("exclusiveMaximum", "< {}"),
            ("minLength", "at least {} characters"),
            ("maxItems", "at most {} items"),
            ("minItems", "at least {} items"),
            ("pattern", "matches `{}`"),
        ):
            if key in option:
                text = "not empty" if key in ("minLength", "minItems") and option[key] == 1 else None
                parts.append(text or fmt.format(option[key]))
    return ", ".join(parts)


def default_text(name: str, node: dict[str, Any], section: Section) -> str:
    """The default of one key: from the schema, else from the model's default factory."""
    if name in section.schema.get("required", []):
        return "required"
    if "default" in node:
        return f"`{json.dumps(node['default'])}`"
    field = section.model.model_fields.get(name)
    if field is None:
        return ""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its section's defaults"
    if value == sys.executable:
        return "the Python running the pipeline"
    return f"`{json.dumps(value)}`"


def sections(root: dict[str, Any]) -> Iterator[Section]:
    """Every mapping of the file, depth first, with its dotted key (``""`` for the top level)."""
    from dls_microscopy.pipeline.config import PipelineConfig

    def visit(key: str, schema: dict[str, Any], model: type[BaseModel]) -> Iterator[Section]:
        yield Section(key, schema, model)
        properties = schema.get("properties", {})
        for name in model.model_fields:  # the model's order, as in a pipeline.yaml
            node = properties.get(name)
            defname = _object_ref(node) if node is not None else None
            if defname is None:
                continue
            annotation = model.model_fields[name].annotation
            sub = next(
                (
                    t
                    for t in (annotation, *getattr(annotation, "__args__", ()))
                    if isinstance(t, type) and issubclass(t, BaseModel)
                ),
                None,
            )
            if sub is None:
                continue
            yield from visit(f"{key}.{name}" if key else name, root["$defs"][defname], sub)

    yield from visit("", root, PipelineConfig)


_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj):`~?([^`]+)`")


def markdown_text(text: str) -> str:
    """reStructuredText bits of docstrings as Markdown, on one line."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text).replace("``", "`")
    return " ".join(text.split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def model_table(key: str, schema: dict[str, Any], model: type[BaseModel], root: dict[str, Any]) -> list[str]:
    """Markdown table of the keys of one mapping, in the model's field order."""
    section = Section(key, schema, model)
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    properties = schema.get("properties", {})
    for name in model.model_fields:
        node = properties.get(name)
        if node is None:
            continue
        dotted = f"{key}.{name}" if key else name
        description = node.get("description") or ""
        defname = _object_ref(node)
        if defname and not description:
            description = (root["$defs"][defname].get("description") or "").split("\n\n")[0]
        if defname and "key-" + dotted.replace(".", "-") in _ANCHORS.values():
            description += f" See [`{dotted}`](#key-{dotted.replace('.', '-')})."
        limits = limits_text(node)
        if limits:
            description += f" ({limits})"
        cells = [f"`{dotted}`", type_text(node, root), default_text(name, node, section)]
        lines.append("| " + " | ".join([*cells, _cell(markdown_text(description))]) + " |")
    return [*lines, ""]


def _heading(level: int, text: str, anchor: str) -> str:
    return f"{'#' * min(level, 6)} {text} {{ #{anchor} }}"


def segmenter_params_markdown(level: int) -> list[str]:
    """One table per installed segmenter: the keys of ``steps.segment.params``."""
    from dls_microscopy.segment import segmenter_names
    from dls_microscopy.segment.base import segmenters

    out = [
        _heading(level, "`steps.segment.params`", "key-steps-segment-params"),
        "",
        "The parameters of the chosen segmenter (`steps.segment.method`), checked against its own "
        "parameter model. The segmenters installed where this page was built:",
        "",
    ]
    for name in segmenter_names():
        cls = segmenters().get(name)
        params = cls.Params
        doc = markdown_text((inspect.getdoc(cls) or "").split("\n\n")[0])
        out += [_heading(level + 1, f"`{name}`", f"segmenter-{name}"), "", f"{doc} Parameters:", ""]
        schema = params.model_json_schema()
        out += model_table("steps.segment.params", schema, params, schema)
    return out


def render_config_markdown(base_level: int = 2) -> str:
    """The reference of every key of ``pipeline.yaml`` as Markdown."""
    root = load_schema()
    found = list(sections(root))
    _ANCHORS.clear()
    for sec in found:
        title = sec.schema.get("title", "")
        if sec.key and title:
            _ANCHORS.setdefault(title, "key-" + sec.key.replace(".", "-"))
    out: list[str] = []
    for sec in found:
        depth = sec.key.count(".") + 1 if sec.key else 0
        anchor = "key-" + sec.key.replace(".", "-") if sec.key else "key-top-level"
        out += [_heading(base_level + depth, f"`{sec.key}`" if sec.key else "Top level", anchor), ""]
        if sec.key:
            out += [markdown_text((inspect.getdoc(sec.model) or "").split("\n\n")[0]), ""]
        out += model_table(sec.key, sec.schema, sec.model, root)
        if sec.key == "steps.segment":
            out += segmenter_params_markdown(base_level + depth + 1)
    return "\n".join(out)


def example_yaml() -> str:
    """The example configuration shipped with the package (``sample_data/pipeline.yaml``)."""
    import importlib.resources

    example = importlib.resources.files("dls_microscopy.sample_data") / "pipeline.yaml"
    return example.read_text(encoding="utf-8")


if __name__ == "__main__":
    sys.stdout.write(render_config_markdown())
