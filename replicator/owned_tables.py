"""Tables the replicator keeps for itself: created when missing, with a TTL attribute.

The conflict log's table and the tombstone tables are the replicator's own, like the
lease table: a job creates them at start (on-demand capacity) and turns their TTL on, so
that an operator needs no extra step. What only the operator can fix (access denied, a
name DynamoDB refuses, an existing table with other keys) is one clear line
(EnvironmentProblem); an outage propagates as the AWS error, for the caller to decide.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import ClientError

from replicator.exceptions import EnvironmentProblem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import KeyTypeType
    from mypy_boto3_dynamodb.type_defs import TableDescriptionTypeDef
from replicator.aws.errors import ErrorKind, classify, error_code, error_message

log = structlog.get_logger(__name__)


def ensure_table(
    client: DynamoDBClient,
    table: str,
    keys: dict[str, KeyTypeType],
    ttl_attribute: str,
    what: str,
    where: str,
    hint: str,
    wait_s: float = 120.0,
) -> None:
    """Create ``table`` with string ``keys`` (name: HASH or RANGE) and turn its TTL on,
    unless that is already done. ``hint`` tells the operator what to do when an existing
    table has other keys."""
    try:
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys.items()],
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        log.info(f"created {what}", table=table, where=where)
    except ClientError as error:
        if error_code(error) != "ResourceInUseException":
            refuse_if_final(error, what, where)
            raise
    deadline = time.monotonic() + wait_s
    while True:
        described = client.describe_table(TableName=table)["Table"]
        if described["TableStatus"] == "ACTIVE":
            break
        if time.monotonic() > deadline:
            raise EnvironmentProblem(f"{what} at {where} is still {described['TableStatus']}")
        time.sleep(1.0)
    check_key_schema(described, keys, what, where, hint)
    _ensure_ttl(client, table, ttl_attribute, what, where)


def check_key_schema(
    described: TableDescriptionTypeDef,
    keys: dict[str, KeyTypeType],
    what: str,
    where: str,
    hint: str,
) -> None:
    """EnvironmentProblem unless the table has exactly the string ``keys``: names, roles
    and types, as a key of another type takes no item this code writes. Readers check
    it too, so that a table of other keys (an application's) is not read as an empty log
    where a start would refuse it."""
    types = {d["AttributeName"]: d["AttributeType"] for d in described["AttributeDefinitions"]}
    found = {
        k["AttributeName"]: (k["KeyType"], types.get(k["AttributeName"]))
        for k in described["KeySchema"]
    }
    if found != {name: (kind, "S") for name, kind in keys.items()}:
        schema = ", ".join(f"{name} ({kind}, {type_})" for name, (kind, type_) in found.items())
        raise EnvironmentProblem(f"{what} at {where} exists with key schema {schema}; {hint}")


def check_if_exists(
    client: DynamoDBClient,
    table: str,
    keys: dict[str, KeyTypeType],
    what: str,
    where: str,
    hint: str,
) -> bool:
    """Whether ``table`` exists (False if not); EnvironmentProblem when it has other keys
    than ``keys`` (:func:`check_key_schema`). For a start that refuses such a table before
    anything is written, where the table itself is created later (or by the KCL)."""
    try:
        described = client.describe_table(TableName=table)["Table"]
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            return False
        raise
    check_key_schema(described, keys, what, where, hint)
    return True


def _ensure_ttl(client: DynamoDBClient, table: str, attribute: str, what: str, where: str) -> None:
    try:
        described = client.describe_time_to_live(TableName=table)
    except ClientError as error:
        refuse_if_final(error, what, where)
        raise
    ttl = described.get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if ttl.get("AttributeName") != attribute:
            log.warning(
                f"the {what}'s TTL is on another attribute; its items will not expire",
                table=table,
                where=where,
                attribute=ttl.get("AttributeName"),
            )
        return
    try:
        client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
        )
    except ClientError as error:
        refuse_if_final(error, what, where)
        raise
    log.info(f"{what} expires items", table=table, where=where, attribute=attribute)


def refuse_if_final(error: ClientError, what: str, where: str) -> None:
    """An error that no wait can fix becomes one clear line for the operator."""
    kind = classify(error)
    if kind in (ErrorKind.DENIED, ErrorKind.REJECTED):
        message = error_message(error)
        raise EnvironmentProblem(f"{what} at {where}: {error_code(error)}: {message}") from None
