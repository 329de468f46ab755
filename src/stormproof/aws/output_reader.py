"""An AWS attempt's output as ``stormproof logs`` reads it: the objects its agent uploaded.

The agent (``agent_output``) puts ``<task>/<n>.stdout.log`` and ``.stderr.log`` beside the
attempt's status every ``aws.log_upload`` seconds. ``S3Output`` is the ``AttemptLogs`` of such
an attempt: a whole object for ``logs``; for ``logs -f`` one ``HeadObject`` per stream and
poll and, only when the stream grew, a ranged ``GetObject`` of what is new; for the
dashboard's log pane one ``GetObject`` of the object's last bytes (a suffix range).

An object is the stream whole, or (past the agent's bound) its head, a line saying how many
bytes were left out, and its tail; its metadata says which (``object_offset``). A
follower that has shown ``shown`` bytes of the stream reads from where they end in the
object, or, if the bytes after them were cut meanwhile, says how many and goes on with the
tail.

AWS's answers become one line each naming the bucket and the fix (``AwsError``): no
credentials, a bucket gone, access denied.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stormproof.aws.agent_output import META_BYTES, META_CUT, META_HEAD
from stormproof.aws.clients import Aws, AwsError, error_code, explain
from stormproof.aws.settings import AwsOptions
from stormproof.runtime.attempt_logs import Chunk

#: How often ``logs -f`` asks S3 whether a stream grew (the agent uploads every 30 s).
POLL_S = 2.0
_MISSING = ("NoSuchKey", "404", "NotFound")
_DENIED = ("AccessDenied", "403", "Forbidden", "AllAccessDisabled")
#: The object changed between the ``HeadObject`` and the ranged ``GetObject``: ask again.
_CHANGED = ("PreconditionFailed", "412", "InvalidRange", "416")


#: What the environment may say about the S3 client a reader needs: a client made under
#: other values is not reused.
_CLIENT_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def s3_client(region: str | None) -> Any:
    """An S3 client for ``region``, made once per region and environment: making one costs
    ~0.1 s, which a report reading the tails of 100 attempts (200 objects) or a dashboard
    showing log after log would otherwise pay for each. (boto3's clients are thread-safe;
    a session refreshes temporary credentials itself.)"""
    return _s3_client(region, tuple(os.environ.get(k) for k in _CLIENT_ENV))


@functools.lru_cache(maxsize=8)
def _s3_client(region: str | None, _env: tuple[str | None, ...]) -> Any:
    aws = Aws(region)
    aws.require_credentials()  # an error is not cached: the next reader asks again
    return aws.client("s3")


@dataclass(frozen=True)
class Layout:
    """Where a stream's bytes are in its object (the object's metadata and size)."""

    size: int
    total: int
    head: int
    cut: int

    @classmethod
    def of(cls, size: int, metadata: dict[str, str]) -> Layout:
        """An object without the agent's metadata is the stream whole."""
        try:
            total, head = int(metadata[META_BYTES]), int(metadata[META_HEAD])
            cut = int(metadata[META_CUT])
        except (KeyError, ValueError):
            return cls(size, size, size, 0)
        return cls(size, total, head, cut)


def object_offset(layout: Layout, shown: int) -> tuple[int | None, int]:
    """(where in the object the bytes after the first ``shown`` of the stream are, or None if
    there are none; how many of them were left out first)."""
    if shown >= layout.total:
        return None, 0
    if layout.cut == 0 or shown < layout.head:
        return shown, 0  # up to the head the object is the stream
    tail_from = layout.head + layout.cut  # the stream's byte the kept tail starts with
    if shown < tail_from:
        return layout.size - (layout.total - tail_from), tail_from - shown
    return layout.size - (layout.total - shown), 0


def left_out_line(stream: str, count: int) -> bytes:
    return (
        f"\n[stormproof: {count} bytes of {stream} were left out here (the agent keeps "
        "the first and the last part of a stream that outgrows its bound)]\n"
    ).encode()


