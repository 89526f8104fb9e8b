"""What a write settles as: the results a writer returns, and the answers it is handed.

A writer's :class:`WriteResult` (an :class:`Outcome`, and for a failed write the reason
and the error) is all the pipeline, the buffer, the dead letters and the operator tools
see of a write; :class:`Winner` is what a change lost to, :class:`RecordedDelete` a
delete's tombstone once recorded, and :class:`FirstAnswer` how a first request sent by
the pipeline's event loop was answered. Kept apart from the writer (destination.py), so
that what only reads results (deadletter/failed.py) does not import the retry
machinery with them, and so that a writer for another kind of destination can return
the same results.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from replicator.items import Item
from replicator.records import Held
from replicator.rules import WriteRequest
from replicator.tombstones.model import Tombstone


class Outcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    CONFLICT_LOST = "conflict_lost"
    # Not applied, and no retry would apply it as it is: the caller dead-letters it.
    FAILED = "failed"


# Why a FAILED write failed (``WriteResult.reason``): the dead-letter counters' ``reason``.
DEAD_LETTER_REASONS = (
    "rejected",
    "access_denied",
    "unplannable",
    "resolver_failed",
    "optimistic_conflicts",
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How a write settled; ``reason`` and ``error`` say why a FAILED one failed
    (one of :data:`DEAD_LETTER_REASONS`)."""

    outcome: Outcome
    reason: str | None = None
    error: str | None = None
    # CONFLICT_LOST: why the change lost (the rule's explanation), for reports; not
    # compared, so that a lost conflict equals CONFLICT_LOST whatever its reason.
    why: str | None = field(default=None, compare=False)
    # A delete recorded in a tombstone table: the row the table holds for it after the
    # write (this delete's, or the one another job had recorded at or above it, which
    # names the region that deleted). Not compared either.
    tombstone: Tombstone | None = field(default=None, compare=False)
    # CONFLICT_LOST with a conflict log: done once the loss's entry is stored or given up
    # (and counted). The pipeline keeps the change's record open, so that the checkpoint
    # does not pass it, until then (conflictlog/recorder.py). Not compared.
    recorded: Future[None] | None = field(default=None, compare=False)
    # A request that got no answer may still land until then (time.monotonic()): the
    # item's next change must not be sent before it. Only from
    # ``write(..., hold=False)``, whose caller keeps the key that long (the pipeline);
    # None: nothing to wait for. Not compared.
    hold_until: float | None = field(default=None, compare=False)
    # Which of the item's next changes wait for ``hold_until``: all, or only its deletes
    # (after a conditional put that may still land), or only its puts (after a
    # conditional delete); see DestinationWriter._unanswered.
    held: Held = field(default=Held.CHANGE, compare=False)
    # A request of the write got no answer (a read timeout, a dropped connection, a 5xx):
    # it may have been carried out, or may be later, whatever the outcome says (kept by
    # the policy after a retry, say). A tool that reads the source again after its
    # writes (an item deleted meanwhile: ResurrectionGuard) checks such a write too.
    unanswered: bool = field(default=False, compare=False)
    # Active-active: a put with such a request was checked against the item's tombstone
    # before that request could no longer land, and landing after the check it would
    # stay below a delete that outranks it. The caller that keeps ``hold_until`` calls
    # :meth:`DestinationWriter.recheck_late_put` once it has passed (then only lets the
    # item's next change go), and keeps the change's record open until then. Not compared.
    recheck: bool = field(default=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


APPLIED = WriteResult(Outcome.APPLIED)
UNCHANGED = WriteResult(Outcome.UNCHANGED)
CONFLICT_LOST = WriteResult(Outcome.CONFLICT_LOST)


@dataclass(frozen=True, slots=True)
class Winner:
    """What a change lost to: the destination's item, or a delete kept as a tombstone."""

    item: Item | None = None
    tombstone: Tombstone | None = None


@dataclass(frozen=True, slots=True)
class RecordedDelete:
    """A delete's tombstone once recorded: the row its table holds for it (``held``: the
    delete's own, just written or already there, or another job's ranking above it), and
    whether a row another job wrote covers the delete (then whoever wrote that row
    removes the item). ``written``: the row was written now (not found there)."""

    held: Tombstone
    covered: bool
    written: bool = False


@dataclass(frozen=True, slots=True)
class FirstAnswer:
    """How a write's first request, sent by another transport (the pipeline's event
    loop), was answered: the output of a 200 or the error it raised.
    :meth:`DestinationWriter.write <replicator.writers.destination.DestinationWriter.write>`
    takes it as its first attempt's answer instead of sending that request itself."""

    request: WriteRequest
    response: dict[str, Any] | None = None
    error: BaseException | None = None
    # When the request was sent (time.monotonic()); None: unknown, the time its answer
    # is handled is taken instead (later: a hold then errs long).
    sent_at: float | None = None
