"""What a job's first start from the stream's oldest record (``TRIM_HORIZON``) cannot
read: the changes made before that record.

A stream holds only what was written while it existed, for 24 hours. Items written to
the source table before its stream was enabled, and (a stream older than a day) changes
trimmed from it, never reach a processor, so a waiter would be told "replicated" for
them unless they are recorded as an unread span (spans.BEFORE_STREAM). The span is
decided once per destination, at the job's first start (see publisher.py): a child
shard of a running job starts at ``TRIM_HORIZON`` too, but its parent was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

US = 1_000_000

# DynamoDB Streams keeps a record for 24 hours and may trim it any time after.
STREAM_RETENTION_US = 24 * 3600 * US
# The first reads of every shard of a first start come after this processor's decision
# (a KCL worker takes its leases one after another), and trimming is not to the second:
# the span reaches this much later than 24 hours before the start. A wait for such old
# times is rare, and a span too wide only asks for a backfill and verify.
FIRST_READS_WITHIN_US = 15 * 60 * US
# A table created with its stream: DynamoDB stamps both in the one CreateTable (moto
# about a millisecond apart). A stream enabled later needs the table ACTIVE first,
# seconds after its creation, and nothing can be written before then.
SAME_MOMENT_US = 1 * US


@dataclass(frozen=True)
class SourceHistory:
    """When the source table and the stream being read were created (microseconds)."""

    table_created_us: int
    stream_created_us: int


def stream_created_us(stream_arn: str) -> int:
    """The creation time of a DynamoDB stream from its ARN, whose last part is the
    stream's label (``.../table/T/stream/2026-12-02T06:18:47.364``, UTC); ValueError
    naming the ARN when it has none."""
    _, marker, label = stream_arn.rpartition("/stream/")
    try:
        if not marker:
            raise ValueError
        created = datetime.fromisoformat(label)
    except ValueError:
        raise ValueError(
            f"stream ARN {stream_arn!r} does not end in /stream/<creation time>"
        ) from None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return int(created.timestamp() * US)


def before_stream_through(history: SourceHistory, now_us: int, margin_us: int) -> int | None:
    """The end of the span of changes a first start at ``now_us`` from the stream's
    oldest record cannot read, or None when it can read them all: the later of

    * the stream's creation, when the table is older than its stream (items written
      before it was enabled are in no record), and
    * 24 hours before now (plus the time the first reads may take), when the stream is
      older than that (its oldest records may be trimmed),

    plus ``margin_us`` (the writer's clock may run ahead of AWS's)."""
    ends = []
    if history.stream_created_us - history.table_created_us > SAME_MOMENT_US:
        ends.append(history.stream_created_us)
    trimmable_us = now_us - STREAM_RETENTION_US + FIRST_READS_WITHIN_US
    if history.stream_created_us < trimmable_us:
        ends.append(trimmable_us)
    return max(ends) + margin_us if ends else None
