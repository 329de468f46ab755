"""A task's fingerprint: a hash of everything that defines its result.

``run --reuse`` reuses a task of an earlier run whose fingerprint matches, and ``redrive``
keeps a succeeded task whose fingerprint did not change. Wrong reuse is worse than none, so
the fingerprint takes in whatever can change what a task produces, and leaves out what
cannot:

* **in**: the task's id (``${STORMPROOF_TASK}`` may name its files), ``command`` (as
  written, before ``${STORMPROOF_*}`` expansion, whose paths differ in every run),
  ``environment``, the container it runs in (``container_image`` and the configured
  runtime; no runtime means the host), the resources that change results (``nodes``,
  ``gpus``, ``type``), the declared ``outputs``, the content of every declared ``inputs``
  file, and the fingerprints of its parents, so a change reaches everything downstream;
* **out**: names, retries, timeouts, checkpoint settings, ``vcpus`` and ``memory``
  (raising memory after an out-of-memory failure must not invalidate finished work),
  ``estimated_runtime``, labels, the pools.

Inputs are hashed by **content** (SHA-256), not by modification time and size: a copy,
a ``git checkout`` or a restore from backup changes mtimes without changing content
(a needless rerun), and an edit that keeps the size within the filesystem's mtime
granularity would keep both (a wrong reuse). Each distinct input is read once per plan.
A folder's hash covers the relative paths and contents of every file under it.

The parts of a task's definition are kept beside the hash (``Definition.parts``) and
recorded with each result, so that a rerun can say *what* changed (``command changed``,
``input changed: params.yaml``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stormproof.errors import SpecError
from stormproof.plan.graph import Dag
from stormproof.spec.model import TaskSpec, WorkflowSpec

#: Bump when what goes into a fingerprint changes: results recorded under another version
#: then never match, which reruns them (the safe side).
FINGERPRINT_VERSION = 1
#: The parts of a definition, in the order reasons name them.
PARTS = ("id", "command", "environment", "container", "resources", "outputs", "inputs")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Definition:
    """What defines one task's result, part by part, and the fingerprint over it all."""

    parts: dict[str, Any]
    #: Declared input (as written) -> its content hash, or "" when it could not be read.
    inputs: dict[str, str]
    fingerprint: str


def hash_inputs(
    spec: WorkflowSpec, workflow_dir: Path, source: str, *, strict: bool = True
) -> dict[str, str]:
    """The content hash of every declared input, by the path as written; a missing or
    unreadable one is a ``SpecError`` naming the task and the path, all at once, or, not
    ``strict`` (a plan reports on a workflow whose inputs may not be there yet), ""
    (unknown, so never equal to a recorded hash)."""
    hashes: dict[str, str] = {}
    problems: list[str] = []
    for i, task in enumerate(spec.tasks):
        for k, path in enumerate(task.inputs):
            if path in hashes:
                continue
            full = resolve_input(path, workflow_dir)
            try:
                hashes[path] = content_hash(full)
            except OSError as err:
                if not strict:
                    hashes[path] = ""
                    continue
                why = "no such file or folder" if isinstance(err, FileNotFoundError) else err
                problems.append(
                    f"tasks[{i}] ({task.id}).inputs[{k}]: {path!r}: {why} ({full}); inputs "
                    "are relative to the workflow file's folder: fix the path or remove it"
                )
    if problems:
        raise SpecError(source, problems)
    return hashes


def resolve_input(path: str, workflow_dir: Path) -> Path:
    return (workflow_dir / Path(path).expanduser()).resolve()


def content_hash(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, or of a folder's sorted relative paths and contents."""
    if path.is_dir():
        digest = hashlib.sha256(b"folder\0")
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = Path(root) / name
                digest.update(str(full.relative_to(path)).encode() + b"\0")
                digest.update(_file_hash(full).encode() + b"\0")
        return "sha256:" + digest.hexdigest()
    return "sha256:" + _file_hash(path)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def definitions(
    spec: WorkflowSpec,
    input_hashes: Mapping[str, str],
    container_runtime: str | None,
    dag: Dag | None = None,
) -> list[Definition]:
    """Every task's definition and fingerprint, indexed like ``spec.tasks``.

    ``input_hashes`` are those the run recorded (``hash_inputs``); an input missing from
    them (a run from before inputs were hashed) counts as unknown: "" never equals a hash.
    """
    dag = dag if dag is not None else Dag.from_spec(spec)
    out: list[Definition | None] = [None] * len(spec.tasks)
    dumps, sha256, sort_keys = orjson.dumps, hashlib.sha256, orjson.OPT_SORT_KEYS
    for i in dag.order:
        task = spec.tasks[i]
        parts = _parts(task, container_runtime)
        inputs = {path: input_hashes.get(path, "") for path in task.inputs}
        parents = sorted(out[p].fingerprint for p in dag.parents[i])  # type: ignore[union-attr]
        body = dumps([FINGERPRINT_VERSION, parts, inputs, parents], option=sort_keys)
        out[i] = Definition(parts, inputs, sha256(body).hexdigest())
    return out  # type: ignore[return-value]


def _parts(task: TaskSpec, runtime: str | None) -> dict[str, Any]:
    """The definition's parts as plain JSON values (compared as they are, to say what changed:
    hashing each part separately costs a third of a second per 10,000 tasks)."""
    image = task.container_image if runtime else None
    return {
        "id": task.id,
        "command": task.command,
        "environment": task.environment,
        "container": [runtime, image] if image else "host",
        "resources": [task.nodes, task.gpus, task.type],
        "outputs": sorted(task.outputs),
    }


def what_changed(old: Definition | Mapping[str, Any], new: Definition) -> list[str]:
    """The parts that differ, in words: ``command changed``, ``input changed: params.yaml``.

    ``old`` is a ``Definition`` or what a result recorded of one (``{"parts", "inputs"}``).
    """
    if isinstance(old, Definition):
        old_parts, old_inputs = old.parts, old.inputs
    else:
        old_parts, old_inputs = dict(old.get("parts") or {}), dict(old.get("inputs") or {})
    words: list[str] = []
    for part in PARTS:
        if part == "inputs":
            if old_inputs != new.inputs:
                words += _inputs_changed(old_inputs, new.inputs)
        elif old_parts.get(part) != new.parts.get(part):
            words.append(_PART_WORDS[part])
    return words


_PART_WORDS = {
    "id": "task id changed",
    "command": "command changed",
    "environment": "environment changed",
    "container": "container changed",
    "resources": "nodes, gpus or type changed",
    "outputs": "outputs changed",
}


def _inputs_changed(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    words = []
    for path in sorted(set(old) | set(new)):
        if path not in old:
            words.append(f"input added: {path}")
        elif path not in new:
            words.append(f"input removed: {path}")
        elif not old[path]:
            words.append(f"input not hashed before: {path}")
        elif old[path] != new[path]:
            words.append(f"input changed: {path}")
    return words or ["inputs changed"]


def definitions_json(defs: Sequence[Definition], i: int) -> dict[str, Any]:
    """What a result records of task ``i``'s definition, for ``what_changed`` later."""
    return {"parts": defs[i].parts, "inputs": defs[i].inputs}
