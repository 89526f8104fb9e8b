"""Builds one shard's intake and pipeline from a job: clients, rules, writers, dead
letters, buffer.

The only place that turns configuration into live objects, so that the pipeline stages
themselves take plain collaborators and test without AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from replicator.aws import clients
from replicator.aws.backoff import Backoff
from replicator.aws.clients import Place, Reach, WriteClient
from replicator.aws.tables import where
from replicator.buffer import ChangeBuffer
from replicator.config.destinations import destination_place
from replicator.config.model import (
    DeadLetterKind,
    DestinationConfig,
    JobConfig,
    ResolvedJob,
    RuntimeKind,
    SourceConfig,
    StreamKind,
    sqs_region,
)
from replicator.conflictlog.base import ConflictRecorder
from replicator.conflictlog.recorder import BackgroundRecorder
from replicator.deadletter import DeadLetterTarget, FileDeadLetters, SqsDeadLetters
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import StreamKeys
from replicator.exceptions import EnvironmentProblem
from replicator.filters import ChangeFilter, StampWatch
from replicator.highwater import HighWater
from replicator.intake import Reader, ShardIntake
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.rules import ConflictRule, OrderedRule, rule_for, squash_order
from replicator.rules.ordered import Peers
from replicator.shards.stream import Shard, list_shards
from replicator.tombstones.setup import job_ranking
from replicator.tombstones.table import TombstoneTable
from replicator.watermark.history import SourceHistory, stream_created_us
from replicator.watermark.publisher import ShardWatermark
from replicator.watermark.sources import job_source
from replicator.watermark.table import StatusTable
from replicator.writers.destination import DestinationWriter
from replicator.writers.loopwire import LoopWire, WireFactory
from replicator.writers.source import SourceWriter
from replicator.writers.source_key import SourceKeySchema
from replicator.writers.wire import direct_write_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TableDescriptionTypeDef


def dead_letter_target(
    resolved: ResolvedJob, run_id: str | None = None, unanswered_for_s: float | None = None
) -> DeadLetterTarget:
    """The job's target; ``unanswered_for_s`` bounds how long a queue may give no answer
    (an operator command's bound, :class:`SqsDeadLetters`); None: replication's wait."""
    settings = resolved.job.dead_letter
    if settings.kind is DeadLetterKind.SQS:
        assert settings.queue_url
        region = sqs_region(settings, resolved.job.source.region)
        # As many connections as writes may fail at once: each writer thread sends its own
        # letters, and a pool of botocore's default 10 discarded the rest with a warning
        # each ("Connection pool is full") when a destination refused a burst.
        client = clients.sqs(
            Place(region, settings.endpoint_url, settings.role_arn),
            max_pool_connections=max(10, resolved.job.writer.max_in_flight),
        )
        return SqsDeadLetters(
            client, settings.queue_url, run_id=run_id, unanswered_for_s=unanswered_for_s
        )
    path = Path(settings.path.format(task_name=resolved.task_name))
    if not path.is_absolute():
        path = Path.cwd() / path
    return FileDeadLetters(path)


def _write_client(resolved: ResolvedJob, place: Reach, rule: ConflictRule) -> WriteClient:
    """A client for PutItem/DeleteItem to one table (the direct path unless it cannot)."""
    settings = resolved.job.writer
    client = clients.dynamodb(
        place,
        max_pool_connections=settings.max_in_flight,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        sdk_retries=False,
        # Items are decoded stream images, already checked attribute by attribute;
        # only a custom resolver's own items get botocore's client-side check.
        validate_parameters=rule.reads_existing,
    )
    if not rule.reads_existing and not settings.send_with_botocore:
        return direct_write_client(
            client,
            max_connections=settings.max_in_flight,
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
        )
    return client


def _backoff(resolved: ResolvedJob) -> Backoff:
    retry = resolved.job.writer.retry
    return Backoff(retry.base_delay_ms / 1000, retry.max_delay_ms / 1000)


def tombstone_table(
    resolved: ResolvedJob, client: WriteClient, table: str, region: str, endpoint_url: str | None
) -> TombstoneTable:
    job = resolved.job
    return TombstoneTable(
        client,
        job.tombstone_table(table),
        where(region, endpoint_url),
        job.active_active.tombstone_retention_hours * 3600,
        ranking=job_ranking(job),
        origin=job.origin_value,
    )


def source_writer(
    resolved: ResolvedJob,
    metrics: Metrics,
    conflict_log: ConflictRecorder | None = None,
) -> SourceWriter | None:
    """The writer of the job's own source table, when the job writes back (active-active)."""
    job = resolved.job
    if not job.writes_back:
        return None
    rule = rule_for(job.conflict, job.loop_prevention.origin_attribute)
    assert isinstance(rule, OrderedRule)  # checked by the job's validation
    source = job.source
    client = _write_client(resolved, source, rule)
    table = None
    if job.active_active.tombstones:
        table = tombstone_table(resolved, client, source.table, source.region, source.endpoint_url)
    writer = DestinationWriter(
        label=f"{source.region}/{source.table}",
        table=source.table,
        region=source.region,
        client=client,
        rule=rule,
        metrics=metrics,
        backoff=_backoff(resolved),
        refusal_limit=job.writer.access_denied_limit,
        tombstones=table,
        origin=job.origin_value,
        counted=False,
    )
    return SourceWriter(writer, rule, metrics, conflict_log)


def destination_writers(
    resolved: ResolvedJob,
    metrics: Metrics,
    conflict_log: ConflictRecorder | None = None,
    write_back: SourceWriter | None = None,
    shard: str = "",
) -> dict[str, DestinationWriter]:
    job = resolved.job
    settings = job.writer
    backoff = _backoff(resolved)
    source_key = source_key_schema(resolved)
    writers = {}
    for destination in job.destinations:
        conflict = job.conflict_for(destination)
        rule = rule_for(conflict, job.loop_prevention.origin_attribute, peers_of(job, destination))
        client = _write_client(resolved, destination, rule)
        tombstones = None
        if job.active_active.tombstones:
            tombstones = tombstone_table(
                resolved, client, destination.table, destination.region, destination.endpoint_url
            )
        writers[destination.label] = DestinationWriter(
            label=destination.label,
            table=destination.table,
            region=destination.region,
            client=client,
            rule=rule,
            metrics=metrics,
            backoff=backoff,
            refusal_limit=settings.access_denied_limit,
            max_optimistic_attempts=conflict.max_attempts,
            conflict_log=conflict_log,
            tombstones=tombstones,
            write_back=write_back,
            origin=job.origin_value,
            late_write_window_s=settings.late_write_window_s,
            shard=shard,
            source_key_schema=source_key,
        )
    return writers


def source_key_schema(resolved: ResolvedJob) -> SourceKeySchema:
    """The source's key schema for the writers (see SourceKeySchema): read with short
    timeouts and no SDK retries, each writer thread refused at once waiting on one read."""
    source = resolved.job.source
    made: list[DynamoDBClient] = []  # built at the first read: most runs never read

    def describe() -> TableDescriptionTypeDef:
        if not made:
            made.append(
                clients.dynamodb(source, connect_timeout=2.0, read_timeout=5.0, sdk_retries=False)
            )
        return made[0].describe_table(TableName=source.table)["Table"]

    return SourceKeySchema(
        describe,
        f"source table {source.table}",
        where(source.region, source.endpoint_url, source.role_arn),
    )


def peers_of(job: JobConfig, destination: DestinationConfig) -> Peers | None:
    """The stamps of the job's region and ``destination``'s (see OrderedRule), with loop
    prevention on: in a pair every stamp is one of them; in a mesh the job's origin
    value and the destination's region, when no other destination is in that region
    (the origin value defaults to the region, as the echoes' holders are found in the
    pipeline)."""
    if not job.loop_prevention.origin_attribute:
        return None
    if len(job.destinations) == 1:
        return Peers(any_stamp=True)
    in_region = [d for d in job.destinations if d.region == destination.region]
    stamps = {job.origin_value}
    if len(in_region) == 1:
        stamps.add(destination.region)
    return Peers(stamps=frozenset(stamps))


def shard_intake(
    resolved: ResolvedJob,
    shard_id: str,
    metrics: Metrics,
    dead_letters: DeadLetterTarget,
    on_fatal: Callable[[BaseException], None] | None = None,
    conflict_log: BackgroundRecorder | None = None,
    stream_keys: StreamKeys | None = None,
) -> ShardIntake:
    """One shard's intake and the pipeline behind it (the processor's ``build``).
    ``stream_keys``: what the source stream's records have shown of its binary keys,
    shared by the shards the process reads (None: this shard's own)."""
    letters = DeadLetterer(dead_letters, metrics, resolved.task_name, shard_id)
    recorder = None
    if conflict_log is not None:
        recorder = conflict_log.for_shard(resolved.task_name, shard_id)
    pipeline = shard_pipeline(resolved, shard_id, metrics, letters, on_fatal, recorder)
    return ShardIntake(pipeline, reader(resolved, pipeline, stream_keys))


def reader(
    resolved: ResolvedJob, pipeline: ShardPipeline, stream_keys: StreamKeys | None = None
) -> Reader:
    """How the shard reads its records: the job's filters and active-active's high-water
    stage (the core benchmark reads through the same)."""
    filters = change_filter(resolved)
    rules = [w.rule for w in pipeline.writers.values() if isinstance(w, DestinationWriter)]
    if pipeline.source is not None:  # active-active: the job's own rule ranks at the source
        rules.append(pipeline.source.rule)
    read: list[str | None] = [filters.origin_attribute]
    for rule in rules:
        if isinstance(rule, OrderedRule):
            read += (rule.attribute, rule.origin_attribute)
    read_ahead = tuple(dict.fromkeys(name for name in read if name))
    return Reader(
        filters,
        high_water(resolved, pipeline),
        read_ahead=read_ahead,
        stream_keys=stream_keys if stream_keys is not None else StreamKeys(),
        stamps=StampWatch.for_job(resolved.job),
    )


def shard_pipeline(
    resolved: ResolvedJob,
    shard_id: str,
    metrics: Metrics,
    dead_letters: DeadLetterer,
    on_fatal: Callable[[BaseException], None] | None = None,
    conflict_log: ConflictRecorder | None = None,
    wire_factory: WireFactory = LoopWire,
) -> ShardPipeline:
    """``wire_factory``: the direct destinations' transport on the event loop (the core
    benchmark's answers without a network)."""
    job = resolved.job
    source = source_writer(resolved, metrics, conflict_log)
    writers = destination_writers(resolved, metrics, conflict_log, source, shard_id)
    ordered = job.source.stream.kind is StreamKind.DYNAMODB_STREAMS
    rules: list[ConflictRule] = [writer.rule for writer in writers.values()]
    labels = list(writers)
    if source is not None:
        # The source writer settles every change too, under the job's own rule.
        rules.append(source.rule)
        labels.append(source.label)
    buffer = ChangeBuffer(labels, squash_order(rules, ordered_stream=ordered))
    watermark = (
        shard_watermark(resolved, shard_id, metrics) if resolved.publishes_watermark else None
    )
    if watermark is not None:
        for writer in writers.values():
            writer.on_table_lost = watermark.destination_lost
    return ShardPipeline(
        writers,
        buffer,
        metrics,
        shard_id,
        max_in_flight=job.writer.max_in_flight,
        max_buffered=job.writer.max_buffered_changes,
        dead_letters=dead_letters,
        on_fatal=on_fatal,
        watermark=watermark,
        source=source,
        wire_factory=wire_factory,
    )


def high_water(resolved: ResolvedJob, pipeline: ShardPipeline) -> HighWater | None:
    """The stage that turns stale local writes into corrections (active-active); it
    shares its notes with the pipeline's source writer."""
    job = resolved.job
    if not job.writes_back or pipeline.source is None:
        return None
    rule = rule_for(job.conflict, job.loop_prevention.origin_attribute)
    assert isinstance(rule, OrderedRule)
    return HighWater(
        rule,
        keep_echoes_apart=job.active_active.tombstones,
        notes=pipeline.source.notes,
        tombstones=job.active_active.tombstones,
        retention_s=job.active_active.tombstone_retention_hours * 3600,
        in_order=job.source.stream.kind is StreamKind.DYNAMODB_STREAMS,
        read_tombstones=pipeline.source.read_tombstones,
    )


def shard_watermark(resolved: ResolvedJob, shard_id: str, metrics: Metrics) -> ShardWatermark:
    """The shard's watermark publisher: a status table per destination, the stream's shards."""
    job = resolved.job
    tables = {
        destination.label: StatusTable(
            status_client(resolved, destination.label),
            resolved.watermark_table,
            destination.label,
            place=destination_place(destination),
        )
        for destination in job.destinations
    }
    return ShardWatermark(
        shard_id,
        tables,
        stream_shards(resolved),
        metrics,
        interval_s=job.watermark.publish_interval_ms / 1000,
        margin_s=job.watermark.caught_up_margin_ms / 1000,
        reads_follow_answers=job.runtime is RuntimeKind.LOCAL,
        source_history=source_history(resolved),
        source=job_source(resolved),
    )


def status_client(
    resolved: ResolvedJob, label: str, **tuning: Unpack[clients.Tuning]
) -> DynamoDBClient:
    """A client for the status table of destination ``label`` (its region, endpoint, role)."""
    destination = next(d for d in resolved.job.destinations if d.label == label)
    return clients.dynamodb(destination, **tuning)


def stream_shards(resolved: ResolvedJob) -> Callable[[], Sequence[Shard]]:
    """Lists the source stream's shards (the job's stream ARN, or the table's latest)."""
    source = resolved.job.source
    streams = clients.dynamodb_streams(source)
    arn: list[str] = [source.stream.arn] if source.stream.arn else []

    def shards() -> Sequence[Shard]:
        if not arn:
            arn.append(_stream_arn(source, _describe_source(source)))
        return list_shards(streams, arn[0])[1]

    return shards


def source_history(resolved: ResolvedJob) -> Callable[[], SourceHistory]:
    """When the source table and the stream the job reads were created (DescribeTable,
    which the start-up check needs too), for a first start at TRIM_HORIZON."""
    source = resolved.job.source

    def history() -> SourceHistory:
        table = _describe_source(source)
        return SourceHistory(
            table_created_us=int(table["CreationDateTime"].timestamp() * 1_000_000),
            stream_created_us=stream_created_us(_stream_arn(source, table)),
        )

    return history


def _describe_source(source: SourceConfig) -> TableDescriptionTypeDef:
    return clients.dynamodb(source).describe_table(TableName=source.table)["Table"]


def _stream_arn(source: SourceConfig, table: TableDescriptionTypeDef) -> str:
    """The job's stream ARN, or the source table's latest stream."""
    arn = source.stream.arn or table.get("LatestStreamArn")
    if not arn:
        raise EnvironmentProblem(f"source table {source.table} has no stream")
    return arn


def change_filter(resolved: ResolvedJob) -> ChangeFilter:
    return ChangeFilter.for_job(resolved.job)
