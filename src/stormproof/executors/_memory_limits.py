"""The memory limits of the shim's attempts, enforced: sampled, and SIGKILL when one is over.

An attempt submitted with a limit (bytes; see ``LocalExecutor`` for when it has one) is
sampled every ``--memory-sample-s`` with its whole session (``_memory`` says how it is measured,
and why not cgroups or rlimits). Over the limit, every process of the session gets SIGKILL, a
line goes to its ``stderr.log``, and when the leader is reaped its status is written as 137
with the out-of-memory flag and the exit event says ``out_of_memory``. A shim that adopts
attempts after its predecessor died does not limit them: the limits died with it.

Kept apart from ``_shim`` because it is one policy over the attempts the shim runs, with its
own timer; ``MemoryLimits`` acts on the shim only through ``Host``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Protocol

from stormproof.executors._attempt import AttemptRecord
from stormproof.executors._memory import MemorySampler, SessionUsage

#: The timer key of memory sampling (attempt ids hold no NUL).
MEMORY_TIMER = "\0memory"
_KILLED = 128 + signal.SIGKILL


class Host(Protocol):
    """What ``MemoryLimits`` needs of the shim."""

    def add_timer(self, due: float, key: str) -> None: ...

    def signal_group(self, rec: AttemptRecord, sig: int) -> bool: ...

    def log(self, message: str) -> None: ...


class MemoryLimits:
    """The limited attempts still running, by leader pid (= session id), and their sampling."""

    def __init__(self, host: Host, sample_s: float) -> None:
        self.host = host
        self.sample_s = sample_s
        self.sampler = MemorySampler()
        self.limited: dict[int, AttemptRecord] = {}  # leader pid (= session id) -> limited child
        self.sampling = False  # a memory sample is due on the timer heap

    def watch(self, rec: AttemptRecord) -> None:
        """Start watching a child's memory; samples run while any limited child does."""
        if not self.sampler.available:
            self.host.log(f"{rec.attempt_id}: its memory limit cannot be enforced here (no /proc)")
            return
        self.limited[rec.pid] = rec
        self.sampler.watch(rec.pid)
        if not self.sampling:
            self.sampling = True
            self.host.add_timer(time.monotonic() + self.sample_s, MEMORY_TIMER)

    def leader_ended(self, rec: AttemptRecord, code: int) -> bool:
        """Stop watching an attempt whose leader ended with ``code``; whether memory killed it."""
        if rec.memory_limit:
            self.limited.pop(rec.pid, None)
        # Our SIGKILL, not its own end just before it: the leader's code says which came first.
        return rec.killed_for_memory and code == _KILLED

    def sample(self) -> None:
        """The ``MEMORY_TIMER`` fired: measure every limited session, kill those over."""
        self.sampling = False
        if not self.limited:
            self.sampler.reset()
            return
        usage = self.sampler.sample(self.limited.keys())
        for sid, rec in list(self.limited.items()):
            session = usage.get(sid)
            if session is not None and session.leader_alive and session.rss > rec.memory_limit:
                self._check(rec, session)
        self.sampling = True
        self.host.add_timer(time.monotonic() + self.sample_s, MEMORY_TIMER)

    def _check(self, rec: AttemptRecord, session: SessionUsage) -> None:
        """Over the limit by RSS: kill if the proportional size (shared pages split) agrees."""
        used = self.sampler.proportional(pid for pid, _ in session.members)
        if used is None:
            used = session.rss
        if used > rec.memory_limit:
            self._kill(rec, session, used)

    def _kill(self, rec: AttemptRecord, session: SessionUsage, used: int) -> None:
        """SIGKILL the whole session: its group at once, then members that left the group."""
        del self.limited[rec.pid]
        rec.killed_for_memory = True
        self.host.signal_group(rec, signal.SIGKILL)
        for pid, group in session.members:
            if group != rec.pid:  # a pid outside the leader's group is not pinned: it may
                with contextlib.suppress(OSError):  # have ended; its number is not reused yet
                    os.kill(pid, signal.SIGKILL)
        note = (
            f"killed: it used {used >> 20} MiB of memory, over its limit of "
            f"{rec.memory_limit >> 20} MiB"
        )
        self.host.log(f"{rec.attempt_id}: {note}")
        _append_note(rec.attempt_dir + "/stderr.log", f"stormproof: {note}\n")


def _append_note(path: str, text: str) -> None:
    """One line for the attempt's owner to read, in its log; a log we cannot open gets none."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, text.encode(errors="replace"))
    except OSError:
        pass
    finally:
        os.close(fd)
