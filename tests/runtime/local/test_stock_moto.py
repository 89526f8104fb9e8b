"""The local runtime against moto's own server, unpatched, with writers at once.

Users test against ``python -m moto.server`` with several writers. Such a server numbers
a stream record by the shard's length when the write began: records share numbers, a
record can follow higher numbers (895, 896, 897, 898, 896, 900), and its iterator serves
again the records after the index of a read's highest number. The shard stopped on the
first lower number, restarted from its checkpoint, read it again and stopped again: the
job never caught up. The project's other moto servers serialize writes; this one does not.
One write of the test is held by the server between its numbering and its append
(:func:`tests.support.stock_moto.hold_marked_writes`), so that the stream holds a lower
number after a higher one however the machine schedules the others.
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
from tests.support.stock_moto import HELD, StockMoto

WRITERS = 8
PUTS = 25  # per writer at least: each goes on until the held write has returned
LOWER = (
    "a stream record carries a sequence number below the last one read; applied in the order read"
)


@pytest.fixture(scope="module")
def stock_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with StockMoto(tmp_path_factory.mktemp("stock_moto")) as server:
        yield server.url


def write_at_once(job: Job) -> int:
    """``WRITERS`` threads put ``PUTS`` items each at once, every key a new one, and one
    more thread puts the held item; the writers go on until it has returned, since the
    server appends it only after two more records. Returns the number of puts."""
    start = threading.Barrier(WRITERS + 1)
    held_returned = threading.Event()
    failures: list[BaseException] = []
    puts = [0] * WRITERS

    def write(writer: int) -> None:
        rng = random.Random(writer)
        ddb = client("dynamodb", job.source_region, job.endpoint)
        start.wait()
        try:
            while puts[writer] < PUTS or not held_returned.is_set():
                item = demo_item(rng, f"w{writer}", puts[writer], job.source_region)
                ddb.put_item(TableName=job.source_table, Item=item)
                puts[writer] += 1
        except BaseException as error:  # reported by the test's thread
            failures.append(error)
            held_returned.set()

    def write_held() -> None:
        ddb = client("dynamodb", job.source_region, job.endpoint)
        start.wait()
        try:
            item = demo_item(random.Random(-1), f"{HELD}0", 0, job.source_region)
            ddb.put_item(TableName=job.source_table, Item=item)
        except BaseException as error:  # reported by the test's thread
            failures.append(error)
        finally:
            held_returned.set()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
    threads.append(threading.Thread(target=write_held))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    return sum(puts) + 1


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
        puts = write_at_once(job)
        numbers = stream_numbers(job)
        assert any(number < before for before, number in itertools.pairwise(numbers))
        assert len(numbers) == puts  # one record a write

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


def test_a_stream_answer_botocore_cannot_read_is_a_failed_read_naming_it_not_a_crash(
    stock_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """moto (unpatched) answers GetRecords for an item whose map has an empty attribute name with a
    map where the value's type should be, which botocore's parser fails on deep in the
    answer (an AttributeError). That is a garbled answer: a failed read, retried and
    logged naming GetRecords, the shard and where it was read, with the run going on
    (and stopping cleanly); it was exit 1 with a bare "'str' object has no attribute
    'get'"."""
    name = unique("garbled")
    job = Job(stock_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    log = tmp_path / "run.log"
    runtime = job.start(log=log)
    (region, table) = job.destinations[0]
    destination = client("dynamodb", region, stock_endpoint)
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        job.source.put_item(TableName=job.source_table, Item=_key("fine"))
        wait_until(
            lambda: "Item" in destination.get_item(TableName=table, Key=_key("fine")),
            60,
            "the first item to be replicated",
        )
        job.source.put_item(
            TableName=job.source_table,
            Item={**_key("garbled"), "m": {"M": {"": {"S": "an empty attribute name"}}}},
        )
        wait_until(
            lambda: "botocore could not read it" in log.read_text(),
            60,
            "the garbled answer to be logged",
        )
        assert runtime.poll() is None  # still running: the read is retried
    finally:
        status = stop(runtime)
    output = log.read_text()
    assert status == 0, output.splitlines()[-1]
    assert "Traceback" not in output
    line = next(text for text in output.splitlines() if "botocore could not read it" in text)
    assert "GetRecords answered HTTP 200 with a body that is not a well-formed answer" in line
    assert "AttributeError" in line and "read after sequence number" in line
    assert "reading the stream failed; retrying" in line and "shard shardId-" in line


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": "1"}}
