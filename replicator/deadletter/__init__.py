"""Dead-letter targets: where changes that no retry can apply are kept for a replay."""

from replicator.deadletter.base import Claimed, DeadLetterTarget, Unreadable
from replicator.deadletter.entry import ALL_DESTINATIONS, DeadLetter
from replicator.deadletter.file import FileDeadLetters
from replicator.deadletter.sqs import SqsDeadLetters

__all__ = [
    "ALL_DESTINATIONS",
    "Claimed",
    "DeadLetter",
    "DeadLetterTarget",
    "FileDeadLetters",
    "SqsDeadLetters",
    "Unreadable",
]
