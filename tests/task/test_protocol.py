"""The shared half of the commit protocol: names, atomic writes, markers, results, requests."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from stormproof.checkpoints import protocol
from stormproof.checkpoints.protocol import CommitResult


def test_file_names_are_the_documented_ones() -> None:
    # tasks in other languages hard-code these: they are an API
    assert protocol.COMMIT == ".commit"
    assert protocol.COMMIT_TMP == ".commit.tmp"
    assert protocol.RESULT == ".commit-result"
    assert protocol.REQUEST == ".checkpoint-request"
    assert protocol.ENV_CHECKPOINT_DIR == "STORMPROOF_CHECKPOINT_DIR"
    assert protocol.ENV_RESTORED == "STORMPROOF_RESTORED"
    assert protocol.ENV_CHECKPOINT_SEQ == "STORMPROOF_CHECKPOINT_SEQ"
    assert protocol.ENV_CHECKPOINT_SIGNAL == "STORMPROOF_CHECKPOINT_SIGNAL"


def test_write_atomic_replaces_through_a_tmp_file(tmp_path: Path) -> None:
    target = tmp_path / ".commit"
    protocol.write_atomic(target, "one")
    protocol.write_atomic(target, b"two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".commit"]


def test_write_atomic_never_shows_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / ".commit-result"
    big = [json.dumps({"ok": True, "seq": n, "pad": "x" * 200_000}) for n in range(2)]
    protocol.write_atomic(target, big[0])
    stop = threading.Event()
    seen: set[str] = set()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(40):
        protocol.write_atomic(target, big[n % 2])
    stop.set()
    reader.join()
    assert seen <= set(big)


@pytest.mark.parametrize(
    ("content", "meta"),
    [
        ("", {}),
        ("\n", {}),
        ('{"step": 1200}\n', {"step": 1200}),
        ("1200\n", {"text": "1200"}),  # an old script's bare step: still a commit
        ("[1, 2]", {"text": "[1, 2]"}),
        ("not json at all", {"text": "not json at all"}),
    ],
)
def test_pending_commit_reads_any_marker(tmp_path: Path, content: str, meta: object) -> None:
    (tmp_path / ".commit").write_text(content)
    assert protocol.pending_commit(tmp_path) == meta


def test_no_marker_no_pending_commit(tmp_path: Path) -> None:
    assert protocol.pending_commit(tmp_path) is None
    (tmp_path / ".commit.tmp").write_text("{}")  # half-written: not a commit yet
    assert protocol.pending_commit(tmp_path) is None


def test_a_huge_marker_is_truncated_not_read_whole(tmp_path: Path) -> None:
    (tmp_path / ".commit").write_text("x" * (protocol.MAX_META_BYTES * 4))
    meta = protocol.pending_commit(tmp_path)
    assert meta is not None and len(meta["text"]) == protocol.MAX_TEXT_META_CHARS


def test_encode_meta() -> None:
    assert protocol.encode_meta(None) == ""
    assert json.loads(protocol.encode_meta({"step": 3, "note": "é"})) == {"step": 3, "note": "é"}
    with pytest.raises(ValueError, match="JSON object"):
        protocol.encode_meta([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        protocol.encode_meta({"when": object()})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        protocol.encode_meta({"x": float("nan")})
    with pytest.raises(ValueError, match="limit"):
        protocol.encode_meta({"blob": "x" * protocol.MAX_META_BYTES})


def test_finish_commit_writes_the_result_before_removing_the_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".commit").write_text("")
    seen_at_unlink: list[bool] = []
    real_unlink = Path.unlink

    def spy(self: Path, missing_ok: bool = False) -> None:
        if self.name == ".commit":
            seen_at_unlink.append((self.parent / ".commit-result").exists())
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", spy)
    protocol.finish_commit(tmp_path, CommitResult.saved(7))
    assert seen_at_unlink == [True]
    assert not (tmp_path / ".commit").exists()
    assert json.loads((tmp_path / ".commit-result").read_text()) == {"ok": True, "seq": 7}
    assert protocol.read_result(tmp_path) == CommitResult(ok=True, seq=7)


def test_failed_result_round_trips(tmp_path: Path) -> None:
    protocol.finish_commit(tmp_path, CommitResult.failed("disk full"))
    assert json.loads((tmp_path / ".commit-result").read_text()) == {
        "ok": False,
        "error": "disk full",
    }
    assert protocol.read_result(tmp_path) == CommitResult(ok=False, error="disk full")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[]",
        '{"ok": "yes"}',
        '{"ok": true}',
        '{"ok": true, "seq": -1}',
        '{"ok": true, "seq": true}',
    ],
)
def test_an_unreadable_result_is_a_failure_that_says_so(tmp_path: Path, content: str) -> None:
    (tmp_path / ".commit-result").write_text(content)
    result = protocol.read_result(tmp_path)
    assert result is not None and not result.ok
    assert result.error is not None and "not a valid commit result" in result.error


def test_no_result_yet(tmp_path: Path) -> None:
    assert protocol.read_result(tmp_path) is None


def test_request_file(tmp_path: Path) -> None:
    assert not protocol.checkpoint_requested(tmp_path)
    protocol.request_checkpoint(tmp_path)
    assert protocol.checkpoint_requested(tmp_path)
    assert json.loads((tmp_path / ".checkpoint-request").read_text()) == {"reason": "interval"}
    protocol.clear_request(tmp_path)
    protocol.clear_request(tmp_path)  # twice: no error
    assert not protocol.checkpoint_requested(tmp_path)


def test_protocol_files_are_not_part_of_the_checkpoint(tmp_path: Path) -> None:
    for name in protocol.PROTOCOL_FILES:
        (tmp_path / name).write_text("x")
    assert protocol.checkpoint_files(tmp_path) == []
    assert not protocol.has_checkpoint_files(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".commit").write_text("mine")  # nested: the task's own file
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "empty-dir").mkdir()
    assert protocol.checkpoint_files(tmp_path) == ["state.json", "sub/.commit"]
    assert protocol.has_checkpoint_files(tmp_path)


def test_links_are_not_checkpoint_files(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    os.symlink(outside, ckpt / "dir-link")
    os.symlink(outside / "secret", ckpt / "file-link")
    assert protocol.checkpoint_files(ckpt) == []
    assert not protocol.has_checkpoint_files(ckpt)


@pytest.mark.parametrize("name", ["SIGUSR1", "USR1", "usr1", " SIGUSR2 ", "sighup"])
def test_parse_signal_accepts_names(name: str) -> None:
    assert protocol.parse_signal(name).name == "SIG" + name.strip().upper().removeprefix("SIG")


@pytest.mark.parametrize(("name", "words"), [
    ("SIGFOO", "unknown signal"), ("10", "unknown signal"), ("SIGKILL", "cannot be caught"),
    ("STOP", "cannot be caught"),
])  # fmt: skip
def test_parse_signal_refuses_the_rest(name: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        protocol.parse_signal(name)


def test_default_signal_is_sigusr1() -> None:
    assert protocol.DEFAULT_SIGNAL is signal.SIGUSR1
