"""Checkpoint sources, and damage done for real to stored checkpoints on any backend."""

from __future__ import annotations

import os
from pathlib import Path

from stormproof.checkpoints.fsspec_store import FsspecStore

MiB = 1 << 20


def write_random(path: Path, size: int) -> Path:
    """``size`` random bytes, written 4 MiB at a time (never all in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    return path


def make_source(root: Path, label: str = "v1", big: int = 0) -> Path:
    """A checkpoint dir: nested files, an empty file, the protocol files that must be skipped."""
    (root / "state" / "deep" / "er").mkdir(parents=True, exist_ok=True)
    (root / "step.txt").write_text(f"{label}\n")
    (root / "state" / "params.json").write_text('{"dt": 0.002}\n')
    (root / "state" / "deep" / "er" / "tail.bin").write_bytes(os.urandom(1000) + label.encode())
    (root / "state" / "empty").write_bytes(b"")
    (root / ".commit").write_text('{"step": 1}')
    (root / ".checkpoint-request").write_text("")
    if big:
        write_random(root / "state" / "big.bin", big)
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by relative path, protocol files left out."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith((".commit", ".checkpoint-request")):
            out[rel] = path.read_bytes()
    return out


def same_tree(a: Path, b: Path) -> bool:
    """Compare two trees file by file without holding a big file twice."""
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    files_a = [f for f in files_a if not f.startswith((".commit", ".checkpoint-request"))]
    if files_a != files_b:
        return False
    for rel in files_a:
        with open(a / rel, "rb") as fa, open(b / rel, "rb") as fb:
            while True:
                x, y = fa.read(MiB), fb.read(MiB)
                if x != y:
                    return False
                if not x:
                    break
    return True


def flip_byte(store: FsspecStore, run: str, task: str, seq: int, rel: str, at: int = 0) -> None:
    """Corrupt one byte of a stored file, in place, through the store's own filesystem."""
    path = store.path(run, task, seq, rel)
    data = bytearray(store.fs.cat_file(path))
    data[at] ^= 0xFF
    store.fs.pipe_file(path, bytes(data))


def truncate(store: FsspecStore, run: str, task: str, seq: int, rel: str, keep: int) -> None:
    path = store.path(run, task, seq, rel)
    store.fs.pipe_file(path, store.fs.cat_file(path)[:keep])


def remove(store: FsspecStore, run: str, task: str, seq: int, rel: str) -> None:
    store.fs.rm_file(store.path(run, task, seq, rel))


def exists(store: FsspecStore, run: str, task: str, seq: int, rel: str) -> bool:
    return bool(store.fs.exists(store.path(run, task, seq, rel)))
