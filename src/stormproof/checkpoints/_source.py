"""Reading a task's checkpoint directory: what will be stored, and what is refused.

Refused, with a message for the person who wrote the task: a missing or
unreadable directory, an empty one (restoring an empty checkpoint would look
like "restored" while giving the task nothing, so an empty commit is almost
always a bug), symbolic links (following them would store files from outside
the directory, or loop; storing them would restore links that point nowhere on
another node), devices, FIFOs and sockets, and a top-level ``MANIFEST.json``
(the store's own name).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .base import MANIFEST_NAME, CheckpointSourceError, safe_relpath
from .protocol import is_protocol_file


@dataclass(frozen=True, slots=True)
class SourceFile:
    rel: str  # '/'-separated, relative to the checkpoint directory
    path: Path
    size: int


def scan_source(source: Path) -> list[SourceFile]:
    """The files to store, sorted by relative path; ``CheckpointSourceError`` if unusable."""
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise CheckpointSourceError(
            f"checkpoint directory {source} does not exist: write the checkpoint's files there "
            "before committing"
        ) from None
    except OSError as err:
        raise CheckpointSourceError(f"cannot read checkpoint directory {source}: {err}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CheckpointSourceError(f"{source} is not a directory: a checkpoint is a directory")
    files: list[SourceFile] = []
    _walk(source, source, "", files)
    if not files:
        raise CheckpointSourceError(
            f"checkpoint directory {source} is empty: write at least one file into it before "
            "committing (an empty checkpoint is refused: restoring it would give the task nothing)"
        )
    return files


def _walk(root: Path, directory: Path, prefix: str, out: list[SourceFile]) -> None:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise CheckpointSourceError(f"cannot read {directory}: {err.strerror or err}") from None
    for entry in entries:
        rel = prefix + entry.name
        if not prefix and (is_protocol_file(entry.name) or entry.name == MANIFEST_NAME):
            if entry.name == MANIFEST_NAME:
                raise CheckpointSourceError(
                    f"{root}: a file named {MANIFEST_NAME} at the top of a checkpoint is "
                    "reserved for stormproof's manifest; rename it or move it into a subdirectory"
                )
            continue  # commit markers and checkpoint requests are protocol, not state
        if safe_relpath(rel) is None:
            raise CheckpointSourceError(
                f"{root}: cannot store {rel!r}: file names with '\\' or NUL are not portable"
            )
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as err:
            raise CheckpointSourceError(f"cannot read {entry.path}: {err.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise CheckpointSourceError(
                f"{root}: {rel} is a symbolic link (-> {_target(entry.path)}); checkpoints hold "
                "regular files only: copy the file into the checkpoint directory instead of "
                "linking to it"
            )
        if stat.S_ISDIR(st.st_mode):
            _walk(root, Path(entry.path), rel + "/", out)
        elif stat.S_ISREG(st.st_mode):
            out.append(SourceFile(rel, Path(entry.path), st.st_size))
        else:
            raise CheckpointSourceError(
                f"{root}: {rel} is not a regular file (a FIFO, socket or device); checkpoints "
                "hold regular files and directories only"
            )


def _target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"
