"""Changes never read for a destination (a LATEST start, a destination that joined a
resumed job) are recorded as spans on the parts, and no waiter is told "replicated" for
them: the spans themselves, the publisher storing them before any claim, the status table
keeping them across restarts, what a wait answers, and what clears them (a whole-table
verify with no difference left, not a backfill, which cannot copy deletes)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from botocore.exceptions import ClientError

from replicator.config.loader import parse_job
from replicator.exceptions import StatusItemUnreadable
from replicator.metrics import Metrics
from replicator.shards.stream import Shard
from replicator.tools.backfill import BackfillResult, Tally
from replicator.tools.unread import Cleared, cleared_through_us
from replicator.tools.verify import VerifyReport
from replicator.watermark.history import SourceHistory
from replicator.watermark.off import record_watermark_off
from replicator.watermark.parts import Part, Watermark, combine, iso
from replicator.watermark.publisher import ShardWatermark
from replicator.watermark.recreated import record_recreated
from replicator.watermark.spans import (
    DESTINATION_LOST,
    JOINED,
    LATEST,
    OPEN_US,
    UNWATCHED,
    UnreadSpan,
    covered_through,
    dumps,
    loads,
    merge_spans,
)
from replicator.watermark.table import STARTED_WITH, StatusTable
from replicator.watermark.tracker import DeadLetters
from replicator.watermark.wait import WaitResult, wait_until_replicated
from tests.support.aws import client
from tests.support.metrics import sample
from tests.support.status_table import created_with_its_stream

S = 1_000_000
T0 = 1_700_000_000 * S
START = T0 + 100 * S  # when the processors in these tests start


# -- the spans ------------------------------------------------------------------------------


def test_spans_of_one_reason_are_joined_and_reasons_kept_apart() -> None:
    merged = merge_spans(
        [
            UnreadSpan(0, T0, LATEST),
            UnreadSpan(0, T0 + 5 * S, LATEST),  # a second start before any checkpoint
            UnreadSpan(0, T0 + 2 * S, JOINED),
        ]
    )
    assert merged == [UnreadSpan(0, T0 + 2 * S, JOINED), UnreadSpan(0, T0 + 5 * S, LATEST)]
    many = merge_spans(UnreadSpan(T0 + i * 10 * S, T0 + i * 10 * S, LATEST) for i in range(20))
    assert len(many) == 8  # joined, which only widens them
    assert many[0].from_us == T0 and many[-1].to_us == T0 + 190 * S
    assert loads(dumps(merged)) == tuple(merged)


def test_a_span_says_which_changes_and_why_in_one_line() -> None:
    latest = UnreadSpan(0, 1_796_126_400 * S, LATEST).describe()
    assert latest.startswith("changes created before 2026-12-01T12:00:00.000000Z were never read")
    assert "kcl.initial_position LATEST" in latest and "replicator backfill" in latest
    joined = UnreadSpan(0, T0, JOINED).describe()
    assert "joined the job" in joined and "backfill" in joined
    assert "\n" not in latest + joined


def test_a_wait_inside_a_span_is_passed_but_not_replicated_and_after_it_replicated() -> None:
    part = Part(
        "d", "s1", watermark_us=START + 10 * S, unread_spans=(UnreadSpan(0, START, LATEST),)
    )
    mark = combine("d", [part])
    assert mark.unread_spans == (UnreadSpan(0, START, LATEST),)
    assert mark.unread_between(START - 60 * S, START - S) == [UnreadSpan(0, START, LATEST)]
    assert mark.unread_between(START + 1, START + 5 * S) == []
    result = WaitResult(True, mark, unread=tuple(mark.unread_between(0, START - S)))
    assert not result.replicated and result.reached
    assert "were never read for this destination" in result.describe()
    assert mark.as_dict()["unread"][0]["reason"] == LATEST


# -- the publisher and the status table -----------------------------------------------------


@pytest.fixture
def ddb(moto_endpoint: str) -> Any:
    return client("dynamodb", "eu-west-1", moto_endpoint)


@pytest.fixture
def status(unique: Callable[[str], str]) -> str:
    return unique("status")


def table_of(ddb: Any, name: str, destination: str) -> StatusTable:
    table = StatusTable(ddb, name, destination)
    table.ensure_exists()
    return table


def publisher(
    shard: str,
    tables: dict[str, StatusTable],
    shards: list[Shard],
    metrics: Metrics,
    *,
    resumed: bool = False,
    at_latest: bool = False,
    at_horizon: bool = False,
    now_us: int = START,
    history: Callable[[], SourceHistory] = created_with_its_stream,
) -> ShardWatermark:
    watermark = ShardWatermark(
        shard,
        tables,
        lambda: list(shards),
        metrics,
        interval_s=3600,  # published by the test
        margin_s=0,
        reads_follow_answers=True,
        source_history=history,
        clock=lambda: now_us / S,
    )
    watermark.begin(resumed=resumed, at_latest=at_latest, at_horizon=at_horizon)
    return watermark


def wait(table: StatusTable, until_us: int, since_us: int | None = None) -> WaitResult:
    return wait_until_replicated(
        until_us / S,
        since=None if since_us is None else since_us / S,
        destination=table.destination,
        status_table=table.name,
        client=table.client,
        timeout=0,
        poll_interval=0.05,
    )


def test_a_latest_start_stores_its_span_before_it_claims_and_a_restart_keeps_it(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    table = table_of(ddb, status, "eu-west-1/replica")
    shards = [Shard("s1", None, False)]
    first = publisher("s1", {table.destination: table}, shards, metrics, at_latest=True)
    first.empty_read(previous_answer_at=(START + 5 * S) / S, received_at=0)
    first.publish()
    mark = combine(table.destination, table.parts())
    assert mark.watermark_us == START + 5 * S - 1
    assert mark.unread_spans == (UnreadSpan(0, START, LATEST),)

    before = wait(table, START - 30 * S)
    assert before.reached and not before.replicated
    assert before.unread == (UnreadSpan(0, START, LATEST),)
    mark = START + 5 * S - 1
    assert before.describe().startswith(f"watermark {iso(mark)} ({mark / S:.6f}) passed, but")
    assert before.describe().endswith(
        f"; the wait looked for these from {iso(START - 90 * S)}: since (--since), 60 s "
        "before until (--until) by default, moves that start"
    )
    after = wait(table, START + 4 * S, since_us=START + S)
    assert after.replicated, after.describe()

    # The processor restarts from a checkpoint: the span is in the table, not in memory.
    again = publisher(
        "s1", {table.destination: table}, shards, metrics, resumed=True, now_us=START + 9 * S
    )
    again.empty_read(previous_answer_at=(START + 10 * S) / S, received_at=0)
    again.publish()
    assert not wait(table, START - 30 * S).replicated
    assert combine(table.destination, table.parts()).unread_spans == (UnreadSpan(0, START, LATEST),)


def test_a_run_with_the_watermark_off_leaves_an_open_span_that_the_next_start_ends(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    """The watermark on, then off (the run opens a span on every part from the part's
    watermark: idempotent), then on again (a resumed processor ends it at its start,
    before it claims anything): waits meeting the time off are told so, later ones not."""
    table = table_of(ddb, status, "eu-west-1/replica")
    shards = [Shard("s1", None, False), Shard("s2", None, False)]
    for shard in ("s1", "s2"):
        first = publisher(shard, {table.destination: table}, shards, metrics)
        first.empty_read(previous_answer_at=(START + S) / S, received_at=0)
        first.publish()
    assert table.open_unwatched() == 2
    assert table.open_unwatched() == 0  # a second run with it off adds nothing
    open_span = UnreadSpan(START + S, OPEN_US, UNWATCHED)  # the parts stood at START + S - 1
    assert combine(table.destination, table.parts()).unread_spans == (open_span,)
    assert open_span.describe().startswith(
        "changes created since 2023-11-14T22:15:01.000000Z were replicated unwatched for "
        "this destination: the job replicated them without the watermark"
    )
    assert "(the job runs with watermark.enabled: false: the span ends" in open_span.describe()
    assert "the span ends" not in UnreadSpan(START, START + S, UNWATCHED).describe()
    told = wait(table, START + 30 * S)  # the job runs with it off: told at once, not reached
    assert not told.reached and told.unread == (open_span,)
    mark = START + S - 1
    assert told.describe().startswith(f"watermark {iso(mark)} ({mark / S:.6f}) stands, and ")

    on_again = START + 60 * S
    again = publisher(
        "s1", {table.destination: table}, shards, metrics, resumed=True, now_us=on_again
    )
    again.empty_read(previous_answer_at=(on_again + 5 * S) / S, received_at=0)
    again.publish()
    ended = UnreadSpan(START + S, on_again, UNWATCHED)
    assert {part.shard: part.unread_spans for part in table.parts()} == {
        "s1": (ended,),
        "s2": (ended,),
    }
    assert table.close_unwatched(on_again + S) == 0  # nothing open any more
    s2 = publisher("s2", {table.destination: table}, shards, metrics, resumed=True, now_us=on_again)
    s2.empty_read(previous_answer_at=(on_again + 5 * S) / S, received_at=0)
    s2.publish()
    during = wait(table, START + 30 * S)
    assert during.reached and not during.replicated and during.unread == (ended,)
    after = wait(table, on_again + 4 * S, since_us=on_again + 1)
    assert after.replicated, after.describe()


def test_a_child_whose_parent_was_read_without_the_watermark_records_it_deciding_first(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    """The job ran with the watermark off (no parts anywhere); on again, the child of a
    parent read meanwhile starts at TRIM_HORIZON with no checkpoint and decides before
    the resumed shard. It took the job for a first start (a before_stream span at most),
    the resumed shard then found its part, and a dead letter of the time off was
    reported replicated. A parent still listed is what tells: it was read before."""
    table = table_of(ddb, status, "eu-west-1/replica")
    tables = {table.destination: table}
    shards = [Shard("s0", None, True), Shard("s1", None, False), Shard("s2", "s0", False)]
    child = publisher("s2", tables, shards, metrics, at_horizon=True)
    child.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    child.publish()
    resumed = publisher("s1", tables, shards, metrics, resumed=True)
    resumed.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    resumed.publish()
    assert combine(table.destination, table.parts()).unread_spans == (
        UnreadSpan(0, START, UNWATCHED),
    )
    told = wait(table, START - 30 * S)
    assert told.reached and not told.replicated


class _Unlistable(list[Shard]):
    def __iter__(self) -> Any:
        raise RuntimeError("DescribeStream: could not connect")


def test_a_start_at_trim_horizon_that_cannot_list_the_stream_decides_without_it(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    """The decision waits on no request that may keep failing (it held the first
    checkpoint while the stream could not be listed): the span reaches this start."""
    table = table_of(ddb, status, "eu-west-1/replica")
    first = publisher("s1", {table.destination: table}, _Unlistable(), metrics, at_horizon=True)
    first.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    assert first.store_before_checkpoint(5.0)
    assert combine(table.destination, table.parts()).unread_spans == (
        UnreadSpan(0, START, UNWATCHED),
    )


def test_a_child_whose_parent_was_trimmed_still_starts_the_job(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    """A first start on a stream older than a day begins at shards whose parents were
    trimmed: a first start still (its span is before_stream's, not unwatched)."""
    table = table_of(ddb, status, "eu-west-1/replica")
    shards = [Shard("s2", "s0-trimmed", False)]
    first = publisher("s2", {table.destination: table}, shards, metrics, at_horizon=True)
    first.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    first.publish()
    reasons = {span.reason for part in table.parts() for span in part.unread_spans}
    assert UNWATCHED not in reasons


@pytest.mark.parametrize("start", ["latest", "fresh"])
def test_a_start_without_a_checkpoint_ends_the_open_span_too(
    ddb: Any, status: str, metrics: Metrics, start: str
) -> None:
    """A job at LATEST that never checkpointed (an idle table) starts again with the
    watermark on after a run with it off: the span ended at its start as a resumed
    processor's does (it stayed open, and every wait after exited 4)."""
    table = table_of(ddb, status, "eu-west-1/replica")
    shards = [Shard("s1", None, False)]
    first = publisher("s1", {table.destination: table}, shards, metrics, at_latest=True)
    first.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    first.publish()
    assert table.open_unwatched() == 1
    on_again = START + 60 * S
    again = publisher(
        "s1",
        {table.destination: table},
        shards,
        metrics,
        at_latest=start == "latest",
        now_us=on_again,
    )
    again.empty_read(previous_answer_at=(on_again + 5 * S) / S, received_at=0)
    again.publish()
    (part,) = table.parts()
    assert not any(span.open for span in part.unread_spans)
    assert UnreadSpan(START + S, on_again, UNWATCHED) in part.unread_spans
    assert wait(table, on_again + 4 * S, since_us=on_again + 1).replicated


def test_a_stop_and_start_before_the_first_checkpoint_widens_the_span(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    table = table_of(ddb, status, "eu-west-1/replica")
    shards = [Shard("s1", None, False)]
    first = publisher("s1", {table.destination: table}, shards, metrics, at_latest=True)
    first.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    first.publish()
    later = START + 60 * S  # stopped meanwhile: a new LATEST skips what came in between
    second = publisher(
        "s1", {table.destination: table}, shards, metrics, at_latest=True, now_us=later
    )
    second.empty_read(previous_answer_at=(later + S) / S, received_at=0)
    second.publish()
    result = wait(table, later - 10 * S)
    assert result.unread == (UnreadSpan(0, later, LATEST),) and not result.replicated


def test_a_trim_horizon_start_records_nothing(ddb: Any, status: str, metrics: Metrics) -> None:
    table = table_of(ddb, status, "eu-west-1/replica")
    fresh = publisher("s1", {table.destination: table}, [Shard("s1", None, False)], metrics)
    fresh.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    fresh.publish()
    assert wait(table, START - 30 * S).replicated


class Refusing(StatusTable):
    def add_unread_spans(
        self, shard: str, spans: tuple[UnreadSpan, ...], attempts: int = 5
    ) -> None:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "no"}}, "UpdateItem")


