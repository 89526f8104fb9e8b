"""A write whose request got no answer may land after its retry, over the item's next
change: the change's write is held until it can no longer land. A conditional put fails
its condition on a newer item but not on none: only the item's next delete waits for it."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from botocore.exceptions import ClientError, ReadTimeoutError

from replicator.aws import clients
from replicator.aws.backoff import Backoff
from replicator.aws.clients import Place
from replicator.aws.errors import may_have_landed
from replicator.buffer import ChangeBuffer
from replicator.config.model import ConflictConfig
from replicator.decode import decode
from replicator.exceptions import DestinationRefused
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.records import Change
from replicator.rules import IN_STREAM_ORDER, rule_for
from replicator.tombstones.table import TombstoneTable
from replicator.writers.destination import DestinationWriter
from replicator.writers.loopwire import Answered, EventLoopThread, LoopWire
from replicator.writers.outcomes import FirstAnswer, Outcome
from replicator.writers.wire import WireWriteClient
from tests.support.aws import client, create_table
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.metrics import sample
from tests.support.records import put, remove
from tests.test_pipeline import pipeline_of
from tests.writers.test_loop_path import LWW, OVERWRITE, VERSION, loop_pipeline
from tests.writers.test_wire import direct_client
from tests.writers.test_write_back import KEY, Pair, image, tombstone
from tests.writers.test_write_back import change as aa_change

WAIT_S = 30.0  # the most any condition below is waited for (a loaded machine)


class LateTable:
    """Items by key; the first write whose item or key holds ``slow`` times out, and is
    carried out ``lands_after_s`` later (held on the way, as a proxy would)."""

    def __init__(self, slow: str = "SLOWME", lands_after_s: float = 0.2) -> None:
        self.slow = slow
        self.lands_after_s = lands_after_s
        self.items: dict[str, dict[str, Any]] = {}
        self.landed = threading.Event()
        self.slowed = False
        self.lock = threading.Lock()

    def _write(self, pk: str, item: dict[str, Any] | None, body: str) -> dict[str, Any]:
        with self.lock:
            if self.slow in body and not self.slowed:
                self.slowed = True
                threading.Timer(self.lands_after_s, self._land, (pk, item)).start()
                raise ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
            self._set(pk, item)
        return {}

    def _land(self, pk: str, item: dict[str, Any] | None) -> None:
        with self.lock:
            self._set(pk, item)
        self.landed.set()

    def _set(self, pk: str, item: dict[str, Any] | None) -> None:
        if item is None:
            self.items.pop(pk, None)
        else:
            self.items[pk] = item

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        item = kwargs["Item"]
        return self._write(item["pk"]["S"], item, repr(item))

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        key = kwargs["Key"]
        return self._write(key["pk"]["S"], None, repr(key))

    def value(self, pk: str) -> str | None:
        with self.lock:
            item = self.items.get(pk)
        return None if item is None else str(item["v"]["S"])


def writer_for(
    table: object, metrics: Metrics, window_s: float, conflict: dict[str, str] = OVERWRITE
) -> DestinationWriter:
    return DestinationWriter(
        label="dest",
        table="t",
        region="eu-west-1",
        client=table,  # type: ignore[arg-type]
        rule=rule_for(ConflictConfig(**conflict), "origin"),
        metrics=metrics,
        backoff=Backoff(0.0001, 0.001),
        late_write_window_s=window_s,
    )


def holds(metrics: Metrics) -> float:
    return sample(metrics, "replicator_late_write_holds_total", destination="dest")


def wait_for(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("first", "slow", "pk"),
    [(put("a", 1, v="SLOWME-old"), "SLOWME", "a"), (remove("a", 1, v="old"), "'a'", "a")],
    ids=["put", "delete"],
)
def test_an_unanswered_write_landing_late_does_not_replace_the_next_change(
    metrics: Metrics, first: Any, slow: str, pk: str
) -> None:
    """The request is carried out 0.2 s after it was sent, after its retry: the write
    returns only once the window (3 s) has passed, so the next change is written after it."""
    table = LateTable(slow=slow)
    writer = writer_for(table, metrics, window_s=3.0)
    assert writer.write(decode(first)).outcome is Outcome.APPLIED
    assert writer.write(decode(put(pk, 2, v="new"))).outcome is Outcome.APPLIED
    assert table.landed.wait(WAIT_S)
    assert table.value(pk) == "new"
    assert holds(metrics) == 1


def late_landing_pipeline(
    proxy: FaultProxy, table: str, tmp_path: Path, metrics: Metrics, conflict: dict[str, str]
) -> ShardPipeline:
    """A pipeline writing to ``table`` through ``proxy`` with a 1 s read timeout and an
    8 s late-write window: a request the proxy holds 3 s gets no answer, is retried, and
    lands well within the window."""
    pipeline = loop_pipeline(proxy.url, table, tmp_path, metrics, conflict, read_timeout=1.0)
    writer = pipeline.writers["dest"]
    assert isinstance(writer, DestinationWriter)
    writer.late_write_window_s = 8.0
    return pipeline


def test_an_unanswered_first_request_on_the_event_loop_holds_the_key(
    proxy: FaultProxy, moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The reviewer's case through a proxy: the first PutItem (sent on the event loop) is
    held 3 s against a 1 s read timeout and then carried out; the retry passed long
    before, and the next change is written only after the window (8 s)."""
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    name = unique("late")
    create_table(ddb, name, stream=None)
    pipeline = late_landing_pipeline(proxy, name, tmp_path, metrics, OVERWRITE)
    try:
        proxy.late_landing_once(3.0)
        pipeline.submit(decode(put("a", 1, v="SLOWME-old")))
        pipeline.dispatch()
        wait_for(lambda: proxy.counts("PutItem")["upstream_200"] == 1)  # the retry
        pipeline.submit(decode(put("a", 2, v="new")))  # a later batch: not squashed
        pipeline.dispatch()
        assert pipeline.flush(timeout=WAIT_S)
        wait_for(lambda: proxy.counts("PutItem")["late_landing_200"] == 1)
        item = ddb.get_item(TableName=name, Key={"pk": {"S": "a"}}, ConsistentRead=True)
        assert item["Item"]["v"] == {"S": "new"}
        assert holds(metrics) == 1
    finally:
        pipeline.close()


