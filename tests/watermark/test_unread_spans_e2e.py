"""Changes a job never read for a destination, end to end: the local runtime as a real
process against a moto server over HTTP, and ``replicator wait`` / ``replicator
watermark`` as an operator runs them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from replicator.demo import tables
from replicator.watermark.table import StatusTable, table_name
from tests.support.aws import client
from tests.support.cli import in_process, replicator
from tests.support.e2e import Job, stop, table_before_its_stream, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.metrics import logged_metrics_port, scrape, total
from tests.support.reliability import ProxiedJob
from tests.test_processor_protocol import RawDaemon

FAST = "watermark: {publish_interval_ms: 100, caught_up_margin_ms: 0}\n"
LATEST_KCL = "{idle_time_between_reads_ms: 100, failover_time_ms: 6000, initial_position: LATEST}"


def item(key: str, counter: int) -> dict[str, Any]:
    return {"pk": {"S": key}, "sk": {"N": "0"}, "updated_at": {"N": str(counter)}}


def key(name: str) -> dict[str, Any]:
    return {"pk": {"S": name}, "sk": {"N": "0"}}


def held(job: Job, region: str, table: str, key: str) -> bool:
    found = client("dynamodb", region, job.endpoint).get_item(
        TableName=table, Key={"pk": {"S": key}, "sk": {"N": "0"}}, ConsistentRead=True
    )
    return "Item" in found


def written_and_replicated(job: Job, destination: str, name: str, counter: int) -> float:
    """Put item ``name`` at the source and wait until ``destination`` has it (exit 0);
    when it was written."""
    job.source.put_item(TableName=job.source_table, Item=item(name, counter))
    written = time.time()
    waited = in_process(
        "wait", "-c", str(job.path), "-d", destination, "--until", f"{written:.6f}",
        "--timeout", "60",
    )  # fmt: skip
    assert waited.returncode == 0, waited
    return written


def joined_before(job: Job, destination: str, written: float) -> dict[str, Any]:
    """The destination's one unread span, a ``joined`` one past ``written``, which a
    wait for ``written`` is told of (exit 4)."""
    waited = in_process(
        "wait", "-c", str(job.path), "-d", destination, "--until", f"{written:.6f}",
        "--timeout", "60",
    )  # fmt: skip
    assert waited.returncode == 4, waited
    assert "joined the job" in waited.stderr and "backfill" in waited.stderr
    shown = in_process("watermark", "-c", str(job.path), "-d", destination, "--json")
    (span,) = json.loads(shown.stdout)["unread"]
    assert span["reason"] == "joined" and span["to"] > written
    return dict(span)


def started(log: Path) -> bool:
    return log.exists() and "shard started" in log.read_text(errors="replace")


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("wl"), tmp_path, extra=FAST, kcl=LATEST_KCL)


def test_a_wait_for_a_time_before_a_latest_start_is_told_the_change_was_never_read(
    job: Job,
) -> None:
    (region, table), _ = job.destinations
    job.source.put_item(TableName=job.source_table, Item=item("before", 1))
    before = time.time()
    time.sleep(1.1)  # the stream's creation times are whole seconds
    runtime = job.start()
    try:
        wait_until(lambda: started(job.directory / "runtime.log"), 60, "the shard to start")
        waited = replicator(
            "wait", "--config", str(job.path), "--destination", table,
            "--until", f"{before:.6f}", "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 4, waited
        lines = waited.stderr.strip().splitlines()
        assert len(lines) == 1, waited.stderr
        assert "were never read for this destination" in lines[0]
        assert "kcl.initial_position LATEST" in lines[0] and "backfill" in lines[0]
        assert not held(job, region, table, "before")  # and it is indeed not there

        # This file's first wait, watermark, backfill and verify run as processes of their
        # own, as an operator runs them; the others, each of which returns by itself and is
        # judged by its exit status and output, run in this process (a process start
        # costs about a second of CPU).

        # A change after the start, waited for from after the start: replicated.
        since = time.time()
        job.source.put_item(TableName=job.source_table, Item=item("after", 2))
        later = time.time()
        waited = in_process(
            "wait", "--config", str(job.path), "--destination", table, "--since",
            f"{since:.6f}", "--until", f"{later:.6f}", "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 0, waited
        assert held(job, region, table, "after")

        shown = replicator("watermark", "-c", str(job.path), "-d", table)
        assert "never read: changes created before" in shown.stdout, shown
        as_json = json.loads(
            in_process("watermark", "-c", str(job.path), "-d", table, "--json").stdout
        )
        assert [span["reason"] for span in as_json["unread"]] == ["latest"]
    finally:
        assert stop(runtime) == 0

    # The span is in the status table: a reader after the runtime stopped is told the same.
    waited = in_process(
        "wait", "--config", str(job.path), "--destination", table,
        "--until", f"{before:.6f}", "--timeout", "5",
    )  # fmt: skip
    assert waited.returncode == 4, waited


def test_a_backfill_then_a_verify_that_finds_the_destination_equal_clears_the_span(
    job: Job,
) -> None:
    """The documented procedure after a LATEST start: the replicator runs, a backfill
    copies what came before, and a whole-table verify clears the span once nothing
    differs. An item deleted at the source before the start is still at the
    (pre-seeded) destination after the copy: verify reports it ``extra`` and clears
    nothing, so the wait still says never read, until ``--repair`` deletes it."""
    (region, table), (other_region, other) = job.destinations
    destination = client("dynamodb", region, job.endpoint)
    destination.put_item(TableName=table, Item=item("gone", 1))  # pre-seeded...
    job.source.put_item(TableName=job.source_table, Item=item("gone", 1))
    job.source.delete_item(TableName=job.source_table, Key=key("gone"))  # ...then deleted
    job.source.put_item(TableName=job.source_table, Item=item("before", 1))
    before = time.time()
    time.sleep(1.1)
    runtime = job.start()
    try:
        wait_until(lambda: started(job.directory / "runtime.log"), 60, "the shard to start")
        args = ("-c", str(job.path), "-d", table, "--until", f"{before:.6f}", "--timeout", "60")
        waited = in_process("wait", *args)
        assert waited.returncode == 4, waited
        # The backfill's hand-off check needs a checkpoint: a change after the start.
        job.source.put_item(TableName=job.source_table, Item=item("after", 2))
        wait_until(
            lambda: any(row["checkpoint"]["S"].isdigit() for row in job.lease_rows()),
            30,
            "the replicator's first checkpoint",
        )
        time.sleep(2.1)  # the scans must start after the span (whole seconds, less 1 s)
        copied = replicator("backfill", "--config", str(job.path))
        assert copied.returncode == 0, copied
        assert "`replicator verify`" in copied.stdout and "cannot copy deletes" in copied.stdout
        assert held(job, region, table, "before") and held(job, region, table, "gone")
        assert in_process("wait", *args).returncode == 4  # a copy clears nothing

        checked = replicator("verify", "--config", str(job.path), "--recheck-pause", "0.1")
        assert checked.returncode == 1, checked
        assert "  extra     pk=S:gone" in checked.stdout, checked.stdout
        # The other destination is equal: its span is cleared, this one's is not.
        (cleared,) = [line for line in checked.stdout.splitlines() if "watermark" in line]
        assert cleared.startswith("watermark: unread spans and dead-letter ranges up to ")
        assert cleared.endswith(f"cleared at {other_region}/{other}"), cleared
        assert in_process("wait", *args).returncode == 4

        repaired = in_process(
            "verify", "--config", str(job.path), "--recheck-pause", "0.1", "--repair", "--json"
        )
        assert repaired.returncode == 0, repaired
        report = json.loads(repaired.stdout)
        (extra,) = report["destinations"][f"{region}/{table}"]["differences"]
        assert extra["kind"] == "extra" and extra["repair"] == "repaired"
        assert f"{region}/{table}" in report["watermark"]["cleared"]
        assert not held(job, region, table, "gone")
        waited = in_process("wait", *args)
        assert waited.returncode == 0, waited
        shown = json.loads(
            in_process("watermark", "-c", str(job.path), "-d", table, "--json").stdout
        )
        assert shown["unread"] == []

        # Nothing left to clear: a verify says nothing about the watermark in its text.
        again = in_process("verify", "--config", str(job.path))
        assert again.returncode == 0 and "watermark" not in again.stdout, again
    finally:
        assert stop(runtime) == 0


@pytest.mark.parametrize(
    ("lost", "said", "heading"),
    [
        # Created again with this process's own records only: a change dead-lettered
        # before by a processor since killed was gone from it.
        ("status table", "are not known to be replicated (the status table", "status table"),
        # The runbook's fix (re-create it, start again) left the changes applied before
        # the deletion gone from the destination.
        ("destination table", "may be gone from this destination: ", "destination table"),
    ],
)
def test_a_table_deleted_while_the_job_runs_answers_no_earlier_wait_replicated(
    moto_endpoint: str, unique: Any, tmp_path: Path, lost: str, said: str, heading: str
) -> None:
    """A wait for a change made before the deletion exited 0, "replicated". The changes
    until the deletion was noticed get a span (exit 4, saying why) until a verify finds
    the destination equal (repairing what a lost destination table held)."""
    job = Job(moto_endpoint, unique("wd"), tmp_path, extra=FAST)
    (region, table), _ = job.destinations
    destination = client("dynamodb", region, job.endpoint)
    runtime = job.start()
    try:
        job.source.put_item(TableName=job.source_table, Item=item("first", 1))
        first = time.time()
        args = ("-c", str(job.path), "-d", table, "--timeout", "60")
        assert in_process("wait", *args, "--until", f"{first:.6f}").returncode == 0
        destination.delete_table(
            TableName=table_name(job.name) if lost == "status table" else table
        )
        job.source.put_item(TableName=job.source_table, Item=item("second", 2))

        def answered(until: float) -> int:
            return in_process("wait", *args[:-1], "1", "--until", f"{until:.6f}").returncode

        wait_until(lambda: answered(first) == 4, 60, "the wait to exit 4 for the lost span")
        if lost == "destination table":
            tables.create(destination, table, stream=False)  # re-created, empty
        waited = in_process("wait", *args, "--until", f"{first:.6f}")
        assert waited.returncode == 4, waited
        assert said in waited.stderr and "verify" in waited.stderr, waited.stderr
        shown = in_process("watermark", "-c", str(job.path), "-d", table)
        assert f"  {heading} lost: changes created before " in shown.stdout, shown

        wait_until(lambda: held(job, region, table, "second"), 60, "the later change")
        assert held(job, region, table, "first") == (lost == "status table")
        # Once the table takes writes again, the lag and /healthz clear: the counter and
        # the error line are what say its earlier items are gone (nothing else did).
        port = logged_metrics_port(job.directory / "runtime.log")
        named = f"{region}/{table}"
        losses = total(scrape(port), "replicator_destination_tables_lost_total", destination=named)
        logged = [
            entry
            for entry in map(json.loads, (job.directory / "runtime.log").read_text().splitlines())
            if str(entry.get("event", "")).startswith("destination table lost")
        ]
        if lost == "destination table":
            assert losses >= 1
            assert {(e["level"], e["destination"]) for e in logged} == {("error", named)}
        else:  # the status table's loss loses no item of the destination
            assert (losses, logged) == (0, [])
        # A verify clears what was created before it started, less a second (stream
        # times are whole seconds): the one that starts a second after the span's end.
        wait_until(
            lambda: (
                in_process("verify", "-c", str(job.path), "--repair").returncode == 0
                and answered(time.time() - 2) == 0
            ),
            60,
            "a verify to clear the span",
        )
        assert in_process("wait", *args, "--until", f"{first:.6f}").returncode == 0
        assert held(job, region, table, "first")
    finally:
        assert stop(runtime) == 0


def test_a_destination_added_to_a_resumed_job_is_not_reported_replicated_before_it_joined(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("wj")
    job = Job(moto_endpoint, name, tmp_path, extra=FAST, destinations=[("eu-west-1", f"{name}-eu")])
    _, eu = job.destinations[0]
    runtime = job.start()
    try:
        written = written_and_replicated(job, eu, "old", 1)
    finally:
        assert stop(runtime) == 0  # checkpointed: the job resumes from there

    # "Adding a destination": the task name is pinned, the new table created, restart.
    ap_region, ap = "ap-southeast-2", f"{name}-ap"
    tables.create(client("dynamodb", ap_region, job.endpoint), ap, stream=False)
    job.destinations.append((ap_region, ap))
    job.write()
    time.sleep(1.1)  # the stream's creation times are whole seconds
    runtime = job.start(log=job.directory / "second.log")
    try:
        wait_until(lambda: started(job.directory / "second.log"), 60, "the shard to start")
        waited = in_process(
            "wait", "-c", str(job.path), "-d", ap, "--until", f"{written:.6f}", "--timeout", "60"
        )
        assert waited.returncode == 4, waited
        assert "joined the job" in waited.stderr and "backfill" in waited.stderr
        assert not held(job, ap_region, ap, "old")
        # The old destination had everything all along; the new one has what came since.
        waited = in_process(
            "wait", "-c", str(job.path), "-d", eu, "--until", f"{written:.6f}", "--timeout", "60"
        )
        assert waited.returncode == 0, waited
        # It joined when its processor started (the span's end, which the watermark shows):
        # a change after that, waited for from then on, is replicated there.
        shown = in_process("watermark", "-c", str(job.path), "-d", ap, "--json")
        (span,) = json.loads(shown.stdout)["unread"]
        assert span["reason"] == "joined" and span["to"] > written
        since = span["to"] + 0.001
        wait_until(lambda: time.time() > since, 5, "the join to be past")
        job.source.put_item(TableName=job.source_table, Item=item("new", 2))
        later = time.time()
        waited = in_process(
            "wait", "-c", str(job.path), "-d", ap, "--since", f"{since:.6f}",
            "--until", f"{later:.6f}", "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 0, waited
        assert held(job, ap_region, ap, "new")
    finally:
        assert stop(runtime) == 0


def test_a_destination_name_given_to_another_table_is_not_reported_replicated_before(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A destination's parts are kept by its name: given to another (empty) table of the
    region, it kept the old table's watermark, and ``wait -d NAME`` answered exit 0 for
    changes the new table never got. It is taken as a destination that joined then, once:
    a later restart records no second span over what the new table was given since."""
    name = unique("wm")
    old, new = f"{name}-old", f"{name}-new"
    job = Job(
        moto_endpoint,
        name,
        tmp_path,
        extra=FAST,
        destinations=[("eu-west-1", old)],
        destination_name="dr",
    )
    runtime = job.start()
    try:
        job.source.put_item(TableName=job.source_table, Item=item("before", 1))
        written = time.time()
        waited = in_process(
            "wait", "-c", str(job.path), "-d", "dr", "--until", f"{written:.6f}", "--timeout", "60"
        )
        assert waited.returncode == 0, waited
    finally:
        assert stop(runtime) == 0

    tables.create(client("dynamodb", "eu-west-1", job.endpoint), new, stream=False)
    job.destinations = [("eu-west-1", new)]
    job.write()
    # Before the job runs with the new table, the readers name what holds them.
    shown = in_process("watermark", "-c", str(job.path), "-d", "dr", "--json")
    assert shown.returncode == 1, shown
    report = json.loads(shown.stdout)
    assert report["watermark"] is None and report["destination_table"] == f"eu-west-1/{new}"
    assert {part["destination_table"] for part in report["shards"]} == {f"eu-west-1/{old}"}
    waited = in_process(
        "wait", "-c", str(job.path), "-d", "dr", "--until", f"{written:.6f}", "--timeout", "1"
    )
    assert waited.returncode == 1, waited
    assert f"last claimed for table eu-west-1/{old}, not the destination's table" in (
        waited.stderr
    ), waited
    time.sleep(1.1)  # the stream's creation times are whole seconds
    for run in ("second", "third"):
        log = job.directory / f"{run}.log"
        runtime = job.start(log=log)
        try:
            wait_until(lambda log=log: started(log), 60, "the shard to start")
            span = joined_before(job, "dr", written)
            assert not held(job, "eu-west-1", new, "before")
            if run == "second":
                first_span = span
                assert "now names another table" in log.read_text()
            else:
                assert span == first_span  # no second span at a plain restart
        finally:
            assert stop(runtime) == 0


