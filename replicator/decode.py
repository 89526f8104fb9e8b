"""Stage 1: a daemon record -> a :class:`~replicator.records.Change`.

Two payloads arrive here, told apart per record:

* DynamoDB Streams through the Kinesis adapter (2.x and 1.x): the stream record as
  JSON, ``dynamodb.SequenceNumber`` present, ``ApproximateCreationDateTime`` in epoch
  milliseconds; adapter 2.x writes a missing image as ``{}``, adapter 1.x omits it.
* Kinesis Data Streams for DynamoDB: the same record shape without a sequence number,
  with ``tableName`` and ``ApproximateCreationDateTimePrecision`` (MILLISECOND or
  MICROSECOND); the Kinesis sequence number orders it within its shard.

Anything that does not decode raises :class:`RecordDecodeError` with a reason that
names the record; the caller dead-letters it with the raw payload and moves on.

Only what the pipeline needs is decoded here (msgspec, straight into typed structs):
the event, the keys, the times, the region and the identity. The images stay the
record's JSON (:class:`~replicator.images.Image`), checked only for being JSON objects;
what a rule reads of them is decoded when it reads it, and a put forwards the bytes.
``check_new_image`` and ``check_old_image`` check an image whole (without building the
item: :meth:`~replicator.images.Image.check`), so that a malformed one is a decode error
naming the record; the intake says which (replicator/intake.py). A put still forwards
the record's bytes: its new image's check also holds it to the record's Keys (each key
attribute there, with the same value), so that a put can never lack its key.

moto writes a binary key in a record's Keys base64-encoded twice (its images once). A
record with an image is read as its image has it; one without (a REMOVE of a NEW_IMAGE
stream) cannot be told from DynamoDB's by itself, so the stream's records teach it
(:class:`StreamKeys`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pybase64
import structlog

from replicator.epoch import SECONDS_CEILING
from replicator.exceptions import AttributeFormatError, MalformedImage, RecordDecodeError
from replicator.images import Image, stream_image
from replicator.items import Item, KeyId, item_from_wire, item_to_wire, key_id
from replicator.records import Change, Event, RawRecord

log = structlog.get_logger(__name__)

_EVENTS = {"INSERT": Event.INSERT, "MODIFY": Event.MODIFY, "REMOVE": Event.REMOVE}
_TTL_PRINCIPAL = "dynamodb.amazonaws.com"


class _Body(msgspec.Struct, rename="pascal"):
    """The record's ``dynamodb`` section: what decode reads of it. Scalars stay ``Any``
    so that a value of an unexpected type gets the same answer as a missing one."""

    keys: Any = None
    new_image: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    old_image: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    approximate_creation_date_time: Any = None
    approximate_creation_date_time_precision: Any = None


class _Record(msgspec.Struct, rename="camel"):
    event_name: Any = None
    dynamodb: _Body | None = None
    aws_region: Any = None
    user_identity: Any = None
    # Kinesis Data Streams for DynamoDB only: one data stream may carry several tables.
    table_name: Any = None


_RECORD = msgspec.json.Decoder(_Record)
_ANY = msgspec.json.Decoder()


@dataclass(slots=True)
class StreamKeys:
    """What the records of one source stream have shown of how it writes a binary key in
    a record's Keys: shared by the shards a process reads of that stream.

    DynamoDB writes it as the item holds it; moto (5.x) base64-encodes it twice there.
    A record with an image shows which (the image holds the item's own key: see
    :func:`_binary_keys_encoded_once`); a record without one (a REMOVE of a NEW_IMAGE
    stream) does not, and cannot: a real binary key may be base64 text itself. So once
    any record has shown its Keys encoded twice, the stream is known to do so, and the
    binary keys of records without an image are decoded once more; until then they are
    read as they came, as DynamoDB's are. The one record that stays ambiguous is such a
    REMOVE read before any record with an image in the process (the first record read
    after a restart, say): under moto it deletes the item keyed by the base64 text of
    the deleted key, which ``replicator verify`` then reports (docs/operator-tools.md)."""

    encoded_twice: bool = False

    def learn_encoded_twice(self) -> None:
        if not self.encoded_twice:
            self.encoded_twice = True
            log.info(
                "the source stream writes binary keys in a record's Keys base64-encoded "
                "twice (as moto does): they are read once more where a record has no image"
            )

    def taught_by(self, change: Change, keys_wire: Mapping[str, Any] | None) -> bool:
        """Whether ``keys_wire``, the keys ``change`` was read by before (a dead letter's,
        in DynamoDB JSON), show what an image would have shown: ``change`` has none, and
        its binary keys are the base64 text of those. Learned then: read its record again.
        A letter of a delete the replicator read once more, having learned the stream's
        encoding, so teaches a redrive that has read no put of the stream."""
        if self.encoded_twice or change.new is not None or change.old is not None:
            return False
        if not keys_wire:
            return False
        try:
            held = Image(item=item_from_wire(keys_wire))
        except (AttributeFormatError, RecursionError):  # a letter's field, edited by hand
            return False
        read = item_to_wire(change.keys)
        if _binary_keys_encoded_once(read, held) is read:
            return False
        self.learn_encoded_twice()
        return True


def decode(
    raw: RawRecord,
    *,
    check_new_image: bool = False,
    check_old_image: bool = False,
    read_ahead: Sequence[str] = (),
    source_table: str | None = None,
    stream_keys: StreamKeys | None = None,
) -> Change:
    """Decode one record or raise RecordDecodeError saying why (also for an image asked
    to be checked that is not well-formed). ``read_ahead``: the attributes the rules
    read of an image, kept from its check (:meth:`~replicator.images.Image.check`).
    ``source_table``: a record naming another table (``tableName``, Kinesis only) is
    decoded without its images checked: it is another job's, skipped, never written.
    ``stream_keys``: what the stream's records read before have shown of its binary
    keys, and what this one shows (None: nothing is learned, a record without an image
    is read as it came)."""
    sequence_number = raw.get("sequenceNumber")
    if not isinstance(sequence_number, str) or not sequence_number.isdigit():
        raise RecordDecodeError(f"record has no usable sequenceNumber ({sequence_number!r})")
    try:
        data = pybase64.b64decode(raw["data"], validate=True)
        if not data.isascii():
            data.decode("utf-8")  # JSON skipped inside an image is not checked for UTF-8
    except (KeyError, TypeError, ValueError) as error:  # binascii and Unicode errors too
        raise RecordDecodeError(
            f"record {sequence_number}: data is not base64 of UTF-8 text ({error})"
        ) from None
    try:
        document = _RECORD.decode(data)
    except msgspec.ValidationError as error:
        raise _explained(data, f"record {sequence_number}", error) from None
    except msgspec.DecodeError as error:
        raise RecordDecodeError(f"record {sequence_number}: data is not JSON ({error})") from None
    except RecursionError:  # DynamoDB nests at most 32 levels: a hand-made record
        raise RecordDecodeError(
            f"record {sequence_number}: data is nested too deeply to read"
        ) from None
    try:
        change = _change(document, raw, sequence_number, stream_keys)
        if source_table is not None and change.table not in (None, source_table):
            return change
        if check_new_image and change.new is not None:
            change.new.check(read_ahead, change.key)
        if check_old_image and change.old is not None:
            change.old.check(read_ahead)
        return change
    except (AttributeFormatError, MalformedImage) as error:
        raise RecordDecodeError(f"record {sequence_number}: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise RecordDecodeError(
            f"record {sequence_number}: malformed stream record ({error!r})"
        ) from None


def _explained(data: bytes, where: str, error: msgspec.ValidationError) -> RecordDecodeError:
    """Why a record that is JSON does not have the shape of a stream record."""
    document = _ANY.decode(data)
    if not isinstance(document, Mapping):
        return RecordDecodeError(f"{where}: data is JSON but not an object")
    if not isinstance(document.get("dynamodb"), Mapping):
        return RecordDecodeError(f"{where}: no 'dynamodb' section")
    return RecordDecodeError(f"{where}: malformed stream record ({error})")


def _change(
    document: _Record, raw: RawRecord, sequence_number: str, stream_keys: StreamKeys | None
) -> Change:
    event = _EVENTS.get(document.event_name)
    if event is None:
        raise RecordDecodeError(
            f"record {sequence_number}: eventName {document.event_name!r} is not INSERT, "
            "MODIFY or REMOVE"
        )
    body = document.dynamodb
    if body is None:
        raise RecordDecodeError(f"record {sequence_number}: no 'dynamodb' section")
    table = document.table_name
    if table is not None and not isinstance(table, str):
        # Not "this job's table" (which is what no tableName means: DynamoDB Streams
        # records carry none): whose change it is cannot be told.
        raise RecordDecodeError(
            f"record {sequence_number}: tableName {table!r} is not a table name"
        )
    keys_wire = body.keys
    if type(keys_wire) is not dict or not keys_wire:
        raise RecordDecodeError(f"record {sequence_number}: no Keys")
    new = stream_image(body.new_image)
    old = stream_image(body.old_image)
    keys, key = _keys(keys_wire, old if event is Event.REMOVE else new, stream_keys)
    if event is not Event.REMOVE and new is None:
        raise RecordDecodeError(
            f"record {sequence_number}: {event.value} without NewImage; "
            + (
                # Kinesis Data Streams for DynamoDB has no view type: both images, always.
                "a Kinesis Data Streams for DynamoDB record always carries it (this one "
                "was not written by DynamoDB)"
                if table is not None
                else "the stream view type must be NEW_IMAGE or NEW_AND_OLD_IMAGES"
            )
        )
    ttl_delete = event is Event.REMOVE and _by_ttl(document.user_identity)
    # Before the creation time, as the record's other faults are: ``isdigit`` passes
    # digits ``int`` refuses (``"²"``), and the reason given must stay this one.
    position = int(sequence_number)
    created = body.approximate_creation_date_time
    if (
        type(created) is int
        and created >= SECONDS_CEILING
        and (body.approximate_creation_date_time_precision is None)
    ):
        created_us = created * 1000  # a DynamoDB stream's milliseconds, without a call
    else:
        created_us = _created_us(body, raw)
    return Change(
        sequence_number=sequence_number,
        position=position,
        event=event,
        key=key,
        keys=keys,
        new=new,
        old=old,
        created_us=created_us,
        region=str(document.aws_region or ""),
        ttl_delete=ttl_delete,
        raw=raw,
        table=table,
    )


def _by_ttl(identity: Any) -> bool:
    """Whether a REMOVE's ``userIdentity`` is DynamoDB's TTL service principal."""
    return (
        isinstance(identity, Mapping)
        and identity.get("type", identity.get("Type")) == "Service"
        and identity.get("principalId", identity.get("PrincipalId")) == _TTL_PRINCIPAL
    )


def _keys(
    keys_wire: dict[str, Any], image: Image | None, stream_keys: StreamKeys | None
) -> tuple[Item, KeyId]:
    """The record's keys in boto3 form and their identity. Keys that are all strings,
    the common case, need neither a conversion nor a canonical number: their JSON,
    freshly decoded and owned by this record, is already both. ``image``: the one the
    change is ranked by (the new image, or a delete's old one), if the record has it."""
    parts = []
    for name, value in keys_wire.items():
        if type(value) is not dict or len(value) != 1 or type(value.get("S")) is not str:
            if image is not None:
                held = _binary_keys_encoded_once(keys_wire, image)
                if held is not keys_wire and stream_keys is not None:
                    stream_keys.learn_encoded_twice()
                keys_wire = held
            elif stream_keys is not None and stream_keys.encoded_twice:
                keys_wire = _binary_keys_decoded_once_more(keys_wire)
            keys = item_from_wire(keys_wire, has_binary=False)  # converts a binary key
            return keys, key_id(keys)
        parts.append((name, "S", value["S"]))
    parts.sort()
    return keys_wire, tuple(parts)


def _binary_keys_encoded_once(keys_wire: dict[str, Any], image: Image) -> dict[str, Any]:
    """``keys_wire`` with each binary key that moto encoded twice read as the image has it.

    moto (5.x) writes a binary key in a record's ``Keys`` base64-encoded twice, and in the
    images once; read as they are, its bytes would be the base64 text of the item's key:
    a put would be refused for a key that differs from its image, and a delete would
    remove an item that does not exist. A key whose bytes are exactly the base64 text
    of the image's value for it is that value (a DynamoDB stream never writes one so:
    the image holds the item's own key)."""
    fixed: dict[str, Any] | None = None
    for name, value in keys_wire.items():
        if type(value) is not dict or len(value) != 1 or type(value.get("B")) is not str:
            continue
        held = image.get(name)
        if held is None or type(held.get("B")) is not bytes:
            continue
        once = base64.b64encode(held["B"])
        try:
            twice = base64.b64decode(value["B"], validate=True)
        except ValueError:  # not base64: the key's own check names it
            continue
        if twice == once and value["B"] != once.decode("ascii"):
            fixed = fixed if fixed is not None else dict(keys_wire)
            fixed[name] = {"B": once.decode("ascii")}
    return keys_wire if fixed is None else fixed


def _binary_keys_decoded_once_more(keys_wire: dict[str, Any]) -> dict[str, Any]:
    """``keys_wire`` of a record without an image, from a stream known to encode binary
    keys twice (:class:`StreamKeys`): each binary key decoded once, where that leaves
    base64 (anything else is left as it came, for the key's own check to judge)."""
    fixed: dict[str, Any] | None = None
    for name, value in keys_wire.items():
        if type(value) is not dict or len(value) != 1 or type(value.get("B")) is not str:
            continue
        try:
            once = base64.b64decode(value["B"], validate=True)
            base64.b64decode(once, validate=True)  # the key moto encoded twice
        except ValueError:  # binascii.Error too
            continue
        fixed = fixed if fixed is not None else dict(keys_wire)
        fixed[name] = {"B": once.decode("ascii")}
    return keys_wire if fixed is None else fixed


def _created_us(body: _Body, raw: RawRecord) -> int:
    value = body.approximate_creation_date_time
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        precision = body.approximate_creation_date_time_precision
        if precision == "MICROSECOND":
            return int(value)
        if value < SECONDS_CEILING:  # milliseconds of no date after 1973: seconds
            return int(value * 1_000_000)
        return int(value * 1000)
    arrival = raw.get("approximateArrivalTimestamp")
    if isinstance(arrival, int | float) and arrival > 0:
        return int(arrival * 1000)
    raise RecordDecodeError(
        f"record {raw.get('sequenceNumber')}: no ApproximateCreationDateTime and no arrival time"
    )
