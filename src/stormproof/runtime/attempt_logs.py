"""Where an attempt's output is, as ``stormproof logs`` reads it: one seam, two places.

An attempt that ran on this machine, on Slurm or on Dask wrote ``stdout.log`` and
``stderr.log`` into its directory in the home (``LocalLogs``); one that ran on AWS (``executor:
ssm`` or ``aws_batch``) left them in S3, uploaded by its agent (``aws.output_reader``). Both
answer the same two questions: where a stream is (for the line above it), and what it holds
past the bytes already shown (``read``), which is all ``logs`` and ``logs -f`` need.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
        path = self.folder / f"{stream}.log"
        try:
            fd = self.home.open_inside(path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StormproofError(f"{path}: cannot be read: {err.strerror or err}") from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StormproofError(f"{path} is not a regular file; remove it")
            fh.seek(shown)
            data = fh.read()
        return Chunk(data, shown + len(data))

    def missing(self, attempt: str, ended: bool) -> str | None:
        return None  # an attempt that printed nothing has nothing to show
