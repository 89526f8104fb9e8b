"""The replication watermark end to end: the local runtime as a real process against a moto
server over HTTP, the status tables in the destinations' regions, the ``watermark`` and
``wait`` commands, ``/metrics``, and ``wait_until_replicated`` as an application uses it.

moto makes a stream record readable as soon as its write returns and shares this host's
clock, so the jobs here run with ``caught_up_margin_ms: 0``; with DynamoDB the default
margin covers the stream's delay and the hosts' clocks.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from replicator.demo.workload import Workload
from replicator.watermark import (
    StatusTableMissing,
    Watermark,
    read_watermark,
    wait_until_replicated,
)
from tests.support.aws import client
from tests.support.cli import in_process, replicator
from tests.support.e2e import Job, children_of, stop, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.metrics import logged_metrics_port, matching, scrape
from tests.support.reliability import ProxiedJob, with_email_index

FAST = "watermark: {publish_interval_ms: 100, caught_up_margin_ms: 0}\n"
WRITES = frozenset({"PutItem", "DeleteItem"})
WATERMARK = "replicator_watermark_timestamp_seconds"


def item(key: str, counter: int, payload: str) -> dict[str, Any]:
    return {
        "pk": {"S": key},
        "sk": {"N": "0"},
        "updated_at": {"N": str(counter)},
        "payload": {"S": payload},
    }


def watermark_of(job: Job, region: str, table: str) -> Watermark:
    return read_watermark(
        destination=f"{region}/{table}",
        status_table=f"{job.name}-watermark",
        client=client("dynamodb", region, job.endpoint),
    )


def wait_for(job: Job, region: str, table: str, until: float, timeout: float = 60) -> None:
    result = wait_until_replicated(
        until,
        destination=f"{region}/{table}",
        status_table=f"{job.name}-watermark",
        timeout=timeout,
        client=client("dynamodb", region, job.endpoint),
        poll_interval=0.05,
    )
    assert result.replicated, result.describe()


def creation_times(job: Job) -> dict[str, list[float]]:
    """Each source item's stream records' creation times, in stream order."""
    streams = client("dynamodbstreams", job.source_region, job.endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    found: dict[str, list[float]] = {}
    while True:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        if not page["Records"]:
            return found
        for record in page["Records"]:
            body = record["dynamodb"]
            created = int(body["ApproximateCreationDateTime"].timestamp() * 1000) / 1000
            found.setdefault(body["Keys"]["pk"]["S"], []).append(created)
        iterator = page["NextShardIterator"]


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("wm"), tmp_path, extra=FAST)


def test_wait_and_watermark_commands_status_tables_and_the_metric(job: Job) -> None:
    (eu_region, eu), (ap_region, ap) = job.destinations
    runtime = job.start()
    try:
        job.source.put_item(TableName=job.source_table, Item=item("a", 1, "A"))
        written = time.time()
        waited = replicator(
            "wait", "--config", str(job.path), "--destination", eu,  # its table name
            "--until", f"{written:.6f}", "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 0, waited.stderr
        assert "replicated" in waited.stdout
        found = client("dynamodb", eu_region, job.endpoint).get_item(
            TableName=eu, Key={"pk": {"S": "a"}, "sk": {"N": "0"}}, ConsistentRead=True
        )
        assert found["Item"]["payload"] == {"S": "A"}

        wait_for(job, ap_region, ap, written)
        shown = replicator("watermark", "--config", str(job.path), "--json")
        assert shown.returncode == 0, shown.stderr
        marks = {entry["destination"]: entry for entry in json.loads(shown.stdout)}
        assert set(marks) == {f"{eu_region}/{eu}", f"{ap_region}/{ap}"}
        for entry in marks.values():
            assert entry["watermark"] >= written
            assert entry["status_table"] == f"{job.name}-watermark"
            assert all(shard["shard"].startswith("shardId-") for shard in entry["shards"])
            # Which table each part was claimed for: a destination's name given to another
            # table shows here before its processor records it.
            assert entry["destination"] == entry["destination_table"]
            assert {shard["destination_table"] for shard in entry["shards"]} == {
                entry["destination_table"]
            }
        # This file's first wait and watermark run as processes of their own, as an
        # operator runs them; the others, each of which returns by itself and is judged by
        # its exit status and output, run in this process (a process start costs about a
        # second of CPU).
        text = in_process("watermark", "--config", str(job.path), "-d", f"{ap_region}/{ap}")
        assert text.returncode == 0 and f"{ap_region}/{ap}: status table" in text.stdout

        # The status table lives in each destination's region, one item per shard.
        for region in (eu_region, ap_region):
            rows = client("dynamodb", region, job.endpoint).scan(TableName=f"{job.name}-watermark")[
                "Items"
            ]
            assert len(rows) == 1 and rows[0]["destination"]["S"].startswith(region)

        # The runtime reads the status tables in the background, about once a second: a
        # scrape shows the last read, which may predate the wait's.
        port = logged_metrics_port(job.directory / "runtime.log")

        def shown_passed() -> bool:
            samples = scrape(port)
            shown = [matching(samples, WATERMARK, destination=label) for label in marks]
            return all(len(values) == 1 and values[0] >= written for values in shown)

        wait_until(shown_passed, 10, "/metrics to show each destination's watermark")

        future = in_process(
            "wait", "--config", str(job.path), "--destination", f"{eu_region}/{eu}",
            "--until", "2100-01-01T00:00:00Z", "--timeout", "0.5",
        )  # fmt: skip
        assert future.returncode == 1
        assert "timed out" in future.stderr
    finally:
        assert stop(runtime) == 0


def test_a_dead_lettered_change_is_never_reported_replicated(job: Job) -> None:
    (eu_region, eu), (ap_region, ap) = job.destinations
    eu_client = client("dynamodb", eu_region, job.endpoint)
    with_email_index(eu_client, eu)  # eu refuses an empty email; the source takes it
    runtime = job.start()
    try:
        poison = {**item("poison", 1, "P"), "email": {"S": ""}}
        job.source.put_item(TableName=job.source_table, Item=poison)
        written = time.time()
        waited = in_process(
            "wait", "--config", str(job.path), "--destination", eu,
            "--until", f"{written:.6f}", "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 4, waited
        assert "dead-lettered" in waited.stderr
        result = wait_until_replicated(
            written,
            destination=f"{eu_region}/{eu}",
            status_table=f"{job.name}-watermark",
            client=eu_client,
            timeout=5,
        )
        assert result.reached and not result.replicated and result.dead_lettered
        wait_for(job, ap_region, ap, written)  # applied there

        # A later change waited for since after the dead letter: replicated. A stream
        # creation time names only its second (DynamoDB Streams rounds it down), so the
        # dead letter covers the rest of that second: "since" is after it.
        poisoned_at = creation_times(job)["poison"][0]
        wait_until(lambda: time.time() >= poisoned_at + 1, 5, "the dead letter's second to end")
        since = time.time()
        job.source.put_item(TableName=job.source_table, Item=item("good", 2, "G"))
        later = time.time()
        waited = in_process(
            "wait", "--config", str(job.path), "--destination", eu, "--since",
            f"{since:.6f}", "--until", f"{later:.6f}", "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 0, waited
        shown = json.loads(in_process("watermark", "-c", str(job.path), "-d", eu, "--json").stdout)
        assert shown["dead_letters"] == 1

        # The item fixed at the source (a write of its own) and a verify that finds the
        # destination equal: the dead letter is settled there, and the wait answers
        # again (a redrive left it reported for ever). A verify clears what was created
        # before it started, less a second (stream times are whole seconds).
        job.source.put_item(TableName=job.source_table, Item=item("poison", 3, "fixed"))

        def marked() -> dict[str, Any]:
            shown = in_process("watermark", "-c", str(job.path), "-d", eu, "--json")
            return dict(json.loads(shown.stdout))

        wait_until(
            lambda: (
                in_process("verify", "-c", str(job.path)).returncode == 0
                and marked()["dead_letter_ranges"] == []
            ),
            60,
            "a verify to clear the dead letter's range",
        )
        assert marked()["dead_letters"] == 0
        waited = in_process(
            "wait", "-c", str(job.path), "-d", eu, "--until", f"{written:.6f}", "--timeout", "5"
        )
        assert waited.returncode == 0, waited
    finally:
        assert stop(runtime) == 0


def test_a_change_dead_lettered_while_the_watermark_was_off_is_never_reported_replicated(
    job: Job,
) -> None:
    """On, off, on again: the run with the watermark off dead-letters a change and
    checkpoints past it, recording nothing. Its start leaves an open span on the status
    table's parts, so a wait meeting that time is told "replicated unwatched" (exit 4),
    not "replicated"; the run with it on again ends the span at its start, and waits for
    changes made after that are answered as before."""
    (eu_region, eu), _ = job.destinations
    eu_client = client("dynamodb", eu_region, job.endpoint)
    with_email_index(eu_client, eu)  # eu refuses an empty email; the source takes it

    def waited(until: float, since: float | None = None) -> subprocess.CompletedProcess[str]:
        window = ["--until", f"{until:.6f}"] + (
            [] if since is None else ["--since", f"{since:.6f}"]
        )
        return in_process("wait", "-c", str(job.path), "-d", eu, "--timeout", "30", *window)

    runtime = job.start()
    try:
        job.source.put_item(TableName=job.source_table, Item=item("a", 1, "A"))
        assert waited(time.time()).returncode == 0
    finally:
        assert stop(runtime) == 0

    job.extra = ""
    job.write(watermark="{enabled: false}")
    runtime = job.start()
    try:
        poison = {**item("poison", 2, "P"), "email": {"S": ""}}
        job.source.put_item(TableName=job.source_table, Item=poison)
        wait_until(
            lambda: job.dead_letters.exists() and job.dead_letters.read_text().strip() != "",
            30,
            "the poisoned change to be dead-lettered",
        )
        poisoned = time.time()
        # Waited for meanwhile (with the job file that has it on): told at once, not
        # after the timeout with "is the job running?".
        job.extra = FAST
        job.write()
        meanwhile = waited(poisoned)
        assert meanwhile.returncode == 4, meanwhile
        assert "stands, and changes created since" in meanwhile.stderr
        assert "the job runs with watermark.enabled: false" in meanwhile.stderr
    finally:
        assert stop(runtime) == 0
    assert "replicated unwatched" in (job.directory / "runtime.log").read_text()

    runtime = job.start()
    try:

        def unwatched_ends() -> list[float | None]:
            shown = in_process("watermark", "-c", str(job.path), "-d", eu, "--json")
            spans = json.loads(shown.stdout)["unread"]
            return [span["to"] for span in spans if span["reason"] == "unwatched"]

        assert unwatched_ends() != []  # open: "to" is null

        def ended() -> bool:
            return all(end is not None for end in unwatched_ends())

        wait_until(ended, 30, "the open span to be ended")
        since = max(end for end in unwatched_ends() if end is not None) + 1  # whole seconds
        wait_until(lambda: time.time() > since, 5, "the span's last second to end")
        job.source.put_item(TableName=job.source_table, Item=item("later", 3, "L"))
        later = time.time()
        assert waited(later, since=since).returncode == 0
        told = waited(poisoned)
        assert told.returncode == 4, told
        assert "replicated unwatched" in told.stderr and "watermark.enabled: false" in told.stderr
        shown = in_process("watermark", "-c", str(job.path), "-d", eu)
        assert "unwatched: changes created " in shown.stdout, shown
        assert "9999" not in shown.stdout  # the span was ended when the watermark came back
    finally:
        assert stop(runtime) == 0
    assert "email" not in eu_client.get_item(
        TableName=eu, Key={"pk": {"S": "poison"}, "sk": {"N": "0"}}
    ).get("Item", {})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--until", "yesterday"], "--until 'yesterday': expected epoch seconds"),
        (["--until", "2026-01-01T00:00:00"], "needs a zone"),
        (["--until", "nan"], "not a time"),
        (
            ["--until", "1796097900000"],
            "--until '1796097900000': looks like epoch milliseconds: give seconds, e.g. 1796097900",
        ),
        (["--until", "1e20"], "--until '1e20': out of range"),
        (["--until", "0001-01-01T00:00:00+01:00"], "before 1970"),
        (["--until", "9999-12-31T23:59:59-01:00"], "out of range"),
        (["--until", "1", "--since", "1960-01-01T00:00:00Z"], "--since '1960-01-01T00:00:00Z'"),
        (["--until", "1", "--since", "soon"], "--since 'soon'"),
        (["--until", "200", "--since", "300"], "is after --until 1970-01-01T00:03:20.000000Z"),
        (["--until", "1", "--poll", "nan"], "'--poll': nan is not a number of seconds"),
        (["--until", "1", "--poll", "inf"], "'--poll': inf is not a number of seconds"),
        (["--until", "1", "--timeout", "nan"], "'--timeout': nan is not a number of seconds"),
        (["--until", "1", "--destination", "nowhere"], "--destination 'nowhere'"),
        (["--until", "1", "--timeout", "-3"], "--timeout"),
    ],
)
def test_wait_refuses_bad_input_naming_the_value(
    moto_endpoint: str, tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: wm-input\n"
        f"source: {{region: us-east-1, table: src, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: replica, endpoint_url: '{moto_endpoint}'}}\n"
        f"  - {{region: ap-southeast-2, table: replica, endpoint_url: '{moto_endpoint}'}}\n"
    )
    defaults = {"--destination": "eu-west-1/replica", "--timeout": "1"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [arg for pair in ({**defaults, **given}).items() for arg in pair]
    result = in_process("wait", "--config", str(path), *argv)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_table_name_names_a_destination_only_when_unambiguous(
    moto_endpoint: str, tmp_path: Path
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: wm-ambiguous\n"
        f"source: {{region: us-east-1, table: src, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: replica, endpoint_url: '{moto_endpoint}'}}\n"
        f"  - {{region: ap-southeast-2, table: replica, endpoint_url: '{moto_endpoint}'}}\n"
    )
    result = in_process(
        "wait", "--config", str(path), "--destination", "replica", "--until", "1",
        "--timeout", "0",
    )  # fmt: skip
    assert result.returncode == 2
    assert "eu-west-1/replica, ap-southeast-2/replica" in result.stderr
    # By its name the destination is found; nothing published yet, so the wait times out.
    named = in_process(
        "wait", "--config", str(path), "--destination", "eu-west-1/replica", "--until", "1",
        "--timeout", "0",
    )  # fmt: skip
    assert named.returncode == 1, named.stderr
    assert "does not exist" in named.stderr


def test_a_name_that_is_also_another_destinations_table_is_refused_as_ambiguous(
    moto_endpoint: str, tmp_path: Path
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: wm-named\n"
        f"source: {{region: us-east-1, table: src, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        "  - {name: orders, region: eu-west-1, table: orders-eu, "
        f"endpoint_url: '{moto_endpoint}'}}\n"
        f"  - {{region: us-west-2, table: orders, endpoint_url: '{moto_endpoint}'}}\n"
    )

    def wait(destination: str) -> subprocess.CompletedProcess[str]:
        return in_process(
            "wait", "--config", str(path), "--destination", destination, "--until", "1",
            "--timeout", "0",
        )  # fmt: skip

    ambiguous = wait("orders")
    assert ambiguous.returncode == 2, ambiguous
    assert "orders (eu-west-1/orders-eu), us-west-2/orders" in ambiguous.stderr
    assert len(ambiguous.stderr.strip().splitlines()) == 1, ambiguous.stderr
    # Each can still be chosen: the named one by its <region>/<table>, the other by its label.
    for destination in ("eu-west-1/orders-eu", "us-west-2/orders"):
        found = wait(destination)
        assert found.returncode == 1, found.stderr  # found; nothing published yet
        assert "does not exist" in found.stderr


# -- 1,000 rounds of write, wait, read --------------------------------------------------------


@dataclass
class Round:
    index: int
    written_at: float
    returned_at: float = 0.0
    replicated: bool = False
    found: str | None = None


@pytest.mark.reliability
def test_1000_rounds_of_write_then_wait_then_read_never_read_stale(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Event A is written in the source at T; another thread waits until the destination's
    watermark passes T and then reads A there. Rounds overlap (16 in flight), each checks
    its own read."""
    applied_at: dict[str, float] = {}

    def observe(operation: str, body: bytes, status: int) -> None:
        if operation == "PutItem" and status == 200:
            key = json.loads(body).get("Item", {}).get("pk", {}).get("S", "")
            applied_at.setdefault(key, time.time())

    proxy = FaultProxy(moto_endpoint, observe=observe).start()
    # Writes that take a while leave the watermark time to run ahead of them, if it could.
    proxy.set(Mode(latency_s=0.15, operations=WRITES))
    name = unique("wm-rounds")
    try:
        job = ProxiedJob(
            moto_endpoint,
            name,
            tmp_path,
            destinations=[("eu-west-1", f"{name}-eu")],
            endpoints={f"{name}-eu": proxy.url},
            extra=FAST,
        )
        region, table = job.destinations[0]
        reader = client("dynamodb", region, moto_endpoint)  # the application in region 2
        runtime = job.start()
        try:
            wait_until(job.lease_rows, 30, "the runtime to create its lease")
            rounds = _run_rounds(job, reader, region, table, count=1000, in_flight=16)
        finally:
            assert stop(runtime) == 0
    finally:
        proxy.stop()
    stale = [r for r in rounds if r.found != f"A{r.index}"]
    not_replicated = [r for r in rounds if not r.replicated]
    delays = [applied_at[f"r{r.index}"] - r.written_at for r in rounds]
    overheads = [r.returned_at - applied_at[f"r{r.index}"] for r in rounds]
    print(
        f"\n[watermark] {len(rounds)} rounds: stale reads {len(stale)}, "
        f"waits that did not pass {len(not_replicated)}; "
        f"replication delay (write returned -> destination answered the put) "
        f"median {statistics.median(delays) * 1000:.0f} ms; "
        f"wait overhead over it (-> wait returned) median "
        f"{statistics.median(overheads) * 1000:.0f} ms, "
        f"p90 {statistics.quantiles(overheads, n=10)[-1] * 1000:.0f} ms "
        f"(destination writes slowed by 150 ms; publish interval 100 ms, poll 50 ms, idle "
        f"read interval 100 ms)"
    )
    assert not not_replicated, not_replicated[:3]
    assert not stale, stale[:3]


