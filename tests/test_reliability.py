"""Reliability scenarios: faults, bad input and load, each ending in a full comparison.

Every scenario runs the real ``replicator`` processes against a moto server over HTTP,
with destinations behind a fault-injecting proxy (tests/faults/proxy.py), and ends by
comparing every item of the source with every destination. Each prints its figures
(run with ``-s`` or ``-rA`` to see them): changes sent, writes applied, retried and
dead-lettered, and lost, which must be 0. See docs/reliability.md.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from replicator.demo import tables
from replicator.demo.workload import Workload, demo_item
from replicator.items import Item, KeyId, item_to_wire, key_id
from replicator.runtime.local.protocol import ProcessorChild
from replicator.runtime.local.runtime import processor_command
from replicator.runtime.local.stream import to_daemon_record
from replicator.tools.compare import compare
from tests.support.aws import client
from tests.support.e2e import KEYS, PATIENCE, Job, children_of, stop, wait_until
from tests.support.faults.proxy import FaultProxy

pytestmark = pytest.mark.reliability

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


@pytest.fixture
def proxies(moto_endpoint: str) -> Iterator[list[FaultProxy]]:
    started = [FaultProxy(moto_endpoint, seed=index).start() for index in range(2)]
    yield started
    for proxy in started:
        proxy.stop()


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


def settle(differences: Callable[[], dict[str, list[Any]]], timeout: float) -> int:
    """Poll until the destinations equal the source; the number of items still different."""
    deadline = time.monotonic() + timeout * PATIENCE
    while True:
        found = differences()
        if not found or time.monotonic() > deadline:
            return sum(len(items) for items in found.values())
        time.sleep(0.5)


def checkpoint_reaches_the_end(job: ProxiedJob, timeout: float = 30.0) -> str:
    last = job.last_stream_sequence()
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


# -- 1. throttling ------------------------------------------------------------------------


def test_a_destination_throttled_half_the_time_for_20s_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    job = proxied_job(moto_endpoint, unique("throttle"), tmp_path, proxies)
    samples = Samples(tmp_path / "metrics")
    throttled, flaky = proxies
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=24, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    try:
        wait_started(job, runtime)
        workload.start()
        during(3, workload)
        # eu: half the requests throttled, with both error codes DynamoDB uses;
        # ap meanwhile: a tenth of the connections reset after the write was applied.
        throttled.throttle(0.5, "ProvisionedThroughputExceededException")
        flaky.resets(0.1, after_forward=True)
        during(10, workload)
        throttled.throttle(0.5, "ThrottlingException")
        during(10, workload)
        throttled.pass_through()
        flaky.pass_through()
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
    finally:
        assert stop(runtime) == 0
    figures = Figures("1. destination throttled 50% for 20 s", sent=workload.stats.total, lost=lost)
    samples.fill(figures)
    eu, ap = job.label(0), job.label(1)
    figures.details = {
        "eu requests throttled by the proxy": throttled.counts("PutItem")["throttled"]
        + throttled.counts("DeleteItem")["throttled"],
        "eu retries counted as throttled": samples.total(
            "replicator_retries_total", destination=eu, reason="throttled"
        ),
        "ap connections reset after the write landed": flaky.counts()["reset_after_forward"],
        "ap retries counted as network": samples.total(
            "replicator_retries_total", destination=ap, reason="network"
        ),
        "eu proxy outcomes": dict(throttled.counts()),
        "ap proxy outcomes": dict(flaky.counts()),
    }
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    writes = ("PutItem", "DeleteItem")
    proxy_throttles = sum(throttled.counts(op)["throttled"] for op in writes)
    assert proxy_throttles > 50
    # Every throttled request was retried by the writer itself (none hidden in the SDK).
    assert figures.details["eu retries counted as throttled"] == proxy_throttles
    resets = sum(flaky.counts(op)["reset_after_forward"] for op in writes)
    assert resets > 0
    assert figures.details["ap retries counted as network"] == resets


def test_the_source_stream_and_lease_table_throttled_for_15s_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    source_proxy = proxies[0]
    name = unique("srcthrottle")
    job = ProxiedJob(moto_endpoint, name, tmp_path, source_endpoint=source_proxy.url)
    samples = Samples(tmp_path / "metrics")
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=20, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    try:
        wait_started(job, runtime)
        workload.start()
        during(3, workload)
        # Stream reads, shard syncs, lease renewals and checkpoints: a third of them
        # throttled, and for 5 s all of them (longer than the SDK's own retries last).
        source_proxy.throttle(0.33, "ThrottlingException")
        during(7, workload)
        source_proxy.throttle(1.0, "ProvisionedThroughputExceededException")
        during(5, workload)
        source_proxy.throttle(0.33, "ThrottlingException")
        during(3, workload)
        source_proxy.pass_through()
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
        assert runtime.poll() is None, log_tail(job)
    finally:
        assert stop(runtime) == 0
    figures = Figures(
        "1b. source stream and lease table throttled for 15 s (33%, 5 s of it 100%)",
        sent=workload.stats.total,
        lost=lost,
    )
    housekeeping = log_text(job).count("housekeeping failed; retrying")
    samples.fill(figures)
    figures.details = {
        "throttled by operation": {
            operation: source_proxy.counts(operation)["throttled"]
            for operation in (
                "GetRecords",
                "GetShardIterator",
                "DescribeStream",
                "Scan",
                "UpdateItem",
            )
        },
        "housekeeping steps failed and retried by the runtime": housekeeping,
    }
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    assert source_proxy.counts("UpdateItem")["throttled"] > 0
    assert housekeeping > 0  # lease renewals failed, and the runtime carried on


# -- 2. a destination down --------------------------------------------------------------------


def test_a_destination_down_for_30s_then_back_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    # A short backoff cap and read timeout keep the test short; the defaults (20 s, 10 s)
    # only make recovery slower, not different.
    job = proxied_job(
        moto_endpoint,
        unique("down"),
        tmp_path,
        proxies,
        writer="writer: {max_in_flight: 16, read_timeout_s: 3, retry: {max_delay_ms: 2000}}",
    )
    samples = Samples(tmp_path / "metrics")
    down, hanging = proxies
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=34, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    try:
        wait_started(job, runtime)
        workload.start()
        during(3, workload)
        # eu: connections refused for 15 s, then every request answered 500 for 15 s;
        # ap: black-holed (requests accepted, never answered) for the first 15 s.
        down.refuse()
        hanging.black_hole()
        outage_began_after = job.last_stream_sequence()
        during(15, workload)
        hanging.pass_through()
        down.server_errors()
        during(15, workload)
        held = job.checkpoint()
        snapshot = stream_records(job)
        down.pass_through()
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
    finally:
        assert stop(runtime) == 0
    eu, ap = job.label(0), job.label(1)
    figures = Figures(
        "2. destination down for 30 s, then back", sent=workload.stats.total, lost=lost
    )
    samples.fill(figures)
    figures.details = {
        "eu retries by reason": {
            reason: samples.total("replicator_retries_total", destination=eu, reason=reason)
            for reason in ("network", "server_error")
        },
        "ap retries by reason (read timeouts)": samples.total(
            "replicator_retries_total", destination=ap, reason="network"
        ),
        "eu proxy outcomes": dict(down.counts()),
        "ap proxy outcomes": dict(hanging.counts()),
        "checkpoint while eu was down": f"{held} (last record before the outage: "
        f"{outage_began_after}, last written during it: {snapshot[-1][0]})",
    }
    assert held is not None and held.isdigit(), held
    began, checkpoint = int(outage_began_after), int(held)
    last_change = {key: sequence for sequence, key in snapshot}
    passed = [(s, key) for s, key in snapshot if began < s <= checkpoint]
    unsafe = [(s, key) for s, key in passed if last_change[key] <= checkpoint]
    figures.details["records written while down that the checkpoint passed"] = (
        f"{len(passed)}, each replaced by a newer change beyond it: {not unsafe}"
    )
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    assert down.counts()["server_error"] > 0
    assert hanging.counts()["black_holed"] > 0
    assert samples.total("replicator_retries_total", destination=eu, reason="network") > 0
    # Nothing written after the outage began was applied at eu. The checkpoint may pass
    # such a record only when a newer change to its item lies beyond the checkpoint (a
    # restart from there still writes the item); it must never pass an item's last change.
    assert snapshot[-1][0] > began
    assert not unsafe, f"checkpoint {checkpoint} passed unapplied last changes: {unsafe[:5]}"


# -- 3. kill -9 -------------------------------------------------------------------------------


def _seed() -> int:
    return int(os.environ.get("RELIABILITY_SEED") or time.time_ns() % 100_000)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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


def test_kill_9_of_a_processor_child_three_times_in_a_row_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    seed = _seed()
    rng = random.Random(seed)
    job = ProxiedJob(moto_endpoint, unique("killchild"), tmp_path)
    samples = Samples(tmp_path / "metrics")
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=18, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    kills: list[str] = []
    started = time.monotonic()
    try:
        wait_started(job, runtime)
        workload.start()
        for _ in range(3):
            during(rng.uniform(1.0, 3.5), workload)
            (child,) = wait_until(lambda: children_of(runtime.pid), 30, "a processor child")
            os.kill(child, signal.SIGKILL)
            kills.append(f"pid {child} at {time.monotonic() - started:.1f}s")
            wait_until(
                lambda c=child: [p for p in children_of(runtime.pid) if p != c],
                30,
                "a new processor child",
            )
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
        assert runtime.poll() is None
    finally:
        assert stop(runtime) == 0
    figures = Figures(
        "3a. kill -9 of the processor child, three times", sent=workload.stats.total, lost=lost
    )
    samples.fill(figures)
    received = samples.total("replicator_records_received_total")
    records = len(stream_records(job))
    restarts = log_text(job).count("restarting from the checkpoint")
    figures.details = {
        "seed (RELIABILITY_SEED)": seed,
        "kills": ", ".join(kills),
        "children restarted": restarts,
        "stream records": records,
        "records received (redelivered after kills)": f"{received:.0f} ({received - records:.0f})",
    }
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    assert restarts == 3
    assert received >= records


def test_kill_9_of_the_runtime_three_times_in_a_row_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    seed = _seed()
    rng = random.Random(seed)
    job = ProxiedJob(moto_endpoint, unique("killrt"), tmp_path)
    samples = Samples(tmp_path / "metrics")
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=18, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    kills: list[str] = []
    orphan_exit_s: list[float] = []
    started = time.monotonic()
    try:
        wait_started(job, runtime)
        workload.start()
        for _ in range(3):
            during(rng.uniform(1.0, 3.5), workload)
            pid = runtime.pid
            children = wait_until(lambda p=pid: children_of(p), 30, "a processor child")
            runtime.send_signal(signal.SIGKILL)
            runtime.wait(10)
            kills.append(f"pid {runtime.pid} at {time.monotonic() - started:.1f}s")
            # Its processor notices the runtime is gone and exits on its own.
            killed_at = time.monotonic()
            wait_until(
                lambda c=children: not any(_alive(p) for p in c),
                15,
                "the killed runtime's processor to exit",
            )
            orphan_exit_s.append(round(time.monotonic() - killed_at, 1))
            samples.bank()
            runtime = job.start(env=samples.env)
            pid = runtime.pid
            wait_until(lambda p=pid: children_of(p), 30, "the new runtime's processor")
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
    finally:
        assert stop(runtime) == 0
    figures = Figures(
        "3b. kill -9 of the runtime, three times", sent=workload.stats.total, lost=lost
    )
    samples.fill(figures)
    received = samples.total("replicator_records_received_total")
    records = len(stream_records(job))
    figures.details = {
        "seed (RELIABILITY_SEED)": seed,
        "kills": ", ".join(kills),
        "seconds until the orphaned processor exited": orphan_exit_s,
        "stream records": records,
        "records received (redelivered after kills)": f"{received:.0f} ({received - records:.0f})",
    }
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    assert received >= records


# -- 4. poison input ---------------------------------------------------------------------------


def _with_email_index(ddb: Any, table: str) -> None:
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


def test_items_a_destination_rejects_are_dead_lettered_and_the_rest_flows(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    job = ProxiedJob(moto_endpoint, unique("reject"), tmp_path)
    eu_region, eu_table = job.destinations[0]
    eu = client("dynamodb", eu_region, moto_endpoint)
    _with_email_index(eu, eu_table)
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


# -- 5. bad job files and a bad environment ---------------------------------------------------


@dataclass
class Case:
    name: str
    text: str | None  # None: there is no job file
    fragment: str
    exit_code: int
    env: dict[str, str | None] = field(default_factory=dict)  # None removes a variable


def _job_text(
    endpoint: str,
    source: str,
    destination: str,
    *,
    source_region: str = "us-east-1",
    source_endpoint: str | None = None,
    destination_endpoint: str | None = None,
) -> str:
    return (
        "task_name: bad-environment\n"
        f"source: {{region: {source_region}, table: {source}, "
        f"endpoint_url: '{source_endpoint or endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: {destination}, "
        f"endpoint_url: '{destination_endpoint or endpoint}'}}\n"
        "metrics: {enabled: false}\n"
    )


def _run_cli(
    command: str, config: Path, env: dict[str, str | None]
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ}
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, "-m", "replicator", command, "--config", str(config)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _check_case(case: Case, config: Path, commands: tuple[str, ...]) -> list[str]:
    """Run the case; the problems found (empty when it fails as it should) and a report line."""
    problems: list[str] = []
    codes = []
    message = ""
    for command in commands:
        result = _run_cli(command, config, case.env)
        codes.append(f"{command} exit {result.returncode}")
        lines = result.stderr.splitlines()
        errors = [line for line in lines if line.startswith("replicator: ")]
        if errors:
            message = " | ".join(lines[lines.index(errors[0]) :]).replace(f"{config.parent}/", "")
        else:
            message = result.stderr[-300:]
        if result.returncode != case.exit_code:
            problems.append(
                f"{case.name}: {command} exited {result.returncode}, not {case.exit_code}"
            )
        if "Traceback" in result.stderr + result.stdout:
            problems.append(f"{case.name}: {command} printed a traceback:\n{result.stderr}")
        if len(errors) != 1:
            problems.append(
                f"{case.name}: {command} printed {len(errors)} errors:\n{result.stderr}"
            )
        if case.fragment not in result.stderr:
            problems.append(
                f"{case.name}: {command} did not say {case.fragment!r}:\n{result.stderr}"
            )
    print(f"[reliability]     {case.name}: {', '.join(codes)}: {message[:220]}")
    return problems


def test_bad_job_files_give_one_clear_error_and_exit_2(tmp_path: Path) -> None:
    good = _job_text("http://127.0.0.1:1", "orders", "orders-copy")
    cases = [
        Case("YAML syntax error", good + "writer: {max_in_flight: 4\n", "YAML syntax error", 2),
        Case(
            "unknown key",
            good.replace("table: orders-copy", "tabel: orders-copy"),
            "destinations[0].tabel (line 4): unknown key",
            2,
        ),
        Case(
            "required key missing",
            good.replace("table: orders, ", ""),
            "source.table (line 2): required key is missing",
            2,
        ),
        Case(
            "invalid region",
            good.replace("region: eu-west-1", "region: europe"),
            "expected an AWS region name",
            2,
        ),
        Case(
            "unset variable",
            good.replace("orders-copy", "'${REPLICATOR_TEST_NO_SUCH_VARIABLE}'"),
            "environment variable REPLICATOR_TEST_NO_SUCH_VARIABLE is not set",
            2,
        ),
        Case("no job file", None, "job file not found", 2),
    ]
    print("\n[reliability] 5a. bad job files (replicator validate and run)")
    problems: list[str] = []
    for index, case in enumerate(cases):
        config = tmp_path / f"job-{index}.yaml"
        if case.text is not None:
            config.write_text(case.text)
        problems += _check_case(case, config, ("validate", "run"))
    assert not problems, "\n".join(problems)


def test_a_bad_environment_gives_one_clear_error_and_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    name = unique("env")
    us = client("dynamodb", "us-east-1", moto_endpoint)
    eu = client("dynamodb", "eu-west-1", moto_endpoint)
    tables.create(us, f"{name}-src", stream=True)
    tables.create(us, f"{name}-nostream", stream=False)
    tables.create(eu, f"{name}-dst", stream=False)
    eu.create_table(
        TableName=f"{name}-hashonly",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    unreachable = proxies[0]
    unreachable.refuse()
    src, dst = f"{name}-src", f"{name}-dst"

    def job(**kwargs: Any) -> str:
        return _job_text(
            moto_endpoint, kwargs.pop("source", src), kwargs.pop("destination", dst), **kwargs
        )

    no_credentials: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
        "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    }
    cases = [
        Case(
            "missing source table",
            job(source=f"{name}-nope"),
            f"source table {name}-nope: not found",
            3,
        ),
        Case(
            "stream disabled",
            job(source=f"{name}-nostream"),
            "has no DynamoDB stream enabled",
            3,
        ),
        Case(
            "wrong region",
            job(source_region="eu-central-1"),
            f"source table {src}: not found at {moto_endpoint} (eu-central-1)",
            3,
        ),
        Case(
            "missing destination table",
            job(destination=f"{name}-nope"),
            f"destinations[0] table {name}-nope: not found",
            3,
        ),
        Case(
            "destination key schema differs",
            job(destination=f"{name}-hashonly"),
            "has key schema",
            3,
        ),
        Case("no credentials", job(), "no AWS credentials found", 3, env=no_credentials),
        Case(
            "unreachable source endpoint",
            job(source_endpoint=unreachable.url),
            f"cannot reach {unreachable.url}",
            3,
        ),
        Case(
            "unreachable destination endpoint",
            job(destination_endpoint=unreachable.url),
            f"destinations[0] table {dst}: cannot reach {unreachable.url}",
            3,
        ),
    ]
    print("\n[reliability] 5b. a bad environment (replicator run; validate reads only the file)")
    problems: list[str] = []
    for index, case in enumerate(cases):
        config = tmp_path / f"job-{index}.yaml"
        assert case.text is not None
        config.write_text(case.text)
        problems += _check_case(case, config, ("run",))
        validated = _run_cli("validate", config, case.env)
        if validated.returncode != 0:
            problems.append(f"{case.name}: validate exited {validated.returncode}")
    assert not problems, "\n".join(problems)


# -- 6. active-active -------------------------------------------------------------------------


class Application:
    """Writes to both regions' tables at once, as the active-active contract asks: every
    put stamps origin_region with the region written and updated_at with a clock both
    regions share (stamped and written under one lock, so stamps follow the write order)."""

    def __init__(self, ddb: dict[str, Any], tables_by_region: dict[str, str], seed: int) -> None:
        self.ddb = ddb
        self.tables = tables_by_region
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.last_ms = 0
        self.written: list[tuple[str, Item]] = []
        self.errors: list[BaseException] = []

    def write_one(self, region: str) -> None:
        with self.lock:
            stamp = max(int(time.time() * 1000), self.last_ms + 1)
            self.last_ms = stamp
            index = self.rng.randrange(30)  # few keys: both regions write the same items
            item = demo_item(self.rng, f"shared-{index % 10}", index // 10, region)
            item["updated_at"] = {"N": str(stamp)}
            self.ddb[region].put_item(TableName=self.tables[region], Item=item)
            self.written.append((region, item))

    def run(self, region: str, rate: float, duration_s: float) -> threading.Thread:
        def loop() -> None:
            deadline = time.monotonic() + duration_s
            try:
                while time.monotonic() < deadline:
                    self.write_one(region)
                    time.sleep(self.rng.uniform(0, 2 / rate))
            except BaseException as error:  # reported by the test
                self.errors.append(error)

        thread = threading.Thread(target=loop, name=f"app-{region}", daemon=True)
        thread.start()
        return thread

    def expected(self) -> list[Item]:
        """Each key's image with the highest (updated_at, origin_region)."""
        best: dict[tuple[str, str], Item] = {}
        for _, item in self.written:
            key = (item["pk"]["S"], item["sk"]["N"])
            rank = (int(item["updated_at"]["N"]), item["origin_region"]["S"])
            current = best.get(key)
            if current is None or rank > (
                int(current["updated_at"]["N"]),
                current["origin_region"]["S"],
            ):
                best[key] = item
        return list(best.values())

    def count(self, region: str) -> int:
        return sum(1 for written_in, _ in self.written if written_in == region)


