"""A steady mix of inserts, updates and deletes on the demo's source table.

Items use a composite key (``pk`` string, ``sk`` number) and every attribute type
DynamoDB has, with an ``updated_at`` timestamp so the demo can use last-writer-wins.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass
class WorkloadStats:
    puts: int = 0
    updates: int = 0
    deletes: int = 0

    @property
    def total(self) -> int:
        return self.puts + self.updates + self.deletes


def demo_item(rng: random.Random, pk: str, sk: int, origin: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {
        "pk": {"S": pk},
        "sk": {"N": str(sk)},
        "updated_at": {"N": str(now_ms)},
        "origin_region": {"S": origin},
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
    ) -> None:
        super().__init__(name="demo-workload", daemon=True)
        self.ddb = ddb
        self.table = table
        self.rate = rate
        self.duration_s = duration_s
        self.keys = keys
        self.origin = origin
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
                self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        finally:
            self.elapsed_s = time.monotonic() - started

    def _one_change(self) -> None:
        rng = self.rng
        index = rng.randrange(self.keys)
        pk, sk = f"customer-{index % 40:03d}", index // 40
        roll = rng.random()
        if roll < 0.55:
            self.ddb.put_item(TableName=self.table, Item=demo_item(rng, pk, sk, self.origin))
            self.stats.puts += 1
        elif roll < 0.8:
            self.ddb.update_item(
                TableName=self.table,
                Key={"pk": {"S": pk}, "sk": {"N": str(sk)}},
                UpdateExpression="SET price = :p, updated_at = :t, origin_region = :o "
                "ADD visits :one",
                ExpressionAttributeValues={
                    ":p": {"N": str(rng.randint(1, 500))},
                    ":t": {"N": str(int(time.time() * 1000))},
                    ":o": {"S": self.origin},
                    ":one": {"N": "1"},
                },
            )
            self.stats.updates += 1
        else:
            self.ddb.delete_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"N": str(sk)}})
            self.stats.deletes += 1
