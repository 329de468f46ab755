"""Reading the file to import and writing the workflow: the only I/O of the importers.

Kept apart from the conversions so that those stay pure (and testable
without files), and so that every way a file can be wrong becomes one
message naming the file, the line and the fix, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from stormproof.errors import InputRefused, SpecError, StormproofError
from stormproof.limits import (
    JsonRefused,
    Limits,
    active_limits,
    read_bounded,
    read_stream_bounded,
    strict_json_loads,
)

STDIO = "-"


def read_json(path: str, error: type[SpecError] = SpecError) -> Any:
    """The parsed JSON document at ``path`` (``-``: standard input).

    ``error`` is the ``SpecError`` subclass to raise, so the importer's own
    error type covers unreadable files too.
    """
    source = "<stdin>" if path == STDIO else path
    limits = active_limits()
    content = _read_bytes(path, source, error, limits)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = content.count(b"\n", 0, err.start) + 1
        raise error(source, [f"line {line}: the file is not UTF-8 text (is it JSON?)"]) from None
    if not text.strip():
        raise error(source, ["the file is empty"])
    try:
        return strict_json_loads(text, limits)
    except json.JSONDecodeError as err:
        raise error(source, [_json_message(err, text)]) from None
    except JsonRefused as err:
        raise error(source, [f"line {err.line}: {err.text}" if err.line else err.text]) from None


def _read_bytes(path: str, source: str, error: type[SpecError], limits: Limits) -> bytes:
    try:
        if path == STDIO:
            return read_stream_bounded(sys.stdin.buffer, source, "file", limits.file_bytes)
        return read_bounded(path, "trace to import", limits.file_bytes)
    except InputRefused as err:
        raise error(source, err.messages) from None


def _json_message(err: json.JSONDecodeError, text: str) -> str:
    if err.pos >= len(text.rstrip()):
        hint = " (the file ends too early: is it complete?)"
    elif err.lineno == 1 and err.colno == 1:
        hint = " (this is not JSON at all: is it the right file?)"
    else:
        hint = ""
    problem = err.msg[:1].lower() + err.msg[1:]
    return f"line {err.lineno}, column {err.colno}: invalid JSON: {problem}{hint}"


def check_output(output: str, force: bool) -> None:
    """Refuse early (before a long import) to overwrite a file without ``--force``."""
    if output == STDIO:
        return
    path = Path(output)
    if path.is_dir():
        raise StormproofError(f"{output} is a directory: give a file name to -o, like wf.yaml")
    if path.exists() and not force:
        raise StormproofError(
            f"{output} exists already: add --force to overwrite it, or choose another -o"
        )
    if not path.parent.is_dir():
        raise StormproofError(f"{output}: the directory {path.parent} does not exist")


def write_output(text: str, output: str, force: bool) -> None:
    """Write ``text`` to ``output`` whole or not at all (``-``: standard output).

    A temporary file next to the target, renamed over it: an interrupted or
    failed import never leaves half a workflow behind.
    """
    if output == STDIO:
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
        return
    check_output(output, force)
    path = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise StormproofError(f"{output} cannot be written: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise StormproofError(f"{output} cannot be written: {err.strerror or err}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (mkstemp makes 0600 files; a workflow file is normally shared)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
