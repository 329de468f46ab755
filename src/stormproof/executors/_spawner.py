"""A small process that starts and waits for a Dask worker's commands, so the worker does not.

Why: a Dask worker runs each task in a thread while its event loop, busy with the scheduler's
messages, holds the GIL most of the time. Every system call that thread makes (``mkdir``,
``open``, the spawn itself, ``wait4``) gives the GIL up, and taking it back means waiting for
the loop to let go: up to the interpreter's switch interval (5 ms) each time. The wrapper
made some 25 such calls per attempt, which is most of what an attempt of a short command cost
on a loaded worker (``bench/README.md``, the Dask section). Here the calls are made by a
single-threaded process with nothing else to do, and the worker's thread makes a handful:
it sends the request, then blocks until the spawner reports the start and the exit.

One spawner per worker, started by the worker's ``AttemptKeeper`` with the first attempt.
Between them:

* a *control* socket (``SOCK_SEQPACKET``, passed to the spawner at its start): the worker sends on
  it, for each attempt, one end of a fresh socket pair, its *channel*. When the control socket
  closes (the worker exited, was killed, or its keeper closed it on teardown) the spawner
  kills the process group of every command still running and exits: a command never runs on
  unwatched after its worker is gone (the promise the keeper's reaper kept before);
* per attempt, the channel. The worker writes the request (one JSON line: ``argv``, ``cwd``,
  ``env`` added to the spawner's environment, the two logs, and the ``claim``: a file made with
  ``O_CREAT | O_EXCL`` and the line to write in it before anything runs). The spawner answers
  one line: ``started`` (the pid, which leads its own session and process group),
  ``claimed`` (the claim file existed: nothing ran), or ``refused`` (127/126 and why, as a
  shell would say). After ``started``, the worker may write ``stop``: it is stopping the
  command, so when the leader exits its group's stragglers are killed before it is reaped (its
  pgid still pinned). Then the spawner reaps the command with ``wait4`` and answers ``exit``
  (the code, 128+N for signal N, its CPU seconds and ``ru_maxrss``). If the channel closes
  before that (the worker's thread died), the command's group is killed.

Everything else (kills, signals, notices, time limits, the memory watchdog) stays with the
worker, which knows each command's pid: a process group can be signalled by anyone.
This module uses the standard library only: it runs as ``python -m`` in a process that must
start fast and stay small (its peak RSS is what a command it starts inherits in ``ru_maxrss``,
so commands above it get their own peak reported).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

#: Names the fd of the spawner's end of the control socket, in its environment.
_CONTROL_ENV = "STORMPROOF_SPAWNER_CONTROL"
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_CLAIM_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
#: Without pidfds (Linux before 5.3) exits are looked for this often.
_EXIT_POLL_S = 0.02
#: Python ignores these; a command starts with them at their default (as ``subprocess`` does).
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


# ---------------------------------------------------------------------- the worker's side
class Spawner:
    """The worker's handle on its spawner process (one per worker; thread-safe)."""

    def __init__(self) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stormproof.executors._spawner"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # Ctrl-C in the worker's terminal is not for it
                env={**os.environ, _CONTROL_ENV: str(theirs.fileno())},
            )
        except BaseException:
            self.control.close()
            raise
        finally:
            theirs.close()

    def open(self, request: dict[str, Any]) -> Channel:
        """A channel for one attempt, its request sent."""
        mine, theirs = socket.socketpair()
        try:
            socket.send_fds(self.control, [b"a"], [theirs.fileno()])
        except OSError:
            mine.close()
            raise
        finally:
            theirs.close()
        channel = Channel(mine)
        channel.send(request)
        return channel

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the control socket: the spawner kills what still runs, and exits."""
        self.control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)


class Channel:
    """One attempt's conversation with the spawner: JSON lines both ways."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.lock = threading.Lock()  # ``stop`` may come from another thread
        self.poller = select.poll()  # not ``select``: a worker may hold fds past 1024
        self.poller.register(sock, select.POLLIN)

    def send(self, message: dict[str, Any] | str) -> None:
        line = (message if isinstance(message, str) else json.dumps(message)).encode() + b"\n"
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(line)

    def ready(self, timeout_s: float) -> bool:
        """Whether a line (or the end) can be read now, waiting up to ``timeout_s``."""
        if b"\n" in self.buf:
            return True
        return bool(self.poller.poll(max(0.0, timeout_s) * 1000.0))

    def read(self) -> dict[str, Any] | None:
        """The next message; ``None`` if the spawner is gone (it was killed)."""
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        with self.lock:
            self.sock.close()


