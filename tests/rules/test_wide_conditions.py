"""The exact-item condition of items of every width DynamoDB allows: it always fits in one
expression, compares the whole item while it fits, and then compares first what tells
the most (docs/conflict-rules.md, "Wide items")."""

from __future__ import annotations

import re

import pytest

from replicator.items import Item
from replicator.rules import OrderedRule
from replicator.rules.requests import (
    MAX_EXPRESSION,
    MAX_OPERATORS,
    equal_to,
    operator_count,
    write_over,
)


def wide(width: int, value: str = "x", name: str = "a") -> Item:
    item: Item = {"pk": {"S": "k"}, "ts": {"N": "5"}}
    item.update({f"{name}{index}": {"S": value} for index in range(width)})
    return item


def within_limits(condition: str) -> None:
    """Both of DynamoDB's limits on one expression (moto enforces neither)."""
    assert len(condition.encode()) <= MAX_EXPRESSION
    assert operator_count(condition) <= MAX_OPERATORS


def test_operators_and_functions_are_counted_as_dynamodb_counts_them() -> None:
    condition = "attribute_not_exists(#k) OR (#c = :c AND NOT #o <> :o) OR size(#AND) >= :IN"
    assert operator_count(condition) == 9


def test_an_item_of_up_to_150_attributes_is_compared_whole_whatever_their_names() -> None:
    for name in ("a", "a_very_long_attribute_name_that_a_placeholder_stands_for_"):
        condition, names, values = equal_to(wide(148, name=name))
        assert len(names) == len(values) == 150
        assert operator_count(condition) == 299
        within_limits(condition)
    condition, names, _ = equal_to(wide(149))
    assert len(names) == 150  # one left out
    within_limits(condition)


@pytest.mark.parametrize("width", [0, 1, 140, 148, 149, 300, 341, 342, 2000, 20000])
def test_every_condition_of_every_width_keeps_to_both_limits(width: int) -> None:
    keys: Item = {"pk": {"S": "k"}}
    stamped = {**wide(width), "origin": {"S": "us-east-1"}}
    changed = {**wide(width, value="y"), "origin": {"S": "eu-west-1"}}
    for rule in (
        OrderedRule("last_writer_wins", "ts", "origin", numeric_only=False),
        OrderedRule("version", "ts", None, numeric_only=True),
    ):
        for item in (wide(width), stamped, {**wide(width), "ts": {"S": "later"}}):
            if rule.origin_attribute is None and "ts" in item and "S" in item["ts"]:
                continue
            conditions = [
                rule.exactly(item),
                rule.exactly(item, unlike=changed),
                rule.not_above(item, keys),
                rule.or_exactly(rule.below(item, keys), item),
                rule.or_exactly(rule.below(item, keys), item, whole=True),
                rule.below(item, keys),
            ]
            for condition, names, values in conditions:
                within_limits(condition)
                assert set(re.findall(r"#\w+", condition)) == set(names)
                assert set(re.findall(r":\w+", condition)) == set(values)
    for op, expected, item in (("put", stamped, changed), ("delete", stamped, None)):
        request = write_over(op, keys, expected, item, first=keys)
        assert request.condition is not None
        within_limits(request.condition)
        assert (request.expects is None) == (width <= 147)


def test_a_delete_compared_beside_its_rank_is_compared_whole_up_to_its_room() -> None:
    rule = OrderedRule("version", "ts", "origin", numeric_only=True)
    keys: Item = {"pk": {"S": "k"}}
    rank = rule.below(wide(0), keys)[0]
    room = MAX_OPERATORS - operator_count(rank) - 1  # the OR
    fits = (room + 1) // 2 - 3  # n clauses cost 2n - 1; pk, ts and no origin besides
    _, names, _ = rule.not_above(wide(fits), keys)
    assert set(names.values()) >= set(wide(fits))
    condition, names, _ = rule.not_above(wide(fits + 1), keys)
    assert not set(names.values()) >= set(wide(fits + 1))
    within_limits(condition)
    too_wide = rule.below(wide(fits + 1), keys)
    assert rule.or_exactly(too_wide, wide(fits + 1), whole=True) == too_wide


@pytest.mark.parametrize("width", [300, 2000, 20000])
def test_a_wide_item_is_compared_on_its_rank_then_on_what_the_write_changes(width: int) -> None:
    rule = OrderedRule("last_writer_wins", "ts", "origin", numeric_only=False)
    existing = wide(width)
    image = {**wide(width), "a7": {"S": "y"}, f"a{width - 1}": {"S": "y"}}
    condition, names, values = rule.exactly(existing, unlike=image)
    within_limits(condition)
    placeholders = re.findall(r"#\w+", condition)
    assert len(placeholders) == len(set(placeholders)) == len(names)
    assert set(re.findall(r":\w+", condition)) == set(values)
    compared = [names[placeholder] for placeholder in placeholders]
    assert compared[:4] == ["ts", "origin", f"a{width - 1}", "a7"]
    assert f"attribute_not_exists({placeholders[1]})" in condition  # no stamp: none there
    assert len(compared) == min(width + 3, 150)


def test_a_delete_condition_keeps_room_for_its_rank_comparison() -> None:
    rule = OrderedRule("version", "ts", "origin", numeric_only=True)
    image = wide(2000)
    condition, names, values = rule.not_above(image, {"pk": image["pk"]})
    within_limits(condition)
    assert set(re.findall(r"#\w+", condition)) == set(names)
    assert set(re.findall(r":\w+", condition)) == set(values)
