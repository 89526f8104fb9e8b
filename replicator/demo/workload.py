"""A steady mix of inserts, updates and deletes on the demo's source table.

Items use a composite key (``pk`` string, ``sk`` number) and every attribute type
DynamoDB has. Every write stamps what the job ranks by (:class:`Stamps`): without it
every image would tie, the digest would pick the winner, and the destinations would not
end equal to the source.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replicator.config.model import ConflictPolicyName

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from replicator.config.model import JobConfig

KEY_NAMES = ("pk", "sk")


@dataclass(frozen=True)
class Stamps:
    """The attributes an application of the job sets on every write: each
    ``last_writer_wins`` timestamp (epoch milliseconds), each ``version`` (one more than
    the key's last), and the origin attribute of loop prevention."""

    timestamps: tuple[str, ...] = ("updated_at",)
    versions: tuple[str, ...] = ()
    origin_attribute: str | None = "origin_region"

    @classmethod
    def of(cls, job: JobConfig) -> Stamps:
        timestamps: list[str] = []
        versions: list[str] = []
        for _, conflict in job.conflict_settings:
            if conflict.policy is ConflictPolicyName.LAST_WRITER_WINS:
                assert conflict.timestamp_attribute
                timestamps.append(conflict.timestamp_attribute)
            elif conflict.policy is ConflictPolicyName.VERSION:
                assert conflict.version_attribute
                versions.append(conflict.version_attribute)
        return cls(
            tuple(dict.fromkeys(timestamps)),
            tuple(dict.fromkeys(versions)),
            job.loop_prevention.origin_attribute,
        )

    @staticmethod
    def problem(job: JobConfig) -> str | None:
        """Why the demo's writes cannot make the job's destinations equal its source."""
        for where, conflict in job.conflict_settings:
            if conflict.policy is ConflictPolicyName.CUSTOM:
                return (
                    f"{where}.policy is custom: the demo cannot know what values the "
                    "resolver needs to keep the latest write; try the job with "
                    "last_writer_wins, version or overwrite"
                )
        stamps = Stamps.of(job)
        for name in (*stamps.timestamps, *stamps.versions, stamps.origin_attribute):
            if name in KEY_NAMES:
                return (
                    f"{name!r} is a key attribute of the demo's tables ({', '.join(KEY_NAMES)}); "
                    "the demo cannot stamp it: name another attribute"
                )
        for name in stamps.timestamps:
            if name in stamps.versions:
                return (
                    f"{name!r} is a timestamp_attribute in one conflict section and a "
                    "version_attribute in another; the demo writes one value to it"
                )
        return None


@dataclass
class _Stamper:
    """One workload's stamp values, per key: timestamps strictly increasing (two writes
    of an item in one millisecond would otherwise tie) and versions one more each time."""

    stamps: Stamps
    origin: str
    timestamps: dict[tuple[str, int], int] = field(default_factory=dict)
    versions: dict[tuple[str, int], int] = field(default_factory=dict)

    def next(self, pk: str, sk: int) -> dict[str, Any]:
        key = (pk, sk)
        stamp = max(int(time.time() * 1000), self.timestamps.get(key, 0) + 1)
        version = self.versions.get(key, 0) + 1
        self.timestamps[key], self.versions[key] = stamp, version
        values: dict[str, Any] = {name: {"N": str(stamp)} for name in self.stamps.timestamps}
        values.update({name: {"N": str(version)} for name in self.stamps.versions})
        if self.stamps.origin_attribute:
            values[self.stamps.origin_attribute] = {"S": self.origin}
        return values


@dataclass
class WorkloadStats:
    puts: int = 0
    updates: int = 0
    deletes: int = 0

    @property
    def total(self) -> int:
        return self.puts + self.updates + self.deletes


def demo_item(rng: random.Random, pk: str, sk: int, origin: str) -> dict[str, Any]:
    """An item stamped as the demo's own job wants it: ``updated_at``, ``origin_region``."""
    return {**_payload(rng, pk, sk), **_Stamper(Stamps(), origin).next(pk, sk)}


def _payload(rng: random.Random, pk: str, sk: int) -> dict[str, Any]:
    return {
        "pk": {"S": pk},
        "sk": {"N": str(sk)},
        "name": {"S": rng.choice(["ada", "grace", "edsger", "barbara", "ken"])},
        "price": {"N": f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}"},
        "blob": {"B": rng.randbytes(rng.randint(0, 24))},
        "tags": {"SS": sorted({rng.choice("abcdefgh") for _ in range(3)})},
        "sizes": {"NS": sorted({str(rng.randint(1, 50)) for _ in range(3)})},
        "chunks": {"BS": [bytes([i, rng.randint(0, 255)]) for i in range(2)]},
        "address": {
            "M": {
                "city": {"S": "Lyon"},
                "zip": {"N": str(rng.randint(1000, 9999))},
                "nested": {"L": [{"BOOL": True}, {"NULL": True}]},
            }
        },
        "history": {"L": [{"N": str(rng.randint(0, 9))}, {"S": "x"}, {"B": b"\x00\xff"}]},
        "active": {"BOOL": rng.random() < 0.5},
        "note": {"NULL": True},
    }


class Workload(threading.Thread):
    def __init__(
        self,
        ddb: DynamoDBClient,
        table: str,
        rate: float,
        duration_s: float,
        keys: int,
        origin: str,
        seed: int = 7,
        stamps: Stamps | None = None,
    ) -> None:
        super().__init__(name="demo-workload", daemon=True)
        self.ddb = ddb
        self.table = table
        self.rate = rate
        self.duration_s = duration_s
        self.keys = keys
        self.origin = origin
        self.stamper = _Stamper(stamps or Stamps(), origin)
        self.rng = random.Random(seed)
        self.stats = WorkloadStats()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.elapsed_s = 0.0  # how long the writes took, once they are done

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # noqa: BLE001  # reported by the demo
            self.error = error

    def _run(self) -> None:
        interval = 1.0 / self.rate
        started = time.monotonic()
        deadline = started + self.duration_s
        next_at = started
        try:
            while time.monotonic() < deadline and not self.stop_event.is_set():
                self._one_change()
                next_at += interval
                # Never past the deadline: at a low rate the next change may be due after it.
                self.stop_event.wait(max(0.0, min(next_at, deadline) - time.monotonic()))
        finally:
            self.elapsed_s = time.monotonic() - started

    def _one_change(self) -> None:
        rng = self.rng
        index = rng.randrange(self.keys)
        pk, sk = f"customer-{index % 40:03d}", index // 40
        roll = rng.random()
        if roll < 0.55:
            self._put_fresh(pk, sk)
        elif roll < 0.8:
            values = {"price": {"N": str(rng.randint(1, 500))}, **self.stamper.next(pk, sk)}
            names = {f"#a{i}": name for i, name in enumerate(values)}
            expression = "SET " + ", ".join(f"{alias} = :a{i}" for i, alias in enumerate(names))
            bound = {f":a{i}": value for i, value in enumerate(values.values())}
            if "visits" not in values:  # a count the stamps do not own
                expression += " ADD visits :one"
                bound[":one"] = {"N": "1"}
            try:
                # Only an item that exists is updated (one that is gone is put again), so
                # each change is counted as the kind its stream record is; and a stock
                # moto_server writes two records for an UpdateItem that creates an item,
                # the first holding only the key, which DynamoDB does not (the demo's own
                # endpoint writes one: replicator/demo/endpoint.py).
                self.ddb.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": pk}, "sk": {"N": str(sk)}},
                    UpdateExpression=expression,
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=bound,
                )
            except self.ddb.exceptions.ConditionalCheckFailedException:
                self._put_fresh(pk, sk)
                return
            self.stats.updates += 1
        else:
            try:
                # Only an item that exists is deleted: a delete of one that is not there
                # writes no stream record, and the progress would read fewer records than
                # the changes it counts.
                self.ddb.delete_item(
                    TableName=self.table,
                    Key={"pk": {"S": pk}, "sk": {"N": str(sk)}},
                    ConditionExpression="attribute_exists(pk)",
                )
            except self.ddb.exceptions.ConditionalCheckFailedException:
                self._put_fresh(pk, sk)
                return
            self.stats.deletes += 1

    def _put_fresh(self, pk: str, sk: int) -> None:
        item = {**_payload(self.rng, pk, sk), **self.stamper.next(pk, sk)}
        self.ddb.put_item(TableName=self.table, Item=item)
        self.stats.puts += 1
