"""The checkpoint store seam: what a checkpoint is, how it is laid out, and what a store does.

A checkpoint is the files a task committed, copied under::

    <base>/<run>/<task>/<seq as 8 digits>/<files…>
    <base>/<run>/<task>/<seq as 8 digits>/MANIFEST.json      ← written last

The rule that makes a half-written checkpoint harmless: **the manifest is
written only after every file is fully stored**, and it lists each file's
size and sha256. No manifest means "not finished" (an orchestrator killed
mid-upload leaves exactly that); a manifest whose files do not hash to what
it says means "damaged". Restore copies and hashes in one pass and refuses
both, so only a checkpoint that was completely stored and is still intact
ever reaches a task.

Errors, and who they are for::

    CheckpointCorrupt (Exception)     a stored checkpoint failed verification: data, not a
                                      user mistake; restore_newest turns it into a skip
    StormproofError
    ├── ConfigError                   the store URL cannot be used (unreachable, no bucket,
    │                                 no credentials, unwritable): raised by ``check()``
    └── CheckpointError               one checkpoint operation cannot be done
        ├── CheckpointSourceError     the task's checkpoint directory is unusable (missing,
        │                             empty, holds a symlink or a device …): the task's fault
        └── CheckpointStoreError      the store failed mid-operation (I/O error, network)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, TypeGuard

from stormproof.errors import StormproofError

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_VERSION = 1
#: Names at the top of a checkpoint directory that are protocol, not state: never stored.
#: Sequence numbers are directory names of exactly this many digits, so they sort as text too.
SEQ_DIGITS = 8
MAX_SEQ = 10**SEQ_DIGITS - 1
#: Run and task names become path components: the same safe alphabet as run names and task ids.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SEQ_DIR = re.compile(rf"^\d{{{SEQ_DIGITS}}}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Tier = Literal["hot", "warm", "cold"]
#: What ``list`` found, without hashing anything: ``ok`` (a manifest that parses and files of
#: the sizes it says), ``incomplete`` (no manifest: a save that never finished),
#: ``invalid`` (a manifest that cannot be used), ``damaged`` (a file missing or of the wrong size).
State = Literal["ok", "incomplete", "invalid", "damaged"]


class CheckpointCorrupt(Exception):
    """A stored checkpoint does not verify; ``problem`` says which file and how."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class CheckpointError(StormproofError):
    """A checkpoint operation that cannot be done; the message names the place and the fix."""


class CheckpointSourceError(CheckpointError):
    """The directory a task committed cannot be stored as it is (the task's fault)."""


class CheckpointStoreError(CheckpointError):
    """The store failed while saving, restoring or deleting (disk, network, permissions)."""


@dataclass(frozen=True, slots=True)
class ManifestFile:
    path: str  # relative, '/'-separated, never '..' nor absolute
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    run: str
    task: str
    attempt: int
    seq: int
    created_at: float
    files: tuple[ManifestFile, ...]
    version: int = MANIFEST_VERSION

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run": self.run,
            "task": self.task,
            "attempt": self.attempt,
            "seq": self.seq,
            "created_at": self.created_at,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "total_bytes": self.total_bytes,
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1) + "\n").encode()


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One stored copy of a checkpoint as ``list`` sees it: cheap, nothing hashed."""

    run: str
    task: str
    seq: int
    tier: Tier
    state: State
    manifest: Manifest | None
    problem: str | None  # why the state is not ``ok``
    #: Latest modification time of its objects: the age of a checkpoint without a manifest.
    modified_at: float | None = None
    stored_files: int = 0  # what is actually there, manifest or not
    stored_bytes: int = 0

    @property
    def created_at(self) -> float | None:
        return self.manifest.created_at if self.manifest else self.modified_at


@dataclass(frozen=True, slots=True)
class FileCheck:
    path: str
    size: int
    sha256: str
    problem: str | None  # None: present, right size, right hash


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of hashing a whole stored checkpoint against its manifest."""

    run: str
    task: str
    seq: int
    manifest: Manifest | None
    problems: tuple[str, ...]
    files: tuple[FileCheck, ...] = field(default=())
    tier: Tier | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problem(self) -> str | None:
        """All problems in one line (the text of a ``Checkpoint.Corrupt`` event), or None."""
        return "; ".join(self.problems) if self.problems else None


Infos = list[CheckpointInfo]
Skipped = list[tuple[int, str]]
Removed = list[tuple[str, str, int]]
Seqs = list[int]


class CheckpointStore(Protocol):
    """Where committed checkpoints are kept. Every method is safe to repeat after a crash."""

    url: str

    def check(self) -> None:
        """Prove the store is usable now (write and delete a probe); ``ConfigError`` if not."""

    def save(
        self, run: str, task: str, attempt: int, seq: int, source: Path, now: float
    ) -> Manifest:
        """Store ``source`` as checkpoint ``seq``, files first, manifest last (streamed)."""

    def list(self, run: str, task: str | None = None) -> Infos:
        """Every stored checkpoint of the run (or task), newest first per task, flagged."""

    def verify(self, run: str, task: str, seq: int) -> Verification:
        """Hash every file of one checkpoint against its manifest."""

    def restore(self, run: str, task: str, seq: int, dest: Path) -> Manifest:
        """Copy one checkpoint into ``dest``, verifying while copying; ``CheckpointCorrupt``."""

    def restore_newest(
        self, run: str, task: str, dest: Path, candidates: Sequence[int] | None = None
    ) -> tuple[Manifest | None, Skipped]:
        """Restore the newest checkpoint that verifies; also return the ``(seq, problem)`` skips."""

    def delete(self, run: str, task: str | None = None, seq: int | None = None) -> int:
        """Remove checkpoints (manifest first); returns how many."""

    def prune(self, run: str, task: str, keep_last: int) -> Seqs:
        """Keep the newest ``keep_last`` complete checkpoints of a task; returns removed seqs."""

    def prune_older_than(self, age_s: float, now: float, run: str | None = None) -> Removed:
        """Remove checkpoints created more than ``age_s`` before ``now``; returns what went."""


