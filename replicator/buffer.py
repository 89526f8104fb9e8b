"""Stage 3: the buffer squashes changes per key and knows how far it is safe to checkpoint.

It is pure bookkeeping (no I/O, no threads, no clock) so that its guarantees can be
tested directly:

* **Squash.** Only the newest change per primary key is written. A change that arrives
  while an older one for the same key is still waiting replaces it; the older one is
  never sent.
* **One write per key at a time, per destination.** A change whose key is being written
  waits until that write finishes, so writes to one item never overlap and arrive in order.
* **Safe checkpoint.** Every record has a slot in stream order. A slot is done when each
  destination has applied (or dead-lettered) its change, or when a newer change to the
  same key replaced it (that newer change lies later in the stream, so a restart from a
  checkpoint past the old one still writes the new one). ``checkpointable`` is the
  sequence number of the last slot of the longest done prefix: nothing at or before it is
  unapplied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from replicator.items import KeyId
from replicator.records import Change

Supersedes = Callable[[Change, Change], bool]


@dataclass(slots=True, eq=False)
class Slot:
    """One stream record's place in the checkpoint order."""

    sequence_number: str
    remaining: int


@dataclass(slots=True, eq=False)
class Entry:
    """A change waiting for, or being written to, the destinations."""

    change: Change
    slot: Slot
    superseded: bool = False
    pending: set[str] = field(default_factory=set)


class ChangeBuffer:
    def __init__(
        self, destinations: Sequence[str], supersedes: Callable[[Change, Change], bool]
    ) -> None:
        if not destinations:
            raise ValueError("a buffer needs at least one destination")
        self.destinations = tuple(destinations)
        self._supersedes = supersedes
        self._order: deque[Slot] = deque()
        self._open_slots = 0
        self._latest: dict[KeyId, Entry] = {}
        self._ready: dict[str, dict[KeyId, Entry]] = {d: {} for d in self.destinations}
        self._waiting: dict[str, dict[KeyId, Entry]] = {d: {} for d in self.destinations}
        self._in_flight: dict[str, dict[KeyId, Entry]] = {d: {} for d in self.destinations}
        self._done_through: str | None = None
        self.squashed = 0

    # -- intake ---------------------------------------------------------------------------

    def add(self, change: Change) -> bool:
        """Queue ``change`` for every destination; False if an already queued change is newer."""
        slot = self._new_slot(change.sequence_number, len(self.destinations))
        previous = self._latest.get(change.key)
        if previous is not None:
            if not self._supersedes(change, previous.change):
                self._close(slot)
                self.squashed += 1
                return False
            self._retire(previous)
        entry = Entry(change, slot, pending=set(self.destinations))
        self._latest[change.key] = entry
        for destination in self.destinations:
            if change.key in self._in_flight[destination]:
                self._waiting[destination][change.key] = entry
            else:
                self._ready[destination][change.key] = entry
        return True

    def add_skipped(self, change: Change, *, replaces_older: bool) -> None:
        """Record a change that is not sent on (loop-skipped or filtered).

        ``replaces_older`` is for loop-skipped changes: they are the item's newest state,
        which the destination already has, so an older queued change must not be sent.
        """
        self._new_slot(change.sequence_number, 0)
        if replaces_older:
            previous = self._latest.get(change.key)
            if previous is not None and self._supersedes(change, previous.change):
                self._retire(previous)
                del self._latest[change.key]

    def add_done(self, sequence_number: str) -> None:
        """Record a record that needs no write (for example one already dead-lettered)."""
        self._new_slot(sequence_number, 0)

    # -- dispatch -------------------------------------------------------------------------

    def take_ready(self, destination: str, limit: int) -> list[Entry]:
        """Up to ``limit`` changes for ``destination`` whose key has no write in flight."""
        ready = self._ready[destination]
        in_flight = self._in_flight[destination]
        taken: list[Entry] = []
        while ready and len(taken) < limit:
            key = next(iter(ready))
            entry = ready.pop(key)
            in_flight[key] = entry
            taken.append(entry)
        return taken

    def complete(self, destination: str, entry: Entry) -> None:
        """``entry``'s write to ``destination`` is settled (applied, lost, or dead-lettered)."""
        key = entry.change.key
        del self._in_flight[destination][key]
        entry.pending.discard(destination)
        if not entry.superseded:
            self._settle(entry.slot)
            if not entry.pending and self._latest.get(key) is entry:
                del self._latest[key]
        waiting = self._waiting[destination].pop(key, None)
        if waiting is not None:
            self._ready[destination][key] = waiting

    def abandon(self) -> None:
        """Forget everything not yet written (the lease is gone; another worker will redo it)."""
        for destination in self.destinations:
            self._ready[destination].clear()
            self._waiting[destination].clear()
            for entry in self._in_flight[destination].values():
                entry.superseded = True  # its completion must not settle a forgotten slot
        self._latest.clear()
        self._order.clear()
        self._open_slots = 0

    # -- progress -------------------------------------------------------------------------

    def checkpointable(self) -> str | None:
        """The sequence number up to which every record is done (None before any is)."""
        order = self._order
        while order and order[0].remaining == 0:
            self._done_through = order.popleft().sequence_number
        return self._done_through

    @property
    def open_changes(self) -> int:
        """Records not yet done: what backpressure counts."""
        return self._open_slots

    @property
    def tracked_records(self) -> int:
        """Records still held for the checkpoint order (done ones behind an open one included)."""
        return len(self._order)

    def in_flight(self, destination: str) -> int:
        return len(self._in_flight[destination])

    def outstanding(self, destination: str) -> int:
        """Changes for ``destination`` waiting or being written."""
        return (
            len(self._ready[destination])
            + len(self._waiting[destination])
            + len(self._in_flight[destination])
        )

    def oldest_outstanding_us(self, destination: str) -> int | None:
        """Creation time of the oldest change still to be applied at ``destination``."""
        oldest: int | None = None
        for queue in (self._ready, self._waiting, self._in_flight):
            for entry in queue[destination].values():
                if entry.superseded:
                    continue
                created = entry.change.created_us
                if oldest is None or created < oldest:
                    oldest = created
        return oldest

    @property
    def idle(self) -> bool:
        """Nothing waiting, nothing in flight, every record done."""
        return self._open_slots == 0 and not any(self._in_flight.values())

    # -- internals ------------------------------------------------------------------------

    def _new_slot(self, sequence_number: str, remaining: int) -> Slot:
        slot = Slot(sequence_number, remaining)
        self._order.append(slot)
        if remaining:
            self._open_slots += 1
        return slot

    def _close(self, slot: Slot) -> None:
        if slot.remaining:
            slot.remaining = 0
            self._open_slots -= 1

    def _settle(self, slot: Slot) -> None:
        if slot.remaining:
            slot.remaining -= 1
            if slot.remaining == 0:
                self._open_slots -= 1

    def _retire(self, previous: Entry) -> None:
        """``previous`` is replaced by a newer change: drop its unsent writes, close its slot."""
        previous.superseded = True
        self._close(previous.slot)
        key = previous.change.key
        for destination in self.destinations:
            if self._ready[destination].get(key) is previous:
                del self._ready[destination][key]
            if self._waiting[destination].get(key) is previous:
                del self._waiting[destination][key]
        self.squashed += 1
