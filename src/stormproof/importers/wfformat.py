"""WfFormat traces (WfCommons, WfInstances) as stormproof workflows, for plan, simulate and run.

A WfFormat instance records a real execution of a workflow: its DAG and, per
task, the runtime, cores and memory it had. Imported, each task keeps its
traced runtime as ``estimated_runtime`` (what ``plan`` and simulations use)
and gets a stand-in command that sleeps that runtime times a *time factor*,
so a real ``stormproof run`` replays the workflow's shape in seconds. The
original id, name and command are kept as labels.

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
  WfFormat migration tool does) or ``memoryInBytes``. Tasks there refer to
  each other by *name*, so names are the identity when they are unique,
  else ids.

Dependencies are the union of ``parents`` and ``children`` (files often
declare each edge at one end only). Everything is linear in the size of the
file: one index of ids, one pass per list, an iterative depth-first order.

The conversion is pure, document in and workflow document out
(``convert``); reading the file and writing the YAML live elsewhere.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stormproof.errors import SpecError
from stormproof.importers.render import decimal_text
from stormproof.spec.model import TASK_ID_PATTERN

Layout = Literal["split", "flat"]

#: Real runtimes times this is how long the stand-in commands sleep: a 10-minute task, 0.6 s.
DEFAULT_TIME_FACTOR = 0.001
DEFAULT_VCPUS = 1
DEFAULT_MEMORY_MIB = 1024
_MIB = 1024 * 1024
_KB = 1000
#: Problems listed in one error; the rest are counted. Nobody reads past twenty.
_MAX_LISTED = 20
#: ``did you mean`` compares against every id: only for a few problems, and not in huge files.
_MAX_SUGGESTIONS = 5
_MAX_IDS_FOR_SUGGESTIONS = 50_000
_SLEEP_DECIMALS = 6  # microseconds: finer than any sleep is precise

_ID_OK = re.compile(TASK_ID_PATTERN)
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_TEXT = 'holds a lone "\\udXXX" escape, which is no character (fix or remove it)'
_ID_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.-]")
_ID_MAX = 128
_HASH_CHARS = 8

_RUNTIME_KEYS = ("runtimeInSeconds", "runtime")
_CORES_KEYS = ("coreCount", "cores")
#: (key, bytes per unit): ``memory`` is the pre-1.4 name, in KB.
_MEMORY_KEYS = (("memoryInBytes", 1), ("memory", _KB))

#: Smallest allowed value of each numeric option (a cap of 0 would make tasks invalid).
_OPTION_MINIMA = {
    "time_factor": 0.0,
    "default_runtime": 0.0,
    "max_vcpus": 1e-9,
    "max_memory_mib": 1,
}

SKELETON = (
    'a WfFormat file looks like {"name": "...", "schemaVersion": "1.5", "workflow": '
    '{"specification": {"tasks": [{"id": "t1", "name": "...", "parents": [], "children": []}]}, '
    '"execution": {"tasks": [{"id": "t1", "runtimeInSeconds": 12.5}]}}}, or before 1.5 '
    '{"workflow": {"tasks": [{"name": "t1", "runtime": 12.5, "parents": []}]}}'
)


class WfFormatError(SpecError):
    """A WfFormat file that cannot be imported; each message names the place and the fix."""


@dataclass(frozen=True)
class ImportOptions:
    """What the user chose on the command line; the defaults are the command's defaults."""

    #: Stand-in commands sleep ``runtime * time_factor`` seconds (0: they return at once).
    time_factor: float = DEFAULT_TIME_FACTOR
    #: Seconds for tasks the file has no runtime for; ``None``: such tasks are an error.
    default_runtime: float | None = None
    #: Caps, so a trace from a 48-core node can run on a laptop (the originals go to labels).
    max_vcpus: float | None = None
    max_memory_mib: int | None = None
    #: The workflow's name; ``None``: the file's ``name``, else ``fallback_name``.
    name: str | None = None

    def __post_init__(self) -> None:
        # The command line checks these too, with friendlier words; this guards other callers.
        for field_name, least in _OPTION_MINIMA.items():
            value = getattr(self, field_name)
            if value is not None and not (math.isfinite(value) and value >= least):
                raise ValueError(f"{field_name} must be a finite number >= {least}, not {value!r}")


