"""The tables an operator command reads: the job's source and destinations, each with a
client and the key schema the command needs to name items.

Operator commands run for minutes or hours against live tables, so their clients leave
retries to :func:`replicator.tools.scan.call`, which waits out throttling for longer than
the SDK's three attempts would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from replicator import aws
from replicator.config.model import DestinationConfig, ResolvedJob
from replicator.exceptions import EnvironmentProblem
from replicator.runtime.preflight import explain


@dataclass(frozen=True)
class TableRef:
    """One table as a command names it in its output (``label``) and reaches it."""

    label: str
    region: str
    table: str
    endpoint_url: str | None
    client: Any

    @property
    def where(self) -> str:
        place = f"{self.endpoint_url} ({self.region})" if self.endpoint_url else self.region
        return f"{self.table} at {place}"


@dataclass(frozen=True)
class TableShape:
    """What DescribeTable says about a table that the commands use."""

    key_names: list[str]  # the hash key first, then the range key if any
    key_schema: dict[str, str]  # name -> "HASH:S", comparable between tables
    item_count: int  # DynamoDB's estimate, refreshed about every six hours
    stream_arn: str | None = None  # the table's enabled DynamoDB stream


def source_ref(resolved: ResolvedJob, connections: int = 16) -> TableRef:
    source = resolved.job.source
    client = aws.client(
        "dynamodb",
        source.region,
        endpoint_url=source.endpoint_url,
        role_arn=source.role_arn,
        external_id=source.external_id,
        max_pool_connections=connections,
        sdk_retries=False,
    )
    return TableRef(
        label=f"source {source.region}/{source.table}",
        region=source.region,
        table=source.table,
        endpoint_url=source.endpoint_url,
        client=client,
    )


def destination_ref(destination: DestinationConfig, connections: int = 16) -> TableRef:
    client = aws.client(
        "dynamodb",
        destination.region,
        endpoint_url=destination.endpoint_url,
        role_arn=destination.role_arn,
        external_id=destination.external_id,
        max_pool_connections=connections,
        sdk_retries=False,
    )
    return TableRef(
        label=destination.label,
        region=destination.region,
        table=destination.table,
        endpoint_url=destination.endpoint_url,
        client=client,
    )


def destination_refs(resolved: ResolvedJob, connections: int = 16) -> list[TableRef]:
    return [destination_ref(d, connections) for d in resolved.job.destinations]


def describe(ref: TableRef) -> TableShape:
    """The table's key schema and size estimate; an EnvironmentProblem if it cannot be read."""
    try:
        table = ref.client.describe_table(TableName=ref.table)["Table"]
    except (ClientError, BotoCoreError) as error:
        raise explain(error, f"table {ref.label}", ref.where) from None
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    ordered = sorted(table["KeySchema"], key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
    return TableShape(
        key_names=[k["AttributeName"] for k in ordered],
        key_schema={
            k["AttributeName"]: f"{k['KeyType']}:{types[k['AttributeName']]}" for k in ordered
        },
        item_count=int(table.get("ItemCount") or 0),
        stream_arn=table.get("LatestStreamArn")
        if (table.get("StreamSpecification") or {}).get("StreamEnabled")
        else None,
    )


def check_same_keys(source: TableRef, destinations: list[TableRef]) -> TableShape:
    """Describe every table; refuse when a destination's key schema is not the source's."""
    shape = describe(source)
    for destination in destinations:
        other = describe(destination)
        if other.key_schema != shape.key_schema:
            raise EnvironmentProblem(
                f"destination {destination.label} ({destination.where}) has key schema "
                f"{other.key_schema}, but the source has {shape.key_schema}"
            )
    return shape
