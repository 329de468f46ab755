"""Pydantic's errors, translated for the person who wrote the workflow.

``Input should be a valid number`` becomes ``expected a number, got 'eight'``, with the place
and, where one is known, the fix: ``did you mean`` for misspelt fields (snake_case of an
ASL/camel name, a known synonym, or a near spelling), where a field belongs when it is in the
wrong object, how to spell a list in the file's format. Errors from the branches of a union
(``command``) are folded into one. Kept apart from the graph checks (``validate``): this is
about one value at a time and pydantic's error shapes, they are about the whole task list.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from stormproof.spec.model import GlobalConfig, Retrier, TaskSpec, WorkflowSpec
from stormproof.spec.problems import Loc, Problem

_ID_RULE = (
    "use letters, digits, '_', '.' and '-', starting with a letter or digit, at most 128 characters"
)
_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_EXPECTED_BY_FIELD = {
    "depends_on": "a list of task ids",
    "tasks": "a list of tasks",
    "error_equals": "a list of error names",
    "retry": "a list of retry rules",
    "environment": "a mapping of variable names to values",
}
_FIELD_HINTS = {
    "memory": "memory is in MiB, e.g. 4096 for 4 GiB",
    "vcpus": "the number of vCPUs, e.g. 2 or 0.5",
    "nodes": "the number of nodes, e.g. 1",
    "gpus": "the number of GPUs, e.g. 1",
}
_REQUIRED_HINTS = {
    "name": "give the workflow a name, e.g. name: md-simulation",
    "tasks": "list the tasks, each with at least an id and a command",
    "id": "give each task a short unique id, e.g. id: prep",
    "command": "say what to run, e.g. command: [python, run.py]",
    "error_equals": "say which errors the rule retries, e.g. error_equals: [Task.Failed]",
}
#: Names people reach for, mapped to ours; ``did you mean`` only uses them if the target fits.
_SYNONYMS = {
    "env": "environment",
    "environ": "environment",
    "env_vars": "environment",
    "image": "container_image",
    "container": "container_image",
    "cpus": "vcpus",
    "cpu": "vcpus",
    "mem": "memory",
    "memory_mb": "memory",
    "dependencies": "depends_on",
    "deps": "depends_on",
    "needs": "depends_on",
    "after": "depends_on",
    "requires": "depends_on",
    "retries": "retry_attempts",
    "max_retries": "retry_attempts",
    "cmd": "command",
    "args": "command",
    "jitter_strategy": "jitter",
    "errors": "error_equals",
    "max_parallelism": "max_parallel",
}
_MODEL_WORDS: dict[type[BaseModel], str] = {
    WorkflowSpec: "the top level",
    GlobalConfig: "global_config",
    TaskSpec: "a task",
    Retrier: "a retry rule",
}


def problems_from_pydantic(errors: Sequence[ErrorDetails], data: Any, fmt: str) -> list[Problem]:
    """Translate pydantic's errors for ``data`` (the parsed document) into problems.

    ``fmt`` (``json`` or ``yaml``) decides how a suggested fix is spelt.
    Errors from the branches of a union (``command``) are folded into one.
    """
    misspelt = _misspelt_fields(errors)
    problems: list[Problem] = []
    unions_done: set[Loc] = set()
    for error in errors:
        loc, union_at = _walk(error["loc"])
        if union_at is not None:
            prefix = loc[:union_at]
            if prefix not in unions_done:
                unions_done.add(prefix)
                problems += _union_problems(prefix, errors, data, fmt)
        elif not (error["type"] == "missing" and loc in misspelt):
            problems.append(_translate(error, loc, fmt))
    return problems


def _misspelt_fields(errors: Sequence[ErrorDetails]) -> set[Loc]:
    """Fields reported missing that an unknown field next to them is a misspelling of.

    ``ErrorEquals`` given and ``error_equals`` missing: the ``did you mean``
    on the first says everything, so the second is not reported.
    """
    misspelt: set[Loc] = set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            loc, _ = _walk(error["loc"])
            model = _model_at(loc[:-1])
            close = _suggest_field(str(loc[-1]), list(model.model_fields)) if model else None
            if close:
                misspelt.add((*loc[:-1], close))
    return misspelt


def _walk(raw_loc: Loc) -> tuple[Loc, int | None]:
    """The loc without pydantic's union-branch tags, and where the first tag was."""
    tp: Any = WorkflowSpec
    loc: list[str | int] = []
    union_at = None
    for part in raw_loc:
        tp = _unwrap(tp)
        if _is_union(tp):
            union_at = len(loc) if union_at is None else union_at
            tp = None
            continue
        tp = _child_type(tp, part)
        loc.append(part)
    return tuple(loc), union_at


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` so the real shape shows."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif _is_union(tp, include_optional=True):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_union(tp: Any, include_optional: bool = False) -> bool:
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return False
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    return include_optional or len(members) > 1


def _child_type(tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return field.annotation if field else None
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args:
        return args[0]
    if typing.get_origin(tp) is dict and len(args) == 2:
        return args[0] if part == "[key]" else args[1]
    return None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    tp: Any = WorkflowSpec
    for part in loc:
        tp = _child_type(_unwrap(tp), part)
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _translate(error: ErrorDetails, loc: Loc, fmt: str) -> Problem:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    field = str(loc[-1]) if loc and isinstance(loc[-1], str) else ""
    if kind == "missing":
        hint = _REQUIRED_HINTS.get(field)
        return Problem(loc[:-1], f"missing field {field!r}" + (f" ({hint})" if hint else ""), loc)
    if kind == "extra_forbidden":
        return Problem(loc[:-1], _unknown_field(field, _model_at(loc[:-1])), loc)
    if kind == "invalid_key":
        return Problem(loc[:-1], f"key {_show(loc[-1])} is not a name (keys must be text)")
    if kind in _EXPECTED:
        return Problem(loc, _wrong_type(kind, field, value, fmt))
    if kind in ("enum", "literal_error"):
        return Problem(loc, _not_one_of(str(ctx.get("expected", "")), value))
    if kind == "string_pattern_mismatch" and field == "id":
        return Problem(loc, _unsafe_id(value))
    if kind in ("value_error", "assertion_error"):
        return Problem(loc, str(ctx.get("error", error["msg"])))
    return Problem(loc, _out_of_range(kind, ctx, value, field) or _plain(error["msg"]))


def _wrong_type(kind: str, field: str, value: Any, fmt: str) -> str:
    expected = _EXPECTED[kind]
    if kind == "list_type":
        expected = _EXPECTED_BY_FIELD.get(field, expected)
    text = f"expected {expected}, got {_show(value)}"
    hint = _FIELD_HINTS.get(field)
    if kind == "list_type" and isinstance(value, str) and field:
        hint = "write " + _spell_list(field, value, fmt)
    elif kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        hint = f"put it in quotes: {json.dumps(str(value))}"
    elif kind in ("model_type", "dict_type") and field == "":
        hint = "each task is a mapping with at least an id and a command"
    return text + (f" ({hint})" if hint else "")


def _spell_list(field: str, value: str, fmt: str) -> str:
    if fmt == "json":
        return f'"{field}": [{json.dumps(value)}]'
    return f"{field}: [{value}]"


def _not_one_of(expected: str, value: Any) -> str:
    allowed = re.findall(r"'([^']*)'", expected)
    text = "expected one of " + ", ".join(repr(a) for a in allowed) + f", got {_show(value)}"
    if isinstance(value, str):
        by_case = [a for a in allowed if a.lower() == value.lower().replace("-", "_")]
        close = by_case or difflib.get_close_matches(value, allowed, n=1)
        if close:
            text += f" (did you mean {close[0]!r}?)"
    return text


#: pydantic's range errors: the bound's key in the error context, and how to say it
#: (``stormproof.yaml``'s errors say them the same way).
RANGE_WORDS = {
    "greater_than": ("gt", "must be more than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def _out_of_range(kind: str, ctx: Mapping[str, Any], value: Any, field: str) -> str | None:
    if kind in RANGE_WORDS:
        key, phrase = RANGE_WORDS[kind]
        hint = _FIELD_HINTS.get(field)
        return f"{phrase} {_show(ctx.get(key))}, got {_show(value)}" + (
            f" ({hint})" if hint else ""
        )
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short" and field == "tasks":
        return "the list is empty (add at least one task)"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got none"
    return None


def _unsafe_id(value: Any) -> str:
    text = str(value)
    reasons = []
    if not text:
        reasons.append("is empty")
    elif not (text[0].isascii() and text[0].isalnum()):
        reasons.append(f"starts with {text[0]!r}")
    if len(text) > 128:
        reasons.append(f"is {len(text)} characters long")
    bad = sorted({c for c in text if not (c.isascii() and (c.isalnum() or c in "_.-"))})
    if bad:
        reasons.append("contains " + ", ".join(repr(c) for c in bad))
    return f"{_show(value)} is not a safe task id: it {' and '.join(reasons)} ({_ID_RULE})"


def _unknown_field(key: str, model: type[BaseModel] | None) -> str:
    text = f"unknown field {key!r}"
    if model is None:
        return text
    fields = list(model.model_fields)
    close = _suggest_field(key, fields)
    if close:
        return f"{text} (did you mean {close!r}?)"
    for other, where in ((GlobalConfig, "under global_config"), (TaskSpec, "in each task")):
        if other is not model and _suggest_field(key, list(other.model_fields)) == key:
            return f"{text} (it belongs {where})"
    return f"{text} (the fields of {_MODEL_WORDS.get(model, model.__name__)} are: " + (
        ", ".join(fields) + ")"
    )


def _suggest_field(key: str, fields: list[str]) -> str | None:
    """Closest field name: snake_case of an ASL/camel name, a known synonym, or a near spelling."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).replace("-", "_").lower()
    for candidate in (snake, _SYNONYMS.get(snake)):
        if candidate in fields:
            return candidate
    close = difflib.get_close_matches(snake, fields, n=1)
    return close[0] if close else None


def _union_problems(
    prefix: Loc, errors: Sequence[ErrorDetails], data: Any, fmt: str
) -> list[Problem]:
    """One message for a value that matched no branch of a union.

    If the value has the shape of one branch (a list for ``list[str] | str``),
    that branch's errors are the helpful ones; otherwise say what is accepted.
    """
    value = _value_at(data, prefix)
    branches: dict[str, list[ErrorDetails]] = {}
    for error in errors:
        loc = error["loc"]
        if tuple(loc[: len(prefix)]) == prefix and len(loc) > len(prefix):
            branches.setdefault(str(loc[len(prefix)]), []).append(error)
    shape = "list" if isinstance(value, list) else "str" if isinstance(value, str) else None
    for tag, branch_errors in branches.items():
        if shape is not None and tag.startswith(shape):
            return [
                _translate(e, prefix + tuple(e["loc"][len(prefix) + 1 :]), fmt)
                for e in branch_errors
            ]
    accepted = " or ".join(_tag_words(tag) for tag in branches)
    example = " (e.g. [python, run.py], or a shell line)" if prefix[-1:] == ("command",) else ""
    return [Problem(prefix, f"expected {accepted}, got {_show(value)}{example}")]


def _tag_words(tag: str) -> str:
    words = {
        "str": "a string",
        "int": "a whole number",
        "float": "a number",
        "bool": "true or false",
    }
    if tag.startswith("list[") and tag.endswith("]"):
        inner = words.get(tag[5:-1], tag[5:-1]).removeprefix("a ")
        return f"a list of {inner}s"
    return words.get(tag, tag)


def _value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _plain(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def _show(value: Any) -> str:
    """A value the way the user wrote it: null, true, 'text', [a, b], short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, float) and value.is_integer():
        return repr(int(value))  # the model's bounds are floats: "more than 0", not "0.0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, dict)):
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError, RecursionError):
            text = ""
        kind = "a list" if isinstance(value, list) else "a mapping"
        return text if text and len(text) <= 40 else kind
    return str(value)
