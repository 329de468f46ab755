"""The local executor: attempts run as processes on this machine, and outlive the orchestrator.

``LocalExecutor`` is the orchestrator's side only. The processes are started, reaped and
killed by a per-run *shim* (``_shim.py``): a small detached Python process that the executor
starts on first use and that outlives the orchestrator. The executor talks to it over a unix
socket: ``submit``/``kill`` are one line each way, and ``poll`` waits on the socket for the
events the shim pushes. That is why the hot path sleeps nowhere and costs about one syscall
per message.

``submit`` makes the attempt's directories (``work/``, its cwd) and its two empty logs itself,
before it hands the attempt to the shim. The shim runs every attempt of the run one after the
other, so its time per attempt bounds how many short attempts a run gets through, while the
orchestrator waits on the shim most of the time: creating files is a filesystem's costly
operation (a round trip to a metadata server on Lustre, GPFS or NFS), so it is done on the side
that has time for it. The shim only spawns, reaps, and appends one line per launch and one per
exit to the run's journal (``_files``).

Crash story, and why each piece exists:

* The orchestrator dies: the shim keeps reaping, journaling exit statuses and firing
  SIGKILL-after-grace timers. The next ``LocalExecutor`` on the same ``run_dir`` reconnects
  (the socket path is derived from ``run_dir``) and ``recover`` gets the shim's own table:
  still running, ended with a code, or never launched.
* The shim dies too (or alone): its keeper, the shim's parent, inherits the attempts and
  journals their exit statuses as they end, and completes the journal of a spawn the shim
  died in (``_keeper``). The next executor starts a new shim, which answers ``recover`` from
  the journal: an exit status line means ended; a launch line whose pid and start time still
  match means running, and it is watched until it ends (then its status is the one the keeper
  journaled). Only if the keeper died too is such an attempt lost.
* The shim dies while this executor is connected: ``poll`` notices the closed socket,
  starts a new shim, recovers every attempt still outstanding, sends again what the dead
  shim never spawned (its journal says so: the submit was never read, or the keeper found
  that the spawn made nothing), and sends again the kills still due. Nothing is launched
  twice, and nothing that ran is reported lost.

``ExecutorUnavailable`` is raised only when no shim can be started or reached at all (for
``start_timeout_s``: a starter killed during its start-up is started again), or when the disk
refuses an attempt's files (full, failing): the machine's fault, so the driver stops the run
instead of failing the attempt. Everything that goes wrong with one attempt arrives as an event.

Memory limits. An attempt is limited only when its environment sets
``STORMPROOF_MEMORY_LIMIT_MIB`` (``ENV_MEMORY_LIMIT_MIB``; the runtime sets it for tasks that
declare ``memory``, to the attempt's ``memory_mib``): a task that never said how much memory it
needs is not killed at the 1 GiB default. Only the variable's presence counts, the limit is
``memory_mib × nodes``: a gang attempt's nodes all run on this one machine, so together they
may use what the task asked for on each node. The shim enforces it (``_memory``), and reports
an attempt it killed for it as ``AttemptExited(exit_code=137, out_of_memory=True)``; the
verdict is in the journal's exit status line too, so a recovery after any crash reports it the
same. A run opts out with the executor option ``memory_limit: false``, or, without that
option, ``STORMPROOF_MEMORY_LIMIT=off`` in the orchestrator's environment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptStarted,
    AttemptSubmitFailed,
    Event,
)
from stormproof.executors._files import Layout, create_attempt
from stormproof.executors._wire import RECV_SIZE
from stormproof.executors.base import AttemptJob, ExecutorUnavailable, executor_options

PROTOCOL_VERSION = 1
#: Set in an attempt's environment: limit its memory (see the module docstring).
ENV_MEMORY_LIMIT_MIB = "STORMPROOF_MEMORY_LIMIT_MIB"
#: ``off`` in the orchestrator's environment: no memory limits for this run.
ENV_MEMORY_LIMIT = "STORMPROOF_MEMORY_LIMIT"
_OFF = frozenset(("off", "0", "false", "no"))
_EXIT_ALREADY_RUNNING = 3  # _shim.EXIT_ALREADY_RUNNING; the shim module is not imported here
_MAX_RECONNECTS = 3
_LOST_UNCONFIRMED = "the local shim died before it confirmed the launch"
_REPLY_TIMEOUT_S = 120.0
_RESTART_PAUSE_S = 0.02  # between tries to start a shim while another holds the lock
#: Errors creating an attempt's files that are the disk's fault, not the attempt's.
_DISK_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


class _Connection:
    """One socket to the shim: newline-delimited JSON both ways."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.poller = select.poll()  # leaner than selectors: poll() runs once per event batch
        self.poller.register(sock.fileno(), select.POLLIN)
        self.rest = b""
        self.out: list[bytes] = []

    def queue(self, item: list[Any]) -> None:
        """Keep a message for the next ``flush``: one write (and one wake-up of the shim) per
        driver loop iteration instead of one per submit or kill."""
        self.out.append(orjson.dumps(item))

    def flush(self) -> None:
        if self.out:
            self.out.append(b"")
            data, self.out = b"\n".join(self.out), []
            self.sock.sendall(data)

    def send(self, item: list[Any]) -> None:
        """Send at once, after anything queued (order is kept)."""
        self.queue(item)
        self.flush()

    def read(self, timeout_s: float) -> list[list[Any]]:
        """Messages that arrive within ``timeout_s`` (maybe none); ``ConnectionError`` at EOF."""
        if timeout_s > 0 and not self.poller.poll(timeout_s * 1000.0):
            return []
        try:
            data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        if not data:
            raise ConnectionResetError("the local shim closed the connection")
        if b"\n" not in data:
            self.rest += data
            return []
        *lines, rest = (self.rest + data).split(b"\n")
        self.rest = rest
        return [orjson.loads(line) for line in lines]

    def close(self) -> None:
        self.sock.close()


