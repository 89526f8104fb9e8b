"""Garbled HTTP 200 answers (a body that is not the operation's JSON answer) are
failed calls that may have landed, on botocore's clients as on the direct write paths:
botocore alone parses such a body into ``{}``, an empty success."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from replicator.aws import clients
from replicator.aws.answers import MalformedAnswer, parse_answer
from replicator.aws.clients import Place
from replicator.aws.errors import ErrorKind, classify, may_have_landed
from tests.support.aws import create_table
from tests.support.faults.proxy import GARBAGE_BODY, FaultProxy

REGION = "us-east-1"


@pytest.mark.parametrize(
    ("operation", "body", "reason"),
    [
        ("PutItem", GARBAGE_BODY, "not JSON"),
        ("PutItem", b"", "no body"),
        ("DeleteItem", b"[]", "not a JSON object"),
        ("PutItem", b'"ok"', "not a JSON object"),
        ("GetRecords", b'{"NextShardIterator": "x"}', "no Records"),
        ("GetRecords", b"{}", "no Records"),
        ("DescribeTable", b"{}", "no Table"),
        ("DescribeStream", b"{}", "no StreamDescription"),
        ("GetShardIterator", b"{}", "no ShardIterator"),
        ("ListShards", b'{"NextToken": "x"}', "no Shards"),
        ("DescribeStreamSummary", b"{}", "no StreamDescriptionSummary"),
    ],
)
def test_a_body_that_is_no_answer_is_refused_naming_the_operation(
    operation: str, body: bytes, reason: str
) -> None:
    with pytest.raises(MalformedAnswer) as raised:
        parse_answer(operation, body)
    assert str(raised.value).startswith(f"{operation} answered HTTP 200")
    assert f"({reason})" in str(raised.value)
    assert classify(raised.value) is ErrorKind.RETRY
    assert may_have_landed(raised.value)


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("PutItem", b"{}"),
        ("GetItem", b"{}"),  # no item under that key
        ("GetRecords", b'{"Records": []}'),  # a closed shard's end: no NextShardIterator
        ("DescribeTable", b'{"Table": {}}'),
        ("ListShards", b'{"Shards": []}'),
    ],
)
def test_well_formed_answers_are_parsed(operation: str, body: bytes) -> None:
    assert isinstance(parse_answer(operation, body), dict)


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    running = FaultProxy(moto_endpoint).start()
    yield running
    running.stop()


@pytest.mark.parametrize("after_forward", [False, True])
def test_botocore_clients_raise_a_garbled_answer_instead_of_an_empty_success(
    proxy: FaultProxy, unique: Any, after_forward: bool
) -> None:
    """The clients of replicator.aws.clients: the writers' (``send_with_botocore``), the
    lease table's, DescribeTable's, the stream's."""
    ddb = clients.dynamodb(Place(REGION, proxy.url), sdk_retries=False)
    streams = clients.dynamodb_streams(Place(REGION, proxy.url), sdk_retries=False)
    table = unique("garbled")
    create_table(ddb, table)
    proxy.garbage(after_forward=after_forward)
    calls = {
        "PutItem": lambda: ddb.put_item(TableName=table, Item={"pk": {"S": "a"}}),
        "DeleteItem": lambda: ddb.delete_item(TableName=table, Key={"pk": {"S": "a"}}),
        "GetItem": lambda: ddb.get_item(TableName=table, Key={"pk": {"S": "a"}}),
        "DescribeTable": lambda: ddb.describe_table(TableName=table),
        "ListStreams": lambda: streams.list_streams(TableName=table),
    }
    for operation, call in calls.items():
        with pytest.raises(MalformedAnswer) as raised:
            call()
        assert str(raised.value).startswith(f"{operation} answered HTTP 200"), raised.value
        assert may_have_landed(raised.value)
    proxy.pass_through()
    assert ddb.describe_table(TableName=table)["Table"]["TableName"] == table


@pytest.mark.parametrize("after_forward", [False, True])
def test_a_kinesis_client_raises_a_garbled_answer_instead_of_an_empty_success(
    proxy: FaultProxy, unique: Any, after_forward: bool
) -> None:
    """The Kinesis client of a Kinesis Data Streams source (the start's check of the
    stream, the backfill's hand-off check): a ListShards read as ``{}`` would be a
    stream without open shards, and the hand-off check would pass with nothing checked."""
    kinesis = clients.kinesis(Place(REGION, proxy.url), sdk_retries=False)
    name = unique("garbled-kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    arn = summary["StreamARN"]
    shard = kinesis.list_shards(StreamARN=arn)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamARN=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    proxy.garbage(after_forward=after_forward)
    calls = {
        "DescribeStreamSummary": lambda: kinesis.describe_stream_summary(StreamName=name),
        "DescribeStream": lambda: kinesis.describe_stream(StreamName=name),
        "ListShards": lambda: kinesis.list_shards(StreamARN=arn),
        "GetShardIterator": lambda: kinesis.get_shard_iterator(
            StreamARN=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        ),
        "GetRecords": lambda: kinesis.get_records(StreamARN=arn, ShardIterator=iterator),
    }
    for operation, call in calls.items():
        with pytest.raises(MalformedAnswer) as raised:
            call()
        assert str(raised.value).startswith(f"{operation} answered HTTP 200"), raised.value
        assert classify(raised.value) is ErrorKind.RETRY
    proxy.pass_through()
    assert kinesis.list_shards(StreamARN=arn)["Shards"][0]["ShardId"] == shard
