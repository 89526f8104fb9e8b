"""A tombstone: the record that an item was deleted, and how that delete ranks.

A delete under ``last_writer_wins`` or ``version`` ranks just above the image it
deleted (the REMOVE's old image): it beats that image and everything ranked below it,
and loses to anything ranked above. The stream carries no other version of a delete
that every region can compare: the record's creation time is the server's clock in
the region that deleted, in another unit than the application's timestamps, while the
deleted image is exactly what the application's order already ranks. So a tombstone
stores the deleted image's rank (ordering value, origin, digest), and a put whose
image ranks at or below it must not bring the item back.

Tombstones live in a small table per region beside the user's table (never inside the
user's items), keyed by the item's canonical key (its sha256 when the key is too long
for a partition key: :func:`~replicator.conflictlog.keys.partition_key`), one row per
item: a higher delete of the same item replaces a lower one, and a row expires
``retention`` after it was written (DynamoDB's TTL on ``expires_at``; the replicator
ignores a row past that time even before DynamoDB removes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replicator.conflictlog.keys import canonical_key, partition_key
from replicator.items import AttributeValue, Item, describe_field, key_token
from replicator.rules.order import Digest, OpRank, Rank, RankFields, ordering_rank, origin_rank

PARTITION_KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
# Where a tombstone row keeps the rank of the image its delete removed.
TOMBSTONE_FIELDS = RankFields(
    value="rank_value", origin="rank_origin", digest="rank_digest", key=PARTITION_KEY
)


def row_key(keys: Item) -> str:
    """The tombstone row's ``pk`` for the user item with these key attributes."""
    return partition_key(canonical_key(keys))


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The delete of an image whose rank is (``ordering``, ``origin``, ``digest``)."""

    keys: Item  # the user item's key attributes
    ordering: AttributeValue | None
    origin: AttributeValue | None
    digest: str
    deleted_in: str  # origin value of the region whose stream carried the delete
    written_by: str  # origin value of the job that wrote this row
    deleted_at_ms: int  # the REMOVE record's creation time
    expires_at: int  # epoch seconds

    @property
    def pk(self) -> str:
        return row_key(self.keys)

    @property
    def rank(self) -> Rank:
        """The deleted image's rank (the delete itself ranks just above it)."""
        tier, value = ordering_rank(self.ordering)
        return (tier, value, origin_rank(self.origin), Digest(text=self.digest))

    @property
    def op_rank(self) -> OpRank:
        return (self.rank, 1)

    def blocks(self, image_rank: Rank) -> bool:
        """Whether a put of an image of ``image_rank`` ranks at or below this delete."""
        return image_rank <= self.rank

    def expired(self, now_s: float) -> bool:
        return self.expires_at <= now_s

    def to_item(self) -> Item:
        item: Item = {
            PARTITION_KEY: {"S": self.pk},
            "keys": {"M": self.keys},
            "rank_digest": {"S": self.digest},
            "deleted_in": {"S": self.deleted_in},
            "written_by": {"S": self.written_by},
            "deleted_at": {"N": str(self.deleted_at_ms)},
            TTL_ATTRIBUTE: {"N": str(self.expires_at)},
        }
        if self.ordering is not None:
            item["rank_value"] = self.ordering
        if self.origin is not None:
            item["rank_origin"] = self.origin
        return item

    @classmethod
    def from_item(cls, item: Item) -> Tombstone:
        keys = item.get("keys", {}).get("M", {})
        return cls(
            keys=dict(keys),
            ordering=item.get("rank_value"),
            origin=item.get("rank_origin"),
            digest=_text(item, "rank_digest"),
            deleted_in=_text(item, "deleted_in"),
            written_by=_text(item, "written_by"),
            deleted_at_ms=_number(item, "deleted_at"),
            expires_at=_number(item, TTL_ATTRIBUTE),
        )

    def described(self, attribute: str, origin_attribute: str | None) -> str:
        """How log lines and conflict entries show the delete."""
        text = f"a delete in {key_token(self.deleted_in)} of the image with "
        text += describe_field(attribute, self.ordering)
        if origin_attribute:
            text += f", {describe_field(origin_attribute, self.origin)}"
        return text

    def rank_record(self, attribute: str, origin_attribute: str | None) -> dict[str, Any]:
        """The conflict log's ``winning_rank`` for a delete that won."""
        return {
            "attribute": attribute,
            "value": self.ordering,
            "origin_attribute": origin_attribute,
            "origin": None if self.origin is None else self.origin.get("S"),
            "order": [*_order(self.rank), "delete"],
            "delete": True,
            "deleted_in": self.deleted_in,
        }


def _order(rank: Rank) -> list[Any]:
    tier, value, (_, origin), digest = rank
    return [tier, str(value), origin, str(digest)]


def _text(item: Item, name: str) -> str:
    value = item.get(name, {}).get("S")
    return value if isinstance(value, str) else ""


def _number(item: Item, name: str) -> int:
    value = item.get(name, {}).get("N")
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def tombstone_of(
    deleted: Item,
    keys: Item,
    fields: RankFields,
    *,
    deleted_in: str,
    written_by: str,
    deleted_at_ms: int,
    expires_at: int,
) -> Tombstone:
    """The tombstone of a delete of ``deleted`` (the REMOVE's old image)."""
    digest = str(fields.rank(deleted)[3])
    origin = deleted.get(fields.origin) if fields.origin else None
    if origin is not None and not isinstance(origin.get("S"), str):
        origin = None
    return Tombstone(
        keys=keys,
        ordering=deleted.get(fields.value),
        origin=origin,
        digest=digest,
        deleted_in=deleted_in,
        written_by=written_by,
        deleted_at_ms=deleted_at_ms,
        expires_at=expires_at,
    )
