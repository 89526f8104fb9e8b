"""Under the KCL: the shards whose leases this worker holds, read from the lease table.

The KCL asks a shard for its first read position (GetShardIterator) before it starts the
shard's processor, and retries that for ever when it fails (the call not allowed, the
stream unreachable): the worker holds the lease, no processor runs, nothing is read, and
every other signal (the processors' notes, their gauges) is silent, since there is no
processor to give one. So the launcher reads the leases its worker id holds every
:data:`CHECK_INTERVAL_S`, and ``/healthz`` names a shard held for ``stall_after_s`` with
no processor of it running here (:func:`replicator.runtime.kcl.awaited.unanswered`),
counted from the last time one that had read the shard was seen running.

Left out, as leases a worker holds without a processor on purpose: a shard read to its
end (checkpoint ``SHARD_END``), a child shard whose parent is not read to its end yet
(the KCL starts it only then), and a lease being handed over (``checkpointOwner`` set:
KCL 3's graceful handoff). A lease table that cannot be read is said once and the
shards are left as last read: this only feeds ``/healthz``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients, tables
from replicator.aws.errors import error_code
from replicator.config.model import ResolvedJob
from replicator.exceptions import OperatorError
from replicator.runtime.kcl.every import Every
from replicator.shards.leases import Lease, LeaseTable

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 30.0


def held_shards(leases: Mapping[str, Lease], worker_id: str) -> set[str]:
    """The shards of ``leases`` (the lease table's) that ``worker_id`` holds and should
    be reading now."""
    held = set()
    for shard, lease in leases.items():
        if lease.owner != worker_id or lease.ended or lease.checkpoint_owner is not None:
            continue
        if any(parent in leases and not leases[parent].ended for parent in lease.parents):
            continue  # started once its parent is read to its end
        held.add(shard)
    return held


class HeldWatch:
    """Reads the leases ``worker_id`` holds every :data:`CHECK_INTERVAL_S` (or half
    ``stall_after_s``, if less: a shard is named after that long); :meth:`since` gives
    each held shard with the time (``clock``) since which it has been held without a
    processor of it seen running here."""

    def __init__(
        self,
        resolved: ResolvedJob,
        worker_id: str,
        stall_after_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolved = resolved
        self.clock = clock
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._failed = False
        source = resolved.job.source
        self._leases = LeaseTable(
            clients.dynamodb(source, connect_timeout=2.0, read_timeout=5.0, sdk_retries=False),
            resolved.lease_table,
            owner=worker_id,
            where=tables.where(source.region, source.endpoint_url, source.role_arn),
        )
        interval_s = min(CHECK_INTERVAL_S, max(1.0, stall_after_s / 2))
        every = Every("lease-holds", interval_s, self.turn)
        self.start, self.stop = every.start, every.stop

    def since(self, reading: Collection[str] = ()) -> dict[str, float]:
        """The held shards and since when, ``reading`` (the shards whose processor here
        has been passed a batch) counted from now: the lease row names this worker for a
        while after a processor ends on purpose (a handoff, one the KCL shut down and
        starts again), and a shard held for an hour was named at once, blaming
        GetShardIterator."""
        now = self.clock()
        with self._lock:
            for shard in reading:
                if shard in self._since:
                    self._since[shard] = now
            return dict(self._since)

    def turn(self) -> bool:
        """One reading; never ends the watch (False)."""
        try:
            leases = self._leases.all()
        except (ClientError, BotoCoreError, OperatorError) as error:
            if error_code(error) == "ResourceNotFoundException":
                return False  # a first start: the KCL creates it
            if not self._failed:
                self._failed = True
                log.info(
                    "the lease table could not be read for the shards this worker holds; "
                    "/healthz names none held without a processor until it can",
                    lease_table=self.resolved.lease_table,
                    error=str(error),
                )
            return False
        held = held_shards(leases, self._leases.owner)
        now = self.clock()
        with self._lock:
            self._since = {shard: self._since.get(shard, now) for shard in held}
        return False
