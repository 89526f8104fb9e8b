"""What replication and the tools do with a change that cannot be applied: a dead letter.

A writer only says that a write failed for good and why (writers/destination.py). The
letter needs what the writer does not know: the job's task, the shard (or the command
that wrote), and where letters go. ``store`` returns only once the letter is stored;
if the target cannot take it, the error propagates and the caller must not count the
change as handled (the pipeline stops the shard, a tool stops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

from replicator.deadletter.base import DeadLetterTarget
from replicator.deadletter.entry import ALL_DESTINATIONS, DeadLetter
from replicator.exceptions import DeadLetterUnavailable
from replicator.items import describe_key, item_to_wire
from replicator.metrics import Metrics
from replicator.records import Change, RawRecord
from replicator.writers.outcomes import WriteResult

log = structlog.get_logger(__name__)

# The ``outcome`` label of replicator_writes_total for a change stored as a dead letter.
DEAD_LETTERED = "dead_lettered"


class WrittenTable(Protocol):
    """Where a failed write went (a DestinationWriter)."""

    label: str
    table: str
    region: str


class Writer(WrittenTable, Protocol):
    def write(self, change: Change) -> WriteResult: ...


@dataclass
class DeadLetterer:
    target: DeadLetterTarget
    metrics: Metrics
    task_name: str
    shard_id: str  # the shard, or the command (``backfill``, ``repair``, ...)
    # A redrive's run id: its letters are marked with it (``redrive_run``), as a letter it
    # puts back is, so that the same redrive passes them by in a queue and the next
    # replays them (redrive.py, SqsDeadLetters.claim_all). None outside a redrive.
    redrive_run: str | None = None

    @property
    def description(self) -> str:
        return self.target.description

    def write(self, writer: Writer, change: Change) -> WriteResult:
        """``writer.write(change)``; a failure is stored as a dead letter before it returns."""
        result = writer.write(change)
        if result.failed:
            self.store(writer, change, result)
        return result

    def store(self, writer: WrittenTable, change: Change, result: WriteResult) -> None:
        reason = result.reason or "failed"
        error = result.error or ""
        # Counted while the target has not taken it: /healthz then tells a destination
        # stalled by its dead-letter target from one that takes no writes.
        storing = self.metrics.dead_letters_storing.labels(writer.label, self.shard_id)
        storing.inc()
        try:
            stored = self._store(writer, change, reason, error)
        finally:
            storing.dec()
        self.metrics.writes.labels(writer.label, change.event.op, DEAD_LETTERED).inc()
        about = {
            "destination": writer.label,
            "key": describe_key(change.keys),
            "sequence_number": change.sequence_number,
            "reason": reason,
            "target": self.target.description,
        }
        if not stored:
            self.metrics.dead_letters_already_stored.labels(writer.label, reason).inc()
            log.info("change dead-lettered already: its letter is stored", **about)
            return
        self.metrics.dead_letters.labels(writer.label, reason).inc()
        log.warning("change dead-lettered", error=error, **about)

    def _store(self, writer: WrittenTable, change: Change, reason: str, error: str) -> bool:
        return self._put(
            f"record {change.sequence_number} (destination {writer.label}, key "
            f"{describe_key(change.keys)})",
            DeadLetter(
                record=change.raw,
                destination=writer.label,
                reason=reason,
                error=error,
                task_name=self.task_name,
                shard_id=self.shard_id,
                table=writer.table,
                region=writer.region,
                event=change.event.value,
                keys=item_to_wire(change.keys),
                redrive_run=self.redrive_run,
            ),
        )

    def _put(self, what: str, letter: DeadLetter) -> bool:
        """Store ``letter``; an operator told the target failed must also learn which
        change is now neither applied nor dead-lettered (the shard resumes before it).
        False: a letter of its identity was stored already (a failure read again after a
        restart), which is not another dead letter to count or to alert on."""
        try:
            return self.target.put(letter)
        except DeadLetterUnavailable as error:
            raise DeadLetterUnavailable(
                f"the dead letter for {what} could not be stored: {error}; fix the "
                "dead-letter target (room on its disk and a directory it may write, or its "
                "queue there and allowed) and run again: nothing from this change on was "
                "counted as done"
            ) from error

    def undecodable(self, raw: RawRecord, error: str) -> None:
        """A record that could not be decoded: one letter for every destination."""
        stored = self._put(
            f"undecodable record {raw.get('sequenceNumber')}",
            DeadLetter(
                record=raw,
                destination=ALL_DESTINATIONS,
                reason="undecodable",
                error=error,
                task_name=self.task_name,
                shard_id=self.shard_id,
                redrive_run=self.redrive_run,
            ),
        )
        self.metrics.records_received.labels("undecodable").inc()
        if not stored:
            log.info(
                "undecodable record dead-lettered already: its letter is stored",
                sequence_number=raw.get("sequenceNumber"),
                target=self.target.description,
            )
            return
        self.metrics.dead_letters.labels(ALL_DESTINATIONS, "undecodable").inc()
        log.warning(
            "record could not be decoded; dead-lettered",
            reason=error,
            target=self.target.description,
        )
