"""Binary keys read from a moto stream, which writes a binary key in a record's Keys
base64-encoded twice (its images once): the job replicates them as it would a DynamoDB
stream's, puts and deletes alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.aws import client, create_table
from tests.support.e2e import PATIENCE, stop, wait_until

KEYS = [b"\xff\xfe\x00", b"\x80", b"plain", bytes(range(256))]


def test_binary_keys_from_a_moto_stream_are_put_and_deleted_at_the_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("binary")
    source = client("dynamodb", "us-east-1", moto_endpoint)
    destination = client("dynamodb", "eu-west-1", moto_endpoint)
    create_table(source, f"{name}-src", hash_type="B")
    create_table(destination, f"{name}-eu", hash_type="B", stream=None)
    dead = tmp_path / "dead.jsonl"
    job = tmp_path / "job.yaml"
    job.write_text(
        f"task_name: {name}\n"
        f"source: {{region: us-east-1, table: {name}-src, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: {name}-eu, endpoint_url: '{moto_endpoint}'}}\n"
        "conflict: {policy: overwrite}\n"
        f"dead_letter: {{kind: file, path: '{dead}'}}\n"
        "metrics: {host: 127.0.0.1, port: 0}\n"
        "kcl: {idle_time_between_reads_ms: 100}\n"
    )
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

        def replicated() -> list[tuple[bytes, str]]:
            items = destination.scan(TableName=f"{name}-eu", ConsistentRead=True)["Items"]
            return sorted((item["pk"]["B"], item["n"]["N"]) for item in items)

        expected = sorted([(KEYS[0], "10"), (KEYS[2], "2"), (KEYS[3], "3")])
        wait_until(lambda: replicated() == expected, 60 * PATIENCE, "the binary keys replicated")
    finally:
        assert stop(runtime) == 0, log.read_text()[-3000:]
    assert not dead.exists() or dead.read_text() == "", dead.read_text()
