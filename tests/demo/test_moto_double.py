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
from botocore.exceptions import ClientError

from tests.support.aws import client, create_table


def first_iterator(endpoint: str, table: str) -> tuple[Any, str]:
    """A streams client, and an iterator at the oldest record of ``table``'s one shard."""
    arn = client("dynamodb", "us-east-1", endpoint).describe_table(TableName=table)["Table"][
        "LatestStreamArn"
    ]
    streams = client("dynamodbstreams", "us-east-1", endpoint)
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return streams, iterator


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

    streams, iterator = first_iterator(moto_endpoint, name)
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


def test_an_update_that_creates_an_item_writes_one_insert(moto_endpoint: str, unique: Any) -> None:
    """DynamoDB writes one INSERT, of the whole item, for an UpdateItem that creates it;
    moto wrote the bare key's INSERT first, which an active-active job took for a write
    of its region. Updates of an existing item and puts are recorded as before."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    name = unique("created")
    create_table(ddb, name, stream="NEW_AND_OLD_IMAGES")
    update = {"UpdateExpression": "SET v = :v", "TableName": name}
    ddb.update_item(Key={"pk": {"S": "a"}}, ExpressionAttributeValues={":v": {"N": "1"}}, **update)
    ddb.update_item(Key={"pk": {"S": "a"}}, ExpressionAttributeValues={":v": {"N": "2"}}, **update)
    ddb.put_item(TableName=name, Item={"pk": {"S": "b"}})
    ddb.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "Key": {"pk": {"S": "c"}},
                    "ExpressionAttributeValues": {":v": {"N": "3"}},
                    **update,
                }
            }
        ]
    )

    streams, iterator = first_iterator(moto_endpoint, name)
    records = streams.get_records(ShardIterator=iterator, Limit=100)["Records"]
    assert [(r["eventName"], r["dynamodb"].get("NewImage")) for r in records] == [
        ("INSERT", {"pk": {"S": "a"}, "v": {"N": "1"}}),
        ("MODIFY", {"pk": {"S": "a"}, "v": {"N": "2"}}),
        ("INSERT", {"pk": {"S": "b"}}),
        ("INSERT", {"pk": {"S": "c"}, "v": {"N": "3"}}),
    ]
    assert ddb.get_item(TableName=name, Key={"pk": {"S": "c"}})["Item"]["v"] == {"N": "3"}


def test_an_update_that_fails_to_create_an_item_leaves_nothing(
    moto_endpoint: str, unique: Any
) -> None:
    """DynamoDB stores nothing for an UpdateItem that fails; moto kept the bare key it
    stored first, which (with its record no longer written) no stream would show."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    name = unique("failed")
    create_table(ddb, name, stream="NEW_AND_OLD_IMAGES")
    for key, expression, values in (
        ("big", "SET v = :v", {":v": {"S": "x" * 500_000}}),
        ("bad-add", "SET v = :v ADD n :one", {":v": {"S": "a"}, ":one": {"S": "1"}}),
    ):
        with pytest.raises(ClientError):
            ddb.update_item(
                TableName=name,
                Key={"pk": {"S": key}},
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
            )
    ddb.update_item(
        TableName=name,
        Key={"pk": {"S": "fine"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"S": "ok"}},
    )
    assert [item["pk"] for item in ddb.scan(TableName=name)["Items"]] == [{"S": "fine"}]
    streams, iterator = first_iterator(moto_endpoint, name)
    records = streams.get_records(ShardIterator=iterator, Limit=100)["Records"]
    assert [(r["eventName"], r["dynamodb"]["Keys"]) for r in records] == [
        ("INSERT", {"pk": {"S": "fine"}})
    ]
