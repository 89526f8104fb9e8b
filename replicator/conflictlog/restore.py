"""``replicator conflicts --restore ENTRY``: put a losing image back, on purpose, and say so.

The losing image is written to the destination where it lost, the job's destination at
the region and table the entry records (:func:`entry_destination`; never one the
entry's destination name has since come to mean), by the job's own
DestinationWriter for that destination (same client, credentials, retries), as a
synthetic change (:mod:`replicator.tools.snapshot`, event source
``replicator:restore``); with loop prevention, stamped with the job's origin (see
:func:`restored_image`: in active-active the destination's own job reads it). A restore
never overwrites an update made since the conflict: the item is first read with a
consistent GetItem and compared whole with the image that won (no item when none won),
because a condition expression can only check the attributes it names, and an attribute
added since would pass it. Only when the item is exactly that image is the write sent,
and it is still conditional on every attribute of the winner, so that a change or
removal between the read and the write stops it; an attribute added in those
milliseconds is the one change neither sees. The item cannot tell an older loss from a
later loss to the same winner: an entry of a later change of the item that lost at the
same table, not restored, refuses the older's restore (:func:`_later_losses`).
``--force`` writes unconditionally, without reading. A lost delete is restored by
deleting the item, under the same checks. An entry
whose winning image was truncated (too large for its log) keeps the image's sha256
(:func:`~replicator.items.image_digest`): the item read must have that
digest, computed the same way, and the write is then conditional on the item read. It is
never compared with "no item" (which would refuse an unchanged item, and restore over a
deleted one as if nothing had won).

The writer retries as it does in replication, but for ``RETRY_FOR_S`` only: an operator
waits for the answer, so a destination that does not answer is reported
(EnvironmentProblem, exit 3) instead of retried until it does.

Every restore that is applied is itself recorded: an entry of kind ``restore`` in the
same conflict log (``restored_entry`` names the conflict, ``losing_image`` is what was
written, ``winning_image`` what it replaced when the condition held) and an
info-level log line ``conflict entry restored``; when the log does not take the record,
the restore is said to be unrecorded, with no id, as no entry has one. Restoring an
entry again finds the item already holding its losing image, writes nothing and says so.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog

from replicator import wiring
from replicator.aws import clients
from replicator.aws.tables import where
from replicator.config.destinations import destination_place, destinations_at, spelled
from replicator.config.model import DestinationConfig, ResolvedJob
from replicator.conflictlog.base import ConflictLogTarget, Selection, entry_place
from replicator.conflictlog.entry import (
    CONFLICT,
    FORCED,
    RESTORE,
    ConflictEntry,
    entry_id,
    instant,
    iso,
    rank_of,
)
from replicator.conflictlog.keys import canonical_key
from replicator.conflictlog.reader import key_text, read_task_entries
from replicator.exceptions import (
    ConflictLogRejected,
    ConflictLogUnavailable,
    DestinationRefused,
    DestinationUnavailable,
    EntryNotFound,
    EnvironmentProblem,
    LogReadingStopped,
)
from replicator.items import Item, describe_key, image_digest, item_to_wire
from replicator.logs import redact
from replicator.metrics import in_memory_metrics
from replicator.records import Change
from replicator.rules import ConflictRule, Skip, Verdict, WriteRequest
from replicator.rules.requests import holds_outcome
from replicator.tools.snapshot import expected_request, same_item, synthetic_change
from replicator.writers.outcomes import Outcome
from replicator.writers.refusals import NOT_PASSED

log = structlog.get_logger(__name__)

RESTORE_PURPOSE = "restore"
# How long a restore retries a destination that does not answer (or throttles) before
# it reports it: the command's operator is waiting.
RETRY_FOR_S = 60.0
CONDITIONAL = "only while the destination holds the image that won"
# How long a restore that finds the losing image already written, with no record of a
# restore, reads the log again for one: a restore of the same entry run at the same
# time writes its record just after its write.
CONCURRENT_RECORD_WAIT_S = 2.0
_CONCURRENT_RECORD_POLL_S = 0.2


class RestoreRule:
    """Writes the synthetic restore change: unforced, only after a read shows the
    destination holds exactly the recorded winner (module docstring).

    An item that already holds the image to restore is not written, before it is compared
    with the winner, since it may be the winner too (an entry whose two images are one,
    recorded by a custom rule of earlier versions): the writer takes that Skip for
    ``unchanged``. Whether a write was planned is kept, for :func:`restore` to say whether
    a destination that stopped answering may have taken it."""

    name = "restore"

    def __init__(self, force: bool, winner_digest: str | None = None) -> None:
        self.force = force
        # The winner's sha256 when the log kept only that (a truncated winning image): the
        # item read must have that digest, and the write is conditional on the item read.
        self.winner_digest = winner_digest
        self.reads_existing = not force
        self.wrote = False  # a write was planned (and sent, or about to be)

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        op = change.event.op
        if self.force:
            self.wrote = True
            if op == "delete":
                return WriteRequest(op="delete", key=change.keys)
            return WriteRequest(op="put", item=change.new_image)
        if holds_outcome(change, existing):
            return Skip("the destination's item is already the image to restore")
        expected = change.old_image
        if self.winner_digest is not None:
            if existing is None or image_digest(item_to_wire(existing)) != self.winner_digest:
                return Skip(self.explain_loss(change, existing))
            expected = existing
        elif not same_item(existing, expected):
            return Skip(self.explain_loss(change, existing))
        self.wrote = True
        return expected_request(op, change, expected)

    def shows_applied(self, change: Change, existing: Item | None) -> bool:
        return holds_outcome(change, existing)

    def reconsider(self, change: Change, existing: Item | None) -> WriteRequest | Verdict:
        return Verdict.LOST

    def explain_loss(self, change: Change, existing: Item | None) -> str:
        return "the destination's item is no longer the image that won the conflict"


@dataclass
class RestoreResult:
    conflict: ConflictEntry
    restored: bool
    message: str
    record: ConflictEntry | None = None
    recorded: bool = False

    @property
    def exit_code(self) -> int:
        return 0 if self.restored and self.recorded else 1


def find_entry(
    entries: list[ConflictEntry],
    wanted: str,
    where: str,
    aliases: dict[str, ConflictEntry] | None = None,
) -> ConflictEntry:
    """The entry whose id is ``wanted`` (or starts with it, when only one does).

    ``aliases``: the ids of entries the reading left out for another entry of the same
    change (:func:`~replicator.conflictlog.reader.read_entries`), and that entry. An id
    no entry kept has, but one left out does, names the entry kept: the one the listing
    shows, and the one a restore made before names."""
    exact = [e for e in entries if e.id == wanted]
    found = exact or [e for e in entries if e.id.startswith(wanted)]
    if not found and aliases:
        kept_ids = {e.id for e in entries}
        found = [
            kept
            for alias, kept in aliases.items()
            if alias.startswith(wanted) and kept.id in kept_ids
        ]
    ids = sorted({e.id for e in found})
    if not ids:
        raise EntryNotFound(f"no conflict-log entry {wanted!r} in {where}")
    if len(ids) > 1:
        raise EntryNotFound(f"{wanted!r} names {len(ids)} entries in {where}: {', '.join(ids)}")
    entry = found[0]
    if entry.kind != CONFLICT:
        raise EntryNotFound(
            f"entry {entry.id} records a restore (of {entry.restored_entry}), not a conflict"
        )
    return entry


def restore(
    resolved: ResolvedJob,
    target: ConflictLogTarget,
    wanted: str,
    *,
    key: Item | None = None,
    force: bool = False,
    retry_for_s: float | None = None,
) -> RestoreResult:
    """Write the losing image of entry ``wanted`` back, and record that in ``target``.

    ``key`` (the item's key) lets a DynamoDB log find the entry with one Query;
    ``retry_for_s`` bounds the retries at the destination (default ``RETRY_FOR_S``).
    """
    searched = target.description + (f" under key {describe_key(key)}" if key else "")
    aliases: dict[str, ConflictEntry] = {}
    named = named_places(resolved)
    entries, others = read_task_entries(
        target, selection_for(key), resolved.task_name, aliases, named
    )
    try:
        entry = find_entry(entries, wanted, searched, aliases)
    except EntryNotFound:
        theirs = sorted(
            {f"{e.id} (task {e.task_name!r})" for e in others if e.id.startswith(wanted)}
        )
        if not theirs:
            raise
        raise EntryNotFound(
            f"no conflict-log entry {wanted!r} of task {resolved.task_name!r} in {searched}; "
            f"the log is shared with other jobs, and {', '.join(theirs)} "
            f"{'is' if len(theirs) == 1 else 'are'} theirs: restore with that job's file"
        ) from None
    result = _restore(resolved, target, entry, entries, key, force, retry_for_s, others)
    if not entry.id.startswith(wanted):
        same = sorted(a for a, kept in aliases.items() if kept is entry and a.startswith(wanted))
        result.message = (
            f"entry {same[0]} records the same lost change as entry {entry.id}, which was "
            f"recorded first and is the one listed: {result.message}"
        )
    return result


def _restore(
    resolved: ResolvedJob,
    target: ConflictLogTarget,
    entry: ConflictEntry,
    entries: list[ConflictEntry],
    key: Item | None,
    force: bool,
    retry_for_s: float | None,
    others: Sequence[ConflictEntry] = (),
) -> RestoreResult:
    """:func:`restore` of ``entry``, found among ``entries`` (the task's, as read; ``others``:
    other tasks' entries read beside them, as a fan-in's other source's)."""
    if entry.correction:
        raise EntryNotFound(
            f"entry {entry.id} records a correction that lost at {entry.destination} "
            "(active-active): the job sent the source's higher image in place of a stale "
            "local write, and the destination held something higher still. Its losing "
            "image is the correction's, not a write of the application's (the stale write "
            "is the entry at the job's source with the same sequence number), and it is "
            "not restored: it would put an older state over the destination's newer one"
        )
    if "losing" in entry.truncated:
        digest = entry.truncated["losing"].get("sha256", "unknown")
        raise EntryNotFound(
            f"entry {entry.id}: its losing image was too large for the conflict log and was "
            f"stored as its sha256 ({digest}); it cannot be restored from the log"
        )
    destination = entry_destination(resolved, entry)
    place = spelled(destination)
    digest = entry.truncated.get("winning", {}).get("sha256")
    if "winning" in entry.truncated and not isinstance(digest, str) and not force:
        raise EntryNotFound(
            f"entry {entry.id}: the image that won was too large for the conflict log and its "
            f"sha256 was not kept, so the restore cannot check that the item at {place} is "
            "still that image; nothing was written. Compare the item with the entry "
            "yourself; --force writes the losing image without that check"
        )
    if entry.op == "put" and entry.losing_image is None:
        raise EntryNotFound(f"entry {entry.id}: the losing put has no image to write back")
    later = _later_losses(entry, [*entries, *others])
    if later and not force:
        # The item's check below cannot see it: the later change lost to the same winner,
        # which the item still holds, and the older image would replace it unremarked.
        newest = later[-1]
        theirs = (
            f" (task {newest.task_name!r}'s: restore it with that job's file)"
            if newest.task_name != entry.task_name
            else ""
        )
        return RestoreResult(
            entry,
            False,
            f"not restored: entry {newest.id} records a later change of {key_text(entry)} "
            f"that lost at {place} too ({newest.at}"
            + (f", and {len(later) - 1} more" if len(later) > 1 else "")
            + "): this entry's image is older than what was written since; restore "
            f"{newest.id} instead{theirs}, or give --force to write this one anyway; "
            "nothing was written",
        )
    metrics = in_memory_metrics()
    writers = wiring.destination_writers(resolved, metrics)
    ranked_by = writers[destination.label].rule
    winner_digest = digest if "winning" in entry.truncated and isinstance(digest, str) else None
    rule = RestoreRule(force, winner_digest)
    writer = replace(
        writers[destination.label],
        rule=rule,
        conflict_log=None,
        tombstones=None,
        write_back=None,
        retry_for_s=RETRY_FOR_S if retry_for_s is None else retry_for_s,
    )
    writer.refusal_limit = min(writer.refusal_limit, 3)
    image = restored_image(resolved, entry)
    change = synthetic_change(
        RESTORE_PURPOSE,
        entry.key_item(),
        destination.region,
        new_image=image,
        expected=entry.image("winning"),
    )
    if target.stopping.is_set():  # a stop signal since the reading: nothing is written
        raise LogReadingStopped(f"entry {entry.id} not restored: stopped before its write")
    try:
        written = writer.write(change)
    except DestinationRefused as refused:
        # What refuses every write (a missing table, access denied, credentials) is the
        # environment's, as in the other tools (exit 3).
        # Its words are replication's (a checkpoint, dead letters): a restore has neither.
        said = str(refused).replace(f"; {NOT_PASSED}", "")
        reached = where(destination.region, destination.endpoint_url, destination.role_arn)
        at = place if reached == destination.region else f"{place}, {reached}"
        raise EnvironmentProblem(
            f"entry {entry.id} not restored at {at}: {redact(said)}; nothing was written"
        ) from None
    except DestinationUnavailable as error:
        endpoint = where(destination.region, destination.endpoint_url, destination.role_arn)
        raise EnvironmentProblem(
            f"entry {entry.id} not restored at {endpoint}: {error}; "
            + (
                "a write was sent without an answer: run the command again to see whether "
                "it applied"
                if rule.wrote
                else "nothing was written"
            )
        ) from None
    if written.outcome is Outcome.UNCHANGED:
        # The item holds the image this restore writes (RestoreRule.plan).
        return already_restored(
            entry,
            entries,
            place,
            reread=lambda: read_task_entries(
                target, selection_for(key), resolved.task_name, named_places=named_places(resolved)
            )[0],
        )
    if written.outcome is Outcome.CONFLICT_LOST:
        compared = ""
        if winner_digest is not None:
            compared = (
                " (compared with the sha256 of the image that won, which was too large for "
                "the log: an item spelled differently, such as a set in another order, "
                "differs too)"
            )
        return RestoreResult(
            entry,
            False,
            f"not restored: the item at {place} is no longer the image that "
            f"won the conflict (it changed since){compared}; nothing was written. --force "
            "writes the losing image anyway",
        )
    if written.reason == "optimistic_conflicts":
        return RestoreResult(
            entry,
            False,
            f"not restored: the item at {place} kept changing while the restore "
            f"checked it against the image that won: {redact(str(written.error))}; nothing "
            "was written",
        )
    if written.failed:
        # Reported, not dead-lettered: the operator is there to read it.
        why = redact(f"{written.reason}: {written.error}")
        return RestoreResult(entry, False, f"not restored: {place} refused it: {why}")
    audit = restore_entry(entry, force=force, written=image, rule=ranked_by)
    done = f"restored entry {entry.id}: {entry.op} of {key_text(entry)} at {place} ({audit.rule})"
    logged = {
        "id": entry.id,
        "destination": destination.label,
        "region": destination.region,
        "table": destination.table,
        "key": key_text(entry),
        "op": entry.op,
        "condition": audit.rule,
    }
    try:
        target.put(audit)
    except (ConflictLogUnavailable, ConflictLogRejected) as error:
        # The record's id is not said: no entry of the log has it.
        log.warning("conflict entry restored but not recorded", **logged, error=str(error))
        return RestoreResult(
            entry,
            True,
            f"{done}; but the restore could not be recorded: {redact(str(error))}"
            + _source_note(resolved, entry, image, target),
        )
    log.info("conflict entry restored", **logged, restore_id=audit.id)
    return RestoreResult(
        entry,
        True,
        f"{done}; recorded as entry {audit.id}" + _source_note(resolved, entry, image, target),
        record=audit,
        recorded=True,
    )


def _source_note(
    resolved: ResolvedJob, entry: ConflictEntry, image: Item | None, target: ConflictLogTarget
) -> str:
    """What the restore's line says of the source, once the restore is written and
    recorded (a read that fails or hangs must not stand between the two): only for a put
    in a job whose destination replicates back, and not once a stop was asked for."""
    if entry.op != "put" or not (entry.write_back or resolved.job.loop_prevention.origin_attribute):
        return ""
    if target.stopping.is_set():
        return ""
    return _what_the_source_holds(resolved, entry, image)


def already_restored(
    conflict: ConflictEntry,
    entries: list[ConflictEntry],
    place: str,
    reread: Callable[[], list[ConflictEntry]] | None = None,
) -> RestoreResult:
    """The destination holds the losing image already: nothing to write. Restored and
    recorded (exit 0) when the log has a restore of this entry; otherwise the image got
    there some other way, or by a restore whose record was not stored, and the command
    says that it did not restore it (exit 1).

    ``reread``: the log read again. ``entries`` were read before this restore's write;
    a restore of the same entry run at the same time may have written the image since
    and records it just after, so the log is read again for a while before "no restore
    is recorded" is said."""
    records = _restores_of(conflict, entries)
    if not records and reread is not None:
        deadline = time.monotonic() + CONCURRENT_RECORD_WAIT_S
        while not records:
            records = _restores_of(conflict, reread())
            if records or time.monotonic() >= deadline:
                break
            time.sleep(_CONCURRENT_RECORD_POLL_S)
    holds = f"the item at {place} already holds this entry's losing image"
    if conflict.op == "delete":
        holds = f"the item at {place} is already deleted"
    if records:
        last = records[-1]
        return RestoreResult(
            conflict,
            True,
            f"already restored: {holds}, restored by entry {last.id} at {last.recorded_at}; "
            "nothing was written",
            recorded=True,
        )
    return RestoreResult(
        conflict,
        False,
        f"not restored: {holds}, but no restore of it is recorded in the log (something "
        "else wrote it, or a restore whose record could not be stored); nothing was written",
    )


def _later_losses(conflict: ConflictEntry, entries: list[ConflictEntry]) -> list[ConflictEntry]:
    """The conflicts of the same item at the same place whose losing change came after
    ``conflict``'s, or may have, and that no restore has written back, oldest first.

    Times are compared as instants (as text, ``…26.860Z`` sorts after ``…26.860499Z``);
    at one instant, a later record of the same shard is later, and a change of another
    shard or source may be (a stream's creation times can be whole seconds): counted, as
    ``--force`` is there for the operator who knows better."""
    this = _created_at(conflict)

    def later(other: ConflictEntry) -> bool:
        that = _created_at(other)
        if this is None or that is None:
            return False  # a time that does not read: nothing to go by
        if that != this:
            return that > this
        if other.shard_id != conflict.shard_id or other.task_name != conflict.task_name:
            return True  # sequence numbers order the records of one stream's shard only
        try:
            return int(other.sequence_number) > int(conflict.sequence_number)
        except ValueError:
            return False

    found = [
        other
        for other in entries
        if other.kind == CONFLICT
        and not other.correction
        and other.id != conflict.id
        and other.item == conflict.item
        and entry_place(other) == entry_place(conflict)
        and later(other)
        and not _restores_of(other, entries)
    ]
    return sorted(found, key=lambda other: other.sort_key)


def _created_at(entry: ConflictEntry) -> datetime | None:
    try:
        return instant(entry.created)
    except ValueError:
        return None


def _restores_of(conflict: ConflictEntry, entries: list[ConflictEntry]) -> list[ConflictEntry]:
    return [e for e in entries if e.kind == RESTORE and e.restored_entry == conflict.id]


def restored_image(resolved: ResolvedJob, entry: ConflictEntry) -> Item | None:
    """What a restore of ``entry`` writes: None for a delete, else the losing image with
    this job's origin stamp (loop prevention on), whatever stamp it had or lacked.

    The destination is then another region's source, and that region's job reads the
    restore from its stream. Its loop prevention skips a put stamped by another region
    as an echo; one without a stamp (an application that forgot it), or with that
    region's own, is a local write there, which ranks below the winner it replaced, so
    that job corrected it as a stale local write and put the winner back: the restore
    was undone. Every stamped put of this job's region carries this stamp."""
    image = entry.image("losing") if entry.op == "put" else None
    origin = resolved.job.loop_prevention.origin_attribute
    if image is None or not origin:
        return image
    return {**image, origin: {"S": resolved.job.origin_value}}


def _what_the_source_holds(resolved: ResolvedJob, entry: ConflictEntry, image: Item | None) -> str:
    """In a job whose destination replicates back (loop prevention), what the restore's
    line adds about the source: the restore writes the destination only, and the source
    may hold the winner (written back there by this job, or replicated there by another
    region's job) or still the restored image (write-back off, or not applied). Read, so
    that the line says the regions differ only when they do."""
    source = resolved.job.source
    named = f"the source {source.region}/{source.table}"
    until = (
        "the regions differ on this item until the application writes it again above the "
        "winner (active-active converges on the highest rank; replicator verify reports "
        "the difference)"
    )
    try:
        # One short attempt: the line waits on it, and it only informs.
        found = (
            clients.dynamodb(source, connect_timeout=2.0, read_timeout=3.0, sdk_retries=False)
            .get_item(TableName=source.table, Key=entry.key_item(), ConsistentRead=True)
            .get("Item")
        )
    except Exception as error:  # noqa: BLE001  # credentials, endpoint, refusal: said in the line
        return (
            f"; {named} could not be read to compare ({redact(str(error))}): if it holds "
            f"another image, {until}"
        )
    origin = resolved.job.loop_prevention.origin_attribute

    def unstamped(item: Mapping[str, Any] | None) -> Item | None:
        # The restored image carries this job's stamp, which an application's own write
        # of the same image may lack.
        return None if item is None else {k: v for k, v in item.items() if k != origin}

    if same_item(unstamped(found), unstamped(image)):
        return ""
    if entry.write_back:
        return f"; {named} keeps the winner written back there: {until}"
    held = "no item" if found is None else "another image"
    return f"; {named} holds {held}: {until}"


def restore_entry(
    conflict: ConflictEntry,
    *,
    force: bool,
    written: Item | None,
    rule: ConflictRule,
) -> ConflictEntry:
    """The record of a restore of ``conflict``: ``written`` is the image put (None for a
    delete), ranked by ``rule``, the destination's."""
    now = time.time()
    losing_image, losing_rank = conflict.losing_image, conflict.losing_rank
    if written is not None:
        losing_image = item_to_wire(written)
        if losing_image != conflict.losing_image:
            losing_rank = rank_of(rule, written)
    return replace(
        conflict,
        losing_image=losing_image,
        losing_rank=losing_rank,
        id=entry_id(RESTORE, conflict.id, str(time.time_ns())),
        kind=RESTORE,
        winning_image=None if force else conflict.winning_image,
        winning_rank=None if force else conflict.winning_rank,
        policy=RESTORE,
        rule=FORCED if force else CONDITIONAL,
        why="restored by replicator conflicts --restore"
        + ("; the item it replaced was not read" if force else ""),
        shard_id=RESTORE_PURPOSE,
        recorded_at=iso(now),
        write_back=False,
        restored_entry=conflict.id,
    )


def entry_destination(resolved: ResolvedJob, entry: ConflictEntry) -> DestinationConfig:
    """The job's destination where ``entry``'s conflict happened: the one at the entry's
    region and table, whatever name the entry was recorded under (a name given to the
    destination since, or changed, does not make its entries another's). Only where the
    job has more than one destination at that region and table (other accounts), or its
    source is there, does the name tell them apart.

    EntryNotFound (exit 1, nothing written, also with ``--force``) when the job has no
    destination there: a correction of a stale local write at the source (active-active),
    or a destination removed from the job file or pointed elsewhere since. The name
    alone would send the losing image to a table where the conflict never happened."""
    place = entry_place(entry)
    source = source_label(resolved)
    destinations = resolved.job.destinations
    there = destinations_at(destinations, place, entry.destination, shared=place == source)
    if len(there) == 1:
        return there[0]
    if place == source and entry.destination == source:
        raise EntryNotFound(
            f"entry {entry.id} is for {place}, the job's source table: a local "
            "write there that ranked below what the source held, corrected by the job "
            "(active-active). It is not restored: a write to the source is replicated under "
            "the conflict rule, and the restored image, which ranks below what the other "
            "region holds, would lose there and leave the regions different. Write the item "
            "again in the application (with a new timestamp or version) instead"
        )
    recorded = (
        "" if entry.destination == place else f" (recorded as destination {entry.destination!r})"
    )
    named = [d for d in destinations if d.label == entry.destination]
    moved = ""
    if named:
        moved = (
            f"; the job's destination {entry.destination!r} is now at "
            f"{destination_place(named[0])}, "
            "where the conflict did not happen, and the losing image is not written there, "
            "also not with --force"
        )
    raise EntryNotFound(
        f"entry {entry.id} is for {place}{recorded}, which is not a destination of the job "
        f"file {resolved.path} (destinations: {', '.join(spelled(d) for d in destinations)})"
        f"{moved}; nothing was written"
    )


def named_places(resolved: ResolvedJob) -> frozenset[str]:
    """The ``<region>/<table>`` places where an entry's recorded name, not its place,
    says which of the job's tables it is about: two destinations there (other
    accounts), or a destination at the source's own place."""
    source = source_label(resolved)
    places = Counter(destination_place(d) for d in resolved.job.destinations)
    return frozenset(place for place, count in places.items() if count > 1 or place == source)


def under_current_names(
    resolved: ResolvedJob, entries: Sequence[ConflictEntry]
) -> list[ConflictEntry]:
    """The entries as a listing shows them: each lost conflict, and each restore, under
    the name its destination has now (found by region and table, as
    :func:`entry_destination` finds it), so that a destination named, or renamed, since
    is counted as one."""
    named = named_places(resolved)
    labels = {destination_place(d): d.label for d in resolved.job.destinations}
    shown = []
    for entry in entries:
        place = entry_place(entry)
        label = labels.get(place)
        if label is not None and place not in named:
            shown.append(replace(entry, destination=label))
        else:
            shown.append(entry)
    return shown


def source_label(resolved: ResolvedJob) -> str:
    """The name conflict entries give the job's source (active-active corrections)."""
    source = resolved.job.source
    return f"{source.region}/{source.table}"


def selection_for(key: Item | None) -> Selection:
    return Selection(item=canonical_key(key) if key is not None else None)
