"""Make every tombstone table of a job ready before it replicates.

A job writes tombstones beside its source table and beside each destination table, so
at start it creates whichever of those tables is missing (each in its table's region,
through the same endpoint and role), as the KCL creates its lease table.
"""

from __future__ import annotations

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients
from replicator.aws.tables import where
from replicator.config.model import (
    ConflictPolicyName,
    DestinationConfig,
    JobConfig,
    ResolvedJob,
    SourceConfig,
)
from replicator.tombstones.model import Ranking
from replicator.tombstones.table import TombstoneTable

log = structlog.get_logger(__name__)


def job_ranking(job: JobConfig) -> Ranking | None:
    """What the job's tombstones are ranked by (None without an ordered policy). Every
    destination ranks as the job does whenever tombstones are kept (validated)."""
    conflict = job.conflict
    if conflict.policy is ConflictPolicyName.VERSION and conflict.version_attribute:
        return Ranking(conflict.policy.value, conflict.version_attribute)
    if conflict.policy is ConflictPolicyName.LAST_WRITER_WINS and conflict.timestamp_attribute:
        return Ranking(conflict.policy.value, conflict.timestamp_attribute)
    return None


def tombstone_tables(resolved: ResolvedJob) -> list[TombstoneTable]:
    """The job's tombstone tables (none unless ``active_active.tombstones``)."""
    job = resolved.job
    if not job.active_active.tombstones:
        return []
    places: list[SourceConfig | DestinationConfig] = [job.source, *job.destinations]
    retention_s = job.active_active.tombstone_retention_hours * 3600
    return [
        TombstoneTable(
            clients.dynamodb(place),
            job.tombstone_table(place.table),
            where(place.region, place.endpoint_url),
            retention_s,
        )
        for place in places
    ]


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
