"""What the watermark holds only in memory (dead-letter ranges, unread spans) is stored
before the checkpoint passes the changes it stands for; each destination is published on
its own, so a status table that hangs holds back only its destination; a status table
deleted while the job runs is created again and registered. With status tables in
memory (tests/support/status_table.py) and the processor driven as the daemon drives it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
import structlog.testing
from amazon_kclpy import messages

from replicator.metrics import Metrics
from replicator.processor import ReplicationProcessor
from replicator.shards.stream import Shard
from replicator.watermark import publisher as publisher_module
from replicator.watermark.history import SourceHistory
from replicator.watermark.parts import Part, combine
from replicator.watermark.publisher import ShardWatermark
from replicator.watermark.spans import BEFORE_STREAM, LATEST, STATUS_TABLE_LOST, UnreadSpan
from replicator.watermark.table import StatusTable
from tests.support.e2e import wait_until
from tests.support.metrics import sample
from tests.support.status_table import FakeStatusTable, Region, created_with_its_stream

S = 1_000_000
T0 = 1_700_000_000 * S
START = T0 + 100 * S
SHARDS = [Shard("s1", None, False), Shard("s2", None, False)]


def publisher(
    tables: list[FakeStatusTable],
    metrics: Metrics,
    *,
    shard: str = "s1",
    interval_s: float = 3600,  # published when asked (or by the test)
    shards: list[Shard] | None = None,
    history: Callable[[], SourceHistory] = created_with_its_stream,
) -> ShardWatermark:
    mapping: dict[str, StatusTable] = {table.destination: table for table in tables}
    listing = SHARDS if shards is None else shards
    return ShardWatermark(
        shard,
        mapping,
        lambda: list(listing),
        metrics,
        interval_s=interval_s,
        margin_s=0,
        reads_follow_answers=True,
        source_history=history,
        clock=lambda: START / S,
    )


@pytest.fixture
def closing() -> Iterator[list[ShardWatermark]]:
    opened: list[ShardWatermark] = []
    yield opened
    for watermark in opened:
        watermark.close()


def mine(table: FakeStatusTable, shard: str = "s1") -> Part | None:
    return next((part for part in table.stored() if part.shard == shard), None)


def no_backoff(watermark: ShardWatermark) -> None:
    """Skip the back-off after a failure (the next round tries at once)."""
    for target in watermark._targets.values():
        target.retry_at = 0.0


# -- the processor: the checkpoint waits for what is only in memory -------------------------


class Pipeline:
    """What the processor asks of the pipeline, with a real watermark behind it."""

    def __init__(self, watermark: ShardWatermark) -> None:
        self.watermark = watermark
        self.writers: dict[str, Any] = {}
        self.position: str | None = None

    def begin_watermark(
        self, *, resumed: bool, at_latest: bool = False, at_horizon: bool = False
    ) -> None:
        self.watermark.begin(resumed=resumed, at_latest=at_latest, at_horizon=at_horizon)

    def note_empty_read(self, *, previous_answer_at: float, received_at: float) -> None:
        self.watermark.empty_read(previous_answer_at=previous_answer_at, received_at=received_at)

    def wait_for_room(self) -> None:
        pass

    def checkpointable(self) -> str | None:
        return self.position

    def count_applied(self) -> None:
        pass

    def store_watermark_before_checkpoint(
        self, wait_s: float = 0.0, *, urgent: bool = False
    ) -> bool:
        return self.watermark.store_before_checkpoint(wait_s, urgent=urgent)

    def watermark_unstored(self) -> list[str]:
        return self.watermark.unstored()

    def release_holds(self) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def publish_watermark(self, wait_s: float) -> None:
        self.watermark.publish_soon(wait_s)

    def end_watermark(self) -> None:
        self.watermark.end_shard()

    def report(self) -> None:
        pass

    def close(self) -> None:
        self.watermark.close()


class Intake:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def accept(self, records: list[Any], millis_behind: int) -> None:
        pass


class Checkpointer:
    """The daemon's checkpointer, noting what the status table held at each checkpoint."""

    def __init__(self, table: FakeStatusTable) -> None:
        self.table = table
        self.written: list[tuple[str | None, Part | None]] = []

    def checkpoint(self, sequence_number: str | None = None, sub: int | None = None) -> None:
        self.written.append((sequence_number, mine(self.table)))


