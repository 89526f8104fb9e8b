"""A dead letter: a change that could not be applied, kept whole so it can be replayed."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import zlib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from replicator.exceptions import DeadLetterFormatError
from replicator.items import describe_key, image_summary, item_from_wire
from replicator.logs import redact
from replicator.records import SYNTHETIC_SEQUENCE_NUMBER, SYNTHETIC_SOURCE_PREFIX, RawRecord

ALL_DESTINATIONS = "*"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Everything needed to understand and replay one failed change.

    ``record`` is the daemon's record exactly as received (base64 ``data`` included), so a
    redrive decodes it again with whatever fix has been deployed. ``destination`` is the
    destination's label, or ``*`` when the record failed before it reached any destination
    (it could not be decoded).

    ``left_out`` is set on a letter stored with its record's OldImage left out, as a
    queue too small for it whole gets it (:meth:`without_old_image`): which image, why,
    and what identifies it.

    ``other_fields`` holds the fields of a letter written by a newer version that this
    one does not know: such a letter still replays, and one that fails again is stored
    with them, so nothing the newer version recorded is dropped.
    """

    record: RawRecord
    destination: str
    reason: str
    error: str
    task_name: str
    shard_id: str
    table: str | None = None
    region: str | None = None
    event: str | None = None
    keys: dict[str, Any] | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    attempts: int = 1
    redrive_run: str | None = None
    left_out: dict[str, Any] | None = None
    version: int = 1
    other_fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self._body(), separators=(",", ":"), sort_keys=True)

    @property
    def identity(self) -> bytes:
        """A digest of what makes two letters stand for one failure of one change: the
        task, the shard, the destination (its label, region and table: a label given to
        another table since names another destination), the record's sequence and
        subsequence numbers,
        the reason (as stored), and the record's data. A restart reads the records after
        its checkpoint again and dead-letters their failures again; those letters have
        the identity of the ones already stored. Attempts, times and error texts are left
        out (they differ between two stores of one failure); the data is in, so that
        letters of different changes sharing a sequence number (a backfill's or repair's
        are all numbered 0) are never taken for one. Of a backfill's or repair's record,
        the data without the time it was made: each run makes its record anew, and a
        scheduled ``verify --repair`` would otherwise store one more letter per run for an
        item that cannot be written."""
        record: dict[str, Any] = dict(self.record)
        named = [
            self.task_name,
            self.shard_id,
            self.destination,
            self.region,
            self.table,
            record.get("sequenceNumber"),
            record.get("subSequenceNumber"),
            redact(self.reason),
            _timeless(record)
            if record.get("sequenceNumber") == SYNTHETIC_SEQUENCE_NUMBER
            else record.get("data"),
        ]
        text = json.dumps(named, separators=(",", ":"), sort_keys=True)
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()

    def to_compact_json(self) -> str:
        """Like to_json, with the record gzip-compressed (for size-limited queues)."""
        body = self._body()
        packed = gzip.compress(json.dumps(body.pop("record")).encode("utf-8"))
        body["record_gzip_b64"] = base64.b64encode(packed).decode("ascii")
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    def _body(self) -> dict[str, Any]:
        """The letter as stored, its error text redacted as the logs are: it quotes what
        AWS said, which can quote a credential (the record is data, kept exactly)."""
        body = asdict(self)
        body["error"] = redact(self.error)
        body["reason"] = redact(self.reason)
        return {**body.pop("other_fields"), **body}

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        """A letter read back from a file or a queue, or DeadLetterFormatError naming
        what is wrong. Anything can cut a file short or send to a queue, so whatever is
        not a letter (not UTF-8, not JSON, not an object, a required field missing or of
        the wrong type, a compressed record that does not unpack) raises that error, for
        the reader to keep it aside instead of stopping at it. Unknown fields (a newer
        version's) are kept in ``other_fields``."""
        try:
            body = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        except (ValueError, RecursionError) as error:  # also UnicodeDecodeError
            raise DeadLetterFormatError(f"not JSON: {error}") from None
        if not isinstance(body, dict):
            raise DeadLetterFormatError(f"{_json_type(body)}, not a letter (a JSON object)")
        packed = body.pop("record_gzip_b64", None)
        if packed is not None:
            body["record"] = _unpacked(packed)
        values = {name: value for name, value in body.items() if name in _FIELDS}
        missing = [name for name in _REQUIRED if name not in values]
        if missing:
            raise DeadLetterFormatError("no " + ", ".join(missing))
        for name, value in values.items():
            allowed = _TYPES[name]
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise DeadLetterFormatError(f"{name} is {_json_type(value)}")
        for name in _COUNTS_FROM_ONE:
            if name in values and values[name] < 1:
                # Stored back one higher, a count of -5 would read as a letter tried -4 times.
                raise DeadLetterFormatError(f"{name} is {values[name]}, not a count from 1")
        others = {name: value for name, value in body.items() if name not in _FIELDS}
        return cls(**values, other_fields=others)

    def without_old_image(self, why: str) -> DeadLetter | None:
        """This letter with its record's OldImage left out, for a target that cannot
        hold it whole (``why``: what it could not hold); None when the record has no
        image a replay can do without.

        Only the old image of a stream's INSERT or MODIFY goes. Replaying a put writes
        its new image, and nothing a redrive runs reads the old one: the rules and the
        filters read a put's new image, and the active-active stage, which reads the old
        one, does not run in a redrive (a custom resolver is given no old image, as for
        a record of a NEW_IMAGE stream, which is what the record then reads as). A
        delete's old image is what it is ranked and checked by; a backfill's or repair's
        record keeps its OldImage, the destination item its write expects; a record
        that does not decode is kept as it arrived. The record's JSON is written again
        without the image (compact: the values as they were, not the spacing), and
        ``left_out`` names the image, ``why``, and its sha256, size and attribute names
        (:func:`~replicator.items.image_summary`)."""
        reduced = _without_old_image(self.record)
        if reduced is None:
            return None
        record, image = reduced
        return replace(
            self, record=record, left_out={"image": "OldImage", "why": why, **image_summary(image)}
        )

    def key_text(self) -> str:
        """The letter's key as a log line or a summary names it."""
        if not self.keys:
            return "(key unknown)"
        try:
            return describe_key(item_from_wire(self.keys))
        except (ValueError, TypeError):  # a letter's field, edited by hand
            return str(self.keys)

    def retried(self, error: str, reason: str, run: str | None = None) -> DeadLetter:
        """The same letter after one more failed attempt (in redrive ``run``)."""
        return replace(
            self,
            error=error,
            reason=reason,
            attempts=self.attempts + 1,
            redrive_run=run,
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )


