"""The real Java KCL 3: `replicator run` with runtime kcl against moto, end to end.

Every test here runs the jars the Docker image ships, built from docker/pom.xml by
scripts/build-kcl.sh (KCL 3.1.3, DynamoDB Streams Kinesis Adapter 2.0.1, the launcher):

* a DynamoDB stream through the launcher and the adapter, on several workers of one task
  name, with kill -9 and SIGTERM of the worker holding the shard, the last worker run by
  the Docker image's entry command as written in docker/Dockerfile;
* a Kinesis stream (Kinesis Data Streams for DynamoDB records) on the stock KCL 3
  MultiLangDaemon, shared by workers, with kill -9 of one of them;
* the launcher refusing settings that cannot work.

moto is served over cleartext HTTP/2 (tests/support/h2moto.py), which the KCL's Kinesis client
requires. Workers are real process trees (launcher, JVM, one processor per shard), started
in their own sessions and killed whole on teardown, whatever happened.

How KCL 3 assigns leases shapes these tests. A leader, elected through a lock in the
`<task>-CoordinatorState` table, assigns every lease; off EC2/ECS/EKS the KCL has no CPU
metrics, so it never moves a lease between live workers, only hands out leases that are
new or expired to the first workers it finds alive. A worker counts as gone once it misses
two metric reports, and a dead leader's lock is given up only after its two minutes run
out. The tests set kcl.failover_time_ms to 5 s and, through kcl.extra_properties, report
worker metrics every second and assign leases every 2 s, so that takeovers are quick
except where the lock is the bound; those waits are derived from these settings below.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
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
from replicator.demo.workload import demo_item
from replicator.exceptions import StatusTableMissing
from replicator.runtime.kcl import java
from replicator.watermark.parts import Watermark
from replicator.watermark.wait import read_watermark
from tests.support import ROOT
from tests.support.aws import client
from tests.support.e2e import Job, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.h2moto import H2Moto
from tests.support.kcl_jars import ensure_jars
from tests.support.metrics import logged_metrics_port, matching, scrape
from tests.support.records import kinesis_record

pytestmark = pytest.mark.kcl

REGION = "us-east-1"
# Short, but not so short that a busy machine's late lease renewals move leases around.
FAILOVER_MS = 10_000
FAILOVER_S = FAILOVER_MS / 1000
LEASE_ASSIGNMENT_MS = 2000
METRICS_REPORT_MS = 1000
# A new task: JVM start, the KCL's random 1-30 s wait on a new lease table, then leases.
FIRST_LEASES_S = 120
# A lease not renewed for the failover time, its worker gone (two missed metric reports),
# then the next assignment round; doubled for a loaded machine.
TAKEOVER_S = 2 * (FAILOVER_S + 2 * METRICS_REPORT_MS / 1000 + 2 * LEASE_ASSIGNMENT_MS / 1000)
# KCL 3.1.3's leader lock (DynamoDBLockBasedLeaderDecider): a dead leader's lock is taken
# after its 2-minute lease has run out, by a worker that tries every 30 s.
LEADER_LOCK_S = 120
LEADER_RETRY_S = 30
LEADER_TAKEOVER_S = LEADER_LOCK_S + LEADER_RETRY_S + TAKEOVER_S + 30
PROFILE_KEY = "AKIDKCLPROFILE"
# What a processor logs once it has checkpointed on shutdownRequested (a SIGTERM).
SHUTDOWN_CHECKPOINT = '"event": "shutdown requested; checkpointed"'
# JIT and GC settings that start the JVMs faster on a busy machine (REPLICATOR_KCL_JVM_OPTIONS).
FAST_JVM = {"REPLICATOR_KCL_JVM_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}


@pytest.fixture(scope="module")
def kcl_jars() -> Path:
    return ensure_jars()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with H2Moto(tmp_path_factory.mktemp("h2moto")) as server:
        yield server.url


# -- processes ------------------------------------------------------------------------------


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


def gone(pids: list[int]) -> bool:
    return not any(_state(pid) not in ("", "Z") for pid in pids)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.time)
    log_at_stop: int = 0

    def tree(self) -> list[int]:
        return process_tree(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the whole worker: launcher, JVM (its own process group), processors."""
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)

    def terminate(self) -> list[int]:
        """SIGTERM, once, as `docker stop` sends it (a second one means: kill)."""
        tree = self.tree()
        self.log_at_stop = self.log.stat().st_size
        self.process.send_signal(signal.SIGTERM)
        return tree

    def checkpoints_at_stop(self) -> int:
        """Processors that checkpointed when asked to shut down, after the SIGTERM."""
        with self.log.open("rb") as log:
            log.seek(self.log_at_stop)
            return log.read().decode(errors="replace").count(SHUTDOWN_CHECKPOINT)

    def stopped(self, tree: list[int], timeout: float) -> int:
        """The exit status once the worker and everything it ran are gone."""
        status = self.process.wait(timeout)
        wait_until(lambda: gone(tree), 15, f"{self.name}'s daemon and processors to exit")
        return status

    def stop(self, timeout: float) -> int:
        return self.stopped(self.terminate(), timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    """Workers of one task name on one host, and the KCL's tables for that task."""

    endpoint: str
    directory: Path
    task: str
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ddb = client("dynamodb", REGION, self.endpoint)

    def start(
        self,
        name: str,
        job: Path,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Worker:
        log = self.directory / f"{name}.log"
        process = subprocess.Popen(
            argv or [sys.executable, "-m", "replicator", "run", "--config", str(job)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.directory,
            env={**os.environ, "KCL_WORKER_ID": name, **(env or {})},
        )
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        """Kill every worker, whatever happened; none may leave a process behind."""
        for worker in self.workers:
            worker.kill()
        for worker in self.workers:
            assert not worker.tree(), f"{worker.name} left processes behind: {worker.tree()}"

    def _scan(self, table: str) -> list[dict[str, Any]]:
        try:
            return list(self.ddb.scan(TableName=table, ConsistentRead=True)["Items"])
        except self.ddb.exceptions.ResourceNotFoundException:
            return []

    def leases(self) -> dict[str, dict[str, Any]]:
        """The lease table, named by the task name: one row per shard."""
        return {row["leaseKey"]["S"]: row for row in self._scan(self.task)}

    def owners(self) -> dict[str, str]:
        return {
            shard: row.get("leaseOwner", {}).get("S", "") for shard, row in self.leases().items()
        }

    def checkpoints(self) -> dict[str, str]:
        return {
            shard: row.get("checkpoint", {}).get("S", "") for shard, row in self.leases().items()
        }

    def leader(self) -> str:
        rows = self._scan(f"{self.task}-CoordinatorState")
        owners = [
            row.get("ownerName", {}).get("S", "") for row in rows if row["key"]["S"] == "Leader"
        ]
        return owners[0] if owners else ""

    def reporting(self, worker: Worker) -> bool:
        """The worker has reported its metrics since it started: the KCL counts it in."""
        for row in self._scan(f"{self.task}-WorkerMetricStats"):
            if row.get("wid", {}).get("S") == worker.name:
                return float(row.get("lut", {}).get("N", "0")) >= int(worker.started)
        return False


# -- DynamoDB Streams, through the launcher and the adapter ---------------------------------


def every_type_item(rng: random.Random, index: int, stamp: int) -> dict[str, Any]:
    """The demo's item (every attribute type), plus 38-digit numbers and raw binary."""
    item = demo_item(rng, f"item-{index}", index % 3, REGION)
    item["updated_at"] = {"N": str(stamp)}
    item["big"] = {"N": "9" * 38}
    item["small"] = {"N": "-0.000000000000000000000000000000000000" + "1234567890" * 3 + "12345678"}
    item["numbers"] = {"NS": ["1" + "0" * 37, "-" + "9" * 38, str(index)]}
    item["raw"] = {"B": bytes(range(256))}
    return item


@dataclass
class StreamsScenario(Cluster):
    """A DynamoDB-stream source with two destinations; every worker reads the same job.

    The job reads the source (its stream and the KCL's tables) through a recording proxy,
    and names a credentials profile for the KCL in kcl.extra_properties, as an operator
    whose hosts keep the KCL's credentials in a mounted file may do.
    """

    proxy: FaultProxy = field(init=False)
    job: Job = field(init=False)
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.proxy = FaultProxy(self.endpoint).start()
        self.credentials = self.directory / "credentials"
        self.credentials.write_text(
            f"[replicator-kcl]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = x\n"
        )
        self.job = Job(
            self.endpoint,
            self.task,
            self.directory,
            extra="runtime: kcl\n",
            kcl="{worker_id: '${KCL_WORKER_ID}', "
            f"failover_time_ms: {FAILOVER_MS}, idle_time_between_reads_ms: 200, "
            "extra_properties: {"
            "AWSCredentialsProvider: 'ProfileCredentialsProvider|replicator-kcl', "
            f"leaseAssignmentIntervalMillis: '{LEASE_ASSIGNMENT_MS}', "
            f"workerMetricsReporterFreqInMillis: '{METRICS_REPORT_MS}'}}}}",
        )
        text = self.job.path.read_text()
        source = f"endpoint_url: '{self.endpoint}'}}\ndestinations"
        assert source in text
        self.job.path.write_text(
            text.replace(source, f"endpoint_url: '{self.proxy.url}'}}\ndestinations")
        )
        self.env = {"AWS_SHARED_CREDENTIALS_FILE": str(self.credentials)}

    def write(self, keys: range, generation: int) -> None:
        """A new version of each key (every attribute type), then deletes of every fifth."""
        for index in keys:
            item = every_type_item(self.rng, index, generation * 1000 + index)
            self.job.source.put_item(TableName=self.job.source_table, Item=item)
        for index in keys:
            if index % 5 == 0:
                self.job.source.delete_item(
                    TableName=self.job.source_table,
                    Key={"pk": {"S": f"item-{index}"}, "sk": {"N": str(index % 3)}},
                )

    def converged(self) -> bool:
        return self.job.converged()

    def checkpoint(self) -> str:
        (checkpoint,) = self.checkpoints().values()
        return checkpoint

    def checkpointed_to_the_end(self) -> bool:
        return self.checkpoint() == self.job.last_stream_sequence()

    def holder(self) -> str:
        owners = list(self.owners().values())
        return owners[0] if owners else ""

    def daemon_requests(self) -> list[tuple[str, dict[str, str]]]:
        """What the JVMs sent to the source endpoint (not boto3: preflight, tests)."""
        return [
            (target, headers)
            for target, headers in self.proxy.seen()
            if "aws-sdk-java" in headers.get("user-agent", "")
        ]

    def watermarks(self) -> dict[str, Watermark]:
        """Each destination's combined watermark, read as an application there reads it."""
        return {
            f"{region}/{table}": read_watermark(
                destination=f"{region}/{table}",
                status_table=f"{self.task}-watermark",
                client=client("dynamodb", region, self.endpoint),
            )
            for region, table in self.job.destinations
        }

    def watermarks_pass(self, moment: float) -> dict[str, Watermark] | None:
        """The watermarks once every destination's has passed ``moment``, else None."""
        try:
            marks = self.watermarks()
        except StatusTableMissing:
            return None
        passed = all(mark.seconds is not None and mark.seconds >= moment for mark in marks.values())
        return marks if passed else None

    def assert_no_dead_letters(self) -> None:
        dead = self.job.dead_letters
        assert not dead.exists() or not dead.read_text().strip(), dead.read_text()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.proxy.stop()


def task_name(kind: str) -> str:
    return f"kcl-{kind}-{os.getpid()}-{time.time_ns() % 10**6}"


@pytest.fixture
def streams(endpoint: str, kcl_jars: Path, tmp_path: Path) -> Iterator[StreamsScenario]:
    with contextlib.closing(StreamsScenario(endpoint, tmp_path, task_name("ddb"))) as scenario:
        yield scenario


def test_a_dynamodb_stream_job_moves_between_hosts_on_kill_9_and_sigterm(
    streams: StreamsScenario, kcl_jars: Path
) -> None:
    """Two hosts run the job (`replicator run`); the one holding the stream's only shard
    is killed whole (kill -9) mid-workload and the other takes the shard over; a
    replacement host joins, run as the Docker image runs it (ENTRYPOINT + CMD and ENV of
    docker/Dockerfile, on this host's built jars); the new holder is stopped with SIGTERM,
    checkpoints and exits 0, and the replacement takes over, passes the image's health
    check and finishes. Every destination ends equal to the source (every attribute type,
    deletes), nothing dead-lettered; the lease table is named by the task name and its
    checkpoint advances."""
    streams.write(range(0, 40), generation=1)
    first = {
        name: streams.start(name, streams.job.path, env={**streams.env, **FAST_JVM})
        for name in ("host-a", "host-b")
    }
    wait_until(streams.holder, FIRST_LEASES_S, "a worker to lease the shard")
    wait_until(streams.converged, 60, "the first batch at both destinations")
    wait_until(streams.checkpointed_to_the_end, 30, "a checkpoint at the end of the stream")
    checkpoint = streams.checkpoint()
    # The holder publishes the shard's part of the watermark in each destination's region.
    written = time.time()
    marks = [wait_until(lambda: streams.watermarks_pass(written), 60, "the watermark")]

    # kill -9 of the holder, mid-workload.
    holder = first[streams.holder()]
    (other,) = [worker for worker in first.values() if worker is not holder]
    holder_led = streams.leader() == holder.name
    streams.write(range(30, 60), generation=2)
    killed_at = time.monotonic()
    holder.kill()
    container = start_as_the_image(streams, kcl_jars)
    streams.write(range(50, 80), generation=3)
    # The leader hands a free lease to the first worker alive in the order its metrics table
    # lists them, which moto sorts by worker id: the survivor, not the replacement (host-c),
    # whichever of them takes the leader's lock.
    wait_until(
        lambda: streams.holder() == other.name,
        LEADER_TAKEOVER_S if holder_led else TAKEOVER_S,
        f"{other.name} to take the shard from the killed {holder.name}",
    )
    takeover_s = time.monotonic() - killed_at
    wait_until(streams.converged, 60, "every change written around the kill")
    wait_until(streams.checkpointed_to_the_end, 30, f"{other.name}'s checkpoint at the end")
    assert int(streams.checkpoint()) > int(checkpoint)
    checkpoint = streams.checkpoint()
    written = time.time()
    marks.append(wait_until(lambda: streams.watermarks_pass(written), 60, "the new holder's"))
    print(
        f"kill -9 of {holder.name} ({'leader' if holder_led else 'not the leader'}): "
        f"{other.name} took over after {takeover_s:.1f}s"
    )

    # The replacement, run as the image runs it, reports in and passes the image's check.
    wait_until(lambda: streams.reporting(container), 60, "the replacement to report in")
    probe = subprocess.run(
        image_runtime_stage()["HEALTHCHECK"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **container_env(streams, kcl_jars),
            "REPLICATOR_METRICS_PORT": str(logged_metrics_port(container.log)),
        },
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr

    # SIGTERM of the holder (docker stop), mid-workload: it checkpoints and exits 0, and
    # the other worker continues.
    live = {worker.name: worker for worker in (other, container)}
    streams.write(range(70, 100), generation=4)
    stopping = live.pop(streams.holder())
    (remaining,) = live.values()
    stopped_at = time.monotonic()
    assert stopping.stop(timeout=FAILOVER_S + 30) == 0
    assert stopping.checkpoints_at_stop() == 1, stopping.text()[-3000:]
    streams.write(range(90, 120), generation=5)
    wait_until(
        lambda: streams.holder() == remaining.name,
        LEADER_RETRY_S + TAKEOVER_S,
        f"{remaining.name} to take the shard from the stopped {stopping.name}",
    )
    handoff_s = time.monotonic() - stopped_at
    wait_until(streams.converged, 60, "every change written around the stop")
    wait_until(streams.checkpointed_to_the_end, 30, f"{remaining.name}'s checkpoint at the end")
    assert int(streams.checkpoint()) > int(checkpoint)
    assert set(streams.leases()) and streams.ddb.describe_table(TableName=streams.task)
    streams.assert_no_dead_letters()
    written = time.time()
    marks.append(wait_until(lambda: streams.watermarks_pass(written), 60, "the last holder's"))
    # Each holder published the shard's part in turn, and no reader ever saw it go back.
    for destination in marks[0]:
        seen = [mark[destination] for mark in marks]
        assert [m.watermark_us for m in seen] == sorted(m.watermark_us or 0 for m in seen)
        owners = [part.owner for m in seen for part in m.counted]
        assert len(set(owners)) >= 2, owners
        assert all(m.dead_letters == 0 for m in seen)
    print(f"SIGTERM of {stopping.name}: {remaining.name} took over after {handoff_s:.1f}s")
    assert remaining.stop(timeout=FAILOVER_S + 30) == 0
    assert remaining.checkpoints_at_stop() == 1, remaining.text()[-3000:]
    # The image's command held the shard when it was stopped, whichever stop came first.
    assert container.checkpoints_at_stop() == 1

    # Every request of the daemons carried the profile's key, and the DynamoDB Streams
    # client retries as the adapter advises.
    requests = streams.daemon_requests()
    keys = {h["authorization"].split("Credential=")[1].split("/")[0] for _, h in requests}
    assert keys == {PROFILE_KEY}
    stream_calls = [h for target, h in requests if target.startswith("DynamoDBStreams_")]
    assert stream_calls and all("max=10" in h["amz-sdk-request"] for h in stream_calls)


# -- the Docker image's entry command, as written ------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    lines, current = [], ""
    for raw in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not current):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    found = []
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        found.append((instruction.upper(), arguments.strip()))
    return found


def image_runtime_stage() -> dict[str, Any]:
    """ENV, ENTRYPOINT, CMD and the HEALTHCHECK command of the image's last stage."""
    stage: dict[str, Any] = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "FROM":
            stage = {"ENV": {}}
        elif instruction == "ENV":
            stage["ENV"].update(dict(re.findall(r"(\w+)=(\S+)", arguments)))
        elif instruction in ("ENTRYPOINT", "CMD"):
            stage[instruction] = json.loads(arguments)
        elif instruction == "HEALTHCHECK":
            stage["HEALTHCHECK"] = json.loads(arguments.split(" CMD ", 1)[1])
    return stage


def container_env(streams: StreamsScenario, kcl_jars: Path) -> dict[str, str]:
    """The image's ENV, with its paths pointing where this host has those files."""
    return {
        **os.environ,
        **image_runtime_stage()["ENV"],
        "REPLICATOR_CONFIG": str(streams.job.path),  # the mounted /config/job.yaml
        "REPLICATOR_KCL_JARS": str(kcl_jars),  # /opt/kcl/jars, from the build stage
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **streams.env,
    }


def start_as_the_image(streams: StreamsScenario, kcl_jars: Path) -> Worker:
    """A worker started with the image's ENTRYPOINT + CMD, as written, under tini."""
    assert shutil.which("tini"), "tini is not on PATH (make test installs it)"
    stage = image_runtime_stage()
    command = stage["ENTRYPOINT"] + stage["CMD"]
    assert command == ["tini", "--", "replicator", "run"]
    return streams.start(
        "host-c", streams.job.path, argv=command, env=container_env(streams, kcl_jars)
    )


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
    live worker, stopped with SIGTERM, checkpoints and exits 0."""
    rng = random.Random(7)
    kinesis.write(rng, range(30), generation=1)
    workers = {
        name: kinesis.start(name, kinesis.job, env=FAST_JVM)
        for name in ("host-a", "host-b", "host-c")
    }
    wait_until(
        lambda: all(kinesis.owners().values()) and len(kinesis.owners()) == 2,
        FIRST_LEASES_S,
        "both shards to be leased",
    )
    assert len(set(kinesis.owners().values())) == 2  # one lease per worker
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
        ),
        30,
        "each live worker to hold one shard and run one processor",
    )
    kinesis.assert_no_dead_letters()
    print(
        f"kill -9 of {victim}: {kinesis.owners()[shard]} took over {shard} after {takeover_s:.1f}s"
    )

    stopping = [(worker, worker.terminate()) for name, worker in workers.items() if name != victim]
    for worker, tree in stopping:
        assert worker.stopped(tree, timeout=FAILOVER_S + 30) == 0
        assert worker.checkpoints_at_stop() == 1, worker.text()[-3000:]


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
