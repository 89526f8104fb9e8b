"""``replicator verify``: does every destination hold exactly the source's items?

The source and every destination are scanned in parallel segments, each item reduced to
a digest of its normalised attributes (so "equal" means what :mod:`compare` says:
same attributes, types and values, numbers as numbers, sets as sets). Keys whose
digests differ are *candidates*: replication lag makes many differences transient,
so each candidate is read again, strongly consistently on both sides (destination
first, then source), a few times with a pause, and only what still differs is reported.

``--sample N`` checks N keys drawn at random from the source, and N from each
destination (which is how extra items are found), by consistent reads instead of
comparing whole scans: drawn uniformly from all the keys of a table of up to
``_SAMPLE_WHOLE_TABLE_ITEMS`` items, from those of whole random scan segments of a
larger one (see :meth:`Verify._sample_keys`).

``--repair`` writes every reported difference through the job's policy with the same
machinery as a backfill (:mod:`replicator.tools.snapshot`), expecting the destination
item it read: a put of the source's item (last_writer_wins/version: the policy's own
condition; custom: the resolver; overwrite: only if the destination is unchanged since
read), or a delete of an extra item (only if unchanged since read). It then reads both
sides again and reports each difference as repaired, refused by the policy, or still
different.

Under ``ttl_deletes: skip`` the job keeps at the destinations the items that the
source's TTL deleted: an item only at a destination whose TTL attribute (the source
table's, from DescribeTimeToLive) holds an expiry the source's TTL acts on and that has
passed (within the five years before now: :func:`~replicator.tools.tables.expired_by_ttl`)
is counted as *kept*, not reported as ``extra``, not repaired, and not a difference for
the exit status.

A whole-table verify (not ``--sample``) that ends with no difference left at a
destination clears the watermark's unread spans there up to its scan's start
(:mod:`replicator.tools.unread`): every change created before then is reflected there.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from replicator import wiring
from replicator.aws.tables import TableShape
from replicator.config.model import ResolvedJob
from replicator.deadletter import DeadLetterTarget
from replicator.deadletter.failed import DeadLetterer
from replicator.exceptions import OperatorError, WriteCancelled
from replicator.items import (
    Item,
    KeyId,
    describe_field,
    describe_key,
    describe_names,
    item_to_wire,
    key_id,
    project,
)
from replicator.logs import redact
from replicator.metrics import Metrics, in_memory_metrics
from replicator.records import Change
from replicator.rules import OrderedRule, rule_for
from replicator.tombstones.model import Tombstone
from replicator.tombstones.setup import job_ranking
from replicator.tombstones.table import TombstoneTable
from replicator.tools.compare import differing_attributes, normalised
from replicator.tools.futures import StopGrace, each_in_threads, wait_in_steps
from replicator.tools.progress import ProgressReport
from replicator.tools.scan import (
    ReadRate,
    ReadStopped,
    batch_get,
    scan_pages,
    warn_of_empty_segments,
)
from replicator.tools.snapshot import (
    REPAIR,
    ResurrectionGuard,
    snapshot_writers,
    synthetic_change,
    tool_dead_letters,
)
from replicator.tools.tables import (
    KeptExpired,
    TableRef,
    check_same_keys,
    describe,
    destination_refs,
    reading,
    source_ref,
)
from replicator.tools.unread import MANUAL_STEP, Cleared, clear_unread
from replicator.wording import counted
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome, WriteResult
from replicator.writers.source import SourceWriter

log = structlog.get_logger(__name__)

MISSING = "missing"
EXTRA = "extra"
DIFFERENT = "different"
# Missing at the destination because a delete there ranks above the source's item (the
# destination's tombstone says so): the source is behind, not the destination.
DELETED = "deleted"
# Only at the destination, its TTL attribute an expiry that has passed (expired_by_ttl),
# under ttl_deletes: skip: the source's TTL deleted it and the job keeps it there on
# purpose. Counted, not a difference.
KEPT = "kept"
# --sample: a table whose estimate is at most this many items has all its keys read (key
# only) and the sample drawn from them, uniformly. A larger one is divided into segments
# of about _ITEMS_PER_SAMPLE_SEGMENT items by its estimate, and whole segments drawn at
# random are read until _SAMPLE_OVERREAD times the sample's size of keys were read.
_SAMPLE_WHOLE_TABLE_ITEMS = 100_000
_ITEMS_PER_SAMPLE_SEGMENT = 100
_SAMPLE_OVERREAD = 4
_MAX_SEGMENTS = 1_000_000
_INTERRUPTED = "verify interrupted before it finished; no report"

WriterT = TypeVar("WriterT", DestinationWriter, SourceWriter)


@dataclass(frozen=True)
class VerifyOptions:
    segments: int = 4
    threads: int = 8
    read_rate: float = 0.0  # items per second per table; 0: unlimited
    sample: int | None = None
    recheck: int = 3  # consistent reads of a difference before it is reported
    recheck_pause_s: float = 2.0
    repair: bool = False
    delete_written_elsewhere: bool = False
    """--repair deletes an extra item another region stamped too (see
    Verify._mark_written_elsewhere)."""
    page_size: int = 1000
    progress_interval_s: float = 10.0


class Reservoir:
    """A uniform random sample of up to ``size`` of the keys offered (bottom-k of random
    priorities, so that the reservoirs of disjoint parts merge into one of the whole)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen = 0
        self._heap: list[tuple[float, int, KeyId]] = []  # (-priority, seen, key): max-heap

    def offer(self, key: KeyId) -> None:
        self._push(random.random(), key)
        self.seen += 1

    def _push(self, priority: float, key: KeyId) -> None:
        entry = (-priority, self.seen, key)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif priority < -self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def merge(self, other: Reservoir) -> None:
        for negative, _, key in other._heap:
            self._push(-negative, key)
            self.seen += 1
        self.seen += other.seen - len(other._heap)

    def keys(self) -> list[KeyId]:
        return [key for _, _, key in self._heap]