def test_an_active_active_pair_under_concurrent_writes_converges_without_ping_pong(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    name = unique("aa")
    regions = ("us-east-1", "eu-west-1")
    table_of = {"us-east-1": f"{name}-use1", "eu-west-1": f"{name}-euw1"}
    ddb = {region: client("dynamodb", region, moto_endpoint) for region in regions}
    for region in regions:
        tables.create(ddb[region], table_of[region], stream=True)
    proxy_of = dict(zip(regions, proxies, strict=True))  # in front of each region's table
    samples = {region: Samples(tmp_path / f"metrics-{region}") for region in regions}
    runtimes: dict[str, subprocess.Popen[bytes]] = {}
    task_of = {region: f"{name}-from-{region}" for region in regions}
    for region in regions:
        other = next(r for r in regions if r != region)
        path = tmp_path / f"{region}.yaml"
        path.write_text(
            f"task_name: {task_of[region]}\n"
            f"source: {{region: {region}, table: {table_of[region]}, "
            f"endpoint_url: '{moto_endpoint}'}}\n"
            "destinations:\n"
            f"  - {{region: {other}, table: {table_of[other]}, "
            f"endpoint_url: '{proxy_of[other].url}'}}\n"
            "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
            "loop_prevention: {origin_attribute: origin_region}\n"
            f"dead_letter: {{kind: file, path: '{tmp_path / region}-dead.jsonl'}}\n"
            f"conflict_log: {{kind: file, path: '{tmp_path / region}-conflicts.jsonl'}}\n"
            "metrics: {host: 127.0.0.1, port: 0}\n"
            "kcl: {idle_time_between_reads_ms: 100, failover_time_ms: 6000}\n"
            "writer: {max_in_flight: 16}\n"
        )
        log = (tmp_path / f"{region}.log").open("ab")
        runtimes[region] = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **samples[region].env},
        )

    def lease(region: str) -> dict[str, Any]:
        try:
            rows = ddb[region].scan(TableName=task_of[region], ConsistentRead=True)["Items"]
        except ddb[region].exceptions.ResourceNotFoundException:
            return {}
        return rows[0] if rows else {}

    def last_sequence(region: str) -> str:
        job = Job.__new__(Job)
        job.endpoint, job.source_region, job.source = moto_endpoint, region, ddb[region]
        job.source_table = table_of[region]
        return job.last_stream_sequence()

    def differences() -> dict[str, list[Any]]:
        expected = app.expected()
        found = {}
        for region in regions:
            diff = compare(expected, tables.scan_all(ddb[region], table_of[region]), KEYS)
            if diff:
                found[region] = diff
        return found

    app = Application(ddb, table_of, seed=8)
    try:
        for region in regions:
            wait_until(lambda r=region: lease(r).get("leaseOwner"), 30, f"the {region} runtime")
        writers = [app.run(region, rate=15, duration_s=10) for region in regions]
        for thread in writers:
            thread.join(60)
        assert not app.errors, app.errors
        lost = settle(differences, SETTLE_S)
        ends = {region: last_sequence(region) for region in regions}
        for region in regions:
            wait_until(
                lambda r=region: lease(r).get("checkpoint", {}).get("S") == ends[r],
                30,
                f"the {region} checkpoint to reach its stream's end",
            )
        puts_seen = {region: sum(proxy_of[region].counts("PutItem").values()) for region in regions}
        # Quiet: with the application stopped, no stream record and no write may appear
        # any more. (This wait gives an echo loop time to show itself; it cannot make the
        # test pass.)
        time.sleep(3)
        assert {region: last_sequence(region) for region in regions} == ends
        assert {
            region: sum(proxy_of[region].counts("PutItem").values()) for region in regions
        } == puts_seen
    finally:
        for region in regions:
            assert stop(runtimes[region]) == 0
    # from_<region>: the runtime reading <region>'s table and writing the other one
    applied = {
        region: samples[region].total("replicator_writes_total", outcome="applied")
        for region in regions
    }
    skipped = {
        region: samples[region].total("replicator_writes_total", outcome="loop_skipped")
        for region in regions
    }
    conflicts = {
        region: samples[region].total("replicator_writes_total", outcome="conflict_lost")
        for region in regions
    }
    figures = Figures(
        "6. active-active, concurrent writes on both sides",
        sent=len(app.written),
        applied=sum(applied.values()),
        retried=sum(samples[r].total("replicator_retries_total") for r in regions),
        dead_lettered=sum(samples[r].total("replicator_dead_letters_total") for r in regions),
        lost=lost,
    )
    other = {"us-east-1": "eu-west-1", "eu-west-1": "us-east-1"}
    figures.details = {
        f"from {region}": f"app writes {app.count(region)}, replicated {applied[region]:.0f}, "
        f"conflicts lost {conflicts[region]:.0f}, echoes skipped {skipped[region]:.0f}, "
        f"PutItem requests reaching {other[region]} {puts_seen[other[region]]}"
        for region in regions
    }
    figures.details["keys"] = len(app.expected())
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    for region in regions:
        # Bounded: a region's writes reach the other side at most once each...
        assert applied[region] <= app.count(region)
        assert puts_seen[other[region]] <= app.count(region)
        # ...and each replicated write comes back once as an echo, which is skipped.
        assert skipped[other[region]] == applied[region]
    assert sum(conflicts.values()) > 0
    # Every lost conflict is in the conflict log once, with both images as the application
    # wrote them, the winner ranking above the loser.
    written = {json.dumps(item_to_wire(item), sort_keys=True) for _, item in app.written}
    for region in regions:
        path = tmp_path / f"{region}-conflicts.jsonl"
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(entries) == len({e["id"] for e in entries}) == conflicts[region]
        for entry in entries:
            images = [entry["losing_image"], entry["winning_image"]]
            assert {json.dumps(image, sort_keys=True) for image in images} <= written
            loser, winner = (
                (int(image["updated_at"]["N"]), image["origin_region"]["S"]) for image in images
            )
            assert winner > loser, entry["id"]
