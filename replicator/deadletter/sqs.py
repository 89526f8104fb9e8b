"""Dead letters in an SQS queue: one message per letter.

A queue takes messages up to its ``MaximumMessageSize`` (up to 1 MiB, the default for
a new queue since 2025; 256 KiB for older ones), read once from the queue when the
worker starts (GetQueueAttributes). A letter larger than that (items reach 400 KB) is
sent with the record gzip-compressed. A letter of a MODIFY carries both of the item's
images, in a record that is base64 text of JSON holding binary values as base64 text:
of an item of 400 KB of random bytes it is about 1.4 MB even compressed. Such a letter
is sent with its record's OldImage left out, which a replay of the put does not need
(:meth:`DeadLetter.without_old_image`), marked so (``left_out``) and logged with a
warning naming the record and key: of such an item it is then about 730 KB, within a
1 MiB queue. One that still does not fit (a smaller queue; an item JSON writes much
longer than its size, such as strings of control characters, escaped in six bytes each,
or very many small attributes; a letter with no image to leave out: a delete's, a
repair's, an undecodable record's) stops the worker rather than being dropped, naming
the record, its size and the queue's limit. When the attribute cannot be read (no
``sqs:GetQueueAttributes``), 256 KiB is assumed.

A replay receives messages, and for each one that fails again sends an updated letter
marked with the replay's run id before deleting the old message; meeting its own marked
letters tells the replay it has gone round the queue.

A message that does not read as a letter, and a letter the replay releases (another
task's), are left in the queue untouched; an unreadable one gets a warning naming the
queue and the message id. The replay keeps them hidden until it has gone round the
queue (so that each is received once, and cannot end the replay before the letters
behind it), then makes them visible again at once rather than after the visibility
timeout: they are there for the next redrive, another job's, and whoever looks. So
does a replay that ends early (interrupted, stopped by an outage) with the messages it
received and has not settled: a redrive run next must find them, not a queue that looks
empty for the 15 minutes of :data:`VISIBILITY_TIMEOUT_S`. Only a replay that cannot
(killed, or the queue not answering then) leaves them hidden that long.

Replication retries a queue that fails without a time limit (nothing is checkpointed
past a change whose letter is not stored). An operator command bounds it instead
(``unanswered_for_s``): a queue that gives no answer at all for that long raises
DeadLetterUnavailable, and :meth:`SqsDeadLetters.cancel` (a second Ctrl-C) ends the
retries in hand at once with WriteCancelled. Throttling and server errors are answers,
waited out as the tools' writers wait them out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.backoff import Backoff
from replicator.aws.errors import ErrorKind, classify
from replicator.aws.queues import MessageLimit
from replicator.deadletter.base import Claimed, Unreadable
from replicator.deadletter.entry import DeadLetter
from replicator.exceptions import DeadLetterFormatError, DeadLetterUnavailable, WriteCancelled

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = structlog.get_logger(__name__)
# Between the attempts at a queue that fails: up to 0.1 s, doubling, at most 20 s.
_BACKOFF = Backoff(base_s=0.1, cap_s=20.0)
# How long a message a replay received stays hidden from other receivers: long enough
# for its replay (a write waits up to the tools' bound for an answer), and what a replay
# killed before it could make its messages visible again leaves them hidden for.
VISIBILITY_TIMEOUT_S = 900


def _message(letter: DeadLetter, limit: int) -> tuple[str, int]:
    """The message body for ``letter``, as it is or compressed when that is larger than
    ``limit``, and its size in bytes."""
    body = letter.to_json()
    size = len(body.encode("utf-8"))
    if size > limit:
        body = letter.to_compact_json()
        size = len(body.encode("utf-8"))
    return body, size


class SqsDeadLetters:
    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        run_id: str | None = None,
        *,
        unanswered_for_s: float | None = None,
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.run_id = run_id
        self.unanswered_for_s = unanswered_for_s
        self.description = f"SQS queue {queue_url}"
        # Messages left as they are during a replay: message id -> latest receipt handle.
        self._held: dict[str, str] = {}
        # Messages received and not yet settled or left as they are: receipt handle ->
        # message id. What is still here when the replay ends is made visible again.
        self._claimed: dict[str, str] = {}
        self._limit = MessageLimit(client, queue_url, "dead-letter queue")
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """End the retries in hand, and any later call, with WriteCancelled."""
        self._cancelled.set()

    def message_limit(self) -> int:
        """The largest message the queue takes, in bytes (:mod:`replicator.aws.queues`).
        The worker reads it when it starts; a put reads it if that has not been done."""
        return self._limit.bytes()

    def put(self, letter: DeadLetter) -> bool:
        """Send ``letter``; always True: a standard queue cannot be asked whether it
        holds a letter, so copies are told apart when replayed (redrive). One too large
        for the queue even compressed is sent without its record's old image, if it has
        one a replay can do without (:meth:`DeadLetter.without_old_image`), with a
        warning; one that still does not fit is refused (DeadLetterUnavailable)."""
        limit = self.message_limit()
        body, size = _message(letter, limit)
        if size > limit:
            body = self._reduced(letter, size, limit)
        self._call("send_message", QueueUrl=self.queue_url, MessageBody=body)
        return True

    def _reduced(self, letter: DeadLetter, size: int, limit: int) -> str:
        """The message body for ``letter`` (``size`` bytes even compressed) without its
        record's old image, or DeadLetterUnavailable when it has none to leave out or
        is still too large without it."""
        what = (
            f"dead letter for record {letter.record.get('sequenceNumber')} "
            f"(destination {letter.destination}) is {size} bytes even compressed"
        )
        advice = "(up to 1048576 bytes) or use a file dead-letter target"
        reduced = letter.without_old_image(
            f"the letter is {size} bytes even compressed, larger than "
            f"{self._limit.described(limit)}"
        )
        if reduced is None:
            raise DeadLetterUnavailable(
                self._limit.too_large(what, limit, advice)
                + "; its record has no image a replay can do without (only the OldImage of "
                "a stream INSERT or MODIFY can be left out)"
            )
        body, stored = _message(reduced, limit)
        if stored > limit:
            what += f", {stored} bytes without its record's OldImage"
            raise DeadLetterUnavailable(self._limit.too_large(what, limit, advice))
        log.warning(
            "dead letter too large for the queue even compressed; stored without its "
            "OldImage (a replay of the put needs only its new image)",
            sequence_number=letter.record.get("sequenceNumber"),
            key=letter.key_text(),
            destination=letter.destination,
            bytes=size,
            stored_bytes=stored,
            limit=limit,
            queue=self.queue_url,
        )
        return body

    def _call(self, operation: str, **kwargs: Any) -> Any:
        attempt = 0
        unanswered_since: float | None = None  # of the attempts in a row not answered
        action = "".join(part.title() for part in operation.split("_"))  # SendMessage
        while True:
            if self._cancelled.is_set():
                raise WriteCancelled(f"SQS {action} on {self.queue_url} cancelled")
            tried_at = time.monotonic()
            try:
                return getattr(self.client, operation)(**kwargs)
            except (ClientError, BotoCoreError) as error:
                if classify(error) not in (ErrorKind.RETRY, ErrorKind.THROTTLED):
                    raise DeadLetterUnavailable(
                        f"SQS {action} on {self.queue_url} failed: {error}"
                    ) from error
                delay = _BACKOFF.delay(attempt)
                if isinstance(error, BotoCoreError) and self.unanswered_for_s is not None:
                    if unanswered_since is None:
                        unanswered_since = tried_at
                    left = self.unanswered_for_s - (time.monotonic() - unanswered_since)
                    if left <= 0:
                        raise DeadLetterUnavailable(
                            f"SQS {action} on {self.queue_url} got no answer for "
                            f"{self.unanswered_for_s:g} s ({attempt + 1} attempts); last "
                            f"error: {error}"
                        ) from error
                    delay = min(delay, left)
                else:
                    unanswered_since = None
                log.warning(
                    "dead-letter queue unavailable, retrying",
                    operation=operation,
                    error=str(error),
                    delay_s=round(delay, 3),
                )
                attempt += 1
                self._cancelled.wait(delay)

    def claim_all(self) -> Generator[Claimed | Unreadable, None, None]:
        self._held, self._claimed = {}, {}
        try:
            while True:
                response = self._call(
                    "receive_message",
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=VISIBILITY_TIMEOUT_S,
                )
                fresh = 0
                messages = response.get("Messages", [])
                # Until each is settled or left alone: hidden for the visibility timeout,
                # and what a replay ending early has not reached is made visible again.
                for message in messages:
                    if message["MessageId"] not in self._held:
                        self._claimed[message["ReceiptHandle"]] = message["MessageId"]
                for message in messages:
                    message_id, receipt = message["MessageId"], message["ReceiptHandle"]
                    if message_id in self._held:  # its visibility ran out: still left alone
                        self._held[message_id] = receipt
                        continue
                    try:
                        letter = DeadLetter.from_json(message["Body"])
                    except DeadLetterFormatError as error:
                        log.warning(
                            "unreadable dead letter left in the queue",
                            queue=self.queue_url,
                            message_id=message_id,
                            error=str(error),
                        )
                        del self._claimed[receipt]
                        self._held[message_id] = receipt
                        fresh += 1
                        yield Unreadable(f"message {message_id}", str(error))
                        continue
                    if self.run_id is not None and letter.redrive_run == self.run_id:
                        self._call(
                            "change_message_visibility",
                            QueueUrl=self.queue_url,
                            ReceiptHandle=receipt,
                            VisibilityTimeout=0,
                        )
                        del self._claimed[receipt]
                        continue
                    fresh += 1
                    yield Claimed(letter, receipt=receipt, raw=message["Body"].encode("utf-8"))
                if not fresh:
                    return
        finally:
            self._let_go()

    def _let_go(self) -> None:
        """Make the messages left alone visible again now, not after the visibility
        timeout, and those received and not settled (a replay that ended early, or
        whose letter in hand could not be settled): they are not replayed, and the next
        redrive must see them. If that fails they reappear after the timeout anyway:
        only a warning, after one try (the SDK's own retries), not retried or
        cancelled: a replay on its way out, even a second Ctrl-C's, does not wait for a
        queue that does not answer, and still tries when the queue does."""
        held = [*self._held.values(), *self._claimed]
        self._held, self._claimed = {}, {}
        for start in range(0, len(held), 10):
            entries: Any = [
                {"Id": str(n), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
                for n, receipt in enumerate(held[start : start + 10])
            ]
            try:
                answer = self.client.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as error:
                failed = [f"SQS ChangeMessageVisibilityBatch on {self.queue_url} failed: {error}"]
            else:
                failed = [f"{f.get('Code')}: {f.get('Message')}" for f in answer.get("Failed", [])]
            if failed:
                log.warning(
                    "messages left in the dead-letter queue stay hidden until their "
                    "visibility timeout ends",
                    queue=self.queue_url,
                    errors=failed,
                )

    def settle(self, claimed: Claimed, *, replayed: bool) -> None:
        if not replayed:
            self.put(claimed.letter)
        self._call("delete_message", QueueUrl=self.queue_url, ReceiptHandle=claimed.receipt)
        self._claimed.pop(claimed.receipt, None)

    def release(self, claimed: Claimed) -> None:
        """Leave the message as it is: visible again once the replay has gone round."""
        self._held[self._claimed.pop(claimed.receipt)] = claimed.receipt