def test_a_held_key_waits_while_other_keys_flow_and_a_stop_ends_the_hold(
    metrics: Metrics, tmp_path: Path
) -> None:
    table = LateTable()
    writer = writer_for(table, metrics, window_s=WAIT_S * 10)
    pipeline = pipeline_of(
        {"dest": writer}, ChangeBuffer(["dest"], IN_STREAM_ORDER), metrics, tmp_path, 100
    )
    try:
        held = decode(put("a", 1, v="SLOWME-old"))
        pipeline.submit(held)
        pipeline.dispatch()
        wait_for(lambda: holds(metrics) == 1)
        pipeline.submit(decode(put("a", 2, v="new")))  # a later batch: not squashed
        pipeline.submit(decode(put("b", 3, v="other")))
        pipeline.dispatch()
        wait_for(lambda: table.value("b") == "other")
        assert table.landed.wait(WAIT_S)
        assert table.value("a") == "SLOWME-old"  # the next change still waits
        # The held change was applied and settled: the checkpoint passes it, not its next.
        assert pipeline.outstanding() == {"dest": 1}
        assert pipeline.checkpointable() == held.sequence_number
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            pipeline.release_holds()  # a stop: the held change settles at once
        (said,) = [line for line in logs if line["event"].startswith("stopping with items")]
        assert said["held_keys"] == {"dest": 1}  # so that an operator knows to verify
        assert "replicator verify" in said["event"]
        assert pipeline.flush(timeout=WAIT_S)
        assert time.monotonic() - started < WAIT_S
        assert table.value("a") == "new"
        assert pipeline.outstanding() == {}
    finally:
        pipeline.close()


def test_a_cancelled_writer_ends_the_hold(metrics: Metrics) -> None:
    table = LateTable()
    writer = writer_for(table, metrics, window_s=WAIT_S * 10)
    results: list[Outcome] = []
    thread = threading.Thread(
        target=lambda: results.append(writer.write(decode(put("a", 1, v="SLOWME"))).outcome)
    )
    thread.start()
    wait_for(lambda: holds(metrics) == 1)
    writer.cancelled.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert results == [Outcome.APPLIED]


def test_no_hold_without_a_window_or_once_it_has_passed(metrics: Metrics) -> None:
    table = LateTable()
    writer = writer_for(table, metrics, window_s=0.0)
    assert writer.write(decode(put("a", 1, v="SLOWME"))).outcome is Outcome.APPLIED
    assert holds(metrics) == 0


def server_error(operation: str) -> ClientError:
    """DynamoDB's 500: the request may have been carried out (in doubt)."""
    answer: Any = {
        "Error": {"Code": "InternalServerError", "Message": "Injected"},
        "ResponseMetadata": {"HTTPStatusCode": 500},
    }
    return ClientError(answer, operation)


