"""Reading an AWS attempt's output from S3 as ``stormproof logs`` does: the real S3 server
(SeaweedFS), objects put by the agent's own upload code, and S3's real refusals (a bucket
that does not exist, an identity that may not read, no credentials at all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from stormproof.aws.agent_output import BoundedLog, OutputUpload
from stormproof.aws.clients import AwsError
from stormproof.aws.output_reader import Layout, S3Output, left_out_line, object_offset
from stormproof.aws.settings import AwsOptions
from stormproof.runtime.attempt_logs import Chunk, attempt_logs
from stormproof.runtime.home import Home
from tests.checkpoints._seaweed import BUCKET, KEY, SECRET, Seaweed

from .fixtures import WRITER_KEY, WRITER_SECRET

RUN, ATTEMPT = "rd", "talk/1"


def s3_env(monkeypatch: pytest.MonkeyPatch, server: Seaweed, key: str, secret: str) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def reader(bucket: str = BUCKET, attempt: str = ATTEMPT) -> S3Output:
    return S3Output.open(AwsOptions(bucket=bucket, region="us-east-1"), RUN, attempt)


def uploader(
    tmp_path: Path, server: Seaweed, max_bytes: int, attempt: str = ATTEMPT
) -> tuple[BoundedLog, OutputUpload]:
    """The agent's own log and upload of ``attempt``'s stdout, into ``server``'s bucket (which
    outlives the test: each test has its own attempt)."""
    s3: Any = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.env()["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server.env()["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    key = AwsOptions(bucket=BUCKET).log_location(RUN, attempt, "stdout")
    assert key is not None
    log = BoundedLog("stdout", tmp_path / "stdout.log", max_bytes)

    def put(k: str, body: bytes, meta: dict[str, str]) -> None:
        s3.put_object(Bucket=BUCKET, Key=k, Body=body, Metadata=meta)

    return log, OutputUpload({"stdout": log}, {"stdout": key[1]}, put)


def test_where_the_unshown_bytes_are_in_an_object_whole_or_cut() -> None:
    whole = Layout(size=50, total=50, head=50, cut=0)
    assert object_offset(whole, 20) == (20, 0)
    assert object_offset(whole, 50) == (None, 0)
    cut = Layout(size=80, total=1000, head=30, cut=930)  # 30 head, 40-byte line, 40 tail
    assert object_offset(cut, 10) == (10, 0)  # the rest of the head, the line, the tail
    assert object_offset(cut, 500) == (40, 460)  # 460 bytes gone since: the whole tail
    assert object_offset(cut, 980) == (60, 0)  # inside the tail: only what is new
    assert object_offset(cut, 1000) == (None, 0)
    assert Layout.of(12, {}) == Layout(12, 12, 12, 0)  # no metadata: the stream whole


def test_following_reads_only_what_is_new_and_says_what_a_cut_skipped(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env(monkeypatch, seaweed, KEY, SECRET)
    log, upload = uploader(tmp_path, seaweed, max_bytes=20)
    logs = reader()
    assert logs.read("stdout", 0) is None  # nothing uploaded yet
    stream = bytes(range(65, 91)) * 5  # 130 bytes: A..Z five times
    log.write(stream[:8])
    upload.upload()
    first = logs.read("stdout", 0)
    assert first is not None and (first.data, first.shown) == (stream[:8], 8)
    assert logs.read("stdout", 8) == Chunk(b"", 8)  # no growth: nothing
    log.write(stream[8:12])
    upload.upload()
    assert logs.read("stdout", 8) == Chunk(stream[8:12], 12)  # only the new bytes
    log.write(stream[12:112])  # past the bound: the object is now head, line, tail
    upload.upload()
    cut = logs.read("stdout", 12)
    assert cut is not None and cut.shown == 112
    assert cut.data == left_out_line("stdout", 90) + stream[102:112]
    log.write(stream[112:115])
    upload.upload()
    assert logs.read("stdout", 112) == Chunk(stream[112:115], 115)
    whole = logs.read("stdout", 0)
    assert whole is not None and whole.data.startswith(stream[:10] + b"\n[stormproof: 95 bytes")
    log.close()


def test_the_tail_is_the_objects_last_bytes_which_are_the_streams_even_when_cut(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env(monkeypatch, seaweed, KEY, SECRET)
    log, upload = uploader(tmp_path, seaweed, max_bytes=20, attempt="tail/1")
    logs = reader(attempt="tail/1")
    assert logs.tail("stdout", 8) == b""  # nothing uploaded yet
    stream = bytes(range(65, 91)) * 5  # 130 bytes: A..Z five times
    log.write(stream[:6])
    upload.upload()
    assert logs.tail("stdout", 8) == stream[:6]  # shorter than asked: all of it
    log.write(stream[6:12])
    upload.upload()
    assert logs.tail("stdout", 8) == stream[4:12]  # longer: only the last 8 bytes
    log.write(stream[12:])  # past the bound: head, the cut line, tail
    upload.upload()
    assert logs.tail("stdout", 8) == stream[-8:]
    assert logs.tail("stdout", 0) == b""
    log.close()


def test_a_bucket_that_does_not_exist_is_named_with_the_fix(
    seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env(monkeypatch, seaweed, KEY, SECRET)
    logs = reader("gone-bucket")
    for shown in (0, 5):  # a whole read, and a follower's HeadObject (whose 404 says less)
        with pytest.raises(AwsError, match="bucket 'gone-bucket' does not exist, so the output"):
            logs.read("stdout", shown)
    with pytest.raises(AwsError, match="bucket 'gone-bucket' does not exist, so the output"):
        logs.tail("stdout", 100)


def test_an_identity_that_may_not_read_is_told_which_permission_on_which_bucket(
    locked_seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env(monkeypatch, locked_seaweed, WRITER_KEY, WRITER_SECRET)
    logs = reader()
    reads = (
        lambda: logs.read("stdout", 0),
        lambda: logs.read("stdout", 5),
        lambda: logs.tail("stdout", 100),
    )
    for read in reads:
        with pytest.raises(AwsError) as caught:
            read()
        assert str(caught.value).startswith(f"not allowed to read s3://{BUCKET}/stormproof/")
        assert f"s3:GetObject and s3:ListBucket on bucket {BUCKET!r}" in str(caught.value)


def test_no_credentials_is_said_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AwsError, match=r"^no AWS credentials found"):
        reader()


def test_a_run_without_a_bucket_kept_nothing_and_says_so() -> None:
    with pytest.raises(AwsError, match=r"ran on AWS with no aws\.bucket"):
        S3Output.open(AwsOptions(bucket=None), RUN, ATTEMPT)


def test_a_run_on_aws_has_its_attempts_output_read_from_its_bucket(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env(monkeypatch, seaweed, KEY, SECRET)
    options = {"bucket": BUCKET, "region": "us-east-1", "log_upload_s": 7.0}
    for executor in ("ssm", "aws_batch"):
        meta = {"executor": executor, "executor_options": options}
        logs = attempt_logs(Home(tmp_path / ".stormproof"), RUN, meta, "talk", 1)
        assert isinstance(logs, S3Output)
        assert logs.place("stdout") == reader().place("stdout")
        assert logs.options.log_upload_s == 7.0


def test_readers_share_one_client_per_region_and_environment(monkeypatch: Any) -> None:
    """A report reads up to 200 objects, a dashboard log after log: a client costs ~0.1 s."""
    from stormproof.aws.output_reader import s3_client

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(AwsError, match="no AWS credentials found"):
        s3_client("eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "one")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    first = s3_client("eu-west-1")  # the refusal above was not kept
    assert s3_client("eu-west-1") is first
    assert s3_client("eu-central-1") is not first
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "two")  # other credentials: another client
    assert s3_client("eu-west-1") is not first
