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
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from replicator.exceptions import AttributeFormatError, RecordDecodeError
from replicator.items import Item, item_from_wire, key_id
from replicator.records import Change, Event, RawRecord

_EVENTS = {"INSERT": Event.INSERT, "MODIFY": Event.MODIFY, "REMOVE": Event.REMOVE}
_TTL_PRINCIPAL = "dynamodb.amazonaws.com"
# Below this an epoch value cannot be milliseconds of any date after 1973: it is seconds.
_SECONDS_CEILING = 100_000_000_000


def decode(raw: RawRecord) -> Change:
    """Decode one record or raise RecordDecodeError saying why."""
    sequence_number = raw.get("sequenceNumber")
    if not isinstance(sequence_number, str) or not sequence_number.isdigit():
        raise RecordDecodeError(f"record has no usable sequenceNumber ({sequence_number!r})")
    where = f"record {sequence_number}"
    try:
        text = base64.b64decode(raw["data"], validate=True).decode("utf-8")
    except (KeyError, TypeError, ValueError) as error:  # binascii and Unicode errors too
        raise RecordDecodeError(f"{where}: data is not base64 of UTF-8 text ({error})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordDecodeError(f"{where}: data is not JSON ({error})") from None
    if not isinstance(document, Mapping):
        raise RecordDecodeError(f"{where}: data is JSON but not an object")
    has_binary = '"B"' in text or '"BS"' in text
    try:
        return _change(document, raw, sequence_number, has_binary)
    except AttributeFormatError as error:
        raise RecordDecodeError(f"{where}: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise RecordDecodeError(f"{where}: malformed stream record ({error!r})") from None


def _change(
    document: Mapping[str, Any], raw: RawRecord, sequence_number: str, has_binary: bool
) -> Change:
    where = f"record {sequence_number}"
    event = _EVENTS.get(document.get("eventName", ""))
    if event is None:
        raise RecordDecodeError(
            f"{where}: eventName {document.get('eventName')!r} is not INSERT, MODIFY or REMOVE"
        )
    body = document.get("dynamodb")
    if not isinstance(body, Mapping):
        raise RecordDecodeError(f"{where}: no 'dynamodb' section")
    keys_wire = body.get("Keys")
    if not isinstance(keys_wire, Mapping) or not keys_wire:
        raise RecordDecodeError(f"{where}: no Keys")
    keys = item_from_wire(keys_wire, has_binary=has_binary)
    new_image = _image(body.get("NewImage"), has_binary)
    old_image = _image(body.get("OldImage"), has_binary)
    if event is not Event.REMOVE and new_image is None:
        raise RecordDecodeError(
            f"{where}: {event.value} without NewImage; the stream view type must be "
            "NEW_IMAGE or NEW_AND_OLD_IMAGES"
        )
    identity = document.get("userIdentity") or {}
    ttl_delete = (
        event is Event.REMOVE
        and isinstance(identity, Mapping)
        and identity.get("type") == "Service"
        and identity.get("principalId") == _TTL_PRINCIPAL
    )
    return Change(
        sequence_number=sequence_number,
        position=int(sequence_number),
        event=event,
        key=key_id(keys),
        keys=keys,
        new_image=new_image,
        old_image=old_image,
        created_us=_created_us(body, raw),
        region=str(document.get("awsRegion") or ""),
        ttl_delete=ttl_delete,
        raw=raw,
    )


def _image(value: Any, has_binary: bool) -> Item | None:
    # Adapter 2.x writes an absent image as {}; adapter 1.x and Kinesis omit it.
    if value is None or value == {}:
        return None
    return item_from_wire(value, has_binary=has_binary)


def _created_us(body: Mapping[str, Any], raw: RawRecord) -> int:
    value = body.get("ApproximateCreationDateTime")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        precision = body.get("ApproximateCreationDateTimePrecision")
        if precision == "MICROSECOND":
            return int(value)
        if value < _SECONDS_CEILING:
            return int(value * 1_000_000)
        return int(value * 1000)
    arrival = raw.get("approximateArrivalTimestamp")
    if isinstance(arrival, int | float) and arrival > 0:
        return int(arrival * 1000)
    raise RecordDecodeError(
        f"record {raw.get('sequenceNumber')}: no ApproximateCreationDateTime and no arrival time"
    )
