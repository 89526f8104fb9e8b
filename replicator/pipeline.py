"""One shard's pipeline: buffer -> conflict rules -> writers, all destinations in parallel.

Changes come in from the shard's intake (replicator/intake.py). A write that fails for
good is stored as a dead letter here, before the buffer counts it settled, so the
checkpoint never passes a change that was neither applied nor dead-lettered; a dead
letter that cannot be stored stops the shard like any other writer failure. Likewise a
change that lost its conflict keeps its record open in the buffer (``hold``) until the
conflict log has stored its entry, or given it up and counted it
(replicator/conflictlog/recorder.py): the checkpoint never passes a lost conflict left
unrecorded and uncounted, while the destination's other writes go on. A write whose
request may still land late (DestinationWriter.late_write_window_s) settles at once, and
its key is held in the buffer (``hold_key``) until a timer ends the hold: no thread
waits it out, and only that item's next change (after a conditional put, its next
delete; after a conditional delete, its next put) waits.

At most ``max_in_flight`` writes per destination are in flight, so a slow destination
neither stalls the others nor grows without limit, and intake blocks (backpressure)
while ``max_buffered`` changes are not yet applied everywhere. A destination written
over the direct path (writers/wire.py) sends each write's first request from one event
loop (writers/loopwire.py): a plain 200 settles the change right there, on the loop
thread, so the common case costs no thread hop; anything else (a failed condition, an
error, a timeout, a writer with more to do after a 200) goes to the destination's
thread pool with that answer, where the writer goes on exactly as if it had sent the
request itself (retries, refusals, conflicts, dead letters live in that one code). Other
writers (botocore's pipeline, the source writer) run wholly on their thread pool. The
intake reads a batch's records into the buffer on that same loop thread when there is
one (``run_reading``), so that one thread, not two, is busy with the shard's records.
The processor hands a batch over and returns to the daemon once it is read; the writes
overlap with reading the next batch, and the checkpoint follows the buffer's safe
position.

All shared state is guarded by one condition variable; a writer that fails in a way
no retry can fix records the error and wakes the processor, which ends the process.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog

from replicator.buffer import ChangeBuffer, Entry, Slot
from replicator.deadletter.failed import DeadLetterer
from replicator.exceptions import DestinationRefused, WriteCancelled
from replicator.filters import Route
from replicator.items import KeyId, describe_key
from replicator.metrics import Metrics
from replicator.records import Change, Event
from replicator.rules import WriteRequest
from replicator.timer import Timer
from replicator.watermark.publisher import ShardWatermark
from replicator.writers.destination import DestinationWriter
from replicator.writers.loopwire import EventLoopThread, LoopWire, RequestWire, WireFactory
from replicator.writers.outcomes import FirstAnswer, WriteResult
from replicator.writers.source import SourceWriter
from replicator.writers.wire import WireWriteClient

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

# What :meth:`Pipeline.outstanding` counts the changes waiting for their conflict-log
# entries under, beside the destinations' labels.
CONFLICT_LOG_WAIT = "conflict-log entries"

# Done records held only for checkpoint order, behind one that is still open, are
# cheap but not free: past this multiple of max_buffered, intake waits as well.
_TRACKED_FACTOR = 10

# Threads per destination for the writes that leave the event loop (retries, conflicts,
# timeouts): they are few while the destination answers, and backing off under throttling
# does not need hundreds.
_SLOW_PATH_THREADS = 32
# Threads per destination whose writes all run on threads (botocore's pipeline, custom
# rules, the source writer) or whose every write goes on after its 200 (active-active
# tombstones): one per write in flight, but never the hundreds ``max_in_flight`` allows
# on the event loop; further writes wait in the pool's queue, still counted in flight.
_THREADED_WRITES = 128


class ChangeWriter(Protocol):
    """What the pipeline needs of a destination's writer (or of the source writer)."""

    cancelled: threading.Event

    def write(self, change: Change) -> WriteResult: ...


class Destination(ChangeWriter, Protocol):
    """A destination's writer: a failed write is dead-lettered under these names."""

    label: str
    table: str
    region: str


@dataclass(frozen=True, slots=True)
class _Recheck:
    """An active-active put to check again once its late-write window has passed: its
    destination, the change, the record it keeps open and the hold on its key."""

    label: str
    change: Change
    slot: Slot
    key_hold: int | None


