"""A processor run by the KCL drops a batch it holds for room once another worker holds
its lease: the daemon could say so only after the batch is answered, and the writes it
retried meanwhile would land over the new owner's (replicator/shards/fence.py)."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import pytest

from replicator.processor import FENCE_AFTER_S
from replicator.shards.fence import NO_OWNER, WORKER_ID_ENV, LeaseFence
from tests.support.aws import client, create_lease_table, create_table
from tests.support.e2e import wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.records import put
from tests.test_processor_protocol import RawDaemon

REGION = "eu-west-1"
SHARD = "shardId-00000001700000000000-0000fence"


def lease_table(moto_endpoint: str, name: str, **lease: str) -> Any:
    """The job's lease table in the KCL's schema, holding ``SHARD``'s lease."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    create_lease_table(ddb, name)
    item = {"leaseKey": {"S": SHARD}, "leaseCounter": {"N": "7"}, "checkpoint": {"S": "1"}}
    item.update({name: {"S": value} for name, value in lease.items()})
    ddb.put_item(TableName=name, Item=item)
    return ddb


@pytest.mark.parametrize(
    ("lease", "taker"),
    [
        ({"leaseOwner": "w1"}, None),
        ({"leaseOwner": "w2"}, "w2"),
        # A graceful handoff to w2 waits for w1's checkpoint: w2 reads nothing yet.
        ({"leaseOwner": "w2", "checkpointOwner": "w1"}, None),
        # A handoff between two others (w1 lost the lease before it): w2 holds it still.
        ({"leaseOwner": "w3", "checkpointOwner": "w2"}, "w2"),
        # A handoff from w2 to w1: w2 checkpoints until it is done.
        ({"leaseOwner": "w1", "checkpointOwner": "w2"}, "w2"),
        ({}, NO_OWNER),
    ],
)
def test_the_lease_is_taken_only_when_its_row_names_another_owner(
    moto_endpoint: str, unique: Any, lease: dict[str, str], taker: str | None
) -> None:
    name = unique("fence")
    ddb = lease_table(moto_endpoint, name, **lease)
    fence = LeaseFence(lambda: ddb, name, "w1")
    assert fence.taker(SHARD) == taker
    assert fence.taker("shardId-of-no-lease-row") is None  # nothing says otherwise


@pytest.mark.parametrize("waiting_in", ["processRecords", "shardEnded"])
def test_writes_waited_on_are_dropped_once_another_worker_holds_the_lease(
    moto_endpoint: str, unique: Any, tmp_path: Path, waiting_in: str
) -> None:
    """The destination refuses connections. ``processRecords``: the buffer holds two
    changes, so a batch of five is held for room. ``shardEnded``: a batch of one is
    answered, and the shard's end waits for its writes. While the lease is this worker's
    the action stays unanswered (its lease is read, through a proxy that counts the
    reads); once the row names w2, it is answered without a checkpoint, and when the
    destination is back nothing of it is written over what the new owner wrote."""
    table, leases = unique("fenced"), unique("fence-task")
    destination = client("dynamodb", REGION, moto_endpoint)
    create_table(destination, table, stream=None)
    lease_ddb = lease_table(moto_endpoint, leases, leaseOwner="w1")
    down = FaultProxy(moto_endpoint).start()
    source = FaultProxy(moto_endpoint).start()
    down.refuse()
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task_name: {leases}\n"
        f"source: {{region: us-east-1, table: source-table, endpoint_url: '{source.url}'}}\n"
        "destinations:\n"
        f"  - {{region: {REGION}, table: {table}, endpoint_url: '{down.url}'}}\n"
        "conflict: {policy: overwrite}\n"
        "writer: {max_buffered_changes: 2}\n"
        f"dead_letter: {{kind: file, path: '{tmp_path / 'dead.jsonl'}'}}\n"
        "metrics: {enabled: false}\n"
        "watermark: {enabled: false}\n"
        "logging: {format: json}\n"
    )
    count = 5 if waiting_in == "processRecords" else 1
    try:
        with RawDaemon(config, env={WORKER_ID_ENV: "w1"}) as daemon:
            daemon.initialize(SHARD)
            records = [put(f"z{n}", 100 + n, v="OLD") for n in range(count)]
            batch = {
                "action": "processRecords",
                "millisBehindLatest": 0,
                "records": [{"action": "record", **record} for record in records],
            }
            if waiting_in == "shardEnded":
                daemon.act(batch)  # room for it: answered at once
                daemon.write({"action": "shardEnded"})
            else:
                daemon.write(batch)
            wait_until(
                lambda: source.counts("GetItem")["upstream_200"] >= 1, 30, "the lease's first read"
            )
            with pytest.raises(queue.Empty):  # read while ours: still waiting
                daemon.lines.get_nowait()
            lease_ddb.update_item(
                TableName=leases,
                Key={"leaseKey": {"S": SHARD}},
                UpdateExpression="SET leaseOwner = :w2",
                ExpressionAttributeValues={":w2": {"S": "w2"}},
            )
            assert daemon.read(timeout=30) == {"action": "status", "responseFor": waiting_in}
            down.pass_through()
            for n in range(count):  # the new owner's writes
                destination.put_item(
                    TableName=table, Item={"pk": {"S": f"z{n}"}, "v": {"S": "NEW"}}
                )
            if waiting_in == "processRecords":
                daemon.act({"action": "leaseLost"})
            assert daemon.finish() == 0
    finally:
        down.stop()
        source.stop()
    assert daemon.checkpoints == []
    assert down.counts("PutItem")["upstream_200"] == 0
    scanned = destination.scan(TableName=table, ConsistentRead=True)["Items"]
    assert sorted((item["pk"]["S"], item["v"]["S"]) for item in scanned) == [
        (f"z{n}", "NEW") for n in range(count)
    ]
    (taken,) = [
        line
        for line in map(json.loads, filter(str.strip, daemon.stderr))
        if line["event"].startswith("lease taken while the processor waited on its writes")
    ]
    assert taken["level"] == "warning"
    assert taken["taker"] == "w2"
    assert taken["held_s"] >= FENCE_AFTER_S
