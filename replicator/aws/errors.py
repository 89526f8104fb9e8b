"""Sorting AWS errors by what the replicator must do about them.

* THROTTLED / RETRY: the request may succeed later (throttling, 5xx, a dropped
  connection, an expired token about to be refreshed). Retried without a time limit:
  lag grows, nothing is dropped.
* CONDITION_FAILED: the destination holds a newer item; a normal outcome.
* REJECTED: this change can never be applied as it is (validation, item too large,
  a key of the wrong type). It goes to the dead letters and the shard moves on.
* DENIED / NOT_FOUND: access denied, or the table is missing. One item may be denied
  by a fine-grained policy (dead-letter it); a whole destination that keeps refusing
  stops the worker.
* AUTH: the request's signature or credentials were not accepted (an expired
  signature from a skewed clock, an unknown access key). That is never a property of
  one change, so it is never dead-lettered: retried, and when it persists the worker
  stops with a message that names the cause.
"""

from __future__ import annotations

import re
from enum import StrEnum

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)


class ErrorKind(StrEnum):
    THROTTLED = "throttled"
    RETRY = "retry"
    CONDITION_FAILED = "condition_failed"
    REJECTED = "rejected"
    DENIED = "denied"
    NOT_FOUND = "not_found"
    AUTH = "auth"


_THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "RequestThrottled",
    }
)
_TRANSIENT = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionConflictException",
        "TransactionInProgressException",
        "ExpiredTokenException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        # Multi-Region strong consistency: another Region is writing the same item.
        "ReplicatedWriteConflictException",
        # Endpoint discovery: the cached endpoint moved; the next attempt resolves again.
        "InvalidEndpointException",
    }
)
# Signature and clock problems: the request was not looked at, whatever it held.
CLOCK_SKEW = frozenset(
    {
        "InvalidSignatureException",
        "RequestTimeTooSkewed",
        "RequestExpired",
        "RequestInTheFuture",
        "SignatureDoesNotMatch",
    }
)
_AUTH = CLOCK_SKEW | frozenset(
    {
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "MissingAuthenticationToken",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "AuthFailure",
    }
)
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)


# The most of an error page (HTML or XML) a one-line message quotes.
EXCERPT_CHARS = 200
_MARKUP = re.compile(r"<[^>]*>")


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` fit for a one-line message: every run of whitespace and newlines one
    space; an HTML or XML body (a proxy's or a web server's error page where an AWS
    endpoint was meant) also without its tags and cut at ``limit`` characters. AWS's own
    messages are kept whole: a dead letter's error is the reason an operator reads, and
    DynamoDB names the offending attribute at the end of a long message."""
    if not text.lstrip().startswith("<"):
        return " ".join(text.split())
    text = " ".join(_MARKUP.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_message(error: ClientError) -> str:
    """The server's message of ``error``, as :func:`excerpt` makes it fit one line."""
    return excerpt(str(error.response.get("Error", {}).get("Message", "")))


def error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__


def classify(error: BaseException) -> ErrorKind:
    if isinstance(error, ClientError):
        code = error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ConditionalCheckFailedException":
            return ErrorKind.CONDITION_FAILED
        if code in _THROTTLING:
            return ErrorKind.THROTTLED
        if code in _TRANSIENT or status >= 500:
            return ErrorKind.RETRY
        if code in _AUTH:
            return ErrorKind.AUTH
        if code in _DENIED:
            return ErrorKind.DENIED
        if code == "ResourceNotFoundException":
            return ErrorKind.NOT_FOUND
        return ErrorKind.REJECTED
    if isinstance(error, ParamValidationError):
        return ErrorKind.REJECTED
    if isinstance(error, NoCredentialsError):
        return ErrorKind.AUTH
    if isinstance(error, BotoConnectionError | HTTPClientError | ReadTimeoutError):
        return ErrorKind.RETRY
    if isinstance(error, BotoCoreError):
        return ErrorKind.RETRY
    if isinstance(error, ConnectionError | TimeoutError):
        return ErrorKind.RETRY
    return ErrorKind.REJECTED