@dataclass
class S3Output:
    """One AWS attempt's two streams in the run's bucket (an ``AttemptLogs``)."""

    options: AwsOptions
    run: str
    attempt_id: str
    s3: Any
    poll_s: float = POLL_S

    @classmethod
    def open(cls, options: AwsOptions, run: str, attempt_id: str) -> S3Output:
        if not options.bucket:
            raise AwsError(
                f"run {run!r} ran on AWS with no aws.bucket, so its attempts' output was not "
                "kept; set aws.bucket in stormproof.yaml for the next runs"
            )
        return cls(options, run, attempt_id, s3_client(options.region))

    def _where(self, stream: str) -> tuple[str, str]:
        where = self.options.log_location(self.run, self.attempt_id, stream)
        assert where is not None  # open() refuses a run without a bucket
        return where

    @property
    def where(self) -> str:
        return self.place("{stdout,stderr}")

    def place(self, stream: str) -> str:
        bucket, key = self._where(stream)
        return f"s3://{bucket}/{key}"

    def read(self, stream: str, shown: int) -> Chunk | None:
        bucket, key = self._where(stream)
        s3 = self.s3
        if shown == 0:  # all of it: one request
            got = self._ask(stream, lambda: s3.get_object(Bucket=bucket, Key=key))
            if got is None:
                return None
            layout = Layout.of(int(got["ContentLength"]), got.get("Metadata") or {})
            return Chunk(got["Body"].read(), layout.total)
        head = self._ask(stream, lambda: s3.head_object(Bucket=bucket, Key=key))
        if head is None:  # a HEAD's 404 says not whether the bucket is gone: a GET does
            self._ask(stream, lambda: s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-0"))
            return None
        layout = Layout.of(int(head["ContentLength"]), head.get("Metadata") or {})
        offset, left_out = object_offset(layout, shown)
        if offset is None:
            return Chunk(b"", shown)
        got = self._ask(
            stream,
            lambda: s3.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={offset}-", IfMatch=head["ETag"]
            ),
        )
        if got is None:  # replaced since the HeadObject: the next poll reads the new one
            return Chunk(b"", shown)
        note = left_out_line(stream, left_out) if left_out else b""
        return Chunk(note + got["Body"].read(), layout.total)

    def tail(self, stream: str, max_bytes: int) -> bytes:
        """The object's last ``max_bytes``: the stream's, as a cut object ends with the
        stream's tail (what is cut is in its middle)."""
        if max_bytes <= 0:
            return b""
        bucket, key = self._where(stream)
        got = self._ask(
            stream,
            lambda: self.s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{max_bytes}"),
        )
        if got is None:  # not uploaded (yet); an empty object has no range to satisfy either
            return b""
        data: bytes = got["Body"].read()
        return data[-max_bytes:]

    def _ask(self, stream: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """One S3 call's answer; ``None`` for an object not there (yet) or changed meanwhile."""
        try:
            return call()
        except Exception as exc:
            if error_code(exc) in (*_MISSING, *_CHANGED):
                return None
            raise self._explain(exc, stream) from None

    def _explain(self, exc: BaseException, stream: str) -> AwsError:
        code = error_code(exc)
        bucket = self.options.bucket
        url = self.place(stream)
        if code == "NoSuchBucket":
            return AwsError(
                f"bucket {bucket!r} does not exist, so the output of {self.attempt_id} "
                f"({url}) cannot be read: run {self.run!r} kept it there (aws.bucket); if the "
                "bucket was deleted its output is gone, else check the region "
                f"({self.options.region or 'AWS_REGION'}) and AWS_ENDPOINT_URL"
            )
        if code in _DENIED:
            return AwsError(
                f"not allowed to read {url} ({code}): give your user or role s3:GetObject and "
                f"s3:ListBucket on bucket {bucket!r} (the policy `stormproof aws policy` "
                "prints has them)"
            )
        return explain(exc, "GetObject", url)

    def missing(self, attempt: str, ended: bool) -> str | None:
        prefix = self.place("stdout").removesuffix(".stdout.log")
        if not ended:
            return (
                f"{attempt} has uploaded no output yet ({prefix}.stdout.log): the agent "
                f"uploads every {self.options.log_upload_s:g}s (aws.log_upload); try again "
                "or use -f"
            )
        return (
            f"{attempt} left no output in S3 ({prefix}.stdout.log): it ran before stormproof's "
            "agent kept AWS attempts' output, or ended before its first upload (an instance "
            "lost early); Batch's CloudWatch Logs or SSM's command output may have it"
        )