# ---------------------------------------------------------------------- the spawner process
@dataclass(eq=False)
class _Attempt:
    channel: socket.socket
    buf: bytes = b""
    pid: int = 0
    pidfd: int = -1
    asked: bool = False  # its request was read
    stop: bool = False  # kill its group's stragglers when the leader exits
    gone: bool = False  # the worker's side closed the channel
    argv0: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class _Server:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.sel = selectors.DefaultSelector()
        self.sel.register(control, selectors.EVENT_READ, "control")
        self.running: dict[int, _Attempt] = {}  # by pid, until reaped
        self.pidfds = hasattr(os, "pidfd_open")

    def serve(self) -> None:
        try:
            self._serve()
        finally:  # however it ends, no command runs on unwatched
            self._kill_all()

    def _serve(self) -> None:
        while True:
            timeout = None if self.pidfds or not self.running else _EXIT_POLL_S
            ready = self.sel.select(timeout)
            # requests and stops first: a ``stop`` written before its command's SIGTERM must
            # be known before that command's exit is handled
            exits = []
            for key, _ in ready:
                if key.data == "control":
                    if not self._accept():
                        return
                elif isinstance(key.data, _Attempt) and key.fileobj is key.data.channel:
                    self._read(key.data)
                else:
                    exits.append(key.data)
            if not self.pidfds:
                exits = [a for a in self.running.values() if _exited(a.pid)]
            for attempt in exits:
                self._reap(attempt)

    def _accept(self) -> bool:
        try:
            message, fds, _, _ = socket.recv_fds(self.control, 16, 4)
        except OSError:
            return False
        if not message and not fds:
            return False  # the worker is gone
        for fd in fds:
            os.set_inheritable(fd, False)  # a command must not hold a channel open
            channel = socket.socket(fileno=fd)
            channel.setblocking(False)
            self.sel.register(channel, selectors.EVENT_READ, _Attempt(channel))
        return True

    def _read(self, attempt: _Attempt) -> None:
        try:
            data = attempt.channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker's thread is gone: its command must not run on unwatched
            self._forget_channel(attempt)
            if attempt.pid and attempt.pid in self.running:
                _kill_group(attempt.pid)
            return
        attempt.buf += data
        while b"\n" in attempt.buf:
            line, _, attempt.buf = attempt.buf.partition(b"\n")
            if not attempt.asked:
                attempt.asked = True
                try:
                    request = json.loads(line)
                    self._start(attempt, request)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    why = f"a request the spawner cannot read: {exc}"
                    self._say(
                        attempt, {"e": "refused", "code": 126, "verdict": "refused", "reason": why}
                    )
                    self._forget_channel(attempt)
                    return
            elif line.strip() == b"stop":
                attempt.stop = True

    def _start(self, attempt: _Attempt, request: dict[str, Any]) -> None:
        answer = _spawn(request)
        if answer.get("e") == "started":
            pid = int(answer["pid"])
            attempt.pid = pid
            self.running[pid] = attempt
            if self.pidfds:
                with contextlib.suppress(OSError):
                    attempt.pidfd = os.pidfd_open(pid)
                    self.sel.register(attempt.pidfd, selectors.EVENT_READ, attempt)
            answer["inherited_kib"] = _own_peak_rss_kib()
        self._say(attempt, answer)
        if answer.get("e") != "started":
            self._forget_channel(attempt)

    def _reap(self, attempt: _Attempt) -> None:
        if attempt.stop:
            _kill_group(attempt.pid)  # stragglers: the leader is unreaped, its pgid pinned
        if attempt.pidfd >= 0:
            self.sel.unregister(attempt.pidfd)
            os.close(attempt.pidfd)
            attempt.pidfd = -1
        _, status, usage = os.wait4(attempt.pid, 0)
        self.running.pop(attempt.pid, None)
        code = os.waitstatus_to_exitcode(status)
        self._say(
            attempt,
            {
                "e": "exit",
                "code": 128 - code if code < 0 else code,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "maxrss_kib": usage.ru_maxrss,
            },
        )
        self._forget_channel(attempt)

    def _say(self, attempt: _Attempt, message: dict[str, Any]) -> None:
        if attempt.gone:
            return
        line = json.dumps(message).encode() + b"\n"
        with contextlib.suppress(OSError):
            attempt.channel.setblocking(True)  # a line or two: never more than the buffer
            attempt.channel.sendall(line)
            attempt.channel.setblocking(False)

    def _forget_channel(self, attempt: _Attempt) -> None:
        if attempt.gone:
            return
        attempt.gone = True
        self.sel.unregister(attempt.channel)
        attempt.channel.close()

    def _kill_all(self) -> None:
        for pid in list(self.running):
            _kill_group(pid)


