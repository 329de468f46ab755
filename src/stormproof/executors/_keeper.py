"""The keeper: the shim's parent, which outlives it and writes what its attempts became.

Only a process's parent learns its exit status, and the parent of every local attempt is the
run's shim. When the shim is ``kill -9``ed, the kernel hands its children to the nearest
ancestor that asked for orphans (``PR_SET_CHILD_SUBREAPER``): the keeper. The keeper does
nothing while its shim lives (it sleeps in ``waitid``); once the shim has died it

1. finishes the journal: if the shim died inside a spawn (an ``I`` line and no ``L``), the new
   process is among the keeper's new children, and it writes the ``L`` line the shim could not
   (or ``N`` if the spawn made nothing);
2. lets go of the shim's lock, so that a new shim can start, and reads a complete journal;
3. reaps every attempt of its shim that had not ended yet, as it ends, and appends its exit
   status (with CPU seconds and peak memory, from ``wait4``) to the journal, where the new
   shim, which watches those processes without being their parent, finds it;
4. exits when none is left. Orphans that are not attempts (a task's background processes the
   shim had inherited) are reaped without a line, and left to init once the keeper goes.

Why a keeper and not a wrapper process per attempt (``sh -c 'cmd; echo $? >> journal'``): a
process costs ~0.65 ms of CPU to start and end on the machines this was measured on, as much
as the attempt's own, and ``bench/overhead.py`` runs 10,000 no-op tasks within 1.5x of
``xargs``; a keeper costs nothing per attempt. What it does not cover: the keeper and the shim
both killed (a process-group kill, the OOM killer taking both): attempts that end after that
have no exit status, and are reported lost (``Node.Lost``), as before the keeper existed.

The shim is a subreaper too, so a task's orphaned background processes come to the shim
while it lives, never to the keeper: the keeper's children are its shim, then what its shim
left. This module uses the standard library only, and no I/O until its shim has died.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import sys
import time
from typing import NoReturn

from stormproof.executors._files import (
    JournalReader,
    LaunchRecord,
    boottime,
    journal_exit_line,
    journal_launch_line,
    journal_not_started_line,
    usage_of,
)

_PR_SET_CHILD_SUBREAPER = 36
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def become_subreaper() -> bool:
    """Ask the kernel for our descendants' orphans (Linux 3.4+); ``False`` where it cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def keep(shim_pid: int, journal: str, lock_fd: int) -> NoReturn:
    """Run the keeper of ``shim_pid`` until nothing it owes is left; never returns."""
    code = 0
    try:
        _Keeper(shim_pid, journal, lock_fd).run()
    except BaseException:  # nothing may make the keeper leave early silently
        import traceback

        _log(f"failed:\n{traceback.format_exc()}")
        code = 1
    os._exit(code)


def exit_code(si_code: int, si_status: int) -> int:
    """A ``waitid`` result as a shell's exit code: 128+N for signal N."""
    return si_status if si_code == os.CLD_EXITED else 128 + si_status


