"""The tables an operator command reads: the job's source and destinations, each with a
client and the key schema the command needs to name items.

Operator commands run for minutes or hours against live tables, so their clients leave
retries to :func:`replicator.tools.scan.call`, which waits out throttling for longer than
the SDK's three attempts would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients, tables
from replicator.aws.backoff import Backoff
from replicator.aws.errors import ErrorKind, classify
from replicator.aws.tables import TableShape
from replicator.config.model import DestinationConfig, ResolvedJob, TtlDeletes
from replicator.items import Item, canonical_number
from replicator.runtime.preflight import check_key_settings, explain

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TableDescriptionTypeDef


@dataclass(frozen=True)
class TableRef:
    """One table as a command names it in its output (``label``) and reaches it."""

    label: str
    region: str
    table: str
    endpoint_url: str | None
    client: DynamoDBClient

    @property
    def named(self) -> str:
        """The table in a message: a destination given a name of its own (``label``) is
        named by it and by its table, as ``run`` names it; otherwise the label is the
        table's place."""
        place = f"{self.region}/{self.table}"
        if self.label in (place, f"source {place}"):
            return f"table {self.label}"
        return f"destination {self.label} (table {place})"

    @property
    def where(self) -> str:
        return f"{self.table} at {self.endpoint}"

    @property
    def endpoint(self) -> str:
        """Where the table is reached, for a message that names the table already."""
        return tables.where(self.region, self.endpoint_url)


def source_ref(resolved: ResolvedJob, connections: int = 16) -> TableRef:
    source = resolved.job.source
    client = clients.dynamodb(source, max_pool_connections=connections, sdk_retries=False)
    return TableRef(
        label=f"source {source.region}/{source.table}",
        region=source.region,
        table=source.table,
        endpoint_url=source.endpoint_url,
        client=client,
    )


def destination_ref(destination: DestinationConfig, connections: int = 16) -> TableRef:
    client = clients.dynamodb(destination, max_pool_connections=connections, sdk_retries=False)
    return TableRef(
        label=destination.label,
        region=destination.region,
        table=destination.table,
        endpoint_url=destination.endpoint_url,
        client=client,
    )


def destination_refs(resolved: ResolvedJob, connections: int = 16) -> list[TableRef]:
    return [destination_ref(d, connections) for d in resolved.job.destinations]


@contextmanager
def reading(ref: TableRef) -> Iterator[None]:
    """AWS errors (past the retries) while reading ``ref``'s items as an
    EnvironmentProblem naming that table, as :func:`describe` names it at the start: a
    table deleted while a command reads it is then said to be that table, not "not
    found" somewhere among every endpoint of the job (DynamoDB's own message for a
    Scan or a BatchGetItem of a table gone names no table)."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise explain(error, ref.named, ref.endpoint) from None


# A command's DescribeTable: throttling and server errors are tried this many times in
# all, as the SDK's standard mode tries them (these clients leave retries to scan.call,
# which is for reads): one throttle during an incident does not end the command, and
# the message of one that outlasts them ("still after the SDK's retries") is true. An
# endpoint that cannot be reached is said at once, as before.
_DESCRIBE_ATTEMPTS = 3
_DESCRIBE_BACKOFF = Backoff(base_s=0.5, cap_s=5.0)


def _describe_table(ref: TableRef) -> TableDescriptionTypeDef:
    attempt = 0
    while True:
        try:
            return ref.client.describe_table(TableName=ref.table)["Table"]
        except ClientError as error:
            attempt += 1
            passes = classify(error) in (ErrorKind.THROTTLED, ErrorKind.RETRY)
            if not passes or attempt >= _DESCRIBE_ATTEMPTS:
                raise
            time.sleep(_DESCRIBE_BACKOFF.delay(attempt - 1))


def describe(ref: TableRef) -> TableShape:
    """The table's key schema and size estimate; an EnvironmentProblem if it cannot be read."""
    try:
        table = _describe_table(ref)
    except (ClientError, BotoCoreError) as error:
        raise explain(error, ref.named, ref.endpoint) from None
    return tables.shape_of(table, ref.named, ref.endpoint)


def _describe_destination(ref: TableRef, source_keys: dict[str, str]) -> TableShape:
    """:func:`describe` for a destination: one not there is told what to do, with the
    source's key schema."""
    try:
        table = _describe_table(ref)
    except (ClientError, BotoCoreError) as error:
        problem = explain(error, ref.named, ref.endpoint)
        raise tables.missing_destination(
            problem, error, f"destination {ref.label}", source_keys
        ) from None
    return tables.shape_of(table, ref.named, ref.endpoint)


