"""Stage 2b (active-active): a local write that ranks below what the source held.

Applications write without conditions, so a region can overwrite an item with an image
that ranks *below* the one it replaced (a client clock behind, an update that raced a
replicated one), or put an item back below a delete it has already seen. Under one total
order the higher state must win everywhere, the source included, so such a write is not
sent on as it is: it is replaced by a *correction*, a change carrying the item's
highest-ranked state, written to the source (by the source writer, conditionally) and to
every destination (where it is usually already there).

The highest state is known from the stream itself: each record's old image is what the
source held before the write, and a delete ranks just above the image it deleted. The
highest state seen is kept here, per key, for the keys seen last: at most ``MAX_KEYS``
keys and about ``MAX_BYTES`` of records. Nothing here is needed for durability: a
restart reads the records again from the checkpoint, their old images carry the state
forward, and a forgotten delete is in the tombstone table, which the source writer reads
for every local insert.

A remembered delete stands in for its tombstone, so it keeps the tombstone's rules:

* it counts for the tombstone retention only (from the delete record's creation time),
  after which a put below it is let through to the source writer's tombstone check,
  which applies it and counts the expired tombstone;
* without tombstones it does not outlive the next local insert of the item: an insert
  (no old image) that the region's stream carries after the delete was made after it
  (on Kinesis, which does not keep that order: one created no earlier than the delete),
  so it is a re-creation (DynamoDBMapper's and the enhanced client's versioning start
  again at 1), and it lands, as docs/conflict-rules.md promises. With tombstones the
  delete's tombstone decides, everywhere alike.

A delete record below a remembered delete (the source writer's own removal of a stale
insert, a correction landing, a duplicate) changes nothing: the source holds no item and
the higher delete was already sent everywhere, so it is skipped like an echo.

With tombstones, what this process forgot (or never saw: it started after the delete)
is in the source's tombstone table. A local insert of a key the stage knows nothing of
is checked against it here, before it is routed (a strongly consistent read, on the
reading thread, never the event loop, and in place of the source writer's own check of
that insert, so an insert costs no more reads than before). The reads a batch needs are
made together, before its records are routed (:meth:`HighWater.prefetch`): one
BatchGetItem per 100 new items, not one round trip per insert in turn, which would hold
a burst of new items to a few hundred a second. A live tombstone that ranks at or above
the insert makes it stale, exactly as the remembered delete would have, and
its correction removes the stale image wherever it is, the delete known by its
tombstone alone. So whether a stale insert is sent on no longer depends on what the
process remembers.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog

from replicator.filters import Route
from replicator.images import Image
from replicator.items import Item, KeyId, describe_key, same_item
from replicator.records import Change, Event
from replicator.rules.order import NO_ITEM, OpRank, image_digest
from replicator.rules.ordered import OrderedRule
from replicator.tombstones.model import Tombstone

log = structlog.get_logger(__name__)

# Keys remembered at most, and about this many bytes of records (an image can hold
# 400 KB); the key seen longest ago is forgotten first.
MAX_KEYS = 10_000
MAX_BYTES = 64 * 1024 * 1024


class SharedNotes:
    """What the source writer's threads and this stage tell each other, per key.

    * ``inserts``: the position of the latest local insert admitted. The squash may
      replace an insert by a later update of the same item before the source writer
      sees it, and only an insert can bring back an item a delete removed: the source
      writer checks the tombstone for a put at or after a pending insert.
    * ``echoes``: images the source writer writes back that carry this region's own
      stamp; the record of such a write is already everywhere, so it is not sent again.
      A note is taken before the write (its record may be read before the writer hears
      the answer) and settled after it. The application's own record of the same image
      can be read in between (the write-back then finds that image in the source and
      writes nothing): that record must be sent on, so a record that matches a note
      still in flight waits for the write's outcome.
    * ``removals``: the items a delete of the source writer removed unseen and put back
      (a wide item, compared in part: :meth:`DestinationWriter._replaced
      <replicator.writers.destination.DestinationWriter._replaced>`). The removal's
      record carries an item the application wrote and still holds: taken for the
      application's delete, it would be tombstoned and sent everywhere, and the put-back
      corrected as a stale insert below it. A delete that may do so is noted while on the
      wire (its record may be read before the writer hears the answer), so a delete
      record of the item read meanwhile waits for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._inserts: dict[KeyId, tuple[int, bool]] = {}
        self._echoes: OrderedDict[tuple[KeyId, str], _Echo] = OrderedDict()
        self._removals: OrderedDict[KeyId, _Removals] = OrderedDict()

    def mark_insert(self, key: KeyId, position: int, *, checked: bool = False) -> None:
        """``checked``: the stage read the item's tombstone after this insert was made and
        none outranks it, so the source writer need not read it again (a forgotten note
        costs that read, never the check)."""
        with self._lock:
            self._inserts[key] = (position, checked)
            while len(self._inserts) > MAX_KEYS:
                self._inserts.pop(next(iter(self._inserts)))

    def take_insert(self, key: KeyId, position: int) -> tuple[bool, bool]:
        """Whether an insert at or before ``position`` is pending (and forget it), and
        whether it is the insert at ``position`` itself, already checked."""
        with self._lock:
            pending = self._inserts.get(key)
            if pending is None or pending[0] > position:
                return False, False
            del self._inserts[key]
            return True, pending == (position, True)

    def expect_echo(self, key: KeyId, image: Item) -> None:
        """A write-back of ``image`` (stamped here) is about to be sent."""
        with self._lock:
            note = self._echoes.setdefault((key, image_digest(image)), _Echo())
            note.in_flight += 1
            while len(self._echoes) > MAX_KEYS:
                self._echoes.popitem(last=False)
            self._settled.notify_all()  # an evicted note's waiters read it as no echo

    def settle_echo(self, key: KeyId, image: Item, *, written: bool) -> None:
        """The write-back of ``image`` was answered: ``written``, its record is an echo;
        else it wrote nothing and no record of it will come."""
        with self._lock:
            entry = (key, image_digest(image))
            note = self._echoes.get(entry)
            if note is not None:
                note.in_flight -= 1
                note.written += written
                if not note.in_flight and not note.written:
                    del self._echoes[entry]
            self._settled.notify_all()

    def is_echo(self, key: KeyId, image: Item) -> bool:
        """Whether a record of ``image`` is a write-back's (and forget that one); waits
        while a write-back of that image is in flight and none has been written yet."""
        with self._lock:
            if not self._echoes:
                return False
            entry = (key, image_digest(image))
            while True:
                note = self._echoes.get(entry)
                if note is None:
                    return False
                if note.written:
                    note.written -= 1
                    if not note.in_flight and not note.written:
                        del self._echoes[entry]
                    return True
                self._settled.wait()

    def expect_removal(self, key: KeyId) -> None:
        """A delete that may remove an item unseen (and put it back) is about to be sent."""
        with self._lock:
            note = self._removals.get(key)
            if note is None:
                note = self._removals[key] = _Removals()
            note.in_flight += 1
            while len(self._removals) > MAX_KEYS:
                self._removals.popitem(last=False)
            self._settled.notify_all()  # an evicted note's waiters read it as none

    def settle_removal(self, key: KeyId, put_back: Item | None) -> None:
        """That delete was answered: ``put_back``, the item it removed unseen (its record
        is the job's own), or None."""
        with self._lock:
            note = self._removals.get(key)
            if note is not None:
                note.in_flight -= 1
                if put_back is not None:
                    note.put_back.append(image_digest(put_back))
                if not note.in_flight and not note.put_back:
                    del self._removals[key]
            self._settled.notify_all()

    def is_removal(self, key: KeyId, image: Item) -> bool:
        """Whether a delete record of ``image`` is a removal the source writer put back
        (and forget that one); waits while a delete that may be one is on the wire."""
        with self._lock:
            if not self._removals:
                return False
            digest = image_digest(image)
            while True:
                note = self._removals.get(key)
                if note is None:
                    return False
                if digest in note.put_back:
                    note.put_back.remove(digest)
                    if not note.in_flight and not note.put_back:
                        del self._removals[key]
                    return True
                if not note.in_flight:
                    return False
                self._settled.wait()


