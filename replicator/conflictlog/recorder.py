"""Recording lost conflicts: each one stored before the checkpoint passes its change, or
counted as not recorded.

A lost conflict is already resolved correctly when the writer learns of it: the
destination kept the item that ranks higher. Its record is an audit trail, so it must
neither stall the shard for longer than a bound nor go missing uncounted when the
conflict log is down:

* The writer's thread only queues what it knows (:class:`LostConflict`, a few
  references) and gets a future back. The pipeline keeps the change's record open in
  its buffer (the checkpoint does not pass it) until that future is done: the entry
  stored, or given up and counted. So a ``kill -9`` (or running out of memory) loses
  no entry of a change the checkpoint has passed: a change whose entry was still
  waiting is read again by the next worker, loses again, and its entry (the same id)
  is stored then.
* One background thread per processor stores the entries in batches: each round takes
  every entry waiting (up to ``batch_limit``) and hands them to the target at once
  (:meth:`ConflictLogTarget.put_all`: one append and one fsync for a file,
  BatchWriteItem for DynamoDB, SendMessageBatch for SQS), so the log keeps up with the
  writers however many conflicts a burst brings.
* Entries a round did not store are tried again in the next, with capped exponential
  backoff and full jitter between, and counted in
  ``replicator_conflict_log_retries_total`` (once per entry and attempt);
* an entry not stored ``retry_for_s`` after its conflict, or one the target refuses as
  it is, is given up: counted in ``replicator_conflict_log_dropped_total`` (reason
  ``unavailable`` or ``rejected``) and logged at error level with its key, destination
  and sequence number (and the whole entry when it is small). Its change's record is
  then released: an outage holds a change back for ``retry_for_s`` at most.
* ``max_pending`` bounds the queue only while the log is failing (its last round left
  entries unstored): a conflict that then finds that many waiting is dropped at once
  (reason ``backlog``). A healthy log never drops one for backlog, as the queue cannot
  outgrow the pipelines: a change whose entry waits stays an open record of its
  shard's buffer, counted against ``writer.max_buffered_changes`` (intake waits while
  that many are open), and each round takes every entry waiting (up to
  ``batch_limit``). The bound is kept for an outage: it bounds the memory of a caller
  that does not wait for its entries (a redrive), and how many changes an outage holds
  back for ``retry_for_s``.
* At a clean stop the queue is drained for up to ``drain_s``; what is left is counted
  (reason ``shutdown``), except a round whose store attempt outlasts the stop. Their
  changes were not checkpointed (the pipeline waited for them), so the worker that
  takes the shard next reads them again and records them if they lose again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from replicator.aws.backoff import Backoff
from replicator.conflictlog.base import ConflictLogTarget, Loss, StoreOutcome
from replicator.conflictlog.entry import ConflictEntry, LostConflict
from replicator.exceptions import ConflictLogRejected, ConflictNotRecorded
from replicator.items import describe_key
from replicator.metrics import Metrics

log = structlog.get_logger(__name__)

# A stopping processor waits this long for queued entries, then this long for the round
# being sent: less together than the 5 s the local runtime gives a child to exit once its
# input is closed, so that what is left is still counted.
DRAIN_S = 2.5
_JOIN_S = 2.0
# Whole entries up to this size go into the log line of a dropped entry.
_LOGGED_ENTRY_LIMIT = 16 * 1024
# Entries handed to the target in one round: a file appends them with one fsync, a
# table or a queue sends them in requests of 25 or 10.
BATCH_LIMIT = 500


@dataclass(slots=True, eq=False)
class _Waiting:
    """A queued conflict, the time (``clock``) it is given up at, and its future."""

    conflict: LostConflict
    deadline: float
    done: Future[None] = field(default_factory=Future)
    entry: ConflictEntry | None = None


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
        batch_limit: int = BATCH_LIMIT,
    ) -> None:
        self.target = target
        self.metrics = metrics
        self.max_pending = max_pending
        self.retry_for_s = retry_for_s
        self.drain_s = drain_s
        self.backoff = backoff or Backoff(0.1, 5.0)
        self.batch_limit = batch_limit
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[_Waiting] = deque()
        self._busy = 0  # entries the thread holds: being stored, or to be tried again
        self._failing = False  # the last round left entries unstored
        self._closing = False
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conflict-log", daemon=True)
        self._thread.start()

    # -- the writers' side ----------------------------------------------------------------

    def for_shard(self, task_name: str, shard_id: str) -> ShardConflicts:
        """What one shard's writers hand their lost conflicts to."""
        return ShardConflicts(self, task_name, shard_id)

    def lost(self, conflict: LostConflict) -> Future[None]:
        """Queue ``conflict`` for storage (or count it dropped), without waiting; the
        future is done once its entry is stored, or given up: then with
        ConflictNotRecorded as its exception."""
        waiting = _Waiting(conflict, self._clock() + self.retry_for_s)
        with self._cond:
            queued = len(self._queue)
            refused = "shutdown" if self._closing else None
            if refused is None and self._failing and queued >= self.max_pending:
                refused = "backlog"
            if refused is None:
                self._queue.append(waiting)
                self._cond.notify_all()
                return waiting.done
        why = "the processor stopped first"
        if refused == "backlog":
            why = f"{queued} entries were waiting to be stored while the log was failing"
        self._drop(waiting, refused, why)
        return waiting.done

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
        for waiting in left:
            self._drop(waiting, "shutdown", "the processor stopped first")
        # The round being sent, if any, is counted by the thread when its attempt ends.
        self._thread.join(timeout=_JOIN_S)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._busy

    # -- the background thread ------------------------------------------------------------

    def _run(self) -> None:
        again: list[_Waiting] = []  # entries the last round did not store
        attempt = 0
        while True:
            with self._cond:
                while not self._queue and not again and not self._closing:
                    self._cond.wait()
                room = min(len(self._queue), max(0, self.batch_limit - len(again)))
                batch = again + [self._queue.popleft() for _ in range(room)]
                if not batch:
                    return
                self._busy = len(batch)
            try:
                again, error = self._round(batch)
            except Exception as failure:  # noqa: BLE001  # the recorder thread must not die
                for waiting in batch:
                    if not waiting.done.done():
                        self._drop(waiting, "rejected", f"{type(failure).__name__}: {failure}")
                again, error = [], ""
            with self._cond:
                self._busy = len(again)
                self._failing = bool(again)
                self._cond.notify_all()
            if not again:
                attempt = 0
                continue
            now = self._clock()
            delay = self.backoff.delay(attempt)
            delay = min(delay, max(0.0, min(w.deadline for w in again) - now))
            attempt += 1
            log.warning(
                "conflict log unavailable, retrying",
                target=self.target.description,
                entries=len(again),
                id=again[0].entry.id if again[0].entry else None,
                error=error,
                attempt=attempt,
                delay_s=round(delay, 3),
            )
            self._abandon.wait(delay)

    def _round(self, batch: list[_Waiting]) -> tuple[list[_Waiting], str]:
        """One attempt at storing ``batch``: what is to be tried again, and why."""
        if self._abandon.is_set():
            for waiting in batch:
                self._drop(waiting, "shutdown", "the processor stopped first")
            return [], ""
        ready: list[_Waiting] = []
        entries: list[ConflictEntry] = []
        for waiting in batch:
            if waiting.entry is None:
                try:
                    waiting.entry = waiting.conflict.entry()
                except Exception as error:  # noqa: BLE001  # this entry only
                    self._drop(waiting, "rejected", f"{type(error).__name__}: {error}")
                    continue
            ready.append(waiting)
            entries.append(waiting.entry)
        if not ready:
            return [], ""
        outcomes: list[StoreOutcome | Exception]
        try:
            outcomes = list(self.target.put_all(entries))
        except Exception as error:  # noqa: BLE001  # any other failure may pass
            outcomes = [error] * len(ready)
        again: list[_Waiting] = []
        error_text = ""
        now = self._clock()
        for waiting, outcome in zip(ready, outcomes, strict=True):
            if outcome is None:
                self.metrics.conflict_log_written.labels(waiting.conflict.destination).inc()
                waiting.done.set_result(None)
            elif isinstance(outcome, ConflictLogRejected):
                self._drop(waiting, "rejected", str(outcome))
            elif self._abandon.is_set():
                self._drop(waiting, "shutdown", str(outcome))
            elif now >= waiting.deadline:
                self._drop(waiting, "unavailable", str(outcome))
            else:
                again.append(waiting)
                error_text = str(outcome)
        if again:
            self.metrics.conflict_log_retries.inc(len(again))
        return again, error_text

    def _drop(self, waiting: _Waiting, reason: str, error: str) -> None:
        conflict, entry = waiting.conflict, waiting.entry
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
        # Done either way (the pipeline only waits for it); a caller that must know, as a
        # redrive keeping the letter of an entry not stored, reads the exception.
        waiting.done.set_exception(ConflictNotRecorded(reason, error))


class ConflictQueue(Protocol):
    """Where whole lost conflicts go (a BackgroundRecorder)."""

    def lost(self, conflict: LostConflict) -> Future[None] | None: ...


@dataclass(frozen=True, slots=True)
class ShardConflicts:
    """A recorder bound to the job's task and one shard: the writers' ConflictRecorder."""

    recorder: ConflictQueue
    task_name: str
    shard_id: str

    def lost(self, loss: Loss) -> Future[None] | None:
        """Captured now and cheaply, stored in the background: the future is done once
        the entry is stored or given up."""
        writer = loss.writer
        return self.recorder.lost(
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
