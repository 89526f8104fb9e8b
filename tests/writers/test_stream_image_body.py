"""A put that forwards a stream image sends the record's bytes: the body equals the one
encoded from the decoded item, the image is never decoded on the common path, and the
destination ends up holding what the source holds (against a real moto server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from replicator.aws import clients
from replicator.aws.backoff import Backoff
from replicator.aws.clients import Place
from replicator.config.model import ConflictConfig
from replicator.decode import decode
from replicator.images import Image
from replicator.items import item_to_wire
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.rules import Skip, WriteRequest, rule_for
from replicator.shards.stream import to_daemon_record
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome
from replicator.writers.wire import WireWriteClient, request_body
from tests.support.aws import client, create_table
from tests.support.records import daemon_record, stream_record
from tests.writers.test_wire import EVERY_TYPE

REGION = "eu-west-1"

ITEM: dict[str, Any] = {
    **EVERY_TYPE,
    "ts": {"N": "1700000000000123"},
    "big": {"N": "12345678901234567890123456789012345678"},
    "deep": {"M": {"a": {"M": {"b": {"M": {"c": {"S": 'quote " and \\ backslash'}}}}}}},
}

POLICIES = [
    {"policy": "overwrite"},
    {"policy": "last_writer_wins", "timestamp_attribute": "ts"},
    {"policy": "version", "version_attribute": "ts"},
]


def stream_put(item: dict[str, Any], seq: int = 7) -> Change:
    keys = {"pk": item_to_wire(item)["pk"]}
    payload = stream_record("MODIFY", keys, item_to_wire(item), item_to_wire(item), seq=seq)
    return decode(daemon_record(payload, seq))


def planned(change: Change, conflict: dict[str, Any]) -> WriteRequest:
    plan = rule_for(ConflictConfig(**conflict), None).plan(change)
    assert not isinstance(plan, Skip)
    return plan


@pytest.mark.parametrize("conflict", POLICIES, ids=lambda c: c["policy"])
def test_a_stream_put_body_is_the_encoded_items_body_and_carries_the_record_bytes(
    conflict: dict[str, Any],
) -> None:
    change = stream_put(ITEM)
    assert change.new is not None and change.new.wire is not None
    plan = planned(change, conflict)
    assert type(plan.item) is Image
    spliced = request_body(plan.to_kwargs("orders", stream_images=True))
    # The common path never built the item.
    assert change.new._item is None
    # The record's image, byte for byte, is the body's Item.
    assert bytes(change.new.wire) in spliced
    # Decoded, the body is the one encoded from the decoded item (json.dumps' form).
    encoded = json.dumps(plan.to_kwargs("orders"), default=_base64, separators=(",", ":")).encode()
    assert json.loads(spliced) == json.loads(encoded)
    assert json.loads(spliced)["Item"] == item_to_wire(ITEM)


def test_a_put_of_anything_but_the_stream_image_is_encoded_from_the_item() -> None:
    """Write-backs and corrections put an item of their own: its body is json's."""
    written_back = WriteRequest(op="put", item=Image(item=ITEM))
    body = request_body(written_back.to_kwargs("orders", stream_images=True))
    assert json.loads(body)["Item"] == item_to_wire(ITEM)
    plain = request_body(WriteRequest(op="put", item=dict(ITEM)).to_kwargs("orders"))
    assert json.loads(plain) == json.loads(body)


def test_botocore_gets_the_decoded_item_never_the_image() -> None:
    change = stream_put(ITEM)
    kwargs = planned(change, {"policy": "overwrite"}).to_kwargs("orders")
    assert type(kwargs["Item"]) is dict
    assert kwargs["Item"] == ITEM


def _base64(value: object) -> str:
    import base64

    assert isinstance(value, bytes)
    return base64.b64encode(value).decode("ascii")


@pytest.mark.parametrize("conflict", POLICIES, ids=lambda c: c["policy"])
def test_stream_images_written_directly_arrive_as_the_source_holds_them(
    moto_endpoint: str, unique: Any, metrics: Metrics, conflict: dict[str, Any]
) -> None:
    """Real stream records from moto (binaries, sets, nested maps, exact numbers), put
    through the direct path's splice: the destination holds the source's items."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    source, destination = unique("source"), unique("dest")
    create_table(ddb, source)
    create_table(ddb, destination, stream=None)
    items = [
        {**ITEM, "pk": {"S": f"item-{index}"}, "ts": {"N": str(1700000000000000 + index)}}
        for index in range(5)
    ]
    for item in items:
        ddb.put_item(TableName=source, Item=item)
    streams = client("dynamodbstreams", REGION, moto_endpoint)
    arn = ddb.describe_table(TableName=source)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator, Limit=100)["Records"]
    assert len(records) == len(items)

    direct = WireWriteClient(
        clients.dynamodb(Place(REGION, moto_endpoint), sdk_retries=False),
        max_connections=2,
        connect_timeout=2.0,
        read_timeout=10.0,
    )
    writer = DestinationWriter(
        label="dest",
        table=destination,
        region=REGION,
        client=direct,
        rule=rule_for(ConflictConfig(**conflict), None),
        metrics=metrics,
        backoff=Backoff(0.0001, 0.001),
    )
    for record in records:
        change = decode(to_daemon_record(record))
        assert writer.write(change).outcome is Outcome.APPLIED
        assert change.new is not None and change.new._item is None  # forwarded, not decoded
    for item in items:
        stored = ddb.get_item(TableName=destination, Key={"pk": item["pk"]}, ConsistentRead=True)
        assert stored["Item"] == item