class Shard1:
    """One shard's processor over a fake pipeline, and the daemon's side of it."""

    def __init__(
        self,
        table: FakeStatusTable,
        *,
        start: str = "TRIM_HORIZON",
        history: Callable[[], SourceHistory] = created_with_its_stream,
    ) -> None:
        self.table = table
        self.watermark = publisher([table], Metrics(), history=history)
        self.pipeline = Pipeline(self.watermark)
        self.exits: list[int] = []
        self.pauses: list[float] = []
        self.processor = ReplicationProcessor(
            lambda _shard: Intake(self.pipeline),  # type: ignore[arg-type,return-value]
            Metrics(),
            exit_process=self.exits.append,
            report_interval_s=3600,
            pause=self.pauses.append,
        )
        self.checkpointer = Checkpointer(table)
        messages.InitializeInput(
            {
                "action": "initialize",
                "shardId": "s1",
                "sequenceNumber": start,
                "subSequenceNumber": 0,
            }
        ).dispatch(self.checkpointer, self.processor)

    def batch(self, position: str) -> None:
        """A batch after which every change up to ``position`` is settled."""
        self.pipeline.position = position
        messages.ProcessRecordsInput(
            {"action": "processRecords", "millisBehindLatest": 0, "records": []}
        ).dispatch(self.checkpointer, self.processor)

    def close(self) -> None:
        self.processor.close()
        assert self.exits == []


def test_the_checkpoint_never_passes_a_dead_letter_held_only_in_memory() -> None:
    """A dead letter's range is in memory until it is stored: a checkpoint past its change
    before then, and a kill -9, would lose it for good (the change is not read again),
    and a waiter would be told "replicated". While the status table refuses it, the
    checkpoint holds (replication goes on); once it is stored, the checkpoint moves."""
    table = FakeStatusTable("eu-west-1/replica")
    table.refuse.add("add_dead_letters")
    shard = Shard1(table)
    try:
        shard.watermark.undecodable(5, T0 + 5 * S)  # dead-lettered everywhere
        with structlog.testing.capture_logs() as logged:
            for _ in range(4):
                shard.batch("5")
        assert shard.checkpointer.written == []
        held = [e for e in logged if e["event"].startswith("checkpoint held")]
        # Told the first time (a first start's first batch often waits for the status
        # table), a warning once the third batch in a row is held, then every 20th.
        assert [e["log_level"] for e in held] == ["info", "warning"]
        assert [e["batches_held"] for e in held] == [1, 3]
        assert held[1]["destinations"] == ["eu-west-1/replica"]

        table.refuse.clear()
        no_backoff(shard.watermark)
        shard.batch("6")
        [(position, part)] = shard.checkpointer.written
        assert position == "6"
        assert part is not None and part.dead_letter_ranges == ((T0 + 5 * S, T0 + 6 * S - 1),)
    finally:
        shard.close()


@pytest.mark.parametrize(
    ("start", "refused", "span"),
    [
        ("LATEST", "add_unread_spans", UnreadSpan(0, START, LATEST)),
        # The Query that tells whether the job starts here (no part yet).
        ("TRIM_HORIZON", "parts", UnreadSpan(0, START - 10 * S, BEFORE_STREAM)),
    ],
)
def test_a_first_start_holds_the_checkpoint_until_its_unread_span_is_stored(
    start: str, refused: str, span: UnreadSpan
) -> None:
    """A LATEST start with no checkpoint: the span of changes never read is in memory
    until stored. A checkpoint before then, and a crash, and the restarted processor
    (resuming from the checkpoint, so not at LATEST) would never store it. A first
    TRIM_HORIZON start (the stream enabled after the table here) holds it until the
    status table has answered whether the job starts there and the span is stored: the
    processor resumed from it, with no part anywhere, could not tell."""
    table = FakeStatusTable("eu-west-1/replica")
    table.refuse.add(refused)
    legacy = SourceHistory(START - 60 * S, START - 10 * S)
    shard = Shard1(table, start=start, history=lambda: legacy)
    try:
        shard.batch("3")
        assert shard.checkpointer.written == []
        table.refuse.clear()
        no_backoff(shard.watermark)
        shard.batch("3")
        [(position, part)] = shard.checkpointer.written
        assert position == "3"
        assert part is not None and part.unread_spans == (span,)
    finally:
        shard.close()


