"""Make every tombstone table of a job ready before it replicates.

A job writes tombstones beside its source table and beside each destination table, so
at start it creates whichever of those tables is missing (each in its table's region,
through the same endpoint and role), as the KCL creates its lease table.
"""

from __future__ import annotations

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator import aws
from replicator.config.model import ResolvedJob
from replicator.tombstones.table import TombstoneTable

log = structlog.get_logger(__name__)


def tombstone_tables(resolved: ResolvedJob) -> list[TombstoneTable]:
    """The job's tombstone tables (none unless ``active_active.tombstones``)."""
    job = resolved.job
    if not job.active_active.tombstones:
        return []
    places = [
        (
            job.source.region,
            job.source.table,
            job.source.endpoint_url,
            job.source.role_arn,
            job.source.external_id,
        )
    ] + [(d.region, d.table, d.endpoint_url, d.role_arn, d.external_id) for d in job.destinations]
    tables = []
    retention_s = job.active_active.tombstone_retention_hours * 3600
    for region, table, endpoint, role, external_id in places:
        client = aws.client(
            "dynamodb", region, endpoint_url=endpoint, role_arn=role, external_id=external_id
        )
        where = f"{endpoint}, {region}" if endpoint else region
        tables.append(TombstoneTable(client, job.tombstone_table(table), where, retention_s))
    return tables


def prepare(resolved: ResolvedJob) -> None:
    """Create the missing tombstone tables. What only the operator can fix stops the
    start (EnvironmentProblem); an outage does not: the writers retry, and a table that
    stays missing stops the worker as a destination that refuses every write would."""
    for table in tombstone_tables(resolved):
        try:
            table.ensure_exists()
        except (ClientError, BotoCoreError) as error:
            log.error(
                "tombstone table not ready; starting anyway, writes to it are retried",
                table=table.table,
                where=table.where,
                error=str(error),
            )
