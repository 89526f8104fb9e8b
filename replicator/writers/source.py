"""The source writer (active-active): what a job writes to its *own* source table.

A job normally only reads its source. With ``active_active.write_back`` it also writes
there, through this writer, for three reasons, each conditional on the source still
holding something that ranks lower, so that it never replaces a newer write:

* **write-back**: a replicated write lost its conflict at a destination, so the
  destination holds an item (or a delete) that ranks above the source's. That winner is
  written to the source: at most one extra write per lost conflict. Its stream record
  carries the winner's origin stamp, another region's, so this job skips it as an echo
  (and the other jobs never see it: it is in this region's stream only). When the winner
  is this region's own image (out-of-order timestamps in one region), the job notes it
  before the write and skips the write-back's record as an echo too (that image was
  replicated when the region wrote it); a record of the same image read while the
  write-back is on the wire waits for its answer, and is sent on if the write-back
  wrote nothing (the application's own record, see :class:`~replicator.highwater.SharedNotes`).
* **corrections**: a local write that ranks below what the source held (stage
  :mod:`replicator.highwater`) is replaced by the higher state, here and everywhere;
  here only while the source still holds that stale image (a record read again after a
  restart must not remove or replace what the application wrote since).
* **tombstones** (``active_active.tombstones``): a local delete is recorded in the
  source's tombstone table, and a local put that ranks at or below a recorded delete is
  removed again.

The writer is a DestinationWriter for the source table (the same retries, refusals and
conditions) whose writes are counted as write-backs, never as replicated writes. It
takes part in the shard's buffer like a destination, so the checkpoint never passes a
correction it has not made. A write to the source that DynamoDB refuses as it is (never
seen: the images come from the job's own tables) is logged and counted, not stored for
a redrive: the change it belongs to is still settled at the destinations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import msgspec
import structlog

from replicator.aws.tables import BATCH_GET_LIMIT
from replicator.config.model import SOURCE_LABEL_PREFIX
from replicator.conflictlog.base import ConflictRecorder, Loss
from replicator.highwater import SharedNotes
from replicator.images import Image
from replicator.items import AttributeValue, Item, KeyId, describe_key
from replicator.metrics import Metrics
from replicator.records import Change, Event
from replicator.rules.ordered import OrderedRule
from replicator.tombstones.model import Tombstone, row_key, tombstone_of
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import (
    APPLIED,
    CONFLICT_LOST,
    UNCHANGED,
    Outcome,
    Winner,
    WriteResult,
)

log = structlog.get_logger(__name__)


@dataclass
class SourceWriter:
    writer: DestinationWriter  # for the source table: counted=False, no write-back
    rule: OrderedRule
    metrics: Metrics
    conflict_log: ConflictRecorder | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    notes: SharedNotes = field(default_factory=SharedNotes)

    def __post_init__(self) -> None:
        self.writer.cancelled = self.cancelled
        self.writer.removals = self.notes
        self.label = SOURCE_LABEL_PREFIX + self.writer.label

    @property
    def source_label(self) -> str:
        return self.writer.label

    # -- write-back (from a destination writer's thread) ----------------------------------

    def send(self, writer: DestinationWriter, change: Change, winner: Winner) -> bool:
        """Write the winner of ``change``'s lost conflict at ``writer`` to the source."""
        if winner.tombstone is not None:
            written = self.apply_delete(change, winner.tombstone)
        elif winner.item is not None:
            ours = self._stamped_here(winner.item)
            if ours:
                self.notes.expect_echo(change.key, winner.item)
            written = False
            try:
                written = self._put(change, winner.item).outcome is Outcome.APPLIED
            finally:  # also when cancelled or refused: a record waiting on it goes on
                if ours:
                    self.notes.settle_echo(change.key, winner.item, written=written)
        else:
            return False
        if written:
            self.metrics.conflict_writebacks.labels(writer.label).inc()
        log.debug(
            "write-back",
            destination=writer.label,
            key=describe_key(change.keys),
            written=written,
        )
        return written

    # -- the source's own changes (a buffer destination) ----------------------------------

    def write(self, change: Change) -> WriteResult:
        """Settle ``change`` at the source; never FAILED (a refused write is logged)."""
        stale = change.corrects
        if stale is not None:
            return self._correct(change, stale)
        if self.writer.tombstones is None:
            return UNCHANGED
        if change.op_is_delete:
            if change.image is not None:
                self._retrying(change, lambda _: self._record_local_delete(change))
            return UNCHANGED
        image = change.new_image
        assert image is not None
        inserted, checked = self.notes.take_insert(change.key, change.position)
        if change.old_image is not None and not inserted:
            return UNCHANGED  # an update of an item the source held: no delete between
        if checked:
            return UNCHANGED  # the stage read the tombstone after this insert: none above

        def check(_: int) -> Tombstone | None:
            return self.writer.undo_if_deleted(change.keys, image)

        undone: list[Tombstone | None] = []
        outcome = self._retrying(change, lambda attempt: _keep(undone, check(attempt))).outcome
        log.debug(
            "local insert checked against the tombstones",
            key=describe_key(change.keys),
            sequence_number=change.sequence_number,
            deleted=bool(undone and undone[0]),
        )
        if outcome is not Outcome.APPLIED or not undone or undone[0] is None:
            return UNCHANGED
        return self._record(change, None, undone[0], written=True)

    def read_tombstones(self, changes: Sequence[Change]) -> dict[KeyId, Tombstone | None]:
        """The source's tombstones of ``changes``' items (None: no row), read strongly
        consistently and together, BATCH_GET_LIMIT items a request, each request with the
        writer's retries (for the stage, on the reading thread, before it routes a
        batch). An item whose request is refused as it is is left out: its insert is
        checked when written (:meth:`write`). A source that refuses everything stops the
        worker, as any write to it would."""
        table = self.writer.tombstones
        found: dict[KeyId, Tombstone | None] = {}
        if table is None:
            return found
        rows = list({row_key(change.keys): change for change in changes}.items())
        for start in range(0, len(rows), BATCH_GET_LIMIT):
            chunk = rows[start : start + BATCH_GET_LIMIT]
            pending = {row: change.key for row, change in chunk}

            def attempt(_: int, pending: dict[str, KeyId] = pending) -> WriteResult:
                table.get_some(pending, found)
                return APPLIED

            result = self.writer.retrying(chunk[0][1], attempt)
            if result.outcome is not Outcome.APPLIED:
                log.warning(
                    "tombstones not read; the local inserts are checked when written",
                    keys=[describe_key(change.keys) for _, change in chunk],
                    error=result.error,
                )
        return found

    def _rank_fields(self, image: Item) -> tuple[AttributeValue | None, AttributeValue | None]:
        """``image``'s (value, origin), which a correction's condition compares."""
        origin = self.rule.origin_attribute
        return image.get(self.rule.attribute), image.get(origin) if origin else None

    def _stamped_here(self, image: Item) -> bool:
        origin = self.rule.origin_attribute
        stamp = image.get(origin) if origin else None
        return stamp is not None and stamp.get("S") == self.writer.origin

    def _record_local_delete(self, change: Change) -> WriteResult:
        recorded = self.writer.record_tombstone(change)
        # A write-back from another region's job may have put an item ranking at or
        # below this delete into the source after the application's delete and before
        # this record (its tombstone check found nothing yet): remove it now.
        tombstone = self.writer.tombstone_for(change)
        if tombstone is None:
            return APPLIED
        # This job recorded this very delete already (the record is read again, after a
        # restart): it removed what was held then, and a write landing since checked the
        # row. This region's own image held now is the application's later write (an
        # update below the delete, on top of an image above it), which the stage corrects
        # from its own record: it stays.
        again = (
            recorded is not None
            and not recorded.written
            and recorded.held.written_by == self.writer.origin
            and recorded.held.rank == tombstone.rank
        )
        self.writer.remove_held_below(
            change, tombstone, spare=self._stamped_here if again else None
        )
        return APPLIED

    def _correct(self, change: Change, stale: Change) -> WriteResult:
        """Write the higher state ``change`` carries in place of the local ``stale``.

        Only in place of ``stale``: the write applies while the source holds exactly the
        stale image (no item, for a stale delete). The record may be read long after it
        was made (a restart reads it again from the checkpoint), when the source holds
        what the application wrote since: a newer image, or another stale one that its
        own record corrects. Removing or replacing that would be a write the stream
        shows as the application's (a delete of it, sent everywhere)."""
        self.notes.take_insert(change.key, change.position)
        held = stale.new_image
        if change.op_is_delete:
            # A delete (remembered, or known by its tombstone alone): remove the stale
            # image. A remembered one's tombstone is recorded first, as its record did.
            rows: list[Tombstone | None] = []
            removed: list[bool] = []
            if change.tombstone is not None:
                ceiling = (change.tombstone.ordering, change.tombstone.origin)
            else:
                assert change.old_image is not None
                ceiling = self._rank_fields(change.old_image)

            def remove(_: int) -> WriteResult:
                if not rows:
                    recorded = None
                    if change.tombstone is None and self.writer.tombstones is not None:
                        recorded = self.writer.record_tombstone(change)
                    rows.append(recorded.held if recorded is not None else None)
                removed.append(
                    self.writer.replace_exactly(change.keys, held, None, or_foreign_below=ceiling)
                )
                return APPLIED

            result = self._retrying(change, remove)
            written = result.outcome is Outcome.APPLIED and bool(removed and removed[-1])
            tombstone = change.tombstone or self._delete_of(change, rows[0] if rows else None)
            return self._record(stale, None, tombstone, written=written)
        image = change.new_image
        assert image is not None
        put: list[bool] = []

        def put_over(_: int) -> WriteResult:
            put.append(
                self.writer.replace_exactly(
                    change.keys, held, image, or_foreign_below=self._rank_fields(image)
                )
            )
            return APPLIED

        result = self._retrying(change, put_over)
        written = result.outcome is Outcome.APPLIED and bool(put and put[-1])
        if written and held is None and self.writer.tombstones is not None:
            # The put created the item: a delete recorded meanwhile may outrank it.
            undone: list[Tombstone | None] = []
            self._retrying(
                change, lambda _: _keep(undone, self.writer.undo_if_deleted(change.keys, image))
            )
            written = not (undone and undone[-1] is not None)
        return self._record(stale, image, None, written=written)

    def _delete_of(self, change: Change, held: Tombstone | None) -> Tombstone:
        """The delete a correction carries (one this job read in its stream), as the
        conflict log names it. A delete carries no stamp, so the stream does not say
        whether the region's application made it or another region's job did (replicating
        that region's delete); the source's tombstone table does: the job that deleted
        here recorded the delete first, naming its region. ``held``, the row the
        correction's write found (or wrote), is that delete when it ranks as the deleted
        image does; without one (no tombstones) nothing tells, and it is named this
        region's."""
        assert change.old_image is not None
        mine = tombstone_of(
            change.old_image,
            change.keys,
            self.rule.fields,
            deleted_in=self.writer.origin,
            written_by=self.writer.origin,
            deleted_at_ms=change.created_us // 1000,
            expires_at=0,
            ranking=self.writer.tombstone_ranking,
        )
        return held if held is not None and held.rank == mine.rank else mine

    def _record(
        self,
        stale: Change,
        winner: Item | None,
        tombstone: Tombstone | None,
        *,
        written: bool,
    ) -> WriteResult:
        """A local write that lost to a higher state: counted and logged like a lost
        conflict at the source, and handed to the conflict log (CONFLICT_LOST, with the
        log's future: the pipeline settles the change once its entry is stored)."""
        label = self.source_label
        if written:
            self.metrics.conflict_writebacks.labels(label).inc()
        self.metrics.writes.labels(label, stale.event.op, Outcome.CONFLICT_LOST.value).inc()
        if tombstone is not None:
            shown = tombstone.described(self.rule.attribute, self.rule.origin_attribute)
            why = f"{self.rule.name}: {shown} ranks at or above this local write"
            rank = tombstone.rank_record(self.rule.attribute, self.rule.origin_attribute)
        else:
            held, local = self.rule.shown_apart(winner, stale.image)
            why = (
                f"{self.rule.name}: the source held an image ({held}) that ranks above this "
                f"local write ({local})"
            )
            rank = None
        log.info(
            "local write corrected in the source",
            key=describe_key(stale.keys),
            sequence_number=stale.sequence_number,
            why=why,
            written=written,
        )
        if self.conflict_log is None:
            return CONFLICT_LOST
        recorded = self.conflict_log.lost(
            Loss(self.writer, stale, winner, why, write_back=written, winning_rank=rank)
        )
        return WriteResult(Outcome.CONFLICT_LOST, recorded=recorded)

    # -- writes ---------------------------------------------------------------------------

    def _put(self, change: Change, image: Item) -> WriteResult:
        """Put ``image`` to the source while it holds something ranking lower."""
        put = msgspec.structs.replace(
            change,
            event=Event.MODIFY,
            new=Image.of(image),
            old=None,
            ttl_delete=False,
            corrects=None,
        )
        return self._settled(put, self.writer.write(put))

    def apply_delete(self, change: Change, tombstone: Tombstone) -> bool:
        """Record ``tombstone`` in the source and remove its item while it ranks at or
        below it (``change``'s image, the write that lost, is such an item)."""
        # Only a delete ranked as this job ranks wins (tombstones ranked otherwise are
        # not read): its copy says so, a row written before rows said so included.
        copy = replace(
            tombstone, written_by=self.writer.origin, ranking=self.writer.tombstone_ranking
        )
        stale = change.new_image if not change.op_is_delete else None
        result: list[bool] = []

        def attempt(_: int) -> WriteResult:
            table = self.writer.tombstones
            recorded = False
            if table is not None:
                recorded = table.record(copy) is None
                if recorded:
                    self.metrics.tombstones_written.labels(self.source_label).inc()
            removed = self.writer.remove_below(change.keys, tombstone, stale)
            result.append(recorded or removed)
            return APPLIED

        self._retrying(change, attempt)
        return bool(result and result[-1])

    def _retrying(self, change: Change, attempt_once: Callable[[int], WriteResult]) -> WriteResult:
        return self._settled(change, self.writer.retrying(change, attempt_once))

    def _settled(self, change: Change, result: WriteResult) -> WriteResult:
        """A write the source refuses as it is: counted and logged, the source keeps its
        item, and nothing is stored for a redrive."""
        if result.failed:
            label = self.writer.label
            self.metrics.dead_letters.labels(label, result.reason or "failed").inc()
            log.error(
                "write to the source refused; the source keeps its item",
                destination=label,
                key=describe_key(change.keys),
                sequence_number=change.sequence_number,
                reason=result.reason,
                error=result.error,
            )
        return result


def _keep(box: list[Tombstone | None], value: Tombstone | None) -> WriteResult:
    """An attempt of :meth:`DestinationWriter.retrying` that settles once it has a value."""
    box.append(value)
    return APPLIED
