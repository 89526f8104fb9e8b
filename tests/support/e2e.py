"""Helpers for end-to-end tests: a job on moto, the runtime as a real process, waiting."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicator.demo import tables
from replicator.demo.workload import demo_item
from replicator.tools.compare import compare
from tests.support.aws import client, create_table

KEYS = ["pk", "sk"]


# Every deadline a test waits on is multiplied by this: a deadline only bounds how long a
# failing test takes, so a generous one costs a passing test nothing, and the suite runs on
# shared 2-core machines where one busy neighbour can double every step.
PATIENCE = float(os.environ.get("TEST_PATIENCE", "3"))


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``timeout`` (times
    ``PATIENCE``)."""
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Job:
    endpoint: str
    name: str
    directory: Path
    source_region: str = "us-east-1"
    destinations: list[tuple[str, str]] = field(default_factory=list)
    extra: str = ""
    kcl: str = "{idle_time_between_reads_ms: 100, failover_time_ms: 6000}"
    # Another job's source table to read (its stream), instead of a table of this job's.
    source_of: str = ""
    # The destinations' `name` in the job file (one destination), instead of the default.
    destination_name: str = ""

    def __post_init__(self) -> None:
        self.source = client("dynamodb", self.source_region, self.endpoint)
        self.source_table = self.source_of or f"{self.name}-src"
        if not self.source_of:
            tables.create(self.source, self.source_table, stream=True)
        if not self.destinations:
            self.destinations = [
                ("eu-west-1", f"{self.name}-eu"),
                ("ap-southeast-2", f"{self.name}-ap"),
            ]
        for region, table in self.destinations:
            tables.create(client("dynamodb", region, self.endpoint), table, stream=False)
        self.dead_letters = self.directory / "dead.jsonl"
        self.path = self.directory / f"{self.name}.yaml"
        self.write()

    def write(self, **overrides: str) -> None:
        named = f"name: {self.destination_name}, " if self.destination_name else ""
        destinations = "".join(
            f"  - {{{named}region: {region}, table: {table}, endpoint_url: '{self.endpoint}'}}\n"
            for region, table in self.destinations
        )
        text = (
            f"task_name: {self.name}\n"
            f"source: {{region: {self.source_region}, table: {self.source_table}, "
            f"endpoint_url: '{self.endpoint}'}}\n"
            f"destinations:\n{destinations}"
            "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
            f"dead_letter: {{kind: file, path: '{self.dead_letters}'}}\n"
            "metrics: {host: 127.0.0.1, port: 0}\n"
            f"kcl: {self.kcl}\n"
            "writer: {max_in_flight: 16}\n" + self.extra
        )
        for key, value in overrides.items():
            text += f"{key}: {value}\n"
        self.path.write_text(text)

    def start(
        self, log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        output = (log or self.directory / "runtime.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(self.path)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def put_demo_items(self, rng: random.Random, start: int, count: int) -> None:
        """Put ``count`` demo items into the source, on five hot keys."""
        for index in range(start, start + count):
            self.source.put_item(
                TableName=self.source_table,
                Item=demo_item(rng, f"p{index % 5}", index, self.source_region),
            )

    def destination_clients(self) -> list[tuple[Any, str]]:
        return [
            (client("dynamodb", region, self.endpoint), table)
            for region, table in self.destinations
        ]

    def differences(self) -> dict[str, list[Any]]:
        source_items = tables.scan_all(self.source, self.source_table)
        found = {}
        for ddb, table in self.destination_clients():
            diff = compare(source_items, tables.scan_all(ddb, table), KEYS)
            if diff:
                found[table] = diff
        return found

    def converged(self) -> bool:
        return not self.differences()

    def tables_named(self) -> dict[str, set[str]]:
        """The tables named after the job in each region it uses."""
        regions = [self.source_region] + [region for region, _ in self.destinations]
        return {
            region: {
                name
                for page in client("dynamodb", region, self.endpoint)
                .get_paginator("list_tables")
                .paginate()
                for name in page["TableNames"]
                if name.startswith(self.name)
            }
            for region in regions
        }

    def lease_rows(self) -> list[dict[str, Any]]:
        try:
            return list(self.source.scan(TableName=self.name, ConsistentRead=True)["Items"])
        except self.source.exceptions.ResourceNotFoundException:
            return []

    def wait_checkpointed(self) -> str:
        """Wait until the (one) lease's checkpoint is the source stream's last record: every
        change has been applied or dead-lettered. Returns that sequence number."""
        last = self.last_stream_sequence()
        wait_until(
            lambda: self.lease_rows() and self.lease_rows()[0]["checkpoint"]["S"] == last,
            30,
            "the checkpoint to reach the last stream record",
        )
        return last

    def last_stream_sequence(self, after: str = "") -> str:
        """The sequence number of the last record in the source's stream (see
        :func:`last_stream_record`)."""
        return last_stream_record(self.source, self.endpoint, self.source_table, after)


def last_stream_record(ddb: Any, endpoint: str, table: str, after: str = "") -> str:
    """The sequence number of the last record in ``table``'s stream (its first shard),
    read on from the record ``after`` when given (a sequence number the stream holds,
    such as a checkpoint: the last one if nothing follows it), else from the start."""
    region = ddb.meta.region_name
    streams = client("dynamodbstreams", region, endpoint)
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    position = (
        {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        if after
        else {"ShardIteratorType": "TRIM_HORIZON"}
    )
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], **position)[
        "ShardIterator"
    ]
    last = after
    while True:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        if not page["Records"]:
            return last
        last = page["Records"][-1]["dynamodb"]["SequenceNumber"]
        iterator = page["NextShardIterator"]


def table_before_its_stream(
    ddb: Any, table: str, items: tuple[dict[str, Any], ...] = (), apart_s: float = 1.5
) -> float:
    """Create ``table`` without a stream, put ``items``, and enable its stream
    (NEW_AND_OLD_IMAGES) ``apart_s`` later, as a table that held data before replication
    was set up: its stream created more than a second after it (a table created with its
    stream has both at once). Returns the time after the items were written."""
    tables.create(ddb, table, stream=False)
    for item in items:
        ddb.put_item(TableName=table, Item=item)
    written = time.time()
    time.sleep(apart_s)  # the scenario itself: the stream comes later
    ddb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return written


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def binary_key_job(endpoint: str, name: str, directory: Path, stream: str) -> tuple[Path, Any, Any]:
    """Tables keyed by a binary hash key ``pk``, the source's stream of view type
    ``stream``, and a job file copying it to one destination under ``overwrite``, its
    dead letters in ``directory``/dead.jsonl: the job file's path, the source's client
    and the destination's (tables ``{name}-src``, ``{name}-eu``)."""
    source = client("dynamodb", "us-east-1", endpoint)
    destination = client("dynamodb", "eu-west-1", endpoint)
    create_table(source, f"{name}-src", hash_type="B", stream=stream)
    create_table(destination, f"{name}-eu", hash_type="B", stream=None)
    place = {"endpoint_url": endpoint}
    job = {
        "task_name": name,
        "source": {"region": "us-east-1", "table": f"{name}-src", **place},
        "destinations": [{"region": "eu-west-1", "table": f"{name}-eu", **place}],
        "conflict": {"policy": "overwrite"},
        "dead_letter": {"kind": "file", "path": str(directory / "dead.jsonl")},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "kcl": {"idle_time_between_reads_ms": 100},
    }
    path = directory / "job.yaml"
    path.write_text(json.dumps(job))  # JSON is YAML
    return path, source, destination
