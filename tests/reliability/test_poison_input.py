"""Poison input: items a destination rejects and records nobody can decode are
dead-lettered, the rest flows, and the checkpoint moves past them."""

from __future__ import annotations

import base64
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from replicator.demo.workload import Workload, demo_item
from replicator.items import Item, key_id
from replicator.runtime.local.protocol import ProcessorChild
from replicator.runtime.local.runtime import processor_command
from replicator.shards.stream import to_daemon_record
from tests.support.aws import client
from tests.support.e2e import PATIENCE, stop, wait_until
from tests.support.reliability import (
    SETTLE_S,
    Figures,
    ProxiedJob,
    Samples,
    checkpoint_reaches_the_end,
    dead_letters,
    during,
    settle,
    wait_started,
    with_email_index,
)

pytestmark = pytest.mark.reliability


def test_items_a_destination_rejects_are_dead_lettered_and_the_rest_flows(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    job = ProxiedJob(moto_endpoint, unique("reject"), tmp_path)
    eu_region, eu_table = job.destinations[0]
    eu = client("dynamodb", eu_region, moto_endpoint)
    with_email_index(eu, eu_table)
    samples = Samples(tmp_path / "metrics")
    rng = random.Random(4)
    # The source has no index on email, so it takes any email; eu's index key must be a
    # non-empty string, and moto (like DynamoDB) answers 400 ValidationException otherwise.
    poison = {
        ("poison-1", 1): {"NULL": True},
        ("poison-2", 2): {"S": ""},
        ("poison-3", 3): {"NULL": True},
    }
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=10, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    try:
        wait_started(job, runtime)
        workload.start()
        for (pk, sk), email in poison.items():
            during(2, workload)
            item = {**demo_item(rng, pk, sk, "us-east-1"), "email": email}
            job.source.put_item(TableName=job.source_table, Item=item)
        wait_until(
            lambda: len(dead_letters(job.dead_letters)) == len(poison), 30, "three dead letters"
        )
        # Good items with an email flow, and a later valid version of a rejected one too.
        for index in range(5):
            item = {**demo_item(rng, "with-email", index, "us-east-1")}
            item["email"] = {"S": f"user{index}@example.com"}
            job.source.put_item(TableName=job.source_table, Item=item)
        fixed = {**demo_item(rng, "poison-3", 3, "us-east-1"), "email": {"S": "p3@example.com"}}
        job.source.put_item(TableName=job.source_table, Item=fixed)
        workload.join(60)
        assert workload.error is None
        still_rejected = {key_id(_key(pk, sk)) for pk, sk in list(poison)[:2]}

        def unexplained() -> dict[str, list[Any]]:
            found = job.differences()
            if eu_table in found:
                found[eu_table] = [d for d in found[eu_table] if d.key not in still_rejected]
            return {table: diff for table, diff in found.items() if diff}

        lost = settle(unexplained, SETTLE_S)
        checkpoint = checkpoint_reaches_the_end(job)
    finally:
        assert stop(runtime) == 0
    letters = dead_letters(job.dead_letters)
    figures = Figures(
        "4a. items a destination rejects", sent=workload.stats.total + len(poison) + 6, lost=lost
    )
    samples.fill(figures)
    figures.details = {
        "dead letters": [
            f"{letter['keys']['pk']['S']} -> {letter['destination']}: {letter['reason']}: "
            f"{letter['error'][:150]}"
            for letter in letters
        ],
        "checkpoint": f"{checkpoint} (the last stream record)",
    }
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 3
    assert sorted(
        (letter["keys"]["pk"]["S"], letter["destination"], letter["reason"]) for letter in letters
    ) == [(pk, job.label(0), "rejected") for pk, _ in sorted(poison)]
    assert all("email" in letter["error"] for letter in letters)
    eu_differences = {d.key: d.kind for d in job.differences().get(eu_table, [])}
    # Only the two items whose last version is still rejected are missing at eu; the
    # third was replaced by a valid version, which was applied.
    assert eu_differences == dict.fromkeys(still_rejected, "missing")


def _key(pk: str, sk: int) -> Item:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def _renumbered(record: dict[str, Any], sequence_number: str) -> dict[str, Any]:
    document = json.loads(base64.b64decode(record["data"]))
    document["dynamodb"]["SequenceNumber"] = sequence_number
    data = base64.b64encode(json.dumps(document).encode()).decode()
    return {
        **record,
        "data": data,
        "sequenceNumber": sequence_number,
        "partitionKey": sequence_number,
    }


def _garbage(data: str, sequence_number: str) -> dict[str, Any]:
    return {
        "action": "record",
        "data": data,
        "partitionKey": sequence_number,
        "sequenceNumber": sequence_number,
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": int(time.time() * 1000),
    }


def _b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode()


UNDECODABLE = [
    "%%% not base64 %%%",
    _b64(b"\xff\xfe\x00 not utf-8"),
    _b64(b"[1, 2, 3]"),
    _b64(json.dumps({"eventName": "UPSERT", "dynamodb": {"Keys": {"pk": {"S": "a"}}}}).encode()),
    _b64(
        json.dumps(
            {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"X": "1"}}, "NewImage": {}}}
        ).encode()
    ),
    _b64(b'{"eventName": "INSERT", "dynamodb": {"Keys'),
]


