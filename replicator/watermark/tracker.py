"""One shard's part of the watermark: up to what creation time each destination is settled.

Pure bookkeeping (no I/O, no clock of its own), fed by the pipeline and read by the
publisher, so that the claim it makes can be tested directly. The claim for a
destination is a time ``W`` (microseconds since the epoch) such that every change of
this shard whose stream creation time is at or before ``W`` is *settled* there: applied,
lost to a newer item under the conflict rule, not sent by policy (loop prevention, TTL
filter), or dead-lettered. Dead-lettered changes are also reported on their own, so a
reader can tell "replicated" from "given up on".

The claim is ``min(delivered, oldest unsettled) - 1 us``:

* **delivered**: every change of the shard created before this time has reached the
  processor. DynamoDB Streams writes a shard's records in the order the table made the
  changes, so after a record created at ``c`` every later record is created at ``c`` or
  after: ``delivered`` is at least the creation time of the last record received. A read
  that comes back empty (the reader is at the tip of the shard) moves it to the time that
  read started, less ``margin_us`` (how long a record may take to become readable after
  its write, and how far the clocks of the application, DynamoDB and this host may
  differ).
* **oldest unsettled**: the creation time of the oldest change received but not yet
  settled at the destination. A change that the buffer replaced by a newer change to the
  same item (squashed) is settled only when a write of that item at or after it settles,
  because until then the destination does not hold its effect. When that write is
  dead-lettered, the buffer writes the squashed changes themselves; here they are
  reported within the dead letter's range, even should their own writes then land: a
  waiter is told "dead-lettered", never "replicated", for a change that may be neither.

**Creation times are whole seconds.** DynamoDB Streams rounds a record's
``ApproximateCreationDateTime`` down to the second, so a change recorded at ``t`` was
made at some time in ``[t, t + 1 s)``. Rounding down keeps the claim true (a change not
yet settled, or not yet received, holds it below ``t``, so below the change's real
time), but a dead letter must be reported for every time its change may have had: its
range reaches to ``t + 1 s - 1 us``, or a waiter whose ``since`` falls inside that second
(after ``t``, before or at the change) would be told a change it depends on was applied.

**After a restart** from a checkpoint, a change before the checkpoint may have been
squashed into a newer change after it that the previous process never wrote; this
process never sees the older change. So a resumed tracker claims nothing until it has
received everything the previous process could have received (a record created after
this process started, or an empty read) and every change received up to then is
settled. Whatever it publishes after that is true again; the status table only ever
raises a part, so an earlier, higher claim stands.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from replicator.exceptions import StreamOrderBroken
from replicator.items import KeyId
from replicator.records import Change

DeadLetterRange = tuple[int, int]
"""Creation times (us) of the oldest and newest change one dead-lettered write stood for,
the newest widened to the end of its precision: every time the changes may have had."""

STREAM_TIME_PRECISION_US = 1_000_000
"""DynamoDB Streams' ``ApproximateCreationDateTime`` is rounded down to the second."""


@dataclass
class _Destination:
    unsettled: dict[int, int] = field(default_factory=dict)  # position -> created_us
    by_created: list[tuple[int, int]] = field(default_factory=list)  # heap, lazily pruned
    pending: dict[KeyId, deque[int]] = field(default_factory=dict)  # positions per item
    # Dropped changes by the queued change they sit behind: settled when it settles.
    followers: dict[int, list[int]] = field(default_factory=dict)
    dead_letter_count: int = 0
    dead_letter_ranges: list[DeadLetterRange] = field(default_factory=list)
    dead_letters_recorded: int = 0  # ever: what a take or a store has got through
    guard_through: int | None = None  # resumed: positions up to here must settle first
    guard_cleared: bool = False

    def oldest_unsettled_us(self) -> int | None:
        heap = self.by_created
        while heap and heap[0][1] not in self.unsettled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def lowest_unsettled_position(self) -> int | None:
        return next(iter(self.unsettled), None)  # positions are received in stream order


@dataclass(frozen=True)
class DeadLetters:
    """Dead letters recorded since they were last taken."""

    count: int
    ranges: tuple[DeadLetterRange, ...]
    # How many dead letters the destination had recorded in all when these were taken:
    # storing them stores every letter recorded up to there.
    through: int = 0


