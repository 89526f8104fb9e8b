"""The local runtime's leases end to end, as real processes against a moto server over
HTTP: one worker per task name, a dead or hung worker's leases taken over, a worker that
wakes after losing its lease stopping."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from replicator.demo import tables
from replicator.tools.compare import compare
from replicator.watermark.table import StatusTable
from tests.support.aws import client, create_lease_table
from tests.support.cli import in_process
from tests.support.e2e import KEYS, PATIENCE, Job, children_of, stop, wait_until
from tests.support.metrics import logged_metrics_port


def test_a_second_worker_for_the_same_task_is_refused(job: Job, tmp_path: Path) -> None:
    runtime = job.start()
    try:
        wait_until(
            lambda: any(row.get("leaseOwner") for row in job.lease_rows()),
            30,
            "the first worker to own the lease",
        )
        other = _copy(job, tmp_path / "other.yaml")
        other.write()
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


def _all_made(job: Job) -> dict[str, set[str]] | None:
    """The job's tables once its run has made them all (its watermark tables come last,
    in the background), else None."""
    tables = job.tables_named()
    watermark = f"{job.name}-watermark"
    return tables if all(watermark in tables[region] for region, _ in job.destinations) else None


def test_a_second_run_refused_by_the_host_lock_creates_nothing(job: Job, tmp_path: Path) -> None:
    """A copy of a running job with tombstone tables, a conflict-log table and a
    dead-letter directory of its own logged ``created tombstone table`` in every region
    before the host lock refused it (exit 5), leaving those tables behind: a refused start
    now creates no table and no directory. The copy asks for the first run's metrics port,
    as a second worker of a job file does: the lock is taken before the port is bound, so
    the copy is told the task is running (exit 5), not that its port is taken (exit 3)."""
    job.extra = "loop_prevention: {origin_attribute: origin}\nactive_active: {tombstones: true}\n"
    job.write()
    runtime = job.start(log=tmp_path / "first.log")
    try:
        before = wait_until(lambda: _all_made(job), 30, "the first run's tables")
        assert f"{job.source_table}-tombstones" in before[job.source_region]
        other = _copy(job, tmp_path / "copy.yaml")
        other.dead_letters = tmp_path / "copy-dead" / "dead.jsonl"
        other.extra = (
            "loop_prevention: {origin_attribute: origin}\n"
            "active_active: {tombstones: true, tombstone_table: '{table}-tb2'}\n"
            "conflict_log: {kind: dynamodb, table: '{task_name}-log2'}\n"
        )
        other.write()
        port = logged_metrics_port(tmp_path / "first.log")
        other.path.write_text(other.path.read_text().replace("port: 0}", f"port: {port}}}"))
        second = other.start(log=tmp_path / "second.log")
        assert second.wait(60 * PATIENCE) == 5
        lines = (tmp_path / "second.log").read_text().splitlines()
        said = [line for line in lines if line.startswith("replicator: ")]
        assert len(said) == 1 and not any("Traceback" in line for line in lines), lines
        assert f"is being run by process {runtime.pid} on this host" in said[0], said
        assert not any("created" in line for line in lines), lines
        assert job.tables_named() == before
        assert not (tmp_path / "copy-dead").exists()
        assert runtime.poll() is None
    finally:
        assert stop(runtime) == 0


def _copy(job: Job, path: Path) -> Job:
    """The same job (its tables), with its file at ``path``."""
    other = Job.__new__(Job)
    other.__dict__.update(job.__dict__)
    other.path = path
    return other


def _as_worker(job: Job, tmp_path: Path, worker_id: str, failover_time_ms: int = 6000) -> Job:
    """The same job under its own file, run by a worker with this id."""
    other = _copy(job, tmp_path / f"{worker_id}.yaml")
    other.write()
    text = other.path.read_text()
    assert "failover_time_ms: 6000" in text
    other.path.write_text(
        text.replace("kcl: {", f"kcl: {{worker_id: {worker_id}, ").replace(
            "failover_time_ms: 6000", f"failover_time_ms: {failover_time_ms}"
        )
    )
    return other


# The failover time of the takeover tests: the worker that took the lease, alone once the
# other is dead or hung, waits this long at start-up for the lease's counter to stand still.
TAKEOVER_FAILOVER_MS = 2000


def _owner(job: Job) -> str | None:
    rows = job.lease_rows()
    return rows[0].get("leaseOwner", {}).get("S") if rows else None


def test_a_dead_workers_lease_is_taken_over_by_a_worker_with_another_id(
    job: Job, tmp_path: Path
) -> None:
    """Worker host-a is killed -9 and never comes back; host-b, started after the
    failover time, takes its expired lease (the counter stood still) and replicates."""
    rng = random.Random(7)
    first = _as_worker(job, tmp_path, "host-a", TAKEOVER_FAILOVER_MS)
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
    second = _as_worker(job, tmp_path, "host-b", TAKEOVER_FAILOVER_MS).start(log=tmp_path / "b.log")
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
    first = _as_worker(job, tmp_path, "host-a", TAKEOVER_FAILOVER_MS)
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
    second = _as_worker(job, tmp_path, "host-b", TAKEOVER_FAILOVER_MS).start(
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
    from replicator.config.loader import load_job
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


def test_a_second_run_under_the_same_worker_id_on_this_host_is_refused_and_the_first_runs_on(
    job: Job, tmp_path: Path
) -> None:
    """Both runs take the default worker id (the host name); the second reaches the lease
    table through another spelling of the endpoint, which the host lock (keyed by the
    endpoint) does not catch, as a second host with a pinned ``kcl.worker_id`` would. The
    lease names the first run's live process: the second stops at once with exit 5 and
    one line naming it, and the first keeps its lease and replicates on."""
    rng = random.Random(9)
    runtime = job.start(log=tmp_path / "first.log")
    try:
        job.put_demo_items(rng, 0, 10)
        wait_until(job.converged, 60, "the first run to replicate")
        (row,) = job.lease_rows()
        counter = int(row["leaseCounter"]["N"])
        twin = _copy(job, tmp_path / "twin.yaml")
        twin.path.write_text(job.path.read_text().replace("//127.0.0.1:", "//localhost:"))
        second = twin.start(log=tmp_path / "second.log")
        try:
            wait_until(
                lambda: second.poll() is not None or runtime.poll() is not None,
                30,
                "one of the two runs to stop",
            )
        finally:
            if second.poll() is None:
                stop(second)
        assert (second.returncode, runtime.poll()) == (5, None)
        lines = (tmp_path / "second.log").read_text().splitlines()
        said = [line for line in lines if line.startswith("replicator: ")]
        assert len(said) == 1 and not any("Traceback" in line for line in lines), lines
        assert f"process {runtime.pid} on this host" in said[0], said
        assert not any("shard started" in line for line in lines)
        job.put_demo_items(rng, 10, 10)
        wait_until(job.converged, 60, "the first run to replicate after the refusal")
        (row,) = job.lease_rows()
        assert int(row["leaseCounter"]["N"]) > counter  # renewed by the first run
        assert runtime.poll() is None
    finally:
        code = stop(runtime)
    assert code == 0
    (row,) = job.lease_rows()
    assert "leaseOwner" not in row and "replicatorHolder" not in row  # released
    first = (tmp_path / "first.log").read_text()
    assert "lease lost" not in first and "taken" not in first


def _held_on_another_host(job: Job, counter: int) -> None:
    """Write the job's lease by hand as a run on another host under the worker id
    ``pinned`` leaves it: owner, counter, and the holder its writes name."""
    streams = client("dynamodbstreams", job.source_region, job.endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    job.source.put_item(
        TableName=job.name,
        Item={
            "leaseKey": {"S": shard["ShardId"]},
            "leaseOwner": {"S": "pinned"},
            "leaseCounter": {"N": str(counter)},
            "checkpoint": {"S": "TRIM_HORIZON"},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "replicatorHolder": {
                "M": {
                    "host": {"S": "other-host"},
                    "bootId": {"S": "0f0f0f0f-other-boot"},
                    "pidNamespace": {"S": "pid:[4026531836]"},
                    "pid": {"N": str(os.getpid())},
                    "startTime": {"N": "1"},
                    "counter": {"N": str(counter)},
                }
            },
        },
    )


def _pinned(job: Job, failover_time_ms: int) -> None:
    """The job run under the worker id ``pinned``, its lease held on another host."""
    create_lease_table(job.source, job.name)
    _held_on_another_host(job, 7)
    job.kcl = (
        "{idle_time_between_reads_ms: 100, "
        f"failover_time_ms: {failover_time_ms}, worker_id: pinned}}"
    )
    job.write()


def test_a_lease_under_our_worker_id_renewed_on_another_host_is_refused(
    job: Job, tmp_path: Path
) -> None:
    """Another host runs the task under the same pinned ``kcl.worker_id`` and renews its
    lease: this run watches it as another worker's, stops with exit 5 and one line naming
    that host, and leaves the lease alone."""
    _pinned(job, 10_000)
    log = tmp_path / "runtime.log"
    runtime = job.start(log=log)
    renewing = threading.Event()
    renewing.set()

    def renew() -> None:  # the other host, renewing as often as it would
        counter = 7
        while renewing.is_set():
            counter += 1
            _held_on_another_host(job, counter)
            time.sleep(0.3)

    threading.Thread(target=renew, daemon=True).start()
    try:
        wait_until(lambda: runtime.poll() is not None, 30, "the run to stop")
    finally:
        renewing.clear()
        if runtime.poll() is None:
            stop(runtime)
    assert runtime.returncode == 5
    said = [line for line in log.read_text().splitlines() if line.startswith("replicator: ")]
    assert len(said) == 1, said
    assert "being run by worker pinned as process" in said[0] and "other-host" in said[0], said
    (row,) = job.lease_rows()
    assert row["replicatorHolder"]["M"]["host"] == {"S": "other-host"}


def test_a_lease_under_our_worker_id_standing_still_on_another_host_is_taken_over(
    job: Job, tmp_path: Path
) -> None:
    """The other host under the same pinned ``kcl.worker_id`` died: its lease stands
    still for the failover time, and this run takes it over with the warning and
    replicates."""
    _pinned(job, 3000)
    log = tmp_path / "runtime.log"
    runtime = job.start(log=log)
    try:
        job.put_demo_items(random.Random(10), 0, 10)
        wait_until(job.converged, 60, "the run to take the lease over and replicate")
        (row,) = job.lease_rows()
        assert row["leaseOwner"] == {"S": "pinned"} and int(row["leaseCounter"]["N"]) > 7
        assert row["replicatorHolder"]["M"]["pid"] == {"N": str(runtime.pid)}
        assert runtime.poll() is None
    finally:
        code = stop(runtime)
    assert code == 0
    text = log.read_text()
    assert "checking whether it is alive" in text
    assert "taking over an expired lease" in text and "other-host" in text


def _stream_and_shard(job: Job) -> tuple[str, str]:
    """The source table's stream ARN and its (one) shard's id."""
    streams = client("dynamodbstreams", job.source_region, job.endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    return arn, shard["ShardId"]


def _told_never_read(job: Job, until: float) -> str:
    """``replicator wait`` for a time at the first destination: exit 4, its one line."""
    ((_, table), *_) = job.destinations
    waited = in_process(
        "wait", "--config", str(job.path), "--destination", table,
        "--until", f"{until:.6f}", "--timeout", "5",
    )  # fmt: skip
    assert waited.returncode == 4, waited
    (said,) = waited.stderr.strip().splitlines()
    return said


def _in_every_destination(job: Job) -> bool:
    """Whether every source item is in every destination, as it is in the source (the
    destinations may hold more: items of the source table before it was re-created)."""
    source_items = tables.scan_all(job.source, job.source_table)
    for ddb, table in job.destination_clients():
        found = compare(source_items, tables.scan_all(ddb, table), KEYS)
        if any(difference.kind != "extra" for difference in found):
            return False
    return True


def test_a_lease_of_an_earlier_stream_is_not_resumed_when_the_source_is_re_created(
    job: Job, tmp_path: Path
) -> None:
    """The source table is deleted and created again under its name: moto gives the new
    stream's shard the earlier one's id and sequence numbers, and the lease table keeps
    the earlier stream's lease, checkpointed past every record the new stream holds yet.
    The run after it reads the shard from TRIM_HORIZON, says why, and replicates the new
    table's items. A change the earlier table got while the job was stopped is never read:
    a wait for its time is told so (exit 4), not "replicated"."""
    rng = random.Random(11)
    first = job.start(log=tmp_path / "first.log")
    try:
        job.put_demo_items(rng, 0, 10)
        wait_until(job.converged, 60, "the first run to replicate")
        job.wait_checkpointed()
    finally:
        assert stop(first) == 0
    job.put_demo_items(rng, 100, 1)  # never read: its stream goes with its table
    unread_at = time.time()
    earlier, shard_id = _stream_and_shard(job)
    job.source.delete_table(TableName=job.source_table)
    tables.create(job.source, job.source_table, stream=True)
    current, new_shard_id = _stream_and_shard(job)
    assert current != earlier and new_shard_id == shard_id  # moto reuses the shard id
    job.put_demo_items(rng, 10, 3)  # at or below the earlier stream's checkpoint
    log = tmp_path / "second.log"
    second = job.start(log=log)
    try:
        wait_until(lambda: _in_every_destination(job), 60, "the new table's items to replicate")
        (row,) = job.lease_rows()
        assert row["replicatorStream"] == {"S": current}
    finally:
        assert stop(second) == 0
    lines = log.read_text().splitlines()
    (line,) = [text for text in lines if "the shard's lease is of an earlier stream" in text]
    assert shard_id in line and earlier in line and current in line, line
    (recorded,) = [text for text in lines if "changes passed over; recorded" in text]
    assert "leases were of an earlier stream" in recorded
    said = _told_never_read(job, unread_at)
    assert "were never read for this destination" in said
    assert "leases were of an earlier stream" in said and "backfill --restart" in said


def test_leases_of_an_earlier_streams_other_shards_have_what_they_left_unread_recorded_once(
    job: Job, tmp_path: Path
) -> None:
    """On DynamoDB a re-created table's stream has shards of new ids: the earlier
    stream's leases stay beside the new ones, which start from TRIM_HORIZON as new
    leases. What the earlier stream left unread is recorded for the watermark all the
    same (a wait for a time before the stream exits 4), and the earlier leases are
    marked, so that the next start does not record it again. The earlier shard's part in
    each status table, which no processor will claim past its old value again, stops
    counting: a wait for a change of the new stream succeeds."""
    current, _ = _stream_and_shard(job)
    old_part_us = int((time.time() - 7200) * 1_000_000)
    for region, table in job.destinations:
        status = StatusTable(
            client("dynamodb", region, job.endpoint), f"{job.name}-watermark", f"{region}/{table}"
        )
        status.ensure_exists()
        status.client.put_item(
            TableName=status.name,
            Item={
                "destination": {"S": f"{region}/{table}"},
                "shard": {"S": "shardId-of-the-earlier-stream"},
                "watermark_us": {"N": str(old_part_us)},
            },
        )
    earlier = current.rsplit("/stream/", 1)[0] + "/stream/2020-01-01T00:00:00.000"
    create_lease_table(job.source, job.name)
    job.source.put_item(
        TableName=job.name,
        Item={
            "leaseKey": {"S": "shardId-of-the-earlier-stream"},
            "leaseCounter": {"N": "4"},
            "checkpoint": {"S": "4100000000000000000001"},
            "replicatorStream": {"S": earlier},
        },
    )
    before = time.time()
    rng = random.Random(12)
    for run in ("first", "second"):
        log = tmp_path / f"{run}.log"
        runtime = job.start(log=log)
        try:
            since = time.time()
            job.put_demo_items(rng, 0 if run == "first" else 5, 5)
            until = time.time()
            wait_until(job.converged, 60, f"the {run} run to replicate")
            if run == "second":
                ((_, table), *_) = job.destinations
                waited = in_process(
                    "wait", "--config", str(job.path), "--destination", table,
                    "--since", f"{since:.6f}", "--until", f"{until:.6f}", "--timeout", "60",
                )  # fmt: skip
                assert waited.returncode == 0, waited
        finally:
            assert stop(runtime) == 0
        recorded = [
            line for line in log.read_text().splitlines() if "changes passed over; recorded" in line
        ]
        assert len(recorded) == (1 if run == "first" else 0), recorded
    old = job.source.get_item(
        TableName=job.name, Key={"leaseKey": {"S": "shardId-of-the-earlier-stream"}}
    )["Item"]
    assert old["replicatorSupersededBy"] == {"S": current}
    assert "leases were of an earlier stream" in _told_never_read(job, before - 3600)


def test_a_kcl_run_of_a_task_a_local_runtime_runs_here_is_refused_before_it_starts(
    job: Job, tmp_path: Path
) -> None:
    """Started while the local runtime ran (an operator switching runtimes before the old
    run had exited), the KCL run took the lease under the same worker id, the host name:
    the two took it from each other for a minute and a half and an item ended stale
    behind a checkpoint at the stream's end. It is refused (exit 5) before its daemon
    starts, naming the local runtime's process; the local runtime runs on."""
    import sys

    from replicator.runtime.kcl import java
    from tests.runtime.kcl.test_kcl_launcher import (
        STREAMS_CLASSES,
        assert_refused,
        write_job,
    )
    from tests.runtime.kcl.test_kcl_launcher import run_cli as run_kcl_cli
    from tests.support.kcl_jars import fake_jars

    runtime = job.start()
    try:
        wait_until(lambda: _owner(job), 30, "the local runtime to own the lease")
        before = job.lease_rows()
        jars = fake_jars(tmp_path / "kcl" / "jars", [java.MULTILANG_DAEMON, *STREAMS_CLASSES])
        kcl_job = write_job(
            tmp_path / "kcl" / "job.yaml",
            kind="dynamodb",
            endpoint=job.endpoint,
            table=job.source_table,
            destination=job.destinations[0][1],
            task_name=job.name,
            kcl=f", java: {sys.executable}, jars_dir: {jars}",
        )
        assert_refused(
            run_kcl_cli(kcl_job),
            5,
            f"is being run by process {runtime.pid} on this host",
            "a local runtime of the task runs here",
        )
        assert runtime.poll() is None
        assert _owner(job) == before[0]["leaseOwner"]["S"]
    finally:
        assert stop(runtime) == 0


