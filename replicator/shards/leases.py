"""The job's lease table, in the KCL's schema, so the KCL runtime can take over and back.

One item per shard, keyed by ``leaseKey`` (the shard id), with the attributes the KCL
reads and writes: ``leaseOwner``, ``leaseCounter``, ``checkpoint`` (a sequence number or
one of the KCL's sentinels: TRIM_HORIZON, LATEST, SHARD_END, AT_TIMESTAMP),
``checkpointSubSequenceNumber``,
``ownerSwitchesSinceCheckpoint`` and ``parentShardId`` (a string set). Every update is
conditional on the counter we last saw, as the KCL's are: an owner that has lost its
lease finds out on its next write and never overwrites the new owner's checkpoint.

Each update also stores ``replicatorWriteId``, a value no other write uses (the KCL
leaves the attribute alone). A write whose answer was lost (a read timeout, a dropped
connection) may still have landed, and the next write, conditional on the old counter,
then fails. The owner and counter cannot tell that landing from a takeover by another
worker with the same worker id (a shared ``kcl.worker_id``, a fixed hostname), whose take
changes nothing else; the write id can.

Each take, renewal and checkpoint also stores who holds the lease (``replicatorHolder``,
see :mod:`replicator.shards.holder`); a release removes it with the owner.

Every lease the local runtime creates or writes also records the stream its shard is of
(``replicatorStream``, the stream's ARN; the KCL leaves it alone). The lease table is
named after the task, not the stream: a source table deleted and created again, or a
job of the same task name pointed at another table, finds the earlier stream's leases
there, and a shard of the new stream may have the same id (moto gives every stream's
shard one id). Such a lease's checkpoint is a position in another stream. A lease
without the attribute (the KCL's, or one written before it existed) is taken to be of
the stream being read.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import ClientError

from replicator.aws.errors import error_code
from replicator.exceptions import EnvironmentProblem, LeaseLost
from replicator.owned_tables import check_if_exists, check_key_schema
from replicator.shards.holder import HOLDER, Holder

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import KeyTypeType

log = structlog.get_logger(__name__)

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
SHARD_END = "SHARD_END"
# The KCL's start at a time (a Kinesis source): a DynamoDB stream cannot be read from it.
AT_TIMESTAMP = "AT_TIMESTAMP"
SENTINELS = frozenset({TRIM_HORIZON, LATEST, SHARD_END, AT_TIMESTAMP})
_SEQUENCE_NUMBER = re.compile(r"[0-9]+")
WRITE_ID = "replicatorWriteId"
STREAM = "replicatorStream"
# On a lease of an earlier stream: the stream whose start recorded, for the watermark,
# what the earlier one held unread (replicator/runtime/local/runtime.py).
SUPERSEDED_BY = "replicatorSupersededBy"
KEYS: dict[str, KeyTypeType] = {"leaseKey": "HASH"}
# What to do about a table of another key schema under the lease table's name.
OTHER_KEYS_HINT = (
    "it is not a lease table (task_name names the lease table, in the source's region): "
    "give the job a task_name that names no other table"
)
_MAX_UNANSWERED = 100
_SHOWN_CHARS = 300  # of an item that is not a lease, in its message


class BadCheckpoint(ValueError):
    """A lease's checkpoint is neither a sequence number nor one of the KCL's sentinels
    (a hand edit gone wrong): the lease is one, but holds no position to read from."""


@dataclass(frozen=True)
class _Unanswered:
    """An update sent without an answer: what the lease became if it landed."""

    write_id: str
    counter: int
    changes: dict[str, Any]


@dataclass
class Lease:
    shard_id: str
    owner: str | None
    counter: int
    checkpoint: str
    sub_sequence_number: int = 0
    owner_switches: int = 0
    parents: list[str] = field(default_factory=list)
    # The process whose write set the counter, when that write named it (ours do).
    holder: Holder | None = None
    # The stream whose shard this is, when a write of ours recorded it.
    stream: str | None = None
    # The later stream that has taken this earlier stream's place (SUPERSEDED_BY).
    superseded_by: str | None = None
    # The worker handing the lease over to ``owner`` (KCL 3's graceful handoff), if any.
    checkpoint_owner: str | None = None

    @property
    def ended(self) -> bool:
        return self.checkpoint == SHARD_END

    def of_earlier_stream(self, stream: str) -> bool:
        """Whether the lease records a stream other than ``stream`` (the one being read):
        its checkpoint and parents are of that stream, and tell nothing of this one."""
        return self.stream is not None and self.stream != stream

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lease:
        """The lease an item of the lease table holds; ValueError naming the attribute
        when it holds none (an item neither the KCL nor this code wrote)."""
        shard_id = _attribute(item, "leaseKey", "S", None)
        if shard_id is None:
            raise ValueError("it has no string leaseKey")
        numbers = {
            name: _attribute(item, name, "N", "0")
            for name in (
                "leaseCounter",
                "checkpointSubSequenceNumber",
                "ownerSwitchesSinceCheckpoint",
            )
        }
        for name, text in numbers.items():
            if not str(text).isdigit():
                raise ValueError(f"its {name} is {text!r}, not a count")
        counter = int(numbers["leaseCounter"])
        checkpoint = _attribute(item, "checkpoint", "S", TRIM_HORIZON)
        if checkpoint not in SENTINELS and not _SEQUENCE_NUMBER.fullmatch(checkpoint):
            raise BadCheckpoint(
                "neither a sequence number nor one of " + ", ".join(sorted(SENTINELS))
            )
        return cls(
            shard_id=shard_id,
            owner=_attribute(item, "leaseOwner", "S", None),
            counter=counter,
            checkpoint=checkpoint,
            sub_sequence_number=int(numbers["checkpointSubSequenceNumber"]),
            owner_switches=int(numbers["ownerSwitchesSinceCheckpoint"]),
            parents=sorted(_attribute(item, "parentShardId", "SS", [])),
            holder=Holder.from_item(item, counter),
            stream=_attribute(item, STREAM, "S", None),
            superseded_by=_attribute(item, SUPERSEDED_BY, "S", None),
            checkpoint_owner=_attribute(item, "checkpointOwner", "S", None),
        )


def _attribute(item: dict[str, Any], name: str, kind: str, default: Any) -> Any:
    """The value of attribute ``name`` of DynamoDB type ``kind``, ``default`` when the
    item has none; ValueError when it has one of another type."""
    value = item.get(name)
    if value is None:
        return default
    if not isinstance(value, dict) or kind not in value:
        types = ", ".join(value) if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"its {name} is of type {types}, not {kind}")
    return value[kind]


# How many items of an existing lease table the start-up check reads: one small page.
_CHECKED_ITEMS = 10


def check_lease_table(client: DynamoDBClient, table: str, where: str) -> bool:
    """Whether the lease table exists; EnvironmentProblem when a table of that name has
    another key schema, or holds items that are not leases. For the start-up check, made
    before a runtime creates the table (or the KCL does).

    An application's table keyed on ``leaseKey`` has the lease table's key schema: the
    KCL would fail on its items at start-up (its leases' ``leaseCounter`` may not be
    null), over and over, and the local runtime would write its lease among them. Every
    lease has a ``leaseCounter``, the KCL's and this module's alike: one small page of
    items is read for one without it (a Scan, which both runtimes make on the table)."""
    what = f"lease table {table}"
    if not check_if_exists(client, table, KEYS, what, where, OTHER_KEYS_HINT):
        return False
    try:
        page = client.scan(
            TableName=table, Limit=_CHECKED_ITEMS, ProjectionExpression="leaseKey, leaseCounter"
        )
    except ClientError as error:
        # Still being created (by another worker's KCL, say): it holds nothing yet.
        if error_code(error) == "ResourceNotFoundException":
            return True
        raise
    for item in page.get("Items", []):
        problem = "it has no leaseCounter, which every lease has"
        if "leaseCounter" in item:
            try:
                Lease.from_item(item)
                continue
            except ValueError as error:
                problem = str(error)
        raise EnvironmentProblem(
            f"{what} at {where} holds items that are not leases (the item {_named(item)}: "
            f"{problem}); {OTHER_KEYS_HINT}"
        )
    return True


def _named(item: dict[str, Any]) -> str:
    """An item of the lease table, as a message names it: by its leaseKey if it has a
    string one, else as it is (cut short)."""
    key = item.get("leaseKey")
    if isinstance(key, dict) and isinstance(key.get("S"), str):
        return f"with leaseKey {key['S']!r}"
    shown = json.dumps(item, sort_keys=True, default=str)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 1] + "…"


class LeaseTable:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        owner: str,
        where: str = "",
        holder: Holder | None = None,
        stream: str | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.owner = owner
        # The process whose writes these are (this one unless a test says otherwise).
        self.holder = holder or Holder.this_process()
        # The stream the leases are of, which every lease written records (the runtime
        # sets it once it knows the stream); None for a reader, which writes none.
        self.stream = stream
        self.where = where or client.meta.region_name
        self._lock = threading.Lock()  # one conditional update per lease at a time
        # Per shard, the updates since the last answered one (all conditional on the
        # counter then held, so at most one of them can have landed).
        self._unanswered: dict[str, list[_Unanswered]] = {}

    def ensure_exists(self, wait_s: float = 60.0) -> None:
        try:
            self.client.create_table(
                TableName=self.table,
                KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            log.info("created lease table", table=self.table)
        except ClientError as error:
            if error_code(error) != "ResourceInUseException":
                raise EnvironmentProblem(
                    f"cannot create lease table {self.table}: {error}"
                ) from error
        deadline = time.monotonic() + wait_s
        while True:
            described = self.client.describe_table(TableName=self.table)["Table"]
            status = described["TableStatus"]
            if status == "ACTIVE":
                break
            if time.monotonic() > deadline:
                raise EnvironmentProblem(f"lease table {self.table} is still {status}")
            time.sleep(1.0)
        # An existing table is ours only if it has the lease table's key: any other (an
        # application's table that the task name names) is refused before a lease is
        # written into it.
        check_key_schema(described, KEYS, f"lease table {self.table}", self.where, OTHER_KEYS_HINT)

    def all(self) -> dict[str, Lease]:
        leases: dict[str, Lease] = {}
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self.client.scan(**kwargs)
            for item in page.get("Items", []):
                lease = self._lease(item)
                leases[lease.shard_id] = lease
            if "LastEvaluatedKey" not in page:
                return leases
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, shard_id: str) -> Lease | None:
        item = self._item(shard_id)
        return self._lease(item) if item else None

    def _lease(self, item: dict[str, Any]) -> Lease:
        """The item's lease, or one line naming the table and the item that is none."""
        try:
            return Lease.from_item(item)
        except BadCheckpoint as error:
            shard_id, checkpoint = item["leaseKey"]["S"], item["checkpoint"]["S"]
            raise self.bad_checkpoint(shard_id, checkpoint, str(error)) from None
        except ValueError as error:
            raise EnvironmentProblem(
                f"lease table {self.table} at {self.where}: the item {_named(item)} is not a lease "
                f"({error}); remove it, or give the job a task_name of its own"
            ) from None

    def bad_checkpoint(self, shard_id: str, checkpoint: str, why: str) -> EnvironmentProblem:
        """The one line a run ends with when a shard's lease holds a checkpoint it cannot
        read from (``why``): the endpoint answered, so it names the lease and what to do,
        not the endpoint."""
        return EnvironmentProblem(
            f"lease table {self.table} at {self.where}: the lease of shard {shard_id} holds "
            f"checkpoint {checkpoint!r}, {why}: with the replicator stopped, set it to a "
            "sequence number of the shard (the last change applied), or to TRIM_HORIZON to "
            "read the shard again from its oldest record"
        )

    def _item(self, shard_id: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.client.get_item(
            TableName=self.table, Key={"leaseKey": {"S": shard_id}}, ConsistentRead=True
        ).get("Item")
        return item

    def get_settled(self, shard_id: str, held: Lease | None = None) -> Lease | None:
        """The lease as stored, read while none of this table's updates is in progress.

        An update stores the new counter, then sets it in the Lease object it was given.
        A shard worker checking that the stored lease is still the one it holds (owner and
        counter) while the runtime renews it on another thread can read the stored counter
        before its own copy has caught up; read here, the two agree unless another worker
        moved the lease. It holds up this table's updates for one read: used only after
        a first read disagreed.

        The counter also moves under a worker when one of our updates whose answer was
        lost landed after all (the runtime retries a renewal that timed out in a new
        call, later): when the stored lease is what such an update left, ``held`` (the
        worker's copy) is brought up to it, as the next update would."""
        with self._lock:
            item = self._item(shard_id)
            if item is None:
                return None
            landed = self._landed(item, self._unanswered.get(shard_id, []))
            if landed is not None and held is not None:
                self._advance(held, landed)
            return self._lease(item)

    def create(self, shard_id: str, checkpoint: str, parents: list[str]) -> Lease | None:
        """Create a lease if none exists; None when another creator won the race."""
        item: dict[str, Any] = {
            "leaseKey": {"S": shard_id},
            "leaseCounter": {"N": "0"},
            "checkpoint": {"S": checkpoint},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
        }
        if parents:
            item["parentShardId"] = {"SS": sorted(parents)}
        if self.stream is not None:
            item[STREAM] = {"S": self.stream}
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return Lease(shard_id, None, 0, checkpoint, 0, 0, sorted(parents), stream=self.stream)

    def take(self, lease: Lease) -> Lease:
        """Become the lease's owner, if it is still as we last saw it."""
        switches = lease.owner_switches + (0 if lease.owner == self.owner else 1)
        return self._update(
            lease,
            "SET leaseOwner = :me, leaseCounter = :next, ownerSwitchesSinceCheckpoint = :sw",
            {":sw": {"N": str(switches)}},
            owned=False,
            changes={"owner": self.owner, "owner_switches": switches},
        )

    def take_anew(self, lease: Lease, parents: list[str]) -> Lease:
        """Become the owner of a lease of an earlier stream, reset as a new lease of this
        one: its checkpoint TRIM_HORIZON (the shard read from its oldest record), its
        parents the shard's in this stream (``parents``), its stream this one. One write,
        conditional on the counter as a take is: of two hosts resetting it, one wins and
        the other finds the lease taken."""
        values: dict[str, Any] = {":cp": {"S": TRIM_HORIZON}, ":zero": {"N": "0"}}
        if parents:
            values[":parents"] = {"SS": sorted(parents)}
        return self._update(
            lease,
            ("SET parentShardId = :parents, " if parents else "REMOVE parentShardId SET ")
            + "leaseOwner = :me, leaseCounter = :next, checkpoint = :cp, "
            "checkpointSubSequenceNumber = :zero, ownerSwitchesSinceCheckpoint = :zero",
            values,
            owned=False,
            changes={
                "owner": self.owner,
                "checkpoint": TRIM_HORIZON,
                "sub_sequence_number": 0,
                "owner_switches": 0,
                "parents": sorted(parents),
            },
        )

    def mark_superseded(self, lease: Lease, stream: str) -> None:
        """Note on a lease of an earlier stream that ``stream`` has taken its place (its
        unread changes recorded): a later start does not record them again. Owner and
        counter are left alone; a lease that is gone needs no note."""
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table,
                Key={"leaseKey": {"S": lease.shard_id}},
                UpdateExpression=f"SET {SUPERSEDED_BY} = :s",
                ConditionExpression="attribute_exists(leaseKey)",
                ExpressionAttributeValues={":s": {"S": stream}},
            )

    def renew(self, lease: Lease) -> Lease:
        return self._update(lease, "SET leaseCounter = :next", {}, owned=True, changes={})

    def checkpoint(self, lease: Lease, checkpoint: str, sub: int = 0) -> Lease:
        return self._update(
            lease,
            "SET checkpoint = :cp, checkpointSubSequenceNumber = :sub, "
            "ownerSwitchesSinceCheckpoint = :zero, leaseCounter = :next",
            {":cp": {"S": checkpoint}, ":sub": {"N": str(sub)}, ":zero": {"N": "0"}},
            owned=True,
            changes={"checkpoint": checkpoint, "sub_sequence_number": sub, "owner_switches": 0},
        )

    def release(self, lease: Lease) -> None:
        """Give the lease up (on a clean stop) so that any worker may take it at once."""
        with contextlib.suppress(LeaseLost):
            self._update(
                lease,
                f"REMOVE leaseOwner, {HOLDER} SET leaseCounter = :next",
                {},
                owned=True,
                changes={"owner": None, "holder": None},
                holds=False,
            )

    def _update(
        self,
        lease: Lease,
        expression: str,
        values: dict[str, Any],
        *,
        owned: bool,
        changes: dict[str, Any],
        holds: bool = True,
    ) -> Lease:
        """Apply ``expression`` (which ends with a SET clause) if the lease is still as we
        last saw it, and bring ``lease`` up to date with ``changes``. Unless it gives the
        lease up (``holds`` false), it names this process as the lease's holder, and
        records the stream the lease is of."""
        if holds:
            changes = {**changes, "holder": self.holder}
            if self.stream is not None:
                changes["stream"] = self.stream
        with self._lock:
            while True:
                write_id = uuid.uuid4().hex
                condition = "leaseCounter = :seen"
                all_values = {
                    ":seen": {"N": str(lease.counter)},
                    ":next": {"N": str(lease.counter + 1)},
                    ":write": {"S": write_id},
                    **values,
                }
                held = ""
                if holds:
                    held = f", {HOLDER} = :holder"
                    all_values[":holder"] = self.holder.attribute(lease.counter + 1)
                    if self.stream is not None:
                        held += f", {STREAM} = :stream"
                        all_values[":stream"] = {"S": self.stream}
                if owned:
                    condition += " AND leaseOwner = :me"
                    all_values[":me"] = {"S": self.owner}
                elif ":me" in expression:
                    all_values[":me"] = {"S": self.owner}
                # Those conditional on an older counter can no longer land; past the cap,
                # the oldest is forgotten (if it lands after all, the lease counts as lost).
                unanswered = [
                    write
                    for write in self._unanswered.get(lease.shard_id, [])
                    if write.counter == lease.counter + 1
                ][-_MAX_UNANSWERED + 1 :]
                unanswered.append(_Unanswered(write_id, lease.counter + 1, changes))
                self._unanswered[lease.shard_id] = unanswered
                try:
                    self.client.update_item(
                        TableName=self.table,
                        Key={"leaseKey": {"S": lease.shard_id}},
                        UpdateExpression=f"{expression}, {WRITE_ID} = :write{held}",
                        ConditionExpression=condition,
                        ExpressionAttributeValues=all_values,
                    )
                except ClientError as error:
                    if error_code(error) != "ConditionalCheckFailedException":
                        raise
                    item = self._item(lease.shard_id)
                    landed = None if item is None else self._landed(item, unanswered)
                    if landed is None:
                        self._unanswered.pop(lease.shard_id, None)
                        raise self._lost(lease, owned) from None
                    # Our own write landed (an earlier one whose answer was lost, or a
                    # retry of this call): the lease is as it left it. If it was this
                    # very write, done; else this update is made again on top of it.
                    self._advance(lease, landed)
                    if landed.write_id == write_id:
                        return lease
                    continue
                self._advance(lease, unanswered[-1])
                return lease

    def _landed(self, item: dict[str, Any], unanswered: list[_Unanswered]) -> _Unanswered | None:
        """Which of our unanswered updates the stored lease is the result of, if any."""
        stored_id = item.get(WRITE_ID, {}).get("S")
        counter = int(item.get("leaseCounter", {}).get("N", "0"))
        for write in unanswered:
            if write.write_id == stored_id and write.counter == counter:
                return write
        return None

    def _advance(self, lease: Lease, write: _Unanswered) -> None:
        """The lease object as ``write`` left the stored one; earlier unanswered updates
        were conditional on the counter it replaced and can no longer land."""
        lease.counter = write.counter
        for name, value in write.changes.items():
            setattr(lease, name, value)
        self._unanswered.pop(lease.shard_id, None)

    def _lost(self, lease: Lease, owned: bool) -> LeaseLost:
        now = self.get(lease.shard_id)
        found = f"owner {now.owner}, counter {now.counter}" if now else "no lease"
        return LeaseLost(
            f"lease on shard {lease.shard_id} changed under us: expected owner "
            f"{self.owner if owned else lease.owner}, counter {lease.counter}; found {found}"
        )
