"""The ports of the conflict log: where entries are stored, and what a writer hands over."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.errors import ErrorKind, classify, error_code
from replicator.conflictlog.entry import ConflictEntry, instant
from replicator.exceptions import ConflictLogRejected, ConflictLogUnavailable
from replicator.items import Item
from replicator.records import Change
from replicator.rules.base import ConflictRule

# What became of each entry of a batch, in the batch's order: None, stored; a
# ConflictLogRejected, never to be stored as it is; a ConflictLogUnavailable, may be later.
StoreOutcome = ConflictLogRejected | ConflictLogUnavailable | None


def storage_failure(
    error: ClientError | BotoCoreError, what: str
) -> ConflictLogRejected | ConflictLogUnavailable:
    """An AWS error met storing an entry, as ConflictLogRejected or ConflictLogUnavailable.

    Only a request the service refuses as malformed is final; throttling, outages,
    access denied and a missing table or queue may all be fixed while entries wait.
    """
    detail = f"{what}: {error_code(error)}: {error}"
    if classify(error) is ErrorKind.REJECTED:
        return ConflictLogRejected(detail)
    return ConflictLogUnavailable(detail)


def stored(request: Callable[[], object], what: str) -> StoreOutcome:
    """Send one store ``request``: None once it returns, else its AWS error as
    :func:`storage_failure` sorts it (``what`` names the call and the target)."""
    try:
        request()
    except (ClientError, BotoCoreError) as error:
        failure = storage_failure(error, what)
        failure.__cause__ = error
        return failure
    return None


def read_failure(error: ClientError | BotoCoreError, what: str, where: str) -> Exception:
    """An AWS error met reading the log (``replicator conflicts``), as one line that names
    the table or queue and where it is: ``conflict-log table T: not found at REGION``."""
    # Imported here: the runtime's preflight imports the conflict log's targets.
    from replicator.runtime.preflight import explain

    return explain(error, what, where)


def entry_place(entry: ConflictEntry) -> str:
    """The ``<region>/<table>`` where the entry's conflict happened (or its restore)."""
    return f"{entry.region}/{entry.table}"


@dataclass(frozen=True, slots=True)
class Selection:
    """Which entries a reader wants; every field narrows, None means any."""

    item: str | None = None  # canonical key (keys.canonical_key)
    since: str | None = None  # ISO time (reader.parse_since), compared with ConflictEntry.at
    destination: str | None = None  # a destination's name, as entries record it
    # The destination's ``<region>/<table>``: when given, entries are selected by their
    # own region and table, not by the name they were recorded under (a name given to
    # a destination, or changed, since); ``destination`` is then what the listing shows.
    place: str | None = None

    def matches(self, entry: ConflictEntry) -> bool:
        """Times are compared as times, not as text: ``--since`` keeps the precision it
        was typed with (microseconds), entries have milliseconds."""
        return (
            (self.item is None or entry.item == self.item)
            and (self.since is None or instant(entry.at) >= instant(self.since))
            and self._at_destination(entry)
        )

    def _at_destination(self, entry: ConflictEntry) -> bool:
        if self.place is not None:
            return entry_place(entry) == self.place
        return self.destination is None or entry.destination == self.destination

    @property
    def since_key(self) -> str | None:
        """``since`` cut down to the milliseconds of the log's sort keys, for a key
        condition: it selects at least the entries from ``since`` on (callers filter
        again)."""
        if self.since is None:
            return None
        text = instant(self.since).astimezone(UTC).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")


class ConflictLogTarget(Protocol):
    """Durable storage for conflict entries (a file, an SQS queue, a DynamoDB table).

    ``put`` returns once the entry is stored; it raises ConflictLogUnavailable for what
    may pass, ConflictLogRejected for an entry the target will never take. ``put_all``
    stores a batch with as few requests as the target allows and says per entry what
    became of it: one entry the target refuses must not cost the others theirs. It may
    raise ConflictLogUnavailable for the whole batch (nothing stored, or not known to
    be). Storing the same entry twice must be harmless (readers keep one per task and
    change).
    """

    description: str
    # Set to end a reading (a stop signal): :func:`replicator.conflictlog.reader.
    # read_entries` raises LogReadingStopped at its next entry, and a target that waits
    # while it reads (an SQS queue's) stops waiting, letting go what it holds.
    stopping: threading.Event

    def put(self, entry: ConflictEntry) -> None: ...

    def put_all(self, entries: Sequence[ConflictEntry]) -> list[StoreOutcome]: ...

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        """The stored entries that match (possibly more: callers filter again)."""
        ...


class LosingWriter(Protocol):
    """What a destination writer tells the conflict log about itself (the task and the
    shard are the recorder's: :meth:`BackgroundRecorder.for_shard`)."""

    label: str
    table: str
    region: str
    rule: ConflictRule


@dataclass(frozen=True, slots=True)
class Loss:
    """What a writer knows when ``change`` loses to ``existing``. ``write_back``: the
    winner was written to the source too; ``winning_rank``: the winner's rank when it is
    not an item (a delete kept as a tombstone)."""

    writer: LosingWriter
    change: Change
    existing: Item | None
    why: str
    write_back: bool = False
    winning_rank: dict[str, Any] | None = None


class ConflictRecorder(Protocol):
    """Takes a lost conflict from a writer's thread without making it wait for storage
    (a :class:`~replicator.conflictlog.recorder.ShardConflicts`, which knows the task
    and the shard).

    Returns a future done once the entry is stored or given up (and counted), so that
    the caller can hold the change's checkpoint until then; None when it keeps no such
    account (a test's recorder)."""

    def lost(self, loss: Loss) -> Future[None] | None: ...