@dataclass(frozen=True)
class Sample:
    """The keys ``--sample`` drew from one table, and what they were drawn from."""

    keys: list[KeyId]
    read: int  # keys read, the sample drawn from them
    wanted: int
    segments_read: int
    total_segments: int
    whole_table: bool

    def note(self) -> str | None:
        if self.whole_table and len(self.keys) < self.wanted:
            return (
                f"the table holds {counted(self.read, 'item')}, fewer than --sample {self.wanted}: "
                "all of them were checked"
            )
        if not self.whole_table:
            return (
                f"drawn from the {self.read} keys of {self.segments_read} of "
                f"{self.total_segments} scan segments drawn at random (items that share a "
                "partition key are in one segment)"
            )
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sampled": len(self.keys),
            "read": self.read,
            "requested": self.wanted,
            "whole_table": self.whole_table,
            "segments_read": self.segments_read,
            "total_segments": self.total_segments,
        }


@dataclass
class Finding:
    destination: str
    kind: str  # missing | extra | different
    keys: Item
    attributes: list[str] = field(default_factory=list)
    repair: str | None = None  # repaired | resolved | refused | dead_lettered | unresolved
    detail: str | None = None
    tombstone: Tombstone | None = field(default=None, repr=False)
    written_elsewhere: bool = False
    """An extra item stamped by another region than the source's (active-active):
    ``--repair`` leaves it (see :meth:`Verify._mark_written_elsewhere`)."""

    @property
    def settled(self) -> bool:
        return self.repair in ("repaired", "resolved")

    def line(self) -> str:
        text = f"  {self.kind:<9} {describe_key(self.keys)}"
        if self.attributes:
            text += f"  attributes: {describe_names(self.attributes)}"
        if self.repair:
            text += f"  -> {self.repair}"
            if self.detail:
                text += f": {redact(self.detail)}"
        elif self.detail:
            # Without a repair the detail is what an operator decides on: an extra
            # item that a delete at the source ranks above names that delete.
            text += f"  ({redact(self.detail)})"
        return text

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "key": item_to_wire(self.keys)}
        if self.attributes:
            body["attributes"] = self.attributes
        if self.repair:
            body["repair"] = self.repair
        if self.detail:
            body["detail"] = redact(self.detail)
        if self.written_elsewhere:
            body["written_elsewhere"] = True
        return body


