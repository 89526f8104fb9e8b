"""The real Java KCL 3: a stop while a new task's worker is still starting.

A task run for the first time has no lease table. KCL 3.1.3's scheduler creates it, then
waits a random 1-30 s for another worker to fill it ("Lease table is still empty"),
holding the lock that both of the KCL's ways of stopping a scheduler wait for. A `docker
stop` or a Kubernetes stop then must not wait out the graceful stop's grace time (90 s
with the default failover time) and report a failure: no processor has run, so there is
nothing to checkpoint, and `replicator run` exits 0 as after any other stop.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.e2e import Job, wait_until
from tests.support.kcl_cluster import FAST_JVM, FIRST_LEASES_S, Cluster, task_name

pytestmark = pytest.mark.kcl

# The default kcl.failover_time_ms, whose graceful stop (shutdownGraceMillis) is 90 s.
FAILOVER_MS = 60_000
# How long the stop may take: the JVM's exit and the supervisor's clean-up, with a busy
# machine's margin; half the failover time.
STOP_BOUND_S = 30


def test_a_sigterm_while_a_new_tasks_worker_starts_exits_0_at_once(
    endpoint: str, kcl_jars: Path, tmp_path: Path
) -> None:
    """A SIGTERM (once, as `docker stop` sends it) while the KCL waits on the task's new
    lease table: the daemon stops without the graceful stop, saying why, and `replicator
    run` exits 0 within seconds, its last line the daemon's clean exit, leaving no process
    behind."""
    with contextlib.closing(Cluster(endpoint, tmp_path, task_name("first"))) as cluster:
        job = Job(
            endpoint,
            cluster.task,
            tmp_path,
            extra="runtime: kcl\n",
            kcl=f"{{worker_id: '${{KCL_WORKER_ID}}', failover_time_ms: {FAILOVER_MS}}}",
        )
        worker = cluster.start("host-a", job.path, env=FAST_JVM)
        wait_until(
            lambda: "Lease table is still empty" in worker.text(),
            FIRST_LEASES_S,
            "the KCL to wait on the task's new lease table",
        )
        stopped_at = time.monotonic()
        tree = worker.terminate()
        try:
            status = worker.stopped(tree, timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired as error:
            raise AssertionError(f"{error}\n{worker.text()[-3000:]}") from error
        took = time.monotonic() - stopped_at
        text = worker.text()
        assert status == 0, text[-3000:]
        assert took < STOP_BOUND_S, took
        assert "the KCL scheduler was still starting" in text, text[-3000:]
        assert "Graceful shutdown did not complete" not in text
        assert "the daemon stopped as asked" in text
        last = json.loads(text.strip().splitlines()[-1])
        assert (last["event"], last["status"], last["exit_code"]) == ("KCL daemon exited", 143, 0)
        print(f"SIGTERM while starting: exit {status} after {took:.1f}s")
