"""One shard's watermark in a processor: the tracker the pipeline feeds, and the threads
that publish its parts, one per destination's status table (so that a status table that
fails or hangs holds back only its own destination).

It lives in the processor, which both runtimes run (the local runtime and the KCL's
MultiLangDaemon), so each shard's part is published by whichever process owns the
shard, wherever it runs.

* At most one status write per destination every ``interval_s``, and none while the
  part has not moved.
* Before its first write it creates the status table if needed and registers the
  stream's shards (see parts.plan_registration), so that readers always combine every
  shard that exists. At the shard's end it registers the shard's children with its final
  value and marks it ended.
* Publishing never stops replication: a failure is logged, counted in
  ``replicator_watermark_publish_failures_total`` and retried later, while the published
  watermark stays where it was (waiters see an older watermark, never a wrong one).
* What is held only in memory until stored (dead-letter ranges, unread spans) must be
  stored before the processor checkpoints past it (:meth:`store_before_checkpoint`).
* A status table deleted while the job runs (ResourceNotFoundException) is created again
  and registered again before anything is claimed there, and what this process stored in
  it is stored again.
* Every part it registers or raises records the job's source (the lease table's owner
  tag, ownership.source_identity). A destination whose status table holds a part of
  another source (a job of another source given the same task name: both publish there
  under one destination label, and moto gives every stream's first shard the same id)
  is neither raised nor combined: the processor stops (exit 3), at its start or at a
  raise refused by that part.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator import lastwords, logs
from replicator.aws.errors import error_code
from replicator.exceptions import EnvironmentProblem, ReplicatorError, StatusItemUnreadable
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.watermark import spans
from replicator.watermark.history import SourceHistory, before_stream_through
from replicator.watermark.parts import ListedShard, claimed_for, merge_ranges, plan_registration
from replicator.watermark.spans import UnreadSpan, merge_spans
from replicator.watermark.table import (
    MEMBERS,
    PLACE,
    SOURCE,
    STARTED_WITH,
    UNREAD,
    OtherSource,
    PartLost,
    StatusTable,
    another_jobs_parts,
)
from replicator.watermark.tracker import DeadLetters, ShardTracker

log = structlog.get_logger(__name__)

US = 1_000_000
_FAILURES = (ClientError, BotoCoreError, ReplicatorError, OSError)
_MAX_RETRY_S = 60.0
_LISTING_REUSED_S = 10.0
_OTHERS_AWAITED_S = 30.0


@dataclass
class _Target:
    label: str
    table: StatusTable
    ready: bool = False
    published_us: int = 0
    dead_letters: DeadLetters = field(default_factory=lambda: DeadLetters(0, ()))
    """Taken from the tracker and not yet stored."""
    failures: int = 0
    retry_at: float = 0.0
    unread: list[UnreadSpan] = field(default_factory=list)
    """Spans of changes never read for this destination, to store before any claim."""
    stored_through: int = 0
    """Every dead letter the tracker recorded up to this many is stored (or was none)."""
    stored_dead_letters: DeadLetters = field(default_factory=lambda: DeadLetters(0, ()))
    stored_unread: list[UnreadSpan] = field(default_factory=list)
    """What this process stored, to store again should the status table be re-created."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the destination is published (by its thread, or a caller)."""
    wake: threading.Event = field(default_factory=threading.Event)
    urgent: bool = False  # the next round ignores the back-off
    started: int = 0  # rounds of its thread started and finished
    finished: int = 0
    busy_since: float | None = None


def stop_the_processor(problem: EnvironmentProblem) -> None:
    """A destination's status table holds another job's parts: end the process as a
    writer that meets a destination refusing every write does (processor.
    on_writer_failure), leaving the reason and exit 3 for the runtime, which stops with
    them once the processor keeps stopping so. Nothing is checkpointed meanwhile."""
    log.error("stopping: the status table holds another job's parts", error=str(problem))
    lastwords.leave(str(problem), problem.exit_code)
    logs.finish_lines()
    os._exit(1)


