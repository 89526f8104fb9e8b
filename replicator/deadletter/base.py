"""The port every dead-letter target implements (a file or an SQS queue)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from replicator.deadletter.entry import DeadLetter


@dataclass(frozen=True, slots=True)
class Claimed:
    """A dead letter taken out for a replay, with what the target needs to settle it."""

    letter: DeadLetter
    receipt: str


class DeadLetterTarget(Protocol):
    """Durable storage for failed changes.

    ``put`` returns only once the letter is stored durably (a file is fsynced, a queue
    acknowledged the send); if it cannot, it raises DeadLetterUnavailable and the caller
    must not treat the change as handled.
    """

    description: str

    def put(self, letter: DeadLetter) -> None: ...

    def claim_all(self) -> Iterator[Claimed]:
        """Take every stored letter out for a replay, one at a time."""
        ...

    def settle(self, claimed: Claimed, *, replayed: bool) -> None:
        """Remove a replayed letter for good, or keep a failed one (put it back)."""
        ...