def test_a_healthy_status_table_lets_the_checkpoint_past_a_dead_letter_in_the_same_batch() -> None:
    table = FakeStatusTable("eu-west-1/replica")
    shard = Shard1(table)
    try:
        shard.watermark.undecodable(5, T0 + 5 * S)
        shard.batch("5")
        [(position, part)] = shard.checkpointer.written
        assert position == "5" and part is not None and part.dead_letters == 1
    finally:
        shard.close()


class RecordingMoreWhileStoring(FakeStatusTable):
    """Another dead letter is recorded while each store is under way, as a destination
    rejecting every change records them while the processor waits."""

    def __init__(self, destination: str) -> None:
        super().__init__(destination)
        self.more: list[int] = []
        self.watermark: ShardWatermark | None = None

    def add_dead_letters(self, shard: str, dead_letters: Any, attempts: int = 5) -> None:
        super().add_dead_letters(shard, dead_letters, attempts)
        if self.more and self.watermark is not None:
            position = self.more.pop(0)
            self.watermark.undecodable(position, T0 + position * S)


def test_dead_letters_recorded_during_the_store_do_not_hold_the_checkpoint() -> None:
    """The checkpoint waits for the letters recorded before it was asked for, not for
    those that keep coming after (changes past the position it checkpoints)."""
    table = RecordingMoreWhileStoring("eu-west-1/replica")
    shard = Shard1(table)
    table.watermark = shard.watermark
    table.more = [7, 9]
    try:
        shard.watermark.undecodable(5, T0 + 5 * S)
        with structlog.testing.capture_logs() as logged:
            shard.batch("5")
            shard.batch("7")
        assert [position for position, _ in shard.checkpointer.written] == ["5", "7"]
        assert not [e for e in logged if e["event"].startswith("checkpoint held")]
        last = shard.checkpointer.written[-1][1]
        assert last is not None and last.dead_letters >= 2  # 5 and 7 stored by then
    finally:
        shard.close()


def test_shutdown_does_not_checkpoint_past_a_dead_letter_it_could_not_store() -> None:
    """The next owner reads from the last checkpoint and records the dead letter again:
    safe, where a checkpoint past it would lose it."""
    table = FakeStatusTable("eu-west-1/replica")
    table.refuse.add("add_dead_letters")
    shard = Shard1(table)
    try:
        shard.watermark.undecodable(5, T0 + 5 * S)
        shard.pipeline.position = "5"
        with structlog.testing.capture_logs() as logged:
            messages.ShutdownRequestedInput({"action": "shutdownRequested"}).dispatch(
                shard.checkpointer, shard.processor
            )
        assert shard.checkpointer.written == []
        assert any("not checkpointed" in e["event"] for e in logged)
    finally:
        shard.close()


def test_the_checkpoint_at_a_shards_end_waits_until_its_dead_letters_are_stored() -> None:
    """After SHARD_END the shard is never read again: its checkpoint waits, trying about
    once a second (whatever the back-off), until the dead letters are stored."""
    table = FakeStatusTable("eu-west-1/replica")
    table.refuse.add("add_dead_letters")
    shard = Shard1(table)
    tries = 0
    refusing = table.add_dead_letters

    def refused_twice_more(*args: Any, **kwargs: Any) -> None:
        nonlocal tries
        tries += 1
        if tries == 3:
            table.refuse.clear()
        refusing(*args, **kwargs)

    table.add_dead_letters = refused_twice_more  # type: ignore[method-assign]
    try:
        shard.watermark.undecodable(5, T0 + 5 * S)
        messages.ShardEndedInput({"action": "shardEnded"}).dispatch(
            shard.checkpointer, shard.processor
        )
        [(position, part)] = shard.checkpointer.written
        assert position is None  # SHARD_END
        assert part is not None and part.dead_letters == 1 and part.ended
        assert tries == 3 and shard.pauses == [1.0]  # end_shard's try, then two more
    finally:
        shard.close()


# -- store_before_checkpoint itself ---------------------------------------------------------


