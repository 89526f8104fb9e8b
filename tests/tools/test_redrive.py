"""``replicator redrive`` against a moto server over HTTP: fixed letters are applied and
leave the target, failing ones stay with one more attempt (file and SQS targets)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from replicator.config import load_job
from replicator.deadletter import ALL_DESTINATIONS, DeadLetter, FileDeadLetters, SqsDeadLetters
from replicator.demo import tables
from replicator.items import Item, item_to_wire
from replicator.records import RawRecord
from replicator.tools.redrive import Redrive
from replicator.tools.snapshot import BACKFILL, synthetic_change
from tests.support.aws import client
from tests.support.e2e import Job
from tests.support.records import daemon_record, stream_record

LWW = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}"


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("redrive"), tmp_path)


def image(pk: str, updated_at: Any = 100, **extra: str) -> Item:
    stamp = updated_at if isinstance(updated_at, dict) else {"N": str(updated_at)}
    found: Item = {"pk": {"S": pk}, "sk": {"N": "1"}, "updated_at": stamp}
    found.update({name: {"S": value} for name, value in extra.items()})
    return found


def keys_of(item: Item) -> Item:
    return {"pk": item["pk"], "sk": item["sk"]}


def stream_letter(
    job: Job, destination: str, item: Item, seq: int, reason: str, error: str
) -> DeadLetter:
    record = daemon_record(stream_record("MODIFY", keys_of(item), item_to_wire(item), seq=seq), seq)
    return _letter(job, destination, record, reason, error, keys_of(item))


def _letter(
    job: Job, destination: str, record: RawRecord, reason: str, error: str, keys: Item | None
) -> DeadLetter:
    return DeadLetter(
        record=record,
        destination=destination,
        reason=reason,
        error=error,
        task_name=job.name,
        shard_id="shardId-1",
        event="MODIFY",
        keys=item_to_wire(keys) if keys else None,
    )


def get(job: Job, number: int, item: Item) -> Item | None:
    ddb, table = job.destination_clients()[number]
    found: Item | None = ddb.get_item(TableName=table, Key=keys_of(item), ConsistentRead=True).get(
        "Item"
    )
    return found


def redrive(job: Job) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", "redrive", "--config", str(job.path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_letters_whose_cause_is_fixed_are_applied_and_failing_ones_stay(job: Job) -> None:
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    x = image("x", name="waited for its table")
    y = image("y", updated_at={"BOOL": True})  # last_writer_wins cannot order it, ever
    z = image("z", name="decodes now")
    target.put(
        stream_letter(job, eu_label, x, 11, "access_denied", "ResourceNotFoundException: gone")
    )
    target.put(stream_letter(job, eu_label, y, 12, "unplannable", "updated_at is of type BOOL"))
    garbage = daemon_record(b"\xff not base64 of json", 13)
    garbage["data"] = "%%%"
    target.put(_letter(job, ALL_DESTINATIONS, garbage, "undecodable", "not base64", None))
    decodable = daemon_record(stream_record("MODIFY", keys_of(z), item_to_wire(z), seq=14), 14)
    target.put(_letter(job, ALL_DESTINATIONS, decodable, "undecodable", "an old bug", keys_of(z)))
    eu, eu_table = job.destination_clients()[0]
    eu.delete_table(TableName=eu_table)  # the cause is not fixed yet

    first = redrive(job)

    assert first.returncode == 1, first.stderr
    assert "4 letters, 0 replayed, 4 failed again" in first.stdout
    assert get(job, 1, z) == z  # the * letter reached the destination that works
    kept = {
        (letter.destination, letter.record["sequenceNumber"]): letter for letter in target.letters()
    }
    assert set(kept) == {(eu_label, "11"), (eu_label, "12"), ("*", "13"), (eu_label, "14")}
    assert all(letter.attempts == 2 and letter.redrive_run for letter in kept.values())
    assert kept[(eu_label, "11")].reason == "refused"
    assert "ResourceNotFoundException" in kept[(eu_label, "11")].error
    assert kept[(eu_label, "12")].reason == "unplannable"
    assert kept[("*", "13")].reason == "undecodable"
    assert "ResourceNotFoundException" in kept[(eu_label, "14")].error

    tables.create(eu, eu_table, stream=False)  # the cause is fixed
    second = redrive(job)

    assert second.returncode == 1
    assert "4 letters, 2 replayed, 2 failed again" in second.stdout
    assert get(job, 0, x) == x
    assert get(job, 0, z) == z
    left = sorted((letter.destination, letter.attempts) for letter in target.letters())
    assert left == [("*", 3), (eu_label, 3)]
    assert target.count() == 2


def test_sqs_letters_replay_with_the_safeguards_of_their_origin(job: Job) -> None:
    sqs = client("sqs", "us-east-1", job.endpoint)
    queue = sqs.create_queue(QueueName=f"{job.name}-dlq")["QueueUrl"]
    text = job.path.read_text().replace(LWW, "conflict: {policy: overwrite}")
    text = text.replace(
        f"dead_letter: {{kind: file, path: '{job.dead_letters}'}}",
        f"dead_letter: {{kind: sqs, queue_url: '{queue}', endpoint_url: '{job.endpoint}'}}",
    )
    job.path.write_text(text)
    eu_label, ap_label = (f"{region}/{table}" for region, table in job.destinations)
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    target = SqsDeadLetters(sqs, queue)
    # A backfill's copy of W, older than what the destination holds since: kept there.
    w_read, w_newer = image("w", 1, v="read"), image("w", 2, v="replicated since")
    eu.put_item(TableName=eu_table, Item=w_newer)
    copy = synthetic_change(BACKFILL, keys_of(w_read), "us-east-1", new_image=w_read, expected=None)
    target.put(_letter(job, eu_label, copy.raw, "rejected", "throttled too long", keys_of(w_read)))
    # A backfill's copy of V, which the source has deleted since: not brought back.
    v = image("v")
    copy = synthetic_change(BACKFILL, keys_of(v), "us-east-1", new_image=v, expected=None)
    target.put(_letter(job, ap_label, copy.raw, "rejected", "throttled too long", keys_of(v)))
    # A stream change the destination rejects for good (its key has the wrong type).
    bad = {"pk": {"S": "b"}, "sk": {"S": "not a number"}}
    target.put(stream_letter(job, eu_label, bad, 21, "rejected", "ValidationException"))
    # A stream change that simply applies now.
    u = image("u", name="fine")
    target.put(stream_letter(job, ap_label, u, 22, "rejected", "a transient refusal"))

    runner = Redrive(load_job(job.path))
    report = runner.run()

    assert (report.replayed, report.failed, report.exit_code) == (3, 1, 1)
    assert eu.get_item(TableName=eu_table, Key=keys_of(w_read))["Item"] == w_newer
    assert ap.get_item(TableName=ap_table, Key=keys_of(v), ConsistentRead=True).get("Item") is None
    assert ap.get_item(TableName=ap_table, Key=keys_of(u))["Item"] == u
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    (message,) = messages["Messages"]
    left = DeadLetter.from_json(message["Body"])
    assert left.record["sequenceNumber"] == "21"
    assert (left.attempts, left.redrive_run, left.reason) == (2, runner.run_id, "rejected")
    assert "ValidationException" in left.error


def test_nothing_to_redrive_exits_0(job: Job) -> None:
    report = Redrive(load_job(job.path)).run()
    assert report.exit_code == 0
    assert report.text() == f"redrive: no dead letters in file {job.dead_letters}"