@dataclass
class VerifyReport:
    source: str
    destinations: list[str]
    sampled: bool
    source_items: int
    destination_items: dict[str, int]
    rechecked: int
    findings: list[Finding]
    repaired: bool = False
    unread: Cleared | None = None
    """The watermark's unread spans this verify cleared (a whole-table verify of a job
    that publishes a watermark), and where clearing them failed."""
    samples: dict[str, Sample] = field(default_factory=dict)
    """``--sample``: what each table's sample was drawn from, by label (the source's
    is ``source``)."""
    kept: dict[str, int] = field(default_factory=dict)
    """Items kept on purpose, by destination (:data:`KEPT`)."""
    kept_because: str | None = None
    """Why, when the job keeps items (``ttl_deletes: skip``, TTL on at the source)."""

    def clean(self, label: str) -> bool:
        """No difference is left at destination ``label``."""
        return all(f.settled for f in self.findings if f.destination == label)

    @property
    def equal(self) -> bool:
        return all(finding.settled for finding in self.findings)

    @property
    def exit_code(self) -> int:
        return 0 if self.equal else 1

    def text(self) -> str:
        scope = "sampled" if self.sampled else "scanned"
        outstanding = sum(1 for f in self.findings if not f.settled)
        verdict, repaired = _verdict(len(self.findings), outstanding)
        lines = [
            f"verify {self.source}: {verdict} ({f'{repaired} repaired; ' if repaired else ''}"
            f"{scope} {counted(self.source_items, 'source item')}{self._read('source')}; "
            f"{self.rechecked} re-checked)"
        ]
        lines.extend(self._notes("source"))
        for label in self.destinations:
            mine = [f for f in self.findings if f.destination == label]
            state, repaired = _verdict(len(mine), sum(1 for f in mine if not f.settled))
            if repaired:
                state += f" ({repaired} repaired)"
            lines.append(
                f"{label}: {scope} {counted(self.destination_items.get(label, 0), 'item')}"
                f"{self._read(label)}, {state}{self._kept(label)}{self._moved(label, mine)}"
            )
            lines.extend(self._notes(label))
            lines.extend(finding.line() for finding in mine)
        if self.unread and self.unread.cleared:
            lines.append(
                f"watermark: unread spans and dead-letter ranges up to {self.unread.through} "
                "cleared at "
                f"{', '.join(self.unread.cleared)}"
            )
        if self.unread and self.unread.failed:
            lines.append(
                "watermark: could not clear the unread spans and dead-letter ranges up to "
                f"{self.unread.through} at "
                f"{', '.join(self.unread.failed)}; {MANUAL_STEP}"
            )
        return "\n".join(lines)

    def _kept(self, label: str) -> str:
        count = self.kept.get(label, 0)
        if not count:
            return ""
        return f"; {count} kept: {self.kept_because}"

    def _moved(self, label: str, findings: list[Finding]) -> str:
        """Why a table found equal was counted otherwise than the source: items written
        or deleted while the tables were scanned, read at different moments (each
        difference seen was read again and found settled)."""
        if self.sampled or findings:
            return ""
        apart = self.destination_items.get(label, 0) - self.kept.get(label, 0) - self.source_items
        if not apart:
            return ""
        return (
            f" (counted {abs(apart)} {'more' if apart > 0 else 'fewer'} than the source: items "
            "changed while the tables were scanned, and each difference seen then was "
            "read again and found settled)"
        )

    def _read(self, label: str) -> str:
        sample = self.samples.get(label)
        return f" of {sample.read} read" if sample else ""

    def _notes(self, label: str) -> list[str]:
        sample = self.samples.get(label)
        note = sample.note() if sample else None
        return [f"  sample: {note}"] if note else []

    def as_json(self) -> str:
        body: dict[str, Any] = {
            "source": self.source,
            "equal": self.equal,
            "sampled": self.sampled,
            "source_items": self.source_items,
            "rechecked": self.rechecked,
            "repair": self.repaired,
            "destinations": {
                label: {
                    "items": self.destination_items.get(label, 0),
                    "equal": self.clean(label),
                    "kept": self.kept.get(label, 0),
                    "differences": [f.as_dict() for f in self.findings if f.destination == label],
                }
                for label in self.destinations
            },
        }
        if self.kept_because:
            body["kept_because"] = self.kept_because
        if self.samples:
            body["sample"] = {label: sample.as_dict() for label, sample in self.samples.items()}
        if self.unread:
            body["watermark"] = {
                "unread_cleared_through": self.unread.through,
                "cleared": self.unread.cleared,
                "failed": self.unread.failed,
            }
        return json.dumps(body, indent=2, sort_keys=True, default=str)


@dataclass
class _State:
    """One candidate key at one destination, as last read on both sides."""

    kind: str | None  # None: equal now
    source_item: Item | None
    destination_item: Item | None
    attributes: list[str]


@dataclass
class VerifyHooks:
    """Seam for tests: called after the scans, before the first re-check."""

    scanned: Callable[[], None] | None = None