# What from_json accepts of each field; ``other_fields`` is never read as a field.
_TYPES: dict[str, tuple[type, ...]] = {
    "record": (dict,),
    "destination": (str,),
    "reason": (str,),
    "error": (str,),
    "task_name": (str,),
    "shard_id": (str,),
    "table": (str, type(None)),
    "region": (str, type(None)),
    "event": (str, type(None)),
    "keys": (dict, type(None)),
    "time": (str,),
    "attempts": (int,),
    "redrive_run": (str, type(None)),
    "left_out": (dict, type(None)),
    "version": (int,),
}
_FIELDS = set(_TYPES)
_COUNTS_FROM_ONE = ("attempts", "version")
_REQUIRED = [
    f.name
    for f in fields(DeadLetter)
    if f.name in _FIELDS and f.default is MISSING and f.default_factory is MISSING
]


def _without_old_image(record: RawRecord) -> tuple[RawRecord, dict[str, Any]] | None:
    """``record`` without the OldImage of its stream INSERT or MODIFY, and that image;
    None for any other record (:meth:`DeadLetter.without_old_image`)."""
    try:
        document = json.loads(base64.b64decode(str(record.get("data")), validate=True))
    except (ValueError, RecursionError):  # binascii and Unicode errors too
        return None
    if not isinstance(document, dict) or document.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    source = document.get("eventSource")
    if isinstance(source, str) and source.startswith(SYNTHETIC_SOURCE_PREFIX):
        return None
    body = document.get("dynamodb")
    if not isinstance(body, dict) or not isinstance(body.get("NewImage"), dict):
        return None
    image = body.pop("OldImage", None)
    if not isinstance(image, dict) or not image:
        return None
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, escaped as the record had it
        data = json.dumps(document, separators=(",", ":")).encode("ascii")
    reduced = record.copy()
    reduced["data"] = base64.b64encode(data).decode("ascii")
    return reduced, image


def _unpacked(packed: Any) -> Any:
    """The record of a compact letter (base64 of gzip of JSON)."""
    if not isinstance(packed, str):
        raise DeadLetterFormatError(f"record_gzip_b64 is {_json_type(packed)}")
    try:
        return json.loads(gzip.decompress(base64.b64decode(packed, validate=True)))
    except (binascii.Error, OSError, EOFError, zlib.error) as error:  # BadGzipFile: OSError
        raise DeadLetterFormatError(f"record_gzip_b64 is not base64 of gzip: {error}") from None
    except (ValueError, RecursionError) as error:
        raise DeadLetterFormatError(f"record_gzip_b64 does not hold JSON: {error}") from None


def cut_short_note(line: bytes) -> str:
    """What a file's line that is an object ending before it closes most likely is: a
    letter a crash cut short as it was written (a full disk's are cut back), whose
    writer had not counted it stored, so the change was read again. A line edited by
    hand can look the same, and is a letter to repair, not remove: the note says both."""
    if not (line.lstrip().startswith(b"{") and _ends_before_it_closes(line)):
        return ""
    return (
        " (most likely a letter cut short by a crash as it was written: its change was "
        "not counted as dead-lettered and was read again, so remove the line; if it was "
        "edited by hand, repair it instead: removing it drops that change)"
    )


def _ends_before_it_closes(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as error:  # a tear inside a character, at the very end
        return "unexpected end" in error.reason and error.end >= len(line.rstrip())
    except json.JSONDecodeError as error:
        return "Unterminated" in error.msg or error.pos >= len(error.doc.rstrip())
    except (ValueError, RecursionError):
        return False
    return False


def _json_type(value: Any) -> str:
    """A JSON value as a message names it: its type, and the value itself when short."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    kind = (
        "a boolean"
        if isinstance(value, bool)
        else "a string"
        if isinstance(value, str)
        else "a number"
    )
    text = json.dumps(value)
    return f"{kind} ({text if len(text) <= 40 else text[:37] + '...'})"


def _timeless(record: dict[str, Any]) -> Any:
    """A synthetic record's data (a backfill's or repair's) without ``eventID`` and the
    creation time, both the moment the command made it; any other data as it is. Asked
    only of records numbered as synthetic ones are: a stream letter's data is not
    decoded (every letter of a live file is indexed by its identity)."""
    data = record.get("data")
    if not isinstance(data, str):
        return data
    try:
        document = json.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return data
    if not (
        isinstance(document, dict)
        and isinstance(document.get("eventSource"), str)
        and document["eventSource"].startswith(SYNTHETIC_SOURCE_PREFIX)
        and isinstance(document.get("dynamodb"), dict)
    ):
        return data
    body = {k: v for k, v in document["dynamodb"].items() if k != "ApproximateCreationDateTime"}
    kept = {k: v for k, v in document.items() if k != "eventID"} | {"dynamodb": body}
    return json.dumps(kept, separators=(",", ":"), sort_keys=True)
