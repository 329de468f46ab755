"""The chaos engine: random workflows, real kills, resume until done, then the invariants.

One *run* is a random workflow (seeded: the same seed makes the same DAG, failures, pools and
kill schedule) of short shell tasks that leave side effects in a file outside the home: a
line as an attempt starts, one as it ends (with its exit code), and for checkpointing tasks
one when a restored checkpoint was found intact (or not). The run is driven by the real
``stormproof`` command, and while it runs the engine kills, at random moments including
start-up:

* ``orchestrator``: ``kill -9`` of the ``stormproof run``/``resume`` process;
* ``shim``: ``kill -9`` of the local executor's shim (or of its starter, during start-up);
  the orchestrator lives on and must heal by itself;
* ``both``: ``kill -9`` of the shim and of the orchestrator at the same moment;
* ``signal``: SIGTERM or SIGINT to the orchestrator (alternately), which must stop it
  cleanly with exit code 130.

It also interrupts spot instances (``stormproof interrupt``, and the pools' own interruption
rates). After every death of the orchestrator it checks that the newest committed checkpoint
of every unfinished task restores, and ``resume``\\ s; when the kills of the run are spent it
lets the last ``resume`` finish and checks, from the side effects and the event log:

* every run ends (``succeeded`` or ``failed``), and no drive sits idle for ``STALL_S``;
* no attempt ran twice, and no task ran again after an attempt of it had succeeded;
* nothing was lost: every attempt that wrote its end line has that exit code in the log (or
  128+N, killed after the line), no attempt is ``AttemptLost``, none that ran is ``dropped``;
* no completion counted twice: one final event per attempt, one success per task;
* every committed checkpoint was restorable, and every restore found its content intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.invariants import newest_checkpoints, violations
from tests.chaos.workflows import Settings, config, workflow

KINDS = ("orchestrator", "shim", "both", "signal")
#: A drive that appends nothing to its log for this long while tasks of < 1 s run is stuck.
STALL_S = 20.0
#: How long a run may take in all before it counts as not ending.
RUN_DEADLINE_S = 300.0
_SHIM_MODULE = b"stormproof.executors._shim"
_STORMPROOF = (sys.executable, "-m", "stormproof")
#: How a drive may leave before the run ends: stopped (130), killed by us, or SIGTERM'd
#: before its handler was in place (the interpreter's first milliseconds).
_STOPPED = (130, -signal.SIGKILL, -signal.SIGTERM)


@dataclass
class Tally:
    """What one or more runs did and found."""

    runs: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    runs_with: Counter[str] = field(default_factory=Counter)  # runs that saw each kind
    interrupts: int = 0
    checkpoints_checked: int = 0
    violations: list[str] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.runs += other.runs
        self.kills.update(other.kills)
        self.runs_with.update(other.runs_with)
        self.interrupts += other.interrupts
        self.checkpoints_checked += other.checkpoints_checked
        self.violations += other.violations
        self.states.update(other.states)


# ---------------------------------------------------------------------- one run
class Run:
    """One chaos run in its own directory: drive it with kills, then check it."""

    def __init__(self, seed: int, root: Path, settings: Settings) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.settings = settings
        self.dir = root / f"run-{seed}"
        self.dir.mkdir(parents=True)
        self.home = self.dir / ".stormproof"
        self.effects = self.dir / "effects"
        self.name = f"chaos-{seed}"
        self.tally = Tally(runs=1)
        self.signal_toggle = False
        self.ended: str | None = None
        spec = workflow(self.rng, self.name, self.effects, settings)
        (self.dir / "wf.json").write_text(json.dumps(spec))
        (self.dir / "stormproof.yaml").write_text(config(self.rng))
        self.state_dir = self.home / "runs" / self.name / "local-executor"

    # ------------------------------------------------------------------ driving
    def drive(self) -> Tally:
        started = time.monotonic()
        kills_left = self.rng.randint(*self.settings.kills_per_run)
        try:
            while self.ended is None:
                if time.monotonic() - started > RUN_DEADLINE_S:
                    self.violation(f"did not end within {RUN_DEADLINE_S:.0f} s")
                    break
                if self.log_length() < 0:  # not stored yet (killed before): start it anew
                    proc = self.start(["run", "wf.json", "--name", self.name, "--quiet"])
                else:
                    proc = self.start(["resume", self.name, "--quiet"])
                if kills_left > 0:
                    kills_left -= 1
                    self.chaos_cycle(proc)
                else:
                    self.finish(proc)
                if self.ended is None:
                    self.check_checkpoints()
            if self.ended is not None:
                self.tally.states[self.ended] += 1
                self.check_invariants()
        finally:
            self.kill_leftovers()
            self.tally.seconds = time.monotonic() - started
        return self.tally

    def start(self, args: list[str]) -> subprocess.Popen[bytes]:
        env = dict(os.environ, STORMPROOF_HOME=str(self.home))
        with _ours_lock:  # registered before the reaper can see it end
            proc = subprocess.Popen(
                [*_STORMPROOF, *args],
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _ours.add(proc.pid)
        return proc

    def chaos_cycle(self, proc: subprocess.Popen[bytes]) -> None:
        """Some shim kills, maybe an interruption, then one death of the orchestrator.

        A third of the cycles strike during start-up (the first 0.6 s: imports, the run being
        stored, the shim starting); the others count their moments from when the shim is up,
        so that on a slow machine too they land while attempts run.
        """
        rng = self.rng
        # "both" needs a shim up (an orchestrator kill without one): weighed up a little
        kind = rng.choices(("orchestrator", "both", "signal"), (0.27, 0.43, 0.30))[0]
        early = rng.random() < 0.33
        delay = rng.uniform(0.0, 0.6) if early else rng.uniform(0.05, 2.0)
        events: list[tuple[float, Callable[[], None]]] = []
        if early and rng.random() < 0.5:  # the shim, as its starter runs
            events.append((0.0, lambda: self.kill_starter(proc)))
        for _ in range(rng.randint(*self.settings.shim_kills_per_cycle)):
            events.append((rng.uniform(0.0, delay), self.kill_shim))
        if rng.random() < 0.3:
            events.append((rng.uniform(0.0, delay), self.interrupt))
        events.sort(key=lambda e: e[0])
        t0 = time.monotonic() if early else self.shim_up(proc)
        for at, action in events:
            if not self.wait_until(proc, t0 + at):
                break
            action()
        if not self.wait_until(proc, t0 + delay):
            self.ended_with(proc)
            return
        getattr(self, f"kill_{kind}")(proc)
        self.ended_with(proc)

    def shim_up(self, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> float:
        """When the drive's shim was seen up (or gave up waiting): the clock of a cycle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None and self.shim_pid() is None:
            time.sleep(0.005)
        return time.monotonic()

    def finish(self, proc: subprocess.Popen[bytes]) -> None:
        """No more kills: the drive must end the run, without stalling."""
        last_seq, last_change = -1, time.monotonic()
        while proc.poll() is None:
            time.sleep(0.2)
            seq = self.log_length()
            if seq != last_seq:
                last_seq, last_change = seq, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                self.violation(f"the drive sat idle for {STALL_S:.0f} s (log at row {seq})")
                proc.kill()
        self.ended_with(proc)

    def wait_until(self, proc: subprocess.Popen[bytes], when: float) -> bool:
        """Sleep until ``when``; ``False`` if the orchestrator ended first."""
        while time.monotonic() < when:
            if proc.poll() is not None:
                return False
            time.sleep(min(0.01, max(0.0, when - time.monotonic())))
        return proc.poll() is None

    def ended_with(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.violation("a stopped orchestrator did not exit within 60 s")
            proc.kill()
            code = proc.wait()
        with _ours_lock:
            _ours.discard(proc.pid)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if "Traceback" in err:
            self.violation(f"a traceback (exit {code}): {err[-800:]}")
        final = self.final_state()
        if final is not None:
            self.ended = final
            if code != {"succeeded": 0}.get(final, 1) and code not in _STOPPED:
                self.violation(f"the run {final}, and the command exited {code}")
        elif code in (0, 1):
            self.violation(f"exit {code} but the log has no final state: {err[-300:]}")
        elif code == 2 and "another stormproof process" in err:
            time.sleep(0.2)  # an earlier driver still letting go: try again
        elif code not in _STOPPED:
            self.violation(f"the orchestrator exited {code}: {err[-500:]}")

    # ------------------------------------------------------------------ kills
    def kill_orchestrator(self, proc: subprocess.Popen[bytes]) -> None:
        if _signal(proc.pid, signal.SIGKILL):
            self.count("orchestrator")

    def kill_both(self, proc: subprocess.Popen[bytes]) -> None:
        """The shim and the orchestrator at once; during start-up, the shim as it starts (its
        starter, or a shim not listening yet). With no shim at all, an orchestrator kill."""
        shim = self.shim_pid() or self.starting_shim(proc)
        deadline = time.monotonic() + 1.0  # one killed just before may be starting again
        while shim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
            shim = self.shim_pid() or self.starting_shim(proc)
        if shim is None:
            self.kill_orchestrator(proc)
            return
        hit_shim = _signal(shim, signal.SIGKILL)
        hit_orch = _signal(proc.pid, signal.SIGKILL)
        if hit_shim and hit_orch:
            self.count("both")
        elif hit_orch:
            self.count("orchestrator")

    def kill_signal(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM or SIGINT, in turn. SIGINT only once the command's own code runs: in the
        interpreter's first milliseconds (``site``, ``runpy``) Python turns it into a
        ``KeyboardInterrupt`` traceback before any program could install a handler. SIGTERM
        kills the interpreter outright there (no traceback, nothing to lose)."""
        self.signal_toggle = not self.signal_toggle
        sig = signal.SIGTERM if self.signal_toggle else signal.SIGINT
        if sig == signal.SIGINT:
            deadline = time.monotonic() + 2.0
            while not _catches(proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
                time.sleep(0.002)  # the entry point installs both handlers at once
        if _signal(proc.pid, sig):
            self.count("signal")

    def kill_shim(self) -> None:
        pid = self.shim_pid()
        if pid is not None and _signal(pid, signal.SIGKILL):
            self.count("shim")

    def kill_starter(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill the shim as it starts (its starter), as soon as it shows up."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and proc.poll() is None:
            pid = self.starting_shim(proc)
            if pid is not None and _signal(pid, signal.SIGKILL):
                self.count("shim")
                return
            time.sleep(0.003)

    def starting_shim(self, proc: subprocess.Popen[bytes]) -> int | None:
        """The shim's starter (the orchestrator's child running the shim module), if any.

        Never a process further down: between a listing and a kill, the starter's child may
        become a keeper, and a keeper's death is not what these kinds promise to survive.
        """
        for pid in _processes_of(str(self.state_dir)):
            if _parent(pid) == proc.pid:
                return pid
        return None

    def shim_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):  # IndexError: being written
            pid = int((self.state_dir / "shim.pid").read_text().split()[0])
            if _SHIM_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        return None

    def interrupt(self) -> None:
        """``stormproof interrupt`` of a spot instance the log says is up."""
        up = self.spot_instances()
        if not up:
            return
        env = dict(os.environ, STORMPROOF_HOME=str(self.home))
        target = self.rng.choice(up)
        with _ours_lock:
            proc = subprocess.Popen(
                [*_STORMPROOF, "interrupt", self.name, "--instance", target, "--notice", "0.3s"],
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _ours.add(proc.pid)
        _, err = proc.communicate(timeout=60)
        with _ours_lock:
            _ours.discard(proc.pid)
        if proc.returncode == 0:
            self.tally.interrupts += 1
        elif b"Traceback" in err:
            self.violation(f"`stormproof interrupt` failed with a traceback: {err[-500:]!r}")

    def count(self, kind: str) -> None:
        self.tally.kills[kind] += 1
        if self.tally.kills[kind] == 1:
            self.tally.runs_with[kind] += 1

    def kill_leftovers(self) -> None:
        """Attempts, shims and keepers outlive orchestrators by design: end ours."""
        for pid in _processes_of(str(self.dir)):
            _signal(pid, signal.SIGKILL)

    def violation(self, what: str) -> None:
        self.tally.violations.append(f"seed {self.seed}: {what}")

    # ------------------------------------------------------------------ the log
    def rows(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(category, kind, data) of every row of the run, in order."""
        db = self.home / "stormproof.db"
        if not db.exists():
            return []
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            ) as c:
                found = c.execute(
                    "SELECT category, kind, data FROM rows WHERE run = ? ORDER BY seq",
                    (self.name,),
                ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # killed while it created the database
                return []
            raise
        return [(cat, kind, json.loads(data)) for cat, kind, data in found]

    def log_length(self) -> int:
        """The run's last seq (0: stored, nothing logged yet); -1 while it is not stored."""
        db = self.home / "stormproof.db"
        if not db.exists():
            return -1
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c,
        ):
            if c.execute("SELECT 1 FROM runs WHERE name = ?", (self.name,)).fetchone() is None:
                return -1
            row = c.execute("SELECT max(seq) FROM rows WHERE run = ?", (self.name,)).fetchone()
            return int(row[0] or 0)
        return -1

    def final_state(self) -> str | None:
        finished = [d["state"] for cat, kind, d in self.rows() if kind == "RunFinished"]
        return finished[-1] if finished else None

    def spot_instances(self) -> list[str]:
        up: set[str] = set()
        for _, kind, data in self.rows():
            if kind == "InstanceUp" and str(data.get("instance_id", "")).startswith("spot-"):
                up.add(str(data["instance_id"]))
            elif kind in ("InstanceLost", "InterruptionNotice"):
                up.discard(str(data.get("instance_id", "")))
        return sorted(up)

    # ------------------------------------------------------------------ invariants
    def check_checkpoints(self) -> None:
        """With no orchestrator running: the newest commit of each unfinished task restores."""
        newest = newest_checkpoints(self.rows())
        if not newest:
            return
        from stormproof.checkpoints.open import open_checkpoint_store

        store = open_checkpoint_store(str(self.home / "checkpoints"), self.home)
        for task, seq in sorted(newest.items()):
            with tempfile.TemporaryDirectory(dir=self.dir) as dest:
                try:
                    store.restore(self.name, task, seq, Path(dest) / "c")
                    content = (Path(dest) / "c" / "state").read_text().strip()
                except Exception as exc:
                    self.violation(f"committed checkpoint {task}/{seq} does not restore: {exc}")
                    continue
            self.tally.checkpoints_checked += 1
            if content != f"{task} ok":
                self.violation(f"checkpoint {task}/{seq} restores wrong content {content!r}")

    def check_invariants(self) -> None:
        effects = self.effects.read_text().splitlines() if self.effects.exists() else []
        for what in violations(effects, self.rows()):
            self.violation(what)


