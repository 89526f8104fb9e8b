"""The conflict log as messages in an SQS queue, one entry per message.

For a consumer of your own (archive them, page someone, feed a ticket): the queue keeps
messages for its ``MessageRetentionPeriod`` (at most 14 days). The queue takes messages
up to its ``MaximumMessageSize`` (1 KiB to 1 MiB), read from the queue once, at the first
entry (:mod:`replicator.aws.queues`: 256 KiB is assumed when it cannot be read). A
larger entry is sent gzip-compressed (``{"entry_gzip_b64": ...}``), and one still too
large is sent with its largest images replaced by their sha256
(:meth:`ConflictEntry.fitted`). One that does not fit even without its images (a queue
of a few KiB) is refused, as the queue would refuse it, naming the limit.

``replicator conflicts`` reads the queue without consuming it: it receives every
message with a visibility timeout, then makes them visible again at once. While it
reads, another consumer of the queue does not see those messages. Every such read
counts as a receive, though: on a queue with a redrive policy, SQS moves the entries to
its dead-letter queue after ``maxReceiveCount`` readings, so the command and the start
of a run warn about such a queue (:meth:`SqsConflictLog.redrive_warning`).
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.queues import MessageLimit
from replicator.conflictlog.base import Selection, read_failure, storage_failure
from replicator.conflictlog.entry import ConflictEntry
from replicator.exceptions import ConflictLogRejected, EntryFormatError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = structlog.get_logger(__name__)
_PACKED = "entry_gzip_b64"
_READ_VISIBILITY_S = 120


def encode(entry: ConflictEntry, limit: int) -> str:
    """The message body for ``entry`` in a queue taking messages up to ``limit`` bytes:
    as it is, else compressed, else with as few of its largest images as their sha256
    as make it fit, as it is or compressed (a small queue's limit may need both)."""
    body = _fitting(entry.to_json(), limit)
    if body is not None:
        return body
    log.warning(
        "conflict entry too large for SQS even compressed; images stored as their sha256",
        id=entry.id,
        destination=entry.destination,
        limit=limit,
    )
    fitted = entry.fitted(limit, size=lambda e: _stored_size(e.to_json(), limit)).to_json()
    return _fitting(fitted, limit) or fitted


def _fitting(body: str, limit: int) -> str | None:
    """``body`` if it fits, else its compressed form if that does; None if neither."""
    if len(body.encode("utf-8")) <= limit:
        return body
    compact = _packed(body)
    return compact if len(compact) <= limit else None


def _stored_size(body: str, limit: int) -> int:
    size = len(body.encode("utf-8"))
    return size if size <= limit else len(_packed(body))


def _packed(body: str) -> str:
    packed = base64.b64encode(gzip.compress(body.encode("utf-8"))).decode("ascii")
    return json.dumps({_PACKED: packed})


def decode(body: str) -> ConflictEntry:
    """The entry a message holds; EntryFormatError for a message that does not hold one."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise EntryFormatError(f"not JSON: {error}") from None
    if isinstance(document, dict) and set(document) == {_PACKED}:
        try:
            unpacked = gzip.decompress(base64.b64decode(document[_PACKED], validate=True))
        except (ValueError, TypeError, OSError, EOFError, zlib.error) as error:
            raise EntryFormatError(f"{_PACKED} is not base64 of gzip: {error}") from None
        return ConflictEntry.from_json(unpacked)
    return ConflictEntry.from_json(body)


class SqsConflictLog:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url
        self.description = f"SQS queue {queue_url}"
        self.limit = MessageLimit(client, queue_url, "conflict-log queue")

    def put(self, entry: ConflictEntry) -> None:
        limit = self.limit.bytes()
        body = encode(entry, limit)
        size = len(body.encode("utf-8"))
        if size > limit:
            # Refused here rather than by SendMessage, with the figures to act on.
            raise ConflictLogRejected(
                self.limit.too_large(
                    f"conflict entry {entry.id} is {size} bytes even without its images, "
                    "compressed",
                    limit,
                    "or use the file or dynamodb kind",
                )
            )
        try:
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)
        except (ClientError, BotoCoreError) as error:
            raise storage_failure(error, f"SQS SendMessage to {self.queue_url}") from error

    def redrive_warning(self) -> str | None:
        """What to tell the operator about the queue's redrive policy, if it has one.

        Raises the AWS error when the queue's attributes cannot be read."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]
        ).get("Attributes", {})
        if "RedrivePolicy" not in attributes:
            return None
        try:
            policy = json.loads(attributes["RedrivePolicy"])
            count = policy["maxReceiveCount"]
            dead_letters = str(policy["deadLetterTargetArn"]).rpartition(":")[2]
        except (ValueError, TypeError, KeyError):
            count, dead_letters = "maxReceiveCount", "its dead-letter queue"
        return (
            f"the conflict log's queue {self.queue_url} has a redrive policy: every listing "
            "of the log (and every --restore lookup) receives each entry once, and after "
            f"{count} receives SQS moves an entry to the dead-letter queue {dead_letters}, out "
            "of the log; give the log a queue without a redrive policy, or use the dynamodb "
            "or file kind"
        )

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        seen: set[str] = set()
        handles: list[str] = []
        try:
            while True:
                try:
                    response = self.client.receive_message(
                        QueueUrl=self.queue_url,
                        MaxNumberOfMessages=10,
                        WaitTimeSeconds=1,
                        VisibilityTimeout=_READ_VISIBILITY_S,
                    )
                except (ClientError, BotoCoreError) as error:
                    raise read_failure(
                        error, f"conflict-log queue {self.queue_url}", self.client.meta.region_name
                    ) from None
                fresh = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
                if not fresh:
                    return
                for message in fresh:
                    seen.add(message["MessageId"])
                    handles.append(message["ReceiptHandle"])
                    try:
                        entry = decode(message["Body"])
                    except EntryFormatError as error:
                        log.warning(
                            "unreadable conflict-log entry skipped",
                            queue=self.queue_url,
                            message_id=message["MessageId"],
                            error=str(error),
                        )
                        continue
                    if selection.matches(entry):
                        yield entry
        finally:
            self._release(handles)

    def _release(self, handles: list[str]) -> None:
        """Make the messages read visible again, so the queue's consumers still get them."""
        for start in range(0, len(handles), 10):
            batch = handles[start : start + 10]
            self.client.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    for index, handle in enumerate(batch)
                ],
            )
