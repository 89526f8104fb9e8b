"""What a conflict rule produces: one conditional write, or a decision not to write."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from replicator.exceptions import PlanError
from replicator.images import Image
from replicator.items import AttributeValue, Item, ItemView, same_item
from replicator.records import Change


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


# DynamoDB's limit on the length of one condition expression.
_MAX_EXPRESSION = 4096


def equals_condition(
    expected: ItemView,
) -> tuple[str, dict[str, str], dict[str, AttributeValue]]:
    """True while every attribute of ``expected`` holds its value at the destination.

    A condition expression cannot say "and no other attribute", so an item that gained
    attributes but kept all of these values also passes.
    """
    names: dict[str, str] = {}
    values: dict[str, AttributeValue] = {}
    clauses = []
    for index, (name, value) in enumerate(sorted(expected.items())):
        names[f"#a{index}"] = name
        values[f":a{index}"] = value
        clauses.append(f"#a{index} = :a{index}")
    expression = " AND ".join(clauses)
    if len(expression) > _MAX_EXPRESSION:
        raise PlanError(
            f"the item has {len(expected)} attributes: too many to compare in one condition "
            "expression (4 KB)"
        )
    return expression, names, values


def as_much_as_fits(
    expected: ItemView, first: Iterable[str]
) -> tuple[str, dict[str, str], dict[str, AttributeValue]]:
    """:func:`equals_condition` on the attributes ``first`` (the key), then on as many
    others, by name, as one condition expression holds (about 240 in all): an item with
    more attributes is compared on those only."""
    ordered = [name for name in first if name in expected]
    ordered += sorted(name for name in expected if name not in ordered)
    names: dict[str, str] = {}
    values: dict[str, AttributeValue] = {}
    expression = ""
    for index, name in enumerate(ordered):
        clause = f"#a{index} = :a{index}"
        longer = f"{expression} AND {clause}" if expression else clause
        if len(longer) > _MAX_EXPRESSION:
            break
        expression = longer
        names[f"#a{index}"] = name
        values[f":a{index}"] = expected[name]
    return expression, names, values