class ShardWatermark:
    def __init__(
        self,
        shard_id: str,
        tables: Mapping[str, StatusTable],
        list_shards: Callable[[], Sequence[ListedShard]],
        metrics: Metrics,
        *,
        interval_s: float,
        margin_s: float,
        reads_follow_answers: bool,
        source_history: Callable[[], SourceHistory],
        clock: Callable[[], float] = time.time,
        source: Callable[[], str] | None = None,
        on_refused: Callable[[EnvironmentProblem], object] = stop_the_processor,
    ) -> None:
        """``reads_follow_answers``: the runtime reads the shard again only after the
        processor has answered the previous batch (the local runtime), so an empty batch
        was read after that answer; otherwise (the KCL, which reads ahead) it is dated
        when it arrives, and ``margin_s`` must cover how long a batch can wait.

        ``source_history`` describes the source (a request), asked only at a job's first
        start from the stream's oldest record (see :meth:`_before_stream_span`).

        ``source`` gives the job's source as the lease table's owner tag names it
        (ownership.source_identity; asked once, at the first read of a status table, and
        again after a failure): recorded on every part registered or raised, and a part
        that records another is neither raised nor combined, ``on_refused`` told instead
        (by default the process stops, exit 3). None: nothing is recorded or compared
        (every part is taken for the job's, as parts written before it was recorded are)."""
        self.shard_id = shard_id
        self._targets = {label: _Target(label, table) for label, table in tables.items()}
        self._list_shards = list_shards
        self._metrics = metrics
        self._interval_s = interval_s
        self._margin_us = int(margin_s * US)
        self._reads_follow_answers = reads_follow_answers
        self._clock = clock
        self._source_history = source_history
        self._history_lock = threading.Lock()
        self._history: SourceHistory | Exception | None = None
        self._source_of = source
        self._source: str | None = None
        self._on_refused = on_refused
        self._refused: EnvironmentProblem | None = None  # another job's parts found
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._tracker: ShardTracker | None = None
        # Guards what the destinations share and what is held in memory until stored
        # (held only for moments, never across a request).
        self._state = threading.Lock()
        self._stored = threading.Condition(self._state)
        self._listing_lock = threading.Lock()
        self._listing: tuple[float, Sequence[ListedShard]] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._out_of_order_logged = 0
        self._started_us = 0
        self._at_horizon = False
        self._resumed = False
        # Resumed, or started at TRIM_HORIZON: destinations whose unread span (joined,
        # before_stream) is not yet decided (see _decided), and what each status table
        # held when first asked.
        self._undecided: set[str] = set()
        self._had_parts: dict[str, bool] = {}
        self._started_with: dict[str, frozenset[str]] = {}
        # The <region>/<table> this shard's part at a destination names, where that is
        # not the destination's now (its name was given to another table).
        self._moved_from: dict[str, str] = {}
        # From each status table read at the start, of this shard's parts: when its
        # destination's was last raised, and, by destination, when another destination's
        # was last raised by a run of the job without it (see _rejoined).
        self._last_raised: dict[str, float] = {}
        self._left_out_at: dict[str, float] = {}
        self._back_stored: set[str] = set()  # their joined span stored (see _rejoined)
        self._waiting_since: dict[str, float] = {}  # see _waiting_for_others
        self._waiting_said: set[str] = set()
        self._unwatched: dict[str, bool] = {}  # open unwatched spans found (see off.py)
        self._watched: set[str] = set()  # destinations whose open spans were ended

    # -- lifecycle ----------------------------------------------------------------------

    def begin(self, *, resumed: bool, at_latest: bool = False, at_horizon: bool = False) -> None:
        """Start tracking (``resumed``: from a checkpoint) and publishing, each
        destination on a thread of its own (a status table that hangs holds back only
        its own destination).

        ``at_latest``: the shard starts at LATEST with no checkpoint, so every change
        created before now (and the margin, for the clocks) was never read; that span is
        stored before any claim, so no waiter is told those changes were replicated.
        ``at_horizon``: it starts at TRIM_HORIZON with no checkpoint, reading only what
        the stream holds. A resumed processor first checks whether a destination joined
        the job, one at TRIM_HORIZON whether the job starts for the first time there
        (see :meth:`_decided`).
        """
        now_us = int(self._clock() * US)
        self._started_us = now_us
        if at_latest:
            for target in self._targets.values():
                target.unread.append(UnreadSpan(0, now_us + self._margin_us, spans.LATEST))
        self._at_horizon = at_horizon
        self._resumed = resumed
        self._undecided = set(self._targets) if resumed or at_horizon else set()
        self._tracker = ShardTracker(
            list(self._targets),
            margin_us=self._margin_us,
            resumed_at_us=now_us if resumed else None,
            shard_id=self.shard_id,
        )
        for target in self._targets.values():
            thread = threading.Thread(
                target=self._loop, args=(target,), name=f"watermark {target.label}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """The lease is gone: publish nothing more."""
        if self._tracker is not None:
            self._tracker.stop()
        self.close()

    def close(self) -> None:
        self._stop.set()
        for target in self._targets.values():
            target.wake.set()
        with self._state:
            self._stored.notify_all()

    # -- what the pipeline reports ------------------------------------------------------

    def received(self, change: Change) -> None:
        self._tracker_or_fail().received(change)

    def received_all(self, changes: Sequence[Change]) -> None:
        self._tracker_or_fail().received_all(changes)

    def dropped(self, change: Change, *, behind: Change) -> None:
        self._tracker_or_fail().dropped(change, behind=behind)

    def skipped(self, change: Change, *, replaces_older_at: Collection[str] = ()) -> None:
        self._tracker_or_fail().skipped(change, replaces_older_at=replaces_older_at)

    def settled(self, destination: str, change: Change, *, dead_lettered: bool) -> None:
        self._tracker_or_fail().settled(destination, change, dead_lettered=dead_lettered)

    def applied(self, destination: str, changes: Sequence[Change]) -> None:
        self._tracker_or_fail().applied(destination, changes)

    def undecodable(self, position: int, created_us: int | None) -> None:
        self._tracker_or_fail().dead_lettered_everywhere(
            position, created_us, int(self._clock() * US)
        )

    def empty_read(self, *, previous_answer_at: float, received_at: float) -> None:
        read_at = previous_answer_at if self._reads_follow_answers else received_at
        self._tracker_or_fail().caught_up(int(read_at * US))

    # -- before a checkpoint ------------------------------------------------------------

    def store_before_checkpoint(self, wait_s: float, *, urgent: bool = False) -> bool:
        """Whether every dead-letter range and unread span recorded so far is stored in
        its status table, so that a checkpoint may pass the changes they stand for (a
        range held only in memory would be lost with the process, and the changes are
        not read again after the checkpoint).

        True at once when nothing is pending (a few flag checks: this is asked before
        every checkpoint). Otherwise the destinations concerned are published now, by
        their threads, and waited for up to ``wait_s``: a destination backing off after
        a failure is not tried (its round ends at once), and a round in progress is
        waited on until it has lasted ``wait_s`` in all (a status table that hangs holds
        back one batch by at most that, the next ones not at all). ``urgent``: try even
        within the back-off, and wait ``wait_s`` for every destination concerned.
        """
        if self._tracker is None:
            return True
        with self._state:
            # Only what is recorded now: letters recorded while this waits belong to
            # changes after the position being checkpointed (a destination rejecting
            # every change would otherwise hold the checkpoint for as long as they come).
            needed = self._tracker.dead_letters_recorded()
            pending = self._pending_locked(needed)
            if not pending:
                return True
            if self._stop.is_set() or self._refused is not None:
                return False
            now = time.monotonic()
            awaited: dict[str, tuple[int, float]] = {}  # a round that starts from now, until
            for label in pending:
                target = self._targets[label]
                target.urgent = target.urgent or urgent
                target.wake.set()
                busy = target.busy_since
                until = now + wait_s if urgent or busy is None else busy + wait_s
                if until > now:
                    awaited[label] = (target.started + 1, until)
            while awaited and not self._stop.is_set():
                pending = self._pending_locked(needed)
                now = time.monotonic()
                awaited = {
                    label: (round_, until)
                    for label, (round_, until) in awaited.items()
                    if label in pending and self._targets[label].finished < round_ and until > now
                }
                if not awaited:
                    break
                self._stored.wait(min(until for _, until in awaited.values()) - now)
            return not self._pending_locked(needed)

    def unstored(self) -> list[str]:
        """The destinations with dead-letter ranges or unread spans not yet stored."""
        if self._tracker is None:
            return []
        with self._state:
            return sorted(self._pending_locked())

    def _pending_locked(self, needed: Mapping[str, int] | None = None) -> set[str]:
        """The destinations with unread spans (or, at TRIM_HORIZON, whether there is
        one not yet decided), or dead letters up to ``needed`` (each destination's count
        of letters recorded; all so far by default), not stored.

        An undecided TRIM_HORIZON start holds the checkpoint as a LATEST start's span
        does: a processor resumed from the checkpoint would not be at TRIM_HORIZON, and
        with no part anywhere it could not tell that the job never read what came
        before the stream."""
        assert self._tracker is not None
        if needed is None:
            needed = self._tracker.dead_letters_recorded()
        return {
            label
            for label, target in self._targets.items()
            if target.unread
            or needed.get(label, 0) > target.stored_through
            or (self._at_horizon and label in self._undecided)
        }

    # -- publishing ---------------------------------------------------------------------

    def publish_soon(self, wait_s: float) -> None:
        """Publish every destination now, each on its thread (even within the back-off
        after a failure), and wait up to ``wait_s`` for them: a status table that hangs
        delays the caller by that at most (a requested shutdown)."""
        if self._tracker is None:
            return
        with self._state:
            rounds: dict[str, int] = {}
            for label, target in self._targets.items():
                target.urgent = True
                target.wake.set()
                rounds[label] = target.started + 1
            deadline = time.monotonic() + wait_s
            while not self._stop.is_set():
                waiting = [n for n, r in rounds.items() if self._targets[n].finished < r]
                remaining = deadline - time.monotonic()
                if not waiting or remaining <= 0:
                    return
                self._stored.wait(remaining)

    def publish(self) -> None:
        """Write each destination's part if it moved (and dead letters and unread spans,
        if any), in the caller's thread, one destination after another (the threads
        publish each destination on its own; this is for a shard's end, and tests)."""
        tracker = self._tracker_or_fail()
        self._warn_out_of_order(tracker)
        # Joins compare destinations: first learn what each status table holds.
        for target in self._targets.values():
            with self._state:
                unknown = target.label in self._undecided and target.label not in self._had_parts
            if unknown and time.monotonic() >= target.retry_at:
                with target.lock:
                    self._learn(target)
        for target in self._targets.values():
            self._publish_one(target, urgent=False)

    def end_shard(self) -> None:
        """The shard was read to its end and everything in it is settled: publish the
        final part, register the shard's children with its value, and mark it ended."""
        self.publish()
        if self.refused is not None:
            return  # another job's parts: nothing of theirs is marked or registered
        listing: Sequence[ListedShard] | None = None
        for label, target in self._targets.items():
            with target.lock:
                try:
                    target.table.ensure_exists()
                    listing = listing if listing is not None else self._list_shards()
                    self._register(target.table, listing, starting=None)
                    self._hand_down_unread(target.table, listing)
                    target.table.mark_ended(self.shard_id)
                except _FAILURES as error:
                    self._metrics.watermark_publish_failures.labels(label).inc()
                    log.error(
                        "could not mark the shard ended in the status table; its part holds "
                        "the watermark until a child shard's processor starts",
                        destination=label,
                        table=target.table.name,
                        error=str(error),
                    )

    # -- internals ----------------------------------------------------------------------

    def _loop(self, target: _Target) -> None:
        """One destination's thread: publish it every interval, or at once when asked."""
        tracker = self._tracker_or_fail()
        while True:
            target.wake.wait(self._interval_s)
            if self._stop.is_set():
                return
            target.wake.clear()
            with self._state:
                target.started += 1
                urgent, target.urgent = target.urgent, False
            try:
                self._warn_out_of_order(tracker)
                self._publish_one(target, urgent=urgent)
            except Exception as error:  # publishing must never stop the shard
                log.error(
                    "watermark publishing failed",
                    destination=target.label,
                    error=str(error),
                    exc_info=True,
                )
            finally:
                with self._state:
                    target.finished += 1
                    self._stored.notify_all()

    def _publish_one(self, target: _Target, *, urgent: bool) -> None:
        """Write the destination's part if it moved, after its dead letters and unread
        spans (``urgent``: even within the back-off after a failure)."""
        tracker = self._tracker_or_fail()
        with target.lock:
            if not urgent and time.monotonic() < target.retry_at:
                return
            with self._state:
                target.busy_since = time.monotonic()
            try:
                if self._decided(target):
                    self._write(target, tracker)
            except Exception as error:  # noqa: BLE001  # a bug: counted and backed off all the same
                self._failed(target, error)
            finally:
                with self._state:
                    target.busy_since = None
                    self._stored.notify_all()

    def _write(self, target: _Target, tracker: ShardTracker, *, again: bool = False) -> None:
        table = target.table
        try:
            if not target.ready:
                table.ensure_exists()
                self._register(table, self._shards_for_registration(), starting=self.shard_id)
                with self._state:  # a re-created table: what this process stored, again
                    target.dead_letters = _joined(target.stored_dead_letters, target.dead_letters)
                    target.stored_dead_letters = DeadLetters(0, ())
                    target.unread[:0] = target.stored_unread
                    target.stored_unread = []
                target.ready = True
            # Dead letters are stored before the claim that covers them is raised (and
            # the claim is not raised while they cannot be stored), so a reader never
            # sees W pass a dead-lettered change without its range. Taken with the claim
            # under the lock the checkpoint's question takes (store_before_checkpoint),
            # so that no dead letter is ever out of both the tracker and the target.
            with self._state:
                claim, taken = tracker.claim_and_dead_letters(target.label)
                target.dead_letters = _joined(target.dead_letters, taken)
                dead = target.dead_letters
                unread = tuple(target.unread)
                if not dead.count:
                    target.stored_through = max(target.stored_through, dead.through)
            if dead.count:
                table.add_dead_letters(self.shard_id, dead)
                with self._state:
                    target.dead_letters = DeadLetters(0, (), dead.through)
                    target.stored_dead_letters = _joined(target.stored_dead_letters, dead)
                    target.stored_through = max(target.stored_through, dead.through)
            if unread:  # before any claim, which may pass them
                table.add_unread_spans(self.shard_id, unread)
                with self._state:
                    del target.unread[: len(unread)]
                    target.stored_unread = merge_spans([*target.stored_unread, *unread])
            if claim > target.published_us:
                raised = target.published_us > 0
                with self._state:
                    members = frozenset(self._targets) - self._back_unstored()
                stored = table.raise_part(
                    self.shard_id,
                    claim,
                    self._owner,
                    raised_before=raised,
                    members=members,
                    source=self._source,  # None: as before parts recorded one
                )
                target.published_us = max(claim, stored)
            target.failures = 0
        except OtherSource as other:
            # Registered or raised by a job of another source (one task name) since this
            # processor read the table at its start: both started at once.
            self._refuse(target, other.shard, other.source)
        except PartLost as lost:
            # Another processor created the status table again after it was deleted:
            # register, store what this process stored, then claim, as after a
            # ResourceNotFoundException.
            log.warning(
                "the status table was created again; registering and storing this shard's "
                "dead letters and unread spans again before claiming",
                destination=target.label,
                table=table.name,
                error=str(lost),
            )
            self._table_lost(target)
            if not again:
                self._write(target, tracker, again=True)
        except _FAILURES as error:
            self._failed(target, error)

    def _decided(self, target: _Target) -> bool:
        """Whether the destination may be published: neither resumed nor at
        TRIM_HORIZON, or known to have been in the job before, or (stored at once) known
        to have joined it, or to start the job there (:meth:`_first_start`).

        A destination with no part in its status table at a TRIM_HORIZON start, while no
        other destination has parts either, starts the job there (a child shard of a
        running job starts at TRIM_HORIZON too, and finds parts): what the stream no
        longer holds, or never held, gets its span, stored at once with the job's
        destinations (``started_with``) as a joined destination's span is.

        So does one without parts that another destination's parts record
        (``started_with``) as one of the job's at its first start, when this processor
        did not resume from a checkpoint and is no child of a listed shard (else see
        :meth:`_table_emptied`): that start was cut short (a crash or a stop)
        before anything was written at this destination, or several shards start at
        once and another shard's processor wrote its first parts at the other
        destination first. No change was passed over for it: every
        processor that starts the job writes the record before anything else at a
        destination, and holds its checkpoint until each destination is decided (so its
        shard is read again from its start). It must not be taken for one that joined:
        its ``joined`` span would cover changes it holds, and waits for them answer 4.

        A destination with no part in its status table while another destination of the
        job has parts, none of which record it, joined a job that resumes from
        checkpoints: the changes before the checkpoints were never read for it (and will
        not be). That holds at TRIM_HORIZON too: the open shards may all be children
        without a checkpoint yet (a restart after a shard ended, an idle child), whose
        parents were read for the others only. Its first start is when it joined; it
        gets a span up to this processor's start.

        Decided once per destination, before this processor registers or claims anything
        there (a destination undecided is not published; one whose status table cannot
        be read holds back only itself and, while it is the only other one that may have
        parts, a destination without parts). A span is stored at once on this shard's
        part (which then reads as 0, holding the watermark until this processor claims):
        a processor that starts after that finds the destination's parts, and the span
        stored here holds for every reader (spans of all parts are combined), even if
        this processor dies before it claims; one that finds none (this one died first)
        decides again. Each destination asks only its own status table, on its own
        thread, so a table that hangs holds back no destination that can be decided
        without it."""
        label = target.label
        with self._state:
            if self._refused is not None:
                return False  # another job's parts: this process is stopping
            undecided = label in self._undecided
            watched = label in self._watched
            known = label in self._had_parts
        if (undecided or not watched) and not known and not self._learn(target):
            return False
        if not watched and not self._watched_again(target):
            return False
        if not undecided:
            return True
        with self._state:
            mine = self._had_parts[label]
            others = {
                other: self._had_parts.get(other) for other in self._targets if other != label
            }
            records = [self._started_with.get(other, frozenset()) for other in others]
            moved_from = self._moved_from.get(label)
        recorded = frozenset().union(*(record for record in records if label in record))
        if mine and moved_from is not None:
            return self._moved(target, moved_from)
        if mine:  # in the job before; out of it for a while since?
            return self._rejoined(target, others)
        if recorded:
            if self._resumed or (self._at_horizon and self._child_of_a_listed_shard()):
                return self._table_emptied(target)
            return self._first_start(target, recorded)
        if not any(others.values()):
            if not all(had is False for had in others.values()):
                return False  # another destination's parts unknown: a join is not ruled out
            if self._at_horizon and not self._child_of_a_listed_shard():
                return self._first_start(target, frozenset(self._targets))
            return self._unwatched_before(target)
        return self._joined(
            target,
            "destination joined a job that resumes from checkpoints: changes made "
            "before now are not replicated to it; run `replicator backfill` to it, then "
            "`replicator verify`",
        )

    def _table_emptied(self, target: _Target) -> bool:
        """Decide a destination that another destination's parts record as the job's at
        its first start (``started_with``, written only by a first start at
        TRIM_HORIZON, which holds each shard's checkpoint until every destination's
        decision is stored there), that has no part, found by a processor that comes
        after such a checkpoint: resumed from one, or a child whose parent, still
        listed, ended with one. The destination's status table held this job's parts,
        and was deleted or emptied while the job was stopped: the dead letters and spans
        it recorded are gone, and it gets an ``unwatched`` span up to this start (a
        ``joined`` one when this shard's part at another destination tells that the job
        ran without it meanwhile: removed from the job file and added again)."""
        with self._state:
            left_out_at = self._left_out_at.get(target.label)
        if left_out_at is not None:
            if not self._joined(
                target,
                "destination was out of the job for a while (removed from the job file "
                "and added again), and its status table has no part: changes made "
                "meanwhile were not replicated to it; run `replicator backfill "
                "--restart` to it, then `replicator verify`",
                job_ran_without_it=left_out_at,
            ):
                return False
            with self._state:  # as _rejoined: the parts raised from now name it again
                self._back_stored.add(target.label)
            return True
        return self._unwatched_before(target)

    def _joined(self, target: _Target, warning: str, **about: object) -> bool:
        """Store a ``joined`` span up to this start for the destination (it holds none of
        the changes before it), then log ``warning``; False when it could not be stored
        (tried again)."""
        if not self._decide(target, UnreadSpan(0, self._started_us, spans.JOINED)):
            return False
        log.warning(warning, destination=target.label, shard=self.shard_id, **about)
        return True

    def _moved(self, target: _Target, moved_from: str) -> bool:
        """The destination's name was given to another table since this shard's part was
        claimed: its parts are the old table's (they are kept by name), and the new one
        holds none of the changes before this start. It gets a ``joined`` span up to
        then, as a destination added to the job does, stored before the part is told the
        new table (a crash between them records the span again, never loses it)."""
        if not self._joined(
            target,
            "destination now names another table than its status table's parts: changes "
            "made before now are not replicated to it; run `replicator backfill` to it, "
            "then `replicator verify`",
            table=target.table.place,
            before=moved_from,
        ):
            return False
        try:
            target.table.record_place(self.shard_id)
        except _FAILURES as error:  # the next claim records it; the span is stored
            log.warning(
                "could not record the destination's table on its status part",
                destination=target.label,
                error=str(error),
            )
        return True

    def _rejoined(self, target: _Target, others: Mapping[str, bool | None]) -> bool:
        """Decide a destination that has parts: in the job before, and perhaps removed
        from it and added again since. Each part records the job's destinations when it
        was raised (``members``): this shard's part at another destination raised,
        without this one among them, after this destination's part of the shard was last
        raised, tells that the job ran this shard without it meanwhile, and passed over
        changes it never got. It then gets a ``joined`` span up to this start, as a
        destination added to the job does (its old parts would otherwise let a wait pass
        those changes). Shard by shard: workers of a rolling change raise other shards'
        parts meanwhile, with or without it.

        The other destinations' tables are read on their own threads; this one waits for
        them up to ``_OTHERS_AWAITED_S`` (saying so), then is decided on what was read: a
        status table that hangs or fails (a region down) must not hold every other
        destination's watermark at each new shard's start."""
        label = target.label
        unread = sorted(other for other, had in others.items() if had is None)
        if unread and not self._waiting_for_others(label, unread):
            return False  # tried again at the next publish
        with self._state:
            left_out_at = self._left_out_at.get(label)
            last_raised = self._last_raised.get(label)
        if left_out_at is None or (last_raised is not None and left_out_at <= last_raised):
            return self._decide(target, None)
        if not self._joined(
            target,
            "destination was out of the job for a while (removed from the job file and "
            "added again): changes made meanwhile were not replicated to it; run "
            "`replicator backfill --restart` to it, then `replicator verify`",
            last_raised_here=last_raised,
            job_ran_without_it=left_out_at,
        ):
            return False
        with self._state:
            self._back_stored.add(label)
        return True

    def _back_unstored(self) -> set[str]:
        """Destinations this shard's parts tell were out of the job, whose ``joined``
        span is not stored yet, and undecided ones whose status table has not been read:
        the parts raised meanwhile leave them out of their members, which are the only
        record of it (a stop now would otherwise lose it)."""
        back = {
            label
            for label, at in self._left_out_at.items()
            if label not in self._back_stored
            and (self._last_raised.get(label) is None or at > self._last_raised[label])
        }
        # Not read yet (its table failing past the wait): whether it was out is not
        # known, and recording it as in would erase what the others' parts tell.
        unknown = set(self._undecided) - set(self._had_parts)
        return back | unknown

    def _waiting_for_others(self, label: str, unread: list[str]) -> bool:
        """Whether to decide the destination without the status tables not read yet:
        after ``_OTHERS_AWAITED_S``, saying so once (their own failures are logged and
        counted by their threads; one that hangs says nothing else)."""
        now = time.monotonic()
        with self._state:
            since = self._waiting_since.setdefault(label, now)
            if now - since < _OTHERS_AWAITED_S:
                return False
            if label in self._waiting_said:
                return True
            self._waiting_said.add(label)
        log.warning(
            "destination decided without the other destinations' status tables, which "
            "could not be read: whether it was out of the job for a while (removed from "
            "the job file and added again) is not known; if it was, run `replicator "
            "backfill --restart` to it and `replicator verify`",
            destination=label,
            not_read=unread,
            waited_s=round(now - since, 1),
            shard=self.shard_id,
        )
        return True

    def _child_of_a_listed_shard(self) -> bool:
        """Whether this shard's parent is still in the stream. A first start reads a
        parent before its children, and its processor writes parts before its children
        start: a child at TRIM_HORIZON that finds no part anywhere while its parent is
        listed follows a parent read without the watermark, and the job does not start
        here (its other shards may resume from checkpoints, deciding after this one). A
        parent trimmed from the stream is no sign: such a child is where a first start on
        an old stream begins.

        A stream that cannot be listed is taken for a child's (the error is logged): its
        span reaches this start, as a first start's does when the source cannot be
        described, so the decision waits on no request that may keep failing."""
        try:
            listed = self._shards_for_registration()
        except Exception as error:  # noqa: BLE001  # whatever it is, fail safe
            log.error(
                "could not list the source stream's shards; changes made before this start "
                "are recorded as replicated unwatched: run `replicator verify` to clear them",
                shard=self.shard_id,
                error=str(error),
                error_type=type(error).__name__,
            )
            return True
        ids = {shard.shard_id for shard in listed}
        mine = next((shard for shard in listed if shard.shard_id == self.shard_id), None)
        return mine is not None and mine.parent_id is not None and mine.parent_id in ids

    def _unwatched_before(self, target: _Target) -> bool:
        """A resumed processor (or a child whose parent was read before it), and no
        destination of the job has parts, or this one none of its own while the others
        record it (:meth:`_table_emptied`): the checkpoints passed changes that no
        watermark followed (it was off, or the status table was emptied), whose dead
        letters are recorded nowhere now. They get an ``unwatched`` span up to this
        start, stored at once as a joined destination's is."""
        span = UnreadSpan(0, self._started_us + self._margin_us, spans.UNWATCHED)
        if not self._decide(target, span):
            return False
        log.warning(
            "the job resumes (from a checkpoint, or after its parent shard ended) and the "
            "destination's status table has no part of it (the watermark just turned on, "
            "or the table deleted or emptied while the job was stopped): changes made "
            "before now are not known to be replicated there, and a wait for them is told "
            "so until `replicator verify` clears it",
            destination=target.label,
            shard=self.shard_id,
        )
        return True

    def _watched_again(self, target: _Target) -> bool:
        """End the destination's open ``unwatched`` spans (the job ran with the watermark
        off: replicator/watermark/off.py) at this processor's start, before it claims
        anything there, however it starts; False when the status table could not be
        written (tried again)."""
        with self._state:
            found = self._unwatched.get(target.label, False)
        closed = 0
        if found:
            try:
                closed = target.table.close_unwatched(self._started_us + self._margin_us)
            except _FAILURES as error:
                self._failed(target, error)
                return False
        with self._state:
            self._watched.add(target.label)
        if closed:
            log.warning(
                "the watermark is on again after the job ran with it off: a wait whose "
                "window meets that time is told its changes were replicated unwatched "
                "(dead letters then were not recorded) until `replicator verify` clears it",
                destination=target.label,
                shard=self.shard_id,
            )
        return True

    def _first_start(self, target: _Target, started_with: frozenset[str]) -> bool:
        """Decide a destination that starts the job here: the span of what the stream no
        longer (or never) held, if any, stored with the job's destinations at its first
        start (``started_with``) in one write, so that the others, should they find no
        parts of their own after a crash, are not taken for destinations added later."""
        span = self._before_stream_span()
        if not self._decide(target, span, started_with):
            return False
        if span is not None:
            log.warning(
                "the job starts reading the stream at its oldest record: changes made "
                "before it (before the stream was enabled, or trimmed after 24 hours) "
                "are not replicated; run `replicator backfill`, then `replicator verify`",
                destination=target.label,
                shard=self.shard_id,
                unread_before=span.as_dict()["to_utc"],
            )
        return True

    def _decide(
        self,
        target: _Target,
        span: UnreadSpan | None,
        started_with: frozenset[str] = frozenset(),
    ) -> bool:
        """Store ``span`` and ``started_with`` (if any) on this shard's part at once, in
        one write, before anything is registered or claimed there; then the destination
        is decided (False: they could not be stored, and are tried again)."""
        if span is not None or started_with:
            try:
                target.table.ensure_exists()
                if span is not None:
                    target.table.add_unread_spans(self.shard_id, (span,), started_with=started_with)
                else:
                    target.table.add_started_with(self.shard_id, started_with)
            except _FAILURES as error:
                self._failed(target, error)
                return False
        with self._state:
            self._undecided.discard(target.label)
            if span is not None:
                target.stored_unread = merge_spans([*target.stored_unread, span])
        return True

    def _before_stream_span(self) -> UnreadSpan | None:
        """The span of changes a first start at TRIM_HORIZON cannot read (see
        history.py), from one description of the source per process.

        A source that cannot be described is not taken for one whose stream holds
        everything: the span then reaches this start (as a LATEST start's would), and
        the error is logged; a backfill and verify clear it as any other."""
        with self._history_lock:
            if self._history is None:
                try:
                    self._history = self._source_history()
                except Exception as error:  # noqa: BLE001  # whatever it is, fail safe
                    self._history = error
                    log.error(
                        "could not tell when the source table and its stream were created; "
                        "changes made before this start are recorded as never read for "
                        "every destination that starts the job here: run `replicator "
                        "backfill`, then `replicator verify`",
                        shard=self.shard_id,
                        error=str(error),
                        error_type=type(error).__name__,
                    )
            history = self._history
        if isinstance(history, Exception):
            through: int | None = self._started_us + self._margin_us
        else:
            through = before_stream_through(history, self._started_us, self._margin_us)
        return None if through is None else UnreadSpan(0, through, spans.BEFORE_STREAM)

    def _learn(self, target: _Target) -> bool:
        """Whether the destination's status table has parts, and the job's destinations
        at its first start that they record, noted for :meth:`_decided` (nothing else of
        them is needed; a record that cannot be read is taken for none, which at worst
        takes a destination for one added later: a span too wide, never too narrow).

        First, whether they are this job's: a part that records another source (a job
        of another source given the same task name) is refused (:meth:`_refuse`), and
        False returned; its ``source`` must read (an item where it does not is waited
        for, as any a write needs), since taking it for none would take that job's part
        for this one's."""
        lenient = (*STARTED_WITH, *UNREAD, *PLACE, *MEMBERS, "parents")
        try:
            parts = target.table.parts_if_any((*lenient, *SOURCE), unreadable_as_unset=lenient)
            ours = self._identity()
        except _FAILURES as error:
            self._failed(target, error)
            return False
        if ours is not None:
            foreign = next((part for part in parts if part.source not in (None, ours)), None)
            if foreign is not None and foreign.source is not None:
                self._refuse(target, foreign.shard, foreign.source)
                return False
        every = {part.shard: part for part in parts}
        # This shard's part alone: other shards' parts are other processors' to read.
        mine = every.get(self.shard_id)
        left_out: dict[str, float] = {}
        members = None if mine is None else mine.current_members
        if mine is not None and members is not None and mine.updated_at is not None:
            left_out = dict.fromkeys(set(self._targets) - members, mine.updated_at)
        # A placeholder (a child registered with its parent's value) names its parents'.
        claimed = claimed_for(self.shard_id, every) if self.shard_id in every else None
        with self._state:
            if claimed is not None and target.table.place not in (None, claimed):
                self._moved_from[target.label] = claimed
            self._had_parts[target.label] = bool(parts)
            if mine is not None and mine.updated_at is not None:
                self._last_raised[target.label] = mine.updated_at
            for other, at in left_out.items():
                self._left_out_at[other] = max(self._left_out_at.get(other, 0.0), at)
            self._unwatched[target.label] = any(
                span.open for part in parts for span in part.unread_spans
            )
            self._started_with[target.label] = frozenset().union(
                *(part.started_with for part in parts)
            )
        return True

    def _identity(self) -> str | None:
        """The job's source as its parts record it (None: not given, or not known), asked
        until it is known. A source table that cannot be described (its endpoint down, no
        DescribeTable permission) holds back no watermark: the run's start made the same
        check, so this processor records and compares no source (as parts written before
        sources were recorded), and says so."""
        if self._source_of is None:
            return None
        with self._history_lock:
            if self._source is None:
                try:
                    self._source = self._source_of()
                except _FAILURES as error:
                    log.warning(
                        "could not describe the source table for the watermark's source "
                        "check; this processor's parts record no source",
                        error=str(error),
                        error_type=type(error).__name__,
                    )
                    return None
            return self._source

    @property
    def refused(self) -> EnvironmentProblem | None:
        """Why nothing more is published: a destination's status table holds another
        job's parts (None: it does not)."""
        with self._state:
            return self._refused

    def _refuse(self, target: _Target, shard: str, recorded: str) -> None:
        """The destination's status table holds a part of another source: a job of that
        source, given this job's task name, publishes there under the same destination
        label. Nothing more is published by this processor (its raises would lift that
        job's parts, and a reader would combine both), and ``on_refused`` is told once:
        by default the process stops, exit 3, naming the table, where it is, the
        destination, the other source and what to do."""
        problem = another_jobs_parts(
            target.table.name,
            target.table.where(),
            target.label,
            shard,
            recorded,
            self._source or "",
            reader=False,
        )
        with self._state:
            first = self._refused is None
            if first:
                self._refused = problem
            self._stored.notify_all()
        if first:
            self._on_refused(problem)

    def _shards_for_registration(self) -> Sequence[ListedShard]:
        """The stream's shards, listed once for the destinations that register together
        (each on its thread, at the start)."""
        with self._listing_lock:
            now = time.monotonic()
            if self._listing is None or now - self._listing[0] > _LISTING_REUSED_S:
                self._listing = (now, list(self._list_shards()))
            return self._listing[1]

    def _hand_down_unread(self, table: StatusTable, shards: Sequence[ListedShard]) -> None:
        """At the shard's end, its unread spans pass to its children's parts, so they are
        still reported after the ended part expires."""
        mine = table.part(self.shard_id, ("unread_spans",))
        if mine is None or not mine.unread_spans:
            return
        registered = {part.shard for part in table.parts(())}
        for shard in shards:
            if shard.parent_id == self.shard_id and shard.shard_id in registered:
                table.add_unread_spans(shard.shard_id, mine.unread_spans)

    def _register(
        self, table: StatusTable, shards: Sequence[ListedShard], starting: str | None
    ) -> None:
        parts = {part.shard: part for part in table.lineage()}
        plan = plan_registration(shards, parts, starting)
        for placeholder in plan.placeholders:
            table.add_placeholder(placeholder, self._source)
        for parent, children in plan.children.items():
            table.add_children(parent, children)
        for parent in plan.ended:
            table.mark_ended(parent)

    def _span_until_now(self, reason: str) -> UnreadSpan:
        """Every change created until now, plus the margin the clocks may differ by."""
        return UnreadSpan(0, int(self._clock() * US) + self._margin_us, reason)

    def _table_lost(self, target: _Target) -> None:
        """The status table was deleted since this process used it: register again and
        store again what this process stored, before any claim. What processes no longer
        running stored there (a dead letter of a processor killed since) is gone, so the
        changes created until now get a span (:data:`spans.STATUS_TABLE_LOST`): a wait
        for them is not told "replicated" until a ``verify`` finds nothing different."""
        target.ready = False
        target.published_us = 0
        span = self._span_until_now(spans.STATUS_TABLE_LOST)
        with self._state:
            target.unread.append(span)

    def destination_lost(self, destination: str) -> None:
        """The destination's table answered that it does not exist, or has another key,
        after it had accepted this process's writes (see DestinationWriter._table_lost):
        it was deleted (or re-created) while the job ran, and what was applied there
        before, which the checkpoints have passed, is gone. The changes created until
        now get a span (:data:`spans.DESTINATION_LOST`), stored before any claim: a wait
        for them is not told "replicated" until a ``verify`` finds nothing different
        (after a ``backfill``). Called from the writers' threads, once per refusal."""
        target = self._targets.get(destination)
        if target is None:
            return
        span = self._span_until_now(spans.DESTINATION_LOST)
        with self._state:
            # Each refusal tells it, and each span is one more write to the status table:
            # one a second at most (a later one is still taken, the table may have gone
            # again since; stored spans of the reason are merged into one).
            if any(
                pending.reason == spans.DESTINATION_LOST and pending.to_us >= span.to_us - US
                for pending in target.unread
            ):
                return
            target.unread.append(span)
        target.wake.set()

    def _failed(self, target: _Target, error: BaseException) -> None:
        if error_code(error) == "ResourceNotFoundException" and target.ready:
            # The status table was deleted: create it again and register the stream's
            # shards before anything else (every other shard's part enters at 0, so no
            # reader is told of a watermark from this part alone), then store this
            # process's dead letters and spans again and claim anew.
            self._table_lost(target)
        target.failures += 1
        delay = min(_MAX_RETRY_S, self._interval_s * 2 ** min(target.failures, 10))
        target.retry_at = time.monotonic() + delay
        label = target.label
        self._metrics.watermark_publish_failures.labels(label).inc()
        if target.failures != 1 and target.failures % 20 != 0:
            return
        if isinstance(error, StatusItemUnreadable):
            # Not rewritten from what this process knows: the item's spans and dead
            # letters may be other processes' (a LATEST start's), and dropping them
            # would let a waiter be told "replicated" for changes that are not there.
            log.error(
                "an item of the status table cannot be read; nothing is written over it, "
                "and what this shard would store there and claim waits until the item is "
                "corrected; replication continues",
                destination=label,
                error=str(error),
                failures=target.failures,
                retry_in_s=round(delay, 1),
            )
            return
        log.warning(
            "could not publish the watermark; replication continues, the published "
            "watermark stays where it was",
            destination=label,
            table=target.table.name,
            error=str(error),
            error_type=type(error).__name__,
            failures=target.failures,
            retry_in_s=round(delay, 1),
            exc_info=not isinstance(error, _FAILURES),  # a bug: where it happened
        )

    def _warn_out_of_order(self, tracker: ShardTracker) -> None:
        with self._state:
            if tracker.out_of_order <= self._out_of_order_logged:
                return
            self._out_of_order_logged = tracker.out_of_order
        log.error(
            "stream records arrived older than records before them; the watermark "
            "assumes a shard's records are in creation order and may have run ahead",
            shard=self.shard_id,
            records=tracker.out_of_order,
        )

    def _tracker_or_fail(self) -> ShardTracker:
        if self._tracker is None:
            raise RuntimeError("the watermark was used before the processor initialized")
        return self._tracker


def _joined(first: DeadLetters, second: DeadLetters) -> DeadLetters:
    through = max(first.through, second.through)
    if not second.count:
        return replace(first, through=through)
    if not first.count:
        return replace(second, through=through)
    ranges = merge_ranges([*first.ranges, *second.ranges])
    return DeadLetters(first.count + second.count, tuple(ranges), through)
