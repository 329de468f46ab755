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
the run left behind (read, adopted, awaited) is ``_adoption``'s. What each request of a client
does, and the protocol, are ``_requests``'; successors held until their predecessor ends are
``_successors``'; memory limits are enforced by ``_memory_limits``; the sockets are ``_wire``'s.

The orchestrator makes each attempt's directories and logs before it submits it
(``_files.create_attempt``): the shim runs every attempt of the run, one after the other, so
what it does per attempt bounds the run's throughput, and creating files is costly on most
filesystems. Whether an attempt was launched already is the journal's to say, not the
directory's.

Memory: an attempt submitted with a limit is sampled with its whole session, and killed, all
of it, when it uses more (``_memory_limits``).

Kills: SIGTERM goes to the attempt's process group at once. SIGKILL goes to the group when
the grace ends, or when the leader exits, whichever comes first: an ended attempt leaves no
stragglers. The leader is reaped only after that SIGKILL, so its pid, and with it the group
id, cannot have been reused by then.

The shim exits by itself when no client is connected, no child runs and no SIGKILL is due,
for ``--idle-exit-s`` seconds, or at once after a ``shutdown`` request once that holds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import heapq
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any

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
    journal_usage_line,
    proc_start_ticks,
    usage_of,
)
from stormproof.executors._keeper import become_subreaper, exit_code, keep
from stormproof.executors._memory_limits import MEMORY_TIMER, MemoryLimits
from stormproof.executors._requests import Requests
from stormproof.executors._spawn import Refused, Spawned, open_logs, spawn_with_logs
from stormproof.executors._successors import HeldSuccessors
from stormproof.executors._wire import READ, READABLE, WRITE, Client, Poller, listen, same_user

