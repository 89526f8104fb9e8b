"""kill -9 of a processor child, and of the runtime, three times in a row: each restart
resumes from the checkpoint and nothing is lost."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from replicator.demo.workload import Workload
from tests.support.e2e import children_of, stop, wait_until
from tests.support.reliability import (
    SETTLE_S,
    Figures,
    ProxiedJob,
    Samples,
    checkpoint_reaches_the_end,
    during,
    log_text,
    settle,
    stream_records,
    wait_started,
)

pytestmark = pytest.mark.reliability


def _seed() -> int:
    return int(os.environ.get("RELIABILITY_SEED") or time.time_ns() % 100_000)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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
