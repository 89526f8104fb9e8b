"""The local runtime: one host, one worker per task name, the same processor as the KCL.

It does for a DynamoDB stream what the MultiLangDaemon does, minus balancing leases
between hosts: it lists the stream's shards, starts a processor child per open shard
(parents finished before children), keeps the shards' leases in the task-named lease
table in the KCL's schema, renews them, and stops cleanly on SIGTERM, SIGINT or SIGHUP:
``shutdownRequested`` to every child, final checkpoints, leases released, exit 0. A
child holding a batch because its buffer is full (backpressure) is first told to answer
it (``RELEASE_SIGNAL``), so that it takes its ``shutdownRequested`` in time. A child that
fails during that stop (rather than running out of time while it waits for writes in
flight) makes the stop a failure: the exit code that failure would give without a stop;
so does a shard still stopping at ``STOP_DEADLINE_S`` (its child is killed): exit 1.

It refuses to start while another worker holds the task's leases: it watches their
counters for the failover time, as the KCL does, and takes them over (whatever the
other worker's id) only if they stood still, each take conditional on the counter it
watched. A lease under its own worker id is another worker's too unless its holder
(:mod:`replicator.shards.holder`) is a process of this host: a live one refuses the
start at once, one that is gone (a crash) leaves the lease to be taken at once. A
worker that was hung meanwhile finds its lease gone on its next renewal or before it
hands its processor another batch, and stops with exit 5. Multi-host operation is the
KCL runtime's job.

A lease that records a stream other than the one read (the source table was deleted and
created again, or the task name given to another table: a shard of the new stream may
have the earlier one's id) is not resumed: its take resets it, and the shard is read
from TRIM_HORIZON.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from replicator import entry, scratch, wiring
from replicator.aws import clients, tables
from replicator.aws.backoff import Backoff
from replicator.aws.errors import ErrorKind, classify, error_code
from replicator.config.model import InitialPosition, ResolvedJob
from replicator.exceptions import (
    ChildFailed,
    EnvironmentProblem,
    LeaseHeld,
    LeaseLost,
    OperatorError,
    ReplicatorError,
)
from replicator.metrics import health, multiprocess
from replicator.metrics.server import MetricsServer, ProcessSamples
from replicator.runtime import hostlock, preflight, supervisor
from replicator.runtime.jobcopy import JOB_FILE_ENV, write_job_copy
from replicator.runtime.local.protocol import CheckpointHandler, ProcessorChild
from replicator.runtime.local.shard_progress import ShardProgress
from replicator.runtime.local.shard_settings import ShardSettings, stop_answer_limit_s
from replicator.runtime.local.shard_worker import ShardWorker
from replicator.shards import ownership
from replicator.shards.fence import WORKER_ID_ENV
from replicator.shards.holder import Standing
from replicator.shards.leases import LATEST, SHARD_END, TRIM_HORIZON, Lease, LeaseTable
from replicator.shards.stream import Shard, list_shards
from replicator.watermark import spans
from replicator.watermark.history import SourceHistory, before_stream_through, stream_created_us
from replicator.watermark.spans import UnreadSpan, passed_over_advice
from replicator.watermark.table import StatusTable

log = structlog.get_logger(__name__)

# A processRecords out this long raises its shard's lag (LocalRuntime.lag_floors).
LAG_FLOOR_AFTER_S = 1.0

SHARD_SYNC_INTERVAL_S = 10.0
# A processor child that fails more often than this in 300 s stops the runtime, as does
# one that stops this many times and once more, in a row and however far apart, with exit
# code 3 (a destination refusing every write) and no recovery between (a write settled
# at that destination, or every record delivered checkpointed).
PROCESSOR_RESTART_LIMIT = 5
# How long a stop waits for the shard workers (a processor's shutdownRequested, 27 s at
# most with the largest kcl.shutdown_flush_ms, the batch it may be answering, and the
# lease's release) before their processors are killed, and the stop is not clean.
STOP_DEADLINE_S = 35.0
# A shard sync that failed on a transient AWS error is tried again this much later.
_HOUSEKEEPING_RETRY_S = 2.0
# Claiming the lease table at start, throttled or failing with 5xx: retried with backoff
# (capped) for as long as it takes, before any shard starts.
_CLAIM_BACKOFF = Backoff(base_s=0.2, cap_s=20.0)
# The housekeeping calls made to the source's stream; every other one is to the lease table.
_STREAM_OPERATIONS = frozenset({"DescribeStream", "ListShards", "GetShardIterator", "GetRecords"})


def processor_command(config_path: Path) -> list[str]:
    """The command that runs the record processor for this job (local and KCL runtimes)."""
    return [sys.executable, "-m", "replicator", "processor", "--config", str(config_path)]


def startable(shards: list[Shard], ended: set[str], running: set[str]) -> list[str]:
    """Shards to start now: not ended, not running, and whose parent (if the stream still
    lists it) has ended, so that an item's older changes are always applied first."""
    listed = {shard.shard_id for shard in shards}
    return [
        shard.shard_id
        for shard in shards
        if shard.shard_id not in ended
        and shard.shard_id not in running
        and not (shard.parent_id and shard.parent_id in listed and shard.parent_id not in ended)
    ]


