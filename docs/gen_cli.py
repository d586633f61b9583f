"""Generate the command line reference (Markdown) from the typer application.

Walks the whole command tree of :data:`dls_microscopy.cli.app` (groups and their commands, at
any depth) and writes, for each command, its usage line, description, arguments and options
with types and defaults, and its example. The MkDocs hook (``docs/hooks.py``) inserts the result
into ``docs/cli.md`` at build time, so the reference cannot drift from the code.

Run ``python docs/gen_cli.py`` to print the Markdown.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import typer
import typer.main
from rich.text import Text

PROG = "dls-microscopy"

# typer (0.29+) ships its own copy of click, so commands and parameters are recognised by what
# they have (duck typing), never by click's classes.


def _is_group(command: Any) -> bool:
    return hasattr(command, "list_commands") and hasattr(command, "get_command")


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _subcommands(command: Any, ctx: Any) -> list[tuple[str, Any]]:
    if not _is_group(command):
        return []
    found = ((name, command.get_command(ctx, name)) for name in command.list_commands(ctx))
    return [(name, sub) for name, sub in found if sub is not None and not getattr(sub, "hidden", False)]


@dataclass(frozen=True)
class CommandEntry:
    """One command of the tree: its full name path, click command and context."""

    path: tuple[str, ...]
    command: Any
    context: typer.Context

    @property
    def name(self) -> str:
        """The full command line prefix, e.g. ``"dls-microscopy config schema"``."""
        return " ".join(self.path)

    @property
    def anchor(self) -> str:
        """The heading id used for links, e.g. ``"dls-microscopy-config-schema"``."""
        return "-".join(self.path)


def root_command() -> Any:
    """The click command behind ``dls-microscopy``."""
    from dls_microscopy.cli import app

    return typer.main.get_command(app)


def walk(
    command: Any = None,
    path: tuple[str, ...] = (PROG,),
    parent: typer.Context | None = None,
) -> Iterator[CommandEntry]:
    """Yield every visible command of the tree, depth first, parents before children.

    Parameters
    ----------
    command
        Where to start; the root command by default.
    path
        The names leading to ``command``.
    parent
        The parent's click context.
    """
    command = command if command is not None else root_command()
    ctx = typer.Context(command, info_name=path[-1], parent=parent)
    yield CommandEntry(path, command, ctx)
    for name, sub in _subcommands(command, ctx):
        yield from walk(sub, (*path, name), ctx)


def _plain(text: str | None) -> str:
    """Help text without rich markup, stripped."""
    if not text:
        return ""
    try:
        return Text.from_markup(text).plain.strip()
    except Exception:  # not valid markup: keep as written
        return text.strip()


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


_TRAILER = re.compile(r"\s*\[(default: [^\]]*|required|env var: [^\]]*)\]\s*$")
_TYPE = re.compile(r"^(?P<names>.*?)\s*<(?P<type>[^>]+)>$")


@dataclass(frozen=True)
class ParamRow:
    """One argument or option as ``--help`` shows it: names, type, default, description."""

    names: str
    type: str
    default: str
    required: bool
    help: str


def param_row(param: Any, ctx: typer.Context) -> ParamRow | None:
    """The help record of ``param`` split into table cells (``None`` for hidden parameters)."""
    record = param.get_help_record(ctx)
    if record is None:
        return None
    head, help_text = record[0], record[1] or ""
    default, required = "", False
    while m := _TRAILER.search(help_text):
        tag = m.group(1)
        if tag == "required":
            required = True
        elif tag.startswith("default: "):
            default = tag.removeprefix("default: ")
        help_text = help_text[: m.start()]
    help_text = _plain(help_text)  # markup only now: rich would take "[required]" for a tag
    m = _TYPE.match(head)
    names, ptype = (m.group("names"), m.group("type")) if m else (head, "")
    if names.endswith("..."):  # a variadic argument
        names = names.removesuffix("...")
        ptype = f"{ptype}, one or more" if ptype else "one or more"
    if not ptype:
        ptype = "count" if getattr(param, "count", False) else "flag"
        if default and ptype == "flag" and not default.startswith("-"):
            default = f"--{default}"  # typer shows a flag's default as "no-overwrite"
    if getattr(param, "multiple", False) and "list" not in ptype:
        ptype += ", repeatable"
    return ParamRow(names.strip(), ptype, default, required, help_text.strip())


def _names(row: ParamRow, argument: bool) -> str:
    parts = [n.strip() for n in re.split(r",|/", row.names) if n.strip()]
    if argument:
        parts = [n.upper() for n in parts]
    return ", ".join(f"`{n}`" for n in parts)


def _usage_name(m: re.Match[str]) -> str:
    name = m.group(1).upper()
    return name if m.group(0).startswith("{") else f"[{name}]"


def render_command(entry: CommandEntry, level: int) -> str:
    """Markdown for one command: heading, usage, description, parameter tables, example."""
    cmd, ctx = entry.command, entry.context
    lines = [f"{'#' * level} `{entry.name}` {{ #{entry.anchor} }}", ""]
    # typer writes arguments as "{name}" ("{name}..." when variadic) and "[name]" when optional
    pieces = [re.sub(r"[{\[]([a-z_]\w*)[}\]]", _usage_name, p) for p in cmd.collect_usage_pieces(ctx)]
    usage = " ".join(pieces)
    lines += ["```text", f"{entry.name} {usage}".rstrip(), "```", ""]
    help_text = _plain(cmd.help)
    if help_text:
        lines += [help_text, ""]
    args = [p for p in cmd.params if _is_argument(p)]
    opts = [p for p in cmd.params if not _is_argument(p) and not getattr(p, "hidden", False)]
    arg_rows = [(r, True) for p in args if (r := param_row(p, ctx)) is not None]
    opt_rows = [(r, False) for p in opts if (r := param_row(p, ctx)) is not None]
    if arg_rows:
        lines += ["| argument | type | | description |", "|---|---|---|---|"]
        for row, _ in arg_rows:
            req = "required" if row.required else "optional"
            lines.append(f"| {_names(row, True)} | {_cell(row.type)} | {req} | {_cell(row.help)} |")
        lines.append("")
    if opt_rows:
        lines += ["| option | type | default | description |", "|---|---|---|---|"]
        for row, _ in opt_rows:
            default = f"`{row.default}`" if row.default else ""
            cells = [_names(row, False), _cell(row.type), _cell(default), _cell(row.help)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    subs = [name for name, _ in _subcommands(cmd, ctx)]
    if subs:
        lines.append("Commands: " + ", ".join(f"[`{n}`](#{entry.anchor}-{n})" for n in subs) + ".")
        lines.append("")
    epilog = _plain(cmd.epilog)
    if epilog:
        prefix, sep, example = epilog.partition("Example:")
        if sep:
            if prefix.strip():
                lines += [prefix.strip(), ""]
            # "Example: CMD   (a note)": the note is text, not part of the command
            m = re.match(r"(?P<cmd>.*?)\s{2,}(?P<note>\(.*\))\s*$", example.strip(), flags=re.DOTALL)
            command, note = (m["cmd"], m["note"]) if m else (example.strip(), "")
            lines += ["Example:", "", "```bash", command.strip(), "```", ""]
            if note:
                lines += [note.strip(), ""]
        else:
            lines += [epilog, ""]
    return "\n".join(lines)


def render_cli_markdown(base_level: int = 2) -> str:
    """The reference of the whole command tree as Markdown (headings start at ``base_level``)."""
    parts = []
    for entry in walk():
        depth = len(entry.path) - 1
        parts.append(render_command(entry, min(base_level + depth, 6)))
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render_cli_markdown())