@dataclass(slots=True)
class _Removals:
    """Deletes of one item that may remove it unseen: how many are on the wire, and the
    digests of the items they removed and put back whose records are not read yet."""

    in_flight: int = 0
    put_back: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Echo:
    """Write-backs of one image stamped here: how many are in flight, and how many were
    written whose records have not been read yet."""

    in_flight: int = 0
    written: int = 0


@dataclass(frozen=True, slots=True)
class _State:
    """A state an item has had: an image, or the delete of an image."""

    rank: OpRank
    image: Item
    deleted: bool
    size: int  # of the record that showed it (its base64 text): what keeping it costs
    created_us: int = 0  # of the record that showed it: a remembered delete's age
    # A delete known by its tombstone alone (``image`` is then only the item's keys).
    tombstone: Tombstone | None = None
    # The rule can order the image (:meth:`OrderedRule.order`): its ordering attribute is
    # of the rule's types. One that is not (an application's ``updated_at: true``) is
    # dead-lettered as it is: the stage takes no state from it, neither to correct it
    # (as a write below what the item held) nor to correct later writes by it.
    orderable: bool = True


class HighWater:
    def __init__(
        self,
        rule: OrderedRule,
        *,
        keep_echoes_apart: bool = False,
        notes: SharedNotes | None = None,
        tombstones: bool = False,
        retention_s: float | None = None,
        clock: Callable[[], float] = time.time,
        in_order: bool = True,
        read_tombstones: Callable[[Sequence[Change]], Mapping[KeyId, Tombstone | None]]
        | None = None,
    ) -> None:
        """``keep_echoes_apart``: a loop-skipped record never replaces a queued change
        (with tombstones, the queued change may be a stale insert the source writer
        must still check). ``tombstones``: deletes are recorded, so a remembered delete
        outranks a later local insert below it. ``retention_s``: how long a remembered
        delete counts (the tombstone retention), by ``clock``. ``in_order``: the stream
        keeps each item's changes in order (a DynamoDB stream; not Kinesis, where a
        record's creation time says which of two came first). ``read_tombstones``: the
        source's tombstones of changes' items, read strongly consistently (None: no row;
        an item left out could not be read; with ``tombstones``)."""
        self.rule = rule
        self.read_tombstones = read_tombstones
        # The answers :meth:`prefetch` read for the batch being routed: whether the item's
        # tombstone could be read, and the row.
        self._prefetched: dict[KeyId, tuple[bool, Tombstone | None]] = {}
        self.keep_echoes_apart = keep_echoes_apart
        self.tombstones = tombstones
        self.retention_s = retention_s
        self._clock = clock
        self.in_order = in_order
        self.notes = notes or SharedNotes()
        self._highest: OrderedDict[KeyId, _State] = OrderedDict()
        self._bytes = 0
        self.corrections = 0

    def prefetch(self, changes: Iterable[tuple[Change, Route]]) -> None:
        """Read together the tombstones that routing ``changes`` (a batch, with the
        filters' routes, in order) will ask for: of each local insert of an item the stage
        knows nothing of that is the item's first record in the batch (the item is known
        once that record is routed). The reading thread would otherwise wait one round
        trip per new item in turn. An answer routing does not use (the insert is an echo)
        is dropped with the next batch; a read routing needs that is not here (the stage
        let go of the item during the batch) is made then, alone."""
        self._prefetched = {}
        if not self.tombstones or self.read_tombstones is None:
            return
        seen: set[KeyId] = set()
        wanted: list[Change] = []
        for change, route in changes:
            if change.key in seen:
                continue
            seen.add(change.key)
            if (
                route is Route.REPLICATE
                and change.old_image is None
                and change.new_image is not None
                and change.key not in self._highest
            ):
                wanted.append(change)
        if wanted:
            found = self.read_tombstones(wanted)
            self._prefetched = {c.key: (c.key in found, found.get(c.key)) for c in wanted}

    def route(self, change: Change, route: Route) -> tuple[Change, Route, bool]:
        """The change to go on with, its route (a correction's or a write-back's own
        record, already everywhere, becomes LOOP_SKIPPED) and, for a skipped change,
        whether it may replace an older queued change to its item."""
        decided = self._route(change, route)
        log.debug(
            "routed",
            key=describe_key(change.keys),
            stream_event=change.event.value,
            sequence_number=change.sequence_number,
            route=decided[1].value,
            correction=decided[0].corrects is not None,
            replaces_older=decided[2],
        )
        return decided

    def _route(self, change: Change, route: Route) -> tuple[Change, Route, bool]:
        if route is not Route.FILTERED and self._put_back(change):
            return change, Route.LOOP_SKIPPED, False
        if route is Route.REPLICATE:
            self._let_go_of_delete(change)
            if self._below_a_delete_sent(change):
                self._observe(change, self._outcome(change))
                return change, Route.LOOP_SKIPPED, False
            image = change.new_image
            if image is not None and self._already_everywhere(change, image):
                self._observe(change, self._outcome(change))
                return change, Route.LOOP_SKIPPED, False
            if image is not None and change.old_image is None:
                checked = self._check_forgotten_delete(change, image)
                self.notes.mark_insert(change.key, change.position, checked=checked)
            return self.admit(change), route, False
        if route is Route.FILTERED:
            self._forget(change.key)  # a TTL delete the job does not follow
            return change, route, False
        highest = self._highest.get(change.key)
        outcome = self._outcome(change)
        replaces = not self.keep_echoes_apart and (highest is None or outcome.rank >= highest.rank)
        self._observe(change, outcome)
        return change, route, replaces

    def _put_back(self, change: Change) -> bool:
        """A delete record of an item the source writer removed unseen and put back: the
        item is there again, so the record shows no state of it (its put-back's record,
        the image seen last, is then already everywhere)."""
        image = change.old_image if change.event is Event.REMOVE else None
        return image is not None and self.notes.is_removal(change.key, image)

    def _already_everywhere(self, change: Change, image: Item) -> bool:
        """A local-looking put that is this job's own correction or write-back landing in
        the source: the correction was sent to every destination, and a written-back
        image stamped here was replicated when this region wrote it."""
        highest = self._highest.get(change.key)
        if highest is not None and not highest.deleted and same_item(highest.image, image):
            return True
        return self.notes.is_echo(change.key, image)

    def _check_forgotten_delete(self, change: Change, image: Item) -> bool:
        """For a local insert of an item this stage knows nothing of: read its tombstone,
        and remember a live one that outranks the insert as the item's highest state
        (:meth:`admit` then corrects the insert). Whether the insert was checked: no
        tombstone outranks it, or it is now known to be stale. An expired tombstone
        outranking it is left to the source writer, which lets the insert in and counts
        the tombstone."""
        if not self.tombstones or self.read_tombstones is None or change.key in self._highest:
            return False
        answer = self._prefetched.pop(change.key, None)
        if answer is None:
            found = self.read_tombstones([change])
            answer = change.key in found, found.get(change.key)
        read, tombstone = answer
        if not read:
            return False
        if tombstone is None or not tombstone.blocks(self.rule.rank(image)):
            return True
        if tombstone.expired(self._clock()):
            return False
        self._remember(
            change.key,
            _State(tombstone.op_rank, change.keys, True, 0, change.created_us, tombstone),
        )
        return True

    def _let_go_of_delete(self, change: Change) -> None:
        """Forget the remembered delete of ``change``'s item when it no longer counts: past
        the retention, or (without tombstones) when ``change`` re-creates the item."""
        highest = self._highest.get(change.key)
        if highest is None or not highest.deleted:
            return
        if highest.tombstone is not None:
            expired = highest.tombstone.expired(self._clock())
        else:
            expired = (
                self.retention_s is not None
                and self._clock() - highest.created_us / 1_000_000 >= self.retention_s
            )
        recreated = (
            not self.tombstones
            and change.event is not Event.REMOVE
            and change.old_image is None
            and (self.in_order or change.created_us >= highest.created_us)
        )
        if expired or recreated:
            self._forget(change.key)

    def _below_a_delete_sent(self, change: Change) -> bool:
        """A delete record at or below the remembered delete of its item: the source holds
        no item, and the remembered delete (or its correction) already went everywhere.
        This is how the removal the source writer made of a stale insert, and a
        correction's delete landing in the source, are recognised as the job's own."""
        if change.event is not Event.REMOVE or change.old_image is None:
            return False
        highest = self._highest.get(change.key)
        return (
            highest is not None and highest.deleted and self._outcome(change).rank <= highest.rank
        )

    def admit(self, change: Change) -> Change:
        """``change``, or a correction that carries a state ranking above it."""
        outcome = self._outcome(change)
        highest = self._observe(change, outcome)
        if highest is None or outcome.rank >= highest.rank:
            return change
        self.corrections += 1
        if highest.tombstone is not None:
            # The deleted image is not known, its rank is: remove the stale image, the
            # one the source holds now, wherever it is.
            return msgspec.structs.replace(
                change,
                event=Event.REMOVE,
                new=None,
                old=change.new,
                ttl_delete=False,
                corrects=change,
                tombstone=highest.tombstone,
            )
        if highest.deleted:
            return msgspec.structs.replace(
                change,
                event=Event.REMOVE,
                new=None,
                old=Image.of(highest.image),
                ttl_delete=False,
                corrects=change,
            )
        return msgspec.structs.replace(
            change,
            event=Event.MODIFY,
            new=Image.of(highest.image),
            old=change.new,
            ttl_delete=False,
            corrects=change,
        )

    def _outcome(self, change: Change) -> _State:
        image = change.image
        size = len(change.raw.get("data") or "") if change.raw else 0
        if image is None:  # a REMOVE without an old image: dead-lettered by the rule
            return _State((NO_ITEM, 1), {}, True, size, change.created_us)
        ordered = self.rule.order(change.ranked)
        rank = self.rule.rank(change.ranked) if ordered is None else ordered
        return _State(
            (rank, 1 if change.op_is_delete else 0),
            image,
            change.op_is_delete,
            size,
            change.created_us,
            orderable=ordered is not None,
        )

    def _observe(self, change: Change, outcome: _State) -> _State | None:
        """Take what ``change`` shows; the highest state when the source's newest state
        (``outcome``) is below it, else None. A state the rule cannot order is no state
        of the item's order: it is dead-lettered when written, and what was known of the
        item before it still stands."""
        key = change.key
        highest = self._highest.get(key)
        if change.event is not Event.REMOVE and change.old_image is not None:
            ordered = self.rule.order(change.old_image)
            if ordered is not None and (highest is None or (ordered, 0) > highest.rank):
                highest = _State(
                    (ordered, 0), change.old_image, False, outcome.size, change.created_us
                )
        if not outcome.orderable:
            if highest is not None:
                self._remember(key, highest)
            return None
        if highest is None or outcome.rank >= highest.rank:
            if outcome.image:
                self._remember(key, outcome)
            else:
                self._forget(key)
            return None
        self._remember(key, highest)
        return highest

    def _remember(self, key: KeyId, state: _State) -> None:
        self._forget(key)
        self._highest[key] = state
        self._bytes += state.size
        while len(self._highest) > MAX_KEYS or self._bytes > MAX_BYTES:
            _, dropped = self._highest.popitem(last=False)
            self._bytes -= dropped.size

    def _forget(self, key: KeyId) -> None:
        dropped = self._highest.pop(key, None)
        if dropped is not None:
            self._bytes -= dropped.size

    def __len__(self) -> int:
        return len(self._highest)