class FirstFails:
    """Items by key; the first write to each key is answered 500 and not carried out."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.tried: set[str] = set()
        self.lock = threading.Lock()

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        item = kwargs["Item"]
        pk = item["pk"]["S"]
        with self.lock:
            if pk not in self.tried:
                self.tried.add(pk)
                raise server_error("PutItem")
            self.items[pk] = item
        return {}

    def value(self, pk: str) -> str | None:
        with self.lock:
            item = self.items.get(pk)
        return None if item is None else str(item["v"]["S"])


KEYS = 200  # more than a destination's threads for the writes that leave the loop (32)


def test_many_held_keys_settle_at_once_on_threads_and_only_a_next_change_waits(
    metrics: Metrics, tmp_path: Path
) -> None:
    """Every key's first write is answered 500: each is held, yet all are applied and
    checkpointed at once, with a window far longer than the test (a held write takes no
    thread); a key's next change waits for the window, other keys' changes do not."""
    table = FirstFails()
    writer = writer_for(table, metrics, window_s=WAIT_S * 10)
    pipeline = pipeline_of(
        {"dest": writer}, ChangeBuffer(["dest"], IN_STREAM_ORDER), metrics, tmp_path, 1000
    )
    try:
        first = [decode(put(f"k{n}", n + 1, v="first")) for n in range(KEYS)]
        pipeline.submit_all(first)
        pipeline.dispatch()
        wait_for(lambda: pipeline.checkpointable() == first[-1].sequence_number)
        assert holds(metrics) == KEYS
        assert all(table.value(f"k{n}") == "first" for n in range(KEYS))
        assert_a_next_change_waits(pipeline, table, first[-1].sequence_number)
    finally:
        pipeline.close()


def assert_a_next_change_waits(pipeline: Any, table: Any, checkpointed: str) -> None:
    """``k0`` is held: its next change waits (the checkpoint stays before it) while
    another key's change is written; a stop ends the hold and it is written."""
    pipeline.submit_all([decode(put("k0", 5000, v="second")), decode(put("other", 5001, v="x"))])
    pipeline.dispatch()
    wait_for(lambda: table.value("other") == "x")
    # Its write lands before its answer is settled (a loaded machine shows the gap): the
    # held key's change is the one left once it is.
    wait_for(lambda: pipeline.outstanding().get("dest", 0) <= 1)
    assert pipeline.outstanding() == {"dest": 1}
    assert table.value("k0") == "first"
    assert pipeline.checkpointable() == checkpointed
    pipeline.release_holds()
    assert pipeline.flush(timeout=WAIT_S)
    assert table.value("k0") == "second"


class MotoTable:
    """A new table at the moto server, and the ``value`` of its items."""

    def __init__(self, moto_endpoint: str, unique: Any) -> None:
        self.ddb = client("dynamodb", "eu-west-1", moto_endpoint)
        self.name: str = unique("late")
        create_table(self.ddb, self.name, stream=None)

    def value(self, pk: str) -> str | None:
        key = {"pk": {"S": pk}}
        item = self.ddb.get_item(TableName=self.name, Key=key, ConsistentRead=True).get("Item")
        return None if item is None else str(item["v"]["S"])

    def count(self) -> int:
        return int(self.ddb.scan(TableName=self.name, Select="COUNT")["Count"])


