"""Is it safe to backfill now? The gap-free hand-off between a scan and the stream.

A change made while the scan runs must be either in the scan or in the stream after
the position the replicator continues from. That holds when, for every open shard of
the source's stream, the replicator's position is fixed at or before the moment the
scan starts:

* a lease whose checkpoint is a sequence number (or TRIM_HORIZON / SHARD_END): the
  replicator is or was running and resumes from there;
* no lease yet, and the job starts from TRIM_HORIZON (``kcl.initial_position``), or the
  shard's parent has a lease (runtimes start a child shard from its beginning): when
  the replicator starts, it reads the shard from its oldest record, which includes the
  scan's period as long as it starts within the stream's retention (24 hours for a
  DynamoDB stream; a Kinesis data stream's retention period).

A lease still at LATEST, or no lease under ``initial_position: LATEST``, means the
replicator will begin wherever the stream's tip is when it gets there, which can be
after changes the scan missed: the backfill refuses.

A lease that records another stream than the source's (the source table deleted and
created again, or the task name given to another table, with a shard of the new stream
under the earlier one's id) fixes nothing of this stream: the local runtime reads such
a shard from TRIM_HORIZON, as a shard without a lease. The KCL knows nothing of the
recorded stream (the local runtime's attribute), and resumes the lease's checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from replicator.aws import clients, tables
from replicator.aws.errors import error_code
from replicator.config.model import InitialPosition, ResolvedJob, RuntimeKind, StreamKind
from replicator.exceptions import EnvironmentProblem
from replicator.runtime.preflight import explain
from replicator.shards.leases import LATEST, SENTINELS, Lease, LeaseTable, check_lease_table
from replicator.shards.stream import Shard, list_shards

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_kinesis import KinesisClient


def _procedure(within: str) -> str:
    return (
        "Start the replicator first (`replicator run --config FILE`) and wait until it has "
        "checkpointed on every shard (after its first record), then run the backfill while "
        f"it runs; or set kcl.initial_position: TRIM_HORIZON and start the replicator {within} "
        "of the backfill's start. See docs/operator-tools.md. "
        "(--skip-handoff-check copies without this guarantee.)"
    )


# How long the stream keeps the scan's period: a DynamoDB stream 24 hours; a Kinesis data
# stream its retention period, 24 hours unless raised (up to 365 days).
_WITHIN = {
    StreamKind.DYNAMODB_STREAMS: "within 24 hours",
    StreamKind.KINESIS: "within the Kinesis stream's retention period (24 hours unless raised)",
}
NO_LEASE = "TRIM_HORIZON (no lease yet)"
EARLIER_STREAM = "TRIM_HORIZON (a lease of an earlier stream)"


@dataclass(frozen=True)
class Handoff:
    """Where the replicator will continue from, per open shard, for the log."""

    positions: dict[str, str]
    note: str


def check_handoff(resolved: ResolvedJob, stream_arn: str, ddb: DynamoDBClient) -> Handoff:
    """Refuse (EnvironmentProblem) unless the hand-off is gap-free; ``ddb``: the source's."""
    job = resolved.job
    source = job.source
    where = tables.where(source.region, source.endpoint_url)
    streams: DynamoDBStreamsClient | None = None
    listing: Callable[[], list[Shard]]
    if source.stream.kind is StreamKind.KINESIS:
        listing = functools.partial(_kinesis_shards, clients.kinesis(source), stream_arn)
    else:
        streams = clients.dynamodb_streams(source)
        listing = functools.partial(_stream_shards, streams, stream_arn)
    try:  # a table of the lease table's name that is not one: refused as `run` refuses it
        check_lease_table(ddb, resolved.lease_table, where)
    except (ClientError, BotoCoreError) as error:
        raise explain(error, f"lease table {resolved.lease_table}", where) from None
    leases = _leases(LeaseTable(ddb, resolved.lease_table, owner="backfill", where=where), where)
    shards = _open_shards(listing, stream_arn, where)
    trim_horizon = job.kcl.initial_position is InitialPosition.TRIM_HORIZON
    # The runtime that reads the recorded stream: the KCL resumes any lease.
    local = job.runtime is RuntimeKind.LOCAL
    within = _WITHIN[source.stream.kind]
    positions: dict[str, str] = {}
    problems: list[str] = []
    for shard in shards:
        lease = leases.get(shard.shard_id)
        if lease is not None and local and lease.of_earlier_stream(stream_arn):
            positions[shard.shard_id] = EARLIER_STREAM
        elif lease is not None:
            if lease.checkpoint == LATEST:
                problems.append(
                    f"shard {shard.shard_id}: the lease's checkpoint is still LATEST (the "
                    "replicator has not checkpointed a position yet)"
                )
            positions[shard.shard_id] = lease.checkpoint
        elif trim_horizon or (shard.parent_id is not None and shard.parent_id in leases):
            positions[shard.shard_id] = NO_LEASE
        else:
            problems.append(
                f"shard {shard.shard_id}: no lease, and the job starts from LATEST "
                "(kcl.initial_position)"
            )
    if problems:
        raise EnvironmentProblem(
            f"backfill refused: the replicator of task {resolved.task_name} (lease table "
            f"{resolved.lease_table}) has no fixed starting position, so changes made during "
            "the scan could be missed:\n  " + "\n  ".join(problems) + "\n" + _procedure(within)
        )
    if streams is not None:
        _check_not_trimmed(streams, stream_arn, leases, positions, where, resolved.lease_table)
    if all(p == NO_LEASE for p in positions.values()):
        note = (
            "no leases yet: the job will start from TRIM_HORIZON; start the replicator "
            f"{within} of this backfill's start"
        )
    elif all(p in (NO_LEASE, EARLIER_STREAM) for p in positions.values()):
        note = (
            "no leases of this stream yet (those of its shards are of an earlier stream): "
            f"the job will read it from TRIM_HORIZON; start the replicator {within} of this "
            "backfill's start"
        )
    else:
        note = "the replicator's leases fix where it continues"
    return Handoff(positions, note)


