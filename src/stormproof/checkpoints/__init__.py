"""Checkpoints: a task's committed files, stored so that only a complete, intact copy is restored.

``open_checkpoint_store(url, home)`` gives the store for the ``checkpoints:``
setting; ``TieredStore`` adds a hot (node-local) and a cold tier around it.
The layout, the manifest and the crash-safety rules are in ``base``; the
task-side commit protocol is in ``protocol``.

Names are imported lazily: tasks import ``stormproof.checkpoints.protocol``
and must start fast, without fsspec and its dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import (
        MANIFEST_NAME,
        CheckpointCorrupt,
        CheckpointError,
        CheckpointInfo,
        CheckpointSourceError,
        CheckpointStore,
        CheckpointStoreError,
        FileCheck,
        Manifest,
        ManifestFile,
        Verification,
    )
    from .fsspec_store import FsspecStore
    from .open import local_store, open_checkpoint_store
    from .tiers import TieredStore, open_tiered_store

_WHERE = {
    "MANIFEST_NAME": "base",
    "CheckpointCorrupt": "base",
    "CheckpointError": "base",
    "CheckpointInfo": "base",
    "CheckpointSourceError": "base",
    "CheckpointStore": "base",
    "CheckpointStoreError": "base",
    "FileCheck": "base",
    "Manifest": "base",
    "ManifestFile": "base",
    "Verification": "base",
    "FsspecStore": "fsspec_store",
    "local_store": "open",
    "open_checkpoint_store": "open",
    "TieredStore": "tiers",
    "open_tiered_store": "tiers",
}
__all__ = [
    "MANIFEST_NAME",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointSourceError",
    "CheckpointStore",
    "CheckpointStoreError",
    "FileCheck",
    "FsspecStore",
    "Manifest",
    "ManifestFile",
    "TieredStore",
    "Verification",
    "local_store",
    "open_checkpoint_store",
    "open_tiered_store",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
