"""MkDocs hook: the two reference pages, generated at every build from the code itself.

* ``reference/workflow.md``: every field of the workflow file, from its published JSON
  Schema (``stormproof schema``, itself derived from the pydantic model ``load_workflow``
  validates with): type, default and description of each.
* ``reference/cli.md``: every command, its usage, arguments and options, from the click
  commands the ``stormproof`` program is made of (what ``--help`` prints).

A page asks for one by holding the marker ``<!-- generated: workflow -->`` or
``<!-- generated: cli -->``; the hook replaces the marker, so the text around it is written
by hand and the tables can never drift from what the program accepts.
"""

from __future__ import annotations

import json
from typing import Any

import click

MARKERS = ("<!-- generated: workflow -->", "<!-- generated: cli -->")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKERS[0] in markdown:
        markdown = markdown.replace(MARKERS[0], workflow_reference())
    if MARKERS[1] in markdown:
        markdown = markdown.replace(MARKERS[1], cli_reference())
    return markdown


# ---------------------------------------------------------------------- the workflow file
_SECTIONS = (
    ("The file", None, ""),
    ("global_config", "GlobalConfig", "global_config."),
    ("tasks[]", "TaskSpec", "tasks[]."),
    ("retry[] (of a task)", "Retrier", "tasks[].retry[]."),
)


def workflow_reference() -> str:
    from stormproof.spec.schema import workflow_json_schema

    schema = workflow_json_schema()
    defs = schema["$defs"]
    out = [schema["description"], ""]
    for title, name, prefix in _SECTIONS:
        body = schema if name is None else defs[name]
        required = set(body.get("required", ()))
        out += [f"## {title}", ""]
        if name is not None and body.get("description"):
            out += [_one_line(body["description"]), ""]
        out += ["| field | type | default | |", "|---|---|---|---|"]
        for field, prop in body["properties"].items():
            default = "required" if field in required else _default(prop)
            out.append(
                f"| `{prefix}{field}` | {_type(prop, defs)} | {default} | "
                f"{_cell(prop.get('description', ''))} |"
            )
        out.append("")
    return "\n".join(out)


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        target = defs[prop["$ref"].rsplit("/", 1)[1]]
        if "enum" in target:
            return " \\| ".join(f"`{v}`" for v in target["enum"])
        return "mapping"
    if "anyOf" in prop:
        if _is_duration(prop):
            return "duration (`600`, `'10m'`, `'2h30m'`)"
        kinds = [_type(p, defs) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object":
        return "mapping"
    return {
        "number": "number",
        "integer": "integer",
        "string": "text",
        "boolean": "true/false",
    }.get(str(kind), str(kind or "any"))


def _is_duration(prop: dict[str, Any]) -> bool:
    """A number of seconds or a text like '2h30m' (``spec.model.Duration``), maybe optional."""
    members = prop.get("anyOf", ())
    if any(_is_duration(p) for p in members if "anyOf" in p):
        return True
    kinds = {p.get("type") for p in members}
    return {"number", "string"} <= kinds and any("pattern" in p for p in members)


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    if value is None:
        return "—"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------- the command line
def cli_reference() -> str:
    from stormproof.cli.main import cli

    root = click.Context(cli, info_name="stormproof")
    out: list[str] = []
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        if command is not None and not command.hidden:
            out += _command(command, click.Context(command, info_name=name, parent=root))
    return "\n".join(out)


def _command(command: click.Command, ctx: click.Context) -> list[str]:
    path = ctx.command_path
    out = [f"## `{path}`", ""]
    out += ["```", f"{path} {' '.join(command.collect_usage_pieces(ctx))}".rstrip(), "```", ""]
    if command.help:
        out += [_help(command.help), ""]
    rows = [_param(p, ctx) for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    rows = [r for r in rows if r]
    if rows:
        out += ["| argument / option | |", "|---|---|", *rows, ""]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += _command(sub, click.Context(sub, info_name=name, parent=ctx))
    return out


def _param(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param, click.Argument):
        return f"| `{param.make_metavar(ctx)}` | argument |"
    if not isinstance(param, click.Option):
        return ""
    record = param.get_help_record(ctx)
    if record is None:
        return ""
    names, help_text = record
    return f"| `{names}` | {_cell(help_text)} |"


def _help(text: str) -> str:
    """click's help text (paragraphs, ``\\b`` blocks) as Markdown paragraphs."""
    paragraphs = [p.replace("\b\n", "") for p in text.split("\n\n")]
    return "\n\n".join(_one_line(p) for p in paragraphs)
