"""The exact-item condition of items of every width DynamoDB allows: it always fits in one
expression, compares the whole item while it fits, and then compares first what tells
the most (docs/conflict-rules.md, "Wide items")."""

from __future__ import annotations

import re

import pytest

from replicator.items import Item
from replicator.rules import OrderedRule
from replicator.rules.requests import MAX_EXPRESSION, equal_to


def wide(width: int, value: str = "x", name: str = "a") -> Item:
    item: Item = {"pk": {"S": "k"}, "ts": {"N": "5"}}
    item.update({f"{name}{index}": {"S": value} for index in range(width)})
    return item


def test_an_item_of_up_to_343_attributes_is_compared_whole_whatever_their_names() -> None:
    for name in ("a", "a_very_long_attribute_name_that_a_placeholder_stands_for_"):
        condition, names, values = equal_to(wide(341, name=name))
        assert len(names) == len(values) == 343 and len(condition) <= MAX_EXPRESSION
    condition, names, _ = equal_to(wide(342))
    assert len(names) == 343 and len(condition) <= MAX_EXPRESSION  # one left out


@pytest.mark.parametrize("width", [300, 2000, 20000])
def test_a_wide_item_is_compared_on_its_rank_then_on_what_the_write_changes(width: int) -> None:
    rule = OrderedRule("last_writer_wins", "ts", "origin", numeric_only=False)
    existing = wide(width)
    image = {**wide(width), "a7": {"S": "y"}, f"a{width - 1}": {"S": "y"}}
    condition, names, values = rule.exactly(existing, unlike=image)
    assert len(condition) <= MAX_EXPRESSION
    placeholders = re.findall(r"#\w+", condition)
    assert len(placeholders) == len(set(placeholders)) == len(names)
    assert set(re.findall(r":\w+", condition)) == set(values)
    compared = [names[placeholder] for placeholder in placeholders]
    assert compared[:4] == ["ts", "origin", f"a{width - 1}", "a7"]
    assert f"attribute_not_exists({placeholders[1]})" in condition  # no stamp: none there
    assert len(compared) == min(width + 3, 341)


def test_a_delete_condition_keeps_room_for_its_rank_comparison() -> None:
    rule = OrderedRule("version", "ts", "origin", numeric_only=True)
    image = wide(2000)
    condition, names, values = rule.not_above(image, {"pk": image["pk"]})
    assert len(condition) <= MAX_EXPRESSION
    assert set(re.findall(r"#\w+", condition)) == set(names)
    assert set(re.findall(r":\w+", condition)) == set(values)
