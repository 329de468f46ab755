"""Bad input gets a clear error that names the place and the fix, at start, not mid-run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormproof.checkpoints import CheckpointError, CheckpointSourceError
from stormproof.checkpoints.fsspec_store import FsspecStore
from stormproof.checkpoints.open import open_checkpoint_store
from stormproof.errors import ConfigError, StormproofError

from ._seaweed import BUCKET, Seaweed, free_ports
from .helpers import make_source


# ---------------------------------------------------------------------- the checkpoint dir
def test_empty_checkpoint_is_refused_with_the_reason(store: FsspecStore, tmp_path: Path) -> None:
    empty = tmp_path / "ckpt"
    empty.mkdir()
    (empty / ".commit").write_text("")  # only protocol files: still empty
    (empty / "sub").mkdir()  # and empty directories hold no state either
    with pytest.raises(CheckpointSourceError, match=r"ckpt is empty: write at least one file"):
        store.save("run", "task", 1, 1, empty, 0.0)
    assert store.list("run") == []


def test_missing_checkpoint_dir(store: FsspecStore, tmp_path: Path) -> None:
    with pytest.raises(CheckpointSourceError, match="does not exist"):
        store.save("run", "task", 1, 1, tmp_path / "nope", 0.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointSourceError, match="is not a directory"):
        store.save("run", "task", 1, 1, tmp_path / "file", 0.0)


def test_symlink_in_the_checkpoint_is_refused(store: FsspecStore, tmp_path: Path) -> None:
    source = make_source(tmp_path / "ckpt")
    (tmp_path / "outside.dat").write_text("not part of the checkpoint")
    (source / "state" / "link.dat").symlink_to(tmp_path / "outside.dat")
    with pytest.raises(CheckpointSourceError) as raised:
        store.save("run", "task", 1, 1, source, 0.0)
    message = str(raised.value)
    assert "state/link.dat is a symbolic link" in message and "outside.dat" in message
    assert "copy the file into the checkpoint directory" in message
    assert store.list("run") == []  # refused before anything was written


def test_fifo_and_reserved_names_are_refused(store: FsspecStore, tmp_path: Path) -> None:
    source = make_source(tmp_path / "a")
    os.mkfifo(source / "pipe")
    with pytest.raises(CheckpointSourceError, match="pipe is not a regular file"):
        store.save("run", "task", 1, 1, source, 0.0)
    source = make_source(tmp_path / "b")
    (source / "MANIFEST.json").write_text("{}")
    with pytest.raises(CheckpointSourceError, match="reserved for stormproof's manifest"):
        store.save("run", "task", 1, 1, source, 0.0)


def test_names_that_could_escape_are_refused(store: FsspecStore, tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    for run, task in (("../up", "t"), ("run", "a/b"), ("", "t"), ("run", ".hidden")):
        with pytest.raises(CheckpointError, match="cannot name a checkpoint"):
            store.save(run, task, 1, 1, source, 0.0)
    with pytest.raises(CheckpointError, match="sequence"):
        store.save("run", "task", 1, -1, source, 0.0)
    assert issubclass(CheckpointError, StormproofError)  # the CLI shows it, no traceback


# ---------------------------------------------------------------------- the store URL
def test_local_store_check_makes_the_directory(tmp_path: Path) -> None:
    store = open_checkpoint_store(str(tmp_path / "a" / "b"), tmp_path)
    store.check()
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


def test_local_store_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    store = open_checkpoint_store(f"file://{tmp_path}/file/ckpt", tmp_path)
    with pytest.raises(ConfigError, match=r"checkpoints: .*file.*set `checkpoints:`"):
        store.check()


def test_unwritable_local_store_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    with _unwritable(locked):
        store = open_checkpoint_store(str(locked / "ckpt"), tmp_path)
        with pytest.raises(ConfigError) as raised:
            store.check()
    message = str(raised.value)
    assert message.startswith(f"checkpoints: cannot write to {locked}/ckpt (")
    assert "make the directory writable, or set `checkpoints:` in stormproof.yaml" in message


@contextlib.contextmanager
def _unwritable(directory: Path) -> Iterator[None]:
    """Mode 0555, and for root (who writes through mode bits) the immutable attribute too."""
    directory.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(directory)]).returncode != 0:
        directory.chmod(0o755)
        pytest.skip("running as root and `chattr +i` is refused here: no way to be denied")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


def test_connection_refused_is_a_config_error_named_at_check(tmp_path: Path) -> None:
    [port] = free_ports(1)
    store = open_checkpoint_store(
        "s3://bucket/ckpt",
        tmp_path,
        storage_options={"key": "k", "secret": "s", "endpoint_url": f"http://127.0.0.1:{port}"},
    )
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        store.check()
    assert time.monotonic() - started < 10  # fails fast, not after minutes of retries
    message = str(raised.value)
    assert message.startswith("checkpoints: s3://bucket/ckpt: cannot connect to http://127.0.0.1:")
    assert "AWS_ENDPOINT_URL_S3" in message


def test_unknown_bucket_is_a_config_error(seaweed: Seaweed, tmp_path: Path) -> None:
    store = open_checkpoint_store(
        "s3://no-such-bucket/ckpt", tmp_path, storage_options=seaweed.options()
    )
    with pytest.raises(ConfigError, match=r"bucket 'no-such-bucket' does not exist .*aws s3 mb"):
        store.check()


def test_wrong_or_missing_credentials_are_config_errors(seaweed: Seaweed, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/ckpt"
    wrong = open_checkpoint_store(url, tmp_path, storage_options=seaweed.options(secret="nope"))
    with pytest.raises(ConfigError, match=r"access denied .*AWS_ACCESS_KEY_ID"):
        wrong.check()
    anonymous = open_checkpoint_store(
        url, tmp_path, storage_options={"anon": True, "endpoint_url": seaweed.endpoint}
    )
    with pytest.raises(ConfigError, match="access denied"):
        anonymous.check()
    good = open_checkpoint_store(url, tmp_path, storage_options=seaweed.options())
    good.check()
    left = good.fs.find(good.root, detail=True)
    assert [name for name, info in left.items() if info["type"] == "file"] == []  # probe gone


def test_urls_nobody_can_open(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a usable store URL"):
        open_checkpoint_store("nosuch://x/y", tmp_path)


def test_store_failure_mid_save_is_a_store_error(tmp_path: Path, seaweed: Seaweed) -> None:
    """Not a traceback from botocore: one ``CheckpointStoreError`` naming the checkpoint."""
    from stormproof.checkpoints import CheckpointStoreError

    store = open_checkpoint_store(
        "s3://no-such-bucket/ckpt", tmp_path, storage_options=seaweed.options()
    )
    with pytest.raises(CheckpointStoreError, match=r"cannot save checkpoint s3://no-such-bucket"):
        store.save("run", "task", 1, 1, make_source(tmp_path / "src"), 0.0)
