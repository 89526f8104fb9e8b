"""``replicator conflicts --restore ENTRY``: put a losing image back, on purpose, and say so.

The losing image is written to the destination where it lost, by the job's own
DestinationWriter for that destination (same client, credentials, retries), as a
synthetic change (:mod:`replicator.tools.snapshot`, event source
``replicator:restore``). The write is conditional: it applies only while the
destination still holds exactly the image that won the conflict (every attribute of
it equal; no item at all when none won), so a restore never overwrites an update made
since. ``--force`` writes unconditionally. A lost delete is restored by deleting the
item, under the same condition.

Every restore that is applied is itself recorded: an entry of kind ``restore`` in the
same conflict log (``restored_entry`` names the conflict, ``losing_image`` is what was
written, ``winning_image`` what it replaced when the condition held) and an
info-level log line ``conflict entry restored``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import structlog
from prometheus_client import CollectorRegistry

from replicator import wiring
from replicator.config.model import ResolvedJob
from replicator.conflictlog.base import ConflictLogTarget, Selection
from replicator.conflictlog.entry import CONFLICT, RESTORE, ConflictEntry, entry_id, iso
from replicator.conflictlog.keys import canonical_key
from replicator.conflictlog.reader import key_text, read_entries
from replicator.exceptions import (
    ConflictLogRejected,
    ConflictLogUnavailable,
    DestinationRefused,
    EntryNotFound,
)
from replicator.items import Item, describe_key
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.rules import Skip, Verdict, WriteRequest
from replicator.rules.requests import holds_outcome
from replicator.tools.snapshot import expected_request, synthetic_change
from replicator.writers.destination import Outcome

log = structlog.get_logger(__name__)

RESTORE_PURPOSE = "restore"
CONDITIONAL = "only while the destination holds the image that won"
FORCED = "unconditional (--force)"


class RestoreRule:
    """Writes the synthetic restore change, conditionally on the recorded winner."""

    name = "restore"
    reads_existing = False

    def __init__(self, force: bool) -> None:
        self.force = force

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        op = change.event.op
        if self.force:
            if op == "delete":
                return WriteRequest(op="delete", key=change.keys)
            return WriteRequest(op="put", item=change.new_image)
        return expected_request(op, change, change.old_image)

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


def find_entry(entries: list[ConflictEntry], wanted: str, where: str) -> ConflictEntry:
    """The entry whose id is ``wanted`` (or starts with it, when only one does)."""
    exact = [e for e in entries if e.id == wanted]
    found = exact or [e for e in entries if e.id.startswith(wanted)]
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
) -> RestoreResult:
    """Write the losing image of entry ``wanted`` back, and record that in ``target``.

    ``key`` (the item's key) lets a DynamoDB log find the entry with one Query.
    """
    where = target.description + (f" under key {describe_key(key)}" if key else "")
    entry = find_entry(read_entries(target, selection_for(key)), wanted, where)
    if "losing" in entry.truncated:
        digest = entry.truncated["losing"].get("sha256", "unknown")
        raise EntryNotFound(
            f"entry {entry.id}: its losing image was too large for the conflict log and was "
            f"stored as its sha256 ({digest}); it cannot be restored from the log"
        )
    destinations = {d.label: d for d in resolved.job.destinations}
    destination = destinations.get(entry.destination)
    if destination is None:
        raise EntryNotFound(
            f"entry {entry.id} is for destination {entry.destination!r}, which the job file "
            f"{resolved.path} does not have (destinations: {', '.join(destinations)})"
        )
    if entry.op == "put" and entry.losing_image is None:
        raise EntryNotFound(f"entry {entry.id}: the losing put has no image to write back")
    metrics = Metrics(CollectorRegistry())
    writers = wiring.destination_writers(resolved, metrics)
    writer = replace(
        writers[entry.destination],
        rule=RestoreRule(force),
        conflict_log=None,
        tombstones=None,
        write_back=None,
    )
    writer.refusal_limit = min(writer.refusal_limit, 3)
    change = synthetic_change(
        RESTORE_PURPOSE,
        entry.key_item(),
        destination.region,
        new_image=entry.image("losing") if entry.op == "put" else None,
        expected=entry.image("winning"),
    )
    try:
        written = writer.write(change)
    except DestinationRefused as refused:
        return RestoreResult(entry, False, f"not restored: {refused}")
    if written.outcome is Outcome.CONFLICT_LOST:
        return RestoreResult(
            entry,
            False,
            f"not restored: the item at {entry.destination} is no longer the image that won "
            "the conflict (it changed since); nothing was written. --force writes the losing "
            "image anyway",
        )
    if written.failed:
        # Reported, not dead-lettered: the operator is there to read it.
        why = f"{written.reason}: {written.error}"
        return RestoreResult(entry, False, f"not restored: {entry.destination} refused it: {why}")
    audit = restore_entry(entry, force=force)
    log.info(
        "conflict entry restored",
        id=entry.id,
        restore_id=audit.id,
        destination=entry.destination,
        key=key_text(entry),
        op=entry.op,
        condition=audit.rule,
    )
    result = RestoreResult(
        entry,
        True,
        f"restored entry {entry.id}: {entry.op} of {key_text(entry)} at {entry.destination} "
        f"({audit.rule}); recorded as entry {audit.id}",
        record=audit,
    )
    try:
        target.put(audit)
        result.recorded = True
    except (ConflictLogUnavailable, ConflictLogRejected) as error:
        result.message += f"; but the restore could not be recorded: {error}"
    return result


def restore_entry(conflict: ConflictEntry, *, force: bool) -> ConflictEntry:
    now = time.time()
    return replace(
        conflict,
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


def selection_for(key: Item | None) -> Selection:
    return Selection(item=canonical_key(key) if key is not None else None)