class Verify:
    def __init__(
        self,
        resolved: ResolvedJob,
        options: VerifyOptions,
        *,
        hooks: VerifyHooks | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.resolved = resolved
        self.options = options
        self.hooks = hooks or VerifyHooks()
        self.metrics = metrics or in_memory_metrics()
        connections = options.threads + 4
        self.source = source_ref(resolved, connections)
        self.destinations = destination_refs(resolved, connections)
        self.by_label = {ref.label: ref for ref in self.destinations}
        self._rates: dict[str, ReadRate] = {}
        self.stop = threading.Event()  # set: give up, reporting nothing
        self._writers: list[DestinationWriter | SourceWriter] = []
        # Reentrant: a signal handler (interrupt) may run while the main thread holds it.
        self._writers_lock = threading.RLock()
        self._grace = StopGrace(self._cancel_writes)  # after a first stop
        self._cancelled = False
        self._samples: dict[str, Sample] = {}
        self._kept = KeptExpired(None)
        self._dead_letters: DeadLetterTarget | None = None  # with --repair
        # One per table read, so that a row ranked otherwise is reported once a table.
        self._tombstone_tables: dict[str, TombstoneTable] = {}

    def interrupt(self) -> None:
        """First call: start no more reads or repair writes, finish those in hand, then
        stop with no report; repair writes still retried ``INTERRUPT_GRACE_S`` later (a
        destination failing without end) are given up then, as by a second call.
        Second: stop at once, a repair write being retried too."""
        if self.stop.is_set():
            self._cancel_writes()
        self.stop.set()
        self._grace.start()

    def _cancel_writes(self) -> None:
        with self._writers_lock:
            self._cancelled = True
            for writer in self._writers:
                writer.cancelled.set()
            if self._dead_letters is not None:
                self._dead_letters.cancel()  # a repair's letter being stored

    def _watch(self, writer: WriterT) -> WriterT:
        """``writer``, cancelled by a second :meth:`interrupt` (and at once if that came)."""
        with self._writers_lock:
            self._writers.append(writer)
            if self._cancelled:
                writer.cancelled.set()
        return writer

    def _all_read(self, failures: list[BaseException]) -> None:
        """After the segments' reads: the first failure, or the stop that left some
        unread (no report), raised."""
        if failures:
            raise failures[0]
        self._check_stop()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise OperatorError(_INTERRUPTED)

    def _rate(self, ref: TableRef) -> ReadRate:
        return self._rates.setdefault(ref.label, ReadRate(self.options.read_rate, self.stop))

    def run(self) -> VerifyReport:
        try:
            return self._run()
        except ReadStopped:
            raise OperatorError(_INTERRUPTED) from None
        finally:
            self._grace.cancel()

    def _run(self) -> VerifyReport:
        shape = check_same_keys(self.resolved, self.source, self.destinations)
        key_names = shape.key_names
        if self.options.repair:
            # Before the scan, which can take long: a repair that cannot be dead-lettered
            # would end the command only once the scan is done.
            dead_letters = tool_dead_letters(self.resolved)
            with self._writers_lock:
                self._dead_letters = dead_letters
                if self._cancelled:
                    dead_letters.cancel()
        self._kept = KeptExpired.of(self.resolved, self.source)
        started_s = time.time()  # before the first read of any table
        if self.options.sample:
            counts, candidates = self._sample(shape)
        else:
            counts, candidates = self._scan(key_names)
        if self.hooks.scanned:
            self.hooks.scanned()
        rechecked = sum(len(keys) for keys in candidates.values())
        states = self._settle(candidates, key_names)
        findings = [
            Finding(label, state.kind, key_item(key, key_names), state.attributes)
            for label, per_key in states.items()
            for key, state in per_key.items()
            if state.kind not in (None, KEPT)
        ]
        kept = {
            label: sum(1 for state in per_key.values() if state.kind == KEPT)
            for label, per_key in states.items()
        }
        self._read_tombstones(findings, states)
        self._mark_written_elsewhere(findings, states)
        findings.sort(key=lambda f: (f.destination, f.kind, describe_key(f.keys)))
        report = VerifyReport(
            source=f"{self.source.region}/{self.source.table}",
            destinations=[ref.label for ref in self.destinations],
            sampled=bool(self.options.sample),
            source_items=counts.get(self.source.label, 0),
            destination_items={ref.label: counts.get(ref.label, 0) for ref in self.destinations},
            rechecked=rechecked,
            findings=findings,
            repaired=self.options.repair,
            samples={
                "source" if label == self.source.label else label: sample
                for label, sample in self._samples.items()
            },
            kept={label: count for label, count in kept.items() if count},
            kept_because=self._kept.why if self._kept.attribute else None,
        )
        if self.options.repair and findings:
            self._repair(findings, states, key_names)
        if not self.options.sample:
            clean = [label for label in report.destinations if report.clean(label)]
            report.unread = clear_unread(self.resolved, started_s, clean)
        log.info(
            "verify done",
            equal=report.equal,
            differences=len(findings),
            outstanding=sum(1 for f in findings if not f.settled),
            kept=sum(kept.values()),
        )
        return report

    # -- finding candidates ---------------------------------------------------------------

    def _scan(self, key_names: list[str]) -> tuple[dict[str, int], dict[str, set[KeyId]]]:
        """Digest every item of every table; the keys whose digests differ, per destination."""
        tables = [self.source, *self.destinations]
        estimates = [describe(ref).item_count for ref in tables]
        estimate = sum(estimates)
        warn_of_empty_segments("verify", self.options.segments, max(estimates))
        digests: dict[str, dict[KeyId, bytes]] = {ref.label: {} for ref in tables}
        lock = threading.Lock()
        # Its items are those of every table together, as its estimate is: said beside them.
        report = ProgressReport(
            "verify scan",
            estimate,
            details=lambda: {"tables": len(tables)},
            interval_s=self.options.progress_interval_s,
        )

        def scan_segment(ref: TableRef, segment: int) -> None:
            found: dict[KeyId, bytes] = {}
            with reading(ref):
                for page in scan_pages(
                    ref,
                    segment,
                    self.options.segments,
                    self._rate(ref),
                    page_size=self.options.page_size,
                ):
                    self._check_stop()
                    for item in page.items:
                        found[key_id(project(item, key_names))] = item_digest(item)
                    report.advance(len(page.items))
            with lock:
                digests[ref.label].update(found)

        with report:
            failures = each_in_threads(
                ((ref, segment) for ref in tables for segment in range(self.options.segments)),
                lambda task: scan_segment(*task),
                self.options.threads,
                name="scan",
                stop=self.stop,
            )
        self._all_read(failures)
        source = digests[self.source.label]
        candidates: dict[str, set[KeyId]] = {}
        for ref in self.destinations:
            theirs = digests[ref.label]
            differing = {key for key, digest in source.items() if theirs.get(key) != digest}
            differing |= {key for key in theirs if key not in source}
            candidates[ref.label] = differing
        counts = {label: len(found) for label, found in digests.items()}
        return counts, candidates

    def _sample(self, shape: TableShape) -> tuple[dict[str, int], dict[str, set[KeyId]]]:
        assert self.options.sample
        count = self.options.sample
        key_names = shape.key_names
        report = ProgressReport(
            "verify sample",
            count * (1 + len(self.destinations)),
            interval_s=self.options.progress_interval_s,
        )
        with report:
            source = self._sample_keys(self.source, shape.item_count, count, key_names)
            report.advance(len(source.keys))
            self._samples[self.source.label] = source
            counts = {self.source.label: len(source.keys)}
            candidates: dict[str, set[KeyId]] = {}
            for ref in self.destinations:
                theirs = self._sample_keys(ref, describe(ref).item_count, count, key_names)
                report.advance(len(theirs.keys))
                self._samples[ref.label] = theirs
                counts[ref.label] = len(theirs.keys)
                candidates[ref.label] = set(source.keys) | set(theirs.keys)
        return counts, candidates

    def _sample_keys(
        self, ref: TableRef, estimate: int, count: int, key_names: list[str]
    ) -> Sample:
        """``count`` keys drawn uniformly at random from the keys read (fewer if fewer
        were read): all of the table's keys when its estimate is at most
        ``_SAMPLE_WHOLE_TABLE_ITEMS`` (or ``count``), else those of whole scan segments
        drawn at random until ``_SAMPLE_OVERREAD`` times ``count`` keys were read."""
        whole = estimate <= max(_SAMPLE_WHOLE_TABLE_ITEMS, count)
        if whole:
            total = max(1, self.options.segments)
            order = list(range(total))
            enough = None
        else:
            total = min(_MAX_SEGMENTS, math.ceil(estimate / _ITEMS_PER_SAMPLE_SEGMENT))
            order = random.sample(range(total), total)
            enough = _SAMPLE_OVERREAD * count
        rate = self._rate(ref)
        lock = threading.Lock()
        reservoir = Reservoir(count)
        visited = 0

        def read_segment(segment: int) -> None:
            mine = Reservoir(count)
            with reading(ref):
                for page in scan_pages(
                    ref,
                    segment,
                    total,
                    rate,
                    page_size=self.options.page_size,
                    key_names=key_names,
                ):
                    self._check_stop()
                    for item in page.items:
                        mine.offer(key_id(project(item, key_names)))
            with lock:
                nonlocal visited
                reservoir.merge(mine)
                visited += 1

        def wanted() -> Iterator[int]:
            for segment in order:
                with lock:
                    if enough is not None and reservoir.seen >= enough:
                        return
                yield segment

        failures = each_in_threads(
            wanted(), read_segment, self.options.threads, name="sample", stop=self.stop
        )
        self._all_read(failures)
        return Sample(
            keys=reservoir.keys(),
            read=reservoir.seen,
            wanted=count,
            segments_read=visited,
            total_segments=total,
            whole_table=visited == total,
        )

    # -- re-checking ----------------------------------------------------------------------

    def _settle(
        self, candidates: dict[str, set[KeyId]], key_names: list[str]
    ) -> dict[str, dict[KeyId, _State]]:
        """Read candidates again until they are equal or ``recheck`` reads say they differ."""
        pending = {label: set(keys) for label, keys in candidates.items() if keys}
        final: dict[str, dict[KeyId, _State]] = {label: {} for label in candidates}
        for attempt in range(max(1, self.options.recheck)):
            if not pending:
                break
            self._check_stop()
            if attempt:
                self.stop.wait(self.options.recheck_pause_s)
                self._check_stop()
            states = self._read_states(pending, key_names)
            pending = {}
            for label, per_key in states.items():
                for key, state in per_key.items():
                    final[label][key] = state
                    # Kept: no replication in flight brings back what the source's TTL
                    # deleted, so reading it again could change nothing.
                    if state.kind not in (None, KEPT):
                        pending.setdefault(label, set()).add(key)
        return final

    def _read_states(
        self, keys: dict[str, set[KeyId]], key_names: list[str]
    ) -> dict[str, dict[KeyId, _State]]:
        # Destinations first, then the source: a source image read after the destination's
        # is at least as new as anything the replicator could have written there by then.
        destination_items = {
            label: self._batch_get(self.by_label[label], wanted, key_names)
            for label, wanted in keys.items()
        }
        source_items = self._batch_get(self.source, union(keys.values()), key_names)
        states: dict[str, dict[KeyId, _State]] = {}
        for label, wanted in keys.items():
            theirs = destination_items[label]
            states[label] = {
                key: _state(source_items.get(key), theirs.get(key), self._kept) for key in wanted
            }
        return states

    def _batch_get(
        self, ref: TableRef, keys: Iterable[KeyId], key_names: list[str]
    ) -> dict[KeyId, Item]:
        with reading(ref):
            return batch_get(
                ref, [key_item(key, key_names) for key in keys], key_names, self._rate(ref)
            )

    # -- tombstones (active_active.tombstones) --------------------------------------------

    def _read_tombstones(
        self, findings: list[Finding], states: dict[str, dict[KeyId, _State]]
    ) -> None:
        """An item the source holds and a destination lacks because a delete there ranks
        above it is reported as ``deleted``, and repaired by deleting it at the source
        (copying it would bring back a deleted item); an extra item that a delete at the
        source ranks above is reported as ``extra`` with that delete named."""
        rule = self._rule()
        if rule is None:
            return
        now = time.time()
        for finding in findings:
            state = states[finding.destination][key_id(finding.keys)]
            if finding.kind == MISSING and state.source_item is not None:
                ref = self.by_label[finding.destination]
                tombstone = self._tombstone(ref, finding.keys)
                rank = rule.rank(state.source_item)
                if tombstone and tombstone.blocks(rank) and not tombstone.expired(now):
                    finding.kind = DELETED
                    finding.tombstone = tombstone
            elif finding.kind == EXTRA and state.destination_item is not None:
                tombstone = self._tombstone(self.source, finding.keys)
                if tombstone and tombstone.blocks(rule.rank(state.destination_item)):
                    finding.detail = tombstone.described(rule.attribute, rule.origin_attribute)
                    finding.tombstone = tombstone

    def _mark_written_elsewhere(
        self, findings: list[Finding], states: dict[str, dict[KeyId, _State]]
    ) -> None:
        """In an active-active job, an extra item that does not carry the source's stamp
        was written in another region (the destination's own, most often) and has not
        reached the source yet: that region's job lags, stopped, or dead-lettered it.
        Deleting it at the destination would be replicated as that region's delete, and
        the write would be gone from every region, so ``--repair`` leaves it (reported,
        a difference for the exit code). An item the source stamped was written there
        and deleted since (the delete never arrived), and a delete at the source that
        ranks above the item (its tombstone) decides by the job's order: both are
        deleted as before. An item without any stamp is left too: it may be either.

        Without tombstones, such an item may also be one the source deleted whose delete
        this job never delivered (a stop past the stream's retention, a LATEST start): an
        item still extra once the other region's job has caught up is that, and
        ``--delete-extra-written-elsewhere`` deletes it."""
        job = self.resolved.job
        attribute = job.loop_prevention.origin_attribute
        if attribute is None:
            return
        deleting = self.options.repair and self.options.delete_written_elsewhere
        stamp = {"S": job.origin_value}
        for finding in findings:
            if finding.kind != EXTRA or finding.tombstone is not None:
                continue
            item = states[finding.destination][key_id(finding.keys)].destination_item
            if item is None or item.get(attribute) == stamp:
                continue
            stamped = describe_field(attribute, item.get(attribute))
            if deleting:
                finding.detail = f"written with {stamped} (--delete-extra-written-elsewhere)"
                continue
            finding.written_elsewhere = True
            maybe = (
                "unstamped, so either another region's write the source has not received "
                "yet or one the source wrote and deleted"
                if not isinstance((item.get(attribute) or {}).get("S"), str)  # as the job reads it
                else f"not {job.origin_value}: another region's write the source has not "
                "received yet (its job lags, is stopped, dead-lettered it or does not list "
                f"{job.source.region} among its destinations), or one the "
                "source deleted"
            )
            finding.detail = (
                f"written with {stamped}, {maybe} whose delete never arrived; deleting it "
                "here would be replicated as that region's delete, so --repair "
                "leaves it: verify again once that region's job has caught up, and an item "
                "still extra then was deleted at the source (--repair "
                "--delete-extra-written-elsewhere deletes it), unless that region's job "
                f"does not list {job.source.region} among its destinations (its log warns "
                "'no destination of this job is in'): add it there instead, and repair "
                "from that job"
            )

    def _rule(self) -> OrderedRule | None:
        job = self.resolved.job
        if not job.active_active.tombstones:
            return None
        rule = rule_for(job.conflict, job.loop_prevention.origin_attribute)
        return rule if isinstance(rule, OrderedRule) else None

    def _tombstone(self, ref: TableRef, keys: Item) -> Tombstone | None:
        job = self.resolved.job
        table = self._tombstone_tables.get(ref.label)
        if table is None:
            table = TombstoneTable(
                ref.client,
                job.tombstone_table(ref.table),
                ref.endpoint,
                0,
                ranking=job_ranking(job),
                origin=job.origin_value,
            )
            self._tombstone_tables[ref.label] = table
        return table.get(keys)

    # -- repair ---------------------------------------------------------------------------

    def _repair(
        self,
        findings: list[Finding],
        states: dict[str, dict[KeyId, _State]],
        key_names: list[str],
    ) -> None:
        dead_letters = self._dead_letters
        assert dead_letters is not None
        letters = DeadLetterer(dead_letters, self.metrics, self.resolved.task_name, REPAIR)
        writers = {
            label: self._watch(writer)
            for label, writer in snapshot_writers(self.resolved, self.metrics).items()
        }
        region = self.source.region
        jobs: list[tuple[Finding, _State, Change, DestinationWriter]] = []
        deleted = [f for f in findings if f.kind == DELETED]
        if deleted:
            self._delete_at_source(deleted, states)
        for finding in findings:
            if finding.kind == DELETED:
                continue
            if finding.written_elsewhere:
                finding.repair = "refused"
                continue
            state = states[finding.destination][key_id(finding.keys)]
            new_image = None if finding.kind == EXTRA else state.source_item
            change = synthetic_change(
                REPAIR,
                finding.keys,
                region,
                new_image=new_image,
                expected=state.destination_item,
            )
            jobs.append((finding, state, change, writers[finding.destination]))

        def apply(
            job: tuple[Finding, _State, Change, DestinationWriter],
        ) -> WriteResult | None:
            _, _, change, writer = job
            if self.stop.is_set():
                return None  # interrupted: not started
            try:
                return letters.write(writer, change)
            except WriteCancelled:
                return None  # interrupted again: given up while it was being retried

        with ThreadPoolExecutor(self.options.threads, thread_name_prefix="repair") as pool:
            futures = [pool.submit(apply, job) for job in jobs]
            # A repair write that fails (a destination refusing every write) ends the
            # command with its error: the writes in hand and queued are given up at once.
            wait_in_steps(futures, on_error=self._cancel_writes)
        done = [future.result() for future in futures]
        if self.stop.is_set():
            made = sum(1 for outcome in done if outcome is not None)
            raise OperatorError(
                f"verify --repair interrupted: {made} of {len(jobs)} repair writes made, "
                "the rest not; no report (run verify again to see what differs)"
            )
        results = [result for result in done if result is not None]
        self._judge(jobs, results, dead_letters)
        applied_puts: dict[int, tuple[Change, list[str]]] = {}
        for (finding, _, change, _), result in zip(jobs, results, strict=True):
            landed = result.outcome is Outcome.APPLIED or (
                result.unanswered and not result.failed  # may have, whatever it found
            )
            if landed and change.new_image is not None:
                applied_puts.setdefault(id(change), (change, []))[1].append(finding.destination)
        guard = ResurrectionGuard(
            self.source, key_names, writers, self._rate(self.source), letters, self._kept
        )
        guard.check(list(applied_puts.values()))
        self._confirm(findings, key_names)

    def _judge(
        self,
        jobs: list[tuple[Finding, _State, Change, DestinationWriter]],
        results: list[WriteResult],
        dead_letters: DeadLetterTarget,
    ) -> None:
        for (finding, state, change, writer), result in zip(jobs, results, strict=True):
            outcome = result.outcome
            if outcome is Outcome.APPLIED:
                finding.repair = "repaired"
            elif outcome is Outcome.UNCHANGED:
                finding.repair = "resolved"
                finding.detail = "the destination already held the source's item"
            elif outcome is Outcome.CONFLICT_LOST:
                finding.repair = "refused"
                # The writer's own reason (a resolver that kept the destination's item, a
                # tombstone); the rule's explanation from what verify read otherwise.
                finding.detail = result.why or writer.rule.explain_loss(
                    change, state.destination_item
                )
            else:
                finding.repair = "dead_lettered"
                finding.detail = f"stored in {dead_letters.description}"

    def _delete_at_source(
        self, findings: list[Finding], states: dict[str, dict[KeyId, _State]]
    ) -> None:
        """Apply each destination's delete to the source, where the item is stale."""
        source = wiring.source_writer(self.resolved, self.metrics)
        assert source is not None
        self._watch(source)
        for finding in findings:
            self._check_stop()
            state = states[finding.destination][key_id(finding.keys)]
            assert finding.tombstone is not None and state.source_item is not None
            change = synthetic_change(
                REPAIR,
                finding.keys,
                self.source.region,
                new_image=state.source_item,
                expected=None,
            )
            try:
                deleted = source.apply_delete(change, finding.tombstone)
            except WriteCancelled:
                raise OperatorError(
                    "verify --repair interrupted while deleting at the source; no report "
                    "(run verify again to see what differs)"
                ) from None
            if deleted:
                finding.repair = "repaired"
                finding.detail = "deleted at the source"
            else:
                finding.repair = "refused"
                finding.detail = "the source's item changed since it was read"

    def _confirm(self, findings: list[Finding], key_names: list[str]) -> None:
        # Read both sides again: what is equal now is settled, whatever did it.
        confirm: dict[str, set[KeyId]] = {}
        for finding in findings:
            confirm.setdefault(finding.destination, set()).add(key_id(finding.keys))
        after = self._settle(confirm, key_names)
        for finding in findings:
            state = after[finding.destination][key_id(finding.keys)]
            # A ``deleted`` finding is a missing item read with its tombstone.
            read_as = MISSING if finding.kind == DELETED else finding.kind
            if state.kind is None:
                if finding.repair != "repaired":
                    finding.repair, finding.detail = "resolved", "equal when read again"
            elif finding.repair == "repaired":
                finding.repair = "unresolved"
                # The item may have changed kind since (an extra one written again at
                # the source, say, is now different): "still" only when it has not.
                again = "still" if state.kind == read_as else "now"
                finding.detail = f"{again} {state.kind} when read again"
                if state.attributes:
                    finding.detail += f" ({', '.join(state.attributes)})"
            elif state.kind != read_as:
                # Left (refused, dead-lettered) and changed since: what it says of the item
                # read first is told as such.
                now = f"now {state.kind} when read again"
                finding.detail = f"{finding.detail}; {now}" if finding.detail else now


def _differences(count: int) -> str:
    return f"{count} difference{'s' if count != 1 else ''}"


def _verdict(found: int, left: int) -> tuple[str, int]:
    """What the report says of ``found`` differences, ``left`` of them not repaired, and
    how many were repaired: a count alone would read as what was found, where the lines
    under it show more."""
    settled = found - left
    if not found:
        return "equal", 0
    if not left:
        return "equal after repair", settled
    return (f"{_differences(left)} left" if settled else _differences(left)), settled


def _state(
    source_item: Item | None,
    destination_item: Item | None,
    expired: Callable[[Item], bool] = lambda item: False,
) -> _State:
    if source_item is None and destination_item is None:
        return _State(None, None, None, [])
    if destination_item is None:
        return _State(MISSING, source_item, None, [])
    if source_item is None:
        kind = KEPT if expired(destination_item) else EXTRA
        return _State(kind, None, destination_item, [])
    attributes = differing_attributes(source_item, destination_item)
    return _State(DIFFERENT if attributes else None, source_item, destination_item, attributes)


def key_item(key: KeyId, key_names: list[str]) -> Item:
    """The key attributes of a key identity, in boto3 form (numbers in their canonical,
    plain spelling: see :func:`replicator.items.canonical_number`)."""
    item: Item = {name: {kind: value} for name, kind, value in key}
    return {name: item[name] for name in key_names if name in item}


def item_digest(item: Item) -> bytes:
    """A digest equal for items that compare equal (see :mod:`replicator.tools.compare`)."""
    text = _encode(tuple(sorted((name, normalised(value)) for name, value in item.items())))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _encode(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_encode(part) for part in value) + ")"
    if isinstance(value, frozenset):
        return "{" + ",".join(sorted(_encode(part) for part in value)) + "}"
    if isinstance(value, bytes):
        return "b" + value.hex()
    return repr(value)


def union(sets: Iterable[set[KeyId]]) -> set[KeyId]:
    result: set[KeyId] = set()
    for keys in sets:
        result |= keys
    return result
