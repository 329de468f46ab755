"""The tasks of a WfFormat document, read from either layout into ``TracedTask``s.

Two layouts are read:

* **1.5 and later** (``workflow.specification`` + ``workflow.execution``):
  the DAG in ``specification.tasks[]`` (``id``, ``name``, ``parents``,
  ``children``), the measurements in ``execution.tasks[]`` (``id``,
  ``runtimeInSeconds``, ``coreCount``, ``memoryInBytes``, ``command``),
  joined by ``id``. ``execution`` is optional in the format (a workflow
  *description*); then every runtime comes from ``--default-runtime``.
* **up to 1.4** (what the ``wfcommons`` generator wrote): one flat
  ``workflow.tasks[]`` (``jobs[]`` before 1.3) holding both, with ``runtime``
  or ``runtimeInSeconds``, ``cores``, ``memory`` (KB, times 1000 as the
  WfFormat migration tool does) or ``memoryInBytes``.

Kept apart because it is about the file's shapes and its many versions' names for the same
things; what comes after (``graph``, ``task_documents``) sees only ``TracedTask``s. Every
malformed value becomes a problem naming its place and the fix; a file that is not WfFormat
at all stops at once, with what a WfFormat file looks like (``SKELETON``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from stormproof.importers.wfformat.trace import (
    RUNTIME_KEYS,
    Layout,
    Problems,
    TracedTask,
    WfFormatError,
    finite,
    is_text,
    kind,
    show,
)

_KB = 1000
_NOT_TEXT = 'holds a lone "\\udXXX" escape, which is no character (fix or remove it)'
_CORES_KEYS = ("coreCount", "cores")
#: (key, bytes per unit): ``memory`` is the pre-1.4 name, in KB.
_MEMORY_KEYS = (("memoryInBytes", 1), ("memory", _KB))

SKELETON = (
    'a WfFormat file looks like {"name": "...", "schemaVersion": "1.5", "workflow": '
    '{"specification": {"tasks": [{"id": "t1", "name": "...", "parents": [], "children": []}]}, '
    '"execution": {"tasks": [{"id": "t1", "runtimeInSeconds": 12.5}]}}}, or before 1.5 '
    '{"workflow": {"tasks": [{"name": "t1", "runtime": 12.5, "parents": []}]}}'
)


def workflow_object(document: Any, source: str) -> Mapping[str, Any]:
    """``document["workflow"]``, or an error that says what a WfFormat file looks like."""
    if not isinstance(document, dict):
        problem = f"the top level is {kind(document)}, not an object, so this is not WfFormat"
        raise WfFormatError(source, [f"{problem}; {SKELETON}"])
    workflow = document.get("workflow")
    if workflow is None:
        already = "tasks" in document and "workflow" not in document
        hint = " (it looks like a stormproof workflow already: run it as it is)" if already else ""
        problem = f'the top-level key "workflow" is missing, so this is not WfFormat{hint}'
        raise WfFormatError(source, [f"{problem}; {SKELETON}"])
    if not isinstance(workflow, dict):
        problem = f'"workflow" should be an object, but it is {kind(workflow)}'
        raise WfFormatError(source, [f"{problem}; {SKELETON}"])
    return workflow


def read_tasks(
    workflow: Mapping[str, Any], problems: Problems
) -> tuple[Layout, list[TracedTask], bool]:
    """The tasks in either layout, and whether the file has execution data at all."""
    if "specification" in workflow:
        spec = _object(workflow["specification"], "workflow.specification", problems.source)
        items = _task_list(spec, "tasks", "workflow.specification", problems.source)
        tasks = [
            _spec_task(item, f"workflow.specification.tasks[{i}]", problems)
            for i, item in enumerate(items)
        ]
        execution = workflow.get("execution")
        if execution is None:
            return "split", tasks, False
        execution = _object(execution, "workflow.execution", problems.source)
        _join_execution(tasks, execution, problems)
        return "split", tasks, True
    for key in ("tasks", "jobs"):  # "jobs" up to WfFormat 1.2
        if key in workflow:
            items = _task_list(workflow, key, "workflow", problems.source)
            tasks = [
                _flat_task(item, f"workflow.{key}[{i}]", problems) for i, item in enumerate(items)
            ]
            return "flat", tasks, True
    problem = (
        'the "workflow" object has neither "specification" (WfFormat 1.5 and later) '
        'nor "tasks" (1.3 and 1.4)'
    )
    raise WfFormatError(problems.source, [f"{problem}; {SKELETON}"])


def _object(value: Any, place: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WfFormatError(source, [f"{place} should be an object, but it is {kind(value)}"])
    return value


def _task_list(parent: Mapping[str, Any], key: str, place: str, source: str) -> list[Any]:
    items = parent.get(key)
    if items is None:
        raise WfFormatError(source, [f'{place} has no "{key}" list; {SKELETON}'])
    if not isinstance(items, list):
        raise WfFormatError(source, [f"{place}.{key} should be a list, but it is {kind(items)}"])
    if not items:
        raise WfFormatError(source, [f"{place}.{key} is empty: there is no task to import"])
    return items


def _spec_task(item: Any, place: str, problems: Problems) -> TracedTask:
    """A 1.5 specification entry: identity and edges only."""
    if not isinstance(item, dict):
        problems.add(
            f'{place} should be an object like {{"id": "t1", "parents": []}}, not {kind(item)}'
        )
        return TracedTask(place, None, None, [], [])
    task_id = _text(item, "id", place, problems, required=True)
    task = TracedTask(
        place,
        task_id,
        _text(item, "name", place, problems),
        _references(item, "parents", place, problems),
        _references(item, "children", place, problems),
    )
    task.key = task_id or ""
    return task


def _flat_task(item: Any, place: str, problems: Problems) -> TracedTask:
    """A pre-1.5 entry: identity, edges and measurements in one object."""
    if not isinstance(item, dict):
        problems.add(
            f'{place} should be an object like {{"name": "t1", "parents": []}}, not {kind(item)}'
        )
        return TracedTask(place, None, None, [], [])
    task = TracedTask(
        place,
        _text(item, "id", place, problems),
        _text(item, "name", place, problems),
        _references(item, "parents", place, problems),
        _references(item, "children", place, problems),
    )
    _read_measurements(task, item, place, problems)
    return task


def _join_execution(
    tasks: list[TracedTask], execution: Mapping[str, Any], problems: Problems
) -> None:
    """Attach each ``execution.tasks[]`` entry to the specification task of the same id."""
    items = execution.get("tasks")
    if not isinstance(items, list):
        problems.add(
            f"workflow.execution should hold a tasks list (one entry per task, with "
            f"runtimeInSeconds), but it has {kind(items) if items is not None else 'none'}"
        )
        return
    by_id = {t.wf_id: t for t in reversed(tasks) if t.wf_id is not None}
    for i, item in enumerate(items):
        place = f"workflow.execution.tasks[{i}]"
        if not isinstance(item, dict):
            example = '{"id": "t1", "runtimeInSeconds": 12.5}'
            problems.add(f"{place} should be an object like {example}, not {kind(item)}")
            continue
        task_id = _text(item, "id", place, problems, required=True)
        if task_id is None:
            continue
        task = by_id.get(task_id)
        if task is None:
            problems.add(
                f"{place}: id {show(task_id)} is not in workflow.specification.tasks "
                "(fix the id, or remove the entry)"
            )
        elif task.measured_at is not None:
            problems.add(
                f"{place}: id {show(task_id)} has an execution entry already, "
                f"{task.measured_at} (remove one)"
            )
        else:
            _read_measurements(task, item, place, problems)


def _read_measurements(
    task: TracedTask, item: Mapping[str, Any], place: str, problems: Problems
) -> None:
    """Runtime, cores, memory and command, under the names any WfFormat version used."""
    task.measured_at = place
    task.runtime = _number(item, RUNTIME_KEYS, place, "seconds", problems)
    task.cores = _number(item, _CORES_KEYS, place, "cores", problems)
    for key, unit in _MEMORY_KEYS:
        if item.get(key) is not None:
            memory = _number(item, (key,), place, "bytes" if unit == 1 else "KB", problems)
            task.memory_bytes = None if memory is None else memory * unit
            break
    task.command = _command_text(item, place, problems)


def _number(
    item: Mapping[str, Any], keys: Sequence[str], place: str, unit: str, problems: Problems
) -> float | None:
    """The first of ``keys`` that is set, as a finite non-negative float (``null`` is unset)."""
    for key in keys:
        value = item.get(key)
        if value is None:
            continue
        number = finite(value)
        if number is None:
            problems.add(f"{place}.{key} should be a number of {unit}, but it is {show(value)}")
        elif number < 0:
            problems.add(f"{place}.{key} cannot be negative, but it is {show(value)}")
        else:
            return number
        return None
    return None


def _command_text(item: Mapping[str, Any], place: str, problems: Problems) -> str | None:
    """The original command as one shell-quoted line: ``{program, arguments}``, or 1.2's list."""
    command = item.get("command")
    if command is None or command == {}:
        command = {"arguments": item["arguments"]} if "arguments" in item else None
    if command is None:
        return None
    if isinstance(command, str):  # not in the schema, but unambiguous: the command line itself
        if is_text(command):
            return command.strip() or None
        problems.add(f"{place}.command {_NOT_TEXT}")
        return None
    if not isinstance(command, dict):
        example = '{"program": "...", "arguments": []}'
        problems.add(f"{place}.command should be an object like {example}, not {kind(command)}")
        return None
    program = _text(command, "program", f"{place}.command", problems)
    arguments = command.get("arguments") or []
    if not isinstance(arguments, list) or not all(map(_is_scalar, arguments)):
        problems.add(
            f"{place}.command.arguments should be a list of strings, but it is {show(arguments)}"
        )
        return None
    words = ([program] if program else []) + [_word(a) for a in arguments]
    line = shlex.join(words) if words else None
    if line is not None and not is_text(line):
        problems.add(f"{place}.command {_NOT_TEXT}")
        return None
    return line


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _word(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _text(
    item: Mapping[str, Any], key: str, place: str, problems: Problems, *, required: bool = False
) -> str | None:
    value = item.get(key)
    if isinstance(value, str) and value:
        if is_text(value):
            return value
        problems.add(f"{place}.{key} {_NOT_TEXT}")
        return None
    if value is None and not required:
        return None
    what = "is missing" if value is None else f"is {show(value)}"
    problems.add(f"{place}.{key} should be a non-empty string, but it {what}")
    return None


def _references(item: Mapping[str, Any], key: str, place: str, problems: Problems) -> list[str]:
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(
            f"{place}.{key} should be a list of task ids (strings), but it is {show(value)}"
        )
        return []
    if not all(map(is_text, value)):
        problems.add(f"{place}.{key} {_NOT_TEXT}")
        return []
    return value
