"""The contract every conflict rule keeps."""

from __future__ import annotations

from typing import Protocol

from replicator.items import Item
from replicator.records import Change
from replicator.rules.requests import Skip, Verdict, WriteRequest


class ConflictRule(Protocol):
    """Turns a change into a write that the destination applies atomically, or a Skip.

    Rules never read and then write on the strength of what they read: the condition
    travels with the write and DynamoDB evaluates it against the item as it is at that
    moment. Only the custom rule reads first (``reads_existing``), and it then makes its
    write conditional on the item still being exactly what it read.
    """

    name: str
    reads_existing: bool

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        """The write for ``change`` (``existing`` is given only when ``reads_existing``)."""
        ...

    def shows_applied(self, change: Change, existing: Item | None) -> bool:
        """Whether ``existing``, the item a failed condition found, is this change's own
        outcome: an earlier attempt landed although its answer never arrived."""
        ...

    def reconsider(self, change: Change, existing: Item | None) -> WriteRequest | Verdict:
        """After a failed condition: the change lost to ``existing``, or the destination
        already holds it, or a write to send instead (a condition can be stricter than
        the rule's order, which only the item that came back can settle)."""
        ...

    def explain_loss(self, change: Change, existing: Item | None) -> str:
        """Why the item at the destination won, for the record of lost conflicts."""
        ...
