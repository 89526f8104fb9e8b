"""``replicator backfill`` against a moto server over HTTP: the copy, its conflict
safeguards, the hand-off check, resuming, and running beside the live replicator."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from replicator.config.loader import load_job
from replicator.config.model import ConflictConfig
from replicator.deadletter.file import FileDeadLetters
from replicator.demo import tables
from replicator.demo.workload import Workload, demo_item
from replicator.exceptions import EnvironmentProblem
from replicator.items import Item
from replicator.rules import CustomRule, OrderedRule, Skip, rule_for
from replicator.runtime import preflight
from replicator.shards.leases import LeaseTable
from replicator.tombstones.model import tombstone_of
from replicator.tombstones.setup import prepare as prepare_tombstones
from replicator.tombstones.table import TombstoneTable
from replicator.tools import backfill_state, snapshot
from replicator.tools.backfill import Backfill, BackfillHooks, BackfillOptions, BackfillResult
from replicator.tools.futures import INTERRUPT_GRACE_S
from replicator.tools.snapshot import SnapshotRule, synthetic_change
from replicator.tools.tables import source_ref
from replicator.tools.verify import Verify, VerifyOptions
from tests.support.aws import client
from tests.support.cli import in_process, replicator
from tests.support.e2e import Job, stop, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.tools import interrupted_once, run_within

LWW = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}"


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("backfill"), tmp_path)


def configure(job: Job, *, policy: str | None = None, initial_position: str | None = None) -> None:
    text = job.path.read_text()
    if policy is not None:
        text = text.replace(LWW, f"conflict: {{policy: {policy}}}")
    if initial_position is not None:
        text = text.replace("kcl: {", f"kcl: {{initial_position: {initial_position}, ")
    job.path.write_text(text)


def populate(job: Job, count: int, seed: int = 1) -> None:
    """``count`` demo items (each key once) in the source, written 25 to a request."""
    rng = random.Random(seed)
    items = [
        demo_item(rng, f"customer-{index % 40:03d}", index // 40, "us-east-1")
        for index in range(count)
    ]
    for start in range(0, count, 25):
        requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        unprocessed = {job.source_table: requests}
        while unprocessed:
            unprocessed = job.source.batch_write_item(RequestItems=unprocessed)["UnprocessedItems"]


def cli(job: Job, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``replicator COMMAND --config JOB ARGS`` run in this process: see
    :func:`test_backfill_beside_the_running_replicator_and_live_writes_verifies_equal`."""
    return in_process(command, "--config", str(job.path), *args)


def backfill(job: Job, hooks: BackfillHooks | None = None, **options: Any) -> BackfillResult:
    return Backfill(load_job(job.path), BackfillOptions(**options), hooks=hooks).run()


def item(pk: str, sk: int, updated_at: int, **extra: str) -> Item:
    found: Item = {"pk": {"S": pk}, "sk": {"N": str(sk)}, "updated_at": {"N": str(updated_at)}}
    found.update({name: {"S": value} for name, value in extra.items()})
    return found


def key(pk: str, sk: int) -> Item:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def get(ddb: Any, table: str, pk: str, sk: int) -> Item | None:
    found: Item | None = ddb.get_item(TableName=table, Key=key(pk, sk), ConsistentRead=True).get(
        "Item"
    )
    return found


def state_rows(job: Job) -> dict[int, dict[str, Any]]:
    rows = job.source.scan(TableName=f"{job.name}-backfill", ConsistentRead=True)["Items"]
    return {int(row["segment"]["N"]): row for row in rows}


def test_backfill_beside_the_running_replicator_and_live_writes_verifies_equal(job: Job) -> None:
    """The documented procedure: replicator first (starting at LATEST), then the backfill
    while the source keeps changing; afterwards `verify` finds nothing."""
    configure(job, initial_position="LATEST")
    populate(job, 200)
    runtime = job.start()
    # Runs until stopped below, however long the backfill takes on a loaded machine.
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=3600, keys=200, origin="us-east-1"
    )
    try:
        workload.start()
        wait_until(
            lambda: any(row["checkpoint"]["S"].isdigit() for row in job.lease_rows()),
            30,
            "the replicator's first checkpoint",
        )
        before = workload.stats.total
        # backfill and verify as processes of their own, as an operator runs them beside
        # the replicator; the other tests run the commands in this process (cli): each
        # runs to its end by itself and is checked by its exit status, output and tables.
        # Ctrl-C is sent to a process of its own
        # (test_ctrl_c_stops_after_the_pages_in_hand_and_the_run_resumes).
        copied = replicator(
            "backfill", "--config", str(job.path), "--segments", "3", "--page-size", "25"
        )
        assert copied.returncode == 0, copied.stderr
        assert "complete" in copied.stdout
        assert workload.is_alive(), "the writes must continue during the whole backfill"
        assert workload.error is None
        assert workload.stats.total > before + 30, "writes while the backfill ran"
        workload.stop_event.set()
        workload.join(30)
        assert workload.error is None
        assert workload.stats.deletes > 0 and workload.stats.updates > 0
        wait_until(job.converged, 60, "destinations to equal the source")
        verified = replicator("verify", "--config", str(job.path), "--recheck-pause", "0.5")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "equal" in verified.stdout
    finally:
        assert stop(runtime) == 0
    rows = state_rows(job)
    assert all(rows[n]["done"]["BOOL"] for n in range(3))
    assert sum(int(rows[n]["scanned"]["N"]) for n in range(3)) >= 150


