"""Reading a workflow file: bytes, then a document, then a ``WorkflowSpec``.

The rules of this module:

* Every failure is one ``SpecError`` carrying *every* problem found, each
  naming its place (``line 12: tasks[1] (equilibration).vcpus: ...``) and,
  where there is one, the fix. No other exception leaves ``load_workflow``.
* The happy path is fast, the unhappy path is thorough. JSON goes straight
  from bytes to models with ``model_validate_json``; only when that fails is
  the text parsed again with the standard library, to find line numbers and
  word the problems well. Graph checks are linear; suggestions are computed
  only for problems.
* YAML is built straight from parser events (``spec/yaml_events.py``), which
  is faster and needs a fifth of the memory of ``yaml.load``. Users fix files
  by line number, so when there are problems the text is composed into nodes,
  whose marks map problem paths to lines. JSON gets line numbers the same way
  (JSON is YAML as far as the composer cares), but only for files small
  enough that a person edits them by hand.
* Input is bounded (``stormproof.limits``): the file is read only if it is a regular file
  within the size limit; the task count is estimated from the bytes before parsing; the
  YAML builder refuses deep nesting, long numbers and alias bombs as it meets them; the
  JSON fast path is verified (no long number, as many keys in the text as in the result:
  no key given twice) or the text goes the careful way, where the standard library
  parser refuses each of those with its line.
* The garbage collector is paused while a document is turned into objects:
  the result is a tree without reference cycles, and a collector rescanning
  a growing heap of 100,000 tasks costs as much as the validation itself.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

from stormproof.errors import InputRefused, SpecError
from stormproof.limits import (
    JsonRefused,
    Limits,
    active_limits,
    deep,
    estimate_tasks,
    has_long_digit_run,
    read_bounded,
    strict_json_loads,
    too_many_tasks,
)
from stormproof.spec.model import WorkflowSpec
from stormproof.spec.problems import Loc, Problem, render_problems, task_ids_in
from stormproof.spec.pydantic_errors import problems_from_pydantic
from stormproof.spec.validate import check_spec, graph_inputs_from_data, graph_problems
from stormproof.spec.yaml_events import EMPTY, EventBuilder, Loader, Refused

Format = Literal["json", "yaml"]
LineOf = Callable[[Loc], int | None]

_EXTENSIONS: dict[str, Format] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
#: Above this (~15,000 tasks) a file is machine-written: problems are reported without line
#: numbers, sparing the second parse (seconds and a gigabyte at 100,000 tasks) that finds them.
_LINES_MAX_CHARS = 4_000_000
_BINARY_PROBE_BYTES = 8192


def load_workflow(path: str | Path, limits: Limits | None = None) -> WorkflowSpec:
    """Read, parse and validate a workflow file; the format comes from the extension.

    ``.json`` is JSON, ``.yaml``/``.yml`` is YAML; any other extension is
    JSON if it looks like JSON (and parses), else YAML. ``limits`` default to
    ``active_limits()``.
    """
    path = Path(path)
    limits = limits or active_limits()
    content = read_bounded(path, "workflow file", limits.file_bytes)
    with gc_paused():
        return _parse(content, str(path), _EXTENSIONS.get(path.suffix.lower()), limits)


def parse_workflow(
    text: str, source: str, fmt: Format | None = None, limits: Limits | None = None
) -> WorkflowSpec:
    """Parse and validate workflow text; ``source`` names it in messages (a path, ``<stdin>``)."""
    with gc_paused():
        return _parse(text, source, fmt, limits or active_limits())


def _parse(content: str | bytes, source: str, fmt: Format | None, limits: Limits) -> WorkflowSpec:
    estimate = estimate_tasks(content)
    if estimate > limits.tasks:  # refused before a parse that would take minutes
        raise InputRefused(source, [too_many_tasks(estimate, limits, estimated=True)])
    if fmt == "yaml":
        return _parse_yaml(_decode(content, source), source, limits)
    if fmt == "json":
        return _parse_json(content, source, limits, yaml_fallback=False)
    if content.lstrip()[:1] in ("{", "[", b"{", b"["):
        return _parse_json(content, source, limits, yaml_fallback=True)
    return _parse_yaml(_decode(content, source), source, limits)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: 100k long-lived models make its full passes slow.

    Nesting is fine: only the outermost pause re-enables it, and only if it was enabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _decode(content: str | bytes, source: str) -> str:
    """UTF-8 text without a BOM, or a SpecError saying why the file is not a workflow."""
    if isinstance(content, bytes):
        if b"\x00" in content[:_BINARY_PROBE_BYTES]:
            raise SpecError(source, [_BINARY])
        raw = content
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            byte = raw[err.start]
            message = (
                f"line {line}: the file is not UTF-8 text (byte 0x{byte:02x} at offset "
                f"{err.start} cannot be read; save the file as UTF-8)"
            )
            raise SpecError(source, [message]) from None
    text = content.removeprefix("\ufeff")
    if "\x00" in text[:_BINARY_PROBE_BYTES]:
        raise SpecError(source, [_BINARY])
    _check_encodable(text, source)
    if not text or text.isspace():
        raise SpecError(source, ["the file is empty (a workflow needs at least name and tasks)"])
    return text


def _check_encodable(text: str, source: str) -> None:
    """Text handed in as ``str`` may hold lone surrogates (bytes that were not UTF-8)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            line = text.count("\n", 0, err.start) + 1
            message = f"line {line}: the text is not valid Unicode (it was not UTF-8 when read)"
            raise SpecError(source, [message]) from None