@dataclass(frozen=True)
class ImportResult:
    """The workflow document and what the header and summary say about it."""

    workflow: dict[str, Any]
    schema_version: str | None
    layout: Layout
    tasks: int
    edges: int
    makespan: float | None
    defaulted_runtimes: int
    capped: int


@dataclass(slots=True)
class _Task:
    """One task as read, before it is checked, linked and written."""

    place: str  # "workflow.specification.tasks[3]", for messages
    wf_id: str | None
    wf_name: str | None
    parent_refs: list[str]
    child_refs: list[str]
    key: str = ""  # the identity that references resolve to and the new id is made from
    runtime: float | None = None
    runtime_defaulted: bool = False
    cores: float | None = None
    memory_bytes: float | None = None
    command: str | None = None
    #: Where runtime, cores and memory were read: the task itself, or its execution entry.
    measured_at: str | None = None


class _Problems:
    """Problems found while reading; reported together, so one run of the command shows all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < _MAX_LISTED:
            self.messages.append(message)

    def raise_if_any(self) -> None:
        if self.count:
            more = self.count - len(self.messages)
            tail = [f"... and {more} more problem(s) like these"] if more else []
            raise WfFormatError(self.source, self.messages + tail)


# --------------------------------------------------------------------------- the conversion


def convert(
    document: Any,
    options: ImportOptions | None = None,
    source: str = "<wfformat>",
    fallback_name: str = "wfformat-import",
) -> ImportResult:
    """A stormproof workflow document from a parsed WfFormat document.

    ``source`` names the file in error messages; ``fallback_name`` is the
    workflow's name when neither the options nor the file give one.
    Raises ``WfFormatError`` naming every problem found (and the fix).
    """
    options = options or ImportOptions()
    problems = _Problems(source)
    workflow = _workflow_object(document, source)
    layout, tasks, has_execution = _read_tasks(workflow, problems)
    problems.raise_if_any()
    index, fallback_index, what = _identities(tasks, layout, problems)
    problems.raise_if_any()
    parents = _link(tasks, index, fallback_index, what, problems)
    problems.raise_if_any()
    order = _dependency_order(parents, tasks, source)
    defaulted = _fill_runtimes(tasks, options.default_runtime, has_execution, source)
    _check_sleeps(tasks, options.time_factor, source)
    ids = sanitize_ids([t.key for t in tasks])
    task_docs: list[dict[str, Any]] = []
    capped = 0
    for i in order:
        doc, was_capped = _task_document(tasks[i], ids[i], [ids[p] for p in parents[i]], options)
        task_docs.append(doc)
        capped += was_capped
    version = _schema_version(document)
    makespan = _makespan(workflow)
    name = options.name or _text_or_none(document.get("name")) or fallback_name
    return ImportResult(
        workflow={
            "name": name,
            "description": _description(document, version, makespan),
            "tasks": task_docs,
        },
        schema_version=version,
        layout=layout,
        tasks=len(tasks),
        edges=sum(map(len, parents)),
        makespan=makespan,
        defaulted_runtimes=defaulted,
        capped=capped,
    )


# --------------------------------------------------------------------------- reading


def _workflow_object(document: Any, source: str) -> Mapping[str, Any]:
    """``document["workflow"]``, or an error that says what a WfFormat file looks like."""
    if not isinstance(document, dict):
        problem = f"the top level is {_kind(document)}, not an object, so this is not WfFormat"
        raise WfFormatError(source, [f"{problem}; {SKELETON}"])
    workflow = document.get("workflow")
    if workflow is None:
        already = "tasks" in document and "workflow" not in document
        hint = " (it looks like a stormproof workflow already: run it as it is)" if already else ""
        problem = f'the top-level key "workflow" is missing, so this is not WfFormat{hint}'
        raise WfFormatError(source, [f"{problem}; {SKELETON}"])
    if not isinstance(workflow, dict):
        problem = f'"workflow" should be an object, but it is {_kind(workflow)}'
        raise WfFormatError(source, [f"{problem}; {SKELETON}"])
    return workflow


def _read_tasks(
    workflow: Mapping[str, Any], problems: _Problems
) -> tuple[Layout, list[_Task], bool]:
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
        raise WfFormatError(source, [f"{place} should be an object, but it is {_kind(value)}"])
    return value


def _task_list(parent: Mapping[str, Any], key: str, place: str, source: str) -> list[Any]:
    items = parent.get(key)
    if items is None:
        raise WfFormatError(source, [f'{place} has no "{key}" list; {SKELETON}'])
    if not isinstance(items, list):
        raise WfFormatError(source, [f"{place}.{key} should be a list, but it is {_kind(items)}"])
    if not items:
        raise WfFormatError(source, [f"{place}.{key} is empty: there is no task to import"])
    return items


def _spec_task(item: Any, place: str, problems: _Problems) -> _Task:
    """A 1.5 specification entry: identity and edges only."""
    if not isinstance(item, dict):
        problems.add(
            f'{place} should be an object like {{"id": "t1", "parents": []}}, not {_kind(item)}'
        )
        return _Task(place, None, None, [], [])
    task_id = _text(item, "id", place, problems, required=True)
    task = _Task(
        place,
        task_id,
        _text(item, "name", place, problems),
        _references(item, "parents", place, problems),
        _references(item, "children", place, problems),
    )
    task.key = task_id or ""
    return task


def _flat_task(item: Any, place: str, problems: _Problems) -> _Task:
    """A pre-1.5 entry: identity, edges and measurements in one object."""
    if not isinstance(item, dict):
        problems.add(
            f'{place} should be an object like {{"name": "t1", "parents": []}}, not {_kind(item)}'
        )
        return _Task(place, None, None, [], [])
    task = _Task(
        place,
        _text(item, "id", place, problems),
        _text(item, "name", place, problems),
        _references(item, "parents", place, problems),
        _references(item, "children", place, problems),
    )
    _read_measurements(task, item, place, problems)
    return task


def _join_execution(tasks: list[_Task], execution: Mapping[str, Any], problems: _Problems) -> None:
    """Attach each ``execution.tasks[]`` entry to the specification task of the same id."""
    items = execution.get("tasks")
    if not isinstance(items, list):
        problems.add(
            f"workflow.execution should hold a tasks list (one entry per task, with "
            f"runtimeInSeconds), but it has {_kind(items) if items is not None else 'none'}"
        )
        return
    by_id = {t.wf_id: t for t in reversed(tasks) if t.wf_id is not None}
    for i, item in enumerate(items):
        place = f"workflow.execution.tasks[{i}]"
        if not isinstance(item, dict):
            example = '{"id": "t1", "runtimeInSeconds": 12.5}'
            problems.add(f"{place} should be an object like {example}, not {_kind(item)}")
            continue
        task_id = _text(item, "id", place, problems, required=True)
        if task_id is None:
            continue
        task = by_id.get(task_id)
        if task is None:
            problems.add(
                f"{place}: id {_show(task_id)} is not in workflow.specification.tasks "
                "(fix the id, or remove the entry)"
            )
        elif task.measured_at is not None:
            problems.add(
                f"{place}: id {_show(task_id)} has an execution entry already, "
                f"{task.measured_at} (remove one)"
            )
        else:
            _read_measurements(task, item, place, problems)


def _read_measurements(
    task: _Task, item: Mapping[str, Any], place: str, problems: _Problems
) -> None:
    """Runtime, cores, memory and command, under the names any WfFormat version used."""
    task.measured_at = place
    task.runtime = _number(item, _RUNTIME_KEYS, place, "seconds", problems)
    task.cores = _number(item, _CORES_KEYS, place, "cores", problems)
    for key, unit in _MEMORY_KEYS:
        if item.get(key) is not None:
            memory = _number(item, (key,), place, "bytes" if unit == 1 else "KB", problems)
            task.memory_bytes = None if memory is None else memory * unit
            break
    task.command = _command_text(item, place, problems)


def _number(
    item: Mapping[str, Any], keys: Sequence[str], place: str, unit: str, problems: _Problems
) -> float | None:
    """The first of ``keys`` that is set, as a finite non-negative float (``null`` is unset)."""
    for key in keys:
        value = item.get(key)
        if value is None:
            continue
        number = _finite(value)
        if number is None:
            problems.add(f"{place}.{key} should be a number of {unit}, but it is {_show(value)}")
        elif number < 0:
            problems.add(f"{place}.{key} cannot be negative, but it is {_show(value)}")
        else:
            return number
        return None
    return None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _command_text(item: Mapping[str, Any], place: str, problems: _Problems) -> str | None:
    """The original command as one shell-quoted line: ``{program, arguments}``, or 1.2's list."""
    command = item.get("command")
    if command is None or command == {}:
        command = {"arguments": item["arguments"]} if "arguments" in item else None
    if command is None:
        return None
    if isinstance(command, str):  # not in the schema, but unambiguous: the command line itself
        if _is_text(command):
            return command.strip() or None
        problems.add(f"{place}.command {_NOT_TEXT}")
        return None
    if not isinstance(command, dict):
        example = '{"program": "...", "arguments": []}'
        problems.add(f"{place}.command should be an object like {example}, not {_kind(command)}")
        return None
    program = _text(command, "program", f"{place}.command", problems)
    arguments = command.get("arguments") or []
    if not isinstance(arguments, list) or not all(map(_is_scalar, arguments)):
        problems.add(
            f"{place}.command.arguments should be a list of strings, but it is {_show(arguments)}"
        )
        return None
    words = ([program] if program else []) + [_word(a) for a in arguments]
    line = shlex.join(words) if words else None
    if line is not None and not _is_text(line):
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
    item: Mapping[str, Any], key: str, place: str, problems: _Problems, *, required: bool = False
) -> str | None:
    value = item.get(key)
    if isinstance(value, str) and value:
        if _is_text(value):
            return value
        problems.add(f"{place}.{key} {_NOT_TEXT}")
        return None
    if value is None and not required:
        return None
    what = "is missing" if value is None else f"is {_show(value)}"
    problems.add(f"{place}.{key} should be a non-empty string, but it {what}")
    return None


