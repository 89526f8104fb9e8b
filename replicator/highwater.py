"""Stage 2b (active-active): a local write that ranks below what the source held.

Applications write without conditions, so a region can overwrite an item with an image
that ranks *below* the one it replaced (a client clock behind, an update that raced a
replicated one), or put an item back below a delete it has already seen. Under one total
order the higher state must win everywhere, the source included, so such a write is not
sent on as it is: it is replaced by a *correction*, a change carrying the item's
highest-ranked state, written to the source (by the source writer, conditionally) and to
every destination (where it is usually already there).

The highest state is known from the stream itself: each record's old image is what the
source held before the write, and a delete ranks just above the image it deleted. A
squash in the buffer keeps only the last change to a key, so the highest state seen is
kept here, per key, for as long as the source's newest state is below it (typically the
few milliseconds until the correction's own record arrives); a bounded number of keys.
Nothing here is needed for durability: a restart reads the records again from the
checkpoint, and their old images carry the state forward.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from replicator.filters import Route
from replicator.items import Item, KeyId
from replicator.records import Change, Event
from replicator.rules.order import NO_ITEM, OpRank
from replicator.rules.ordered import OrderedRule

# Keys remembered at most; the oldest is forgotten first (its correction then rests on
# the old images of later records and on the tombstones).
MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class _State:
    """A state an item has had: an image, or the delete of an image."""

    rank: OpRank
    image: Item
    deleted: bool


class HighWater:
    def __init__(self, rule: OrderedRule, *, keep_echoes_apart: bool = False) -> None:
        """``keep_echoes_apart``: a loop-skipped record never replaces a queued change
        (with tombstones, the queued change may be a stale insert the source writer
        must still check)."""
        self.rule = rule
        self.keep_echoes_apart = keep_echoes_apart
        self._highest: OrderedDict[KeyId, _State] = OrderedDict()
        self.corrections = 0

    def route(self, change: Change, route: Route) -> tuple[Change, bool]:
        """The change to submit (REPLICATE) and, for a skipped one, whether it may
        replace an older queued change to its item."""
        if route is Route.REPLICATE:
            return self.admit(change), False
        if route is Route.FILTERED:
            self._highest.pop(change.key, None)  # a TTL delete the job does not follow
            return change, False
        highest = self._highest.get(change.key)
        outcome = self._outcome(change)
        replaces = not self.keep_echoes_apart and (highest is None or outcome.rank >= highest.rank)
        self._observe(change, outcome)
        return change, replaces

    def admit(self, change: Change) -> Change:
        """``change``, or a correction that carries a state ranking above it."""
        outcome = self._outcome(change)
        highest = self._observe(change, outcome)
        if highest is None or outcome.rank >= highest.rank:
            return change
        self.corrections += 1
        if highest.deleted:
            return replace(
                change,
                event=Event.REMOVE,
                new_image=None,
                old_image=highest.image,
                ttl_delete=False,
                corrects=change,
            )
        return replace(
            change,
            event=Event.MODIFY,
            new_image=highest.image,
            old_image=change.new_image,
            ttl_delete=False,
            corrects=change,
        )

    def _outcome(self, change: Change) -> _State:
        image = change.image
        if image is None:  # a REMOVE without an old image: dead-lettered by the rule
            return _State((NO_ITEM, 1), {}, True)
        return _State(self.rule.op_rank(change), image, change.op_is_delete)

    def _observe(self, change: Change, outcome: _State) -> _State | None:
        """Take what ``change`` shows; the highest state when the source's newest state
        (``outcome``) is below it, else None."""
        key = change.key
        highest = self._highest.get(key)
        if change.event is not Event.REMOVE and change.old_image is not None:
            before = _State((self.rule.rank(change.old_image), 0), change.old_image, False)
            if highest is None or before.rank > highest.rank:
                highest = before
        if highest is None or outcome.rank >= highest.rank:
            self._highest.pop(key, None)
            return None
        self._highest[key] = highest
        self._highest.move_to_end(key)
        while len(self._highest) > MAX_KEYS:
            self._highest.popitem(last=False)
        return highest

    def __len__(self) -> int:
        return len(self._highest)
