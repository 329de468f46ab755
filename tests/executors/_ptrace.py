"""Kill the shim at the one instant no timing can hit reliably: inside a spawn.

The shim starts an attempt with ``posix_spawn``, a ``clone(CLONE_VM | CLONE_VFORK)`` whose
caller sleeps until the child has called ``exec``. That sleep is most of the shim's time per
attempt, so a ``kill -9`` of a busy shim lands there more often than anywhere else: the child
exists and will run, the shim has not journaled it yet (and, before the keeper existed, may
not have journaled the exit of the attempt it just reaped either).

To land there every time, the test traces the shim (``PTRACE_SEIZE`` with
``PTRACE_O_TRACEVFORK``): the kernel stops the shim right after the clone, with the new child
attached and stopped before its first instruction. The test then ``SIGKILL``s the shim, lets
the child go (``PTRACE_DETACH``), and the child execs and runs its command as it would have.
Nothing is faked: the shim dies for real, at a real instant of a real spawn.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from types import TracebackType

_PTRACE_CONT = 7
_PTRACE_DETACH = 17
_PTRACE_SEIZE = 0x4206
_PTRACE_GETEVENTMSG = 0x4201
_PTRACE_O_TRACEVFORK = 0x4
_PTRACE_EVENT_VFORK = 2
_WALL = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def _ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> None:
    if _libc.ptrace(request, pid, addr, data) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {pid}): {os.strerror(err)}")


class SpawnKiller:
    """Trace one process; ``kill_at_next_spawn`` kills it inside its next ``posix_spawn``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.attached = False

    def __enter__(self) -> SpawnKiller:
        _ptrace(_PTRACE_SEIZE, self.pid, 0, _PTRACE_O_TRACEVFORK)
        self.attached = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.attached:  # the test failed before the spawn: leave the shim as it was
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, _WALL)
            except (ProcessLookupError, ChildProcessError):
                pass

    def kill_at_next_spawn(self, timeout_s: float = 20.0) -> int:
        """Wait for the shim's next spawn, kill the shim there, let the child run on.

        Returns the child's pid. Signals the shim receives meanwhile are passed on to it.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, _WALL | os.WNOHANG)
            if pid == 0:
                time.sleep(0.001)
                continue
            if not os.WIFSTOPPED(status):
                raise AssertionError(f"the traced shim ended on its own (status {status:#x})")
            sig = os.WSTOPSIG(status)
            if sig == signal.SIGTRAP and status >> 16 == _PTRACE_EVENT_VFORK:
                return self._kill_here()
            # a signal for the shim (SIGCHLD, ...) or a group stop: let it carry on
            passed = 0 if sig == signal.SIGTRAP or status >> 16 else sig
            _ptrace(_PTRACE_CONT, self.pid, 0, passed)
        raise AssertionError("the shim spawned nothing in time")

    def _kill_here(self) -> int:
        message = ctypes.c_ulong()
        _ptrace(_PTRACE_GETEVENTMSG, self.pid, 0, ctypes.addressof(message))
        child = int(message.value)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, _WALL)  # as its tracer: the real parent can reap it after this
        self.attached = False
        os.waitpid(child, _WALL)  # the new child's first stop, before its first instruction
        _ptrace(_PTRACE_DETACH, child, 0, 0)
        return child