def _is_text(text: str) -> bool:
    """False if ``text`` has a lone surrogate: JSON's "\\ud800" loads, UTF-8 cannot hold it."""
    return text.isascii() or _SURROGATE.search(text) is None


def _references(item: Mapping[str, Any], key: str, place: str, problems: _Problems) -> list[str]:
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(
            f"{place}.{key} should be a list of task ids (strings), but it is {_show(value)}"
        )
        return []
    if not all(map(_is_text, value)):
        problems.add(f"{place}.{key} {_NOT_TEXT}")
        return []
    return value


# --------------------------------------------------------------------------- the graph


def _identities(
    tasks: list[_Task], layout: Layout, problems: _Problems
) -> tuple[dict[str, int], dict[str, int], str]:
    """Which field names a task (``key``), its index, and a second index references may use.

    1.5 references are ids. Before 1.5 they are names (the generator keyed its
    tasks by name); a hand-made file may use ids instead, so whichever field is
    unique across all tasks is the identity (names first), and the other, when
    it is unique too, resolves references the first does not.
    """
    if layout == "split":
        return _unique_index(tasks, "id", problems), {}, "id"
    by_name = _index_if_unique([t.wf_name for t in tasks])
    by_id = _index_if_unique([t.wf_id for t in tasks])
    if by_name is not None:
        for t in tasks:
            t.key = t.wf_name or ""
        return by_name, by_id or {}, "name"
    if by_id is not None:
        for t in tasks:
            t.key = t.wf_id or ""
        return by_id, {}, "id"
    _unique_index(tasks, "name", problems)  # says which name is missing or repeated
    return {}, {}, "name"


