"""Builders for daemon records in the formats the processor receives."""

from __future__ import annotations

import base64
import json
from typing import Any

from replicator.records import RawRecord

TTL_IDENTITY = {"principalId": "dynamodb.amazonaws.com", "type": "Service"}


def stream_record(
    event: str,
    keys: dict[str, Any],
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    *,
    seq: int,
    created_ms: int = 1_700_000_000_000,
    region: str = "us-east-1",
    identity: dict[str, str] | None = None,
    adapter: int = 2,
) -> dict[str, Any]:
    """The stream record JSON as the DynamoDB Streams Kinesis adapter serializes it."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": created_ms,
        "Keys": keys,
        "SequenceNumber": str(seq),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if adapter == 2:
        body["NewImage"] = new or {}
        body["OldImage"] = old or {}
    else:
        if new is not None:
            body["NewImage"] = new
        if old is not None:
            body["OldImage"] = old
    record: dict[str, Any] = {
        "eventID": f"e{seq}",
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": body,
    }
    if identity is not None:
        record["userIdentity"] = identity
    return record


def kinesis_record(
    event: str,
    keys: dict[str, Any],
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    *,
    created_us: int = 1_700_000_000_000_000,
    table: str = "orders",
    region: str = "us-east-1",
) -> dict[str, Any]:
    """A Kinesis Data Streams for DynamoDB record (microsecond precision)."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": created_us,
        "ApproximateCreationDateTimePrecision": "MICROSECOND",
        "Keys": keys,
        "SizeBytes": 100,
    }
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    return {
        "awsRegion": region,
        "eventID": "k",
        "eventName": event,
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": table,
        "dynamodb": body,
        "eventSource": "aws:dynamodb",
    }


def daemon_record(payload: dict[str, Any] | bytes, seq: int, adapter: int = 2) -> RawRecord:
    """Wrap a payload as the MultiLangDaemon delivers it (base64 ``data``)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return RawRecord(
        data=base64.b64encode(data).decode("ascii"),
        sequenceNumber=str(seq),
        subSequenceNumber=0 if adapter == 2 else None,
        partitionKey=str(seq) if adapter == 2 else None,
        approximateArrivalTimestamp=1_700_000_000_000,
    )


def put(pk: str, seq: int, **attributes: Any) -> RawRecord:
    """A MODIFY of item ``pk`` carrying ``attributes`` (plain strings/ints become S/N)."""
    image = {"pk": {"S": pk}, **{name: _typed(value) for name, value in attributes.items()}}
    return daemon_record(stream_record("MODIFY", {"pk": {"S": pk}}, image, seq=seq), seq)


def remove(pk: str, seq: int, ttl: bool = False, **old_attributes: Any) -> RawRecord:
    old = {"pk": {"S": pk}, **{name: _typed(value) for name, value in old_attributes.items()}}
    payload = stream_record(
        "REMOVE", {"pk": {"S": pk}}, None, old, seq=seq, identity=TTL_IDENTITY if ttl else None
    )
    return daemon_record(payload, seq)


def _typed(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    return {"S": str(value)}
