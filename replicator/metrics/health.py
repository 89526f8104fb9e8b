"""What ``/healthz`` answers: healthy while the workers live and every destination progresses.

A replicator is unhealthy when the runtime reports a problem (it is stopping on an
error, a shard's worker died, the stream cannot be read) or when a destination is not
making progress it should be making: it has been behind by more than ``stall_after_s``
on a shard, has writes in flight, and no change of that shard has settled there
(applied, lost a conflict, dead-lettered) for as long. Progress is judged per
destination, not by the shard's checkpoint: the checkpoint legitimately moves past
changes that newer ones replaced, so it keeps moving while a destination whose items
keep changing accepts nothing. An idle stream (nothing waiting) is healthy however old
its last write; a backlog being worked off (writes settling) is healthy however large
its lag. A destination that has never settled anything on a shard counts from the
first start of a processor of the shard in this runtime (``SHARD_STARTED``, the earliest
across its processes: a processor restarting over and over does not restart the count),
so a shard taken over with a backlog long after the runtime started is given
``stall_after_s`` from then; failing that, from ``started_at``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

LAG = "replicator_replication_lag_seconds"
LAST_CHECKPOINT = "replicator_last_checkpoint_timestamp_seconds"
PROGRESS = "replicator_destination_progress_timestamp_seconds"
IN_FLIGHT = "replicator_in_flight_writes"
RESOLVER_CALLS = "replicator_resolver_calls_running"
DEAD_LETTERS_STORING = "replicator_dead_letters_storing"
BEHIND = "replicator_millis_behind_latest"
SHARD_STARTED = "replicator_shard_started_timestamp_seconds"
# Lag within this much of the shard's own millisBehindLatest is the reader's distance from
# the tip, not a change the destination holds back (the two are rounded apart).
READER_LAG_SLACK_S = 1.0


@dataclass
class Health:
    healthy: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # The stalled destinations, each with its first reason.
    stalled: dict[str, str] = field(default_factory=dict)

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
    lag_floors: Mapping[str, float] | None = None,
) -> Health:
    """Judge health from metric samples (name, labels, value) and the runtime's problems.
    ``lag_floors`` (by shard, see replicator/metrics/server.py ``LagFloors``) raise the
    lag shown, not the lag the stall rule judges: a processor that does not answer
    leaves its gauges (writes in flight, settled times) as they were, and its
    destinations would be named stalled for what is the processor's fault, which the
    runtime's own reason names."""
    reasons = list(problems)
    stalled: dict[str, str] = {}
    lag: dict[str, dict[str, float]] = {}  # shard -> destination -> seconds
    checkpoint_at: dict[str, float] = {}
    progress_at: dict[tuple[str, str], float] = {}  # (shard, destination) -> unix time
    in_flight: dict[str, float] = {}  # destination -> writes being sent, all shards
    resolving: dict[tuple[str, str], float] = {}  # (shard, destination) -> resolver calls
    storing: dict[tuple[str, str], float] = {}  # (shard, destination) -> letters not taken
    reader_behind: dict[str, float] = {}  # shard -> seconds the reader is behind the tip
    first_started: dict[str, float] = {}  # shard -> when a processor of it first started
    for name, labels, value in samples:
        shard = labels.get("shard", "")
        if name == LAG:
            per_destination = lag.setdefault(shard, {})
            destination = labels.get("destination", "")
            per_destination[destination] = max(per_destination.get(destination, 0.0), value)
        elif name == LAST_CHECKPOINT:
            checkpoint_at[shard] = max(checkpoint_at.get(shard, 0.0), value)
        elif name == PROGRESS:
            series = (shard, labels.get("destination", ""))
            progress_at[series] = max(progress_at.get(series, 0.0), value)
        elif name == IN_FLIGHT:
            destination = labels.get("destination", "")
            in_flight[destination] = in_flight.get(destination, 0.0) + value
        elif name == RESOLVER_CALLS:
            series = (shard, labels.get("destination", ""))
            resolving[series] = resolving.get(series, 0.0) + value
        elif name == DEAD_LETTERS_STORING:
            series = (shard, labels.get("destination", ""))
            storing[series] = storing.get(series, 0.0) + value
        elif name == BEHIND:
            reader_behind[shard] = max(reader_behind.get(shard, 0.0), value / 1000.0)
        elif name == SHARD_STARTED:
            first_started[shard] = min(first_started.get(shard, value), value)
    # Judged on the lag as the body shows it (to the millisecond), so that a stalled
    # destination is never shown at its limit: 3.0004 s is 3.0 s, not past a 3 s limit.
    lag = {
        shard: {destination: round(seconds, 3) for destination, seconds in per_shard.items()}
        for shard, per_shard in lag.items()
    }
    for shard in sorted(lag):
        for destination, seconds in sorted(lag[shard].items()):
            # Nothing in flight: nothing is held back there (the lag is the reader's
            # millisBehindLatest, a reader catching up); a stuck destination always has
            # the writes it retries in flight. The in-flight gauge counts every shard's
            # writes to the destination, so a shard whose lag is only its reader's
            # distance from the tip is excused as well: it holds nothing back there
            # (a stuck destination's lag is the age of the change it holds, which grows
            # past the reader's).
            if seconds <= stall_after_s or not in_flight.get(destination, 1.0):
                continue
            if seconds <= reader_behind.get(shard, 0.0) + READER_LAG_SLACK_S:
                continue
            since_progress = now - progress_at.get(
                (shard, destination), first_started.get(shard, started_at)
            )
            if since_progress > stall_after_s:
                reasons.append(
                    f"destination {destination} is stalled on shard {shard}: "
                    f"{seconds:.0f}s behind and nothing settled there for "
                    f"{since_progress:.0f}s (limit {stall_after_s:g}s)"
                    + _resolving(resolving.get((shard, destination), 0.0))
                    + _storing(storing.get((shard, destination), 0.0))
                )
                stalled.setdefault(destination, reasons[-1])
    for shard, floor in (lag_floors or {}).items():
        per_shard = lag.get(shard, {})
        for destination, seconds in per_shard.items():
            per_shard[destination] = max(seconds, round(now - floor, 3))
    destinations: dict[str, float] = {}
    for per_destination in lag.values():
        for destination, seconds in per_destination.items():
            destinations[destination] = max(destinations.get(destination, 0.0), seconds)
    return Health(
        healthy=not reasons,
        reasons=reasons,
        stalled=stalled,
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


def _resolving(calls: float) -> str:
    """What a stalled destination waits on when its custom resolver is running: the
    user's code, not the destination (whose reads answered, or it would not run). Worded
    alike for any count: the log's watch compares reasons without their numbers."""
    if calls < 1:
        return ""
    return (
        f"; the custom resolver is running there (calls now: {int(calls)}): a resolver "
        "that does not return holds its change (conflict.resolver)"
    )


def _storing(letters: float) -> str:
    """What a stalled destination waits on when its dead letters are not taken: the
    dead-letter target (a queue that does not answer, a file that cannot be written),
    not the destination, which may take every other write. Worded alike for any count."""
    if letters < 1:
        return ""
    return (
        f"; its dead letters wait for the dead-letter target (now: {int(letters)}): the "
        "target (dead_letter) holds those changes, not the destination; the log says why"
    )


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class Watch:
    """Tells the log when health changes: ``unhealthy`` with the reasons and the stalled
    destinations when it turns unhealthy or its problems change (a destination stalls, a
    problem is added or gone), ``healthy again`` naming what it was, both at warning.
    ``/healthz`` alone answers only who asks: at ``logging.level: warning`` a destination
    that stalled logged nothing at all while the probe said 503. Reasons are compared
    without their numbers (seconds behind grow at every look)."""

    def __init__(self) -> None:
        self._problems: frozenset[str] = frozenset()
        self._said: Health | None = None

    def look(self, health: Health) -> None:
        problems = frozenset(_NUMBER.sub("N", reason) for reason in health.reasons)
        if problems == self._problems:
            return
        if problems:
            log.warning(
                "unhealthy",
                reasons=health.reasons,
                stalled_destinations=sorted(health.stalled),
            )
        else:
            was = self._said
            log.warning(
                "healthy again",
                was=was.reasons if was else [],
                stalled_destinations=sorted(was.stalled) if was else [],
            )
        self._problems, self._said = problems, health
