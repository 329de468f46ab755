"""The commit protocol: the files a task and the runtime exchange in the checkpoint directory.

Both sides import this module, so it holds the names and the few file
operations they share, and nothing else: no store, no event log, no
third-party import (tasks import ``stormproof.task``, which imports this, and
must start fast). The runtime half (copy to the store, manifest, events) is
written against these helpers; the task half is ``stormproof.task`` and the
``stormproof checkpoint commit`` command.

The environment of an attempt of a ``checkpoint_enabled`` task
--------------------------------------------------------------

``STORMPROOF_CHECKPOINT_DIR``
    A local directory, fresh for every attempt, or holding the restored
    checkpoint when a previous attempt committed one.
``STORMPROOF_RESTORED``
    ``"1"`` when a checkpoint was restored into that directory, else ``"0"``
    or unset.
``STORMPROOF_CHECKPOINT_SEQ``
    The sequence number of the restored checkpoint (only when restored).
``STORMPROOF_CHECKPOINT_SIGNAL``
    The signal that asks for a checkpoint (``SIGUSR1`` by default; the task's
    ``checkpoint_signal``), so that a task installs its handler for the right
    one; ``none`` when the task asked for the request file alone. The signal
    goes to the attempt's whole process group, and SIGUSR1's default action
    is to terminate: a task that does not handle it must choose ``none`` (or
    a signal ignored by default, like SIGWINCH).

The files (all at the top of the checkpoint directory)
------------------------------------------------------

``.commit``  (task → runtime)
    The marker: "the files here are a complete checkpoint, save them". Its
    content is empty or a JSON object of metadata (``{"step": 1200}``),
    recorded with the checkpoint. It is written atomically: ``.commit.tmp``
    first, then renamed, so the runtime never reads half a marker. Its
    *existence* is the commit: content that is not a JSON object (an old
    script writing ``1200``) is kept as ``{"text": "1200"}``, never a reason
    to lose a checkpoint. While ``.commit`` exists the task must not touch the
    checkpoint's files: the runtime is copying them.
``.commit-result``  (runtime → task)
    ``{"ok": true, "seq": N}`` or ``{"ok": false, "error": "..."}``, written
    atomically (``.commit-result.tmp``, renamed) **before** the marker is
    removed, so a task that sees ``.commit`` vanish finds the result already
    there. The task removes a stale result before writing its next marker.
``.checkpoint-request``  (runtime → task)
    Created when the workflow's ``checkpoint_interval`` asks for a
    checkpoint, alongside the checkpoint signal, for tasks that cannot take
    signals (a bash loop, a Fortran code): they poll for it. The task removes
    it when it commits (``stormproof.task.commit`` does), so a request that
    arrives during a save stays pending.

One commit, step by step::

    task                                         runtime
    ----                                         -------
    write files into the directory
    rm .checkpoint-request, rm .commit-result
    write .commit.tmp, rename to .commit  ──►    sees .commit (pending_commit)
    wait (must not modify the files)             copy files to the store, manifest last
                                           ◄──   write .commit-result, rm .commit (finish_commit)
    sees .commit gone, reads .commit-result
    carries on

The protocol's files are never part of a checkpoint (``is_protocol_file``):
the runtime leaves them out of the copy and the manifest, and the empty check
ignores them. Every file has exactly one writer, which is why fixed temporary
names are safe and why a bash task can commit with ``: > .commit.tmp && mv
.commit.tmp .commit``.

Nothing here calls ``fsync``: the files only carry news between two
processes on one machine, and a rename is atomic for readers on the same file
system. Durability belongs to the copy in the checkpoint store.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- environment ----------------------------------------------------------------------------

ENV_CHECKPOINT_DIR = "STORMPROOF_CHECKPOINT_DIR"
ENV_RESTORED = "STORMPROOF_RESTORED"
ENV_CHECKPOINT_SEQ = "STORMPROOF_CHECKPOINT_SEQ"
ENV_CHECKPOINT_SIGNAL = "STORMPROOF_CHECKPOINT_SIGNAL"

#: The signal that asks a task to checkpoint when the task does not choose one.
DEFAULT_SIGNAL = signal.SIGUSR1
#: ``STORMPROOF_CHECKPOINT_SIGNAL`` value (the task's ``checkpoint_signal: none``) for "send no
#: signal, only the request file": for tasks that neither trap nor ignore SIGUSR1.
NO_SIGNAL = "none"

# --- file names -----------------------------------------------------------------------------

COMMIT = ".commit"
COMMIT_TMP = ".commit.tmp"
RESULT = ".commit-result"
RESULT_TMP = ".commit-result.tmp"
REQUEST = ".checkpoint-request"
REQUEST_TMP = ".checkpoint-request.tmp"

#: Top-level names that belong to the protocol, never to the checkpoint.
PROTOCOL_FILES = frozenset({COMMIT, COMMIT_TMP, RESULT, RESULT_TMP, REQUEST, REQUEST_TMP})

#: Metadata larger than this is refused: it is a label for a checkpoint, not a place for data.
MAX_META_BYTES = 64 * 1024
#: How much of a marker that is not a JSON object is kept as ``{"text": ...}``.
MAX_TEXT_META_CHARS = 1024


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What the runtime answers to one commit: saved as ``seq``, or not, with why."""

    ok: bool
    seq: int | None = None
    error: str | None = None

    @classmethod
    def saved(cls, seq: int) -> CommitResult:
        return cls(ok=True, seq=seq)

    @classmethod
    def failed(cls, error: str) -> CommitResult:
        return cls(ok=False, error=error)

    def to_json(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "seq": self.seq}
        return {"ok": False, "error": self.error or "unknown error"}

    @classmethod
    def from_json(cls, data: object) -> CommitResult:
        """Parse a result object; ``ValueError`` says what is wrong with it."""
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise ValueError('expected {"ok": true, "seq": N} or {"ok": false, "error": "..."}')
        if data["ok"]:
            seq = data.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError(f"'seq' must be a non-negative integer, got {seq!r}")
            return cls.saved(seq)
        error = data.get("error")
        return cls.failed(error if isinstance(error, str) and error else "unknown error")


