"""The record processor the MultiLangDaemon runs, one process per shard.

It follows amazon-kclpy's v3 contract (initialize, process_records, lease_lost,
shard_ended, shutdown_requested) and adapts it to the shard's intake and pipeline:

    stream record -> decode -> filters -> buffer -> conflict rules -> writers -> checkpoint

The processor itself only speaks the protocol, checkpoints and reports; what happens
to a record is the intake's (replicator/intake.py) and the pipeline's.
``process_records`` hands the batch to the intake and returns as soon as the buffer
has room, so writes overlap with the daemon's next read; each call then checkpoints as
far as every destination has applied or dead-lettered. amazon-kclpy catches exceptions
from a processor and carries on, which would let the daemon read past changes that
were never applied; so any unexpected error here ends the process with a non-zero
status instead, and the shard resumes from the last checkpoint.

SIGTERM, SIGINT and SIGHUP are ignored (replicator/entry.py says why): the processor stops
through the protocol, or when its input closes; SIGKILL still ends it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import msgspec
import structlog

from replicator import lastwords, logs
from replicator.checkpoint import Checkpoints, ProtocolCheckpointer
from replicator.config.model import PROCESSOR_FLUSH_TIMEOUT_MS, PROCESSOR_STOP_WATERMARK_S
from replicator.exceptions import (
    DaemonGone,
    DeadLetterUnavailable,
    DestinationRefused,
    EnvironmentProblem,
    LeaseLost,
    ProtocolViolation,
    ReplicatorError,
    UnsupportedDaemon,
)
from replicator.intake import ShardIntake
from replicator.metrics import Metrics
from replicator.pipeline import CONFLICT_LOG_WAIT
from replicator.runtime.kcl.awaited import AnswerNotes
from replicator.runtime.local.protocol import RELEASE_SIGNAL
from replicator.shards.fence import LeaseFence, worker_id_from_environment
from replicator.shards.leases import LATEST, TRIM_HORIZON
from replicator.watermark.spans import passed_over_advice

log = structlog.get_logger(__name__)

# How long a checkpoint waits for the watermark's dead-letter ranges and unread spans to
# be stored (a status table that fails or hangs is not waited on within a batch).
_STORE_WAIT_S = 2.0
_END_STORE_WAIT_S = 10.0
# Batches in a row whose checkpoint waited for the watermark before that is a warning
# (each waited up to _STORE_WAIT_S for the store).
_HELD_WARN_AFTER = 3
_END_RETRY_S = 1.0
_END_LOG_EVERY_S = 30.0
# A batch held this long (the buffer full) has its lease read, and again as often, while
# it is held (replicator/shards/fence.py says why); a batch answered sooner needs none:
# the daemon's own leaseLost then comes between two actions.
FENCE_AFTER_S = 5.0
FENCE_EVERY_S = 5.0

P = ParamSpec("P")
R = TypeVar("R")


def _hard_exit(status: int) -> None:
    # Another thread may be writing a log line: let it finish it, so the runtime's next
    # line (it shares our stderr) is not glued to half of ours.
    logs.finish_lines()
    os._exit(status)


def _fail_fast(
    method: Callable[Concatenate[ReplicationProcessor, P], R],
) -> Callable[Concatenate[ReplicationProcessor, P], R | None]:
    @functools.wraps(method)
    def guarded(self: ReplicationProcessor, *args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return method(self, *args, **kwargs)
        except LeaseLost as error:
            log.warning("lease lost; dropping unapplied changes", reason=str(error))
            self._drop()
            return None
        except DaemonGone as error:
            # Not a failure of ours: the runtime was killed. The shard resumes from its
            # last checkpoint wherever it runs next.
            log.warning("the daemon went away; exiting", action=method.__name__, error=str(error))
            self._stop.set()
            self._exit(1)
            return None
        except UnsupportedDaemon as error:  # in the answer to a checkpoint
            self._stop.set()
            refuse_daemon(error, self._exit)
            return None
        except Exception as error:  # noqa: BLE001  # anything unforeseen ends the process
            self._die(error, method.__name__)
            return None

    return guarded  # type: ignore[return-value]


class ReplicationProcessor:
    """amazon-kclpy v3 record processor (``version = 3`` selects that contract)."""

    version = 3

    def __init__(
        self,
        build: Callable[[str], ShardIntake],
        metrics: Metrics,
        exit_process: Callable[[int], None] = _hard_exit,
        report_interval_s: float = 1.0,
        shutdown_flush_timeout_s: float = PROCESSOR_FLUSH_TIMEOUT_MS / 1000,
        pause: Callable[[float], None] = time.sleep,
        notes: AnswerNotes | None = None,
        lease_taker: Callable[[str], str | None] | None = None,
    ) -> None:
        """``notes``: where the launcher of ``runtime: kcl`` learns of a processRecords
        held unanswered (:mod:`replicator.runtime.kcl.awaited`). ``lease_taker``: who
        holds the shard's lease if this worker no longer does (None: it does), read
        while a batch is held (:mod:`replicator.shards.fence`)."""
        self._build = build
        self._notes = notes
        self._lease_taker = lease_taker
        self._held_since: float | None = None  # the batch held for room, since (monotonic)
        self._lease_read_at = 0.0
        self.metrics = metrics
        self._exit = exit_process
        self._report_interval_s = report_interval_s
        self._shutdown_flush_timeout_s = shutdown_flush_timeout_s
        self._pause = pause
        self._held = 0  # batches in a row whose checkpoint waited for the watermark
        self.intake: ShardIntake | None = None
        self.checkpoints: Checkpoints | None = None
        self._lease_lost = False
        self._shutdown_requested = False
        # Told to stop by the protocol (shutdownRequested, leaseLost or shardEnded): the
        # end of our input then closes the protocol; before, it means the daemon is gone.
        self.told_to_stop = False
        self._stop = threading.Event()
        self._reporter: threading.Thread | None = None
        self._answered_at = time.time()  # when the last action finished (see process_records)
        self._started_at_latest = False  # a shard with no checkpoint, started at LATEST

    # -- the five actions -----------------------------------------------------------------

    @_fail_fast
    def initialize(self, initialize_input: Any) -> None:
        if self.intake is not None:
            # A new intake would drop the changes the first one has not settled, and a
            # later checkpoint would pass them. The KCL sends initialize once a process.
            raise ProtocolViolation(
                f"the daemon sent a second initialize (shard {initialize_input.shard_id}) "
                f"to the processor of shard {self._checkpoints().shard_id}"
            )
        shard_id = str(initialize_input.shard_id)
        logs.bind_everywhere(shard=shard_id)
        if self._notes is not None:
            self._notes.started(shard_id)
        self.intake = self._build(shard_id)
        self.checkpoints = Checkpoints(self.metrics, shard_id)
        if self._notes is not None:
            self.checkpoints.on_result = self._notes.checkpoint_result
        start = initialize_input.sequence_number
        self.checkpoints.last = start if isinstance(start, str) and start.isdigit() else None
        log.info(
            "processor started",
            from_sequence_number=initialize_input.sequence_number,
            destinations=list(self.intake.pipeline.writers),
        )
        self._reporter = threading.Thread(target=self._report_loop, name="report", daemon=True)
        self._reporter.start()
        # A shard with no checkpoint that starts at LATEST never reads what came before;
        # one at TRIM_HORIZON, what came before the stream's oldest record.
        self._started_at_latest = start == LATEST
        self.intake.pipeline.begin_watermark(
            resumed=self.checkpoints.last is not None,
            at_latest=self._started_at_latest,
            at_horizon=start == TRIM_HORIZON,
        )
        self._answered_at = time.time()

    @_fail_fast
    def process_records(self, process_records_input: Any) -> None:
        intake = self._require_intake()
        notes = self._notes
        if self._lease_lost:
            if notes is not None:
                notes.answered()  # a batch passed all the same: the shard is read
            return
        received_at = time.time()
        if notes is not None:
            notes.received()
        try:
            records = process_records_input.records
            pipeline = intake.pipeline
            behind = process_records_input.millis_behind_latest
            if not records and at_the_tip(behind):
                # The local runtime reads again only after this process answered the
                # previous action, so this empty read started after ``_answered_at``.
                pipeline.note_empty_read(
                    previous_answer_at=self._answered_at, received_at=received_at
                )
            intake.accept(records, int(behind or 0))
            with self._waiting_on_writes():
                pipeline.wait_for_room()
            if not self._taken():  # else taken while held: nothing is ours to checkpoint
                self._advance(process_records_input.checkpointer, intake)
        finally:
            if notes is not None:
                notes.answered()
        self._answered_at = time.time()

    def _no_more_batches(self) -> None:
        """Told to stop (a stop, a lease gone, the shard's end): the daemon passes no
        batch after that, which the note's reader must not take for reads that fail."""
        if self._notes is not None:
            self._notes.no_more_batches()

    @_fail_fast
    def lease_lost(self, lease_lost_input: Any) -> None:
        self.told_to_stop = True
        self._no_more_batches()
        if self._shutdown_requested:
            # A graceful stop or a handoff: the KCL tells each processor so once it has
            # checkpointed. Nothing was taken from this worker. The lease row keeps this
            # worker as its owner until it expires (a stop), so the words say when the
            # shard goes on: an operator timing a rolling restart reads this line.
            log.info(
                "processor done after the requested shutdown; the shard goes on from its "
                "checkpoint wherever its lease goes next: at once in a handoff, once the "
                "lease has expired (kcl.failover_time_ms) after a stop"
            )
        else:
            # Another worker took the lease, or the runtime could not read it (the lease
            # table gone, say): the shard is read again from the last checkpoint by
            # whichever worker holds it next, so what is not yet written is dropped.
            log.warning(
                "lease lost; changes not yet written are dropped, and the shard is read "
                "again from the last checkpoint by whichever worker holds it next"
                + self._no_checkpoint_yet(self.checkpoints.last if self.checkpoints else None)
            )
        self._drop()

    @_fail_fast
    def shard_ended(self, shard_ended_input: Any) -> None:
        intake = self._require_intake()
        self.told_to_stop = True
        self._no_more_batches()
        if self._lease_lost:
            # The KCL puts a lost lease before a shard's end: the checkpoint at SHARD_END
            # is no longer ours to write (it would be refused), and the writes abandon()
            # cancelled never settle, so a flush would wait for ever. Answer at once.
            log.warning("shard ended after the lease was lost; not checkpointing")
            return
        # The flush waits for every destination, as a full buffer does: the lease is
        # read meanwhile (_fence_held_batch), and once another worker holds it this
        # processor writes nothing more and leaves the shard's end to that worker.
        with self._waiting_on_writes():
            # In steps: the writes the fence cancels never settle, so one wait for all of
            # them would not end.
            while not intake.pipeline.flush(timeout=_END_RETRY_S) and not self._taken():
                pass
            if not self._taken():
                # Before the checkpoint: once it is written the shard is never read again.
                intake.pipeline.end_watermark()
                self._store_watermark_at_end(intake)
        if self._taken():
            log.warning(
                "shard ended, but its lease was taken while its writes were flushed; not "
                "checkpointing: the new owner reads it from the last checkpoint"
            )
            return
        self._checkpoints().write(shard_ended_input.checkpointer, None, required=True)
        log.info("shard ended; checkpointed at its end")

    @_fail_fast
    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        intake = self._require_intake()
        self._shutdown_requested = True
        self.told_to_stop = True
        self._no_more_batches()
        if self._lease_lost:
            return
        pipeline = intake.pipeline
        # A write held for a late request was applied: it settles now, not after the
        # window, and the checkpoint may pass it (the next owner's order: reliability.md).
        pipeline.release_holds()
        flushed = pipeline.flush(timeout=self._shutdown_flush_timeout_s)
        # The publish and the store share one budget: a status table that hangs would
        # otherwise hold the answer past the runtime's stop limit.
        watermark_until = time.monotonic() + PROCESSOR_STOP_WATERMARK_S
        pipeline.publish_watermark(PROCESSOR_STOP_WATERMARK_S)
        position = pipeline.checkpointable()
        checkpoints = self._checkpoints()
        # None: every change received has settled everywhere.
        outstanding = None if flushed else pipeline.outstanding()
        if not checkpoints.moves(position):
            self._report_stop(None, checkpoints.last, outstanding)
            return
        left_s = max(0.0, watermark_until - time.monotonic())
        if not pipeline.store_watermark_before_checkpoint(left_s, urgent=True):
            # The next owner reads from the last checkpoint, and records again what
            # could not be stored: safe, where a checkpoint past it would lose it.
            log.warning(
                "shutdown requested; not checkpointed: the watermark's dead-letter "
                "ranges or unread spans could not be stored in the status table, and a "
                "checkpoint past them would lose them; the shard's next owner reads "
                f"from the last checkpoint{self._no_checkpoint_yet(checkpoints.last)}",
                destinations=pipeline.watermark_unstored(),
                sequence_number=position,
                last_checkpoint=checkpoints.last,
                all_applied=flushed,
            )
            return
        checkpoints.write(shutdown_requested_input.checkpointer, position, required=True)
        self._report_stop(position, checkpoints.last, outstanding)

    def _no_checkpoint_yet(self, last_checkpoint: str | None) -> str:
        """What "the next owner reads from the last checkpoint" means for a shard that
        started at LATEST and has none yet: its lease keeps LATEST, so the next start is
        at the stream's tip then, and what this processor read but did not settle there
        is passed over."""
        if last_checkpoint is not None or not self._started_at_latest:
            return ""
        return (
            ", which this shard does not have yet (it started at LATEST): its next start "
            "begins at the stream's tip, so the changes read here and not settled are not "
            f"replicated ({self._copy_advice()})"
        )

    def _copy_advice(self) -> str:
        return passed_over_advice(self._require_intake().pipeline.watermark is not None)

    def _report_stop(
        self,
        checkpointed: str | None,
        last_checkpoint: str | None,
        outstanding: dict[str, int] | None,
    ) -> None:
        """What a requested shutdown did: an operator reading it after a stop must not
        take a checkpoint that was not written, or writes left behind, for a clean stop.
        ``outstanding``: the changes each destination had not settled when the flush
        timed out (None: it did not)."""
        flush_timeout_s = self._shutdown_flush_timeout_s
        unsettled = _unsettled(outstanding or {})
        if checkpointed is not None and outstanding is None:
            log.info("shutdown requested; checkpointed", sequence_number=checkpointed)
        elif checkpointed is not None:
            log.warning(
                "shutdown requested; checkpointed what every destination has settled, but "
                f"{unsettled} were still outstanding after the flush timeout: the shard's "
                "next owner reads their changes again from this checkpoint",
                sequence_number=checkpointed,
                outstanding=outstanding,
                flush_timeout_s=flush_timeout_s,
            )
        elif outstanding is None and last_checkpoint is None and self._started_at_latest:
            # The lease keeps LATEST: the next start is at the tip of the stream then.
            log.warning(
                "shutdown requested; the shard has no checkpoint yet: it started at LATEST "
                "and no change has been read, so the next start begins again at the stream's "
                f"tip and changes made until then are not replicated ({self._copy_advice()})",
            )
        elif outstanding is None:
            log.info(
                "shutdown requested; not checkpointed: nothing new settled since the last "
                "checkpoint",
                last_checkpoint=last_checkpoint,
            )
        else:
            log.warning(
                f"shutdown requested; not checkpointed: {unsettled} were still outstanding "
                "after the flush timeout and nothing new has settled at every destination; "
                "the shard's next owner reads from the last checkpoint"
                + self._no_checkpoint_yet(last_checkpoint),
                last_checkpoint=last_checkpoint,
                outstanding=outstanding,
                flush_timeout_s=flush_timeout_s,
            )

    # -- the checkpoint and the watermark ---------------------------------------------------

    def _advance(self, checkpointer: Any, intake: ShardIntake) -> None:
        """Checkpoint as far as every destination has settled, once the watermark's
        dead-letter ranges and unread spans are stored: they are held in memory until
        then, and a checkpoint past their changes would lose them with the process (the
        changes are not read again), letting a waiter be told "replicated"."""
        checkpoints = self._checkpoints()
        pipeline = intake.pipeline
        # First the position, then the question: a dead letter at or before the position
        # was recorded in the watermark before its change settled, so before it counted.
        position = pipeline.checkpointable()
        if not checkpoints.moves(position):
            return
        if not pipeline.store_watermark_before_checkpoint(_STORE_WAIT_S):
            self._held += 1
            if self._held in (1, _HELD_WARN_AFTER) or self._held % 20 == 0:
                # The first batch of a first start is often held while the status table
                # answers for the first time: a warning only once the hold lasts.
                report = log.info if self._held < _HELD_WARN_AFTER else log.warning
                report(
                    "checkpoint held: the watermark's dead-letter ranges or unread spans "
                    "are not yet stored in the status table of these destinations; "
                    "replication continues, and the checkpoint moves once they are stored",
                    destinations=pipeline.watermark_unstored(),
                    batches_held=self._held,
                    last_checkpoint=checkpoints.last,
                )
            return
        if self._held:
            log.info("checkpoint no longer held by the watermark", batches_held=self._held)
            self._held = 0
        # The writes the checkpoint passes are counted in the shared metrics first: a
        # process killed after it is not read again, and would take their counts along.
        pipeline.count_applied()
        checkpoints.write(checkpointer, position, required=False)

    def _store_watermark_at_end(self, intake: ShardIntake) -> None:
        """At the shard's end, wait until the watermark's dead-letter ranges and unread
        spans are stored: the checkpoint at SHARD_END ends the shard for good (as it
        waits for a destination that is down, it waits for its status table)."""
        pipeline = intake.pipeline
        since = time.monotonic()
        logged_at: float | None = None
        while not pipeline.store_watermark_before_checkpoint(_END_STORE_WAIT_S, urgent=True):
            if self._lease_lost:
                return
            now = time.monotonic()
            if logged_at is None or now - logged_at >= _END_LOG_EVERY_S:
                logged_at = now
                log.warning(
                    "shard ended; its checkpoint waits until the watermark's dead-letter "
                    "ranges or unread spans are stored in the status table of these "
                    "destinations",
                    destinations=pipeline.watermark_unstored(),
                    waited_s=round(now - since, 1),
                )
            self._pause(_END_RETRY_S)

    # -- housekeeping ---------------------------------------------------------------------

    def stop_waiting(self) -> None:
        """The local runtime is stopping (its RELEASE_SIGNAL): a batch held while the
        buffer is full is answered within a second, without room and checkpointed as far
        as it can be, so that the shutdownRequested the runtime sends next is taken in
        the documented time. Runs in a signal handler: it only sets a flag."""
        intake = self.intake
        if intake is not None:
            intake.pipeline.release_wait()

    def close(self) -> None:
        """Stop the reporter and the writers (the daemon has closed our input)."""
        self._stop.set()
        if self.intake is not None:
            self.intake.pipeline.close()

    def _require_intake(self) -> ShardIntake:
        if self.intake is None:
            raise RuntimeError("the daemon sent an action before initialize")
        return self.intake

    def _checkpoints(self) -> Checkpoints:
        if self.checkpoints is None:
            raise RuntimeError("the daemon sent an action before initialize")
        return self.checkpoints

    @contextlib.contextmanager
    def _waiting_on_writes(self) -> Iterator[None]:
        """While this thread waits on the writes, the report thread reads the lease
        (:meth:`_fence_held_batch`)."""
        self._held_since = time.monotonic()
        try:
            yield
        finally:
            self._held_since = None

    def _taken(self) -> bool:
        """Whether the lease is gone. A method, not the attribute read in place, because
        the report thread's lease read (:meth:`_fence_held_batch`) may set it while this
        thread waits, after this thread last looked (a type checker narrows the attribute
        for good after one look)."""
        return self._lease_lost

    def _drop(self) -> None:
        self._lease_lost = True
        if self.intake is not None:
            self.intake.pipeline.abandon()

    def _die(self, error: BaseException, action: str) -> None:
        log.error(
            "processor failed; exiting so the shard resumes from its last checkpoint",
            action=action,
            error=str(error),
            error_type=type(error).__name__,
            # Expected failures say all in their message; the unforeseen need the trace.
            exc_info=not isinstance(error, OSError | RuntimeError | ReplicatorError),
        )
        self._stop.set()
        exit_code = operator_exit_code(error)
        if exit_code is not None:
            lastwords.leave(str(error), exit_code)
        else:
            lastwords.leave(f"{action} failed: {type(error).__name__}: {error}")
        self._exit(1)

    def _report_loop(self) -> None:
        parent = os.getppid()
        while not self._stop.wait(self._report_interval_s):
            if os.getppid() != parent:
                # The daemon died without closing our input; nothing would read our
                # checkpoints any more, so stop rather than write on unsupervised.
                log.error("the daemon is gone; exiting")
                self._exit(1)
                return
            if self._notes is not None:
                self._notes.heard()
            intake = self.intake
            if intake is None or self._lease_lost:
                continue
            self._fence_held_batch(intake)
            try:
                intake.pipeline.report()
            except Exception as error:  # noqa: BLE001  # reporting must never stop the worker
                log.warning("metrics report failed", error=str(error))

    def _fence_held_batch(self, intake: ShardIntake) -> None:
        """Drop what this processor holds once its lease is found taken while it waits
        on its writes (a batch held for room, the flush at a shard's end): the daemon
        could only say so after that action is answered, and the writes retried
        meanwhile would land over the new owner's."""
        held_since, taker_of = self._held_since, self._lease_taker
        now = time.monotonic()
        if (
            taker_of is None
            or held_since is None
            or now - held_since < FENCE_AFTER_S
            or now - self._lease_read_at < FENCE_EVERY_S
        ):
            return
        self._lease_read_at = now
        shard_id = self._checkpoints().shard_id
        try:
            taker = taker_of(shard_id)
        except Exception as error:  # noqa: BLE001  # the batch stays held, as without the read
            log.warning("could not read the lease of a held batch", error=str(error))
            return
        if taker is None:
            return
        log.warning(
            "lease taken while the processor waited on its writes (a batch held for room, "
            "or the flush at the shard's end); changes not yet written are dropped, not "
            "checkpointed, and the shard is read again from the last checkpoint by its "
            "new owner",
            taker=taker,
            held_s=round(now - held_since, 1),
        )
        self._drop()
        intake.pipeline.release_wait()


def at_the_tip(millis_behind_latest: Any) -> bool:
    """Whether an empty batch shows the reader at the tip of its shard.

    A read can come back empty while records lie further along the shard (AWS: "it might
    take multiple calls to get to a portion of the shard that contains stream records"),
    and the watermark takes an empty read as "every change made before it was received".
    So an empty batch counts only when the reader says it is 0 ms behind, or says nothing:
    DynamoDB Streams has no such measure (the Streams Kinesis Adapter 2.x passes null for
    an empty read, and the local runtime does the same), and there an empty read is all
    there is to go by (docs/watermark.md, Limits). The KCL on Kinesis passes a number: one
    above 0 means records are waiting further along.
    """
    if millis_behind_latest is None:
        return True
    try:
        return int(millis_behind_latest) <= 0
    except (TypeError, ValueError):
        return False  # not a number: nothing shows the reader is at the tip


def operator_exit_code(error: BaseException) -> int | None:
    """The CLI's exit code for a processor failure an operator must fix, else None.

    A destination that refuses every write, and a dead-letter target that cannot store
    a letter (its file's directory replaced by a file, permission denied, a queue
    refused), are not as the job says: exit 3, as the same target is at start-up,
    should the runtime give up on this processor."""
    if isinstance(error, DestinationRefused | DeadLetterUnavailable):
        return EnvironmentProblem.exit_code
    return None


def on_writer_failure(error: BaseException) -> None:
    """A writer thread hit an error no retry fixes: end the process now, checkpoint untouched."""
    what = (
        "a dead letter cannot be stored"
        if isinstance(error, DeadLetterUnavailable)
        else "a destination cannot be written"
    )
    log.error(f"stopping: {what}", error=str(error))
    lastwords.leave(str(error), operator_exit_code(error))
    _hard_exit(1)


# The processor keeps thousands of decoded changes alive (each a few dozen dicts) while
# it allocates fast. With CPython's default first threshold (700 allocations) the cyclic
# collector ran about 70 times a second and kept re-walking the buffered changes: 7-15 %
# of the process's time in the benchmark (gc callbacks, 100 ms destination, saturated),
# 2-3 % with these thresholds. The few cycles (botocore's) still go within 50,000
# allocations, a few hundred changes' worth.
GC_THRESHOLDS = (50_000, 10, 10)


_LINE = msgspec.json.Decoder()

# The actions of the MultiLang protocol of KCL 2 and 3 (amazon-kclpy's v3 contract), the
# daemon's answer to a checkpoint included: the only protocol this processor speaks.
KCL3_ACTIONS = frozenset(
    {"initialize", "processRecords", "leaseLost", "shardEnded", "shutdownRequested", "checkpoint"}
)
_EXPECTED_DAEMON = (
    "the KCL 3 MultiLang protocol: the KCL 3 MultiLangDaemon (kinesis sources) or the "
    "replicator's DynamoDB Streams launcher, as `replicator run` starts them"
)


def read_daemon_lines(process: Any) -> None:
    """Read every line the daemon sends ourselves, ``processRecords`` with msgspec.

    amazon-kclpy decodes a line with ``json.loads(object_hook=...)``, which takes every
    nested object for a message (an unknown field holding one fails the line), and
    hands a line it cannot dispatch (a JSON array, a checkpoint answer nobody asked for)
    to a loop that prints a traceback; a line whose action it does not know fails
    inside its own message classes (a KCL 1.x ``shutdown``). Here the top-level object
    is decoded plainly and unknown fields are ignored; a line that is no KCL 3 message
    raises :class:`ProtocolViolation` (exit 1), another protocol's action
    :class:`UnsupportedDaemon` (exit 4), each reported in one line. msgspec into dicts
    (which :func:`~replicator.records.raw_record_from` reads alike) also costs about a
    twentieth of what amazon-kclpy's parsing does. Checkpoint answers are read by a
    :class:`ProtocolCheckpointer` put in place of amazon-kclpy's. An amazon-kclpy
    without these seams keeps its own parsing throughout.
    """
    from amazon_kclpy import dispatch

    handler = getattr(process, "io_handler", None)
    if (
        handler is None
        or getattr(handler, "load_action", None) is None
        or getattr(process, "checkpointer", None) is None
    ):
        return

    def load_action(line: str) -> Any:
        message = parse_daemon_line(line)
        action = message["action"]
        if action == "checkpoint":
            raise ProtocolViolation(
                "the daemon sent a checkpoint answer while no checkpoint was asked for"
            )
        try:
            return dispatch.message_decode(message)
        except (KeyError, TypeError, ValueError, dispatch.MalformedAction) as error:
            raise ProtocolViolation(
                f"the daemon's {action!r} message could not be read "
                f"({type(error).__name__}: {error}): {_excerpt(line)}"
            ) from None

    handler.load_action = load_action
    process.checkpointer = ProtocolCheckpointer(
        handler.write_action, handler.read_line, parse_daemon_line
    )


def parse_daemon_line(line: str) -> dict[str, Any]:
    """A line of the daemon's as a message: a JSON object whose action is KCL 3's."""
    try:
        message = _LINE.decode(line)
    except msgspec.DecodeError as error:
        raise ProtocolViolation(
            f"the daemon sent a line that is not JSON ({error}): {_excerpt(line)}"
        ) from None
    if type(message) is not dict:
        raise ProtocolViolation(f"the daemon sent JSON that is not an object: {_excerpt(line)}")
    action = message.get("action")
    if not isinstance(action, str):
        raise ProtocolViolation(
            f"the daemon sent a JSON object without an action: {_excerpt(line)}"
        )
    if action not in KCL3_ACTIONS:
        raise unsupported_action(message)
    return message


def _excerpt(line: str) -> str:
    return repr(line.strip()[:200])


def unsupported_action(message: dict[str, Any]) -> UnsupportedDaemon:
    """The error for a line whose action is not KCL 3's, saying whose it is if known."""
    action = message.get("action")
    if action == "shutdown":
        reason = message.get("reason")
        return UnsupportedDaemon(
            f"the daemon sent 'shutdown' (reason {reason!r}), an action of the KCL 1.x "
            "MultiLang protocol (that of the DynamoDB Streams Kinesis Adapter 1.x "
            "StreamsMultiLangDaemon; KCL 1.x is out of support), which is not supported: "
            f"this processor speaks only {_EXPECTED_DAEMON} (runtime: kcl)",
            action,
            reason,
        )
    return UnsupportedDaemon(
        f"the daemon sent an action this processor does not know ({action!r}; "
        f"{', '.join(sorted(KCL3_ACTIONS))} are the ones it knows); it speaks only "
        f"{_EXPECTED_DAEMON} (runtime: kcl)",
        action,
    )


def refuse_daemon(error: UnsupportedDaemon, exit_process: Callable[[int], None]) -> None:
    """One error line naming the action and the daemon expected, then exit 4: nothing
    is answered or checkpointed, so the shard resumes from its last checkpoint under a
    daemon that speaks KCL 3's protocol."""
    fields = {"action": error.action}
    if error.reason is not None:
        fields["reason"] = error.reason
    log.error(
        "the daemon speaks another MultiLang protocol than KCL 3's; exiting",
        **fields,
        error=str(error),
        exit_code=error.exit_code,
    )
    lastwords.leave(str(error), error.exit_code)
    exit_process(error.exit_code)


def _raise_open_file_limit(sockets: int) -> None:
    """Let the shard hold its writes' connections: up to ``writer.max_in_flight`` sockets
    per destination, more than a common soft limit of 1,024 open files, past which every
    open in the process fails (a dead-letter file included). The soft limit is raised to
    the hard one; a warning says so when even that leaves too little room."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still caps the soft one at the kernel's nr_open.
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    needed = sockets + 256  # logs, metrics files, the daemon's pipes, clients
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-file limit is below what the writes in flight may need; lower "
            "writer.max_in_flight or raise the limit (ulimit -n, docker run --ulimit nofile)",
            open_file_limit=soft,
            needed=needed,
        )


def serve_daemon(resolved: Any) -> NoReturn:
    """Run as the daemon's child: the protocol on stdin/stdout, logs on stderr.

    stdout is handed to amazon-kclpy on a descriptor of its own, and both ``sys.stdout``
    and file descriptor 1 are pointed at stderr, so that nothing else in the process (a
    library's print, a custom resolver's child process or C code) can corrupt the
    protocol.
    """
    from amazon_kclpy import kcl

    from replicator import wiring
    from replicator.aws import clients
    from replicator.conflictlog.targets import recorder_for
    from replicator.deadletter import SqsDeadLetters
    from replicator.decode import StreamKeys
    from replicator.entry import ignore_stop_signals

    # Already so from the start under `replicator processor`; here for any other way in.
    ignore_stop_signals()
    moved = logs.moved_off_stdout(sys.stdout)
    protocol_out = sys.stdout if moved is None else moved[0]
    sys.stdout = sys.stderr
    job = resolved.job
    logs.configure(job.logging.level, job.logging.format.value)
    if logs.renders_json():
        sys.stdout = logs.PrintedLines(sys.stderr)
    logs.bind_everywhere(job=str(resolved.path), task=resolved.task_name, pid=os.getpid())
    _raise_open_file_limit(job.writer.max_in_flight * len(job.destinations))
    metrics = Metrics()
    dead_letters = wiring.dead_letter_target(resolved)
    if isinstance(dead_letters, SqsDeadLetters):
        dead_letters.message_limit()  # the queue's own, read at start
    conflict_log = recorder_for(resolved, metrics)
    # Learned from the records of the source stream, for every shard this process reads.
    stream_keys = StreamKeys()

    def build(shard_id: str) -> ShardIntake:
        return wiring.shard_intake(
            resolved,
            shard_id,
            metrics,
            dead_letters,
            on_fatal=on_writer_failure,
            conflict_log=conflict_log,
            stream_keys=stream_keys,
        )

    notes = AnswerNotes.from_environment()
    if notes is not None:
        lastwords.tell_also(notes.last_words)
    worker_id = worker_id_from_environment()
    fence = None
    if worker_id is not None:
        logs.bind_everywhere(worker_id=worker_id)
        # Short waits, no SDK retries: the read runs on the report thread, whose beat
        # /healthz listens for (awaited.py); a read that fails is tried again in 5 s.
        fence = LeaseFence(
            lambda: clients.dynamodb(
                job.source, connect_timeout=2.0, read_timeout=2.0, sdk_retries=False
            ),
            resolved.lease_table,
            worker_id,
        )
    processor = ReplicationProcessor(
        build,
        metrics,
        shutdown_flush_timeout_s=resolved.job.kcl.shutdown_flush_ms / 1000,
        notes=notes,
        lease_taker=None if fence is None else fence.taker,
    )
    # Before the protocol starts: the local runtime signals only a processor that has
    # answered initialize.
    signal.signal(RELEASE_SIGNAL, lambda _signum, _frame: processor.stop_waiting())
    gc.set_threshold(*GC_THRESHOLDS)
    process = kcl.KCLProcess(
        processor, input_file=sys.stdin, output_file=protocol_out, error_file=sys.stderr
    )
    read_daemon_lines(process)
    try:
        process.run()
    except UnsupportedDaemon as error:
        refuse_daemon(error, _hard_exit)
    except (BrokenPipeError, ConnectionResetError) as error:
        # Our output closed under the status we were writing: the runtime was killed.
        log.warning("the daemon went away; exiting", error=str(error))
        _hard_exit(1)
    except ProtocolViolation as error:
        log.error(
            "the daemon sent what the protocol never does; exiting so the shard resumes "
            "from its last checkpoint",
            error=str(error),
        )
        lastwords.leave(str(error))
        _hard_exit(1)
    except Exception as error:  # noqa: BLE001  # a line amazon-kclpy cannot read: one JSON line
        log.error(
            "the daemon sent a line the processor cannot read; exiting so the shard "
            "resumes from its last checkpoint",
            error=str(error),
            error_type=type(error).__name__,
        )
        lastwords.leave(f"the daemon's line could not be read: {type(error).__name__}: {error}")
        _hard_exit(1)
    if processor.told_to_stop and notes is not None:
        # Its shard is finished here, whatever happens while this process closes (a
        # write still in flight failing, the conflict log draining): its exit is no death
        # for /healthz to name (awaited.py).
        notes.ended()
    processor.close()
    if conflict_log is not None:
        conflict_log.close()
    if processor.told_to_stop:
        log.info("daemon closed the protocol; processor exiting")
    else:
        # Our input ended with no stop told: the runtime or daemon died (killed, or
        # crashed) between two actions. The shard resumes from its last checkpoint
        # wherever it runs next, as when it goes while a checkpoint waits (DaemonGone).
        log.warning(
            "the daemon went away; exiting",
            error="its input ended before any shutdownRequested, leaseLost or shardEnded",
        )
    # Now, without waiting for writes still in flight (a destination that does not
    # answer): the interpreter's exit would join their threads, up to a read timeout and
    # its retries, and the runtime would kill the child after its stop. Nothing they
    # settle counts any more: every checkpoint and log line is written.
    if isinstance(sys.stdout, logs.PrintedLines):  # any thread's line printed unended
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush_all()
    for stream in (protocol_out, sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)


def _unsettled(outstanding: dict[str, int]) -> str:
    """What a stop's flush left unsettled, in words: writes (to destinations) and
    conflict-log entries being stored, which hold their changes' records open too."""
    entries = CONFLICT_LOG_WAIT in outstanding
    writes = len(outstanding) > entries
    if entries and writes:
        return "writes and conflict-log entries"
    return "conflict-log entries" if entries else "writes"