def test_an_interrupted_backfill_resumes_where_each_segment_stopped(job: Job) -> None:
    populate(job, 120)
    first = cli(job, "backfill", "--segments", "2", "--page-size", "10", "--max-items", "30")
    assert first.returncode == 1, first.stderr
    assert "--max-items 30 reached" in first.stdout
    rows = state_rows(job)
    assert rows[-1]["total_segments"] == {"N": "2"}
    assert "owner" not in rows[-1]  # released on the way out
    scanned_first = sum(int(rows[n]["scanned"]["N"]) for n in (0, 1))
    assert scanned_first == 30
    assert not all(rows[n]["done"]["BOOL"] for n in (0, 1))
    assert any("last_key" in rows[n] for n in (0, 1))
    (eu, eu_table), _ = job.destination_clients()
    assert len(tables.scan_all(eu, eu_table)) == scanned_first

    second = cli(job, "backfill")  # no options: the stored run's 2 segments
    assert second.returncode == 0, second.stderr
    assert "resumed" in second.stdout
    rows = state_rows(job)
    assert all(rows[n]["done"]["BOOL"] for n in (0, 1))
    # Every item was scanned exactly once over the two runs: nothing was read twice.
    assert sum(int(rows[n]["scanned"]["N"]) for n in (0, 1)) == 120
    assert f"items scanned:      120 ({120 - scanned_first} this run)" in second.stdout
    # Every count is the whole copy's, this run's share beside it (2 destinations).
    assert f"writes applied:     240 ({2 * (120 - scanned_first)} this run)" in second.stdout
    assert "copies undone:      0 (0 this run)" in second.stdout
    assert job.converged()

    again = cli(job, "backfill")
    assert again.returncode == 0
    assert "already complete" in again.stdout
    changed = cli(job, "backfill", "--segments", "3")
    assert changed.returncode == 3
    assert "--restart" in changed.stderr


def test_an_already_complete_backfill_exits_as_the_run_that_completed_it(job: Job) -> None:
    """The stored run dead-lettered writes (an item whose timestamp last_writer_wins
    cannot rank): running it again says so and exits 1, as that run did."""
    populate(job, 10)
    unrankable = {**item("bad", 1, 0), "updated_at": {"BOOL": True}}
    job.source.put_item(TableName=job.source_table, Item=unrankable)

    first = cli(job, "backfill")

    assert first.returncode == 1, first.stdout + first.stderr
    assert "complete" in first.stdout
    assert "dead-lettered:      2" in first.stdout

    again = cli(job, "backfill")

    assert again.returncode == 1, again.stdout + again.stderr
    assert "already complete" in again.stdout
    assert "dead-lettered:      2" in again.stdout
    assert "fix the cause, then run `replicator redrive`" in again.stdout


@pytest.mark.parametrize("created_again", ["source", "destination"])
def test_a_stored_run_of_a_table_created_again_is_not_taken_for_this_ones(
    job: Job, created_again: str
) -> None:
    """A stored run was known by the tables' names only: after the source was created
    again (as the runbook's recovery does before a backfill), or a destination deleted
    mid-copy and created again, the backfill said "already complete" (exit 0), or took
    up where it stopped, with items never copied."""
    populate(job, 10)
    assert cli(job, "backfill").returncode == 0
    ddb, table = (
        (job.source, job.source_table)
        if created_again == "source"
        else job.destination_clients()[0]
    )
    ddb.delete_table(TableName=table)
    tables.create(ddb, table, stream=created_again == "source")
    populate(job, 5, seed=2)

    again = cli(job, "backfill", "--skip-handoff-check")

    assert again.returncode == 3, again.stdout + again.stderr
    label = f"source us-east-1/{job.source_table}" if created_again == "source" else eu_label(job)
    assert (
        f"the stored backfill in {job.name}-backfill copied other tables than the job names "
        f"now: {label} (created again since, or another table under its name)"
    ) in again.stderr
    assert "run with --restart to copy from the start" in again.stderr

    restarted = cli(job, "backfill", "--skip-handoff-check", "--restart")

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    if created_again == "destination":  # (a source created again leaves extra items)
        assert cli(job, "verify").returncode == 0


def test_max_items_copies_no_more_than_m_items_over_all_segments(job: Job) -> None:
    """Each Scan asks for no more than what is left of M, shared by the segments: four
    segments of 100-item pages copy M items, not a page or more of each; in a first run
    (M = 1) and in runs that resume it (M = 50, then M = 130, more than a page), each
    copies exactly M, and a run without a limit then completes the copy."""
    populate(job, 400)
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    copied = 0
    for limit in (1, 50, 130):
        result = backfill(job, segments=4, page_size=100, max_items=limit)

        assert not result.complete
        assert result.stopped == f"--max-items {limit} reached"
        assert result.this_run.scanned == limit
        copied += limit
        assert result.overall.scanned == copied
        assert len(tables.scan_all(eu, eu_table)) == copied
        assert len(tables.scan_all(ap, ap_table)) == copied

    rest = backfill(job)

    assert rest.complete
    assert rest.overall.scanned == 400
    assert rest.this_run.scanned == 400 - copied
    assert job.converged()


def test_backfill_refuses_while_the_replicator_could_start_after_the_scan(job: Job) -> None:
    configure(job, initial_position="LATEST")
    populate(job, 5)
    refused = cli(job, "backfill")
    assert refused.returncode == 3
    assert "no lease, and the job starts from LATEST" in refused.stderr
    assert "Start the replicator first" in refused.stderr
    assert "docs/operator-tools.md" in refused.stderr

    streams = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    shard_id = _shard(job, streams)
    leases = LeaseTable(job.source, job.name, owner="test")
    leases.ensure_exists()
    leases.create(shard_id, "LATEST", [])
    with pytest.raises(EnvironmentProblem, match="checkpoint is still LATEST"):
        backfill(job)
    lease = leases.get(shard_id)
    assert lease is not None
    leases.take(lease)
    leases.checkpoint(lease, job.last_stream_sequence())
    result = backfill(job)
    assert result.complete and result.exit_code == 0
    assert job.converged()


@pytest.mark.parametrize("runtime", ["local", "kcl"])
@pytest.mark.parametrize("checkpoint", ["LATEST", "sequence number"])
def test_a_lease_of_an_earlier_stream_is_reported_as_read_from_trim_horizon(
    job: Job, runtime: str, checkpoint: str
) -> None:
    """The source table was deleted and created again: its new stream's shard has the
    earlier one's id (moto's), and the lease table still holds that shard's lease of the
    earlier stream. The local runtime reads the shard from TRIM_HORIZON, and the hand-off
    says so (a LATEST checkpoint of that stream fixes nothing either way); the KCL, which
    knows nothing of the lease's stream, resumes the lease's checkpoint."""
    if runtime == "kcl":
        job.path.write_text("runtime: kcl\n" + job.path.read_text())
    populate(job, 5)
    earlier = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    shard_id = _shard(job, earlier)
    leases = LeaseTable(job.source, job.name, owner="test", stream=earlier)
    leases.ensure_exists()
    leases.create(shard_id, "LATEST", [])
    lease = leases.get(shard_id)
    assert lease is not None
    leases.take(lease)
    if checkpoint != "LATEST":
        leases.checkpoint(lease, job.last_stream_sequence())
    leases.release(lease)
    job.source.delete_table(TableName=job.source_table)
    tables.create(job.source, job.source_table, stream=True)
    current = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    assert current != earlier and _shard(job, current) == shard_id  # moto reuses the id
    populate(job, 3, seed=2)

    result = cli(job, "backfill")

    if runtime == "kcl" and checkpoint == "LATEST":
        assert result.returncode == 3, result.stdout + result.stderr
        assert "the lease's checkpoint is still LATEST" in result.stderr
        return
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [text for text in result.stderr.splitlines() if "hand-off checked" in text]
    (position,) = json.loads(line)["positions"].values()
    if runtime == "kcl":
        assert position == lease.checkpoint
    else:
        assert position == "TRIM_HORIZON (a lease of an earlier stream)"
        assert "start the replicator within 24 hours" in json.loads(line)["note"]
    assert job.converged()


