"""Under the KCL: the shards whose leases this worker holds, read from the lease table.

The KCL asks a shard for its first read position (GetShardIterator) before it starts the
shard's processor, and retries that for ever when it fails (the call not allowed, the
stream unreachable): the worker holds the lease, no processor runs, nothing is read, and
every other signal (the processors' notes, their gauges) is silent, since there is no
processor to give one. So the launcher reads the leases its worker id holds every
:data:`CHECK_INTERVAL_S`, and ``/healthz`` names a shard held for ``stall_after_s`` with
no processor of it running here (:func:`replicator.runtime.kcl.awaited.unanswered`).

Left out, as leases a worker holds without a processor on purpose: a shard read to its
end (checkpoint ``SHARD_END``), a child shard whose parent is not read to its end yet
(the KCL starts it only then), and a lease being handed over (``checkpointOwner`` set:
KCL 3's graceful handoff). A lease table that cannot be read is said once and the
shards are left as last read: this only feeds ``/healthz``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients
from replicator.aws.errors import error_code
from replicator.config.model import ResolvedJob
from replicator.runtime.kcl.every import Every

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 30.0
_ENDED = "SHARD_END"


def held_shards(rows: list[Mapping[str, Any]], worker_id: str) -> set[str]:
    """The shards of ``rows`` (the lease table's items) that ``worker_id`` holds and
    should be reading now."""
    checkpoints = {
        str(row.get("leaseKey", {}).get("S", "")): str(row.get("checkpoint", {}).get("S", ""))
        for row in rows
    }
    held = set()
    for row in rows:
        if row.get("leaseOwner", {}).get("S") != worker_id:
            continue
        shard = str(row.get("leaseKey", {}).get("S", ""))
        if not shard or checkpoints.get(shard) == _ENDED or "checkpointOwner" in row:
            continue
        parents = row.get("parentShardId", {}).get("SS", [])
        if any(checkpoints.get(parent, _ENDED) != _ENDED for parent in parents):
            continue  # started once its parent is read to its end
        held.add(shard)
    return held


class HeldWatch:
    """Reads the leases ``worker_id`` holds every ``interval_s``; :meth:`since` gives
    each held shard with the time (``clock``) it was first seen held in a row."""

    def __init__(
        self,
        resolved: ResolvedJob,
        worker_id: str,
        *,
        interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolved = resolved
        self.worker_id = worker_id
        self.clock = clock
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._failed = False
        self._ddb = clients.dynamodb(
            resolved.job.source, connect_timeout=2.0, read_timeout=5.0, sdk_retries=False
        )
        every = Every("lease-holds", interval_s, self.turn)
        self.start, self.stop = every.start, every.stop

    def since(self) -> dict[str, float]:
        with self._lock:
            return dict(self._since)

    def turn(self) -> bool:
        """One reading; never ends the watch (False)."""
        try:
            rows = self._scan()
        except (ClientError, BotoCoreError) as error:
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
        held = held_shards(rows, self.worker_id)
        now = self.clock()
        with self._lock:
            self._since = {shard: self._since.get(shard, now) for shard in held}
        return False

    def _scan(self) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = []
        arguments: dict[str, Any] = {
            "TableName": self.resolved.lease_table,
            "ProjectionExpression": "leaseKey, leaseOwner, checkpoint, parentShardId, "
            "checkpointOwner",
        }
        while True:
            page = self._ddb.scan(**arguments)
            rows.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return rows
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
