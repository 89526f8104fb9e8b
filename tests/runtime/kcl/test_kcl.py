"""The real Java KCL 3: `replicator run` with runtime kcl against moto, end to end.

Every test here runs the jars the Docker image ships, built from docker/pom.xml by
scripts/build-kcl.sh (KCL 3.1.3, DynamoDB Streams Kinesis Adapter 2.0.1, the launcher):

* a DynamoDB stream through the launcher and the adapter, on several workers of one task
  name, with kill -9 and SIGTERM of the worker holding the shard, the last worker run by
  the Docker image's entry command as written in docker/Dockerfile;
* (test_kcl_kinesis.py) a Kinesis stream (Kinesis Data Streams for DynamoDB records) on
  the stock KCL 3 MultiLangDaemon, shared by workers, with kill -9 of one of them, and
  the launcher refusing settings that cannot work.

moto is served over cleartext HTTP/2 (tests/support/h2moto.py), which the KCL's Kinesis client
requires. Workers are real process trees (launcher, JVM, one processor per shard), started
in their own sessions and killed whole on teardown, whatever happened.

How KCL 3 assigns leases shapes these tests. A leader, elected through a lock in the
`<task>-CoordinatorState` table, assigns every lease: new or expired ones to the first
workers it finds alive; off EC2/ECS/EKS it has no CPU metrics, yet it may still move a
lease between live workers by a graceful handoff (the holder checkpoints first), which
these tests do not count on. A worker counts as gone once it misses
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
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from replicator.demo.workload import demo_item
from replicator.exceptions import StatusTableMissing
from replicator.watermark.parts import Watermark
from replicator.watermark.wait import read_watermark
from tests.support import ROOT
from tests.support.aws import client
from tests.support.e2e import Job, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.kcl_cluster import (
    FAILOVER_MS,
    FAILOVER_S,
    FAST_JVM,
    FIRST_LEASES_S,
    LEADER_RETRY_S,
    LEADER_TAKEOVER_S,
    LEASE_ASSIGNMENT_MS,
    METRICS_REPORT_MS,
    PROFILE_KEY,
    REGION,
    TAKEOVER_S,
    Cluster,
    Worker,
    assert_json_lines,
    task_name,
)
from tests.support.metrics import logged_metrics_port

pytestmark = pytest.mark.kcl

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
    # The KCL created the lease table; a run claimed it for the job's source table.
    lease_table_arn = streams.ddb.describe_table(TableName=streams.task)["Table"]["TableArn"]
    source_arn = streams.ddb.describe_table(TableName=streams.job.source_table)["Table"]
    owners = wait_until(
        lambda: [
            tag["Value"]
            for tag in streams.ddb.list_tags_of_resource(ResourceArn=lease_table_arn)["Tags"]
            if tag["Key"] == "replicator:source"
        ],
        30,
        "the lease table's owner tag",
    )
    # Both hosts may have found no tag and written one (moto keeps each): the same value.
    assert set(owners) == {source_arn["TableArn"]}
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
    # Every line of `replicator run` is a JSON object, the KCL's included. Run as the image
    # here, tini is not PID 1 and says so first, in lines of its own (not replicator run's).
    other.assert_json_lines()
    text = container.text()
    tini = text[: text.index("\n{") + 1] if not text.startswith("{") else ""
    assert "Tini is not running as PID 1" in tini or not tini, tini
    assert_json_lines(text[len(tini) :], container.name)

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
