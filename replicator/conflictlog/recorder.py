"""Recording lost conflicts without ever holding replication back.

A lost conflict is already resolved correctly when the writer learns of it: the
destination kept the item that ranks higher. Its record is an audit trail, so it must
neither stall the shard nor lose data when the conflict log is down. The writer's
thread therefore only queues what it knows (:class:`LostConflict`, a few references)
and returns; one background thread per processor builds each entry and stores it:

* a failed store is retried with capped exponential backoff and full jitter, counted
  in ``replicator_conflict_log_retries_total``;
* an entry not stored ``retry_for_s`` after its conflict, or one the target refuses as
  it is, is given up: counted in ``replicator_conflict_log_dropped_total`` (reason
  ``unavailable`` or ``rejected``) and logged at error level with its key, destination
  and sequence number (and the whole entry when it is small);
* the queue holds at most ``max_pending`` entries; a conflict that finds it full is
  dropped at once (reason ``backlog``), so memory stays bounded in a long outage;
* at a clean stop the queue is drained for up to ``drain_s``; what is left is counted
  (reason ``shutdown``), except an entry whose store attempt outlasts the stop. Entries
  still queued when a processor is killed (``kill -9``, out of memory) are lost
  uncounted: at most the conflicts of the last moments, which a healthy log stores
  within milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from replicator.aws.backoff import Backoff
from replicator.conflictlog.base import ConflictLogTarget, Loss
from replicator.conflictlog.entry import ConflictEntry, LostConflict
from replicator.exceptions import ConflictLogRejected
from replicator.items import describe_key
from replicator.metrics import Metrics

log = structlog.get_logger(__name__)

# A stopping processor waits this long for queued entries, then this long for the one
# being sent: less together than the 5 s the local runtime gives a child to exit once its
# input is closed, so that what is left is still counted.
DRAIN_S = 2.5
_JOIN_S = 2.0
# Whole entries up to this size go into the log line of a dropped entry.
_LOGGED_ENTRY_LIMIT = 16 * 1024


class BackgroundRecorder:
    def __init__(
        self,
        target: ConflictLogTarget,
        metrics: Metrics,
        *,
        max_pending: int = 1000,
        retry_for_s: float = 60.0,
        drain_s: float = DRAIN_S,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.metrics = metrics
        self.max_pending = max_pending
        self.retry_for_s = retry_for_s
        self.drain_s = drain_s
        self.backoff = backoff or Backoff(0.1, 5.0)
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[tuple[LostConflict, float]] = deque()
        self._busy = False
        self._closing = False
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conflict-log", daemon=True)
        self._thread.start()

    # -- the writers' side ----------------------------------------------------------------

    def for_shard(self, task_name: str, shard_id: str) -> ShardConflicts:
        """What one shard's writers hand their lost conflicts to."""
        return ShardConflicts(self, task_name, shard_id)

    def lost(self, conflict: LostConflict) -> None:
        """Queue ``conflict`` for storage (or count it dropped), without waiting."""
        with self._cond:
            waiting = len(self._queue)
            refused = "shutdown" if self._closing else None
            if refused is None and waiting >= self.max_pending:
                refused = "backlog"
            if refused is None:
                self._queue.append((conflict, self._clock() + self.retry_for_s))
                self._cond.notify_all()
                return
        self._drop(conflict, None, refused, f"{waiting} entries were waiting to be stored")

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until every queued entry is stored or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Drain for up to ``timeout`` (default ``drain_s``), then count what is left."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self.flush(self.drain_s if timeout is None else timeout):
            return
        self._abandon.set()
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for conflict, _ in left:
            self._drop(conflict, None, "shutdown", "the processor stopped first")
        # The entry being sent, if any, is counted by the thread when its attempt ends.
        self._thread.join(timeout=_JOIN_S)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    # -- the background thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                conflict, deadline = self._queue.popleft()
                self._busy = True
            try:
                if self._abandon.is_set():
                    self._drop(conflict, None, "shutdown", "the processor stopped first")
                else:
                    self._store(conflict, deadline)
            except Exception as error:  # noqa: BLE001  # the recorder thread must not die
                self._drop(conflict, None, "rejected", f"{type(error).__name__}: {error}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _store(self, conflict: LostConflict, deadline: float) -> None:
        entry = conflict.entry()
        attempt = 0
        while True:
            try:
                self.target.put(entry)
            except ConflictLogRejected as error:
                self._drop(conflict, entry, "rejected", str(error))
                return
            except Exception as error:  # noqa: BLE001  # any other failure may pass
                now = self._clock()
                if self._abandon.is_set():
                    self._drop(conflict, entry, "shutdown", str(error))
                    return
                if now >= deadline:
                    self._drop(conflict, entry, "unavailable", str(error))
                    return
                self.metrics.conflict_log_retries.inc()
                delay = min(self.backoff.delay(attempt), max(0.0, deadline - now))
                attempt += 1
                log.warning(
                    "conflict log unavailable, retrying",
                    target=self.target.description,
                    id=entry.id,
                    error=str(error),
                    attempt=attempt,
                    delay_s=round(delay, 3),
                )
                self._abandon.wait(delay)
                continue
            self.metrics.conflict_log_written.labels(conflict.destination).inc()
            return

    def _drop(
        self, conflict: LostConflict, entry: ConflictEntry | None, reason: str, error: str
    ) -> None:
        self.metrics.conflict_log_dropped.labels(conflict.destination, reason).inc()
        fields: dict[str, object] = {
            "destination": conflict.destination,
            "key": describe_key(conflict.change.keys),
            "sequence_number": conflict.change.sequence_number,
            "reason": reason,
            "error": error,
            "target": self.target.description,
        }
        if entry is not None:
            text = entry.to_json()
            fields["id"] = entry.id
            if len(text) <= _LOGGED_ENTRY_LIMIT:
                fields["entry"] = text
        log.error("lost conflict not recorded: the conflict log could not store it", **fields)


class ConflictQueue(Protocol):
    """Where whole lost conflicts go (a BackgroundRecorder)."""

    def lost(self, conflict: LostConflict) -> None: ...


@dataclass(frozen=True, slots=True)
class ShardConflicts:
    """A recorder bound to the job's task and one shard: the writers' ConflictRecorder."""

    recorder: ConflictQueue
    task_name: str
    shard_id: str

    def lost(self, loss: Loss) -> None:
        """Captured now and cheaply, stored in the background."""
        writer = loss.writer
        self.recorder.lost(
            LostConflict(
                task_name=self.task_name,
                destination=writer.label,
                table=writer.table,
                region=writer.region,
                shard_id=self.shard_id,
                rule=writer.rule,
                change=loss.change,
                existing=loss.existing,
                why=loss.why,
                recorded_s=time.time(),
                write_back=loss.write_back,
                winning_rank=loss.winning_rank,
            )
        )