class ShardTracker:
    def __init__(
        self,
        destinations: Sequence[str],
        *,
        margin_us: int,
        resumed_at_us: int | None = None,
        created_precision_us: int = STREAM_TIME_PRECISION_US,
        shard_id: str | None = None,
    ) -> None:
        """``resumed_at_us``: when this process started, if it resumed from a checkpoint.
        ``created_precision_us``: a change's creation time is known to this much (it was
        made in ``[created_us, created_us + created_precision_us)``). ``shard_id``: for
        the error that a record out of the shard's order raises."""
        self._lock = threading.Lock()
        self._shard_id = shard_id
        self._precision_us = created_precision_us
        self._destinations = {label: _Destination() for label in destinations}
        self._margin_us = margin_us
        self._resumed_at_us = resumed_at_us
        self._awaiting_replay = resumed_at_us is not None
        self._delivered_us = 0  # from records: every change created before it was received
        self._caught_up_us = 0  # from empty reads, less the margin
        self._newest_created_us = 0
        self._last_position: int | None = None
        self.out_of_order = 0
        self._stopped = False

    # -- what the pipeline reports ------------------------------------------------------

    def received(self, change: Change) -> None:
        """A change handed to the buffer, to be written to every destination."""
        self.received_all((change,))

    def received_all(self, changes: Sequence[Change]) -> None:
        """:meth:`received` for ``changes``, in their order, under one hold of the lock."""
        with self._lock:
            states = list(self._destinations.values())
            for change in changes:
                position = change.position
                created_us = change.created_us
                self._deliver(position, created_us)
                for state in states:
                    state.unsettled[position] = created_us
                    heapq.heappush(state.by_created, (created_us, position))
                    positions = state.pending.get(change.key)
                    if positions is None:
                        state.pending[change.key] = deque((position,))
                    else:
                        positions.append(position)

    def dropped(self, change: Change, *, behind: Change) -> None:
        """A change the buffer dropped because ``behind``, queued before it for the same
        item, outranks it: it can change nothing, so it is settled wherever ``behind`` is."""
        with self._lock:
            self._deliver(change.position, change.created_us)
            for state in self._destinations.values():
                # Changes to the item queued after ``behind`` were replaced by this one
                # before it was dropped: their effect now stands or falls with ``behind``,
                # and so does that of the changes dropped behind them (their followers),
                # which nothing would settle once they left ``pending``.
                replaced = self._take_pending_after(state, change.key, behind.position)
                for position in tuple(replaced):
                    replaced.extend(state.followers.pop(position, ()))
                if behind.position not in state.unsettled:
                    for position in replaced:  # already settled there, and their effect
                        state.unsettled.pop(position, None)
                    continue
                state.unsettled[change.position] = change.created_us
                heapq.heappush(state.by_created, (change.created_us, change.position))
                state.followers.setdefault(behind.position, []).extend([*replaced, change.position])

    @staticmethod
    def _take_pending_after(state: _Destination, key: KeyId, position: int) -> list[int]:
        positions = state.pending.get(key)
        if not positions or positions[-1] <= position:
            return []
        kept = deque(p for p in positions if p <= position)
        taken = [p for p in positions if p > position]
        if kept:
            state.pending[key] = kept
        else:
            del state.pending[key]
        return taken

    def skipped(self, change: Change, *, replaces_older_at: Collection[str] = ()) -> None:
        """A change not sent on (loop prevention, TTL filter); settled as it arrives.

        ``replaces_older_at``: the destinations that already hold this newest state of
        the item (a loop-skipped echo came from there), where older changes to the item
        still pending are settled too. Only those: in a mesh the echo of a change made in
        one region says nothing about a third region, where the older change is still
        owed and settles when its write finishes. The buffer retires the older changes at
        the same destinations (:meth:`ChangeBuffer.add_skipped`).
        """
        with self._lock:
            self._deliver(change.position, change.created_us)
            for label in replaces_older_at:
                state = self._destinations.get(label)
                if state is not None:  # the source writer's label is not a destination
                    self._settle(state, change.key, change.position, dead_lettered=False)

    def dead_lettered_everywhere(self, position: int, created_us: int | None, now_us: int) -> None:
        """A record that could not be decoded: dead-lettered for every destination.

        Its creation time is the record's ``approximateArrivalTimestamp`` when it has
        one (the stream record's creation time, as precise); otherwise only bounds are
        known (after the record before it, before now).
        """
        with self._lock:
            self._check_order(position)
            if created_us is None:
                low, high = self._newest_created_us, now_us
            else:
                low, high = created_us, created_us + self._precision_us - 1
                self._deliver(position, created_us)
            self._last_position = position
            for state in self._destinations.values():
                state.dead_letter_count += 1
                state.dead_letters_recorded += 1
                state.dead_letter_ranges.append((low, high))

    def settled(self, destination: str, change: Change, *, dead_lettered: bool) -> None:
        """A write of ``change`` to ``destination`` finished: applied, lost, or dead-lettered.

        The destination now holds this change's state or a newer one, so every change to
        the item up to this one is settled there.
        """
        with self._lock:
            state = self._destinations[destination]
            self._settle(state, change.key, change.position, dead_lettered=dead_lettered)

    def applied(self, destination: str, changes: Sequence[Change]) -> None:
        """:meth:`settled` for writes of ``changes`` applied at ``destination``, together."""
        with self._lock:
            state = self._destinations[destination]
            pending = state.pending
            unsettled = state.unsettled
            followers = state.followers
            for change in changes:
                # :meth:`_settle` without the dead letters' range: one call per write is
                # a good part of settling it.
                positions = pending.get(change.key)
                if not positions:
                    continue
                through = change.position
                while positions and positions[0] <= through:
                    position = positions.popleft()
                    del unsettled[position]
                    if followers:
                        for follower in followers.pop(position, ()):
                            unsettled.pop(follower, None)
                if not positions:
                    del pending[change.key]

    def caught_up(self, read_not_before_us: int) -> None:
        """A read came back empty; it started at ``read_not_before_us`` or later."""
        with self._lock:
            self._caught_up_us = max(self._caught_up_us, read_not_before_us - self._margin_us)
            resumed_at = self._resumed_at_us
            if (
                self._awaiting_replay
                and resumed_at is not None
                and read_not_before_us >= resumed_at
            ):
                self._replay_received()

    def stop(self) -> None:
        """The lease is gone: what this process knows no longer counts."""
        with self._lock:
            self._stopped = True

    # -- what the publisher reads -------------------------------------------------------

    def claim(self, destination: str) -> int:
        """``W`` in microseconds: every change created at or before it is settled (0: none)."""
        with self._lock:
            return self._claim(destination)

    def take_dead_letters(self, destination: str) -> DeadLetters:
        with self._lock:
            return self._take_dead_letters(destination)

    def claim_and_dead_letters(self, destination: str) -> tuple[int, DeadLetters]:
        """``W`` and every dead letter it covers, taken at one instant: a publisher that
        stores the dead letters before it raises ``W`` never shows a reader a watermark
        past a dead-lettered change without that dead letter."""
        with self._lock:
            return self._claim(destination), self._take_dead_letters(destination)

    def dead_letters_recorded(self) -> dict[str, int]:
        """Per destination, how many dead letters it has recorded in all (a store that
        got through this many has stored every one recorded so far)."""
        with self._lock:
            return {
                label: state.dead_letters_recorded for label, state in self._destinations.items()
            }

    @property
    def destinations(self) -> list[str]:
        return list(self._destinations)

    # -- internals (lock held) ------------------------------------------------------------

    def _claim(self, destination: str) -> int:
        if self._stopped:
            return 0
        state = self._destinations[destination]
        if not state.guard_cleared:
            if self._awaiting_replay:
                return 0
            if state.guard_through is not None:
                lowest = state.lowest_unsettled_position()
                if lowest is not None and lowest <= state.guard_through:
                    return 0
            state.guard_cleared = True
        bound = max(self._delivered_us, self._caught_up_us)
        oldest = state.oldest_unsettled_us()
        if oldest is not None:
            bound = min(bound, oldest)
        return max(0, bound - 1)

    def _take_dead_letters(self, destination: str) -> DeadLetters:
        state = self._destinations[destination]
        taken = DeadLetters(
            state.dead_letter_count, tuple(state.dead_letter_ranges), state.dead_letters_recorded
        )
        state.dead_letter_count = 0
        state.dead_letter_ranges.clear()
        return taken

    def _check_order(self, position: int) -> None:
        """Everything here is accounted for by position, received in the shard's order:
        of two changes at one position, the first to settle would settle the other, and
        the claim (and the buffer's checkpoint) could pass a change never written."""
        last = self._last_position
        if last is None or position > last:
            return
        seen = "seen twice" if position == last else f"after {last}"
        shard = f"shard {self._shard_id}" if self._shard_id else "this shard"
        raise StreamOrderBroken(
            f"stream record sequence number {position} {seen} in {shard}: a stream gives "
            "each record of a shard a higher sequence number than the last (an unpatched "
            "moto can repeat one); stopping before a checkpoint can pass either change"
        )

    def _deliver(self, position: int, created_us: int) -> None:
        self._check_order(position)
        if created_us < self._newest_created_us:
            self.out_of_order += 1  # the stream broke its order: the publisher says so
        self._newest_created_us = max(self._newest_created_us, created_us)
        self._delivered_us = max(self._delivered_us, created_us)
        self._last_position = position
        if (
            self._awaiting_replay
            and self._resumed_at_us is not None
            and created_us >= self._resumed_at_us + self._margin_us
        ):
            self._replay_received()

    def _replay_received(self) -> None:
        """Everything the previous process could have received has now been received."""
        self._awaiting_replay = False
        for state in self._destinations.values():
            state.guard_through = self._last_position

    def _settle(
        self, state: _Destination, key: KeyId, through: int, *, dead_lettered: bool
    ) -> None:
        positions = state.pending.get(key)
        if not positions:
            return
        low: int | None = None
        high = 0
        while positions and positions[0] <= through:
            position = positions.popleft()
            settled = [state.unsettled.pop(position)]
            for follower in state.followers.pop(position, ()):
                if (created := state.unsettled.pop(follower, None)) is not None:
                    settled.append(created)
            low = min(settled) if low is None else min(low, *settled)
            high = max(high, *settled)
        if not positions:
            del state.pending[key]
        if dead_lettered and low is not None:
            state.dead_letter_count += 1
            state.dead_letters_recorded += 1
            state.dead_letter_ranges.append((low, high + self._precision_us - 1))
