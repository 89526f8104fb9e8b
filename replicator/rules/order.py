"""The one total order of ``last_writer_wins`` and ``version``, in Python and in DynamoDB.

Every image ranks by four fields, compared left to right:

1. the ordering attribute's tier: an image without it ranks below every image that has
   it (tier 0); numbers are tier 1 and strings tier 2 (a table uses one type). A value
   of a type the rule does not order by (a boolean, a map; a string under ``version``)
   ranks as no value: a change bringing one is dead-lettered, and an item holding one
   loses to every valid write;
2. its value (numbers numerically, strings by code point, which is DynamoDB's UTF-8
   byte order);
3. the origin stamp: an image without one (or with a non-string one) ranks below every
   stamped image, then stamps compare as strings;
4. the image's digest (:func:`image_digest`), so that two different images with the same
   value and origin (two regions writing the same timestamp without a stamp, or one
   region writing twice in the same millisecond) still have one winner everywhere.

A delete ranks just above the image it deleted: ``(rank(deleted image), 1)`` against
``(rank(image), 0)`` for a put. No item at all ranks below everything.

DynamoDB can compare the first three fields in a ConditionExpression but cannot hash an
item, so conditions on the user's items are *strict* on the first three fields (the
write applies only onto an item that ranks lower without the digest, or onto no item);
a write whose condition fails gets the item back (``ALL_OLD``) and the rule decides the
rest in Python (``OrderedRule.reconsider``): the very same image means nothing to do, a
lower one (a tie broken by the digest, or a value of another type) is written again on
the condition that the item is still exactly what came back. Tombstones store the
digest, so their conditions cover all four fields.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from replicator.items import AttributeValue, ItemView, canonical_number

# (tier, value, (has origin, origin), digest)
Rank = tuple[int, Any, tuple[int, str], "Digest"]
# An operation: (rank of its image, 1 for a delete of that image else 0).
OpRank = tuple[Rank, int]
Condition = tuple[str, dict[str, str], dict[str, AttributeValue]]
Value = AttributeValue | None


@functools.total_ordering
class Digest:
    """An image's digest, computed only when a comparison reaches it: two images rarely
    tie on (value, origin), and hashing a large image costs more than the rest of a
    comparison."""

    __slots__ = ("_image", "_text")

    def __init__(self, image: ItemView | None = None, text: str | None = None) -> None:
        self._image = image
        self._text = text

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = image_digest(self._image) if self._image is not None else ""
            self._image = None
        return self._text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Digest):
            return self.text == other.text
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Digest):
            return self.text < other.text
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Digest({self.text[:12]})"


NO_ITEM: Rank = (-1, 0, (0, ""), Digest(text=""))
_TIERS = {"N": 1, "S": 2}
ORDERED_TYPES = ("N", "S")
"""The types an ordering attribute is compared by (``version`` takes numbers only)."""


def exact_number(text: str) -> str:
    """One spelling per number value, without rounding (:func:`canonical_number`); a text
    DynamoDB would refuse keeps its own spelling, marked, so it never equals a number."""
    try:
        return canonical_number(text)
    except ValueError:
        return f"?{text}"


def _canonical(value: AttributeValue) -> Any:
    ((kind, inner),) = value.items()
    if kind == "N":
        return ["N", exact_number(str(inner))]
    if kind == "NS":
        return ["NS", sorted(exact_number(str(v)) for v in inner)]
    if kind == "B":
        return ["B", _b64(inner)]
    if kind == "BS":
        return ["BS", sorted(_b64(v) for v in inner)]
    if kind == "SS":
        return ["SS", sorted(inner)]
    if kind == "M":
        return ["M", [[name, _canonical(v)] for name, v in sorted(inner.items())]]
    if kind == "L":
        return ["L", [_canonical(v) for v in inner]]
    return [kind, inner]


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def image_digest(image: ItemView) -> str:
    """sha256 (hex) of the image in a canonical form: equal for images DynamoDB holds as
    the same item (numbers by value, sets in any order, binaries as bytes or base64)."""
    canonical = [[name, _canonical(value)] for name, value in sorted(image.items())]
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ordering_rank(
    ordering: AttributeValue | None, types: tuple[str, ...] = ORDERED_TYPES
) -> tuple[int, Any]:
    """Tier and value of the ordering attribute's value. A value of a type the rule does
    not order by (``updated_at: true``, a string version) ranks as no value: a change
    bringing one is dead-lettered, and an item holding one (an application's mistake in
    some region) must not outrank, and so never be fixed by, every valid write of it."""
    if ordering is None:
        return (0, 0)
    kind, value = next(iter(ordering.items()))
    if kind not in types:
        return (0, 0)
    tier = _TIERS[kind]
    if kind == "N":
        try:
            return (tier, Decimal(canonical_number(value)))
        except ValueError:  # not a number DynamoDB holds (NaN, out of range): never stored
            return (tier, Decimal(0))
    return (tier, str(value))


def origin_rank(stamp: AttributeValue | None) -> tuple[int, str]:
    text = None if stamp is None else stamp.get("S")
    return (1, text) if isinstance(text, str) else (0, "")


@dataclass(frozen=True, slots=True)
class RankFields:
    """Where a rank's fields live in an item: the user's attributes, or a tombstone's."""

    value: str
    origin: str | None
    digest: str | None = None
    key: str | None = None  # an attribute every existing item has (for "no item")
    types: tuple[str, ...] = ORDERED_TYPES  # of the value, ranked (:func:`ordering_rank`)

    def rank(self, item: ItemView | None) -> Rank:
        """The rank of an item whose fields are stored under these names. Without a
        digest attribute the digest is computed from the whole item."""
        if item is None:
            return NO_ITEM
        tier, value = ordering_rank(item.get(self.value), self.types)
        origin = origin_rank(item.get(self.origin)) if self.origin else (0, "")
        if self.digest is None:
            digest = Digest(image=item)
        else:
            stored = item.get(self.digest, {}).get("S")
            digest = Digest(text=stored if isinstance(stored, str) else "")
        return (tier, value, origin, digest)


