"""From what was generated and what the fake endpoint saw, to delays and rates.

A record counts as applied when the destination acknowledged a write of its item
holding its image or a newer one: a change squashed into a later one is applied by
that later write, and its delay runs until then. Deletes carry no image, so only
INSERT and MODIFY records are timed; a put that a later delete of the same item
replaced counts as applied by the first write of that item after it was created.
"""

from __future__ import annotations

import argparse
import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.fake_endpoint import LogEntry
from bench.workload import Generated


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 < fraction <= 1) of unsorted ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    ordered = sorted(value for value in values if not math.isnan(value))
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class Delays:
    timed: int
    unapplied: int
    p50_s: float
    p99_s: float
    max_s: float


def apply_delays(generated: Sequence[Generated], log: Sequence[LogEntry], ack_s: float) -> Delays:
    """Delay from each put record's creation to the acknowledgement of its write
    (arrival at the endpoint plus ``ack_s``, the answer's trip back)."""
    puts: dict[str, list[tuple[int, float]]] = defaultdict(list)
    any_write: dict[str, list[float]] = defaultdict(list)
    for arrival, op, key, stamp, outcome in log:
        if outcome != "ok":
            continue
        acknowledged = arrival + ack_s
        any_write[key].append(acknowledged)
        if op == "put" and stamp >= 0:
            puts[key].append((stamp, acknowledged))
    earliest_from: dict[str, tuple[list[int], list[float]]] = {}
    for key, writes in puts.items():
        writes.sort()
        stamps = [stamp for stamp, _ in writes]
        suffix_min = [0.0] * len(writes)
        running = math.inf
        for index in range(len(writes) - 1, -1, -1):
            running = min(running, writes[index][1])
            suffix_min[index] = running
        earliest_from[key] = (stamps, suffix_min)
    for arrivals in any_write.values():
        arrivals.sort()
    delays: list[float] = []
    unapplied = 0
    for record in generated:
        if not record.is_put:
            continue
        created = record.stamp_us / 1e6
        applied = math.inf
        found = earliest_from.get(record.key)
        if found is not None:
            stamps, suffix_min = found
            index = bisect.bisect_left(stamps, record.stamp_us)
            if index < len(stamps):
                applied = suffix_min[index]
        if applied == math.inf:
            arrivals = any_write.get(record.key, [])
            index = bisect.bisect_left(arrivals, created)
            if index < len(arrivals):
                applied = arrivals[index]
        if applied == math.inf:
            unapplied += 1
            continue
        delays.append(max(0.0, applied - created))
    return Delays(
        timed=len(delays),
        unapplied=unapplied,
        p50_s=percentile(delays, 0.50),
        p99_s=percentile(delays, 0.99),
        max_s=max(delays) if delays else math.nan,
    )


def positive_count(text: str) -> int:
    """An option's count of 1 or more: argparse names the option and says what it takes."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a count of 1 or more, not {text!r}")
    return value
