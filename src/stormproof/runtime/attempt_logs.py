"""Where an attempt's output is, as ``stormproof logs`` reads it: one seam, two places.

An attempt that ran on this machine, on Slurm or on Dask wrote ``stdout.log`` and
``stderr.log`` into its directory in the home (``LocalLogs``); one that ran on AWS (``executor:
ssm`` or ``aws_batch``) left them in S3, uploaded by its agent (``aws.output_reader``). Both
answer the same three questions: where a stream is (for the line above it), what it holds
past the bytes already shown (``read``), which is all ``logs`` and ``logs -f`` need, and its
last bytes (``tail``), which is what the dashboard shows. ``attempt_logs`` picks the place by
the run's executor, for the CLI and the dashboard alike.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from stormproof.config.executors import AWS_EXECUTORS
from stormproof.errors import StormproofError
from stormproof.runtime.home import Home

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class Chunk:
    """What a stream holds past what was shown, and how far it will have been shown then."""

    data: bytes
    #: The stream's bytes shown once ``data`` is (ask from there next time).
    shown: int


class AttemptLogs(Protocol):
    """One attempt's two streams, wherever they are kept."""

    #: How often ``logs -f`` asks for more (a local file is cheap, an S3 request is not).
    poll_s: float

    @property
    def where(self) -> str:
        """Where both streams are, for the line above a followed attempt."""
        ...

    def place(self, stream: str) -> str:
        """Where ``stream`` is kept, as a user would look it up (a path, an s3:// URL)."""
        ...

    def read(self, stream: str, shown: int) -> Chunk | None:
        """``stream`` past its first ``shown`` bytes; ``None`` while there is none at all."""
        ...

    def tail(self, stream: str, max_bytes: int) -> bytes:
        """The last ``max_bytes`` of ``stream``; ``b""`` while there is none at all."""
        ...

    def missing(self, attempt: str, ended: bool) -> str | None:
        """What to say when neither stream is there (``None``: say nothing, print nothing)."""
        ...


@dataclass
class LocalLogs:
    """An attempt's directory in the home: its files, read without following a planted link."""

    home: Home
    folder: Path
    poll_s: float = 0.2

    @property
    def where(self) -> str:
        return str(self.folder)

    def place(self, stream: str) -> str:
        return str(self.folder / f"{stream}.log")

    def read(self, stream: str, shown: int) -> Chunk | None:
        fh = self._open(stream)
        if fh is None:
            return None
        with fh:
            fh.seek(shown)
            data = fh.read()
        return Chunk(data, shown + len(data))

    def tail(self, stream: str, max_bytes: int) -> bytes:
        fh = self._open(stream)
        if fh is None:
            return b""
        with fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - max_bytes))
            return fh.read(max_bytes)

    def _open(self, stream: str) -> BinaryIO | None:
        """The stream's file, opened without following a link; ``None`` if there is none."""
        path = self.folder / f"{stream}.log"
        try:
            fd = self.home.open_inside(path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StormproofError(f"{path}: cannot be read: {err.strerror or err}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder
            os.close(fd)
            raise StormproofError(f"{path} is not a regular file; remove it")
        return os.fdopen(fd, "rb")

    def missing(self, attempt: str, ended: bool) -> str | None:
        return None  # an attempt that printed nothing has nothing to show


def ran_on_aws(meta: Mapping[str, Any]) -> bool:
    """Whether a run's attempts ran on AWS machines (``executor: ssm`` or ``aws_batch``)."""
    return meta.get("executor") in AWS_EXECUTORS


def attempt_logs(
    home: Home, run: str, meta: Mapping[str, Any], task: str, number: int
) -> AttemptLogs:
    """Where attempt ``number`` of ``task`` keeps its output, by the run's executor (its
    ``meta``): its directory in the home, or, for a run on AWS, the objects its agent
    uploaded to the run's bucket (``AwsError`` if they cannot be read at all: no bucket, no
    credentials). boto3 is imported only for a run on AWS."""
    if not ran_on_aws(meta):
        return LocalLogs(home, home.attempt_dir(run, task, number))
    from stormproof.aws.output_reader import S3Output
    from stormproof.aws.settings import AwsOptions

    options = AwsOptions.from_dict(meta.get("executor_options") or {})
    return S3Output.open(options, run, f"{task}/{number}")