def test_no_claim_is_raised_while_the_span_cannot_be_stored(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    table = table_of(ddb, status, "eu-west-1/replica")
    refusing = Refusing(ddb, status, table.destination)
    watermark = publisher(
        "s1", {table.destination: refusing}, [Shard("s1", None, False)], metrics, at_latest=True
    )
    watermark.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    watermark.publish()
    assert combine(table.destination, table.parts()).watermark_us is None
    failures = "replicator_watermark_publish_failures_total"
    assert sample(metrics, failures, destination=table.destination) == 1


def test_a_destination_added_to_a_resumed_job_gets_a_span_up_to_its_first_start(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    old = table_of(ddb, status, "eu-west-1/old")
    shards = [Shard("s1", None, False), Shard("s2", None, False)]
    for shard in ("s1", "s2"):
        first = publisher(shard, {old.destination: old}, shards, metrics, now_us=T0)
        first.empty_read(previous_answer_at=(T0 + S) / S, received_at=0)
        first.publish()

    new = StatusTable(ddb, status, "eu-west-1/new")
    tables = {old.destination: old, new.destination: new}
    one = publisher("s1", tables, shards, metrics, resumed=True)
    one.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    one.publish()
    # The second shard's processor starts after the first registered the new destination:
    # it finds parts there, and records nothing of its own; the first one's span holds.
    two = publisher("s2", tables, shards, metrics, resumed=True, now_us=START + 2 * S)
    two.empty_read(previous_answer_at=(START + 3 * S) / S, received_at=0)
    two.publish()

    joined = wait(new, START - 30 * S)
    assert joined.reached and not joined.replicated
    assert joined.unread == (UnreadSpan(0, START, JOINED),)
    assert "joined the job" in joined.describe()
    assert wait(new, START + S - 1, since_us=START + 1).replicated
    assert wait(old, START - 30 * S).replicated  # the old destination was there all along
    assert combine(old.destination, old.parts()).unread_spans == ()


class Uncreatable(StatusTable):
    """A status table that cannot be created (yet): nothing reaches it."""

    def ensure_exists(self, wait_s: float = 60.0) -> None:
        raise ClientError(
            {"Error": {"Code": "InternalServerError", "Message": "no"}}, "CreateTable"
        )


@pytest.mark.parametrize(
    "history",
    [created_with_its_stream, lambda: SourceHistory(START - 7200 * S, START - 3600 * S)],
    ids=["created-with-its-stream", "stream-enabled-later"],
)
def test_a_first_start_cut_short_before_a_destination_was_written_is_not_a_join(
    ddb: Any, status: str, metrics: Metrics, history: Callable[[], SourceHistory]
) -> None:
    """The job's first start at TRIM_HORIZON stops after its first destination's parts
    were written and before anything reached the second's status table; started again
    (no checkpoint), the second has no parts while the first has. The first's parts
    record that the job had both when it first started, so the second gets what a first
    start gets, not a ``joined`` span over changes that were all read for it (wait
    answered 4 for them). A destination added after that still joined."""
    ap = table_of(ddb, status, "ap-southeast-2/dst")
    eu = StatusTable(ddb, status, "eu-west-1/dst")
    shards = [Shard("s1", None, False)]
    tables = {ap.destination: ap, eu.destination: Uncreatable(ddb, status, eu.destination)}
    first = publisher("s1", tables, shards, metrics, at_horizon=True, history=history)
    first.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    first.publish()
    first.close()
    assert eu.parts() == []
    assert {part.started_with for part in ap.parts(STARTED_WITH)} == {
        frozenset({ap.destination, eu.destination})
    }

    tables = {ap.destination: ap, eu.destination: eu}
    again = publisher(
        "s1", tables, shards, metrics, at_horizon=True, now_us=START + 5 * S, history=history
    )
    again.empty_read(previous_answer_at=(START + 6 * S) / S, received_at=0)
    again.publish()
    again.close()
    spans = combine(ap.destination, ap.parts()).unread_spans
    assert all(span.reason != JOINED for span in spans)
    assert combine(eu.destination, eu.parts()).unread_spans == spans
    for table in (ap, eu):
        assert wait(table, START - 30 * S).replicated

    late = StatusTable(ddb, status, "us-west-2/late")
    tables[late.destination] = late
    resumed = publisher("s1", tables, shards, metrics, resumed=True, now_us=START + 10 * S)
    resumed.empty_read(previous_answer_at=(START + 11 * S) / S, received_at=0)
    resumed.publish()
    resumed.close()
    assert wait(late, START - 30 * S).unread == (UnreadSpan(0, START + 10 * S, JOINED),)
    assert wait(eu, START - 30 * S).replicated


@pytest.mark.parametrize("restart", ["resumed", "child-without-checkpoint"])
def test_a_status_table_emptied_while_the_job_was_stopped_is_not_a_first_start(
    ddb: Any, status: str, metrics: Metrics, restart: str
) -> None:
    """Two destinations; one's status table deleted (here: emptied) while the job was
    stopped, the other's kept, its parts recording both as the job's at its first start.
    The processor that starts again resumes from its checkpoint, or is the child (no
    checkpoint yet, at TRIM_HORIZON) of a parent that ended: either way the destination
    without parts did not have its first start cut short (the first start's checkpoint
    waited for its decision, which wrote there), and what its table held (a dead letter
    here) is gone. It gets an ``unwatched`` span up to the restart, and a wait for the
    dead-lettered change's time is told so (it was told "replicated"); the kept
    destination still names its letter."""
    ap = table_of(ddb, status, "ap-southeast-2/dst")
    eu = table_of(ddb, status, "eu-west-1/dst")
    child = restart == "child-without-checkpoint"
    shards = [Shard("s1", None, child), *([Shard("s2", "s1", False)] if child else [])]
    tables = {ap.destination: ap, eu.destination: eu}
    first = publisher("s1", tables, shards, metrics, at_horizon=True, now_us=T0)
    first.empty_read(previous_answer_at=(T0 + S) / S, received_at=0)
    first.publish()
    letter = DeadLetters(1, ((T0 + 5 * S, T0 + 5 * S),), through=1)
    for table in (ap, eu):
        table.add_dead_letters("s1", letter)
        assert not wait(table, T0 + 5 * S).replicated
    if child:
        first.end_shard()
    first.close()
    for part in ap.parts():
        key = {"destination": {"S": ap.destination}, "shard": {"S": part.shard}}
        ddb.delete_item(TableName=status, Key=key)

    with structlog.testing.capture_logs() as logged:
        if child:
            again = publisher("s2", tables, shards, metrics, at_horizon=True)
        else:
            again = publisher("s1", tables, shards, metrics, resumed=True)
        again.empty_read(previous_answer_at=(START + S) / S, received_at=0)
        again.publish()
        again.close()
    (said,) = [entry for entry in logged if entry.get("destination") == ap.destination]
    assert said["log_level"] == "warning"
    assert "the table deleted or emptied while the job was stopped" in said["event"], said
    after = wait(ap, T0 + 5 * S)
    assert after.reached and not after.replicated
    assert after.unread == (UnreadSpan(0, START, UNWATCHED),)
    assert "deleted or emptied while the job was stopped" in after.describe()
    assert wait(ap, START + S - 1, since_us=START + 1).replicated
    kept = wait(eu, T0 + 5 * S)
    assert not kept.replicated and kept.unread == () and kept.dead_lettered


@pytest.mark.parametrize("first_raised", ["eu-west-1/dst", "ap-southeast-2/dst"])
def test_a_destination_added_again_with_its_status_table_emptied_is_joined_once(
    ddb: Any, status: str, metrics: Metrics, first_raised: str
) -> None:
    """eu removed from the job, its status table emptied, then added again: it gets a
    ``joined`` span up to that start, and the parts raised from then name it among the
    job's members, so a plain restart later records no second span (whichever
    destination's part is raised first)."""
    ap = table_of(ddb, status, "ap-southeast-2/dst")
    eu = table_of(ddb, status, "eu-west-1/dst")
    shards = [Shard("s1", None, False)]
    both = {ap.destination: ap, eu.destination: eu}
    first = publisher("s1", both, shards, metrics, at_horizon=True, now_us=T0)
    first.empty_read(previous_answer_at=(T0 + S) / S, received_at=0)
    first.publish()
    first.close()
    alone = publisher("s1", {ap.destination: ap}, shards, metrics, resumed=True, now_us=T0 + 10 * S)
    alone.empty_read(previous_answer_at=(T0 + 11 * S) / S, received_at=0)
    alone.publish()
    alone.close()
    for part in eu.parts():
        key = {"destination": {"S": eu.destination}, "shard": {"S": part.shard}}
        ddb.delete_item(TableName=status, Key=key)
    ordered = dict(sorted(both.items(), key=lambda item: item[0] != first_raised))
    back = publisher("s1", ordered, shards, metrics, resumed=True, now_us=START)
    back.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    back.publish()
    back.close()
    assert wait(eu, START - S).unread == (UnreadSpan(0, START, JOINED),)
    later = START + 100 * S
    again = publisher("s1", ordered, shards, metrics, resumed=True, now_us=later)
    again.empty_read(previous_answer_at=(later + S) / S, received_at=0)
    again.publish()
    again.close()
    assert combine(eu.destination, eu.parts()).unread_spans == (UnreadSpan(0, START, JOINED),)


def test_a_resumed_job_whose_destinations_all_lack_parts_records_what_it_did_unwatched(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    """Every destination without parts while the job resumes from checkpoints: the
    watermark was just turned on, or its status table was emptied (deleted while it was
    off, say). The checkpoints passed changes no watermark followed, whose dead letters
    were recorded nowhere: each destination gets an ``unwatched`` span up to this start,
    and a wait for those times is told so (it said "replicated")."""
    one, two = (table_of(ddb, status, f"eu-west-1/{n}") for n in ("one", "two"))
    tables = {one.destination: one, two.destination: two}
    watermark = publisher("s1", tables, [Shard("s1", None, False)], metrics, resumed=True)
    watermark.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    watermark.publish()
    for table in (one, two):
        assert [part.unread_spans for part in table.parts()] == [(UnreadSpan(0, START, UNWATCHED),)]
        before = wait(table, START - 30 * S)
        assert before.reached and not before.replicated
        assert wait(table, START + S - 1, since_us=START + 1).replicated


def test_a_shard_hands_its_spans_down_to_its_children_at_its_end(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    table = table_of(ddb, status, "eu-west-1/replica")
    shards = [Shard("p", None, False)]
    parent = publisher("p", {table.destination: table}, shards, metrics, at_latest=True)
    parent.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    parent.publish()
    shards[:] = [Shard("p", None, True), Shard("c1", "p", False), Shard("c2", "p", False)]
    parent.end_shard()
    parts = {part.shard: part for part in table.parts()}
    for child in ("c1", "c2"):
        assert parts[child].unread_spans == (UnreadSpan(0, START, LATEST),)
    # Once the ended parent expires, its children still report the span.
    ddb.delete_item(
        TableName=status, Key={"destination": {"S": table.destination}, "shard": {"S": "p"}}
    )
    remaining: Watermark = combine(table.destination, table.parts())
    assert remaining.unread_spans == (UnreadSpan(0, START, LATEST),)


def test_a_copy_covers_the_spans_that_end_before_it_started() -> None:
    spans = (UnreadSpan(0, T0, LATEST), UnreadSpan(T0 + 5 * S, T0 + 9 * S, JOINED))
    assert covered_through(spans, T0) == (UnreadSpan(T0 + 5 * S, T0 + 9 * S, JOINED),)
    assert covered_through(spans, T0 + 6 * S) == (UnreadSpan(T0 + 6 * S + 1, T0 + 9 * S, JOINED),)
    assert covered_through(spans, T0 - 1) == (UnreadSpan(T0, T0, LATEST), spans[1])


def test_clearing_what_a_copy_covered_keeps_the_rest(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    table = table_of(ddb, status, "eu-west-1/replica")
    table.raise_part("s1", START, "a:1")
    table.add_unread_spans("s1", (UnreadSpan(0, T0, LATEST),))
    table.add_unread_spans("s2", (UnreadSpan(0, START, JOINED),))
    assert table.clear_unread_through(T0 + S) == 2
    parts = {part.shard: part for part in table.parts()}
    assert parts["s1"].unread_spans == ()
    assert parts["s2"].unread_spans == (UnreadSpan(T0 + S + 1, START, JOINED),)
    assert table.clear_unread_through(T0 + S) == 0  # nothing more to clear


def test_a_join_is_stored_before_anything_is_registered_so_a_crash_cannot_lose_it(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    old = table_of(ddb, status, "eu-west-1/old")
    shards = [Shard("s1", None, False), Shard("s2", None, False)]
    for shard in ("s1", "s2"):
        first = publisher(shard, {old.destination: old}, shards, metrics, now_us=T0)
        first.empty_read(previous_answer_at=(T0 + S) / S, received_at=0)
        first.publish()
    new = StatusTable(ddb, status, "eu-west-1/new")
    # The first processor cannot store the join, and dies: it registered nothing for the
    # new destination meanwhile, which would have hidden the join from its successors.
    dying = publisher(
        "s1", {old.destination: old, new.destination: Refusing(ddb, status, new.destination)},
        shards, metrics, resumed=True,
    )  # fmt: skip
    dying.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    dying.publish()
    assert new.parts() == []
    # Its successors find the join again.
    tables = {old.destination: old, new.destination: new}
    for shard in ("s1", "s2"):
        after = publisher(shard, tables, shards, metrics, resumed=True, now_us=START + 5 * S)
        after.empty_read(previous_answer_at=(START + 6 * S) / S, received_at=0)
        after.publish()
    joined = wait(new, START - 30 * S)
    assert joined.reached and joined.unread == (UnreadSpan(0, START + 5 * S, JOINED),)


def test_a_wait_meeting_both_a_span_and_dead_letters_names_both_on_one_line() -> None:
    mark = combine(
        "d",
        [
            Part(
                "d",
                "s1",
                watermark_us=START + 10 * S,
                dead_letters=1,
                dead_letter_ranges=((START - 5 * S, START - 4 * S),),
                unread_spans=(UnreadSpan(0, START, LATEST),),
            )
        ],
    )
    until, since = START - S, START - 60 * S
    result = WaitResult(
        True,
        mark,
        tuple(mark.dead_lettered_between(since, until)),
        unread=tuple(mark.unread_between(since, until)),
    )
    said = result.describe()
    assert "never read" in said and "dead-lettered" in said and "\n" not in said


def test_a_status_table_that_cannot_be_read_holds_back_only_what_it_may_decide(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    """Resumed, with one destination's status table unreachable: one without parts while
    another has parts joined, whatever the unreachable one holds, and publishes; one that
    had parts waits, since only the unreachable one's parts could tell whether the job
    ran without it for a while (removed from the job file and added again)."""
    old = table_of(ddb, status, "eu-west-1/old")
    first = publisher("s1", {old.destination: old}, [Shard("s1", None, False)], metrics, now_us=T0)
    first.empty_read(previous_answer_at=(T0 + S) / S, received_at=0)
    first.publish()
    empty = table_of(ddb, status, "eu-west-1/empty")
    broken = StatusTable(client("dynamodb", "eu-west-1", "http://127.0.0.1:9"), "t", "broken")
    tables = {old.destination: old, empty.destination: empty, broken.destination: broken}
    resumed = publisher("s1", tables, [Shard("s1", None, False)], metrics, resumed=True)
    resumed.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    resumed.publish()
    # "empty" has no parts while "old" has: it joined, whatever "broken" holds.
    assert wait(empty, START - 30 * S).unread == (UnreadSpan(0, START, JOINED),)
    assert combine(old.destination, old.parts()).watermark_us == T0 + S - 1  # not raised
    failures = "replicator_watermark_publish_failures_total"
    assert sample(metrics, failures, destination="broken") == 1
    assert sample(metrics, failures, destination=old.destination) == 0


def test_a_destination_without_parts_waits_while_the_only_other_cannot_be_read(
    ddb: Any, status: str, metrics: Metrics
) -> None:
    empty = table_of(ddb, status, "eu-west-1/empty")
    broken = StatusTable(client("dynamodb", "eu-west-1", "http://127.0.0.1:9"), "t", "broken")
    tables = {empty.destination: empty, broken.destination: broken}
    resumed = publisher("s1", tables, [Shard("s1", None, False)], metrics, resumed=True)
    resumed.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    resumed.publish()
    assert empty.parts() == []  # neither registered nor claimed: it may have joined


# -- what clears them: a whole-table verify with no difference left -------------------------


def test_a_verify_clears_up_to_a_second_and_the_margin_before_its_scans_started() -> None:
    assert cleared_through_us(1_700_000_000.7, 0) == T0 - S
    assert cleared_through_us(1_700_000_000.7, 250) == T0 - S - 250_000


def test_verify_says_where_it_cleared_spans_and_where_it_could_not() -> None:
    report = VerifyReport(
        source="us-east-1/src",
        destinations=["eu-west-1/a", "ap-southeast-2/b"],
        sampled=False,
        source_items=1,
        destination_items={"eu-west-1/a": 1, "ap-southeast-2/b": 1},
        rechecked=0,
        findings=[],
        unread=Cleared("2023-11-14T22:13:19.000Z", ["eu-west-1/a"], ["ap-southeast-2/b"]),
    )
    lines = report.text().splitlines()
    assert (
        "watermark: unread spans and dead-letter ranges up to 2023-11-14T22:13:19.000Z "
        "cleared at eu-west-1/a"
    ) in lines
    (failed,) = [line for line in lines if "could not clear" in line]
    assert "ap-southeast-2/b" in failed and "remove the unread spans and dead-letter" in failed
    body = json.loads(report.as_json())["watermark"]
    assert body == {
        "unread_cleared_through": "2023-11-14T22:13:19.000Z",
        "cleared": ["eu-west-1/a"],
        "failed": ["ap-southeast-2/b"],
    }
    report.unread = None  # a sampled verify, or no watermark: nothing said
    assert "watermark" not in report.text() and "watermark" not in json.loads(report.as_json())


@pytest.mark.parametrize("watermark", [True, False])
def test_a_backfill_says_a_verify_clears_the_spans_because_it_cannot_copy_deletes(
    watermark: bool,
) -> None:
    result = BackfillResult(
        task_name="t",
        source="us-east-1/src",
        destinations=["eu-west-1/a"],
        state_table="t-backfill",
        total_segments=4,
        resumed=False,
        already_complete=False,
        complete=True,
        stopped=None,
        this_run=Tally(),
        overall=Tally(),
        dead_letters="queue",
        watermark=watermark,
    )
    said = "cannot copy deletes" in result.summary()
    assert said is watermark
    if watermark:
        assert "`replicator verify` (with --repair" in result.summary()
    # A later run finds the copy done and reads no watermark: a verify since the copy may
    # have cleared the spans, so it does not repeat the first run's line as a fact.
    later = replace(result, already_complete=True).summary().splitlines()
    assert [line for line in later if "watermark:" in line] == (
        [
            "  watermark:          changes never read stay reported until a whole-table "
            "`replicator verify` after the copy clears them (if one has, nothing is left to "
            "clear)"
        ]
        if watermark
        else []
    )
    assert "  progress table:     t-backfill (4 segments)" in later
    assert "(1 segment)" in replace(result, total_segments=1).summary()


@pytest.mark.parametrize(
    ("code", "raised"), [("AccessDeniedException", False), ("unreadable", False), ("Boom", True)]
)
def test_a_status_table_the_job_may_not_touch_with_the_watermark_off_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, code: str, raised: bool
) -> None:
    """A job with the watermark off need not be granted the status table: denied, or an
    item that does not read (turning the watermark off is a way past one), it says what
    that risks and goes on; any other error is the caller's to explain (exit 3)."""
    resolved = parse_job(
        "task_name: job\nsource: {region: us-east-1, table: src}\n"
        "destinations: [{region: eu-west-1, table: dst}]\nwatermark: {enabled: false}\n",
        Path("job.yaml"),
    )
    error: Exception = ClientError({"Error": {"Code": code, "Message": "no"}}, "Query")
    if code == "unreadable":
        error = StatusItemUnreadable("status table job-watermark: the item ... cannot be read")

    def refused(self: StatusTable, attempts: int = 5) -> int:
        raise error

    monkeypatch.setattr(StatusTable, "open_unwatched", refused)
    with structlog.testing.capture_logs() as logs:
        if raised:
            with pytest.raises(ClientError):
                record_watermark_off(resolved, resolved.job.destinations[0])
        else:
            record_watermark_off(resolved, resolved.job.destinations[0])
    warned = [line for line in logs if line["log_level"] == "warning"]
    assert len(warned) == (0 if raised else 1)
    if not raised:
        assert warned[0]["status_table"] == "job-watermark"
        assert warned[0]["destination"] == "eu-west-1/dst"


def test_a_destination_created_after_the_job_last_settled_there_gets_a_span_at_start(
    ddb: Any, unique: Callable[[str], str], moto_endpoint: str, metrics: Metrics
) -> None:
    """Deleted while the job was stopped and created again: the start refused until it
    existed, then nothing said its items were gone, and a wait there was told
    "replicated" for changes the new table never received."""
    task = unique("recreated")
    table = table_of(ddb, f"{task}-watermark", "eu-west-1/replica")
    first = publisher("s1", {table.destination: table}, [Shard("s1", None, False)], metrics)
    first.empty_read(previous_answer_at=(START + 5 * S) / S, received_at=0)
    first.publish()  # raised now (the table's clock): settled there until now
    assert wait(table, START).replicated
    resolved = parse_job(
        f"task_name: {task}\n"
        f"source: {{region: us-east-1, table: src, endpoint_url: '{moto_endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: replica, endpoint_url: '{moto_endpoint}'}}]\n",
        Path("job.yaml"),
    )
    destination = resolved.job.destinations[0]
    now = datetime.datetime.now(datetime.UTC)
    created = now + datetime.timedelta(minutes=2)  # after the job's last raise
    with structlog.testing.capture_logs() as logs:
        assert record_recreated(resolved, destination, created)
    (said,) = [line for line in logs if line["log_level"] == "error"]
    assert said["event"].startswith("destination table created after the job last settled")
    assert "`replicator backfill --restart`" in said["event"]
    assert "then `replicator verify`" in said["event"]
    # As a wait reads it (a wait here could be answered from the read just before).
    after = combine(table.destination, table.parts())
    assert after.passes(START)
    (span,) = after.unread_between(START - 60 * S, START)
    assert (span.reason, span.to_us) == (DESTINATION_LOST, int(created.timestamp() * S))
    # A second start before the job raised its parts again adds nothing new.
    assert record_recreated(resolved, destination, created)
    assert len(table.part("s1").unread_spans) == 1  # type: ignore[union-attr]
    # The job's own table, created before its last raise there: nothing, also beside an
    # ended shard's part, which keeps the time of its last raise for days.
    table.client.update_item(
        TableName=table.name,
        Key=table._key("s0"),
        UpdateExpression="SET watermark_us = :w, updated_at = :u, ended = :e",
        ExpressionAttributeValues={
            ":w": {"N": str(START)},
            ":u": {"N": str((now - datetime.timedelta(days=2)).timestamp())},
            ":e": {"BOOL": True},
        },
    )
    with structlog.testing.capture_logs() as logs:
        assert not record_recreated(resolved, destination, now - datetime.timedelta(days=1))
        raised = table.part("s1").updated_at  # type: ignore[union-attr]
        before = datetime.datetime.fromtimestamp(raised - 0.5, datetime.UTC)
        assert not record_recreated(resolved, destination, before)
    # A stop, a delete and a create in one script: the creation a moment after the raise.
    just_after = datetime.datetime.fromtimestamp(raised + 0.2, datetime.UTC)
    assert record_recreated(resolved, destination, just_after)
    assert logs == []


def test_a_child_placeholder_counts_for_the_table_its_parents_were_claimed_for() -> None:
    """A destination's name given to another table while a child shard had only its
    placeholder (registered with its parent's value, claimed for nothing yet): the
    placeholder counted for the new table, and a wait passed on the parent's changes,
    which only the old table got. It counts as its parents' table."""
    parent = Part(
        "dr", "s-1", 5_000_000, children=frozenset({"s-2"}), ended=True,
        destination_table="eu-west-1/old",
    )  # fmt: skip
    child = Part("dr", "s-2", 5_000_000, parents=frozenset({"s-1"}))  # a placeholder
    assert combine("dr", [parent, child], "eu-west-1/old").watermark_us == 5_000_000
    moved = combine("dr", [parent, child], "eu-west-1/new")
    assert moved.watermark_us is None and moved.unknown == ("s-2",)
    claimed = replace(child, destination_table="eu-west-1/new", watermark_us=6_000_000)
    assert combine("dr", [parent, claimed], "eu-west-1/new").watermark_us == 6_000_000
