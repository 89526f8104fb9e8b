"""One shard's pipeline: buffer -> conflict rules -> writers, all destinations in parallel.

Writes run on a bounded thread pool per destination, so a slow destination neither
stalls the others nor grows without limit: at most ``max_in_flight`` writes per
destination are in flight, and intake blocks (backpressure) while ``max_buffered``
changes are not yet applied everywhere. The processor hands a batch over and returns
to the daemon at once; the writes overlap with reading the next batch, and the
checkpoint follows the buffer's safe position.

All shared state is guarded by one condition variable; a writer that fails in a way
no retry can fix records the error and wakes the processor, which ends the process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import structlog

from replicator.buffer import ChangeBuffer, Entry
from replicator.exceptions import WriteCancelled
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.watermark.publisher import ShardWatermark
from replicator.writers.destination import DestinationWriter, Outcome
from replicator.writers.source import SourceWriter

log = structlog.get_logger(__name__)

# Done records held only for checkpoint order, behind one that is still open, are
# cheap but not free: past this multiple of max_buffered, intake waits as well.
_TRACKED_FACTOR = 10


class ChangeWriter(Protocol):
    """What the pipeline needs of a destination's writer (or of the source writer)."""

    cancelled: threading.Event

    def write(self, change: Change) -> Outcome: ...


