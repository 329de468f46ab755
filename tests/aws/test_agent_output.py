"""The agent's copy of a stream: bounded to its head and tail, uploaded only when it grew.

The agent process itself (teeing a real command, uploading to the real S3 server) is in
``test_agent.py``; these hold the bound and the upload rule to their exact bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormproof.aws.agent_output import (
    META_BYTES,
    META_CUT,
    META_HEAD,
    BoundedLog,
    OutputUpload,
)


def test_a_stream_within_the_bound_is_kept_whole_and_the_head_is_on_disk(tmp_path: Path) -> None:
    log = BoundedLog("stdout", tmp_path / "stdout.log", max_bytes=100)
    log.write(b"hello\n")
    log.write(b"world\n")
    snap = log.snapshot()
    assert snap.body == b"hello\nworld\n" and (snap.total, snap.cut) == (12, 0)
    assert (tmp_path / "stdout.log").read_bytes() == b"hello\nworld\n"
    log.close()


def test_past_the_bound_the_first_and_last_halves_are_kept_with_a_line_for_the_cut(
    tmp_path: Path,
) -> None:
    log = BoundedLog("stderr", tmp_path / "stderr.log", max_bytes=20)
    stream = b"".join(f"{i:03d}\n".encode() for i in range(100))  # 400 bytes
    for start in range(0, len(stream), 7):  # in pieces that straddle the head's end
        log.write(stream[start : start + 7])
    snap = log.snapshot()
    head, rest = snap.body[:10], snap.body[10:]
    assert head == stream[:10]
    assert snap.body.endswith(stream[-10:])
    assert rest.startswith(b"\n[stormproof: 380 bytes of stderr left out here;")
    assert (snap.total, snap.head, snap.cut) == (400, 10, 380)
    assert snap.metadata() == {META_BYTES: "400", META_HEAD: "10", META_CUT: "380"}
    assert (tmp_path / "stderr.log").stat().st_size == 10  # the disk holds the head only
    log.close()


def test_only_streams_that_grew_are_uploaded_and_the_end_uploads_an_empty_one_once(
    tmp_path: Path,
) -> None:
    logs = {s: BoundedLog(s, tmp_path / f"{s}.log", 100) for s in ("stdout", "stderr")}
    puts: list[tuple[str, bytes]] = []
    upload = OutputUpload(
        logs,
        {"stdout": "k/1.stdout.log", "stderr": "k/1.stderr.log"},
        lambda key, body, meta: puts.append((key, body)),
    )
    upload.upload()
    assert puts == []  # nothing printed yet: no request
    logs["stdout"].write(b"a\n")
    upload.upload()
    upload.upload()  # no growth since: no second request
    assert puts == [("k/1.stdout.log", b"a\n")]
    upload.upload(final=True)  # stderr never printed: one empty object, so its absence means
    assert puts[1:] == [("k/1.stderr.log", b"")]
    assert upload.complete()
    for log in logs.values():
        log.close()


def test_a_failed_upload_is_said_once_and_tried_again_next_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = {"stdout": BoundedLog("stdout", tmp_path / "stdout.log", 100)}
    calls: list[str] = []

    def put(key: str, body: bytes, meta: dict[str, str]) -> None:
        calls.append(key)
        if len(calls) < 3:
            raise OSError("connection refused")

    upload = OutputUpload(logs, {"stdout": "k.stdout.log"}, put)
    logs["stdout"].write(b"x")
    upload.upload()
    upload.upload()
    assert not upload.complete()
    upload.upload()
    assert upload.complete() and len(calls) == 3
    err = capsys.readouterr().err
    assert err.count("could not upload the stdout to k.stdout.log") == 1
    logs["stdout"].close()