_BINARY = "this is a binary file, not a workflow (it contains NUL bytes; check the path)"


# --------------------------------------------------------------------------- JSON


def _parse_json(
    content: str | bytes, source: str, limits: Limits, *, yaml_fallback: bool
) -> WorkflowSpec:
    """The fast path: pydantic parses and validates the raw bytes in one go.

    pydantic keeps the last of a key given twice and takes numbers of any length, so its
    result stands only if the text has no long digit run and as many keys as the result
    holds (two cheap scans); otherwise the careful path finds and words the problem.
    """

    def slowly() -> WorkflowSpec:
        text = _decode(content, source)
        return _parse_json_slowly(text, source, limits, yaml_fallback=yaml_fallback)

    if has_long_digit_run(content, limits):
        return slowly()
    try:
        spec = WorkflowSpec.model_validate_json(content)
    except ValueError:  # ValidationError, including malformed JSON
        return slowly()
    if _keys_in_json_text(content) != _keys_in_spec(spec):
        return slowly()
    if len(spec.tasks) > limits.tasks:
        raise InputRefused(source, [too_many_tasks(len(spec.tasks), limits, estimated=False)])
    problems = check_spec(spec)
    if problems:
        text = content if isinstance(content, str) else content.decode("utf-8", "replace")
        raise _spec_error(source, problems, _spec_ids(spec), lambda: _json_lines(text))
    return spec


def _parse_json_slowly(
    text: str, source: str, limits: Limits, *, yaml_fallback: bool
) -> WorkflowSpec:
    """Parse again with the standard library, which says where the syntax breaks."""
    try:
        data = strict_json_loads(text, limits)
    except json.JSONDecodeError as err:
        message = _json_syntax_message(err, text)
        if yaml_fallback:  # a file of unknown type that is YAML after all, e.g. {a: 1}
            return _parse_yaml(text, source, limits, fallback_from=message)
        raise SpecError(source, [message]) from None
    except JsonRefused as err:
        raise InputRefused(source, [_at_line(err.line, err.text)]) from None
    return _validate_document(data, source, "json", lambda: _json_lines(text), limits)


def _at_line(line: int | None, text: str) -> str:
    return f"line {line}: {text}" if line else text


_KEY_WITH_SPACE = re.compile(rb'"[ \t\r\n]+:')


def _keys_in_json_text(content: str | bytes) -> int:
    """Keys in a JSON text: every key ends with ``":`` (maybe spaced). A string holding
    ``\\":`` counts too: an overcount only sends the file the careful way."""
    raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
    return raw.count(b'":') + len(_KEY_WITH_SPACE.findall(raw))


def _keys_in_spec(spec: WorkflowSpec) -> int:
    """Keys the parsed spec was given, counted the way the text spells them."""
    count = len(spec.model_fields_set)
    if "global_config" in spec.model_fields_set:
        count += len(spec.global_config.model_fields_set)
    for task in spec.tasks:
        count += len(task.model_fields_set) + len(task.environment) + len(task.labels)
        for rule in task.retry or ():
            count += len(rule.model_fields_set)
    return count


def _json_syntax_message(err: json.JSONDecodeError, text: str) -> str:
    hints = {
        "Expecting property name": "keys need double quotes, and JSON allows no trailing comma",
        "Expecting value": "a value is missing: a trailing comma, or an unquoted word?",
        "Expecting ',' delimiter": "a comma is missing, or a bracket is closed in the wrong place",
        "Expecting ':' delimiter": "a key must be followed by ':'",
        "Extra data": "something follows the end of the document: is a bracket closed too early?",
        "Unterminated string": 'a string is not closed with "',
        "Invalid control character": r"a string holds a raw line break or tab: write \n or \t",
        "Invalid \\escape": r"a backslash in a string must be doubled: \\",
    }
    if err.pos >= len(text.rstrip()):
        hint = "the file ends too early: is it complete?"
    else:
        hint = next((h for key, h in hints.items() if err.msg.startswith(key)), "")
    problem = err.msg[:1].lower() + err.msg[1:]
    return f"line {err.lineno}, column {err.colno}: invalid JSON: {problem}" + (
        f" ({hint})" if hint else ""
    )


def _json_lines(text: str) -> LineOf:
    """Line numbers for paths in a JSON text, by composing it as YAML; none for huge files."""
    node = _compose_quietly(text) if len(text) <= _LINES_MAX_CHARS else None
    if node is None:
        return lambda _: None
    return lambda loc: _line_in_tree(node, loc)


