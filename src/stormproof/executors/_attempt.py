"""What the shim knows of one attempt, and the events it sends about it, as JSON text.

Events are built by formatting (the attempt id JSON-encoded once): the shim sends one or two
per attempt, and building them is part of its cost per attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stormproof.executors._files import ExitStatus, Keeper, Usage
from stormproof.executors._wire import Client


@dataclass(eq=False, slots=True)
class AttemptRecord:
    """What the shim knows of one attempt: its process, its owner, how it ended."""

    attempt_id: str
    attempt_dir: str
    owner: Client | None = None
    pid: int = 0
    spawned_boottime: float = 0.0
    started_at: float = 0.0
    child: bool = False  # our child (we reap it, we know its code) or adopted (liveness only)
    final: str | None = None  # the event that ended it, as JSON text
    kill_at: float | None = None  # monotonic time of the pending SIGKILL
    pidfd: int = -1
    id_json: str = ""  # the attempt id JSON-encoded once: events are built by formatting
    memory_limit: int = 0  # bytes for the whole session; 0: none
    killed_for_memory: bool = False
    #: A held successor: (command, env, the open log fds) until it starts or is dropped.
    held: tuple[Any, dict[str, str], tuple[int, int]] | None = None
    after: str = ""
    usage: Usage | None = None
    #: Adopted from a dead shim: the keeper that reaps it and journals its status.
    keeper: Keeper | None = None

    def __post_init__(self) -> None:
        self.id_json = json.dumps(self.attempt_id)

    def state_event(self) -> str | None:
        """Its news for a (re)connecting client: ``None`` while it is held (nothing yet)."""
        if self.final is not None:
            return self.final
        if self.held is not None:
            return None
        return f'["S",{self.started_at!r},{self.id_json},{self.pid}]'

    def end(self, kind: str, at: float, message: str) -> str:
        """Record the final event (``L`` lost or ``F`` failed, with a message); return it."""
        self.final = f'["{kind}",{at!r},{self.id_json},{json.dumps(message)}]'
        return self.final

    def exited(self, at: float, code: int, out_of_memory: bool = False) -> str:
        """Record the final ``X`` event (with ``usage`` when known); return it."""
        if self.usage is not None:
            u = self.usage
            tail = f",{int(out_of_memory)},{u.cpu_s!r},{u.max_rss_kib}"
        else:
            tail = ",1" if out_of_memory else ""
        self.final = f'["X",{at!r},{self.id_json},{code}{tail}]'
        return self.final


def exited_as(rec: AttemptRecord, status: ExitStatus) -> str:
    """Record how a journal says the attempt ended; return the ``X`` event."""
    return rec.exited(status.at, status.code, status.out_of_memory)
