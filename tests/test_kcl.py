"""The real Java KCL: `replicator run` with runtime kcl against moto, end to end.

The daemon is the stock KCL 2.5.8 MultiLangDaemon (jars from tests/kcl_jars.py), reading
a two-shard Kinesis stream that carries Kinesis-Data-Streams-for-DynamoDB records, with
this package's processor as its children. moto speaks HTTP/2 here (tests/h2moto.py),
which the KCL's Kinesis client requires.

Each item gets several versions written out of order (last writer wins must keep the
newest) and some are deleted last; the destinations must end equal to the newest image
of every item. Workers are real process trees (launcher, JVM, one processor per shard),
started in their own sessions and killed whole on teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from replicator.demo import tables
from tests.conftest import client
from tests.e2e import wait_until
from tests.h2moto import H2Moto
from tests.kcl_jars import ensure_jars
from tests.metrics_endpoint import logged_metrics_port, matching, scrape
from tests.records import kinesis_record

pytestmark = pytest.mark.kcl

REGION = "us-east-1"
DESTINATIONS = [("eu-west-1", "eu"), ("ap-southeast-2", "ap")]
FAILOVER_MS = 5000
# A new lease table: the KCL waits a random 1-30 s before its first shard sync.
FIRST_LEASES_S = 90


@pytest.fixture(scope="module")
def kcl_jars() -> Path:
    return ensure_jars()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with H2Moto(tmp_path_factory.mktemp("h2moto")) as server:
        yield server.url


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    tree = [root] if root in parents else []
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tree(self) -> list[int]:
        return process_tree(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the whole worker: launcher, JVM (its own process group), processors."""
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)


@dataclass
class Scenario:
    endpoint: str
    directory: Path
    jars: Path
    task: str
    workers: list[Worker] = field(default_factory=list)
    expected: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    last_sequence: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stream = f"{self.task}-changes"
        self.source_table = f"{self.task}-src"
        self.kinesis = client("kinesis", REGION, self.endpoint)
        self.ddb = client("dynamodb", REGION, self.endpoint)
        tables.create(self.ddb, self.source_table, stream=False)
        for region, suffix in DESTINATIONS:
            tables.create(
                client("dynamodb", region, self.endpoint), self.table(suffix), stream=False
            )
        self.kinesis.create_stream(StreamName=self.stream, ShardCount=2)
        wait_until(
            lambda: (
                self.kinesis.describe_stream_summary(StreamName=self.stream)[
                    "StreamDescriptionSummary"
                ]["StreamStatus"]
                == "ACTIVE"
            ),
            10,
            "the stream to be active",
        )
        self.shards = self.kinesis.list_shards(StreamName=self.stream)["Shards"]
        self.dead_letters = self.directory / "dead.jsonl"
        self.job = self.directory / "job.yaml"
        self.job.write_text(
            "runtime: kcl\n"
            f"task_name: {self.task}\n"
            f"source: {{region: {REGION}, table: {self.source_table}, "
            f"endpoint_url: '{self.endpoint}', stream: {{kind: kinesis, name: {self.stream}}}}}\n"
            "destinations:\n"
            + "".join(
                f"  - {{region: {region}, table: {self.table(suffix)}, "
                f"endpoint_url: '{self.endpoint}'}}\n"
                for region, suffix in DESTINATIONS
            )
            + "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
            f"dead_letter: {{kind: file, path: '{self.dead_letters}'}}\n"
            "metrics: {host: 127.0.0.1, port: 0}\n"
            # One job file for every worker: each host gives its own worker id.
            "kcl:\n"
            "  worker_id: ${KCL_WORKER_ID}\n"
            f"  jars_dir: {self.jars}\n"
            f"  failover_time_ms: {FAILOVER_MS}\n"
            "  idle_time_between_reads_ms: 200\n"
            "  extra_properties: {shardSyncIntervalMillis: '1000', "
            "parentShardPollIntervalMillis: '1000'}\n"
        )

    def table(self, suffix: str) -> str:
        return f"{self.task}-{suffix}"

    # -- workers ------------------------------------------------------------------------

    def start(self, name: str) -> Worker:
        log = self.directory / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(self.job)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "KCL_WORKER_ID": name},
        )
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()

    # -- the stream ---------------------------------------------------------------------

    def write(self, rng: random.Random, keys: range, generation: int) -> None:
        """Three versions of each key, out of order, on the key's shard; every fifth key
        is deleted afterwards (a delete must come last: it is checked against the item's
        newest image)."""
        for index in keys:
            key = {"pk": {"S": f"item-{index}"}, "sk": {"N": str(index % 3)}}
            versions = [generation * 1000 + version for version in range(3)]
            rng.shuffle(versions)
            images = [
                {**key, "updated_at": {"N": str(stamp)}, "body": {"S": f"v{stamp}"}}
                for stamp in versions
            ]
            for image in images:
                self._put(index, kinesis_record("MODIFY", key, new=image, table=self.source_table))
            newest = max(images, key=lambda image: int(image["updated_at"]["N"]))
            identity = (key["pk"]["S"], key["sk"]["N"])
            if index % 5 == 0:
                self._put(index, kinesis_record("REMOVE", key, old=newest, table=self.source_table))
                self.expected[identity] = None
            else:
                self.expected[identity] = newest

    def _put(self, index: int, record: dict[str, Any]) -> None:
        shard = self.shards[index % 2]
        response = self.kinesis.put_record(
            StreamName=self.stream,
            Data=json.dumps(record).encode(),
            PartitionKey=record["dynamodb"]["Keys"]["pk"]["S"],
            ExplicitHashKey=shard["HashKeyRange"]["StartingHashKey"],
        )
        assert response["ShardId"] == shard["ShardId"]
        self.last_sequence[shard["ShardId"]] = int(response["SequenceNumber"])

    # -- outcomes -----------------------------------------------------------------------

    def differences(self) -> list[str]:
        found = []
        for region, suffix in DESTINATIONS:
            items = {
                (item["pk"]["S"], item["sk"]["N"]): item
                for item in tables.scan_all(
                    client("dynamodb", region, self.endpoint), self.table(suffix)
                )
            }
            for identity, image in self.expected.items():
                if items.get(identity) != image:
                    found.append(f"{suffix} {identity}: {items.get(identity)} != {image}")
            found += [f"{suffix} {key}: unexpected" for key in items if key not in self.expected]
        return found

    def leases(self) -> dict[str, dict[str, Any]]:
        try:
            rows = self.ddb.scan(TableName=self.task, ConsistentRead=True)["Items"]
        except self.ddb.exceptions.ResourceNotFoundException:
            return {}
        return {row["leaseKey"]["S"]: row for row in rows}

    def owners(self) -> dict[str, str]:
        return {
            shard: row.get("leaseOwner", {}).get("S", "") for shard, row in self.leases().items()
        }

    def checkpoints(self) -> dict[str, str]:
        return {shard: row["checkpoint"]["S"] for shard, row in self.leases().items()}

    def checkpointed_to_the_end(self) -> bool:
        expected = {shard: str(sequence) for shard, sequence in self.last_sequence.items()}
        return self.checkpoints() == expected

    def assert_no_dead_letters(self) -> None:
        assert not self.dead_letters.exists() or not self.dead_letters.read_text().strip()


