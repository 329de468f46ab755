"""The shim's side of its sockets: a poll loop, one buffered, non-blocking client each, and
the listening socket, open to this user only.

Kept apart from ``_shim`` so that the shim reads as what it does with attempts. This module
only moves newline-delimited JSON text. A client that stops reading is never waited for: its
events pile up in memory (to a limit), so a stuck orchestrator cannot stall the reaping of
every attempt.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Handler = Callable[[int], None]
READ = select.POLLIN
WRITE = select.POLLOUT
READABLE = select.POLLIN | select.POLLHUP | select.POLLERR
MAX_BACKLOG = 64 << 20  # bytes of unsent events before a client that never reads is dropped
#: Bytes asked of one ``recv``. Below glibc's mmap threshold (128 KiB) on purpose: a larger
#: request is served by ``mmap`` and trimmed by ``mremap``/``munmap``, three syscalls and a
#: page fault per read, which was a tenth of the shim's CPU per attempt.
RECV_SIZE = 1 << 16


class Poller:
    """``select.poll`` with one handler per fd. The ``selectors`` module is more general, and
    costs a few more microseconds on every wake-up, which the shim has twice per attempt. poll
    rather than epoll: the shim watches a handful of fds, and poll exists on macOS too."""

    def __init__(self) -> None:
        self.poll = select.poll()
        self.handlers: dict[int, Handler] = {}

    def register(self, fd: int, events: int, handler: Handler) -> None:
        self.poll.register(fd, events)
        self.handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self.poll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        with contextlib.suppress(KeyError):
            self.poll.unregister(fd)

    def wait(self, timeout_s: float | None) -> None:
        timeout_ms = None if timeout_s is None else timeout_s * 1000.0
        for fd, events in self.poll.poll(timeout_ms):
            handler = self.handlers.get(fd)  # None if an earlier handler just unregistered it
            if handler is not None:
                handler(events)


@dataclass(eq=False, slots=True)
class Client:
    """One connected orchestrator: what it sent that is not a full line yet, what we owe it."""

    sock: socket.socket
    env: dict[str, str]  # its environment: the base of its attempts' environments
    chunks: list[bytes] = field(default_factory=list)
    out: list[bytes] = field(default_factory=list)
    hold_until: float | None = None  # only held messages are queued: they may wait till then
    want_write: bool = False
    closed: bool = False

    def receive(self) -> list[bytes] | None:
        """The complete lines that arrived (maybe none); ``None`` once the client is gone."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        self.chunks.append(data)
        if b"\n" not in data:
            return []
        *lines, rest = b"".join(self.chunks).split(b"\n")
        self.chunks = [rest] if rest else []
        return lines

    def queue(self, message: str, hold_s: float = 0.0) -> None:
        """Queue one message. With ``hold_s``, it may wait that long for company, unless
        something that may not wait is queued meanwhile. Order is kept either way."""
        self.out.append(message.encode() + b"\n")
        if hold_s <= 0:
            self.hold_until = None
        elif self.hold_until is None and len(self.out) == 1:
            self.hold_until = time.monotonic() + hold_s

    def due(self, now: float) -> bool:
        return self.hold_until is None or self.hold_until <= now

    def flush(self, poller: Poller) -> bool:
        """Send what the socket takes now; ``False`` if the client is broken or far behind."""
        self.hold_until = None
        data = b"".join(self.out)
        sent = 0
        if data:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return False
        rest = data[sent:]
        self.out = [rest] if rest else []
        if len(rest) > MAX_BACKLOG:
            return False
        if bool(rest) != self.want_write:  # ask epoll to tell us when the rest fits
            self.want_write = bool(rest)
            poller.modify(self.sock.fileno(), READ | (WRITE if rest else 0))
        return True

    def close(self, poller: Poller) -> None:
        self.closed = True
        poller.unregister(self.sock.fileno())
        self.sock.close()


def listen(path: str) -> socket.socket:
    """The shim's listening socket at ``path``, a file only this user may use (mode 0600)."""
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


def same_user(sock: socket.socket) -> bool:
    """Only our own user may drive the shim. The socket file is 0600 too, and this check is
    the second lock, for the fallback socket dir. Skipped where SO_PEERCRED does not exist."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid == os.getuid()