def _kinesis_stream(job: Job, region: str) -> str:
    """A Kinesis data stream named after the job in ``region``: its ARN."""
    kinesis = client("kinesis", region, job.endpoint)
    kinesis.create_stream(StreamName=f"{job.name}-changes", ShardCount=1)
    summary = kinesis.describe_stream_summary(StreamName=f"{job.name}-changes")
    return str(summary["StreamDescriptionSummary"]["StreamARN"])


def _read_from_kinesis(job: Job, stream: str) -> None:
    """The job's source read from a Kinesis data stream (``stream``: its YAML keys)."""
    source = f"endpoint_url: '{job.endpoint}'}}\n"
    text = job.path.read_text().replace(
        source, f"endpoint_url: '{job.endpoint}', stream: {{kind: kinesis, {stream}}}}}\n", 1
    )
    job.path.write_text("runtime: kcl\n" + text)


@pytest.mark.parametrize("by", ["name", "arn"])
def test_a_kinesis_source_is_backfilled_with_its_hand_off_checked(job: Job, by: str) -> None:
    arn = _kinesis_stream(job, "us-east-1")
    _read_from_kinesis(job, f"name: {job.name}-changes" if by == "name" else f"arn: '{arn}'")
    populate(job, 5)
    copied = cli(job, "backfill")
    assert copied.returncode == 0, copied.stderr
    assert "no leases yet" in copied.stderr
    # A Kinesis data stream keeps records for its retention period, not a DynamoDB
    # stream's 24 hours.
    assert (
        "start the replicator within the Kinesis stream's retention period (24 hours unless "
        "raised) of this backfill's start" in copied.stderr
    )
    assert job.converged()


def test_a_kinesis_arn_the_kcl_would_not_read_is_explained_as_run_explains_it(job: Job) -> None:
    """An ARN of a stream in another account than the workers': the KCL would read the
    stream of that name in their own account. backfill listed the ARN's shards and said
    only that the stream was not found; it now says what ``run`` says, and why."""
    arn = _kinesis_stream(job, "us-east-1").replace(":123456789012:", ":210987654321:", 1)
    _read_from_kinesis(job, f"arn: '{arn}'")
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check_source(load_job(job.path))  # what `replicator run` checks first
    explained = str(raised.value)
    assert f"kinesis stream {arn} (source.stream.arn) is not the stream runtime kcl" in explained
    assert "the KCL reads a stream by name, in source.region with the host's account" in explained

    refused = cli(job, "backfill")
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == f"replicator: {explained}"


def test_a_kinesis_arn_of_another_region_is_refused_before_anything_is_read(job: Job) -> None:
    """DynamoDB streams a table only to a Kinesis data stream of its own region: an ARN
    of another region is a job-file error (exit 2, naming the key), before any shard is
    listed or any item copied."""
    arn = _kinesis_stream(job, "us-west-2")
    _read_from_kinesis(job, f"arn: '{arn}'")
    populate(job, 2)
    refused = cli(job, "backfill")
    assert refused.returncode == 2, refused.stderr
    assert "source.stream.arn (line" in refused.stderr
    assert "Kinesis data stream in region us-west-2" in refused.stderr
    for ddb, table in job.destination_clients():
        assert tables.scan_all(ddb, table) == []


def test_skip_handoff_check_copies_without_the_guarantee(job: Job) -> None:
    configure(job, initial_position="LATEST")
    populate(job, 5)
    result = backfill(job, skip_handoff_check=True)
    assert result.complete and result.exit_code == 0
    assert job.converged()


@pytest.mark.parametrize(
    ("policy", "eu_a", "eu_c", "kept", "left"),
    [
        # overwrite only inserts: the newer A stays, and so does the stale C.
        ("overwrite", "newer", "stale", 0, 2),
        # last_writer_wins keeps the newer A and replaces the older C.
        ("last_writer_wins", "newer", "source", 1, 0),
    ],
)
def test_scanned_images_never_overwrite_newer_items(
    job: Job, policy: str, eu_a: str, eu_c: str, kept: int, left: int
) -> None:
    if policy == "overwrite":
        configure(job, policy="overwrite")
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    versions = {
        "source": {"A": item("A", 1, 100), "B": item("B", 1, 100), "C": item("C", 1, 300)},
        "newer": {"A": item("A", 1, 200, note="written by the replicator")},
        "stale": {"C": item("C", 1, 100, note="older")},
    }
    for found in versions["source"].values():
        job.source.put_item(TableName=job.source_table, Item=found)
    eu.put_item(TableName=eu_table, Item=versions["newer"]["A"])
    eu.put_item(TableName=eu_table, Item=versions["stale"]["C"])

    result = backfill(job)

    assert result.complete
    assert (result.overall.kept, result.overall.left, result.overall.equal) == (kept, left, 0)
    assert result.overall.applied == 6 - kept - left
    assert get(eu, eu_table, "A", 1) == versions[eu_a]["A"]
    assert get(eu, eu_table, "B", 1) == versions["source"]["B"]
    assert get(eu, eu_table, "C", 1) == versions[eu_c]["C"]
    for name in "ABC":
        assert get(ap, ap_table, name, 1) == versions["source"][name]


