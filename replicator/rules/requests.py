"""What a conflict rule produces: one conditional write, or a decision not to write."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import msgspec

from replicator.images import Image
from replicator.items import AttributeValue, Item, ItemView, same_item
from replicator.records import Change
from replicator.rules.order import placed_values


class WriteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A PutItem (``item`` set) or DeleteItem (``key`` set), with its condition if any.

    ``item`` is a stream :class:`~replicator.images.Image` when the put writes a change's
    image as the record carried it: the direct path then sends the record's bytes. (A
    frozen msgspec struct: one is built per write, and a frozen dataclass costs several
    microseconds to build.)"""

    op: str
    item: Item | Image | None = None
    key: Item | None = None
    condition: str | None = None
    names: dict[str, str] = msgspec.field(default_factory=dict)
    values: dict[str, AttributeValue] = msgspec.field(default_factory=dict)
    # The item the write may replace, when the condition says "exactly this item" but
    # compares only part of it (:func:`equal_to`, a wide item): the write then asks for
    # the item it replaced, and the writer puts back one that was not this.
    expects: Item | Image | None = None
    # A delete that applies to what ranks at or below its image, on a condition that
    # compares that image only in part (a wide item): the writer puts back an item it
    # returns that ranks above.
    at_or_below: bool = False

    def to_kwargs(self, table: str, *, stream_images: bool = False) -> dict[str, Any]:
        """boto3 keyword arguments for ``put_item``/``delete_item`` on ``table``.

        ``stream_images``: the client takes an :class:`~replicator.images.Image` as the
        ``Item`` (the direct path, :func:`replicator.writers.wire.request_body`); otherwise
        a stream image is decoded into an item here (MalformedImage, a PlanError, when it
        is not well-formed)."""
        kwargs: dict[str, Any] = {"TableName": table}
        if self.op == "put":
            item = self.item
            if type(item) is Image and not stream_images:
                item = item.item
            kwargs["Item"] = item
        else:
            kwargs["Key"] = self.key
        if self.expects is not None or self.at_or_below:
            kwargs["ReturnValues"] = "ALL_OLD"
        if self.condition:
            kwargs["ConditionExpression"] = self.condition
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
            if self.names:
                kwargs["ExpressionAttributeNames"] = self.names
            if self.values:
                kwargs["ExpressionAttributeValues"] = self.values
        return kwargs


@dataclass(frozen=True, slots=True)
class Skip:
    """The rule decided, without writing, that the destination keeps its item."""

    reason: str


class Verdict(StrEnum):
    """What a failed condition meant, when the rule does not write again."""

    LOST = "lost"  # the destination's item ranks above the change: it stays
    UNCHANGED = "unchanged"  # the destination already holds the change's outcome


def holds_outcome(change: Change, existing: Item | None) -> bool:
    """Whether the destination's item is what applying ``change`` leaves there: its new
    image after a put, nothing after a delete."""
    if change.op_is_delete:
        return existing is None
    return (
        existing is not None
        and change.new_image is not None
        and same_item(existing, change.new_image)
    )


def holds_write(request: WriteRequest, existing: Item | None) -> bool:
    """Whether the destination's item is what ``request`` leaves there: its item after a
    put, nothing after a delete. A custom resolver's write need not be the change's image,
    so this, not :func:`holds_outcome`, tells whether a write sent without an answer
    landed."""
    if request.op == "delete":
        return existing is None
    return existing is not None and request.item is not None and same_item(existing, request.item)


# DynamoDB's limits on one expression (ConditionExpression included): 4096 bytes of
# text, and 300 operators and functions in all (AWS, "Expression parameters"; moto
# enforces neither). The names and values an expression substitutes have their own
# limit, 2 MB in all: an item (400 KB at most) always fits there, so only the
# expression's text limits how many of its attributes one condition compares, and the
# operator count limits it most (150 attributes on their own).
MAX_EXPRESSION = 4096
MAX_OPERATORS = 300

_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")
_OPERATOR = re.compile(r"<>|<=|>=|=|<|>|\b(?:AND|OR|NOT|BETWEEN|IN)\b|\b[a-z_]+\s*\(")


@functools.lru_cache(maxsize=256)
def operator_count(expression: str) -> int:
    """How many operators and functions DynamoDB counts in ``expression``: every
    comparison, ``AND``/``OR``/``NOT``/``BETWEEN``/``IN`` and function call (placeholders
    are left out first, so that a name like ``#AND`` is not taken for one)."""
    return len(_OPERATOR.findall(_PLACEHOLDER.sub(" ", expression)))


_DIGITS = "0123456789"
_ALPHANUMERIC = _DIGITS + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _placeholder(index: int) -> str:
    """The ``index``-th shortest placeholder body: a digit, then letters and digits (``0``
    to ``9``, ``00`` to ``9Z``, ...). The other conditions' placeholders start with a
    letter, so the two never collide, and the shortest bodies fit the most comparisons
    in one expression, whatever their names."""
    if index < len(_DIGITS):
        return _DIGITS[index]
    index -= len(_DIGITS)
    tail = ""
    width = 1
    while index >= len(_DIGITS) * len(_ALPHANUMERIC) ** width:
        index -= len(_DIGITS) * len(_ALPHANUMERIC) ** width
        width += 1
    for _ in range(width):
        index, digit = divmod(index, len(_ALPHANUMERIC))
        tail = _ALPHANUMERIC[digit] + tail
    return _DIGITS[index] + tail