# --- names and paths ---------------------------------------------------------------------


def check_name(kind: str, name: str) -> str:
    """Run and task names become path components: refuse anything that could escape."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise CheckpointError(
            f"{kind} name {name!r} cannot name a checkpoint: use 1-128 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_seq(seq: int) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise CheckpointError(f"checkpoint sequence {seq!r} must be a whole number 0-{MAX_SEQ}")
    return seq


def seq_dir_name(seq: int) -> str:
    return f"{check_seq(seq):0{SEQ_DIGITS}d}"


def parse_seq_dir(name: str) -> int | None:
    return int(name) if _SEQ_DIR.match(name) else None


def safe_relpath(path: str) -> str | None:
    """``path`` if it is relative, '/'-separated and stays inside; else None."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    parts = PurePosixPath(path).parts
    if any(p in ("", ".", "..") for p in parts) or "/".join(parts) != path:
        return None
    return path


# --- manifest parsing --------------------------------------------------------------------


def parse_manifest(raw: bytes, run: str, task: str, seq: int) -> Manifest:
    """The manifest in ``raw``, checked against where it was found; ``ValueError`` says why."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"manifest is not valid JSON ({err})") from None
    if not isinstance(data, Mapping):
        raise ValueError("manifest is not a JSON object")
    if data.get("version") != MANIFEST_VERSION:
        raise ValueError(f"manifest version {data.get('version')!r} is not {MANIFEST_VERSION}")
    where = {"run": run, "task": task, "seq": seq}
    for key, expected in where.items():
        if data.get(key) != expected:
            raise ValueError(f"manifest says {key} {data.get(key)!r}, it is stored as {expected!r}")
    attempt, created_at = data.get("attempt"), data.get("created_at")
    if not _is_int(attempt) or attempt < 0:
        raise ValueError(f"manifest attempt {attempt!r} is not a whole number")
    if not isinstance(created_at, (int, float)) or isinstance(created_at, bool):
        raise ValueError(f"manifest created_at {created_at!r} is not a time")
    if not math.isfinite(created_at):
        raise ValueError(f"manifest created_at {created_at!r} is not a time")
    files = _parse_files(data.get("files"))
    total = data.get("total_bytes")
    if total != sum(f.size for f in files):
        raise ValueError(f"manifest total_bytes {total!r} is not the sum of its file sizes")
    return Manifest(run, task, int(attempt), seq, float(created_at), files)


def _parse_files(entries: Any) -> tuple[ManifestFile, ...]:
    if not isinstance(entries, list) or not entries:
        raise ValueError("manifest lists no files")
    files: list[ManifestFile] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError(f"manifest files[{i}] is not an object")
        path, size, digest = entry.get("path"), entry.get("size"), entry.get("sha256")
        if not isinstance(path, str) or safe_relpath(path) is None or path == MANIFEST_NAME:
            raise ValueError(f"manifest files[{i}] has an unsafe path {path!r}")
        if path in seen:
            raise ValueError(f"manifest lists {path!r} twice")
        if not _is_int(size) or size < 0:
            raise ValueError(f"manifest files[{i}] ({path}) has a bad size {size!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ValueError(f"manifest files[{i}] ({path}) has a bad sha256 {digest!r}")
        seen.add(path)
        files.append(ManifestFile(path, int(size), digest))
    return tuple(files)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --- pruning rules (pure, shared by every store and the tiers) ---------------------------


def seqs_to_prune(infos: Sequence[CheckpointInfo], keep_last: int) -> list[int]:
    """Which of one task's checkpoints ``prune(keep_last)`` removes.

    Keeps the ``keep_last`` newest checkpoints that have a usable manifest,
    and any checkpoint *newer* than all of those that has none (it may be a
    save in progress). Everything else goes, including abandoned half-written
    ones. Nothing is hashed: a damaged-but-kept checkpoint is caught at restore.
    """
    if keep_last < 0:
        raise CheckpointError(f"keep_last must be 0 or more, got {keep_last}")
    complete = sorted({i.seq for i in infos if i.state in ("ok", "damaged")}, reverse=True)
    kept = set(complete[:keep_last])
    newest_complete = complete[0] if complete else -1
    doomed = {
        i.seq
        for i in infos
        if i.seq not in kept and not (i.state == "incomplete" and i.seq > newest_complete)
    }
    return sorted(doomed)


def older_than(infos: Sequence[CheckpointInfo], cutoff: float) -> list[CheckpointInfo]:
    """The checkpoints created (or, without a manifest, last written) before ``cutoff``."""
    return [i for i in infos if i.created_at is not None and i.created_at < cutoff]