class ShardPipeline:
    def __init__(
        self,
        writers: Mapping[str, Destination],
        buffer: ChangeBuffer,
        metrics: Metrics,
        shard_id: str,
        max_in_flight: int,
        max_buffered: int,
        *,
        dead_letters: DeadLetterer,
        on_fatal: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.time,
        watermark: ShardWatermark | None = None,
        source: SourceWriter | None = None,
        event_loop: bool = True,
        wire_factory: WireFactory = LoopWire,
    ) -> None:
        """``event_loop``: False keeps every write on the thread pools; ``wire_factory``
        builds each direct destination's transport on the loop."""
        self.writers: dict[str, Destination] = dict(writers)
        self.watermark = watermark
        self.source = source
        # Every buffer destination: the destinations, and (active-active) the source
        # writer, which settles each change at the source like one more destination.
        self._targets: dict[str, ChangeWriter] = dict(self.writers)
        if source is not None:
            self._targets[source.label] = source
        # Destinations by region: a loop-skipped echo is held by the region it names.
        self._by_region: dict[str, list[str]] = {}
        for label, writer in self.writers.items():
            self._by_region.setdefault(writer.region, []).append(label)
        self.buffer = buffer
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.shard_id = shard_id
        self.max_in_flight = max_in_flight
        self.max_buffered = max_buffered
        self._on_fatal = on_fatal
        self._clock = clock
        self._cond = threading.Condition()
        self._fatal: BaseException | None = None
        self._closed = False
        self._batches: deque[tuple[int, float]] = deque()
        self._millis_behind = 0
        # When the last batch arrived (``clock``), and whether intake has been held for
        # room since (backpressure): the reader then reads nothing, and its distance from
        # the tip grows by the time since that batch arrived.
        self._arrived_at = 0.0
        self._held = False
        # The creation time (µs) of the first record of the batch being read, until it is
        # read: its changes are not in the buffer yet, but already read and not applied.
        self._arriving_us: int | None = None
        # Set by ``release_wait`` (a stop): the next wait for room ends without room.
        self._released = False
        # No lag is shown before the first processRecords: until then nothing says
        # whether the reader is at the tip, and 0 would claim it is.
        self._read_once = False
        self._squashed_counted = 0
        # Applied writes settled on the loop, counted into the metrics at ``report``.
        self._applied: Counter[tuple[str, str]] = Counter()
        self._delays: dict[str, list[float]] = {}
        # Writes applied on the loop in this turn, per destination (loop thread only).
        self._applied_here: dict[str, list[Entry]] = {}
        # Per destination, when a change last settled there (applied, unchanged, lost,
        # dead-lettered, or a replaced change's write that landed): health judges a
        # destination stuck by it, not by the checkpoint, which moves past replaced
        # changes while a destination accepts nothing.
        self._progress_at: dict[str, float] = {}
        # When this processor started the shard: the runtime keeps the earliest of its
        # processors', which health counts a destination that settled nothing from.
        self._started_at = clock()
        # Ends the holds of keys whose write sent a request that may still land late.
        self._holds = Timer(f"write-holds-{shard_id}")
        # Active-active puts to check again once their late-write window has passed
        # (WriteResult.recheck), by id, from the write until the check is made. On a timer
        # of their own: a stop ends the holds, not these checks, which its flush waits for.
        self._rechecks: dict[int, _Recheck] = {}
        self._recheck_ids = itertools.count()
        self._recheck_timer = Timer(f"write-rechecks-{shard_id}")
        self._loop: EventLoopThread | None = None
        self._wires: dict[str, RequestWire] = {}
        direct = {
            label: client
            for label, writer in self.writers.items()
            if event_loop and (client := _direct_client(writer)) is not None
        }
        if direct:
            self._loop = EventLoopThread(f"write-loop-{shard_id}")
            self._wires = {
                label: wire_factory(client, self._loop.loop) for label, client in direct.items()
            }
        self._executors = {
            label: ThreadPoolExecutor(
                min(max_in_flight, self._threads_for(label)),
                thread_name_prefix=f"write-{label}",
            )
            for label in self._targets
        }

    def _threads_for(self, label: str) -> int:
        writer = self._targets[label]
        on_loop = label in self._wires
        if on_loop and isinstance(writer, DestinationWriter) and writer.settled_by_success:
            return _SLOW_PATH_THREADS
        return _THREADED_WRITES

    # -- intake (processor thread) --------------------------------------------------------

    def run_reading(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function(*args)``, a part of the intake that never waits, on the event
        loop's thread when there is one (else here) and return its result.

        Why: the loop plans and settles the writes, and reading the records there as well
        keeps one thread busy instead of two. With two, the intake thread and the loop
        thread hand the GIL and this pipeline's lock to each other all through a batch,
        which cost more CPU than the reading itself (docs/benchmarks.md). The loop
        answers no write while it reads a batch, as it answered none while it waited for
        the GIL."""
        if self._loop is None:
            return function(*args)
        return self._loop.run(function, *args)

    def submit(self, change: Change) -> None:
        """Queue a change; it is written after ``dispatch``, so a batch squashes first."""
        self.submit_all((change,))

    def submit_all(self, changes: Sequence[Change]) -> None:
        """Queue changes in their order, under one hold of the lock: the event loop
        settles writes under the same lock, and taking it once per change would hand
        it (and the GIL) back and forth between the two threads once per change."""
        if not changes:
            return
        with self._cond:  # held: no writer thread can take or settle them in between
            buffer = self.buffer
            add = buffer.add
            watermark = self.watermark
            if watermark is None:
                for change in changes:
                    add(change)
                return
            # The watermark takes the changes queued in a row together, in order, and
            # each dropped one after those before it.
            received: list[Change] = []
            for change in changes:
                behind = None if add(change) else buffer.newest_queued(change.key)
                if behind is None:
                    received.append(change)
                else:
                    if received:
                        watermark.received_all(received)
                        received = []
                    watermark.dropped(change, behind=behind)
            if received:
                watermark.received_all(received)

    def dispatch(self) -> None:
        """Start writes for everything queued, up to each destination's in-flight limit."""
        with self._cond:
            squashed = self.buffer.squashed
        self.metrics.squashed.inc(squashed - self._squashed_counted)
        self._squashed_counted = squashed
        batch: list[tuple[str, list[Entry]]] = []
        for label in self._targets:
            entries = self._take(label)
            if not entries:
                continue
            if label in self._wires:
                batch.append((label, entries))
            else:
                self._submit(label, entries)
        if batch and self._loop is not None:  # one hand-over to the loop for all of them
            self._loop.call(self._send_batch, batch)

    def skip(
        self, change: Change, route: Route, *, replaces_older: bool, origin: str | None = None
    ) -> None:
        """A change not sent on (``route``: loop-skipped or filtered), counted per destination.

        ``replaces_older``: a loop-skipped change that may replace the older queued changes
        to its item where its state already is (:meth:`echo_holders` of its ``origin``
        stamp); everywhere else they are still written."""
        holders = self.echo_holders(origin) if replaces_older else ()
        with self._cond:
            self.buffer.add_skipped(change, replaces_older_at=holders)
            if self.watermark is not None:
                self.watermark.skipped(change, replaces_older_at=holders)
        for label in self.writers:
            self.metrics.writes.labels(label, change.event.op, route.value).inc()

    def echo_holders(self, origin: str | None) -> tuple[str, ...]:
        """The buffer destinations that hold a loop-skipped change stamped ``origin``.

        The echo of a change another region's job wrote here: that region's table holds
        it (or something newer), the third regions of a mesh may not yet. So: the one
        destination in that region (the origin value defaults to the region), or the
        only destination of a job that has one (a pair: the echo can only come from
        it), and the source writer, whose table the record was read from. Two
        destinations in the origin's region cannot be told apart: neither is assumed.
        """
        if len(self.writers) == 1:
            held = list(self.writers)
        else:
            in_region = self._by_region.get(origin, []) if origin is not None else []
            held = in_region if len(in_region) == 1 else []
        if self.source is not None:
            held.append(self.source.label)
        return tuple(held)

    def done(self, sequence_number: str, position: int, created_us: int | None = None) -> None:
        """A record that needs no write: it was dead-lettered for every destination.
        ``position``: where the intake placed it (its number, unless it was read at or
        below the last position: replicator/intake.py)."""
        with self._cond:
            self.buffer.add_done(sequence_number)
            if self.watermark is not None:
                self.watermark.undecodable(position, created_us)

    def batch_received(self, last_sequence_number: str, millis_behind: int) -> None:
        """Remember when a batch arrived, to time it until it is applied everywhere."""
        with self._cond:
            self._millis_behind = millis_behind
            self._batches.append((int(last_sequence_number), time.monotonic()))
            self._settle_batches()

    def note_millis_behind(self, millis_behind: int, oldest_created_us: int | None = None) -> None:
        """The reader's millisBehindLatest, as a batch arrives (before its records are
        read): the lag gauges are raised to it at once, so that no scrape shows a lag
        below ``replicator_millis_behind_latest`` / 1000.

        ``oldest_created_us``: the creation time of the batch's first record, which counts
        as read and not applied until :meth:`note_batch_read`. millisBehindLatest is the
        distance of the batch's last record from the tip: without it, a processor started
        again (its buffer empty) on a backlog its destination refuses would show, until
        the batch is read, the age of the newest change instead of the oldest, a dip that
        resets an alert's ``for``."""
        with self._cond:
            self._arriving_us = oldest_created_us
            self._millis_behind = millis_behind
            self._arrived_at = self._clock()
            self._held = False
            self._read_once = True
        # The whole report, not the lag alone: a lag of 0 shown here must come with the
        # write counters (counted in batches) and the in-flight gauges that account for it.
        self.report()

    # -- the watermark (see replicator/watermark/) ----------------------------------------

    def begin_watermark(
        self, *, resumed: bool, at_latest: bool = False, at_horizon: bool = False
    ) -> None:
        if self.watermark is not None:
            self.watermark.begin(resumed=resumed, at_latest=at_latest, at_horizon=at_horizon)

    def note_empty_read(self, *, previous_answer_at: float, received_at: float) -> None:
        """The reader is at the tip of the shard (an empty batch)."""
        if self.watermark is not None:
            self.watermark.empty_read(
                previous_answer_at=previous_answer_at, received_at=received_at
            )

    def publish_watermark(self, wait_s: float) -> None:
        """Publish the watermark to every destination now, waiting up to ``wait_s``."""
        if self.watermark is not None:
            self.watermark.publish_soon(wait_s)

    def store_watermark_before_checkpoint(self, wait_s: float, *, urgent: bool = False) -> bool:
        """Whether a checkpoint may be written: the watermark's dead-letter ranges and
        unread spans recorded so far are stored (see
        :meth:`ShardWatermark.store_before_checkpoint`); True with no watermark."""
        if self.watermark is None:
            return True
        return self.watermark.store_before_checkpoint(wait_s, urgent=urgent)

    def watermark_unstored(self) -> list[str]:
        """The destinations whose dead-letter ranges or unread spans are not yet stored."""
        return [] if self.watermark is None else self.watermark.unstored()

    def end_watermark(self) -> None:
        """The shard was read to its end and all of it is settled."""
        if self.watermark is not None:
            self.watermark.end_shard()

    def wait_for_room(self) -> bool:
        """Block while too many changes are unapplied (backpressure on the daemon).

        True once there is room; False when :meth:`release_wait` ended the wait without
        room (the runtime is stopping: it sends no further batch). While it waits, the
        reader reads nothing: the lag counts the time since the batch arrived (see
        :meth:`lag_seconds`)."""
        with self._cond:
            while (
                self.buffer.open_changes >= self.max_buffered
                or self.buffer.tracked_records >= self.max_buffered * _TRACKED_FACTOR
            ):
                self.raise_if_failed()
                if self._released:
                    self._released = False
                    return False
                self._held = True
                self._cond.wait(timeout=1.0)
            self.raise_if_failed()
            return True

    def release_wait(self) -> None:
        """End the wait for room now in progress, or the next one, within a second,
        without room (the local runtime's stop, delivered as a signal: so it takes no
        lock, and the wait sees it at its next wake-up, at most a second away)."""
        self._released = True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every change received is settled everywhere; False on timeout.
        The write metrics are exact when it returns."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._cond:
                while not self.buffer.idle:
                    self.raise_if_failed()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(timeout=1.0 if remaining is None else min(1.0, remaining))
                self.raise_if_failed()
                return True
        finally:
            self.count_applied()

    def release_holds(self) -> None:
        """End every hold for a request that may still land late (a stop: see
        DestinationWriter.late_write_window_s), and start none from now on: the held
        keys' next changes are written now, and the flush is not held by them."""
        for writer in self.writers.values():
            if isinstance(writer, DestinationWriter):
                writer.holds_released.set()  # before the lock: _write looks under it
        self._holds.clear()
        with self._cond:
            held = self.buffer.held_keys()
            released = self.buffer.release_keys()
            self._wake()
        if held:
            # Their next changes go out now: a request still on its way may land after
            # them (docs/reliability.md), and only a comparison can tell.
            log.warning(
                "stopping with items whose next change waited for a write that may still "
                "land: it is sent now; run `replicator verify` once the job is back",
                shard=self.shard_id,
                held_keys=held,
            )
        for label in released:
            self._dispatch(label)

    def checkpointable(self) -> str | None:
        with self._cond:
            return self.buffer.checkpointable()

    def outstanding(self) -> dict[str, int]:
        """Changes each target (a destination, or the source under active-active) has
        not yet settled, waiting or being written; targets with none are left out. Under
        :data:`CONFLICT_LOG_WAIT`: the lost conflicts whose entries are not stored yet,
        which hold their records open too."""
        with self._cond:
            counts = {label: self.buffer.outstanding(label) for label in self.buffer.destinations}
            # A put checked again after its late-write window is its destination's.
            rechecks = Counter(due.label for due in self._rechecks.values())
            for label, open_ in rechecks.items():
                counts[label] = counts.get(label, 0) + open_
            counts[CONFLICT_LOG_WAIT] = (
                counts.get(CONFLICT_LOG_WAIT, 0) + self.buffer.held_records - rechecks.total()
            )
        return {label: count for label, count in counts.items() if count}

    def abandon(self) -> None:
        """The lease is gone: forget unapplied changes and stop every write being retried.

        Another worker now owns the shard and rewrites these changes from the last
        checkpoint; a stale retry landing after its newer write would undo it (under
        ``overwrite`` nothing else would stop it). A request already on the wire cannot
        be called back: it lands, if at all, within the writer's read timeout.
        """
        for writer in self._targets.values():
            writer.cancelled.set()
        if self._loop is not None:  # requests not yet on the wire are never sent
            for wire in self._wires.values():
                self._loop.call(wire.drop_waiting)
        self._holds.clear()
        with self._cond:
            self._rechecks.clear()
            self._recheck_timer.clear()
            self.buffer.abandon()
            self._batches.clear()
            self._cond.notify_all()
        if self.watermark is not None:
            self.watermark.stop()
        self.count_applied()

    def raise_if_failed(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def close(self) -> None:
        """Stop accepting work; writes in flight are left to finish or die with the process."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        if self.watermark is not None:
            self.watermark.close()
        for writer in self._targets.values():
            writer.cancelled.set()
        self._holds.close()
        self._recheck_timer.close()
        if self._loop is not None:
            for wire in self._wires.values():
                self._loop.call(wire.close)
            self._loop.stop()
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self.count_applied()

    # -- reporting ------------------------------------------------------------------------

    def note_batch_read(self) -> None:
        """The batch :meth:`note_millis_behind` announced is in the buffer (or skipped)."""
        with self._cond:
            self._arriving_us = None

    def lag_seconds(self, label: str, now: float | None = None) -> float:
        """How far ``label`` is behind: 0 when caught up, else the age of the oldest change
        read but not yet applied there (or how far the reader is behind the tip, if more).

        The reader is the daemon's millisBehindLatest behind as a batch arrives. Once
        intake has been held for room since (backpressure), nothing is read until the
        next batch arrives, so the reader is that far behind plus the time since the
        batch arrived: every destination's lag grows with it, the one that holds the
        changes back and the ones that have applied all they were given alike."""
        now = self._clock() if now is None else now
        with self._cond:
            behind_s = self._millis_behind / 1000.0
            if self._held:
                behind_s += max(0.0, now - self._arrived_at)
            oldest = self.buffer.oldest_outstanding_us(label)
            arriving = self._arriving_us
        if arriving is not None:
            oldest = arriving if oldest is None else min(oldest, arriving)
        if oldest is None:
            return behind_s
        return max(behind_s, now - oldest / 1_000_000)

    def report(self) -> None:
        """Refresh the gauges that change with time, and count the writes applied on the
        event loop since the last report (called about once a second)."""
        now = self._clock()
        # Before the lag, which health judges from it.
        self.metrics.shard_started.labels(self.shard_id).set(self._started_at)
        # The lag before the count: a lag of 0 says every write read so far has settled,
        # and the count that follows then holds them all.
        self._publish_lag(now)
        self.count_applied()
        for label in self.writers:
            with self._cond:
                in_flight = self.buffer.in_flight(label)
                progress_at = self._progress_at.get(label)
            self.metrics.in_flight_writes.labels(label).set(in_flight)
            if progress_at is not None:
                self.metrics.destination_progress.labels(label, self.shard_id).set(progress_at)
        with self._cond:
            open_changes = self.buffer.open_changes
        self.metrics.buffered_changes.labels(self.shard_id).set(open_changes)

    def _publish_lag(self, now: float) -> None:
        with self._cond:
            if not self._read_once:
                return
        for label in self.writers:
            self.metrics.replication_lag.labels(label, self.shard_id).set(
                self.lag_seconds(label, now)
            )

    def count_applied(self) -> None:
        """Add the writes applied on the event loop to the metrics: counted in plain
        numbers as they settle, since prometheus' labels and locks per write would cost
        as much as the rest of the write."""
        with self._cond:
            applied, self._applied = self._applied, Counter()
            delays, self._delays = self._delays, {}
        for (label, op), count in applied.items():
            self.metrics.writes.labels(label, op, "applied").inc(count)
        for label, observed in delays.items():
            histogram = self.metrics.apply_delay.labels(label)
            for delay in observed:
                histogram.observe(delay)

    # -- writers --------------------------------------------------------------------------

    def _take(self, label: str) -> list[Entry]:
        with self._cond:
            return self._take_locked(label)

    def _take_locked(self, label: str) -> list[Entry]:
        if self._closed or self._fatal is not None:
            return []
        room = self.max_in_flight - self.buffer.in_flight(label)
        return self.buffer.take_ready(label, room) if room > 0 else []

    def _dispatch(self, label: str) -> None:
        entries = self._take(label)
        if not entries:
            return
        if label not in self._wires:
            self._submit(label, entries)
        elif self._loop is not None and self._loop.in_loop():
            self._send(label, entries)
        elif self._loop is not None:
            self._loop.call(self._send_batch, [(label, entries)])

    def _submit(
        self, label: str, entries: Sequence[Entry], first: FirstAnswer | None = None
    ) -> None:
        executor = self._executors[label]
        try:
            for entry in entries:
                executor.submit(self._write, label, entry, first)
        except RuntimeError:  # the pool is shut down: closed since these were taken
            if not self._closed:
                raise

    # -- the event loop (loop thread) -----------------------------------------------------

    def _send_batch(self, batch: list[tuple[str, list[Entry]]]) -> None:
        for label, entries in batch:
            try:
                self._send(label, entries)
            except BaseException as failure:  # noqa: BLE001  # else the writes hang unsettled
                self._fail(failure, label)
                return

    def _send(self, label: str, entries: list[Entry]) -> None:
        """Send the first request of each write; what needs more than one goes to a thread."""
        writer = self.writers[label]
        assert isinstance(writer, DestinationWriter)
        wire = self._wires[label]
        if wire.wire.signing_may_block():
            # The credentials are due for a refresh (STS, a credential endpoint): the
            # writes go to threads until it is done, so the loop never waits on it.
            self._submit(label, entries)
            return
        # Bound once for the whole list: a lookup each per write adds up.
        cancelled = writer.cancelled.is_set
        first_request = writer.first_request
        call_of = writer.call_of
        send = wire.send
        answered = self._answered
        for entry in entries:
            if cancelled():
                return  # as a cancelled write on a thread: left in flight, never settled
            try:
                request = first_request(entry.change)
            except Exception:  # noqa: BLE001  # the thread's write meets it again and says so
                request = None
            if request is None:
                self._submit(label, (entry,))
                continue
            operation, params = call_of(request)
            send(operation, params, partial(answered, writer, entry, request))

    def _answered(
        self,
        writer: DestinationWriter,
        entry: Entry,
        request: WriteRequest,
        response: dict[str, Any] | None,
        error: BaseException | None,
        sent_at: float | None,
    ) -> None:
        if writer.cancelled.is_set():
            return
        if error is not None or not writer.settled_by_success:
            answer = FirstAnswer(request, response, error, sent_at)
            self._submit(writer.label, (entry,), answer)
            return
        # Settled together with the other answers of this turn of the loop: one lock, one
        # wake-up and one dispatch for all of them.
        applied_here = self._applied_here
        if not applied_here and self._loop is not None:
            self._loop.loop.call_soon(self._settle_applied)
        entries = applied_here.get(writer.label)
        if entries is None:
            applied_here[writer.label] = [entry]
        else:
            entries.append(entry)

    def _settle_applied(self) -> None:
        settled, self._applied_here = self._applied_here, {}
        label = ""
        try:
            delays: dict[str, list[float]] = {}
            deletes: dict[str, int] = {}
            for label, entries in settled.items():
                writer = self.writers[label]
                assert isinstance(writer, DestinationWriter)
                changes = [entry.change for entry in entries]
                since = [
                    (
                        change.created_us
                        if entry.stale_since is None
                        else entry.stale_since_us(label)
                    )
                    / 1_000_000
                    for entry, change in zip(entries, changes, strict=True)
                ]
                deletes[label] = sum(change.event is Event.REMOVE for change in changes)
                delays[label] = writer.applied_elsewhere(changes, since, deletes[label])
                if self.watermark is not None:
                    self.watermark.applied(label, changes)
            with self._cond:
                applied = self._applied
                complete_all = self.buffer.complete_all
                now = self._clock()
                for label, entries in settled.items():
                    self._progress_at[label] = now
                    # Counted per operation without a property read per write.
                    if deletes[label]:
                        applied[label, "delete"] += deletes[label]
                    if len(entries) > deletes[label]:
                        applied[label, "put"] += len(entries) - deletes[label]
                    complete_all(label, entries)
                    self._delays.setdefault(label, []).extend(delays[label])
                self._settle_batches()
                self._wake()
                taken = [(label, self._take_locked(label)) for label in settled]
            for label, entries in taken:
                if entries:
                    self._send(label, entries)
        except BaseException as failure:  # noqa: BLE001  # any failure stops the shard
            self._fail(failure, label)

    # -- writers (pool threads) -----------------------------------------------------------

    def _write(self, label: str, entry: Entry, first: FirstAnswer | None = None) -> None:
        destination: DestinationWriter | None = None
        try:
            writer = self._targets[label]
            if isinstance(writer, DestinationWriter):
                destination = writer
                since_s = entry.stale_since_us(label) / 1_000_000
                # A hold is kept in the buffer, not waited out on this thread.
                result = writer.write(entry.change, first, since_s=since_s, hold=False)
            else:
                assert first is None
                result = writer.write(entry.change)
            if result.failed:
                # Stored before the buffer settles it: the checkpoint may then pass it.
                self.dead_letters.store(self.writers[label], entry.change, result)
        except WriteCancelled:
            return
        except BaseException as error:  # noqa: BLE001  # any writer failure stops the shard
            self._fail(error, label)
            return
        recorded = result.recorded
        try:
            with self._cond:
                # Under the lock, with the buffer: a change dropped behind this one in
                # between would be settled in the watermark yet re-queued by the buffer.
                if self.watermark is not None and label in self.writers:
                    self.watermark.settled(label, entry.change, dead_lettered=result.failed)
                self._progress_at[label] = self._clock()
                held = None
                if recorded is not None and not recorded.done():
                    # A lost conflict whose entry is not stored yet: its record stays open
                    # (no checkpoint passes it) until the entry is stored, or given up and
                    # counted, so a kill -9 loses no entry of a checkpointed change
                    # (conflictlog/recorder.py). It counts against max_buffered meanwhile.
                    held = self.buffer.hold(label, entry)
                key_hold = None
                hold_until = result.hold_until
                if (
                    hold_until is not None
                    and destination is not None
                    # A stop sets it before it releases the held keys under this lock.
                    and not destination.holds_released.is_set()
                    and not destination.cancelled.is_set()  # abandoned or closed
                ):
                    # The write settles, but its request may still land until then: the
                    # item's next change waits (other keys do not).
                    key_hold = self.buffer.hold_key(label, entry, result.held)
                recheck = None
                if (
                    result.recheck
                    and hold_until is not None
                    and destination is not None
                    and not destination.cancelled.is_set()
                ):
                    # Its record stays open (no checkpoint passes it) until the put is
                    # checked again, once its request can no longer land; after a stop
                    # too, which ends the key's hold but waits for the check in its flush
                    # (and past the flush's time, checkpoints before the record).
                    slot = self.buffer.hold(label, entry)
                    if slot is not None:
                        recheck = next(self._recheck_ids)
                        self._rechecks[recheck] = _Recheck(label, entry.change, slot, key_hold)
                self.buffer.complete(label, entry, failed=result.failed)
                self._settle_batches()
                self._wake()
            if recorded is not None and held is not None:
                recorded.add_done_callback(lambda _: self._recorded(label, held))
            if hold_until is not None and recheck is not None:
                # The key's hold ends after the check: the item's next delete, recording
                # its tombstone first, would be taken by the check for one that outranks
                # the put, and the put's image removed as a late landing.
                self._recheck_timer.call_at(hold_until, partial(self._recheck_due, recheck))
            elif hold_until is not None and key_hold is not None:
                key = entry.change.key
                self._holds.call_at(hold_until, partial(self._hold_ended, label, key, key_hold))
            self._dispatch(label)
        except BaseException as error:  # noqa: BLE001  # raised here, it ends in the pool's future
            # Unseen there: the write would stay in flight for good, its item's later
            # changes behind it and the checkpoint before it, and nothing would say so.
            self._fail(error, label)

    def _hold_ended(self, label: str, key: KeyId, token: int) -> None:
        """A key's hold (``hold_key``) has lasted its time (on the timer's thread): its
        next change may be written, unless a stop released it already."""
        try:
            with self._cond:
                if not self.buffer.release_key(label, key, token):
                    return
                self._wake()
            self._dispatch(label)
        except BaseException as error:  # noqa: BLE001  # else the key's changes wait for good
            self._fail(error, label)

    def _recheck_due(self, recheck: int) -> None:
        """A put's late-write window has passed (on the recheck timer's thread): its
        check against the item's tombstone runs again on the destination's threads."""
        with self._cond:
            due = self._rechecks.get(recheck)
        if due is None:  # abandoned
            return
        try:
            self._executors[due.label].submit(self._recheck, recheck, due)
        except RuntimeError:  # the executor is shut down: the pipeline is closed
            return

    def _recheck(self, recheck: int, due: _Recheck) -> None:
        """Check the put again (DestinationWriter.recheck_late_put), then let its record
        be checkpointed and the item's next change be written. A check that cannot be
        made stops the shard with the record open: read again after the restart, the put
        finds its own image and checks the tombstone then (its write settled already, so
        a dead letter would tell the watermark and the counts a second outcome)."""
        label = due.label
        try:
            writer = self._targets[label]
            assert isinstance(writer, DestinationWriter)
            result = writer.recheck_late_put(due.change)
            if result.failed:
                raise DestinationRefused(
                    f"{label}: the check of key {describe_key(due.change.keys)} against its "
                    "tombstone, after a put of it got no answer, failed: "
                    f"{result.error or result.reason}"
                )
            with self._cond:
                if self._rechecks.pop(recheck, None) is None:  # abandoned since
                    return
                self.buffer.release(due.slot)
                if due.key_hold is not None:  # else a stop had ended the holds
                    self.buffer.release_key(label, due.change.key, due.key_hold)
                self._settle_batches()
                self._wake()
            self._dispatch(label)
        except WriteCancelled:  # the lease is gone: another worker writes the change again
            return
        except BaseException as error:  # noqa: BLE001  # else the checkpoint stays behind it
            self._fail(error, label)

    def _recorded(self, label: str, held: Slot) -> None:
        """A lost conflict's entry is stored or given up (on the recorder's thread, or on
        this one if it was already): its record may be checkpointed now. Bookkeeping
        under the pipeline's lock, as every writer thread settles its writes."""
        try:
            with self._cond:
                self.buffer.release(held)
                self._settle_batches()
                self._wake()
        except BaseException as error:  # noqa: BLE001  # else the checkpoint stays behind it
            self._fail(error, label)

    def _wake(self) -> None:
        """Wake the processor if what it waits for may now hold (lock held): room in the
        buffer, or everything settled. Not on every write: a processor waiting for room
        would wake for nothing once per write while the buffer stays full."""
        buffer = self.buffer
        if buffer.idle or (
            buffer.open_changes < self.max_buffered
            and buffer.tracked_records < self.max_buffered * _TRACKED_FACTOR
        ):
            self._cond.notify_all()

    def _settle_batches(self) -> None:
        """Observe the flush time of every batch now wholly applied (lock held)."""
        done = self.buffer.checkpointable()
        if done is None or not self._batches:
            return
        done_position = int(done)
        now = time.monotonic()
        while self._batches and self._batches[0][0] <= done_position:
            _, received = self._batches.popleft()
            self.metrics.batch_flush.observe(now - received)

    def _fail(self, error: BaseException, label: str) -> None:
        with self._cond:
            if self._fatal is None:
                self._fatal = error
            self._cond.notify_all()
        log.error(
            "destination writer failed; stopping before anything is checkpointed past it",
            destination=label,
            shard=self.shard_id,
            error=str(error),
            error_type=type(error).__name__,
        )
        self.count_applied()  # before on_fatal, which may end the process at once
        if self._on_fatal is not None:
            self._on_fatal(error)


def _direct_client(writer: Destination) -> WireWriteClient | None:
    """The direct client of a writer whose first requests can go out on the event loop
    (a rule that does not read the destination's item first), else None."""
    if (
        isinstance(writer, DestinationWriter)
        and writer.counted
        and isinstance(writer.client, WireWriteClient)
        and not writer.rule.reads_existing
    ):
        return writer.client
    return None
