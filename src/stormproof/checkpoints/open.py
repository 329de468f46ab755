"""From the ``checkpoints:`` setting to a store.

* nothing set: ``<home>/checkpoints``
* a path (``./ckpt``, ``/scratch/me/ckpt``, ``~/ckpt``) or ``file://…``: a local
  directory; relative paths are taken from the current directory, like
  ``home:`` in stormproof.yaml
* any other URL: its fsspec filesystem (``s3://bucket/prefix`` needs s3fs,
  ``gs://`` gcsfs, ``az://`` adlfs). Credentials and endpoints come from where
  those libraries always look (for S3: ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3``), or from
  ``storage_options``.

Opening does no I/O; ``check()`` on the result proves the store is usable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec  # type: ignore[import-untyped]  # fsspec ships no types
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

from stormproof.errors import ConfigError

from .base import Tier
from .fsspec_store import FsspecStore


def open_checkpoint_store(
    url: str | None,
    home: Path,
    *,
    storage_options: Mapping[str, Any] | None = None,
    tier: Tier = "warm",
    durable: bool = True,
) -> FsspecStore:
    """The store for ``url`` (``None``: ``<home>/checkpoints``); ``ConfigError`` if unknown."""
    if not url or not url.strip():
        return local_store(Path(home) / "checkpoints", tier=tier, durable=durable)
    url = url.strip()
    if "://" not in url or url.startswith("file://"):
        return local_store(Path(url.removeprefix("file://")), tier=tier, durable=durable)
    try:
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **(storage_options or {}))
    except ImportError as err:
        raise ConfigError(
            f"checkpoints: {url} needs a package that is not installed ({err}); install it "
            "(for s3://: pip install s3fs) or set `checkpoints:` to a local directory"
        ) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"checkpoints: {url} is not a usable store URL ({err}); use a directory, "
            "file://…, s3://bucket/prefix or another fsspec URL"
        ) from None
    if isinstance(fs, LocalFileSystem):
        return local_store(Path(root), tier=tier, durable=durable)
    return FsspecStore(fs, root, url, tier=tier, durable=durable)


def local_store(path: Path, *, tier: Tier = "warm", durable: bool = True) -> FsspecStore:
    """A store in a local directory (created on first save or ``check``)."""
    directory = path.expanduser()
    if not directory.is_absolute():
        directory = Path.cwd() / directory
    directory = Path(os.path.normpath(directory))  # '..' and '//' out; symlinks kept
    return FsspecStore(
        LocalFileSystem(), directory.as_posix(), str(directory), tier=tier, durable=durable
    )