def test_wide_copies_tying_on_the_timestamp_are_settled_by_the_digest(job: Job) -> None:
    """10 items of 303 attributes that the destinations hold with the same updated_at and
    every other value different: each destination ends with the image ranking higher, the
    copy where it ranks above (replaced on the condition that the item is still the one
    read, compared as far as one 4 KB expression holds) and its own item otherwise;
    nothing is dead-lettered."""
    rule = OrderedRule("last_writer_wins", "updated_at", None, numeric_only=False)
    values: dict[str, dict[str, Item]] = {"first": {}, "second": {}}
    for number in range(10):
        for value, found in values.items():
            found[f"w{number}"] = item(f"w{number}", 1, 5, **{f"a{i}": value for i in range(300)})
        job.source.put_item(TableName=job.source_table, Item=values["second"][f"w{number}"])
    for ddb, table in job.destination_clients():
        for found in values["first"].values():
            ddb.put_item(TableName=table, Item=found)

    result = backfill(job)

    assert result.complete and result.overall.dead_lettered == 0
    winners = {
        pk: max(values["first"][pk], values["second"][pk], key=rule.rank) for pk in values["first"]
    }
    kept = sum(winners[pk] is values["first"][pk] for pk in winners)
    assert (result.overall.applied, result.overall.kept) == (2 * (10 - kept), 2 * kept)
    for ddb, table in job.destination_clients():
        for pk, winner in winners.items():
            assert get(ddb, table, pk, 1) == winner


def test_a_copy_of_an_item_deleted_during_the_scan_is_undone(job: Job) -> None:
    """Scan reads X; the source deletes X and the replicator deletes it at the destinations;
    then the backfill writes X: it must not stay there."""
    populate(job, 30)
    deleted: list[Item] = []

    def delete_one_meanwhile(segment: int, items: list[Item]) -> None:
        if deleted or not items:
            return
        victim = {"pk": items[0]["pk"], "sk": items[0]["sk"]}
        deleted.append(victim)
        job.source.delete_item(TableName=job.source_table, Key=victim)
        for ddb, table in job.destination_clients():
            ddb.delete_item(TableName=table, Key=victim)

    result = backfill(
        job, BackfillHooks(page_scanned=delete_one_meanwhile), segments=1, page_size=10
    )

    assert result.complete
    assert result.overall.undone == 2  # one copy per destination
    for ddb, table in job.destination_clients():
        assert (
            ddb.get_item(TableName=table, Key=deleted[0], ConsistentRead=True).get("Item") is None
        )
    assert job.converged()