def test_undecodable_records_are_dead_lettered_and_the_checkpoint_moves_past_them(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Undecodable records cannot come out of a real stream, so this test is the daemon.

    It reads the source table's real stream records, mixes the garbage in (numbering
    the records itself, as a stream's sequence numbers have gaps), and drives the
    processor child over the MultiLang protocol with the local runtime's own driver
    (ProcessorChild), answering its checkpoints as the lease table would.
    """
    job = ProxiedJob(moto_endpoint, unique("garbage"), tmp_path)
    samples = Samples(tmp_path / "metrics")
    rng = random.Random(6)
    changes = 0
    for index in range(70):
        job.source.put_item(
            TableName=job.source_table,
            Item=demo_item(rng, f"p{index % 25}", index % 5, "us-east-1"),
        )
        changes += 1
    for index in range(0, 25, 4):
        job.source.delete_item(TableName=job.source_table, Key=_key(f"p{index}", index % 5))
        changes += 1
    streams = client("dynamodbstreams", job.source_region, moto_endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    real = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    assert len(real) >= changes
    records: list[dict[str, Any]] = []
    injected: list[str] = []
    every = len(real) // (len(UNDECODABLE) - 1)
    for index, record in enumerate(real):
        records.append(_renumbered(to_daemon_record(record), str(1000 + index * 10)))
        if index % every == every // 2 and len(injected) < len(UNDECODABLE) - 1:
            injected.append(str(1000 + index * 10 + 5))
            records.append(_garbage(UNDECODABLE[len(injected) - 1], injected[-1]))
    injected.append(str(1000 + len(real) * 10 + 5))  # the very last record is garbage too
    records.append(_garbage(UNDECODABLE[-1], injected[-1]))
    last = records[-1]["sequenceNumber"]

    delivered: list[int] = [0]
    checkpoints: list[str | None] = []

    def on_checkpoint(sequence_number: str | None, sub: int | None) -> str | None:
        checkpoints.append(sequence_number)
        if sequence_number is None or int(sequence_number) > delivered[0]:
            return "InvalidStateException"
        return None

    # The child's logs (stderr) go to a file, as the runtime's do in the other scenarios.
    log = tmp_path / "processor.log"
    argv = ["/bin/sh", "-c", f'exec "$0" "$@" 2>>"{log}"', *processor_command(job.path)]
    child = ProcessorChild(argv, {**os.environ, **samples.env}, on_checkpoint, name="garbage")
    child.start()
    try:
        child.initialize("shardId-garbage", "TRIM_HORIZON", 0)
        for start in range(0, len(records), 25):
            batch = records[start : start + 25]
            delivered[0] = int(batch[-1]["sequenceNumber"])
            child.process_records(batch, 0)
        deadline = time.monotonic() + 30 * PATIENCE
        while last not in checkpoints:
            assert time.monotonic() < deadline, f"no checkpoint at {last}: {checkpoints[-3:]}"
            child.process_records([], 0)  # an idle daemon's empty batches
            time.sleep(0.1)
        child.shutdown_requested(timeout=30)
        assert child.close(timeout=30) == 0
    finally:
        child.kill()
    lost = settle(job.differences, 10)
    letters = dead_letters(job.dead_letters)
    figures = Figures(
        "4b. undecodable records (fed over the MultiLang protocol)", sent=changes, lost=lost
    )
    samples.fill(figures)
    figures.details = {
        "stream records + garbage records": f"{len(real)} + {len(injected)}",
        "dead letters": [
            f"{letter['record']['sequenceNumber']} -> {letter['destination']}: "
            f"{letter['reason']}: {letter['error'][:70]}"
            for letter in letters
        ],
        "checkpoints": f"{len(checkpoints)}, the last at {checkpoints[-1]} (last record {last})",
    }
    figures.report()
    assert figures.lost == 0
    assert sorted(letter["record"]["sequenceNumber"] for letter in letters) == sorted(injected)
    assert {(letter["destination"], letter["reason"]) for letter in letters} == {
        ("*", "undecodable")
    }
    assert all(letter["error"] for letter in letters)
    assert figures.dead_lettered == len(injected)
    numeric = [int(position) for position in checkpoints if position is not None]
    assert len(numeric) == len(checkpoints)
    assert numeric == sorted(numeric)
    assert checkpoints[-1] == last
