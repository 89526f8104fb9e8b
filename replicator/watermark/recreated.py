"""A destination table created after the job last settled changes there.

While the job runs, a write refused because the table is gone records a span
(spans.DESTINATION_LOST, see publisher.ShardWatermark.destination_lost). A table deleted
while the job is stopped is met at the next start instead: ``run`` refuses to start until
it exists, and once the operator has created it again, nothing would say that what the
checkpoints had passed is not in it, and a wait there would be told "replicated" for
changes that are gone. So the start compares the table's creation time with the status
table's parts: a part that settled changes there (a watermark) before the table existed
gets the same span, up to the table's creation, and the start says what to do.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from botocore.exceptions import ClientError

from replicator.aws import clients
from replicator.aws.errors import error_code
from replicator.config.model import DestinationConfig, ResolvedJob
from replicator.exceptions import EnvironmentProblem
from replicator.watermark.spans import DESTINATION_LOST, US, UnreadSpan
from replicator.watermark.table import StatusTable

log = structlog.get_logger(__name__)

_DENIED = frozenset({"AccessDeniedException", "AccessDenied"})


def record_recreated(
    resolved: ResolvedJob, destination: DestinationConfig, created: datetime
) -> bool:
    """Record a DESTINATION_LOST span on the destination's status table when the table
    was created after a part last settled changes there (True: it was, and the start
    logged what to do). A status table that does not exist, or that the job may not
    read, tells nothing: the job goes on as before."""
    table = StatusTable(clients.dynamodb(destination), resolved.watermark_table, destination.label)
    created_s = created.timestamp()
    try:
        parts = table.parts_if_any()
    except (ClientError, EnvironmentProblem) as error:
        if isinstance(error, ClientError) and error_code(error) not in _DENIED:
            raise
        return False
    # Parts last claimed for another table of the name are a destination given to another
    # table, which the processors record as one that joined (publisher): not this.
    this_table = f"{destination.region}/{destination.table}"
    settled_before = [
        part
        for part in parts
        if part.watermark_us > 0
        and part.updated_at is not None
        and part.updated_at < created_s
        and part.destination_table in (None, this_table)
    ]
    if not settled_before:
        return False
    span = UnreadSpan(0, int(created_s * US), DESTINATION_LOST)
    for part in settled_before:
        if span not in part.unread_spans:
            table.add_unread_spans(part.shard, (span,))
    log.error(
        "destination table created after the job last settled changes there: what the job "
        "replicated to it before is not in it; run `replicator backfill --restart`, then "
        "`replicator verify` (runbook); until then a wait there for changes created before "
        "its creation is told they may be gone",
        destination=destination.label,
        table=destination.table,
        created_at=created.isoformat(),
        last_settled_at=datetime.fromtimestamp(
            max(part.updated_at or 0.0 for part in settled_before), tz=created.tzinfo
        ).isoformat(),
    )
    return True
