"""What ``/healthz`` answers: healthy while the workers live and checkpoints advance.

A replicator is unhealthy when it is not making progress that it should be making: a
destination has changes waiting for longer than ``stall_after_s`` while no checkpoint
has been written for as long. An idle stream (nothing waiting) is healthy however old
its last checkpoint; a backlog being worked off (checkpoints advancing) is healthy
however large its lag.
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
    """Judge health from metric samples (name, labels, value) and known problems."""
    reasons = list(problems)
    lag_by_shard: dict[str, float] = {}
    checkpoint_by_shard: dict[str, float] = {}
    for name, labels, value in samples:
        shard = labels.get("shard", "")
        if name == LAG:
            lag_by_shard[shard] = max(lag_by_shard.get(shard, 0.0), value)
        elif name == LAST_CHECKPOINT:
            checkpoint_by_shard[shard] = max(checkpoint_by_shard.get(shard, 0.0), value)
    for shard, lag in sorted(lag_by_shard.items()):
        if lag <= stall_after_s:
            continue
        last = checkpoint_by_shard.get(shard, started_at)
        if now - last > stall_after_s:
            reasons.append(
                f"shard {shard}: changes waiting {lag:.0f}s and no checkpoint for {now - last:.0f}s"
            )
    return Health(
        healthy=not reasons,
        reasons=reasons,
        details={
            "shards": {
                shard: {
                    "lag_seconds": round(lag_by_shard.get(shard, 0.0), 3),
                    "last_checkpoint": checkpoint_by_shard.get(shard),
                }
                for shard in sorted(set(lag_by_shard) | set(checkpoint_by_shard))
            }
        },
    )
