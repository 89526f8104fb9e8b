"""The data that flows through the pipeline: a daemon record in, a decoded change out.

``RawRecord`` is exactly what the MultiLangDaemon hands the processor for one record.
It is kept beside every decoded change so that a change that cannot be applied is
dead-lettered with the bytes that arrived, not with our interpretation of them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

import msgspec

from replicator.images import Image
from replicator.items import Item, KeyId

if TYPE_CHECKING:
    from replicator.tombstones.model import Tombstone


# The ``eventSource`` prefix of a record the tools make of an image read from a table
# (replicator/tools/snapshot.py): its OldImage is the destination item its write expects.
SYNTHETIC_SOURCE_PREFIX = "replicator:"
SYNTHETIC_SEQUENCE_NUMBER = "0"
"""The sequence number of a backfill's or repair's record (a stream's are never 0)."""


class RawRecord(TypedDict):
    """One record of a ``processRecords`` message (KCL MultiLang protocol)."""

    data: str
    sequenceNumber: str
    subSequenceNumber: int | None
    partitionKey: str | None
    approximateArrivalTimestamp: int


class Event(StrEnum):
    INSERT = "INSERT"
    MODIFY = "MODIFY"
    REMOVE = "REMOVE"

    @property
    def op(self) -> str:
        """The destination operation: ``put`` for inserts and updates, ``delete`` for removals."""
        return "delete" if self is Event.REMOVE else "put"


class Held(StrEnum):
    """Which of an item's next changes waits for a request that may still land (the
    write's ``hold_until``): any of them, or only its deletes, or only its puts."""

    CHANGE = "change"  # a request without a condition lands over anything
    DELETE = "delete"  # a conditional put lands on no item: after a delete
    PUT = "put"  # a conditional delete removes an item created again below it

    def waits_for(self, change: Change) -> bool:
        """Whether ``change``, the item's next, must wait."""
        return self is Held.CHANGE or (self is Held.DELETE) is change.op_is_delete


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One change to one item, decoded from a stream record.

    ``position`` orders changes within a shard (the stream sequence number as an int);
    ``created_us`` is when the source table made the change, in microseconds, used for
    lag and, on Kinesis streams where order is not guaranteed, for ordering.

    A frozen msgspec struct rather than a frozen dataclass: one is built per record, and
    a frozen dataclass costs several microseconds to build. ``msgspec.structs.replace``
    makes a changed copy.
    """

    sequence_number: str
    position: int
    event: Event
    key: KeyId
    keys: Item
    # The images as the record carried them, decoded only as far as they are read.
    new: Image | None
    old: Image | None
    created_us: int
    region: str
    ttl_delete: bool
    raw: RawRecord
    # Set on a change made by the active-active stage (replicator/highwater.py): this
    # change carries the item's highest-ranked state, written in place of ``corrects``,
    # a local write to the source that ranks below it.
    corrects: Change | None = None
    # A correction whose higher state is a delete known only by its tombstone (read from
    # the source's tombstone table, its image long gone): the delete the stale write
    # lost to. Such a correction removes the stale image (``old``) wherever it is.
    tombstone: Tombstone | None = None
    # The table a Kinesis Data Streams for DynamoDB record names (``tableName``); None for
    # a DynamoDB stream's record, which is always its own table's.
    table: str | None = None

    def __repr__(self) -> str:
        # Without the raw record (its base64 payload) and the corrected change.
        return (
            f"Change(sequence_number={self.sequence_number!r}, event={self.event.value}, "
            f"key={self.key!r}, created_us={self.created_us})"
        )

    @property
    def created_s(self) -> float:
        return self.created_us / 1_000_000

    @property
    def op_is_delete(self) -> bool:
        return self.event is Event.REMOVE

    @property
    def new_image(self) -> Item | None:
        """The new image as an item (decoded on first use; MalformedImage if it is not
        well-formed)."""
        return None if self.new is None else self.new.item

    @property
    def old_image(self) -> Item | None:
        return None if self.old is None else self.old.item

    @property
    def image(self) -> Item | None:
        """The image that decides conflicts: the new one for puts, the old one for deletes."""
        return self.old_image if self.event is Event.REMOVE else self.new_image

    @property
    def ranked(self) -> Image | None:
        """:attr:`image` undecoded: what a rule reads a few attributes of (ranks,
        conditions, origin stamps) without building the whole item."""
        return self.old if self.event is Event.REMOVE else self.new


def raw_record_from(record: Any) -> RawRecord:
    """Copy the fields we keep out of an amazon-kclpy ``messages.Record`` (or a plain dict)."""
    get = record.get
    # A dict display: calling the TypedDict builds the same dict from keywords, slower.
    return {
        "data": get("data"),
        "sequenceNumber": get("sequenceNumber"),
        "subSequenceNumber": get("subSequenceNumber"),
        "partitionKey": get("partitionKey"),
        "approximateArrivalTimestamp": get("approximateArrivalTimestamp"),
    }
