"""``last_writer_wins`` and ``version``: the item with the greater ordering value wins.

Both rules order items by one attribute the application maintains (a timestamp or a
version number) and break ties with the origin attribute when loop prevention names
one, so two regions that wrote the same timestamp still converge on the same image.
The comparison runs inside DynamoDB as a ConditionExpression, so a concurrent write
at the destination can never be overwritten by an older one.

The total order, from lowest to highest, is:

1. items without the ordering attribute (older than any item that has it);
2. items with it, by its value (numbers numerically, strings lexically);
3. on equal values, items without an origin, then by origin value.

A put applies when the incoming image is not lower than the destination's item; an
equal image applies again, which makes replays harmless. A delete applies when the
destination's item is not higher than the deleted image (the REMOVE's old image), so
a delete never removes a newer item written elsewhere.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from replicator.exceptions import PlanError
from replicator.items import AttributeValue, Item, canonical_number
from replicator.records import Change, Event
from replicator.rules.requests import Skip, WriteRequest, holds_outcome

_COMPARABLE = ("N", "S")

# An image's exact place in a rule's order (see OrderedRule.order).
Order = tuple[object, ...]


class OrderedRule:
    reads_existing = False

    def __init__(
        self, name: str, attribute: str, origin_attribute: str | None, numeric_only: bool
    ) -> None:
        self.name = name
        self.attribute = attribute
        self.origin_attribute = origin_attribute
        self._types = ("N",) if numeric_only else _COMPARABLE

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        image = change.image
        if change.event is Event.REMOVE:
            if image is None:
                raise PlanError(
                    f"REMOVE without OldImage cannot be checked under {self.name}; "
                    "the stream view type must be NEW_AND_OLD_IMAGES"
                )
            condition, names, values = self._not_higher_than(image)
            return WriteRequest(
                op="delete", key=change.keys, condition=condition, names=names, values=values
            )
        assert image is not None  # decode guarantees a NewImage for puts
        condition, names, values = self._not_higher_than(image)
        return WriteRequest(op="put", item=image, condition=condition, names=names, values=values)

    def _not_higher_than(
        self, image: Item
    ) -> tuple[str, dict[str, str], dict[str, AttributeValue]]:
        """A condition true when the destination's item ranks at or below ``image``."""
        names = {"#c": self.attribute}
        ordering = image.get(self.attribute)
        if ordering is None:
            return "attribute_not_exists(#c)", names, {}
        kind = next(iter(ordering))
        if kind not in self._types:
            raise PlanError(
                f"{self.name}: attribute {self.attribute!r} is of type {kind}; "
                f"expected {' or '.join(self._types)}"
            )
        values: dict[str, AttributeValue] = {":c": ordering}
        if not self.origin_attribute:
            return "attribute_not_exists(#c) OR #c <= :c", names, values
        names["#o"] = self.origin_attribute
        origin = image.get(self.origin_attribute)
        if origin is None:
            tie = "attribute_not_exists(#o)"
        else:
            values[":o"] = origin
            tie = "(attribute_not_exists(#o) OR #o <= :o)"
        return f"attribute_not_exists(#c) OR #c < :c OR (#c = :c AND {tie})", names, values

    def rank(self, image: Item | None) -> tuple[int, object, str]:
        """A readable order key of an image (tier, ordering value, origin), for logs and
        reports; :meth:`order` is the exact one the squash decides with."""
        if image is None:
            return (0, 0, "")
        ordering = image.get(self.attribute)
        origin = ""
        if self.origin_attribute and (stamp := image.get(self.origin_attribute)) is not None:
            origin = str(stamp.get("S", ""))
        if ordering is None:
            return (0, 0, origin)
        kind, value = next(iter(ordering.items()))
        if kind == "N":
            try:
                return (1, Decimal(value), origin)
            except (InvalidOperation, TypeError):
                return (1, Decimal(0), origin)
        return (2, str(value), origin)

    def order(self, image: Item | None) -> Order | None:
        """The image's place in the order, exactly as the condition compares it.

        ``order(a) <= order(b)`` holds when the condition planned for ``b`` passes against
        ``a`` at the destination, for orders of the same ordering type (``order[0]``: 0 no
        ordering attribute, 1 a number, 2 a string); DynamoDB compares no number with a
        string, so orders of two types (both non-zero) are not comparable. None when no
        write can be planned or sent for the image (no image, an ordering attribute of the
        wrong type, a number DynamoDB would refuse): such a change is dead-lettered, not
        compared. Numbers compare exactly (Decimal comparison never rounds).
        """
        if image is None:
            return None
        ordering = image.get(self.attribute)
        if ordering is None:
            return (0,)  # the condition then ignores the origin: attribute_not_exists(#c)
        kind, value = next(iter(ordering.items()))
        if kind not in self._types or type(value) is not str:
            return None
        tie: tuple[object, ...] = ()
        if self.origin_attribute:
            stamp = image.get(self.origin_attribute)
            if stamp is None:
                tie = (0,)  # attribute_not_exists(#o): below any origin, even ""
            elif type(stamp.get("S")) is str:
                tie = (1, stamp["S"])
            else:
                return None  # a stamp that is not a string orders by no documented rule
        if kind == "N":
            try:
                return (1, Decimal(canonical_number(value)), *tie)
            except ValueError:
                return None
        return (2, value, *tie)

    def shows_applied(self, change: Change, existing: Item | None) -> bool:
        """A put whose very image is there, or a delete that finds the item gone or ranked
        below the image it deleted, has taken effect (a delete's condition fails only on a
        higher rank, so the lower one can only be seen by a retry racing a rewrite)."""
        if holds_outcome(change, existing):
            return True
        if not change.op_is_delete:
            return False
        found, deleted = self.order(existing), self.order(change.image)
        if found is None or deleted is None:
            return False
        comparable = found[0] == deleted[0] or found[0] == 0
        return comparable and found < deleted

    def explain_loss(self, change: Change, existing: Item | None) -> str:
        verb = "delete" if change.event is Event.REMOVE else "put"
        return (
            f"{self.name}: the destination's item ({self._shown(existing)}) ranks above the "
            f"{verb}'s image ({self._shown(change.image)})"
        )

    def _shown(self, image: Item | None) -> str:
        if image is None:
            return "no item"
        names = [self.attribute] + ([self.origin_attribute] if self.origin_attribute else [])
        parts = []
        for name in names:
            value = image.get(name)
            parts.append(f"{name}={next(iter(value.values())) if value else '(absent)'}")
        return ", ".join(parts)