def checked_source(resolved: ResolvedJob, source: TableRef) -> TableShape:
    """The source's shape, once the job's conflict settings are known to fit its key (a
    ConfigError otherwise, as ``run`` refuses them at start): a command that writes with
    a timestamp or version that is a key attribute would rank every image the same, and
    one whose origin stamp is a key attribute would take every image for an echo."""
    shape = describe(source)
    check_key_settings(resolved, shape.key_schema)
    return shape


def check_same_keys(
    resolved: ResolvedJob, source: TableRef, destinations: list[TableRef]
) -> TableShape:
    """Describe every table; refuse a key schema the job's conflict settings cannot rank
    by (:func:`checked_source`), a destination's key schema that is not the source's,
    and a destination that is the source or another destination reached another way."""
    shape = checked_source(resolved, source)
    seen = [
        tables.ReachedTable("the source table", source.client.meta.endpoint_url, shape.identity)
    ]
    for destination in destinations:
        other = _describe_destination(destination, shape.key_schema)
        reached = tables.ReachedTable(
            destination.named, destination.client.meta.endpoint_url, other.identity
        )
        tables.check_destination(
            destination.named, destination.endpoint, other, shape.key_schema, reached, seen
        )
    return shape


# DynamoDB's TTL does not delete an item whose expiry is more than five years in the
# past (its TTL documentation: such a value is ignored, as `0`, often written to mean
# "never expires", is). Five years here: 5 * 365 days and one leap day.
TTL_HORIZON_S = 1826 * 86_400


def expired_by_ttl(value: object, now: float) -> bool:
    """Whether DynamoDB's TTL deletes an item whose TTL attribute holds ``value`` (an
    attribute value in boto3 form) at ``now``: a number of epoch seconds in
    (now - five years, now]. A number is read as the number it is, fraction or exponent
    included (``1700000000.5``, ``17e8``), as DynamoDB's TTL compares it; anything else
    (absent, another type, a time in the future, 0, a negative number, a time more than
    five years ago) is a value TTL ignores, so TTL never deleted that item."""
    if not isinstance(value, dict) or set(value) != {"N"}:
        return False
    try:
        expiry = Decimal(canonical_number(value["N"]))
    except ValueError:
        return False
    moment = Decimal(repr(now))
    return moment - TTL_HORIZON_S < expiry <= moment


@dataclass(frozen=True)
class KeptExpired:
    """What ``ttl_deletes: skip`` keeps at the destinations: items the source's TTL
    deleted. An item the source lacks whose TTL attribute (the source table's) holds an
    expiry DynamoDB's TTL acts on and that has passed (:func:`expired_by_ttl`) is taken
    for one: verify counts it apart, and no command removes it. Neither can tell it from
    an item a person deleted after it expired, and an item kept for more than five years
    after its expiry is no longer taken for one (TTL would not delete it now)."""

    attribute: str | None  # None: nothing is kept (ttl_deletes: replicate, or TTL off)

    @classmethod
    def of(cls, resolved: ResolvedJob, source: TableRef) -> KeptExpired:
        """Reads the source's TTL setting only under ``ttl_deletes: skip``."""
        if resolved.job.ttl_deletes is not TtlDeletes.SKIP:
            return cls(None)
        return cls(expiry_attribute(source))

    def __call__(self, item: Item) -> bool:
        """``item``'s TTL attribute holds an expiry the source's TTL deleted it by."""
        if not self.attribute:
            return False
        return expired_by_ttl(item.get(self.attribute), time.time())

    @property
    def why(self) -> str:
        return f"expired at the source ({self.attribute} in the past five years), ttl_deletes: skip"


def expiry_attribute(ref: TableRef) -> str | None:
    """The table's TTL attribute while DynamoDB may delete items by it (TTL enabled, or
    being enabled or disabled); None when TTL is off there."""
    try:
        described = ref.client.describe_time_to_live(TableName=ref.table)
    except (ClientError, BotoCoreError) as error:
        raise explain(error, f"the time to live of table {ref.label}", ref.endpoint) from None
    ttl = described.get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus", "DISABLED") == "DISABLED":
        return None
    return ttl.get("AttributeName") or None
