"""Checkpointing from inside a task: the Python half of the commit protocol.

A task of a ``checkpoint_enabled`` workflow step imports this module, so it
loads in milliseconds and needs nothing beyond the standard library (no
pydantic, no rich, no click). The files it exchanges with the runtime are
described in ``stormproof.checkpoints.protocol``; here is the API::

    from stormproof import task

    state = task.checkpoint_dir() / "state.json"
    step = load(state) if task.restored() else 0
    task.on_checkpoint_request()              # the checkpoint signal (SIGUSR1) sets a flag
    while step < total:
        step = advance(step)
        if step % 1000 == 0 or task.checkpoint_requested():
            save(state, step)                 # write files, then commit them
            seq = task.commit({"step": step}) # waits until the runtime has saved them

Errors::

    StormproofError                  (stormproof.errors)
    └── CheckpointUsageError         not inside a checkpointed attempt, nothing to commit,
                                     bad metadata or signal name: fix the task (CLI exit 2)
    CheckpointCommitFailed           the runtime could not save this checkpoint (CLI exit 1)
    └── CheckpointCommitTimeout      no answer in time (is the task run by stormproof?)

A failed commit is not a usage error: the task may carry on and commit
again later, which is why it is not a ``StormproofError``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Literal, overload

from stormproof.checkpoints import protocol
from stormproof.errors import StormproofError

__all__ = [
    "CheckpointCommitFailed",
    "CheckpointCommitTimeout",
    "CheckpointUsageError",
    "checkpoint_dir",
    "checkpoint_requested",
    "checkpoint_signal",
    "commit",
    "on_checkpoint_request",
    "restored",
    "restored_seq",
]

#: First and longest pause while waiting for the runtime: commits are rare, a save takes a while.
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.2
#: How long a vanished marker may wait for its result (a runtime that removes, then writes).
_RESULT_GRACE_S = 2.0


class CheckpointUsageError(StormproofError):
    """The task used the checkpoint API where or how it cannot work; the message says the fix."""


class CheckpointCommitFailed(Exception):
    """The runtime answered that it could not save the checkpoint, or did not answer."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CheckpointCommitTimeout(CheckpointCommitFailed):
    """No answer before the timeout; the marker is left so a slow save can still finish."""


# --- where and what -------------------------------------------------------------------------


def checkpoint_dir() -> Path:
    """The attempt's checkpoint directory (``STORMPROOF_CHECKPOINT_DIR``), which must exist."""
    raw = os.environ.get(protocol.ENV_CHECKPOINT_DIR, "").strip()
    if not raw:
        raise CheckpointUsageError(
            f"{protocol.ENV_CHECKPOINT_DIR} is not set: this process is not an attempt of a "
            "checkpointed task (stormproof sets it for tasks with checkpoint_enabled: true)"
        )
    path = Path(raw)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise CheckpointUsageError(
            f"{protocol.ENV_CHECKPOINT_DIR}={raw} {what}: stormproof creates it for each "
            "attempt; if you set the variable yourself, create the directory first"
        )
    return path


def restored() -> bool:
    """Whether a checkpoint was restored into ``checkpoint_dir()`` before this attempt began."""
    return os.environ.get(protocol.ENV_RESTORED, "").strip() == "1"


def restored_seq() -> int | None:
    """The sequence number of the restored checkpoint; ``None`` when nothing was restored."""
    raw = os.environ.get(protocol.ENV_CHECKPOINT_SEQ, "").strip()
    if not raw or not restored():
        return None
    try:
        seq = int(raw)
    except ValueError:
        return None
    return seq if seq >= 0 else None


def checkpoint_signal() -> signal.Signals | None:
    """The signal that asks this task to checkpoint; ``None`` when it asked for none.

    From ``STORMPROOF_CHECKPOINT_SIGNAL`` (the task's ``checkpoint_signal``),
    SIGUSR1 when unset.
    """
    raw = os.environ.get(protocol.ENV_CHECKPOINT_SIGNAL, "").strip()
    if not raw:
        return protocol.DEFAULT_SIGNAL
    if raw.lower() == protocol.NO_SIGNAL:
        return None
    try:
        return protocol.parse_signal(raw)
    except ValueError as e:
        raise CheckpointUsageError(f"{protocol.ENV_CHECKPOINT_SIGNAL}: {e}") from None


# --- checkpoint requests --------------------------------------------------------------------

# Set by the signal handler, cleared by commit(). A plain bool: assigning it is atomic, and
# Python runs handlers in the main thread between bytecodes, so there is nothing to lock.
_signal_requested = False


def on_checkpoint_request(callback: Callable[[], None] | None = None) -> signal.Signals | None:
    """Install a handler for the checkpoint signal; return the signal (``None``: there is none).

    The handler only sets the flag that ``checkpoint_requested()`` reads, then
    calls ``callback`` if given. It never does I/O: it may run between any two
    bytecodes of the main loop, in the middle of writing the very file a
    checkpoint would write. ``callback`` runs in that same context, so keep it
    to setting a flag of your own; do the checkpoint in the main loop.

    With ``checkpoint_signal: none`` nothing is installed and requests arrive
    only as the request file, which ``checkpoint_requested()`` also reads.
    Must be called from the main thread (Python delivers signals only there).
    """
    sig = checkpoint_signal()
    if sig is None:
        return None

    def _handler(signum: int, frame: FrameType | None) -> None:
        global _signal_requested
        _signal_requested = True
        if callback is not None:
            callback()

    try:
        signal.signal(sig, _handler)
    except ValueError as e:  # not the main thread
        raise CheckpointUsageError(
            f"on_checkpoint_request() must be called from the main thread ({e})"
        ) from None
    return sig