def test_nothing_pending_is_answered_at_once_without_a_request(
    closing: list[ShardWatermark],
) -> None:
    """Asked before every checkpoint: with nothing pending it is a few flag checks, even
    while a status table hangs."""
    hung = FakeStatusTable("hung")
    hung.open.clear()
    watermark = publisher([hung], Metrics())
    closing.append(watermark)
    watermark.begin(resumed=False)
    started = time.monotonic()
    # A call that waited would wait 60 s: far beyond the bound, however loaded the machine.
    assert all(watermark.store_before_checkpoint(60.0) for _ in range(1000))
    assert time.monotonic() - started < 30.0
    assert hung.calls == []
    hung.open.set()


def test_a_batch_is_not_held_back_by_a_status_table_that_hangs(
    closing: list[ShardWatermark],
) -> None:
    """A dead letter for a destination whose status table hangs: the first batch waits
    for it at most the bound asked; later ones do not wait (replication goes on)."""
    hung = FakeStatusTable("hung")
    hung.open.clear()
    watermark = publisher([hung], Metrics())
    closing.append(watermark)
    watermark.begin(resumed=False)
    watermark.undecodable(5, T0 + 5 * S)
    assert not watermark.store_before_checkpoint(3.0)
    assert hung.entered.is_set()
    started = time.monotonic()
    # The round in progress has lasted the 3 s already: a call that waited anew would
    # take 3 s more.
    assert not watermark.store_before_checkpoint(3.0)
    assert time.monotonic() - started < 2.5
    assert watermark.unstored() == ["hung"]
    hung.open.set()
    assert watermark.store_before_checkpoint(10.0, urgent=True)
    part = mine(hung)
    assert part is not None and part.dead_letters == 1


# -- a status table that hangs holds back only its own destination --------------------------


def test_a_status_table_that_hangs_holds_back_only_its_own_destination(
    closing: list[ShardWatermark],
) -> None:
    hung = FakeStatusTable("hung")  # listed first: it was published first
    well = FakeStatusTable("well")
    hung.open.clear()
    watermark = publisher([hung, well], Metrics(), interval_s=0.02)
    closing.append(watermark)
    watermark.begin(resumed=False)
    watermark.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
    assert well.raised.wait(10), "the other destination's part was never raised"
    assert hung.entered.wait(10) and mine(hung) is None
    part = mine(well)
    assert part is not None and part.watermark_us == T0 + 10 * S - 1

    # A dead letter everywhere: stored where the table answers, held where it hangs.
    watermark.undecodable(11, T0 + 11 * S)
    assert not watermark.store_before_checkpoint(0.5)
    assert watermark.unstored() == ["hung"]
    part = mine(well)
    assert part is not None and part.dead_letters == 1

    hung.open.set()
    assert watermark.store_before_checkpoint(10.0, urgent=True)
    part = mine(hung)
    assert part is not None and part.dead_letters == 1