def _run_rounds(
    job: Job, reader: Any, region: str, table: str, count: int, in_flight: int
) -> list[Round]:
    slots = threading.Semaphore(in_flight)
    status = client("dynamodb", region, job.endpoint)

    def waiter(current: Round) -> Round:
        result = wait_until_replicated(
            current.written_at,
            destination=f"{region}/{table}",
            status_table=f"{job.name}-watermark",
            timeout=60,
            client=status,
            poll_interval=0.05,
        )
        current.returned_at = time.time()
        current.replicated = result.replicated
        got = reader.get_item(
            TableName=table,
            Key={"pk": {"S": f"r{current.index}"}, "sk": {"N": "0"}},
            ConsistentRead=True,
        ).get("Item")
        current.found = got["payload"]["S"] if got else None
        return current

    futures: list[Future[Round]] = []
    with ThreadPoolExecutor(in_flight) as pool:
        for index in range(count):
            slots.acquire()
            job.source.put_item(
                TableName=job.source_table, Item=item(f"r{index}", index, f"A{index}")
            )
            current = Round(index, time.time())
            future = pool.submit(waiter, current)
            future.add_done_callback(lambda _: slots.release())
            futures.append(future)
        return [future.result() for future in futures]


# -- a held destination -----------------------------------------------------------------------


