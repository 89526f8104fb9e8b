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
from replicator.logs import redact
from replicator.records import RawRecord

ALL_DESTINATIONS = "*"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Everything needed to understand and replay one failed change.

    ``record`` is the daemon's record exactly as received (base64 ``data`` included), so a
    redrive decodes it again with whatever fix has been deployed. ``destination`` is the
    destination's label, or ``*`` when the record failed before it reached any destination
    (it could not be decoded).

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
    version: int = 1
    other_fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self._body(), separators=(",", ":"), sort_keys=True)

    @property
    def identity(self) -> bytes:
        """A digest of what makes two letters stand for one failure of one change: the
        task, the shard, the destination, the record's sequence and subsequence numbers,
        the reason (as stored), and the record's data. A restart reads the records after
        its checkpoint again and dead-letters their failures again; those letters have
        the identity of the ones already stored. Attempts, times and error texts are left
        out (they differ between two stores of one failure); the data is in, so that
        letters of different changes sharing a sequence number (a backfill's or repair's
        are all numbered 0) are never taken for one."""
        record: dict[str, Any] = dict(self.record)
        named = [
            self.task_name,
            self.shard_id,
            self.destination,
            record.get("sequenceNumber"),
            record.get("subSequenceNumber"),
            redact(self.reason),
            record.get("data"),
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
        others = {name: value for name, value in body.items() if name not in _FIELDS}
        return cls(**values, other_fields=others)

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
    "version": (int,),
}
_FIELDS = set(_TYPES)
_REQUIRED = [
    f.name
    for f in fields(DeadLetter)
    if f.name in _FIELDS and f.default is MISSING and f.default_factory is MISSING
]


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
