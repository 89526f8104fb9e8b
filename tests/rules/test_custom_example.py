"""The example resolver in docs/conflict-rules.md does what its docstring says when the
custom rule plans with it: a reader who copies it gets a working resolver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replicator.decode import decode
from replicator.rules.custom import CustomRule
from replicator.rules.requests import Skip
from tests.support.records import put, remove

PAGE = Path(__file__).parents[2] / "docs" / "conflict-rules.md"


def documented_resolver() -> Any:
    text = PAGE.read_text().split("For example (`my_module.py`", 1)[1]
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    code = "\n".join(line.removeprefix("  ") for line in block.splitlines())
    namespace: dict[str, Any] = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    return namespace["decide"]


def test_the_documented_resolver_keeps_the_higher_priority_and_applies_deletes() -> None:
    rule = CustomRule(documented_resolver())
    existing = {"pk": {"S": "k"}, "priority": {"N": "5"}}
    assert isinstance(rule.plan(decode(put("k", 1, priority=3)), existing), Skip)
    higher = rule.plan(decode(put("k", 2, priority=7)), existing)
    assert getattr(higher, "item", None) == {"pk": {"S": "k"}, "priority": {"N": "7"}}
    new = rule.plan(decode(put("k", 3, priority=1)), None)
    assert getattr(new, "item", None) == {"pk": {"S": "k"}, "priority": {"N": "1"}}
    delete = rule.plan(decode(remove("k", 4, priority=1)), existing)
    assert getattr(delete, "op", None) == "delete"