def _leases(table: LeaseTable, where: str) -> dict[str, Lease]:
    try:
        return table.all()
    except (ClientError, BotoCoreError) as error:
        if error_code(error) == "ResourceNotFoundException":
            return {}
        raise explain(error, f"lease table {table.table}", where) from None


def _open_shards(listing: Callable[[], list[Shard]], stream_arn: str, where: str) -> list[Shard]:
    try:
        shards = listing()
    except (ClientError, BotoCoreError) as error:
        raise explain(error, f"stream {stream_arn}", where) from None
    return [shard for shard in shards if not shard.closed]


def _stream_shards(streams: DynamoDBStreamsClient, stream_arn: str) -> list[Shard]:
    return list_shards(streams, stream_arn)[1]


def _kinesis_shards(client: KinesisClient, stream_arn: str) -> list[Shard]:
    kwargs: dict[str, Any] = {"StreamARN": stream_arn}
    shards: list[Shard] = []
    while True:
        page = client.list_shards(**kwargs)
        for shard in page.get("Shards", []):
            shards.append(Shard.from_description(shard))
        token = page.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


def _check_not_trimmed(
    streams: DynamoDBStreamsClient,
    stream_arn: str,
    leases: dict[str, Lease],
    positions: dict[str, str],
    where: str,
    lease_table: str,
) -> None:
    """A checkpoint older than the stream's retention cannot be resumed from at all, nor
    one that is not a sequence number."""
    for shard_id, position in positions.items():
        lease = leases.get(shard_id)
        if lease is None or position != lease.checkpoint or lease.checkpoint in SENTINELS:
            continue
        try:
            streams.get_shard_iterator(
                StreamArn=stream_arn,
                ShardId=shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                SequenceNumber=lease.checkpoint,
            )
        except (ClientError, BotoCoreError) as error:
            if isinstance(error, ParamValidationError) or error_code(error) == (
                "ValidationException"
            ):
                # Refused before or by the stream: the lease holds no position to resume.
                raise EnvironmentProblem(
                    f"backfill refused: shard {shard_id}'s checkpoint {lease.checkpoint!r} "
                    f"in the lease table {lease_table} is not a valid sequence number of the "
                    f"stream ({_first_line(error)}), so the replicator cannot continue from "
                    "it either. Correct the lease's checkpoint (or delete the lease with the "
                    "replicator stopped), then run the backfill again."
                ) from None
            if error_code(error) == "TrimmedDataAccessException":
                raise EnvironmentProblem(
                    f"backfill refused: shard {shard_id}'s checkpoint {lease.checkpoint} is "
                    "older than the stream's 24-hour retention, so the replicator cannot "
                    "continue from it. Set source.on_trimmed_data: restart_from_trim_horizon, "
                    "start the replicator, then run the backfill while it runs, and `replicator "
                    "verify --repair` for the deletes a copy cannot make; then set it back to "
                    "fail."
                ) from None
            raise explain(error, f"stream {stream_arn}", where) from None


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 160 else text[:157] + "..."
