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
    # The same for one table however it is reached (None: the answer cannot tell).
    identity: tuple[str, ...] | None = None


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
        identity=identity_of(table),
    )


def identity_of(table: TableDescriptionTypeDef) -> tuple[str, ...] | None:
    """What tells one table from another whatever endpoint reaches it: DynamoDB's
    ``TableId``, which a table created again under the same name does not keep; where an
    emulator gives none, its ARN with its creation time (two emulators at two ports may
    each hold a table of one ARN, made at different moments). A job that reaches its
    source through a second spelling of one endpoint (``localhost`` for ``127.0.0.1``,
    a VPC endpoint's name) would otherwise replicate the table into itself."""
    table_id = table.get("TableId")
    if table_id:
        return ("id", table_id)
    arn, created = table.get("TableArn"), table.get("CreationDateTime")
    if arn and created is not None:
        return ("arn", arn, str(created))
    return None


def key_schema_words(schema: dict[str, str]) -> str:
    """``{'pk': 'HASH:S', 'sk': 'RANGE:N'}`` as an operator reads it: ``pk (hash key,
    S), sk (range key, N)``."""
    words = []
    for name, kind in schema.items():
        key_type, _, attribute_type = kind.partition(":")
        words.append(f"{name} ({key_type.lower()} key, {attribute_type})")
    return ", ".join(words)


def key_schema_problem(what: str, where: str, keys: dict[str, str], source: dict[str, str]) -> str:
    """Why a destination of another key schema than the source's is refused, and what
    to do about it."""
    return (
        f"{what} at {where} has key schema {key_schema_words(keys)}, but the source has "
        f"{key_schema_words(source)}: a destination needs the source's key schema; create "
        "the table again with it, or name another table"
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
