"""The record processor the MultiLangDaemon runs, one process per shard.

It follows amazon-kclpy's v3 contract (initialize, process_records, lease_lost,
shard_ended, shutdown_requested) and drives the pipeline:

    stream record -> decode -> filters -> buffer -> conflict rules -> writers -> checkpoint

``process_records`` hands the batch to the pipeline and returns as soon as the buffer
has room, so writes overlap with the daemon's next read; each call then checkpoints as
far as every destination has applied or dead-lettered. amazon-kclpy catches exceptions
from a processor and carries on, which would let the daemon read past changes that
were never applied; so any unexpected error here ends the process with a non-zero
status instead, and the shard resumes from the last checkpoint.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog

from replicator import logs
from replicator.checkpoint import Checkpoints
from replicator.deadletter import ALL_DESTINATIONS, DeadLetter, DeadLetterTarget
from replicator.decode import decode
from replicator.exceptions import LeaseLost, RecordDecodeError
from replicator.filters import ChangeFilter, Route
from replicator.highwater import HighWater
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.records import raw_record_from

log = structlog.get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class ShardWork:
    """What one shard's processor works with."""

    pipeline: ShardPipeline
    change_filter: ChangeFilter
    dead_letters: DeadLetterTarget
    task_name: str
    shard_id: str
    # Active-active: turns local writes that rank below what the source held into
    # corrections (replicator/highwater.py).
    high_water: HighWater | None = None


def _hard_exit(status: int) -> None:
    sys.stderr.flush()
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
        except Exception as error:  # noqa: BLE001  # anything unforeseen ends the process
            self._die(error, method.__name__)
            return None

    return guarded  # type: ignore[return-value]