def _index_if_unique(values: list[str | None]) -> dict[str, int] | None:
    index = {v: i for i, v in enumerate(values) if v is not None}
    return index if len(index) == len(values) else None


def _unique_index(tasks: list[_Task], field: str, problems: _Problems) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        value = task.wf_id if field == "id" else task.wf_name
        if value is None:
            problems.add(f"{task.place} has no {field}: every task needs a unique one")
        elif value in index:
            first = tasks[index[value]].place
            problems.add(
                f"{task.place}: {field} {_show(value)} is used by {first} too (make them unique)"
            )
        else:
            index[value] = i
    return index


def _link(
    tasks: list[_Task],
    index: Mapping[str, int],
    fallback: Mapping[str, int],
    what: str,
    problems: _Problems,
) -> list[list[int]]:
    """Each task's parents as indices: the union of ``parents`` and the others' ``children``."""
    parents: list[list[int]] = [[] for _ in tasks]
    suggestions = [_MAX_SUGGESTIONS if len(index) <= _MAX_IDS_FOR_SUGGESTIONS else 0]

    def resolve(ref: str, i: int, key: str) -> int | None:
        j = index.get(ref)
        if j is None:
            j = fallback.get(ref)
        if j is None:
            hint = _did_you_mean(ref, index, suggestions)
            problems.add(
                f"{tasks[i].place}.{key}: {_show(ref)} is not the {what} of any task{hint}"
            )
        elif j == i:
            problems.add(f"{tasks[i].place}.{key}: the task lists itself (remove {_show(ref)})")
            return None
        return j

    for i, task in enumerate(tasks):  # a task's own parents first, in its order
        for ref in task.parent_refs:
            j = resolve(ref, i, "parents")
            if j is not None:
                parents[i].append(j)
    for i, task in enumerate(tasks):
        for ref in task.child_refs:
            j = resolve(ref, i, "children")
            if j is not None:
                parents[j].append(i)
    return [list(dict.fromkeys(p)) if len(p) > 1 else p for p in parents]


