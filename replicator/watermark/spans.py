"""Spans of creation times whose changes were never read for a destination.

The watermark says every change created at or before ``W`` is settled at a destination.
Some changes are passed over without ever reaching a processor: a shard that starts at
``LATEST`` skips what came before; a job's first start at ``TRIM_HORIZON`` reads only
what the stream holds (see history.py); a destination added to a job that resumes from
checkpoints never gets what the job had replicated before it joined. Holding the
watermark back for them would hold it forever (they will never come), and letting it
pass them would tell a waiter "replicated" for changes that are not there. So, like
dead letters, they are recorded on the part (the status table item) as spans of
creation times with a reason, and a waiter whose window meets one is told why instead.

A span is stored before any claim that passes it (see publisher.py), so a reader never
sees the watermark pass its changes without it. The replicator only ever widens or adds
spans (a reader may be told changes *may* be missing when they are not, never the
reverse), except that a whole-table ``replicator verify`` that finds (or leaves, after
``--repair``) no difference at a destination removes what its scan covers
(:func:`covered_through`, :mod:`replicator.tools.unread`). A backfill does not: it
copies items, and cannot copy a delete the job never read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

US = 1_000_000
MAX_SPANS_PER_REASON = 8

LATEST = "latest"
JOINED = "joined"
TRIMMED = "trimmed"
EXPIRED = "expired"
BEFORE_STREAM = "before_stream"
EARLIER_STREAM = "earlier_stream"
UNWATCHED = "unwatched"
STATUS_TABLE_LOST = "status_table_lost"
DESTINATION_LOST = "destination_lost"


def passed_over_advice(publishes_watermark: bool) -> str:
    """How changes a ``LATEST`` start passes over are found (when the job publishes a
    watermark) and copied: the end of the lines that warn of such a start."""
    said = "the watermark reports them as never read; " if publishes_watermark else ""
    return said + "`replicator backfill` copies them"


OPEN_US = 253_402_300_799_999_999
"""The end of a span still open (9999-12-31T23:59:59.999999Z): an ``unwatched`` span
while the job runs with the watermark off, closed when it is turned on again."""

_WHY = {
    LATEST: (
        "the job started at kcl.initial_position LATEST (a shard with no checkpoint); "
        "copy them with `replicator backfill`"
    ),
    JOINED: (
        "the destination joined the job then, and the job resumed from its checkpoints; "
        "run `replicator backfill` to it"
    ),
    TRIMMED: (
        "the stream had trimmed them before they were read (source.on_trimmed_data: "
        "restart_from_trim_horizon); copy them with `replicator backfill`"
    ),
    EXPIRED: (
        "the shard's pinned LATEST position expired before any record arrived and "
        "reading went on from the stream's tip; copy them with `replicator backfill`"
    ),
    UNWATCHED: (
        "the job replicated them without the watermark (watermark.enabled: false, or "
        "before its status table held any part of this destination, as when the watermark "
        "is turned on, the table was deleted or emptied while the job was stopped, or the "
        "destination was given another name), which records no dead letter: one "
        "dead-lettered then is not known here"
    ),
    EARLIER_STREAM: (
        "the job's leases were of an earlier stream of the source table (the table "
        "deleted and created again, or its stream disabled and enabled): what that stream "
        "held after their checkpoints, and what was written while no stream was enabled, "
        "was not read; copy them with `replicator backfill --restart`"
    ),
    STATUS_TABLE_LOST: (
        "the status table was deleted while the job ran, and what it recorded then is "
        "gone: dead letters and spans of processes no longer running (a change "
        "dead-lettered before is not known here)"
    ),
    DESTINATION_LOST: (
        "the destination's table answered that it does not exist, or has another key "
        "(deleted or re-created while the job ran), or was created after the job had last "
        "settled changes there (deleted while it was stopped): what was applied there before is "
        "gone; copy it again with `replicator backfill --restart`"
    ),
    BEFORE_STREAM: (
        "the job first started at kcl.initial_position TRIM_HORIZON, which reads only "
        "what the stream still held: changes made before the source's stream was "
        "enabled, or trimmed from it after 24 hours; copy them with `replicator backfill`"
    ),
}

# What became of the changes of a span, where "never read" is not it.
_DONE = {
    UNWATCHED: "were replicated unwatched",
    STATUS_TABLE_LOST: "are not known to be replicated (the status table, deleted since, "
    "held what was known of them)",
    DESTINATION_LOST: "may be gone from this destination",
}
# How ``replicator watermark`` heads a span's line, where "never read" is not it.
_HEADINGS = {
    UNWATCHED: "unwatched",
    STATUS_TABLE_LOST: "status table lost",
    DESTINATION_LOST: "destination table lost",
}

# A copy brings the items; only a comparison also finds the deletes it cannot copy.
_CLEARED_BY = "then `replicator verify` (--repair if it finds differences) clears this"


@dataclass(frozen=True, order=True)
class UnreadSpan:
    """Changes created from ``from_us`` to ``to_us`` (microseconds, both included) may
    never have been read for the destination, for ``reason`` (a short code)."""

    from_us: int
    to_us: int
    reason: str

    def meets(self, since_us: int, until_us: int) -> bool:
        return self.from_us <= until_us and self.to_us >= since_us

    def describe(self) -> str:
        """One line: which changes, why (``LATEST``/``JOINED`` explained), and what clears it."""
        if self.to_us >= OPEN_US:
            which = f"changes created since {_iso(max(self.from_us, 0))}"
        elif self.from_us <= 0:
            which = f"changes created before {_iso(self.to_us)}"
        else:
            which = f"changes created {_iso(self.from_us)}..{_iso(self.to_us)}"
        done = _DONE.get(self.reason, "were never read")
        why = _WHY.get(self.reason, self.reason)
        if self.open:
            why += (
                " (the job runs with watermark.enabled: false: the span ends when a "
                "processor starts with the watermark on again)"
            )
        where = "" if self.reason == DESTINATION_LOST else " for this destination"
        return f"{which} {done}{where}: {why}; {_CLEARED_BY}"

    @property
    def heading(self) -> str:
        return _HEADINGS.get(self.reason, "never read")

    @property
    def open(self) -> bool:
        """An ``unwatched`` span the job has not closed: it runs with the watermark off."""
        return self.reason == UNWATCHED and self.to_us >= OPEN_US

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.from_us / US,
            "to": None if self.open else self.to_us / US,  # open: no end yet
            "to_utc": None if self.open else _iso(self.to_us),
            "reason": self.reason,
            "why": self.describe(),
        }


def merge_spans(spans: Iterable[UnreadSpan]) -> list[UnreadSpan]:
    """Overlapping spans of one reason joined; beyond ``MAX_SPANS_PER_REASON`` of a
    reason, the closest neighbours joined (which only widens them)."""
    by_reason: dict[str, list[tuple[int, int]]] = {}
    for span in spans:
        by_reason.setdefault(span.reason, []).append((span.from_us, span.to_us))
    merged: list[UnreadSpan] = []
    for reason, ranges in by_reason.items():
        joined: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if joined and lo <= joined[-1][1]:
                joined[-1] = (joined[-1][0], max(joined[-1][1], hi))
            else:
                joined.append((lo, hi))
        while len(joined) > MAX_SPANS_PER_REASON:
            gaps = [joined[i + 1][0] - joined[i][1] for i in range(len(joined) - 1)]
            i = gaps.index(min(gaps))
            joined[i : i + 2] = [(joined[i][0], joined[i + 1][1])]
        merged.extend(UnreadSpan(lo, hi, reason) for lo, hi in joined)
    return sorted(merged)


def covered_through(spans: Iterable[UnreadSpan], through_us: int) -> tuple[UnreadSpan, ...]:
    """What remains unread once every change created at or before ``through_us`` is known
    to be at the destination (a complete copy that started after them): spans ending by
    then go, spans reaching past it start after it."""
    remaining = []
    for span in spans:
        if span.to_us <= through_us:
            continue
        remaining.append(UnreadSpan(max(span.from_us, through_us + 1), span.to_us, span.reason))
    return tuple(remaining)


def closed_at(spans: Iterable[UnreadSpan], to_us: int) -> tuple[UnreadSpan, ...]:
    """``spans`` with each open one (:attr:`UnreadSpan.open`) ending at ``to_us``: the
    watermark is on again from then."""
    return tuple(
        UnreadSpan(span.from_us, max(to_us, span.from_us), span.reason) if span.open else span
        for span in spans
    )


def dumps(spans: Iterable[UnreadSpan]) -> str:
    """The status table's ``unread_spans``: JSON ``[[from_us, to_us, reason], ...]``."""
    return json.dumps([[s.from_us, s.to_us, s.reason] for s in spans])


def loads(text: str) -> tuple[UnreadSpan, ...]:
    """The spans :func:`dumps` wrote; ValueError saying what in ``text`` is not that."""
    return tuple(UnreadSpan(lo, hi, why) for lo, hi, why in stored_rows(text, (int, int, str)))


def stored_rows(text: str, shape: tuple[type, ...]) -> list[tuple[Any, ...]]:
    """A JSON list of rows, each a list of values of the types in ``shape`` (an int is no
    bool, a str is not empty): what the status table's JSON attributes hold. ValueError
    saying what is not, since an operator may have edited the item by hand, and reading
    anything else as spans or ranges (or as none) would tell a waiter something untrue."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg}") from None
    if not isinstance(rows, list):
        raise ValueError("not a JSON list")
    for row in rows:
        fits = isinstance(row, list) and len(row) == len(shape)
        if not fits or not all(_is(value, kind) for value, kind in zip(row, shape, strict=True)):
            raise ValueError(f"it holds {json.dumps(row)[:60]}")
    return [tuple(row) for row in rows]


def _is(value: object, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind) and bool(value)


def _iso(us: int) -> str:
    moment = datetime.fromtimestamp(us // US, tz=UTC).replace(microsecond=us % US)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
