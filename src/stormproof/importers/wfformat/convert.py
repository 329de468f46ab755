"""A WfFormat document to a stormproof workflow document: the import's one door.

``convert`` runs the steps in order (``reading``, ``graph``, ``task_documents``), stopping
after each that found problems, so every message a run shows is about the file as written.
``header_lines`` says, at the top of the written file, where it came from and what changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stormproof.importers.render import decimal_text
from stormproof.importers.wfformat.graph import dependency_order, identities, link
from stormproof.importers.wfformat.options import ImportOptions
from stormproof.importers.wfformat.reading import read_tasks, workflow_object
from stormproof.importers.wfformat.task_documents import (
    check_sleeps,
    fill_runtimes,
    sanitize_ids,
    task_document,
)
from stormproof.importers.wfformat.trace import Layout, Problems, finite, text_or_none


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
    problems = Problems(source)
    workflow = workflow_object(document, source)
    layout, tasks, has_execution = read_tasks(workflow, problems)
    problems.raise_if_any()
    index, fallback_index, what = identities(tasks, layout, problems)
    problems.raise_if_any()
    parents = link(tasks, index, fallback_index, what, problems)
    problems.raise_if_any()
    order = dependency_order(parents, tasks, source)
    defaulted = fill_runtimes(tasks, options.default_runtime, has_execution, source)
    check_sleeps(tasks, options.time_factor, source)
    ids = sanitize_ids([t.key for t in tasks])
    task_docs: list[dict[str, Any]] = []
    capped = 0
    for i in order:
        doc, was_capped = task_document(tasks[i], ids[i], [ids[p] for p in parents[i]], options)
        task_docs.append(doc)
        capped += was_capped
    version = _schema_version(document)
    makespan = _makespan(workflow)
    name = options.name or text_or_none(document.get("name")) or fallback_name
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
    return next((n for n in map(finite, candidates) if n is not None), None)


def _description(document: Mapping[str, Any], version: str | None, makespan: float | None) -> str:
    parts = [f"Imported from a WfFormat {version or '(no schemaVersion)'} instance"]
    system = document.get("runtimeSystem") or document.get("wms")
    if isinstance(system, dict) and text_or_none(system.get("name")):
        parts.append(f"run by {system['name']} {system.get('version') or ''}".rstrip())
    if makespan is not None:
        parts.append(f"traced makespan {decimal_text(makespan)} s")
    text = ", ".join(parts) + "."
    original = text_or_none(document.get("description"))
    return f"{text} {original}" if original else text


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