def _did_you_mean(ref: str, index: Mapping[str, int], budget: list[int]) -> str:
    if budget[0] <= 0:
        return ""
    budget[0] -= 1
    close = difflib.get_close_matches(ref, index.keys(), n=1)
    return f" (did you mean {_show(close[0])}?)" if close else ""


def _dependency_order(parents: list[list[int]], tasks: list[_Task], source: str) -> list[int]:
    """Every task after its parents, in file order where the file allows; a cycle is an error.

    A depth-first walk that emits a task once its parents are out: a file
    already in dependency order comes out unchanged. Iterative, so a chain of
    a million tasks does not hit the recursion limit.
    """
    state = bytearray(len(parents))  # 0 not seen, 1 on the current path, 2 emitted
    order: list[int] = []
    for root in range(len(parents)):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, 0)]
        while stack:
            node, next_parent = stack[-1]
            node_parents = parents[node]
            if next_parent == len(node_parents):
                stack.pop()
                state[node] = 2
                order.append(node)
                continue
            stack[-1] = (node, next_parent + 1)
            parent = node_parents[next_parent]
            if state[parent] == 0:
                state[parent] = 1
                stack.append((parent, 0))
            elif state[parent] == 1:
                raise WfFormatError(source, [_cycle_message([n for n, _ in stack], parent, tasks)])
    return order


def _cycle_message(path: list[int], parent: int, tasks: list[_Task]) -> str:
    # path[k] == parent, each next node is a parent of the one before, and parent is a parent
    # of path[-1]: read backwards, parent -> path[-1] -> ... -> path[k] is a loop.
    loop = [parent, *reversed(path[path.index(parent) :])]
    shown = " -> ".join(_show(tasks[i].key) for i in loop)
    return (
        f"the dependencies form a cycle: {shown} (each is a parent of the next; a workflow must "
        "have none: remove one of these links from parents/children)"
    )


# --------------------------------------------------------------------------- writing


def _fill_runtimes(
    tasks: list[_Task], default: float | None, has_execution: bool, source: str
) -> int:
    """Give tasks without a runtime the default, or say which they are and how to fix it."""
    missing = [t for t in tasks if t.runtime is None]
    if not missing:
        return 0
    if default is None:
        raise WfFormatError(source, [_missing_runtime_message(missing, len(tasks), has_execution)])
    for task in missing:
        task.runtime = default
        task.runtime_defaulted = True
    return len(missing)