def _spawn(req: dict[str, Any]) -> dict[str, Any]:
    """Claim, then start the command in its own session with its logs; what happened."""
    cwd = str(req["cwd"])
    try:
        os.mkdir(cwd)
    except FileExistsError:
        pass
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.makedirs(cwd, exist_ok=True)
    except OSError:
        pass  # the spawn says why
    claim = req.get("claim")
    if claim is not None:
        try:
            fd = os.open(str(claim[0]), _CLAIM_FLAGS, 0o644)
        except FileExistsError:
            return {"e": "claimed"}
        except OSError as exc:
            return _refused(req, 126, "refused", f"cannot claim the attempt: {exc}")
        try:
            os.write(fd, str(claim[1]).encode())
        finally:
            os.close(fd)
    started = time.time()
    argv = [str(a) for a in req["argv"]]
    if not argv:
        return _refused(req, 126, "refused", "the command is an empty list")
    env = {**os.environ, **req.get("env", {})}
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
    if program is None:  # what a shell would say
        return _refused(req, 127, "exited", f"{argv[0]}: command not found")
    try:
        out = os.open(str(req["stdout"]), _LOG_FLAGS, 0o644)
        err = os.open(str(req["stderr"]), _LOG_FLAGS, 0o644)
    except OSError as exc:
        return _refused(req, 126, "refused", str(exc), log=False)
    try:
        try:
            os.chdir(cwd)  # this process has one thread: its cwd is the child's, at no cost
        except OSError as exc:
            return _refused(req, 126, "refused", f"cannot enter the work dir: {exc}")
        pid = os.posix_spawn(
            program,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, err, 2),
            ],
            setsid=True,
            setsigdef=_DEFAULT_SIGNALS,
        )
    except FileNotFoundError:
        return _refused(req, 127, "exited", f"{argv[0]}: command not found")
    except PermissionError:
        return _refused(req, 126, "exited", f"{argv[0]}: Permission denied")
    except OSError as exc:
        return _refused(req, 126, "refused", f"cannot start {argv[0]}: {exc}")
    finally:
        os.close(out)
        os.close(err)
        os.chdir("/")
    return {"e": "started", "pid": pid, "at": started}


def _refused(
    req: dict[str, Any], code: int, verdict: str, reason: str, log: bool = True
) -> dict[str, Any]:
    if log:
        with contextlib.suppress(OSError):
            fd = os.open(str(req["stderr"]), _LOG_FLAGS, 0o644)
            try:
                os.write(fd, f"stormproof: {reason}\n".encode(errors="replace"))
            finally:
                os.close(fd)
    return {"e": "refused", "code": code, "verdict": verdict, "reason": reason}


def _exited(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None and info.si_pid == pid
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


def _own_peak_rss_kib() -> int:
    """This process's peak resident set (KiB): what a command it forks carries in its own
    ``ru_maxrss`` across the exec (Linux keeps the larger of the two)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    fd = int(os.environ.pop(_CONTROL_ENV))
    os.set_inheritable(fd, False)
    os.chdir("/")
    _Server(socket.socket(fileno=fd)).serve()


if __name__ == "__main__":
    main()
