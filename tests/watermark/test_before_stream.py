"""A job's first start at TRIM_HORIZON reads only what the stream holds: items written
before the stream was enabled, and records trimmed from a stream older than a day, are
recorded as a ``before_stream`` unread span, and a table created with its stream (written
and waited on at once) gets none. A child shard of a running job starts at TRIM_HORIZON
too and gets none; a source that cannot be described gets the widest span."""

from __future__ import annotations

import pytest

from replicator.watermark.history import (
    SourceHistory,
    before_stream_through,
    stream_created_us,
)

S = 1_000_000
HOUR = 3600 * S
T0 = 1_700_000_000 * S
NOW = T0 + 48 * HOUR  # when the processors in these tests start
MARGIN = 2 * S


# -- when the span ends ---------------------------------------------------------------------


def test_a_table_created_with_its_stream_a_moment_ago_gets_no_span() -> None:
    for apart in (0, 1_000, S):  # DynamoDB stamps both in the one CreateTable
        history = SourceHistory(NOW - HOUR, NOW - HOUR + apart)
        assert before_stream_through(history, NOW, MARGIN) is None


def test_a_stream_enabled_after_the_table_was_created_ends_the_span_at_its_creation() -> None:
    stream = NOW - HOUR
    history = SourceHistory(stream - S - 1, stream)  # just over a second before
    assert before_stream_through(history, NOW, MARGIN) == stream + MARGIN
    assert before_stream_through(SourceHistory(T0, stream), NOW, 0) == stream


def test_a_stream_older_than_a_day_ends_the_span_24_hours_before_the_start() -> None:
    """Its oldest records may be trimmed; the span reaches 15 minutes past 24 hours
    before the start, for the first reads of every shard and trimming's slack."""
    created_with_it = SourceHistory(T0, T0)  # 48 hours before NOW
    horizon = NOW - 24 * HOUR + 15 * 60 * S
    assert before_stream_through(created_with_it, NOW, MARGIN) == horizon + MARGIN
    # The later clock moves the end with it: the clock is the start's.
    assert before_stream_through(created_with_it, NOW + HOUR, 0) == horizon + HOUR
    # Enabled after the table, long ago: trimming is the later of the two.
    assert before_stream_through(SourceHistory(T0 - HOUR, T0), NOW, 0) == horizon
    # A stream a little younger than that holds all its records still.
    young = SourceHistory(horizon, horizon)
    assert before_stream_through(young, NOW, MARGIN) is None


def test_the_streams_creation_is_read_from_its_arn() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-02T06:18:47.364"
    assert stream_created_us(arn) == 1_796_192_327_364_000
    moto = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-12-02T06:18:47.364312"
    assert stream_created_us(moto) == 1_796_192_327_364_312
    for bad in ("arn:aws:kinesis:us-east-1:1:stream/orders", "arn:aws:dynamodb:x:1:table/t"):
        with pytest.raises(ValueError, match="does not end in /stream/<creation time>"):
            stream_created_us(bad)
