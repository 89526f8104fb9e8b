"""What DescribeTable says about a table, and how messages name where a table is.

The source's and every destination's key schemas are compared before anything is written
(preflight, backfill, verify): they are all read here, so the comparison means the same
everywhere.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from botocore.exceptions import ClientError

from replicator.aws.errors import error_code
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
    # What tells this table from another (:func:`identity_of`; None: the answer cannot).
    identity: tuple[Any, ...] | None = None


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


def identity_of(table: TableDescriptionTypeDef) -> tuple[Any, ...] | None:
    """What tells one table from another: DynamoDB's ``TableId``, which a table created
    again under the same name does not keep, or, where an emulator gives none, its ARN
    and creation time, which tell only together with the server (:func:`one_table`):
    emulators give every server's table of a name one ARN, and a creation time to the
    millisecond, which two servers set up by one script can share."""
    table_id = table.get("TableId")
    if table_id:
        return ("id", table_id)
    arn, created = table.get("TableArn"), table.get("CreationDateTime")
    if arn and created is not None:
        return ("arn", arn, created)
    return None


@dataclass(frozen=True)
class ReachedTable:
    """A table as the job reaches it, for :func:`one_table`."""

    named: str  # as messages name it: ``destinations[0] (eu-west-1/orders)``
    endpoint_url: str | None
    identity: tuple[Any, ...] | None


def one_table(one: ReachedTable, other: ReachedTable) -> bool:
    """Whether two places of the job reach one table: the same ``TableId`` (DynamoDB),
    or, on an emulator, the same ARN and creation time at one server (``localhost`` and
    ``127.0.0.1`` at one port are one server: their addresses meet), whatever the
    regions: an emulator's ARN names the region where it keeps regions apart (moto), and
    one that keeps one database for every region (DynamoDB Local's ``-sharedDb``) names
    none. A job that reaches its source through another spelling of its endpoint would
    replicate the table into itself. ``endpoint_url``: the one the client uses (from the
    job file, ``AWS_ENDPOINT_URL`` or AWS's own)."""
    if one.identity is None or one.identity != other.identity:
        return False
    if one.identity[0] == "id":
        return True
    return _one_server(one.endpoint_url, other.endpoint_url)


def _one_server(one: str | None, other: str | None) -> bool:
    if one is None or other is None:
        return one == other
    first, second = urlsplit(one), urlsplit(other)
    port = _port(first)
    if port is None or port != _port(second):
        return False
    return bool(_addresses(first.hostname, port) & _addresses(second.hostname, port))


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None


def _addresses(host: str | None, port: int) -> set[str]:
    """The addresses ``host`` reaches (itself, lower-cased, when it cannot be looked up)."""
    if not host:
        return set()
    host = host.rstrip(".").lower()  # ``localhost.`` is ``localhost``
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return {host}
    addresses = {str(info[4][0]) for info in found}
    # A connection to the unspecified address reaches this host's own server.
    return addresses | {_LOOPBACK[a] for a in addresses if a in _LOOPBACK}


_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104  # compared, not bound


def check_destination(
    what: str,
    where: str,
    shape: TableShape,
    source_keys: dict[str, str],
    reached: ReachedTable,
    seen: list[ReachedTable],
) -> None:
    """A destination's table (``what`` at ``where``, as DescribeTable described it) with
    the source's key schema, and a table of its own: not one of ``seen`` (the source
    first, then the destinations checked before), which it then joins. ``run``'s start
    and the operator commands check their destinations alike."""
    if shape.key_schema != source_keys:
        raise EnvironmentProblem(key_schema_problem(what, where, shape.key_schema, source_keys))
    _refuse_one_table_twice(f"{what} at {where}", reached, seen)
    seen.append(reached)


def _refuse_one_table_twice(what: str, reached: ReachedTable, seen: list[ReachedTable]) -> None:
    """An EnvironmentProblem when ``reached`` is a table of ``seen`` (the source first)."""
    same = next((other for other in seen if one_table(reached, other)), None)
    if same is None:
        return
    effect = (
        "write the source's changes back into it"
        if same is seen[0]
        else "write every change to that table twice"
    )
    raise EnvironmentProblem(
        f"{what} is {same.named}: DescribeTable shows one table, reached another way "
        f"(another spelling of its endpoint, or a role into the same account); the job "
        f"would {effect}: name the table that is to receive the changes"
    )


def missing_destination(
    problem: EnvironmentProblem, error: Exception, entry: str, source_keys: dict[str, str]
) -> EnvironmentProblem:
    """``problem`` (DescribeTable's error, explained) with what to do when the
    destination table does not exist there."""
    if not isinstance(error, ClientError) or error_code(error) != "ResourceNotFoundException":
        return problem
    return EnvironmentProblem(
        f"{problem}; create it with the source's key schema ({key_schema_words(source_keys)}) "
        "(if the job replicated to it before, what it held is gone: start the job, then run "
        "`replicator backfill --restart` beside it and `replicator verify`), or correct the "
        f"table, region, endpoint_url or role_arn of {entry} in the job file"
    )


def key_schema_words(schema: dict[str, str]) -> str:
    """``{'pk': 'HASH:S', 'sk': 'RANGE:N'}`` as an operator reads it: ``pk (hash key,
    S), sk (range key, N)``."""
    return ", ".join(f"{name} ({key_kind(kind)})" for name, kind in schema.items())


def key_kind(kind: str) -> str:
    """``HASH:S`` as ``hash key, S``."""
    key_type, _, attribute_type = kind.partition(":")
    return f"{key_type.lower()} key, {attribute_type}"


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
