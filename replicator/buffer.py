"""Stage 3: the buffer squashes changes per key and knows how far it is safe to checkpoint.

It is pure bookkeeping (no I/O, no threads, no clock) so that its guarantees can be
tested directly:

* **Squash, without changing the outcome.** A change that arrives while an older one for
  the same key is still queued is compared with it (:class:`SquashOrder`, built from the
  destinations' conflict rules): the new change *replaces* the queued one when it alone
  leaves every destination as both would, it is *dropped* when it can change nothing
  after the queued one, and otherwise *both* are sent, the older first. So a destination
  always ends up as if every record had been applied one at a time, in the order the
  shard delivered them.
* **One write per key at a time, per destination.** A change whose key is being written
  waits until that write finishes, so writes to one item never overlap and arrive in order.
  A key can be held past its write's end (``hold_key``: a request of it may still land),
  its next change (or only its next delete, after a conditional put) waiting meanwhile
  while the write's record settles as usual.
* **Safe checkpoint.** Every record has a slot in stream order. A slot is done when each
  destination has applied (or dead-lettered) its change. A change squashed away (replaced
  by a newer change, or dropped behind an older one) is done at a destination when the
  write that stands for it lands there: applied, unchanged or lost under the rule. When
  that write is dead-lettered instead, the squashed changes are written there after all,
  one by one in stream order, each applied or dead-lettered on its own: so a destination
  that refuses the newest change of an item ends as if every record had been applied in
  turn (it keeps the last state it accepts), and no record is passed that is neither
  applied nor dead-lettered. A destination that already holds a newer state of the item
  (active-active: the destination an echo came from) counts as done for it; the others
  still write it. ``checkpointable`` is the highest sequence number of the longest done
  prefix that no open record carries or is numbered below: nothing at or before it is
  unapplied. It never moves back (a stream numbers its records in order; an unpatched
  moto can serve a lower number after a higher one: replicator/intake.py).
* **Backpressure** counts every record not yet done (``open_changes``), the changes
  squashed away included: each is kept, whole, until the write standing for it lands,
  so counting them is what bounds the buffer's memory. A record held open after its
  write (``hold``: a lost conflict whose conflict-log entry is not stored yet) counts
  too, so the same bound holds intake back while such records wait.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice

from replicator.items import KeyId
from replicator.records import Change, Held

Supersedes = Callable[[Change, Change], bool]


class Squash(Enum):
    """What becomes of a change that arrives while an older one to its item is queued."""

    REPLACE = "replace"  # the new change alone ends where both would: the queued one is not sent
    DROP = "drop"  # after the queued change the new one changes nothing: it is not sent
    BOTH = "both"  # neither holds: both are sent, the queued one first


@dataclass(frozen=True, slots=True)
class SquashOrder:
    """How the buffer compares two changes to one item.

    ``merge(queued, incoming)`` decides a squash. ``newer(skipped, queued)`` is for a
    loop-skipped change (the destination already holds its image): it retires the queued
    changes it is newer than, which the destination must not receive after it.
    """

    merge: Callable[[Change, Change], Squash]
    newer: Supersedes


@dataclass(slots=True, eq=False)
class Slot:
    """One stream record's place in the checkpoint order."""

    sequence_number: str
    remaining: int
    # Numbered at or below a record before it (never, in a stream): not the highest
    # number of any prefix it ends.
    behind: bool = False


