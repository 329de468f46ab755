"""The local checkpoint store's write and delete orders, proven by real faults in real processes.

A save runs in a child process under a file size limit (``RLIMIT_FSIZE``): a write
past it fails with EFBIG, as on a full disk, or, with ``SIGXFSZ`` left at its
default, kills the process on the spot. A prune runs in a child killed with -9 in
the middle of its deletions. What must hold after each:

* a save that failed leaves nothing of itself (no data files, no partial manifest);
* a save killed while it wrote its manifest leaves no manifest under the final name
  (it is written to a temporary name and renamed), so the checkpoint reads
  "incomplete", never "invalid" or restorable;
* a prune killed midway leaves checkpoints whole or without their manifest
  (manifests go first), never a manifest naming files that are gone ("damaged").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stormproof.checkpoints import MANIFEST_NAME
from stormproof.checkpoints.fsspec_store import FsspecStore
from stormproof.checkpoints.open import open_checkpoint_store

from .helpers import make_source

ROOT = Path(__file__).resolve().parents[2]
RUN, TASK = "run", "sim"

SAVER = textwrap.dedent(
    """
    import resource, signal, sys, time
    from pathlib import Path
    from stormproof.checkpoints.open import open_checkpoint_store

    store_dir, source, seq, limit, on_limit = sys.argv[1:6]
    store = open_checkpoint_store(store_dir, Path.cwd())
    if on_limit == "die":
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # past the limit: killed on the spot
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    try:
        store.save("run", "sim", 2, int(seq), Path(source), time.time())
    except Exception as exc:
        print("failed:", exc, flush=True)
    else:
        print("saved", flush=True)
    """
)


def save_limited(store: FsspecStore, source: Path, seq: int, limit: int, on_limit: str):  # type: ignore[no-untyped-def]
    """Save ``source`` as ``seq`` in a child process whose files may not grow past ``limit``."""
    argv = [sys.executable, "-c", SAVER, store.url, str(source), str(seq), str(limit), on_limit]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def many_small_files(root: Path, n: int) -> Path:
    """A checkpoint whose manifest (a line per file) is far bigger than any of its files."""
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"part-{i:05d}.dat").write_bytes(b"%08d" % i)
    return root


@pytest.fixture
def store(tmp_path: Path) -> FsspecStore:
    store = open_checkpoint_store(str(tmp_path / "store"), tmp_path)
    store.save(RUN, TASK, 1, 1, make_source(tmp_path / "v1", "v1"), 1.0)  # a good older one
    return store


def seq_files(store: FsspecStore, seq: int) -> list[str]:
    base = Path(store.path(RUN, TASK, seq))
    return sorted(p.name for p in base.rglob("*") if p.is_file()) if base.exists() else []


def only_the_first_is_restorable(store: FsspecStore, tmp_path: Path) -> None:
    manifest, _ = store.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 1


def test_a_save_that_fails_on_a_data_file_leaves_nothing_of_itself(
    store: FsspecStore, tmp_path: Path
) -> None:
    source = tmp_path / "v2"
    source.mkdir()
    (source / "a_small.txt").write_text("small\n")
    (source / "b_big.bin").write_bytes(os.urandom(256 * 1024))
    (source / "c_small.txt").write_text("small\n")
    child = save_limited(store, source, 2, 64 * 1024, on_limit="fail")
    assert child.stdout.startswith("failed: cannot save checkpoint"), child.stdout + child.stderr
    assert seq_files(store, 2) == []
    assert [(i.seq, i.state) for i in store.list(RUN, TASK)] == [(1, "ok")]
    only_the_first_is_restorable(store, tmp_path)


def test_a_save_that_fails_on_its_manifest_leaves_nothing_of_itself(
    store: FsspecStore, tmp_path: Path
) -> None:
    source = many_small_files(tmp_path / "v2", 300)  # 8-byte files, a manifest of ~30 KiB
    child = save_limited(store, source, 2, 8 * 1024, on_limit="fail")
    assert child.stdout.startswith("failed: cannot save checkpoint"), child.stdout + child.stderr
    assert seq_files(store, 2) == []
    assert [(i.seq, i.state) for i in store.list(RUN, TASK)] == [(1, "ok")]


def test_a_save_killed_while_writing_its_manifest_leaves_no_manifest(
    store: FsspecStore, tmp_path: Path
) -> None:
    source = many_small_files(tmp_path / "v2", 300)
    child = save_limited(store, source, 2, 8 * 1024, on_limit="die")
    assert child.returncode == -signal.SIGXFSZ, child.stdout + child.stderr
    assert not (Path(store.path(RUN, TASK, 2)) / MANIFEST_NAME).exists()
    assert len(seq_files(store, 2)) > 300, "its data files and a partial manifest stay, unnamed"
    [newest, older] = store.list(RUN, TASK)
    assert (newest.seq, newest.state, older.state) == (2, "incomplete", "ok")
    assert newest.problem is not None and newest.problem.startswith("manifest missing")
    only_the_first_is_restorable(store, tmp_path)
    store.save(RUN, TASK, 2, 2, make_source(tmp_path / "v2-again", "again"), 2.0)
    assert store.verify(RUN, TASK, 2).ok  # saved again, the leftovers gone


PRUNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from stormproof.checkpoints.open import open_checkpoint_store

    store = open_checkpoint_store(sys.argv[1], Path.cwd(), durable=False)
    print("pruning", flush=True)
    store.prune("run", "sim", keep_last=1)
    print("pruned", flush=True)
    """
)


def test_a_prune_killed_midway_leaves_no_checkpoint_with_files_missing(tmp_path: Path) -> None:
    """Manifests first: when the first data file of a pruned checkpoint is gone, no manifest
    of a pruned checkpoint may be left (the wrong order leaves one naming missing files)."""
    store = open_checkpoint_store(str(tmp_path / "store"), tmp_path, durable=False)
    files = 1500
    source = many_small_files(tmp_path / "src", files)
    for seq in (1, 2, 3):
        store.save(RUN, TASK, 1, seq, source, float(seq))
    first = Path(store.path(RUN, TASK, 1))
    child = subprocess.Popen(
        [sys.executable, "-c", PRUNER, store.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(first)) == files + 1:  # its files and its manifest
            assert child.poll() is None, "the prune ended before it could be killed"
            assert time.monotonic() < deadline, "the prune never started deleting"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    states = {i.seq: i.state for i in store.list(RUN, TASK)}
    assert states[3] == "ok"
    assert "damaged" not in states.values(), states
    assert set(states.values()) <= {"ok", "incomplete"}
    manifest, _ = store.restore_newest(RUN, TASK, tmp_path / "dest")
    assert manifest is not None and manifest.seq == 3
    assert store.prune(RUN, TASK, keep_last=1) == sorted(s for s in states if s != 3)
    assert [i.seq for i in store.list(RUN, TASK)] == [3]
