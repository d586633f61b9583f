"""YAML problems of a ``pipeline.yaml`` mapped to lines and dotted keys.

Part of :mod:`dls_microscopy.pipeline.config`: turns duplicate keys and
pydantic validation errors into ``(dotted key, YAML line, message)`` issues
and formats them for :class:`~dls_microscopy.errors.ConfigError`; finds the
line of a dotted key (:func:`key_line`) for problems found later, in the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from dls_microscopy.pipeline._config_models import PipelineConfig


def _format(issues: Sequence[tuple[str, int | None, str]]) -> str:
    parts = []
    for key, line, msg in issues:
        where = f"line {line}: " if line is not None else ""
        parts.append(f"{where}{key + ': ' if key else ''}{msg}")
    return "; ".join(parts)


def _issue(err: Any, root: yaml.Node) -> tuple[str, int | None, str]:
    loc = list(err["loc"])
    ctx = err.get("ctx") or {}
    if "subloc" in ctx:  # our own validators say which key inside their section is wrong
        loc = [*loc, *ctx["subloc"]]
    keys = _data_path(loc, root)
    line = _line_of(keys, root)
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _allowed(keys[:-1])
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
    return ".".join(str(k) for k in keys), line, msg


def _data_path(loc: Sequence[Any], root: yaml.Node) -> list[Any]:
    """The part of a pydantic error location that addresses the data (drops union tags)."""
    keys: list[Any] = []
    node: yaml.Node | None = root
    for item in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(item, str):
            child = next((v for k, v in node.value if k.value == item), None)
            if child is None and item not in _model_keys(keys):
                continue  # a union member tag such as 'list[str]' or 'function-after[...]'
            keys.append(item)
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            keys.append(item)
            node = node.value[item] if item < len(node.value) else None
        elif node is None and isinstance(item, str) and item in _model_keys(keys):
            keys.append(item)
        # anything else is a tag of a union member: skip it
    return keys


def _section_model(keys: Sequence[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = PipelineConfig
    for k in keys:
        if model is None or not isinstance(k, str) or k not in model.model_fields:
            return None
        ann = model.model_fields[k].annotation
        args = getattr(ann, "__args__", ())
        candidates = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = candidates[0] if candidates else None
    return model


def _model_keys(keys: Sequence[Any]) -> set[str]:
    model = _section_model(keys)
    if model is None:
        return set()
    return set(model.model_fields)


def _allowed(keys: Sequence[Any]) -> str:
    model = _section_model(keys)
    if model is None:
        return ""
    return f" (allowed here: {', '.join(model.model_fields)})"


def _line_of(keys: Sequence[Any], root: yaml.Node) -> int | None:
    node = root
    line = root.start_mark.line + 1
    for k in keys:
        if isinstance(node, yaml.MappingNode):
            pair = next(((kn, vn) for kn, vn in node.value if kn.value == k), None)
            if pair is None:
                return line
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(k, int) and k < len(node.value):
            node = node.value[k]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def key_line(text: str, key: str) -> int | None:
    """The 1-based YAML line of the dotted ``key`` in ``text``.

    A key the text does not give (a default) gets the line of its nearest parent that
    it gives; text that is not YAML gets ``None``.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if root is None:
        return None
    return _line_of([int(k) if k.isdigit() else k for k in key.split(".")], root)


def _duplicate_keys(node: yaml.Node, where: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], int]]:
    found: list[tuple[tuple[Any, ...], int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            if k.value in seen:
                found.append(((*where, k.value), k.start_mark.line + 1))
            seen.add(k.value)
            found += _duplicate_keys(v, (*where, k.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found += _duplicate_keys(v, (*where, i))
    return found