#: Exit code of ``main`` when another live shim already holds the run's lock.
EXIT_ALREADY_RUNNING = 3
_HAS_WAITID = hasattr(os, "waitid")  # not on macOS (see _reap)


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
        self.boot = boot_id()
        self.poller = Poller()
        self.clients: set[Client] = set()
        self.dirty: set[Client] = set()
        self.attempts: dict[str, AttemptRecord] = {}
        self.children: dict[int, AttemptRecord] = {}
        self.kill_pending: set[str] = set()
        self.timers: list[tuple[float, int, str]] = []  # (monotonic, seq, attempt id or "")
        self.seq = 0
        self.idle_since: float | None = None
        self.shutdown_requested = False
        self.adoption = Adoption(layout.journal, self.boot, self)
        self.successors = HeldSuccessors(self)
        self.memory_limits = MemoryLimits(self, memory_sample_s)
        self.requests = Requests(self)
        self.journal_fd = os.open(
            layout.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
        )
        self.journal_later: list[bytes] = []  # lines that may wait for the next write
        self.journal(
            _newline_if_torn(self.journal_fd) + journal_boot_line(self.boot, os.getpid(), keeper)
        )
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.poller.register(listener.fileno(), READ, self._on_accept)
        self.poller.register(self.wake_r.fileno(), READ, self._on_wakeup)

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
                self.journal(b"")  # about to sleep: what waited for company goes now
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
            or self.successors.waiting
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
        self.journal(b"")
        self.poller.unregister(self.listener.fileno())
        self.listener.close()
        for path in (self.layout.socket, self.layout.pid):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for client in list(self.clients):
            self._drop(client)
        self.log("idle: exiting")

    # ------------------------------------------------------------------ clients
    def _on_accept(self, mask: int) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if not same_user(sock):
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
            self.requests.handle_line(client, line)

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
                    self.log("dropping a client that is gone or does not read its events")
                    self._drop(client)

    # ------------------------------------------------------------------ launching
    def launch(
        self,
        client: Client,
        attempt_id: str,
        attempt_dir: str,
        command: Any,
        env: dict[str, str],
        memory_limit: int = 0,
    ) -> None:
        """Start an attempt that waits for nothing (a held successor starts through ``start``)."""
        rec = AttemptRecord(attempt_id, attempt_dir, owner=client, memory_limit=memory_limit)
        self.attempts[attempt_id] = rec
        logs = open_logs(attempt_dir)
        self.start(rec, command, env, logs)

    def start(
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
            self.journal(journal_intent_line(rec.id_json, boottime()))
            try:
                result = spawn_with_logs(rec.attempt_dir, command, env, logs)
            except Exception as exc:  # whatever it is, the orchestrator must hear of it
                self.log(f"{rec.attempt_id}: spawn failed:\n{traceback.format_exc()}")
                result = Refused(f"cannot start: {exc}", None, time.time())
        if isinstance(result, Spawned):
            rec.pid, rec.spawned_boottime, rec.started_at = (
                result.pid,
                result.spawned_boottime,
                result.at,
            )
            rec.child = True
            self.children[result.pid] = rec
            self.journal(
                journal_launch_line(rec.id_json, result.pid, result.spawned_boottime, result.at)
            )
            if rec.memory_limit > 0:
                self.memory_limits.watch(rec)
            self.send(client, f'["S",{rec.started_at!r},{rec.id_json},{rec.pid}]', hold=True)
        elif result.exit_code is not None:  # what a shell would do: 127 / 126
            self._write_status(rec, result.exit_code, result.at)
            self.send(client, rec.exited(result.at, result.exit_code))
            self.start_successors(rec)
        else:
            if not isinstance(logs, Refused):
                self.journal(journal_not_started_line(rec.id_json))
            self.send(client, rec.end("F", result.at, result.message))
            self.start_successors(rec)

    def journal(self, line: bytes, later: bool = False) -> None:
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
            self.log(f"cannot write the journal: {exc}")

    def start_successors(self, pred: AttemptRecord) -> None:
        """``pred`` ended: start what waited for it (it has sent its own final event)."""
        self.successors.start_after(pred)

    def _write_status(
        self, rec: AttemptRecord, code: int, at: float, out_of_memory: bool = False
    ) -> None:
        self.journal(journal_exit_line(rec.id_json, code, at, out_of_memory))

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
            self.signal_group(rec, signal.SIGKILL)
            self.clear_kill(rec)
        return self.memory_limits.leader_ended(rec, code)

    def _ended(self, rec: AttemptRecord, code: int, at: float, oom: bool, ru: Any) -> None:
        """Reaped, its status journaled: tell its owner, start what waited for it."""
        self.children.pop(rec.pid, None)
        rec.usage = usage_of(ru)
        self.journal(journal_usage_line(rec.id_json, rec.usage), later=True)
        self.send(rec.owner, rec.exited(at, code, oom))  # queued: it leaves when the loop waits
        if rec.attempt_id in self.successors.waiting:
            self.start_successors(rec)

    # ------------------------------------------------------------------ kills, signals, timers
    def kill(self, rec: AttemptRecord, grace_s: float) -> None:
        """SIGTERM to the attempt's group now, SIGKILL when ``grace_s`` is over (or at once)."""
        if rec.final is not None or not self.signal_group(rec, signal.SIGTERM):
            return
        if grace_s <= 0:
            self.signal_group(rec, signal.SIGKILL)
            return
        due = time.monotonic() + grace_s
        if rec.kill_at is None or due < rec.kill_at:
            rec.kill_at = due
            self.kill_pending.add(rec.attempt_id)
            self.add_timer(due, rec.attempt_id)

    def signal_group(self, rec: AttemptRecord, sig: int) -> bool:
        """Signal the attempt's process group; ``False`` if the attempt is not alive any more."""
        if not rec.child and not is_our_process(rec.pid, rec.spawned_boottime):
            return False  # adopted, and the pid now belongs to someone else (or nobody)
        try:
            os.killpg(rec.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError as exc:
            self.log(f"{rec.attempt_id}: cannot signal group {rec.pid}: {exc}")
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
            if key == MEMORY_TIMER:
                self.memory_limits.sample()
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
        self.signal_group(rec, signal.SIGKILL)

    def log(self, message: str) -> None:
        """One line in the shim's log (its stderr, which the executor sends to ``shim.log``)."""
        _log(message)


# ---------------------------------------------------------------------- start-up
def _ignore_signal(signum: int, frame: object) -> None:
    """SIGCHLD must have a handler (not SIG_IGN, which would auto-reap and lose exit codes)."""


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} shim[{os.getpid()}] {message}", file=sys.stderr, flush=True)


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
    listener = listen(layout.socket)
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
