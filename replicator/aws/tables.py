"""What DescribeTable says about a table, and how messages name where a table is.

The source's and every destination's key schemas are compared before anything is written
(preflight, backfill, verify): they are all read here, so the comparison means the same
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from replicator.exceptions import EnvironmentProblem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TableDescriptionTypeDef

# The most keys one BatchGetItem may ask for.
BATCH_GET_LIMIT = 100


@dataclass(frozen=True)
class TableShape:
    """What DescribeTable says about a table that the replicator uses."""

    key_names: list[str]  # the hash key first, then the range key if any
    key_schema: dict[str, str]  # name -> "HASH:S", comparable between tables
    item_count: int  # DynamoDB's estimate, refreshed about every six hours
    stream_arn: str | None = None  # the table's enabled DynamoDB stream


def shape_of(table: TableDescriptionTypeDef, what: str, where: str) -> TableShape:
    """The shape of a DescribeTable answer's ``Table``: ``what`` (``table eu-west-1/t``) at
    ``where`` (:func:`where`) name it in the EnvironmentProblem raised when the answer
    lacks a key attribute's type. DynamoDB always gives it; an emulator may not (moto's
    server replaces the types on an UpdateTable that gives only a new index's), and the
    key schema could then be compared with no other table's."""
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    ordered = sorted(table["KeySchema"], key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
    untyped = [k["AttributeName"] for k in ordered if k["AttributeName"] not in types]
    if untyped:
        plural = "s" if len(untyped) > 1 else ""
        raise EnvironmentProblem(
            f"{what} at {where}: DescribeTable gives no type for its key attribute{plural} "
            f"{', '.join(untyped)} (its AttributeDefinitions name "
            f"{', '.join(types) or 'no attribute'}), so its key schema is unknown "
            "(DynamoDB always gives every key attribute's "
            "type: check the endpoint, or re-create the table)"
        )
    return TableShape(
        key_names=[k["AttributeName"] for k in ordered],
        key_schema={
            k["AttributeName"]: f"{k['KeyType']}:{types[k['AttributeName']]}" for k in ordered
        },
        item_count=int(table.get("ItemCount") or 0),
        stream_arn=table.get("LatestStreamArn") if stream_enabled(table) else None,
    )


def stream_enabled(table: TableDescriptionTypeDef) -> bool:
    """Whether the table's DynamoDB stream is on (its latest may be a disabled one)."""
    spec = table.get("StreamSpecification")
    return bool(spec and spec.get("StreamEnabled"))


def where(region: str, endpoint_url: str | None, role_arn: str | None = None) -> str:
    """Where a table is, for messages: ``eu-west-1``, or ``http://host:port (eu-west-1)``;
    reached through a role, the role and its account too (the table must be there, not
    in the account of the credentials the worker started with)."""
    place = f"{endpoint_url} ({region})" if endpoint_url else region
    if role_arn:
        parts = role_arn.split(":")
        account = f" in account {parts[4]}" if len(parts) > 4 and parts[4] else ""
        place = f"{place}, as role {role_arn}{account}"
    return place