def test_many_keys_answered_5xx_on_the_event_loop_settle_before_their_window(
    proxy: FaultProxy, moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The defect's case through a proxy: every write is carried out and answered 500 until
    each key's has landed; then the proxy passes. The writes are all applied and
    checkpointed while their window (far longer than the test) still runs: before, the
    destination's 32 threads each waited out a window, about one key a second."""
    table = MotoTable(moto_endpoint, unique)
    pipeline = loop_pipeline(proxy.url, table.name, tmp_path, metrics, OVERWRITE, max_in_flight=256)
    writer = pipeline.writers["dest"]
    assert isinstance(writer, DestinationWriter)
    writer.late_write_window_s = WAIT_S * 10
    writer.backoff = Backoff(0.25, 0.5)  # retries that go easy on the shared moto server
    try:
        proxy.server_errors(after_forward=True)
        first = [decode(put(f"k{n}", n + 1, v="first")) for n in range(KEYS)]
        pipeline.submit_all(first)
        pipeline.dispatch()
        wait_for(lambda: table.count() == KEYS)
        proxy.pass_through()
        wait_for(lambda: pipeline.checkpointable() == first[-1].sequence_number)
        assert holds(metrics) == KEYS
        assert_a_next_change_waits(pipeline, table, first[-1].sequence_number)
    finally:
        pipeline.close()


def test_a_first_answer_holds_from_when_its_request_was_sent(metrics: Metrics) -> None:
    """A first request sent by another transport: the window counts from its send, not
    from when its answer is handled."""
    writer = writer_for(LateTable(), metrics, window_s=5.0)
    change = decode(put("a", 1, v="x"))
    request = writer.first_request(change)
    assert request is not None
    long_ago = FirstAnswer(request, error=server_error("PutItem"), sent_at=time.monotonic() - 10)
    assert writer.write(change, long_ago).outcome is Outcome.APPLIED  # at once: window passed
    assert holds(metrics) == 0

    writer.late_write_window_s = WAIT_S * 10
    sent_at = time.monotonic() - 1.0
    answer = FirstAnswer(request, error=server_error("PutItem"), sent_at=sent_at)
    result = writer.write(change, answer, hold=False)  # the caller keeps the key meanwhile
    assert result.outcome is Outcome.APPLIED
    assert result.hold_until == sent_at + writer.late_write_window_s
    assert holds(metrics) == 1


class LateAnswers:
    """A destination's transport on the loop that answers every request 500 ``after_s``
    after sending it (a request held on the way before a proxy gave up on it)."""

    def __init__(self, wire: WireWriteClient, loop: asyncio.AbstractEventLoop) -> None:
        self.wire = wire
        self.loop = loop
        self.after_s = 2.0

    def send(self, operation: str, params: Mapping[str, Any], answered: Answered) -> None:
        error = server_error(operation)
        self.loop.call_later(self.after_s, answered, None, error, self.loop.time())

    def drop_waiting(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_first_request_on_the_event_loop_is_held_from_its_send(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """Its 500 comes 2 s after the send, with a window of 1.5 s: the window has passed
    when the answer is handled, and nothing is held (the retry goes straight to moto)."""
    table = MotoTable(moto_endpoint, unique)
    pipeline = loop_pipeline(
        moto_endpoint, table.name, tmp_path, metrics, OVERWRITE, wire_factory=LateAnswers
    )
    writer = pipeline.writers["dest"]
    assert isinstance(writer, DestinationWriter)
    writer.late_write_window_s = 1.5
    try:
        pipeline.submit(decode(put("a", 1, v="x")))
        pipeline.dispatch()
        assert pipeline.flush(timeout=WAIT_S)
        assert table.value("a") == "x"
        assert holds(metrics) == 0
    finally:
        pipeline.close()


def test_the_event_loop_says_when_an_unanswered_request_was_sent(
    proxy: FaultProxy, moto_endpoint: str, unique: Any
) -> None:
    table = MotoTable(moto_endpoint, unique)
    thread = EventLoopThread("test-loop")
    wire = LoopWire(direct_client(proxy.url), thread.loop)
    answers: queue.Queue[tuple[float, BaseException | None, float | None]] = queue.Queue()

    def answered(_: object, error: BaseException | None, sent_at: float | None) -> None:
        answers.put((time.monotonic(), error, sent_at))

    try:
        proxy.set(Mode(Fault.SERVER_ERROR, latency_s=1.0))
        before = time.monotonic()
        item = {"TableName": table.name, "Item": {"pk": {"S": "a"}}}
        thread.call(wire.send, "PutItem", item, answered)
        answered_at, error, sent_at = answers.get(timeout=WAIT_S)
        assert isinstance(error, ClientError)
        assert may_have_landed(error)
        assert sent_at is not None
        assert before <= sent_at <= answered_at - 1.0
    finally:
        thread.call(wire.close)
        thread.stop()


class FirstPutFails(FirstFails):
    """FirstFails that deletes too (every delete carried out and answered)."""

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.items.pop(kwargs["Key"]["pk"]["S"], None)
        return {}


@pytest.mark.parametrize("conflict", [LWW, VERSION], ids=["last_writer_wins", "version"])
def test_an_ordered_put_without_an_answer_holds_only_the_items_next_delete(
    metrics: Metrics, tmp_path: Path, conflict: dict[str, str]
) -> None:
    """The put's 500 may hide a request still on its way: a later put of the item is
    written at once (the late one would fail its condition on it), a delete waits for
    the window, here far longer than the test, until a stop ends the hold."""
    table = FirstPutFails()
    writer = writer_for(table, metrics, window_s=WAIT_S * 10, conflict=conflict)
    pipeline = pipeline_of(
        {"dest": writer}, ChangeBuffer(["dest"], IN_STREAM_ORDER), metrics, tmp_path, 100
    )
    try:
        first = decode(put("a", 1, ts=100, v="first"))
        pipeline.submit(first)
        pipeline.dispatch()
        wait_for(lambda: pipeline.checkpointable() == first.sequence_number)
        assert holds(metrics) == 1
        second = decode(put("a", 2, ts=200, v="second"))
        pipeline.submit(second)
        pipeline.dispatch()
        wait_for(lambda: pipeline.checkpointable() == second.sequence_number)
        assert table.value("a") == "second"
        pipeline.submit_all([decode(remove("a", 3, ts=200)), decode(put("b", 4, ts=1, v="x"))])
        pipeline.dispatch()
        wait_for(lambda: table.value("b") == "x")
        wait_for(lambda: pipeline.outstanding().get("dest", 0) <= 1)  # b's write settled too
        assert pipeline.outstanding() == {"dest": 1}
        assert table.value("a") == "second"  # the delete waits
        assert pipeline.checkpointable() == second.sequence_number
        pipeline.release_holds()
        assert pipeline.flush(timeout=WAIT_S)
        assert table.value("a") is None
        assert pipeline.outstanding() == {}
    finally:
        pipeline.close()


@pytest.mark.parametrize("conflict", [LWW, VERSION], ids=["last_writer_wins", "version"])
def test_an_ordered_put_landing_late_does_not_bring_back_the_item_deleted_after_it(
    proxy: FaultProxy,
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    conflict: dict[str, str],
) -> None:
    """The reviewer's case through a proxy: the first PutItem is held 3 s against a 1 s
    read timeout, its retry applied, and the item deleted at the source next. The late
    put's condition (no item, or one ranking lower) holds on the deleted item: sent
    before it lands, the delete would leave the item back for good. It waits for the
    window (8 s), and the destination ends without the item."""
    table = MotoTable(moto_endpoint, unique)
    pipeline = late_landing_pipeline(proxy, table.name, tmp_path, metrics, conflict)
    try:
        proxy.late_landing_once(3.0)
        pipeline.submit(decode(put("a", 1, ts=100, v="old")))
        pipeline.dispatch()
        wait_for(lambda: proxy.counts("PutItem")["upstream_200"] == 1)  # the retry
        pipeline.submit(decode(remove("a", 2, ts=100, v="old")))  # a later batch
        pipeline.dispatch()
        assert pipeline.flush(timeout=WAIT_S)
        # Carried out on the item its retry wrote, the late put fails its condition (400).
        wait_for(lambda: proxy.counts("PutItem")["late_landing_400"] == 1)
        assert table.value("a") is None
        assert holds(metrics) == 1
    finally:
        pipeline.close()


def test_an_operator_commands_ordered_put_without_an_answer_returns_after_the_window(
    metrics: Metrics,
) -> None:
    """A waiting caller (backfill, repair, redrive) gets the put's result only once the
    request can no longer land: what it reads of the source next (an item deleted since,
    whose copy it then removes) comes after any landing."""
    writer = writer_for(FirstPutFails(), metrics, window_s=1.5, conflict=LWW)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        assert writer.write(decode(put("a", 1, ts=100, v="x"))).outcome is Outcome.APPLIED
    assert time.monotonic() - started >= 1.5
    assert holds(metrics) == 1
    # The command waits, not the item's next delete, as a shard's hold would say.
    (said,) = [line for line in logs if "may still land" in line["event"]]
    assert said["event"].endswith("waiting until it no longer can before going on")


def late_landings(proxy: FaultProxy, operation: str) -> int:
    counts = proxy.counts(operation)
    return sum(count for outcome, count in counts.items() if outcome.startswith("late_landing"))


@pytest.mark.parametrize("conflict", [LWW, VERSION], ids=["last_writer_wins", "version"])
def test_an_ordered_delete_landing_late_does_not_remove_the_item_created_again_after_it(
    proxy: FaultProxy,
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    conflict: dict[str, str],
) -> None:
    """The item is deleted at ts 5 and created again at ts 1 (a writer's clock behind):
    the delete's first request is held 3 s against a 1 s read timeout, its retry applied.
    Its condition (no item, or one ranking at or below its image) holds on the item
    created again: sent before it lands, the put would be removed for good. The put
    waits for the window (8 s), and the destination ends with the item."""
    table = MotoTable(moto_endpoint, unique)
    pipeline = late_landing_pipeline(proxy, table.name, tmp_path, metrics, conflict)
    try:
        pipeline.submit(decode(put("a", 1, ts=5, v="first")))
        pipeline.dispatch()
        assert pipeline.flush(timeout=WAIT_S)
        proxy.late_landing_once(3.0)
        pipeline.submit(decode(remove("a", 2, ts=5, v="first")))
        pipeline.dispatch()
        wait_for(lambda: proxy.counts("DeleteItem")["upstream_200"] == 1)  # the retry
        pipeline.submit(decode(put("a", 3, ts=1, v="again")))  # a later batch
        pipeline.dispatch()
        assert pipeline.flush(timeout=WAIT_S)
        wait_for(lambda: late_landings(proxy, "DeleteItem") == 1)
        assert table.value("a") == "again"
        assert holds(metrics) == 1
    finally:
        pipeline.close()


class FirstPut500:
    """A destination's client whose first PutItem is answered 500 without being carried
    out (it could have been); the rest go to the table."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_item(self, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise server_error("PutItem")
        return self._client.put_item(**kwargs)


def test_a_put_kept_by_the_policy_after_a_request_with_no_answer_says_it_may_have_landed(
    moto_endpoint: str, unique: Any, metrics: Metrics
) -> None:
    """The retry finds a newer item (a lost conflict), yet the first request may still
    land, after that item's delete: a backfill or repair reads the source again after
    such a write too (``unanswered``), not only after one applied."""
    table = MotoTable(moto_endpoint, unique)
    newer = {"pk": {"S": "a"}, "ts": {"N": "200"}, "v": {"S": "newer"}}
    table.ddb.put_item(TableName=table.name, Item=newer)
    writer = DestinationWriter(
        label="dest",
        table=table.name,
        region="eu-west-1",
        client=FirstPut500(table.ddb),
        rule=rule_for(ConflictConfig(**LWW), "origin"),
        metrics=metrics,
        backoff=Backoff(0.0001, 0.001),
        late_write_window_s=0.5,
    )
    result = writer.write(decode(put("a", 1, ts=100, v="older")))
    assert result.outcome is Outcome.CONFLICT_LOST
    assert result.unanswered
    assert table.value("a") == "newer"
    plain = writer.write(decode(put("b", 2, ts=100, v="x")))
    assert plain.outcome is Outcome.APPLIED and not plain.unanswered


# -- active-active: a put landing after its check against a delete's tombstone ------------


def _active_active_through(proxy: FaultProxy, pair: Pair, window_s: float) -> DestinationWriter:
    """``pair``'s writer to region B, its requests through ``proxy`` with a 1 s read
    timeout: a request the proxy holds 3 s gets no answer, is retried, and lands later."""
    slow = clients.dynamodb(
        Place("eu-west-1", proxy.url), sdk_retries=False, read_timeout=1.0, connect_timeout=2.0
    )
    # Events of its own: closing a pipeline cancels its writers, not the pair's.
    return replace(
        pair.writer,
        client=slow,
        late_write_window_s=window_s,
        cancelled=threading.Event(),
        holds_released=threading.Event(),
    )


def _below_a_recorded_delete(pair: Pair) -> Change:
    """A put from region A ranked below a delete region B's tombstone table holds."""
    deleted = image(20, "eu-west-1", "deleted")
    assert pair.tombs_b.record(tombstone(deleted, "eu-west-1", 1, pair.tombs_b.expiry())) is None
    stale = image(19, "us-east-1", "stale")
    pair.a.put_item(TableName=pair.table, Item=stale)
    return aa_change("MODIFY", stale)


def removed_again(metrics: Metrics) -> float:
    return sample(metrics, "replicator_late_puts_removed_total", destination="b")


def test_an_active_active_put_landing_after_its_tombstone_check_is_removed_again(
    proxy: FaultProxy, moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The put's first request is held 3 s; its retry creates the item, finds the
    tombstone above it and removes the item; then the first request lands, creating it
    again below the delete (it stayed for good). An operator command's write waits out
    the window (8 s) and checks again: the item goes."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    writer = _active_active_through(proxy, pair, window_s=8.0)
    stale = _below_a_recorded_delete(pair)
    proxy.late_landing_once(3.0)
    assert writer.write(stale).outcome is Outcome.CONFLICT_LOST
    assert proxy.counts("PutItem")["late_landing_200"] == 1  # it landed, after the check
    assert pair.get(pair.b) is None
    assert removed_again(metrics) == 1


def aa_holds(metrics: Metrics) -> float:
    return sample(metrics, "replicator_late_write_holds_total", destination="b")


def _late_put_in_a_shard(
    proxy: FaultProxy, pair: Pair, tmp_path: Path, window_s: float
) -> tuple[ShardPipeline, Change]:
    """A shard's pipeline writing ``pair``'s region B through ``proxy``, given a put below
    a recorded delete whose first request the proxy holds 3 s."""
    writer = _active_active_through(proxy, pair, window_s=window_s)
    buffer = ChangeBuffer(["b"], IN_STREAM_ORDER)
    pipeline = pipeline_of({"b": writer}, buffer, pair.metrics, tmp_path, 100)
    stale = _below_a_recorded_delete(pair)
    proxy.late_landing_once(3.0)
    pipeline.submit(stale)
    pipeline.dispatch()
    return pipeline, stale


def test_a_replicated_put_is_checked_again_before_its_record_is_checkpointed(
    proxy: FaultProxy, moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """In a shard the write settles at once (its key held), but its record stays open
    until the put is checked again at the end of the window (12 s; the request lands
    after 3 s): the checkpoint does not pass it before."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    pipeline, stale = _late_put_in_a_shard(proxy, pair, tmp_path, window_s=12.0)
    try:
        wait_for(lambda: proxy.counts("PutItem")["late_landing_200"] == 1)
        assert pair.get(pair.b) == stale.new_image  # landed, not yet checked again
        assert pipeline.checkpointable() is None
        assert pipeline.outstanding() == {"b": 1}
        assert pipeline.flush(timeout=WAIT_S)
        assert pipeline.checkpointable() == stale.sequence_number
        assert pair.get(pair.b) is None
        assert removed_again(metrics) == 1
    finally:
        pipeline.close()


def test_a_stop_does_not_checkpoint_past_a_put_not_yet_checked_again(
    proxy: FaultProxy, moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A stop ends the key's hold, not the check: its flush (bounded) ends with the record
    still open, so the stop checkpoints before it; the request lands after the stop, and
    the shard's next owner, writing the put again, finds its image below the delete and
    removes it (a check made at the stop came before the landing: it stayed for good)."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    pipeline, stale = _late_put_in_a_shard(proxy, pair, tmp_path, window_s=600.0)
    try:
        wait_for(lambda: aa_holds(metrics) == 1)  # settled with its request in the proxy
        pipeline.release_holds()
        assert not pipeline.flush(timeout=0.5)
        assert pipeline.checkpointable() is None
        assert pipeline.outstanding() == {"b": 1}
        wait_for(lambda: proxy.counts("PutItem")["late_landing_200"] == 1)
    finally:
        pipeline.close()
    assert pair.get(pair.b) == stale.new_image  # back below the delete
    assert pair.writer.write(stale).outcome is Outcome.CONFLICT_LOST  # the next owner
    assert pair.get(pair.b) is None


def test_a_put_written_again_over_its_own_image_below_a_delete_removes_it(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A put read again (a restart) finds its own image, which a request of it that
    landed late left below a recorded delete: it was UNCHANGED, and the item stayed."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    stale = _below_a_recorded_delete(pair)
    pair.b.put_item(TableName=pair.table, Item=stale.new_image)  # the late landing
    assert pair.writer.write(stale).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.b) is None


def test_the_check_again_removes_only_the_put_s_own_image(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """After the late landing, region A's application wrote the item again below the
    delete (a clock behind), and it was replicated over the put's image: both regions
    hold it. The check removed it from B alone, which the regions then disagreed on."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    stale = _below_a_recorded_delete(pair)
    pair.b.put_item(TableName=pair.table, Item=stale.new_image)  # the late landing
    later = {**image(19, "us-east-1", "later"), "ts": {"N": "19.5"}}
    pair.a.put_item(TableName=pair.table, Item=later)
    written = pair.writer.write(aa_change("MODIFY", later, stale.new_image, seq=2))
    assert written.outcome is Outcome.APPLIED
    assert pair.writer.recheck_late_put(stale).outcome is Outcome.UNCHANGED
    assert pair.get(pair.a) == later == pair.get(pair.b)
    assert removed_again(metrics) == 0


class RecordingTakesASecond:
    """A tombstone table whose ``record`` returns a second after the row is written: a
    delete's tombstone is then there a second before the delete removes the item, so
    that a check running beside the delete reads it in that second."""

    def __init__(self, table: TombstoneTable) -> None:
        self.table = table

    def record(self, row: Any) -> Any:
        held = self.table.record(row)
        time.sleep(1.0)
        return held

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def test_the_item_s_next_delete_waits_for_the_check_again(
    proxy: FaultProxy, moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A put applied with a request that got no answer (no delete recorded), then the
    item's own delete, held for the window. Released together, the delete recorded its
    tombstone first and the check took it for one the put had landed below: a late
    landing counted and warned about that never was."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    writer = replace(
        _active_active_through(proxy, pair, window_s=4.0),
        tombstones=RecordingTakesASecond(pair.tombs_b),
    )
    buffer = ChangeBuffer(["b"], IN_STREAM_ORDER)
    pipeline = pipeline_of({"b": writer}, buffer, metrics, tmp_path, 100)
    try:
        put_image = image(19, "us-east-1", "p")
        pair.a.put_item(TableName=pair.table, Item=put_image)
        proxy.late_landing_once(1.5)
        with structlog.testing.capture_logs() as logs:
            pipeline.submit(aa_change("MODIFY", put_image, seq=1))
            pipeline.dispatch()
            wait_for(lambda: aa_holds(metrics) == 1)
            pipeline.submit(aa_change("REMOVE", None, put_image, seq=2))
            pipeline.dispatch()
            assert pipeline.flush(timeout=WAIT_S)
        assert pair.get(pair.b) is None
        assert pair.tombs_b.get(KEY) is not None  # the delete's own
        assert removed_again(metrics) == 0
        assert not [line for line in logs if "landed after its check" in line["event"]]
    finally:
        pipeline.close()


class FirstPutLate:
    """Region B's client whose first PutItem is sent (``sent`` set), answered with a read
    timeout after ``answer_after_s`` and carried out ``lands_after_s`` after it was sent;
    with ``refused_deletes``, every DeleteItem after the first that many is refused."""

    def __init__(
        self,
        inner: Any,
        answer_after_s: float,
        lands_after_s: float,
        refused_deletes: int | None = None,
    ) -> None:
        self.inner = inner
        self.answer_after_s = answer_after_s
        self.lands_after_s = lands_after_s
        self.refused_deletes = refused_deletes
        self.deletes = 0
        self.first = True
        self.sent = threading.Event()
        self.landed = threading.Event()
        self.lock = threading.Lock()

    def put_item(self, **kwargs: Any) -> Any:
        with self.lock:
            first, self.first = self.first, False
        if not first:
            return self.inner.put_item(**kwargs)

        def land() -> None:
            self.inner.put_item(**kwargs)
            self.landed.set()

        threading.Timer(self.lands_after_s, land).start()
        self.sent.set()
        time.sleep(self.answer_after_s)  # the read timeout
        raise ReadTimeoutError(endpoint_url="http://127.0.0.1:1")

    def delete_item(self, **kwargs: Any) -> Any:
        with self.lock:
            self.deletes += 1
            refused = self.refused_deletes is not None and self.deletes > self.refused_deletes
        if refused:
            error = {"Code": "ValidationException", "Message": "refused for the test"}
            raise ClientError({"Error": error}, "DeleteItem")
        return self.inner.delete_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _shard_writing(pair: Pair, client: FirstPutLate, window_s: float, tmp_path: Path) -> Any:
    writer = replace(
        pair.writer,
        client=client,
        late_write_window_s=window_s,
        cancelled=threading.Event(),
        holds_released=threading.Event(),
    )
    buffer = ChangeBuffer(["b"], IN_STREAM_ORDER)
    return pipeline_of({"b": writer}, buffer, pair.metrics, tmp_path, 100)


def test_a_put_settling_during_a_stop_is_checked_again_too(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The stop began while the put's first request waited for its answer: the write
    settled after it with no hold, and the stop checkpointed past it; the request then
    landed below the delete, for good."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    client = FirstPutLate(pair.b, answer_after_s=1.0, lands_after_s=2.5)
    pipeline = _shard_writing(pair, client, 600.0, tmp_path)
    stale = _below_a_recorded_delete(pair)
    try:
        pipeline.submit(stale)
        pipeline.dispatch()
        assert client.sent.wait(WAIT_S)
        pipeline.release_holds()  # the stop begins
        wait_for(lambda: aa_holds(metrics) == 1 or client.landed.is_set())
        assert not pipeline.flush(timeout=0.5)
        assert pipeline.checkpointable() is None
        assert client.landed.wait(WAIT_S)
    finally:
        pipeline.close()
    assert pair.writer.write(stale).outcome is Outcome.CONFLICT_LOST  # the next owner
    assert pair.get(pair.b) is None


def test_a_check_that_cannot_be_made_stops_the_shard_before_its_record(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The retry removed the item below the delete (one DeleteItem); the late request
    landed; the check's delete is refused: the shard stops with the record open (a dead
    letter would have told the watermark a second outcome for a settled write)."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    client = FirstPutLate(pair.b, answer_after_s=0.0, lands_after_s=0.5, refused_deletes=1)
    pipeline = _shard_writing(pair, client, 2.0, tmp_path)
    stale = _below_a_recorded_delete(pair)
    try:
        pipeline.submit(stale)
        pipeline.dispatch()
        with pytest.raises(DestinationRefused, match="against its tombstone"):
            pipeline.flush(timeout=WAIT_S)
        assert pipeline.checkpointable() is None
        assert not (tmp_path / "dead.jsonl").exists()
    finally:
        pipeline.close()


class CountedReads:
    """A tombstone table that counts its reads."""

    def __init__(self, table: TombstoneTable) -> None:
        self.table = table
        self.reads = 0

    def get(self, keys: Any) -> Any:
        self.reads += 1
        return self.table.get(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def test_an_operator_command_s_copy_over_its_own_image_reads_no_tombstone(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A backfill over items copied already finds each one's own image: a tombstone read
    for each would double its reads (its source check settles what it copied)."""
    pair = Pair(moto_endpoint, unique("late-aa"), tmp_path, metrics)
    counted = CountedReads(pair.tombs_b)
    tool = replace(pair.writer, tombstones=counted, records_tombstones=False)
    same = image(19, "us-east-1", "same")
    pair.b.put_item(TableName=pair.table, Item=same)
    assert tool.write(aa_change("MODIFY", same)).outcome is Outcome.UNCHANGED
    assert counted.reads == 0
