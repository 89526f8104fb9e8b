"""``last_writer_wins`` and ``version``: the item that ranks higher wins.

Both rules order items by one attribute the application maintains (a timestamp or a
version number), then by the origin stamp when loop prevention names one, then by the
image's digest: the total order of :mod:`replicator.rules.order`, the same in
:meth:`OrderedRule.rank`, in every condition the writers send, in the squash of
out-of-order streams and in the tools. The comparison runs inside DynamoDB as a
ConditionExpression, so a concurrent write at the destination can never be replaced by
a lower-ranked one.

* A put applies onto no item, or onto an item that ranks below its image on (value,
  origin); when the condition fails, :meth:`OrderedRule.reconsider` looks at the item
  that came back: the same image means the destination already holds the change
  (``unchanged``), an item ranking below it only by the digest (or by a value of
  another type, which DynamoDB does not compare) is replaced on the condition that it
  is still exactly that item (as much of it as one condition compares:
  :meth:`OrderedRule.exactly`), and anything else won.
* A delete ranks just above the image it deleted (the REMOVE's old image): it applies
  onto no item, an item ranking below that image, or that very image, and never
  removes an item that ranks above it.
* Active-active: a delete of an image stamped by the job's own region or by the
  destination's (its ``peers``) applies only while the destination still holds that
  very image. Such an image went straight from one of the two regions to the other, so
  anything else the destination holds was written there after it (a delete there and
  a re-creation at a lower version, say): newer, whatever its rank. A delete carries
  no stamp, so this is also what ends the echo of a delete: a job reading the delete
  another region's replicator made here sends it back, and it must not remove what
  that region wrote since.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from replicator.exceptions import MalformedImage, PlanError
from replicator.items import (
    AttributeValue,
    Item,
    ItemView,
    canonical_number,
    describe_field,
    same_item,
)
from replicator.records import Change, Event
from replicator.rules.order import (
    ORDERED_TYPES,
    Condition,
    OpRank,
    Rank,
    RankFields,
    any_of,
    below,
    image_digest,
    pruned,
)
from replicator.rules.requests import (
    MAX_EXPRESSION,
    MAX_OPERATORS,
    Skip,
    Verdict,
    WriteRequest,
    equal_to,
    exact_write,
    expecting,
    holds_outcome,
    operator_count,
    write_over,
)


@dataclass(frozen=True, slots=True)
class Peers:
    """The origin stamps of the job's own region and of the destination's: the images
    whose deletes remove only that very image (see the module's docstring)."""

    stamps: frozenset[str] = frozenset()  # a mesh: the two regions' stamps
    any_stamp: bool = False  # a pair: every stamp is one of the two regions'

    def include(self, stamp: str | None) -> bool:
        if stamp is None:
            return False
        return self.any_stamp or stamp in self.stamps


class OrderedRule:
    reads_existing = False

    def __init__(
        self,
        name: str,
        attribute: str,
        origin_attribute: str | None,
        numeric_only: bool,
        peers: Peers | None = None,
    ) -> None:
        """``peers``: the stamps of the job's and the destination's regions, for deletes
        (see the module's docstring); None outside active-active."""
        self.name = name
        self.attribute = attribute
        self.origin_attribute = origin_attribute
        self.peers = peers if origin_attribute else None
        self._types = ("N",) if numeric_only else ORDERED_TYPES
        self.fields = RankFields(attribute, origin_attribute, types=self._types)
        # The attributes an item ranks by, which a wide item's conditions compare first.
        self.ranking = [attribute] + ([origin_attribute] if origin_attribute else [])
        self._keyed: dict[str, RankFields] = {}

    # -- the order ------------------------------------------------------------------------

    def rank(self, image: ItemView | None) -> Rank:
        """The image's place in the total order (``NO_ITEM`` for no item)."""
        return self.fields.rank(image)

    def order(self, image: ItemView | None) -> Rank | None:
        """The image's rank when a write can be planned and sent for it; None otherwise.

        None for no image, an ordering attribute of the wrong type, a number DynamoDB would
        refuse, or an origin stamp that is not a string: such a change is dead-lettered or
        written on its own, never compared by the squash. Numbers compare exactly (Decimal
        comparison never rounds). None too for an image whose ranking attributes are
        malformed (it is dead-lettered when written).
        """
        if image is None:
            return None
        try:
            return self._order(image)
        except MalformedImage:
            return None

    def _order(self, image: ItemView) -> Rank | None:
        ordering = image.get(self.attribute)
        if ordering is not None:
            kind, value = next(iter(ordering.items()))
            if kind not in self._types or type(value) is not str:
                return None
            if kind == "N":
                try:
                    canonical_number(value)
                except ValueError:
                    return None
        if self.origin_attribute:
            stamp = image.get(self.origin_attribute)
            if stamp is not None and type(stamp.get("S")) is not str:
                return None
        return self.rank(image)

    def op_rank(self, change: Change) -> OpRank:
        """A change's place among operations: a delete just above the image it deleted."""
        return (self.rank(change.ranked), 1 if change.op_is_delete else 0)

    # -- conditions -----------------------------------------------------------------------

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        if change.event is Event.REMOVE:
            image = change.old
            if image is None:
                raise PlanError(
                    f"REMOVE without OldImage cannot be checked under {self.name}; "
                    "the stream view type must be NEW_AND_OLD_IMAGES"
                )
            if self.deletes_only_its_image(change):
                try:
                    return exact_write("delete", change.keys, image, self.exactly(image))
                except MalformedImage:  # cannot be read whole: planned as any delete is
                    pass
            condition, names, values = self.not_above(image, change.keys)
            try:
                partial = expecting(image, names) is not None
            except MalformedImage:  # compared on (value, origin) only: nothing to put back
                partial = False
            return WriteRequest(
                op="delete",
                key=change.keys,
                condition=condition,
                names=names,
                values=values,
                at_or_below=partial,
            )
        image = change.new
        assert image is not None  # decode guarantees a NewImage for puts
        condition, names, values = self.below(image, change.keys)
        return WriteRequest(op="put", item=image, condition=condition, names=names, values=values)

    def deletes_only_its_image(self, change: Change) -> bool:
        """A delete of an image one of the two regions wrote (``peers``): it applies only
        while the destination holds that image (the module's docstring says why)."""
        if self.peers is None or not change.op_is_delete or change.ranked is None:
            return False
        assert self.origin_attribute is not None
        try:
            stamp = change.ranked.get(self.origin_attribute)
        except MalformedImage:
            return False
        text = stamp.get("S") if stamp is not None else None
        return self.peers.include(text if isinstance(text, str) else None)

    def below(self, image: ItemView, keys: Item) -> Condition:
        """True when the destination holds no item, or one ranking below ``image`` on
        (value, origin)."""
        ordering = image.get(self.attribute)
        self._check_type(ordering)
        return below(
            self.keyed_fields(keys),
            ordering,
            image.get(self.origin_attribute) if self.origin_attribute else None,
            None,
        )

    def keyed_fields(self, keys: Item) -> RankFields:
        """The rank fields, with a key attribute to say "no item" by."""
        name = next(iter(keys))
        fields = self._keyed.get(name)
        if fields is None:
            fields = self._keyed[name] = replace(self.fields, key=name)
        return fields

    def not_above(self, image: ItemView, keys: Item) -> Condition:
        """True when the destination holds no item, one ranking below ``image`` on (value,
        origin), or ``image`` itself: where a delete of ``image`` applies.

        "``image`` itself" is :meth:`exactly` in the room the rest leaves: for an item
        with more attributes than that compares, an item tying with ``image`` on (value,
        origin) and on every attribute compared."""
        return self.or_exactly(self.below(image, keys), image)

    def or_exactly(self, condition: Condition, item: ItemView, *, whole: bool = False) -> Condition:
        """``condition``, or the destination holds ``item`` (:meth:`exactly`, in the room
        ``condition`` leaves in one expression: bytes, and operators with the ``OR``).

        ``whole``: only when that compares ``item`` whole; otherwise ``condition`` alone,
        for a caller that cannot put back an item it removed unseen."""
        expression, names, values = condition
        room = MAX_EXPRESSION - len(expression.encode()) - len(" OR ()()")
        operators = MAX_OPERATORS - operator_count(expression) - (1 if expression else 0)
        try:
            same, same_names, same_values = self.exactly(item, room=room, operators=operators)
        except MalformedImage:
            # An old image is never forwarded, and the intake leaves it unchecked: one that
            # cannot be read whole is compared on the ranking attributes it can read.
            return condition if whole else self._not_above_on_rank(item, condition)
        if whole and expecting(item, same_names) is not None:
            return condition
        return any_of(expression, same), {**names, **same_names}, {**values, **same_values}

    def exactly(
        self,
        item: ItemView,
        *,
        unlike: ItemView | None = None,
        room: int = MAX_EXPRESSION,
        operators: int = MAX_OPERATORS,
    ) -> Condition:
        """True while the destination holds ``item``: every attribute of it with its value,
        and no ranking field that it lacks (a condition cannot exclude every other
        attribute, so an item that only gained attributes that do not rank it passes).

        An item with more attributes than one condition compares (150, fewer beside
        another condition) is compared on its ranking fields first, then on the
        attributes in which it differs from ``unlike`` (the image about to replace it),
        then on as many others as fit (:func:`~replicator.rules.requests.equal_to`)."""
        return equal_to(item, first=self.ranking, unlike=unlike, room=room, operators=operators)

    def _not_above_on_rank(self, image: ItemView, condition: Condition) -> Condition:
        """Where a delete of ``image`` applies when ``image`` cannot be read whole (a
        malformed attribute of an old image): ``condition`` (no item, or one ranking
        below it), or one tying with it on (value, origin), whatever its digest."""
        expression, names, values = condition
        names, values = {**names, "#c": self.attribute}, dict(values)
        ordering = image.get(self.attribute)
        if ordering is None:
            equal = "attribute_not_exists(#c)"
        else:
            equal, values[":c"] = "#c = :c", ordering
        if self.origin_attribute:
            names["#o"] = self.origin_attribute
            origin = image.get(self.origin_attribute)
            if origin is not None and isinstance(origin.get("S"), str):
                equal, values[":o"] = equal + " AND #o = :o", origin
            else:
                equal += " AND attribute_not_exists(#o)"
        return pruned(any_of(expression, equal), names, values)

    def _check_type(self, ordering: AttributeValue | None) -> None:
        """PlanError when ``ordering``, an image's ordering attribute, is of a type the
        rule does not order by."""
        if ordering is None:
            return
        kind = next(iter(ordering))
        if kind not in self._types:
            raise PlanError(
                f"{self.name}: attribute {self.attribute!r} is of type {kind}; "
                f"expected {' or '.join(self._types)}"
            )

    # -- after a failed condition ---------------------------------------------------------

    def reconsider(self, change: Change, existing: Item | None) -> WriteRequest | Verdict:
        """What a failed condition means, from the item that made it fail."""
        image = change.ranked
        if image is None:
            return Verdict.LOST
        if change.op_is_delete:
            if existing is None:
                return Verdict.UNCHANGED
            if self.rank(existing) > self.rank(image):
                return Verdict.LOST
            if self.deletes_only_its_image(change):
                return Verdict.UNCHANGED  # written there after the image it deleted
            return write_over("delete", change.keys, existing, first=self.ranking, unlike=image)
        if existing is not None and same_item(existing, image):
            return Verdict.UNCHANGED
        if self.rank(existing) >= self.rank(image):
            return Verdict.LOST
        return write_over("put", change.keys, existing, image, first=self.ranking)

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
        # Below on (value, origin), which the delete's condition compares: an item that
        # ties there and ranks below only by its digest is for reconsider() to delete.
        return comparable and found[:3] < deleted[:3]

    # -- explanations ---------------------------------------------------------------------

    def explain_loss(self, change: Change, existing: Item | None) -> str:
        verb = "delete" if change.event is Event.REMOVE else "put"
        held, image = self.shown_apart(existing, change.image)
        return (
            f"{self.name}: the destination's item ({held}) ranks above the {verb}'s image ({image})"
        )

    def shown_apart(self, winner: ItemView | None, loser: ItemView | None) -> tuple[str, str]:
        """The winner and the loser of a comparison as :meth:`shown` shows them, with
        their digests when they tie on (value, origin): the digest decided then, and the
        ranking fields alone would read the same twice."""
        tie = (
            winner is not None
            and loser is not None
            and self.rank(winner)[:3] == self.rank(loser)[:3]
        )
        return self.shown(winner, tie), self.shown(loser, tie)

    def shown(self, image: ItemView | None, with_digest: bool = False) -> str:
        """The fields that rank ``image``, as log lines and conflict entries show them."""
        if image is None:
            return "no item"
        names = [self.attribute] + ([self.origin_attribute] if self.origin_attribute else [])
        parts = [describe_field(name, image.get(name)) for name in names]
        if with_digest:
            parts.append(f"digest={image_digest(image)[:12]}")
        return ", ".join(parts)
