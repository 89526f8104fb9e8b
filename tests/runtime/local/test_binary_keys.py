"""Binary keys read from a moto stream, which writes a binary key in a record's Keys
base64-encoded twice (its images once): the job replicates them as it would a DynamoDB
stream's, puts and deletes alike, also where a delete's record carries no image."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.e2e import binary_key_job, last_stream_record, stop, wait_until

KEYS = [b"\xff\xfe\x00", b"\x80", b"plain", bytes(range(256))]


def _started(job: Path) -> subprocess.Popen[bytes]:
    """``replicator run`` of ``job``, its output in run.log beside it."""
    with (job.parent / "run.log").open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(job)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _stopped(runtime: subprocess.Popen[bytes], job: Path) -> None:
    """Stop ``runtime`` cleanly; no change of the job was dead-lettered."""
    assert stop(runtime) == 0, (job.parent / "run.log").read_text()[-3000:]
    dead = job.parent / "dead.jsonl"
    assert not dead.exists() or dead.read_text() == "", dead.read_text()


def _replicated(destination: Any, table: str) -> list[tuple[bytes, str]]:
    items = destination.scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted((item["pk"]["B"], item["n"]["N"]) for item in items)


def test_binary_keys_from_a_moto_stream_are_put_and_deleted_at_the_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("binary")
    job, source, destination = binary_key_job(
        moto_endpoint, name, tmp_path, stream="NEW_AND_OLD_IMAGES"
    )
    for number, key in enumerate(KEYS):
        source.put_item(TableName=f"{name}-src", Item={"pk": {"B": key}, "n": {"N": str(number)}})
    source.put_item(TableName=f"{name}-src", Item={"pk": {"B": KEYS[0]}, "n": {"N": "10"}})
    source.delete_item(TableName=f"{name}-src", Key={"pk": {"B": KEYS[1]}})
    runtime = _started(job)
    try:
        expected = sorted([(KEYS[0], "10"), (KEYS[2], "2"), (KEYS[3], "3")])
        wait_until(
            lambda: _replicated(destination, f"{name}-eu") == expected,
            60,
            "the binary keys replicated",
        )
    finally:
        _stopped(runtime, job)


def test_a_delete_without_an_image_removes_its_binary_key_at_the_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A NEW_IMAGE stream's REMOVE has no image to hold its Keys to: the puts before it
    showed that the stream writes binary keys twice encoded, so its key is read once
    more. Read as it came, it would delete the item whose key is the base64 text of the
    deleted one's, which the source also holds."""
    name = unique("binary-new")
    job, source, destination = binary_key_job(moto_endpoint, name, tmp_path, stream="NEW_IMAGE")
    texts = [base64.b64encode(key) for key in KEYS]  # each key's base64 text, a key too
    for number, key in enumerate(KEYS + texts):
        source.put_item(TableName=f"{name}-src", Item={"pk": {"B": key}, "n": {"N": str(number)}})
    source.delete_item(TableName=f"{name}-src", Key={"pk": {"B": KEYS[1]}})
    last = last_stream_record(source, moto_endpoint, f"{name}-src")
    runtime = _started(job)
    try:

        def checkpoint() -> str | None:
            try:
                leases = source.scan(TableName=name, ConsistentRead=True)["Items"]
            except source.exceptions.ResourceNotFoundException:  # not yet made
                return None
            return leases[0]["checkpoint"]["S"] if leases else None

        # The checkpoint passes the delete once it is applied: the destination then holds
        # what it will hold.
        wait_until(lambda: checkpoint() == last, 60, "the checkpoint to pass the delete")
    finally:
        _stopped(runtime, job)
    kept = [(key, str(number)) for number, key in enumerate(KEYS + texts) if key != KEYS[1]]
    assert _replicated(destination, f"{name}-eu") == sorted(kept)
