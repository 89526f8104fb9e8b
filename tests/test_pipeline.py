"""One shard's pipeline in process: parallel destinations, throttling, backpressure."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from replicator.aws.backoff import Backoff
from replicator.buffer import ChangeBuffer
from replicator.deadletter import FileDeadLetters
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.exceptions import StreamOrderBroken
from replicator.filters import ChangeFilter
from replicator.intake import Reader, ShardIntake
from replicator.metrics import Metrics
from replicator.metrics.health import PROGRESS, SHARD_STARTED, evaluate
from replicator.pipeline import ShardPipeline
from replicator.records import Change
from replicator.rules import IN_STREAM_ORDER, ConflictRule, OrderedRule, squash_order
from replicator.rules.ordered import Peers
from replicator.watermark.tracker import ShardTracker
from replicator.writers.destination import DestinationWriter
from tests.support.aws import client, create_table
from tests.support.metrics import sample
from tests.support.records import daemon_record, kinesis_record, put, stream_record


class ThrottlingClient:
    """Wraps a real client; answers ProvisionedThroughputExceeded until released."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.released = threading.Event()
        self.throttled = 0
        self.lock = threading.Lock()

    def put_item(self, **kwargs: Any) -> Any:
        if not self.released.is_set():
            with self.lock:
                self.throttled += 1
            raise ClientError(
                {
                    "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "PutItem",
            )
        return self.real.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def build(
    endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    throttle: set[str],
    *,
    max_buffered: int = 1000,
    clock: Callable[[], float] = time.time,
) -> tuple[ShardPipeline, dict[str, Any], dict[str, ThrottlingClient]]:
    tables: dict[str, Any] = {}
    wrappers: dict[str, ThrottlingClient] = {}
    writers = {}
    for label, region in (("eu", "eu-west-1"), ("ap", "ap-southeast-2")):
        ddb = client("dynamodb", region, endpoint)
        table = unique(label)
        create_table(ddb, table, stream=None)
        tables[label] = (ddb, table)
        wrapped: Any = ddb
        if label in throttle:
            wrapped = wrappers[label] = ThrottlingClient(ddb)
        writers[label] = DestinationWriter(
            label=label,
            table=table,
            region=region,
            client=wrapped,
            rule=OrderedRule("last_writer_wins", "ts", None, numeric_only=False),
            metrics=metrics,
            backoff=Backoff(0.001, 0.01),
        )
    buffer = ChangeBuffer(list(writers), IN_STREAM_ORDER)
    return pipeline_of(writers, buffer, metrics, tmp_path, max_buffered, clock), tables, wrappers


def pipeline_of(
    writers: dict[str, DestinationWriter],
    buffer: ChangeBuffer,
    metrics: Metrics,
    tmp_path: Path,
    max_buffered: int,
    clock: Callable[[], float] = time.time,
) -> ShardPipeline:
    """Shard "s" of task "t", dead-lettering to a file in ``tmp_path``."""
    letters = DeadLetterer(FileDeadLetters(tmp_path / "dead.jsonl"), metrics, "t", "s")
    return ShardPipeline(
        writers,
        buffer,
        metrics,
        "s",
        max_in_flight=8,
        max_buffered=max_buffered,
        dead_letters=letters,
        clock=clock,
    )


@pytest.fixture
def closing() -> Any:
    pipelines: list[ShardPipeline] = []
    yield pipelines.append
    for pipeline in pipelines:
        pipeline.close()


def test_a_throttled_destination_loses_nothing_and_holds_the_checkpoint(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    pipeline, tables, wrappers = build(moto_endpoint, unique, tmp_path, metrics, throttle={"ap"})
    closing(pipeline)
    for seq in range(1, 41):
        pipeline.submit(decode(put(f"k{seq % 25}", seq, ts=seq)))
    pipeline.dispatch()
    # the unthrottled destination finishes; the checkpoint must wait for the throttled one
    eu_ddb, eu_table = tables["eu"]
    assert pipeline.flush(timeout=0.5) is False
    # Records 1-15 are replaced by 26-40 (same keys), but at "ap" none of those has
    # landed: a replaced change is passed only once the write standing for it lands
    # (it is written itself should that write be refused), so nothing is checkpointable.
    while wrappers["ap"].throttled < 50:
        assert pipeline.checkpointable() is None
        threading.Event().wait(0.01)
    assert pipeline.checkpointable() is None
    # The unthrottled destination's writes are not timed against the throttled one's
    # retries: on a loaded machine "eu" may still be writing after 50 of them.
    while pipeline.buffer.outstanding("eu"):
        assert pipeline.checkpointable() is None
        threading.Event().wait(0.01)
    assert pipeline.checkpointable() is None
    assert eu_ddb.scan(TableName=eu_table)["Count"] == 25
    wrappers["ap"].released.set()
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "40"
    for label in ("eu", "ap"):
        ddb, table = tables[label]
        found = {i["pk"]["S"]: i["ts"]["N"] for i in ddb.scan(TableName=table)["Items"]}
        expected = {f"k{k}": str(max(s for s in range(1, 41) if s % 25 == k)) for k in range(25)}
        assert found == expected, label
    assert sample(metrics, "replicator_retries_total", destination="ap", reason="throttled") >= 50
    pipeline.close()


def test_lag_is_zero_when_caught_up_and_grows_while_a_destination_waits(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    pipeline, _, wrappers = build(moto_endpoint, unique, tmp_path, metrics, throttle={"ap"})
    closing(pipeline)
    assert pipeline.lag_seconds("eu") == 0.0
    change = decode(put("k", 1, ts=1))  # created at 1_700_000_000 s
    pipeline.submit(change)
    pipeline.dispatch()
    while pipeline.buffer.outstanding("eu"):
        threading.Event().wait(0.01)
    assert pipeline.lag_seconds("eu", now=change.created_s + 100) == 0.0
    assert pipeline.lag_seconds("ap", now=change.created_s + 100) == 100.0
    wrappers["ap"].released.set()
    assert pipeline.flush(timeout=30)
    assert pipeline.lag_seconds("ap", now=change.created_s + 200) == 0.0
    pipeline.close()


def test_a_shard_started_with_a_backlog_is_judged_stalled_from_its_start_not_the_runtimes(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """A shard taken over from another worker, long after this runtime started, with a
    backlog and a destination still writing its first change: /healthz said "nothing
    settled there for <the runtime's age>" at once (503 for one poll on every takeover).
    A destination that settled nothing is counted from the shard's first processor's
    start (the gauge's earliest across processes), not from the runtime's start."""
    runtime_started = 1_800_000_000.0
    now = [runtime_started + 600.0]
    pipeline, _, wrappers = build(
        moto_endpoint, unique, tmp_path, metrics, throttle={"ap"}, clock=lambda: now[0]
    )
    closing(pipeline)
    started = now[0]
    pipeline.note_millis_behind(0)
    pipeline.submit(decode(put("k", 1, ts=1)))  # created long before: lag far past the limit
    pipeline.dispatch()
    while pipeline.buffer.outstanding("eu") or not wrappers["ap"].throttled:
        threading.Event().wait(0.01)

    def judged(at: float) -> list[str]:
        now[0] = at
        pipeline.report()
        samples = [
            (s.name, s.labels, s.value)
            for family in metrics.registry.collect()
            for s in family.samples
        ]
        return evaluate(samples, now=at, stall_after_s=30, started_at=runtime_started).reasons

    assert judged(started + 20) == []
    assert sample(metrics, SHARD_STARTED, shard="s") == started
    # Nothing settled there: no progress (the local runtime reads it as the destination's
    # recovery from refusals, so a processor's start must not stand for it).
    assert sample(metrics, PROGRESS, destination="ap", shard="s") == 0.0
    (reason,) = judged(started + 31)
    assert reason.startswith("destination ap is stalled on shard s:")
    assert "nothing settled there for 31s" in reason
    wrappers["ap"].released.set()
    assert pipeline.flush(timeout=30)


def test_lag_and_apply_delay_count_from_the_first_change_a_newer_one_replaced(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    start = time.time()
    pipeline, _, wrappers = build(moto_endpoint, unique, tmp_path, metrics, throttle={"ap"})
    closing(pipeline)
    t0_ms = 1_700_000_000_000
    t0 = t0_ms / 1000

    def made_at(seq: int, created_ms: int) -> Any:
        image = {"pk": {"S": "hot"}, "ts": {"N": str(seq)}}
        record = stream_record(
            "MODIFY", {"pk": {"S": "hot"}}, image, seq=seq, created_ms=created_ms
        )
        return decode(daemon_record(record, seq))

    def eu_done() -> None:
        while pipeline.buffer.outstanding("eu"):
            threading.Event().wait(0.01)

    pipeline.submit(made_at(1, t0_ms))
    pipeline.dispatch()  # ap: change 1 in flight, throttled
    eu_done()
    pipeline.submit(made_at(2, t0_ms + 100_000))
    pipeline.submit(made_at(3, t0_ms + 200_000))  # replaces change 2 before it is written
    pipeline.dispatch()
    eu_done()
    # Change 2 waits for change 3's write at ap, which stands for it there.
    assert pipeline.checkpointable() is None
    # ap has accepted nothing since change 1: its lag counts from it, however the item moved.
    assert pipeline.lag_seconds("ap", now=t0 + 300) == 300.0
    assert pipeline.lag_seconds("eu", now=t0 + 300) == 0.0
    wrappers["ap"].released.set()
    assert pipeline.flush(timeout=30)
    assert pipeline.lag_seconds("ap", now=t0 + 300) == 0.0
    # eu applied change 1, then change 3 on behalf of change 2 as well: its delay counts
    # from change 2's creation (100 s after change 1's), not from change 3's (200 s after).
    delay_sum = sample(metrics, "replicator_apply_delay_seconds_sum", destination="eu")
    assert sample(metrics, "replicator_apply_delay_seconds_count", destination="eu") == 2
    assert delay_sum >= 2 * (start - t0) - 100
    assert delay_sum <= 2 * (time.time() - t0) - 100


def test_no_lag_before_the_first_batch_and_never_below_millis_behind_latest(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """A processor that has read nothing does not know where the reader is: no lag
    series (0 would claim the tip). A batch's millisBehindLatest raises the lag at once,
    not at the next report, so no scrape shows it below millis_behind_latest / 1000."""
    pipeline, _, _ = build(moto_endpoint, unique, tmp_path, metrics, throttle=set())
    closing(pipeline)
    assert metrics.registry is not None
    lag = "replicator_replication_lag_seconds"
    pipeline.report()
    assert metrics.registry.get_sample_value(lag, {"destination": "eu", "shard": "s"}) is None
    intake = ShardIntake(pipeline, Reader(ChangeFilter(None, "", skip_ttl_deletes=False)))
    intake.accept([], 1154)
    for label in ("eu", "ap"):
        assert sample(metrics, lag, destination=label, shard="s") >= 1.154
    assert sample(metrics, "replicator_millis_behind_latest", shard="s") == 1154


def test_a_batch_raises_the_lag_to_its_first_change_before_it_is_read(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """millisBehindLatest is the distance of the batch's last record from the tip. A
    processor started again on a backlog (its buffer empty) whose destination refuses
    it must not show the newest change's age while it reads the batch (a dip that
    resets an alert's "for"): the batch's first change counts as read and not applied
    from the moment the batch arrives."""
    created_s = 1_700_000_000.0  # the records' creation time (tests/support/records.py)
    pipeline, _, _ = build(
        moto_endpoint, unique, tmp_path, metrics, throttle=set(), clock=lambda: created_s + 300
    )
    closing(pipeline)
    lag = "replicator_replication_lag_seconds"
    seen: list[float] = []
    submit_all = pipeline.submit_all

    def submitted(changes: Any) -> None:  # the batch is being read: what a scrape shows
        seen.append(sample(metrics, lag, destination="eu", shard="s"))
        submit_all(changes)

    pipeline.submit_all = submitted  # type: ignore[method-assign]
    intake = ShardIntake(pipeline, Reader(ChangeFilter(None, "", skip_ttl_deletes=False)))
    intake.accept([put("k1", 1, ts=1), put("k2", 2, ts=2)], 1_000)
    assert seen == [300.0]


def test_while_intake_waits_for_room_every_destination_lag_counts_the_time_since_the_batch(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """A destination that accepts nothing fills the buffer, and intake waits for room:
    nothing more is read, so every destination falls behind the tip, the one that applied
    all it was given too. Its lag (the real gauge) grows with the time since the batch
    arrived, from the batch's millisBehindLatest, until the next batch arrives; a reader
    that is not held (an idle, caught-up stream) shows no such growth."""
    now = [1_800_000_000.0]
    pipeline, _, wrappers = build(
        moto_endpoint, unique, tmp_path, metrics, {"ap"}, max_buffered=3, clock=lambda: now[0]
    )
    closing(pipeline)
    lag = "replicator_replication_lag_seconds"
    intake = ShardIntake(pipeline, Reader(ChangeFilter(None, "", skip_ttl_deletes=False)))
    intake.accept([put(f"k{seq}", seq, ts=seq) for seq in range(1, 6)], 150)
    answered: list[bool] = []
    waiting = threading.Thread(target=lambda: answered.append(pipeline.wait_for_room()))
    waiting.start()
    deadline = time.monotonic() + 60
    while pipeline.buffer.outstanding("eu") and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert not pipeline.buffer.outstanding("eu")  # eu applied all it was given
    now[0] += 80
    # The wait has begun by the time the processor's reporter looks (it never waits
    # for that): poll for it, then read the gauges the reporter publishes.
    while pipeline.lag_seconds("eu") < 80 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    pipeline.report()
    assert waiting.is_alive()  # still held: ap accepts nothing
    assert sample(metrics, lag, destination="eu", shard="s") == pytest.approx(80.15)
    assert sample(metrics, lag, destination="ap", shard="s") >= 80.15
    assert sample(metrics, "replicator_millis_behind_latest", shard="s") == 150
    wrappers["ap"].released.set()
    waiting.join(60)
    assert answered == [True]
    now[0] += 5  # between the answer and the next batch nothing is read either
    pipeline.report()
    assert sample(metrics, lag, destination="eu", shard="s") == pytest.approx(85.15)
    intake.accept([], 0)  # the next read: at the tip
    assert pipeline.flush(timeout=60)
    pipeline.report()
    assert sample(metrics, lag, destination="eu", shard="s") == 0.0
    now[0] += 1000  # idle and caught up, reading as usual: no lag grows
    intake.accept([], 0)
    now[0] += 1000
    pipeline.report()
    for label in ("eu", "ap"):
        assert sample(metrics, lag, destination=label, shard="s") == 0.0


def test_a_released_wait_for_room_answers_without_room_once(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """The local runtime's stop ends a wait for room (the processor can then answer the
    batch and take its shutdownRequested); the release counts once: the next wait holds
    again, so the buffer stays bounded."""
    pipeline, _, wrappers = build(moto_endpoint, unique, tmp_path, metrics, {"ap"}, max_buffered=2)
    closing(pipeline)
    for seq in range(1, 4):
        pipeline.submit(decode(put(f"k{seq}", seq, ts=seq)))
    pipeline.dispatch()
    answered: list[bool] = []
    waiting = threading.Thread(target=lambda: answered.append(pipeline.wait_for_room()))
    waiting.start()
    pipeline.release_wait()
    waiting.join(60)
    assert answered == [False]
    again = threading.Thread(target=lambda: answered.append(pipeline.wait_for_room()))
    again.start()
    again.join(1.5)
    assert again.is_alive()  # held again: ap has still accepted nothing
    wrappers["ap"].released.set()
    again.join(60)
    assert answered == [False, True]


def one_destination(
    endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    rule: ConflictRule,
    hash_type: str = "S",
    ordered_stream: bool = True,
) -> tuple[ShardPipeline, Any, str]:
    """A pipeline writing to one moto table under ``rule``."""
    ddb = client("dynamodb", "eu-west-1", endpoint)
    table = unique("one")
    create_table(ddb, table, hash_type=hash_type, stream=None)
    writer = DestinationWriter(
        label="eu",
        table=table,
        region="eu-west-1",
        client=ddb,
        rule=rule,
        metrics=metrics,
        backoff=Backoff(0.001, 0.01),
    )
    buffer = ChangeBuffer(["eu"], squash_order([rule], ordered_stream=ordered_stream))
    pipeline = pipeline_of({"eu": writer}, buffer, metrics, tmp_path, 100)
    return pipeline, ddb, table


def test_38_digit_keys_that_differ_in_the_last_digit_both_reach_the_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    rule = OrderedRule("version", "v", None, numeric_only=True)
    pipeline, ddb, table = one_destination(
        moto_endpoint, unique, tmp_path, metrics, rule, hash_type="N"
    )
    closing(pipeline)
    numbers = ["1" + "0" * 36 + "1", "1" + "0" * 36 + "2"]
    for seq, number in enumerate(numbers, start=1):
        image = {"pk": {"N": number}, "v": {"N": "1"}}
        record = stream_record("INSERT", {"pk": {"N": number}}, image, seq=seq)
        pipeline.submit(decode(daemon_record(record, seq)))
    pipeline.dispatch()
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "2"
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    assert sorted(item["pk"]["N"] for item in items) == numbers


@pytest.mark.parametrize("ordered_stream", [True, False], ids=["dynamodb-streams", "kinesis"])
@pytest.mark.parametrize("policy", ["version", "last_writer_wins"])
def test_delete_then_recreate_at_a_lower_rank_in_one_batch_leaves_the_new_item(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    closing: Any,
    policy: str,
    ordered_stream: bool,
) -> None:
    """The source deletes the item at version 5 and creates it again at version 1 (what
    DynamoDBMapper's versioning does); both records arrive in one batch. Applied one at a
    time the delete clears version 5 and the insert lands: so must the squashed batch."""
    rule = OrderedRule(policy, "v", None, numeric_only=policy == "version")
    pipeline, ddb, table = one_destination(
        moto_endpoint, unique, tmp_path, metrics, rule, ordered_stream=ordered_stream
    )
    closing(pipeline)
    keys = {"pk": {"S": "k"}}
    old = {"pk": {"S": "k"}, "v": {"N": "5"}, "state": {"S": "before"}}
    new = {"pk": {"S": "k"}, "v": {"N": "1"}, "state": {"S": "after"}}
    ddb.put_item(TableName=table, Item=old)  # replicated earlier
    if ordered_stream:
        payloads = [
            stream_record("REMOVE", keys, None, old, seq=1),
            stream_record("INSERT", keys, new, None, seq=2),
        ]
    else:
        payloads = [
            kinesis_record("REMOVE", keys, None, old, created_us=1_700_000_000_000_000),
            kinesis_record("INSERT", keys, new, None, created_us=1_700_000_000_000_001),
        ]
    for seq, payload in enumerate(payloads, start=1):
        pipeline.submit(decode(daemon_record(payload, seq)))
    pipeline.dispatch()
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "2"
    item = ddb.get_item(TableName=table, Key=keys, ConsistentRead=True).get("Item")
    assert item == new
    assert (
        sample(metrics, "replicator_writes_total", destination="eu", op="delete", outcome="applied")
        == 1
    )
    assert (
        sample(metrics, "replicator_writes_total", destination="eu", op="put", outcome="applied")
        == 1
    )


def test_a_kinesis_record_of_another_table_is_skipped_counted_and_checkpointed_past(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """A Kinesis data stream may carry several tables' changes: only the job's source
    table's are written; another table's (even one whose image would not decode) are
    counted as other_table, never dead-lettered, and the checkpoint moves past them."""
    rule = OrderedRule("version", "v", None, numeric_only=True)
    pipeline, ddb, table = one_destination(
        moto_endpoint, unique, tmp_path, metrics, rule, ordered_stream=False
    )
    closing(pipeline)
    keys = {"pk": {"S": "k"}}
    ours = kinesis_record("INSERT", keys, {"pk": {"S": "k"}, "v": {"N": "1"}}, table="orders")
    theirs = kinesis_record("INSERT", {"pk": {"S": "x"}}, {"pk": {"S": "x"}}, table="invoices")
    broken = kinesis_record("INSERT", {"pk": {"S": "y"}}, {"pk": {"N": "nan?"}}, table="other")
    reader = Reader(ChangeFilter.for_job(kinesis_job("orders")))
    intake = ShardIntake(pipeline, reader)
    records = [daemon_record(p, seq) for seq, p in enumerate([theirs, ours, broken], start=1)]
    intake.accept(records, 0)
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "3"
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    assert [item["pk"]["S"] for item in items] == ["k"]
    other = sample(
        metrics, "replicator_writes_total", destination="eu", op="put", outcome="other_table"
    )
    assert other == 2
    dead = tmp_path / "dead.jsonl"
    assert not dead.exists() or dead.read_text() == ""


def higher_version_wins(incoming: Any, existing: Any) -> bool:
    """A user's resolver: the higher ``v`` stays (a delete always applies)."""
    if existing is None or incoming.new_image is None:
        return True
    return int(incoming.new_image["v"]["N"]) > int(existing["v"]["N"])


def test_custom_on_kinesis_sees_every_change_created_in_one_tick_and_keeps_the_newest(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """v1, v3 and v2 of one item, made in one millisecond, delivered in that order in one
    batch: the destination must end at v3, as one record at a time leaves it."""
    from replicator.rules.custom import CustomRule

    pipeline, ddb, table = one_destination(
        moto_endpoint,
        unique,
        tmp_path,
        metrics,
        CustomRule(higher_version_wins),
        ordered_stream=False,
    )
    closing(pipeline)
    keys = {"pk": {"S": "k"}}
    records = [
        daemon_record(
            kinesis_record("MODIFY", keys, {"pk": {"S": "k"}, "v": {"N": str(version)}}), seq
        )
        for seq, version in enumerate([1, 3, 2], start=1)
    ]
    ShardIntake(pipeline, Reader(ChangeFilter.for_job(kinesis_job("orders")))).accept(records, 0)
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "3"
    item = ddb.get_item(TableName=table, Key=keys, ConsistentRead=True)["Item"]
    assert item == {"pk": {"S": "k"}, "v": {"N": "3"}}


def test_a_kinesis_record_whose_table_name_is_not_text_is_dead_lettered_not_written(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """Whose change a tableName of 12345 is cannot be told: it was written as the
    source table's. It is dead-lettered as undecodable, naming the record, and the
    checkpoint moves past it."""
    rule = OrderedRule("version", "v", None, numeric_only=True)
    pipeline, ddb, table = one_destination(
        moto_endpoint, unique, tmp_path, metrics, rule, ordered_stream=False
    )
    closing(pipeline)
    numbered = kinesis_record("INSERT", {"pk": {"S": "x"}}, {"pk": {"S": "x"}, "v": {"N": "1"}})
    numbered["tableName"] = 12345
    ours = kinesis_record("INSERT", {"pk": {"S": "k"}}, {"pk": {"S": "k"}, "v": {"N": "1"}})
    intake = ShardIntake(pipeline, Reader(ChangeFilter.for_job(kinesis_job("orders"))))
    intake.accept([daemon_record(numbered, 1), daemon_record(ours, 2)], 0)
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "2"
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    assert [item["pk"]["S"] for item in items] == ["k"]
    (letter,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letter["reason"] == "undecodable"
    assert letter["error"] == "record 1: tableName 12345 is not a table name"
    assert letter["record"]["sequenceNumber"] == "1"


def kinesis_job(table: str) -> Any:
    from replicator.config.loader import parse_job

    text = (
        "runtime: kcl\n"
        f"source: {{region: us-east-1, table: {table}, stream: {{kind: kinesis, name: s}}}}\n"
        f"destinations: [{{region: eu-west-1, table: {table}}}]\n"
        "conflict: {policy: version, version_attribute: v}\n"
    )
    return parse_job(text, Path("job.yaml")).job


class RecordingWatermark:
    """Stands in for the shard's watermark publisher: what ``skip`` told it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, frozenset[str]]] = []

    def skipped(self, change: Change, *, replaces_older_at: Collection[str] = ()) -> None:
        self.calls.append((change.sequence_number, frozenset(replaces_older_at)))

    def close(self) -> None:
        pass


def mesh_pipeline(
    tmp_path: Path, metrics: Metrics, regions: dict[str, str]
) -> tuple[ShardPipeline, RecordingWatermark]:
    writers = {
        label: DestinationWriter(
            label=label,
            table="t",
            region=region,
            client=client("dynamodb", region, "http://127.0.0.1:9"),  # never called
            rule=OrderedRule("last_writer_wins", "ts", None, numeric_only=False),
            metrics=metrics,
            backoff=Backoff(0.001, 0.01),
        )
        for label, region in regions.items()
    }
    buffer = ChangeBuffer(list(writers), IN_STREAM_ORDER)
    pipeline = pipeline_of(writers, buffer, metrics, tmp_path, 100)
    recording = RecordingWatermark()
    pipeline.watermark = recording  # type: ignore[assignment]
    return pipeline, recording


def test_an_echo_is_held_by_the_one_destination_in_its_origin_region(
    tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    regions = {"eu": "eu-west-1", "ap": "ap-southeast-2", "ap2": "ap-southeast-2"}
    pipeline, _ = mesh_pipeline(tmp_path, metrics, regions)
    closing(pipeline)
    assert pipeline.echo_holders("eu-west-1") == ("eu",)
    assert pipeline.echo_holders("ap-southeast-2") == ()  # two there: cannot tell which
    assert pipeline.echo_holders("us-west-2") == ()  # a region not written to
    assert pipeline.echo_holders(None) == ()
    pair, _ = mesh_pipeline(tmp_path, metrics, {"eu": "eu-west-1"})
    closing(pair)
    assert pair.echo_holders("some-origin-value") == ("eu",)  # a pair: it came from eu


def test_skip_settles_an_echo_at_the_same_destinations_in_buffer_and_watermark(
    tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """The repro: a change made here, then eu's newer state echoed here. The buffer keeps
    the older change for ap only, and the watermark is told to settle it at eu only."""
    pipeline, recording = mesh_pipeline(
        tmp_path, metrics, {"eu": "eu-west-1", "ap": "ap-southeast-2"}
    )
    closing(pipeline)
    reader = Reader(ChangeFilter("origin", "us-east-1", skip_ttl_deletes=False))
    older = reader.read(put("evA", 1, ts=100, origin="us-east-1"))
    echo = reader.read(put("evA", 2, ts=200, origin="eu-west-1"))
    assert (echo.route.value, echo.replaces_older, echo.origin) == (
        "loop_skipped",
        True,
        "eu-west-1",
    )
    pipeline.buffer.add(older.change)
    pipeline.skip(echo.change, echo.route, replaces_older=True, origin=echo.origin)
    assert recording.calls == [("2", frozenset({"eu"}))]
    assert pipeline.buffer.take_ready("eu", 10) == []
    (owed,) = pipeline.buffer.take_ready("ap", 10)
    assert owed.change.sequence_number == "1"
    assert pipeline.checkpointable() is None
    pipeline.buffer.complete("ap", owed)
    assert pipeline.checkpointable() == "2"


@pytest.mark.parametrize("policy", ["version", "last_writer_wins"])
def test_a_delete_of_an_image_either_region_wrote_removes_only_that_image(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any, policy: str
) -> None:
    """The job of eu-west-1, writing to us-east-1. eu's stream carries deletes that may be
    eu's own or the echoes of us's (a delete carries no stamp). Meanwhile us re-created
    some items at a lower version: that is newer, and stays, whichever region stamped
    the deleted image. An item that is still the deleted image is removed. In a mesh, a
    delete of an image a third region wrote keeps removing what ranks at or below it."""
    version = policy == "version"
    pair = OrderedRule(policy, "v", "o", numeric_only=version, peers=Peers(any_stamp=True))
    pipeline, ddb, table = one_destination(moto_endpoint, unique, tmp_path, metrics, pair)
    closing(pipeline)

    def image(pk: str, v: str, origin: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "v": {"N": v}, "o": {"S": origin}}

    def submit_deletes(pipeline: ShardPipeline, deletes: list[dict[str, Any]]) -> None:
        for seq, old in enumerate(deletes, start=1):
            record = stream_record("REMOVE", {"pk": old["pk"]}, None, old, seq=seq)
            pipeline.submit(decode(daemon_record(record, seq)))
        pipeline.dispatch()
        assert pipeline.flush(timeout=30)
        assert pipeline.checkpointable() == str(len(deletes))

    def held(ddb: Any, table: str, pk: str) -> Any:
        return ddb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")

    before = {
        "theirs-recreated": image("theirs-recreated", "1", "us-east-1"),
        "mine-recreated": image("mine-recreated", "1", "us-east-1"),
        "theirs-same": image("theirs-same", "7", "us-east-1"),
        "mine-same": image("mine-same", "7", "eu-west-1"),
    }
    for item in before.values():
        ddb.put_item(TableName=table, Item=item)
    submit_deletes(
        pipeline,
        [
            image("theirs-recreated", "7", "us-east-1"),
            image("mine-recreated", "7", "eu-west-1"),
            image("theirs-same", "7", "us-east-1"),
            image("mine-same", "7", "eu-west-1"),
        ],
    )
    assert {pk: held(ddb, table, pk) for pk in before} == {
        "theirs-recreated": before["theirs-recreated"],
        "mine-recreated": before["mine-recreated"],
        "theirs-same": None,
        "mine-same": None,
    }
    assert (
        sample(
            metrics, "replicator_writes_total", destination="eu", op="delete", outcome="unchanged"
        )
        == 2
    )

    mesh = Peers(stamps=frozenset({"eu-west-1", "us-east-1"}))
    third = OrderedRule(policy, "v", "o", numeric_only=version, peers=mesh)
    pipeline, ddb, table = one_destination(moto_endpoint, unique, tmp_path, Metrics(), third)
    closing(pipeline)
    ddb.put_item(TableName=table, Item=image("lagging", "6", "ap-south-1"))
    submit_deletes(pipeline, [image("lagging", "7", "ap-south-1")])
    assert held(ddb, table, "lagging") is None


class TrackedWatermark:
    """The shard's watermark without its publishing: what the pipeline tells it goes to
    a real tracker, which keeps its account of each change per destination."""

    def __init__(self, destinations: list[str], shard_id: str | None = None) -> None:
        self.tracker = ShardTracker(destinations, margin_us=0, shard_id=shard_id)

    def received_all(self, changes: Any) -> None:
        self.tracker.received_all(changes)

    def settled(self, destination: str, change: Change, *, dead_lettered: bool) -> None:
        self.tracker.settled(destination, change, dead_lettered=dead_lettered)

    def close(self) -> None:
        pass


class FailingWatermark(TrackedWatermark):
    """One whose account of a settled write fails."""

    def settled(self, destination: str, change: Change, *, dead_lettered: bool) -> None:
        raise RuntimeError(f"no account of {change.sequence_number}")


def test_a_failure_settling_a_write_on_a_writer_thread_stops_the_shard(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A failure after the write itself (the watermark's account, the buffer's
    completion, the next dispatch), as the tracker's was for two records at one
    position before it refused the second as it arrived. On a writer thread that failure
    went into the thread pool's future and no further: the write stayed in flight for
    good, the item's later changes queued behind it, the checkpoint stopped, and nothing
    was logged. It stops the shard, as any writer failure does."""
    rule = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
    # botocore's client: the writes run on the pool's threads.
    pipeline, ddb, table = one_destination(moto_endpoint, unique, tmp_path, metrics, rule)
    pipeline.watermark = FailingWatermark(["eu"])  # type: ignore[assignment]
    try:
        change = decode(put("k", 7, ts=7))
        with capture_logs() as logged:
            pipeline.submit_all([change])
            pipeline.dispatch()
            with pytest.raises(RuntimeError, match="no account of"):
                pipeline.flush(timeout=10)
        assert ddb.get_item(TableName=table, Key={"pk": {"S": "k"}})["Item"]["ts"] == {"N": "7"}
        failed = [line for line in logged if line["event"].startswith("destination writer failed")]
        assert [(line["destination"], line["error_type"]) for line in failed] == [
            ("eu", "RuntimeError")
        ]
    finally:
        pipeline.close()


def test_a_record_delivered_twice_stops_the_shard_before_either_is_written(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The repro: moto can give two stream records one sequence number and then serve
    the second one again. The watermark's account, by position, cannot hold both: it
    failed with a bare KeyError as the writes settled, on a writer thread. The second
    is refused as it arrives, naming the position and the shard, before anything is
    written or checkpointable."""
    rule = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
    pipeline, ddb, table = one_destination(moto_endpoint, unique, tmp_path, metrics, rule)
    pipeline.watermark = TrackedWatermark(["eu"], shard_id="shardId-0001")  # type: ignore[assignment]
    try:
        change = decode(put("k", 7, ts=7))
        repeated = f"stream record sequence number {change.sequence_number} seen twice"
        with pytest.raises(StreamOrderBroken, match=f"{repeated} in shard shardId-0001"):
            pipeline.submit_all([change, change])  # one record, delivered twice
        assert pipeline.checkpointable() is None
        assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "k"}})
    finally:
        pipeline.close()


def moto_intake(
    endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> tuple[ShardIntake, Any, str]:
    """A shard's intake writing to one moto table, last writer wins on ``ts``, with a
    watermark that keeps account of each change by position."""
    rule = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
    pipeline, ddb, table = one_destination(endpoint, unique, tmp_path, metrics, rule)
    pipeline.watermark = TrackedWatermark(["eu"], shard_id="shardId-0001")  # type: ignore[assignment]
    closing(pipeline)
    return ShardIntake(pipeline, Reader(ChangeFilter(None, "", skip_ttl_deletes=False))), ddb, table


def held_ts(ddb: Any, table: str) -> dict[str, str]:
    """The ``ts`` of each item of ``table``, by pk."""
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["pk"]["S"]: item["ts"]["N"] for item in items}


def test_records_numbered_alike_as_an_unpatched_moto_serves_them_are_all_applied(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """An unpatched moto serving two writes at once numbers both records alike (the
    shard's length before the append), delivers the second again at the next read, and
    numbers the next record after a gap. Real streams never do this; a user's test
    against moto does. Each change is applied once, in the order read, the repeated
    delivery is read once, and the checkpoint passes a number only when every record
    carrying it is done."""
    intake, ddb, table = moto_intake(moto_endpoint, unique, tmp_path, metrics, closing)
    pipeline = intake.pipeline
    first, second = put("a", 10, ts=1), put("b", 10, ts=2)
    then = put("a", 12, ts=3)
    with capture_logs() as logged:
        intake.accept([put("c", 9, ts=1), first, second], 0)
        intake.accept([second, then], 0)
        assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "12"
    assert held_ts(ddb, table) == {"a": "3", "b": "2", "c": "1"}
    written = sample(
        metrics, "replicator_writes_total", destination="eu", op="put", outcome="applied"
    )
    assert written == 4  # c, a, b, a again: the repeated b is not written twice
    warned = [line for line in logged if line["log_level"] == "warning"]
    assert [(line["event"], line["sequence_number"]) for line in warned] == [
        ("two stream records carry one sequence number; both applied in the order read", "10"),
        ("a stream record was delivered again; read once", "10"),
    ]


def test_a_checkpoint_does_not_pass_a_number_while_a_record_carrying_it_is_open() -> None:
    buffer = ChangeBuffer(["eu"], IN_STREAM_ORDER)
    first, second = decode(put("a", 10, ts=1)), decode(put("b", 10, ts=2))
    buffer.add(first)
    buffer.add(msgspec.structs.replace(second, position=11))
    (entry,) = [entry for entry in buffer.take_ready("eu", 10) if entry.change.key == first.key]
    buffer.complete("eu", entry, failed=False)
    assert buffer.checkpointable() is None


def test_a_record_numbered_below_the_last_one_read_is_applied_in_the_order_read(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """An unpatched moto with several writers at once can number a record by the shard's
    length some appends before its own, so that it follows records with higher numbers
    (895, 896, 897, 898, 896, 900). It was refused as a broken stream, the shard restarted
    from its checkpoint, read the same records and stopped again: the job never caught
    up. A lower number with new data is applied once, in the order read, and said."""
    intake, ddb, table = moto_intake(moto_endpoint, unique, tmp_path, metrics, closing)
    pipeline = intake.pipeline
    with capture_logs() as logged:
        intake.accept(
            [
                put("a", 895, ts=1),
                put("b", 896, ts=1),
                put("c", 897, ts=1),
                put("d", 898, ts=1),
                put("a", 896, ts=2),  # a later write to "a", numbered below 898
                put("e", 900, ts=1),
            ],
            0,
        )
        assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "900"
    assert held_ts(ddb, table) == {"a": "2", "b": "1", "c": "1", "d": "1", "e": "1"}
    warned = [line for line in logged if line["log_level"] == "warning"]
    assert [(line["event"], line["shard"], line["sequence_number"]) for line in warned] == [
        (
            "a stream record carries a sequence number below the last one read; applied "
            "in the order read",
            pipeline.shard_id,
            "896",
        )
    ]


def test_a_record_numbered_below_the_last_one_read_and_served_again_is_read_once(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, closing: Any
) -> None:
    """moto's next iterator starts after the highest number of a read, at the index that
    number would have: the records behind a lower-numbered one are served again, and a
    read that ends on one steps back to the records after its number. Each record is
    read once, whatever number it carries."""
    intake, ddb, table = moto_intake(moto_endpoint, unique, tmp_path, metrics, closing)
    pipeline = intake.pipeline
    low = put("b", 896, ts=2)
    with capture_logs() as logged:
        intake.accept([put("a", 896, ts=1), put("c", 897, ts=1), put("d", 898, ts=1), low], 0)
        intake.accept([low], 0)  # after 898: the index of 899, where the 896 is
        intake.accept([put("c", 897, ts=1), put("d", 898, ts=1), low], 0)  # after 896
        intake.accept([low, put("e", 900, ts=1)], 0)
        assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "900"
    assert held_ts(ddb, table) == {"a": "1", "b": "2", "c": "1", "d": "1", "e": "1"}
    written = sample(
        metrics, "replicator_writes_total", destination="eu", op="put", outcome="applied"
    )
    assert written == 5
    warned = [(line["event"], line["sequence_number"]) for line in logged]
    assert warned.count(("a stream record was delivered again; read once", "896")) == 1
    assert ("a stream record was delivered again; read once", "897") in warned


def test_a_checkpoint_never_goes_back_nor_passes_a_lower_numbered_record_still_open() -> None:
    buffer = ChangeBuffer(["eu"], IN_STREAM_ORDER)
    changes = [
        decode(put(pk, number, ts=1))
        for pk, number in (("a", 895), ("b", 896), ("c", 897), ("d", 898), ("e", 896))
    ]
    for position, change in enumerate(changes, start=895):
        buffer.add(msgspec.structs.replace(change, position=position))
    entries = {entry.change.key: entry for entry in buffer.take_ready("eu", 10)}
    for change in changes:
        if change is not changes[-1]:
            buffer.complete("eu", entries[change.key])
    # 896 is carried by a record still open: the checkpoint passes neither it nor 897, 898.
    assert buffer.checkpointable() == "895"
    buffer.complete("eu", entries[changes[-1].key])
    assert buffer.checkpointable() == "898"  # not back to 896, the last record's number
    buffer.add_done("897")  # a record that did not decode, numbered below 898
    assert buffer.checkpointable() == "898"
    later = decode(put("f", 900, ts=1))
    buffer.add(msgspec.structs.replace(later, position=900))
    (entry,) = buffer.take_ready("eu", 10)
    buffer.complete("eu", entry)
    assert buffer.checkpointable() == "900"
