"""The per-run shim: the long-lived parent of every local attempt.

Why a separate process: attempts must outlive the orchestrator, and their exit codes must not
be lost when it dies. Only a process's parent can learn its exit code, so the parent must not
be the orchestrator. A wrapper process per attempt (``sh -c '...; echo $? > status'``) would
double what a short attempt costs (a process is ~0.65 ms of CPU to start and end here), which
is too much: 10,000 short tasks must run within 1.5x of ``xargs -P 2``. So one small Python
process per run does it for all of them. It spawns each attempt as its own child (in a new
session), reaps it, appends its exit status to the run's journal, and pushes events to the
connected orchestrator over a unix socket. If the orchestrator dies, the shim goes on
reaping, writing statuses and firing SIGKILL-after-grace timers. A new orchestrator
reconnects to it and asks ``recover``.

If the shim dies, its *keeper* (``_keeper``: its parent, which does nothing else) inherits
its children, journals how each ends, and finishes what the shim left half-written. Two
orders make that complete. An exit status is journaled *before* its attempt is reaped
(``waitid(WNOWAIT)`` first), so a shim killed in between leaves an unreaped child whose status
is written. A spawn is announced (an ``I`` line) *before* it happens, so a shim killed inside
it (``posix_spawn`` sleeps until the child has called ``exec``: most of the shim's time) leaves
a line that sends the keeper looking for the new process among its orphans. The keeper holds
the shim's lock until it has done so: the next shim reads a complete journal. That next shim
answers ``recover`` from the journal (see ``_files``), which it reads as it starts: ended
attempts have an ``X`` line, running ones are found by pid + start time and watched through a
pidfd; when one of those ends, the next shim finds the status its keeper journaled (it reads
the journal's tail until it is there, or until that keeper is gone: then it is lost).

What the shim knows of each attempt is an ``_attempt.AttemptRecord``; what earlier shims of
the run left behind (read, adopted, awaited) is ``_adoption``'s.

The orchestrator makes each attempt's directories and logs before it submits it
(``_files.create_attempt``): the shim runs every attempt of the run, one after the other, so
what it does per attempt bounds the run's throughput, and creating files is costly on most
filesystems. Whether an attempt was launched already is the journal's to say, not the
directory's.

Memory: an attempt submitted with a limit (bytes; see ``LocalExecutor`` for when it has one)
is sampled every ``--memory-sample-s`` with its whole session (``_memory`` says how, and why
not cgroups or rlimits). Over the limit, every process of the session gets SIGKILL, a line
goes to its ``stderr.log``, and when the leader is reaped its status is written as 137 with
the out-of-memory flag and the exit event says ``out_of_memory``. A shim that adopts attempts after
its predecessor died does not limit them: the limits died with it.

Kills: SIGTERM goes to the attempt's process group at once. SIGKILL goes to the group when
the grace ends, or when the leader exits, whichever comes first: an ended attempt leaves no
stragglers. The leader is reaped only after that SIGKILL, so its pid, and with it the group
id, cannot have been reused by then.

The shim exits by itself when no client is connected, no child runs and no SIGKILL is due,
for ``--idle-exit-s`` seconds, or at once after a ``shutdown`` request once that holds.

Protocol: one JSON array per line, each way.

    client -> shim   ["hello", version, env, client_pid]     answered by ["H", version, shim_pid]
                     ["submit", attempt_id, attempt_dir, command, env(, memory_limit(, after))]
                     ["kill", attempt_id, grace_s]
                     ["drop"]                      drop every held successor (the driver stops)
                     ["withdraw", attempt_id]      drop it if held; if it started, nothing
                     ["recover", request_no, [[attempt_id, attempt_dir], ...]]
                                                   answered by ["R", request_no, [event, ...]]
                     ["shutdown"]
    shim -> client   ["S", at, attempt_id, pid]               started
                     ["X", at, attempt_id, exit_code(, oom(, cpu_s, max_rss_kib))]
                                                   exited (128+N for signal N); oom 1: killed
                                                   for its memory; then its usage (wait4)
                     ["L", at, attempt_id, reason]            lost
                     ["F", at, attempt_id, message]           could not be submitted
                     ["D", at, attempt_id, reason]            a held successor dropped unstarted

Successors: a submit with ``after`` whose predecessor is still alive here is *held*: its
logs are opened and a ``Q`` line goes to the journal, but it starts only when the
predecessor ends (its exit status journaled and its event queued, then the spawn, announced
by its ``I`` line first: both events go out in one flush). A predecessor that already
ended, or that this shim does not know, lets it start at once. A held successor that is
killed or dropped (``drop``), or whose predecessor was dropped, ends ``D`` without having run;
so does one whose shim died while holding it (the next shim finds its ``Q`` line and no
``I`` after it; with an ``I``, the keeper says what became of it).

An attempt's events go only to the client that submitted or recovered it last, so a
reconnecting orchestrator gets each fact once: from ``recover``, or later as an event.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import heapq
import os
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import orjson

from stormproof.executors._adoption import POLL_TIMER, STATUS_TIMER, Adoption
from stormproof.executors._attempt import AttemptRecord
from stormproof.executors._files import (
    Keeper,
    Layout,
    boot_id,
    boottime,
    is_our_process,
    journal_boot_line,
    journal_exit_line,
    journal_intent_line,
    journal_launch_line,
    journal_not_started_line,
    journal_queued_line,
    journal_usage_line,
    proc_start_ticks,
    usage_of,
)
from stormproof.executors._keeper import become_subreaper, exit_code, keep
from stormproof.executors._memory import MemorySampler, SessionUsage
from stormproof.executors._spawn import Refused, Spawned, open_logs, spawn_with_logs
from stormproof.executors._wire import READ, READABLE, WRITE, Client, Poller

PROTOCOL_VERSION = 2  # 2: the client makes attempt dirs and logs; statuses in the journal
#: Exit code of ``main`` when another live shim already holds the run's lock.
EXIT_ALREADY_RUNNING = 3
_HAS_WAITID = hasattr(os, "waitid")  # not on macOS (see _reap)
_MEMORY_TIMER = "\0memory"  # the timer key of memory sampling (attempt ids hold no NUL)
_KILLED = 128 + signal.SIGKILL


class Shim:
    """One run's attempts, their children and timers, driven by one poll loop."""

    def __init__(
        self,
        layout: Layout,
        listener: socket.socket,
        idle_exit_s: float,
        hold_started_s: float,
        memory_sample_s: float = 0.1,
        keeper: Keeper | None = None,
    ) -> None:
        self.layout = layout
        self.listener = listener
        self.idle_exit_s = idle_exit_s
        self.hold_started_s = hold_started_s
        self.memory_sample_s = memory_sample_s
        self.memory = MemorySampler()
        self.limited: dict[int, AttemptRecord] = {}  # leader pid (= session id) -> limited child
        self.sampling = False  # a memory sample is due on the timer heap
        self.boot = boot_id()
        self.poller = Poller()
        self.clients: set[Client] = set()
        self.dirty: set[Client] = set()
        self.attempts: dict[str, AttemptRecord] = {}
        self.children: dict[int, AttemptRecord] = {}
        self.kill_pending: set[str] = set()
        self.waiting: dict[str, list[AttemptRecord]] = {}  # predecessor id -> its held successors
        self.timers: list[tuple[float, int, str]] = []  # (monotonic, seq, attempt id or "")
        self.seq = 0
        self.idle_since: float | None = None
        self.shutdown_requested = False
        self.adoption = Adoption(layout.journal, self.boot, self)
        self.journal_fd = os.open(
            layout.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
        )
        self.journal_later: list[bytes] = []  # lines that may wait for the next write
        self._journal(
            _newline_if_torn(self.journal_fd) + journal_boot_line(self.boot, os.getpid(), keeper)
        )
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.poller.register(listener.fileno(), READ, self._on_accept)
        self.poller.register(self.wake_r.fileno(), READ, self._on_wakeup)
        self.ops: dict[str, Callable[[Client, list[Any]], None]] = {
            "hello": self._op_hello,
            "submit": self._op_submit,
            "kill": self._op_kill,
            "signal": self._op_signal,
            "recover": self._op_recover,
            "shutdown": self._op_shutdown,
            "drop": self._op_drop,
            "withdraw": self._op_withdraw,
        }

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        self._reap()  # in case a child ended before the handler was in place
        # Idle from the start: a shim started ahead of need (``LocalExecutor.prepare``) whose
        # driver never connects must leave too, not wait for a first client forever.
        self.idle_since = time.monotonic()
        while True:
            timeout = self._timeout()
            if self.journal_later and (timeout is None or timeout > 0.05):
                self._journal(b"")  # about to sleep: what waited for company goes now
            self.poller.wait(timeout)
            self._fire_timers()
            self._flush()
            if self._should_exit():
                break
        self._close()

    def _timeout(self) -> float | None:
        deadlines = [self.timers[0][0]] if self.timers else []
        deadlines += [c.hold_until for c in self.dirty if c.hold_until is not None]
        if self.idle_since is not None:
            deadlines.append(self.idle_since + self.idle_exit_s)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _should_exit(self) -> bool:
        if (
            self.children
            or self.kill_pending
            or self.clients
            or self.waiting
            or self.adoption.awaiting
        ):
            self.idle_since = None
            return False
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        if not self.shutdown_requested and now - self.idle_since < self.idle_exit_s:
            return False
        self._on_accept(READ)  # last look: someone may be knocking right now
        return not self.clients

    def _close(self) -> None:
        self._journal(b"")
        self.poller.unregister(self.listener.fileno())
        self.listener.close()
        for path in (self.layout.socket, self.layout.pid):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for client in list(self.clients):
            self._drop(client)
        _log("idle: exiting")

    # ------------------------------------------------------------------ clients
    def _on_accept(self, mask: int) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if not _same_user(sock):
            sock.close()
            return
        sock.setblocking(False)
        client = Client(sock, dict(os.environ))
        self.clients.add(client)
        self.poller.register(sock.fileno(), READ, lambda m: self._on_client(client, m))
        self.shutdown_requested = False

    def _on_client(self, client: Client, mask: int) -> None:
        if mask & WRITE and not client.flush(self.poller):
            self._drop(client)
        if not mask & READABLE or client.closed:
            return
        lines = client.receive()
        if lines is None:
            self._drop(client)
            return
        for line in lines:
            self._handle_line(client, line)

    def _handle_line(self, client: Client, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
            op = self.ops[msg[0]]
        except (ValueError, KeyError, IndexError, TypeError):
            _log(f"ignoring a malformed message: {line[:200]!r}")
            return
        try:
            op(client, msg)
        except Exception:  # one bad request must never take the shim and every attempt down
            _log(f"failed to handle {line[:200]!r}:\n{traceback.format_exc()}")

    def _drop(self, client: Client) -> None:
        if client.closed:
            return
        self.clients.discard(client)
        self.dirty.discard(client)
        client.close(self.poller)

    def send(self, client: Client | None, message: str, hold: bool = False) -> None:
        """Queue one message (JSON text); it is flushed when the loop is about to wait.

        ``hold``: a "started" event may wait up to ``hold_started_s`` for company. A short
        attempt's start and exit then reach the orchestrator as one wake-up (and one
        event-log commit) instead of two. Any other message flushes it at once, in order.
        """
        if client is None or client.closed:
            return  # nobody listens: the journal and recover carry the news
        client.queue(message, self.hold_started_s if hold else 0.0)
        self.dirty.add(client)

    def _flush(self) -> None:
        now = time.monotonic()
        for client in list(self.dirty):
            if client.due(now):
                self.dirty.discard(client)
                if not client.flush(self.poller):
                    _log("dropping a client that is gone or does not read its events")
                    self._drop(client)

    # ------------------------------------------------------------------ requests
    def _op_hello(self, client: Client, msg: list[Any]) -> None:
        client.env = {str(k): str(v) for k, v in msg[2].items()}
        self.send(client, f'["H",{PROTOCOL_VERSION},{os.getpid()}]')

    def _op_shutdown(self, client: Client, msg: list[Any]) -> None:
        self.shutdown_requested = True

    def _op_recover(self, client: Client, msg: list[Any]) -> None:
        events = []
        for attempt_id, attempt_dir in msg[2]:
            rec = self._known(str(attempt_id), str(attempt_dir))
            if rec is not None:
                rec.owner = client
                state = rec.state_event()
                if state is not None:  # a held one says nothing: the client submits it again
                    events.append(state)
        self.send(client, f'["R",{int(msg[1])},[{",".join(events)}]]')

    def _op_submit(self, client: Client, msg: list[Any]) -> None:
        attempt_id, attempt_dir, command, env = msg[1:5]
        memory_limit = int(msg[5]) if len(msg) > 5 else 0
        after = str(msg[6]) if len(msg) > 6 else ""
        rec = self.attempts.get(attempt_id)
        if rec is None and attempt_id in self.adoption.earlier:
            rec = self.adoption.from_disk(attempt_id, attempt_dir)
        if rec is not None:  # launched already: adopt it instead of launching it twice
            if rec.owner is not client:
                rec.owner = client
                state = rec.state_event()
                if state is not None:
                    self.send(client, state)
            return
        try:
            env = {**client.env, **env}
            pred = self.attempts.get(after) if after else None
            if pred is not None and pred.final is None:
                self._hold(client, attempt_id, attempt_dir, command, env, memory_limit, pred)
                return
            self._launch(client, attempt_id, attempt_dir, command, env, memory_limit)
        except Exception as exc:  # whatever it was, the orchestrator must hear of this attempt
            _log(f"{attempt_id}: launch failed:\n{traceback.format_exc()}")
            rec = self.attempts.get(attempt_id)
            if rec is None:
                self._refuse(client, attempt_id, attempt_dir, f"cannot start: {exc!r}")
            elif rec.final is None and not rec.pid and rec.held is None:
                self.send(client, rec.end("F", time.time(), f"cannot start: {exc!r}"))

    def _op_kill(self, client: Client, msg: list[Any]) -> None:
        rec = self.attempts.get(msg[1])
        if rec is not None and rec.held is not None:
            self._drop_held(rec, "killed while it waited for its predecessor")
            return
        grace_s = float(msg[2])
        if rec is None or rec.final is not None or not self._signal_group(rec, signal.SIGTERM):
            return
        if grace_s <= 0:
            self._signal_group(rec, signal.SIGKILL)
            return
        due = time.monotonic() + grace_s
        if rec.kill_at is None or due < rec.kill_at:
            rec.kill_at = due
            self.kill_pending.add(rec.attempt_id)
            self.add_timer(due, rec.attempt_id)

    def _op_drop(self, client: Client, msg: list[Any]) -> None:
        """The driver stops: no held successor may start with nobody watching."""
        for held in list(self.waiting.values()):
            for rec in held:
                if rec.held is not None:
                    self._drop_held(rec, "the run stopped before its predecessor ended")

    def _op_withdraw(self, client: Client, msg: list[Any]) -> None:
        rec = self.attempts.get(msg[1])
        if rec is not None and rec.held is not None:
            self._drop_held(rec, "withdrawn: a place is free elsewhere")

    def _op_signal(self, client: Client, msg: list[Any]) -> None:
        """Deliver one signal (a checkpoint request) to the attempt's group; no kill follows."""
        rec = self.attempts.get(msg[1])
        if rec is not None and rec.final is None:
            self._signal_group(rec, int(msg[2]))

    # ------------------------------------------------------------------ launching
    def _launch(
        self,
        client: Client,
        attempt_id: str,
        attempt_dir: str,
        command: Any,
        env: dict[str, str],
        memory_limit: int = 0,
    ) -> None:
        rec = AttemptRecord(attempt_id, attempt_dir, owner=client, memory_limit=memory_limit)
        self.attempts[attempt_id] = rec
        logs = open_logs(attempt_dir)
        self._start(rec, command, env, logs)

    def _start(
        self,
        rec: AttemptRecord,
        command: Any,
        env: dict[str, str],
        logs: tuple[int, int] | Refused,
    ) -> None:
        """Spawn the attempt (its logs open already); report it started, or how it ended.

        The ``I`` line goes to the journal first: should this shim die inside the spawn, its
        keeper finds the new process among the orphans and journals it (see ``_keeper``).
        """
        client = rec.owner
        if isinstance(logs, Refused):
            result: Spawned | Refused = logs
        else:
            self._journal(journal_intent_line(rec.id_json, boottime()))
            try:
                result = spawn_with_logs(rec.attempt_dir, command, env, logs)
            except Exception as exc:  # whatever it is, the orchestrator must hear of it
                _log(f"{rec.attempt_id}: spawn failed:\n{traceback.format_exc()}")
                result = Refused(f"cannot start: {exc}", None, time.time())
        if isinstance(result, Spawned):
            rec.pid, rec.spawned_boottime, rec.started_at = (
                result.pid,
                result.spawned_boottime,
                result.at,
            )
            rec.child = True
            self.children[result.pid] = rec
            self._journal(
                journal_launch_line(rec.id_json, result.pid, result.spawned_boottime, result.at)
            )
            if rec.memory_limit > 0:
                self._limit(rec)
            self.send(client, f'["S",{rec.started_at!r},{rec.id_json},{rec.pid}]', hold=True)
        elif result.exit_code is not None:  # what a shell would do: 127 / 126
            self._write_status(rec, result.exit_code, result.at)
            self.send(client, rec.exited(result.at, result.exit_code))
            self.start_successors(rec)
        else:
            if not isinstance(logs, Refused):
                self._journal(journal_not_started_line(rec.id_json))
            self.send(client, rec.end("F", result.at, result.message))
            self.start_successors(rec)

    def _journal(self, line: bytes, later: bool = False) -> None:
        """Append to the journal in one write, with the lines that were left to wait.

        ``later``: the line may wait for the next write (usage figures, which only a crash
        of this shim in between can lose). Everything else goes now, in order.
        """
        if later:
            self.journal_later.append(line)
            return
        if self.journal_later:
            line = b"".join(self.journal_later) + line
            self.journal_later.clear()
        if not line:
            return
        try:
            os.write(self.journal_fd, line)
        except OSError as exc:  # only a recovery without this shim suffers
            _log(f"cannot write the journal: {exc}")

    # ------------------------------------------------------------------ successors
    def _hold(
        self,
        client: Client,
        attempt_id: str,
        attempt_dir: str,
        command: Any,
        env: dict[str, str],
        memory_limit: int,
        pred: AttemptRecord,
    ) -> None:
        """Keep a successor until ``pred`` ends; everything but the spawn is done now."""
        logs = open_logs(attempt_dir)
        rec = AttemptRecord(attempt_id, attempt_dir, owner=client, memory_limit=memory_limit)
        self.attempts[attempt_id] = rec
        if isinstance(logs, Refused):
            self.send(client, rec.end("F", logs.at, logs.message))
            return
        rec.held, rec.after = (command, env, logs), pred.attempt_id
        self.waiting.setdefault(pred.attempt_id, []).append(rec)
        self._journal(journal_queued_line(rec.id_json))

    def start_successors(self, pred: AttemptRecord) -> None:
        """``pred`` ended: start what waited for it (it has sent its own final event)."""
        for rec in self.waiting.pop(pred.attempt_id, ()):
            if rec.held is None:
                continue
            command, env, logs = rec.held
            rec.held = None
            try:
                self._start(rec, command, env, logs)
            except Exception as exc:  # the orchestrator must hear of this attempt
                _log(f"{rec.attempt_id}: launch failed:\n{traceback.format_exc()}")
                if rec.final is None and not rec.pid:
                    self.send(rec.owner, rec.end("F", time.time(), f"cannot start: {exc!r}"))

    def _drop_held(self, rec: AttemptRecord, reason: str) -> None:
        """A held successor ends without having run; so does what waited behind it."""
        if rec.held is None:
            return
        _, _, (out_fd, err_fd) = rec.held
        rec.held = None
        for fd in (out_fd, err_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        held = self.waiting.get(rec.after)
        if held is not None and rec in held:
            held.remove(rec)
            if not held:
                del self.waiting[rec.after]
        self.send(rec.owner, rec.end("D", time.time(), reason))
        for behind in list(self.waiting.pop(rec.attempt_id, ())):
            self._drop_held(behind, f"{rec.attempt_id}, which it waited for, was dropped")

    def _refuse(self, client: Client, attempt_id: str, attempt_dir: str, message: str) -> None:
        rec = AttemptRecord(attempt_id, attempt_dir, owner=client)
        self.attempts[attempt_id] = rec
        self.send(client, rec.end("F", time.time(), message))

    def _write_status(
        self, rec: AttemptRecord, code: int, at: float, out_of_memory: bool = False
    ) -> None:
        self._journal(journal_exit_line(rec.id_json, code, at, out_of_memory))

    # ------------------------------------------------------------------ reaping
    def _on_wakeup(self, mask: int) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self.wake_r.recv(4096)
        self._reap()

    def _reap(self) -> None:
        """Journal each ended child's status, *then* reap it.

        In that order, a shim killed in between leaves a child that is ended but not reaped,
        with its status written: the keeper, which inherits it, reaps it and owes nothing.
        Reaped first, its status would die with the shim. ``waitid(WNOWAIT)`` tells the
        status without reaping; only macOS lacks it, and there the status follows the reap.
        """
        while True:
            if not _HAS_WAITID:
                if not self._reap_without_waitid():
                    return
                continue
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            rec = self.children.get(pid)
            if rec is None:  # a task's orphan, inherited as subreaper: nobody's attempt
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                continue
            code = exit_code(info.si_code, info.si_status)
            at = time.time()
            oom = self._ending(rec, code)
            self._write_status(rec, code, at, oom)
            _, _, ru = os.wait4(pid, os.WNOHANG)
            self._ended(rec, code, at, oom, ru)

    def _reap_without_waitid(self) -> bool:
        try:
            pid, status, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return False
        rec = self.children.get(pid)
        if rec is not None:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            at = time.time()
            oom = self._ending(rec, code)
            if rec.kill_at is not None:  # reaped: its group id may be reused any time now
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                self.clear_kill(rec)
            self._write_status(rec, code, at, oom)
            self._ended(rec, code, at, oom, ru)
        return True

    def _ending(self, rec: AttemptRecord, code: int) -> bool:
        """The leader ended, not reaped yet: kill what is left of a group being killed (its
        unreaped leader keeps the group id from being reused); whether memory killed it."""
        if rec.kill_at is not None and _HAS_WAITID:
            self._signal_group(rec, signal.SIGKILL)
            self.clear_kill(rec)
        if rec.memory_limit:
            self.limited.pop(rec.pid, None)
        # Our SIGKILL, not its own end just before it: the leader's code says which came first.
        return rec.killed_for_memory and code == _KILLED

    def _ended(self, rec: AttemptRecord, code: int, at: float, oom: bool, ru: Any) -> None:
        """Reaped, its status journaled: tell its owner, start what waited for it."""
        self.children.pop(rec.pid, None)
        rec.usage = usage_of(ru)
        self._journal(journal_usage_line(rec.id_json, rec.usage), later=True)
        self.send(rec.owner, rec.exited(at, code, oom))  # queued: it leaves when the loop waits
        if rec.attempt_id in self.waiting:
            self.start_successors(rec)

    # ------------------------------------------------------------------ signals and timers
    def _signal_group(self, rec: AttemptRecord, sig: int) -> bool:
        """Signal the attempt's process group; ``False`` if the attempt is not alive any more."""
        if not rec.child and not is_our_process(rec.pid, rec.spawned_boottime):
            return False  # adopted, and the pid now belongs to someone else (or nobody)
        try:
            os.killpg(rec.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError as exc:
            _log(f"{rec.attempt_id}: cannot signal group {rec.pid}: {exc}")
            return False
        return True

    def clear_kill(self, rec: AttemptRecord) -> None:
        rec.kill_at = None
        self.kill_pending.discard(rec.attempt_id)

    def add_timer(self, due: float, key: str) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (due, self.seq, key))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, key = heapq.heappop(self.timers)
            if key == _MEMORY_TIMER:
                self._sample_memory()
            elif key == STATUS_TIMER:
                self.adoption.look_for_statuses()
            elif key == POLL_TIMER:
                self.adoption.poll_adopted()
            else:
                self._fire_kill(key, now)

    def _fire_kill(self, attempt_id: str, now: float) -> None:
        rec = self.attempts.get(attempt_id)
        if rec is None or rec.kill_at is None or rec.kill_at > now:
            return  # ended meanwhile, or an earlier kill superseded this timer
        self.clear_kill(rec)
        self._signal_group(rec, signal.SIGKILL)

    # ------------------------------------------------------------------ memory
    def _limit(self, rec: AttemptRecord) -> None:
        """Start watching a child's memory; samples run while any limited child does."""
        if not self.memory.available:
            _log(f"{rec.attempt_id}: its memory limit cannot be enforced here (no /proc)")
            return
        self.limited[rec.pid] = rec
        self.memory.watch(rec.pid)
        if not self.sampling:
            self.sampling = True
            self.add_timer(time.monotonic() + self.memory_sample_s, _MEMORY_TIMER)

    def _sample_memory(self) -> None:
        self.sampling = False
        if not self.limited:
            self.memory.reset()
            return
        usage = self.memory.sample(self.limited.keys())
        for sid, rec in list(self.limited.items()):
            session = usage.get(sid)
            if session is not None and session.leader_alive and session.rss > rec.memory_limit:
                self._check_memory(rec, session)
        self.sampling = True
        self.add_timer(time.monotonic() + self.memory_sample_s, _MEMORY_TIMER)

    def _check_memory(self, rec: AttemptRecord, session: SessionUsage) -> None:
        """Over the limit by RSS: kill if the proportional size (shared pages split) agrees."""
        used = self.memory.proportional(pid for pid, _ in session.members)
        if used is None:
            used = session.rss
        if used > rec.memory_limit:
            self._kill_for_memory(rec, session, used)

    def _kill_for_memory(self, rec: AttemptRecord, session: SessionUsage, used: int) -> None:
        """SIGKILL the whole session: its group at once, then members that left the group."""
        del self.limited[rec.pid]
        rec.killed_for_memory = True
        self._signal_group(rec, signal.SIGKILL)
        for pid, group in session.members:
            if group != rec.pid:  # a pid outside the leader's group is not pinned: it may
                with contextlib.suppress(OSError):  # have ended; its number is not reused yet
                    os.kill(pid, signal.SIGKILL)
        note = (
            f"killed: it used {used >> 20} MiB of memory, over its limit of "
            f"{rec.memory_limit >> 20} MiB"
        )
        _log(f"{rec.attempt_id}: {note}")
        _append_note(rec.attempt_dir + "/stderr.log", f"stormproof: {note}\n")

    # ------------------------------------------------------------------ recovery
    def _known(self, attempt_id: str, attempt_dir: str) -> AttemptRecord | None:
        return self.attempts.get(attempt_id) or self.adoption.from_disk(attempt_id, attempt_dir)


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


# ---------------------------------------------------------------------- start-up
def _ignore_signal(signum: int, frame: object) -> None:
    """SIGCHLD must have a handler (not SIG_IGN, which would auto-reap and lose exit codes)."""


def _same_user(sock: socket.socket) -> bool:
    """Only our own user may drive the shim. The socket file is 0600 too, and this check is
    the second lock, for the fallback socket dir. Skipped where SO_PEERCRED does not exist."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid == os.getuid()


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} shim[{os.getpid()}] {message}", file=sys.stderr, flush=True)


def _listen(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a dead shim; we hold the lock, so it is not a live one's
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _newline_if_torn(fd: int) -> bytes:
    """A newline if the journal ends inside a line (a writer died mid-write): the next line
    must not be glued to the torn one, or a reader would lose both."""
    size = os.fstat(fd).st_size
    return b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""


def _write_small(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    """Become the run's shim, or exit with ``EXIT_ALREADY_RUNNING`` if one is alive.

    The first process takes the lock and binds the socket, then forks. The parent exits 0 to
    tell the executor "listening". The child (not the executor's child, so never its zombie)
    runs the loop, holding the lock until it exits.
    """
    parser = argparse.ArgumentParser(prog="python -m stormproof.executors._shim")
    parser.add_argument("state_dir")
    parser.add_argument("--idle-exit-s", type=float, default=10.0)
    parser.add_argument("--hold-started-s", type=float, default=0.0)
    parser.add_argument("--memory-sample-s", type=float, default=0.1)
    args = parser.parse_args(argv)
    layout = Layout(os.path.abspath(args.state_dir))
    os.makedirs(layout.state_dir, exist_ok=True)
    lock_fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return EXIT_ALREADY_RUNNING
    listener = _listen(layout.socket)
    if os.fork() != 0:
        os._exit(0)
    os.chdir("/")
    keeper = os.getpid()
    become_subreaper()  # before the shim exists: it hands its orphans to us if it dies
    shim = os.fork()
    if shim != 0:
        listener.close()
        keep(shim, layout.journal, lock_fd)
    become_subreaper()  # a task's orphans come to us while we live, never to the keeper
    start_ticks = proc_start_ticks(keeper) if os.getppid() == keeper else None
    _write_small(layout.pid, f"{os.getpid()}\n")
    _write_small(layout.endpoint, layout.socket + "\n")
    _log(f"listening on {layout.socket} (keeper {keeper})")
    Shim(
        layout,
        listener,
        args.idle_exit_s,
        args.hold_started_s,
        args.memory_sample_s,
        Keeper(keeper, start_ticks) if start_ticks is not None else None,
    ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