def test_a_destination_removed_and_added_again_is_told_what_the_job_replicated_without_it(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A destination removed from the job file, the job run without it, then added back:
    its old parts were taken for its being in the job all along, and ``wait`` answered
    exit 0 for changes made while it was out, which it never got. Each part records the
    job's destinations when raised; a part of another destination raised without it,
    after its own were last raised, gives it a ``joined`` span up to its return. A plain
    restart after that records no second span."""
    name = unique("wr")
    job = Job(moto_endpoint, name, tmp_path, extra=FAST)
    (eu_region, eu), (ap_region, ap) = job.destinations
    runtime = job.start(log=job.directory / "first.log")
    try:
        written_and_replicated(job, ap, "first", 1)
    finally:
        assert stop(runtime) == 0

    job.destinations = [(eu_region, eu)]
    job.write()
    runtime = job.start(log=job.directory / "without.log")
    try:
        during = written_and_replicated(job, eu, "without", 2)
    finally:
        assert stop(runtime) == 0

    job.destinations = [(eu_region, eu), (ap_region, ap)]
    job.write()
    first_span: dict[str, Any] = {}
    for run in ("back", "again"):
        log = job.directory / f"{run}.log"
        runtime = job.start(log=log)
        try:
            wait_until(lambda log=log: started(log), 60, "the shard to start")
            span = joined_before(job, ap, during)
            assert not held(job, ap_region, ap, "without")
            if run == "back":
                first_span = span
                assert "destination was out of the job for a while" in log.read_text()
            else:
                assert span == first_span  # no second span at a plain restart
                assert "out of the job" not in log.read_text()
            # The destination that stayed is told nothing new.
            waited = in_process(
                "wait", "-c", str(job.path), "-d", eu, "--until", f"{during:.6f}",
                "--timeout", "60",
            )  # fmt: skip
            assert waited.returncode == 0, waited
        finally:
            assert stop(runtime) == 0


def test_a_first_start_stopped_before_a_destination_was_written_is_not_taken_for_a_join(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A job's first start (TRIM_HORIZON) with two destinations, stopped by SIGTERM once
    the first destination's status table holds a part and before anything reached the
    second's (its CreateTable and its writes unanswered, as on a loaded host: nothing
    is checkpointed). Started again from TRIM_HORIZON, the second destination has no
    parts while the first has: it was taken for one that joined a job resuming from
    checkpoints, and `replicator wait` exited 4 ("joined the job") for changes it holds.
    It was in the job from its start: both destinations answer 0, and neither records
    changes never read.
    """
    name = unique("wf")
    proxy = FaultProxy(moto_endpoint).start()
    try:
        kcl = "{idle_time_between_reads_ms: 100, failover_time_ms: 6000, shutdown_flush_ms: 1000}"
        endpoints = {f"{name}-eu": proxy.url}  # the second destination's, through the proxy
        job = ProxiedJob(moto_endpoint, name, tmp_path, extra=FAST, kcl=kcl, endpoints=endpoints)
        (eu_region, eu), (ap_region, ap) = job.destinations
        for index in range(30):
            job.source.put_item(TableName=job.source_table, Item=item(f"k{index}", index))
        written = time.time()
        status = table_name(name)
        ap_status = StatusTable(
            client("dynamodb", ap_region, moto_endpoint), status, f"{ap_region}/{ap}"
        )
        eu_status = StatusTable(
            client("dynamodb", eu_region, moto_endpoint), status, f"{eu_region}/{eu}"
        )

        proxy.set(Mode(Fault.BLACK_HOLE, operations=frozenset({"CreateTable", "PutItem"})))
        first = job.start(log=job.directory / "first.log")
        try:
            wait_until(
                lambda: ap_status.parts_if_any(()) and proxy.counts("CreateTable"),
                60,
                "a part at the first destination, and the second's status table asked for",
            )
        finally:
            assert stop(first) == 0
        assert eu_status.parts_if_any(()) == []
        assert not (job.checkpoint() or "").isdigit()  # the next start is a first one again

        proxy.pass_through()
        second = job.start(log=job.directory / "second.log")
        try:
            wait_until(
                lambda: all(held(job, eu_region, eu, f"k{index}") for index in range(30)),
                60,
                "every item at the second destination",
            )
            for table in (eu, ap):
                waited = in_process(
                    "wait", "-c", str(job.path), "-d", table, "--until", f"{written:.6f}",
                    "--timeout", "60",
                )  # fmt: skip
                assert waited.returncode == 0, waited
                shown = in_process("watermark", "-c", str(job.path), "-d", table, "--json")
                assert json.loads(shown.stdout)["unread"] == [], shown
        finally:
            assert stop(second) == 0
        assert "destination joined" not in (job.directory / "second.log").read_text()
    finally:
        proxy.stop()


def test_a_processor_the_kcl_starts_at_latest_records_the_span_too(job: Job) -> None:
    """The KCL's MultiLangDaemon tells the processor a shard with no checkpoint starts at
    LATEST the same way the local runtime does (``sequenceNumber: LATEST``): driven over
    that protocol, the processor records the span as well."""
    before = time.time()
    time.sleep(1.1)
    kcl_processor_tells(job, "LATEST", before, "kcl.initial_position LATEST")


def test_a_processor_the_kcl_starts_at_trim_horizon_describes_the_source_itself(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Under the KCL the processor is the daemon's child, with only the job file: at a
    first ``sequenceNumber: TRIM_HORIZON`` it describes the source table itself, and
    records what came before the stream."""
    name = unique("wk")
    source = client("dynamodb", "us-east-1", moto_endpoint)
    before = table_before_its_stream(source, f"{name}-legacy", (item("old", 1),))
    job = Job(moto_endpoint, name, tmp_path, extra=FAST, source_of=f"{name}-legacy")
    kcl_processor_tells(job, "TRIM_HORIZON", before, "kcl.initial_position TRIM_HORIZON")


def kcl_processor_tells(job: Job, start: str, before: float, why: str) -> None:
    """Drive a processor as the KCL does from ``start`` (no checkpoint) until ``wait``
    for ``before`` exits 4, and check its message names ``why``."""
    (_, table), _ = job.destinations
    streams = client("dynamodbstreams", job.source_region, job.endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    job.write(runtime="kcl")
    daemon = RawDaemon(job.path)
    initialize = {"shardId": shard, "sequenceNumber": start, "subSequenceNumber": 0}
    daemon.act({"action": "initialize", **initialize})
    try:
        args = ("-c", str(job.path), "-d", table, "--until", f"{before:.6f}", "--timeout", "0")

        def told() -> bool:
            daemon.records([])  # an idle daemon's empty batches: the shard is caught up
            return in_process("wait", *args).returncode == 4

        wait_until(told, 60, "wait to say the changes before the start were never read")
        said = in_process("wait", *args).stderr
        assert why in said
    finally:
        daemon.act({"action": "shutdownRequested"})
        assert daemon.finish() == 0


def test_a_first_start_at_trim_horizon_is_told_what_came_before_the_stream(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A table that held an item before its stream was enabled, replicated from
    TRIM_HORIZON (the default): the stream never had the item, so a wait for its time
    exits 4 naming why and what to do, rather than 0 while the destination lacks it.
    The documented procedure (run, backfill, verify) clears it."""
    name = unique("wh")
    legacy = f"{name}-legacy"
    source = client("dynamodb", "us-east-1", moto_endpoint)
    written = table_before_its_stream(source, legacy, (item("old-order", 1),))
    job = Job(
        moto_endpoint,
        name,
        tmp_path,
        extra=FAST,
        source_of=legacy,
        destinations=[("eu-west-1", f"{name}-replica")],
    )
    region, table = job.destinations[0]
    runtime = job.start()
    try:
        wait_until(lambda: started(job.directory / "runtime.log"), 60, "the shard to start")
        args = ("-c", str(job.path), "-d", table, "--until", f"{written:.6f}", "--timeout", "60")
        waited = in_process("wait", *args)
        assert waited.returncode == 4, waited
        (line,) = waited.stderr.strip().splitlines()
        assert "were never read for this destination" in line
        assert "kcl.initial_position TRIM_HORIZON" in line
        assert "before the source's stream was enabled" in line and "backfill" in line
        assert not held(job, region, table, "old-order")  # and it is indeed not there
        shown = json.loads(
            in_process("watermark", "-c", str(job.path), "-d", table, "--json").stdout
        )
        (span,) = shown["unread"]
        assert span["reason"] == "before_stream" and span["to"] < time.time()

        # What the stream does hold is answered as ever.
        since = time.time()
        job.source.put_item(TableName=legacy, Item=item("new-order", 2))
        later = time.time()
        waited = in_process(
            "wait", "-c", str(job.path), "-d", table, "--since", f"{since:.6f}",
            "--until", f"{later:.6f}", "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 0, waited

        copied = in_process("backfill", "--config", str(job.path))
        assert copied.returncode == 0, copied
        assert held(job, region, table, "old-order")
        assert in_process("wait", *args).returncode == 4  # a copy clears nothing
        # verify clears up to a second before its scans start: after the span's end.
        wait_until(lambda: time.time() > span["to"] + 1.1, 5, "the span's end to be past")
        checked = in_process("verify", "--config", str(job.path), "--recheck-pause", "0.1")
        assert checked.returncode == 0, checked
        assert f"cleared at {region}/{table}" in checked.stdout, checked.stdout
        waited = in_process("wait", *args)
        assert waited.returncode == 0, waited
    finally:
        assert stop(runtime) == 0
