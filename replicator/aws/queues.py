"""The largest message an SQS queue takes, read from the queue itself.

A queue's ``MaximumMessageSize`` is anything from 1 KiB to 1 MiB (1 MiB the default for
a new queue since 2025, 256 KiB for older ones). A target that sized its messages by a
fixed figure would have them refused by a smaller queue and compress or truncate them
needlessly for a larger one, so the dead-letter and conflict-log targets both read it
(one GetQueueAttributes, once). When it cannot be read (no ``sqs:GetQueueAttributes``)
:data:`ASSUMED_LIMIT` is used, with a warning; a transient failure is tried again at the
next message rather than kept.

Before that, at start, :func:`check_exists` asks SQS about the queue, so that a queue
URL naming no queue stops the start in one line instead of the first message.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.errors import ErrorKind, classify, error_code, error_message
from replicator.exceptions import EnvironmentProblem

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = structlog.get_logger(__name__)
# SQS's answers to a queue URL that names no queue: the JSON protocol's code, the query
# protocol's, and a URL that is not of this endpoint's form.
_NO_QUEUE = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "InvalidAddress"}
)


def names_no_queue(error: Exception) -> bool:
    """Whether an SQS error says the queue URL names no queue."""
    return error_code(error) in _NO_QUEUE


# GetQueueAttributes not allowed: the queue may well be there (docs/security.md lets a
# policy leave that action out).
_NOT_ALLOWED = frozenset({"AccessDenied", "AccessDeniedException"})
# Assumed when the queue's MaximumMessageSize cannot be read: SQS's limit until 2025,
# and still that of queues created with it.
ASSUMED_LIMIT = 256 * 1024


class MessageLimit:
    """One queue's ``MaximumMessageSize``, read once; ``what`` names the queue's role in
    the warning (``dead-letter queue``, ``conflict-log queue``)."""

    def __init__(self, client: SQSClient, queue_url: str, what: str) -> None:
        self.client = client
        self.queue_url = queue_url
        self.what = what
        # The queue's MaximumMessageSize once read, or ASSUMED_LIMIT once it could not be
        # (denied, say); None: not read yet, or a transient failure to try again.
        self._limit: int | None = None
        self.read = False  # whether the limit is the queue's own

    def bytes(self) -> int:
        """The largest message the queue takes, in bytes."""
        if self._limit is not None:
            return self._limit
        try:
            attributes = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["MaximumMessageSize"]
            ).get("Attributes", {})
            limit = int(attributes["MaximumMessageSize"])
        except (ClientError, BotoCoreError, KeyError, ValueError) as error:
            log.warning(
                f"{self.what}'s MaximumMessageSize not read; assuming 256 KiB",
                queue=self.queue_url,
                error=str(error),
            )
            if isinstance(error, ClientError | BotoCoreError) and classify(error) in (
                ErrorKind.RETRY,
                ErrorKind.THROTTLED,
            ):
                return ASSUMED_LIMIT
            self._limit = ASSUMED_LIMIT
            return ASSUMED_LIMIT
        self._limit, self.read = limit, True
        return limit

    def described(self, limit: int) -> str:
        """``limit`` as a message says where it comes from."""
        if self.read:
            return f"the queue's MaximumMessageSize, {limit} bytes"
        return (
            f"{limit} bytes (assumed: the queue's MaximumMessageSize could not be read, "
            "which needs sqs:GetQueueAttributes)"
        )

    def too_large(self, what: str, limit: int, advice: str) -> str:
        """The refusal of ``what`` (a message, its size said) larger than ``limit``: the
        queue, where its limit comes from, and what to do (``advice``)."""
        return (
            f"{what}, larger than {self.described(limit)}, of SQS queue {self.queue_url}; "
            f"raise the queue's MaximumMessageSize {advice}"
        )


def check_exists(client: SQSClient, queue_url: str, setting: str, what: str, where: str) -> bool:
    """Ask SQS about the queue at ``queue_url`` (the job's ``setting``) before anything
    is sent to it: a queue that does not exist stops the start with EnvironmentProblem
    naming it, where it would otherwise stop the worker at its first message; a policy
    without ``sqs:GetQueueAttributes`` is a warning (the queue cannot be checked, and is
    used as the policy allows, and False is returned). Any other failure is raised as
    the AWS error, for the caller to decide whether it stops the start."""
    try:
        client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["MaximumMessageSize"])
    except ClientError as error:
        code = error_code(error)
        if code in _NO_QUEUE:
            raise EnvironmentProblem(
                f"{setting}: the {what} {queue_url} does not exist at {where} ({code}: "
                f"{error_message(error)}); create it, or give the URL of an existing "
                "standard queue"
            ) from None
        if code not in _NOT_ALLOWED:
            raise
        log.warning(
            f"{what} not checked at start: sqs:GetQueueAttributes is not allowed",
            queue=queue_url,
            error=str(error),
        )
        return False
    return True


def redrive_policy(client: SQSClient, queue_url: str) -> tuple[str, str] | None:
    """The queue's redrive policy as (its ``maxReceiveCount``, the name of its dead-letter
    queue), or None when it has none. Every receive of a message counts towards that
    count, and SQS moves a message received that often out of the queue: a target read
    more than once (a dead-letter queue at each ``redrive``, a conflict log at each
    listing) loses what it leaves in place. Raises the AWS error when the queue's
    attributes cannot be read."""
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
    ).get("Attributes", {})
    if "RedrivePolicy" not in attributes:
        return None
    try:
        policy = json.loads(attributes["RedrivePolicy"])
        return str(policy["maxReceiveCount"]), str(policy["deadLetterTargetArn"]).rpartition(":")[2]
    except (ValueError, TypeError, KeyError):
        return "maxReceiveCount", "its dead-letter queue"
