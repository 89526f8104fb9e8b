"""Writing items read from a table (not from the stream) through the job's conflict policy.

``backfill``, ``verify --repair`` and ``redrive`` (of their dead letters) write images
they read from the source table while the replicator may be writing the same items.
A read image can be older than what the replicator has already applied, so it is
turned into a *synthetic change* and written by the job's own DestinationWriter with a
:class:`SnapshotRule` that keeps it from overwriting newer data:

* ``last_writer_wins`` / ``version``, image carrying the ordering attribute: the
  policy's own condition (an older image never overwrites a newer item);
* ``custom``: the resolver decides, but only while the destination still holds the
  item the command expected (nothing, for a backfill);
* ``overwrite``, or an image without the ordering attribute: written only while the
  destination still holds exactly the expected item. A backfill expects nothing, so it
  only inserts missing items; a repair expects what it read at the destination.
* deletes (of an extra item, or of a copy that brought a deleted item back): only
  while the destination still holds exactly the item the command expects to delete.

Synthetic changes are ordinary stream records in the adapter's format, so a dead letter
of one replays like any other. Their conventions:

* sequence number ``0``, below every real DynamoDB Streams or Kinesis sequence number,
  so a synthetic change never counts as newer than a stream change;
* ``eventSource`` ``replicator:backfill`` or ``replicator:repair``;
* ``eventName`` MODIFY with the read image as ``NewImage``, or REMOVE;
* ``OldImage`` is the destination item the write expects to replace or delete (absent
  when it expects no item), not the source's previous image;
* ``ApproximateCreationDateTime`` is when the image was read.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from replicator import wiring
from replicator.config.model import ResolvedJob
from replicator.conflictlog.base import ConflictRecorder
from replicator.deadletter.base import DeadLetterTarget
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.items import Item, item_to_wire
from replicator.metrics import Metrics
from replicator.records import (
    SYNTHETIC_SEQUENCE_NUMBER,
    SYNTHETIC_SOURCE_PREFIX,
    Change,
    Event,
    RawRecord,
)
from replicator.rules import (
    ConflictRule,
    CustomRule,
    OrderedRule,
    Skip,
    Verdict,
    WriteRequest,
)
from replicator.rules.requests import holds_outcome, write_over
from replicator.runtime import file_owners, preflight
from replicator.tools.compare import differing_attributes
from replicator.tools.scan import ReadRate, batch_get
from replicator.tools.tables import KeptExpired, TableRef
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome
from replicator.writers.wire import botocore_client_of

BACKFILL = "backfill"
REPAIR = "repair"


def synthetic_change(
    purpose: str,
    keys: Item,
    region: str,
    *,
    new_image: Item | None,
    expected: Item | None,
    read_ms: int | None = None,
) -> Change:
    """A synthetic change: a put of ``new_image``, or a delete when it is None."""
    read_ms = read_ms if read_ms is not None else int(time.time() * 1000)
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": read_ms,
        "Keys": item_to_wire(keys),
        "NewImage": item_to_wire(new_image) if new_image is not None else {},
        "OldImage": item_to_wire(expected) if expected is not None else {},
        "SequenceNumber": SYNTHETIC_SEQUENCE_NUMBER,
        "SizeBytes": 0,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    document = {
        "eventID": f"{purpose}-{read_ms}",
        "eventName": "MODIFY" if new_image is not None else "REMOVE",
        "eventVersion": "1.1",
        "eventSource": SYNTHETIC_SOURCE_PREFIX + purpose,
        "awsRegion": region,
        "dynamodb": body,
    }
    data = json.dumps(document, separators=(",", ":")).encode("utf-8")
    raw = RawRecord(
        data=base64.b64encode(data).decode("ascii"),
        sequenceNumber=SYNTHETIC_SEQUENCE_NUMBER,
        subSequenceNumber=0,
        partitionKey=SYNTHETIC_SEQUENCE_NUMBER,
        approximateArrivalTimestamp=read_ms,
    )
    # Decoding what was built is what a redrive of its dead letter will do.
    return decode(raw)


def synthetic_purpose(raw: Mapping[str, Any]) -> str | None:
    """``backfill`` or ``repair`` for a synthetic record, None for a stream record."""
    if raw.get("sequenceNumber") != SYNTHETIC_SEQUENCE_NUMBER:
        return None
    try:
        document = json.loads(base64.b64decode(str(raw.get("data")), validate=True))
    except (ValueError, binascii.Error):
        return None
    source = document.get("eventSource") if isinstance(document, dict) else None
    if isinstance(source, str) and source.startswith(SYNTHETIC_SOURCE_PREFIX):
        return source[len(SYNTHETIC_SOURCE_PREFIX) :]
    return None


def same_item(left: Item | None, right: Item | None) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return not differing_attributes(left, right)


class SnapshotRule:
    """The job's policy for a destination, applied to synthetic changes (module docstring)."""

    def __init__(self, policy: ConflictRule) -> None:
        self.policy = policy
        self.name = policy.name
        self.reads_existing = policy.reads_existing

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        expected = change.old_image
        if self.reads_existing and not same_item(existing, expected):
            return Skip(self._changed(expected))
        if isinstance(self.policy, CustomRule):
            # The resolver decides every write, a command's removals too (a copy undone,
            # an extra item): it may leave a soft-delete marker as it does for a delete.
            return self.policy.plan(change, existing)
        ranking = self.policy.ranking if isinstance(self.policy, OrderedRule) else None
        if change.event is Event.REMOVE:
            return expected_request("delete", change, expected, ranking)
        if self._ordered(change):
            return self.policy.plan(change)
        return expected_request("put", change, expected, ranking)

    def shows_applied(self, change: Change, existing: Item | None) -> bool:
        return holds_outcome(change, existing)

    def reconsider(self, change: Change, existing: Item | None) -> WriteRequest | Verdict:
        """An ordered put settles what its condition could not compare (a tie, the same
        image); a write on "exactly the expected item" has nothing left to decide.

        One exception, for ``verify --repair`` (the change expects the destination item
        it read): a destination item that still is what was read and ties the source's
        image on (value, origin) is replaced by the source's. Replication settles a tie
        between regions by the digest in every region, so a tie that verify still finds
        after its re-checks was not made by concurrent writes (an item edited in place,
        its timestamp kept); the source's image is the one to keep."""
        if change.event is Event.REMOVE or not self._ordered(change):
            return Verdict.LOST
        assert isinstance(self.policy, OrderedRule) and change.new_image is not None
        decision = self.policy.reconsider(change, existing)
        expected = change.old_image
        if (
            decision is Verdict.LOST
            and existing is not None
            and expected is not None
            and same_item(existing, expected)
            and self.policy.rank(existing)[:3] == self.policy.rank(change.new_image)[:3]
        ):
            return write_over(
                "put", change.keys, existing, change.new_image, first=self.policy.ranking
            )
        return decision

    def explain_loss(self, change: Change, existing: Item | None) -> str:
        if self.ordered(change) or (
            # the destination holds what was expected: the resolver declined
            isinstance(self.policy, CustomRule)
            and change.event is not Event.REMOVE
            and same_item(existing, change.old_image)
        ):
            return self.policy.explain_loss(change, existing)
        return self._changed(change.old_image)

    def ordered(self, change: Change) -> bool:
        """Whether the put of ``change`` is compared with the destination's item by the
        policy's order (else it is written only over the expected item)."""
        return change.event is not Event.REMOVE and self._ordered(change)

    def _ordered(self, change: Change) -> bool:
        return (
            isinstance(self.policy, OrderedRule)
            and change.new_image is not None
            and self.policy.attribute in change.new_image
        )

    def _changed(self, expected: Item | None) -> str:
        if expected is None:
            return (
                f"the destination already has this item; under {self.name} an image read "
                "from the source is only inserted where the item is missing"
            )
        return "the destination's item changed since it was read"


