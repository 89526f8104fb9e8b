"""Under the KCL: a launcher thread that claims the lease table for the job's source
once the KCL has created it, and reads the claim again while the daemon runs (see
:mod:`replicator.shards.ownership`)."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients
from replicator.config.model import ResolvedJob
from replicator.exceptions import EnvironmentProblem
from replicator.runtime.kcl.every import Every
from replicator.shards.ownership import CHECK_INTERVAL_S, CLAIM_INTERVAL_S, Claim, claim

log = structlog.get_logger(__name__)


class ClaimWatch:
    """Claims the lease table once the KCL has created it (a first start), then reads its
    tag again every :data:`CHECK_INTERVAL_S` while the daemon runs; on a table another
    job's run has claimed, records why (``refused``) and asks the daemon for its clean
    stop (``on_refused``)."""

    def __init__(
        self,
        resolved: ResolvedJob,
        identity: str,
        on_refused: Callable[[], None],
        *,
        claimed: bool = False,
        interval_s: float = CLAIM_INTERVAL_S,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.resolved = resolved
        self.identity = identity
        self.on_refused = on_refused
        self.claimed = claimed
        self.refused: str | None = None
        self._ddb = clients.dynamodb(resolved.job.source)
        self._every = Every(
            "lease-claim",
            lambda: check_interval_s if self.claimed else interval_s,
            self._turn,
        )
        self.start, self.stop, self.join = self._every.start, self._every.stop, self._every.join

    def _turn(self) -> bool:
        """Whether the watch ends (the table is another job's, or its tag cannot be read:
        said once, not every minute)."""
        try:
            found = claim(self.resolved, self.identity, self._ddb)
            self.claimed = found is not Claim.ABSENT
            return found is Claim.UNCHECKED
        except EnvironmentProblem as problem:
            log.error("the lease table is another job's; stopping the daemon")
            self.refused = str(problem)
            self.on_refused()
            return True
        except (ClientError, BotoCoreError) as error:  # asked again at the next turn
            log.warning("could not read the lease table's owner tag", error=str(error))
            return False
