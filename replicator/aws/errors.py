"""Sorting AWS errors by what the replicator must do about them.

* THROTTLED / RETRY: the request may succeed later (throttling, 5xx, a dropped
  connection, an expired token about to be refreshed). Retried without a time limit:
  lag grows, nothing is dropped.
* CONDITION_FAILED: the destination holds a newer item; a normal outcome.
* REJECTED: this change can never be applied as it is (validation, item too large,
  a key of the wrong type). It goes to the dead letters and the shard moves on.
* DENIED / NOT_FOUND: access denied, or the table is missing. One item may be denied
  by a fine-grained policy (dead-letter it); a missing table is never one item's. A
  whole destination that keeps refusing stops the worker.
* AUTH: the request's signature or credentials were not accepted (an expired
  signature from a skewed clock, an unknown access key, a role STS refuses to let
  be assumed). That is never a property of one change, so it is never dead-lettered:
  retried, and when it persists the worker stops with a message that names the cause.

Apart from what to do next, a failed write is in doubt or not (:func:`may_have_landed`):
whether it may have been applied although its answer says otherwise, which decides
whether what it leaves, found at the destination later, is its own doing.
"""

from __future__ import annotations

import re
from enum import StrEnum

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ProxyConnectionError,
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
        "OverLimit",  # SQS: too many messages in flight (HTTP 403)
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
# Of the transient answers, those the service may give after it carried the write out:
# its own failure or timeout. The others refuse a request before applying it (another
# transaction or Region writing the item, an expired token, a moved endpoint, a request
# still in progress).
_AFTER_THE_WRITE = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# A TCP connection that was never made (refused, timed out, no proxy): botocore's and
# the direct path's. A TLS failure is not among them, not even in the handshake, before
# the request: urllib3 raises the errors of a request without an answer then (a read
# timeout, a closed connection), which no transport can tell apart, and the event loop's
# transport raises the same (:mod:`replicator.writers.loopwire`).
_NEVER_CONNECTED = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ProxyConnectionError,
    ConnectionRefusedError,
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
# What DynamoDB says when the signing time is too far from its own (the refusal's code
# alone is no sign: a wrong secret key gets InvalidSignatureException too).
_CLOCK_WORDS = ("expired", "not yet current", "skew", "in the future")
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
# The codes of a request the caller's policy does not allow (DynamoDB's, SQS's).
ACCESS_DENIED = frozenset({"AccessDeniedException", "AccessDenied"})
_DENIED = frozenset(
    {
        *ACCESS_DENIED,
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


def refused_for_the_clock(error: BaseException) -> bool:
    """Whether a signature refusal blames the signing time (a skewed clock), not the
    signature itself (a wrong secret key, a key of another account): the first is
    retried as ``clock_skew`` and cured by signing on the server's clock, the second
    as ``auth``, and only the credentials cure it."""
    code = error_code(error)
    if code not in CLOCK_SKEW:
        return False
    if code in ("RequestTimeTooSkewed", "RequestExpired", "RequestInTheFuture"):
        return True
    message = error_message(error).lower() if isinstance(error, ClientError) else ""
    return any(words in message for words in _CLOCK_WORDS)


class RoleNotAssumed(CredentialRetrievalError):
    """The credentials of a role to assume could not be had from STS. Raised where a
    request is signed, so it reaches whoever made the request, whose message would
    otherwise name the endpoint of that request's service, although the request was
    never sent: STS failed (unreachable, refusing the role, throttling), not the table
    or queue. A CredentialRetrievalError, as botocore's own failed fetchers raise, so
    that what explains those explains this one too."""

    fmt = "assuming role {role_arn} at STS endpoint {sts_endpoint} failed: {reason}"

    def __init__(
        self, *, role_arn: str, sts_endpoint: str, error: ClientError | BotoCoreError
    ) -> None:
        reason = excerpt(str(error))
        super().__init__(role_arn=role_arn, sts_endpoint=sts_endpoint, reason=reason)
        self.role_arn = role_arn
        self.error = error


def cause(error: BaseException) -> BaseException:
    """The failure of the service that failed: STS's for a role that could not be assumed."""
    return error.error if isinstance(error, RoleNotAssumed) else error


def http_status(error: ClientError) -> int:
    """The HTTP status of an error's answer (0 when the answer gave none)."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def classify(error: BaseException) -> ErrorKind:
    if isinstance(error, RoleNotAssumed):
        # STS throttling or not answering may pass; a role STS refuses is no property of
        # one change either: never dead-lettered, and persisting, it stops the worker.
        kind = classify(error.error)
        return kind if kind in (ErrorKind.THROTTLED, ErrorKind.RETRY) else ErrorKind.AUTH
    if isinstance(error, ClientError):
        code = error_code(error)
        status = http_status(error)
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
        if status == 403 and code in ("403", "Unknown", ""):
            # A refusal without an AWS error type (moto's IAM checks answer so, as may a
            # gateway or proxy in front of the endpoint): access, not the change, so it
            # is retried and, persisting, stops the worker rather than dead-lettered.
            return ErrorKind.DENIED
        if status == 401 and code in ("401", "Unknown", ""):
            return ErrorKind.AUTH
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


def may_have_landed(error: BaseException) -> bool:
    """Whether a write that raised ``error`` may have been applied all the same.

    Yes for an answer the service gives after it may have carried the write out (a 5xx,
    its own timeout) and for no answer to a request that was sent (a read timeout, a
    connection dropped, a garbled answer), and, erring that way, for a TLS handshake
    that stalled or failed: the transports cannot tell it from a request sent, and
    every one of them (botocore, the direct path, the event loop's) raises the same
    errors for these, so one answer holds for all. In doubt, a write found there later
    counts ``applied`` rather than ``unchanged``; no data depends on it. No for every
    refusal (throttling, access, a missing table, signatures, validation, a failed
    condition) and for a TCP connection that was never made: nothing was written, and
    an item found there later is someone else's, whatever it holds; and no for a role
    that could not be assumed or no credentials: the write was never signed, so never sent."""
    if isinstance(error, CredentialRetrievalError | NoCredentialsError):
        return False  # a role not assumed, or no credentials: never signed, never sent
    if isinstance(error, ClientError):
        status = http_status(error)
        return status >= 500 or error_code(error) in _AFTER_THE_WRITE
    if isinstance(error, _NEVER_CONNECTED):
        return False  # nothing was sent
    return classify(error) is ErrorKind.RETRY
