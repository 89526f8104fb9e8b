"""``replicator backfill``: copy the source table to every destination, safely alongside
live replication.

A parallel Scan (``segments``, under a read rate) reads the source; every item becomes
a synthetic change written by the job's own writers through the conflict policy
(:mod:`replicator.tools.snapshot`), so an item the replicator has already updated is
never set back to the older image the scan read. After each page's writes the source
is read again to undo copies of items deleted meanwhile. Progress is saved per
segment after each page (:mod:`replicator.tools.backfill_state`), and the command
refuses to start when the replicator's position would leave a gap
(:mod:`replicator.tools.handoff`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import tables
from replicator.aws.tables import TableShape
from replicator.config.model import ResolvedJob, StreamKind
from replicator.deadletter.base import DeadLetterTarget
from replicator.deadletter.failed import DeadLetterer
from replicator.exceptions import (
    DeadLetterUnavailable,
    DestinationRefused,
    DestinationUnavailable,
    EnvironmentProblem,
    WriteCancelled,
)
from replicator.items import Item, project
from replicator.metrics import Metrics, in_memory_metrics
from replicator.records import Change
from replicator.runtime import preflight
from replicator.tools.backfill_state import (
    COUNTERS,
    BackfillState,
    Plan,
    SegmentProgress,
    state_table_name,
    table_identity,
)
from replicator.tools.futures import StopGrace, each_in_threads, wait_in_steps
from replicator.tools.handoff import Handoff, check_handoff
from replicator.tools.progress import ProgressReport
from replicator.tools.scan import ReadRate, ReadStopped, scan_pages, warn_of_empty_segments
from replicator.tools.snapshot import (
    BACKFILL,
    GuardTally,
    ResurrectionGuard,
    SnapshotRule,
    snapshot_writers,
    synthetic_change,
    tool_dead_letters,
    writer_tables,
)
from replicator.tools.tables import KeptExpired, TableRef, check_same_keys, source_ref
from replicator.wording import counted
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome, WriteResult

log = structlog.get_logger(__name__)

DEFAULT_SEGMENTS = 4


@dataclass(frozen=True)
class BackfillOptions:
    segments: int | None = None  # None: the stored run's count, or DEFAULT_SEGMENTS
    read_rate: float = 0.0  # source items per second, scans and re-reads; 0: unlimited
    threads: int = 8  # concurrent writes; also the most segments scanned at once
    page_size: int = 100  # items per Scan page, and per saved step of progress
    max_items: int | None = None  # stop (progress kept) once this many are scanned
    restart: bool = False
    skip_handoff_check: bool = False
    progress_interval_s: float = 10.0


@dataclass
class BackfillHooks:
    """Seams for tests, called with the segment number and the page's items: after the
    page is read, and after its writes (before the source is read again)."""

    page_scanned: Callable[[int, list[Item]], None] | None = None
    page_written: Callable[[int, list[Item]], None] | None = None


@dataclass
class Tally:
    """Writes per destination and item, by what became of them."""

    scanned: int = 0
    applied: int = 0
    kept: int = 0  # the policy compared the copy with the destination's item: it ranks higher
    dead_lettered: int = 0
    undone: int = 0
    equal: int = 0  # the destination already held this very image
    left: int = 0  # an existing item that an insert-only copy does not overwrite

    def add(self, other: Tally) -> None:
        _add_counts(self, other)

    def as_dict(self) -> dict[str, int]:
        return {
            "applied": self.applied,
            "equal": self.equal,
            "kept": self.kept,
            "left": self.left,
            "dead_lettered": self.dead_lettered,
            "undone": self.undone,
        }


class ItemBudget:
    """``--max-items``: the items this run may still scan, shared by the segments.

    A segment takes its allowance before each Scan (the Scan's ``Limit``) and settles it
    with the page's count once the page is done, so the Scans in flight together never
    ask for more than is left: the run scans at most M items, and exactly M while the
    source holds that many left to copy. A segment whose allowance is 0 while others'
    Scans are in flight waits for them (their pages may come back short, at a segment's
    end, and leave some of M to it); once nothing is left, or the run stops, it gets 0.
    """

    def __init__(self, limit: int | None, stop: threading.Event) -> None:
        self.limit = limit
        self._stop = stop
        self._cond = threading.Condition()
        self._counted = 0  # items of settled pages
        self._taken = 0  # allowances of Scans not yet settled

    def take(self, wanted: int) -> int:
        """The most items the next Scan may return (at most ``wanted``); 0: none."""
        if self.limit is None:
            return wanted
        with self._cond:
            while not self._stop.is_set():
                free = self.limit - self._counted - self._taken
                if free > 0:
                    granted = min(wanted, free)
                    self._taken += granted
                    return granted
                if self._taken == 0:
                    break  # all of M is scanned
                self._cond.wait()
            return 0

    def settle(self, taken: int, scanned: int) -> bool:
        """Settle an allowance of ``taken`` with the ``scanned`` items its page held (0
        for a Scan given up); whether all of M is now scanned."""
        if self.limit is None:
            return False
        with self._cond:
            self._taken -= taken
            self._counted += scanned
            self._cond.notify_all()
            return self._counted >= self.limit

    def wake(self) -> None:
        """The run stops: segments waiting for an allowance get 0."""
        with self._cond:
            self._cond.notify_all()


@dataclass
class BackfillResult:
    task_name: str
    source: str
    destinations: list[str]
    state_table: str
    total_segments: int
    resumed: bool
    already_complete: bool
    complete: bool
    stopped: str | None  # why this run ended before the copy was complete
    this_run: Tally
    overall: Tally
    dead_letters: str
    handoff: str | None = None
    segments_done_before: int = 0
    watermark: bool = False
    """The job publishes a watermark, whose unread spans a copy alone cannot clear."""
    tombstones: bool = False
    """The job keeps tombstones (active_active): a delete can rank above a copy."""
    unsaved_dead_lettered: int = 0
    """Letters stored for pages this run stopped in (their writes or the check after them
    given up at a stop): in the dead-letter target, though the pages' counts are not
    saved."""

    @property
    def exit_code(self) -> int:
        """0 only for a complete copy that dead-lettered nothing. An already complete one
        exits as the run that completed it did: its stored counts say whether writes were
        dead-lettered, and a second run must not report a copy that lacks them as done."""
        return 0 if self.complete and self.overall.dead_lettered == 0 else 1

    def _count(self, name: str) -> str:
        """A count over every run of this copy; a resumed one's own share beside it."""
        overall = getattr(self.overall, name)
        if not self.resumed or self.already_complete:
            return str(overall)
        return f"{overall} ({getattr(self.this_run, name)} this run)"

    def summary(self) -> str:
        if self.already_complete:
            state = "already complete; nothing to do (--restart copies again)"
        elif self.complete:
            state = "complete"
        else:
            state = f"stopped before the end ({self.stopped}); run it again to continue"
        lines = [
            f"backfill of {self.source} to {', '.join(self.destinations)}: {state}",
        ]
        if self.resumed and not self.already_complete:
            lines.append(
                f"  resumed: {self.segments_done_before} of "
                f"{counted(self.total_segments, 'segment')} were already done"
            )
        lines += [
            f"  items scanned:      {self.overall.scanned} ({self.this_run.scanned} this run)",
            f"  writes applied:     {self._count('applied')}",
            f"  already equal:      {self._count('equal')} (the destination held the same item)",
            f"  kept by the policy: {self._count('kept')} (the destination's item"
            f"{', or a delete recorded there,' if self.tombstones else ''} ranks higher)",
            f"  left as they were:  {self._count('left')} (existing items a copy does not "
            "overwrite: under overwrite or custom, or without the ordering attribute; run "
            "`replicator verify --repair` to compare them)",
            f"  copies undone:      {self._count('undone')} (deleted at the source meanwhile)",
            f"  dead-lettered:      {self._count('dead_lettered')}"
            + (
                f" (and {self.unsaved_dead_lettered} in pages not finished, which the next "
                "run copies again)"
                if self.unsaved_dead_lettered
                else ""
            ),
            f"  progress table:     {self.state_table} ({counted(self.total_segments, 'segment')})",
        ]
        if self.watermark and self.already_complete:
            # Not read here: a verify since the copy may have cleared them already.
            lines.append(
                "  watermark:          changes never read stay reported until a whole-table "
                "`replicator verify` after the copy clears them (if one has, nothing is left "
                "to clear)"
            )
        elif self.watermark and self.complete:
            # A scan copies only items the source holds: a delete the job never read
            # leaves its item at the destination, which only a whole-table verify finds.
            lines.append(
                "  watermark:          a copy cannot copy deletes, so changes never read "
                "stay reported; `replicator verify` (with --repair if it finds "
                "differences) clears them"
            )
        if letters := self.overall.dead_lettered + self.unsaved_dead_lettered:
            lines.append(
                f"  {letters} writes were dead-lettered to "
                f"{self.dead_letters}: fix the cause, then run `replicator redrive`"
            )
        return "\n".join(lines)


class Backfill:
    def __init__(
        self,
        resolved: ResolvedJob,
        options: BackfillOptions,
        *,
        hooks: BackfillHooks | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.resolved = resolved
        self.options = options
        self.hooks = hooks or BackfillHooks()
        self.metrics = metrics or in_memory_metrics()
        self.stop = threading.Event()
        self.stopped: str | None = None
        self.run_id = uuid.uuid4().hex[:12]
        self._writers: dict[str, DestinationWriter] = {}
        # Reentrant: a signal handler (interrupt) may run while the main thread holds it.
        self._lock = threading.RLock()
        self._this_run = Tally()
        self._unsaved_letters = 0  # see BackfillResult.unsaved_dead_lettered
        self._dead_letters: DeadLetterTarget | None = None
        self._cancelled = False
        self._grace = StopGrace(self._cancel_writes)  # after a first stop
        self.budget = ItemBudget(options.max_items, self.stop)

    def interrupt(self) -> None:
        """First call: finish the pages being copied, then stop; writes still retried
        ``INTERRUPT_GRACE_S`` later (a destination answering 500s, or throttling, without
        end) are given up then, as by a second call, and their pages are not saved (the
        next run copies them again). Second: stop writing now."""
        if self.stop.is_set():
            self._cancel_writes()
            return
        self._stop_because("interrupted")
        self._grace.start()

    def _fail(self) -> None:
        """A segment failed (a destination that refuses every write, a dead-letter target
        that is gone): the run ends with that error, so the writes in hand and those
        queued behind them are given up at once instead of each retrying its own streak
        of refusals. Pages whose writes did not all settle are not saved."""
        self._stop_because("failed")
        self._cancel_writes()

    def _cancel_writes(self) -> None:
        with self._lock:
            self._cancelled = True
            for writer in self._writers.values():
                writer.cancelled.set()
            if self._dead_letters is not None:
                self._dead_letters.cancel()  # a letter being stored is not waited for

    def _stop_because(self, reason: str) -> None:
        with self._lock:
            if self.stopped is None:
                self.stopped = reason
        self.stop.set()
        self.budget.wake()

    def run(self) -> BackfillResult:
        resolved = self.resolved
        job = resolved.job
        source = source_ref(resolved, connections=2 * self.options.threads + 4)
        self._writers = snapshot_writers(resolved, self.metrics)
        shape = check_same_keys(resolved, source, writer_tables(resolved, self._writers))
        dead_letters = tool_dead_letters(resolved)
        with self._lock:
            self._dead_letters = dead_letters
            if self._cancelled:
                dead_letters.cancel()
        self._letters = DeadLetterer(dead_letters, self.metrics, resolved.task_name, BACKFILL)
        kept = KeptExpired.of(resolved, source)
        handoff: Handoff | None = None
        if self.options.skip_handoff_check:
            log.warning("hand-off check skipped: changes made during the scan may be missed")
        else:
            handoff = check_handoff(resolved, _stream_of(resolved, shape), source.client)
            log.info("hand-off checked", positions=handoff.positions, note=handoff.note)
        state_ref = replace(
            source, table=state_table_name(resolved.task_name), label="backfill progress"
        )
        state = BackfillState(state_ref, owner=self.run_id)
        state.ensure_exists()
        labels = [d.label for d in job.destinations]
        source_name = f"{source.region}/{source.table}"
        plan = state.begin(
            source=source_name,
            destinations=labels,
            segments=self.options.segments,
            default_segments=DEFAULT_SEGMENTS,
            restart=self.options.restart,
            tables={
                ref.label: table_identity(ref)
                for ref in [source, *writer_tables(resolved, self._writers)]
            },
        )
        result = BackfillResult(
            task_name=resolved.task_name,
            source=source_name,
            destinations=labels,
            state_table=state.table,
            total_segments=plan.total_segments,
            resumed=plan.resumed,
            already_complete=plan.complete,
            complete=plan.complete,
            stopped=None,
            this_run=self._this_run,
            overall=Tally(),
            dead_letters=dead_letters.description,
            handoff=handoff.note if handoff else None,
            segments_done_before=sum(1 for s in plan.segments if s.done),
            watermark=resolved.publishes_watermark,
            tombstones=job.active_active.tombstones,
        )
        if plan.complete:
            state.finish(complete=True)
            result.overall = _overall(plan)
            return result
        log.info(
            "backfill started",
            source=source_name,
            destinations=labels,
            segments=plan.total_segments,
            resumed=plan.resumed,
            state_table=state.table,
            read_rate=self.options.read_rate or "unlimited",
        )
        warn_of_empty_segments("backfill", plan.total_segments, shape.item_count)
        complete = False
        state.keep_alive(self._stop_because)
        try:
            self._copy(plan, source, shape.key_names, shape.item_count, state, kept)
            complete = plan.complete
        finally:
            self._grace.cancel()
            try:
                state.finish(complete=complete)
            except (ClientError, BotoCoreError) as error:
                log.warning("could not release the backfill run", error=str(error))
        result.complete = complete
        result.stopped = None if complete else (self.stopped or "stopped")
        result.overall = _overall(plan)
        result.unsaved_dead_lettered = self._unsaved_letters
        log.info(
            "backfill ended",
            complete=complete,
            **result.overall.as_dict(),
            dead_lettered_in_pages_not_saved=self._unsaved_letters,
        )
        return result

    def _copy(
        self,
        plan: Plan,
        source: TableRef,
        key_names: list[str],
        item_count: int,
        state: BackfillState,
        kept: KeptExpired,
    ) -> None:
        options = self.options
        rate = ReadRate(options.read_rate, self.stop)
        guard = ResurrectionGuard(source, key_names, self._writers, rate, self._letters, kept)
        pending = [segment for segment in plan.segments if not segment.done]
        already = sum(segment.scanned for segment in plan.segments)
        report = ProgressReport(
            f"backfill {source.region}/{source.table}",
            item_count,
            details=self._counts_this_run if already else self._this_run.as_dict,
            interval_s=options.progress_interval_s,
            done=already,
        )
        copy = _SegmentCopy(self, plan, source, key_names, rate, guard, state, report)
        with (
            report,
            ThreadPoolExecutor(options.threads, thread_name_prefix="write") as write_pool,
        ):
            copy.write_pool = write_pool
            errors = each_in_threads(
                pending,
                copy.run,
                min(len(pending), options.threads),
                name="scan",
                stop=self.stop,
                on_error=self._fail,
            )
        real = [e for e in errors if not isinstance(e, WriteCancelled)]
        if real:
            # No summary follows the error's line: it says what this run dead-lettered.
            with self._lock:
                letters = self._this_run.dead_lettered + self._unsaved_letters
            raise _operator_error(real[0], source, letters, self._letters.description)

    def _counts_this_run(self) -> dict[str, int]:
        """A resumed run's counts, named as this run's beside the items of every run."""
        return {f"{name}_this_run": count for name, count in self._this_run.as_dict().items()}

    def count_unsaved_letters(self, count: int) -> None:
        with self._lock:
            self._unsaved_letters += count

    def count_page(self, tally: Tally, taken: int) -> None:
        """Count a page done, whose Scan was allowed ``taken`` items of the budget."""
        with self._lock:
            self._this_run.add(tally)
        if self.budget.settle(taken, tally.scanned):
            self._stop_because(f"--max-items {self.options.max_items} reached")


@dataclass
class _SegmentCopy:
    """Copies segments page by page; one instance shared by the scan threads."""

    backfill: Backfill
    plan: Plan
    source: TableRef
    key_names: list[str]
    rate: ReadRate
    guard: ResurrectionGuard
    state: BackfillState
    report: ProgressReport
    write_pool: ThreadPoolExecutor | None = field(default=None)

    def run(self, progress: SegmentProgress) -> None:
        backfill = self.backfill
        hooks = backfill.hooks
        taken = 0  # the allowance of the page in hand (ItemBudget)

        def allowance(wanted: int) -> int:
            nonlocal taken
            taken = backfill.budget.take(wanted)
            return taken

        pages = scan_pages(
            self.source,
            progress.segment,
            self.plan.total_segments,
            self.rate,
            start_key=progress.last_key,
            page_size=backfill.options.page_size,
            allowance=allowance,
        )
        try:
            for page in pages:
                if backfill.stop.is_set():
                    return  # this page is not saved: a resumed run reads it again
                if hooks.page_scanned:
                    hooks.page_scanned(progress.segment, page.items)
                tally = self._write(progress.segment, page.items)
                progress.last_key = page.next_key
                progress.done = page.next_key is None
                _add_counts(progress, tally)
                self.state.save(progress)
                self.report.advance(tally.scanned)
                backfill.count_page(tally, taken)
                taken = 0
                if progress.done:
                    log.info("segment done", segment=progress.segment, scanned=progress.scanned)
        except ReadStopped:
            return  # stopped while a read of this page (or its guard's) waited to retry
        finally:
            backfill.budget.settle(taken, 0)  # a page not done gives its allowance back

    def _write(self, segment: int, items: list[Item]) -> Tally:
        assert self.write_pool is not None
        writers = self.backfill._writers
        letters = self.backfill._letters
        region = self.source.region
        changes = [
            synthetic_change(
                BACKFILL,
                project(item, self.key_names),
                region,
                new_image=item,
                expected=None,
            )
            for item in items
        ]
        futures: list[tuple[Change, str, Future[WriteResult]]] = [
            (change, label, self.write_pool.submit(letters.write, writer, change))
            for change in changes
            for label, writer in writers.items()
        ]
        # A write that fails (a destination refusing every write) fails the run at once,
        # whichever of the page's writes it is: the rest are cancelled, not waited for.
        wait_in_steps([future for _, _, future in futures], on_error=self.backfill._fail)
        failures = [e for e in (f.exception() for _, _, f in futures) if e is not None]
        if failures:
            # The page is not saved, but letters its settled writes stored are in the
            # target: the report counts them apart, or it said none were written.
            self.backfill.count_unsaved_letters(sum(1 for _, _, f in futures if _lettered(f)))
            real = [e for e in failures if not isinstance(e, WriteCancelled)]
            raise (real or failures)[0]
        tally = Tally(scanned=len(items))
        applied: dict[int, tuple[Change, list[str]]] = {}
        for change, label, future in futures:
            result = future.result()
            outcome = result.outcome
            if outcome is Outcome.APPLIED or (result.unanswered and not result.failed):
                # A copy whose request got no answer may have landed whatever its retry
                # found (kept, unchanged): checked against the source all the same.
                applied.setdefault(id(change), (change, []))[1].append(label)
            if outcome is Outcome.APPLIED:
                tally.applied += 1
            elif outcome is Outcome.UNCHANGED:
                tally.equal += 1  # this very image is there already
            elif outcome is Outcome.CONFLICT_LOST:
                rule = writers[label].rule
                if isinstance(rule, SnapshotRule) and rule.ordered(change):
                    tally.kept += 1  # the destination's item (or its delete) ranks higher
                else:
                    tally.left += 1  # insert-only: an existing item is not overwritten
            else:
                tally.dead_lettered += 1
        if self.backfill.hooks.page_written:
            self.backfill.hooks.page_written(segment, items)
        guarded = GuardTally()
        try:
            self.guard.check(list(applied.values()), into=guarded)
        except BaseException:
            # A stop while the source was read again (a throttled read is not retried
            # then) or the undo writes were given up: the page is not saved, and the
            # letters its writes and the check stored are counted apart.
            self.backfill.count_unsaved_letters(tally.dead_lettered + guarded.dead_lettered)
            raise
        tally.undone += guarded.undone
        tally.dead_lettered += guarded.dead_lettered
        if guarded.undone:
            log.info("undid copies of items deleted during the scan", count=guarded.undone)
        if guarded.expired:
            log.info(
                "kept copies of items the source's TTL deleted during the scan",
                count=guarded.expired,
                because="ttl_deletes: skip",
            )
        return tally


def _stream_of(resolved: ResolvedJob, shape: TableShape) -> str:
    source = resolved.job.source
    stream = source.stream
    if stream.kind is StreamKind.KINESIS:
        # The stream the KCL would read, as `run` finds it (a name in source.region), not
        # whatever stream.arn names.
        where = tables.where(source.region, source.endpoint_url, source.role_arn)
        return preflight.check_kinesis_stream(resolved, where, for_backfill=True)
    arn = stream.arn or shape.stream_arn
    if not arn:
        raise EnvironmentProblem(
            f"source table {resolved.job.source.table} has no DynamoDB stream enabled, so the "
            "replicator cannot take over after the backfill. Enable it (view type "
            "NEW_AND_OLD_IMAGES) and start the replicator first, or copy once with "
            "--skip-handoff-check."
        )
    return arn


def _overall(plan: Plan) -> Tally:
    tally = Tally()
    for segment in plan.segments:
        _add_counts(tally, segment)
    return tally


def _add_counts(into: object, other: object) -> None:
    """Add ``other``'s counters (:data:`COUNTERS`) to ``into``'s: a tally or a segment's
    saved progress."""
    for name in COUNTERS:
        setattr(into, name, getattr(into, name) + getattr(other, name))


def _operator_error(
    error: BaseException, source: TableRef, letters: int, target: str
) -> BaseException:
    """Expected failures become one clear message; progress so far is kept."""
    suffix = "; progress is saved: fix it and run the backfill again to continue"
    if letters:
        suffix += (
            f" (this run dead-lettered {letters} {'write' if letters == 1 else 'writes'} to "
            f"{target}: run `replicator redrive` once their cause is fixed)"
        )
    if isinstance(error, DestinationRefused | DestinationUnavailable | DeadLetterUnavailable):
        return EnvironmentProblem(f"{error}{suffix}")
    if isinstance(error, ClientError | BotoCoreError):
        problem = preflight.explain(error, "backfill", source.where)
        return EnvironmentProblem(f"{problem}{suffix}")
    return error


def _lettered(write: Future[WriteResult]) -> bool:
    """A write that settled as a dead letter (stored before it returned)."""
    return not write.cancelled() and write.exception() is None and write.result().failed
