"""The errors stormproof raises, in one tree.

Two families, kept apart on purpose:

* **User errors** (``StormproofError`` and below) are raised by the program for
  something a person typed or wrote. The CLI prints them as one clear message
  that names the place and the fix, and exits 2. They never show a traceback::

      StormproofError
      ├── SpecError          the workflow file is malformed or invalid (many messages)
      │   └── InputRefused   a file refused before it is parsed: not a regular file, or over
      │                      a limit (size, nesting, number length, aliases, task count)
      ├── ConfigError        stormproof.yaml or an environment override is invalid
      ├── RunNotFound        no run of that name in this home
      ├── RunExists          `run --name` of a name that is taken
      ├── RunIncompatible    the run's log was written in a format this version can't replay
      ├── RunLocked          another orchestrator drives that run (it says who, and until when)
      ├── LeaseLost          another orchestrator took the run over from this one
      ├── StoreFault         the event store failed for now (unreachable, full, locked): a run
      │                      stops resumably, and `resume` carries on once the fault is gone
      └── CapacityError      a task fits on no pool the run can use

* **Task errors** are not exceptions at all: they are data, carried by events
  and matched by retriers. Their names follow Step Functions so that an ASL
  retrier reads the same here (see ``ErrorName``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum


class ErrorName(str, Enum):
    """Names of the ways an attempt can end badly, matched by ``retry[].error_equals``."""

    TASK_FAILED = "Task.Failed"
    TASK_TIMEOUT = "Task.Timeout"
    TASK_OUT_OF_MEMORY = "Task.OutOfMemory"
    CAPACITY_INTERRUPTED = "Capacity.Interrupted"
    CAPACITY_UNAVAILABLE = "Capacity.Unavailable"
    NODE_LOST = "Node.Lost"
    CHECKPOINT_CORRUPT = "Checkpoint.Corrupt"
    STATES_ALL = "States.ALL"
    STATES_TASK_FAILED = "States.TaskFailed"


class StormproofError(Exception):
    """Something the user can fix. ``str(err)`` is the whole message for the terminal."""

    exit_code = 2


class SpecError(StormproofError):
    """A workflow file that cannot be used; carries every problem found, not just the first."""

    def __init__(self, source: str, messages: Sequence[str]) -> None:
        self.source = source
        self.messages = list(messages)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.messages) == 1:
            return f"{self.source}: {self.messages[0]}"
        lines = [f"{self.source}: {len(self.messages)} problems"]
        lines += [f"  - {m}" for m in self.messages]
        return "\n".join(lines)


class InputRefused(SpecError):
    """A file the user named, refused for what it is or how big it is (``stormproof.limits``)."""


class ConfigError(StormproofError):
    """stormproof.yaml, a --config file or a STORMPROOF_* variable is invalid."""


class RunNotFound(StormproofError):
    """No run of that name exists in this home."""


class RunExists(StormproofError):
    """A run of that name exists already; resume it or pick another name."""


class RunIncompatible(StormproofError):
    """The run's event log was written in a format this version cannot replay."""


class RunLocked(StormproofError):
    """Another orchestrator process is driving this run right now.

    ``holder`` says who, for a caller that waits for the run instead of giving up
    (``stormproof.store.base.LeaseHolder``; ``None`` when the store cannot tell).
    """

    def __init__(self, message: str, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLost(StormproofError):
    """This orchestrator's lease on a run was taken over by another one: it must stop at once,
    acting on nothing more (the fencing token it holds is no longer the run's)."""


class StoreFault(StormproofError):
    """The event store cannot do its work right now: the server is unreachable or went away,
    the disk is full, the database is locked. Nothing durable is lost; a run stops and can be
    resumed once the fault is gone. (A damaged or foreign database is a plain
    ``StormproofError``: waiting does not mend it.)"""


class CapacityError(StormproofError):
    """A task asks for more than any instance of any usable pool has."""


def unreadable(err: OSError, what: str = "file") -> str:
    """Why a file the user named cannot be read, in words, with the fix where there is one."""
    if isinstance(err, FileNotFoundError):
        return "no such file (check the path)"
    if isinstance(err, IsADirectoryError):
        return f"is a directory, not a {what}"
    if isinstance(err, PermissionError):
        return "cannot be read: permission denied"
    return f"cannot be read: {err.strerror or err}"
