"""The conflict log as messages in an SQS queue, one entry per message.

The recorder's entries are sent with SendMessageBatch: up to 10 messages and 256 KiB a
request (a larger message goes alone, with SendMessage). A message the batch's answer
lists as failed by the sender's fault is refused for good, the others are retried by the
recorder; a request refused as a whole (for one bad message) is sent again one message
at a time, so that only that message is given up.

For a consumer of your own (archive them, page someone, feed a ticket): the queue keeps
messages for its ``MessageRetentionPeriod`` (at most 14 days). The queue takes messages
up to its ``MaximumMessageSize`` (1 KiB to 1 MiB), read from the queue once, at the first
entry (:mod:`replicator.aws.queues`: 256 KiB is assumed when it cannot be read). A
larger entry is sent gzip-compressed (``{"entry_gzip_b64": ...}``), and one still too
large is sent with its largest images replaced by their sha256
(:meth:`ConflictEntry.fitted`). One that does not fit even without its images (a queue
of a few KiB) is refused, as the queue would refuse it, naming the limit.

``replicator conflicts`` reads the queue without consuming it: it receives every
message with a visibility timeout, then makes them visible again as soon as it has
received them all. While it reads, another consumer of the queue does not see those
messages, nor does another reader of the log: SQS cannot show a message without
hiding it. So a reader that finds nothing more to receive while the queue counts more
messages in flight (``ApproximateNumberOfMessagesNotVisible``) than it holds waits for
the others, up to ``HELD_WAIT_S``, receiving again as they come back: holding on to its
own if it holds the larger part, letting them go otherwise (and pausing a random,
growing time before it receives again, so that readers started together do not keep
splitting the queue between them); what is still held then is counted
(:attr:`SqsConflictLog.held_elsewhere`) and logged, so a listing says it is incomplete
rather than show a shorter log as the whole of it. That count is approximate (entries
another reader lets go while it is taken are counted neither in flight nor received
yet), so a reader takes it that it has read everything only when two counts in a row
say so, with a receive between them that brings no message sent before the reading
started (:meth:`SqsConflictLog._hold_all`): the entries a running job sends meanwhile
are listed when received, not waited for, or a reading would wait as long as conflicts
keep being lost. Every such read counts as
a receive, though: on a queue with a redrive policy, SQS moves the entries to its
dead-letter queue after ``maxReceiveCount`` readings, so the command and the start of a
run warn about such a queue (:meth:`SqsConflictLog.redrive_warning`).
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import gzip
import json
import random
import threading
import time
import zlib
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.queues import MessageLimit, redrive_policy
from replicator.conflictlog.base import (
    Selection,
    StoreOutcome,
    read_failure,
    storage_failure,
    stored,
)
from replicator.conflictlog.entry import ConflictEntry
from replicator.exceptions import ConflictLogRejected, ConflictLogUnavailable, EntryFormatError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef as ReceivedMessage

log = structlog.get_logger(__name__)
_PACKED = "entry_gzip_b64"
_READ_VISIBILITY_S = 120
# How often a reading renews the visibility timeout of the messages it holds: a reading
# of a long log (or of a slow endpoint) outlasts the timeout, and messages that come back
# to the queue meanwhile were taken for the end of the log.
_RENEW_EVERY_S = 40.0
# How long a reader waits for entries another reader of the queue holds (another listing
# or restore lets them go within seconds; a consumer of your own, after its visibility
# timeout, 30 s by default), and how often it looks again meanwhile.
HELD_WAIT_S = 35.0
# How far after a reading's start (by SQS's clock, whose answers' Date is in whole
# seconds) an entry's SentTimestamp may be and still be waited for.
_LATE_MARGIN_MS = 2_000
# Receives in a row that bring only entries sent after the reading started, ending a pass.
_LATE_ONLY_RECEIVES = 3
_HELD_POLL_S = 0.5
_HELD_PAUSE_MAX_S = 4.0
# Receives in a row that bring nothing new while a reader keeps its part of the queue
# (:meth:`SqsConflictLog._hold_all`): then it lets go, as a reader holding less does.
_KEPT_IDLE_POLLS = 3
# SendMessageBatch's limits: messages in one request, and their bodies' total size.
BATCH_MESSAGES = 10
BATCH_BYTES = 256 * 1024


def encode(entry: ConflictEntry, limit: int) -> str:
    """The message body for ``entry`` in a queue taking messages up to ``limit`` bytes:
    as it is, else compressed, else with as few of its largest images as their sha256
    as make it fit, as it is or compressed (a small queue's limit may need both)."""
    body = _fitting(entry.to_json(), limit)
    if body is not None:
        return body
    fitted_entry = entry.fitted(limit, size=lambda e: _stored_size(e.to_json(), limit))
    log.warning(
        "conflict entry too large for SQS even compressed; images stored as their sha256",
        id=entry.id,
        destination=entry.destination,
        limit=limit,
        images=sorted(fitted_entry.truncated),  # which: the winning one goes first
    )
    fitted = fitted_entry.to_json()
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
    def __init__(self, client: SQSClient, queue_url: str, where: str | None = None) -> None:
        self.client = client
        self.queue_url = queue_url
        # Where the queue is read, as errors name it: the endpoint and region, or the
        # region alone (the endpoint a queue URL names need not be the one called).
        self.where = where or client.meta.region_name
        self.description = f"SQS queue {queue_url}"
        self.limit = MessageLimit(client, queue_url, "conflict-log queue")
        # Set to end a reading (a stop signal): it receives no more, lets go what it
        # holds and ends (:class:`ConflictLogTarget`).
        self.stopping = threading.Event()
        # After a read: how many entries another reader held past its wait, unread.
        self.held_elsewhere = 0
        # After a read: the messages that came back to the queue while it held them.
        self._lapsed: set[str] = set()
        # Of the messages a pass holds: when each was last received or renewed.
        self._held_at: dict[str, float] = {}

    def put(self, entry: ConflictEntry) -> None:
        body = self._body(entry, self.limit.bytes())
        if isinstance(body, ConflictLogRejected):
            raise body
        failure = self._send(body)
        if failure is not None:
            raise failure

    def put_all(self, entries: Sequence[ConflictEntry]) -> list[StoreOutcome]:
        """``entries`` in as few SendMessageBatch requests as its limits allow (module
        docstring). A request that fails as a whole for a reason that may pass leaves it
        and the requests after it unavailable."""
        limit = self.limit.bytes()
        outcomes: list[StoreOutcome] = [None] * len(entries)
        batches: list[list[tuple[int, str]]] = []
        size = 0
        for index, entry in enumerate(entries):
            body = self._body(entry, limit)
            if isinstance(body, ConflictLogRejected):
                outcomes[index] = body
                continue
            length = len(body.encode("utf-8"))
            if not batches or len(batches[-1]) == BATCH_MESSAGES or size + length > BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append((index, body))
            size += length
        for number, batch in enumerate(batches):
            try:
                self._send_batch(batch, outcomes)
            except ConflictLogUnavailable as error:
                for left in batches[number:]:
                    for index, _ in left:
                        outcomes[index] = error
                break
        return outcomes

    def _body(self, entry: ConflictEntry, limit: int) -> str | ConflictLogRejected:
        """The message for ``entry``, or why the queue cannot take it."""
        body = encode(entry, limit)
        size = len(body.encode("utf-8"))
        if size <= limit:
            return body
        # Refused here rather than by SendMessage, with the figures to act on.
        return ConflictLogRejected(
            self.limit.too_large(
                f"conflict entry {entry.id} is {size} bytes even without its images, compressed",
                limit,
                "or use the file or dynamodb kind",
            )
        )

    def _send_batch(self, batch: list[tuple[int, str]], outcomes: list[StoreOutcome]) -> None:
        """Send the messages of ``batch`` (entry index, body), noting each one's outcome."""
        if len(batch) == 1:  # also a message too large to share a request
            index, body = batch[0]
            outcomes[index] = self._send(body)
            return
        try:
            answer = self.client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(number), "MessageBody": body}
                    for number, (_, body) in enumerate(batch)
                ],
            )
        except (ClientError, BotoCoreError) as error:
            failure = storage_failure(error, f"SQS SendMessageBatch to {self.queue_url}")
            if isinstance(failure, ConflictLogUnavailable):
                raise failure from error
            for index, body in batch:  # refused as a whole: find the message it refuses
                outcomes[index] = self._send(body)
            return
        for failed in answer.get("Failed", []):
            index = batch[int(failed["Id"])][0]
            detail = (
                f"SQS SendMessageBatch to {self.queue_url}: {failed.get('Code')}: "
                f"{failed.get('Message', '')}"
            )
            sender = failed.get("SenderFault")
            outcomes[index] = (ConflictLogRejected if sender else ConflictLogUnavailable)(detail)

    def _send(self, body: str) -> StoreOutcome:
        return stored(
            lambda: self.client.send_message(QueueUrl=self.queue_url, MessageBody=body),
            f"SQS SendMessage to {self.queue_url}",
        )

    def redrive_warning(self) -> str | None:
        """What to tell the operator about the queue's redrive policy, if it has one.

        Raises the AWS error when the queue's attributes cannot be read."""
        policy = redrive_policy(self.client, self.queue_url)
        if policy is None:
            return None
        count, dead_letters = policy
        return (
            f"the conflict log's queue {self.queue_url} has a redrive policy: every listing "
            "of the log (and every --restore lookup) receives each entry once (more often "
            "while another reader holds entries), and after "
            f"{count} receives SQS moves an entry to the dead-letter queue {dead_letters}, out "
            "of the log; give the log a queue without a redrive policy, or use the dynamodb "
            "or file kind"
        )

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        """Every entry of the queue, received in passes (each one hides what it receives
        until it has received all it can, so that it gets every message once, then makes
        them visible again) until one finds the queue holds no message this read has not
        seen (:meth:`_hold_all`), or for ``HELD_WAIT_S`` some may have been: their
        number is then :attr:`held_elsewhere`. :attr:`stopping` ends it at its next
        receive, what it holds let go."""
        self.held_elsewhere = 0
        self._lapsed = set()
        seen: set[str] = set()
        patience = _Patience(self.stopping)
        # Entries sent after the reading's first receive (by SQS's clock: its answer's
        # Date, as SentTimestamp is) are not waited for: a job losing conflicts as it
        # runs sends them faster than a pass could receive them all, which would never
        # end. Those received are listed.
        started = _Start()
        while True:
            taken: dict[str, str] = {}  # this pass's messages: id -> receipt handle
            self._held_at = {}
            try:
                held = yield from self._hold_all(taken, seen, selection, started, patience)
            finally:
                self._release(list(taken.values()))
            if not held or self.stopping.is_set():
                return
            if patience.backed_off():
                if self.stopping.is_set():
                    return
                self.held_elsewhere = held
                log.warning(
                    "conflict-log entries held by another reader not read",
                    queue=self.queue_url,
                    held=held,
                    waited_s=HELD_WAIT_S,
                )
                return

    def _hold_all(
        self,
        taken: dict[str, str],
        seen: set[str],
        selection: Selection,
        started: _Start,
        patience: _Patience,
    ) -> Generator[ConflictEntry, None, int]:
        """One pass: receive (and hold, in ``taken``) every message it can, yielding the
        matching entries of those not yet ``seen``; then how many messages of the queue
        another reader holds (0: none).

        0 is not taken from one count of the queue: its counts are approximate, and
        entries another reader lets go just as the queue is counted are neither in
        flight any more nor received by this pass yet (on the moto server, a listing run
        beside another one on a busy machine; SQS's counts are eventually consistent, and
        may lag the same way). So the pass ends with nothing held elsewhere only after
        two counts in a row find none, with a receive between them that brings no
        message sent before the reading started (a long poll, which asks all of SQS's
        servers, while this pass still hides its own messages): entries let go as the
        first count is taken are visible by then, so that receive gets them, or, if
        another reader has taken them again, the second count finds them in flight. Only
        counts wrong twice in a row, each as another reader lets its entries go, could
        still end a read short.

        A count that finds messages held elsewhere ends the pass, so that it lets its own
        go for the other readers, unless this pass holds more than all of them together:
        then it keeps them and receives on (each receive a long poll) until the others
        let theirs go, or its patience ends. Two readings started together split the
        queue between them; were both to let go and receive again, they would split it
        again for as long as they kept in step (two listings on a busy machine did, until
        both gave up). The one holding the larger part keeps it, so one of them
        completes, lets everything go, and the other then reads it all. SQS's count may
        lag, though, and two readers whose counts are both short could each take itself
        for the larger: a reader keeps its part for ``_KEPT_IDLE_POLLS`` receives that
        bring nothing and leave the count as it was at most, then lets go as a smaller
        one does."""
        confirmed = False  # the last count found nothing unseen
        idle = 0  # polls in a row, while keeping, that brought nothing and changed nothing
        counted: int | None = None
        while True:
            received = False
            holding = len(taken)
            for message in self._pass(taken, started):
                received = received or started.before(message)
                if message["MessageId"] in seen:
                    continue
                seen.add(message["MessageId"])
                entry = self._entry(message)
                if entry is not None and selection.matches(entry):
                    yield entry
            if self.stopping.is_set():
                return 0
            held = self._unseen(taken)
            idle = idle + 1 if len(taken) == holding and held == counted else 0
            counted = held
            if held and len(taken) > held and idle < _KEPT_IDLE_POLLS and not patience.ended():
                confirmed = False
                continue
            if held or (confirmed and not received):
                return held
            confirmed = True

    def _pass(self, taken: dict[str, str], started: _Start) -> Iterator[ReceivedMessage]:
        """Receive until a receive brings no message this pass has not received, or
        ``_LATE_ONLY_RECEIVES`` in a row bring only messages sent after the reading
        started (``started``); those it receives are yielded too. A queue returns its
        messages in no order: one receive of new entries alone does not show that none
        sent before is left."""
        late_only = 0
        while not self.stopping.is_set():
            try:
                response = self.client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=_READ_VISIBILITY_S,
                    MessageSystemAttributeNames=["SentTimestamp"],
                )
            except (ClientError, BotoCoreError) as error:
                raise self._read_failure(error) from None
            started.answered(response)
            messages = response.get("Messages", [])
            fresh = [m for m in messages if m["MessageId"] not in taken]
            # One this pass holds, received again: its visibility timeout ran out.
            self._lapsed.update(m["MessageId"] for m in messages if m["MessageId"] in taken)
            # The newest handle: one received again (its timeout ran out) answers to it only.
            taken.update((m["MessageId"], m["ReceiptHandle"]) for m in messages)
            now = time.monotonic()
            self._held_at.update((m["MessageId"], now) for m in messages)
            self._renew_if_due(taken)
            yield from fresh
            if not fresh:
                return
            late_only = 0 if any(started.before(m) for m in fresh) else late_only + 1
            if late_only >= _LATE_ONLY_RECEIVES:
                return

    @property
    def lapsed(self) -> int:
        """How many messages came back to the queue while the last read held them."""
        return len(self._lapsed)

    def _renew_if_due(self, taken: dict[str, str]) -> None:
        """The messages this pass has held for ``_RENEW_EVERY_S`` since they were received
        or renewed, hidden for another ``_READ_VISIBILITY_S``: each by its own clock, so
        that a long log is renewed a little at a time (each message about once per
        ``_RENEW_EVERY_S``), not all of it after every receive. One whose handle is
        refused has come back to the queue (:attr:`lapsed`)."""
        now = time.monotonic()
        due = [mid for mid, at in self._held_at.items() if now - at >= _RENEW_EVERY_S]
        for start in range(0, len(due), 10):
            batch = due[start : start + 10]
            try:
                answer = self.client.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {
                            "Id": str(index),
                            "ReceiptHandle": taken[mid],
                            "VisibilityTimeout": _READ_VISIBILITY_S,
                        }
                        for index, mid in enumerate(batch)
                    ],
                )
            except (ClientError, BotoCoreError) as error:
                raise self._read_failure(error) from None
            renewed_at = time.monotonic()
            self._held_at.update((mid, renewed_at) for mid in batch)
            for failed in answer.get("Failed", []):
                self._lapsed.add(batch[int(failed["Id"])])

    def _unseen(self, taken: dict[str, str]) -> int:
        """How many messages of the queue another reader or consumer holds: the messages
        SQS counts in flight, less this pass's (``taken``). Counted while this pass still
        holds its messages, so that what it received cannot move meanwhile; as SQS counts
        them (approximately: one count proves nothing, :meth:`_hold_all`). The visible
        messages are left to the receives: a pass ends only with a receive that brings
        none sent before the read started, and the visible ones sent since (a job
        losing conflicts as it runs) would keep a count above what was seen for good."""
        try:
            attributes = self.client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
            ).get("Attributes", {})
        except (ClientError, BotoCoreError) as error:
            raise self._read_failure(error) from None
        in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0"))
        return max(0, in_flight - len(taken))

    def _read_failure(self, error: ClientError | BotoCoreError) -> Exception:
        return read_failure(error, f"conflict-log queue {self.queue_url}", self.where)

    def _entry(self, message: ReceivedMessage) -> ConflictEntry | None:
        try:
            return decode(message["Body"])
        except EntryFormatError as error:
            log.warning(
                "unreadable conflict-log entry skipped",
                queue=self.queue_url,
                message_id=message["MessageId"],
                error=str(error),
            )
            return None

    def unread(self) -> str | None:
        """What the last read left out, in words, or None when it read the whole log."""
        if self.lapsed:
            return (
                f"{self.lapsed} message(s) of the log came back to the queue while this "
                f"reading held them (a receive outlasted the {_READ_VISIBILITY_S} s "
                "visibility timeout it holds them for): entries may be missing from this "
                "reading; run the command again"
            )
        count = self.held_elsewhere
        if not count:
            return None
        one = count == 1
        return (
            f"{count} entr{'y' if one else 'ies'} of the log {'was' if one else 'were'} held "
            "by another reader of the queue (another replicator conflicts, or a consumer of "
            f"the queue) for the {HELD_WAIT_S:g} s a reading waits for them, and "
            f"{'was' if one else 'were'} not read: run the command again"
        )

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


