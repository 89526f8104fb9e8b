"""A job that starts with the watermark off leaves word of it in the status tables.

The status tables outlive the setting. A job run with the watermark on, then off, then
on again resumes from checkpoints that passed changes nothing followed: a dead letter
among them is recorded nowhere, and the watermark, on again, would pass it and tell a
waiter "replicated" for a change that never arrived. So a job that starts with the
watermark off adds to every part of a status table that exists an *open* unread span
(reason ``unwatched``) from the part's watermark on (table.StatusTable.open_unwatched).
Readers combine spans as they do any other, so a wait whose window meets it is told why
(exit 4) instead of "replicated"; the first processor that starts with the watermark on
again ends it at its own start (publisher.ShardWatermark._decided). A destination whose
status table does not exist never had a watermark: nothing is written.

The job must be switched whole: a host still running with the watermark off after one
started with it on follows changes that no span covers.
"""

from __future__ import annotations

import structlog
from botocore.exceptions import ClientError

from replicator.aws import clients
from replicator.config.model import DestinationConfig, ResolvedJob
from replicator.exceptions import EnvironmentProblem
from replicator.watermark.table import StatusTable, goes_on_after

log = structlog.get_logger(__name__)


def record_watermark_off(resolved: ResolvedJob, destination: DestinationConfig) -> None:
    """Open an ``unwatched`` span on every part of the destination's status table, if the
    job's watermark is off and the table exists. A table the job may not read or write
    (its IAM policy, without the watermark, need not grant it), an item of it that does
    not read, or a part that kept changing is named in a warning; other errors
    (ClientError, BotoCoreError) are raised for the caller to explain. The caller asks
    only for a job that could publish one (a DynamoDB stream's) and does not."""
    table = StatusTable(clients.dynamodb(destination), resolved.watermark_table, destination.label)
    try:
        opened = table.open_unwatched()
    except (ClientError, EnvironmentProblem) as error:
        # Refused, an item that does not read (a hand edit; readers refuse it until it is
        # corrected), or a part that kept changing: the job goes on, as it would with the
        # watermark on, and says what that risks.
        if not goes_on_after(error):
            raise
        log.warning(
            "watermark.enabled is false and the status table's parts could not be marked: "
            "if the watermark was on before, a wait there may be told 'replicated' for a "
            "change dead-lettered while it is off",
            destination=destination.label,
            status_table=resolved.watermark_table,
            error=str(error),
        )
        return
    if opened:
        log.warning(
            "watermark.enabled is false: the status table's parts now say that changes "
            "from their watermark on are replicated unwatched, and a wait there is told "
            "so until the watermark is on again and `replicator verify` clears it",
            destination=destination.label,
            status_table=resolved.watermark_table,
            parts=opened,
        )
