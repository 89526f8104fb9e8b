"""The default task name, which is also the KCL application name and the lease table's name.

For one destination it is the archived Java cross-region replicator's name, so a job
moved from that library finds the same lease table:
``DynamoDBCrossRegionReplication`` + md5 hex of sourceRegion + sourceTable +
destinationRegion + destinationTable (no separators). For several destinations the
region and table of every destination are appended in sorted order, so that
reordering the destinations list does not move the job to a new lease table.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replicator.config.model import JobConfig

PREFIX = "DynamoDBCrossRegionReplication"


def default_task_name(job: JobConfig) -> str:
    parts = [job.source.region, job.source.table]
    for region, table in sorted((d.region, d.table) for d in job.destinations):
        parts += [region, table]
    digest = hashlib.md5("".join(parts).encode("utf-8"), usedforsecurity=False).hexdigest()
    return PREFIX + digest