def test_under_ttl_deletes_skip_a_copy_of_an_item_the_sources_ttl_deleted_stays(
    job: Job,
) -> None:
    """eu holds an older image of X; the scan reads X, already expired; the source's TTL
    deletes X, which the replicator skips (ttl_deletes: skip); the backfill then writes
    X. Undoing the copy would leave eu without the item the job keeps there."""
    job.path.write_text(job.path.read_text() + "ttl_deletes: skip\n")
    job.source.update_time_to_live(
        TableName=job.source_table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    expires = {"N": str(int(time.time()) - 3600)}
    older = {**item("x", 1, 100), "expires": expires}
    newer = {**item("x", 1, 200), "expires": expires}
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    eu.put_item(TableName=eu_table, Item=older)
    job.source.put_item(TableName=job.source_table, Item=newer)

    def expired_meanwhile(segment: int, items: list[Item]) -> None:
        if items:
            job.source.delete_item(
                TableName=job.source_table, Key={"pk": {"S": "x"}, "sk": {"N": "1"}}
            )

    result = backfill(job, BackfillHooks(page_scanned=expired_meanwhile), segments=1)

    assert result.complete
    assert (result.overall.applied, result.overall.undone) == (2, 0)
    for ddb, table in ((eu, eu_table), (ap, ap_table)):
        assert get(ddb, table, "x", 1) == newer


def test_under_ttl_deletes_skip_a_copy_whose_expiry_the_ttl_ignores_is_undone(
    job: Job,
) -> None:
    """The scan reads X, whose expiry is 0 (never expires: DynamoDB's TTL ignores it); X
    is then deleted at the source, by someone, not by its TTL: the copy is undone."""
    job.path.write_text(job.path.read_text() + "ttl_deletes: skip\n")
    job.source.update_time_to_live(
        TableName=job.source_table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    never = {**item("x", 1, 200), "expires": {"N": "0"}}
    job.source.put_item(TableName=job.source_table, Item=never)

    def deleted_meanwhile(segment: int, items: list[Item]) -> None:
        if items:
            job.source.delete_item(TableName=job.source_table, Key=key("x", 1))

    result = backfill(job, BackfillHooks(page_scanned=deleted_meanwhile), segments=1)

    assert result.complete
    assert (result.overall.applied, result.overall.undone) == (2, 2)
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    assert get(eu, eu_table, "x", 1) is None
    assert get(ap, ap_table, "x", 1) is None


def test_the_undo_never_removes_a_newer_item_at_the_destination(job: Job) -> None:
    """The source deleted X after the scan read it, but the destination meanwhile holds
    another image of X (the replicator's): the conditional delete leaves it alone."""
    populate(job, 10)
    newer: list[Item] = []

    def delete_at_source(segment: int, items: list[Item]) -> None:
        if not newer:
            victim = dict(items[0])
            newer.append(victim)
            job.source.delete_item(
                TableName=job.source_table, Key={"pk": victim["pk"], "sk": victim["sk"]}
            )

    def replicator_writes_newer(segment: int, items: list[Item]) -> None:
        (eu, eu_table), _ = job.destination_clients()
        changed = {**newer[0], "updated_at": {"N": "99999999999999"}, "name": {"S": "newer"}}
        eu.put_item(TableName=eu_table, Item=changed)
        newer[0] = changed

    result = backfill(
        job,
        BackfillHooks(page_scanned=delete_at_source, page_written=replicator_writes_newer),
        segments=1,
        page_size=100,
    )

    assert result.overall.undone == 1  # only at ap, where the copy was still the written image
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    victim_key = {"pk": newer[0]["pk"], "sk": newer[0]["sk"]}
    assert eu.get_item(TableName=eu_table, Key=victim_key, ConsistentRead=True)["Item"] == newer[0]
    assert ap.get_item(TableName=ap_table, Key=victim_key, ConsistentRead=True).get("Item") is None


def _shard(job: Job, stream_arn: str) -> str:
    from tests.support.aws import client

    streams = client("dynamodbstreams", job.source_region, job.endpoint)
    shard_id: str = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0][
        "ShardId"
    ]
    return shard_id


def _plan(
    rule: Any, new_image: Item | None, expected: Item | None, existing: Item | None = None
) -> Any:
    change = synthetic_change(
        "backfill", key("A", 1), "us-east-1", new_image=new_image, expected=expected
    )
    return SnapshotRule(rule).plan(change, existing)


def test_snapshot_rule_keeps_read_images_from_overwriting_newer_items() -> None:
    overwrite = rule_for(ConflictConfig(), None)
    lww = rule_for(
        ConflictConfig(policy="last_writer_wins", timestamp_attribute="updated_at"), None
    )
    scanned, at_destination = item("A", 1, 100), item("A", 1, 50, note="old")

    insert = _plan(overwrite, scanned, None)
    assert (insert.op, insert.condition, insert.names) == (
        "put",
        "attribute_not_exists(#k)",
        {"#k": "pk"},
    )
    replace = _plan(overwrite, scanned, at_destination)
    assert replace.condition == "#0=:0 AND #1=:1 AND #2=:2 AND #3=:3"
    # As read, what the write changes first (what a wide item compares before the rest).
    assert list(replace.names.values()) == ["note", "updated_at", "pk", "sk"]
    assert replace.values[":0"] == {"S": "old"}

    ordered = _plan(lww, scanned, None)
    assert ordered.condition == "attribute_not_exists(#c) OR #c < :c"  # ties: reconsider()
    unordered = _plan(lww, {"pk": {"S": "A"}, "sk": {"N": "1"}}, None)
    assert unordered.condition == "attribute_not_exists(#k)"  # no timestamp: insert only

    delete = _plan(lww, None, at_destination)
    assert delete.op == "delete" and delete.key == key("A", 1)
    assert delete.condition is not None and delete.condition.count("=") == 4

    calls: list[Item | None] = []

    def resolver(change: Any, existing: Item | None) -> bool:
        calls.append(existing)
        return True

    custom = CustomRule(resolver)
    assert isinstance(_plan(custom, scanned, None, existing=at_destination), Skip)
    assert isinstance(_plan(custom, scanned, scanned, existing=at_destination), Skip)
    assert calls == []  # the resolver never sees an item the command did not expect
    guarded = _plan(custom, scanned, at_destination, existing=at_destination)
    assert guarded.op == "put" and calls == [at_destination]
    assert _plan(custom, scanned, None, existing=None).condition == "attribute_not_exists(#k)"


def test_a_commands_removal_under_custom_is_the_resolvers_to_decide() -> None:
    """A copy undone, or an extra item repaired, is a delete the resolver is asked about
    as it is about the stream's: a soft-delete resolver leaves its marker (redrive
    removed the marker a replayed put had replaced, and left no item)."""
    at_destination = item("A", 1, 50)
    marker = {**key("A", 1), "deleted": {"BOOL": True}}
    seen: list[tuple[str, Item | None, Item | None]] = []

    def soft_delete(change: Any, existing: Item | None) -> Any:
        seen.append((change.event.value, change.old_image, existing))
        return marker if change.event.value == "REMOVE" else True

    removal = _plan(CustomRule(soft_delete), None, at_destination, existing=at_destination)
    assert (removal.op, removal.item) == ("put", marker)
    # While the destination holds exactly the item read (every attribute compared).
    assert sorted(removal.names.values()) == ["pk", "sk", "updated_at"]
    assert seen == [("REMOVE", at_destination, at_destination)]
    # Kept by the resolver: nothing is written, the command reports it kept.
    keeping = CustomRule(lambda change, existing: False)
    assert isinstance(_plan(keeping, None, at_destination, existing=at_destination), Skip)
    # An item changed since the command read it: the resolver is not asked.
    assert isinstance(_plan(CustomRule(soft_delete), None, at_destination, existing=marker), Skip)
    assert len(seen) == 1


def test_ctrl_c_stops_after_the_pages_in_hand_and_the_run_resumes(job: Job) -> None:
    populate(job, 150)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "replicator", "backfill", "--config", str(job.path)),
            *("--segments", "2", "--page-size", "5", "--read-rate", "40"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: _scanned(job) >= 20, 30, "the backfill to save progress", interval=0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert "stopped before the end (interrupted)" in out
    stopped_at = _scanned(job)
    assert stopped_at < 150

    resumed = cli(job, "backfill")
    assert resumed.returncode == 0, resumed.stderr
    assert _scanned(job) == 150
    assert job.converged()


def _scanned(job: Job) -> int:
    try:
        rows = state_rows(job)
    except job.source.exceptions.ResourceNotFoundException:
        return 0
    return sum(int(row.get("scanned", {}).get("N", "0")) for n, row in rows.items() if n >= 0)


def test_a_resumed_runs_progress_line_gives_this_runs_rate_and_says_which_count_is_which(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from replicator.tools import progress

    clock = iter([100.0, 110.0])
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    applied = {"applied_this_run": 50}
    report = progress.ProgressReport(
        "backfill t", 1200, details=lambda: applied, interval_s=3600, stream=io.StringIO(), done=800
    )
    with capture_logs() as logs, report:
        report.advance(50)

    (line,) = logs
    assert line == {
        "event": "backfill t",
        "log_level": "info",
        "items": 850,
        "of_about": 1200,
        "items_this_run": 50,
        "elapsed_s": 10.0,
        "items_per_s": 5.0,
        "applied_this_run": 50,
    }


# A destination refuses a write this many times in a row, about a second apart, before the
# command stops: a streak of a few seconds for each write, were they not given up at once.
REFUSING_WRITER = (
    "writer: {max_in_flight: 16, access_denied_limit: 5, "
    "retry: {base_delay_ms: 1000, max_delay_ms: 1000}}"
)


def through_proxy(job: Job, table: str, proxy: FaultProxy) -> None:
    """Point the job's destination ``table`` at ``proxy`` and use REFUSING_WRITER."""
    text = job.path.read_text().replace(
        f"table: {table}, endpoint_url: '{job.endpoint}'",
        f"table: {table}, endpoint_url: '{proxy.url}'",
    )
    job.path.write_text(text.replace("writer: {max_in_flight: 16}", REFUSING_WRITER))


def refused_by_ap(job: Job, *args: str) -> tuple[str, FaultProxy]:
    """``backfill`` with ap refusing every write (access denied): its exit 3 asserted,
    its error's line, and the proxy that refused (stopped)."""
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.DENY, operations=frozenset({"PutItem"})))
        through_proxy(job, f"{job.name}-ap", proxy)
        result = cli(job, "backfill", "--skip-handoff-check", *args)
    finally:
        proxy.stop()
    assert result.returncode == 3, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("replicator:")]
    return line, proxy


