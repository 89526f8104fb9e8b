"""Binary keys read from a moto stream, which writes a binary key in a record's Keys
base64-encoded twice (its images once): the job replicates them as it would a DynamoDB
stream's, puts and deletes alike, also where a delete's record carries no image."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.aws import client, create_table
from tests.support.e2e import PATIENCE, last_stream_record, stop, wait_until

KEYS = [b"\xff\xfe\x00", b"\x80", b"plain", bytes(range(256))]


def _job(name: str, endpoint: str, directory: Path) -> Path:
    job = directory / "job.yaml"
    job.write_text(
        f"task_name: {name}\n"
        f"source: {{region: us-east-1, table: {name}-src, endpoint_url: '{endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: {name}-eu, endpoint_url: '{endpoint}'}}\n"
        "conflict: {policy: overwrite}\n"
        f"dead_letter: {{kind: file, path: '{directory / 'dead.jsonl'}'}}\n"
        "metrics: {host: 127.0.0.1, port: 0}\n"
        "kcl: {idle_time_between_reads_ms: 100}\n"
    )
    return job


def _replicated(destination: Any, table: str) -> list[tuple[bytes, str]]:
    items = destination.scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted((item["pk"]["B"], item["n"]["N"]) for item in items)


def test_binary_keys_from_a_moto_stream_are_put_and_deleted_at_the_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("binary")
    source = client("dynamodb", "us-east-1", moto_endpoint)
    destination = client("dynamodb", "eu-west-1", moto_endpoint)
    create_table(source, f"{name}-src", hash_type="B")
    create_table(destination, f"{name}-eu", hash_type="B", stream=None)
    job = _job(name, moto_endpoint, tmp_path)
    for number, key in enumerate(KEYS):
        source.put_item(TableName=f"{name}-src", Item={"pk": {"B": key}, "n": {"N": str(number)}})
    source.put_item(TableName=f"{name}-src", Item={"pk": {"B": KEYS[0]}, "n": {"N": "10"}})
    source.delete_item(TableName=f"{name}-src", Key={"pk": {"B": KEYS[1]}})
    log = tmp_path / "run.log"
    with log.open("ab") as output:
        runtime = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(job)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        expected = sorted([(KEYS[0], "10"), (KEYS[2], "2"), (KEYS[3], "3")])
        wait_until(
            lambda: _replicated(destination, f"{name}-eu") == expected,
            60 * PATIENCE,
            "the binary keys replicated",
        )
    finally:
        assert stop(runtime) == 0, log.read_text()[-3000:]
    dead = tmp_path / "dead.jsonl"
    assert not dead.exists() or dead.read_text() == "", dead.read_text()


def test_a_delete_without_an_image_removes_its_binary_key_at_the_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A NEW_IMAGE stream's REMOVE has no image to hold its Keys to: the puts before it
    showed that the stream writes binary keys twice encoded, so its key is read once
    more. Read as it came, it would delete the item whose key is the base64 text of the
    deleted one's, which the source also holds."""
    name = unique("binary-new")
    source = client("dynamodb", "us-east-1", moto_endpoint)
    destination = client("dynamodb", "eu-west-1", moto_endpoint)
    create_table(source, f"{name}-src", hash_type="B", stream="NEW_IMAGE")
    create_table(destination, f"{name}-eu", hash_type="B", stream=None)
    job = _job(name, moto_endpoint, tmp_path)
    texts = [base64.b64encode(key) for key in KEYS]  # each key's base64 text, a key too
    for number, key in enumerate(KEYS + texts):
        source.put_item(TableName=f"{name}-src", Item={"pk": {"B": key}, "n": {"N": str(number)}})
    source.delete_item(TableName=f"{name}-src", Key={"pk": {"B": KEYS[1]}})
    last = last_stream_record(source, moto_endpoint, f"{name}-src")
    log = tmp_path / "run.log"
    with log.open("ab") as output:
        runtime = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(job)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
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
        assert stop(runtime) == 0, log.read_text()[-3000:]
    kept = [(key, str(number)) for number, key in enumerate(KEYS + texts) if key != KEYS[1]]
    assert _replicated(destination, f"{name}-eu") == sorted(kept)
    dead = tmp_path / "dead.jsonl"
    assert not dead.exists() or dead.read_text() == "", dead.read_text()
