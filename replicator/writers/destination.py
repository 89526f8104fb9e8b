"""Stage 5: one destination's writer, which applies a change or says why it cannot.

``write`` returns only when the change is settled at this destination as far as the
writer can settle it: applied, unchanged, lost to a newer item (a normal outcome of the
conflict rules), or failed in a way no retry fixes (a :class:`WriteResult` with a
reason and the error). What becomes of a failed change is the caller's decision: the
pipeline stores it as a dead letter before the checkpoint may pass it, a redrive keeps
the letter it replayed, the source writer logs it. Retryable failures are retried for
as long as it takes (unless ``retry_for_s`` bounds it, or ``unanswered_for_s`` bounds
the wait for a destination that does not answer at all: an operator at a terminal wants
an answer, :class:`DestinationUnavailable`); a destination that refuses everything
raises :class:`DestinationRefused`, which stops the worker before anything is
checkpointed past the refused changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
)

from replicator.aws.backoff import Backoff
from replicator.aws.clients import WriteClient
from replicator.aws.errors import (
    ErrorKind,
    RoleNotAssumed,
    cause,
    classify,
    may_have_landed,
    refused_for_the_clock,
)
from replicator.conflictlog.base import ConflictRecorder, Loss
from replicator.conflictlog.entry import describe_rule
from replicator.exceptions import (
    DestinationRefused,
    DestinationUnavailable,
    MalformedImage,
    PlanError,
    WriteCancelled,
)
from replicator.items import (
    AttributeValue,
    Item,
    KeyId,
    describe_key,
    item_from_wire,
    key_id,
    same_item,
)
from replicator.metrics import Metrics
from replicator.records import Change, Event, Held
from replicator.rules import ConflictRule, OrderedRule, Skip, Verdict, WriteRequest
from replicator.rules.order import all_of, any_of, below
from replicator.rules.requests import (
    exact_write,
    expecting,
    holds_outcome,
    holds_write,
    write_over,
)
from replicator.rules.ties import TIES
from replicator.tombstones.model import Ranking, Tombstone, tombstone_of
from replicator.tombstones.table import TombstoneTable, TombstoneTableError
from replicator.writers.outcomes import (
    APPLIED,
    CONFLICT_LOST,
    DEAD_LETTER_REASONS,
    UNCHANGED,
    FirstAnswer,
    Outcome,
    RecordedDelete,
    Winner,
    WriteResult,
)
from replicator.writers.refusals import (
    NOT_PASSED,
    describe_refusal,
    expected_key,
    key_schema_differs,
    keys_not_of,
    missing_tombstones,
    refusal_answer,
)
from replicator.writers.wire import WireWriteClient

log = structlog.get_logger(__name__)

# An item denied this many times while other writes to the destination succeed is
# refused by a fine-grained policy, not by an outage: it fails (and is dead-lettered).
# Only a denial: a missing table is every item's, even when writes succeeded between
# its refusals (deleted, re-created, deleted again), and stops the worker instead.
# Refusals are counted per change, never across the changes in flight: with many
# changes pending, one burst of refusals would otherwise add up to ``refusal_limit``
# within milliseconds, with no backoff, and a denied item would stop the worker even
# while the writes around it succeed.
_ITEM_DENIALS_BEFORE_DEAD_LETTER = 3
# What a refused write is compared with: a put's refusal with the puts the destination
# accepted, a delete's with its deletes. A policy that allows one and not the other
# (DeleteItem granted, PutItem left out) refused every put while deletes succeeded: each
# put looked denied for itself and was dead-lettered, the worker healthy, instead of the
# destination refusing everything of a kind, which stops the worker. Other requests (a
# rule's read) are compared with every write accepted.
_KIND_OF_OPERATION = {"PutItem": "put", "DeleteItem": "delete"}
# How often a held write (DestinationWriter._wait_for_hold) looks at ``cancelled``,
# which it cannot wait on together with ``holds_released``: a stop ends it this soon.
_HOLD_CHECK_S = 0.2
# Said in the stop of a key-schema refusal when the source's key could not be read: the
# changes may be records not of the source table, which the key would have told.
_SOURCE_KEY_UNREAD = (
    " (or these changes' keys are not the source table's: a hand-made record's; the "
    "source table's key could not be read to tell, see the warning before)"
)

_SETTLED = {r.outcome: r for r in (APPLIED, UNCHANGED, CONFLICT_LOST)}


def _no_credentials(error: BaseException) -> bool:
    """No credentials at all to sign a write with (or to assume the destination's role
    with): persisting, it stops the writer, naming them."""
    return isinstance(cause(error), NoCredentialsError)


def _credentials_unavailable(error: BaseException) -> bool:
    """No credentials to sign a write with, or a source of them failing (a
    credential_process, a container's or instance's endpoint), for the writer or for the
    role it assumes: retried as it may pass, counted as credentials (``auth``)."""
    return isinstance(cause(error), CredentialRetrievalError | NoCredentialsError)


_RETRY_REASON = {
    ErrorKind.THROTTLED: "throttled",
    ErrorKind.RETRY: "server_error",
    ErrorKind.DENIED: "access_denied",
    ErrorKind.NOT_FOUND: "not_found",
    ErrorKind.AUTH: "auth",
}

# A rule that keeps sending a new write after each failed condition (the item keeps
# changing under it) gives up after this many: the change fails.
_RECONSIDERED_LIMIT = 10

# A retried write is logged at warning at most this often per writer (a destination, in
# one shard's processor): see DestinationWriter._retry_warns.
RETRY_WARNING_EVERY_S = 60.0
# A custom resolver's call taking this long is logged (a call takes microseconds).
SLOW_RESOLVER_S = 5.0
_RETRY_WARNING_NOTE = (
    f"a warning at most once in {RETRY_WARNING_EVERY_S:g} s per destination and shard; "
    "every retry is logged at info"
)


class WriteBack(Protocol):
    """Where a lost conflict's winner goes: the source table (writers/source.py)."""

    def send(self, writer: DestinationWriter, change: Change, winner: Winner) -> bool:
        """Write ``winner`` to the source if it still holds something lower; whether it
        was written."""
        ...


class Removals(Protocol):
    """Who reads the stream of the table a writer writes (the source's own writer): told
    of each delete that may remove an item unseen, and of the item it put back
    (:class:`~replicator.highwater.SharedNotes`)."""

    def expect_removal(self, key: KeyId) -> None: ...

    def settle_removal(self, key: KeyId, put_back: Item | None) -> None: ...