def _top_level(text: str, operator: str) -> bool:
    """Whether ``operator`` (`` OR `` or `` AND ``) joins terms outside any parentheses."""
    index = text.find(operator)
    while index >= 0:
        if text.count("(", 0, index) == text.count(")", 0, index):
            return True
        index = text.find(operator, index + 1)
    return False


def any_of(*terms: str | None) -> str:
    """``a OR b``, each conjunction in parentheses (DynamoDB refuses ``((...))``)."""
    kept = [t for t in terms if t]
    return " OR ".join(f"({t})" if len(kept) > 1 and _top_level(t, " AND ") else t for t in kept)


def all_of(*terms: str | None) -> str:
    """``a AND b``, each disjunction in parentheses."""
    kept = [t for t in terms if t]
    return " AND ".join(f"({t})" if len(kept) > 1 and _top_level(t, " OR ") else t for t in kept)


def below(
    fields: RankFields,
    ordering: AttributeValue | None,
    origin: AttributeValue | None,
    digest: str | None,
    *,
    prefix: str = "",
) -> Condition:
    """A condition true when the stored item ranks strictly below the given rank fields,
    or when there is no item. ``digest`` is compared only when ``fields.digest`` names
    an attribute; otherwise equal (value, origin) counts as not below.

    The expression and its names depend only on which fields are there, so they are
    built once per such shape (every put of a job has the same one); only the values
    are the write's own."""
    stamped = origin is not None and isinstance(origin.get("S"), str)
    # The shape is looked up by the fields' names, not by ``fields``, whose hash is a
    # Python call (one put in every write).
    expression, names, used = _below_shape(
        fields.value,
        fields.origin,
        fields.digest,
        fields.key,
        ordering is not None,
        stamped,
        digest is not None,
        prefix,
    )
    given = (ordering, origin, None if digest is None else {"S": digest})
    return expression, dict(names), placed_values(used, given)


def placed_values(
    placed: Iterable[tuple[str, int]], given: Sequence[AttributeValue | None]
) -> dict[str, AttributeValue]:
    """The values of a condition whose shape is cached: each placeholder of ``placed``
    with the value ``given`` holds at its index (never None: the shape has a value
    placeholder only for a value there)."""
    values: dict[str, AttributeValue] = {}
    for placeholder, index in placed:
        value = given[index]
        assert value is not None
        values[placeholder] = value
    return values


