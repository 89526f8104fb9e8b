"""The port every dead-letter target implements (a file or an SQS queue)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

from replicator.deadletter.entry import DeadLetter


@dataclass(frozen=True, slots=True)
class Claimed:
    """A dead letter taken out for a replay, with what the target needs to settle it;
    ``raw`` is the letter exactly as stored, for a target to put it back unchanged."""

    letter: DeadLetter
    receipt: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Something stored in the target that does not read as a dead letter.

    The target has already kept it exactly as it was: nobody can replay it, and only a
    person can tell what it was meant to be. ``where`` names it (the file and line, or
    the queue's message id); ``error`` says what is wrong with it.
    """

    where: str
    error: str


class DeadLetterTarget(Protocol):
    """Durable storage for failed changes.

    ``put`` returns only once the letter is stored durably (a file is fsynced, a queue
    acknowledged the send); if it cannot, it raises DeadLetterUnavailable and the caller
    must not treat the change as handled. It returns False when it stored nothing
    because a letter of the same identity (:attr:`DeadLetter.identity`) is certainly
    stored already (a file can tell; a queue cannot, and always stores).
    """

    description: str

    def put(self, letter: DeadLetter) -> bool: ...

    def claim_all(self) -> Generator[Claimed | Unreadable, None, None]:
        """Take every stored letter out for a replay, one at a time; what does not read
        as a letter is kept where it is and reported as Unreadable. Closing the iterator
        early leaves the letters not yet claimed where they are."""
        ...

    def settle(self, claimed: Claimed, *, replayed: bool) -> None:
        """Remove a replayed letter for good, or keep a failed one (put it back)."""
        ...

    def release(self, claimed: Claimed) -> None:
        """Leave a letter that is not this replay's to take (another task's) in the
        target exactly as it was stored."""
        ...

    def cancel(self) -> None:
        """Give up at once the retries of a put or a replay's call in hand, and any
        after (an operator command stopped at once): they raise WriteCancelled, and the
        letter they were for is not stored. Replication never calls it."""
        ...
