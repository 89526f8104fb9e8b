"""The local runtime's leases end to end, as real processes against a moto server over
HTTP: one worker per task name, a dead or hung worker's leases taken over, a worker that
wakes after losing its lease stopping."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from pathlib import Path

import pytest

from tests.support.e2e import Job, children_of, stop, wait_until


def test_a_second_worker_for_the_same_task_is_refused(job: Job, tmp_path: Path) -> None:
    runtime = job.start()
    try:
        wait_until(
            lambda: any(row.get("leaseOwner") for row in job.lease_rows()),
            30,
            "the first worker to own the lease",
        )
        other = Job.__new__(Job)
        other.__dict__.update(job.__dict__)
        other.path = tmp_path / "other.yaml"
        other.write(**{})
        text = other.path.read_text().replace("kcl: {", "kcl: {worker_id: other-host, ")
        other.path.write_text(text)
        second_dir = tmp_path / "second-tmp"
        second_dir.mkdir()
        second = other.start(log=tmp_path / "second.log", env={"TMPDIR": str(second_dir)})
        assert second.wait(60) == 5
        message = (tmp_path / "second.log").read_text()
        assert "being run by worker" in message
        assert "Traceback" not in message
    finally:
        assert stop(runtime) == 0


def _as_worker(job: Job, tmp_path: Path, worker_id: str) -> Job:
    """The same job under its own file, run by a worker with this id."""
    other = Job.__new__(Job)
    other.__dict__.update(job.__dict__)
    other.path = tmp_path / f"{worker_id}.yaml"
    other.write()
    other.path.write_text(
        other.path.read_text().replace("kcl: {", f"kcl: {{worker_id: {worker_id}, ")
    )
    return other


def _owner(job: Job) -> str | None:
    rows = job.lease_rows()
    return rows[0].get("leaseOwner", {}).get("S") if rows else None


def test_a_dead_workers_lease_is_taken_over_by_a_worker_with_another_id(
    job: Job, tmp_path: Path
) -> None:
    """Worker host-a is killed -9 and never comes back; host-b, started after the
    failover time, takes its expired lease (the counter stood still) and replicates."""
    rng = random.Random(7)
    first = _as_worker(job, tmp_path, "host-a")
    runtime = first.start(log=tmp_path / "a.log")
    job.put_demo_items(rng, 0, 10)
    wait_until(job.converged, 60, "host-a to replicate")
    wait_until(lambda: _owner(job) == "host-a", 30, "host-a to own the lease")
    children = children_of(runtime.pid)
    runtime.send_signal(signal.SIGKILL)
    runtime.wait(10)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    job.put_demo_items(rng, 10, 10)
    second = _as_worker(job, tmp_path, "host-b").start(log=tmp_path / "b.log")
    try:
        wait_until(lambda: _owner(job) == "host-b", 60, "host-b to take the lease over")
        wait_until(job.converged, 60, "host-b to replicate what host-a left")
        job.put_demo_items(rng, 20, 10)
        wait_until(job.converged, 60, "host-b to replicate new changes")
        assert second.poll() is None
    finally:
        assert stop(second) == 0
    log = (tmp_path / "b.log").read_text()
    assert "taking over an expired lease" in log
    assert "host-a" in log


def test_a_hung_worker_whose_lease_was_taken_over_stops_with_exit_5_when_it_wakes(
    job: Job, tmp_path: Path
) -> None:
    """host-a hangs (SIGSTOP) for longer than the failover time; host-b takes its lease
    and replicates. When host-a wakes, it finds the lease gone and stops (exit 5) instead
    of writing on; host-b keeps replicating."""
    rng = random.Random(8)
    first = _as_worker(job, tmp_path, "host-a")
    runtime = first.start(log=tmp_path / "a.log")
    job.put_demo_items(rng, 0, 10)
    wait_until(job.converged, 60, "host-a to replicate")
    wait_until(lambda: _owner(job) == "host-a", 30, "host-a to own the lease")
    hung = [runtime.pid, *children_of(runtime.pid)]
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    # host-a's host lock is still held: host-b is another host, with its own lock.
    second_tmp = tmp_path / "host-b-tmp"
    second_tmp.mkdir()
    second = _as_worker(job, tmp_path, "host-b").start(
        log=tmp_path / "b.log", env={"TMPDIR": str(second_tmp)}
    )
    try:
        wait_until(lambda: _owner(job) == "host-b", 60, "host-b to take the lease over")
        job.put_demo_items(rng, 10, 10)
        wait_until(job.converged, 60, "host-b to replicate")
        for pid in reversed(hung):
            os.kill(pid, signal.SIGCONT)
        assert runtime.wait(60) == 5
        assert "taken" in (tmp_path / "a.log").read_text()
        assert _owner(job) == "host-b"
        job.put_demo_items(rng, 20, 10)
        wait_until(job.converged, 60, "host-b to replicate after host-a stopped")
        assert second.poll() is None
    finally:
        for pid in hung:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if runtime.poll() is None:
            runtime.kill()
        assert stop(second) == 0


def test_a_lease_taken_by_another_worker_starting_at_the_same_time_is_exit_5(job: Job) -> None:
    """Two hosts start one task at once: the other takes the lease between this worker's
    read of it and its take. That is the task held elsewhere (exit 5, one line), not a
    crash."""
    from replicator.config import load_job
    from replicator.exceptions import LeaseHeld
    from replicator.runtime.local.runtime import LocalRuntime
    from replicator.shards.leases import Lease, LeaseTable

    runtime = LocalRuntime(load_job(job.path), worker_id="host-a")
    other = LeaseTable(runtime.leases.client, runtime.leases.table, "host-b")
    take = runtime.leases.take

    def take_after_the_other_host(lease: Lease) -> Lease:
        stored = other.get(lease.shard_id)
        assert stored is not None
        other.take(stored)  # host-b wins the race
        return take(lease)

    runtime.leases.take = take_after_the_other_host  # type: ignore[method-assign]
    with pytest.raises(LeaseHeld) as held:
        runtime.run()
    assert held.value.exit_code == 5
    assert "taken by another worker while this one started" in str(held.value)
    (row,) = job.lease_rows()
    assert row["leaseOwner"] == {"S": "host-b"}
