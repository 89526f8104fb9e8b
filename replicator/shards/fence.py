"""Whether another worker holds a shard's lease now, for a processor the KCL runs.

The KCL tells a processor that its lease is gone (``leaseLost``) only between two actions,
and a processor holding a batch because its buffer is full (backpressure: a destination
accepts nothing) answers that batch only once the destination settles changes. The lease
can move meanwhile: KCL 3 moves leases between live workers (its load balancing, after
a graceful handoff that timed out), and a worker that cannot renew its
leases loses them. The new owner reads the shard again from the last checkpoint, while
the old processor goes on retrying the writes it holds: once the destination is back,
they land over the new owner's newer writes, and under ``overwrite`` nothing stops them.

So a processor that has held a batch for a while reads its lease row (one strongly
consistent GetItem), and drops what it holds as soon as the row names another owner,
as the local runtime's workers do (:mod:`replicator.runtime.local.shard_worker`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Set by the KCL launcher for the processors its daemon runs: the daemon's workerId. A
# processor run by any other daemon has no fence (its worker id is not known here).
WORKER_ID_ENV = "REPLICATOR_KCL_WORKER_ID"
NO_OWNER = "no worker (the lease is free to take)"


@dataclass
class LeaseFence:
    """One daemon's view of its lease table: ``worker_id`` is its ``workerId``.
    ``connect`` makes the client, at the first read (most processors never need one)."""

    connect: Callable[[], DynamoDBClient]
    table: str
    worker_id: str
    _client: DynamoDBClient | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = self.connect()
        return self._client

    def taker(self, shard_id: str) -> str | None:
        """Who holds the shard's lease if this worker does not: its owner, or
        :data:`NO_OWNER`. None while the lease is this worker's (a graceful handoff
        from it waits for its checkpoint: ``checkpointOwner``), and when no lease row
        says otherwise (a lease key of another form than the shard id: the KCL's own
        ``leaseLost`` then still ends the processor's writes). The owner is compared by
        name: a lease lost and taken again under this worker id counts as this one's."""
        item = self.client.get_item(
            TableName=self.table,
            Key={"leaseKey": {"S": shard_id}},
            ConsistentRead=True,
            ProjectionExpression="leaseOwner, checkpointOwner",
        ).get("Item")
        if item is None:
            return None
        # As the KCL reads it: during a graceful handoff the worker that still checkpoints
        # (checkpointOwner) holds the lease, not the one it goes to (leaseOwner).
        owner = item.get("checkpointOwner", {}).get("S") or item.get("leaseOwner", {}).get("S")
        if owner == self.worker_id:
            return None
        return owner or NO_OWNER


def worker_id_from_environment() -> str | None:
    """The daemon's worker id when the KCL launcher started it, else None."""
    return os.environ.get(WORKER_ID_ENV) or None
