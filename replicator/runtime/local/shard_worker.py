"""One shard in the local runtime: read it, feed a processor child, store its checkpoints.

The worker reads with GetShardIterator/GetRecords, hands every batch to the child as a
``processRecords`` action (an empty batch too, when idle, so the child can checkpoint
writes that finished in the meantime), and answers the child's checkpoint requests by
updating the shard's lease. A child that dies is started again from the lease's
checkpoint; one that keeps dying stops the runtime: more than ``restart_limit`` failures
in ``restart_window_s``, or, for a processor stopping because a destination refuses every
write or its dead-letter target cannot store a letter (its last words carry exit code 3),
more than ``restart_limit`` such failures in a
row with no recovery between them, however far apart (a refusing destination takes the
processor about two minutes of retries to give up on, so a time window would never fill).
Recovery from such a failure is a write settled at the refusing destination, or a
checkpoint of every record delivered (the whole batch applied); any checkpoint is not
enough: it moves past changes that newer ones replaced while the destination accepts
nothing.

The lease it holds (:mod:`~replicator.runtime.local.held_lease`), the changes it passes
over (:mod:`~replicator.runtime.local.passed_over`) and the size of its GetRecords pages
(:mod:`~replicator.runtime.local.page_size`) are kept by objects of their own; the
reading, its retries and reports to the processor, the shard iterators, the restarts and
the stop stay here, since they share the running child and the positions read.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError, ReadTimeoutError

from replicator.aws.answers import PARSER_ERRORS, MalformedAnswer, unparsed
from replicator.aws.backoff import Backoff
from replicator.aws.errors import ErrorKind, classify, error_code, excerpt
from replicator.config.model import OnTrimmedData
from replicator.exceptions import (
    ChildFailed,
    ChildKeepsFailing,
    EnvironmentProblem,
    LeaseLost,
    TrimmedData,
)
from replicator.runtime.local.held_lease import HeldLease
from replicator.runtime.local.page_size import PageSize
from replicator.runtime.local.passed_over import PassedOver
from replicator.runtime.local.protocol import ProcessorChild
from replicator.runtime.local.shard_progress import ShardProgress, refusing_destination
from replicator.runtime.local.shard_settings import ShardSettings
from replicator.shards.leases import (
    AT_TIMESTAMP,
    LATEST,
    SENTINELS,
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    LeaseTable,
)
from replicator.shards.stream import created_ms_of, list_shards, to_daemon_record
from replicator.watermark import spans

if TYPE_CHECKING:
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_dynamodbstreams.type_defs import GetRecordsOutputTypeDef

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

# The reason /healthz gives for a call to the stream still out, after its operation's name.
_UNANSWERED = " not answered yet (sent "


class ShardStillOpen(BotoCoreError):
    """GetRecords answered without ``NextShardIterator`` while DescribeStream lists the
    shard open: no end of the shard, a failed read."""

    fmt = (
        "GetRecords answered without NextShardIterator, but DescribeStream lists shard "
        "{shard} open (no EndingSequenceNumber): not the shard's end, read again"
    )


class _Stopping(Exception):
    """The runtime began to stop while reading the stream was being retried: the worker
    goes on to stop its processor rather than retry on (a stop no longer waits between
    the attempts, so retrying would spin until the runtime's deadline killed it)."""


class ShardWorker(threading.Thread):
    def __init__(
        self,
        lease: Lease,
        leases: LeaseTable,
        streams: DynamoDBStreamsClient,
        settings: ShardSettings,
        new_child: Callable[[str, Callable[[str | None, int | None], str | None]], ProcessorChild],
        stopping: threading.Event,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        pause: Callable[[float], object] | None = None,
        settled_at: Callable[[str, str], float | None] | None = None,
    ) -> None:
        """``clock``, ``monotonic`` and ``pause`` (the wait before a restart; by default
        until ``stopping``) are the real ones but for tests that simulate time.
        ``settled_at(shard, destination)``: when a change of the shard last settled at the
        destination, as the processors' metrics say (None: unknown)."""
        super().__init__(name=f"shard-{lease.shard_id}", daemon=True)
        self.lease = lease
        self.leases = leases
        self.streams = streams
        self.settings = settings
        self.new_child = new_child
        self.stopping = stopping
        self.progress = ShardProgress(lease.shard_id, checkpoint=lease.checkpoint)
        self.error: BaseException | None = None
        # A processor that failed once the runtime was stopping (its shutdown, or a batch
        # while the stop began): no restart follows, and the stop is not clean.
        self.stop_failure: BaseException | None = None
        self.child: ProcessorChild | None = None
        # A stop that left records read past the lease's checkpoint (writes still out
        # after the flush, a checkpoint refused, a processor restarting, the lease lost):
        # (checkpoint, highest read). The runtime's last line says so.
        self.left_at_stop: tuple[str, str] | None = None
        # The highest record any processor of this worker was given (not reset when a
        # restarted one reads from the checkpoint again, as _highest_delivered is).
        self._read_to: str | None = None
        # The child has answered initialize: its RELEASE_SIGNAL handler is in place.
        self._child_ready = False
        self._highest_delivered: str | None = None
        # While the lease's checkpoint is LATEST (nothing checkpointed yet), that position
        # is pinned once, for as long as this worker runs: the iterator taken when the
        # shard started, moved on by every empty read, and once records arrived the first
        # of them. A restarted child, or a refreshed iterator, reads from there rather
        # than from a new LATEST, which would skip what was written in between.
        self._latest_iterator: str | None = None
        self._first_delivered: str | None = None
        self._last_created_us: int | None = None
        self._shard_ending = False
        self._backoff = Backoff(0.2, 10.0)
        self._clock = clock
        self._monotonic = monotonic
        self._pause = pause or self.stopping.wait
        self._checkpoints = 0  # checkpoints stored by this worker's children
        self._held = HeldLease(
            lease=lease,
            leases=leases,
            stopping=stopping,
            retry=self._wait_and_retry,
            expiry_s=settings.lease_expiry_s,
            backoff=self._backoff,
            monotonic=monotonic,
        )
        # Changes passed over (trimmed, an expired LATEST), told to the watermark.
        self._passed_over = PassedOver(
            shard_id=lease.shard_id,
            record_unread=settings.record_unread,
            attempts=settings.record_unread_attempts,
            stopping=stopping,
            clock=clock,
            backoff=self._backoff,
        )
        self._settled_at = settled_at
        # How many records a GetRecords call asks for.
        self._pages = PageSize(lease.shard_id, settings.max_records, settings.read_timeout_s)
        # The last read that succeeded for the running child: when, and how far behind
        # the tip it was (None: none yet).
        self._read_at: float | None = None
        self._millis_behind = 0
        # When (time.monotonic) the processor is next due to hear how far behind the
        # reader may be, while reads fail or go unanswered; None: no report since the
        # last read that succeeded (the next is due a report interval into the next call).
        self._report_due: float | None = None

    @property
    def shard_id(self) -> str:
        return self.lease.shard_id

    def pin_latest(self) -> None:
        """Take the shard's LATEST iterator now, if that is where it starts, so that every
        change made from now on is read. One attempt: an error is the caller's (the
        runtime tries the shard again on a later sync)."""
        if self.lease.checkpoint == LATEST and self._latest_iterator is None:
            self._latest_iterator = self.streams.get_shard_iterator(
                StreamArn=self.settings.stream_arn,
                ShardId=self.shard_id,
                ShardIteratorType="LATEST",
            )["ShardIterator"]

    def release_processor(self) -> None:
        """The runtime is stopping (``stopping`` is set): a processor holding a batch
        because its buffer is full (a destination accepts nothing) answers it now,
        without room, and this worker then sends it no more batches but its
        ``shutdownRequested``. Without this it would hold the batch until the runtime's
        deadline. A release sent between two batches applies to the next wait for room."""
        child = self.child
        if child is not None and self._child_ready:
            child.release()

    def lease_confirmed(self) -> None:
        """The lease was just renewed as ours (called by the runtime after a renewal)."""
        self._held.confirmed()

    def lease_taken(self) -> None:
        """The runtime's renewal found the lease taken by another worker (called before it
        stops): the child is told its lease is lost, so it drops what it still holds,
        rather than asked to shut down, which would flush those writes over the new
        owner's."""
        self._held.taken = True

    def recovered_since(self, failed_at: float) -> bool:
        """Whether the refusing destination has come back since ``failed_at``: a write
        settled there, or a checkpoint of every record delivered. Any checkpoint is not
        enough: it moves past changes that newer ones replaced while the destination
        accepts nothing."""
        progress = self.progress
        if (progress.last_full_checkpoint_at or 0.0) > failed_at:
            return True
        destination = progress.refusing_destination
        if destination is None or self._settled_at is None:
            return False
        settled = self._settled_at(self.shard_id, destination)
        return settled is not None and settled > failed_at

    def trouble(self, now: float) -> str | None:
        """Why this shard is not being replicated now, if it is not: the stream has not
        been readable for ``read_stall_after_s``, or its processor failed and is not
        running yet, or was restarted and has neither checkpointed nor run for
        ``recovered_after_s`` since (crash-looping). When the last failure carried exit
        code 3 (a destination refusing every write), only :meth:`recovered_since` counts:
        the restarted processor retries for minutes before it fails the same way."""
        progress = self.progress
        if progress.read_failing_since is not None and not progress.ended:
            failing_s = now - progress.read_failing_since
            if failing_s >= self.settings.read_stall_after_s:
                return f"reading the stream failed for {failing_s:.0f}s: {progress.read_error}"
        awaited = progress.answer_awaited_since
        if awaited is not None and now - awaited >= self.settings.read_stall_after_s:
            return (
                f"the processor (pid {progress.child_pid}) has not answered processRecords "
                f"for {now - awaited:.0f}s: it waits for room in its buffer (a destination "
                "takes no writes) or is stuck"
            )
        if progress.failed_at is None or progress.ended:
            return None
        if progress.child_up_since is None:
            return (
                f"processor not running (restart {progress.restarts}); last failure: "
                f"{progress.last_failure}"
            )
        if progress.refusing:
            if self.recovered_since(progress.failed_at):
                return None
        else:
            checkpointed = (progress.last_checkpoint_at or 0.0) > progress.failed_at
            ran = now - progress.child_up_since >= self.settings.recovered_after_s
            if checkpointed or ran:
                return None
        return (
            f"processor restarted {progress.restarts} times and not recovered; last "
            f"failure: {progress.last_failure}"
        )

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # noqa: BLE001  # reported to the runtime, which stops
            self.error = error
            log.error(
                "shard worker stopped",
                shard=self.shard_id,
                error=str(error),
                error_type=type(error).__name__,
            )
        finally:
            if self.child is not None:
                self.child.kill()
            if self.error is None:
                self._note_left_behind()
            lost = self._held.taken or isinstance(self.error, LeaseLost)
            if not (lost or self._held.release_tried or self.progress.ended):
                # The child is gone (a failure, or a stop between processors) and the
                # checkpoint is the last one it stored: let another worker take the shard
                # at once rather than after the failover.
                self._held.release()

    # -- main loop ------------------------------------------------------------------------

    def _run(self) -> None:
        failures: deque[float] = deque()
        refusals = 0  # exit-3 failures in a row, no recovery between them
        while not self.stopping.is_set():
            child = self.new_child(self.shard_id, self._checkpoint)
            self._child_ready = False  # before the new child is seen (release_processor)
            self.child = child
            # It reads from the checkpoint: where the last child's reads were says nothing
            # of what it lacks (a backlog, changes the last one left unwritten).
            self._read_at, self._millis_behind, self._report_due = None, 0, None
            try:
                child.start()
                self.progress.child_pid = child.pid
                self._highest_delivered = None
                child.initialize(
                    self.shard_id, self.lease.checkpoint, self.lease.sub_sequence_number
                )
                self._child_ready = True
                self.progress.child_up_since = self._clock()
                if self._pump(child):
                    self.progress.ended = True
                    child.close()
                    return
                self._shut_down(child)
                return
            except ChildFailed as error:
                child.kill()
                if self.stopping.is_set():
                    if not error.timed_out:
                        self._failed_while_stopping(error)
                    return
                now = self._monotonic()
                failures.append(now)
                while failures and now - failures[0] > self.settings.restart_window_s:
                    failures.popleft()
                refused = error.exit_code == EnvironmentProblem.exit_code
                failed_before = self.progress.failed_at
                if failed_before is not None and self.recovered_since(failed_before):
                    refusals = 0
                refusals = refusals + 1 if refused else 0
                self.progress.restarts += 1
                self.progress.child_up_since = None
                self.progress.failed_at = self._clock()
                self.progress.last_failure = str(error)
                self.progress.refusing = refused
                self.progress.refusing_destination = (
                    refusing_destination(error.reason) if refused else None
                )
                limit = self.settings.restart_limit
                if refused and error.reason and (refusals > limit or len(failures) > limit):
                    # A destination refusing every write: one line and exit 3, as a
                    # missing destination table is at start-up. Each such failure takes
                    # the processor minutes of retries, so they are counted in a row
                    # (with no recovery between them: see recovered_since), not in a time window.
                    if refusals > limit:
                        times = f"{refusals} times in a row"
                    else:
                        times = f"{len(failures)} times in {self.settings.restart_window_s:.0f}s"
                    raise EnvironmentProblem(
                        f"{error.reason} (shard {self.shard_id}: the processor stopped "
                        f"on this {times}; nothing was checkpointed past the changes it "
                        "could not write)"
                    ) from None
                if len(failures) > limit:
                    raise ChildKeepsFailing(
                        f"shard {self.shard_id}: the processor failed {len(failures)} times in "
                        f"{self.settings.restart_window_s:.0f}s; last: {error}"
                    ) from None
                log.warning(
                    "processor child failed; restarting from the checkpoint",
                    shard=self.shard_id,
                    error=str(error),
                    restarts=self.progress.restarts,
                )
                try:
                    ours, fresh = self._held.is_ours(self._held.read)
                except (ClientError, BotoCoreError):
                    if self.stopping.is_set():
                        return  # a lease unreadable as the stop began: not a failure
                    raise
                if fresh is None or not ours:
                    raise LeaseLost(
                        f"shard {self.shard_id}: lease gone while restarting: taken over by "
                        f"{self._held.taker(fresh)}"
                    ) from None
                self.lease.checkpoint = fresh.checkpoint
                self.lease.sub_sequence_number = fresh.sub_sequence_number
                self._pause(min(5.0, 0.5 * len(failures)))

    def _pump(self, child: ProcessorChild) -> bool:
        """Feed the child until the shard ends (True) or the runtime stops (False)."""
        try:
            return self._feed(child)
        except _Stopping:
            return False

    def _feed(self, child: ProcessorChild) -> bool:
        iterator = self._resume_iterator(child)
        attempt = 0
        while not self.stopping.is_set():
            try:
                response, reported = self._get_records(child, iterator)
            except (ClientError, BotoCoreError) as error:
                code = error_code(error)
                if code == "ExpiredIteratorException":
                    if self._reading_pinned_latest():
                        log.warning(
                            "the shard's LATEST position, held since it started, expired "
                            "before any record arrived; reading on from the stream's tip: "
                            "changes made in between may not be replicated",
                            shard=self.shard_id,
                        )
                        self._passed_over.note(0, spans.EXPIRED)
                        self._latest_iterator = self._iterator(child, LATEST)
                    iterator = self._resume_iterator(child)
                    continue
                if code == "TrimmedDataAccessException":
                    position = self._highest_delivered or self.lease.checkpoint
                    iterator = self._trimmed(child, position)
                    continue
                if isinstance(error, ReadTimeoutError):
                    self._pages.unanswered()
                self._read_failed(child, error)
                self._wait_and_retry(error, attempt, child=child)
                attempt += 1
                if attempt % 3 == 0:
                    # An iterator can go bad in ways the service reports only as a 500;
                    # a fresh one after the highest record delivered is always safe.
                    iterator = self._resume_iterator(child)
                continue
            attempt = 0
            self._report_due = None
            self.progress.read_failing_since = None
            self.progress.read_error = None
            records = response.get("Records", [])
            batch = [to_daemon_record(record) for record in records]
            if self._passed_over.pending:
                # Before the child sees anything after the gap, whose claim would pass it.
                self._passed_over.record(created_ms_of(records[0]) * 1000 if records else None)
            # DynamoDB Streams says nothing of how far behind an empty read is (records
            # may lie further along the shard): not known, rather than 0. Unless the
            # processor answered a report while it was out: the watermark would then
            # take it as every change made before that answer read, though the read was
            # sent earlier; 1 ms (not at the tip) leaves the claim to the next read.
            millis_behind: int | None = 1 if reported else None
            if records:
                self._last_created_us = created_ms_of(records[-1]) * 1000
                millis_behind = max(0, int(self._clock() * 1000) - created_ms_of(records[-1]))
            self._millis_behind = millis_behind or 0
            self._read_at = self._clock()
            # The highest number delivered: a stream's last record's, but an unpatched
            # moto can end a read on a lower number (replicator/intake.py). The processor
            # may checkpoint at it, and moto's own iterator goes on after it.
            before = self._highest_delivered
            if records:
                highest = max((record["sequenceNumber"] for record in batch), key=int)
                if before is None or int(highest) > int(before):
                    self._highest_delivered = highest
                    if self._read_to is None or int(highest) > int(self._read_to):
                        self._read_to = highest
                if self.lease.checkpoint == LATEST and self._first_delivered is None:
                    self._first_delivered = batch[0]["sequenceNumber"]
            try:
                self._held.check()
            except (ClientError, BotoCoreError):
                # Read again and again while the lease table fails, until the stop: the
                # stop's own check (ours_at_stop) decides, as for any stop.
                if self.stopping.is_set():
                    raise _Stopping from None
                raise
            self._answered(child, batch, millis_behind)
            if batch:
                self.progress.records_delivered += len(batch)
                self.progress.last_records_at = time.time()
            # The stubs call NextShardIterator always present; a closed shard's end has
            # none (confirmed by DescribeStream in _get_records).
            next_iterator = cast("str | None", response.get("NextShardIterator"))
            if next_iterator is None:
                self._shard_ending = True
                child.shard_ended()
                if self.lease.checkpoint != SHARD_END:
                    raise ChildFailed(
                        f"shard {self.shard_id}: child did not checkpoint the shard end"
                    )
                return True
            iterator = next_iterator
            if self._reading_pinned_latest():
                self._latest_iterator = iterator  # kept fresh: iterators live 15 minutes
            if self._highest_delivered == before:
                # Nothing past what was delivered: an empty read, or moto serving again
                # the records after a lower number it ended a read on, which it does at
                # every read until the shard grows.
                self.stopping.wait(self.settings.idle_s)
        return False

    def _read_failed(self, child: ProcessorChild, error: BaseException) -> None:
        """A read of the stream failed (it is retried): note since when reads fail, for
        ``trouble``, and tell the processor how far behind the reader may now be.

        Nothing is known of the stream since the last read that succeeded, so the reader
        is at least as far behind as it was then, plus the time since: the processor's
        lag grows by a second per second while the stream cannot be read, instead of
        reading 0 as if the reader were at the tip. A failed read shows nothing of where
        the tip is either: a first read that fails (a restart with a backlog, GetRecords
        throttled) is passed on as nothing at all, neither a lag nor an empty read the
        watermark would take as the reader at the tip (see :meth:`_tell_behind`)."""
        progress = self.progress
        if progress.read_failing_since is None:
            # Since the last read that succeeded, as the lag counts: a read that hung
            # until botocore's timeout before it failed was not reading meanwhile.
            progress.read_failing_since = self._last_read_or(self._clock())
        progress.read_error = str(error)
        self._tell_behind(child)

    def _last_read_or(self, otherwise: float) -> float:
        """When the last read that succeeded was answered (this child's), or ``otherwise``."""
        return self._read_at if self._read_at is not None else otherwise

    def _get_records(
        self, child: ProcessorChild, iterator: str
    ) -> tuple[GetRecordsOutputTypeDef, bool]:
        """One GetRecords call (see :meth:`_while_out`), and whether the processor was
        told anything while it was out, or while the shard's end was confirmed."""
        page = self._pages.records
        asked_at = time.monotonic()
        result, reported = self._while_out(
            child,
            "GetRecords",
            lambda: self.streams.get_records(ShardIterator=iterator, Limit=page),
        )
        self._pages.answered(page, asked_at)
        if not isinstance(result.get("Records"), list):
            raise MalformedAnswer(
                operation="GetRecords", reason="no Records", body=repr(result)[:80]
            )
        if result.get("NextShardIterator") is None:
            reported = self._confirm_shard_end(child) or reported
        return result, reported

    def _while_out(
        self, child: ProcessorChild, operation: str, call: Callable[[], _T]
    ) -> tuple[_T, bool]:
        """Make one call to the stream (``operation``: its name) on a thread of its own,
        so that while it goes unanswered the processor keeps hearing how far behind the
        reader may be (see :meth:`_tell_behind`): every ``outstanding_read_report_s``, as
        a failed read and the wait before its retry tell it, at one pace across them
        (see :meth:`_until_report`). GetRecords and GetShardIterator alike: after three
        failed reads the worker asks for a fresh iterator, and an endpoint holding every
        request holds that one as long. The processor is only ever spoken to from this
        thread. The call is left to botocore's timeouts and retries, as before; a stop
        waits for it. Also whether the processor was told anything while it was out."""
        outcome: list[_T | BaseException] = []
        done = threading.Event()

        def make() -> None:
            try:
                outcome.append(call())
            except PARSER_ERRORS as error:
                outcome.append(unparsed(operation, error, self._reading_where()) or error)
            except BaseException as error:  # noqa: BLE001  # raised on the worker's thread
                outcome.append(error)
            finally:
                done.set()

        sent_at = self._clock()
        threading.Thread(target=make, name=f"read-{self.shard_id}", daemon=True).start()
        reported = False
        while not done.wait(self._until_report()):
            reported = self._tell_behind(child) or reported
            self._read_unanswered(operation, sent_at)
        (result,) = outcome
        if isinstance(result, BaseException):
            raise result
        return result, reported

    def _reading_where(self) -> str:
        """Where the shard is being read, for a message about an answer that could not be
        read: after the highest record delivered, else from the checkpoint."""
        if self._highest_delivered is not None:
            return f"; shard {self.shard_id}, read after sequence number {self._highest_delivered}"
        return f"; shard {self.shard_id}, read from its checkpoint {self.lease.checkpoint}"

    def _until_report(self) -> float:
        """Seconds until the processor is due to hear how far behind the reader may be:
        ``outstanding_read_report_s`` after it last heard it while reads fail or go
        unanswered, so the reports go on at that pace through the calls and the waits
        between their retries (a wait shorter than the pace does not start it again);
        else after now (a call's first report, since the last read that succeeded)."""
        if self._report_due is None:
            self._report_due = time.monotonic() + self.settings.outstanding_read_report_s
        return max(0.0, self._report_due - time.monotonic())

    def _read_unanswered(self, operation: str, sent_at: float) -> None:
        """A read still out counts for ``trouble`` as a failing one does: a stream that
        hangs (a proxy holding requests) is no more readable than one that refuses, and
        /healthz must not wait for botocore's read timeout to say so."""
        progress = self.progress
        if progress.read_failing_since is None:
            progress.read_failing_since = self._last_read_or(sent_at)
        if progress.read_error is None or _UNANSWERED in progress.read_error:
            waited_s = self._clock() - sent_at
            progress.read_error = f"{operation}{_UNANSWERED}{waited_s:.0f}s ago)"

    def _confirm_shard_end(self, child: ProcessorChild) -> bool:
        """A GetRecords answer without ``NextShardIterator`` is the shard's end only if
        DescribeStream says the shard is closed (has an ``EndingSequenceNumber``) or no
        longer lists it: SHARD_END is checkpointed for good, so an answer that lost its
        iterator on the way must not end an open shard. Raises :class:`ShardStillOpen`
        (a failed read, retried) otherwise; a shard ends once every few hours at most,
        so the pages of DescribeStream this reads cost nothing that matters. Read as
        any call to the stream (:meth:`_while_out`); whether the processor was told
        anything meanwhile."""
        (_, shards), reported = self._while_out(
            child,
            "DescribeStream",
            lambda: list_shards(self.streams, self.settings.stream_arn),
        )
        if any(shard.shard_id == self.shard_id and not shard.closed for shard in shards):
            raise ShardStillOpen(shard=self.shard_id)
        return reported

    def _tell_behind(self, child: ProcessorChild) -> bool:
        """Tell the processor the reader is at least as far behind as at the last read
        that succeeded, plus the time since: nothing is known of the stream meanwhile.
        Whether it was told.

        Nothing before this child's first read is answered: it reads from the
        checkpoint, and no time measured since then bounds what it lacks (a backlog
        written an hour before the start, changes a failed child left unwritten): a
        lag counted from the read's sending showed 1 s, then 2 s, for a backlog 35 s
        old. The lag docs promise an upper bound, and no lag series until the
        processor knows where its reader is. Never less than 1 ms: the processor takes
        an empty batch at 0 (or null) behind as the reader at the tip
        (``processor.at_the_tip``), and the watermark as every change made before it
        read."""
        self._report_due = time.monotonic() + self.settings.outstanding_read_report_s
        if self._read_at is None:
            return False
        behind_ms = self._millis_behind + max(0, int((self._clock() - self._read_at) * 1000))
        self._answered(child, [], max(1, behind_ms))
        return True

    def _answered(
        self, child: ProcessorChild, batch: list[dict[str, Any]], millis_behind: int | None
    ) -> None:
        """``processRecords``, with the time it has been out kept for :meth:`trouble`."""
        now = self._clock()
        self.progress.awaited_behind_since = (
            max(record["approximateArrivalTimestamp"] for record in batch) / 1000
            if batch
            else now - (millis_behind or 0) / 1000
        )
        self.progress.answer_awaited_since = now
        try:
            child.process_records(batch, millis_behind)
        finally:
            self.progress.answer_awaited_since = None
            self.progress.awaited_behind_since = None

    def _shut_down(self, child: ProcessorChild) -> None:
        """Stop the child: ``shutdownRequested`` (it flushes its pending writes and
        checkpoints) and the lease released while the lease is ours; ``leaseLost`` (it
        drops them) once another worker has it.

        The runtime tells only the worker whose renewal failed (:meth:`lease_taken`); the
        others stop because it does. A runtime that was hung while another worker took
        all its leases would have them flush old changes over the new owner's: so a
        worker not told reads its lease first (one GetItem)."""
        held = self._held
        if not held.taken and not held.ours_at_stop():
            held.taken = True
        if held.taken:
            try:
                child.lease_lost(timeout=self.settings.shutdown_timeout_s)
            except ChildFailed as error:
                log.warning(
                    "processor did not take the lost lease in time",
                    shard=self.shard_id,
                    error=str(error),
                )
            child.close(timeout=5.0)
            return  # the lease is the new owner's: nothing to release
        try:
            child.shutdown_requested(timeout=self.settings.shutdown_timeout_s)
        except ChildFailed as error:
            if error.timed_out:
                # Still flushing (past kcl.shutdown_flush_ms and the watermark's wait):
                # nothing failed, and nothing is checkpointed past what it had not applied.
                log.warning(
                    "processor did not finish its shutdown", shard=self.shard_id, error=str(error)
                )
            else:
                self._failed_while_stopping(error)
        child.close(timeout=5.0)
        self._held.release()

    def _note_left_behind(self) -> None:
        """Whether this worker's stop (the lease released, so its checkpoint is the one
        stored) left records read past the checkpoint."""
        read_to, checkpoint = self._read_to, self.lease.checkpoint
        if read_to is None or checkpoint == SHARD_END:
            return
        if checkpoint.isdigit() and int(checkpoint) >= int(read_to):
            return
        self.left_at_stop = (checkpoint, read_to)

    def _failed_while_stopping(self, error: ChildFailed) -> None:
        """The processor failed (exited, broke the protocol) once the runtime was
        stopping: no restart will show whether it would fail again, so the stop is not
        clean. It ends as the same failure would without a stop: with the child's exit
        code and reason when it gave them (3: a destination refusing writes, a
        dead-letter target that cannot store), else as an unexpected failure."""
        log.error(
            "processor failed while stopping; nothing is checkpointed past what it had not applied",
            shard=self.shard_id,
            error=str(error),
        )
        if error.exit_code == EnvironmentProblem.exit_code and error.reason:
            self.stop_failure = EnvironmentProblem(
                f"{error.reason} (shard {self.shard_id}: the processor stopped on this while "
                "the runtime was stopping; nothing was checkpointed past the changes it "
                "could not write)"
            )
        else:
            self.stop_failure = error

    # -- iterators ------------------------------------------------------------------------

    def _reading_pinned_latest(self) -> bool:
        """Whether the shard still starts at its pinned LATEST and no record has come."""
        return (
            self.lease.checkpoint == LATEST
            and self._first_delivered is None
            and self._highest_delivered is None
        )

    def _resume_iterator(self, child: ProcessorChild) -> str:
        """Where reading goes on: after the highest record this child was given, else from
        the lease's checkpoint; a LATEST checkpoint is the position pinned for it."""
        if self._highest_delivered is not None:
            return self._iterator(child, self._highest_delivered)
        if self.lease.checkpoint != LATEST:
            return self._iterator(child, self.lease.checkpoint)
        if self._first_delivered is not None:
            return self._iterator(child, self._first_delivered, at=True)
        if self._latest_iterator is None:
            self._latest_iterator = self._iterator(child, LATEST)
        return self._latest_iterator

    def _iterator(self, child: ProcessorChild, position: str, at: bool = False) -> str:
        """An iterator at TRIM_HORIZON or LATEST, or after (``at``: at) a sequence number.

        Made and retried as GetRecords is (an outage that began while the iterator went
        stale meets both): the processor keeps hearing how far behind the reader may be
        while the request is out and between its retries (:meth:`_while_out`), the shard
        is reported once it has failed (or been out) for the stall time, and a stop ends
        the retries (:class:`_Stopping`)."""
        kwargs: dict[str, Any] = {"StreamArn": self.settings.stream_arn, "ShardId": self.shard_id}
        if position in (TRIM_HORIZON, LATEST):
            kwargs["ShardIteratorType"] = position
        elif position == AT_TIMESTAMP:
            raise self.leases.bad_checkpoint(
                self.shard_id,
                position,
                "a start at a time (a DynamoDB stream has no shard iterator at a time)",
            )
        elif position in SENTINELS:
            raise ChildFailed(f"shard {self.shard_id}: cannot read from {position}")
        else:
            kwargs["ShardIteratorType"] = "AT_SEQUENCE_NUMBER" if at else "AFTER_SEQUENCE_NUMBER"
            kwargs["SequenceNumber"] = position
        attempt = 0
        while True:
            try:
                # Reports while it is out come before the next GetRecords is sent: they
                # do not keep that read's empty answer from claiming the tip.
                answer, _ = self._while_out(
                    child, "GetShardIterator", lambda: self.streams.get_shard_iterator(**kwargs)
                )
                iterator: str = answer["ShardIterator"]
                return iterator
            except (ClientError, BotoCoreError) as error:
                if error_code(error) == "TrimmedDataAccessException":
                    return self._trimmed(child, position)
                from_lease = "SequenceNumber" in kwargs and position == self.lease.checkpoint
                if from_lease and _refuses_position(error):
                    raise self.leases.bad_checkpoint(
                        self.shard_id,
                        position,
                        f"not a sequence number of the stream ({excerpt(str(error))})",
                    ) from None
                if isinstance(error, ReadTimeoutError):
                    self._pages.unanswered()
                self._read_failed(child, error)
                self._wait_and_retry(error, attempt, child=child)
                attempt += 1

    def _trimmed(self, child: ProcessorChild, position: str) -> str:
        message = (
            f"shard {self.shard_id}: the stream no longer holds the data after {position} "
            "(older than its 24-hour retention); changes in between were never replicated"
        )
        if self.settings.on_trimmed is OnTrimmedData.FAIL:
            raise TrimmedData(
                message + ". Set source.on_trimmed_data: restart_from_trim_horizon, start the "
                "replicator, then run `replicator backfill` while it runs to copy what was "
                "missed and `replicator verify --repair` for the deletes a copy cannot make; "
                "then set it back to fail (left on, the next trimmed checkpoint is one error "
                "line, not a stop)."
            )
        log.error(
            message + "; continuing from the oldest record the stream holds",
            shard=self.shard_id,
            policy=self.settings.on_trimmed.value,
        )
        self._passed_over.note(self._last_created_us or 0, spans.TRIMMED)
        return self._iterator(child, TRIM_HORIZON)

    def _wait_and_retry(
        self,
        error: BaseException,
        attempt: int,
        what: str = "reading the stream",
        child: ProcessorChild | None = None,
    ) -> None:
        """Back off before retry ``attempt``, or raise when no retry can help. With
        ``child`` (the stream being read for it), the processor is told how far behind
        the reader may be about once a second meanwhile, at the pace of the reports on
        the calls before and after (:meth:`_until_report`), so its lag grows with the
        outage rather than in steps as long as the backoff; :class:`_Stopping` once the
        runtime stops."""
        kind = classify(error)
        if kind in (ErrorKind.DENIED, ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.REJECTED):
            # No retry fixes these (permissions changed, credentials or this host's clock
            # refused, stream or table gone): the environment is not as the job says,
            # which the CLI reports as exit 3.
            explain = self.settings.explain
            if explain is not None and isinstance(error, ClientError | BotoCoreError):
                raise explain(error, f"shard {self.shard_id}: {what}") from error
            raise EnvironmentProblem(f"shard {self.shard_id}: {what} failed: {error}") from error
        delay = self._backoff.delay(attempt)
        log.warning(
            f"{what} failed; retrying",
            shard=self.shard_id,
            error=str(error),
            delay_s=round(delay, 2),
        )
        if child is None:
            self.stopping.wait(delay)
            return
        # Real time: the wait is real even where tests simulate the clock.
        deadline = time.monotonic() + delay
        while True:
            left, due = deadline - time.monotonic(), self._until_report()
            if self.stopping.wait(max(0.0, min(left, due))):
                raise _Stopping
            if left <= due:
                return  # a report due now is the next call's first
            self._tell_behind(child)

    # -- checkpoints (called from the child protocol, on this thread) ---------------------

    def _checkpoint(self, sequence_number: str | None, sub: int | None) -> str | None:
        if sequence_number is None:
            target = SHARD_END if self._shard_ending else self._highest_delivered
            if target is None:
                return None
        else:
            if not sequence_number.isdigit():
                return "InvalidStateException"
            highest = self._highest_delivered
            if highest is None or int(sequence_number) > int(highest):
                log.error(
                    "child asked to checkpoint past the highest record it was given",
                    shard=self.shard_id,
                    sequence_number=sequence_number,
                    highest_delivered=highest,
                )
                return "InvalidStateException"
            target = sequence_number
        try:
            self.leases.checkpoint(self.lease, target, sub or 0)
        except LeaseLost as error:
            log.error(
                "checkpoint refused: the lease is no longer ours",
                shard=self.shard_id,
                error=str(error),
            )
            return "ShutdownException"
        except (ClientError, BotoCoreError) as error:
            if classify(error) is ErrorKind.THROTTLED:
                return "ThrottlingException"
            log.warning("checkpoint write failed", shard=self.shard_id, error=str(error))
            return "KinesisClientLibDependencyException"
        self.progress.checkpoint = target
        self.progress.last_checkpoint_at = self._clock()
        self._held.confirmed()
        if target in (self._highest_delivered, SHARD_END):
            self.progress.last_full_checkpoint_at = self.progress.last_checkpoint_at
        self._checkpoints += 1
        return None


def _refuses_position(error: ClientError | BotoCoreError) -> bool:
    """Whether GetShardIterator refused the sequence number itself (botocore's check of
    its length, or the service's validation), which no retry changes."""
    return isinstance(error, ParamValidationError) or error_code(error) == "ValidationException"
