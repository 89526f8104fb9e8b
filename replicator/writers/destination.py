"""Stage 5: one destination's writer, which applies a change or dead-letters it.

``write`` returns only when the change is settled at this destination: applied, lost
to a newer item (a normal outcome of the conflict rules), or stored in the dead-letter
target. Retryable failures are retried for as long as it takes; failures that no retry
fixes are dead-lettered; a destination that refuses everything raises
:class:`DestinationRefused`, which stops the worker before anything is checkpointed
past the refused changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.backoff import Backoff
from replicator.aws.clients import WriteClient
from replicator.aws.errors import CLOCK_SKEW, ErrorKind, classify, error_code
from replicator.conflictlog.base import ConflictRecorder
from replicator.deadletter import DeadLetter, DeadLetterTarget
from replicator.exceptions import DestinationRefused, PlanError, WriteCancelled
from replicator.items import Item, describe_key, item_to_wire
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.rules import ConflictRule, Skip, WriteRequest

log = structlog.get_logger(__name__)

# An item denied this many times while other writes to the destination succeed is
# refused by a fine-grained policy, not by an outage: it is dead-lettered.
_ITEM_DENIALS_BEFORE_DEAD_LETTER = 3


class Outcome(StrEnum):
    APPLIED = "applied"
    CONFLICT_LOST = "conflict_lost"
    DEAD_LETTERED = "dead_lettered"


_RETRY_REASON = {
    ErrorKind.THROTTLED: "throttled",
    ErrorKind.RETRY: "server_error",
    ErrorKind.DENIED: "access_denied",
    ErrorKind.NOT_FOUND: "not_found",
    ErrorKind.AUTH: "auth",
}


@dataclass
class DestinationWriter:
    label: str
    table: str
    region: str
    client: WriteClient
    rule: ConflictRule
    dead_letters: DeadLetterTarget
    metrics: Metrics
    task_name: str
    shard_id: str
    backoff: Backoff = field(default_factory=Backoff)
    refusal_limit: int = 20
    max_optimistic_attempts: int = 10
    clock: Callable[[], float] = time.time
    cancelled: threading.Event = field(default_factory=threading.Event)
    conflict_log: ConflictRecorder | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._refusal_streak = 0
        self._successes = 0

    def write(self, change: Change) -> Outcome:
        op = change.event.op
        attempt = 0
        optimistic_conflicts = 0
        denials = 0
        successes_at_first_denial: int | None = None
        while True:
            if self.cancelled.is_set():
                raise WriteCancelled(f"write to {self.label} cancelled")
            existing: Item | None = None
            try:
                if self.rule.reads_existing:
                    existing = self._read(change)
                plan = self.rule.plan(change, existing)
                if isinstance(plan, Skip):
                    self._lost(change, existing, plan.reason)
                    return self._count(op, Outcome.CONFLICT_LOST)
                self._send(plan)
            except PlanError as error:
                return self._dead_letter(change, error.reason, str(error))
            except (ClientError, BotoCoreError) as error:
                kind = classify(error)
                if kind is ErrorKind.CONDITION_FAILED:
                    self._note_success()
                    if not self.rule.reads_existing:
                        old: Item | None = None
                        if isinstance(error, ClientError):
                            old = error.response.get("Item")  # type: ignore[assignment]
                        if attempt > 0 and self.rule.shows_applied(change, old):
                            # An earlier attempt landed and its answer was lost (a read
                            # timeout, a dropped connection): the item is ours already.
                            self.metrics.retries.labels(self.label, "already_applied").inc()
                            return self._applied(change)
                        self._lost(change, old, self.rule.explain_loss(change, old))
                        return self._count(op, Outcome.CONFLICT_LOST)
                    optimistic_conflicts += 1
                    self.metrics.retries.labels(self.label, "optimistic_conflict").inc()
                    if optimistic_conflicts >= self.max_optimistic_attempts:
                        return self._dead_letter(
                            change,
                            "optimistic_conflicts",
                            f"the item changed under the custom resolver "
                            f"{optimistic_conflicts} times in a row",
                        )
                    continue
                if kind is ErrorKind.REJECTED:
                    return self._dead_letter(change, "rejected", _describe(error))
                if kind is ErrorKind.AUTH:
                    streak, _ = self._note_refusal()
                    if streak >= self.refusal_limit:
                        raise DestinationRefused(
                            f"destination {self.label} ({self.region}/{self.table}) did not "
                            f"accept the signature or credentials of {streak} writes in a "
                            f"row: {_describe(error)}. Check this host's clock (NTP) and the "
                            "credentials the worker runs with; nothing was dead-lettered and "
                            "the checkpoint has not passed these changes"
                        ) from error
                if kind in (ErrorKind.DENIED, ErrorKind.NOT_FOUND):
                    streak, successes = self._note_refusal()
                    if streak >= self.refusal_limit:
                        raise DestinationRefused(
                            f"destination {self.label} ({self.region}/{self.table}) refused "
                            f"{streak} writes in a row: {_describe(error)}"
                        ) from error
                    denials += 1
                    if successes_at_first_denial is None:
                        successes_at_first_denial = successes
                    elif (
                        successes > successes_at_first_denial
                        and denials >= _ITEM_DENIALS_BEFORE_DEAD_LETTER
                    ):
                        return self._dead_letter(change, "access_denied", _describe(error))
                reason = _RETRY_REASON.get(kind, "server_error")
                if error_code(error) in CLOCK_SKEW:
                    reason = "clock_skew"
                elif isinstance(error, BotoCoreError) and kind is not ErrorKind.AUTH:
                    reason = "network"
                self.metrics.retries.labels(self.label, reason).inc()
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.info(
                    "write failed, retrying",
                    destination=self.label,
                    key=describe_key(change.keys),
                    error=_describe(error),
                    attempt=attempt,
                    delay_s=round(delay, 3),
                )
                self.cancelled.wait(delay)
                continue
            return self._applied(change)

    def _applied(self, change: Change) -> Outcome:
        self._note_success()
        self.metrics.apply_delay.labels(self.label).observe(
            max(0.0, self.clock() - change.created_s)
        )
        return self._count(change.event.op, Outcome.APPLIED)

    def _read(self, change: Change) -> Item | None:
        response = self.client.get_item(TableName=self.table, Key=change.keys, ConsistentRead=True)
        return cast("Item | None", response.get("Item"))

    def _send(self, request: WriteRequest) -> None:
        kwargs = request.to_kwargs(self.table)
        if request.op == "put":
            self.client.put_item(**kwargs)
        else:
            self.client.delete_item(**kwargs)

    def _lost(self, change: Change, existing: Item | None, why: str) -> None:
        log.debug(
            "conflict lost",
            destination=self.label,
            key=describe_key(change.keys),
            stream_event=change.event.value,
            sequence_number=change.sequence_number,
            why=why,
        )
        if self.conflict_log is not None:
            self.conflict_log.lost(self, change, existing, why)

    def _dead_letter(self, change: Change, reason: str, error: str) -> Outcome:
        letter = DeadLetter(
            record=change.raw,
            destination=self.label,
            reason=reason,
            error=error,
            task_name=self.task_name,
            shard_id=self.shard_id,
            table=self.table,
            region=self.region,
            event=change.event.value,
            keys=item_to_wire(change.keys),
        )
        self.dead_letters.put(letter)
        self.metrics.dead_letters.labels(self.label, reason).inc()
        log.warning(
            "change dead-lettered",
            destination=self.label,
            key=describe_key(change.keys),
            sequence_number=change.sequence_number,
            reason=reason,
            error=error,
            target=self.dead_letters.description,
        )
        return self._count(change.event.op, Outcome.DEAD_LETTERED)

    def _count(self, op: str, outcome: Outcome) -> Outcome:
        self.metrics.writes.labels(self.label, op, outcome.value).inc()
        return outcome

    def _note_success(self) -> None:
        with self._lock:
            self._refusal_streak = 0
            self._successes += 1

    def _note_refusal(self) -> tuple[int, int]:
        with self._lock:
            self._refusal_streak += 1
            return self._refusal_streak, self._successes


def _describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "")
        return f"{error_code(error)}: {message}"
    return f"{type(error).__name__}: {error}"
