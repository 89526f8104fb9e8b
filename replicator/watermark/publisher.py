"""One shard's watermark in a processor: the tracker the pipeline feeds, and the thread
that publishes its parts to each destination's status table.

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
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.exceptions import ReplicatorError
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.watermark import spans
from replicator.watermark.parts import ListedShard, merge_ranges, plan_registration
from replicator.watermark.spans import UnreadSpan
from replicator.watermark.table import StatusTable
from replicator.watermark.tracker import DeadLetters, ShardTracker

log = structlog.get_logger(__name__)

US = 1_000_000
_FAILURES = (ClientError, BotoCoreError, ReplicatorError, OSError)
_MAX_RETRY_S = 60.0


@dataclass
class _Target:
    table: StatusTable
    ready: bool = False
    published_us: int = 0
    dead_letters: DeadLetters = field(default_factory=lambda: DeadLetters(0, ()))
    failures: int = 0
    retry_at: float = 0.0
    unread: list[UnreadSpan] = field(default_factory=list)
    """Spans of changes never read for this destination, to store before any claim."""


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``reads_follow_answers``: the runtime reads the shard again only after the
        processor has answered the previous batch (the local runtime), so an empty batch
        was read after that answer; otherwise (the KCL, which reads ahead) it is dated
        when it arrives, and ``margin_s`` must cover how long a batch can wait."""
        self.shard_id = shard_id
        self._targets = {label: _Target(table) for label, table in tables.items()}
        self._list_shards = list_shards
        self._metrics = metrics
        self._interval_s = interval_s
        self._margin_us = int(margin_s * US)
        self._reads_follow_answers = reads_follow_answers
        self._clock = clock
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._tracker: ShardTracker | None = None
        self._publishing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._out_of_order_logged = 0
        self._started_us = 0
        # Resumed: destinations not yet known to have been in the job before (see
        # _check_joins), and what each status table held when first asked.
        self._undecided: set[str] = set()
        self._had_parts: dict[str, bool] = {}

    # -- lifecycle ----------------------------------------------------------------------

    def begin(self, *, resumed: bool, at_latest: bool = False) -> None:
        """Start tracking (``resumed``: from a checkpoint) and publishing.

        ``at_latest``: the shard starts at LATEST with no checkpoint, so every change
        created before now (and the margin, for the clocks) was never read; that span is
        stored before any claim, so no waiter is told those changes were replicated.
        A resumed processor first checks whether a destination joined the job (see
        :meth:`_check_joins`).
        """
        now_us = int(self._clock() * US)
        self._started_us = now_us
        if at_latest:
            for target in self._targets.values():
                target.unread.append(UnreadSpan(0, now_us + self._margin_us, spans.LATEST))
        self._undecided = set(self._targets) if resumed else set()
        self._tracker = ShardTracker(
            list(self._targets),
            margin_us=self._margin_us,
            resumed_at_us=now_us if resumed else None,
        )
        self._thread = threading.Thread(target=self._loop, name="watermark", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The lease is gone: publish nothing more."""
        if self._tracker is not None:
            self._tracker.stop()
        self._stop.set()

    def close(self) -> None:
        self._stop.set()

    # -- what the pipeline reports ------------------------------------------------------

    def received(self, change: Change) -> None:
        self._tracker_or_fail().received(change)

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

    # -- publishing ---------------------------------------------------------------------

    def publish(self) -> None:
        """Write each destination's part if it moved (and dead letters, if any)."""
        tracker = self._tracker_or_fail()
        with self._publishing:
            self._warn_out_of_order(tracker)
            if self._undecided:
                self._check_joins()
            listing: Sequence[ListedShard] | None = None
            for label, target in self._targets.items():
                if time.monotonic() < target.retry_at or label in self._undecided:
                    continue
                try:
                    if not target.ready:
                        target.table.ensure_exists()
                        listing = listing if listing is not None else self._list_shards()
                        self._register(target.table, listing, starting=self.shard_id)
                        target.ready = True
                    # Dead letters are stored before the claim that covers them is raised
                    # (and the claim is not raised while they cannot be stored), so a
                    # reader never sees W pass a dead-lettered change without its range.
                    claim, taken = tracker.claim_and_dead_letters(label)
                    if taken.count:
                        target.dead_letters = DeadLetters(
                            target.dead_letters.count + taken.count,
                            tuple(merge_ranges([*target.dead_letters.ranges, *taken.ranges])),
                        )
                    if target.dead_letters.count:
                        target.table.add_dead_letters(self.shard_id, target.dead_letters)
                        target.dead_letters = DeadLetters(0, ())
                    if target.unread:  # before any claim, which may pass them
                        target.table.add_unread_spans(self.shard_id, tuple(target.unread))
                        target.unread.clear()
                    if claim > target.published_us:
                        stored = target.table.raise_part(self.shard_id, claim, self._owner)
                        target.published_us = max(claim, stored)
                    target.failures = 0
                except _FAILURES as error:
                    self._failed(label, target, error)

    def end_shard(self) -> None:
        """The shard was read to its end and everything in it is settled: publish the
        final part, register the shard's children with its value, and mark it ended."""
        self.publish()
        with self._publishing:
            listing: Sequence[ListedShard] | None = None
            for label, target in self._targets.items():
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

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.publish()
            except Exception as error:  # publishing must never stop the shard
                log.error("watermark publishing failed", error=str(error), exc_info=True)

    def _check_joins(self) -> None:
        """A destination with no part in its status table while another destination of
        the job has parts joined a job that resumes from checkpoints: the changes before
        the checkpoints were never read for it (and will not be). Its first start is when
        it joined; it gets a span up to this processor's start.

        Decided once per destination, before this processor registers or claims anything
        there (a destination undecided is not published; one whose status table cannot
        be read holds back only itself and, while it is the only other one that may have
        parts, a destination without parts). A joined destination's span is stored at once
        on this shard's part (which then reads as 0, holding the watermark until this
        processor claims): a processor that starts after that finds the new destination's
        parts, and the span stored here holds for every reader (spans of all parts are
        combined), even if this processor dies before it claims."""
        now = time.monotonic()
        for label in sorted(self._undecided - set(self._had_parts)):
            target = self._targets[label]
            if now < target.retry_at:
                continue
            try:
                self._had_parts[label] = bool(target.table.parts_if_any())
            except _FAILURES as error:
                self._failed(label, target, error)
        for label in sorted(self._undecided & set(self._had_parts)):
            others = [self._had_parts.get(other) for other in self._targets if other != label]
            if self._had_parts[label] or not any(others):
                if self._had_parts[label] or all(known is False for known in others):
                    self._undecided.discard(label)  # in the job before, or nothing to compare
                continue
            target = self._targets[label]
            span = UnreadSpan(0, self._started_us, spans.JOINED)
            try:
                target.table.ensure_exists()
                target.table.add_unread_spans(self.shard_id, (span,))
            except _FAILURES as error:
                self._failed(label, target, error)
                continue
            self._undecided.discard(label)
            log.warning(
                "destination joined a job that resumes from checkpoints: changes made "
                "before now are not replicated to it; run `replicator backfill` to it, then "
                "`replicator verify`",
                destination=label,
                shard=self.shard_id,
            )

    def _hand_down_unread(self, table: StatusTable, shards: Sequence[ListedShard]) -> None:
        """At the shard's end, its unread spans pass to its children's parts, so they are
        still reported after the ended part expires."""
        parts = {part.shard: part for part in table.parts()}
        mine = parts.get(self.shard_id)
        if mine is None or not mine.unread_spans:
            return
        for shard in shards:
            if shard.parent_id == self.shard_id and shard.shard_id in parts:
                table.add_unread_spans(shard.shard_id, mine.unread_spans)

    def _register(
        self, table: StatusTable, shards: Sequence[ListedShard], starting: str | None
    ) -> None:
        parts = {part.shard: part for part in table.parts()}
        plan = plan_registration(shards, parts, starting)
        for placeholder in plan.placeholders:
            table.add_placeholder(placeholder)
        for parent, children in plan.children.items():
            table.add_children(parent, children)
        for parent in plan.ended:
            table.mark_ended(parent)

    def _failed(self, label: str, target: _Target, error: BaseException) -> None:
        target.failures += 1
        delay = min(_MAX_RETRY_S, self._interval_s * 2 ** min(target.failures, 10))
        target.retry_at = time.monotonic() + delay
        self._metrics.watermark_publish_failures.labels(label).inc()
        if target.failures == 1 or target.failures % 20 == 0:
            log.warning(
                "could not publish the watermark; replication continues, the published "
                "watermark stays where it was",
                destination=label,
                table=target.table.name,
                error=str(error),
                error_type=type(error).__name__,
                failures=target.failures,
                retry_in_s=round(delay, 1),
            )

    def _warn_out_of_order(self, tracker: ShardTracker) -> None:
        if tracker.out_of_order > self._out_of_order_logged:
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