@dataclass(slots=True, eq=False)
class Entry:
    """A change waiting for, or being written to, the destinations."""

    change: Change
    slot: Slot
    superseded: bool = False
    pending: set[str] = field(default_factory=set)
    # Per destination, when the item became stale there, if earlier than this change's
    # creation: the changes this one replaced before they were written there. Lag and the
    # apply delay count from it, so an item whose changes keep replacing each other at a
    # stuck destination shows as stale since its first unwritten change (None: nothing
    # carried, the common case).
    stale_since: dict[str, int] | None = None
    # Left behind by ``abandon``: a write still in flight that is no longer owed.
    forgotten: bool = False
    # Per destination, the squashed-away changes whose outcome there is this entry's
    # write: settled with it when it lands, written themselves when it is dead-lettered.
    stand_for: dict[str, list[Entry]] | None = None
    # Dead-lettered at some destination: no later change is squashed into it, since
    # it does not stand for anything there.
    failed: bool = False
    # It replaced a change already sent somewhere (or one that had): there it comes
    # after that write, so a change replacing it is not compared with older ones.
    follows_sent: bool = False

    def stale_since_us(self, destination: str) -> int:
        """Creation time of the earliest change whose state ``destination`` still lacks
        until this entry's write lands there."""
        created = self.change.created_us
        if self.stale_since is None:
            return created
        return min(created, self.stale_since.get(destination, created))


