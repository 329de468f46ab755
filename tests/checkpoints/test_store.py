"""The checkpoint store, against a local directory and a real S3 server, with real damage.

Every test here runs twice (``backend``: local, s3). Damage is done to the
stored objects themselves (a flipped byte, a truncated file, a deleted
manifest, an orchestrator killed by SIGKILL in the middle of an upload), and
the store must never hand a damaged or half-written checkpoint to a task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stormproof.checkpoints import MANIFEST_NAME, CheckpointCorrupt
from stormproof.checkpoints.fsspec_store import FsspecStore

from .conftest import MakeStore
from .helpers import (
    MiB,
    exists,
    flip_byte,
    make_source,
    remove,
    same_tree,
    tree,
    truncate,
)

ROOT = Path(__file__).resolve().parents[2]
RUN, TASK = "md-run", "production"


def saver(url: str, options: dict[str, Any], source: Path, seq: int) -> list[str]:
    """The command of a separate process that saves one checkpoint (``_saver.py``)."""
    module = "tests.checkpoints._saver"
    return [sys.executable, "-m", module, url, json.dumps(options), str(source), str(seq)]


def save(store: FsspecStore, tmp_path: Path, seq: int, label: str | None = None, **kw: int):
    source = make_source(tmp_path / f"src-{seq}-{label or seq}", label or f"v{seq}", **kw)
    return store.save(RUN, TASK, 1, seq, source, 1000.0 + seq)


def test_round_trip_with_nested_dirs_and_a_64_mib_file(store: FsspecStore, tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", "v1", big=64 * MiB)
    manifest = store.save(RUN, TASK, 3, 7, source, 1234.5)

    assert [f.path for f in manifest.files] == [
        "state/big.bin",
        "state/deep/er/tail.bin",
        "state/empty",
        "state/params.json",
        "step.txt",
    ]  # protocol files (.commit, .checkpoint-request) are not part of a checkpoint
    assert manifest.total_bytes == sum(len(v) for v in tree(source).values())
    raw = json.loads(store.fs.cat_file(store.path(RUN, TASK, 7, MANIFEST_NAME)))
    assert set(raw) == {
        "version",
        "run",
        "task",
        "attempt",
        "seq",
        "created_at",
        "files",
        "total_bytes",
    }
    assert (raw["run"], raw["task"], raw["attempt"], raw["seq"]) == (RUN, TASK, 3, 7)
    assert store.path(RUN, TASK, 7).endswith(f"/{RUN}/{TASK}/00000007")

    [info] = store.list(RUN)
    assert (info.task, info.seq, info.state, info.manifest) == (TASK, 7, "ok", manifest)
    assert store.verify(RUN, TASK, 7).ok

    dest = tmp_path / "attempt-2" / "checkpoint"
    assert store.restore(RUN, TASK, 7, dest) == manifest
    assert same_tree(source, dest)
    assert not (dest / MANIFEST_NAME).exists()
    assert [p.name for p in dest.parent.iterdir()] == ["checkpoint"]  # no staging dir left


def test_list_is_newest_first_per_task_and_flags_what_is_wrong(
    store: FsspecStore, tmp_path: Path
) -> None:
    for seq in (1, 2, 3):
        save(store, tmp_path, seq)
    store.save(RUN, "analysis", 1, 1, make_source(tmp_path / "other"), 5.0)
    remove(store, RUN, TASK, 2, MANIFEST_NAME)
    truncate(store, RUN, TASK, 3, "step.txt", keep=1)

    infos = store.list(RUN)
    assert [(i.task, i.seq, i.state) for i in infos] == [
        ("analysis", 1, "ok"),
        (TASK, 3, "damaged"),
        (TASK, 2, "incomplete"),
        (TASK, 1, "ok"),
    ]
    assert infos[1].problem == "file step.txt: size 1 != 3 in the manifest"
    assert infos[2].problem is not None and infos[2].problem.startswith("manifest missing")
    assert infos[2].stored_files == 4 and infos[2].created_at is not None
    assert [i.seq for i in store.list(RUN, TASK)] == [3, 2, 1]
    assert store.list("no-such-run") == []


def test_one_flipped_byte_is_named_refused_and_skipped(store: FsspecStore, tmp_path: Path) -> None:
    save(store, tmp_path, 1)
    save(store, tmp_path, 2)
    flip_byte(store, RUN, TASK, 2, "state/params.json", at=3)

    check = store.verify(RUN, TASK, 2)
    assert check.problems == ("file state/params.json: sha256 mismatch",)
    assert [f.path for f in check.files if f.problem] == ["state/params.json"]

    dest = tmp_path / "dest"
    with pytest.raises(CheckpointCorrupt, match=r"file state/params\.json: sha256 mismatch"):
        store.restore(RUN, TASK, 2, dest)
    assert not dest.exists()  # nothing half-restored
    assert list(tmp_path.glob(".dest*")) == []

    manifest, skipped = store.restore_newest(RUN, TASK, dest)
    assert manifest is not None and manifest.seq == 1
    assert skipped == [(2, "file state/params.json: sha256 mismatch")]
    assert (dest / "step.txt").read_text() == "v1\n"


def test_truncated_file_is_refused_and_skipped(store: FsspecStore, tmp_path: Path) -> None:
    save(store, tmp_path, 1)
    save(store, tmp_path, 2)
    truncate(store, RUN, TASK, 2, "state/deep/er/tail.bin", keep=10)

    problem = "file state/deep/er/tail.bin: size 10 != 1002 in the manifest"
    assert store.verify(RUN, TASK, 2).problems == (problem,)
    with pytest.raises(CheckpointCorrupt) as raised:
        store.restore(RUN, TASK, 2, tmp_path / "dest")
    assert raised.value.problem == problem
    manifest, skipped = store.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1 and skipped == [(2, problem)]


def test_deleted_manifest_means_never_restored(store: FsspecStore, tmp_path: Path) -> None:
    save(store, tmp_path, 1)
    save(store, tmp_path, 2)
    remove(store, RUN, TASK, 2, MANIFEST_NAME)

    [problem] = store.verify(RUN, TASK, 2).problems
    assert problem.startswith("manifest missing (4 file(s) without one")
    with pytest.raises(CheckpointCorrupt, match="manifest missing"):
        store.restore(RUN, TASK, 2, tmp_path / "dest")
    manifest, skipped = store.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1 and skipped == [(2, problem)]


def test_a_manifest_that_lies_about_where_it_is_is_invalid(
    store: FsspecStore, tmp_path: Path
) -> None:
    save(store, tmp_path, 1)
    save(store, tmp_path, 2)
    seq1 = store.fs.cat_file(store.path(RUN, TASK, 1, MANIFEST_NAME))
    store.fs.pipe_file(store.path(RUN, TASK, 2, MANIFEST_NAME), seq1)  # copied over by hand
    save(store, tmp_path, 3)
    store.fs.pipe_file(store.path(RUN, TASK, 3, MANIFEST_NAME), b'{"version": 1, "run": ')

    states = {i.seq: (i.state, i.problem) for i in store.list(RUN, TASK)}
    assert states[2] == ("invalid", "manifest says seq 1, it is stored as 2")
    assert states[3][0] == "invalid" and "not valid JSON" in str(states[3][1])
    manifest, skipped = store.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1
    assert [s for s, _ in skipped] == [3, 2]


def test_orchestrator_killed_mid_upload_leaves_nothing_restorable(
    store: FsspecStore, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store.save("run", "sim", 1, 1, make_source(tmp_path / "v1", "v1"), 1.0)
    source = tmp_path / "src-2"
    source.mkdir()
    (source / "a_first.txt").write_text("v2\n")
    with open(source / "b_big.bin", "wb") as f:
        f.truncate(1024 * MiB)  # sparse: instant to make, seconds to copy and hash
    options = request.getfixturevalue("seaweed").options() if backend == "s3" else {}
    child = subprocess.Popen(
        saver(store.url, options, source, 2),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not exists(store, "run", "sim", 2, "a_first.txt"):
            assert child.poll() is None, "the saver ended before it was killed"
            assert time.monotonic() < deadline, "the saver never started writing"
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)  # the orchestrator dies mid-upload
    finally:
        child.kill()
        output, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL and "saved" not in output.split()
    assert not exists(store, "run", "sim", 2, MANIFEST_NAME)

    [newest, older] = store.list("run", "sim")
    assert (newest.seq, newest.state) == (2, "incomplete")
    assert newest.problem is not None and newest.problem.startswith("manifest missing")
    assert older.state == "ok"
    assert not store.verify("run", "sim", 2).ok
    with pytest.raises(CheckpointCorrupt, match="manifest missing"):
        store.restore("run", "sim", 2, tmp_path / "dest")
    manifest, skipped = store.restore_newest("run", "sim", tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1
    assert skipped == [(2, newest.problem)]

    # The runtime saves seq 2 again after a restart: the leftovers go, the new one is whole.
    redo = tmp_path / "redo"
    redo.mkdir()
    (redo / "a_first.txt").write_text("again\n")
    store.save("run", "sim", 2, 2, redo, 2.0)
    [again, _] = store.list("run", "sim")
    assert (again.state, again.stored_files) == ("ok", 1)
    assert store.verify("run", "sim", 2).ok


def test_no_valid_checkpoint_means_start_fresh(store: FsspecStore, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    assert store.restore_newest(RUN, TASK, dest) == (None, [])
    save(store, tmp_path, 1)
    flip_byte(store, RUN, TASK, 1, "step.txt")
    manifest, skipped = store.restore_newest(RUN, TASK, dest, candidates=[1, 4])
    assert manifest is None
    assert skipped == [(4, f"not in the store {store.url}"), (1, "file step.txt: sha256 mismatch")]
    assert not dest.exists()
    with pytest.raises(CheckpointCorrupt, match="checkpoint not found"):
        store.restore(RUN, TASK, 9, dest)


def test_candidates_limit_what_is_restored(store: FsspecStore, tmp_path: Path) -> None:
    for seq in (1, 2, 3):
        save(store, tmp_path, seq)
    manifest, skipped = store.restore_newest(RUN, TASK, tmp_path / "dest", candidates=[2, 1])
    assert manifest is not None and manifest.seq == 2 and skipped == []


def test_restore_replaces_what_dest_held_only_when_it_verifies(
    store: FsspecStore, tmp_path: Path
) -> None:
    save(store, tmp_path, 1)
    save(store, tmp_path, 2)
    flip_byte(store, RUN, TASK, 2, "step.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale.txt").write_text("from a failed attempt")

    with pytest.raises(CheckpointCorrupt):
        store.restore(RUN, TASK, 2, dest)
    assert tree(dest) == {"stale.txt": b"from a failed attempt"}
    store.restore(RUN, TASK, 1, dest)
    assert "stale.txt" not in tree(dest) and (dest / "step.txt").read_text() == "v1\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_saving_the_same_seq_again_replaces_it_whole(store: FsspecStore, tmp_path: Path) -> None:
    save(store, tmp_path, 1)
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    (smaller / "only.txt").write_text("only\n")
    store.save(RUN, TASK, 2, 1, smaller, 2000.0)
    dest = tmp_path / "dest"
    store.restore(RUN, TASK, 1, dest)
    assert tree(dest) == {"only.txt": b"only\n"}
    [info] = store.list(RUN)
    assert info.stored_files == 1 and info.manifest is not None and info.manifest.attempt == 2


def test_prune_keeps_exactly_the_last_k(store: FsspecStore, tmp_path: Path) -> None:
    for seq in range(1, 6):
        save(store, tmp_path, seq)
    assert store.prune(RUN, TASK, keep_last=2) == [1, 2, 3]
    assert [i.seq for i in store.list(RUN, TASK)] == [5, 4]
    assert store.prune(RUN, TASK, keep_last=2) == []
    assert store.verify(RUN, TASK, 5).ok and store.verify(RUN, TASK, 4).ok


def test_prune_spares_a_save_in_progress_and_drops_abandoned_ones(
    store: FsspecStore, tmp_path: Path
) -> None:
    for seq in (1, 2, 3, 4):
        save(store, tmp_path, seq)
    remove(store, RUN, TASK, 2, MANIFEST_NAME)  # abandoned half-written save, older
    remove(store, RUN, TASK, 4, MANIFEST_NAME)  # newest, no manifest yet: maybe in progress
    assert store.prune(RUN, TASK, keep_last=1) == [1, 2]
    assert [(i.seq, i.state) for i in store.list(RUN, TASK)] == [(4, "incomplete"), (3, "ok")]
    assert store.prune(RUN, TASK, keep_last=0) == [3]
    assert [i.seq for i in store.list(RUN, TASK)] == [4]


def test_prune_older_than(store: FsspecStore, tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    store.save("run-a", "t1", 1, 1, src, 1000.0)
    store.save("run-a", "t1", 1, 2, src, 5000.0)
    store.save("run-a", "t2", 1, 1, src, 1500.0)
    store.save("run-b", "t1", 1, 1, src, 1000.0)
    store.save("run-b", "t1", 1, 2, src, 9000.0)
    remove(store, "run-b", "t1", 2, MANIFEST_NAME)  # half-written: aged by its files' mtime

    assert store.prune_older_than(3000, now=5000.0, run="run-a") == [
        ("run-a", "t1", 1),
        ("run-a", "t2", 1),
    ]
    assert [(i.run, i.task, i.seq) for i in store.list("run-a")] == [("run-a", "t1", 2)]
    assert [i.seq for i in store.list("run-b")] == [2, 1]
    week = 7 * 86400.0
    later = time.time() + 2 * week
    assert store.prune_older_than(week, now=later) == [
        ("run-a", "t1", 2),
        ("run-b", "t1", 1),
        ("run-b", "t1", 2),
    ]
    assert store.list("run-a") == [] and store.list("run-b") == []


def test_delete_counts_and_removes(store: FsspecStore, tmp_path: Path) -> None:
    for seq in (1, 2, 3):
        save(store, tmp_path, seq)
    store.save(RUN, "other", 1, 1, make_source(tmp_path / "o"), 1.0)
    assert store.delete(RUN, TASK, 2) == 1
    assert store.delete(RUN, TASK, 2) == 0
    assert [i.seq for i in store.list(RUN, TASK)] == [3, 1]
    assert store.delete(RUN, TASK) == 2
    assert store.delete(RUN) == 1
    assert store.list(RUN) == []


def test_saving_streams_in_constant_memory(
    make_store: MakeStore, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Peak RSS of a process saving 256 MiB stays far below the file size."""
    store = make_store()
    source = tmp_path / "src"
    source.mkdir()
    with open(source / "big.bin", "wb") as f:
        f.truncate(256 * MiB)
    options = request.getfixturevalue("seaweed").options() if backend == "s3" else {}
    done = subprocess.run(
        saver(store.url, options, source, 1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    peak_mib = int(done.stdout.split("peak_rss_kib")[1]) / 1024
    print(f"peak RSS saving 256 MiB to {backend}: {peak_mib:.0f} MiB")
    assert 0 < peak_mib < 120, f"saving 256 MiB peaked at {peak_mib:.0f} MiB"
    assert store.verify("run", "sim", 1).ok
