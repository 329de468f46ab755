"""Streaming copies that hash what they store, in constant memory.

Two engines, because the fast way differs by where the bytes go:

* **Local to local** (``HashBehindCopier``): the kernel copies
  (``copy_file_range``: no trip through Python, a reflink on filesystems that
  can) while one thread hashes the *destination* a chunk behind, reading it
  back from the page cache. Hashing the copy rather than the source means the
  sha256 in the manifest is of the bytes actually stored, even if a task
  touches its directory during the save; and copying and hashing overlap, so a
  save costs about max(copy, sha256) instead of their sum. Where
  ``copy_file_range`` is refused (old kernels, some network filesystems) the
  same loop copies through a buffer instead.
* **Anything else** (``stream_copy``): read a chunk, hash it, write it, so
  each byte is read once. Object stores get multipart uploads of bounded
  parts from fsspec; memory is a chunk plus a part, whatever the file size.

Measured choices are in ``bench/checkpoint_throughput.py``.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bytes per copy/hash step: large enough that syscalls and thread hand-offs are noise,
#: small enough that memory stays a few tens of MiB whatever is saved.
CHUNK_BYTES = 8 << 20
#: How far the hasher may lag the copier, in chunks (bounds open files too).
_LAG_CHUNKS = 8
#: ``copy_file_range`` errors that mean "not here", not "broken": copy through a buffer.
_NO_CFR = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}
#: O_NONBLOCK: opening a FIFO that replaced a file must fail the type check, not hang;
#: it changes nothing for regular files.
_OPEN_READ = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
)
_OPEN_WRITE = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class Digest:
    size: int
    sha256: str


class NotRegularFile(OSError):
    """A path that was a regular file when scanned is something else now."""


def stream_copy(
    read: Callable[[int], bytes], write: Callable[[memoryview], object] | None
) -> Digest:
    """Copy ``read`` to ``write`` chunk by chunk, hashing; ``write=None`` only hashes."""
    h = hashlib.sha256()
    size = 0
    while True:
        data = read(CHUNK_BYTES)
        if not data:
            return Digest(size, h.hexdigest())
        view = memoryview(data)
        h.update(view)
        if write is not None:
            write(view)
        size += len(view)


def hash_chunks(chunks: Iterable[bytes]) -> Digest:
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return Digest(size, h.hexdigest())


def hash_local_file(path: Path) -> Digest:
    """sha256 of a local file through one reused buffer (``readinto``: no per-chunk bytes)."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return Digest(size, h.hexdigest())


def open_source(path: Path) -> int:
    """Open a file to copy, refusing anything that is not (still) a regular file."""
    fd = os.open(path, _OPEN_READ)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
    return fd


@dataclass
class _Pending:
    fd: int
    future: Future[Digest]
    hasher: Any  # hashlib._Hash; not a public type
    size: int = 0
    failed: BaseException | None = None


_Job = tuple[_Pending, int, int]  # (file, offset, length); length -1 ends the file


