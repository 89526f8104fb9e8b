"""Every metric the replicator exposes. The names are part of its interface.

The processor runs as one process per shard, so metrics use prometheus-client's
multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (the runtimes set it for
their children): each process writes its samples to files there, and the runtime's
HTTP server adds them up. Gauges say how: ``livemax`` keeps the largest value among
live processes (every series here carries a shard or destination label, so this is
per-series), ``livesum`` adds the live processes' values. The runtime deletes a dead
process's ``live*`` files, so a stopped or restarted shard does not report its last
lag forever; counters and histograms of dead processes stay, so totals never drop.
``replicator_last_checkpoint_timestamp_seconds`` uses ``max`` (dead processes count):
a restarted shard keeps the time of its last checkpoint instead of losing it until the
new process checkpoints, which health and alerts rely on.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

from replicator.metrics.multiprocess import ENV as MULTIPROC_ENV

DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
FLUSH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The metric objects, created once per process.

    ``registry=None`` creates unregistered metrics, which is what a multiprocess child
    wants (its values go to files, not to a registry); tests pass a fresh registry.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        r = registry
        self.replication_lag = Gauge(
            "replicator_replication_lag_seconds",
            "How far the destination is behind the source, in seconds: 0 when every change "
            "read has been applied there and the reader is at the tip of the shard; else the "
            "age of the oldest change read but not yet applied there, or the reader's "
            "millisBehindLatest when that is larger.",
            ["destination", "shard"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.apply_delay = Histogram(
            "replicator_apply_delay_seconds",
            "Seconds from a change's creation at the source until the destination accepted it "
            "(changes with outcome applied).",
            ["destination"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.millis_behind_latest = Gauge(
            "replicator_millis_behind_latest",
            "How far the last batch read was behind the tip of the shard: the daemon's "
            "millisBehindLatest under the KCL, the age of the batch's newest record under "
            "the local runtime.",
            ["shard"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.records_received = Counter(
            "replicator_records_received",
            "Stream records received, by event (INSERT, MODIFY, REMOVE, undecodable).",
            ["event"],
            registry=r,
        )
        self.writes = Counter(
            "replicator_writes",
            "Changes handled per destination, by operation and outcome (applied, unchanged, "
            "conflict_lost, loop_skipped, filtered, other_table, dead_lettered).",
            ["destination", "op", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "replicator_retries",
            "Write attempts retried, by reason (throttled, server_error, network, "
            "access_denied, not_found, key_schema, auth, clock_skew, already_applied, "
            "optimistic_conflict).",
            ["destination", "reason"],
            registry=r,
        )
        self.late_write_holds = Counter(
            "replicator_late_write_holds",
            "Changes whose write sent a request without a condition that got no answer, "
            "held (their item's next change waiting) until it can no longer land.",
            ["destination"],
            registry=r,
        )
        self.late_puts_removed = Counter(
            "replicator_late_puts_removed",
            "Active-active: items a put that got no answer created after its check against "
            "a delete that outranks it, removed again once it could no longer land.",
            ["destination"],
            registry=r,
        )
        self.destination_tables_lost = Counter(
            "replicator_destination_tables_lost",
            "Destination tables that answered missing, or with another key, after accepting "
            "this process's writes: deleted or re-created while the job ran, the items they "
            "held gone (a backfill brings them back).",
            ["destination"],
            registry=r,
        )
        self.dead_letters = Counter(
            "replicator_dead_letters",
            "Changes written to the dead-letter target, by reason.",
            ["destination", "reason"],
            registry=r,
        )
        self.dead_letters_already_stored = Counter(
            "replicator_dead_letters_already_stored",
            "Changes that failed again after a restart whose letter the dead-letter file "
            "already held (not stored twice): counted apart, so that the dead-letter alert "
            "still sees letters a process that has ended had counted.",
            ["destination", "reason"],
            registry=r,
        )
        self.conflict_log_written = Counter(
            "replicator_conflict_log_written",
            "Lost conflicts stored in the conflict log, by destination.",
            ["destination"],
            registry=r,
        )
        self.conflict_log_dropped = Counter(
            "replicator_conflict_log_dropped",
            "Lost conflicts the conflict log could not store, a gap in the record, by "
            "destination and reason (unavailable, rejected, backlog, shutdown).",
            ["destination", "reason"],
            registry=r,
        )
        self.conflict_log_retries = Counter(
            "replicator_conflict_log_retries",
            "Attempts to store a conflict-log entry that failed and were tried again.",
            registry=r,
        )
        self.conflict_writebacks = Counter(
            "replicator_conflict_writebacks",
            "Winners of lost conflicts written to the source table (active-active write-back), "
            "by the destination where the conflict was lost (the source's own label for a "
            "local write corrected in the source).",
            ["destination"],
            registry=r,
        )
        self.tombstones_written = Counter(
            "replicator_tombstones_written",
            "Delete tombstones written, by the table they guard (a destination's name, or "
            "the source's <region>/<table>).",
            ["destination"],
            registry=r,
        )
        self.tombstones_expired = Counter(
            "replicator_tombstones_expired",
            "Tombstones found past their retention by a put they would have stopped: the put "
            "was applied (raise active_active.tombstone_retention_hours if this grows).",
            ["destination"],
            registry=r,
        )
        self.checkpoints = Counter(
            "replicator_checkpoints", "Checkpoints written to the lease table.", registry=r
        )
        self.squashed = Counter(
            "replicator_squashed",
            "Changes not written because another change to the same key made them redundant "
            "while they waited (replaced them, or left them nothing to change).",
            registry=r,
        )
        self.batch_flush = Histogram(
            "replicator_batch_flush_seconds",
            "Seconds from receiving a batch until every destination settled all of it (applied, "
            "lost a conflict or dead-lettered).",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.in_flight_writes = Gauge(
            "replicator_in_flight_writes",
            "Writes currently in flight per destination, summed over the shards.",
            ["destination"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.resolver_calls_running = Gauge(
            "replicator_resolver_calls_running",
            "Calls of the custom conflict resolver running now per destination and shard. "
            "/healthz names them beside a destination that stalls on the shard while one runs.",
            ["destination", "shard"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.dead_letters_storing = Gauge(
            "replicator_dead_letters_storing",
            "Dead letters per destination and shard that the dead-letter target has not taken "
            "yet (a queue or file not answering). /healthz names them beside a destination "
            "that stalls on the shard meanwhile: the target holds those changes.",
            ["destination", "shard"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.buffered_changes = Gauge(
            "replicator_buffered_changes",
            "Changes received and not yet applied everywhere.",
            ["shard"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.last_checkpoint = Gauge(
            "replicator_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint written for the shard (by any of its "
            "processes since the runtime started).",
            ["shard"],
            multiprocess_mode="max",
            registry=r,
        )
        self.destination_progress = Gauge(
            "replicator_destination_progress_timestamp_seconds",
            "Unix time a change of the shard last settled at the destination (applied, "
            "unchanged, lost a conflict, dead-lettered, or a replaced change's write that "
            "landed). /healthz reports a destination stalled when it is behind, has writes in "
            "flight and this stands still.",
            ["destination", "shard"],
            multiprocess_mode="max",
            registry=r,
        )
        self.shard_started = Gauge(
            "replicator_shard_started_timestamp_seconds",
            "Unix time the runtime first started a processor of the shard (kept for "
            "processes that have exited). /healthz counts a destination that has settled "
            "nothing on the shard from then.",
            ["shard"],
            multiprocess_mode="min",
            registry=r,
        )
        self.last_record = Gauge(
            "replicator_last_record_received_timestamp_seconds",
            "Unix time the last non-empty batch arrived (shards with a live process).",
            ["shard"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.watermark_publish_failures = Counter(
            "replicator_watermark_publish_failures",
            "Status table writes for the watermark that failed (retried later; replication "
            "goes on and the published watermark stays where it was).",
            ["destination"],
            registry=r,
        )


def in_memory_metrics() -> Metrics:
    """The metrics of a command that serves none (``verify``, ``backfill``, ``redrive``,
    ``conflicts --restore``): kept in this process's memory. prometheus-client chooses
    multiprocess mode from ``PROMETHEUS_MULTIPROC_DIR`` when it is imported, and an
    operator's variable, set for a whole container, names the running job's directory:
    its ``/metrics`` would add this command's writes to the job's (its writes_total over
    the records it received) until the job restarts."""
    os.environ.pop(MULTIPROC_ENV, None)  # and for whatever this command starts
    values.ValueClass = values.MutexValue
    return Metrics(CollectorRegistry())