def expected_request(
    op: str, change: Change, expected: Item | None, first: list[str] | None = None
) -> WriteRequest:
    """A put or delete that applies only while the destination holds exactly ``expected``
    (for a wide item, on ``first``, the policy's ranking attributes, before any other:
    :func:`~replicator.rules.requests.equal_to`)."""
    item = change.new_image if op == "put" else None
    return write_over(op, change.keys, expected, item, first=first or ())


# Seconds an operator command's write waits for a destination that does not answer at
# all (connection refused, reset or timed out) before the command ends with exit 3, as
# ``conflicts --restore`` does: replication waits as long as it takes, an operator at a
# terminal wants an answer. Throttling and server errors are answers: a destination that
# gives them is there, and the writes wait them out as replication does.
UNANSWERED_FOR_S = 60.0


def tool_writers(
    resolved: ResolvedJob, metrics: Metrics, conflict_log: ConflictRecorder | None = None
) -> dict[str, DestinationWriter]:
    """The job's writers as an operator command uses them: bounded by ``UNANSWERED_FOR_S``
    (read when called) where a destination stops answering."""
    return {
        label: replace(writer, unanswered_for_s=UNANSWERED_FOR_S)
        for label, writer in wiring.destination_writers(resolved, metrics, conflict_log).items()
    }


