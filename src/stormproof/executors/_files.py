"""What the local executor keeps on disk, shared by ``LocalExecutor`` and its shim.

The orchestrator, and even the shim, may be ``kill -9``ed at any moment, so everything a
later orchestrator needs to learn what became of an attempt is on disk, in one append-only
file per run, ``<run_dir>/local-executor/journal``, one JSON line per fact:

* ``["B", boot_id, shim_pid, keeper_pid, keeper_start_ticks]`` when a shim starts (the
  keeper is the shim's parent: ``_keeper``);
* ``["I", attempt_id, boottime]`` just *before* a spawn, with the ``CLOCK_BOOTTIME`` reading
  taken then: "this attempt may be starting". A shim killed inside the spawn leaves this
  line and no ``L`` after it; its keeper then finds the process and writes the ``L`` line
  for it, or an ``N`` line if there is none;
* ``["L", attempt_id, pid, spawned_boottime, at]`` right after a spawn, with the
  ``CLOCK_BOOTTIME`` reading taken just after the spawn returned;
* ``["N", attempt_id]``: the spawn announced by its ``I`` line started nothing;
* ``["Q", attempt_id]`` when a successor is held for its predecessor;
* ``["X", attempt_id, code, at]`` (``..., at, 1]`` when the shim killed it for using more
  than its memory) once the attempt has ended, *before* it is reaped: until it is reaped its
  pid is not reused, and whoever reaps it after a crash of the shim (the keeper) sees that
  the status is written already. The verdict is in the same line as the code, so a recovery
  never sees one without the other. The keeper's ``X`` lines carry the CPU seconds and peak
  memory too (``..., at, oom, cpu_s, max_rss_kib]``): it reaps before it writes;
* ``["R", attempt_id, cpu_s, max_rss_kib]``: what the reaped attempt used (from ``wait4``);
  the shim writes these with its next line, so one lost with the shim costs only the figures.

Each line is one ``write()`` to an ``O_APPEND`` descriptor. A reader skips a torn last
line, so a half-written status reads as "no status yet", never as a wrong code. Lines of
one shim *generation* (from its ``B`` line on) and the keeper's lines about it are told
apart by the keeper named in the ``B`` line: a launch remembers whose keeper reaps it.

Why one journal and not a file per attempt (a pid file, an ``exit_status`` file, as earlier
versions wrote): creating a file is the main per-attempt cost of the local executor, and
on a parallel filesystem (Lustre, GPFS, NFS) each creation is a round trip to a metadata
server. An append is one syscall. The executor's per-attempt creations are the attempt's
directories and its two logs, and the orchestrator makes those (``create_attempt``) before it
hands the attempt to the shim, so the shim, which runs every attempt of the run one after
the other, only spawns, reaps and appends.

A pid read back later is ours only if ``/proc/<pid>/stat`` says it started no later than
the recorded reading (the start time there counts in the same boot clock). The pid cannot
be reused before the attempt is reaped, and reaping comes after the reading. So any process
that later gets the same pid started after it. We do not read ``/proc`` at spawn time
instead: that costs ~100 µs per attempt, because the read waits for the child's exec.

Beside the journal, ``shim.lock`` is flocked by the live shim for its whole life. The lock
is how we tell the shim is alive, and it cannot be fooled by pid reuse. ``shim.pid``,
``shim.log`` and ``endpoint`` are there for people and tests.

This module is imported by the shim at start-up, so it uses the standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

STATE_DIRNAME = "local-executor"
#: AF_UNIX paths are limited to 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths of one run's local-executor state directory (absolute, symlinks resolved)."""

    state_dir: str

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike[str]) -> Layout:
        return cls(os.path.join(os.path.realpath(run_dir), STATE_DIRNAME))

    @property
    def lock(self) -> str:
        return os.path.join(self.state_dir, "shim.lock")

    @property
    def pid(self) -> str:
        return os.path.join(self.state_dir, "shim.pid")

    @property
    def log(self) -> str:
        return os.path.join(self.state_dir, "shim.log")

    @property
    def journal(self) -> str:
        return os.path.join(self.state_dir, "journal")

    @property
    def endpoint(self) -> str:
        return os.path.join(self.state_dir, "endpoint")

    @property
    def socket(self) -> str:
        """The shim's unix socket: in the state dir when the path fits, else in a private temp dir.

        The fallback name is a hash of the state dir, so the executor and the shim find
        the same socket without talking to each other first. The shim also writes the
        path to ``endpoint`` so people can find it.
        """
        inside = os.path.join(self.state_dir, "shim.sock")
        if len(os.fsencode(inside)) <= _MAX_SOCKET_PATH:
            return inside
        digest = hashlib.sha256(os.fsencode(self.state_dir)).hexdigest()[:24]
        return os.path.join(private_socket_dir(), f"{digest}.sock")