class LocalExecutor:
    """Runs attempts as local processes through the run's shim; see the module docstring.

    Options: ``idle_exit_s`` (how long an unused shim lingers, default 5),
    ``start_timeout_s`` (how long to try to start or reach a shim, default 15),
    ``python`` (the interpreter that runs the shim, default this one), ``memory_limit``
    (``false``: never limit memory; default: ``$STORMPROOF_MEMORY_LIMIT``, else on) and
    ``memory_sample_s`` (how often a new shim samples limited attempts, default 0.1).
    """

    def __init__(self, run_dir: Path, options: Mapping[str, Any] | None = None) -> None:
        opts = executor_options(options)
        self.layout = Layout.for_run(run_dir)
        self.idle_exit_s = float(opts.get("idle_exit_s", 5.0))
        self.hold_started_s = float(opts.get("hold_started_s", 0.002))
        self.start_timeout_s = float(opts.get("start_timeout_s", 15.0))
        self.python = str(opts.get("python", sys.executable))
        self.memory_limits = _switch(opts.get("memory_limit", os.environ.get(ENV_MEMORY_LIMIT)))
        self.memory_sample_s = float(opts.get("memory_sample_s", 0.1))
        self._conn: _Connection | None = None
        self._pending: list[Event] = []
        self._known: set[str] = set()  # submitted or recovered here: submit again is a no-op
        self._live: dict[str, str] = {}  # attempt id -> attempt dir, until its final event
        #: What we sent to submit attempts the shim has not reported started (or ended) yet:
        #: sent again if the shim dies first and its journal shows it never spawned them.
        self._unconfirmed: dict[str, list[Any]] = {}
        self._kills: dict[str, float] = {}  # attempt id -> monotonic time its SIGKILL is due
        self._requests = 0
        self._starter: subprocess.Popen[bytes] | None = None  # a shim starter ``prepare`` began

    # ------------------------------------------------------------------ the seam
    def prepare(self) -> None:
        """Start the shim in the background unless one listens already: its start-up (an
        interpreter and its imports) then overlaps the driver's own, instead of delaying the
        first attempt. Returns at once; the first submit connects, or reports the failure."""
        if self._conn is not None or self._starter is not None:
            return
        if os.path.exists(self.layout.socket):
            return  # a shim lives (or died and left its socket: the first submit sorts it out)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._starter = self._spawn_starter()

    def submit(self, job: AttemptJob) -> None:
        """Hand the attempt to the shim; return at once. Idempotent per attempt id."""
        if job.attempt_id in self._known:
            return
        attempt_dir = os.path.abspath(job.attempt_dir)
        try:
            create_attempt(attempt_dir)  # here, not in the shim: see the module docstring
        except OSError as exc:
            if exc.errno in _DISK_FAULTS:  # the machine's fault, not the attempt's: stop
                raise ExecutorUnavailable(
                    f"cannot create {attempt_dir} for attempt {job.attempt_id}: "
                    f"{exc.strerror or exc}; free space on that disk (or fix it)"
                ) from exc
            self._known.add(job.attempt_id)
            self._pending.append(
                AttemptSubmitFailed(
                    at=time.time(),
                    attempt_id=job.attempt_id,
                    message=f"cannot create the attempt's directory or logs: {exc}",
                )
            )
            return
        command: list[str] | str = (
            job.command if isinstance(job.command, str) else [str(a) for a in job.command]
        )
        env = {str(k): str(v) for k, v in job.env.items()}
        msg: list[Any] = ["submit", job.attempt_id, attempt_dir, command, env]
        if self.memory_limits and env.get(ENV_MEMORY_LIMIT_MIB):
            msg.append(max(1, job.memory_mib) * max(1, job.nodes) << 20)
        if job.after:  # held by the shim until that attempt ends
            msg += [0] * (6 - len(msg)) + [job.after]
        self._send(msg)
        self._known.add(job.attempt_id)
        self._live[job.attempt_id] = attempt_dir
        self._unconfirmed[job.attempt_id] = msg

    def kill(self, attempt_id: str, grace_s: float) -> None:
        """SIGTERM the attempt's process group now, SIGKILL after ``grace_s`` (the shim's timer)."""
        if attempt_id not in self._live:
            return
        grace_s = max(0.0, grace_s)
        self._send(["kill", attempt_id, grace_s])
        self._kills[attempt_id] = time.monotonic() + grace_s

    def withdraw(self, attempt_id: str) -> None:
        """Drop the attempt if the shim still holds it as a successor (``AttemptDropped``
        follows); if it has started, nothing happens."""
        if attempt_id in self._live:
            self._send(["withdraw", attempt_id])

    def signal(self, attempt_id: str, signum: int) -> None:
        """Send one signal to the attempt's process group (e.g. SIGUSR1: checkpoint now)."""
        if attempt_id in self._live:
            self._send(["signal", attempt_id, int(signum)])

    def poll(self, timeout_s: float) -> list[Event]:
        """Events that happened, waiting up to ``timeout_s`` for the first one."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        failures = 0
        while True:
            if self._conn is None and not self._live:
                events, self._pending = self._pending, []
                if not events:  # nothing runs here: there is nothing to wait for
                    time.sleep(max(0.0, deadline - time.monotonic()))
                return events
            try:
                conn = self._ensure()
                conn.flush()  # what was queued since the last poll, in one write
                wait_s = 0.0 if self._pending else max(0.0, deadline - time.monotonic())
                self._take(conn.read(wait_s))
            except (OSError, ValueError):
                self._broken()
                failures += 1
                if failures > _MAX_RECONNECTS:
                    raise ExecutorUnavailable(
                        f"the local shim keeps dying; see {self.layout.log}"
                    ) from None
                continue
            if self._pending or time.monotonic() >= deadline:
                events, self._pending = self._pending, []
                return events

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        """Adopt what still runs, report what ended or vanished; never-launched jobs get nothing."""
        dirs = {job.attempt_id: os.path.abspath(job.attempt_dir) for job in jobs}
        if not dirs:
            return []
        for _ in range(_MAX_RECONNECTS):
            try:
                self._ensure()
                return self._recover(dirs)
            except (OSError, ValueError):
                self._broken()
        raise ExecutorUnavailable(f"the local shim keeps dying; see {self.layout.log}")

    def close(self, final: bool = False) -> None:
        """Stop watching; running attempts carry on. ``final``: the run is over, so the shim may
        exit as soon as its last child has ended, without lingering."""
        starter, self._starter = self._starter, None
        if starter is not None:  # prepared, never used: reap the starter (it exits at once)
            with contextlib.suppress(subprocess.SubprocessError):
                starter.wait(timeout=self.start_timeout_s)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(OSError):
            # final: the shim may go once idle; otherwise the driver stops, and no held
            # successor may start with nobody watching (resume learns they were dropped)
            conn.send(["shutdown"] if final else ["drop"])
        conn.close()

    # ------------------------------------------------------------------ plumbing
    def _send(self, msg: list[Any]) -> None:
        """Queue ``msg``; ``poll`` (the driver's next step), ``recover`` or ``close`` sends it.
        If the shim dies before that, the attempts it never confirmed are reported lost and
        kills still due are sent again (``_heal``), as for a shim that died after reading."""
        for _ in range(_MAX_RECONNECTS):
            try:
                self._ensure().queue(msg)
                return
            except (OSError, ValueError):
                self._broken()
        raise ExecutorUnavailable(f"the local shim keeps dying; see {self.layout.log}")

    def _ensure(self) -> _Connection:
        """The connection to the shim; if the shim died under us, heal first."""
        if self._conn is None and self._live:
            self._heal()
        return self._connect()

    def _recover(self, dirs: dict[str, str]) -> list[Event]:
        conn = self._connect()
        self._requests += 1
        request_no = self._requests
        conn.send(["recover", request_no, [[aid, d] for aid, d in dirs.items()]])
        deadline = time.monotonic() + _REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            for msg in conn.read(max(0.0, deadline - time.monotonic())):
                if msg[0] == "R" and msg[1] == request_no:
                    return self._recovered(dirs, msg[2])
                self._take([msg])
        raise ExecutorUnavailable(f"the local shim did not answer recover; see {self.layout.log}")

    def _recovered(self, dirs: dict[str, str], items: list[list[Any]]) -> list[Event]:
        events = []
        for item in items:
            event = self._event(item)
            if event is None:
                continue
            aid = item[2]
            self._known.add(aid)
            if isinstance(event, AttemptStarted):
                self._live[aid] = dirs[aid]
            events.append(event)
        return events

    def _take(self, messages: list[list[Any]]) -> None:
        for msg in messages:
            event = self._event(msg)
            if event is not None:
                self._pending.append(event)

    def _event(self, msg: list[Any]) -> Event | None:
        """Translate one shim message to an event, forgetting attempts that have ended."""
        kind = msg[0]
        if kind == "S":
            self._unconfirmed.pop(msg[2], None)
            return AttemptStarted(at=msg[1], attempt_id=msg[2], handle=str(msg[3]))
        if kind not in ("X", "L", "F", "D"):
            return None  # a reply nobody waits for any more
        self._live.pop(msg[2], None)
        self._kills.pop(msg[2], None)
        self._unconfirmed.pop(msg[2], None)
        if kind == "X":
            oom = len(msg) > 4 and bool(msg[4])
            cpu_s, rss = (
                (float(msg[5]), round(int(msg[6]) / 1024, 1)) if len(msg) > 6 else (None, None)
            )
            return AttemptExited(
                at=msg[1],
                attempt_id=msg[2],
                exit_code=int(msg[3]),
                out_of_memory=oom,
                cpu_s=cpu_s,
                max_rss_mib=rss,
            )
        if kind == "L":
            return AttemptLost(at=msg[1], attempt_id=msg[2], reason=str(msg[3]))
        if kind == "D":
            return AttemptDropped(at=msg[1], attempt_id=msg[2], reason=str(msg[3]))
        return AttemptSubmitFailed(at=msg[1], attempt_id=msg[2], message=str(msg[3]))

    def _broken(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _heal(self) -> None:
        """After the shim died under us: reconnect, learn what became of our attempts, send
        again what the dead shim never spawned (its journal says so), re-kill."""
        outstanding = dict(self._live)
        events = self._recover(outstanding)
        self._pending += events
        reported = {getattr(e, "attempt_id", "") for e in events}
        now = time.time()
        conn = self._connect()
        for aid in outstanding.keys() - reported:
            msg = self._unconfirmed.get(aid)
            if msg is not None:  # never spawned (or a successor still held): send it again
                conn.queue(msg)
                continue
            self._live.pop(aid, None)
            self._kills.pop(aid, None)
            self._pending.append(AttemptLost(at=now, attempt_id=aid, reason=_LOST_UNCONFIRMED))
        for aid, due in list(self._kills.items()):
            if aid in self._live:
                conn.send(["kill", aid, max(0.0, due - time.monotonic())])

    # ------------------------------------------------------------------ connecting
    def _connect(self) -> _Connection:
        """Connect to the run's shim, starting one if none listens.

        A starter that another holds the lock against (a shim starting or leaving, or the
        keeper of a dead one finishing its journal) is tried again shortly; so is one that
        was killed or failed (a kill during its start-up is no reason to give up): until
        ``start_timeout_s``, after which ``ExecutorUnavailable`` names the last failure.
        """
        if self._conn is not None:
            return self._conn
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            conn = self._try_connect()
            if conn is not None:
                self._conn = conn
                return conn
            code = self._start_shim()
            if code not in (0, _EXIT_ALREADY_RUNNING) and time.monotonic() > deadline:
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                raise ExecutorUnavailable(
                    f"cannot start the local shim ({how}, for {self.start_timeout_s:g} s); "
                    f"see {self.layout.log}"
                )
            if time.monotonic() > deadline:
                raise ExecutorUnavailable(
                    f"the local shim did not answer within {self.start_timeout_s:g} s; "
                    f"see {self.layout.log}"
                )
            if code != 0:
                time.sleep(_RESTART_PAUSE_S)

    def _try_connect(self) -> _Connection | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.layout.socket)
            conn = _Connection(sock)
        except OSError:
            sock.close()
            return None
        try:
            conn.send(["hello", PROTOCOL_VERSION, dict(os.environ), os.getpid()])
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                for msg in conn.read(max(0.0, deadline - time.monotonic())):
                    if msg[0] == "H":
                        return conn
        except (OSError, ValueError):
            pass
        conn.close()  # an exiting shim, or one that does not answer
        return None

    def _start_shim(self) -> int:
        """Run the shim's starter (or wait for the one ``prepare`` began): it returns once the
        shim listens, or another holds the lock."""
        starter, self._starter = self._starter, None
        try:
            starter = starter or self._spawn_starter()
            return starter.wait(timeout=self.start_timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ExecutorUnavailable(f"cannot start the local shim: {exc}") from exc

    def _spawn_starter(self) -> subprocess.Popen[bytes]:
        os.makedirs(self.layout.state_dir, exist_ok=True)
        with open(self.layout.log, "ab") as log:
            return subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "stormproof.executors._shim",
                    self.layout.state_dir,
                    "--idle-exit-s",
                    repr(self.idle_exit_s),
                    "--hold-started-s",
                    repr(self.hold_started_s),
                    "--memory-sample-s",
                    repr(self.memory_sample_s),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=_shim_environment(),
            )


def _switch(value: object) -> bool:
    """An on/off setting: ``False``, or a string like ``off``/``0``/``no``, is off; unset is on."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in _OFF


def _shim_environment() -> dict[str, str]:
    """Our environment, with the path this package was imported from first, so the shim can
    import it too. Attempts do not inherit this: their base environment comes from ``hello``."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    current = env.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root + (os.pathsep + current if current else "")
    return env