def test_a_status_table_that_hangs_holds_back_a_resumed_destination_with_parts_for_a_bound(
    closing: list[ShardWatermark], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed: each destination asks its own status table whether it has parts. One
    without parts while another has them joined, whatever a table that hangs holds, and
    is published at once. One that had parts waits for the table that hangs, whose
    parts could tell that the job ran without it for a while, up to a bound: then it is
    decided on what was read, saying so once (a region down must not hold every other
    destination's watermark at each new shard's start)."""
    monkeypatch.setattr(publisher_module, "_OTHERS_AWAITED_S", 1.0)
    region = Region()
    well = FakeStatusTable("well", region)
    hung = FakeStatusTable("hung", region)
    empty = FakeStatusTable("empty", region)
    well.ensure_exists()
    well.raise_part("s1", T0, "before")
    well.raised.clear()
    hung.open.clear()
    watermark = publisher([hung, well, empty], Metrics(), interval_s=0.02)
    closing.append(watermark)
    with structlog.testing.capture_logs() as logs:
        watermark.begin(resumed=True)
        started = time.monotonic()
        watermark.empty_read(previous_answer_at=(START + S) / S, received_at=0)
        # "empty" joined (it has no parts while "well" has), whatever "hung" holds.
        assert empty.raised.wait(10), "the destination that joined was never published"
        joined = mine(empty)
        assert joined is not None and joined.unread_spans[0].reason == "joined"
        assert well.raised.wait(10), "the destination that had parts was never published"
        assert time.monotonic() - started >= 1.0, "published before the bound"
    part = mine(well)
    assert part is not None and part.watermark_us == START + S - 1
    said = [entry for entry in logs if entry.get("not_read")]
    assert [(entry["destination"], entry["not_read"]) for entry in said] == [("well", ["hung"])], (
        said
    )
    hung.open.set()


# -- a status table deleted while the job runs ---------------------------------------------


def test_a_deleted_status_table_is_created_again_and_registered(metrics: Metrics) -> None:
    """Its parts are gone: the next write (ResourceNotFoundException) has the publisher
    create it again, register every shard (the other shard at 0: no watermark until its
    processor publishes again, rather than one from this part alone), store this
    process's dead letters again, and claim anew."""
    region = Region()
    tables = [FakeStatusTable("eu-west-1/replica", region)]
    one = publisher(tables, metrics, shard="s1")
    other = publisher([FakeStatusTable("eu-west-1/replica", region)], metrics, shard="s2")
    try:
        for watermark in (one, other):
            watermark.begin(resumed=False)
            watermark.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
        one.undecodable(5, T0 + 5 * S)
        one.publish()
        other.publish()
        table = tables[0]
        assert combine(table.destination, table.stored()).watermark_us == T0 + 10 * S - 1

        table.delete()
        one.empty_read(previous_answer_at=(T0 + 20 * S) / S, received_at=0)
        one.publish()  # refused: the table is gone
        failures = "replicator_watermark_publish_failures_total"
        assert sample(metrics, failures, destination=table.destination) == 1
        no_backoff(one)
        one.publish()
        mark = combine(table.destination, table.stored())
        assert mark.unknown == ("s2",) and mark.watermark_us is None
        assert mark.dead_letter_ranges == ((T0 + 5 * S, T0 + 6 * S - 1),)
        # What processes no longer running stored there is gone: the changes until the
        # table was found deleted are not answered "replicated" (a wait exits 4).
        assert mark.unread_between(0, START) == [UnreadSpan(0, START, STATUS_TABLE_LOST)]
        part = mine(table)
        assert part is not None and part.watermark_us == T0 + 20 * S - 1

        other.empty_read(previous_answer_at=(T0 + 30 * S) / S, received_at=0)
        other.publish()
        assert combine(table.destination, table.stored()).watermark_us == T0 + 20 * S - 1
    finally:
        one.close()
        other.close()


def test_every_destination_is_published_by_a_thread_of_its_own(
    closing: list[ShardWatermark],
) -> None:
    tables = [FakeStatusTable(label) for label in ("a", "b", "c")]
    watermark = publisher(tables, Metrics(), interval_s=0.02)
    closing.append(watermark)
    watermark.begin(resumed=False)
    names = {thread.name for thread in threading.enumerate()}
    assert {"watermark a", "watermark b", "watermark c"} <= names


def test_a_processor_that_finds_the_table_created_again_by_another_stores_again(
    metrics: Metrics,
) -> None:
    """The other shard's processor finds the table already created again (its writes
    succeed): its part, raised before, has no owner now, so it is not raised before that
    processor has stored its dead letters again."""
    region = Region()
    table = FakeStatusTable("eu-west-1/replica", region)
    one = publisher([table], metrics, shard="s1")
    other = publisher([FakeStatusTable("eu-west-1/replica", region)], metrics, shard="s2")
    try:
        for watermark in (one, other):
            watermark.begin(resumed=False)
            watermark.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
        other.undecodable(7, T0 + 7 * S)
        one.publish()
        other.publish()
        table.delete()
        table.ensure_exists()  # created again (by the first processor to notice)
        other.empty_read(previous_answer_at=(T0 + 20 * S) / S, received_at=0)
        other.publish()
        mark = combine(table.destination, table.stored())
        assert mark.dead_letter_ranges == ((T0 + 7 * S, T0 + 8 * S - 1),)
        assert mark.unread_between(0, START) == [UnreadSpan(0, START, STATUS_TABLE_LOST)]
        assert mark.unknown == ("s1",)  # registered again: no watermark from s2 alone
        part = mine(table, "s2")
        assert part is not None and part.watermark_us == T0 + 20 * S - 1
        failures = "replicator_watermark_publish_failures_total"
        assert sample(metrics, failures, destination=table.destination) == 0
    finally:
        one.close()
        other.close()


def test_a_requested_shutdown_is_not_held_up_by_a_status_table_that_hangs() -> None:
    """The last publish at a requested shutdown is waited for a bounded time; with nothing
    held only in memory, the checkpoint is written. (Resumed: a first start at
    TRIM_HORIZON holds its checkpoint until it knows whether the stream lacks history.)"""
    table = FakeStatusTable("eu-west-1/replica")
    table.open.clear()
    shard = Shard1(table, start="3")
    try:
        shard.pipeline.position = "4"
        stopping = threading.Thread(
            target=messages.ShutdownRequestedInput({"action": "shutdownRequested"}).dispatch,
            args=(shard.checkpointer, shard.processor),
        )
        stopping.start()
        stopping.join(20)
        assert not stopping.is_alive(), "the shutdown waited on the status table"
        assert [position for position, _ in shard.checkpointer.written] == ["4"]
    finally:
        table.open.set()
        shard.close()


def test_a_destination_back_in_the_job_is_not_recorded_a_member_before_its_span_is_stored(
    closing: list[ShardWatermark],
) -> None:
    """A destination removed and added again, its span not stored yet (its status table
    refusing writes): the other destination's part, raised meanwhile, recorded it among
    the job's members, erasing the only record that the job had run without it, and a
    stop then left it with no span. Its parts are raised with the destinations decided."""
    region = Region()
    stayed = FakeStatusTable("stayed", region)
    back = FakeStatusTable("back", region)
    for table in (stayed, back):
        table.ensure_exists()
    back.raise_part("s1", T0, "before", members=frozenset({"stayed", "back"}))
    time.sleep(0.01)  # the run without it raised the other part later
    stayed.raise_part("s1", T0 + S, "without", members=frozenset({"stayed"}))
    stayed.raised.clear()
    back.refuse.add("add_unread_spans")  # its joined span cannot be stored yet
    watermark = publisher([stayed, back], Metrics(), interval_s=0.02)
    closing.append(watermark)
    watermark.begin(resumed=True)
    watermark.empty_read(previous_answer_at=(START + S) / S, received_at=0)
    assert stayed.raised.wait(10), "the destination that stayed was never published"
    part = mine(stayed)
    assert part is not None and part.current_members == {"stayed"}, part
    back.refuse.clear()


def test_an_ordinary_restart_of_a_job_with_two_shards_records_no_joined_span(
    closing: list[ShardWatermark],
) -> None:
    """No destination left the job: each shard's processor starts as its lease is taken,
    a moment apart. Parts were raised with the destinations decided so far, so a part
    raised while another destination was still undecided read, to the other shard's
    processor, as a run without it: a ``joined`` span at every restart."""
    region = Region()
    earlier = int((time.time() - 5) * S)
    for label in "AB":
        table = FakeStatusTable(label, region)
        table.ensure_exists()
        for shard in ("s1", "s2"):
            table.raise_part(shard, earlier, "previous-run", members=frozenset("AB"))
    shards = [Shard("s1", None, False), Shard("s2", None, False)]
    for shard in ("s1", "s2"):
        watermark = ShardWatermark(
            shard,
            {label: FakeStatusTable(label, region) for label in "AB"},
            lambda: list(shards),
            Metrics(),
            interval_s=0.1,
            margin_s=0,
            reads_follow_answers=True,
            source_history=created_with_its_stream,
            clock=time.time,
        )
        closing.append(watermark)
        watermark.begin(resumed=True)
        watermark.empty_read(previous_answer_at=time.time() + 1, received_at=0)
    tables = [FakeStatusTable(label, region) for label in "AB"]
    wait_until(
        lambda: all(part.owner != "previous-run" for table in tables for part in table.stored()),
        30,
        "every part raised by this run",
    )
    spans = [
        (part.destination, part.shard) for t in tables for part in t.stored() if part.unread_spans
    ]
    assert spans == [], spans
