"""The checkpoint store on any fsspec filesystem: a local directory, ``s3://``, ``gs://`` …

One implementation for every backend, with one fast path: when the store is
a local directory, file data moves by ``copy_file_range`` with hashing
overlapped (``_copy.HashBehindCopier``); everywhere else it streams through
fsspec in bounded chunks, several files at a time (object stores are
latency-bound on small files).

Crash safety comes from the order of writes, not from locks:

* ``save``: clear any leftover of the same ``seq`` (manifest first), write the
  files, make them durable (local: one ``syncfs``), then the manifest (local:
  temp file, fsync, rename; object stores: one PUT, which is atomic). A save that
  fails anywhere, its manifest included, removes what it wrote.
* ``delete``/``prune``: manifests first, then the files, so an interrupted
  delete leaves "incomplete", never "valid with files missing".
* ``restore``: into a fresh directory beside ``dest``, hashing while copying;
  swapped in by rename only if every file verified.

Everything a backend raises is translated here: ``CheckpointStoreError`` /
``CheckpointSourceError`` during operations, ``ConfigError`` from ``check``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fsspec import AbstractFileSystem  # type: ignore[import-untyped]  # fsspec ships no types
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

from stormproof.errors import ConfigError

from . import _copy
from ._errors import explain_unusable
from ._fsutil import discard, ignore_missing, impatient, mtime, staging
from ._source import SourceFile, scan_source
from .base import (
    MANIFEST_NAME,
    CheckpointCorrupt,
    CheckpointError,
    CheckpointInfo,
    CheckpointSourceError,
    CheckpointStoreError,
    FileCheck,
    Infos,
    Manifest,
    ManifestFile,
    Removed,
    Seqs,
    Skipped,
    State,
    Tier,
    Verification,
    check_name,
    older_than,
    parse_manifest,
    parse_seq_dir,
    seq_dir_name,
    seqs_to_prune,
)

T = TypeVar("T")
X = TypeVar("X")
Digests = list[_copy.Digest]
_TMP_MANIFEST = "." + MANIFEST_NAME + ".tmp-"
#: Files at a time to and from an object store; each holds one chunk and one upload part.
REMOTE_THREADS = 4
#: S3 allows 10,000 parts per upload: grow the part size for huge files, never below a chunk.
_MAX_PARTS = 9_000
_MIB = 1 << 20


@dataclass
class _Stored:
    """What a listing found under one ``<run>/<task>/<seq>/``."""

    files: dict[str, int] = field(default_factory=dict)  # relative path -> size
    has_manifest: bool = False
    modified_at: float | None = None


class FsspecStore:
    """Checkpoints under ``root`` of an fsspec filesystem (see the module docstring)."""

    def __init__(
        self,
        fs: AbstractFileSystem,
        root: str,
        url: str,
        *,
        tier: Tier = "warm",
        durable: bool = True,
        threads: int = REMOTE_THREADS,
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.url = url
        self.tier: Tier = tier
        #: Local stores only: make files durable (``syncfs``) before the manifest names them.
        self.durable = durable
        self._threads = max(1, threads)
        self._local = isinstance(fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"FsspecStore({self.url!r}, tier={self.tier!r})"

    # ------------------------------------------------------------------ paths
    def path(self, run: str, task: str | None = None, seq: int | None = None, rel: str = "") -> str:
        """The backend path of a run, a task, a checkpoint or one of its files."""
        parts = [self.root, check_name("run", run)]
        if task is not None:
            parts.append(check_name("task", task))
            if seq is not None:
                parts.append(seq_dir_name(seq))
                if rel:
                    parts.append(rel)
        return "/".join(parts)

    def _where(self, run: str, task: str, seq: int) -> str:
        return f"{self.url.rstrip('/')}/{run}/{task}/{seq_dir_name(seq)}"

    # ------------------------------------------------------------------ check
    def check(self) -> None:
        """Write and delete a probe object, so that a bad URL fails at start, not mid-run."""
        probe = f"{self.root}/.stormproof-probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            if self._local:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            fs = impatient(self.fs)
            fs.pipe_file(probe, b"stormproof checks it can write here\n")
            fs.rm_file(probe)
        except Exception as err:
            raise ConfigError(explain_unusable(self.url, self.fs, err)) from None

    # ------------------------------------------------------------------ save
    def save(
        self, run: str, task: str, attempt: int, seq: int, source: Path, now: float
    ) -> Manifest:
        """Store ``source`` as checkpoint ``seq``: files streamed and hashed, manifest last."""
        base = self.path(run, task, seq)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise CheckpointError(f"attempt {attempt!r} must be a whole number")
        files = scan_source(Path(source))
        with self._translated(f"save checkpoint {self._where(run, task, seq)}"):
            self._remove_seq(base)
            save = self._save_local if self._local else self._save_remote
            with self._all_or_nothing(base):
                digests = save(files, base)
                manifest = Manifest(
                    run,
                    task,
                    attempt,
                    seq,
                    float(now),
                    tuple(
                        ManifestFile(f.rel, d.size, d.sha256)
                        for f, d in zip(files, digests, strict=True)
                    ),
                )
                self._write_manifest(base, manifest.dumps())
        return manifest

    @contextlib.contextmanager
    def _all_or_nothing(self, base: str) -> Iterator[None]:
        """A save or copy that fails, even at its manifest (a full disk), leaves nothing of
        itself behind, manifest first. (A killed one cannot clean up: what it left has no
        manifest, is never restored, and goes with the next save of its seq or a prune.)"""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # no manifest: harmless if this fails too
                self._remove_seq(base)
            raise

    def _save_local(self, files: Sequence[SourceFile], base: str) -> Digests:
        root = Path(base)
        made: set[Path] = set()
        futures: builtins.list[Future[_copy.Digest]] = []
        with _copy.HashBehindCopier(writeback=self.durable) as copier:
            for f in files:
                target = root / f.rel
                if target.parent not in made:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made.add(target.parent)
                futures.append(copier.copy(_open_source(f), target))
        digests = [fut.result() for fut in futures]
        if self.durable:
            _copy.sync_filesystem(root)
        return digests

    def _save_remote(self, files: Sequence[SourceFile], base: str) -> Digests:
        return self._map(lambda f: self._upload(f, f"{base}/{f.rel}"), files)

    def _upload(self, f: SourceFile, dest: str) -> _copy.Digest:
        with os.fdopen(_open_source(f), "rb", buffering=0) as src:
            return self._write_stream(src.read, dest, f.size)

    def _write_manifest(self, base: str, data: bytes) -> None:
        if not self._local:
            self.fs.pipe_file(f"{base}/{MANIFEST_NAME}", data)  # one PUT: all or nothing
            return
        tmp = Path(base) / f"{_TMP_MANIFEST}{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, Path(base) / MANIFEST_NAME)
        if self.durable:
            _copy.fsync_dir(Path(base))

    # ------------------------------------------------------------------ list
    def list(self, run: str, task: str | None = None) -> Infos:
        """Every checkpoint of ``run`` (or one task): per task, newest first; nothing hashed."""
        prefix = self.path(run, task)
        with self._translated(f"list checkpoints under {self.url}"):
            return self._infos(prefix)

    def list_all(self) -> Infos:
        """Every checkpoint of every run in the store."""
        with self._translated(f"list checkpoints under {self.url}"):
            return self._infos(self.root)

    def _infos(self, prefix: str) -> Infos:
        stored = self._scan(prefix)
        keys = sorted(stored, key=lambda k: (k[0], k[1], -k[2]))
        manifests = self._cat(
            [self.path(*k, rel=MANIFEST_NAME) for k in keys if stored[k].has_manifest]
        )
        return [self._info(k, stored[k], manifests) for k in keys]

    def _info(
        self, key: tuple[str, str, int], stored: _Stored, manifests: Mapping[str, Any]
    ) -> CheckpointInfo:
        run, task, seq = key
        state: State = "ok"
        manifest, problem = None, None
        raw = manifests.get(self.path(run, task, seq, MANIFEST_NAME))
        if not stored.has_manifest or raw is None or isinstance(raw, FileNotFoundError):
            state, problem = "incomplete", _no_manifest(stored)
        elif isinstance(raw, BaseException):
            raise raw
        else:
            try:
                manifest = parse_manifest(raw, run, task, seq)
            except ValueError as err:
                state, problem = "invalid", str(err)
            else:
                problems = _size_problems(manifest, stored.files)
                if problems:
                    state, problem = "damaged", "; ".join(problems)
        return CheckpointInfo(
            run,
            task,
            seq,
            self.tier,
            state,
            manifest,
            problem,
            stored.modified_at,
            len(stored.files),
            sum(stored.files.values()),
        )

    def _scan(self, prefix: str) -> dict[tuple[str, str, int], _Stored]:
        found: dict[tuple[str, str, int], _Stored] = {}
        start = len(self.root.rstrip("/")) + 1
        under = prefix.rstrip("/") + "/"
        for name, info in self.fs.find(prefix, detail=True).items():
            if info.get("type") == "directory" or not name.startswith(under):
                continue  # an object store's leftover "folder", or a sibling like run-2
            parts = name[start:].split("/", 3)
            if len(parts) != 4 or (seq := parse_seq_dir(parts[2])) is None:
                continue  # not a checkpoint file: a probe, a stray object
            run, task, _, rel = parts
            entry = found.setdefault((run, task, seq), _Stored())
            when = mtime(info)
            if when is not None and (entry.modified_at is None or when > entry.modified_at):
                entry.modified_at = when
            if rel == MANIFEST_NAME:
                entry.has_manifest = True
            elif not rel.startswith(_TMP_MANIFEST):
                entry.files[rel] = int(info.get("size") or 0)
        return found

    def _cat(self, paths: Sequence[str]) -> Mapping[str, Any]:
        if not paths:
            return {}
        result = self.fs.cat(paths, on_error="return")
        return result if isinstance(result, dict) else {paths[0]: result}

    # ------------------------------------------------------------------ verify
    def verify(self, run: str, task: str, seq: int) -> Verification:
        """Hash every file against the manifest; every problem found, not just the first."""
        base = self.path(run, task, seq)
        with self._translated(f"verify checkpoint {self._where(run, task, seq)}"):
            stored = self._scan(base).get((run, task, seq), _Stored())
            try:
                manifest = self._load_manifest(run, task, seq, stored)
            except CheckpointCorrupt as corrupt:
                return Verification(run, task, seq, None, (corrupt.problem,), tier=self.tier)
            sized = _size_problems(manifest, stored.files)
            to_hash = [f for f in manifest.files if stored.files.get(f.path) == f.size]
            digests = self._map(lambda f: self._hash(f"{base}/{f.path}", f.size), to_hash)
        got = {f.path: d for f, d in zip(to_hash, digests, strict=True)}
        checks: builtins.list[FileCheck] = []
        problems = list(sized)
        for f in manifest.files:
            problem = _size_problem(f, stored.files.get(f.path))
            digest = got.get(f.path)
            if problem is None and digest is not None and digest.sha256 != f.sha256:
                problem = f"file {f.path}: sha256 mismatch"
                problems.append(problem)
            checks.append(FileCheck(f.path, f.size, f.sha256, problem))
        return Verification(run, task, seq, manifest, tuple(problems), tuple(checks), self.tier)

    def _hash(self, path: str, size: int) -> _copy.Digest:
        if self._local:
            return _copy.hash_local_file(Path(path))
        return _copy.stream_copy(self._reader(path, size), None)

    def _load_manifest(self, run: str, task: str, seq: int, stored: _Stored) -> Manifest:
        try:
            raw = self.fs.cat_file(self.path(run, task, seq, MANIFEST_NAME))
        except FileNotFoundError:
            raise CheckpointCorrupt(_no_manifest(stored)) from None
        try:
            return parse_manifest(raw, run, task, seq)
        except ValueError as err:
            raise CheckpointCorrupt(str(err)) from None

    # ------------------------------------------------------------------ restore
    def restore(self, run: str, task: str, seq: int, dest: Path) -> Manifest:
        """Copy checkpoint ``seq`` into ``dest``, verifying as it copies.

        ``CheckpointCorrupt`` if anything does not match; ``dest`` is then untouched.
        """
        base = self.path(run, task, seq)
        with self._translated(f"restore checkpoint {self._where(run, task, seq)} into {dest}"):
            stored = self._scan(base).get((run, task, seq), _Stored())
            manifest = self._load_manifest(run, task, seq, stored)
            sized = _size_problems(manifest, stored.files)
            if sized:
                raise CheckpointCorrupt("; ".join(sized))
            with staging(Path(dest)) as tmp:
                digests = self._download_all(manifest, base, tmp)
                bad = [
                    f"file {f.path}: sha256 mismatch"
                    for f, d in zip(manifest.files, digests, strict=True)
                    if d.sha256 != f.sha256 or d.size != f.size
                ]
                if bad:
                    raise CheckpointCorrupt("; ".join(bad))
        return manifest

    def _download_all(self, manifest: Manifest, base: str, tmp: Path) -> Digests:
        for parent in sorted({(tmp / f.path).parent for f in manifest.files}):
            parent.mkdir(parents=True, exist_ok=True)
        if self._local:
            with _copy.HashBehindCopier() as copier:
                futures = [
                    copier.copy(Path(f"{base}/{f.path}"), tmp / f.path) for f in manifest.files
                ]
            return [fut.result() for fut in futures]
        return self._map(
            lambda f: self._download(f"{base}/{f.path}", f.size, tmp / f.path), manifest.files
        )

    def _download(self, path: str, size: int, dest: Path) -> _copy.Digest:
        with open(dest, "wb") as out:
            return _copy.stream_copy(self._reader(path, size), out.write)

    def _reader(self, path: str, size: int) -> Callable[[int], bytes]:
        """Ranged GETs of ``n`` bytes (no HEAD, no read-ahead cache: memory stays one chunk).

        ``size`` comes from a fresh listing, never from fsspec's directory cache.
        """
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            if pos >= size:
                return b""
            data: bytes = self.fs.cat_file(path, start=pos, end=min(pos + n, size))
            if not data:
                return b""
            pos += len(data)
            return data

        return read

    def restore_newest(
        self, run: str, task: str, dest: Path, candidates: Sequence[int] | None = None
    ) -> tuple[Manifest | None, Skipped]:
        """Restore the newest checkpoint that verifies, trying older ones in turn.

        ``candidates`` (e.g. the commits the event log recorded) limits which
        seqs count; by default every seq in the store. Returns the manifest
        restored (None: nothing usable, start fresh) and each ``(seq, problem)``
        skipped, newest first, for the caller to log as ``Checkpoint.Corrupt``.
        """
        infos = {i.seq: i for i in self.list(run, task)}
        seqs = sorted(set(infos) if candidates is None else set(candidates), reverse=True)
        skipped: Skipped = []
        for seq in seqs:
            info = infos.get(seq)
            if info is None:
                skipped.append((seq, f"not in the store {self.url}"))
                continue
            if info.state != "ok":
                skipped.append((seq, info.problem or info.state))
                continue
            try:
                return self.restore(run, task, seq, dest), skipped
            except CheckpointCorrupt as corrupt:
                skipped.append((seq, corrupt.problem))
        return None, skipped

    # ------------------------------------------------------------------ copy between stores
    def copy_from(self, other: FsspecStore, run: str, task: str, seq: int) -> Manifest:
        """Copy one checkpoint from ``other`` (e.g. warm to cold), hashing as it goes.

        ``CheckpointCorrupt`` (and nothing left here) if the source does not
        match its manifest; the manifest is written here last, as in ``save``.
        """
        base, src = self.path(run, task, seq), other.path(run, task, seq)
        with self._translated(f"copy {other._where(run, task, seq)} to {self.url}"):
            stored = other._scan(src).get((run, task, seq), _Stored())
            manifest = other._load_manifest(run, task, seq, stored)
            sized = _size_problems(manifest, stored.files)
            if sized:
                raise CheckpointCorrupt("; ".join(sized))
            self._remove_seq(base)
            with self._all_or_nothing(base):
                digests = self._map(
                    lambda f: self._transfer(other, f"{src}/{f.path}", f.size, f"{base}/{f.path}"),
                    manifest.files,
                )
                bad = [
                    f"file {f.path}: sha256 mismatch"
                    for f, d in zip(manifest.files, digests, strict=True)
                    if d.sha256 != f.sha256
                ]
                if bad:
                    raise CheckpointCorrupt("; ".join(bad))
                if self._local and self.durable:
                    _copy.sync_filesystem(Path(base))
                self._write_manifest(base, manifest.dumps())
        return manifest

    def _transfer(self, other: FsspecStore, src: str, size: int, dest: str) -> _copy.Digest:
        if other._local:
            with open(src, "rb", buffering=0) as f:
                return self._write_stream(f.read, dest, size)
        return self._write_stream(other._reader(src, size), dest, size)

    def _write_stream(self, read: Callable[[int], bytes], dest: str, size: int) -> _copy.Digest:
        if self._local:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as local:
                return _copy.stream_copy(read, local.write)
        part_bytes = max(_copy.CHUNK_BYTES, -(-size // _MAX_PARTS // _MIB) * _MIB)
        out = self.fs.open(dest, "wb", block_size=part_bytes)
        try:
            digest = _copy.stream_copy(read, out.write)
            out.close()
        except BaseException:
            discard(out)
            raise
        return digest

    # ------------------------------------------------------------------ delete / prune
    def delete(self, run: str, task: str | None = None, seq: int | None = None) -> int:
        """Remove one checkpoint, a task's or a run's; manifests go first. Returns how many."""
        if seq is not None and task is None:
            raise CheckpointError("delete: a seq needs its task")
        with self._translated(f"delete checkpoints under {self.url}"):
            stored = self._scan(self.path(run, task, seq))
            keys = [k for k in stored if seq is None or k[2] == seq]
            self._delete_keys(keys, stored)
        return len(keys)

    def prune(self, run: str, task: str, keep_last: int) -> Seqs:
        """Keep the newest ``keep_last`` complete checkpoints (see ``base.seqs_to_prune``)."""
        doomed = seqs_to_prune(self.list(run, task), keep_last)
        with self._translated(f"prune checkpoints under {self.url}"):
            stored = self._scan(self.path(run, task))
            self._delete_keys([(run, task, s) for s in doomed], stored)
        return doomed

    def prune_older_than(self, age_s: float, now: float, run: str | None = None) -> Removed:
        """Remove every checkpoint created more than ``age_s`` before ``now`` (all runs: None).

        A checkpoint without a manifest is aged by its newest file: abandoned
        half-written saves are cleaned up too.
        """
        infos = self.list(run) if run is not None else self.list_all()
        doomed = sorted({(i.run, i.task, i.seq) for i in older_than(infos, now - age_s)})
        with self._translated(f"prune checkpoints under {self.url}"):
            stored = self._scan(self.path(run) if run is not None else self.root)
            self._delete_keys(doomed, stored)
        return doomed

    def _delete_keys(
        self, keys: Sequence[tuple[str, str, int]], stored: Mapping[tuple[str, str, int], _Stored]
    ) -> None:
        present = [k for k in keys if k in stored]
        manifests = [self.path(*k, rel=MANIFEST_NAME) for k in present if stored[k].has_manifest]
        if manifests:
            self.fs.rm(manifests)
        for k in present:
            self._remove_tree(self.path(*k))
        for run, task in sorted({(k[0], k[1]) for k in present}):
            self._remove_empty(self.path(run, task))
            self._remove_empty(self.path(run))

    def _remove_seq(self, base: str) -> None:
        """Clear what a killed save of the same seq left, manifest first."""
        if self._local and not Path(base).exists():
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{base}/{MANIFEST_NAME}")
        self._remove_tree(base)

    def _remove_tree(self, path: str) -> None:
        if self._local:
            shutil.rmtree(path, ignore_errors=False, onerror=ignore_missing)
            return
        names = builtins.list(self.fs.find(path))
        if names:
            self.fs.rm(names)

    def _remove_empty(self, path: str) -> None:
        if self._local:
            with contextlib.suppress(OSError):
                os.rmdir(path)  # fails, as it should, while anything is left

    # ------------------------------------------------------------------ helpers
    def _map(self, fn: Callable[[X], T], items: Sequence[X]) -> builtins.list[T]:
        """``fn`` over ``items``, a few at a time for object stores (latency, not bandwidth)."""
        if len(items) <= 1 or self._threads == 1 or self._local:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(self._threads, thread_name_prefix="stormproof-ckpt") as pool:
            return builtins.list(pool.map(fn, items))

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Foreign exceptions become ``CheckpointStoreError`` naming the action and the store."""
        try:
            yield
        except (CheckpointError, CheckpointCorrupt, ConfigError):
            raise
        except Exception as err:
            detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
            where = getattr(err, "filename", None)
            raise CheckpointStoreError(
                f"cannot {action}: {detail}{f' ({where})' if where else ''}"
            ) from err


def _open_source(f: SourceFile) -> int:
    """Open a task's file for copying; its problems are the task's, not the store's."""
    try:
        return _copy.open_source(f.path)
    except FileNotFoundError:
        raise CheckpointSourceError(
            f"{f.path} vanished while it was being saved: a task must not change a committed "
            "checkpoint until the save is done (write the next one, then commit)"
        ) from None
    except OSError as err:
        raise CheckpointSourceError(f"cannot read {f.path}: {err.strerror or err}") from None


def _size_problem(f: ManifestFile, actual: int | None) -> str | None:
    if actual is None:
        return f"file {f.path}: missing"
    if actual != f.size:
        return f"file {f.path}: size {actual} != {f.size} in the manifest"
    return None


def _size_problems(manifest: Manifest, files: Mapping[str, int]) -> builtins.list[str]:
    return [p for f in manifest.files if (p := _size_problem(f, files.get(f.path))) is not None]


def _no_manifest(stored: _Stored) -> str:
    if not stored.files:
        return "checkpoint not found"
    return f"manifest missing ({len(stored.files)} file(s) without one: the save never finished)"
