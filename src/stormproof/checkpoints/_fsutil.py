"""Filesystem odds and ends for the store: patience, abandoned uploads, times, staging.

Kept apart from ``fsspec_store`` because none of it is about checkpoints:
each function papers over one difference between backends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem  # type: ignore[import-untyped]  # fsspec ships no types


def impatient(fs: AbstractFileSystem) -> AbstractFileSystem:
    """A twin of an S3 filesystem that gives up in seconds: ``check`` must not take minutes.

    With default retries a refused connection takes ~10 s to report and an
    unroutable host minutes; the probe needs an answer, not perseverance.
    """
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if not {"s3", "s3a"} & set(protocols):
        return fs
    options = dict(fs.storage_options)
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", 5)
    config.setdefault("retries", {"max_attempts": 2, "mode": "standard"})
    options.update(config_kwargs=config, skip_instance_cache=True)
    quick = type(fs)(*fs.storage_args, **options)
    quick.retries = 1  # s3fs's own retry loop, on top of botocore's
    return quick


def discard(out: Any) -> None:
    """Abandon a half-written remote file: abort its upload, never let close() commit it."""
    with contextlib.suppress(Exception):
        out.discard()
    with contextlib.suppress(Exception):
        out.closed = True


def mtime(info: Mapping[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def ignore_missing(func: Any, path: str, exc_info: Any) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


@contextlib.contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """A fresh directory beside ``dest``; renamed onto ``dest`` only if the block succeeds."""
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.restoring-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rmdir(dest)  # the usual case: an empty checkpoint directory made for the attempt
    except FileNotFoundError:
        pass
    except OSError:
        old = dest.parent / f".{dest.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(tmp, dest)