class HashBehindCopier:
    """Copy local files in the kernel and hash each copy a chunk behind, in hasher threads.

    ``copy(src, dst)`` returns once the data is copied, with a future of the
    copy's digest; the next file's copy overlaps earlier files' hashing, and
    files go round-robin to the hashers (one or two). ``close()`` waits for
    every hash. One instance per save or restore, used from one thread.
    """

    def __init__(self, hashers: int | None = None, writeback: bool = False) -> None:
        # sha256 is the bottleneck (~1.7 GB/s a core): with several files, hash two at once.
        count = hashers if hashers is not None else min(2, os.cpu_count() or 1)
        self._queues: list[queue.Queue[_Job | None]] = [
            queue.Queue(maxsize=_LAG_CHUNKS) for _ in range(max(1, count))
        ]
        self._threads = [
            threading.Thread(target=self._hash_loop, args=(q,), name="stormproof-hash", daemon=True)
            for q in self._queues
        ]
        for thread in self._threads:
            thread.start()
        self._next = 0
        self._buffer: bytearray | None = None  # for the copy-through-a-buffer fallback
        self._cfr = hasattr(os, "copy_file_range")
        self._writeback = _start_writeback if writeback else None

    def copy(self, src: Path | int, dst: Path) -> Future[Digest]:
        """Copy ``src`` (a path, or a descriptor this call closes) to a new ``dst``."""
        fin = open_source(src) if isinstance(src, Path) else src
        try:
            fout = os.open(dst, _OPEN_WRITE, 0o644)
        except BaseException:
            os.close(fin)
            raise
        pending = _Pending(fout, Future(), hashlib.sha256())
        jobs = self._queues[self._next % len(self._queues)]  # one file, one hasher: in order
        self._next += 1
        offset = 0
        try:
            while n := self._copy_chunk(fin, fout):
                if self._writeback is not None:
                    self._writeback(fout, offset, n)
                jobs.put((pending, offset, n))
                offset += n
        finally:
            os.close(fin)
            jobs.put((pending, offset, -1))  # the hasher closes fout, after its last chunk
        return pending.future

    def close(self) -> None:
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> HashBehindCopier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _copy_chunk(self, fin: int, fout: int) -> int:
        if self._cfr:
            try:
                return os.copy_file_range(fin, fout, CHUNK_BYTES)
            except OSError as err:
                if err.errno not in _NO_CFR:
                    raise
                self._cfr = False  # positions are unchanged after a refused call
        if self._buffer is None:
            self._buffer = bytearray(CHUNK_BYTES)
        n = os.readv(fin, [self._buffer])
        view = memoryview(self._buffer)[:n]
        while view:
            view = view[os.write(fout, view) :]
        return n

    def _hash_loop(self, jobs: queue.Queue[_Job | None]) -> None:
        buf = bytearray(CHUNK_BYTES)
        view = memoryview(buf)
        while (job := jobs.get()) is not None:
            pending, offset, length = job
            if length < 0:
                self._finish(pending)
                continue
            if pending.failed is not None:
                continue
            try:
                while length > 0:
                    n = os.preadv(pending.fd, [view[: min(length, CHUNK_BYTES)]], offset)
                    if n == 0:
                        raise OSError(errno.EIO, "copy shrank while hashing it")
                    pending.hasher.update(view[:n])
                    pending.size += n
                    offset += n
                    length -= n
            except BaseException as err:  # reported through the future, not lost in a thread
                pending.failed = err

    @staticmethod
    def _finish(pending: _Pending) -> None:
        try:
            os.close(pending.fd)
        except OSError as err:  # a deferred write error surfaces at close on some filesystems
            pending.failed = pending.failed or err
        if pending.failed is not None:
            pending.future.set_exception(pending.failed)
        else:
            pending.future.set_result(Digest(pending.size, pending.hasher.hexdigest()))


#: ``sync_file_range`` flag: start writing the range's dirty pages, do not wait for them.
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a just-copied range to disk (Linux; elsewhere nothing).

    Only a head start: durability still comes from the sync before the manifest.
    """
    fn = getattr(_libc(), "sync_file_range", None)
    if fn is not None:
        flags = ctypes.c_uint(_SYNC_FILE_RANGE_WRITE)
        fn(fd, ctypes.c_int64(offset), ctypes.c_int64(length), flags)


def sync_filesystem(path: Path) -> None:
    """Make everything written on ``path``'s filesystem durable: one ``syncfs``, not N fsyncs.

    A checkpoint of 1,000 files would otherwise pay 1,000 journal commits;
    ``syncfs`` pays one. Falls back to ``fsync`` of the directory plus
    ``os.sync`` where ``syncfs`` does not exist.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is not None and syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_LIBC: list[Any] = []


def _libc() -> Any:
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:  # pragma: no cover - no C library to load (not POSIX)
            _LIBC.append(None)
    return _LIBC[0]