def test_a_kcl_runs_lease_under_our_worker_id_is_named_as_such_while_it_is_watched(
    job: Job, tmp_path: Path
) -> None:
    """Switching back from the KCL on one host: the lease the KCL run left is under this
    host's worker id and names no holder. The wait was logged as if another worker or
    host held the task."""
    import structlog.testing

    from replicator.config.loader import load_job
    from replicator.runtime.local.runtime import LocalRuntime

    worker = _as_worker(job, tmp_path, "host-a", failover_time_ms=1000)
    runtime = LocalRuntime(load_job(worker.path))
    runtime.leases.ensure_exists()
    job.source.put_item(
        TableName=job.name,
        Item={
            "leaseKey": {"S": "shardId-kcl"},
            "leaseOwner": {"S": "host-a"},
            "leaseCounter": {"N": "7"},
            "checkpoint": {"S": "TRIM_HORIZON"},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
        },
    )
    with structlog.testing.capture_logs() as logged:
        runtime._claim_leases_held_elsewhere()
    (warning,) = [line for line in logged if line["log_level"] == "warning"]
    assert warning["event"].startswith(
        "leases are held under this worker id with no holder recorded (a KCL run's"
    ), warning
    assert warning["owners"] == ["host-a"]
    assert runtime._expired == {"shardId-kcl": ("host-a", 7)}
