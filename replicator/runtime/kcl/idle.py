"""Under the KCL: a line when this worker holds no shard for a while.

The KCL's leader assigns leases, and a worker that holds none says nothing of its own:
the daemon's lines name the leader (a worker killed a moment ago, it may be) and
``/healthz`` is ok with no shards. A replacement for a worker that died waits for the
dead worker's leases to expire (``kcl.failover_time_ms``) and, on a first start, for the
leader lock (about two minutes with KCL 3.1), so minutes without a shard can be normal;
so can a worker beside others of its task that hold every shard. One info line per such
spell, saying which, saves the on-call from reading the KCL's logs to find out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from replicator.runtime.kcl.every import Every

log = structlog.get_logger(__name__)

IDLE_AFTER_S = 60.0
CHECK_INTERVAL_S = 5.0


@dataclass(eq=False)
class IdleWatch:
    """Counts the daemon's processors every ``interval_s``; after ``after_s`` without
    one, logs ``this worker holds no shard`` once, until a shard is held again."""

    shards: Callable[[], int]
    task: str
    failover_time_ms: int
    after_s: float = IDLE_AFTER_S
    interval_s: float = CHECK_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    _idle_since: float | None = field(init=False)
    _said: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._idle_since = self.clock()  # a start holds no shard yet
        every = Every("idle-watch", self.interval_s, self.turn)
        self.start, self.stop = every.start, every.stop

    def turn(self) -> bool:
        """One check; never ends the watch (False)."""
        now = self.clock()
        if self.shards() > 0:
            self._idle_since, self._said = None, False
            return False
        if self._idle_since is None:
            self._idle_since = now
        if not self._said and now - self._idle_since >= self.after_s:
            self._said = True
            log.info(
                "this worker holds no shard",
                for_s=round(now - self._idle_since),
                note=(
                    "the KCL's leader assigns leases: expected while other workers of task "
                    f"{self.task} hold every shard; otherwise a stopped worker's leases are "
                    f"taken once they expire (kcl.failover_time_ms: {self.failover_time_ms} "
                    "ms), and a first start waits for the leader lock (about 2 minutes); "
                    "a shard whose lease this worker holds but whose reading the KCL cannot "
                    "start (GetShardIterator not allowed, the stream unreachable) has no "
                    "processor either: the daemon's kcl warnings say so"
                ),
            )
        return False