@pytest.fixture
def scenario(
    endpoint: str, kcl_jars: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Scenario]:
    task = f"kcl-{request.node.name[5:20].replace('_', '-')}-{os.getpid()}"
    case = Scenario(endpoint, tmp_path, kcl_jars, task)
    try:
        yield case
    finally:
        case.kill_all()
        for worker in case.workers:
            left = worker.tree()
            assert not left, f"{worker.name} left processes behind: {left}"


def gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in pids)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_one_worker_replicates_and_checkpoints_in_the_task_named_lease_table(
    scenario: Scenario,
) -> None:
    rng = random.Random(5)
    scenario.write(rng, range(40), generation=1)
    worker = scenario.start("host-a")
    wait_until(lambda: not scenario.differences(), FIRST_LEASES_S, "the first batch to arrive")
    wait_until(scenario.checkpointed_to_the_end, 30, "checkpoints at the end of both shards")
    first = {shard: int(sequence) for shard, sequence in scenario.checkpoints().items()}
    assert set(first) == {shard["ShardId"] for shard in scenario.shards}
    assert set(scenario.owners().values()) == {"host-a"}
    port = logged_metrics_port(worker.log)
    assert matching(scrape(port), "replicator_shards_owned") == [2.0]

    scenario.write(rng, range(20, 60), generation=2)  # newer versions of half the items
    wait_until(lambda: not scenario.differences(), 60, "the second batch to arrive")
    wait_until(scenario.checkpointed_to_the_end, 30, "checkpoints past the second batch")
    second = {shard: int(sequence) for shard, sequence in scenario.checkpoints().items()}
    assert all(second[shard] > first[shard] for shard in first), (first, second)
    scenario.assert_no_dead_letters()

    tree = worker.tree()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(60) == 128 + signal.SIGTERM  # the JVM's answer to SIGTERM
    wait_until(lambda: gone(tree), 10, "the daemon and its processors to exit")
    log = worker.log.read_text()
    assert log.count('"event": "shutdown requested; checkpointed"') == 2, log[-3000:]


def test_two_workers_share_the_shards_and_one_takes_over_after_a_kill(
    scenario: Scenario,
) -> None:
    rng = random.Random(7)
    scenario.write(rng, range(30), generation=1)
    first = scenario.start("host-a")
    wait_until(
        lambda: list(scenario.owners().values()) == ["host-a", "host-a"],
        FIRST_LEASES_S,
        "host-a to lease both shards",
    )
    second = scenario.start("host-b")
    wait_until(
        lambda: sorted(scenario.owners().values()) == ["host-a", "host-b"],
        60,
        "host-b to take one of the two shards",
    )
    ports = {worker.name: logged_metrics_port(worker.log) for worker in (first, second)}
    wait_until(
        lambda: all(
            matching(scrape(port), "replicator_shards_owned") == [1.0] for port in ports.values()
        ),
        30,
        "each worker to run one processor",
    )
    scenario.write(rng, range(20, 50), generation=2)
    wait_until(lambda: not scenario.differences(), 60, "both workers' shards to arrive")
    wait_until(scenario.checkpointed_to_the_end, 30, "checkpoints at the end of both shards")
    (lost,) = [shard for shard, owner in scenario.owners().items() if owner == "host-a"]

    scenario.write(rng, range(40, 70), generation=3)  # perhaps not yet read by host-a
    killed_at = time.monotonic()
    first.kill()
    scenario.write(rng, range(60, 90), generation=4)
    wait_until(
        lambda: list(scenario.owners().values()) == ["host-b", "host-b"],
        8 * FAILOVER_MS / 1000,
        f"host-b to take over {lost} from the killed host-a",
    )
    takeover_s = time.monotonic() - killed_at
    wait_until(lambda: not scenario.differences(), 60, "every record to arrive after the kill")
    wait_until(scenario.checkpointed_to_the_end, 30, "host-b's checkpoints at the end")
    assert second.process.poll() is None
    assert matching(scrape(ports["host-b"]), "replicator_shards_owned") == [2.0]
    scenario.assert_no_dead_letters()
    print(f"takeover after {takeover_s:.1f}s (failover time {FAILOVER_MS / 1000:.0f}s)")