def private_socket_dir() -> str:
    """A short directory only this user can enter, for sockets of long run directories."""
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    path = os.path.join(base, f"stormproof-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


# ---------------------------------------------------------------------------- attempts
#: Directories that hold task directories (``<run>/tasks``) and were seen to exist. Below one,
#: an attempt's directories are made top-down: three ``mkdir`` calls for the first attempt of
#: a task instead of five bottom-up (two of which fail). An executor serves one run: one entry.
_roots: set[str] = set()
#: ``O_NOFOLLOW``: a link planted where a log goes is refused, not written through.
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
LOG_NAMES = ("stdout.log", "stderr.log")


def create_attempt(attempt_dir: str) -> None:
    """Make ``<attempt_dir>/work`` and the two empty logs beside it (all may exist already).

    Raises ``OSError`` when they cannot be made, ``ELOOP`` for a symbolic link where one of
    them (or the task's or the tasks' directory) should be: nothing is made or written
    through a link planted in a run's directories while it runs (a link already there when
    the run starts or resumes is refused then, by ``Home.check_run_tree``). A directory just
    made is no link: only those that existed are looked at, so the first attempt of a task
    costs no more calls. ``attempt_dir`` is absolute and normalized.
    """
    work = attempt_dir + "/work"
    task_dir = attempt_dir.rpartition("/")[0]
    root = task_dir.rpartition("/")[0]
    made = False
    if root in _roots:
        try:
            _mkdir_exist_ok(task_dir)
            _mkdir_exist_ok(attempt_dir)
            _mkdir_exist_ok(work)
            made = True
        except FileNotFoundError:
            _roots.discard(root)  # removed meanwhile: bottom-up, below
    if not made:
        _mkdirs(work)
        _roots.add(root)
    for name in LOG_NAMES:
        path = f"{attempt_dir}/{name}"
        try:
            os.close(os.open(path, LOG_FLAGS, 0o644))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _planted(path) from None
            raise


def _mkdir_exist_ok(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        _refuse_link(path)


def _mkdirs(path: str) -> None:
    """``os.makedirs`` without its stat calls: create a parent only once it proves missing."""
    try:
        os.mkdir(path)
    except FileExistsError:
        _refuse_link(path)
        return
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        _mkdirs(parent)
        _mkdir_exist_ok(path)


def _refuse_link(path: str) -> None:
    if stat.S_ISLNK(os.lstat(path).st_mode):
        raise _planted(path)


def _planted(path: str) -> OSError:
    return OSError(
        errno.ELOOP,
        f"{path} is a symbolic link: stormproof follows no link in a run's directories "
        "(one may have been planted there); remove it",
    )


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How an attempt ended, as its shim recorded it."""

    code: int
    at: float  # when it was recorded
    out_of_memory: bool = False


def read_exit_status_file(attempt_dir: str) -> ExitStatus | None:
    """The ``<attempt_dir>/exit_status`` file that versions before the journal's ``X`` lines
    wrote (``"<code>\\n"`` or ``"<code> oom\\n"``), so that a run started by one of them
    resumes without running a finished attempt again. ``None`` if absent or incomplete."""
    path = attempt_dir + "/exit_status"
    try:
        with open(path, "rb") as f:
            data = f.read(64)
            mtime = os.fstat(f.fileno()).st_mtime
    except OSError:
        return None
    if not data.endswith(b"\n"):
        return None
    words = data.split()
    try:
        code = int(words[0])
    except (ValueError, IndexError):
        return None
    return ExitStatus(code, mtime, b"oom" in words[1:])


# ---------------------------------------------------------------------------- processes
def boot_id() -> str:
    """An id that changes on every reboot: pids and start times from another boot mean nothing."""
    try:
        with open(_BOOT_ID_PATH) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def proc_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or ``None`` if it is gone or a zombie
    (a zombie has ended; it only waits for its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    rest = data[data.rfind(b")") + 2 :].split()
    if not rest or rest[0] in (b"Z", b"X"):
        return None
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def boottime() -> float:
    """Seconds since boot, suspend included: the clock ``/proc/<pid>/stat`` start times use.

    Without it (not Linux) there is no ``/proc`` to compare with either, and processes left
    behind by a dead shim are reported lost instead of adopted.
    """
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime(clock)


def is_our_process(pid: int, spawned_boottime: float) -> bool:
    """Whether ``pid`` is alive (not a zombie) and is the process spawned at ``spawned_boottime``.

    See the module docstring: a process with a reused pid started after the reading.
    """
    ticks = proc_start_ticks(pid)
    return ticks is not None and ticks <= spawned_boottime * _TICKS_PER_S + 1


@dataclass(frozen=True, slots=True)
class Keeper:
    """The keeper of one shim generation: a pid and its start time, so reuse is never confused."""

    pid: int
    start_ticks: int

    def is_alive(self) -> bool:
        return self.pid > 0 and proc_start_ticks(self.pid) == self.start_ticks


@dataclass(frozen=True, slots=True)
class Usage:
    """What an attempt used, from ``wait4``: CPU seconds (user + system) and peak RSS in KiB."""

    cpu_s: float
    max_rss_kib: int

    @property
    def max_rss_mib(self) -> float:
        return round(self.max_rss_kib / 1024, 1)


@dataclass(frozen=True, slots=True)
class LaunchRecord:
    """What the journal says of one attempt: which process it became, when, and how it ended."""

    attempt_id: str
    pid: int  # 0 while it was not (known to be) spawned
    spawned_boottime: float
    boot_id: str
    at: float
    #: Set once it ended (an ``X`` line); a refused spawn (127, 126) has only this.
    status: ExitStatus | None = None
    usage: Usage | None = None
    #: A successor its shim held (a ``Q`` line).
    held: bool = False
    #: Its shim was about to spawn it (an ``I`` line, at this ``CLOCK_BOOTTIME`` reading) ...
    intended: bool = False
    intent_boottime: float = 0.0
    #: ... and that spawn started nothing (an ``N`` line).
    not_started: bool = False
    #: The keeper of the shim generation that spawned it (``None`` in journals of old versions).
    keeper: Keeper | None = None

    @property
    def queued(self) -> bool:
        """A successor its shim held and never started (a ``Q`` line, nothing after it)."""
        return self.held and not self.intended and self.pid == 0

    @property
    def unresolved(self) -> bool:
        """Its shim died inside its spawn and nobody could tell what the spawn made."""
        return self.intended and self.pid == 0 and self.status is None and not self.not_started

    def is_alive(self, current_boot_id: str) -> bool:
        if self.boot_id != current_boot_id or self.pid == 0:
            return False
        return is_our_process(self.pid, self.spawned_boottime)


def journal_boot_line(boot: str, shim_pid: int, keeper: Keeper | None = None) -> bytes:
    keeper = keeper or Keeper(0, 0)
    return _line(["B", boot, shim_pid, keeper.pid, keeper.start_ticks])


def journal_intent_line(id_json: str, boottime_s: float) -> bytes:
    """Written before the spawn: the attempt may exist from here on (``id_json``: JSON text)."""
    return f'["I",{id_json},{boottime_s!r}]\n'.encode()


def journal_launch_line(id_json: str, pid: int, spawned_boottime: float, at: float) -> bytes:
    """``id_json`` is the attempt id already JSON-encoded (the shim keeps it that way)."""
    return f'["L",{id_json},{pid},{spawned_boottime!r},{at!r}]\n'.encode()


def journal_not_started_line(id_json: str) -> bytes:
    return f'["N",{id_json}]\n'.encode()


def journal_queued_line(id_json: str) -> bytes:
    """A successor held until its predecessor ends: if no ``L`` line follows, it never ran."""
    return f'["Q",{id_json}]\n'.encode()


def journal_exit_line(
    id_json: str, code: int, at: float, out_of_memory: bool = False, usage: Usage | None = None
) -> bytes:
    """The attempt ended with ``code`` (128+N for signal N) at ``at``."""
    if usage is not None:
        return (
            f'["X",{id_json},{code},{at!r},{int(out_of_memory)},'
            f"{usage.cpu_s!r},{usage.max_rss_kib}]\n".encode()
        )
    flag = ",1" if out_of_memory else ""
    return f'["X",{id_json},{code},{at!r}{flag}]\n'.encode()


def journal_usage_line(id_json: str, usage: Usage) -> bytes:
    return f'["R",{id_json},{usage.cpu_s!r},{usage.max_rss_kib}]\n'.encode()


def usage_of(ru: Any) -> Usage:
    """A ``resource.struct_rusage`` (from ``os.wait4``) as a ``Usage``."""
    return Usage(round(ru.ru_utime + ru.ru_stime, 6), int(ru.ru_maxrss))


def _line(item: list[Any]) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode() + b"\n"


class JournalReader:
    """Reads a run's journal into one ``LaunchRecord`` per attempt id, and later what was
    appended since (``update``): the keeper of a dead shim writes exit statuses after a new
    shim has read the journal. Only whole lines are read; a torn last one waits."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: dict[str, LaunchRecord] = {}
        self.offset = 0
        self._boot = "unknown"
        self._keeper: Keeper | None = None
        self._shim = 0
        #: (shim pid, its keeper) of every generation, in order.
        self.generations: list[tuple[int, Keeper | None]] = []

    def update(self) -> list[str]:
        """Read what was appended since the last call; the ids of the records it changed."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        changed = []
        for raw in data[:end].splitlines():
            aid = self._apply(raw)
            if aid:
                changed.append(aid)
        return changed

    def _apply(self, raw: bytes) -> str:
        try:
            item = json.loads(raw)
            kind = item[0]
            if kind == "B":
                self._boot, self._shim = str(item[1]), int(item[2])
                self._keeper = Keeper(int(item[3]), int(item[4])) if len(item) > 4 else None
                self.generations.append((self._shim, self._keeper))
                return ""
            aid = str(item[1])
            rec = self.records.get(aid) or LaunchRecord(
                aid, 0, 0.0, self._boot, 0.0, keeper=self._keeper
            )
            if kind == "L":
                rec = replace(rec, pid=int(item[2]), spawned_boottime=float(item[3]))
                rec = replace(rec, boot_id=self._boot, at=float(item[4]), keeper=self._keeper)
            elif kind == "I":
                rec = replace(rec, intended=True, intent_boottime=float(item[2]))
                rec = replace(rec, keeper=self._keeper, boot_id=self._boot)
            elif kind == "N":
                rec = replace(rec, not_started=True)
            elif kind == "Q":
                rec = replace(rec, held=True, keeper=self._keeper, boot_id=self._boot)
            elif kind == "X":
                if rec.status is not None:
                    return ""  # the first word on how it ended stands
                oom = len(item) > 4 and bool(item[4])
                rec = replace(rec, status=ExitStatus(int(item[2]), float(item[3]), oom))
                if len(item) > 6:
                    rec = replace(rec, usage=Usage(float(item[5]), int(item[6])))
            elif kind == "R":
                rec = replace(rec, usage=Usage(float(item[2]), int(item[3])))
            else:
                return ""
        except (ValueError, IndexError, TypeError, KeyError):
            return ""
        self.records[aid] = rec
        return aid


def read_journal(path: str) -> dict[str, LaunchRecord]:
    """What the journal remembers of each attempt id (its launch, or the hold of a successor,
    and how it ended); torn lines are skipped."""
    reader = JournalReader(path)
    reader.update()
    return reader.records