class ReplicationProcessor:
    """amazon-kclpy v3 record processor (``version = 3`` selects that contract)."""

    version = 3

    def __init__(
        self,
        build: Callable[[str], ShardWork],
        metrics: Metrics,
        exit_process: Callable[[int], None] = _hard_exit,
        report_interval_s: float = 1.0,
        shutdown_flush_timeout_s: float = 20.0,
    ) -> None:
        self._build = build
        self.metrics = metrics
        self._exit = exit_process
        self._report_interval_s = report_interval_s
        self._shutdown_flush_timeout_s = shutdown_flush_timeout_s
        self.work: ShardWork | None = None
        self.checkpoints: Checkpoints | None = None
        self._lease_lost = False
        self._stop = threading.Event()
        self._reporter: threading.Thread | None = None
        self._answered_at = time.time()  # when the last action finished (see process_records)

    # -- the five actions -----------------------------------------------------------------

    @_fail_fast
    def initialize(self, initialize_input: Any) -> None:
        shard_id = str(initialize_input.shard_id)
        logs.bind_everywhere(shard=shard_id)
        self.work = self._build(shard_id)
        self.checkpoints = Checkpoints(self.metrics, shard_id)
        start = initialize_input.sequence_number
        self.checkpoints.last = start if isinstance(start, str) and start.isdigit() else None
        log.info(
            "processor started",
            from_sequence_number=initialize_input.sequence_number,
            destinations=list(self.work.pipeline.writers),
        )
        self._reporter = threading.Thread(target=self._report_loop, name="report", daemon=True)
        self._reporter.start()
        self.work.pipeline.begin_watermark(resumed=self.checkpoints.last is not None)
        self._answered_at = time.time()

    @_fail_fast
    def process_records(self, process_records_input: Any) -> None:
        work = self._require_work()
        if self._lease_lost:
            return
        received_at = time.time()
        records = process_records_input.records
        millis_behind = int(process_records_input.millis_behind_latest or 0)
        self.metrics.millis_behind_latest.labels(work.shard_id).set(millis_behind)
        pipeline = work.pipeline
        if not records:
            # The local runtime reads again only after this process answered the previous
            # action, so this empty read started after ``_answered_at``.
            pipeline.note_empty_read(previous_answer_at=self._answered_at, received_at=received_at)
        last_sequence_number: str | None = None
        for record in records:
            raw = raw_record_from(record)
            try:
                change = decode(raw)
            except RecordDecodeError as error:
                self._dead_letter_undecodable(work, raw, str(error))
                if isinstance(raw.get("sequenceNumber"), str) and raw["sequenceNumber"].isdigit():
                    pipeline.done(raw["sequenceNumber"], _created_us(raw))
                    last_sequence_number = raw["sequenceNumber"]
                continue
            last_sequence_number = change.sequence_number
            self.metrics.records_received.labels(change.event.value).inc()
            route = work.change_filter.route(change)
            replaces_older = route is Route.LOOP_SKIPPED
            if work.high_water is not None:
                change, route, replaces_older = work.high_water.route(change, route)
            if route is Route.REPLICATE:
                pipeline.submit(change)
                continue
            pipeline.skip(change, replaces_older=replaces_older)
            for label in pipeline.writers:
                self.metrics.writes.labels(label, change.event.op, route.value).inc()
        pipeline.dispatch()
        if last_sequence_number is not None:
            pipeline.batch_received(last_sequence_number, millis_behind)
            self.metrics.last_record.labels(work.shard_id).set(time.time())
        else:
            pipeline.note_millis_behind(millis_behind)
        pipeline.wait_for_room()
        self._checkpoints().advance(process_records_input.checkpointer, pipeline.checkpointable())
        self.metrics.squashed.inc(self._take_squashed(pipeline))
        self._answered_at = time.time()

    @_fail_fast
    def lease_lost(self, lease_lost_input: Any) -> None:
        log.warning("lease lost; another worker continues from the last checkpoint")
        self._drop()

    @_fail_fast
    def shard_ended(self, shard_ended_input: Any) -> None:
        work = self._require_work()
        work.pipeline.flush()
        # Before the checkpoint: once it is written the shard is never read again.
        work.pipeline.end_watermark()
        self._checkpoints().write(shard_ended_input.checkpointer, None, required=True)
        log.info("shard ended; checkpointed at its end")

    @_fail_fast
    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        work = self._require_work()
        if self._lease_lost:
            return
        flushed = work.pipeline.flush(timeout=self._shutdown_flush_timeout_s)
        work.pipeline.publish_watermark()
        position = work.pipeline.checkpointable()
        if position is not None and position != self._checkpoints().last:
            self._checkpoints().write(
                shutdown_requested_input.checkpointer, position, required=True
            )
        log.info(
            "shutdown requested; checkpointed",
            sequence_number=position,
            all_applied=flushed,
        )

    # -- housekeeping ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the reporter and the writers (the daemon has closed our input)."""
        self._stop.set()
        if self.work is not None:
            self.work.pipeline.close()

    def _require_work(self) -> ShardWork:
        if self.work is None:
            raise RuntimeError("the daemon sent an action before initialize")
        return self.work

    def _checkpoints(self) -> Checkpoints:
        if self.checkpoints is None:
            raise RuntimeError("the daemon sent an action before initialize")
        return self.checkpoints

    def _drop(self) -> None:
        self._lease_lost = True
        if self.work is not None:
            self.work.pipeline.abandon()

    def _die(self, error: BaseException, action: str) -> None:
        log.error(
            "processor failed; exiting so the shard resumes from its last checkpoint",
            action=action,
            error=str(error),
            error_type=type(error).__name__,
            exc_info=not isinstance(error, OSError | RuntimeError),
        )
        self._stop.set()
        self._exit(1)

    def _dead_letter_undecodable(self, work: ShardWork, raw: Any, reason: str) -> None:
        work.dead_letters.put(
            DeadLetter(
                record=raw,
                destination=ALL_DESTINATIONS,
                reason="undecodable",
                error=reason,
                task_name=work.task_name,
                shard_id=work.shard_id,
            )
        )
        self.metrics.records_received.labels("undecodable").inc()
        self.metrics.dead_letters.labels(ALL_DESTINATIONS, "undecodable").inc()
        log.warning(
            "record could not be decoded; dead-lettered",
            reason=reason,
            target=work.dead_letters.description,
        )

    _squashed_seen = 0

    def _take_squashed(self, pipeline: ShardPipeline) -> int:
        total = pipeline.buffer.squashed
        new = total - self._squashed_seen
        self._squashed_seen = total
        return new

    def _report_loop(self) -> None:
        parent = os.getppid()
        while not self._stop.wait(self._report_interval_s):
            if os.getppid() != parent:
                # The daemon died without closing our input; nothing would read our
                # checkpoints any more, so stop rather than write on unsupervised.
                log.error("the daemon is gone; exiting")
                self._exit(1)
                return
            work = self.work
            if work is None or self._lease_lost:
                continue
            try:
                work.pipeline.report()
            except Exception as error:  # noqa: BLE001  # reporting must never stop the worker
                log.warning("metrics report failed", error=str(error))


