"""AWS clients and tables for tests: every client names its endpoint (a server on 127.0.0.1)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError


@functools.cache
def client(service: str, region: str, endpoint: str) -> Any:
    """One client per service, region and endpoint for the test process: the tests poll
    tables many times a second while they wait, and making a client costs more CPU than
    the call it makes. Clients are thread-safe; nothing registers handlers on these."""
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


def create_lease_table(ddb: Any, name: str) -> None:
    """A lease table in the KCL's schema, as the KCL creates it on a first start."""
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


class LostAnswers:
    """Makes a DynamoDB client's next UpdateItem call raise a read timeout, as botocore
    does when a proxy holds the request past its read timeout: after the write reached
    DynamoDB (``landed``), or before it was sent (``lost``: every attempt of that call)."""

    def __init__(self, ddb: Any) -> None:
        self.mode: str | None = None
        events = ddb.meta.events
        events.register("before-send.dynamodb.UpdateItem", self._before_send)
        events.register("after-call.dynamodb.UpdateItem", self._after_call)

    def next_update(self, mode: str) -> None:
        self.mode = mode

    def times_out(self, mode: str, update: Any) -> None:
        """Run ``update`` with its answer lost this way: it raises the read timeout."""
        self.next_update(mode)
        with pytest.raises(ReadTimeoutError):
            update()
        self.next_update("")

    def _timeout(self) -> ReadTimeoutError:
        return ReadTimeoutError(endpoint_url="http://127.0.0.1 (held by a proxy)")

    def _before_send(self, **_: Any) -> None:
        if self.mode == "lost":
            raise self._timeout()

    def _after_call(self, **_: Any) -> None:
        mode, self.mode = self.mode, None
        if mode == "landed":
            raise self._timeout()


def no_aws_credentials(directory: Path) -> dict[str, str | None]:
    """Variables that leave the AWS default chain with nothing to find (no keys, no
    profile files, no instance or container metadata), for a process's environment."""
    return {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_SHARED_CREDENTIALS_FILE": str(directory / "no-credentials"),
        "AWS_CONFIG_FILE": str(directory / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
        "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    }
