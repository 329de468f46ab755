"""``stormproof.task`` against a stand-in runtime: commit, wait, fail, time out, requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stormproof import task
from stormproof.checkpoints import protocol

from .conftest import FakeRuntime


def write_state(directory: Path, step: int) -> None:
    (directory / "state.json").write_text(json.dumps({"step": step}))


# --- commit ---------------------------------------------------------------------------------


def test_commit_waits_for_the_save_and_returns_its_seq(ckpt: Path, runtime: FakeRuntime) -> None:
    write_state(ckpt, 100)
    assert task.commit({"step": 100}) == 1
    # the runtime has answered and the marker is gone: the task may write again
    assert not (ckpt / ".commit").exists()
    assert runtime.saved[0].meta == {"step": 100}
    assert runtime.saved[0].files == {"state.json": b'{"step": 100}'}
    write_state(ckpt, 200)
    assert task.commit() == 2
    assert runtime.saved[1].meta == {}
    assert runtime.saved[1].files == {"state.json": b'{"step": 200}'}


def test_the_marker_is_json_metadata_written_through_a_tmp_file(
    ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_state(ckpt, 5)
    assert task.commit({"step": 5}, wait=False) is None
    assert renames == [(".commit.tmp", ".commit")]
    assert json.loads((ckpt / ".commit").read_text()) == {"step": 5}


def test_no_wait_returns_at_once_and_the_runtime_saves_later(ckpt: Path) -> None:
    write_state(ckpt, 1)
    started = time.monotonic()
    assert task.commit(wait=False) is None
    assert time.monotonic() - started < 1
    assert protocol.pending_commit(ckpt) == {}
    fake = FakeRuntime(ckpt).start()
    try:
        deadline = time.monotonic() + 10
        while (ckpt / ".commit").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert protocol.read_result(ckpt) == protocol.CommitResult.saved(1)
    finally:
        fake.stop()


def test_a_commit_after_a_no_wait_one_waits_for_it_first(ckpt: Path) -> None:
    write_state(ckpt, 1)
    task.commit({"step": 1}, wait=False)
    fake = FakeRuntime(ckpt, save_s=0.2)
    threading.Timer(0.3, fake.start).start()  # the runtime notices late
    try:
        assert task.commit({"step": 1, "again": True}, timeout_s=10) == 2
        assert [s.meta for s in fake.saved] == [{"step": 1}, {"step": 1, "again": True}]
    finally:
        fake.stop()


def test_a_failed_save_raises_with_the_runtimes_error(ckpt: Path, runtime: FakeRuntime) -> None:
    runtime.fail = "s3://bucket/ckpt: access denied"
    write_state(ckpt, 1)
    with pytest.raises(task.CheckpointCommitFailed, match="access denied") as err:
        task.commit()
    assert not isinstance(err.value, task.CheckpointCommitTimeout)
    assert err.value.exit_code == 1
    runtime.fail = None  # the task may carry on and try again
    assert task.commit() == 1


def test_no_answer_times_out_and_leaves_the_marker(ckpt: Path) -> None:
    write_state(ckpt, 1)
    started = time.monotonic()
    with pytest.raises(task.CheckpointCommitTimeout, match=r"not saved within 0\.3s") as err:
        task.commit({"step": 1}, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert "is this task run by stormproof" in str(err.value)
    assert protocol.pending_commit(ckpt) == {"step": 1}  # a slow save may still finish


def test_a_marker_removed_without_a_result_is_a_failure(
    ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task, "_RESULT_GRACE_S", 0.2)
    write_state(ckpt, 1)

    def vandal() -> None:
        while not (ckpt / ".commit").exists():
            time.sleep(0.005)
        (ckpt / ".commit").unlink()

    thread = threading.Thread(target=vandal)
    thread.start()
    with pytest.raises(task.CheckpointCommitFailed, match=r"no \.commit-result"):
        task.commit(timeout_s=10)
    thread.join()


def test_a_result_written_after_the_marker_goes_is_still_read(ckpt: Path) -> None:
    # a runtime doing it in the "wrong" order (remove, then write) still works
    write_state(ckpt, 1)

    def backwards() -> None:
        while not (ckpt / ".commit").exists():
            time.sleep(0.005)
        (ckpt / ".commit").unlink()
        time.sleep(0.1)
        protocol.write_atomic(ckpt / ".commit-result", '{"ok": true, "seq": 9}')

    thread = threading.Thread(target=backwards)
    thread.start()
    assert task.commit(timeout_s=10) == 9
    thread.join()


def test_a_stale_result_is_never_taken_for_the_new_commit(ckpt: Path) -> None:
    protocol.write_atomic(ckpt / ".commit-result", '{"ok": true, "seq": 1}')
    write_state(ckpt, 2)
    task.commit(wait=False)
    assert not (ckpt / ".commit-result").exists()


# --- bad usage ------------------------------------------------------------------------------


def test_outside_a_checkpointed_attempt_it_says_so() -> None:
    with pytest.raises(task.CheckpointUsageError, match="STORMPROOF_CHECKPOINT_DIR is not set"):
        task.commit()
    with pytest.raises(task.CheckpointUsageError, match="checkpoint_enabled: true"):
        task.checkpoint_dir()


def test_a_missing_checkpoint_dir_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMPROOF_CHECKPOINT_DIR", str(tmp_path / "nope"))
    with pytest.raises(task.CheckpointUsageError, match=r"nope does not exist"):
        task.commit()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("STORMPROOF_CHECKPOINT_DIR", str(tmp_path / "file"))
    with pytest.raises(task.CheckpointUsageError, match="is not a directory"):
        task.checkpoint_dir()


def test_an_empty_checkpoint_is_refused(ckpt: Path) -> None:
    (ckpt / ".checkpoint-request").write_text("{}")  # protocol files do not count
    (ckpt / "sub").mkdir()
    with pytest.raises(task.CheckpointUsageError, match="nothing to commit"):
        task.commit()
    assert not (ckpt / ".commit").exists()


def test_bad_metadata_and_timeout_are_usage_errors(ckpt: Path) -> None:
    write_state(ckpt, 1)
    with pytest.raises(task.CheckpointUsageError, match="JSON object"):
        task.commit("step 1")  # type: ignore[call-overload]
    with pytest.raises(task.CheckpointUsageError, match="timeout"):
        task.commit(timeout_s=0)
    with pytest.raises(task.CheckpointUsageError, match="timeout"):
        task.commit(timeout_s=float("nan"))
    assert not (ckpt / ".commit").exists()


def test_usage_errors_are_stormproof_errors_that_exit_2() -> None:
    from stormproof.errors import StormproofError

    assert issubclass(task.CheckpointUsageError, StormproofError)
    assert task.CheckpointUsageError.exit_code == 2
    assert not issubclass(task.CheckpointCommitFailed, StormproofError)


# --- restored -------------------------------------------------------------------------------


def test_restored_and_its_seq(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not task.restored()
    assert task.restored_seq() is None
    monkeypatch.setenv("STORMPROOF_RESTORED", "0")
    monkeypatch.setenv("STORMPROOF_CHECKPOINT_SEQ", "3")
    assert not task.restored()
    assert task.restored_seq() is None  # a seq without a restore means nothing
    monkeypatch.setenv("STORMPROOF_RESTORED", "1")
    assert task.restored()
    assert task.restored_seq() == 3
    monkeypatch.setenv("STORMPROOF_CHECKPOINT_SEQ", "three")
    assert task.restored_seq() is None


# --- requests -------------------------------------------------------------------------------


def test_the_signal_handler_only_sets_the_flag(ckpt: Path) -> None:
    calls: list[str] = []
    assert task.on_checkpoint_request(lambda: calls.append("cb")) is signal.SIGUSR1
    assert not task.checkpoint_requested()
    os.kill(os.getpid(), signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not task.checkpoint_requested() and time.monotonic() < deadline:
        time.sleep(0.001)  # the handler runs in the main thread between bytecodes
    assert task.checkpoint_requested()
    assert calls == ["cb"]
    assert list(ckpt.iterdir()) == []  # no I/O in the handler
    write_state(ckpt, 1)
    task.commit(wait=False)  # a commit answers the request
    assert not task.checkpoint_requested()


def test_the_configured_signal_is_handled(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMPROOF_CHECKPOINT_SIGNAL", "SIGUSR2")
    assert task.on_checkpoint_request() is signal.SIGUSR2
    os.kill(os.getpid(), signal.SIGUSR2)
    deadline = time.monotonic() + 5
    while not task.checkpoint_requested() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert task.checkpoint_requested()


def test_checkpoint_signal_none_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMPROOF_CHECKPOINT_SIGNAL", "none")
    before = signal.getsignal(signal.SIGUSR1)
    assert task.checkpoint_signal() is None
    assert task.on_checkpoint_request() is None
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_bad_signal_name_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMPROOF_CHECKPOINT_SIGNAL", "SIGKILL")
    with pytest.raises(task.CheckpointUsageError, match="STORMPROOF_CHECKPOINT_SIGNAL"):
        task.on_checkpoint_request()


def test_the_handler_needs_the_main_thread() -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            task.on_checkpoint_request()
        except task.CheckpointUsageError as e:
            errors.append(e)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_the_request_file_is_a_request_until_the_commit(ckpt: Path, runtime: FakeRuntime) -> None:
    assert not task.checkpoint_requested()
    protocol.request_checkpoint(ckpt)
    assert task.checkpoint_requested()
    write_state(ckpt, 1)
    assert task.commit() == 1
    assert not task.checkpoint_requested()
    assert not (ckpt / ".checkpoint-request").exists()
    assert ".checkpoint-request" not in runtime.saved[0].files


def test_checkpoint_requested_outside_an_attempt_is_just_false() -> None:
    assert task.checkpoint_requested() is False


# --- import cost ----------------------------------------------------------------------------


def test_importing_stormproof_task_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, stormproof.task\n"
        "heavy = [m for m in ('pydantic', 'rich', 'click', 'yaml', 'fsspec', 'sqlite3')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
