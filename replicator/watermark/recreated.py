"""A destination table created after the job last settled changes there.

While the job runs, a write refused because the table is gone records a span
(spans.DESTINATION_LOST, see publisher.ShardWatermark.destination_lost). A table deleted
while the job is stopped is met at the next start instead: ``run`` refuses to start until
it exists, and once the operator has created it again, nothing would say that what the
checkpoints had passed is not in it, and a wait there would be told "replicated" for
changes that are gone. So the start compares the table's creation time with when the
job last settled changes there (the latest raise of any of the destination's parts): a
table created after that gets the same span, up to its creation, and the start says
what to do. Once the job has run against the new table its parts are raised after the
creation, so a later start finds nothing (ended shards' parts keep their old times for
days: the latest part decides, not each).
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from botocore.exceptions import ClientError

from replicator.aws import clients
from replicator.config.destinations import destination_place
from replicator.config.model import DestinationConfig, ResolvedJob
from replicator.exceptions import EnvironmentProblem
from replicator.watermark.spans import DESTINATION_LOST, US, UnreadSpan
from replicator.watermark.table import StatusTable, goes_on_after

log = structlog.get_logger(__name__)

# The worker's clock (a part's ``updated_at``) against DynamoDB's (the table's creation):
# none, so that a stop, a delete and a create in one script are seen (the stop's last
# raise and the creation are a fraction of a second apart); a host whose clock is behind
# by more than the time from a new table's creation to the job's last raise there would
# have it taken for a re-created one (docs/runbook.md: keep the clock synchronised).
CLOCK_MARGIN_S = 0.0


def record_recreated(
    resolved: ResolvedJob, destination: DestinationConfig, created: datetime
) -> bool:
    """Whether the destination's table was created after the job last settled changes
    there; if so, the start logs what to do and records a DESTINATION_LOST span on the
    parts that had settled changes (a write refused, or a part that kept changing, is a
    warning: the start goes on). A status table that does not exist, or that the job
    may not read, tells nothing."""
    table = StatusTable(clients.dynamodb(destination), resolved.watermark_table, destination.label)
    created_s = created.timestamp()
    try:
        parts = table.parts_if_any()
    except (ClientError, EnvironmentProblem) as error:
        if not goes_on_after(error):
            raise
        return False
    # Parts last claimed for another table of the name are a destination given to another
    # table, which the processors record as one that joined (publisher): not this.
    this_table = destination_place(destination)
    settled = [
        part
        for part in parts
        if part.watermark_us > 0
        and part.updated_at is not None
        and part.destination_table in (None, this_table)
    ]
    if not settled:
        return False
    last_settled = max(part.updated_at or 0.0 for part in settled)
    if last_settled >= created_s - CLOCK_MARGIN_S:
        return False
    log.error(
        "destination table created after the job last settled changes there: what the job "
        "replicated to it before is not in it; run `replicator backfill --restart` beside "
        "the running job, then `replicator verify` (runbook); until then a wait there for "
        "changes created before its creation is told they may be gone",
        destination=destination.label,
        table=destination.table,
        created_at=created.astimezone(UTC).isoformat(),
        last_settled_at=datetime.fromtimestamp(last_settled, tz=UTC).isoformat(),
    )
    span = UnreadSpan(0, int(created_s * US), DESTINATION_LOST)
    try:
        for part in settled:
            if span not in part.unread_spans:
                table.add_unread_spans(part.shard, (span,))
    except (ClientError, EnvironmentProblem) as error:
        if not goes_on_after(error):
            raise
        log.warning(
            "the status table's parts could not be told of the re-created destination table: "
            "a wait there may be told 'replicated' for changes it lost, until the backfill "
            "and the verify are done",
            destination=destination.label,
            status_table=resolved.watermark_table,
            error=str(error),
        )
    return True
