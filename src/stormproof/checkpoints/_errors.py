"""Why a checkpoint store URL cannot be used, said so that the user can fix it.

``check()`` runs at plan/run start; whatever the backend raised (an
``OSError`` from the local disk, a botocore or aiohttp exception from S3)
becomes one sentence naming the URL, what went wrong and what to change. The
backend exception classes are matched by name so that this module does not
import botocore (it is only there when s3fs is).
"""

from __future__ import annotations

import errno
import os
from typing import Any
from urllib.parse import urlsplit

from fsspec import AbstractFileSystem  # type: ignore[import-untyped]  # fsspec ships no types
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

_FIX = "or set `checkpoints:` in stormproof.yaml to another location"
_NO_CONNECTION = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ReadTimeoutError",
}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}


def explain_unusable(url: str, fs: AbstractFileSystem, err: BaseException) -> str:
    """One message for a ``ConfigError``: the URL, the cause, the fix."""
    if isinstance(fs, LocalFileSystem):
        return _local(url, err)
    names = {cls.__name__ for cls in type(err).__mro__}
    bucket = urlsplit(url).netloc or url
    endpoint = _endpoint(fs)
    if names & _NO_CREDENTIALS:
        return (
            f"checkpoints: {url}: no credentials to reach it: set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the orchestrator's environment, {_FIX}"
        )
    if names & _NO_CONNECTION or _refused(err):
        return (
            f"checkpoints: {url}: cannot connect to {endpoint} ({_short(err)}): is the server "
            "running and is the address right? Set the endpoint with AWS_ENDPOINT_URL_S3 "
            f"(or AWS_ENDPOINT_URL), {_FIX}"
        )
    if isinstance(err, FileNotFoundError) or "NoSuchBucket" in str(err):
        return (
            f"checkpoints: {url}: bucket {bucket!r} does not exist at {endpoint}: create it "
            f"(e.g. `aws s3 mb s3://{bucket}`) {_FIX}"
        )
    if isinstance(err, PermissionError) or "AccessDenied" in str(err):
        return (
            f"checkpoints: {url}: access denied at {endpoint} ({_short(err)}): give the "
            "orchestrator credentials that may write there (AWS_ACCESS_KEY_ID / "
            f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE), {_FIX}"
        )
    return f"checkpoints: cannot write to {url} ({_short(err)}); fix the store {_FIX}"


def _local(url: str, err: BaseException) -> str:
    reason = getattr(err, "strerror", None) or _short(err)
    where = getattr(err, "filename", None) or url
    if isinstance(err, PermissionError):
        return (
            f"checkpoints: cannot write to {where} ({reason}): make the directory writable, {_FIX}"
        )
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"checkpoints: {where} is full ({reason}): free space there, {_FIX}"
    if isinstance(err, (NotADirectoryError, FileExistsError)):
        return f"checkpoints: {where} is not a directory ({reason}): {_FIX.removeprefix('or ')}"
    return f"checkpoints: cannot write to {where} ({reason}): {_FIX.removeprefix('or ')}"


#: A local store that cannot take a write now: full, over quota, failing, remounted read-only.
_DISK_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def store_unreachable(err: BaseException) -> bool:
    """Whether ``err`` says the store is gone or cannot take writes for now (the server down,
    the network cut, the disk full), rather than something wrong with one checkpoint: a run
    then stops and resumes later instead of losing the checkpoint or starting afresh."""
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & _NO_CONNECTION or _refused(err):
        return True
    cur: BaseException | None = err
    while cur is not None:
        if isinstance(cur, OSError) and cur.errno in _DISK_FAULTS:
            return True
        if {c.__name__ for c in type(cur).__mro__} & _NO_CONNECTION:
            return True
        # ``raise ... from None`` (a task's own file that could not be read) ends the chain
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return False


def _endpoint(fs: AbstractFileSystem) -> str:
    found: Any = getattr(fs, "endpoint_url", None)
    if not found:
        found = (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
    if not found:
        found = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return str(found) if found else "the default endpoint"


def _refused(err: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionError) or (
            isinstance(cur, OSError) and cur.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH)
        ):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
