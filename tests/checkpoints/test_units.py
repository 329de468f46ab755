"""The pure parts: manifest checks, path safety, prune rules, and the copy engine's fallback."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from stormproof.checkpoints import _copy
from stormproof.checkpoints.base import (
    MAX_SEQ,
    CheckpointError,
    CheckpointInfo,
    Manifest,
    ManifestFile,
    check_name,
    check_seq,
    parse_manifest,
    parse_seq_dir,
    safe_relpath,
    seq_dir_name,
    seqs_to_prune,
)

SHA = "0" * 64


def manifest(**change: Any) -> bytes:
    data: dict[str, Any] = {
        "version": 1,
        "run": "r",
        "task": "t",
        "attempt": 2,
        "seq": 5,
        "created_at": 10.5,
        "files": [{"path": "a/b.bin", "size": 3, "sha256": SHA}],
        "total_bytes": 3,
    }
    data.update(change)
    return json.dumps(data).encode()


def test_a_good_manifest_round_trips() -> None:
    m = parse_manifest(manifest(), "r", "t", 5)
    assert m == Manifest("r", "t", 2, 5, 10.5, (ManifestFile("a/b.bin", 3, SHA),))
    assert parse_manifest(m.dumps(), "r", "t", 5) == m


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{", "manifest is not valid JSON"),
        (b"[]", "manifest is not a JSON object"),
        (manifest(version=2), "manifest version 2 is not 1"),
        (manifest(task="other"), "manifest says task 'other', it is stored as 't'"),
        (manifest(attempt=True), "manifest attempt True is not a whole number"),
        (manifest(created_at="now"), "manifest created_at 'now' is not a time"),
        (manifest(files=[]), "manifest lists no files"),
        (manifest(files=[7]), "manifest files[0] is not an object"),
        (manifest(files=[{"path": "../x", "size": 1, "sha256": SHA}]), "unsafe path '../x'"),
        (manifest(files=[{"path": "/etc/passwd", "size": 1, "sha256": SHA}]), "unsafe path"),
        (manifest(files=[{"path": "MANIFEST.json", "size": 1, "sha256": SHA}]), "unsafe path"),
        (manifest(files=[{"path": "a", "size": -1, "sha256": SHA}]), "bad size -1"),
        (manifest(files=[{"path": "a", "size": 1, "sha256": "xyz"}]), "bad sha256 'xyz'"),
        (
            manifest(files=[{"path": "a", "size": 1, "sha256": SHA}] * 2, total_bytes=2),
            "manifest lists 'a' twice",
        ),
        (manifest(total_bytes=4), "total_bytes 4 is not the sum of its file sizes"),
    ],
)
def test_bad_manifests_say_why(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_manifest(raw, "r", "t", 5)
    message = str(caught.value)
    assert message.startswith("manifest ") and problem in message, message


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("a", True),
        ("a/b/c.txt", True),
        (".hidden/x", True),
        ("", False),
        ("/a", False),
        ("a/../b", False),
        ("./a", False),
        ("a//b", False),
        ("a/", False),
        ("a\\b", False),
        ("a\x00b", False),
    ],
)
def test_safe_relpath(path: str, safe: bool) -> None:
    assert (safe_relpath(path) == path) is safe


def info(seq: int, state: str) -> CheckpointInfo:
    return CheckpointInfo("r", "t", seq, "warm", state, None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("states", "keep", "doomed"),
    [
        ({1: "ok", 2: "ok", 3: "ok"}, 2, [1]),
        ({1: "ok", 2: "ok", 3: "ok"}, 0, [1, 2, 3]),
        ({1: "ok", 2: "ok"}, 5, []),
        # an incomplete one newer than every complete one may be a save in progress: kept
        ({1: "ok", 2: "ok", 3: "incomplete"}, 1, [1]),
        ({1: "ok", 2: "incomplete", 3: "ok"}, 1, [1, 2]),
        ({1: "invalid", 2: "ok"}, 1, [1]),
        ({1: "ok", 2: "damaged", 3: "ok"}, 2, [1]),  # damaged is found at restore, not here
        ({1: "incomplete"}, 0, []),
    ],
)
def test_prune_rules(states: dict[int, str], keep: int, doomed: list[int]) -> None:
    assert seqs_to_prune([info(s, st) for s, st in states.items()], keep) == doomed


def test_keeping_fewer_than_none_is_refused_with_the_number() -> None:
    with pytest.raises(CheckpointError, match=r"^keep_last must be 0 or more, got -1$"):
        seqs_to_prune([info(1, "ok")], -1)


@pytest.mark.parametrize(
    ("name", "seq"),
    [("00000007", 7), ("00000000", 0), ("7", None), ("0000000x", None), ("notes", None)],
)
def test_only_seq_directories_name_checkpoints(name: str, seq: int | None) -> None:
    """A stray file or folder beside the checkpoints (a README, an editor's backup) is not
    one of them, and must not break a listing."""
    assert parse_seq_dir(name) == seq


def test_copy_falls_back_to_a_buffer_when_copy_file_range_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(_copy.os, "copy_file_range", refuse)
    data = os.urandom(3 * _copy.CHUNK_BYTES + 123)
    (tmp_path / "src").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    with _copy.HashBehindCopier() as copier:
        big = copier.copy(tmp_path / "src", tmp_path / "dst")
        empty = copier.copy(tmp_path / "empty", tmp_path / "dst-empty")
    assert big.result() == _copy.Digest(len(data), hashlib.sha256(data).hexdigest())
    assert empty.result() == _copy.Digest(0, hashlib.sha256(b"").hexdigest())
    assert (tmp_path / "dst").read_bytes() == data


def test_durable_copies_start_the_disk_write_of_every_range_they_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * _copy.CHUNK_BYTES + 4567)
    (tmp_path / "src").write_bytes(data)
    with _copy.HashBehindCopier(writeback=True) as copier:  # the real sync_file_range
        real = copier.copy(tmp_path / "src", tmp_path / "real")
    assert real.result() == _copy.Digest(len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "real").read_bytes() == data

    started: list[tuple[int, int]] = []
    monkeypatch.setattr(_copy, "_start_writeback", lambda fd, off, n: started.append((off, n)))
    with _copy.HashBehindCopier(writeback=True) as copier:
        copier.copy(tmp_path / "src", tmp_path / "dst").result()
    with _copy.HashBehindCopier() as copier:  # not durable: no writeback asked for
        copier.copy(tmp_path / "src", tmp_path / "plain").result()
    ends = [0] + [off + n for off, n in started]
    assert [off for off, _ in started] == ends[:-1]  # contiguous, in order
    assert ends[-1] == len(data)  # ... and up to the end: nothing left for the final sync


def test_copy_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    fd = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    os.close(fd)
    with pytest.raises(_copy.NotRegularFile), _copy.HashBehindCopier() as copier:
        copier.copy(tmp_path / "fifo", tmp_path / "out")


def test_stream_copy_hashes_what_it_writes(tmp_path: Path) -> None:
    data = os.urandom(_copy.CHUNK_BYTES + 7)
    (tmp_path / "src").write_bytes(data)
    written = bytearray()
    with open(tmp_path / "src", "rb") as f:
        digest = _copy.stream_copy(f.read, written.extend)
    assert bytes(written) == data
    assert digest == _copy.hash_local_file(tmp_path / "src")


def test_only_the_protocols_own_files_are_left_out_of_a_checkpoint(tmp_path: Path) -> None:
    from stormproof.checkpoints.open import local_store

    src = tmp_path / "ckpt"
    src.mkdir()
    for name in (".commit", ".commit-result", ".checkpoint-request"):  # the protocol's
        (src / name).write_text("{}")
    (src / ".commit_log").write_text("mine\n")  # the task's, despite the prefix
    (src / "state.bin").write_bytes(b"x" * 10)
    manifest = local_store(tmp_path / "store").save("r", "t", 1, 1, src, 0.0)
    assert sorted(f.path for f in manifest.files) == [".commit_log", "state.bin"]


@pytest.mark.parametrize("seq", [0, 1, MAX_SEQ])
def test_every_seq_from_0_to_the_largest_names_a_checkpoint(seq: int) -> None:
    assert check_seq(seq) == seq
    assert parse_seq_dir(seq_dir_name(seq)) == seq


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1, True, 2.0, "3"])
def test_other_seqs_are_refused_saying_what_a_seq_is(seq: object) -> None:
    with pytest.raises(CheckpointError) as caught:
        check_seq(seq)  # type: ignore[arg-type]
    assert str(caught.value) == (f"checkpoint sequence {seq!r} must be a whole number 0-{MAX_SEQ}")


@pytest.mark.parametrize("name", ["", "-x", "a/b", "..", "a" * 129, 7])
def test_names_that_are_not_path_components_are_refused_with_the_rule(name: object) -> None:
    with pytest.raises(CheckpointError) as caught:
        check_name("task", name)  # type: ignore[arg-type]
    assert str(caught.value).endswith(
        "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )


def test_attempt_0_is_a_whole_number_and_a_bad_time_is_named() -> None:
    assert parse_manifest(manifest(attempt=0), "r", "t", 5).attempt == 0
    with pytest.raises(ValueError, match=r"^manifest created_at 'now' is not a time$"):
        parse_manifest(manifest(created_at="now"), "r", "t", 5)