def _check_sleeps(tasks: list[_Task], time_factor: float, source: str) -> None:
    """A time factor so large that a sleep overflows is refused, not written as ``inf``."""
    longest = max(tasks, key=lambda t: t.runtime or 0.0)
    if not math.isfinite((longest.runtime or 0.0) * time_factor):
        raise WfFormatError(
            source,
            [
                f"--time-factor {time_factor} makes {_show(longest.key)} sleep forever "
                "(give a factor like 0.001, or 1 to sleep the real runtimes)"
            ],
        )


def _missing_runtime_message(missing: list[_Task], total: int, has_execution: bool) -> str:
    fix = "give them one with --default-runtime DURATION, like --default-runtime 60s"
    if not has_execution:
        return (
            "the file has no workflow.execution section (it describes a workflow but records "
            f"no run), so no task has a runtime: {fix}"
        )
    examples = ", ".join(f"{_show(t.key)} ({_why_no_runtime(t)})" for t in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{len(missing)} of {total} tasks have no runtime: {examples}{more}; {fix}"


def _why_no_runtime(task: _Task) -> str:
    if task.measured_at is None:
        return f"{task.place} has no entry in workflow.execution.tasks"
    return f"{task.measured_at} has no {' or '.join(_RUNTIME_KEYS)}"


def _task_document(
    task: _Task, task_id: str, depends_on: list[str], options: ImportOptions
) -> tuple[dict[str, Any], bool]:
    """The stormproof task, in the order a person reads it; and whether a cap applied."""
    runtime = task.runtime if task.runtime is not None else 0.0
    doc: dict[str, Any] = {"id": task_id}
    if task.wf_name and task.wf_name != task_id:
        doc["name"] = task.wf_name
    doc["command"] = ["sleep", decimal_text(round(runtime * options.time_factor, _SLEEP_DECIMALS))]
    vcpus, vcpus_capped = _resource(task.cores, DEFAULT_VCPUS, options.max_vcpus)
    memory, memory_capped = _resource(
        _memory_mib(task.memory_bytes), DEFAULT_MEMORY_MIB, options.max_memory_mib
    )
    doc["vcpus"] = int(vcpus) if vcpus == int(vcpus) else vcpus
    doc["memory"] = int(memory)
    if depends_on:
        doc["depends_on"] = depends_on
    doc["estimated_runtime"] = runtime
    labels = {"wf_id": task.wf_id or task.key}
    if task.wf_name and task.wf_name != labels["wf_id"]:
        labels["wf_name"] = task.wf_name
    if task.command:
        labels["wf_command"] = task.command
    if task.runtime_defaulted:
        labels["wf_runtime"] = "default"
    if vcpus_capped:
        labels["wf_cores"] = decimal_text(task.cores or DEFAULT_VCPUS)
    if memory_capped:
        labels["wf_memory_bytes"] = decimal_text(task.memory_bytes or 0)
    doc["labels"] = labels
    return doc, vcpus_capped or memory_capped


def _memory_mib(memory_bytes: float | None) -> int | None:
    """Whole MiB, rounded up (a 70 KB task still needs its MiB); ``None`` when not traced."""
    return math.ceil(memory_bytes / _MIB) if memory_bytes else None


def _resource(traced: float | None, default: float, cap: float | None) -> tuple[float, bool]:
    """The traced value (0 or none: the default), at most ``cap``; and whether a trace was cut.

    The cap applies to defaults too (every task must fit where the replay runs),
    but only a cut traced value is worth a label.
    """
    value = traced or default
    if cap is None or value <= cap:
        return value, False
    return cap, bool(traced)


def sanitize_ids(originals: Sequence[str]) -> list[str]:
    """Stormproof task ids for WfFormat ids: the same where valid, unique, and deterministic.

    WfFormat ids may hold ``# : /`` and run long; stormproof ids are file
    names (``TASK_ID_PATTERN``). Valid ids are kept, so they can never be
    taken by a changed one. Others get each bad character replaced by ``_``,
    a leading ``t`` if they do not start with a letter or digit, and, when
    too long or when the result is taken, a suffix from a hash of the
    original (stable whatever the order of the tasks); a counter settles the
    astronomically rare case where even that is taken.
    """
    taken = {o for o in originals if _ID_OK.match(o)}
    result: list[str] = []
    for original in originals:
        if _ID_OK.match(original):
            result.append(original)
            continue
        candidate = _clean_id(original)
        if len(candidate) > _ID_MAX or candidate in taken:
            candidate = _hashed_id(candidate, original, taken)
        taken.add(candidate)
        result.append(candidate)
    return result


def _clean_id(original: str) -> str:
    cleaned = _ID_BAD_CHAR.sub("_", original)
    return cleaned if cleaned[:1].isalnum() else "t" + cleaned


def _hashed_id(candidate: str, original: str, taken: set[str]) -> str:
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    stem = candidate[: _ID_MAX - _HASH_CHARS - 1]
    hashed = f"{stem}-{digest}"
    counter = 1
    while hashed in taken:
        counter += 1
        suffix = f"-{digest}-{counter}"
        hashed = candidate[: _ID_MAX - len(suffix)] + suffix
    return hashed


# --------------------------------------------------------------------------- metadata


def _schema_version(document: Mapping[str, Any]) -> str | None:
    version = document.get("schemaVersion")
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        return None
    return str(version)


def _makespan(workflow: Mapping[str, Any]) -> float | None:
    """The traced makespan, wherever this version keeps it (only informative: not checked)."""
    execution = workflow.get("execution")
    candidates = [execution.get("makespanInSeconds")] if isinstance(execution, dict) else []
    candidates += [workflow.get("makespanInSeconds"), workflow.get("makespan")]
    return next((n for n in map(_finite, candidates) if n is not None), None)


def _description(document: Mapping[str, Any], version: str | None, makespan: float | None) -> str:
    parts = [f"Imported from a WfFormat {version or '(no schemaVersion)'} instance"]
    system = document.get("runtimeSystem") or document.get("wms")
    if isinstance(system, dict) and _text_or_none(system.get("name")):
        parts.append(f"run by {system['name']} {system.get('version') or ''}".rstrip())
    if makespan is not None:
        parts.append(f"traced makespan {decimal_text(makespan)} s")
    text = ", ".join(parts) + "."
    original = _text_or_none(document.get("description"))
    return f"{text} {original}" if original else text


def _text_or_none(value: Any) -> str | None:
    """A non-blank string, else ``None`` (for fields that only inform: name, description)."""
    if not isinstance(value, str) or not _is_text(value):
        return None
    return value.strip() or None


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number" if isinstance(value, (int, float)) else "a value")


def _show(value: Any, limit: int = 60) -> str:
    """A value as it looks in the JSON file, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if not _is_text(text):
        text = json.dumps(value)  # lone surrogates as \\udXXX escapes, printable anywhere
    return text if len(text) <= limit else text[: limit - 3] + "..."


def header_lines(result: ImportResult, source: str, options: ImportOptions) -> list[str]:
    """The comment at the top of the written file: where it came from, and what was changed."""
    factor = decimal_text(options.time_factor)
    facts = [f"WfFormat {result.schema_version or '(no schemaVersion)'}"]
    facts += [f"{result.tasks} tasks", f"{result.edges} dependencies"]
    if result.makespan is not None:
        facts.append(f"traced makespan {decimal_text(result.makespan)} s")
    lines = [
        f"Imported by `stormproof import wfformat` from {source}",
        f"({', '.join(facts)}).",
        f"command: a stand-in that sleeps the traced runtime x {factor} (--time-factor {factor});",
        "estimated_runtime: the traced runtime, unscaled (what `stormproof plan` uses);",
        "labels: the original id (wf_id), name (wf_name, if different) and command (wf_command).",
    ]
    if result.defaulted_runtimes and options.default_runtime is not None:
        lines.append(
            f"{result.defaulted_runtimes} task(s) had no runtime and got --default-runtime "
            f"{decimal_text(options.default_runtime)} s (label wf_runtime: default)."
        )
    if result.capped:
        lines.append(
            f"{result.capped} task(s) were capped by --max-vcpus/--max-memory "
            "(the traced values are in labels wf_cores, wf_memory_bytes)."
        )
    return lines