def _created_us(raw: Any) -> int | None:
    """An undecodable record's creation time: the adapter's approximateArrivalTimestamp (ms)."""
    arrival = raw.get("approximateArrivalTimestamp")
    if isinstance(arrival, int | float) and not isinstance(arrival, bool) and arrival > 0:
        return int(arrival) * 1000
    return None


def on_writer_failure(error: BaseException) -> None:
    """A writer thread hit an error no retry fixes: end the process now, checkpoint untouched."""
    log.error("stopping: a destination cannot be written", error=str(error))
    _hard_exit(1)


# The processor keeps thousands of decoded changes alive (each a few dozen dicts) while
# it allocates fast. With CPython's default first threshold (700 allocations) the cyclic
# collector ran about 70 times a second and kept re-walking the buffered changes: 7-15 %
# of the process's time in the benchmark (gc callbacks, 100 ms destination, saturated),
# 2-3 % with these thresholds. The few cycles (botocore's) still go within 50,000
# allocations, a few hundred changes' worth.
GC_THRESHOLDS = (50_000, 10, 10)


def serve_daemon(resolved: Any) -> int:
    """Run as the daemon's child: the protocol on stdin/stdout, logs on stderr.

    stdout is handed to amazon-kclpy and then pointed at stderr, so that nothing else in
    the process (a library's print, a stray warning) can corrupt the protocol.
    """
    from amazon_kclpy import kcl

    from replicator import wiring
    from replicator.conflictlog.targets import recorder_for

    protocol_out = sys.stdout
    sys.stdout = sys.stderr
    job = resolved.job
    logs.configure(job.logging.level, job.logging.format.value)
    logs.bind_everywhere(job=str(resolved.path), task=resolved.task_name, pid=os.getpid())
    metrics = Metrics()
    dead_letters = wiring.dead_letter_target(resolved)
    change_filter = wiring.change_filter(resolved)
    conflict_log = recorder_for(resolved, metrics)

    def build(shard_id: str) -> ShardWork:
        pipeline = wiring.shard_pipeline(
            resolved,
            shard_id,
            metrics,
            dead_letters,
            on_fatal=on_writer_failure,
            conflict_log=conflict_log,
        )
        return ShardWork(
            pipeline,
            change_filter,
            dead_letters,
            resolved.task_name,
            shard_id,
            high_water=wiring.high_water(resolved, pipeline),
        )

    processor = ReplicationProcessor(build, metrics)
    gc.set_threshold(*GC_THRESHOLDS)
    kcl.KCLProcess(
        processor, input_file=sys.stdin, output_file=protocol_out, error_file=sys.stderr
    ).run()
    processor.close()
    if conflict_log is not None:
        conflict_log.close()
    log.info("daemon closed the protocol; processor exiting")
    return 0
