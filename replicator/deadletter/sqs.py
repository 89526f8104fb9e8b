"""Dead letters in an SQS queue: one message per letter.

SQS takes messages up to 256 KiB; a letter whose record is larger (items reach 400 KB)
is sent with the record gzip-compressed, and one still too large stops the worker
rather than being dropped. A replay receives messages, and for each one that fails
again sends an updated letter marked with the replay's run id before deleting the old
message; meeting its own marked letters tells the replay it has gone round the queue.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.errors import ErrorKind, classify
from replicator.deadletter.base import Claimed
from replicator.deadletter.entry import DeadLetter
from replicator.exceptions import DeadLetterUnavailable

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = structlog.get_logger(__name__)
_SQS_LIMIT = 256 * 1024
_MAX_BACKOFF_S = 20.0


class SqsDeadLetters:
    def __init__(self, client: SQSClient, queue_url: str, run_id: str | None = None) -> None:
        self.client = client
        self.queue_url = queue_url
        self.run_id = run_id
        self.description = f"SQS queue {queue_url}"

    def put(self, letter: DeadLetter) -> None:
        body = letter.to_json()
        if len(body.encode("utf-8")) > _SQS_LIMIT:
            body = letter.to_compact_json()
            if len(body.encode("utf-8")) > _SQS_LIMIT:
                raise DeadLetterUnavailable(
                    f"dead letter for record {letter.record.get('sequenceNumber')} is larger "
                    "than SQS's 256 KiB even compressed; use a file dead-letter target"
                )
        self._call("send_message", QueueUrl=self.queue_url, MessageBody=body)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return getattr(self.client, operation)(**kwargs)
            except (ClientError, BotoCoreError) as error:
                if classify(error) not in (ErrorKind.RETRY, ErrorKind.THROTTLED):
                    raise DeadLetterUnavailable(
                        f"SQS {operation} on {self.queue_url} failed: {error}"
                    ) from error
                delay = random.uniform(0, min(_MAX_BACKOFF_S, 0.1 * 2**attempt))
                log.warning(
                    "dead-letter queue unavailable, retrying",
                    operation=operation,
                    error=str(error),
                    delay_s=round(delay, 3),
                )
                attempt += 1
                time.sleep(delay)

    def claim_all(self) -> Iterator[Claimed]:
        while True:
            response = self._call(
                "receive_message",
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=900,
            )
            messages = response.get("Messages", [])
            fresh = 0
            for message in messages:
                letter = DeadLetter.from_json(message["Body"])
                if self.run_id is not None and letter.redrive_run == self.run_id:
                    self._call(
                        "change_message_visibility",
                        QueueUrl=self.queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=0,
                    )
                    continue
                fresh += 1
                yield Claimed(letter, receipt=message["ReceiptHandle"])
            if not fresh:
                return

    def settle(self, claimed: Claimed, *, replayed: bool) -> None:
        if not replayed:
            self.put(claimed.letter)
        self._call("delete_message", QueueUrl=self.queue_url, ReceiptHandle=claimed.receipt)
