"""The stormproof tasks made from traced ones: runtimes filled in, ids made valid, documents.

Each task keeps its traced runtime as ``estimated_runtime`` (what ``plan`` and simulations
use) and gets a stand-in command that sleeps that runtime times the *time factor*; its
resources are capped so a trace from a big node runs on a laptop; the original id, name and
command are kept as labels. WfFormat ids may hold characters stormproof ids cannot
(``sanitize_ids`` makes them valid, unique and stable). Kept apart from reading and linking:
this is where the trace's world meets stormproof's.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

from stormproof.importers.render import decimal_text
from stormproof.importers.wfformat.options import (
    DEFAULT_MEMORY_MIB,
    DEFAULT_VCPUS,
    ImportOptions,
)
from stormproof.importers.wfformat.trace import RUNTIME_KEYS, TracedTask, WfFormatError, show
from stormproof.spec.model import TASK_ID_PATTERN

_MIB = 1024 * 1024
_SLEEP_DECIMALS = 6  # microseconds: finer than any sleep is precise

_ID_OK = re.compile(TASK_ID_PATTERN)
_ID_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.-]")
_ID_MAX = 128
_HASH_CHARS = 8


def fill_runtimes(
    tasks: list[TracedTask], default: float | None, has_execution: bool, source: str
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


def check_sleeps(tasks: list[TracedTask], time_factor: float, source: str) -> None:
    """A time factor so large that a sleep overflows is refused, not written as ``inf``."""
    longest = max(tasks, key=lambda t: t.runtime or 0.0)
    if not math.isfinite((longest.runtime or 0.0) * time_factor):
        raise WfFormatError(
            source,
            [
                f"--time-factor {time_factor} makes {show(longest.key)} sleep forever "
                "(give a factor like 0.001, or 1 to sleep the real runtimes)"
            ],
        )


def _missing_runtime_message(missing: list[TracedTask], total: int, has_execution: bool) -> str:
    fix = "give them one with --default-runtime DURATION, like --default-runtime 60s"
    if not has_execution:
        return (
            "the file has no workflow.execution section (it describes a workflow but records "
            f"no run), so no task has a runtime: {fix}"
        )
    examples = ", ".join(f"{show(t.key)} ({_why_no_runtime(t)})" for t in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{len(missing)} of {total} tasks have no runtime: {examples}{more}; {fix}"


def _why_no_runtime(task: TracedTask) -> str:
    if task.measured_at is None:
        return f"{task.place} has no entry in workflow.execution.tasks"
    return f"{task.measured_at} has no {' or '.join(RUNTIME_KEYS)}"


def task_document(
    task: TracedTask, task_id: str, depends_on: list[str], options: ImportOptions
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
