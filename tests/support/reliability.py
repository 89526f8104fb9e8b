"""What the reliability scenarios (tests/reliability/) share: jobs whose destinations or
source sit behind a fault-injecting proxy (tests/support/faults/proxy.py), the runtime's
counters read back from its metrics directory, waiting for the destinations to settle, and
the figures every scenario prints.

Every scenario runs the real ``replicator`` processes against a moto server over HTTP and
ends by comparing every item of the source with every destination. Each prints its figures
(run with ``-s`` or ``-rA`` to see them): changes sent, writes applied, retried and
dead-lettered, and lost, which must be 0. See docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from replicator.demo import tables
from replicator.demo.workload import Workload
from replicator.items import KeyId, key_id
from tests.support.aws import client
from tests.support.e2e import PATIENCE, Job, wait_until
from tests.support.faults.proxy import FaultProxy

SETTLE_S = 90.0


# -- figures ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a scenario reports: every change is applied, dead-lettered, or counted lost."""

    scenario: str
    sent: int = 0
    applied: float = 0
    retried: float = 0
    dead_lettered: float = 0
    lost: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def report(self) -> None:
        line = (
            f"[reliability] {self.scenario}: sent={self.sent} applied={self.applied:.0f} "
            f"retried={self.retried:.0f} dead_lettered={self.dead_lettered:.0f} lost={self.lost}"
        )
        print("\n" + line)
        for name, value in self.details.items():
            print(f"[reliability]     {name}: {value}")


class Samples:
    """Counters the runtime's processes leave in their metrics directory, read back here.

    The runtime empties the directory when it starts, so a scenario that restarts the
    runtime adds each run's totals up with :meth:`bank` before starting the next one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.banked: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    @property
    def env(self) -> dict[str, str]:
        return {"PROMETHEUS_MULTIPROC_DIR": str(self.directory)}

    def _current(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in registry.collect():
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values[key] = values.get(key, 0.0) + float(sample.value)
        return values

    def bank(self) -> None:
        for key, value in self._current().items():
            self.banked[key] = self.banked.get(key, 0.0) + value

    def total(self, name: str, **labels: str) -> float:
        values = dict(self.banked)
        for key, value in self._current().items():
            values[key] = values.get(key, 0.0) + value
        return sum(
            value
            for (sample, sample_labels), value in values.items()
            if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
        )

    def fill(self, figures: Figures) -> None:
        figures.applied = self.total("replicator_writes_total", outcome="applied")
        figures.retried = self.total("replicator_retries_total")
        figures.dead_lettered = self.total("replicator_dead_letters_total")


# -- jobs behind proxies ----------------------------------------------------------------------


@dataclass
class ProxiedJob(Job):
    """A Job whose destinations are reached through their own endpoints (proxies)."""

    endpoints: dict[str, str] = field(default_factory=dict)
    writer: str = "writer: {max_in_flight: 16}"
    source_endpoint: str | None = None

    def write(self, **overrides: str) -> None:
        super().write(**overrides)
        text = self.path.read_text()
        if self.source_endpoint:
            text = text.replace(
                f"table: {self.source_table}, endpoint_url: '{self.endpoint}'",
                f"table: {self.source_table}, endpoint_url: '{self.source_endpoint}'",
            )
        for table, url in self.endpoints.items():
            text = text.replace(
                f"table: {table}, endpoint_url: '{self.endpoint}'",
                f"table: {table}, endpoint_url: '{url}'",
            )
        text = text.replace("writer: {max_in_flight: 16}", self.writer)
        # A fault that missed its endpoint would let a scenario pass without its fault.
        for url in [*self.endpoints.values(), self.source_endpoint, self.writer]:
            assert url is None or url in text, f"{url} is not in the job file:\n{text}"
        self.path.write_text(text)

    def label(self, index: int) -> str:
        region, table = self.destinations[index]
        return f"{region}/{table}"

    def checkpoint(self) -> str | None:
        rows = self.lease_rows()
        return rows[0].get("checkpoint", {}).get("S") if rows else None


def proxied_job(
    moto_endpoint: str, name: str, directory: Path, proxies: list[FaultProxy], writer: str = ""
) -> ProxiedJob:
    return ProxiedJob(
        moto_endpoint,
        name,
        directory,
        endpoints={f"{name}-eu": proxies[0].url, f"{name}-ap": proxies[1].url},
        writer=writer or "writer: {max_in_flight: 16}",
    )


def source_behind(
    proxy: FaultProxy, moto_endpoint: str, name: str, directory: Path, **settings: Any
) -> ProxiedJob:
    """A job of one destination whose source (its stream and the lease table) is reached
    through ``proxy``."""
    return ProxiedJob(
        moto_endpoint,
        name,
        directory,
        destinations=[("eu-west-1", f"{name}-eu")],
        source_endpoint=proxy.url,
        **settings,
    )


def settle(differences: Callable[[], dict[str, list[Any]]], timeout: float) -> int:
    """Poll until the destinations equal the source; the number of items still different."""
    deadline = time.monotonic() + timeout * PATIENCE
    while True:
        found = differences()
        if not found or time.monotonic() > deadline:
            return sum(len(items) for items in found.values())
        time.sleep(0.5)


def checkpoint_reaches_the_end(job: ProxiedJob, timeout: float = 30.0) -> str:
    held = job.checkpoint() or ""
    # The stream's end, read on from the checkpoint the runtime holds (not from the start).
    last = job.last_stream_sequence(after=held if held.isdigit() else "")
    wait_until(lambda: job.checkpoint() == last, timeout, f"the checkpoint to reach {last}")
    return last


def wait_started(job: Job, runtime: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    def owned() -> bool:
        assert runtime.poll() is None, "the runtime exited:\n" + log_tail(job)
        return any(row.get("leaseOwner") for row in job.lease_rows())

    wait_until(owned, timeout, "the runtime to own its lease")


def log_text(job: Job) -> str:
    path = job.directory / "runtime.log"
    return path.read_text() if path.exists() else ""


def log_tail(job: Job, lines: int = 30) -> str:
    return "\n".join(log_text(job).splitlines()[-lines:])


def dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def during(seconds: float, workload: Workload) -> None:
    """Let ``seconds`` of the workload pass (the fault under test stays in force meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert workload.error is None, workload.error
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def stream_records(job: Job) -> list[tuple[int, KeyId]]:
    """(sequence number, key) of every record in the source table's stream, in order."""
    streams = client("dynamodbstreams", job.source_region, job.endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    found: list[tuple[int, KeyId]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while True:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            found += [
                (int(r["dynamodb"]["SequenceNumber"]), key_id(r["dynamodb"]["Keys"]))
                for r in page["Records"]
            ]
            iterator = page["NextShardIterator"]
    return found


def with_email_index(ddb: Any, table: str) -> None:
    """Recreate ``table`` with a GSI on ``email`` that the source table does not have."""
    ddb.delete_table(TableName=table)
    ddb.create_table(
        TableName=table,
        KeySchema=tables.KEY_SCHEMA,
        AttributeDefinitions=[*tables.ATTRIBUTES, {"AttributeName": "email", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-email",
                "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
