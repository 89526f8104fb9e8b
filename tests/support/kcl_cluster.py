"""Workers of the real Java KCL 3 on one host, for the tests in tests/runtime/kcl/: real
process trees (launcher, JVM, one processor per shard) started in their own sessions and
killed whole, and the KCL's tables of their task. How KCL 3 assigns leases, which the
timing constants below follow, is explained in tests/runtime/kcl/test_kcl.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.aws import client
from tests.support.e2e import wait_until

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
# What a processor logs when it answers shutdownRequested (a SIGTERM) with everything it
# received applied and checkpointed: at the stop, or by a batch before it.
SHUTDOWN_CHECKPOINTS = (
    '"event": "shutdown requested; checkpointed"',
    '"event": "shutdown requested; not checkpointed: nothing new settled since the last '
    'checkpoint"',
)
# JIT and GC settings that start the JVMs faster on a busy machine (REPLICATOR_KCL_JVM_OPTIONS).
FAST_JVM = {"REPLICATOR_KCL_JVM_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}


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
        """The launcher's live process tree; none once the launcher has been reaped. Its
        pid is then free, and may be another test's process by now: a cleanup that killed
        the group of a worker killed minutes before killed another test's KCL daemon."""
        if self.process.poll() is not None:
            return []
        return process_tree(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the whole worker: launcher, JVM (its own process group), processors."""
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)

    def terminate(self, *, every_process: bool = False) -> list[int]:
        """SIGTERM, once, as `docker stop` sends it (a second one means: kill); with
        ``every_process``, to the launcher, the JVM and the processors at once, as
        systemd's default KillMode=control-group does."""
        tree = self.tree()
        self.log_at_stop = self.log.stat().st_size
        for pid in tree if every_process else [self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return tree

    def checkpoints_at_stop(self) -> int:
        """Processors whose checkpoint held everything they had applied when asked to
        shut down, after the SIGTERM."""
        with self.log.open("rb") as log:
            log.seek(self.log_at_stop)
            text = log.read().decode(errors="replace")
        return sum(text.count(event) for event in SHUTDOWN_CHECKPOINTS)

    def stopped(self, tree: list[int], timeout: float) -> int:
        """The exit status once the worker and everything it ran are gone."""
        status = self.process.wait(timeout)
        wait_until(lambda: gone(tree), 15, f"{self.name}'s daemon and processors to exit")
        return status

    def stop(self, timeout: float) -> int:
        return self.stopped(self.terminate(), timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_json_lines(self) -> None:
        """Every line the worker wrote (launcher, daemon, processors) is one JSON object,
        as logging.format (auto, not on a terminal) promises."""
        assert_json_lines(self.text(), self.name)


def assert_json_lines(text: str, name: str = "stderr") -> None:
    for number, line in enumerate(text.splitlines(), 1):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        assert isinstance(value, dict), f"{name} line {number} is not a JSON object: {line!r}"


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
        """Kill every worker, whatever happened; none may leave a process behind. Each
        tree is read while its launcher is unreaped (its pid still its own)."""
        trees = {worker.name: worker.tree() for worker in self.workers}
        for worker in self.workers:
            worker.kill()
        for name, tree in trees.items():
            wait_until(lambda tree=tree: gone(tree), 15, f"{name}'s processes to exit")

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


def task_name(kind: str) -> str:
    return f"kcl-{kind}-{os.getpid()}-{time.time_ns() % 10**6}"