# --------------------------------------------------------------------------- YAML


def _parse_yaml(
    text: str, source: str, limits: Limits, *, fallback_from: str | None = None
) -> WorkflowSpec:
    """Build the document from parser events, then validate it; lines are found only on error.

    ``fallback_from`` is the JSON syntax message to report instead if the
    text is not a YAML mapping either (for files of unknown type).
    """
    builder = EventBuilder(text, limits)
    try:
        data = builder.build()
    except Refused as err:
        raise InputRefused(source, [str(err)]) from None
    except yaml.YAMLError as err:
        if "maximum nesting depth" in str(err) and isinstance(err, yaml.MarkedYAMLError):
            mark = err.problem_mark  # libyaml's own bound (1,000) met while scanning ahead
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise InputRefused(source, [where + deep(limits)]) from None
        raise SpecError(source, [fallback_from or _yaml_syntax_message(err)]) from None
    except RecursionError:
        raise SpecError(source, [deep(limits)]) from None
    if fallback_from and not isinstance(data, dict):
        raise SpecError(source, [fallback_from])
    if data is EMPTY:
        raise SpecError(source, ["the file holds only comments (a workflow needs name and tasks)"])
    return _validate_document(
        data, source, "yaml", lambda: _yaml_lines(text), limits, builder.duplicates
    )


def _yaml_lines(text: str) -> LineOf:
    """Line numbers for paths, from a composed node tree (its marks); composed only on error."""
    node = _compose_quietly(text) if len(text) <= _LINES_MAX_CHARS else None
    if node is None:
        return lambda _: None
    return lambda loc: _line_in_tree(node, loc)


def _compose_quietly(text: str) -> Node | None:
    loader = Loader(text)
    try:
        node: Node | None = loader.get_single_node()
        return node
    except (yaml.YAMLError, RecursionError):
        return None
    finally:
        loader.dispose()


def _yaml_syntax_message(err: yaml.YAMLError) -> str:
    if not isinstance(err, yaml.MarkedYAMLError):
        return f"invalid YAML: {str(err).splitlines()[0]}"
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = err.problem or err.context or "invalid YAML"
    context = ""
    if err.context and err.problem and err.context_mark and err.context_mark != mark:
        context = f", {err.context} at line {err.context_mark.line + 1}"
    hint = next((h for key, h in _YAML_HINTS.items() if key in f"{err.context} {problem}"), "")
    return f"{where}invalid YAML: {problem}{context}" + (f" ({hint})" if hint else "")


_YAML_HINTS = {
    "mapping values are not allowed": "check the indentation, or quote a value containing ': '",
    "did not find expected key": "check the indentation: keys of one mapping must line up",
    "did not find expected '-'": "check the indentation: items of one list must line up",
    "expected <block end>": "check the indentation of this line",
    "cannot start any token": "indent with spaces, not tabs, and quote values starting with @ or `",
    "could not find expected ':'": "a key needs ': ' after it, or a quote is not closed",
    "unexpected end of stream": "a quote or a bracket is not closed",
    "expected a single document": "the file holds more than one document: remove the extra '---'",
    "could not determine a constructor": "workflows are plain YAML: no custom '!' tags",
    "found undefined alias": "define the anchor (&name) before using it (*name)",
}


def _line_in_tree(root: Node, loc: Loc) -> int | None:
    """1-based line of the deepest node along ``loc``: the key for a field, the item for a list."""
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, MappingNode):
            pair = next((p for p in node.value if p[0].value == str(part)), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line, pair[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


# --------------------------------------------------------------------------- both


def _validate_document(
    data: Any,
    source: str,
    fmt: Format,
    lines: Callable[[], LineOf],
    limits: Limits,
    early: list[Problem] | None = None,
) -> WorkflowSpec:
    """Validate a parsed document; report model, graph and parse-time problems together."""
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else f"a single value ({data!r:.40})"
        message = f"the top level must be a mapping with name and tasks, got {got}"
        raise SpecError(source, [message])
    tasks = data.get("tasks")
    if isinstance(tasks, list) and len(tasks) > limits.tasks:
        raise InputRefused(source, [too_many_tasks(len(tasks), limits, estimated=False)])
    problems = list(early or [])
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as err:
        problems += problems_from_pydantic(err.errors(include_url=False), data, fmt)
        problems += graph_problems(*graph_inputs_from_data(data))
        raise _spec_error(source, problems, task_ids_in(data), lines) from None
    problems += check_spec(spec)
    if problems:
        raise _spec_error(source, problems, _spec_ids(spec), lines)
    return spec


def _spec_ids(spec: WorkflowSpec) -> Callable[[int], str | None]:
    tasks = spec.tasks
    return lambda i: tasks[i].id if 0 <= i < len(tasks) else None


def _spec_error(
    source: str,
    problems: list[Problem],
    id_of: Callable[[int], str | None],
    lines: Callable[[], LineOf],
) -> SpecError:
    return SpecError(source, render_problems(problems, id_of, lines()))