@dataclass
class _Attempts:
    """What one change's write has learnt so far, across retries."""

    request: WriteRequest | None = None  # a write the rule asked for after a failed condition
    restore: WriteRequest | None = None  # puts back an item replaced unseen (a wide item)
    first: FirstAnswer | None = None  # the first request's answer, already there
    reconsidered: int = 0
    optimistic_conflicts: int = 0
    tombstone_done: bool = False
    tombstone: Tombstone | None = None  # the row recorded for a delete (RecordedDelete.held)
    since_s: float | None = None  # when the item went stale here, if before the change
    # The writes whose answer may hide that they landed (a read timeout, a dropped
    # connection, a 5xx: :func:`may_have_landed`): the outcome found there later may be
    # their own. Under a rule that reads first, every one of them for the whole change:
    # a request without an answer may still land after a read that did not show it, and
    # a resolver must not be asked about the item it wrote itself. Under an ordered rule,
    # until a failed condition shows what the destination holds. Never a write refused
    # outright (throttled, denied, no table): an identical item found after one of those
    # is someone else's, unchanged rather than applied.
    in_doubt: list[WriteRequest] = field(default_factory=list)
    # When the last unconditional request among them (overwrite's put or delete; the
    # other rules' writes all carry a condition) was sent (monotonic): it may still land
    # after the retry that settled the change, over the item's next change, as no
    # condition stops it (see DestinationWriter.late_write_window_s).
    unconditional_unanswered_at: float | None = None
    # When the last conditional put among them was sent: its condition stops it on a newer
    # item, not on no item at all (every such condition admits a missing item, which a
    # new item is), so landing after the item's next change, a delete, it would bring
    # the item back for good.
    put_unanswered_at: float | None = None
    # When the last conditional delete among them was sent: its condition (the item ranks
    # at or below the delete's image) holds on an item created again since with a lower
    # timestamp or version, which it would remove for good.
    delete_unanswered_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a change's refusal compares with its last: the writes of the refused kind
    (``_KIND_OF_OPERATION``) the destination's table had accepted then, and the requests
    its tombstone table had answered."""

    successes: int
    tombstone_answers: int
    kind: str | None  # the refused write's kind (``_KIND_OF_OPERATION``), None: any write


@dataclass(frozen=True)
class _Unanswered:
    """A change's attempts that got no answer in a row: since when, and how many writes
    the destination had accepted then."""

    since: float
    successes: int


@dataclass
class DestinationWriter:
    label: str
    table: str
    region: str
    client: WriteClient
    rule: ConflictRule
    metrics: Metrics
    backoff: Backoff = field(default_factory=Backoff)
    refusal_limit: int = 20
    max_optimistic_attempts: int = 10
    clock: Callable[[], float] = time.time
    cancelled: threading.Event = field(default_factory=threading.Event)
    conflict_log: ConflictRecorder | None = None
    # Active-active (both need an ordered rule): the destination's tombstone table, and
    # where the winner of a lost conflict is written back. ``origin`` is the value the
    # job's own region stamps (it marks the tombstones this job writes).
    tombstones: TombstoneTable | None = None
    write_back: WriteBack | None = None
    origin: str = ""
    # With ``tombstones``: the order they rank puts by, when ``rule`` is not itself that
    # ordered rule (the operator tools' rule for read images wraps it); and whether a
    # delete records a tombstone (the tools' deletes undo their own copies or remove an
    # extra item: they are not deletes of the application's).
    ordering: OrderedRule | None = None
    records_tombstones: bool = True
    # False for the source's own writer (write-backs, corrections): its writes are
    # counted as write-backs, not as replicated writes.
    counted: bool = True
    # Seconds a write is retried before DestinationUnavailable; None (replication): no
    # limit, lag grows and nothing is dropped.
    retry_for_s: float | None = None
    # Seconds a change's write may go unanswered (no HTTP answer at all: connection
    # refused, reset or timed out), no write to the destination being accepted meanwhile,
    # before DestinationUnavailable; None (replication): no limit. An operator command
    # sets it: a destination that answers, even with throttling, is there and worth
    # waiting for; one that does not answer is an environment to fix.
    unanswered_for_s: float | None = None
    # Told the label when the destination's table answers that it does not exist, or
    # has another key (deleted, or re-created, while the job runs): what was applied
    # there before is gone, and the watermark must not pass it on (see ShardWatermark.
    # destination_lost). None: nobody to tell (the operator commands).
    on_table_lost: Callable[[str], None] | None = None
    # Seconds after the table last answered that it is missing within which a loss is
    # the same loss, however many writes it accepted meanwhile: as a table comes back,
    # answers to writes sent before and after it did interleave (hundreds of losses were
    # told for one deletion). A loss after it has taken writes that long is a new one.
    table_loss_settle_s: float = 30.0
    # The source table's key schema (name -> ``HASH:S``), read only when this table
    # refuses a write as if its key were not the written one's: a change whose own keys
    # are not the source's (a hand-made record) is then dead-lettered as rejected, the
    # destination not taken as lost. None, or None returned (it could not be read): every
    # such refusal is the table's.
    source_key_schema: Callable[[], Mapping[str, str] | None] | None = None
    # The source's own writer: its stream's reader, told which delete records are of an
    # item removed unseen and put back (the job's own, not the application's deletes).
    removals: Removals | None = None
    # Seconds a put-back (a wide item replaced unseen) is still retried once the write is
    # cancelled: the write cannot be called back, the item it replaced can still be.
    put_back_after_cancel_s: float = 10.0
    # Seconds after a request that got no answer was sent during which it may still
    # land (held in a proxy, a load balancer, a congested link): the item's next change
    # is not sent before they have passed, so that it is not overwritten by that request
    # (after an ordered rule's conditional put, only the item's next delete waits: see
    # :meth:`_unanswered`). ``write`` returns only then, or (``hold=False``, the pipeline) at
    # once with the time in ``WriteResult.hold_until``, for the caller to keep the key
    # that long without a thread waiting. Other keys flow meanwhile. 0: no hold. No hold
    # starts, and a waiting ``write`` returns, once ``holds_released`` or ``cancelled``
    # is set (a stop).
    late_write_window_s: float = 0.0
    holds_released: threading.Event = field(default_factory=threading.Event)
    # The shard whose changes this writer settles (a shard's pipeline has writers of its
    # own), for the series that /healthz judges per shard; "" in the operator tools.
    shard: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        # The writes the destination accepted, by kind (refusals compare them).
        self._successes_of = {"put": 0, "delete": 0}
        # The accepted writes when the table's loss was last reported: one report per
        # loss, not per refusal (a loss again after it accepted writes is reported again).
        self._loss_reported_at = -1
        self._lost_answered_at: float | None = None  # monotonic: the last such answer
        if self._replicated:
            # Born at 0 with the pipeline: a later count is an increase() sees, also in a
            # run after one that had counted a loss (the series' labels are the same), or
            # as many dead letters as the run before it had when it ended.
            self.metrics.destination_tables_lost.labels(self.label)
            for reason in DEAD_LETTER_REASONS:
                self.metrics.dead_letters.labels(self.label, reason)
                self.metrics.dead_letters_already_stored.labels(self.label, reason)
        self._retry_warned_at: float | None = None  # monotonic; see _retry_warns

    def _retry_warns(self) -> bool:
        """Whether a retried write is logged at warning (else at info): when no retry of
        this writer was in the last ``RETRY_WARNING_EVERY_S``. A destination that accepts
        nothing retries every change in flight, several times a second: a warning each
        would flood the log, yet at ``logging.level: warning`` the key and error of a
        stalled destination's writes must show (the runbook and the alerts send the
        operator to them): the first at once, then once a minute at least."""
        now = time.monotonic()
        with self._lock:
            warned = self._retry_warned_at
            if warned is not None and now - warned < RETRY_WARNING_EVERY_S:
                return False
            self._retry_warned_at = now
            return True

    def write(
        self,
        change: Change,
        first: FirstAnswer | None = None,
        *,
        since_s: float | None = None,
        hold: bool = True,
    ) -> WriteResult:
        """Settle ``change``; ``first``: its first request was sent already (by
        :meth:`first_request`), and this is how it was answered. ``since_s``: the creation
        time of the earliest change this write settles, when ``change`` replaced older
        ones that were never written here (the apply delay counts from it). ``hold``:
        return only once a request of this write that may still land can no longer
        (see :attr:`late_write_window_s`); False: return at once, with that time in
        ``hold_until``, for a caller that keeps the item's next change back itself (the
        pipeline, whose threads must not wait out windows one write at a time)."""
        state = _Attempts(first=first, since_s=since_s)
        result = self.retrying(
            change,
            lambda attempt: self._attempt(change, attempt, state),
            finishing=lambda: state.restore is not None,
        )
        if state.tombstone is not None:
            result = replace(result, tombstone=state.tombstone)
        sent_at, held = self._unanswered(state)
        if sent_at is None:
            return result
        result = replace(result, unanswered=True)
        until = self._late_write_hold(change, sent_at, held, waits_here=hold)
        recheck = (
            self.tombstones is not None
            and state.put_unanswered_at is not None
            and change.new_image is not None
        )
        if until is None and recheck and not self.cancelled.is_set():
            # A stop ends holds, not this check: the put may still land, and the caller
            # keeps its record open until the check has been made.
            late = sent_at + self.late_write_window_s
            until = late if late > time.monotonic() else None
        if until is None:
            return result
        if not hold:
            return replace(result, hold_until=until, held=held, recheck=recheck)
        # A caller that waits (the operator commands) waits out either kind: what it does
        # next (reading the source again for a delete since) must come after the landing.
        self._wait_for_hold(until)
        if recheck:
            checked = self.recheck_late_put(change)
            if checked.failed:
                return checked
        return result

    def recheck_late_put(self, change: Change) -> WriteResult:
        """After the late-write window of a put with a request that got no answer (see
        :attr:`WriteResult.recheck`): while a live tombstone outranks the put's image,
        remove the item if it is still exactly that image (the request landed after the
        put's own check). Nothing else is removed: an item written since is another
        change's, settled by its own write. APPLIED when the item was removed,
        UNCHANGED when nothing was to be done, FAILED when the check could not be made;
        retried as a write is."""
        assert change.new_image is not None
        image = change.new_image
        rule = self.ordered_rule

        def check_once(_attempt: int) -> WriteResult:
            # An expired one was counted by the put's own check.
            tombstone = self._outranking_tombstone(change.keys, image, note_expired=False)
            if tombstone is None or not self.replace_exactly(change.keys, image, None):
                return UNCHANGED
            self.metrics.late_puts_removed.labels(self.label).inc()
            log.warning(
                "a put that got no answer landed after its check against a delete that "
                "outranks it: the item is removed again",
                destination=self.label,
                key=describe_key(change.keys),
                delete=tombstone.described(rule.attribute, rule.origin_attribute),
            )
            return APPLIED

        return self.retrying(change, check_once)

    def _unanswered(self, state: _Attempts) -> tuple[float | None, Held]:
        """When the last request of the write that may still land was sent (None: none
        may), and which of the item's next changes must wait for it.

        A request without a condition lands over anything. A conditional put fails its
        condition on a newer item, but not on no item: under an ordered rule it can land
        only over a delete, so only a delete waits, and the item's next puts flow (each
        ranks above it). A conditional delete removes what ranks at or below its image:
        an item created again since with a lower timestamp or version (a writer's clock
        behind) too, so the item's next put waits, and its deletes flow. A custom rule's
        writes follow its resolver, which may turn any change into a put or a delete: its
        next change waits, whatever it is."""
        put, delete = state.put_unanswered_at, state.delete_unanswered_at
        unconditional = state.unconditional_unanswered_at
        sent = [at for at in (put, delete, unconditional) if at is not None]
        if not sent:
            return None, Held.CHANGE
        if len(sent) > 1 or unconditional is not None or self.rule.reads_existing:
            return max(sent), Held.CHANGE
        return (put, Held.DELETE) if put is not None else (delete, Held.PUT)

    def _late_write_hold(
        self, change: Change, sent_at: float, held: Held, *, waits_here: bool
    ) -> float | None:
        """Until when the item's next change (``held``: or only its next delete, or put)
        must wait (time.monotonic()), after a request for ``change`` sent at ``sent_at``, whose
        answer never came: it can land until ``late_write_window_s`` after it was sent,
        and landing after the next change it would replace that change's image (or bring
        back the item that change deleted) for good. None when that time has passed, or a
        stop or a cancellation ended the holds (the change was applied all the same; the
        next change's order is then the gap docs/reliability.md describes)."""
        until = sent_at + self.late_write_window_s
        left = until - time.monotonic()
        if left <= 0 or self.holds_released.is_set() or self.cancelled.is_set():
            return None
        self.metrics.late_write_holds.labels(self.label).inc()
        log.warning(
            # ``waits_here``: the caller (an operator command) waits, before it reads the
            # source again; else the item's next change waits in the shard's buffer.
            "a write got no answer and may still land: "
            + (
                "waiting until it no longer can before going on"
                if waits_here
                else f"the item's next {held.value} waits"
            ),
            destination=self.label,
            key=describe_key(change.keys),
            hold_s=round(left, 3),
        )
        return until

    def _wait_for_hold(self, until: float) -> None:
        """Wait until ``until`` (time.monotonic()), or a stop or a cancellation."""
        left = until - time.monotonic()
        while left > 0 and not self.cancelled.is_set():
            if self.holds_released.wait(min(left, _HOLD_CHECK_S)):
                return
            left = until - time.monotonic()

    # -- a first request sent elsewhere ---------------------------------------------------

    def first_request(self, change: Change) -> WriteRequest | None:
        """The request ``change``'s first attempt sends, when nothing comes before it (no
        read of the destination's item, no tombstone); None when :meth:`write` must do
        the whole of it (also when the rule writes nothing or cannot plan the change)."""
        if self.rule.reads_existing or (self.tombstones is not None and change.op_is_delete):
            return None
        try:
            plan = self.rule.plan(change, None)
        except PlanError:
            return None
        if not isinstance(plan, WriteRequest) or plan.expects is not None or plan.at_or_below:
            return None  # a write checked after its answer (a wide item): write() sends it
        return plan

    def call_of(self, request: WriteRequest) -> tuple[str, dict[str, Any]]:
        """The operation and parameters that send ``request`` to this destination (the
        direct path sends a stream image as the record's bytes; botocore takes items)."""
        kwargs = request.to_kwargs(
            self.table, stream_images=isinstance(self.client, WireWriteClient)
        )
        if request.op == "put":
            if self.tombstones is not None:
                kwargs["ReturnValues"] = "ALL_OLD"  # no extra capacity: did it create the item?
            return "PutItem", kwargs
        return "DeleteItem", kwargs

    @property
    def settled_by_success(self) -> bool:
        """Whether a 200 to the first request applies the change with nothing more to do
        (a tombstone-keeping writer checks a put's outcome after it)."""
        return self.tombstones is None and not self.rule.reads_existing

    def applied_elsewhere(
        self,
        changes: Sequence[Change],
        since_s: Sequence[float] | None = None,
        deletes: int | None = None,
    ) -> list[float]:
        """The first requests, sent elsewhere, applied ``changes`` (:attr:`settled_by_success`):
        note the successes and return the apply delays (from ``since_s``, each change's
        earliest replaced change as in :meth:`write`, else from their creation); the caller
        counts the writes and observes the delays (in batches). ``deletes``: how many of
        ``changes`` are deletes, when the caller has counted them."""
        if deletes is None:
            deletes = sum(change.event is Event.REMOVE for change in changes)
        self._note_success("delete", deletes)
        self._note_success("put", len(changes) - deletes)
        now = self.clock()
        if since_s is None:
            return [max(0.0, now - change.created_s) for change in changes]
        return [max(0.0, now - since) for since in since_s]

    def retrying(
        self,
        change: Change,
        attempt_once: Callable[[int], WriteResult],
        *,
        finishing: Callable[[], bool] = lambda: False,
    ) -> WriteResult:
        """Run ``attempt_once`` until it settles ``change``: retry what may pass (for
        ``retry_for_s``, or without a limit in time), fail what never will, stop on a
        destination that refuses everything.

        A cancellation stops the retries, unless ``finishing`` says a put-back is due:
        that is retried on for ``put_back_after_cancel_s`` more (the attempt raises
        WriteCancelled once it is sent).

        A destination refuses everything when this change has been refused (access
        denied, table missing, signature or credentials refused, another key schema)
        ``refusal_limit`` times in a row, with its backoff between, and no write to the
        destination succeeded meanwhile: about two minutes with the defaults, however
        many changes are in flight. A success at the destination starts the change's
        count again; and a change denied ``_ITEM_DENIALS_BEFORE_DEAD_LETTER`` times while
        other writes of its kind succeed (puts for a put, deletes for a delete) is denied
        for itself (a fine-grained policy) and fails, to be dead-lettered. A missing
        table never is: it is no item's, even when other writes succeeded since (the
        table deleted, re-created, deleted again).

        A refusal of the tombstone table is never one item's: a change whose delete or
        check it refuses is retried as above, never dead-lettered (a delete left out at
        one region would leave the regions apart), and only an answer of that table
        starts its count again: the writes to the user's table beside it, which keep
        succeeding when they need no tombstone, say nothing of it.
        """
        started = time.monotonic()
        attempt = 0
        denials = 0
        successes_at_first_denial: int | None = None
        denied_kind: str | None = None  # the kind of write that count is of
        schema_refusals = 0
        streak = 0  # this change's refusals in a row, no success at the destination between
        seen_then: _Seen | None = None
        finish_by: float | None = None  # once cancelled with a put-back due
        unanswered: _Unanswered | None = None  # since when no attempt has been answered
        while True:
            if self.cancelled.is_set():
                if not finishing():
                    raise WriteCancelled(f"write to {self.label} cancelled")
                if finish_by is None:
                    finish_by = time.monotonic() + self.put_back_after_cancel_s
                elif time.monotonic() >= finish_by:
                    raise WriteCancelled(
                        f"write to {self.label} cancelled; the item it replaced unseen was "
                        f"not put back in {self.put_back_after_cancel_s:g} s"
                    )
            tried_at = time.monotonic()
            try:
                return attempt_once(attempt)
            except PlanError as error:
                return WriteResult(Outcome.FAILED, error.reason, str(error))
            except (ClientError, BotoCoreError) as error:
                kind = classify(error)
                if kind is ErrorKind.REJECTED and key_schema_differs(error):
                    stray, source_key_unread = self._keys_not_the_sources(change, error)
                    if stray is not None:
                        return WriteResult(
                            Outcome.FAILED,
                            "rejected",
                            f"{stray}: a record not of the source table; {describe_refusal(error)}",
                        )
                    # Not this change's fault: the table's key is not the source's (it was
                    # re-created with another one). Retried like a missing table, never
                    # dead-lettered; persisting, it stops the worker.
                    streak, seen_then = self._note_refusal(error, streak, seen_then)
                    self._table_lost(error)
                    schema_refusals += 1
                    if max(streak, schema_refusals) >= self.refusal_limit:
                        raise DestinationRefused(
                            f"{self._refuser(error)} refused {max(streak, schema_refusals)} "
                            f"writes in a row: {refusal_answer(error)}. Its key schema is not "
                            f"{expected_key(error)} (was it re-created?)"
                            f"{_SOURCE_KEY_UNREAD if source_key_unread else ''}; {NOT_PASSED}"
                        ) from error
                elif kind is ErrorKind.REJECTED:
                    return WriteResult(Outcome.FAILED, "rejected", describe_refusal(error))
                if kind is ErrorKind.AUTH:
                    streak, seen_then = self._note_refusal(error, streak, seen_then)
                    if streak >= self.refusal_limit and _no_credentials(error):
                        raise DestinationRefused(
                            f"{self._named()}: no credentials to write with, {streak} times "
                            f"in a row (no write was sent): {refusal_answer(error)}. Check "
                            "the credentials the worker runs with (its profile and any "
                            f"credential_process, its container or instance role); {NOT_PASSED}"
                        ) from error
                    if streak >= self.refusal_limit and isinstance(error, RoleNotAssumed):
                        raise DestinationRefused(
                            f"{self._named()}: STS refused the role to write with {streak} "
                            f"times in a row (no write was sent): {refusal_answer(error)}. "
                            "Check the role's trust policy (it must trust the identity this worker "
                            "runs with, with the job's external_id if it sets one) and that "
                            f"this identity may call sts:AssumeRole on it; {NOT_PASSED}"
                        ) from error
                    if streak >= self.refusal_limit:
                        check = (
                            "Check this host's clock (NTP): the refusal blames the time the "
                            "writes were signed at"
                            if refused_for_the_clock(error)
                            else "Check the credentials the worker runs with (a secret key "
                            "that is not the access key's, a key or token expired or revoked)"
                        )
                        raise DestinationRefused(
                            f"{self._refuser(error)} did not accept the signature or "
                            f"credentials of {streak} writes in a row: {refusal_answer(error)}. "
                            f"{check}; {NOT_PASSED}"
                        ) from error
                elif kind in (ErrorKind.DENIED, ErrorKind.NOT_FOUND):
                    streak, seen_then = self._note_refusal(error, streak, seen_then)
                    if kind is ErrorKind.NOT_FOUND:
                        self._table_lost(error)
                    if streak >= self.refusal_limit:
                        raise DestinationRefused(
                            f"{self._refuser(error)} refused {streak} writes in a row: "
                            f"{refusal_answer(error)}{missing_tombstones(error, kind)}"
                        ) from error
                    # A missing table is no item's own (see _ITEM_DENIALS_BEFORE_DEAD_LETTER).
                    if kind is ErrorKind.DENIED and not isinstance(error, TombstoneTableError):
                        denials += 1
                        if successes_at_first_denial is None or denied_kind != seen_then.kind:
                            # Counted again for this kind: its count is the one compared.
                            successes_at_first_denial = seen_then.successes
                            denied_kind = seen_then.kind
                            denials = 1
                        elif (
                            seen_then.successes > successes_at_first_denial
                            and denials >= _ITEM_DENIALS_BEFORE_DEAD_LETTER
                        ):
                            return WriteResult(
                                Outcome.FAILED, "access_denied", describe_refusal(error)
                            )
                reason = _RETRY_REASON.get(kind, "server_error")
                if kind is ErrorKind.REJECTED:  # only a key schema not the source's is retried
                    reason = "key_schema"
                elif refused_for_the_clock(error):
                    reason = "clock_skew"
                elif _credentials_unavailable(error):
                    reason = "auth"
                elif isinstance(error, BotoCoreError) and kind is not ErrorKind.AUTH:
                    reason = "network"
                delay = self.backoff.delay(attempt)
                # An operator command's bound on a destination it cannot talk to: no answer,
                # or no credentials to ask with (nothing was sent either way).
                bounded = reason == "network" or _credentials_unavailable(error)
                if bounded and self.unanswered_for_s is not None:
                    unanswered = self._still_unanswered(unanswered, tried_at)
                    left = self.unanswered_for_s - (time.monotonic() - unanswered.since)
                    if left <= 0:
                        failed = "did not answer"
                        if reason == "auth":
                            failed = "had no credentials to write with"
                        raise DestinationUnavailable(
                            f"{self._named()} {failed} "
                            f"for {self.unanswered_for_s:g} s ({attempt + 1} attempts "
                            f"of one write); last error: {describe_refusal(error)}"
                        ) from error
                    delay = min(delay, left)
                else:
                    unanswered = None
                if self.retry_for_s is not None:
                    left = self.retry_for_s - (time.monotonic() - started)
                    if left <= 0:
                        raise DestinationUnavailable(
                            f"{self._named()} did not "
                            f"take the write in {self.retry_for_s:g} s ({attempt + 1} "
                            f"attempts); last error: {describe_refusal(error)}"
                        ) from error
                    delay = min(delay, left)
                if finish_by is not None:
                    delay = min(delay, max(0.0, finish_by - time.monotonic()))
                self.metrics.retries.labels(self.label, reason).inc()
                attempt += 1
                warns = self._retry_warns()
                (log.warning if warns else log.info)(
                    "write failed, retrying",
                    destination=self.label,
                    key=describe_key(change.keys),
                    error=describe_refusal(error),
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    **({"note": _RETRY_WARNING_NOTE} if warns else {}),
                )
                if finish_by is None:
                    self.cancelled.wait(delay)
                else:
                    time.sleep(delay)  # cancelled already: only the put-back is left

    def _keys_not_the_sources(
        self, change: Change, error: BaseException
    ) -> tuple[str | None, bool]:
        """Why ``change``'s keys are not the source table's, when they are not (see
        :attr:`source_key_schema`), and whether the source's key could not be read to
        tell; a tombstone table's refusal is never the change's."""
        if self.source_key_schema is None or isinstance(error, TombstoneTableError):
            return None, False
        schema = self.source_key_schema()
        if schema is None:
            return None, True
        return keys_not_of(change.keys, schema), False

    def _refuser(self, error: BaseException) -> str:
        """Who refused ``error``'s request, for a refusal's message: this destination's
        table, or the tombstone table beside it."""
        if isinstance(error, TombstoneTableError):
            return error.table
        return self._named()

    def _named(self) -> str:
        """This destination in a message: its name, and its table beside a name given to
        it (a default name is the ``<region>/<table>`` itself, said once)."""
        place = f"{self.region}/{self.table}"
        return f"destination {self.label}" + (f" ({place})" if self.label != place else "")

    def _plan(self, change: Change, existing: Item | None) -> WriteRequest | Skip:
        """The rule's plan. A custom resolver is the user's code: while one runs it is
        counted (``/healthz`` names it beside a destination that stalls on a call that
        does not return), and a slow one is logged with the key it decided."""
        if not self.rule.reads_existing:
            return self.rule.plan(change, existing)
        running = self.metrics.resolver_calls_running.labels(self.label, self.shard)
        running.inc()
        started = time.monotonic()
        try:
            return self.rule.plan(change, existing)
        finally:
            running.dec()
            took = time.monotonic() - started
            if took >= SLOW_RESOLVER_S:
                log.warning(
                    "the custom resolver was slow to decide",
                    destination=self.label,
                    key=describe_key(change.keys),
                    seconds=round(took, 1),
                    rule=describe_rule(self.rule),
                )

    def _attempt(self, change: Change, attempt: int, state: _Attempts) -> WriteResult:
        """One try at settling ``change``; AWS errors other than a failed condition
        propagate to :meth:`retrying`."""
        op = change.event.op
        if (
            self.tombstones is not None
            and self.records_tombstones
            and change.op_is_delete
            and not state.tombstone_done
        ):
            recorded = self.record_tombstone(change)
            state.tombstone_done = True
            if recorded is not None:
                state.tombstone = recorded.held
                if recorded.covered:
                    return self._count(op, Outcome.UNCHANGED)
        while True:
            if state.restore is not None:  # a retry after the put-back's own error
                self._put_back(state)
                if self.cancelled.is_set():
                    raise WriteCancelled(f"write to {self.label} cancelled after its put-back")
            existing: Item | None = None
            if self.rule.reads_existing:
                existing = self._read(change)
                if _holds_one_of(state.in_doubt, existing):
                    return self._own_write_found(change, state, existing)
            first, state.first = state.first, None
            plan = first.request if first else state.request or self._plan(change, existing)
            if isinstance(plan, Skip):
                if self.rule.reads_existing and holds_outcome(change, existing):
                    # The rule kept an item that is what the change leaves there (a replay,
                    # a backfill's copy, a delete of an item already gone): unchanged, as
                    # under the ordered rules, not a conflict whose loser is its winner
                    # (which a restore would write again). The rule is asked all the same:
                    # a resolver may write there anyway (a soft-delete marker, an image
                    # it transforms).
                    return self._count(op, Outcome.UNCHANGED)
                return self._lost(change, Winner(item=existing), plan.reason)
            removals = self._noting_removals(change, plan)
            # A first request sent elsewhere went out earlier: from its own send if known
            # (the event loop's), else from now, which errs long.
            sent_at = time.monotonic() if first is None or first.sent_at is None else first.sent_at
            try:
                response = self._send(plan) if first is None else _answer_of(first)
            except Exception as error:
                if removals is not None:
                    removals.settle_removal(change.key, None)
                if may_have_landed(error):
                    state.in_doubt.append(plan)
                    if not plan.condition:
                        state.unconditional_unanswered_at = sent_at
                    elif plan.op == "put":
                        state.put_unanswered_at = sent_at
                    else:
                        state.delete_unanswered_at = sent_at
                if not isinstance(error, ClientError) or (
                    classify(error) is not ErrorKind.CONDITION_FAILED
                ):
                    raise
                self._note_success(plan.op)
                old: Item | None = error.response.get("Item")  # type: ignore[assignment]
                outcome = self._condition_failed(change, old, state)
                if outcome is None:
                    continue
                return outcome
            replaced = None
            try:
                replaced = self._replaced(change, plan, response)
            finally:
                if removals is not None:
                    removals.settle_removal(change.key, replaced)
            if replaced is not None:
                # Put it back, then go on as if the condition had refused the write with it.
                left = plan.item if plan.op == "put" else None
                state.restore = write_over("put", change.keys, left, replaced)
                state.request = None
                self._put_back(state)
                outcome = self._condition_failed(change, replaced, state)
                if outcome is None:
                    continue
                return outcome
            if self.tombstones is not None and plan.op == "put" and change.new_image is not None:
                created = not response.get("Attributes")
                if created or attempt > 0 or state.reconsidered:
                    undone = self.undo_if_deleted(change.keys, change.new_image)
                    if undone is not None:
                        return self._lost(
                            change, Winner(tombstone=undone), self._tombstone_won(undone)
                        )
            return self._applied(change, state, plan.op)

    def _own_write_found(self, change: Change, state: _Attempts, found: Item | None) -> WriteResult:
        """A rule that reads first found (by a read, or in a failed condition's answer)
        what one of its writes sent without an answer leaves there: that write landed. The
        write is the rule's (a custom resolver's item, not necessarily the change's image),
        so its outcome, not the change's, is what is compared; asked again, the resolver
        would judge the item it wrote itself, and keeping it would record a lost conflict
        against our own write. The success counted is that write's kind (``found``:
        the item it leaves there), which need not be the change's."""
        self.metrics.retries.labels(self.label, "already_applied").inc()
        landed = next((sent.op for sent in state.in_doubt if holds_write(sent, found)), None)
        return self._applied(change, state, landed)

    def _noting_removals(self, change: Change, request: WriteRequest) -> Removals | None:
        """:attr:`removals`, told of ``request`` about to be sent, when it is a delete that
        may remove an item unseen (its record would then look like the application's)."""
        removals = self.removals
        if removals is None or request.op != "delete":
            return None
        if request.expects is None and not request.at_or_below:
            return None
        removals.expect_removal(change.key)
        return removals

    def _replaced(
        self, change: Change, request: WriteRequest, response: Mapping[str, Any]
    ) -> Item | None:
        """The item a write replaced unseen, which it must put back; None when the write
        replaced what it expected.

        Only for a write whose condition compared part of the item it expects (a wide
        item, :attr:`WriteRequest.expects`): the item it returns is then that very item,
        unless another write changed it between the read and this write in attributes
        the condition left out."""
        checked = request.expects is not None or request.at_or_below
        replaced = self._returned_item(response) if checked else None
        if replaced is None:
            return None
        if request.expects is not None:
            if same_item(replaced, request.expects):
                return None
        elif not isinstance(self.rule, OrderedRule) or change.ranked is None:
            return None
        elif self.rule.rank(replaced) <= self.rule.rank(change.ranked):
            return None  # a delete removes what ranks at or below its image
        self.metrics.retries.labels(self.label, "optimistic_conflict").inc()
        log.info(
            "a wide item changed unseen under a write: the item it replaced is put back",
            destination=self.label,
            key=describe_key(change.keys),
        )
        return replaced

    def _returned_item(self, response: Mapping[str, Any]) -> Item | None:
        """The item a write's answer returned (``ReturnValues: ALL_OLD``) in boto3 form,
        or None (the direct path answers in DynamoDB JSON)."""
        item = cast("Item | None", response.get("Attributes"))
        if not item:
            return None
        return item_from_wire(item) if isinstance(self.client, WireWriteClient) else item

    def _send_put_back(self, request: WriteRequest) -> None:
        """Send a put that brings back an item removed unseen. Its condition fails only
        when yet another write replaced the item since: that one stays."""
        try:
            self._send(request)
        except ClientError as error:
            if classify(error) is not ErrorKind.CONDITION_FAILED:
                raise

    def _put_back(self, state: _Attempts) -> None:
        """Send ``state.restore`` (kept there until DynamoDB has answered it, so that a
        retried attempt sends it first)."""
        assert state.restore is not None
        sent_at = time.monotonic()
        try:
            self._send_put_back(state.restore)
        except Exception as error:
            if may_have_landed(error):  # a put on the condition "no item": as a put's
                state.put_unanswered_at = sent_at
            raise
        state.restore = None

    def _condition_failed(
        self, change: Change, old: Item | None, state: _Attempts
    ) -> WriteResult | None:
        """What a failed condition settles; None to write again at once."""
        op = change.event.op
        if self.rule.reads_existing:
            if _holds_one_of(state.in_doubt, old):
                return self._own_write_found(change, state, old)
            state.optimistic_conflicts += 1
            self.metrics.retries.labels(self.label, "optimistic_conflict").inc()
            if state.optimistic_conflicts >= self.max_optimistic_attempts:
                # Named as the conflict log names the rule: the writer's, whichever it is
                # (a custom resolver, a restore's check), never assumed to be custom.
                return WriteResult(
                    Outcome.FAILED,
                    "optimistic_conflicts",
                    f"the item changed between read and write {state.optimistic_conflicts} "
                    f"times in a row (rule: {describe_rule(self.rule)})",
                )
            return None
        # The item it returned is what the destination holds, and an ordered write that
        # lands later fails its condition on it: no doubt is left after it.
        in_doubt, state.in_doubt = bool(state.in_doubt), []
        if in_doubt and self.rule.shows_applied(change, old):
            # An earlier attempt landed and its answer was lost (a read timeout, a
            # dropped connection): the item is ours already.
            self.metrics.retries.labels(self.label, "already_applied").inc()
            if self.tombstones is not None and change.new_image is not None:
                undone = self.undo_if_deleted(change.keys, change.new_image)
                if undone is not None:
                    return self._lost(change, Winner(tombstone=undone), self._tombstone_won(undone))
            return self._applied(change, state)
        decision = self.rule.reconsider(change, old)
        if isinstance(decision, WriteRequest):
            state.reconsidered += 1
            if state.reconsidered > _RECONSIDERED_LIMIT:
                return WriteResult(
                    Outcome.FAILED,
                    "optimistic_conflicts",
                    f"the item changed under the write {state.reconsidered} times in a row",
                )
            state.request = decision
            return None
        if decision is Verdict.UNCHANGED:
            if (
                self.tombstones is not None
                and self.records_tombstones  # not an operator command's copy
                and change.new_image is not None
            ):
                # The put's own image is there already: written by this change before
                # (read again after a restart, or a request of it that landed late),
                # perhaps after a delete that outranks it was recorded. It is checked as
                # a put that created the item is.
                undone = self.undo_if_deleted(change.keys, change.new_image)
                if undone is not None:
                    return self._lost(change, Winner(tombstone=undone), self._tombstone_won(undone))
            return self._count(op, Outcome.UNCHANGED)
        return self._lost(change, Winner(item=old), self.rule.explain_loss(change, old))

    # -- tombstones -----------------------------------------------------------------------

    @property
    def ordered_rule(self) -> OrderedRule:
        """The order tombstones rank by (tombstones need an ordered rule)."""
        rule = self.ordering or self.rule
        assert isinstance(rule, OrderedRule)
        return rule

    @property
    def tombstone_ranking(self) -> Ranking:
        """What the tombstones this writer records are ranked by."""
        rule = self.ordered_rule
        return Ranking(rule.name, rule.attribute)

    def record_tombstone(self, change: Change) -> RecordedDelete | None:
        """Write the delete's tombstone before the item goes (None for a delete without
        its old image). It is covered when a tombstone that another job wrote is there
        already (an echo, or a higher delete): then whoever wrote that one removes the
        item, and nothing is left to do here."""
        tombstone = self.tombstone_for(change)
        if tombstone is None:
            return None
        assert self.tombstones is not None
        held = self.tombstones.record(tombstone)
        if held is None:
            self.metrics.tombstones_written.labels(self.label).inc()
            return RecordedDelete(tombstone, covered=False, written=True)
        # A correction removes a stale item: it always tries.
        covered = change.corrects is None and (
            held.rank > tombstone.rank or held.written_by != self.origin
        )
        return RecordedDelete(held, covered)

    def tombstone_for(self, change: Change) -> Tombstone | None:
        """The tombstone a delete leaves (None for a delete without its old image)."""
        assert self.tombstones is not None
        rule = self.ordered_rule
        deleted = change.image
        if deleted is None:
            return None
        return tombstone_of(
            deleted,
            change.keys,
            rule.fields,
            deleted_in=self.origin,
            written_by=self.origin,
            deleted_at_ms=change.created_us // 1000,
            expires_at=self.tombstones.expiry(),
            ranking=self.tombstone_ranking,
        )

    def remove_held_below(
        self, change: Change, tombstone: Tombstone, *, spare: Callable[[Item], bool] | None = None
    ) -> bool:
        """Read the item, and delete it while it ranks at or below ``tombstone``: a read
        first, since the item is almost always gone and a failed conditional delete costs
        a write. ``spare``: an item it says yes to stays, unless it is the deleted image
        itself (``change``'s)."""
        held = self._read(change)
        if held is None:
            return False
        deleted = change.image
        if spare is not None and spare(held) and (deleted is None or not same_item(held, deleted)):
            return False
        return self.remove_below(change.keys, tombstone, change.image)

    def replace_exactly(
        self,
        keys: Item,
        expected: Item | None,
        item: Item | None,
        *,
        or_foreign_below: tuple[AttributeValue | None, AttributeValue | None] | None = None,
    ) -> bool:
        """Put ``item`` (None: delete the item) while the table holds exactly ``expected``
        (None: no item); whether it was written. A correction of a stale local write
        writes this way: it is meant for that stale image alone, and a job reading the
        write again (after a restart) must not replace or remove what the application
        wrote since.

        ``or_foreign_below``: a rank's (value, origin); the write also applies to an item
        stamped by another region's job that ranks below it, which such a job wrote over
        the stale image (a replicated write is conditional on what it replaces ranking
        lower) and which no record of this region corrects (it is an echo here). An item
        stamped here, or with no stamp, is the application's own later write: its own
        record settles it.

        ``expected`` compared in part (a wide item): an item the write replaced unseen
        is put back (unless it is such a foreign item), and the source's stage is told
        of a delete (:attr:`removals`)."""
        rule = self.ordered_rule
        op = "put" if item is not None else "delete"
        request = write_over(op, keys, expected, item, first=rule.ranking)
        foreign: Callable[[Item], bool] = _nothing
        if or_foreign_below is not None and rule.origin_attribute and self.origin:
            ordering, origin = or_foreign_below
            lower, names, values = below(rule.keyed_fields(keys), ordering, origin, None)
            # Stamped, as a string, by another region: no item, or one without a stamp
            # (the application's own later write), is no such item (``<>`` alone holds
            # for a missing attribute, and ``below`` for a missing item).
            condition = (
                all_of(lower, "attribute_type(#fo, :fs) AND #fo <> :fo"),
                {**names, "#fo": rule.origin_attribute},
                {**values, ":fo": {"S": self.origin}, ":fs": {"S": "S"}},
            )
            if expected is None:
                joined = (
                    any_of(request.condition, condition[0]),
                    {**request.names, **condition[1]},
                    {**request.values, **condition[2]},
                )
            else:
                joined = rule.or_exactly(condition, expected)
            fields = {rule.attribute: ordering, rule.origin_attribute: origin}
            ceiling = rule.rank({k: v for k, v in fields.items() if v is not None})[:3]
            stamp_of = rule.origin_attribute
            here = self.origin

            def foreign(held: Item) -> bool:
                stamp = held.get(stamp_of)
                text = stamp.get("S") if stamp is not None else None
                return isinstance(text, str) and text != here and rule.rank(held)[:3] < ceiling

            request = WriteRequest(
                op=op,
                item=item,
                key=keys if item is None else None,
                condition=joined[0],
                names=joined[1],
                values=joined[2],
                expects=None
                if expected is None
                else cast("Item | None", expecting(expected, joined[1])),
            )
        try:
            return self._send_removal(keys, request, lambda replaced: not foreign(replaced))
        except ClientError as error:
            if classify(error) is not ErrorKind.CONDITION_FAILED:
                raise
            return False

    def undo_if_deleted(self, keys: Item, image: Item) -> Tombstone | None:
        """After a put created an item: if a live tombstone ranks at or above the image,
        remove the item again (while it ranks at or below that tombstone) and return the
        tombstone."""
        tombstone = self._outranking_tombstone(keys, image, note_expired=True)
        if tombstone is not None:
            self.remove_below(keys, tombstone, image)
        return tombstone

    def _outranking_tombstone(
        self, keys: Item, image: Item, *, note_expired: bool
    ) -> Tombstone | None:
        """The live tombstone of ``keys`` that ranks at or above ``image``, if any.
        ``note_expired``: one that does but is past the retention is counted and logged
        (the put is applied)."""
        assert self.tombstones is not None
        rule = self.ordered_rule
        tombstone = self.tombstones.get(keys)
        if tombstone is None or not tombstone.blocks(rule.rank(image)):
            return None
        if not tombstone.expired(self.tombstones.now()):
            return tombstone
        if note_expired:
            self.metrics.tombstones_expired.labels(self.label).inc()
            log.warning(
                "a put ranked below a delete older than the tombstone retention was applied",
                destination=self.label,
                key=describe_key(keys),
                delete=tombstone.described(rule.attribute, rule.origin_attribute),
            )
        return None

    def remove_below(self, keys: Item, tombstone: Tombstone, stale: Item | None) -> bool:
        """Delete the item while it ranks at or below ``tombstone`` (``stale``, an image
        known to be below it, settles the ties DynamoDB cannot compare). Whether an item
        was deleted.

        The condition compares (value, origin) only, so an item tying the delete there
        fails it: the deleted image itself, which a correction or another write-back may
        have put over ``stale`` between the put that created ``stale`` and its tombstone
        check (the put replaced an item, so it checks nothing). Such an item comes back
        with the failure; one that ranks at or below the tombstone by the digest is then
        deleted while it is still exactly that item, or it would stay for good."""
        rule = self.ordered_rule
        fields = rule.keyed_fields(keys)
        condition, names, values = below(fields, tombstone.ordering, tombstone.origin, None)
        if stale is not None:
            # Only a whole comparison: this first delete puts nothing back.
            condition, names, values = rule.or_exactly(
                (condition, names, values), stale, whole=True
            )
        request = WriteRequest(
            op="delete", key=keys, condition=condition, names=names, values=values
        )
        for _ in range(_RECONSIDERED_LIMIT):
            try:
                return self._send_removal(
                    keys, request, lambda held: not tombstone.blocks(rule.rank(held))
                )
            except ClientError as error:
                if classify(error) is not ErrorKind.CONDITION_FAILED:
                    raise
                held = cast("Item | None", error.response.get("Item"))
                if not held or not tombstone.blocks(rule.rank(held)):
                    return False  # gone, or something ranking above the delete: it stays
                request = exact_write("delete", keys, held, rule.exactly(held))
        return False

    def _send_removal(
        self, keys: Item, request: WriteRequest, puts_back: Callable[[Item], bool]
    ) -> bool:
        """Send a delete of :meth:`remove_below` (or a write of :meth:`replace_exactly`).
        One that compares its item only in part (a wide item tying the tombstone) may
        replace, unseen, a write that changed only attributes it leaves out: that item is
        put back when ``puts_back`` says so (for a removal, when it ranks above the
        tombstone), and the source's stage is told of a delete (:attr:`removals`), as
        for any such delete."""
        removals = self.removals if request.expects is not None and request.op == "delete" else None
        key = key_id(keys) if removals is not None else ()
        if removals is not None:
            removals.expect_removal(key)
        put_back: Item | None = None
        try:
            replaced = self._returned_item(self._send(request))
            if (
                replaced
                and request.expects is not None
                and not same_item(replaced, request.expects)
                and puts_back(replaced)
            ):
                put_back = replaced
        finally:
            if removals is not None:
                removals.settle_removal(key, put_back)
        if put_back is None:
            return True
        written = request.item if request.op == "put" else None
        self._send_put_back(write_over("put", keys, cast("Item | None", written), put_back))
        return False

    def _tombstone_won(self, tombstone: Tombstone) -> str:
        rule = self.ordered_rule
        shown = tombstone.described(rule.attribute, rule.origin_attribute)
        return f"{rule.name}: {shown} (a tombstone) ranks at or above the put's image"

    def _applied(self, change: Change, state: _Attempts, op: str | None = None) -> WriteResult:
        """``op``: the kind of write the destination accepted (by default the change's:
        an earlier attempt's answer was lost, and a read found it landed)."""
        self._note_success(op or ("delete" if change.event is Event.REMOVE else "put"))
        if self.counted:
            since = change.created_s if state.since_s is None else state.since_s
            self.metrics.apply_delay.labels(self.label).observe(max(0.0, self.clock() - since))
        return self._count(change.event.op, Outcome.APPLIED)

    def _read(self, change: Change) -> Item | None:
        response = self.client.get_item(TableName=self.table, Key=change.keys, ConsistentRead=True)
        return cast("Item | None", response.get("Item"))

    def _send(self, request: WriteRequest) -> dict[str, Any]:
        operation, kwargs = self.call_of(request)
        if operation == "PutItem":
            response: Mapping[str, Any] = self.client.put_item(**kwargs)
        else:
            response = self.client.delete_item(**kwargs)
        return response if isinstance(response, dict) else {}

    def _lost(self, change: Change, winner: Winner, why: str) -> WriteResult:
        """Count ``change`` as lost to ``winner``, write the winner back (active-active)
        and hand the loss to the conflict log: CONFLICT_LOST, with the log's future."""
        written_back = False
        if self.write_back is not None and (winner.item is not None or winner.tombstone):
            written_back = self.write_back.send(self, change, winner)
        if winner.item is not None and not change.op_is_delete:
            self._note_tie(change, winner.item)
        log.debug(
            "conflict lost",
            destination=self.label,
            key=describe_key(change.keys),
            stream_event=change.event.value,
            sequence_number=change.sequence_number,
            why=why,
            written_back=written_back,
        )
        recorded = None
        if self.conflict_log is not None:
            recorded = self.conflict_log.lost(
                Loss(
                    self,
                    change,
                    winner.item,
                    why,
                    write_back=written_back,
                    winning_rank=self._winning_rank(winner),
                )
            )
        self._count(change.event.op, Outcome.CONFLICT_LOST)
        return WriteResult(Outcome.CONFLICT_LOST, why=why, recorded=recorded)

    def _note_tie(self, change: Change, held: Item) -> None:
        """A put lost to an item ranking above it only by the digest (same value and
        origin): replicator/rules/ties.py says why that is worth a warning."""
        rule = self.rule
        image = change.ranked
        if not isinstance(rule, OrderedRule) or image is None:
            return
        try:
            if rule.rank(held)[:3] != rule.rank(image)[:3]:
                return
        except MalformedImage:
            return
        TIES.later_put_lost(
            rule.attribute, change.keys, lambda: rule.shown_apart(held, image), self.label
        )

    def _winning_rank(self, winner: Winner) -> dict[str, Any] | None:
        rule = self.ordering or self.rule
        if winner.tombstone is None or not isinstance(rule, OrderedRule):
            return None
        return winner.tombstone.rank_record(rule.attribute, rule.origin_attribute)

    def _count(self, op: str, outcome: Outcome, why: str | None = None) -> WriteResult:
        if self.counted:
            self.metrics.writes.labels(self.label, op, outcome.value).inc()
        return _SETTLED[outcome] if why is None else WriteResult(outcome, why=why)

    def _note_success(self, op: str, count: int = 1) -> None:
        with self._lock:
            self._successes_of[op] = self._successes_of.get(op, 0) + count

    def _accepted(self, kind: str | None = None) -> int:
        """The writes of ``kind`` the destination accepted (None: of every kind)."""
        with self._lock:
            if kind is None:
                return sum(self._successes_of.values())
            return self._successes_of[kind]

    def _still_unanswered(self, unanswered: _Unanswered | None, tried_at: float) -> _Unanswered:
        """One more unanswered attempt, sent at ``tried_at``: since when the destination
        has not answered, counted again from that attempt if it accepted a write since the
        last one."""
        successes = self._accepted()
        if unanswered is None or unanswered.successes != successes:
            return _Unanswered(tried_at, successes)
        return unanswered

    @property
    def _replicated(self) -> bool:
        """A replicated destination's writer, in a shard's pipeline: not the source's own
        (write-backs; a lost source is the job's stop), nor an operator tool's, whose own
        failure line says what happened to the command."""
        return self.counted and bool(self.shard)

    def _table_lost(self, error: BaseException) -> None:
        """The destination's table (not its tombstone table, whose loss loses no item)
        answered that it is missing or has another key after it had accepted writes of
        this process: count and log the loss (once per loss: see
        ``table_loss_settle_s``), and tell ``on_table_lost``.
        Not before: a table still being created answers as a missing one (DynamoDB, until
        it is ACTIVE), and loses nothing."""
        if isinstance(error, TombstoneTableError):
            return
        accepted = self._accepted()
        if accepted == 0:
            return
        now = time.monotonic()
        with self._lock:
            last = self._lost_answered_at
            # Never shorter than the longest pause between two retries of one write.
            window = max(self.table_loss_settle_s, self.backoff.cap_s)
            settling = last is not None and now - last < window
            new_loss = self._loss_reported_at != accepted and not settling
            self._loss_reported_at = accepted
            self._lost_answered_at = now
        if new_loss and self._replicated:
            # Nothing else would say it: the writes wait (retried, not dead-lettered) and
            # go on once the table is back, lag and /healthz clear, and the items it held
            # before, which no change will write again, stay missing.
            self.metrics.destination_tables_lost.labels(self.label).inc()
            log.error(
                "destination table lost: it answered that it does not exist, or has another "
                "key, after accepting this job's writes (deleted or re-created while the job "
                "ran); the items it held are gone, and replication writes only items that "
                "change from now on. Once it takes writes again, run `replicator backfill "
                "--restart`, then `replicator verify` (runbook)",
                destination=self.label,
                error=refusal_answer(error),
            )
        if self.on_table_lost is not None:
            self.on_table_lost(self.label)

    def _note_refusal(
        self, error: BaseException, streak: int, seen_then: _Seen | None
    ) -> tuple[int, _Seen]:
        """One more refusal (``error``) of a change that had ``streak`` in a row, with
        ``seen_then`` at the last of them: the change's new streak (1 again if the table
        that refused accepted a request since: the destination's table, or the tombstone
        table for its own refusals) and what is seen now, to compare the next with."""
        kind = _KIND_OF_OPERATION.get(getattr(error, "operation_name", ""))
        successes = self._accepted(kind)
        answers = self.tombstones.answered if self.tombstones is not None else 0
        seen = _Seen(successes, answers, kind)
        if seen_then is not None:
            if isinstance(error, TombstoneTableError):
                moved = seen.tombstone_answers != seen_then.tombstone_answers
            else:
                # A refusal of another kind than the last counts on: no success of its
                # kind is known since (the counts compared would be of two kinds).
                moved = seen.kind == seen_then.kind and seen.successes != seen_then.successes
            if moved:
                streak = 0
        return streak + 1, seen


def _holds_one_of(sent: Sequence[WriteRequest], existing: Item | None) -> bool:
    """Whether the destination's item is what one of the writes ``sent`` leaves there."""
    return any(holds_write(request, existing) for request in sent)


def _answer_of(first: FirstAnswer) -> dict[str, Any]:
    """The first request's answer as :meth:`DestinationWriter._send` would give it."""
    if first.error is not None:
        raise first.error
    return first.response if first.response is not None else {}


def _nothing(_: Item) -> bool:
    return False
