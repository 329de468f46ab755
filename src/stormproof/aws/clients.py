"""boto3 clients with botocore's standard retry mode, and AWS's errors in users' words.

Every AWS call stormproof makes goes through a client from ``Aws.client``: standard retry
mode (exponential backoff with jitter on throttling and transient errors, up to
``MAX_ATTEMPTS`` tries), the region resolved once, ``AWS_ENDPOINT_URL`` and the usual
variables and files honoured by boto3 itself. Clients are named after their service
(``batch``, ``ec2`` …) wherever they are held, which is what ``tests/aws/test_iam.py``
reads to hold the generated IAM policy to the calls the code makes.

``AwsError`` (a ``StormproofError``: exit 2, one line, no traceback) is what a user sees
for credentials, region, permission, throttling and missing-resource problems; ``explain``
turns botocore's exceptions into it, naming the operation and the resource.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from stormproof.errors import ConfigError, StormproofError

#: Tries per call in botocore's standard retry mode (1 + 7 retries, jittered backoff).
MAX_ATTEMPTS = 8
EXTRA = "pip install 'stormproof[aws]'"


class AwsError(StormproofError):
    """An AWS call that cannot succeed as things are; the message says what to change."""


def boto3_module() -> Any:
    """boto3, or a ``ConfigError`` naming the extra that installs it."""
    try:
        import boto3
    except ImportError:
        raise ConfigError(f"the AWS backends need boto3, which is not installed: {EXTRA}") from None
    return boto3


@dataclass
class Aws:
    """One boto3 session for one region, and its clients (created on first use)."""

    region: str | None = None
    _session: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        boto3 = boto3_module()
        self._session = boto3.session.Session(region_name=self.region)
        if self._session.region_name is None:
            raise ConfigError(
                "no AWS region: set aws.region in stormproof.yaml, or AWS_REGION in the "
                "environment (or a region in your AWS profile)"
            )
        self.region = self._session.region_name
        known = self._session.get_available_regions("batch")
        if known and self.region not in known:
            close = difflib.get_close_matches(self.region or "", known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"AWS region {self.region!r} does not exist{hint}; set aws.region or AWS_REGION "
                f"to one of {', '.join(sorted(known)[:6])}, …"
            )

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                connect_timeout=10,
                read_timeout=60,
                user_agent_extra="stormproof",
                max_pool_connections=32,
            )
            self._clients[service] = self._session.client(service, config=config)
        return self._clients[service]

    def pricing_client(self) -> Any:
        """The pricing API, which answers from us-east-1 only (for every region's prices)."""
        if "pricing" not in self._clients:
            from botocore.config import Config

            from stormproof.aws.prices import PRICING_REGION

            retries = {"mode": "standard", "total_max_attempts": 3}
            config = Config(retries=retries, connect_timeout=5, read_timeout=15)
            self._clients["pricing"] = self._session.client(
                "pricing", region_name=PRICING_REGION, config=config
            )
        return self._clients["pricing"]

    def has_credentials(self) -> bool:
        return self._session.get_credentials() is not None

    def require_credentials(self) -> None:
        if not self.has_credentials():
            raise AwsError(_NO_CREDENTIALS)


_NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
    "(after `aws configure` or `aws sso login`); `stormproof aws doctor` checks them"
)
_BAD_CREDENTIALS = (
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
    "InvalidAccessKeyId",
)
_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden")
_THROTTLED = (
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
)


def _tries(exc: BaseException) -> int:
    """How many times botocore tried the call (its retries and the first)."""
    response = getattr(exc, "response", None) or {}
    retries = response.get("ResponseMetadata", {}).get("RetryAttempts")
    return int(retries) + 1 if retries is not None else MAX_ATTEMPTS


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_throttled(exc: BaseException) -> bool:
    return error_code(exc) in _THROTTLED


def explain(exc: BaseException, operation: str, resource: str) -> AwsError:
    """A botocore exception as one line naming the call, the resource and the fix."""
    code = error_code(exc)
    what = f"{operation} on {resource}" if resource else operation
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return AwsError(f"{what}: {_NO_CREDENTIALS}")
    if name == "NoRegionError":
        return AwsError(f"{what}: no AWS region: set aws.region in stormproof.yaml or AWS_REGION")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        return AwsError(
            f"{what}: cannot reach AWS ({exc}); check the network, aws.region, and "
            "AWS_ENDPOINT_URL if you set it"
        )
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")) or str(exc)
    if code in _BAD_CREDENTIALS:
        return AwsError(
            f"{what}: AWS refused the credentials ({code}: {message}); renew them "
            "(`aws sso login`, new keys) and check with `stormproof aws doctor`"
        )
    if code in _DENIED:
        return AwsError(
            f"{what}: not allowed ({code}: {message}); attach the policy that "
            "`stormproof aws policy` prints to your user or role"
        )
    if code in _THROTTLED:
        return AwsError(
            f"{what}: AWS still throttled the call after {_tries(exc)} tries with backoff "
            f"({code}); raise aws.poll_interval or lower aws.submit_parallel, or ask AWS for "
            "a higher rate limit"
        )
    return AwsError(f"{what}: {code or name}: {message}")
