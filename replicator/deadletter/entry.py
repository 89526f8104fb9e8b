"""A dead letter: a change that could not be applied, kept whole so it can be replayed."""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from replicator.records import RawRecord

ALL_DESTINATIONS = "*"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Everything needed to understand and replay one failed change.

    ``record`` is the daemon's record exactly as received (base64 ``data`` included), so a
    redrive decodes it again with whatever fix has been deployed. ``destination`` is the
    destination's label, or ``*`` when the record failed before it reached any destination
    (it could not be decoded).
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    def to_compact_json(self) -> str:
        """Like to_json, with the record gzip-compressed (for size-limited queues)."""
        body = asdict(self)
        packed = gzip.compress(json.dumps(body.pop("record")).encode("utf-8"))
        body["record_gzip_b64"] = base64.b64encode(packed).decode("ascii")
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeadLetter:
        body = json.loads(text)
        packed = body.pop("record_gzip_b64", None)
        if packed is not None:
            body["record"] = json.loads(gzip.decompress(base64.b64decode(packed)))
        return cls(**body)

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