def test_a_destination_that_refuses_every_write_stops_the_backfill_at_once(job: Job) -> None:
    """The first write to reach the refusal limit ends the run (exit 3): the hundreds of
    writes queued behind it are given up, not each retried through its own streak."""
    populate(job, 800)
    line, proxy = refused_by_ap(job, "--page-size", "200")
    assert f"destination ap-southeast-2/{job.name}-ap refused 5 writes in a row" in line, line
    assert "progress is saved" in line
    assert "dead-lettered" not in line  # none was
    # a few seconds for the streak; 800 streaks 8 at a time would take minutes
    assert proxy.counts("PutItem")["denied"] < 100, proxy.counts("PutItem")


def test_a_failed_backfills_line_says_what_it_dead_lettered(job: Job) -> None:
    """A failed run prints its error's line and no summary: letters it stored (here for
    an item last_writer_wins cannot order, before ap refused the rest) went unmentioned."""
    one_unorderable_and_good_items(job, 10)
    line, _ = refused_by_ap(job, "--segments", "1")
    letters = FileDeadLetters(job.dead_letters)
    assert letters.count() == 2  # the bad item, at each destination
    assert line.endswith(
        "; progress is saved: fix it and run the backfill again to continue (this run "
        f"dead-lettered 2 writes to {letters.description}: run `replicator redrive` once "
        "their cause is fixed)"
    ), line


def test_a_destination_that_stops_answering_stops_the_backfill(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ap answers the checks but none of the writes: once a write has had no answer for
    the tools' bound, the run ends with one error naming ap and its endpoint (exit 3),
    instead of retrying for ever."""
    monkeypatch.setattr(snapshot, "UNANSWERED_FOR_S", 3.0)
    populate(job, 50)
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.BLACK_HOLE, operations=frozenset({"PutItem"})))
        through_proxy(job, f"{job.name}-ap", proxy)
        job.path.write_text(
            job.path.read_text().replace(
                REFUSING_WRITER,
                "writer: {max_in_flight: 16, connect_timeout_s: 1, read_timeout_s: 1}",
            )
        )
        runner = Backfill(load_job(job.path), BackfillOptions(skip_handoff_check=True))
        with pytest.raises(EnvironmentProblem) as raised:
            run_within(runner, 60)
    finally:
        proxy.stop()
    message = str(raised.value)
    assert f"destination ap-southeast-2/{job.name}-ap" in message, message
    assert "did not answer for 3 s" in message and proxy.url in message, message
    assert message.endswith("progress is saved: fix it and run the backfill again to continue")


def test_one_ctrl_c_stops_a_backfill_whose_writes_a_destination_keeps_failing(
    job: Job,
) -> None:
    """ap answers every write with a 500, which is waited out as an outage: a first
    Ctrl-C waited for the writes in hand without end (only a second stopped it). They are
    given up after the grace, as a second Ctrl-C gives them up, and their pages are not
    saved: the next run copies them again."""
    populate(job, 50)
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.SERVER_ERROR, operations=frozenset({"PutItem"})))
        through_proxy(job, f"{job.name}-ap", proxy)
        result = interrupted_once(
            Backfill(load_job(job.path), BackfillOptions(skip_handoff_check=True)),
            lambda: proxy.counts("PutItem")["server_error"] >= 3,
            60 + INTERRUPT_GRACE_S,
        )
    finally:
        proxy.stop()
    assert result.stopped == "interrupted" and not result.complete
    assert result.exit_code == 1


def one_unorderable_and_good_items(job: Job, good: int) -> None:
    """In the source: an item last_writer_wins cannot order (``updated_at`` true), which
    every destination's write dead-letters at once, and ``good`` items after it."""
    job.source.put_item(
        TableName=job.source_table, Item=item("bad", 1, 5) | {"updated_at": {"BOOL": True}}
    )
    for sk in range(2, 2 + good):
        job.source.put_item(TableName=job.source_table, Item=item("good", sk, 100 + sk))


def test_letters_stored_for_a_page_a_second_ctrl_c_gave_up_are_counted(job: Job) -> None:
    """An item last_writer_wins cannot order is dead-lettered at once; the page's other
    writes to ap get no answer, and a second Ctrl-C gives them up: the page is not saved,
    and the summary said "dead-lettered: 0" with the letters in the file. They are
    counted apart, and the summary says where they are."""
    one_unorderable_and_good_items(job, 6)
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.BLACK_HOLE, operations=frozenset({"PutItem"})))
        through_proxy(job, f"{job.name}-ap", proxy)
        runner = Backfill(load_job(job.path), BackfillOptions(skip_handoff_check=True, segments=1))
        letters = FileDeadLetters(job.dead_letters)

        def lettered_and_waiting() -> bool:
            return letters.count() == 2 and proxy.counts("PutItem")["black_holed"] >= 1

        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(runner.run)
            try:
                wait_until(lettered_and_waiting, 60, "the letters and a write in hand")
            finally:
                runner.interrupt()
                runner.interrupt()  # the second: the writes in hand are given up
            result = running.result(timeout=60)
    finally:
        proxy.stop()

    assert result.stopped == "interrupted" and not result.complete
    assert result.exit_code == 1
    assert (result.overall.dead_lettered, result.unsaved_dead_lettered) == (0, 2)
    summary = result.summary()
    assert (
        "  dead-lettered:      0 (and 2 in pages not finished, which the next run copies again)"
    ) in summary.splitlines(), summary
    assert f"  2 writes were dead-lettered to {letters.description}: fix the cause" in summary
    assert {letter.reason for letter in letters.letters()} == {"unplannable"}


