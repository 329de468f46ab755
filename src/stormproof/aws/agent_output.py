"""The agent's copy of the command's output: teed, bounded, uploaded to S3 beside the status.

On an EC2 instance or in a Batch container an attempt's output never reaches the
orchestrator's machine, so ``stormproof logs`` reads it from S3, where the agent puts it:

* **Teed.** The command's stdout and stderr are pipes the agent reads; every chunk goes on to
  the agent's own stdout and stderr (so SSM's output and CloudWatch Logs still get it) and
  into a ``BoundedLog`` per stream.
* **Bounded.** A runaway task must not fill the instance's disk, the agent's memory or the
  bucket: of each stream at most ``max_bytes`` are kept, the first half in a local file
  (``stdout.log``) as it comes, the last half in memory, and between them one line saying
  how many bytes were left out.
* **Uploaded** (``OutputUpload``) beside the status object (``names.log_key``) every
  ``interval_s``, only the streams that grew, and once more when the command ends, before
  the final status (then also a stream that never printed, as an empty object: after the
  end, no object means the agent kept none). Each object carries, as metadata, how many bytes
  the stream produced, how many of its head are kept and how many were left out, so
  ``stormproof logs -f`` knows where what it has shown is in the object (``log_layout``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: What is kept of each stream at most: the first half and the last half.
MAX_KEPT_BYTES = 8 * 1024 * 1024
STREAMS = ("stdout", "stderr")
#: How much one read of a pipe takes at most.
READ_BYTES = 64 * 1024
#: How long the end waits for the readers to see the pipes close (a child that left a
#: grandchild holding them open must not hold the agent up).
DRAIN_WAIT_S = 5.0
#: The metadata of each uploaded object (``x-amz-meta-…``).
META_BYTES = "stormproof-bytes"
META_HEAD = "stormproof-head"
META_CUT = "stormproof-cut"


@dataclass(frozen=True)
class Snapshot:
    """A stream as kept now: the object's body and where the stream's bytes are in it."""

    body: bytes
    #: Bytes the stream produced in all.
    total: int
    #: Bytes of its start kept (the body's first ``head``).
    head: int
    #: Bytes left out after the head (0: the body is the whole stream).
    cut: int

    def metadata(self) -> dict[str, str]:
        return {META_BYTES: str(self.total), META_HEAD: str(self.head), META_CUT: str(self.cut)}


def cut_line(stream: str, cut: int, head: int, tail: int) -> bytes:
    """The line that stands for what was left out."""
    return (
        f"[stormproof: {cut} bytes of {stream} left out here; the first {head} and the last "
        f"{tail} bytes are kept]\n"
    ).encode()


class BoundedLog:
    """One stream as kept: its first half in a local file, its last half in memory."""

    def __init__(self, stream: str, path: Path, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.stream = stream
        self.path = path
        self.head_max = max_bytes // 2
        self.tail_max = max_bytes - self.head_max
        self.total = 0
        self._head = 0
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._file = path.open("wb")

    def write(self, chunk: bytes) -> None:
        with self._lock:
            room = max(0, self.head_max - self._head)
            if room:
                self._file.write(chunk[:room])
                self._file.flush()
                self._head += len(chunk[:room])
            self._tail += chunk[room:]
            if len(self._tail) > self.tail_max:
                del self._tail[: len(self._tail) - self.tail_max]
            self.total += len(chunk)

    def snapshot(self) -> Snapshot:
        with self._lock:
            tail, total, head = bytes(self._tail), self.total, self._head
        body = self.path.read_bytes()[:head]
        cut = total - head - len(tail)
        if cut:
            lead = b"" if body.endswith(b"\n") else b"\n"
            body += lead + cut_line(self.stream, cut, head, len(tail))
        return Snapshot(body + tail, total, head, cut)

    def close(self) -> None:
        with self._lock:
            self._file.close()


class OutputCopy:
    """The command's two pipes, each read by a thread into the agent's own stream and a log."""

    def __init__(self, folder: Path, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.folder = folder
        self.logs = {s: BoundedLog(s, folder / f"{s}.log", max_bytes) for s in STREAMS}
        self._threads: list[threading.Thread] = []

    def start(self, pipes: Mapping[str, IO[bytes] | None]) -> None:
        """Read ``pipes`` (the command's stdout and stderr) until they close."""
        mine = {"stdout": sys.stdout, "stderr": sys.stderr}
        for stream, pipe in pipes.items():
            if pipe is None:
                continue
            thread = threading.Thread(
                target=_pump,
                args=(pipe, mine[stream], self.logs[stream]),
                name=f"agent-{stream}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        """Wait (a little) for the pipes to be read to their end."""
        for thread in self._threads:
            thread.join(timeout=DRAIN_WAIT_S)

    def close(self) -> None:
        for log in self.logs.values():
            log.close()


def _pump(pipe: IO[bytes], mine: IO[str], log: BoundedLog) -> None:
    """Copy one pipe to the agent's own stream and to its log until it closes."""
    out = getattr(mine, "buffer", None)
    fd = pipe.fileno()
    while True:
        try:
            chunk = os.read(fd, READ_BYTES)
        except OSError:
            break
        if not chunk:
            break
        log.write(chunk)
        if out is not None:
            with contextlib.suppress(OSError, ValueError):  # our own stream gone: keep the log
                out.write(chunk)
                out.flush()
    pipe.close()


#: ``put(key, body, metadata)``: one object into the status bucket.
Put = Callable[[str, bytes, dict[str, str]], None]


class OutputUpload:
    """Uploads the logs that grew to the keys beside the status: every ``interval_s`` from a
    thread of its own (a slow or unreachable S3 must not keep the agent from watching for
    notices), at once when asked (``now``), and a last time at the ``finish``."""

    def __init__(self, logs: Mapping[str, BoundedLog], keys: Mapping[str, str], put: Put) -> None:
        self.logs = logs
        self.keys = keys
        self._put = put
        self.uploaded: dict[str, int | None] = dict.fromkeys(logs)
        self._warned = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self, interval_s: float) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(interval_s,), name="agent-upload", daemon=True
        )
        self._thread.start()

    def now(self) -> None:
        """Upload what grew without waiting for the interval (a notice: the instance may go)."""
        self._wake.set()

    def finish(self) -> None:
        """Stop the thread and upload everything once more, a stream never uploaded too."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.upload(final=True)

    def _loop(self, interval_s: float) -> None:
        while True:
            self._wake.wait(interval_s)
            self._wake.clear()
            if self._stopping:
                return
            self.upload()

    def upload(self, final: bool = False) -> None:
        """Each stream that grew since its last upload (``final``: also one never uploaded)."""
        with self._lock:
            self._upload(final)

    def _upload(self, final: bool) -> None:
        for stream, log in self.logs.items():
            done = self.uploaded[stream]
            if log.total == (done or 0) and not (final and done is None):
                continue
            snapshot = log.snapshot()
            try:
                self._put(self.keys[stream], snapshot.body, snapshot.metadata())
            except Exception as exc:  # the next upload tries again; the task runs on
                if not self._warned:
                    self._warned = True
                    print(
                        f"stormproof exec: could not upload the {stream} to "
                        f"{self.keys[stream]}: {exc}",
                        file=sys.stderr,
                    )
                continue
            self.uploaded[stream] = snapshot.total

    def complete(self) -> bool:
        """Whether every stream is in S3 as it is now."""
        return all(self.uploaded[s] == log.total for s, log in self.logs.items())
