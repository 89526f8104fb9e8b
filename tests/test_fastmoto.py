"""The tests' moto server answers its most frequent calls with the JSON moto's own
serializer would write (replicator/demo/fastmoto.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moto.core.responses import BaseResponse

from replicator.demo import fastmoto
from tests.support.aws import client, create_table

ITEM = {
    "pk": {"S": "k1"},
    "sk": {"N": "1"},
    "s": {"S": "héllo"},
    "n": {"N": "-0.000000000000000000000000000000000000012345"},
    "big": {"N": "9" * 38},
    "b": {"B": bytes(range(256))},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x00", b"\xff"]},
    "m": {"M": {"nested": {"L": [{"BOOL": True}, {"NULL": True}, {"M": {"x": {"S": ""}}}]}}},
    "l": {"L": [{"N": "1"}, {"S": "two"}, {"B": b"3"}]},
}


@pytest.fixture
def both_answers(moto_endpoint: str) -> Iterator[list[tuple[str, Any, Any]]]:
    """Every answer of the test, as the fast path and as moto's serializer write it."""
    seen: list[tuple[str, Any, Any]] = []
    quick = BaseResponse.serialized
    moto_serialized: Callable[..., Any] = BaseResponse.moto_serialized  # type: ignore[attr-defined]

    def compared(self: Any, action_result: Any) -> Any:
        answer = quick(self, action_result)
        action = self._get_action()
        if action in fastmoto.FAST_OPERATIONS:
            reference = moto_serialized(self, action_result)
            seen.append((action, json.loads(answer[2]), json.loads(reference[2] or "{}")))
            assert answer[0] == reference[0]
            assert answer[1]["Content-Type"] == reference[1]["Content-Type"]
        return answer

    BaseResponse.serialized = compared  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        BaseResponse.serialized = quick  # type: ignore[method-assign]


def test_each_fast_call_answers_what_motos_serializer_answers(
    moto_endpoint: str, unique: Callable[[str], str], both_answers: list[tuple[str, Any, Any]]
) -> None:
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    streams = client("dynamodbstreams", "us-east-1", moto_endpoint)
    table = unique("fastmoto")
    create_table(ddb, table, range_key="sk")
    key = {"pk": ITEM["pk"], "sk": ITEM["sk"]}
    ddb.put_item(TableName=table, Item=ITEM)
    ddb.put_item(TableName=table, Item=ITEM, ReturnValues="ALL_OLD")
    ddb.put_item(
        TableName=table,
        Item={**ITEM, "sk": {"N": "2"}},
        ConditionExpression="attribute_not_exists(pk)",
        ReturnConsumedCapacity="TOTAL",
    )
    ddb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET s = :s",
        ExpressionAttributeValues={":s": {"S": "x"}},
        ReturnValues="ALL_NEW",
    )
    ddb.get_item(TableName=table, Key=key, ConsistentRead=True)
    ddb.get_item(TableName=table, Key={"pk": {"S": "none"}, "sk": {"N": "0"}})
    ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "k1"}},
        Limit=1,
    )
    ddb.scan(TableName=table, Limit=1)
    ddb.scan(TableName=table, Select="COUNT")
    ddb.batch_get_item(RequestItems={table: {"Keys": [key, {"pk": {"S": "no"}, "sk": {"N": "9"}}]}})
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    ddb.delete_item(TableName=table, Key={**key, "sk": {"N": "2"}}, ReturnValues="ALL_OLD")
    ddb.delete_item(TableName=table, Key=key, ReturnConsumedCapacity="TOTAL")
    ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")  # nothing there
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)
    # inserts, a modify, removes: both images, binaries, sets, times
    assert {r["eventName"] for r in records["Records"]} == {"INSERT", "MODIFY", "REMOVE"}
    streams.get_records(ShardIterator=records["NextShardIterator"])  # none left
    # Kinesis names two of its calls alike; its answers stay moto's own (JSON 1.1).
    kinesis = client("kinesis", "us-east-1", moto_endpoint)
    stream = unique("fastmoto-kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.put_record(StreamName=stream, Data=b"\x00data", PartitionKey="p")
    kinesis_iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    kinesis_records = kinesis.get_records(ShardIterator=kinesis_iterator)["Records"]
    assert [record["Data"] for record in kinesis_records] == [b"\x00data"]
    actions = {action for action, _, _ in both_answers}
    assert actions == fastmoto.FAST_OPERATIONS
    for action, fast, reference in both_answers:
        assert fast == reference, action