def equal_to(
    expected: ItemView,
    *,
    first: Iterable[str] = (),
    unlike: ItemView | None = None,
    room: int = MAX_EXPRESSION,
    operators: int = MAX_OPERATORS,
) -> tuple[str, dict[str, str], dict[str, AttributeValue]]:
    """True while the destination holds ``expected``, as far as a condition of at most
    ``room`` bytes and ``operators`` operators and functions can compare it (less than
    DynamoDB's limits when another condition is joined to it).

    A condition expression cannot say "and no other attribute", so an item that gained
    attributes but kept all of these values also passes. An item with more attributes
    than one expression holds (150: each costs a comparison, and each after the first an
    ``AND``) is compared on those that tell the most, in this order, and on no others:

    * the attributes ``first`` (ranking attributes: ``attribute_not_exists`` for one that
      ``expected`` lacks), so that an item ranked otherwise never passes;
    * the attributes in which ``expected`` differs from ``unlike``, the image about to
      replace it, so that an item which already took (part of) it fails;
    * the others, by name.

    A concurrent change confined to attributes left out then passes the condition: the
    write carries the item it expects (:func:`exact_write`), and the writer finds the
    change in the item the write returns (docs/conflict-rules.md, "Wide items").
    """
    order = list(dict.fromkeys(first))
    if unlike is not None:
        order += sorted(
            name
            for name, value in expected.items()
            if name not in order and not _same_value(unlike.get(name), value)
        )
    shown = set(order)
    order += sorted(name for name in expected if name not in shown)
    given = [expected.get(name) for name in order]
    expression, names, placed = _equal_shape(
        tuple(order), tuple(value is None for value in given), room, operators
    )
    return expression, dict(names), placed_values(placed, given)


@functools.lru_cache(maxsize=256)
def _equal_shape(
    order: tuple[str, ...], absent: tuple[bool, ...], room: int, operators: int
) -> tuple[str, dict[str, str], tuple[tuple[str, int], ...]]:
    """:func:`equal_to`'s expression and names for the attributes ``order`` (those
    ``absent`` compared by ``attribute_not_exists``), with each value placeholder and
    the index in ``order`` of the attribute it takes its value from: built once per
    shape of item (the images of a table mostly share one; the caller copies the
    names, the cached dict is never handed out)."""
    names: dict[str, str] = {}
    placed: list[tuple[str, int]] = []
    clauses: list[str] = []
    # The text is ASCII (placeholders only), so its length in characters is in bytes;
    # each clause is one comparison or function, joined by one AND.
    length = -len(" AND ")
    count = -1
    for index, name in enumerate(order):
        if count + 2 > operators:
            break
        tag = _placeholder(len(names))
        missing = absent[index]
        clause = f"attribute_not_exists(#{tag})" if missing else f"#{tag}=:{tag}"
        if length + len(" AND ") + len(clause) > room:
            if missing:
                continue  # a shorter equality may still fit
            break
        length += len(" AND ") + len(clause)
        count += 2
        clauses.append(clause)
        names[f"#{tag}"] = name
        if not missing:
            placed.append((f":{tag}", index))
    return " AND ".join(clauses), names, tuple(placed)


def _same_value(left: AttributeValue | None, right: AttributeValue) -> bool:
    return left is not None and same_item({"v": left}, {"v": right})


def expecting(expected: ItemView, names: dict[str, str]) -> ItemView | None:
    """``expected`` when a condition naming ``names`` leaves some of its attributes out
    (:attr:`WriteRequest.expects`); None when it compares all of them."""
    compared = set(names.values())
    return None if all(name in compared for name in expected) else expected


def exact_write(
    op: str,
    keys: Item,
    expected: ItemView,
    condition: tuple[str, dict[str, str], dict[str, AttributeValue]],
    item: Item | Image | None = None,
) -> WriteRequest:
    """A put of ``item`` or a delete of ``keys`` that applies only while the destination
    holds ``expected``, on ``condition`` (:func:`equal_to` or a rule's ``exactly``)."""
    expression, names, values = condition
    expects = cast("Item | Image | None", expecting(expected, names))
    if op == "delete":
        return WriteRequest(
            op="delete", key=keys, condition=expression, names=names, values=values, expects=expects
        )
    return WriteRequest(
        op="put", item=item, condition=expression, names=names, values=values, expects=expects
    )


def write_over(
    op: str,
    keys: Item,
    expected: ItemView | None,
    item: Item | Image | None = None,
    *,
    first: Iterable[str] = (),
    unlike: ItemView | None = None,
) -> WriteRequest:
    """A put of ``item`` or a delete of ``keys`` that applies only while the destination
    holds exactly ``expected`` (None: no item), compared by :func:`equal_to` (``first``;
    ``unlike``, by default the item written)."""
    if expected is None:
        absent, names = "attribute_not_exists(#k)", {"#k": next(iter(keys))}
        if op == "delete":
            return WriteRequest(op="delete", key=keys, condition=absent, names=names)
        return WriteRequest(op="put", item=item, condition=absent, names=names)
    same = equal_to(expected, first=first, unlike=item if unlike is None else unlike)
    return exact_write(op, keys, expected, same, item)