@functools.lru_cache(maxsize=256)
def _below_shape(
    value: str,
    origin: str | None,
    digest: str | None,
    key: str | None,
    ordered: bool,
    stamped: bool,
    digested: bool,
    prefix: str,
) -> tuple[str, dict[str, str], tuple[tuple[str, int], ...]]:
    """:func:`below`'s expression, names and value placeholders for one shape of fields
    (the callers copy the names: the cached dict is never handed out), each placeholder
    with the field it takes its value from (0 the ordering value, 1 the origin stamp, 2
    the digest)."""
    expression, names, values = _below(
        RankFields(value, origin, digest, key),
        {"N": "0"} if ordered else None,
        {"S": ""} if stamped else None,
        "" if digested else None,
        prefix,
    )
    return (
        expression,
        names,
        tuple((placeholder, "cod".index(placeholder[-1])) for placeholder in values),
    )


def _below(
    fields: RankFields, ordering: Value, origin: Value, digest: str | None, prefix: str
) -> Condition:
    names: dict[str, str] = {}
    values: dict[str, AttributeValue] = {}
    c, o, d, k = f"#{prefix}c", f"#{prefix}o", f"#{prefix}d", f"#{prefix}k"
    names[c] = fields.value
    if ordering is None:
        value_lower = None
        value_equal = f"attribute_not_exists({c})"
    else:
        values[f":{prefix}c"] = ordering
        value_lower = any_of(f"attribute_not_exists({c})", f"{c} < :{prefix}c")
        value_equal = f"{c} = :{prefix}c"
    origin_lower = None
    origin_equal = None
    if fields.origin:
        names[o] = fields.origin
        if origin is not None and isinstance(origin.get("S"), str):
            values[f":{prefix}o"] = origin
            origin_lower = any_of(f"attribute_not_exists({o})", f"{o} < :{prefix}o")
            origin_equal = f"{o} = :{prefix}o"
        else:
            origin_equal = f"attribute_not_exists({o})"
    digest_lower = None
    if fields.digest and digest is not None:
        names[d] = fields.digest
        values[f":{prefix}d"] = {"S": digest}
        digest_lower = all_of(
            origin_equal, any_of(f"attribute_not_exists({d})", f"{d} < :{prefix}d")
        )
    tie = any_of(origin_lower, digest_lower)
    no_item = None
    if ordering is None:
        names[k] = fields.key or fields.value
        no_item = f"attribute_not_exists({k})"
    expression = any_of(no_item, value_lower, all_of(value_equal, tie) if tie else None)
    return pruned(expression, names, values)


def pruned(expression: str, names: dict[str, str], values: dict[str, AttributeValue]) -> Condition:
    """Only the placeholders ``expression`` uses: DynamoDB refuses unused ones."""

    def used(placeholder: str) -> bool:
        return re.search(re.escape(placeholder) + r"(?![A-Za-z0-9_])", expression) is not None

    return (
        expression,
        {k: v for k, v in names.items() if used(k)},
        {k: v for k, v in values.items() if used(k)},
    )


def equal_rank(
    fields: RankFields,
    ordering: AttributeValue | None,
    origin: AttributeValue | None,
    digest: str,
    *,
    prefix: str = "",
) -> Condition:
    """A condition true when the stored item has exactly this rank (fields with a
    digest attribute only: tombstones)."""
    assert fields.digest is not None
    c, o, d = f"#{prefix}c", f"#{prefix}o", f"#{prefix}d"
    names = {c: fields.value, d: fields.digest}
    values: dict[str, AttributeValue] = {f":{prefix}d": {"S": digest}}
    parts = []
    if ordering is None:
        parts.append(f"attribute_not_exists({c})")
    else:
        values[f":{prefix}c"] = ordering
        parts.append(f"{c} = :{prefix}c")
    if fields.origin:
        names[o] = fields.origin
        if origin is not None and isinstance(origin.get("S"), str):
            values[f":{prefix}o"] = origin
            parts.append(f"{o} = :{prefix}o")
        else:
            parts.append(f"attribute_not_exists({o})")
    parts.append(f"{d} = :{prefix}d")
    return pruned(" AND ".join(parts), names, values)
