"""How `replicator run` (the local runtime) ends when a dead-letter target stops taking
letters, or the lease table or the source table goes, while it runs, or when its metrics
port is taken at start: the exit code and the one line the README promises (and a
removed dead-letter directory, which does not end it)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from replicator.config.loader import load_job
from replicator.deadletter import FileDeadLetters
from replicator.demo import tables
from replicator.exceptions import EnvironmentProblem
from replicator.runtime.local.runtime import STOP_DEADLINE_S, LocalRuntime
from replicator.shards.leases import TRIM_HORIZON, LeaseTable
from tests.support import ROOT
from tests.support.aws import client
from tests.support.cli import replicator
from tests.support.e2e import PATIENCE, Job, children_of, stop, wait_until
from tests.support.metrics import health, logged_metrics_port, matching, scrape

GATE = "REPLICATOR_TEST_GATE"


def fail_once_let_go(incoming: Any, existing: Any) -> Any:
    """Test resolver: says it was called, waits until the test lets it go (a file
    ``go`` in the directory ``$REPLICATOR_TEST_GATE``), then raises, so that the change
    is dead-lettered at a moment the test chooses."""
    gate = Path(os.environ[GATE])
    (gate / "entered").touch()
    deadline = time.monotonic() + 120
    while not (gate / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    raise RuntimeError("the resolver was let go")


def exits_on_bad(incoming: Any, existing: Any) -> Any:
    """Test resolver: calls sys.exit() for the item ``bad`` (a resolver's own bug)."""
    if incoming.keys["pk"]["S"] == "bad":
        sys.exit(2)
    print("deciding", incoming.keys["pk"]["S"], end="")  # as a user's resolver may
    print(": yes")
    return True


def _job(moto_endpoint: str, unique: Any, tmp_path: Path, conflict: str) -> tuple[Job, Path]:
    """A job with one destination whose dead letters go to ``letters/<task>.jsonl``."""
    name = unique("dlfail")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    letters = tmp_path / "letters"
    job.dead_letters = letters / f"{name}.jsonl"
    job.write()
    job.path.write_text(
        job.path.read_text().replace(
            "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}", conflict
        )
    )
    return job, letters


def _replace_with_a_file(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.touch()


def test_a_dead_letter_directory_replaced_by_a_file_while_running_is_exit_3_and_one_line(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The processor cannot store the letter and stops; it is restarted as documented
    and fails the same way each time; the runtime then ends as the same target does at
    start-up: exit 3, and a last line naming the file and the cause."""
    job, letters = _job(
        moto_endpoint, unique, tmp_path, "conflict: {policy: version, version_attribute: ver}"
    )
    log = tmp_path / "run.log"
    runtime = job.start(log=log)
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        _replace_with_a_file(letters)
        job.source.put_item(  # a string version: dead-lettered
            TableName=job.source_table,
            Item={"pk": {"S": "a"}, "sk": {"N": "1"}, "ver": {"S": "one"}},
        )
        status = runtime.wait(180 * PATIENCE)
    finally:
        if runtime.poll() is None:
            runtime.kill()
    output = log.read_text()
    assert "restarting from the checkpoint" in output  # the restart policy still holds
    last = output.splitlines()[-1]
    assert status == 3, last
    # The record left neither applied nor dead-lettered, then the file and the cause.
    assert last.startswith("replicator: the dead letter for record "), last
    assert (
        f" could not be stored: cannot append to dead-letter file {job.dead_letters}: "
        f"{letters} is not a directory"
    ) in last, last
    assert "File exists" not in last
    # What to do: the target fixed, the job run again (nothing past the change counted).
    assert "; fix the dead-letter target (room on its disk and a directory it may" in last
    assert "and run again: nothing from this change on was counted as done" in last, last
    (row,) = job.lease_rows()
    assert not row["checkpoint"]["S"].isdigit()  # never past the change it could not keep


def test_a_dead_letter_directory_removed_while_running_is_created_again_and_the_letter_kept(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Losing nothing comes first: the next letter creates the directory again and is
    kept, the run goes on, and a warning names the directory, so the removal (and what
    the directory held) does not go unnoticed."""
    job, letters = _job(
        moto_endpoint, unique, tmp_path, "conflict: {policy: version, version_attribute: ver}"
    )
    log = tmp_path / "run.log"
    runtime = job.start(log=log)
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        shutil.rmtree(letters)
        job.source.put_item(  # a string version: dead-lettered
            TableName=job.source_table,
            Item={"pk": {"S": "a"}, "sk": {"N": "1"}, "ver": {"S": "one"}},
        )
        wait_until(job.dead_letters.exists, 60, "the letter to be kept")
        assert runtime.poll() is None  # still running
    finally:
        status = stop(runtime)
    output = log.read_text()
    assert status == 0, output.splitlines()[-1]
    (letter,) = FileDeadLetters(job.dead_letters).letters()
    assert letter.keys == {"pk": {"S": "a"}, "sk": {"N": "1"}}
    assert "directory was missing, created it; if it was removed while running" in output
    assert str(letters) in output


def test_a_processor_failing_during_a_stop_is_not_a_clean_stop(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """SIGTERM while a change is being resolved; the resolver then fails and its dead
    letter cannot be stored: the processor exits during its shutdown. The run ends as
    that failure does without a stop (exit 3 and its line), not "stopped cleanly"."""
    job, letters = _job(
        moto_endpoint,
        unique,
        tmp_path,
        "conflict: {policy: custom, resolver: "
        "'tests.runtime.local.test_local_runtime_failures:fail_once_let_go'}",
    )
    gate = tmp_path / "gate"
    gate.mkdir()
    log = tmp_path / "run.log"
    runtime = job.start(log=log, env={GATE: str(gate)})
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        _replace_with_a_file(letters)
        job.source.put_item(TableName=job.source_table, Item={"pk": {"S": "a"}, "sk": {"N": "1"}})
        wait_until((gate / "entered").exists, 60, "the resolver to be called")
        runtime.send_signal(signal.SIGTERM)
        wait_until(lambda: "stop requested" in log.read_text(), 30, "the stop to begin")
        (gate / "go").touch()
        status = runtime.wait(120 * PATIENCE)
    finally:
        if runtime.poll() is None:
            stop(runtime)
    output = log.read_text()
    last = output.splitlines()[-1]
    assert status == 3, last
    assert "stopped cleanly" not in output
    # The record left neither applied nor dead-lettered, then the file and the cause.
    assert last.startswith("replicator: the dead letter for record "), last
    assert (
        f" could not be stored: cannot append to dead-letter file {job.dead_letters}: "
        f"{letters} is not a directory"
    ) in last, last
    (row,) = job.lease_rows()
    assert not row["checkpoint"]["S"].isdigit()  # never past the change it could not keep


def test_a_resolver_that_calls_sys_exit_dead_letters_that_change_and_the_run_goes_on(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """SystemExit is a BaseException, not an Exception: from a resolver it is that
    change's failure all the same (``resolver_failed``, naming the resolver and what it
    raised), not a writer that fails and a processor restarted on the same change until
    the run ends."""
    job, _ = _job(
        moto_endpoint,
        unique,
        tmp_path,
        "conflict: {policy: custom, resolver: "
        "'tests.runtime.local.test_local_runtime_failures:exits_on_bad'}",
    )
    log = tmp_path / "run.log"
    runtime = job.start(log=log)
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        for pk in ("bad", "good"):
            job.source.put_item(
                TableName=job.source_table, Item={"pk": {"S": pk}, "sk": {"N": "1"}}
            )
        ((ddb, table),) = job.destination_clients()
        wait_until(
            lambda: "Item" in ddb.get_item(TableName=table, Key=_key("good")),
            60,
            "the change after the failing one to be applied",
        )
        wait_until(job.dead_letters.exists, 30, "the letter")
        job.wait_checkpointed()
        assert runtime.poll() is None
    finally:
        status = stop(runtime)
    output = log.read_text()
    assert status == 0, output.splitlines()[-1]
    (letter,) = FileDeadLetters(job.dead_letters).letters()
    assert letter.keys == _key("bad")
    assert letter.reason == "resolver_failed"
    assert "exits_on_bad raised SystemExit: 2" in letter.error, letter.error
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("bad"))
    assert "processor child failed" not in output
    assert "destination writer failed" not in output
    # What the resolver printed is a log line of its own, as every other line is JSON.
    lines = [json.loads(line) for line in output.splitlines()]
    printed = [line for line in lines if line.get("event") == "printed"]
    assert [line["text"] for line in printed] == ["deciding good: yes"], printed
    assert printed[0]["level"] == "info" and "pid" in printed[0]


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": "1"}}


def _run_to_its_end(
    job: Any, tmp_path: Path, meanwhile: Callable[[Path], object] = lambda log: None
) -> tuple[int, str, str]:
    """Run the job, do ``meanwhile`` (given the log's path), and wait for the exit: the
    status, the whole log and its last line."""
    log = tmp_path / "run.log"
    runtime = job.start(log=log)
    try:
        meanwhile(log)
        status = runtime.wait(120 * PATIENCE)
    finally:
        if runtime.poll() is None:
            stop(runtime)
    output = log.read_text()
    return status, output, output.splitlines()[-1]


def _run_until_deleted(job: Any, table: str, tmp_path: Path) -> tuple[int, str, str]:
    """Run the job, delete ``table`` once its shard started, and wait for the exit."""

    def delete(log: Path) -> None:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        job.source.delete_table(TableName=table)

    return _run_to_its_end(job, tmp_path, delete)


def test_a_lease_table_deleted_while_running_is_exit_3_and_a_line_naming_it(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The lease table holds the checkpoints: deleted under a running job, the run ends
    with exit 3 and a line naming the lease table, where it is and what to do, and the
    processor's log does not tell of another worker that does not exist."""
    job, _ = _job(moto_endpoint, unique, tmp_path, "conflict: {policy: overwrite}")
    # The lease table has the task's name.
    status, output, last = _run_until_deleted(job, job.name, tmp_path)
    assert status == 3, last
    assert last.startswith("replicator: "), last
    assert f"lease table {job.name}: not found at {moto_endpoint} (us-east-1)" in last, last
    assert "start the job again to re-create it" in last, last
    assert "another worker continues" not in output


def test_a_source_table_deleted_while_running_is_exit_3_and_a_line_naming_it(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The source table (and so its stream) deleted under a running job: exit 3 and a
    line naming the source table, its stream, where it is and what to do."""
    job, _ = _job(moto_endpoint, unique, tmp_path, "conflict: {policy: overwrite}")
    status, _, last = _run_until_deleted(job, job.source_table, tmp_path)
    assert status == 3, last
    assert last.startswith("replicator: "), last
    assert f"of source table {job.source_table}: not found at {moto_endpoint} (us-east-1)" in (
        last
    ), last
    assert "stream arn:aws:dynamodb:us-east-1:" in last, last
    assert "re-create the table or enable its stream" in last, last


def test_a_source_table_created_again_while_running_is_exit_3_and_a_restart_reads_it(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Deleted and created again under its name while the job runs, the source table
    has a new stream; the old one still answered (moto answers for the new one under the
    old ARN), so the run went on with nothing more to read, /healthz ok and every lag
    0, while the new table's changes never arrived. It now ends with exit 3 and a line
    that says so, and the next start reads the new stream."""
    job, _ = _job(moto_endpoint, unique, tmp_path, "conflict: {policy: overwrite}")
    ((ddb, table),) = job.destination_clients()
    first = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]

    def replace_the_table(log: Path) -> None:
        job.source.put_item(TableName=job.source_table, Item=_key("before"))
        wait_until(
            lambda: "Item" in ddb.get_item(TableName=table, Key=_key("before")),
            60,
            "the change before to be applied",
        )
        job.source.delete_table(TableName=job.source_table)
        tables.create(job.source, job.source_table, stream=True)
        job.source.put_item(TableName=job.source_table, Item=_key("after"))

    status, output, last = _run_to_its_end(job, tmp_path, replace_the_table)

    second = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    assert second != first
    assert status == 3, last
    assert last.startswith("replicator: "), last
    assert (
        f"source table {job.source_table} at {moto_endpoint} (us-east-1): its stream is now "
        f"{second}, not the stream {first} this run reads"
    ) in last, last
    assert "Start the job again to read the new stream" in last, last
    assert "Traceback" not in output

    restarted = job.start(log=tmp_path / "restart.log")
    try:
        wait_until(
            lambda: "Item" in ddb.get_item(TableName=table, Key=_key("after")),
            60,
            "the new table's change to be applied after the restart",
        )
    finally:
        assert stop(restarted) == 0


def test_a_source_stream_disabled_while_running_is_exit_3_saying_so(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """moto answers DescribeStream of a disabled stream with a 500, which the shard sync
    retried for ever, every 10 s, so the table was never asked."""
    job, _ = _job(moto_endpoint, unique, tmp_path, "conflict: {policy: overwrite}")

    def disable(log: Path) -> None:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        job.source.update_table(
            TableName=job.source_table, StreamSpecification={"StreamEnabled": False}
        )

    status, _, last = _run_to_its_end(job, tmp_path, disable)
    assert status == 3, last
    assert (
        f"source table {job.source_table} at {moto_endpoint} (us-east-1): it has no stream "
        "enabled now"
    ) in last, last
    assert "Enable the table's stream (NEW_AND_OLD_IMAGES) and start the job again" in last


@pytest.mark.parametrize(
    ("operation", "named"),
    [
        (
            "DescribeTable",
            "syncing shards and leases: source table {source}: not found at {where}",
        ),
        ("Scan", "syncing shards and leases: lease table {task}: not found at {where}"),
        (
            "DescribeStream",
            "syncing shards and leases: stream {arn} of source table {source}: not found at "
            "{where}",
        ),
    ],
)
def test_a_housekeeping_step_failing_for_good_names_the_table_it_met(
    moto_endpoint: str, unique: Any, tmp_path: Path, operation: str, named: str
) -> None:
    """The shard sync reads the stream (DescribeStream) and the lease table (Scan): the
    line it stops the run with names the one that answered, where it is, and, as it is
    gone, what to do."""
    job, _ = _job(moto_endpoint, unique, tmp_path, "conflict: {policy: overwrite}")
    runtime = LocalRuntime(load_job(job.path))
    runtime.stream_arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/1"

    def gone() -> None:
        error = {"Error": {"Code": "ResourceNotFoundException", "Message": "Requested resource"}}
        raise ClientError(error, operation)  # type: ignore[arg-type]

    assert runtime._tolerating_outages(gone, "syncing shards and leases")
    assert isinstance(runtime.failure, EnvironmentProblem) and runtime.stopping.is_set()
    line = str(runtime.failure)
    where = f"{moto_endpoint} (us-east-1)"
    assert line.startswith(
        named.format(task=job.name, where=where, arn=runtime.stream_arn, source=job.source_table)
    ), line
    assert "start the job again" in line, line


@pytest.mark.parametrize(
    ("checkpoint", "said"),
    [
        ("garbage", "neither a sequence number nor one of"),
        # Digits, but too short to be a sequence number: refused only by the stream.
        ("49999999999999999999", "not a sequence number of the stream"),
        # The KCL's start at a time, for a Kinesis source.
        ("AT_TIMESTAMP", "a start at a time (a DynamoDB stream has no shard iterator at a time)"),
    ],
)
def test_a_lease_checkpoint_that_is_no_position_is_exit_3_and_a_line_naming_it(
    moto_endpoint: str, unique: Any, tmp_path: Path, checkpoint: str, said: str
) -> None:
    """A lease whose checkpoint was set by hand to something that is no position: the
    endpoint answers, so the run ends with exit 3 and one line naming the lease table,
    the shard and the checkpoint, not with the endpoint unreachable."""
    job, _ = _job(moto_endpoint, unique, tmp_path, "conflict: {policy: overwrite}")
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    streams = client("dynamodbstreams", job.source_region, moto_endpoint)
    shard_id = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    leases = LeaseTable(job.source, job.name, owner="hand")
    leases.ensure_exists()
    leases.create(shard_id, TRIM_HORIZON, [])
    job.source.update_item(
        TableName=job.name,
        Key={"leaseKey": {"S": shard_id}},
        UpdateExpression="SET checkpoint = :bad",
        ExpressionAttributeValues={":bad": {"S": checkpoint}},
    )
    status, output, last = _run_to_its_end(job, tmp_path)
    assert status == 3, last
    assert [line for line in output.splitlines() if line.startswith("replicator:")] == [last]
    assert last.startswith(f"replicator: lease table {job.name} at {moto_endpoint}"), last
    assert f"shard {shard_id}" in last, last
    assert f"checkpoint {checkpoint!r}" in last, last
    assert said in last, last
    assert "cannot reach" not in output


def test_a_start_whose_metrics_port_is_taken_is_exit_3_and_creates_nothing(
    job: Job, tmp_path: Path
) -> None:
    """The port was bound only after the preflight had created the job's conflict-log
    and tombstone tables and its dead-letter directory, all left behind by a start
    refused for its port (exit 3): it is bound before the first of them now."""
    made = tmp_path / "newdir"
    job.dead_letters = made / "sub" / "{task_name}.jsonl"
    job.extra = (
        "loop_prevention: {origin_attribute: origin}\n"
        "active_active: {tombstones: true}\n"
        "conflict_log: {kind: dynamodb}\n"
    )
    job.write()
    before = job.tables_named()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job.path.write_text(job.path.read_text().replace("port: 0}", f"port: {port}}}"))
        runtime = job.start(log=tmp_path / "run.log")
        assert runtime.wait(60 * PATIENCE) == 3
    lines = (tmp_path / "run.log").read_text().splitlines()
    said = [line for line in lines if line.startswith("replicator: ")]
    assert said == [
        f"replicator: metrics: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose another metrics.port (0 picks a free one) or set metrics.enabled: false"
    ], lines
    assert not any("Traceback" in line or "created" in line for line in lines), lines
    assert f"{job.name}-conflicts" not in set().union(*job.tables_named().values())
    assert job.tables_named() == before
    assert not made.exists()


class _Stopped:
    """A shard worker whose child is gone, neither failed nor at its shard's end."""

    shard_id = "shardId-1"
    error = None

    class progress:  # noqa: N801  # as ShardWorker.progress reads
        ended = False

    def is_alive(self) -> bool:
        return False

    def trouble(self, now: float) -> None:
        return None


def test_workers_ended_by_a_requested_stop_are_no_health_problem(tmp_path: Path) -> None:
    """Between the workers' end and the metrics server's, a health watch of a clean stop
    logged "unhealthy: worker not running" (a false alarm at every deploy it met)."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: health-job\nruntime: local\nsource: {region: us-east-1, table: src}\n"
        "destinations: [{region: eu-west-1, table: dst}]\n"
    )
    runtime = LocalRuntime(load_job(path))
    runtime.workers["shardId-1"] = _Stopped()  # type: ignore[assignment]
    assert runtime.problems() == ["shard shardId-1: worker not running"]
    runtime.stop()
    assert runtime.problems() == []


class _StuckShard:
    """A shard worker whose stop never ends, recording how long it was waited for."""

    shard_id = "shardId-stuck"
    child = None
    stop_failure = None

    def __init__(self) -> None:
        self.waited: list[float] = []

    def release_processor(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        self.waited.append(timeout)

    def is_alive(self) -> bool:
        return True


def test_the_stop_deadline_counts_from_the_stop_signal(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The shards begin their stop at the signal; a housekeeping call in flight then (a
    stream or lease table that does not answer: up to the SDK's timeouts) kept the loop
    from shutting down, and the 35 s were counted from its end: a stop of about a minute
    said "did not stop within 35s"."""
    job, _ = _job(moto_endpoint, unique, tmp_path, "conflict: {policy: overwrite}")
    runtime = LocalRuntime(load_job(job.path))
    stuck = _StuckShard()
    runtime.workers = {stuck.shard_id: stuck}  # type: ignore[dict-item]
    runtime.stop()
    assert runtime._stop_asked_at is not None
    runtime._stop_asked_at -= 30.0  # the loop saw the stop 30 s after the signal

    runtime._shut_down()

    (waited,) = stuck.waited
    assert waited <= STOP_DEADLINE_S - 29.0, waited
    assert isinstance(runtime.failure, Exception)
    assert f"did not stop within {STOP_DEADLINE_S:g}s" in str(runtime.failure)


def test_a_stuck_processor_makes_healthz_unhealthy_until_it_answers(job: Job) -> None:
    """A processor that stops answering (deadlocked; here SIGSTOP) freezes its own lag
    gauges at 0: /healthz said ok while changes went unreplicated. The runtime knows its
    processRecords is out: past ``metrics.stall_after_s`` /healthz answers 503 naming it,
    and once the processor answers again replication goes on and /healthz is 200."""
    job.path.write_text(
        job.path.read_text().replace(
            "metrics: {host: 127.0.0.1, port: 0}",
            "metrics: {host: 127.0.0.1, port: 0, stall_after_s: 2}",
        )
    )
    rng = random.Random(5)
    runtime = job.start()
    stopped: list[int] = []
    try:
        port = logged_metrics_port(job.directory / "runtime.log")
        job.put_demo_items(rng, 0, 3)
        wait_until(job.converged, 60, "destinations to equal the source")
        processors = children_of(runtime.pid)
        assert processors
        for pid in processors:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        job.put_demo_items(rng, 3, 3)

        def stuck_named() -> bool:
            # The destinations, which get no writes meanwhile, may be named stalled first.
            status, body = health(port)
            return status == 503 and any(
                "has not answered processRecords" in reason and "(pid " in reason
                for reason in body["reasons"]
            )

        wait_until(stuck_named, 60, "/healthz to report the stuck processor")
        assert not job.converged()
        # Its own lag gauges stay at their last values (about 0); the runtime raises
        # them to the age of the changes it handed over, at least the 2 s it has waited.
        lags = matching(scrape(port), "replicator_replication_lag_seconds")
        assert len(lags) == len(job.destination_clients()) and min(lags) >= 2.0, lags
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stopped.clear()
        wait_until(job.converged, 60, "the processor to replicate again")
        wait_until(lambda: health(port)[0] == 200, 60, "/healthz to be ok again")
        assert stop(runtime) == 0
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if runtime.poll() is None:
            runtime.kill()


def test_what_a_resolver_prints_as_it_is_imported_is_a_json_log_line_of_run(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """``run`` imports the job's resolver before the job has said how to log: what the
    module printed then was the one raw line of a JSON log. It is a ``printed`` line,
    here before the run stops on a source table that does not exist (exit 3)."""
    (tmp_path / "loud_at_import.py").write_text(
        "import sys\nprint('imported')\n"
        "sys.stdout.buffer.write(sys.stdout.encoding and b'bytes at import\\n')\n"
        "def decide(incoming, existing):\n    return True\n"
    )
    name = unique("printsatimport")
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: {name}-job\n"
        f"source: {{region: us-east-1, table: {name}, endpoint_url: '{moto_endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: {name}, endpoint_url: '{moto_endpoint}'}}]\n"
        "conflict: {policy: custom, resolver: 'loud_at_import:decide'}\n"
        "metrics: {enabled: false}\n"
        "logging: {format: json}\n"
    )
    done = replicator("run", "-c", str(path), env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert done.returncode == 3, done.stderr
    # Every line JSON, but the last: the command's error, as every command's.
    *logged, last = done.stderr.splitlines()
    assert last.startswith("replicator: source table "), done.stderr
    # Bytes written below the text are raw, as the docs say (a module that wrote them
    # while its prints were held is not refused for it).
    lines = [json.loads(line) for line in logged if line != "bytes at import"]
    assert "bytes at import" in logged
    assert [line["text"] for line in lines if line["event"] == "printed"] == ["imported"]