class ShardPipeline:
    def __init__(
        self,
        writers: Mapping[str, DestinationWriter],
        buffer: ChangeBuffer,
        metrics: Metrics,
        shard_id: str,
        max_in_flight: int,
        max_buffered: int,
        on_fatal: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.time,
        watermark: ShardWatermark | None = None,
        source: SourceWriter | None = None,
    ) -> None:
        self.writers = dict(writers)
        self.watermark = watermark
        self.source = source
        # Every buffer destination: the destinations, and (active-active) the source
        # writer, which settles each change at the source like one more destination.
        self._targets: dict[str, ChangeWriter] = dict(self.writers)
        if source is not None:
            self._targets[source.label] = source
        self.buffer = buffer
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
        self._executors = {
            label: ThreadPoolExecutor(max_in_flight, thread_name_prefix=f"write-{label}")
            for label in self._targets
        }

    # -- intake (processor thread) --------------------------------------------------------

    def submit(self, change: Change) -> None:
        """Queue a change; it is written after ``dispatch``, so a batch squashes first."""
        with self._cond:  # held: no writer thread can take or settle it in between
            queued = self.buffer.add(change)
            if self.watermark is None:
                return
            behind = None if queued else self.buffer.newest_queued(change.key)
            if behind is None:
                self.watermark.received(change)
            else:
                self.watermark.dropped(change, behind=behind)

    def dispatch(self) -> None:
        """Start writes for everything queued, up to each destination's in-flight limit."""
        for label in self._targets:
            self._dispatch(label)

    def skip(self, change: Change, *, replaces_older: bool) -> None:
        with self._cond:
            self.buffer.add_skipped(change, replaces_older=replaces_older)
            if self.watermark is not None:
                self.watermark.skipped(change, replaces_older=replaces_older)

    def done(self, sequence_number: str, created_us: int | None = None) -> None:
        """A record that needs no write: it was dead-lettered for every destination."""
        with self._cond:
            self.buffer.add_done(sequence_number)
            if self.watermark is not None:
                self.watermark.undecodable(int(sequence_number), created_us)

    def batch_received(self, last_sequence_number: str, millis_behind: int) -> None:
        """Remember when a batch arrived, to time it until it is applied everywhere."""
        with self._cond:
            self._millis_behind = millis_behind
            self._batches.append((int(last_sequence_number), time.monotonic()))
            self._settle_batches()

    def note_millis_behind(self, millis_behind: int) -> None:
        with self._cond:
            self._millis_behind = millis_behind

    # -- the watermark (see replicator/watermark/) ----------------------------------------

    def begin_watermark(self, *, resumed: bool) -> None:
        if self.watermark is not None:
            self.watermark.begin(resumed=resumed)

    def note_empty_read(self, *, previous_answer_at: float, received_at: float) -> None:
        """The reader is at the tip of the shard (an empty batch)."""
        if self.watermark is not None:
            self.watermark.empty_read(
                previous_answer_at=previous_answer_at, received_at=received_at
            )

    def publish_watermark(self) -> None:
        if self.watermark is not None:
            self.watermark.publish()

    def end_watermark(self) -> None:
        """The shard was read to its end and all of it is settled."""
        if self.watermark is not None:
            self.watermark.end_shard()

    def wait_for_room(self) -> None:
        """Block while too many changes are unapplied (backpressure on the daemon)."""
        with self._cond:
            while (
                self.buffer.open_changes >= self.max_buffered
                or self.buffer.tracked_records >= self.max_buffered * _TRACKED_FACTOR
            ):
                self.raise_if_failed()
                self._cond.wait(timeout=1.0)
            self.raise_if_failed()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every change received is settled everywhere; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.buffer.idle:
                self.raise_if_failed()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(timeout=1.0 if remaining is None else min(1.0, remaining))
            self.raise_if_failed()
            return True

    def checkpointable(self) -> str | None:
        with self._cond:
            return self.buffer.checkpointable()

    def abandon(self) -> None:
        """The lease is gone: forget unapplied changes and stop every write being retried.

        Another worker now owns the shard and rewrites these changes from the last
        checkpoint; a stale retry landing after its newer write would undo it (under
        ``overwrite`` nothing else would stop it). A request already on the wire cannot
        be called back: it lands, if at all, within the writer's read timeout.
        """
        for writer in self._targets.values():
            writer.cancelled.set()
        with self._cond:
            self.buffer.abandon()
            self._batches.clear()
            self._cond.notify_all()
        if self.watermark is not None:
            self.watermark.stop()

    def raise_if_failed(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def close(self) -> None:
        """Stop accepting work; writes in flight are left to finish or die with the process."""
        with self._cond:
            self._closed = True
        if self.watermark is not None:
            self.watermark.close()
        for writer in self._targets.values():
            writer.cancelled.set()
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    # -- reporting ------------------------------------------------------------------------

    def lag_seconds(self, label: str, now: float | None = None) -> float:
        """How far ``label`` is behind: 0 when caught up, else the age of the oldest change
        read but not yet applied there (or the daemon's millisBehindLatest, if larger)."""
        now = self._clock() if now is None else now
        with self._cond:
            behind_s = self._millis_behind / 1000.0
            oldest = self.buffer.oldest_outstanding_us(label)
        if oldest is None:
            return behind_s
        return max(behind_s, now - oldest / 1_000_000)

    def report(self) -> None:
        """Refresh the gauges that change with time (called about once a second)."""
        now = self._clock()
        for label in self.writers:
            self.metrics.replication_lag.labels(label, self.shard_id).set(
                self.lag_seconds(label, now)
            )
            with self._cond:
                in_flight = self.buffer.in_flight(label)
            self.metrics.in_flight_writes.labels(label).set(in_flight)
        with self._cond:
            open_changes = self.buffer.open_changes
        self.metrics.buffered_changes.labels(self.shard_id).set(open_changes)

    # -- writers (pool threads) -----------------------------------------------------------

    def _dispatch(self, label: str) -> None:
        with self._cond:
            if self._closed or self._fatal is not None:
                return
            room = self.max_in_flight - self.buffer.in_flight(label)
            entries = self.buffer.take_ready(label, room) if room > 0 else []
        executor = self._executors[label]
        for entry in entries:
            executor.submit(self._write, label, entry)

    def _write(self, label: str, entry: Entry) -> None:
        try:
            outcome = self._targets[label].write(entry.change)
        except WriteCancelled:
            return
        except BaseException as error:  # noqa: BLE001  # any writer failure stops the shard
            self._fail(error, label)
            return
        if self.watermark is not None and label in self.writers:
            self.watermark.settled(
                label, entry.change, dead_lettered=outcome is Outcome.DEAD_LETTERED
            )
        with self._cond:
            self.buffer.complete(label, entry)
            self._settle_batches()
            self._cond.notify_all()
        self._dispatch(label)

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
        if self._on_fatal is not None:
            self._on_fatal(error)
