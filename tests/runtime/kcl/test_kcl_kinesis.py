"""The real Java KCL 3 reading Kinesis Data Streams for DynamoDB, end to end, and the
launcher's refusals.

* a Kinesis stream (Kinesis Data Streams for DynamoDB records) on the stock KCL 3
  MultiLangDaemon, shared by workers of one task name, with kill -9 of one of them;
* the launcher refusing settings that cannot work.

Its own file, so that it runs beside the DynamoDB-stream scenario (test_kcl.py, whose
docstring explains how KCL 3 assigns leases and the waits derived from it) rather than
after it. moto is served over cleartext HTTP/2 (tests/support/h2moto.py).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from replicator.demo import tables
from replicator.runtime.kcl import java
from tests.support import ROOT
from tests.support.aws import client
from tests.support.e2e import wait_until
from tests.support.kcl_cluster import (
    FAILOVER_MS,
    FAILOVER_S,
    FAST_JVM,
    FIRST_LEASES_S,
    LEASE_ASSIGNMENT_MS,
    METRICS_REPORT_MS,
    REGION,
    TAKEOVER_S,
    Cluster,
    Worker,
    task_name,
)
from tests.support.metrics import logged_metrics_port, matching, scrape
from tests.support.records import kinesis_record

pytestmark = pytest.mark.kcl

# -- Kinesis Data Streams for DynamoDB, on the stock KCL 3 MultiLangDaemon -------------------


@dataclass
class KinesisScenario(Cluster):
    expected: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    last_sequence: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stream = f"{self.task}-changes"
        self.source_table = f"{self.task}-src"
        self.kinesis = client("kinesis", REGION, self.endpoint)
        tables.create(self.ddb, self.source_table, stream=False)
        self.destinations = [
            ("eu-west-1", f"{self.task}-eu"),
            ("ap-southeast-2", f"{self.task}-ap"),
        ]
        for region, table in self.destinations:
            tables.create(client("dynamodb", region, self.endpoint), table, stream=False)
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
                f"  - {{region: {region}, table: {table}, endpoint_url: '{self.endpoint}'}}\n"
                for region, table in self.destinations
            )
            + "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
            f"dead_letter: {{kind: file, path: '{self.dead_letters}'}}\n"
            "metrics: {host: 127.0.0.1, port: 0}\n"
            # One job file for every worker: each host gives its own worker id. One lease
            # per worker, so that two shards go to two workers and a third stands by.
            "kcl:\n"
            "  worker_id: ${KCL_WORKER_ID}\n"
            f"  failover_time_ms: {FAILOVER_MS}\n"
            "  idle_time_between_reads_ms: 200\n"
            # The worker that creates the leases pauses this long after (KCL's default: a
            # minute).
            f"  extra_properties: {{maxLeasesForWorker: '1', shardSyncIntervalMillis: '1000', "
            f"leaseAssignmentIntervalMillis: '{LEASE_ASSIGNMENT_MS}', "
            f"workerMetricsReporterFreqInMillis: '{METRICS_REPORT_MS}'}}\n"
        )

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

    def differences(self) -> list[str]:
        found = []
        for region, table in self.destinations:
            items = {
                (item["pk"]["S"], item["sk"]["N"]): item
                for item in tables.scan_all(client("dynamodb", region, self.endpoint), table)
            }
            for identity, image in self.expected.items():
                if items.get(identity) != image:
                    found.append(f"{table} {identity}: {items.get(identity)} != {image}")
            found += [f"{table} {key}: unexpected" for key in items if key not in self.expected]
        return found

    def checkpointed_to_the_end(self) -> bool:
        expected = {shard: str(sequence) for shard, sequence in self.last_sequence.items()}
        return self.checkpoints() == expected

    def assert_no_dead_letters(self) -> None:
        assert not self.dead_letters.exists() or not self.dead_letters.read_text().strip()


# The multilang protocol's loggers, which at INFO log each message to and from a processor.
_PER_MESSAGE_LOGGERS = ("MessageWriter", "LineReaderTask", "MultiLangProtocol")
# The KCL's routine lines at INFO, once a second (the leader) and at every checkpoint (a
# lease updated): debug records, not written at the job's info level.
_ROUTINE_LINES = re.compile(r"Worker : .* is the current leader\.|Updated lease \S+\.")


def processor_answered(worker: Worker, shard: str) -> bool:
    """Whether the worker's processor of ``shard`` has answered its initialize (it logs
    "processor started") and not exited since. A processor the daemon has only just
    started can still die of a stop signal sent to every process (the interpreter starts
    before the processor can ignore it); the stock daemon then waits out its
    shutdownGraceMillis: the stop below is meant for running processors."""
    started = exited = -1
    for number, line in enumerate(worker.text().splitlines()):
        if shard not in line:
            continue
        logged = json.loads(line)
        event = logged.get("event", "") if logged.get("shard") == shard else ""
        if event == "processor started":
            started = number
        elif "exiting" in event:
            exited = number
    return started > exited


@pytest.fixture
def kinesis(endpoint: str, kcl_jars: Path, tmp_path: Path) -> Iterator[KinesisScenario]:
    with contextlib.closing(KinesisScenario(endpoint, tmp_path, task_name("kin"))) as scenario:
        yield scenario


def test_kinesis_stream_shared_by_workers_of_the_stock_kcl3_daemon_survives_a_kill_9(
    kinesis: KinesisScenario,
) -> None:
    """Two shards on two of three workers (one lease each, the third stands by); the
    worker holding a shard but not the leader's lock is killed (kill -9), and its shard
    goes to a live worker within a few failover times; every record arrives, and every
    live worker, stopped with SIGTERM, checkpoints and exits 0: one whose launcher alone
    is signalled (docker stop, systemd's KillMode=mixed), and one whose every process is,
    processors included (systemd's default KillMode=control-group), which the processors
    leave to their daemon."""
    rng = random.Random(7)
    kinesis.write(rng, range(30), generation=1)
    workers = {
        name: kinesis.start(name, kinesis.job, env=FAST_JVM)
        for name in ("host-a", "host-b", "host-c")
    }

    # One reading of the lease table: the leader may take back and hand out a lease again
    # on a loaded machine (a worker that missed its metric reports looks gone), and two
    # readings could each see another moment of that.
    def both_leased() -> dict[str, str] | None:
        found = kinesis.owners()
        return found if len(found) == 2 and all(found.values()) else None

    owners = wait_until(both_leased, FIRST_LEASES_S, "both shards to be leased")
    assert len(set(owners.values())) == 2, owners  # one lease per worker
    wait_until(lambda: not kinesis.differences(), 60, "the first batch at both destinations")
    wait_until(kinesis.checkpointed_to_the_end, 30, "checkpoints at the end of both shards")
    first = {shard: int(sequence) for shard, sequence in kinesis.checkpoints().items()}
    ports = {name: logged_metrics_port(worker.log) for name, worker in workers.items()}
    holders = set(kinesis.owners().values())
    wait_until(
        lambda: all(
            matching(scrape(ports[name]), "replicator_shards_owned")
            == [1.0 if name in holders else 0.0]
            for name in workers
        ),
        30,
        "each shard holder to run one processor, the standby none",
    )

    # The leader's lock outlives it by two minutes: the worker killed is a holder that
    # does not hold it (the leader holds at most one of the two shards).
    victim = sorted(name for name in holders if name != kinesis.leader())[0]
    (shard,) = [shard for shard, owner in kinesis.owners().items() if owner == victim]
    wait_until(
        lambda: all(kinesis.reporting(worker) for worker in workers.values()),
        30,
        "every worker to report in",
    )
    kinesis.write(rng, range(20, 50), generation=2)
    killed_at = time.monotonic()
    workers[victim].kill()
    kinesis.write(rng, range(40, 70), generation=3)
    # The standby takes it, or the leader hands its own to the standby and takes it: two
    # live workers, one lease each, either way.
    wait_until(
        lambda: kinesis.owners()[shard] not in ("", victim),
        TAKEOVER_S,
        f"a live worker to take over {shard} from the killed {victim}",
    )
    takeover_s = time.monotonic() - killed_at
    wait_until(lambda: not kinesis.differences(), 60, "every record written around the kill")
    wait_until(kinesis.checkpointed_to_the_end, 30, "checkpoints at the end of both shards")
    after = {shard: int(sequence) for shard, sequence in kinesis.checkpoints().items()}
    assert all(after[shard] > first[shard] for shard in first), (first, after)
    live = [name for name in workers if name != victim]
    wait_until(
        lambda: (
            sorted(kinesis.owners().values()) == live
            and all(
                matching(scrape(ports[name]), "replicator_shards_owned") == [1.0] for name in live
            )
            and all(
                processor_answered(workers[owner], shard)
                for shard, owner in kinesis.owners().items()
            )
        ),
        30,
        "each live worker to hold one shard and run one processor",
    )
    kinesis.assert_no_dead_letters()
    for name in live:  # each processor knows its worker: it reads its lease by that id
        started = [
            json.loads(line)
            for line in workers[name].text().splitlines()
            if '"processor started"' in line
        ]
        assert started and all(line["worker_id"] == name for line in started), started
    print(
        f"kill -9 of {victim}: {kinesis.owners()[shard]} took over {shard} after {takeover_s:.1f}s"
    )

    stopping = [
        (workers[name], workers[name].terminate(every_process=index == 0))
        for index, name in enumerate(live)
    ]
    for worker, tree in stopping:
        assert worker.stopped(tree, timeout=FAILOVER_S + 30) == 0
        assert worker.checkpoints_at_stop() == 1, worker.text()[-3000:]
        worker.assert_json_lines()  # the KCL's logs and stack traces, the processors' too
        records = [json.loads(line) for line in worker.text().splitlines()]
        # properties/logback.xml: the multilang protocol's per-message lines (about ten a
        # second per idle shard at INFO) are off; the KCL's other info lines are kept.
        assert not [
            record
            for record in records
            if record.get("java_logger", "").rsplit(".", 1)[-1] in _PER_MESSAGE_LOGGERS
        ]
        assert not [
            record
            for record in records
            if record.get("java_logger") and _ROUTINE_LINES.fullmatch(record["event"])
        ]
        assert [
            record
            for record in records
            if record.get("level") == "info" and record.get("java_logger")
        ]


# -- the launcher's refusals ------------------------------------------------------------------


def launcher_properties(tmp_path: Path, **overrides: str) -> Path:
    settings = {
        "executableName": f"{sys.executable} -c pass",
        "applicationName": "refusals",
        "streamName": "orders",
        "dynamoDBStreamArn": (
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
        ),
        "regionName": REGION,
        "workerId": "host-a",
        "AWSCredentialsProvider": "DefaultCredentialsProvider",
        "metricsLevel": "NONE",
        "kinesisEndpoint": "http://127.0.0.1:9",
        "dynamoDBEndpoint": "http://127.0.0.1:9",
        **overrides,
    }
    path = tmp_path / "launcher.properties"
    path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    return path


def run_launcher(kcl_jars: Path, properties: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "java",
            f"-Dlogback.configurationFile={ROOT / 'properties' / 'logback.xml'}",
            "-cp",
            f"{kcl_jars}/*",
            java.STREAMS_LAUNCHER,
            "--properties-file",
            str(properties),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"AWSCredentialsProvider": "NoSuchProvider"},
            "AWSCredentialsProvider = NoSuchProvider names no credentials provider",
        ),
        (
            {"metricsLevel": "SUMMARY"},
            "metricsLevel = SUMMARY would publish the KCL's metrics to CloudWatch in AWS",
        ),
        ({"initialPositionInStream": "AT_TIMESTAMP"}, "AT_TIMESTAMP"),
    ],
    ids=["unknown-credentials-provider", "cloudwatch-with-local-endpoint", "at-timestamp"],
)
def test_the_launcher_refuses_settings_that_cannot_work(
    kcl_jars: Path, tmp_path: Path, overrides: dict[str, str], expected: str
) -> None:
    result = run_launcher(kcl_jars, launcher_properties(tmp_path, **overrides))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    (line,) = [line for line in output.splitlines() if "Cannot start:" in line]
    assert expected in line, line
    assert "\tat " not in output  # a sentence, not a stack trace
