"""The SQLite store's lease file: an ``flock`` the kernel releases when its holder dies.

The file (``<db dir>/locks/<run>.lock``) also says who holds the lock (pid, host,
fencing token), for the message of whoever finds it taken.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Final

from stormproof.store.base import LeaseHolder
from stormproof.store.errors import run_locked

# ``is_driven`` probes the lock by taking it shared for a few microseconds; a
# driver that starts at that very moment retries for this long instead of
# reporting a lock that no driver holds.
_PROBE_GRACE_S: Final = 0.25
_PROBE_RETRY_S: Final = 0.002


def acquire(fd: int, run: str) -> None:
    """Take the lock or raise ``RunLocked``; waits only out a concurrent ``is_driven`` probe."""
    deadline = time.monotonic() + _PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise run_locked(run, holder_of(fd)) from None
            time.sleep(_PROBE_RETRY_S)


def write_holder(fd: int, token: int) -> None:
    """Say who holds the lease, for the other side's ``RunLocked`` message."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {token}\n".encode(), 0)


def holder_of(fd: int) -> LeaseHolder:
    words = os.pread(fd, 512, 0).decode(errors="replace").split()
    pid = int(words[0]) if words and words[0].isdigit() else None
    host = words[1] if len(words) > 1 else ""
    token = int(words[2]) if len(words) > 2 and words[2].isdigit() else 0
    return LeaseHolder(pid, host, token, None)


def read_holder(path: Path) -> LeaseHolder:
    fd = os.open(path, os.O_RDONLY)
    try:
        return holder_of(fd)
    finally:
        os.close(fd)