# ---------------------------------------------------------------------- processes
#: Commands we started and will wait for ourselves: the reaper leaves them alone.
_ours: set[int] = set()
_ours_lock = threading.Lock()


def _set_subreaper(on: bool) -> None:
    """Become the reaper of orphaned descendants (killed shims' keepers, ...): a container's
    pid 1 may never reap them, and thousands of zombies would use up the pids."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans() -> None:
    """Reap ended children that are not commands we wait for ourselves."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            data = Path(f"/proc/{name}/stat").read_bytes()
            fields = data[data.rfind(b")") + 2 :].split()
            if fields[0] != b"Z" or int(fields[1]) != me:
                continue
            with _ours_lock:
                if int(name) in _ours:
                    continue
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(name), os.WNOHANG)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _processes_of(mark: str) -> list[int]:
    """Pids whose command line names ``mark`` (a run's directory) or whose environment does."""
    found = []
    needle = mark.encode()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
                continue
            if needle in Path(f"/proc/{name}/environ").read_bytes():
                found.append(int(name))
    return found


def _catches(pid: int, sig: int) -> bool:
    """Whether ``pid`` has a handler for ``sig`` (``SigCgt`` in its status)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path(f"/proc/{pid}/status").read_text()
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) >> (sig - 1) & 1)
    return False


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        data = Path(f"/proc/{pid}/stat").read_bytes()
        return int(data[data.rfind(b")") + 2 :].split()[1])
    return 0


# ---------------------------------------------------------------------- many runs
_DEFAULT = Settings()


def chaos(
    seeds: Iterable[int],
    root: Path,
    settings: Settings = _DEFAULT,
    lanes: int = 2,
    enough: Callable[[Tally], bool] | None = None,
    report: Callable[[Tally, Tally], None] | None = None,
) -> Tally:
    """Run the seeds' runs, ``lanes`` at a time, until they are done or ``enough`` says so."""
    total = Tally(runs=0)
    lock = threading.Lock()
    queue = iter(seeds)
    started = time.monotonic()

    def lane() -> None:
        while True:
            with lock:
                if enough is not None and enough(total):
                    return
                seed = next(queue, None)
            if seed is None:
                return
            try:
                one = Run(seed, root, settings).drive()
            except Exception:  # the engine's own failure: say so, and carry on
                import traceback

                one = Tally(runs=1, violations=[f"seed {seed}: engine: {traceback.format_exc()}"])
            _reap_orphans()
            with lock:
                total.add(one)
                total.seconds = time.monotonic() - started
                if report is not None:
                    report(one, total)

    threads = [threading.Thread(target=lane, name=f"chaos-lane-{i}") for i in range(lanes)]
    _set_subreaper(True)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        _set_subreaper(False)
        _reap_orphans()
    total.seconds = time.monotonic() - started
    return total
