"""Synthetic stream records, in the exact form the DynamoDB Streams adapter 2.x hands
to a MultiLang processor (the same bytes ``shards.stream.to_daemon_record``
produces from a real GetRecords answer).

Items look like a modest order record (about 20 attributes of every common type, some
nested, about 1 KB as JSON) so that decoding costs what it costs on a real table. Each
item carries ``updated_at``: its creation time in epoch microseconds. That attribute is
what ``last_writer_wins`` orders by, and what the fake endpoint logs to time the delay
from a record's creation to its application.

The mix is 10 % INSERT, 85 % MODIFY (both with NEW_AND_OLD_IMAGES) and 5 % REMOVE;
one item in ten carries a binary attribute, which takes decode's slower path. The
``small`` shape (four attributes, no binary) shows how the costs scale with item size.
"""

from __future__ import annotations

import base64
import json
import random
import time
from dataclasses import dataclass
from typing import Any

FIRST_SEQUENCE_NUMBER = 10**20  # DynamoDB stream sequence numbers are 21+ digit strings
STATUSES = ("NEW", "PAID", "PICKED", "SHIPPED", "DELIVERED", "RETURNED")


@dataclass(frozen=True)
class WorkloadSpec:
    keys: int = 100_000
    seed: int = 7
    insert_share: float = 0.10
    remove_share: float = 0.05
    binary_share: float = 0.10
    shape: str = "order"  # or "small": four attributes, about 150 bytes an image


@dataclass(frozen=True, slots=True)
class Generated:
    """What the benchmark remembers of one record, to time its application."""

    key: str
    stamp_us: int
    is_put: bool


class Workload:
    """Deterministic for a given spec: the same records in the same order on every run,
    except for their timestamps, which are the moments they are generated."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.next_sequence = FIRST_SEQUENCE_NUMBER
        self.last_stamp = 0

    def batch(
        self, count: int, created_us: int | None = None, spread_us: int = 0
    ) -> tuple[list[dict[str, Any]], list[Generated]]:
        """``count`` daemon records created at ``created_us`` (now by default); with
        ``spread_us`` their creation times are spread evenly over the span before it."""
        end = created_us if created_us is not None else time.time_ns() // 1000
        records: list[dict[str, Any]] = []
        generated: list[Generated] = []
        for index in range(count):
            stamp = end - spread_us + (spread_us * (index + 1)) // count if spread_us else end
            stamp = max(stamp, self.last_stamp + 1)  # strictly increasing, per item too
            self.last_stamp = stamp
            record, remembered = self.record(stamp)
            records.append(record)
            generated.append(remembered)
        return records, generated

    def record(self, stamp_us: int) -> tuple[dict[str, Any], Generated]:
        rng = self.rng
        spec = self.spec
        key = f"order-{rng.randrange(spec.keys):08d}"
        draw = rng.random()
        event = (
            "INSERT"
            if draw < spec.insert_share
            else "REMOVE"
            if draw < spec.insert_share + spec.remove_share
            else "MODIFY"
        )
        binary = rng.random() < spec.binary_share
        keys = {"pk": {"S": key}}
        previous = stamp_us - rng.randrange(1_000, 60_000_000)
        new_image = self._image(key, stamp_us, binary) if event != "REMOVE" else {}
        old_image = self._image(key, previous, binary) if event != "INSERT" else {}
        sequence_number = str(self.next_sequence)
        self.next_sequence += rng.randrange(1, 200)
        created_ms = stamp_us // 1000
        document = {
            "eventID": f"{rng.getrandbits(128):032x}",
            "eventName": event,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": created_ms,
                "Keys": keys,
                "NewImage": new_image,
                "OldImage": old_image,
                "SequenceNumber": sequence_number,
                "SizeBytes": 900,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
        data = json.dumps(document, separators=(",", ":")).encode()
        record = {
            "action": "record",
            "data": base64.b64encode(data).decode("ascii"),
            "partitionKey": sequence_number,
            "sequenceNumber": sequence_number,
            "subSequenceNumber": 0,
            "approximateArrivalTimestamp": created_ms,
        }
        return record, Generated(key, stamp_us, event != "REMOVE")

    def _image(self, key: str, stamp_us: int, binary: bool) -> dict[str, Any]:
        rng = self.rng
        if self.spec.shape == "small":
            return {
                "pk": {"S": key},
                "updated_at": {"N": str(stamp_us)},
                "status": {"S": rng.choice(STATUSES)},
                "count": {"N": str(rng.randrange(1_000_000))},
            }
        lines = [
            {
                "M": {
                    "sku": {"S": f"SKU-{rng.randrange(10_000):05d}"},
                    "quantity": {"N": str(rng.randrange(1, 5))},
                    "price": {"N": f"{rng.randrange(100, 10_000) / 100:.2f}"},
                }
            }
            for _ in range(rng.randrange(1, 4))
        ]
        image: dict[str, Any] = {
            "pk": {"S": key},
            "updated_at": {"N": str(stamp_us)},
            "status": {"S": rng.choice(STATUSES)},
            "customer_id": {"S": f"customer-{rng.randrange(1_000_000):07d}"},
            "email": {"S": f"user{rng.randrange(1_000_000)}@example.com"},
            "amount": {"N": f"{rng.randrange(100, 100_000) / 100:.2f}"},
            "currency": {"S": "EUR"},
            "item_count": {"N": str(len(lines))},
            "lines": {"L": lines},
            "shipping": {
                "M": {
                    "street": {"S": f"{rng.randrange(1, 300)} Main Street"},
                    "city": {"S": "Lisbon"},
                    "postcode": {"S": f"{rng.randrange(1000, 9999)}-{rng.randrange(100, 999)}"},
                    "country": {"S": "PT"},
                }
            },
            "tags": {"SS": ["priority", f"wave-{rng.randrange(10)}"]},
            "gift": {"BOOL": rng.random() < 0.1},
            "coupon": {"NULL": True},
            "note": {"S": "Leave the parcel with the neighbour if nobody answers the door."},
            "version": {"N": str(rng.randrange(1, 50))},
            "created_at": {"S": "2026-11-22T19:00:00.000Z"},
            "warehouse": {"S": f"WH-{rng.randrange(20):02d}"},
            "weight_kg": {"N": f"{rng.randrange(1, 5000) / 100:.2f}"},
        }
        if binary:
            image["thumbnail"] = {"B": base64.b64encode(rng.randbytes(48)).decode("ascii")}
        return image
