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

A rank means something only under the ranking that made it: a ``rank_value`` taken from
``updated_at`` compared as a ``version`` is an accident. So a row also records what it
was ranked by (:class:`Ranking`: the policy and its attribute), and a job counts only
the rows ranked as it ranks (:meth:`Tombstone.ranked_like`); a row written before rows
recorded their ranking is taken to be ranked as the job ranks, as it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replicator.conflictlog.keys import canonical_key, partition_key
from replicator.items import AttributeValue, Item, describe_field, key_token
from replicator.rules.order import (
    ORDERED_TYPES,
    Digest,
    OpRank,
    Rank,
    RankFields,
    ordering_rank,
    origin_rank,
)

PARTITION_KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
# Where a tombstone row keeps the rank of the image its delete removed.
TOMBSTONE_FIELDS = RankFields(
    value="rank_value", origin="rank_origin", digest="rank_digest", key=PARTITION_KEY
)


# Where a tombstone row keeps what its rank was ranked by (absent in older rows).
RANK_POLICY = "rank_policy"
RANK_ATTRIBUTE = "rank_attribute"


@dataclass(frozen=True, slots=True)
class Ranking:
    """What ranks images: a policy (``last_writer_wins`` or ``version``) on an attribute."""

    policy: str
    attribute: str

    def __str__(self) -> str:
        return f"{self.policy} on {self.attribute}"


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
    # What ``ordering`` was ranked by; None for a row written before rows recorded it.
    ranking: Ranking | None = None

    @property
    def pk(self) -> str:
        return row_key(self.keys)

    @property
    def rank(self) -> Rank:
        """The deleted image's rank (the delete itself ranks just above it)."""
        # Ranked as the rule ranks the deleted image: a string under version is no value.
        numeric = self.ranking is not None and self.ranking.policy == "version"
        tier, value = ordering_rank(self.ordering, ("N",) if numeric else ORDERED_TYPES)
        return (tier, value, origin_rank(self.origin), Digest(text=self.digest))

    @property
    def op_rank(self) -> OpRank:
        return (self.rank, 1)

    def blocks(self, image_rank: Rank) -> bool:
        """Whether a put of an image of ``image_rank`` ranks at or below this delete."""
        return image_rank <= self.rank

    def ranked_like(self, ranking: Ranking | None) -> bool:
        """Whether this delete's rank compares with images ranked by ``ranking``: a row
        that does not say what it was ranked by (written before rows said so) is taken to
        be ranked as the job ranks; None (a reader that does not rank) takes any row."""
        return ranking is None or self.ranking is None or self.ranking == ranking

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
        if self.ranking is not None:
            item[RANK_POLICY] = {"S": self.ranking.policy}
            item[RANK_ATTRIBUTE] = {"S": self.ranking.attribute}
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
            ranking=_ranking(item),
        )

    def described(self, attribute: str, origin_attribute: str | None) -> str:
        """How log lines and conflict entries show the delete (``attribute``: the job's
        ranking attribute, which names the value of a row that does not name its own)."""
        if self.ranking is not None:
            attribute = self.ranking.attribute
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


def _ranking(item: Item) -> Ranking | None:
    policy, attribute = _text(item, RANK_POLICY), _text(item, RANK_ATTRIBUTE)
    return Ranking(policy, attribute) if policy and attribute else None


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
    ranking: Ranking | None = None,
) -> Tombstone:
    """The tombstone of a delete of ``deleted`` (the REMOVE's old image), ranked by
    ``ranking`` (the job's: every row the replicator writes says so)."""
    digest = str(fields.rank(deleted)[3])
    origin = deleted.get(fields.origin) if fields.origin else None
    if origin is not None and not isinstance(origin.get("S"), str):
        origin = None
    ordering = deleted.get(fields.value)
    if ordering is not None and next(iter(ordering)) not in fields.types:
        # A value the rule does not order by ranks as none (rules/order.py); kept, a
        # boolean or a map would be compared with < in the row's conditions, which
        # DynamoDB refuses for such types.
        ordering = None
    return Tombstone(
        keys=keys,
        ordering=ordering,
        origin=origin,
        digest=digest,
        deleted_in=deleted_in,
        written_by=written_by,
        deleted_at_ms=deleted_at_ms,
        expires_at=expires_at,
        ranking=ranking,
    )