def checkpoint_requested() -> bool:
    """Whether stormproof asked for a checkpoint: the signal came, or the request file is there.

    Cheap enough to call every iteration (one ``stat``). Outside a
    checkpointed attempt only the signal flag counts. ``commit()`` clears both.
    """
    if _signal_requested:
        return True
    raw = os.environ.get(protocol.ENV_CHECKPOINT_DIR, "").strip()
    return bool(raw) and protocol.checkpoint_requested(Path(raw))


def _clear_requests(directory: Path) -> None:
    global _signal_requested
    _signal_requested = False
    protocol.clear_request(directory)


# --- commit ---------------------------------------------------------------------------------


@overload
def commit(
    meta: dict[str, Any] | None = None, wait: Literal[True] = True, timeout_s: float = 600
) -> int: ...
@overload
def commit(meta: dict[str, Any] | None, wait: Literal[False], timeout_s: float = 600) -> None: ...
@overload
def commit(
    meta: dict[str, Any] | None = None, *, wait: Literal[False], timeout_s: float = 600
) -> None: ...
@overload
def commit(
    meta: dict[str, Any] | None = None, wait: bool = True, timeout_s: float = 600
) -> int | None: ...


def commit(
    meta: dict[str, Any] | None = None, wait: bool = True, timeout_s: float = 600
) -> int | None:
    """Commit the files in ``checkpoint_dir()`` as a checkpoint; return its sequence number.

    Writes the marker (``meta`` is its JSON label, e.g. ``{"step": 1200}``)
    and, with ``wait``, blocks until the runtime has copied the files to the
    checkpoint store, so the task may modify them again as soon as this
    returns. With ``wait=False`` it returns ``None`` at once and the task must
    leave the files alone until the marker is gone; a marker still there when
    the task exits is saved all the same.

    A previous ``wait=False`` commit still pending is waited for first (within
    the same ``timeout_s``). Raises ``CheckpointUsageError`` (not in a
    checkpointed attempt, an empty directory, bad ``meta``),
    ``CheckpointCommitFailed`` (the runtime could not save it) or
    ``CheckpointCommitTimeout``. One committer at a time: the marker has a
    fixed temporary name, and a checkpoint is the whole directory anyway.
    """
    if not timeout_s > 0:  # also refuses NaN
        raise CheckpointUsageError(f"timeout must be more than 0 seconds, got {timeout_s!r}")
    directory = checkpoint_dir()
    try:
        content = protocol.encode_meta(meta)
    except ValueError as e:
        raise CheckpointUsageError(str(e)) from None
    if not protocol.has_checkpoint_files(directory):
        raise CheckpointUsageError(
            f"nothing to commit: {directory} holds no files (write the checkpoint's files "
            "there first, then commit)"
        )
    deadline = time.monotonic() + timeout_s
    if (directory / protocol.COMMIT).exists():
        _wait_for_marker_to_go(directory, deadline, timeout_s, "the previous commit")
    _clear_requests(directory)
    (directory / protocol.RESULT).unlink(missing_ok=True)
    protocol.write_atomic(directory / protocol.COMMIT, content)
    if not wait:
        return None
    _wait_for_marker_to_go(directory, deadline, timeout_s, "this checkpoint")
    return _result(directory, deadline)


def _wait_for_marker_to_go(directory: Path, deadline: float, timeout_s: float, what: str) -> None:
    marker = directory / protocol.COMMIT
    pause = _POLL_FIRST_S
    while marker.exists():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CheckpointCommitTimeout(
                f"{what} was not saved within {_seconds(timeout_s)}: no answer from stormproof "
                f"(is this task run by stormproof, with checkpoint_enabled: true?); {marker} "
                "is left in place so a slow save can still finish"
            )
        time.sleep(min(pause, remaining))
        pause = min(pause * 1.5, _POLL_MAX_S)


def _result(directory: Path, deadline: float) -> int:
    grace_end = min(deadline, time.monotonic() + _RESULT_GRACE_S)
    result = protocol.read_result(directory)
    while result is None and time.monotonic() < grace_end:
        time.sleep(_POLL_FIRST_S)
        result = protocol.read_result(directory)
    if result is None:
        raise CheckpointCommitFailed(
            f"{directory / protocol.COMMIT} disappeared but stormproof wrote no "
            f"{protocol.RESULT}: was the marker removed by something else?"
        )
    if not result.ok or result.seq is None:
        raise CheckpointCommitFailed(f"checkpoint not saved: {result.error}")
    return result.seq


def _seconds(value_s: float) -> str:
    if value_s < 120:
        return f"{value_s:g}s"
    return f"{value_s / 60:g}m"
