"""Stages 1-2 of one shard: stream records -> decode -> filters -> high-water -> buffer.

The data path of a shard, in order:

    stream record -> decode -> filters / high-water -> buffer -> rules -> writers -> checkpoint

:class:`ShardIntake` owns the first half, up to the buffer of the shard's pipeline
(replicator/pipeline.py); the record processor only adapts the KCL protocol to it, and
the core benchmark drives the same intake. :class:`Reader` is the decode-and-route part
alone, which a redrive uses to replay a dead letter the way the shard would have read it.

A record that cannot be decoded is dead-lettered for every destination before its slot
is marked done, so the checkpoint never passes it unstored.

A stream gives each record of a shard a higher sequence number than the last. An
unpatched moto serving writes at once does not: it numbers a record by the shard's length
when the write began and appends it when the write is done, so two writes at once give
both records one number and skip the next, and a write overtaken by others leaves its
record after higher numbers (895, 896, 897, 898, 896, 900). Its iterator goes on after
the highest number of a read, at the index that number would have, so it serves again
the records after that index. What is written to it in tests and demos must still
arrive. :class:`_Numbering` reads such a shard as the stream it stands for: a record
served again (the data of one of the shard's last records, byte for byte) is read once,
and any other record numbered at or below the last is applied in the order read, at its
own position after the last (the pipeline and the watermark account for changes by
position; the checkpoint, by sequence number, never moves back and never passes a number
while a record carrying it, or a lower one read after it, is open: replicator/buffer.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from replicator.decode import StreamKeys, decode
from replicator.exceptions import RecordDecodeError
from replicator.filters import ChangeFilter, Route, StampWatch
from replicator.highwater import HighWater
from replicator.pipeline import ShardPipeline
from replicator.records import Change, Event, RawRecord, raw_record_from

log = structlog.get_logger(__name__)

# How many of a shard's last records are remembered to tell a record served again from a
# new one numbered alike. moto serves again the records read since the index of the
# highest number of a read: a few, as many as writes overtook one another.
_REMEMBERED = 4096


class Routed(msgspec.Struct, frozen=True):
    """A decoded change (possibly replaced by a correction) and where it goes (a frozen
    msgspec struct, cheap to build once per record)."""

    change: Change
    route: Route
    # For a change not sent on: whether it may replace an older queued change to its item
    # (where it already is: see ShardPipeline.echo_holders).
    replaces_older: bool
    # A loop-skipped change's origin stamp: the region whose table it came from.
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Reader:
    change_filter: ChangeFilter
    # Active-active: turns local writes that rank below what the source held into
    # corrections (replicator/highwater.py).
    high_water: HighWater | None = None
    # The attributes the filters and rules read of an image one at a time (what they rank
    # by, origin stamps): kept as the image is checked, rather than looked up in it again.
    read_ahead: tuple[str, ...] = ()
    # How the source stream writes binary keys, as its records read so far have shown:
    # shared by the readers of one process that read it (wiring.shard_intake).
    stream_keys: StreamKeys = field(default_factory=StreamKeys)
    # Loop prevention: what the puts read show of its settings (warned about once).
    stamps: StampWatch | None = None

    def decode(self, raw: RawRecord) -> Change:
        """Decode ``raw``; RecordDecodeError when it cannot be decoded.

        The new image is checked here, whole: a put forwards it as the record carried it,
        so one that is not well-formed DynamoDB JSON is a record that does not decode
        (dead-lettered as ``undecodable``, naming the record), not a request for the
        destination to refuse. Not every endpoint refuses one: moto stores some
        malformed values altered and answers others with a 500 that would be retried for
        ever. The old image is never forwarded, and what reads it whole checks it then
        (see docs/reliability.md: a delete's condition falls back to the ranking
        attribute, anything else dead-letters the change as ``rejected``).
        Active-active reads it whole here, as the record is routed, so there it is
        checked at once too."""
        return decode(
            raw,
            check_new_image=True,
            check_old_image=self.high_water is not None,
            read_ahead=self.read_ahead,
            source_table=self.change_filter.source_table,
            stream_keys=self.stream_keys,
        )

    def read(self, raw: RawRecord) -> Routed:
        """Decode ``raw`` and route it; RecordDecodeError when it cannot be decoded."""
        return self.route(self.decode(raw))

    def prefetch(self, changes: Iterable[Change]) -> None:
        """Before ``changes`` (a batch, in order) are routed: the high-water stage reads
        the tombstones routing them will need together (I/O: never on the event loop)."""
        if self.high_water is not None:
            change_filter = self.change_filter
            self.high_water.prefetch(
                (change, route)
                for change in changes
                if (route := change_filter.route(change)) is not Route.OTHER_TABLE
            )

    def route(self, change: Change) -> Routed:
        route = self.change_filter.route(change)
        if route is Route.OTHER_TABLE:  # another job's record: nothing here to rank
            return Routed(change, route, False)
        if self.stamps is not None and change.event is not Event.REMOVE:
            self.stamps.saw(change, self.change_filter.origin_of(change))
        replaces_older = route is Route.LOOP_SKIPPED
        if self.high_water is not None:
            change, route, replaces_older = self.high_water.route(change, route)
        origin = self.change_filter.origin_of(change) if replaces_older else None
        return Routed(change, route, replaces_older, origin)


@dataclass
class ShardIntake:
    pipeline: ShardPipeline
    reader: Reader
    _numbering: _Numbering = field(init=False)

    def __post_init__(self) -> None:
        self._numbering = _Numbering(self.pipeline.shard_id)

    @property
    def shard_id(self) -> str:
        return self.pipeline.shard_id

    def accept(self, records: Iterable[Any], millis_behind: int) -> None:
        """Take one batch of the daemon's records (amazon-kclpy Records or plain dicts)
        into the pipeline and start its writes; returns without waiting for them.

        The records are read (decoded, filtered, queued in the buffer) on the pipeline's
        event loop thread (:meth:`ShardPipeline.run_reading`), except under
        active-active, where reading a record may wait for a write-back's answer
        (replicator/highwater.py), which the loop must never do. A record that does not
        decode is dead-lettered here, between two runs of the reading: storing it is I/O."""
        pipeline = self.pipeline
        metrics = pipeline.metrics
        batch = _Batch(list(records))
        # The lag first: it is never shown below millis_behind_latest / 1000, nor below
        # the age of the batch's first change.
        first_created_us = _created_us(raw_record_from(batch.records[0])) if batch.records else None
        pipeline.note_millis_behind(millis_behind, first_created_us)
        metrics.millis_behind_latest.labels(self.shard_id).set(millis_behind)
        # An empty batch (a read at the tip of the shard) has nothing to hand the loop.
        on_loop = bool(batch.records) and self.reader.high_water is None
        try:
            while True:
                if on_loop:
                    undecodable = pipeline.run_reading(self._read, batch)
                else:
                    undecodable = self._read(batch)
                if undecodable is None:
                    break
                raw, reason = undecodable
                sequence_number = raw.get("sequenceNumber")
                if not isinstance(sequence_number, str) or not sequence_number.isdigit():
                    pipeline.dead_letters.undecodable(raw, reason)
                    continue
                data = raw.get("data")
                position = self._numbering.place(
                    int(sequence_number), data if isinstance(data, str) else None, sequence_number
                )
                if position is None:
                    continue  # served again: dead-lettered when it was first read
                pipeline.dead_letters.undecodable(raw, reason)
                pipeline.done(sequence_number, position, _created_us(raw))
                batch.last_sequence_number = str(self._numbering.last_number)
        finally:
            pipeline.note_batch_read()
            # Counted once per batch and event: a labelled counter update costs more than
            # a record's filters.
            for event, count in batch.received.items():
                if count:
                    metrics.records_received.labels(event.value).inc(count)
        pipeline.dispatch()
        if batch.last_sequence_number is not None:
            pipeline.batch_received(batch.last_sequence_number, millis_behind)
            metrics.last_record.labels(self.shard_id).set(time.time())

    def _read(self, batch: _Batch) -> tuple[RawRecord, str] | None:
        """Read ``batch`` on from ``batch.next`` into the pipeline, up to its end (None) or
        to the first record that does not decode (returned with why, not yet stored)."""
        pipeline = self.pipeline
        reader = self.reader
        received = batch.received
        records = batch.records
        # Decoded first, up to the first record that does not decode, so that what
        # routing them will read is read at once (active-active's tombstones).
        changes: list[Change] = []
        undecodable: tuple[RawRecord, str] | None = None
        numbering = self._numbering
        end = batch.next
        for index in range(batch.next, len(records)):
            end = index + 1
            raw = raw_record_from(records[index])
            try:
                change = reader.decode(raw)
            except RecordDecodeError as error:
                undecodable = raw, str(error)
                break
            if change.position > numbering.last_position:  # the stream's own order
                numbering.last_number = numbering.last_position = change.position
                numbering.recent.append((change.position, raw["data"]))
                changes.append(change)
            elif (renumbered := numbering.renumbered(change, raw["data"])) is not None:
                changes.append(renumbered)
        if changes:
            # The highest number read: how far the shard is read (a lower-numbered record
            # may come last: see _Numbering).
            batch.last_sequence_number = str(numbering.last_number)
        reader.prefetch(changes)
        # Changes to replicate, queued together up to the next record that is not one
        # (so that every record still reaches the buffer in the shard's order).
        replicate: list[Change] = []
        # Without active-active a change routed to be replicated is sent on as decoded:
        # taken without building its Routed.
        change_route = reader.change_filter.route if reader.high_water is None else None
        for change in changes:
            received[change.event] += 1
            if change_route is not None and change_route(change) is Route.REPLICATE:
                replicate.append(change)
                continue
            routed = reader.route(change)
            if routed.route is Route.REPLICATE:
                replicate.append(routed.change)
            else:
                pipeline.submit_all(replicate)
                replicate.clear()
                pipeline.skip(
                    routed.change,
                    routed.route,
                    replaces_older=routed.replaces_older,
                    origin=routed.origin,
                )
        pipeline.submit_all(replicate)
        batch.next = end
        return undecodable


@dataclass(slots=True)
class _Numbering:
    """Where the shard's records stand: the highest sequence number read, the last
    change's position (above that number once records have been read at or below it),
    and the shard's last records, to know one served again."""

    shard_id: str
    last_number: int = -1
    last_position: int = -1
    # The shard's last records as read, (sequence number, data): a record served again
    # is one of them, byte for byte. Appended for every record (a stream's are only
    # appended); looked through only for a record at or below the last position.
    recent: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=_REMEMBERED))
    # The numbers of records already said to be served again: a moto shard idle after a
    # lower number serves its last records again at every read.
    told: set[int] = field(default_factory=set)

    def renumbered(self, change: Change, data: str) -> Change | None:
        """``change``, read at or below the last position: None for a record served
        again, else the change at the next position."""
        position = self.place(change.position, data, change.sequence_number)
        if position is None:
            return None
        return msgspec.structs.replace(change, position=position)

    def place(self, number: int, data: str | None, sequence_number: str) -> int | None:
        """The position of a record read at ``number`` with ``data`` (None: data that
        cannot tell it from another): its number in the stream's own order; None for a
        record served again; else the next position, in the order read."""
        if number > self.last_position:
            self.last_number = self.last_position = number
            if data is not None:
                self.recent.append((number, data))
            return number
        fields = {"shard": self.shard_id, "sequence_number": sequence_number}
        if data is not None:
            if (number, data) in self.recent:
                if number not in self.told:
                    if len(self.told) >= _REMEMBERED:
                        self.told.clear()
                    self.told.add(number)
                    log.warning("a stream record was delivered again; read once", **fields)
                return None
            self.recent.append((number, data))
        if number < self.last_number:
            log.warning(
                "a stream record carries a sequence number below the last one read; applied "
                "in the order read",
                **fields,
            )
        elif number == self.last_number:
            log.warning(
                "two stream records carry one sequence number; both applied in the order read",
                **fields,
            )
        else:  # a new number, at or below positions given to records read before it
            self.last_number = number
        self.last_position += 1
        return self.last_position


@dataclass(slots=True)
class _Batch:
    """How far the intake has read one batch."""

    records: list[Any]
    next: int = 0
    last_sequence_number: str | None = None
    received: dict[Event, int] = field(default_factory=lambda: dict.fromkeys(Event, 0))


def _created_us(raw: RawRecord) -> int | None:
    """An undecodable record's creation time: the adapter's approximateArrivalTimestamp (ms)."""
    arrival = raw.get("approximateArrivalTimestamp")
    if isinstance(arrival, int | float) and not isinstance(arrival, bool) and arrival > 0:
        return int(arrival) * 1000
    return None
