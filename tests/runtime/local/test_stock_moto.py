"""The local runtime against moto's own server, unpatched, with writers at once.

Users test against ``python -m moto.server`` with several writers. Such a server numbers
a stream record by the shard's length when the write began: records share numbers, a
record can follow higher numbers (895, 896, 897, 898, 896, 900), and its iterator serves
again the records after the index of a read's highest number. The shard stopped on the
first lower number, restarted from its checkpoint, read it again and stopped again: the
job never caught up. The project's other moto servers serialize writes; this one does not.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replicator.demo.workload import demo_item
from tests.support.aws import client
from tests.support.e2e import Job, stop, wait_until
from tests.support.stock_moto import StockMoto

WRITERS = 8
PUTS = 100  # per writer and round
ROUNDS = 10  # at most, until the stream holds a lower number after a higher one
LOWER = (
    "a stream record carries a sequence number below the last one read; applied in the order read"
)


@pytest.fixture(scope="module")
def stock_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with StockMoto(tmp_path_factory.mktemp("stock_moto")) as server:
        yield server.url


def write_at_once(job: Job, round_: int) -> None:
    """``WRITERS`` threads put ``PUTS`` items each at once, every key a new one."""
    start = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        rng = random.Random(round_ * WRITERS + writer)
        ddb = client("dynamodb", job.source_region, job.endpoint)
        start.wait()
        try:
            for index in range(PUTS):
                item = demo_item(rng, f"w{writer}", round_ * PUTS + index, job.source_region)
                ddb.put_item(TableName=job.source_table, Item=item)
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def stream_numbers(job: Job) -> list[int]:
    """The source stream's sequence numbers in the order served, each record once: read
    until a read serves no number above the highest yet (moto then serves again the
    records after the last lower number, at every read)."""
    streams = client("dynamodbstreams", job.source_region, job.endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    numbers: list[int] = []
    seen: set[str] = set()
    while True:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        served = [(r["eventID"], int(r["dynamodb"]["SequenceNumber"])) for r in page["Records"]]
        highest = max(numbers, default=-1)
        numbers += [number for event, number in served if event not in seen]
        seen.update(event for event, _ in served)
        if max(numbers, default=-1) == highest:
            return numbers
        iterator = page["NextShardIterator"]


def logged(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_writers_at_once_on_an_unpatched_moto_all_reach_the_destination(
    stock_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("stock")
    job = Job(stock_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    log = tmp_path / "runtime.log"
    runtime = job.start(log)
    try:
        for round_ in range(ROUNDS):
            write_at_once(job, round_)
            numbers = stream_numbers(job)
            if any(number < before for before, number in itertools.pairwise(numbers)):
                break
        else:
            pytest.fail(f"moto served no lower number after a higher one in {ROUNDS} rounds")
        assert len(numbers) == (round_ + 1) * WRITERS * PUTS  # one record a write

        def converged() -> bool:
            assert runtime.poll() is None, "the runtime stopped"
            return job.converged()

        wait_until(converged, 120, "the destination to hold the source's items")
        highest = str(max(numbers))
        wait_until(
            lambda: job.lease_rows()[0].get("checkpoint", {}).get("S") == highest,
            60,
            "the checkpoint to reach the stream's highest sequence number",
        )
        assert runtime.poll() is None
    finally:
        assert stop(runtime) == 0
    lines = logged(log)
    assert any(line.get("event") == LOWER for line in lines)
    assert not [line for line in lines if "StreamOrderBroken" in json.dumps(line)]
    assert not [line for line in lines if line.get("event", "").startswith("processor child")]