def test_letters_of_a_page_whose_check_a_ctrl_c_ended_are_counted(job: Job) -> None:
    """The page's writes settled (one dead-lettered), then the source was read again for
    the resurrection check, throttled, and not retried after the Ctrl-C: the page is not
    saved, and its letters were in neither count."""
    one_unorderable_and_good_items(job, 3)
    proxy = FaultProxy(job.endpoint).start()
    runners: list[Backfill] = []

    def page_written(segment: int, items: list[Item]) -> None:
        runners[0].interrupt()  # the Ctrl-C, once the page's writes have settled
        proxy.set(Mode(Fault.THROTTLE, operations=frozenset({"BatchGetItem"})))

    try:
        job.path.write_text(
            job.path.read_text().replace(
                f"table: {job.source_table}, endpoint_url: '{job.endpoint}'",
                f"table: {job.source_table}, endpoint_url: '{proxy.url}'",
            )
        )
        runners.append(
            Backfill(
                load_job(job.path),
                BackfillOptions(skip_handoff_check=True, segments=1),
                hooks=BackfillHooks(page_written=page_written),
            )
        )
        result = run_within(runners[0], 60)
    finally:
        proxy.stop()

    assert proxy.counts("BatchGetItem")["throttled"] >= 1
    assert result.stopped == "interrupted" and not result.complete
    letters = FileDeadLetters(job.dead_letters)
    assert letters.count() == 2  # the bad item, for each destination
    assert (result.overall.dead_lettered, result.unsaved_dead_lettered) == (0, 2)
    assert f"  2 writes were dead-lettered to {letters.description}" in result.summary()


def test_a_backfill_of_many_segments_starts_at_once_and_stops_at_one_ctrl_c(job: Job) -> None:
    """Every segment's progress row was written before the first Scan (200,000 writes for
    ``--segments 200000``, Ctrl-C unheard meanwhile), and every segment was then queued to
    the scan threads at once, each still reading a page after a Ctrl-C. Rows are written
    as segments are read now, and no segment starts after the Ctrl-C."""
    populate(job, 20)
    runner = Backfill(
        load_job(job.path),
        BackfillOptions(segments=200_000, threads=2, skip_handoff_check=True),
    )

    def segments_read() -> int:
        try:
            return len(state_rows(job)) - 1  # the run's own row
        except job.source.exceptions.ResourceNotFoundException:  # not created yet
            return 0

    result = interrupted_once(runner, lambda: segments_read() >= 3, 60)
    assert result.stopped == "interrupted" and not result.complete
    assert result.exit_code == 1
    rows = state_rows(job)
    assert rows[-1]["total_segments"] == {"N": "200000"}
    assert len(rows) < 1000, len(rows)  # the segments read, not every segment


def test_with_tombstones_a_copy_ranking_at_or_below_a_delete_is_not_brought_back(
    job: Job,
) -> None:
    """Active-active with tombstones: the destination deleted c1 at rank 100 (its
    tombstone says so) and the source still holds c1 at rank 50. The backfill must not
    bring the deleted item back (the stream writers would not): kept by the policy, and
    verify then reports it as deleted at the destination. An image ranking above the
    delete is copied."""
    job.extra = (
        "loop_prevention: {origin_attribute: origin_region}\nactive_active: {tombstones: true}\n"
    )
    job.write()
    resolved = load_job(job.path)
    prepare_tombstones(resolved)
    rule = rule_for(resolved.job.conflict, "origin_region")
    assert isinstance(rule, OrderedRule)
    below = item("c1", 1, 50, origin_region="us-east-1")
    above = item("c2", 1, 150, origin_region="us-east-1")
    for found in (below, above):
        job.source.put_item(TableName=job.source_table, Item=found)
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    for name in ("c1", "c2"):  # deleted at eu-west-1 at rank 100
        tombstone = tombstone_of(
            item(name, 1, 100, origin_region="eu-west-1"),
            key(name, 1),
            rule.fields,
            deleted_in="eu-west-1",
            written_by="eu-west-1",
            deleted_at_ms=1,
            expires_at=int(time.time()) + 3600,
        )
        TombstoneTable(eu, f"{eu_table}-tombstones", "eu-west-1", 3600).record(tombstone)

    result = backfill(job, skip_handoff_check=True)

    assert result.complete, result.summary()
    assert (result.overall.applied, result.overall.kept) == (3, 1), result.summary()
    assert get(eu, eu_table, "c1", 1) is None
    assert get(eu, eu_table, "c2", 1) == above
    assert get(ap, ap_table, "c1", 1) == below
    report = Verify(load_job(job.path), VerifyOptions(recheck=1, recheck_pause_s=0)).run()
    assert [(f.destination, f.kind) for f in report.findings] == [(eu_label(job), "deleted")]
    assert not TombstoneTable(ap, f"{ap_table}-tombstones", "ap-southeast-2", 3600).get(
        key("c1", 1)
    )


def eu_label(job: Job) -> str:
    return load_job(job.path).job.destinations[0].label


@pytest.mark.parametrize(
    ("policy", "line"),
    [
        ("last_writer_wins", "  already equal:      60 (the destination held the same item)"),
        ("version", "  already equal:      60 (the destination held the same item)"),
        (
            "overwrite",
            "  left as they were:  60 (existing items a copy does not overwrite: under overwrite",
        ),
    ],
)
def test_the_summary_tells_equal_items_from_kept_and_from_items_left_as_they_were(
    job: Job, policy: str, line: str
) -> None:
    """A backfill onto destinations that already hold the source's items: under an
    ordered policy they are already equal (not kept as "newer"); under overwrite they are
    left as they were, whatever they hold, and the summary points to verify --repair."""
    if policy == "version":
        job.path.write_text(
            job.path.read_text().replace(
                LWW, "conflict: {policy: version, version_attribute: updated_at}"
            )
        )
    elif policy == "overwrite":
        configure(job, policy="overwrite")
    populate(job, 30)
    for ddb, table in job.destination_clients():
        for found in tables.scan_all(job.source, job.source_table):
            ddb.put_item(TableName=table, Item=found)

    result = cli(job, "backfill", "--skip-handoff-check")

    assert result.returncode == 0, result.stdout + result.stderr
    assert line in result.stdout, result.stdout
    assert "  writes applied:     0\n" in result.stdout
    counts = {
        text.split(":")[0].strip(): text.split(":")[1].split()[0]
        for text in result.stdout.splitlines()[1:6]
    }
    ordered = policy != "overwrite"
    assert counts["already equal"] == ("60" if ordered else "0"), result.stdout
    assert counts["kept by the policy"] == "0", result.stdout
    assert counts["left as they were"] == ("0" if ordered else "60"), result.stdout