class _Patience:
    """How long a reading waits for entries other readers hold: ``HELD_WAIT_S`` from the
    first count that finds some, less if :attr:`SqsConflictLog.stopping` is set. Between
    passes it pauses for a random time (from a quarter to half a second at first), longer
    each time (up to ``_HELD_PAUSE_MAX_S``), so
    that readings started together, each letting its entries go for the others, fall
    out of step instead of taking them from each other again at the same moment."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._deadline: float | None = None
        self._pause_s = _HELD_POLL_S

    def ended(self) -> bool:
        if self._deadline is None:
            self._deadline = time.monotonic() + HELD_WAIT_S
        return self._stopping.is_set() or time.monotonic() >= self._deadline

    def backed_off(self) -> bool:
        """Pause before the next pass; whether the wait has ended instead (read no more)."""
        if self.ended():
            return True
        pause = random.uniform(_HELD_POLL_S / 2, self._pause_s)
        self._pause_s = min(2 * self._pause_s, _HELD_PAUSE_MAX_S)
        return self._stopping.wait(pause) or self.ended()


class _Start:
    """When a reading started, by SQS's clock (the ``Date`` of its first answer: the host's
    may be seconds or minutes off SQS's, which stamps ``SentTimestamp``), with
    ``_LATE_MARGIN_MS`` to spare; the host's clock only when the answer has no date."""

    def __init__(self) -> None:
        self.ms: int | None = None

    def answered(self, response: Any) -> None:
        if self.ms is not None:
            return
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            when = email.utils.parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is None:  # "-0000": UTC, not the host's zone
            when = when.replace(tzinfo=datetime.UTC)
        at = when.timestamp() if when is not None else time.time()
        self.ms = int(at * 1000) + _LATE_MARGIN_MS

    def before(self, message: ReceivedMessage) -> bool:
        """Whether ``message`` was sent before the reading started (one that does not
        say when is taken as sent before)."""
        try:
            sent = int(message.get("Attributes", {}).get("SentTimestamp", "0"))
        except ValueError:
            sent = 0
        return self.ms is None or sent <= self.ms
