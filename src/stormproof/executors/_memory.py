"""Memory limits of local attempts: the shim samples each limited attempt's session and kills it
when it uses more than its limit.

Why sampling, and not a limit the kernel enforces:

* cgroups (``memory.max``, and ``memory.events`` to tell an OOM kill) are exact and cannot be
  overshot, but only where the memory controller is on the unified (v2) hierarchy *and* this
  user may create cgroups under its own. That needs root or a systemd delegation, the shim
  moving itself into a leaf cgroup first (v2 forbids processes in a cgroup whose controllers
  are delegated), and a way to start the child inside its cgroup: ``clone3`` with
  ``CLONE_INTO_CGROUP``, which ``posix_spawn`` does not offer, so the shim would have to hop
  into the attempt's cgroup and back around every spawn. Batch nodes and containers (this
  project's own CI box: memory on a v1 hierarchy, nothing writable on v2) often have none of
  it. A second, rarely exercised enforcement path in the one process every attempt depends on
  is a liability, so there is one mechanism, and it works anywhere ``/proc`` does.
* ``RLIMIT_AS`` limits address space, not memory: the JVM, Go, CUDA, and allocators with
  large arenas reserve far more virtual memory than they ever touch, and fail to start under
  an honest limit. A failed ``malloc`` is also not an OOM kill: the program dies its own way,
  and we could not tell ``Task.OutOfMemory`` from a bug. ``RLIMIT_RSS`` is ignored by Linux.

What is measured: the resident set of every process in the attempt's *session*. Each attempt
is spawned as a session leader, and its descendants stay in its session even when they make
their own process group or are orphaned (reparented to init); only a deliberate ``setsid``
(a daemon) leaves it. The process tree (``/proc/<pid>/task/*/children``) is not on every
kernel, and misses orphans.

RSS counts a page shared by several processes once per process (a forked worker pool shares
its parent's pages copy-on-write), so the sum of RSS can be over the limit while the real use
is not. The RSS sum is only the cheap screen. When it is over the limit, the proportional set
size decides (PSS: each shared page divided among its sharers, from ``smaps_rollup``). PSS is
never more than RSS, so the slower read only happens near the limit.

Cost per sample: one ``listdir("/proc")``, plus one read of ``/proc/<pid>/stat`` per process
of a limited session and per process that appeared since the last sample. A process found
outside every limited session is not read again, because it can never join one: ``setsid``
only makes a new session and ``setpgid`` only moves within one. Pids that disappeared are
forgotten at every sample, so a reused pid is read afresh (a pid is not reused within one
sample interval: pids cycle through ``pid_max``, at least 32768 of them).

Limits of the method: between two samples a fast allocator can overshoot (a few GiB/s for
one interval) before it is killed; the kernel's own OOM killer still guards the machine
meanwhile. Files an attempt writes to a tmpfs without mapping them are not counted (a cgroup
would charge them), and neither is memory of processes that left the session with ``setsid``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE")
_NOT_A_PID = frozenset(("self", "thread-self"))


@dataclass(slots=True)
class SessionUsage:
    """What one sample found in one session."""

    rss: int = 0  # bytes, summed over its processes
    members: list[tuple[int, int]] = field(default_factory=list)  # (pid, process group)
    leader_alive: bool = False  # the leader was seen, and not as a zombie


class MemorySampler:
    """Samples the memory of whole sessions from ``/proc``; see the module docstring."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.available = os.path.exists(f"{proc}/self/stat")
        self._foreign: set[str] = set(_NOT_A_PID)  # /proc names not in any limited session
        self._members: set[str] = set()

    def watch(self, sid: int) -> None:
        """A new limited session: its leader's pid may have been a foreign process's."""
        self._foreign.discard(str(sid))

    def reset(self) -> None:
        """Forget every process: nothing is limited, and pids will be reused meanwhile."""
        self._foreign = set(_NOT_A_PID)
        self._members = set()

    def sample(self, sessions: Collection[int]) -> dict[int, SessionUsage]:
        """The usage of each of ``sessions`` that has a live process (by session id)."""
        if not self.available:
            return {}
        names = set(os.listdir(self.proc))
        self._foreign &= names
        usage: dict[int, SessionUsage] = {}
        members: set[str] = set()
        for name in names - self._foreign:
            if self._classify(name, sessions, usage):
                members.add(name)
        self._members = members
        return usage

    def _classify(
        self, name: str, sessions: Collection[int], usage: dict[int, SessionUsage]
    ) -> bool:
        """Read one process; count it if it is in one of ``sessions`` (then ``True``)."""
        fields = _stat_fields(f"{self.proc}/{name}/stat") if name.isdigit() else None
        if fields is None:
            if not name.isdigit():
                self._foreign.add(name)
            return False  # gone since the listing
        sid = int(fields[3])
        if sid not in sessions:
            self._foreign.add(name)
            return False
        pid = int(name)
        session = usage.setdefault(sid, SessionUsage())
        session.rss += int(fields[21]) * _PAGE
        session.members.append((pid, int(fields[2])))
        if pid == sid and fields[0] not in (b"Z", b"X"):
            session.leader_alive = True
        return True

    def proportional(self, pids: Iterable[int]) -> int | None:
        """The PSS of these processes, in bytes; ``None`` where ``smaps_rollup`` is missing."""
        total = 0
        for pid in pids:
            kib = _pss_kib(f"{self.proc}/{pid}/smaps_rollup")
            if kib is None:
                return None
            total += kib * 1024
        return total


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields of a ``stat`` file after the command name (state first), or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 1024)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return fields if len(fields) > 21 else None


def _pss_kib(path: str) -> int | None:
    """``Pss`` of one process (kB); 0 if it ended meanwhile, ``None`` without the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:  # the process ended, or the kernel predates smaps_rollup (4.14)
        return None if os.path.isdir(os.path.dirname(path)) else 0
    except OSError:
        return 0  # ended (ESRCH) or not ours to read: it counts for nothing
    start = data.find(b"\nPss:")
    if start < 0:
        return 0  # a kernel thread or a zombie has no memory map
    return int(data[start + 5 :].split(None, 1)[0])
