"""What reading a burst of new items costs the source's tombstone table (active-active):
the processor in process, its source behind a counting proxy in front of a moto server,
the requests counted as they went over HTTP.

The high-water stage checks every local insert of an item it knows nothing of against
the source's tombstone (replicator/highwater.py). Read one insert at a time, on the
thread that reads the shard, those reads would hold a burst of new items to one round
trip each; a batch's reads go together instead, 100 items a request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replicator.items import Item
from replicator.metrics import Metrics
from replicator.records import RawRecord
from replicator.rules import OrderedRule
from replicator.tombstones.model import tombstone_of
from replicator.tombstones.table import TombstoneTable
from tests.support.aws import client, create_table
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.inprocess import InProcessShard
from tests.support.metrics import sample
from tests.support.records import daemon_record, stream_record

RULE = OrderedRule("last_writer_wins", "ts", "origin", numeric_only=False)


def image(pk: str, ts: int) -> Item:
    return {"pk": {"S": pk}, "ts": {"N": str(ts)}, "origin": {"S": "us-east-1"}}


def insert(pk: str, seq: int, ts: int = 10) -> RawRecord:
    return daemon_record(stream_record("INSERT", {"pk": {"S": pk}}, image(pk, ts), seq=seq), seq)


def update(pk: str, seq: int, ts: int, old_ts: int) -> RawRecord:
    record = stream_record("MODIFY", {"pk": {"S": pk}}, image(pk, ts), image(pk, old_ts), seq=seq)
    return daemon_record(record, seq)


class Source:
    """A job reading us-east-1 (through the proxy) into eu-west-1, with tombstones."""

    def __init__(self, endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> None:
        # The rows each BatchGetItem asked for, by request.
        self.asked: list[list[str]] = []
        self.proxy = FaultProxy(endpoint, observe=self._observe).start()
        self.us = client("dynamodb", "us-east-1", endpoint)
        self.eu = client("dynamodb", "eu-west-1", endpoint)
        self.us_table, self.eu_table = unique("us"), unique("eu")
        create_table(self.us, self.us_table, stream=None)
        create_table(self.eu, self.eu_table, stream=None)
        self.tombstones = TombstoneTable(self.us, f"{self.us_table}-tombstones", "us-east-1", 3600)
        self.tombstones.ensure_exists()
        TombstoneTable(self.eu, f"{self.eu_table}-tombstones", "eu-west-1", 3600).ensure_exists()
        text = (
            "task_name: reads\n"
            f"source: {{region: us-east-1, table: {self.us_table}, "
            f"endpoint_url: '{self.proxy.url}'}}\n"
            "destinations:\n"
            f"  - {{name: eu, region: eu-west-1, table: {self.eu_table}, "
            f"endpoint_url: '{endpoint}'}}\n"
            "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
            "loop_prevention: {origin_attribute: origin}\n"
            "active_active: {tombstones: true}\n"
            f"dead_letter: {{path: '{tmp_path / 'dead.jsonl'}'}}\n"
            "metrics: {enabled: false}\n"
            "watermark: {enabled: false}\n"
        )
        self.metrics = metrics
        self.shard = InProcessShard(text, tmp_path, metrics)

    def _observe(self, operation: str, body: bytes, status: int) -> None:
        if operation == "BatchGetItem" and status == 200:
            request = json.loads(body)["RequestItems"][self.tombstones.table]
            self.asked.append([key["pk"]["S"] for key in request["Keys"]])

    def requests(self, operation: str) -> int:
        """Requests of ``operation`` to the source's tombstone table, forwarded or not."""
        return self.proxy.by_table(operation)[self.tombstones.table]

    def eu_items(self) -> dict[str, Any]:
        found = self.eu.scan(TableName=self.eu_table, ConsistentRead=True)["Items"]
        return {item["pk"]["S"]: item for item in found}

    def close(self) -> None:
        self.shard.close()
        self.proxy.stop()


@pytest.fixture
def source(moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> Iterator[Source]:
    made = Source(moto_endpoint, unique, tmp_path, metrics)
    yield made
    made.close()


def test_a_burst_of_new_items_reads_their_tombstones_100_a_request(source: Source) -> None:
    """250 inserts of new keys, one batch: 3 BatchGetItem requests (100, 100, 50 keys),
    no GetItem, every item replicated."""
    source.shard.send([insert(f"n{n}", n) for n in range(1, 251)])
    source.shard.settle()
    assert len(source.eu_items()) == 250
    assert source.requests("BatchGetItem") == 3
    assert source.requests("GetItem") == 0


def test_a_key_several_times_in_a_batch_is_read_once_and_a_stale_insert_still_corrected(
    source: Source,
) -> None:
    """Only an item's first unknown insert in a batch needs its tombstone; the later
    records of the item are known to the stage by then. A stale insert below a recorded
    delete is still corrected at the source and never reaches eu."""
    deleted = image("gone", 100)
    delete = tombstone_of(
        deleted,
        {"pk": {"S": "gone"}},
        RULE.fields,
        deleted_in="us-east-1",
        written_by="us-east-1",
        deleted_at_ms=1,
        expires_at=source.tombstones.expiry(),
    )
    assert source.tombstones.record(delete) is None  # by a process that is gone
    source.us.put_item(TableName=source.us_table, Item=image("gone", 50))
    records = [insert("a", 1), insert("gone", 2, ts=50), update("a", 3, ts=11, old_ts=10)]
    records += [insert(f"n{n}", n) for n in range(4, 103)]  # 101 keys in all
    source.shard.send(records)
    source.shard.settle()
    held = source.eu_items()
    assert "gone" not in held and held["a"]["ts"] == {"N": "11"} and len(held) == 100
    assert "Item" not in source.us.get_item(TableName=source.us_table, Key={"pk": {"S": "gone"}})
    assert source.requests("BatchGetItem") == 2  # 101 keys: 100, then 1
    assert [len(rows) for rows in source.asked] == [100, 1]
    rows = [row for asked in source.asked for row in asked]
    assert len(set(rows)) == len(rows) == 101  # "a" once
    where = f"us-east-1/{source.us_table}"
    lost = sample(
        source.metrics,
        "replicator_writes_total",
        destination=where,
        op="put",
        outcome="conflict_lost",
    )
    assert lost == 1  # the stale insert of "gone", at the source


def test_a_throttled_part_of_a_read_is_asked_again(source: Source) -> None:
    """BatchGetItem throttled as a whole (DynamoDB's answer when no key can be read) is
    retried with the writer's backoff; the items are replicated once it answers, and no
    insert falls back to a read of its own."""
    source.proxy.set(Mode(Fault.THROTTLE, 0.5, operations=frozenset({"BatchGetItem"})))
    source.shard.send([insert(f"t{n}", n) for n in range(1, 151)])
    source.shard.settle()
    assert len(source.eu_items()) == 150
    counts = source.proxy.counts("BatchGetItem")
    assert counts["upstream_200"] == 2, counts
    assert source.requests("GetItem") == 0