class ChangeBuffer:
    def __init__(self, destinations: Sequence[str], order: SquashOrder) -> None:
        if not destinations:
            raise ValueError("a buffer needs at least one destination")
        self.destinations = tuple(destinations)
        self._squash = order
        self._order: deque[Slot] = deque()
        self._open_slots = 0
        # Per key, the changes not yet settled everywhere and not replaced, in stream order.
        self._chains: dict[KeyId, list[Entry]] = {}
        # Per destination and key, the changes not yet taken, in the order to send them.
        self._queued: dict[str, dict[KeyId, deque[Entry]]] = {d: {} for d in self.destinations}
        # Per destination, the keys with a queued change and no write in flight (FIFO).
        self._ready: dict[str, dict[KeyId, None]] = {d: {} for d in self.destinations}
        self._in_flight: dict[str, dict[KeyId, Entry]] = {d: {} for d in self.destinations}
        self._done_through: str | None = None
        # The highest sequence number of any slot yet, and the open slots numbered at or
        # below a slot before them (never, from a stream): see checkpointable.
        self._top: str | None = None
        self._behind: list[Slot] = []
        self._popped_top: str | None = None  # the highest number of a slot done and gone
        # Slots kept open after their write settled (:meth:`hold`), with how many holds.
        self._held: dict[Slot, int] = {}
        # Per destination, the keys whose next write waits (:meth:`hold_key`), each with
        # the token that releases it.
        self._held_keys: dict[str, dict[KeyId, int]] = {d: {} for d in self.destinations}
        # The same for holds that keep back only the key's next deletes, or only its next
        # puts (``hold_key`` with ``Held.DELETE`` or ``Held.PUT``): the others are taken
        # as usual. Each with its token and which it holds.
        self._op_holds: dict[str, dict[KeyId, tuple[int, Held]]] = {
            d: {} for d in self.destinations
        }
        self._key_holds = itertools.count()
        self.squashed = 0

    # -- intake ---------------------------------------------------------------------------

    def add(self, change: Change) -> bool:
        """Queue ``change`` for every destination; False if it is dropped by the squash."""
        slot = self._new_slot(change.sequence_number, len(self.destinations))
        key = change.key
        chain = self._chains.get(key)
        if chain is None:  # the common case: nothing of the item to squash with
            self._chains[key] = [self._queue(Entry(change, slot, pending=set(self.destinations)))]
            return True
        carried: dict[str, int] = {}
        stand_for: dict[str, list[Entry]] = {}
        follows_sent = False
        while chain and not chain[-1].failed:
            decision = self._squash.merge(chain[-1].change, change)
            if decision is Squash.REPLACE:
                previous = chain.pop()
                if self._replace(previous, carried, stand_for) or previous.follows_sent:
                    # It, or a change it replaced, was sent somewhere: there ``change``
                    # is written after that write, whatever an older change would let
                    # the squash decide.
                    follows_sent = True
                    break
            elif decision is Squash.DROP and len(chain[-1].pending) == len(self.destinations):
                self._drop_behind(chain[-1], change, slot, stand_for)
                return False
            else:
                # BOTH, or a drop behind a change already settled somewhere: there it
                # landed, or an echo retired it, and what the destination holds since
                # is not "after it" (an echo's newer state, a re-queued older change).
                break
        entry = Entry(
            change,
            slot,
            pending=set(self.destinations),
            stale_since=carried or None,
            stand_for=stand_for or None,
            follows_sent=follows_sent,
        )
        chain.append(self._queue(entry))
        return True

    def _queue(self, entry: Entry) -> Entry:
        """Queue ``entry`` at every destination, behind the item's queued changes."""
        key = entry.change.key
        for destination in self.destinations:
            queued = self._queued[destination]
            queue = queued.get(key)
            if queue is None:
                queued[key] = deque((entry,))
            else:
                queue.append(entry)
            if key not in self._in_flight[destination] and key not in self._held_keys[destination]:
                self._ready[destination][key] = None
        return entry

    def newest_queued(self, key: KeyId) -> Change | None:
        """The newest change to ``key`` still queued or being written (the one a dropped
        change sits behind)."""
        chain = self._chains.get(key)
        return chain[-1].change if chain else None

    def add_skipped(self, change: Change, *, replaces_older_at: Collection[str] = ()) -> None:
        """Record a change that is not sent on (loop-skipped or filtered).

        ``replaces_older_at`` is for loop-skipped changes (echoes): the destinations that
        already hold this newest state of the item, so an older queued change must not be
        sent there. Only there: in a mesh an echo is held by the region it came from, and
        another destination may still lack even the older change, which is written to it
        as usual (it applies, or loses to the newer state when that arrives first). The
        watermark settles the same destinations (:meth:`ShardTracker.skipped`), so the two
        agree on what is still owed where.
        """
        self._new_slot(change.sequence_number, 0)
        holders = [d for d in self.destinations if d in replaces_older_at]
        chain = self._chains.get(change.key)
        if holders:
            self._retire_unchained_at(change, holders, chain or ())
        if not holders or not chain:
            return
        everywhere = len(holders) == len(self.destinations)
        index = len(chain)
        while index and self._squash.newer(change, chain[index - 1].change):
            index -= 1
            entry = chain[index]
            owed_nowhere = self._retire_at(entry, holders)
            if everywhere and not owed_nowhere:
                # Still in flight somewhere: that write settles it, out of the chain.
                entry.superseded = True
            if everywhere or owed_nowhere:
                del chain[index]
            if everywhere:
                self.squashed += 1
        if not chain:
            del self._chains[change.key]

    def add_done(self, sequence_number: str) -> None:
        """Record a record that needs no write (for example one already dead-lettered)."""
        self._new_slot(sequence_number, 0)

    # -- dispatch -------------------------------------------------------------------------

    def take_ready(self, destination: str, limit: int) -> list[Entry]:
        """Up to ``limit`` changes for ``destination`` whose key has no write in flight."""
        ready = self._ready[destination]
        queued = self._queued[destination]
        in_flight = self._in_flight[destination]
        taken: list[Entry] = []
        # The keys are taken in one pass over ``ready``: looking for its first key once per
        # key would walk past every slot deleted from its front each time (quadratic).
        limit = max(limit, 0)
        op_holds = self._op_holds[destination]
        if op_holds:
            return self._take_past_holds(destination, limit, op_holds)
        if len(ready) <= limit:
            keys = list(ready)
            ready.clear()
        else:
            keys = list(islice(ready, limit))
            for key in keys:
                del ready[key]
        for key in keys:
            queue = queued[key]
            entry = queue.popleft()
            if not queue:
                del queued[key]
            in_flight[key] = entry
            taken.append(entry)
        return taken

    def _take_past_holds(
        self, destination: str, limit: int, op_holds: dict[KeyId, tuple[int, Held]]
    ) -> list[Entry]:
        """:meth:`take_ready` while some keys hold their next deletes or puts: a key whose
        next change waits is passed by (ready again once its hold ends, release_key), and
        the keys behind it are taken up to ``limit``."""
        ready = self._ready[destination]
        queued = self._queued[destination]
        in_flight = self._in_flight[destination]
        taken: list[Entry] = []
        passed: list[KeyId] = []
        for key in ready:
            if len(taken) >= limit:
                break
            passed.append(key)
            queue = queued[key]
            held = op_holds.get(key)
            if held is not None and held[1].waits_for(queue[0].change):
                continue
            entry = queue.popleft()
            if not queue:
                del queued[key]
            in_flight[key] = entry
            taken.append(entry)
        for key in passed:
            del ready[key]
        return taken

    def complete(self, destination: str, entry: Entry, *, failed: bool = False) -> None:
        """``entry``'s write to ``destination`` is settled: applied, unchanged or lost under
        the rule, or (``failed``) dead-lettered, in which case the changes squashed into it
        there are queued to be written there themselves, ahead of anything newer."""
        self.complete_all(destination, (entry,), failed=failed)

    def complete_all(
        self, destination: str, entries: Sequence[Entry], *, failed: bool = False
    ) -> None:
        """:meth:`complete` for each of ``entries``, in one call: the event loop settles
        the writes applied in one turn together, and a call or two per write is a good
        part of settling it."""
        in_flight = self._in_flight[destination]
        queued = self._queued[destination]
        ready = self._ready[destination]
        held_keys = self._held_keys[destination]
        chains = self._chains
        for entry in entries:
            key = entry.change.key
            del in_flight[key]
            if entry.forgotten:
                continue
            pending = entry.pending
            if destination in pending:
                pending.discard(destination)
                self._settle(entry.slot)
            stood_for = entry.stand_for.pop(destination, None) if entry.stand_for else None
            if failed:
                entry.failed = True
                if stood_for:
                    self._queue_first(destination, key, stood_for)
            elif stood_for:
                self._settle_at(destination, stood_for)
            if not entry.superseded and not pending:
                chain = chains[key]
                chain.remove(entry)
                if not chain:
                    del chains[key]
            if key in queued and key not in held_keys:
                ready[key] = None

    def hold_key(self, destination: str, entry: Entry, held: Held = Held.CHANGE) -> int | None:
        """Keep ``entry``'s key from its next write to ``destination`` (``held``: from its
        next change, or only its next delete, or only its next put; the others are taken
        meanwhile) until :meth:`release_key` with the token returned: the write of
        ``entry`` there sent a request that may still land, over that next write
        (``DestinationWriter.late_write_window_s``). Nothing else waits: the write
        settles the record as usual (the checkpoint may pass it), and the key counts as
        neither in flight nor outstanding; its queued changes do. Call it before
        :meth:`complete`; None when ``entry`` is no longer owed (abandoned: nothing held)."""
        if entry.forgotten:
            return None
        token = next(self._key_holds)
        key = entry.change.key
        prior = self._op_holds[destination].get(key)
        if held is not Held.CHANGE and prior is not None and prior[1] is not held:
            # A hold of the other kind still runs (a delete's, then a put-back's): both
            # kinds wait now; the earlier hold ends with its own timer.
            held = Held.CHANGE
        if held is Held.CHANGE:
            self._held_keys[destination][key] = token
        else:
            self._op_holds[destination][key] = (token, held)
        return token

    def release_key(self, destination: str, key: KeyId, token: int) -> bool:
        """End a :meth:`hold_key`; whether it was still held (not released since, nor
        abandoned)."""
        held_keys, op_holds = self._held_keys[destination], self._op_holds[destination]
        if held_keys.get(key) == token:
            del held_keys[key]
        elif key in op_holds and op_holds[key][0] == token:
            del op_holds[key]
        else:
            return False
        if (
            key in self._queued[destination]
            and key not in self._in_flight[destination]
            and key not in held_keys
        ):
            self._ready[destination][key] = None
        return True

    def held_keys(self) -> dict[str, int]:
        """How many keys hold their next change (or delete, or put), by destination."""
        counts = {d: len(self._held_keys[d]) + len(self._op_holds[d]) for d in self.destinations}
        return {d: count for d, count in counts.items() if count}

    def release_keys(self) -> list[str]:
        """End every :meth:`hold_key` (a stop); the destinations that had held keys."""
        released = []
        for destination in self.destinations:
            held_keys = self._held_keys[destination]
            op_holds = self._op_holds[destination]
            if not held_keys and not op_holds:
                continue
            released.append(destination)
            queued = self._queued[destination]
            in_flight = self._in_flight[destination]
            ready = self._ready[destination]
            for key in (*held_keys, *op_holds):
                if key in queued and key not in in_flight:
                    ready[key] = None
            held_keys.clear()
            op_holds.clear()
        return released

    def hold(self, destination: str, entry: Entry) -> Slot | None:
        """Keep ``entry``'s record open once its write to ``destination`` settles, until
        :meth:`release`: the write has landed (a lost conflict), but the record must not
        be checkpointed before something else is done (its conflict-log entry stored).
        It counts in :attr:`open_changes` meanwhile, so the buffer's bound holds intake
        back while records wait; its key is free for the item's next write. Call it
        before :meth:`complete`; None when the record is not owed there (nothing held)."""
        if entry.forgotten or destination not in entry.pending:
            return None
        slot = entry.slot
        slot.remaining += 1  # open: ``destination`` has not settled it yet
        self._held[slot] = self._held.get(slot, 0) + 1
        return slot

    def release(self, slot: Slot) -> None:
        """End a :meth:`hold` (nothing when the buffer was abandoned since)."""
        holds = self._held.get(slot)
        if holds is None:
            return
        if holds == 1:
            del self._held[slot]
        else:
            self._held[slot] = holds - 1
        self._settle(slot)

    def abandon(self) -> None:
        """Forget everything not yet written (the lease is gone; another worker will redo it)."""
        for destination in self.destinations:
            self._ready[destination].clear()
            self._queued[destination].clear()
            self._held_keys[destination].clear()
            self._op_holds[destination].clear()
            for entry in self._in_flight[destination].values():
                entry.superseded = True  # its completion must not settle a forgotten slot
                entry.forgotten = True  # nor count as owed to the destination
        self._chains.clear()
        self._order.clear()
        self._behind.clear()
        self._held.clear()
        self._open_slots = 0

    # -- progress -------------------------------------------------------------------------

    def checkpointable(self) -> str | None:
        """The sequence number up to which every record is done (None before any is).

        It never moves back, and passes a number only once every record carrying it or
        numbered below it is done: a stream never gives two records one number, nor a
        record a lower number than one before it, but an unpatched moto does both
        (replicator/intake.py reads them all), and a checkpoint at a number would pass
        such a record still open. Of the done prefix, the highest number below every
        open record that is numbered at or below a record before it."""
        order = self._order
        if not order or order[0].remaining:
            return self._done_through
        bound: str | None = None
        if self._behind:
            self._behind = [slot for slot in self._behind if slot.remaining]
            for slot in self._behind:
                if bound is None or _below(slot.sequence_number, bound):
                    bound = slot.sequence_number
        through = self._done_through
        popped = self._popped_top
        while order and order[0].remaining == 0:
            slot = order.popleft()
            if slot.behind:
                continue
            popped = slot.sequence_number  # each slot not behind is above those before it
            if bound is None or _below(popped, bound):
                through = popped
        if popped is not None and (bound is None or _below(popped, bound)):
            through = popped  # held back before by an open record numbered at or below it
        self._popped_top = popped
        self._done_through = through
        return through

    @property
    def open_changes(self) -> int:
        """Records not yet done, squashed ones included: what backpressure counts."""
        return self._open_slots

    @property
    def tracked_records(self) -> int:
        """Records still held for the checkpoint order (done ones behind an open one included)."""
        return len(self._order)

    def in_flight(self, destination: str) -> int:
        return len(self._in_flight[destination])

    def outstanding(self, destination: str) -> int:
        """Changes for ``destination`` waiting or being written."""
        queued = sum(len(queue) for queue in self._queued[destination].values())
        return queued + len(self._in_flight[destination])

    def oldest_outstanding_us(self, destination: str) -> int | None:
        """Creation time of the oldest change whose state ``destination`` still lacks.

        A change replaced before it was written there hands its time on to the change
        that replaced it (``Entry.stale_since``), and a replaced change whose write is in
        flight there counts until that write lands: otherwise an item whose changes keep
        replacing each other would look fresh at a destination that accepts nothing.
        """
        oldest: int | None = None
        waiting = [entry for queue in self._queued[destination].values() for entry in queue]
        for entry in (*waiting, *self._in_flight[destination].values()):
            if entry.forgotten:
                continue
            created = entry.stale_since_us(destination)
            if oldest is None or created < oldest:
                oldest = created
        return oldest

    @property
    def held_records(self) -> int:
        """Holds not yet released (:meth:`hold`): changes whose writes settled, waiting
        for their conflict-log entries to be stored."""
        return sum(self._held.values())

    @property
    def idle(self) -> bool:
        """Nothing waiting, nothing in flight, every record done, no key held."""
        return (
            self._open_slots == 0
            and not any(self._in_flight.values())
            and not any(self._held_keys.values())
            and not any(self._op_holds.values())
        )

    # -- internals ------------------------------------------------------------------------

    def _new_slot(self, sequence_number: str, remaining: int) -> Slot:
        top = self._top
        # _below(top, sequence_number), inlined: once per record.
        if (
            top is None
            or len(top) < len(sequence_number)
            or (len(top) == len(sequence_number) and top < sequence_number)
        ):
            self._top = sequence_number
            slot = Slot(sequence_number, remaining)
        else:
            slot = Slot(sequence_number, remaining, behind=True)
            if remaining:
                self._behind.append(slot)
        self._order.append(slot)
        if remaining:
            self._open_slots += 1
        return slot

    def _settle(self, slot: Slot) -> None:
        if slot.remaining:
            slot.remaining -= 1
            if slot.remaining == 0:
                self._open_slots -= 1

    def _settle_at(self, destination: str, entries: Sequence[Entry]) -> None:
        """The write standing for ``entries`` landed at ``destination``: they are done there."""
        for stood in entries:
            if destination in stood.pending:
                stood.pending.discard(destination)
                self._settle(stood.slot)

    def _settle_stood_for(self, destination: str, entry: Entry) -> None:
        """What ``entry`` stands for at ``destination`` is done there: it holds a newer
        state (and must not be written there should ``entry``'s own write there fail)."""
        stood_for = entry.stand_for.pop(destination, None) if entry.stand_for else None
        if stood_for:
            self._settle_at(destination, stood_for)

    def _queue_first(self, destination: str, key: KeyId, entries: list[Entry]) -> None:
        """Queue squashed-away ``entries`` at ``destination`` ahead of the item's newer
        changes, in stream order: the write that stood for them was dead-lettered there."""
        entries.sort(key=lambda stood: stood.change.position)
        queued = self._queued[destination]
        queue = queued.get(key)
        queued[key] = deque(entries) if queue is None else deque((*entries, *queue))
        if key not in self._held_keys[destination]:
            self._ready[destination][key] = None

    def _drop_behind(
        self, queued: Entry, change: Change, slot: Slot, replaced: dict[str, list[Entry]]
    ) -> None:
        """``change`` changes nothing after ``queued``: it is done wherever ``queued``'s
        write lands, and written there itself if that write is dead-lettered. So are
        the changes it ``replaced`` first (newer than ``queued``), per destination.
        Only a change still pending everywhere is dropped behind (see :meth:`add`)."""
        self.squashed += 1
        dropped = Entry(change, slot, superseded=True, pending=set(queued.pending))
        slot.remaining = len(dropped.pending)  # a chain entry is pending somewhere
        stand_for = queued.stand_for
        if stand_for is None:
            stand_for = queued.stand_for = {}
        for destination in dropped.pending:
            stand_for.setdefault(destination, []).append(dropped)
        for destination, entries in replaced.items():
            if destination in queued.pending:
                stand_for.setdefault(destination, []).extend(entries)
            else:
                self._settle_at(destination, entries)

    def _retire_unchained_at(
        self, change: Change, holders: Sequence[str], chain: Sequence[Entry]
    ) -> None:
        """Out of the chain, what an echo's holders must not be sent either: changes
        re-queued there after a dead-lettered write, and what a replaced write in flight
        there stands for (written there should that write fail)."""
        key = change.key
        for destination in holders:
            flying = self._in_flight[destination].get(key)
            if flying is not None and flying not in chain:
                self._settle_stood_for(destination, flying)
            queue = self._queued[destination].get(key)
            if not queue:
                continue
            retired = [e for e in queue if e not in chain and self._squash.newer(change, e.change)]
            for entry in retired:
                queue.remove(entry)
            self._settle_at(destination, retired)
            if not queue:
                del self._queued[destination][key]
                self._ready[destination].pop(key, None)

    def _retire_at(self, entry: Entry, holders: Sequence[str]) -> bool:
        """Drop ``entry``'s queued writes to ``holders`` only, which already hold a newer
        state of its item; True when it is then owed nowhere.

        A write of it in flight to one of them is left to finish and settle as usual (it
        lands before any later write of the item there, which waits for it).
        """
        key = entry.change.key
        for destination in holders:
            if destination not in entry.pending:
                continue
            # The holder has a newer state: what ``entry`` stands for there is done too
            # (and must not be written there should its own write there fail).
            self._settle_stood_for(destination, entry)
            queued = self._queued[destination]
            queue = queued.get(key)
            if queue is None or entry not in queue:
                continue  # in flight there
            queue.remove(entry)
            if not queue:
                del queued[key]
                self._ready[destination].pop(key, None)
            entry.pending.discard(destination)
            self._settle(entry.slot)
        return not entry.pending

    def _replace(
        self, previous: Entry, carried: dict[str, int], stand_for: dict[str, list[Entry]]
    ) -> bool:
        """``previous`` is replaced by a newer change: drop its unsent writes. True when
        it was sent somewhere (in flight or landed).

        Where its write was still queued, the newer change's write stands for it (and for
        what it stood for there): added to ``stand_for``, and the time the item became
        stale there noted in ``carried``. A write of it already in flight finishes and
        settles it there (it lands before the newer change's write to that destination,
        which waits for it). Where it was sent, the newer change must be written after
        it: it cannot then be dropped behind a change older than ``previous``.
        """
        previous.superseded = True
        key = previous.change.key
        sent = False
        for destination in self.destinations:
            queued = self._queued[destination]
            queue = queued.get(key)
            if queue is None or previous not in queue:
                sent = True
            else:
                since = previous.stale_since_us(destination)
                carried[destination] = min(carried.get(destination, since), since)
                queue.remove(previous)
                if not queue:
                    del queued[key]
                    self._ready[destination].pop(key, None)
                # Take over ``previous``'s list rather than copy it: a hot key replaced
                # over and over at a slow destination would copy a growing list per record.
                inherited = (
                    previous.stand_for.pop(destination, None) if previous.stand_for else None
                )
                moved = stand_for.get(destination)
                if moved is None:
                    moved = stand_for[destination] = inherited if inherited is not None else []
                elif inherited:
                    moved.extend(inherited)
                moved.append(previous)
        self.squashed += 1
        return sent


def _below(number: str, other: str) -> bool:
    """Whether sequence number ``number`` is below ``other`` (decimal digits, no leading
    zero: the longer is the higher), without making integers of them."""
    return len(number) < len(other) or (len(number) == len(other) and number < other)