# --- shared file operations -----------------------------------------------------------------


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` so that a reader sees the old content or the new, never a part.

    The temporary file is ``<name>.tmp`` beside it (one writer per protocol
    file, so a fixed name cannot collide), then ``os.replace``.
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def encode_meta(meta: dict[str, Any] | None) -> str:
    """The marker's content for ``meta``: empty, or one line of JSON.

    ``ValueError`` names the problem (not a dict, not JSON-serialisable, too
    large) so both the Python API and the CLI can report it as bad usage.
    """
    if meta is None:
        return ""
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint metadata must be a JSON object (a dict), got {meta!r}")
    try:
        text = json.dumps(meta, allow_nan=False, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint metadata is not JSON-serialisable: {e}") from None
    if len(text.encode()) > MAX_META_BYTES:
        raise ValueError(
            f"checkpoint metadata is {len(text.encode()):,} bytes; the limit is "
            f"{MAX_META_BYTES:,} (put data in the checkpoint's files, not in its label)"
        )
    return text


def pending_commit(directory: Path) -> dict[str, Any] | None:
    """The metadata of the commit waiting in ``directory``, or ``None`` when there is none.

    Runtime side. An empty marker gives ``{}``; one that is not a JSON object
    gives ``{"text": <its first characters>}``: the marker's existence is the
    commit, its content only a label.
    """
    try:
        with open(directory / COMMIT, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
    except FileNotFoundError:
        return None
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if isinstance(meta, dict):
        return meta
    return {"text": text[:MAX_TEXT_META_CHARS]}


def commit_requested_at(directory: Path, noticed_at: float, watched_from: float) -> float:
    """When the task asked for the commit waiting in ``directory``: its marker's mtime.

    Runtime side, to measure how long a save takes from the task's request. The mtime is
    the file system's clock, which may differ from the runtime's (a shared file system on
    another host) or predate this runtime (a commit left pending across a restart), so it
    is kept between ``watched_from`` (when this runtime began watching the attempt) and
    ``noticed_at`` (when it saw the marker); a marker gone already gives ``noticed_at``.
    """
    try:
        mtime = os.stat(directory / COMMIT).st_mtime
    except OSError:
        return noticed_at
    return min(max(mtime, watched_from), noticed_at)


def finish_commit(directory: Path, result: CommitResult) -> None:
    """Answer the pending commit: write the result, *then* remove the marker.

    Runtime side. The order is the protocol: a task waits for ``.commit`` to
    go, then reads ``.commit-result``, so the result must already be there.
    """
    write_atomic(directory / RESULT, json.dumps(result.to_json()) + "\n")
    (directory / COMMIT).unlink(missing_ok=True)


def read_result(directory: Path) -> CommitResult | None:
    """The runtime's answer to the last commit, or ``None`` when there is none yet.

    A result that cannot be parsed is reported as a failed commit that says
    so, because the task cannot know its checkpoint was saved.
    """
    path = directory / RESULT
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    try:
        return CommitResult.from_json(json.loads(text))
    except ValueError as e:
        return CommitResult.failed(f"{path} is not a valid commit result ({e}): {text[:200]!r}")


def request_checkpoint(directory: Path, reason: str = "interval") -> None:
    """Ask the task in ``directory`` to checkpoint soon (runtime side; the signal is separate)."""
    write_atomic(directory / REQUEST, json.dumps({"reason": reason}) + "\n")


def checkpoint_requested(directory: Path) -> bool:
    """Whether a request file is waiting in ``directory``."""
    return (directory / REQUEST).exists()


def clear_request(directory: Path) -> None:
    """Task side, just before a commit: the request is being answered."""
    (directory / REQUEST).unlink(missing_ok=True)


# --- what is in a checkpoint ----------------------------------------------------------------


def is_protocol_file(relative_path: str) -> bool:
    """Whether a path relative to the checkpoint directory is the protocol's, not the task's.

    Only top-level names count: ``sub/.commit`` is the task's own file.
    """
    return relative_path in PROTOCOL_FILES


def checkpoint_files(directory: Path) -> list[str]:
    """The checkpoint's regular files, as sorted POSIX paths relative to ``directory``.

    Symbolic links are neither followed nor listed: a checkpoint is data, and
    a link could point outside the directory.
    """
    return sorted(_iter_files(directory))


def has_checkpoint_files(directory: Path) -> bool:
    """Whether ``directory`` holds anything to commit; stops at the first file found."""
    return next(_iter_files(directory), None) is not None


def _iter_files(directory: Path) -> Iterator[str]:
    top = os.fspath(directory)
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        prefix = "" if root == top else os.path.relpath(root, top).replace(os.sep, "/") + "/"
        for name in files:
            full = os.path.join(root, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            if not (prefix == "" and name in PROTOCOL_FILES):
                yield prefix + name


# --- the request signal ---------------------------------------------------------------------


def parse_signal(name: str) -> signal.Signals:
    """``SIGUSR1``, ``USR1`` or ``usr1`` → ``signal.SIGUSR1``; ``ValueError`` otherwise.

    Names only, not numbers: signal numbers differ between platforms, and a
    workflow file should mean the same everywhere. SIGKILL and SIGSTOP cannot
    be caught, so they cannot ask for anything.
    """
    text = name.strip().upper()
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        sig = signal.Signals[text]
    except KeyError:
        raise ValueError(
            f"unknown signal {name!r} (use a name like SIGUSR1, SIGUSR2 or SIGHUP)"
        ) from None
    if sig in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f"{sig.name} cannot be caught, so it cannot ask for a checkpoint")
    return sig
