"""Whose parts a status table holds: the source each part records.

The status table is named after the task (``<task_name>-watermark``) and keyed by the
destination's label and the shard's id. Two jobs that read different sources and were
given one ``task_name`` (a job file copied from another job's in an active-active mesh,
its task name left as it was) each have a lease table of their own in their source's
region, so the lease table's owner tag (replicator/shards/ownership.py) does not tell
them apart; but where they replicate to the same destination they publish into one
status table under one label, and their shards' ids may collide (moto gives every
stream the same one). Each would raise the other's parts, and a waiter be told
"replicated" for a change that never arrived.

So each part records the source of the job that registered or raised it (the owner
tag's value, :func:`replicator.shards.ownership.source_identity`), and a job whose
destination holds a part of another source stops at its start (exit 3):
:func:`refuse_other_sources` before anything is created (called with the owner tag's
check), the processor when it first reads the table (publisher.ShardWatermark._learn),
and a raise's condition for two jobs that start at once. Parts written before the
source was recorded have none, and are taken for the job's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients, tables
from replicator.config.model import ResolvedJob
from replicator.exceptions import EnvironmentProblem, ReplicatorError
from replicator.shards import ownership
from replicator.watermark.table import SOURCE, StatusTable, another_jobs_parts


def job_source(resolved: ResolvedJob) -> Callable[[], str]:
    """The job's source as its parts record it (the lease table's owner tag), for a
    processor's publisher: asked once, at the first read of a status table (one
    DescribeTable of the source, unless the job names its stream's ARN)."""
    source = resolved.job.source
    known: list[str] = []
    lock = threading.Lock()

    def identity() -> str:
        with lock:
            if not known:
                arn = source.stream.arn or (
                    clients.dynamodb(source)
                    .describe_table(TableName=source.table)["Table"]
                    .get("LatestStreamArn")
                )
                if not arn:
                    raise EnvironmentProblem(f"source table {source.table} has no stream")
                known.append(ownership.source_identity(resolved, arn))
            return known[0]

    return identity


def refuse_other_sources(resolved: ResolvedJob, identity: str) -> None:
    """At a run's start, before it creates anything: EnvironmentProblem (exit 3, one line)
    when a destination's status table holds a part that records another source than
    ``identity`` (this job's, as :func:`ownership.source_identity` names it). Only
    ``source`` is read, one Query per destination. A status table that does not exist,
    or cannot be read (no permission, an endpoint that fails, an item whose ``source``
    does not read), leaves the check to the processors, which make it again when they
    first read the table (and say what fails)."""
    if not resolved.publishes_watermark:
        return
    for destination in resolved.job.destinations:
        table = StatusTable(
            clients.dynamodb(destination), resolved.watermark_table, destination.label
        )
        try:
            parts = table.parts_if_any(SOURCE)
        except (ClientError, BotoCoreError, ReplicatorError):
            continue
        other = next((part for part in parts if part.source not in (None, identity)), None)
        if other is None or other.source is None:
            continue
        where = tables.where(destination.region, destination.endpoint_url, destination.role_arn)
        raise another_jobs_parts(
            table.name, where, destination.label, other.shard, other.source, identity, reader=False
        )