@pytest.mark.reliability
def test_a_held_destination_holds_its_watermark_while_the_other_moves_on(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    proxy = FaultProxy(moto_endpoint).start()
    name = unique("wm-hold")
    try:
        job = ProxiedJob(
            moto_endpoint,
            name,
            tmp_path,
            endpoints={f"{name}-eu": proxy.url},
            writer="writer: {max_in_flight: 16, retry: {max_delay_ms: 300}}",
            extra=FAST,
        )
        (eu_region, eu), (ap_region, ap) = job.destinations
        runtime = job.start()
        try:
            job.source.put_item(TableName=job.source_table, Item=item("before", 1, "x"))
            before = time.time()
            wait_for(job, eu_region, eu, before)
            wait_for(job, ap_region, ap, before)

            # Hold eu's writes (its status table still answers: only the watermark logic
            # can keep its watermark back).
            proxy.set(Mode(Fault.SERVER_ERROR, operations=WRITES))
            for index in range(20):
                job.source.put_item(TableName=job.source_table, Item=item(f"h{index}", 2, "y"))
            last_written = time.time()
            wait_for(job, ap_region, ap, last_written)
            first_held = min(
                t for key, ts in creation_times(job).items() if key.startswith("h") for t in ts
            )
            held: list[float] = []
            deadline = time.monotonic() + 3.0  # thirty publish intervals
            while time.monotonic() < deadline:
                mark = watermark_of(job, eu_region, eu).seconds
                assert mark is not None
                held.append(mark)
                time.sleep(0.1)
            assert max(held) < first_held, (max(held), first_held)
            assert proxy.counts("PutItem")["server_error"] > 0
            print(
                f"\n[watermark] eu held at {max(held):.6f} while its first unapplied change "
                f"was created at {first_held:.6f}; ap passed {last_written:.6f}"
            )

            proxy.pass_through()
            wait_for(job, eu_region, eu, last_written)
            assert job.converged()
        finally:
            assert stop(runtime) == 0
    finally:
        proxy.stop()


def test_an_echo_from_one_region_is_not_taken_as_written_to_another(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Active-active mesh, seen from the us-east-1 job: a change made here (v1), then the
    item's newer state made in eu-west-1 (v2), whose record is skipped here as eu's echo.
    eu holds v2; ap, whose writes fail, holds nothing, and v1 is still being retried
    there: a wait on ap for v1's time must not say "replicated" until v1 is written."""
    proxy = FaultProxy(moto_endpoint).start()
    name = unique("wm-echo")
    try:
        job = ProxiedJob(
            moto_endpoint,
            name,
            tmp_path,
            endpoints={f"{name}-ap": proxy.url},
            writer="writer: {max_in_flight: 16, retry: {max_delay_ms: 300}}",
            extra=FAST + "loop_prevention: {origin_attribute: origin}\n",
        )
        (eu_region, eu), (ap_region, ap) = job.destinations
        assert (eu_region, ap_region) == ("eu-west-1", "ap-southeast-2")
        runtime = job.start()
        try:
            job.source.put_item(TableName=job.source_table, Item=item("before", 1, "x"))
            before = time.time()
            wait_for(job, eu_region, eu, before)
            wait_for(job, ap_region, ap, before)

            proxy.set(Mode(Fault.SERVER_ERROR, operations=WRITES))
            v1 = {**item("evA", 100, "v1"), "origin": {"S": "us-east-1"}}
            v2 = {**item("evA", 200, "v2"), "origin": {"S": "eu-west-1"}}
            job.source.put_item(TableName=job.source_table, Item=v1)
            t1 = time.time()
            time.sleep(1.5)
            # eu-west-1's job: eu's table has v2, and it is replicated into this source.
            client("dynamodb", eu_region, job.endpoint).put_item(TableName=eu, Item=v2)
            job.source.put_item(TableName=job.source_table, Item=v2)
            t2 = time.time()
            wait_for(job, eu_region, eu, t2)  # eu moves on: it holds the newer state

            held = wait_until_replicated(
                t1,
                destination=f"{ap_region}/{ap}",
                status_table=f"{job.name}-watermark",
                timeout=3,
                client=client("dynamodb", ap_region, job.endpoint),
                poll_interval=0.05,
            )
            assert not held.replicated and not held.reached, held.describe()
            waited = in_process(
                "wait", "--config", str(job.path), "-d", f"{ap_region}/{ap}",
                "--until", f"{t1:.6f}", "--timeout", "1",
            )  # fmt: skip
            assert waited.returncode == 1, (waited.stdout, waited.stderr)
            assert proxy.counts("PutItem")["server_error"] > 0
            ap_client = client("dynamodb", ap_region, job.endpoint)
            key = {"pk": {"S": "evA"}, "sk": {"N": "0"}}
            assert "Item" not in ap_client.get_item(TableName=ap, Key=key, ConsistentRead=True)

            proxy.pass_through()
            wait_for(job, ap_region, ap, t2)
            found = ap_client.get_item(TableName=ap, Key=key, ConsistentRead=True)["Item"]
            assert found["payload"] == {"S": "v1"}  # v1 was written; eu's job sends v2
        finally:
            assert stop(runtime) == 0
    finally:
        proxy.stop()


# -- restarts and kill -9 ---------------------------------------------------------------------


@dataclass
class Monitor:
    """Reads both destinations' watermarks and parts every 50 ms while the test runs."""

    job: Job
    seen: dict[str, list[float | None]] = field(default_factory=dict)
    parts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.wait(0.05):
                for region, table in self.job.destinations:
                    try:
                        mark = watermark_of(self.job, region, table)
                    except StatusTableMissing:  # not created yet
                        self.seen.setdefault(table, []).append(None)
                        continue
                    self.seen.setdefault(table, []).append(mark.seconds)
                    for part in (*mark.counted, *mark.retired):
                        self.parts.setdefault((table, part.shard), []).append(part.watermark_us)
        except BaseException as error:  # reported by the test
            self.error = error

    def __enter__(self) -> Monitor:
        threading.Thread(target=self.run, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()


@pytest.mark.reliability
def test_the_published_watermark_never_decreases_across_kill_9_and_restarts(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    job = Job(moto_endpoint, unique("wm-kill"), tmp_path, extra=FAST)
    (eu_region, eu), _ = job.destinations
    eu_client = client("dynamodb", eu_region, job.endpoint)
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=16, keys=120, origin="us-east-1"
    )
    stale: list[tuple[int, int]] = []
    rounds_done = [0]
    stopping = threading.Event()

    def rounds() -> None:
        """Updates of five hot items (squashed in the buffer), each waited for and read."""
        counter = 0
        while not stopping.is_set():
            counter += 1
            key = f"hot{counter % 5}"
            job.source.put_item(TableName=job.source_table, Item=item(key, counter, str(counter)))
            result = wait_until_replicated(
                time.time(),
                destination=f"{eu_region}/{eu}",
                status_table=f"{job.name}-watermark",
                timeout=90,
                client=eu_client,
                poll_interval=0.05,
            )
            if not result.reached:
                continue
            got = eu_client.get_item(
                TableName=eu, Key={"pk": {"S": key}, "sk": {"N": "0"}}, ConsistentRead=True
            )
            value = int(got["Item"]["updated_at"]["N"]) if "Item" in got else 0
            if value < counter:
                stale.append((counter, value))
            rounds_done[0] += 1

    runtime = job.start()
    with Monitor(job) as monitor:
        writer = threading.Thread(target=rounds, daemon=True)
        try:
            workload.start()
            writer.start()
            wait_until(lambda: rounds_done[0] >= 5, 60, "the first rounds to replicate")
            for kill in range(2):  # kill -9 of the runtime and its processors, twice
                before = rounds_done[0]
                runtime.send_signal(signal.SIGKILL)
                runtime.wait(10)
                for child in children_of(runtime.pid):
                    os.kill(child, signal.SIGKILL)
                runtime = job.start()
                wait_until(
                    lambda b=before: rounds_done[0] >= b + 5, 90, f"rounds after kill {kill}"
                )
            assert stop(runtime) == 0  # a clean restart too
            runtime = job.start()
            workload.join(60)
            assert workload.error is None
            stopping.set()
            writer.join(100)
            last_written = time.time()
            for region, table in job.destinations:
                wait_for(job, region, table, last_written, timeout=90)
            wait_until(job.converged, 60, "destinations to equal the source")
        finally:
            stopping.set()
            writer.join(100)
            assert stop(runtime) == 0
    assert monitor.error is None, monitor.error
    for table, values in monitor.seen.items():
        published = [v for v in values if v is not None]
        first = values.index(published[0])
        assert None not in values[first:], f"{table}: the watermark disappeared"
        drops = [(a, b) for a, b in itertools.pairwise(published) if b < a]
        assert not drops, f"{table}: the watermark went back: {drops[:3]}"
    for (table, shard), values in monitor.parts.items():
        assert values == sorted(values), f"{table}/{shard}: a part went back"
    print(
        f"\n[watermark] kill -9 twice and a clean restart: {rounds_done[0]} rounds of "
        f"write/wait/read of hot items, stale reads {len(stale)}; "
        f"{sum(len(v) for v in monitor.seen.values())} watermark readings, none went back"
    )
    assert not stale, stale[:5]
