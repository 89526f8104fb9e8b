"""Under the KCL: whether the source table still has the stream the daemon reads.

The daemon is given the stream's ARN at start (``dynamoDBStreamArn``). A table deleted
and created again under its name, or whose stream was disabled, has another latest
stream or none, and the old one still answers (DynamoDB keeps it 24 hours, disabled):
the KCL would read it to its end and then wait for ever, every lag at 0, while the new
stream fills. :class:`StreamWatch` asks the table every ``interval_s`` from a thread of
the launcher, as the local runtime asks at each shard sync
(:func:`replicator.runtime.preflight.stream_replaced`), and on a replaced stream asks the
daemon for its clean stop; ``run`` then ends with exit 3 and the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients, tables
from replicator.aws.errors import error_code
from replicator.config.model import ResolvedJob
from replicator.runtime import preflight
from replicator.runtime.kcl.every import Every

log = structlog.get_logger(__name__)

WATCH_INTERVAL_S = 30.0


class StreamWatch:
    def __init__(
        self,
        resolved: ResolvedJob,
        stream_arn: str,
        on_replaced: Callable[[], None],
        interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self.resolved = resolved
        self.stream_arn = stream_arn
        self.on_replaced = on_replaced
        # Why the stream is no longer the table's, once found (then the watch ends).
        self.replaced: str | None = None
        self._ddb = clients.dynamodb(resolved.job.source)
        self._every = Every("stream-watch", interval_s, self._turn)
        self.start, self.stop = self._every.start, self._every.stop

    def _turn(self) -> bool:
        """Whether the stream was found replaced (the watch then ends)."""
        source = self.resolved.job.source
        try:
            why = preflight.stream_replaced(self.resolved, self._ddb, self.stream_arn)
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                # Throttling, access taken away: the KCL's own reads say more; asked
                # again at the next turn.
                log.warning("could not ask the source table for its stream", error=str(error))
                return False
            where = tables.where(source.region, source.endpoint_url, source.role_arn)
            why = (
                f"source table {source.table} at {where} was deleted while the job ran "
                f"(the daemon reads its stream {self.stream_arn}); "
                f"{preflight.SOURCE_DELETED_ADVICE}"
            )
        except BotoCoreError as error:  # no answer: asked again at the next turn
            log.warning("could not ask the source table for its stream", error=str(error))
            return False
        if why is None:
            return False
        log.error("the source table's stream was replaced or disabled; stopping the daemon")
        self.replaced = why
        self.on_replaced()
        return True
