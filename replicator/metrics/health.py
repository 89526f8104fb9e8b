"""What ``/healthz`` answers: healthy while the workers live and checkpoints advance.

A replicator is unhealthy when the runtime reports a problem (it is stopping on an
error, a shard's worker died) or when it is not making progress it should be making:
a destination has been behind by more than ``stall_after_s`` on a shard that has not
checkpointed for as long. An idle stream (nothing waiting) is healthy however old its
last checkpoint; a backlog being worked off (checkpoints advancing) is healthy however
large its lag. A shard that has never checkpointed counts from ``started_at``, so a
runtime that has just started is given ``stall_after_s`` to catch up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LAG = "replicator_replication_lag_seconds"
LAST_CHECKPOINT = "replicator_last_checkpoint_timestamp_seconds"


@dataclass
class Health:
    healthy: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "reasons": self.reasons,
            **self.details,
        }


def evaluate(
    samples: Iterable[tuple[str, dict[str, str], float]],
    now: float,
    stall_after_s: float,
    started_at: float,
    problems: Iterable[str] = (),
) -> Health:
    """Judge health from metric samples (name, labels, value) and the runtime's problems."""
    reasons = list(problems)
    lag: dict[str, dict[str, float]] = {}  # shard -> destination -> seconds
    checkpoint_at: dict[str, float] = {}
    for name, labels, value in samples:
        shard = labels.get("shard", "")
        if name == LAG:
            per_destination = lag.setdefault(shard, {})
            destination = labels.get("destination", "")
            per_destination[destination] = max(per_destination.get(destination, 0.0), value)
        elif name == LAST_CHECKPOINT:
            checkpoint_at[shard] = max(checkpoint_at.get(shard, 0.0), value)
    for shard in sorted(lag):
        since_checkpoint = now - checkpoint_at.get(shard, started_at)
        if since_checkpoint <= stall_after_s:
            continue
        for destination, seconds in sorted(lag[shard].items()):
            if seconds > stall_after_s:
                reasons.append(
                    f"destination {destination} is stalled on shard {shard}: "
                    f"{seconds:.0f}s behind and no checkpoint for {since_checkpoint:.0f}s "
                    f"(limit {stall_after_s:g}s)"
                )
    destinations: dict[str, float] = {}
    for per_destination in lag.values():
        for destination, seconds in per_destination.items():
            destinations[destination] = max(destinations.get(destination, 0.0), seconds)
    return Health(
        healthy=not reasons,
        reasons=reasons,
        details={
            "stall_after_s": stall_after_s,
            "destinations": {
                destination: {"lag_seconds": round(seconds, 3)}
                for destination, seconds in sorted(destinations.items())
            },
            "shards": {
                shard: {
                    "lag_seconds": {
                        destination: round(seconds, 3)
                        for destination, seconds in sorted(lag.get(shard, {}).items())
                    },
                    "last_checkpoint": checkpoint_at.get(shard),
                }
                for shard in sorted(set(lag) | set(checkpoint_at))
            },
        },
    )