def tool_dead_letters(resolved: ResolvedJob, run_id: str | None = None) -> DeadLetterTarget:
    """The job's dead-letter target as an operator command uses it: checked as ``run``
    checks it at start, and bounded by ``UNANSWERED_FOR_S`` (read when called) where a
    queue stops answering, as the writers are: a letter that cannot be stored ends the
    command (exit 3) instead of holding it for ever."""
    preflight.check_dead_letter_target(resolved)
    file_owners.check(resolved)
    return wiring.dead_letter_target(resolved, run_id=run_id, unanswered_for_s=UNANSWERED_FOR_S)


def snapshot_writers(resolved: ResolvedJob, metrics: Metrics) -> dict[str, DestinationWriter]:
    """The job's writers, one per destination, with their rules made safe for read images."""
    return with_snapshot_rules(tool_writers(resolved, metrics))


def with_snapshot_rules(writers: Mapping[str, DestinationWriter]) -> dict[str, DestinationWriter]:
    """Copies of ``writers`` (same clients) with snapshot rules."""
    return {
        # Read images are written as they are: no write-back to the source. With
        # active_active.tombstones a put that ranks at or below the item's tombstone at the
        # destination is undone as the stream writers undo it (and counts as kept by the
        # policy); the tools' own deletes (of an extra item, of a copy of an item deleted
        # meanwhile) record no tombstone.
        label: replace(
            writer,
            rule=SnapshotRule(writer.rule),
            ordering=writer.rule if isinstance(writer.rule, OrderedRule) else None,
            records_tombstones=False,
            write_back=None,
        )
        for label, writer in writers.items()
    }


def writer_tables(
    resolved: ResolvedJob, writers: Mapping[str, DestinationWriter]
) -> list[TableRef]:
    """The job's destinations as tables to describe or read, through the writers' clients."""
    return [
        TableRef(
            label=destination.label,
            region=destination.region,
            table=destination.table,
            endpoint_url=destination.endpoint_url,
            client=botocore_client_of(writers[destination.label].client),
        )
        for destination in resolved.job.destinations
    ]


@dataclass
class GuardTally:
    undone: int = 0  # copies of deleted items removed again
    caught_up: int = 0  # replayed images replaced by the source's newer one (catch_up)
    restored: int = 0  # items a replayed delete removed that the source holds: written again
    expired: int = 0  # copies of items the source's TTL deleted, kept (ttl_deletes: skip)
    kept: int = 0  # the destination had changed since, or holds the source's image: left alone
    dead_lettered: int = 0
    # Where the policy kept the destination's item over the source's image (or, ``gone``,
    # over its removal: the source no longer holds the item), and why (the rule's
    # explanation): (destination, why, gone). The destination may then differ from the
    # source, which only verify can say.
    declined: list[tuple[str, str, bool]] = field(default_factory=list)


