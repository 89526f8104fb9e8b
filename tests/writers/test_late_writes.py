"""A write without a condition whose request got no answer may land after its retry, over
the item's next change: the change's write is held until it can no longer land."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from replicator.aws.backoff import Backoff
from replicator.buffer import ChangeBuffer
from replicator.config.model import ConflictConfig
from replicator.decode import decode
from replicator.metrics import Metrics
from replicator.rules import IN_STREAM_ORDER, rule_for
from replicator.writers.destination import DestinationWriter, Outcome
from tests.support.aws import client, create_table
from tests.support.faults.proxy import FaultProxy
from tests.support.metrics import sample
from tests.support.records import put, remove
from tests.test_pipeline import pipeline_of
from tests.writers.test_loop_path import OVERWRITE, loop_pipeline

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


def writer_for(table: LateTable, metrics: Metrics, window_s: float) -> DestinationWriter:
    return DestinationWriter(
        label="dest",
        table="t",
        region="eu-west-1",
        client=table,  # type: ignore[arg-type]
        rule=rule_for(ConflictConfig(policy="overwrite"), "origin"),
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


def test_an_unanswered_first_request_on_the_event_loop_holds_the_key(
    proxy: FaultProxy, moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The reviewer's case through a proxy: the first PutItem (sent on the event loop) is
    held 3 s against a 1 s read timeout and then carried out; the retry passed long
    before, and the next change is written only after the window (8 s)."""
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    name = unique("late")
    create_table(ddb, name, stream=None)
    pipeline = loop_pipeline(proxy.url, name, tmp_path, metrics, OVERWRITE, read_timeout=1.0)
    writer = pipeline.writers["dest"]
    assert isinstance(writer, DestinationWriter)
    writer.late_write_window_s = 8.0
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
        pipeline.submit(decode(put("a", 1, v="SLOWME-old")))
        pipeline.dispatch()
        wait_for(lambda: holds(metrics) == 1)
        pipeline.submit(decode(put("a", 2, v="new")))  # a later batch: not squashed
        pipeline.submit(decode(put("b", 3, v="other")))
        pipeline.dispatch()
        wait_for(lambda: table.value("b") == "other")
        assert table.landed.wait(WAIT_S)
        assert table.value("a") == "SLOWME-old"  # the next change still waits
        assert pipeline.outstanding() == {"dest": 2}
        started = time.monotonic()
        pipeline.release_holds()  # a stop: the held change settles at once
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
