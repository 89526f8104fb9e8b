"""The test double keeps DynamoDB's stream guarantee: each write's record once, numbered once.

moto numbers a stream record by the length of the shard's list before appending it, on
whichever server thread answers; two writes at once could share a sequence number and the
reader then received the second record twice. Every moto server the project starts
(tests, demo) serializes table writes (``serialize_table_writes``); this checks it holds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.support.aws import client, create_table


def test_concurrent_writes_get_distinct_stream_records(
    moto_endpoint: str, unique: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.models import table as moto_table

    inside = 0
    most_inside = 0
    lock = threading.Lock()
    original = moto_table.StreamRecord.__init__

    def slow_record(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        time.sleep(0.05)  # widens the window in which an unserialized write would overlap
        original(self, *args, **kwargs)
        with lock:
            inside -= 1

    monkeypatch.setattr(moto_table.StreamRecord, "__init__", slow_record)
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    name = unique("double")
    create_table(ddb, name, stream="NEW_AND_OLD_IMAGES")
    start = threading.Barrier(4)

    def write(worker: int) -> None:
        writer = client("dynamodb", "us-east-1", moto_endpoint)
        start.wait()
        for index in range(5):
            writer.put_item(TableName=name, Item={"pk": {"S": f"{worker}-{index}"}})

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    streams = client("dynamodbstreams", "us-east-1", moto_endpoint)
    arn = ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    delivered: list[str] = []
    for _ in range(20):  # 20 records, 7 a read: bounded, a duplicate cannot loop forever
        response = streams.get_records(ShardIterator=iterator, Limit=7)
        if not response["Records"]:
            break
        delivered += [record["dynamodb"]["SequenceNumber"] for record in response["Records"]]
        iterator = response["NextShardIterator"]
    assert most_inside == 1
    assert len(delivered) == 20
    assert len(set(delivered)) == 20