class _Keeper:
    def __init__(self, shim_pid: int, journal: str, lock_fd: int) -> None:
        self.shim_pid = shim_pid
        self.journal = journal
        self.lock_fd = lock_fd
        self.me = os.getpid()
        #: pid -> attempt id: attempts of the dead shim not ended yet (None while it lives).
        self.owed: dict[int, str] | None = None
        self.journal_fd = -1

    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the run's own signals reach it
        while self.owed is None or self.owed:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                return  # no child at all: nothing can be owed
            if info is None:
                continue
            if info.si_pid == self.shim_pid and self.owed is None:
                self._shim_ended()
            else:
                self._reap(info.si_pid, exit_code(info.si_code, info.si_status))

    def _shim_ended(self) -> None:
        _, status, _ = os.wait4(self.shim_pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.owed = {}  # it left by itself, idle: every attempt of it has ended
        else:
            _log(f"shim {self.shim_pid} died ({_how(status)}); watching what it left")
            self.journal_fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self.owed = self._post_mortem()
        os.close(self.lock_fd)  # a new shim may start now: the journal says all we know

    def _reap(self, pid: int, code: int) -> None:
        _, _, ru = os.wait4(pid, 0)
        aid = self.owed.pop(pid, None) if self.owed else None
        if aid is None:
            return  # not an attempt (a background process the shim had inherited)
        line = journal_exit_line(_json(aid), code, time.time(), False, usage_of(ru))
        try:
            os.write(self.journal_fd, line)
        except OSError as exc:
            _log(f"{aid}: cannot write its exit status {code}: {exc}")

    # ------------------------------------------------------------------ post-mortem
    def _post_mortem(self) -> dict[int, str]:
        """Complete the dead shim's journal; return its attempts still to be reaped."""
        records = self._generation()
        children = _children_of(self.me)
        owed = {
            rec.pid: rec.attempt_id
            for rec in records
            if rec.pid and rec.status is None and _same(children.get(rec.pid), rec)
        }
        unresolved = [rec for rec in records if rec.unresolved]
        if unresolved:
            owed.update(self._resolve(unresolved, children, set(owed)))
        return owed

    def _generation(self) -> list[LaunchRecord]:
        """The records of our shim's generation (its ``B`` line names us as its keeper)."""
        reader = JournalReader(self.journal)
        reader.update()
        ours = [
            k for shim, k in reader.generations if shim == self.shim_pid and k and k.pid == self.me
        ]
        if not ours:
            return []  # it died before its first line: it launched nothing
        return [r for r in reader.records.values() if r.keeper == ours[-1]]

    def _resolve(
        self, unresolved: list[LaunchRecord], children: dict[int, int], known: set[int]
    ) -> dict[int, str]:
        """The shim died inside a spawn: find the process it made among its orphans.

        The shim spawns one attempt at a time and writes the ``I`` line just before, so only
        its last spawn can be unresolved, and the process is a child of ours that started
        after that line and is no attempt we know. Several candidates (a task's background
        process started in the same tick): nothing is written, and a recovery reports the
        attempt lost rather than guess.
        """
        if len(unresolved) != 1:
            _log(f"{len(unresolved)} spawns left unresolved: reported lost")
            return {}
        rec = unresolved[0]
        since = math.floor(rec.intent_boottime * _TICKS_PER_S)
        found = [pid for pid, ticks in children.items() if pid not in known and ticks >= since]
        line_id = _json(rec.attempt_id)
        if not found:
            self._write(journal_not_started_line(line_id))
            return {}
        if len(found) > 1:
            _log(f"{rec.attempt_id}: its spawn may have made any of {found}: reported lost")
            return {}
        pid = found[0]
        started = children[pid] / _TICKS_PER_S
        at = time.time() - (boottime() - started)
        self._write(journal_launch_line(line_id, pid, started, at))
        _log(f"{rec.attempt_id}: its shim died as it spawned it; it is pid {pid}")
        return {pid: rec.attempt_id}

    def _write(self, line: bytes) -> None:
        try:
            os.write(self.journal_fd, line)
        except OSError as exc:
            _log(f"cannot write the journal: {exc}")


def _same(start_ticks: int | None, rec: LaunchRecord) -> bool:
    """Our child ``rec.pid`` is the process the record names (a pid is reused only after)."""
    return start_ticks is not None and start_ticks <= rec.spawned_boottime * _TICKS_PER_S + 1


def _children_of(parent: int) -> dict[int, int]:
    """Our children, live or ended and not reaped: pid -> start time in clock ticks."""
    found: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            if int(fields[1]) == parent:
                found[int(name)] = int(fields[19])
    return found


def _json(attempt_id: str) -> str:
    import json

    return json.dumps(attempt_id)


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} keeper[{os.getpid()}] {message}", file=sys.stderr, flush=True)
