"""The example resolver in docs/conflict-rules.md does what its docstring says when the
custom rule plans with it: a reader who copies it gets a working resolver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator.decode import decode
from replicator.exceptions import ResolverFailed
from replicator.rules.custom import CustomRule
from replicator.rules.requests import Skip
from tests.support.records import daemon_record, put, remove, stream_record

PAGE = Path(__file__).parents[2] / "docs" / "conflict-rules.md"


def documented_rule() -> CustomRule:
    text = PAGE.read_text().split("For example (`my_module.py`", 1)[1]
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    code = "\n".join(line.removeprefix("  ") for line in block.splitlines())
    namespace: dict[str, Any] = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    return CustomRule(namespace["decide"])


def written(planned: Any) -> Any:
    assert not isinstance(planned, Skip), planned
    return planned.item if planned.op == "put" else "delete"


EXISTING = {"pk": {"S": "k"}, "priority": {"N": "5"}}


@pytest.mark.parametrize(
    ("priority", "applied"),
    [(3, False), (7, True), (5, True), ("5.5", True), ("4.99", False), ("1E+1", True)],
)
def test_the_documented_resolver_keeps_the_higher_priority(
    priority: int | str, applied: bool
) -> None:
    change = decode(put("k", 1, priority={"N": str(priority)}))
    planned = documented_rule().plan(change, EXISTING)
    if applied:
        assert written(planned) == {"pk": {"S": "k"}, "priority": {"N": str(priority)}}
    else:
        assert isinstance(planned, Skip)


def test_the_documented_resolver_applies_inserts_deletes_and_unranked_items() -> None:
    rule = documented_rule()
    new = {"pk": {"S": "k"}, "priority": {"N": "1"}}
    insert = stream_record("INSERT", {"pk": {"S": "k"}}, new, seq=1)
    assert written(rule.plan(decode(daemon_record(insert, 1)), None)) == {
        "pk": {"S": "k"},
        "priority": {"N": "1"},
    }
    assert written(rule.plan(decode(remove("k", 2, priority=1)), EXISTING)) == "delete"
    # Without a priority on either side, 0 against 0: the change applies.
    assert written(rule.plan(decode(put("k", 3)), {"pk": {"S": "k"}})) == {"pk": {"S": "k"}}
    # An incoming item without one ranks 0: below the destination's 5.
    assert isinstance(rule.plan(decode(put("k", 4)), EXISTING), Skip)


def test_a_priority_that_is_no_number_raises_as_the_docs_say() -> None:
    with pytest.raises(ResolverFailed):
        documented_rule().plan(decode(put("k", 1, priority={"S": "high"})), EXISTING)
