"""``overwrite``: the newest change in stream order is written unconditionally.

This is what the archived Java cross-region replicator did. It is right for one-way
replication from a DynamoDB stream, whose records arrive in order per item; it is
wrong wherever two writers can touch one item, which is what the other rules are for.
"""

from __future__ import annotations

from replicator.items import Item
from replicator.records import Change, Event
from replicator.rules.requests import Skip, Verdict, WriteRequest, holds_outcome


class OverwriteRule:
    name = "overwrite"
    reads_existing = False

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        if change.event is Event.REMOVE:
            return WriteRequest(op="delete", key=change.keys)
        return WriteRequest(op="put", item=change.new)

    def shows_applied(self, change: Change, existing: Item | None) -> bool:
        return holds_outcome(change, existing)

    def reconsider(self, change: Change, existing: Item | None) -> WriteRequest | Verdict:
        return Verdict.LOST

    def explain_loss(self, change: Change, existing: Item | None) -> str:
        return "overwrite writes unconditionally and never loses"
