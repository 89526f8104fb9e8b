"""A job's first start at TRIM_HORIZON reads only what the stream holds: items written
before the stream was enabled, and records trimmed from a stream older than a day, are
recorded as a ``before_stream`` unread span, and a table created with its stream (written
and waited on at once) gets none. A child shard of a running job starts at TRIM_HORIZON
too and gets none; a source that cannot be described gets the widest span."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from replicator import wiring
from replicator.config.loader import load_job
from replicator.metrics import Metrics
from replicator.shards.stream import Shard
from replicator.watermark.history import (
    SourceHistory,
    before_stream_through,
    stream_created_us,
)
from replicator.watermark.parts import combine
from replicator.watermark.publisher import ShardWatermark
from replicator.watermark.spans import BEFORE_STREAM, JOINED, UnreadSpan
from replicator.watermark.table import StatusTable
from tests.support.aws import client
from tests.support.e2e import Job, table_before_its_stream
from tests.support.status_table import FakeStatusTable

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


# -- what the source says, against moto ----------------------------------------------------


def history_of(job: Job) -> SourceHistory:
    return wiring.source_history(load_job(job.path))()


def test_the_source_is_described_as_created_with_or_before_its_stream(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    fresh = Job(moto_endpoint, unique("bs"), tmp_path)
    assert before_stream_through(history_of(fresh), int(time.time() * S), 0) is None

    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    legacy = unique("bs-legacy")
    table_before_its_stream(ddb, legacy)
    stream = ddb.describe_table(TableName=legacy)["Table"]["LatestStreamArn"]
    job = Job(moto_endpoint, unique("bs"), tmp_path, source_of=legacy)
    history = history_of(job)
    assert history.stream_created_us == stream_created_us(stream)
    assert history.stream_created_us - history.table_created_us > S
    assert before_stream_through(history, int(time.time() * S), 0) == history.stream_created_us


# -- the publisher --------------------------------------------------------------------------


def publisher(
    table: StatusTable | list[FakeStatusTable],
    history: Callable[[], SourceHistory],
    *,
    shard: str = "s1",
    at_horizon: bool = True,
    resumed: bool = False,
    shards: tuple[Shard, ...] = (Shard("s1", None, True), Shard("s2", "s1", False)),
) -> ShardWatermark:
    tables = table if isinstance(table, list) else [table]
    watermark = ShardWatermark(
        shard,
        {status.destination: status for status in tables},
        lambda: list(shards),
        Metrics(),
        interval_s=3600,  # published by the test
        margin_s=MARGIN / S,
        reads_follow_answers=True,
        source_history=history,
        clock=lambda: NOW / S,
    )
    watermark.begin(resumed=resumed, at_horizon=at_horizon)
    return watermark


@pytest.fixture
def table(moto_endpoint: str, unique: Callable[[str], str]) -> StatusTable:
    status = StatusTable(
        client("dynamodb", "eu-west-1", moto_endpoint), unique("status"), "eu-west-1/replica"
    )
    status.ensure_exists()
    return status


def legacy() -> SourceHistory:
    return SourceHistory(NOW - 2 * HOUR, NOW - HOUR)  # the stream enabled an hour later


def test_a_first_start_stores_the_span_before_it_claims(table: StatusTable) -> None:
    first = publisher(table, legacy)
    try:
        # Held: the checkpoint must not pass the start before the span is stored.
        assert first.unstored() == [table.destination]
        first.empty_read(previous_answer_at=(NOW + 5 * S) / S, received_at=0)
        first.publish()
        part = table.part("s1")
        assert part is not None and part.watermark_us == NOW + 5 * S - MARGIN - 1
        assert part.unread_spans == (UnreadSpan(0, NOW - HOUR + MARGIN, BEFORE_STREAM),)
        assert first.unstored() == []
        mark = combine(table.destination, table.parts())
        said = mark.unread_between(0, NOW - HOUR)[0].describe()
        assert "kcl.initial_position TRIM_HORIZON" in said and "replicator backfill" in said
    finally:
        first.close()


def test_a_child_shard_of_a_running_job_gets_no_span(table: StatusTable) -> None:
    """The parent's processor registered the child: the status table has parts, so the
    job is running, and the child's TRIM_HORIZON follows its parent's reading."""
    parent = publisher(table, lambda: SourceHistory(NOW, NOW), shard="s1")
    parent.empty_read(previous_answer_at=(NOW + 5 * S) / S, received_at=0)
    parent.publish()
    parent.close()
    described: list[int] = []

    def history() -> SourceHistory:
        described.append(1)
        return legacy()

    child = publisher(table, history, shard="s2")
    try:
        child.empty_read(previous_answer_at=(NOW + 9 * S) / S, received_at=0)
        child.publish()
        assert combine(table.destination, table.parts()).unread_spans == ()
        assert described == []  # the source is not even described
    finally:
        child.close()


def first_spans(history: Callable[[], SourceHistory]) -> tuple[UnreadSpan, ...]:
    """The spans a first start at TRIM_HORIZON stores on its part (in memory)."""
    table = FakeStatusTable("eu-west-1/replica")
    watermark = publisher(table, history)
    try:
        watermark.empty_read(previous_answer_at=(NOW + 5 * S) / S, received_at=0)
        watermark.publish()
    finally:
        watermark.close()
    (part,) = [part for part in table.stored() if part.shard == "s1"]
    return part.unread_spans


def test_a_first_start_on_a_stream_older_than_a_day_is_told_by_the_publishers_clock() -> None:
    end = NOW - 24 * HOUR + 15 * 60 * S + MARGIN
    spans = first_spans(lambda: SourceHistory(T0, T0))  # 48 hours before NOW
    assert spans == (UnreadSpan(0, end, BEFORE_STREAM),)


def test_a_source_that_cannot_be_described_gets_the_widest_span() -> None:
    def refused() -> SourceHistory:
        raise RuntimeError("AccessDeniedException: not allowed to DescribeTable")

    with structlog.testing.capture_logs() as logged:
        spans = first_spans(refused)
    assert spans == (UnreadSpan(0, NOW + MARGIN, BEFORE_STREAM),)
    (error,) = [e for e in logged if e["log_level"] == "error"]
    assert "could not tell when the source table and its stream were created" in error["event"]
    assert "AccessDeniedException" in error["error"]


def test_a_start_that_is_not_at_trim_horizon_describes_nothing(table: StatusTable) -> None:
    def history() -> Any:
        raise AssertionError("described")

    watermark = publisher(table, history, at_horizon=False)
    try:
        watermark.empty_read(previous_answer_at=(NOW + 5 * S) / S, received_at=0)
        watermark.publish()
        assert combine(table.destination, table.parts()).unread_spans == ()
    finally:
        watermark.close()


def test_a_destination_added_while_the_open_shard_is_a_child_without_a_checkpoint_joined() -> None:
    """The job read its parent for the first destination alone; restarted with a second
    destination while the only open shard is a child with no checkpoint yet (it starts
    at TRIM_HORIZON, not resumed), the second destination has no part while the first
    has: it joined, and what the parent held was never read for it. Before, only the
    destination's own parts were looked at: no span (the table was created with its
    stream), and its watermark passed changes it never received."""
    first = FakeStatusTable("eu-west-1/replica")
    added = FakeStatusTable("eu-west-2/added")

    def with_its_stream() -> SourceHistory:
        return SourceHistory(NOW - 2 * HOUR, NOW - 2 * HOUR)

    parent = publisher([first], with_its_stream, shard="s1")
    parent.empty_read(previous_answer_at=(NOW - HOUR) / S, received_at=0)
    parent.publish()
    parent.close()
    child = publisher([first, added], with_its_stream, shard="s2")
    try:
        child.empty_read(previous_answer_at=(NOW + 5 * S) / S, received_at=0)
        child.publish()
    finally:
        child.close()
    assert combine(first.destination, first.parts()).unread_spans == ()
    joined = combine(added.destination, added.parts())
    assert joined.unread_spans == (UnreadSpan(0, NOW, JOINED),)
    assert joined.unread_between(NOW - 2 * HOUR, NOW - 2 * HOUR) != []


@pytest.mark.parametrize("history", [legacy, lambda: SourceHistory(NOW - HOUR, NOW - HOUR)])
@pytest.mark.parametrize("second", ["s1", "s2"])
def test_a_first_start_cut_short_before_one_destination_was_written_is_a_first_start_there(
    history: Callable[[], SourceHistory], second: str
) -> None:
    """Two destinations at a job's first start: the first one's parts are written, the
    second's status table refuses (a stop or crash before anything reaches it, or a
    table being created). Then the shard's processor starts again with no checkpoint
    (``s1``), or another open shard's starts meanwhile (``s2``, a sibling: a child
    starts only after its parent's checkpoint, which waits for every destination's
    decision, so a child that finds this finds a status table emptied since, see
    test_unread_spans.py): the second destination has
    no parts while the first has. It was in the job from its first start and gets what
    a first start gets (the span of what the stream never held, for a table older than
    its stream; none for one created with it). Before, it was taken for a destination
    added later: a ``joined`` span over every change before the start, all of which
    were read for it, and `replicator wait` exited 4 for them."""
    ap, eu = FakeStatusTable("ap-southeast-2/dst"), FakeStatusTable("eu-west-1/dst")
    cut_short = FakeStatusTable(eu.destination, eu.region)
    cut_short.refuse.add("ensure_exists")
    open_shards = (Shard("s1", None, False), Shard("s2", None, False))
    first = publisher([ap, cut_short], history, shard="s1", shards=open_shards)
    first.empty_read(previous_answer_at=(NOW + 5 * S) / S, received_at=0)
    first.publish()
    first.close()
    assert ap.stored() != [] and eu.stored() == []

    with structlog.testing.capture_logs() as logged:
        again = publisher([ap, eu], history, shard=second, shards=open_shards)
        try:
            again.empty_read(previous_answer_at=(NOW + 6 * S) / S, received_at=0)
            again.publish()
        finally:
            again.close()
    assert not [e for e in logged if "joined" in e["event"]]
    expected = first_spans(history)  # a first start's, with one destination
    assert combine(ap.destination, ap.parts()).unread_spans == expected
    assert combine(eu.destination, eu.parts()).unread_spans == expected
    # A destination added to the job later is still told apart: it has no record.
    added = FakeStatusTable("us-west-2/added")
    later = publisher(
        [ap, eu, added], history, shard="s2", at_horizon=False, resumed=True, shards=open_shards
    )
    try:
        later.empty_read(previous_answer_at=(NOW + 7 * S) / S, received_at=0)
        later.publish()
    finally:
        later.close()
    assert combine(added.destination, added.parts()).unread_spans == (UnreadSpan(0, NOW, JOINED),)
    assert combine(eu.destination, eu.parts()).unread_spans == expected
