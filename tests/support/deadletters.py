"""Stored dead letters that do not read as one: what a crash, a full disk, a hand edit or
another program can leave in a dead-letter file or queue."""

from __future__ import annotations

import base64
import gzip
import json

from replicator.deadletter import DeadLetter


def malformed(valid: DeadLetter) -> dict[str, bytes]:
    """Lines (without their newline) that are not letters, by what is wrong with them;
    those that are letters in shape are built from ``valid``."""
    body = json.loads(valid.to_json())
    compact = json.loads(valid.to_compact_json())

    def with_(**changes: object) -> bytes:
        changed = {**body, **changes}
        return json.dumps({k: v for k, v in changed.items() if v is not ...}).encode()

    def compact_with(packed: str) -> bytes:
        return json.dumps({**compact, "record_gzip_b64": packed}).encode()

    text = valid.to_json().encode()
    return {
        "null": b"null",
        "a string": b'"str"',
        "a number": b"5",
        "an array": b"[]",
        "cut short": text[: len(text) // 2],
        "not UTF-8": b'{"record": "\xff\xfe"}',
        "record a string": with_(record="x"),
        "record null": with_(record=None),
        "no task_name": with_(task_name=...),
        "attempts a string": with_(attempts="two"),
        "attempts a boolean": with_(attempts=True),
        "attempts below one": with_(attempts=-5),
        "version below one": with_(version=0),
        "record_gzip_b64 not gzip": compact_with(base64.b64encode(b"not gzip").decode()),
        "record_gzip_b64 not base64": compact_with("%%%"),
        "record_gzip_b64 gzip of no JSON": compact_with(
            base64.b64encode(gzip.compress(b"{nope")).decode()
        ),
    }
