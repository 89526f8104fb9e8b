"""Stage 4: conflict rules, which turn a change into a conditional write.

``rule_for`` builds the rule a destination uses; ``squash_order`` tells the buffer
which of two changes to one item is the newer one.
"""

from __future__ import annotations

from collections.abc import Callable

from replicator.config.model import ConflictConfig, ConflictPolicyName
from replicator.records import Change
from replicator.rules.base import ConflictRule
from replicator.rules.custom import CustomRule, load_resolver
from replicator.rules.ordered import OrderedRule
from replicator.rules.overwrite import OverwriteRule
from replicator.rules.requests import PlanError, Skip, Verdict, WriteRequest

__all__ = [
    "ConflictRule",
    "CustomRule",
    "OrderedRule",
    "OverwriteRule",
    "PlanError",
    "Skip",
    "Verdict",
    "WriteRequest",
    "rule_for",
    "squash_order",
]

Supersedes = Callable[[Change, Change], bool]


def rule_for(conflict: ConflictConfig, origin_attribute: str | None) -> ConflictRule:
    policy = conflict.policy
    if policy is ConflictPolicyName.LAST_WRITER_WINS:
        assert conflict.timestamp_attribute
        return OrderedRule(
            "last_writer_wins", conflict.timestamp_attribute, origin_attribute, numeric_only=False
        )
    if policy is ConflictPolicyName.VERSION:
        assert conflict.version_attribute
        return OrderedRule("version", conflict.version_attribute, origin_attribute, True)
    if policy is ConflictPolicyName.CUSTOM:
        assert conflict.resolver
        return CustomRule(load_resolver(conflict.resolver))
    return OverwriteRule()


def in_stream_order(newer: Change, older: Change) -> bool:
    """DynamoDB Streams deliver each item's changes in order: a later record always wins."""
    return True


def squash_order(rule: ConflictRule, ordered_stream: bool) -> Supersedes:
    """How the buffer picks the newest of two changes to one key.

    On a DynamoDB stream the later record is the newer change. Kinesis Data Streams for
    DynamoDB may deliver an item's changes out of order, so there the rule's own order
    decides (a delete ranks just above the image it deleted), then creation time.
    """
    if ordered_stream:
        return in_stream_order
    if isinstance(rule, OrderedRule):
        ordered = rule

        def by_rule(newer: Change, older: Change) -> bool:
            return _rank(ordered, newer) >= _rank(ordered, older)

        return by_rule

    def by_creation_time(newer: Change, older: Change) -> bool:
        return (newer.created_us, newer.position) >= (older.created_us, older.position)

    return by_creation_time


def _rank(rule: OrderedRule, change: Change) -> tuple[tuple[object, ...], int, int, int]:
    deleted = 1 if change.op_is_delete else 0
    return (rule.rank(change.image), deleted, change.created_us, change.position)