class ResurrectionGuard:
    """Undoes copies that brought back an item deleted at the source meanwhile.

    A command reads item X, the source deletes X, the replicator deletes X at the
    destination, and then the command writes X there: X is back, and no stream record
    will ever remove it. So after writes that were applied, the source is read again
    (strongly consistent); for every item it no longer holds, the destination's copy is
    deleted, but only while it is still exactly the image that was written, so that a
    newer item the replicator wrote in between is never removed. If the source still
    holds the item, any later delete comes after the copy in the stream and the
    replicator applies it.

    Under ``ttl_deletes: skip`` a copy whose TTL attribute is an expiry that has passed
    stays (:class:`KeptExpired`): the source's TTL deleted it, and the job keeps such
    items at the destinations; removing it would lose the item the destination held before.
    """

    def __init__(
        self,
        source: TableRef,
        key_names: list[str],
        writers: Mapping[str, DestinationWriter],
        rate: ReadRate,
        letters: DeadLetterer,
        kept: KeptExpired,
    ) -> None:
        """``letters`` keeps a removal that fails; its ``shard_id`` names the command
        (``backfill``, ``repair``, ``redrive``), which is the removals' purpose too."""
        self.source = source
        self.key_names = key_names
        self.writers = writers
        self.rate = rate
        self.letters = letters
        self.purpose = letters.shard_id
        self.kept = kept

    def check(
        self,
        applied: list[tuple[Change, list[str]]],
        *,
        catch_up: bool = False,
        into: GuardTally | None = None,
    ) -> GuardTally:
        """``applied``: puts, each with the destinations where it was applied.

        With ``catch_up`` (a dead letter replayed late, a stream change's or a backfill's
        or repair's: the source may have changed the item since, and the change that did
        may have reached the destination before the replay, or not at all), an item the
        source holds with another image is written there too, as a read image (a
        synthetic change under the snapshot rules) and only while the destination still
        holds exactly the replayed image (under an ordered policy: one ranking below the
        source's), so that nothing newer is overwritten. A backfill or repair itself
        does not catch up: the source's later changes are in the stream after its read,
        and the replicator writes them. ``into``: the tally to count in, which keeps what
        was done (letters stored) when a stop or a failure ends the check part way."""
        tally = into if into is not None else GuardTally()
        if not applied:
            return tally
        present = batch_get(self.source, [c.keys for c, _ in applied], self.key_names, self.rate)
        for change, labels in applied:
            if change.new_image is None:
                continue
            current = present.get(change.key)
            if current is not None:
                if catch_up and not same_item(current, change.new_image):
                    self._write_source_image(change, current, change.new_image, labels, tally)
                continue
            if self.kept(change.new_image):
                tally.expired += len(labels)
                continue
            self._write_source_image(change, None, change.new_image, labels, tally)
        return tally

    def restore(self, deleted: list[tuple[Change, list[str]]]) -> GuardTally:
        """``deleted``: deletes replayed late, each with the destinations where it was
        written.

        The source may have created the item again since, and that creation may already
        be applied at the destination, where the late delete has just removed it: no
        stream record will ever bring it back. So an item the source holds is written
        there as a read image, expecting no item: under ``overwrite`` (or ``custom``, or
        an image without the ordering attribute) only where the destination holds none,
        under an ordered policy only over an item that ranks below it, so that a newer
        item the replicator wrote in between is kept. If the creation has not reached the
        destination yet, the replicator writes it after this, as it would have anyway."""
        tally = GuardTally()
        if not deleted:
            return tally
        present = batch_get(self.source, [c.keys for c, _ in deleted], self.key_names, self.rate)
        for change, labels in deleted:
            current = present.get(change.key)
            if current is not None:
                self._write_source_image(change, current, None, labels, tally)
        return tally

    def _write_source_image(
        self,
        change: Change,
        current: Item | None,
        expected: Item | None,
        labels: list[str],
        tally: GuardTally,
    ) -> None:
        """Write the source's ``current`` image (None: remove the item) where ``change``
        was replayed, while the destination holds ``expected`` (None: no item)."""
        synthetic = synthetic_change(
            self.purpose,
            change.keys,
            self.source.region,
            new_image=current,
            expected=expected,
        )
        for label in labels:
            result = self.letters.write(self.writers[label], synthetic)
            outcome = result.outcome
            if outcome is Outcome.CONFLICT_LOST:
                writer = self.writers[label]
                why = result.why or f"{writer.rule.name}: the destination's item was kept"
                tally.declined.append((label, why, current is None))
            if outcome is Outcome.APPLIED:
                if current is None:
                    tally.undone += 1
                elif expected is None:
                    tally.restored += 1
                else:
                    tally.caught_up += 1
            elif outcome in (Outcome.CONFLICT_LOST, Outcome.UNCHANGED):
                tally.kept += 1
            else:
                tally.dead_lettered += 1