class LocalRuntime:
    def __init__(
        self,
        resolved: ResolvedJob,
        *,
        worker_id: str | None = None,
        shard_sync_interval_s: float = SHARD_SYNC_INTERVAL_S,
        restart_limit: int = PROCESSOR_RESTART_LIMIT,
        owner_check_interval_s: float = ownership.CHECK_INTERVAL_S,
        child_stderr: int | None = None,
    ) -> None:
        """``child_stderr``: a file descriptor the processors write their log lines to
        (None: this process's stderr); the demo reads them through its progress display."""
        self.resolved = resolved
        self.child_stderr = child_stderr
        self.job = resolved.job
        self.worker_id = worker_id or self.job.kcl.worker_id or socket.gethostname()
        self.shard_sync_interval_s = shard_sync_interval_s
        self.restart_limit = restart_limit
        self.owner_check_interval_s = owner_check_interval_s
        # How the lease table's owner tag was last found (shards/ownership.py): claimed at
        # start, read again while running, as the KCL runtime does; UNCHECKED (the tag
        # cannot be read here) was warned of once and is not asked again.
        self._owner_claim = ownership.Claim.ABSENT
        self.stopping = threading.Event()
        self.started = threading.Event()
        self.workers: dict[str, ShardWorker] = {}
        self.ended: set[str] = set()
        self._earlier_recorded = False  # what leases of an earlier stream left unread
        # Restarts of the workers already gone (their shard ended, or they failed): the
        # restarts counter is theirs and the running ones', and never goes down.
        self._retired_restarts = 0
        self._restarts_lock = threading.Lock()
        self.failure: BaseException | None = None
        self.metrics_port: int | None = None
        self.metrics_server: MetricsServer | None = None  # while running, if metrics are on
        self._process_samples: ProcessSamples | None = None  # while running
        self._samples: multiprocess.SamplesDirectory | None = None
        self._job_copy: Path | None = None
        source = self.job.source
        self._ddb = clients.dynamodb(source)
        self._streams = clients.dynamodb_streams(source)
        self.leases = LeaseTable(
            self._ddb,
            resolved.lease_table,
            self.worker_id,
            tables.where(source.region, source.endpoint_url, source.role_arn),
        )
        self.stream_arn = ""
        self._checked: preflight.SourceInfo | None = None
        # The host lock, then the metrics port: taken before the preflight creates
        # anything, held until run ends.
        self._lock: hostlock.HostLock | None = None
        self._metrics = supervisor.MetricsHold(
            resolved, self.problems, [_RuntimeCollector(self)], lag_floors=self.lag_floors
        )
        # Leases of another worker (or of our worker id, held elsewhere) that stood still
        # for the failover time at start-up: shard id -> (owner, counter) as watched;
        # _start takes them over if unchanged.
        self._expired: dict[str, tuple[str | None, int]] = {}
        # Shards whose lease this run has taken (see _start: not an earlier run's start).
        self._taken_here: set[str] = set()
        # When a stop signal asked for the stop: the shards begin stopping then (they
        # watch ``stopping``), and the stop deadline counts from then, not from when a
        # housekeeping call in flight (up to the SDK's timeouts) lets the loop see it.
        self._stop_asked_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
        self.stopping.set()

    def run_preflight(self, stopped: Callable[[], bool] | None = None) -> None:
        """The preflight checks (``run`` makes them if not made yet); ``stopped`` (by
        default ``stop`` having been called) is asked between steps, and
        :class:`preflight.Stopped` raised when it says yes.

        The host lock, then the metrics port, are taken before the preflight creates what
        the job lacks (the tombstone and conflict-log tables, the directories of its
        files), and held until ``run`` ends: a start the lock refuses (exit 5) or whose
        port is in use (exit 3) creates nothing. A preflight that fails or is stopped
        lets both go."""
        try:
            self._checked = preflight.check(
                self.resolved, stopped or self.stopping.is_set, self._hold
            )
        except BaseException:
            self._let_go()
            raise

    def run(self) -> int:
        try:
            if not self._ready():
                log.info("local runtime stopped before it started")
                return 0
            self._run_holding_lock()
        finally:
            self._let_go()
        if self.failure is not None:
            if isinstance(self.failure, OperatorError):
                raise self.failure
            log.error("local runtime stopped on an error", error=str(self.failure))
            return 1
        if self._said_what_was_left():
            return 0
        log.info("local runtime stopped cleanly")
        return 0

    def _said_what_was_left(self) -> bool:
        """The last line of a stop that left records read past a shard's checkpoint, in
        place of "stopped cleanly": nothing passed them, but an operator must not take
        the stop for one that left nothing to do, nor miss a shard that has no
        checkpoint yet (LATEST), whose next start passes them over."""
        left = {
            worker.shard_id: worker.left_at_stop
            for worker in self.workers.values()
            if worker.left_at_stop is not None
        }
        if not left:
            return False
        shards = {
            shard: {"checkpoint": checkpoint, "read_to": read_to}
            for shard, (checkpoint, read_to) in left.items()
        }
        at_latest = sorted(shard for shard, (checkpoint, _) in left.items() if checkpoint == LATEST)
        if at_latest:
            log.warning(
                f"local runtime stopped; {len(at_latest)} shard(s) have no checkpoint yet "
                "(they started at LATEST) and stopped with changes read and not applied at "
                "every destination: their next start begins at the stream's tip, so those "
                "changes are not replicated "
                f"({passed_over_advice(self.resolved.publishes_watermark)}, then "
                "`replicator verify`)",
                shards=shards,
                not_replicated=at_latest,
            )
            return True
        log.warning(
            f"local runtime stopped; {len(left)} shard(s) stopped with changes read past "
            "their checkpoint (not yet applied at every destination, or not checkpointed): "
            "whoever takes each shard next reads them again from its checkpoint",
            shards=shards,
        )
        return True

    def _ready(self) -> bool:
        """Whether to start: the preflight made (the host lock and the metrics port
        held), no stop asked for."""
        # A kinesis source under runtime local was refused when the job was loaded.
        if self.stopping.is_set():
            return False
        if self._checked is None:
            try:
                self.run_preflight()
            except preflight.Stopped:
                return False
        assert self._checked is not None and self._lock is not None
        self.stream_arn = self._checked.stream_arn
        self.leases.stream = self.stream_arn
        return not self.stopping.is_set()

    def _run_holding_lock(self) -> None:
        served = self._metrics.bind()  # bound by the preflight, with the host lock held
        # Removed on the way out; one a run killed outright left is removed by the next.
        with contextlib.closing(scratch.make("replicator-local-")) as workdir:
            self._job_copy = write_job_copy(self.resolved, workdir.path)
            self._samples = served.samples
            self.metrics_server = served.server
            self._process_samples = served.read
            try:
                self.metrics_port = served.start()
                self.leases.ensure_exists()
                self._claim_lease_table(at_start=True)
                self._claim_leases_held_elsewhere()
                log.info(
                    "local runtime started",
                    worker_id=self.worker_id,
                    lease_table=self.resolved.lease_table,
                    stream=self.stream_arn,
                )
                self.started.set()
                self._loop()
            finally:
                self._shut_down()

    def _claim_lease_table(self, *, at_start: bool = False) -> None:
        """Claim the lease table for the job's source, or find it claimed. Another job's
        claim (a KCL job's leases say nothing of their stream, and would be resumed as this
        job's) raises EnvironmentProblem: exit 3 at start, the run stopped later.

        At start no lease is read or taken until AWS has answered: throttling and 5xx (a
        fleet restarting at once) are waited out with backoff, another error is exit 3.
        While running, a claim AWS did not answer is made at a later turn."""
        identity = ownership.source_identity(self.resolved, self.stream_arn)
        attempt = 0
        while True:
            try:
                found = ownership.claim(self.resolved, identity, self._ddb)
            except (ClientError, BotoCoreError) as error:
                if not at_start:
                    log.warning(
                        "could not read the lease table's owner tag; asked again later",
                        lease_table=self.resolved.lease_table,
                        error=str(error),
                    )
                    return
                if classify(error) not in (ErrorKind.THROTTLED, ErrorKind.RETRY):
                    source = self.job.source
                    raise preflight.explain(
                        error,
                        f"claiming the lease table {self.resolved.lease_table} for the job's "
                        "source (its owner tag)",
                        tables.where(source.region, source.endpoint_url, source.role_arn),
                    ) from None
                delay = _CLAIM_BACKOFF.delay(attempt)
                attempt += 1
                log.warning(
                    "could not claim the lease table at start; no shard starts until it is",
                    lease_table=self.resolved.lease_table,
                    error=str(error),
                    delay_s=round(delay, 2),
                )
                if self.stopping.wait(delay):
                    return
                continue
            self._owner_claim = found
            return

    def _recheck_owner(self) -> None:
        try:
            self._claim_lease_table()
        except EnvironmentProblem as problem:
            log.error("the lease table is another job's; stopping")
            self.failure = problem
            self.stopping.set()

    def _loop(self) -> None:
        last_sync = 0.0
        last_renew = time.monotonic()
        last_owner_check = time.monotonic()
        renew_every = self.job.kcl.failover_time_ms / 3000
        while not self.stopping.is_set():
            now = time.monotonic()
            owner_every = (
                self.owner_check_interval_s
                if self._owner_claim is ownership.Claim.CLAIMED
                else min(ownership.CLAIM_INTERVAL_S, self.owner_check_interval_s)
            )
            unchecked = self._owner_claim is ownership.Claim.UNCHECKED
            if not unchecked and now - last_owner_check >= owner_every:
                last_owner_check = now
                self._recheck_owner()
                if self.stopping.is_set():
                    break
            if now - last_sync >= self.shard_sync_interval_s:
                last_sync = now
                if not self._tolerating_outages(self._sync_shards, "syncing shards and leases"):
                    last_sync = now - self.shard_sync_interval_s + _HOUSEKEEPING_RETRY_S
            if now - last_renew >= renew_every:
                self._renew()
                last_renew = now
            for shard_id, worker in list(self.workers.items()):
                if worker.is_alive():
                    continue
                self._retire(shard_id)
                if worker.error is not None:
                    self.failure = _failure_of(worker)
                    self.stopping.set()
                elif worker.progress.ended:
                    self.ended.add(shard_id)
                    last_sync = 0.0  # its children may start now
            self.stopping.wait(0.5)

    def _shut_down(self) -> None:
        self.stopping.set()
        for worker in list(self.workers.values()):
            # A processor holding a batch while its buffer is full answers it now, and
            # takes its shutdownRequested next.
            worker.release_processor()
        deadline = (self._stop_asked_at or time.monotonic()) + STOP_DEADLINE_S
        for worker in list(self.workers.values()):
            worker.join(timeout=max(0.1, deadline - time.monotonic()))
        for worker in self.workers.values():
            if worker.is_alive():
                # Its shutdown never ended: nothing says what was checkpointed, and the
                # processor is killed. Not a clean stop: exit 1, as an unexpected failure.
                killed = worker.child is not None
                log.warning(
                    "shard did not stop in time; killing its processor"
                    if killed
                    else "shard did not stop in time",
                    shard=worker.shard_id,
                )
                if worker.child is not None:
                    worker.child.kill()
                if self.failure is None:
                    self.failure = ChildFailed(
                        f"shard {worker.shard_id} did not stop within {STOP_DEADLINE_S:g}s"
                        + ("; its processor was killed" if killed else "")
                        + ": it resumes from its last checkpoint"
                    )
            elif self.failure is None and worker.stop_failure is not None:
                # A processor that failed during the stop: not a clean stop (exit 0
                # would tell systemd or Kubernetes that all is well).
                self.failure = worker.stop_failure
            elif self.failure is None and worker.error is not None:
                # A worker that failed as the stop began (the loop that reports failures
                # has ended): the same failure as without a stop.
                self.failure = _failure_of(worker)

    # -- shards and leases ----------------------------------------------------------------

    def _sync_shards(self) -> None:
        try:
            _, shards = list_shards(self._streams, self.stream_arn)
        except (ClientError, BotoCoreError):
            # A stream disabled may fail to be described (moto answers 500): the table
            # says why, where the error alone would be retried for ever.
            with contextlib.suppress(ClientError, BotoCoreError):
                if self._stream_replaced():
                    return
            raise
        if self._stream_replaced():
            return
        leases = self.leases.all()
        fresh_job = not leases
        for shard in shards:
            lease = leases.get(shard.shard_id) or self._create_lease(shard, fresh_job)
            if lease is not None:
                leases[shard.shard_id] = lease
                # One of an earlier stream ended a shard of that stream, not this one.
                if lease.ended and not lease.of_earlier_stream(self.stream_arn):
                    self.ended.add(shard.shard_id)
        listed = {shard.shard_id: shard for shard in shards}
        starting = [
            shard_id
            for shard_id in startable(shards, self.ended, set(self.workers))
            if shard_id in leases
        ]
        if starting:
            self._record_earlier_stream(leases, starting[0], set(listed))
        for shard_id in starting:
            self._start(leases[shard_id], listed[shard_id])

    def _stream_replaced(self) -> bool:
        """Whether the source table no longer has the stream read (stopping the run,
        as for a stream that is gone: what was applied is checkpointed)."""
        replaced = preflight.stream_replaced(self.resolved, self._ddb, self.stream_arn)
        if replaced is None:
            return False
        log.error("the source table's stream was replaced or disabled", stream=self.stream_arn)
        self.failure = EnvironmentProblem(replaced)
        self.stopping.set()
        return True

    def _create_lease(self, shard: Shard, fresh_job: bool) -> Lease | None:
        position = TRIM_HORIZON
        if fresh_job and self.job.kcl.initial_position is InitialPosition.LATEST:
            position = SHARD_END if shard.closed else LATEST
        parents = [shard.parent_id] if shard.parent_id else []
        created = self.leases.create(shard.shard_id, position, parents)
        return created or self.leases.get(shard.shard_id)

    def _start(self, lease: Lease, shard: Shard) -> None:
        expired = self._expired.pop(lease.shard_id, None)
        # Read before the take below counts it: a lease another run took before this one
        # (a take of this run's, whose shard did not start, is no earlier start).
        taken_before = lease.counter > 0 and lease.shard_id not in self._taken_here
        standing = self._standing(lease)
        if standing is Standing.RUNNING:
            raise self._running_here(lease)
        if standing is Standing.ELSEWHERE:
            if expired != (lease.owner, lease.counter):
                raise LeaseHeld(
                    f"shard {lease.shard_id} of task {self.resolved.task_name} is held by "
                    f"worker {lease.owner}{self._where_held(lease)}; the local runtime runs "
                    "one worker per task name (use runtime: kcl to share shards between hosts)"
                )
            log.warning(
                "taking over an expired lease",
                shard=lease.shard_id,
                previous_owner=lease.owner,
                previous_holder=str(lease.holder) if lease.holder else None,
                counter=lease.counter,
            )
        earlier = lease.stream if lease.of_earlier_stream(self.stream_arn) else None
        try:
            # Conditional on the counter as read (for a lease taken over: as watched
            # standing still for the failover time).
            if earlier is None:
                self.leases.take(lease)
            else:
                self.leases.take_anew(lease, [shard.parent_id] if shard.parent_id else [])
        except LeaseLost as error:
            # Another worker took the lease between our read of it and our take: two
            # workers started the task at once.
            raise LeaseHeld(
                f"shard {lease.shard_id} of task {self.resolved.task_name} was taken by "
                f"another worker while this one started ({error}); the local runtime runs "
                "one worker per task name (use runtime: kcl to share shards between hosts)"
            ) from None
        if earlier is not None:
            log.warning(
                "the shard's lease is of an earlier stream (the source table was created "
                "again, or the task name was used for another table): its checkpoint is "
                "not resumed, the shard is read from TRIM_HORIZON",
                shard=lease.shard_id,
                lease_stream=earlier,
                stream=self.stream_arn,
            )
        settings = ShardSettings(
            stream_arn=self.stream_arn,
            max_records=self.job.kcl.max_records,
            idle_s=self.job.kcl.idle_time_between_reads_ms / 1000,
            on_trimmed=self.job.source.on_trimmed_data,
            restart_limit=self.restart_limit,
            record_unread=self._record_unread if self.resolved.publishes_watermark else None,
            lease_expiry_s=self.job.kcl.failover_time_ms / 1000,
            shutdown_timeout_s=stop_answer_limit_s(self.job.kcl.shutdown_flush_ms),
            read_stall_after_s=self.job.metrics.stall_after_s,
            explain=self._explained,
            read_timeout_s=float(getattr(self._streams.meta.config, "read_timeout", 10.0)),
        )
        worker = ShardWorker(
            lease,
            self.leases,
            self._streams,
            settings,
            self._new_child,
            self.stopping,
            settled_at=self._settled_at,
        )
        # Before "shard started": a change made after that line is read, whatever the
        # child's start-up takes.
        self._taken_here.add(lease.shard_id)
        worker.pin_latest()
        self.workers[lease.shard_id] = worker
        if lease.checkpoint == LATEST and taken_before and earlier is None:
            # Taken before, by a run that stopped before the shard's first checkpoint: what
            # was written from that run's start until now is passed over.
            log.warning(
                "the shard was started before at LATEST and has no checkpoint yet: it starts "
                "again at the stream's tip, so changes made since the earlier start are not "
                f"replicated ({passed_over_advice(self.resolved.publishes_watermark)})",
                shard=lease.shard_id,
            )
        log.info("shard started", shard=lease.shard_id, checkpoint=lease.checkpoint)
        worker.start()

    def _record_earlier_stream(
        self, leases: dict[str, Lease], shard_id: str, current: set[str]
    ) -> None:
        """Record, for the watermark, what leases of an earlier stream of the source left
        unread, before a shard of this stream starts (its processor's claims would pass
        it; ``shard_id`` is the first to start, whose part then holds the span): the
        table was deleted and created again, or its stream disabled and enabled, so what
        the earlier stream held after those leases' checkpoints, and what was written
        while no stream was enabled, is read by no one. The span reaches this stream's
        creation, or what it may have trimmed since (a first read more than a day
        later), as a first start's ``before_stream`` would. Each such lease is then
        marked, so that a later start does not record it again (after a backfill and
        verify cleared it), and its part in each status table (a shard id this stream
        does not have: on DynamoDB, every one) superseded, so that it stops holding the
        watermark back: no processor will read it again. Throttling or an outage of a
        status table is retried at the next sync (nothing starts meanwhile); any other
        failure stops the start, before anything of this stream is read."""
        if self._earlier_recorded or not self.resolved.publishes_watermark:
            return
        earlier = [
            lease
            for lease in leases.values()
            if lease.of_earlier_stream(self.stream_arn) and lease.superseded_by != self.stream_arn
        ]
        if not earlier:
            self._earlier_recorded = True
            return
        now_us = int(time.time() * spans.US)
        try:
            created_us = stream_created_us(self.stream_arn)
        except ValueError:  # an ARN without its creation time: everything before now
            created_us = now_us
        margin_us = self.job.watermark.caught_up_margin_ms * 1000
        through = before_stream_through(SourceHistory(0, created_us), now_us, margin_us)
        span = UnreadSpan(0, now_us if through is None else through, spans.EARLIER_STREAM)
        try:
            self._record_unread(shard_id, span)
            self._supersede_parts(sorted({lease.shard_id for lease in earlier} - current))
        except (ClientError, BotoCoreError) as error:
            if classify(error) in (ErrorKind.THROTTLED, ErrorKind.RETRY):
                raise  # housekeeping tries again at the next sync
            raise self._unrecorded(error) from None
        except ReplicatorError as error:
            raise self._unrecorded(error) from None
        log.warning(
            "changes passed over; recorded for the watermark",
            unread=span.describe(),
            earlier_streams=sorted({str(lease.stream) for lease in earlier}),
            stream=self.stream_arn,
        )
        for lease in earlier:
            self.leases.mark_superseded(lease, self.stream_arn)
        self._earlier_recorded = True

    def _supersede_parts(self, shards: list[str]) -> None:
        """Stop the parts of ``shards`` (of an earlier stream) counting in every
        destination's watermark: after the span that covers their changes is stored."""
        for table in self._status_tables():
            for shard in shards:
                table.mark_superseded(shard)

    def _unrecorded(self, error: BaseException) -> EnvironmentProblem:
        return EnvironmentProblem(
            "the lease table holds leases of an earlier stream of the source table, and "
            "what that stream left unread could not be recorded in the watermark's status "
            f"tables ({error}); nothing of stream {self.stream_arn} was read: "
            "fix the status tables' access, then start the job again"
        )

    def _record_unread(self, shard_id: str, span: UnreadSpan) -> None:
        """Store a span of changes a shard passed over on its part in every destination's
        status table. The runtime reads the stream, so it alone knows of the gap; it
        stores the span before the processor gets any record after it (whose claim
        would pass it)."""
        for table in self._status_tables():
            table.ensure_exists()
            table.add_unread_spans(shard_id, (span,))

    def _status_tables(self) -> Iterator[StatusTable]:
        """Each destination's status table."""
        for destination in self.job.destinations:
            yield StatusTable(
                wiring.status_client(self.resolved, destination.label),
                self.resolved.watermark_table,
                destination.label,
            )

    def _settled_at(self, shard_id: str, destination: str) -> float | None:
        """When a change of the shard last settled at the destination, from the
        processors' samples (None before anything settled there, or before the run)."""
        samples = self._process_samples
        if samples is None:
            return None
        return max(
            (
                value
                for name, labels, value in samples.samples()
                if name == health.PROGRESS
                and labels.get("shard") == shard_id
                and labels.get("destination") == destination
            ),
            default=None,
        )

    def _new_child(self, shard_id: str, on_checkpoint: CheckpointHandler) -> ProcessorChild:
        env = dict(os.environ)
        if self._samples is None:
            raise RuntimeError("processor started before the metrics directory was prepared")
        env[multiprocess.ENV] = str(self._samples.path)
        # Every processor reads the copy of the job this run validated (a ConfigMap swap
        # or an edit of the file must not reach a processor started later in the run),
        # and names the operator's file in its messages.
        env[JOB_FILE_ENV] = str(self.resolved.path)
        # The KCL launcher's word to its processors; this runtime watches its leases itself.
        env.pop(WORKER_ID_ENV, None)
        return ProcessorChild(
            processor_command(self._job_copy or self.resolved.path),
            env,
            on_checkpoint,
            name=f"processor-{shard_id}",
            stderr=self.child_stderr,
        )

    def _standing(self, lease: Lease) -> Standing | None:
        """Who holds the lease, for this runtime: None when it is free to take at once (no
        owner; or our worker id, and written by this process or by a process of this
        host that is gone: ours, before a crash), RUNNING when a live process of this
        host holds it under our worker id, ELSEWHERE when a worker that may be alive
        elsewhere does (another worker id; or ours, written by another host, or by the
        KCL or an older version, which name no holder)."""
        if lease.owner is None:
            return None
        if lease.owner != self.worker_id or lease.holder is None:
            return Standing.ELSEWHERE
        standing = lease.holder.standing(self.leases.holder)
        return standing if standing in (Standing.RUNNING, Standing.ELSEWHERE) else None

    def _running_here(self, lease: Lease) -> LeaseHeld:
        assert lease.holder is not None
        return LeaseHeld(
            f"task {self.resolved.task_name} is being run by process {lease.holder.pid} on "
            f"this host under the same worker id {lease.owner} (it holds the lease on shard "
            f"{lease.shard_id}); the local runtime runs one worker per task name: stop that "
            "process first"
        )

    @staticmethod
    def _where_held(lease: Lease) -> str:
        """Where the lease's holder runs, as a message says it, when its write said."""
        return f" as {lease.holder}" if lease.holder is not None else ""

    def _claim_leases_held_elsewhere(self) -> None:
        """Refuse at once if a live process of this host holds a lease under our worker
        id; wait the failover time on leases held elsewhere, and refuse if they move.

        A lease whose counter stands still that long belongs to a dead or hung worker,
        whatever its id: it is noted as expired, and ``_start`` takes it over,
        conditionally on the counter not having moved since, as the KCL does. Without
        this, a worker that died under one id would keep the task from starting under
        any other, for ever; and a second host under a pinned worker id would take the
        first one's leases straight away, killing it with exit 5."""
        foreign = {}
        for shard_id, lease in self.leases.all().items():
            # An ended lease is done with, unless it is of an earlier stream: a shard of
            # this one may have its id, and start from it.
            done = lease.ended and not lease.of_earlier_stream(self.stream_arn)
            standing = None if done else self._standing(lease)
            if standing is Standing.RUNNING:
                raise self._running_here(lease)
            if standing is Standing.ELSEWHERE:
                foreign[shard_id] = lease
        if not foreign:
            return
        wait_s = self.job.kcl.failover_time_ms / 1000
        owners = sorted({str(lease.owner) for lease in foreign.values()})
        # Our own worker id with no holder named: a KCL run's leases on this host (the
        # KCL records none), left by a run of the task under the other runtime.
        unnamed_ours = all(
            lease.owner == self.worker_id and lease.holder is None for lease in foreign.values()
        )
        log.warning(
            "leases are held under this worker id with no holder recorded (a KCL run's or "
            "an earlier version's); checking that it is gone"
            if unnamed_ours
            else "leases are held by another worker or host; checking whether it is alive",
            owners=owners,
            holders=sorted({str(lease.holder) for lease in foreign.values() if lease.holder}),
            wait_s=wait_s,
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            for shard_id, lease in foreign.items():
                now = self.leases.get(shard_id)
                if now is not None and (now.counter != lease.counter or now.owner != lease.owner):
                    raise LeaseHeld(
                        f"task {self.resolved.task_name} is being run by worker {now.owner}"
                        f"{self._where_held(now)} (its lease on shard {shard_id} is renewed); "
                        "stop that worker first, or use runtime: kcl to share the shards"
                    )
            self.stopping.wait(min(2.0, wait_s / 5))
        if self.stopping.is_set():
            return
        self._expired = {
            shard_id: (lease.owner, lease.counter) for shard_id, lease in foreign.items()
        }

    def _tolerating_outages(self, step: Callable[[], object], what: str) -> bool:
        """Run a housekeeping step; False when AWS failed it in a way worth retrying.

        Throttling, 5xx and dropped connections on the stream or the lease table are
        retried on a later turn of the loop, as the shard workers retry their reads;
        anything else (access denied, the stream or lease table gone) stops the runtime.
        """
        try:
            step()
        except (ClientError, BotoCoreError) as error:
            if classify(error) in (ErrorKind.THROTTLED, ErrorKind.RETRY):
                log.warning("housekeeping failed; retrying", step=what, error=str(error))
                return False
            self.failure = self._explained(error, what)
            self.stopping.set()
        return True

    def _explained(self, error: ClientError | BotoCoreError, what: str) -> EnvironmentProblem:
        """The one line a housekeeping step's lasting failure ends the run with: which
        table or stream answered (the lease table, or the source's stream), where, and
        what to do when it is gone."""
        source = self.job.source
        where = tables.where(source.region, source.endpoint_url, source.role_arn)
        operation = getattr(error, "operation_name", None)
        lease_table = self.resolved.lease_table
        if operation == "DescribeTable":  # the source table, asked whether it was replaced
            resource = f"source table {source.table}"
            advice = (
                f"; the source table {source.table} was deleted: {preflight.SOURCE_DELETED_ADVICE}"
                if error_code(error) == "ResourceNotFoundException"
                else ""
            )
        elif operation in _STREAM_OPERATIONS:
            resource = f"stream {self.stream_arn} of source table {source.table}"
            if error_code(error) == "ResourceNotFoundException":
                advice = (
                    f"; the source table {source.table} or its stream was deleted or the "
                    "stream disabled: re-create the table or enable its stream, start the "
                    "job again and run `replicator backfill` for what changed meanwhile"
                )
            else:
                advice = ""
        elif operation is not None:
            resource = f"lease table {lease_table}"
            if error_code(error) == "ResourceNotFoundException":
                advice = (
                    f"; the lease table {lease_table} (which holds the checkpoints) was "
                    "deleted while the job ran: start the job again to re-create it (the "
                    "shards are then read from kcl.initial_position) and run "
                    "`replicator backfill` if changes may have been missed"
                )
            else:
                advice = ""
        else:
            resource = f"lease table {lease_table} and stream {self.stream_arn}"
            advice = ""
        explained = preflight.explain(error, f"{what}: {resource}", where)
        return EnvironmentProblem(f"{explained}{advice}")

    def _renew(self) -> None:
        for worker in list(self.workers.values()):
            if self.stopping.is_set():
                return  # the workers are releasing their leases: nothing to keep
            try:
                self._tolerating_outages(
                    functools.partial(self._renew_one, worker),
                    f"renewing the lease on shard {worker.shard_id}",
                )
            except ReplicatorError as error:
                if self.stopping.is_set() and self.failure is None:
                    # A stop began while this renewal was on its way: the worker released
                    # the lease on its clean stop. Not another worker's doing: no exit 5.
                    return
                worker.lease_taken()
                self.failure = LeaseHeld(
                    f"shard {worker.shard_id}: our lease was taken by another worker ({error}); "
                    "the local runtime runs one worker per task name"
                )
                self.stopping.set()

    def _renew_one(self, worker: ShardWorker) -> None:
        """Renew a shard's lease and tell its worker: a worker that has gone the failover
        time without this checks the lease before handing its processor anything more."""
        self.leases.renew(worker.lease)
        worker.lease_confirmed()

    def _hold_host_lock(self) -> hostlock.HostLock:
        """Two local runtimes of one task on one host would share a worker id: refuse.

        The lock is keyed by the task and by where its lease table is (the source client's
        endpoint, the region and the role it is reached as: :func:`hostlock.lease_table_place`)."""
        where = self._ddb.meta.endpoint_url
        source = self.job.source
        task = self.resolved.task_name
        lock = hostlock.task_lock(task, where, source.region, source.role_arn)
        lock.hold(f"task {task} on {where}")
        return lock

    def _hold(self) -> None:
        """The preflight's ``before_creating``: the host lock, then the metrics port. In
        that order, a second run of the task on this host, which has the same port, is
        told it is one (exit 5) rather than that its port is taken (exit 3)."""
        if self._lock is None:
            self._lock = self._hold_host_lock()
        self._metrics.bind()

    def _let_go(self) -> None:
        """The metrics port (the server stopped), then the host lock."""
        lock, self._lock = self._lock, None
        try:
            self._metrics.close()
        finally:
            if lock is not None:
                lock.release()

    # -- reporting ------------------------------------------------------------------------

    def progress(self) -> list[ShardProgress]:
        return [worker.progress for worker in list(self.workers.values())]

    def lag_floors(self) -> dict[str, float]:
        """By shard, while a ``processRecords`` has been out for a second or more, the
        time from which its changes may be missing at every destination
        (:class:`ShardProgress`; an answer within a second, the usual, raises nothing:
        an idle shard's lag stays 0)."""
        floors = {}
        now = time.time()
        for worker in list(self.workers.values()):
            progress = worker.progress
            since, out = progress.awaited_behind_since, progress.answer_awaited_since
            if since is not None and out is not None and now - out >= LAG_FLOOR_AFTER_S:
                floors[worker.shard_id] = since
        return floors

    def _retire(self, shard_id: str) -> None:
        """Forget the worker of ``shard_id`` (no longer running), keeping its restarts."""
        with self._restarts_lock:
            worker = self.workers.pop(shard_id)
            self._retired_restarts += worker.progress.restarts

    def restarts(self) -> int:
        """Processor restarts in this run, those of workers already gone included: a
        shard that ends (DynamoDB Streams closes each within hours) takes none away, so
        Prometheus never reads a drop of the counter as a reset."""
        with self._restarts_lock:
            return self._retired_restarts + sum(p.restarts for p in self.progress())

    def problems(self) -> list[str]:
        problems = []
        if self.failure is not None:
            problems.append(f"stopped: {self.failure}")
        now = time.time()
        for worker in list(self.workers.values()):
            trouble = worker.trouble(now)
            if worker.error is not None:
                problems.append(f"shard {worker.shard_id}: {worker.error}")
            elif not worker.is_alive() and not worker.progress.ended:
                if not self.stopping.is_set():  # a stop ends every worker: not a fault
                    problems.append(f"shard {worker.shard_id}: worker not running")
            elif trouble is not None:
                problems.append(f"shard {worker.shard_id}: {trouble}")
        return problems


def _failure_of(worker: ShardWorker) -> BaseException:
    """What a worker's error makes of the run: a lease taken by another worker is the
    task name held elsewhere (:class:`LeaseHeld`); any other error is itself."""
    assert worker.error is not None
    if isinstance(worker.error, LeaseLost):
        return LeaseHeld(
            f"shard {worker.shard_id}: {worker.error}; the local runtime runs one worker "
            "per task name"
        )
    return worker.error


class _RuntimeCollector(Collector):
    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        progress = self.runtime.progress()
        owned = GaugeMetricFamily("replicator_shards_owned", "Shards this worker processes now.")
        owned.add_metric([], len(progress))
        yield owned
        restarts = CounterMetricFamily(
            "replicator_processor_restarts", "Processor children started again after failing."
        )
        restarts.add_metric([], self.runtime.restarts())
        yield restarts


def run_local(resolved: ResolvedJob, ready: Callable[[LocalRuntime], Any] | None = None) -> int:
    """``replicator run`` with the local runtime: run until SIGTERM, SIGINT or SIGHUP."""
    supervisor.begin(resolved, "local")
    runtime = LocalRuntime(resolved)
    # Stop signals are still held (replicator.entry) while the preflight runs: one asks
    # it to stop between its steps, a second one ends the command at once.
    try:
        runtime.run_preflight(entry.stop_held)
    except preflight.Stopped:
        supervisor.stopped_while_starting("local runtime stopped before it started")
        return 0
    with supervisor.stop_signals(lambda _signal: runtime.stop()):
        if ready is not None:
            threading.Thread(target=ready, args=(runtime,), daemon=True).start()
        return runtime.run()
