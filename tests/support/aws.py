"""AWS clients and tables for tests: every client names its endpoint (a server on 127.0.0.1)."""

from __future__ import annotations

from typing import Any

import boto3


def client(service: str, region: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=region, endpoint_url=endpoint)


def create_table(
    ddb: Any,
    name: str,
    *,
    range_key: str | None = None,
    hash_type: str = "S",
    stream: str | None = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": hash_type}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": range_key, "AttributeType": "N"})
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": keys,
        "AttributeDefinitions": attributes,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream}
    table: dict[str, Any] = ddb.create_table(**kwargs)["TableDescription"]
    return table
