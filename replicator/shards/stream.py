"""Reading a DynamoDB stream: shards and their lineage, iterators, and records in the
exact form the DynamoDB Streams Kinesis adapter 2.x hands to a MultiLang processor.

Converting here, at the edge, means the processor child cannot tell the local runtime
from the KCL with the adapter: the same bytes reach the same decoder.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from replicator.items import item_to_wire

if TYPE_CHECKING:
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent_id: str | None
    closed: bool

    @classmethod
    def from_description(cls, shard: Mapping[str, Any]) -> Shard:
        """From a shard as DescribeStream (DynamoDB Streams) or ListShards (Kinesis) give it."""
        return cls(
            shard_id=shard["ShardId"],
            parent_id=shard.get("ParentShardId"),
            closed="EndingSequenceNumber" in shard.get("SequenceNumberRange", {}),
        )


def list_shards(
    streams: DynamoDBStreamsClient, stream_arn: str
) -> tuple[dict[str, Any], list[Shard]]:
    """The stream's description (without shards) and all its shards, every page of them."""
    shards: list[Shard] = []
    kwargs: dict[str, Any] = {"StreamArn": stream_arn}
    description: dict[str, Any] = {}
    while True:
        page = streams.describe_stream(**kwargs)["StreamDescription"]
        description = {k: v for k, v in page.items() if k != "Shards"}
        for shard in page.get("Shards", []):
            shards.append(Shard.from_description(shard))
        last = page.get("LastEvaluatedShardId")
        if not last:
            return description, shards
        kwargs["ExclusiveStartShardId"] = last


def to_daemon_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A GetRecords record (as boto3 parses it) -> the MultiLang ``record`` action."""
    body = record["dynamodb"]
    created = body.get("ApproximateCreationDateTime")
    created_ms = int(created.timestamp() * 1000) if isinstance(created, datetime) else int(created)
    serialized: dict[str, Any] = {
        "ApproximateCreationDateTime": created_ms,
        "Keys": item_to_wire(body.get("Keys", {})),
        "NewImage": item_to_wire(body["NewImage"]) if "NewImage" in body else {},
        "OldImage": item_to_wire(body["OldImage"]) if "OldImage" in body else {},
        "SequenceNumber": body["SequenceNumber"],
        "SizeBytes": body.get("SizeBytes", 0),
        "StreamViewType": body.get("StreamViewType", "NEW_AND_OLD_IMAGES"),
    }
    document: dict[str, Any] = {
        "eventID": record.get("eventID"),
        "eventName": record.get("eventName"),
        "eventVersion": record.get("eventVersion"),
        "eventSource": record.get("eventSource"),
        "awsRegion": record.get("awsRegion"),
        "dynamodb": serialized,
    }
    identity = record.get("userIdentity")
    if identity:
        # boto3 spells it {"PrincipalId", "Type"}; the adapter's JSON, which the
        # processor reads, {"principalId", "type"} (a TTL delete is told by it).
        document["userIdentity"] = {
            "principalId": identity.get("PrincipalId", identity.get("principalId")),
            "type": identity.get("Type", identity.get("type")),
        }
    data = json.dumps(document, separators=(",", ":")).encode("utf-8")
    sequence_number = body["SequenceNumber"]
    return {
        "action": "record",
        "data": base64.b64encode(data).decode("ascii"),
        "partitionKey": sequence_number,
        "sequenceNumber": sequence_number,
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": created_ms,
    }


def created_ms_of(record: Mapping[str, Any]) -> int:
    created = record["dynamodb"].get("ApproximateCreationDateTime")
    return int(created.timestamp() * 1000) if isinstance(created, datetime) else int(created or 0)