def test_a_lease_checkpoint_that_is_not_a_sequence_number_is_named_as_such(job: Job) -> None:
    populate(job, 5)
    stream = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    shard_id = _shard(job, stream)
    leases = LeaseTable(job.source, job.name, owner="test")
    leases.ensure_exists()
    leases.create(shard_id, "LATEST", [])
    lease = leases.get(shard_id)
    assert lease is not None
    leases.take(lease)
    leases.checkpoint(lease, "49999999999999999999")  # 20 digits: too short to be one

    refused = cli(job, "backfill")

    assert refused.returncode == 3, refused.stdout + refused.stderr
    (line,) = [text for text in refused.stderr.splitlines() if text.startswith("replicator:")]
    assert f"shard {shard_id}'s checkpoint '49999999999999999999'" in line, line
    assert f"in the lease table {job.name} is not a valid sequence number" in line, line
    assert "cannot reach" not in line


@pytest.mark.parametrize("table", ["other key", "not leases"])
def test_a_task_named_table_that_is_no_lease_table_is_refused_as_run_refuses_it(
    job: Job, table: str
) -> None:
    """The hand-off check read such a table as "no leases yet" and copied (exit 0) for a
    job whose ``run`` refuses to start (exit 3)."""
    populate(job, 3)
    if table == "other key":
        job.source.create_table(
            TableName=job.name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    else:
        job.source.create_table(
            TableName=job.name,
            KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        job.source.put_item(TableName=job.name, Item={"leaseKey": {"S": "an application's"}})

    refused = cli(job, "backfill")

    assert refused.returncode == 3, refused.stdout + refused.stderr
    (line,) = [text for text in refused.stderr.splitlines() if text.startswith("replicator:")]
    assert f"lease table {job.name}" in line, line
    said = "exists with key schema" if table == "other key" else "holds items that are not leases"
    assert said in line, line
    assert f"{job.name}-backfill" not in job.source.list_tables()["TableNames"]


class _Crash(Exception):
    pass


class _CrashingClient:
    """A DynamoDB client whose writes fail from the ``after``-th on (a process that died)."""

    def __init__(self, client: Any, after: int) -> None:
        self._client = client
        self._left = after

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self._client, name)
        if name not in ("put_item", "delete_item", "update_item"):
            return operation

        def write(**kwargs: Any) -> Any:
            if self._left <= 0:
                raise _Crash(name)
            self._left -= 1
            return operation(**kwargs)

        return write


@pytest.mark.parametrize(("before", "after"), [(4, 8), (8, 4)])
def test_a_restart_that_crashes_part_way_never_leaves_progress_of_another_run(
    moto_endpoint: str, unique: Any, before: int, after: int
) -> None:
    """``--restart`` over a finished run, killed after each of its writes in turn: the
    next run resumes either the stored run, each segment as it left it or cleared, or
    the new run with every segment cleared; never the new run's segment count beside the
    old run's done segments (which would skip what those segments hold under the new
    count)."""
    from replicator.tools.backfill_state import BackfillState
    from replicator.tools.tables import TableRef
    from tests.support.aws import client

    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    owner = "run"  # the same process id each time: a crashed run's heartbeat is not in the way
    plan_args = {"source": "us-east-1/src", "destinations": ["eu-west-1/dst"]}
    writes = before + 1  # the old run's segments cleared, then the run row
    for crash_after in range(writes):
        ref = TableRef("progress", "us-east-1", unique("progress"), moto_endpoint, ddb)
        state = BackfillState(ref, owner)
        state.ensure_exists()
        old = state.begin(**plan_args, segments=before, default_segments=4, restart=True)
        for segment in old.segments:
            segment.done, segment.scanned = True, 10
            state.save(segment)
        crashing = BackfillState(replace(ref, client=_CrashingClient(ddb, crash_after)), owner)
        with pytest.raises(_Crash):
            crashing.begin(**plan_args, segments=after, default_segments=4, restart=True)

        resumed = BackfillState(ref, owner).begin(
            **plan_args, segments=None, default_segments=4, restart=False
        )

        cleared = [not (s.done or s.scanned or s.last_key) for s in resumed.segments]
        as_left = [s.done and s.scanned == 10 for s in resumed.segments]
        if resumed.total_segments == before:  # the stored run: its own progress, or none
            assert all(c or o for c, o in zip(cleared, as_left, strict=True)), crash_after
        else:  # the new run: nothing of the old one's progress
            assert all(cleared), (crash_after, resumed)


def test_a_run_beats_its_heartbeat_between_pages_and_stops_once_taken_over(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat was beaten only as a page's progress was saved: a page taking longer
    than 60 s to copy (a low --read-rate) left it stale, a second backfill of the job
    took the run, and the first went on copying with a warning."""
    monkeypatch.setattr(backfill_state, "_HEARTBEAT_EVERY_S", 0.05)
    resolved = load_job(job.path)
    ref = replace(
        source_ref(resolved), table=backfill_state.state_table_name(job.name), label="progress"
    )
    first = backfill_state.BackfillState(ref, owner="first")
    first.ensure_exists()
    first.begin(source="s", destinations=["d"], segments=1, default_segments=1, restart=False)
    lost: list[str] = []
    first.keep_alive(lost.append)
    try:

        def heartbeat() -> int:
            return int(state_rows(job)[backfill_state.RUN_ROW]["heartbeat"]["N"])

        beaten = heartbeat()
        wait_until(lambda: heartbeat() > beaten, 30, "a beat with no page saved")
        # Another backfill takes the run over (as one would once the heartbeat is stale).
        row = state_rows(job)[backfill_state.RUN_ROW]
        job.source.put_item(TableName=ref.table, Item={**row, "owner": {"S": "second"}})
        wait_until(lambda: bool(lost), 30, "the first run to be told")
    finally:
        first.finish(complete=False)
    (said,) = lost
    assert said.startswith(f"another backfill of this job has taken the run over ({ref.table})")
    assert state_rows(job)[backfill_state.RUN_ROW]["owner"]["S"] == "second"
