"""End to end: a replicator run against moto records every lost conflict exactly once
(a burst of thousands as well), ``replicator conflicts`` finds them by key,
``--restore`` puts a loser back and records that, and a conflict-log outage neither
stops replication for longer than ``retry_for_s`` nor goes uncounted."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from replicator.cli import cli
from replicator.config.loader import load_job
from replicator.conflictlog.base import Selection
from replicator.conflictlog.entry import ConflictEntry
from replicator.conflictlog.reader import read_entries
from replicator.conflictlog.targets import conflict_log_target
from replicator.demo import tables
from replicator.demo.workload import demo_item
from replicator.items import Item, item_to_wire
from tests.support.e2e import Job, children_of, stop, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.iam import CallLog, ungranted
from tests.support.metrics import logged_metrics_port, scrape, total

LOSER_MS = 1_000_000_000_000  # what the source writes: older ...
WINNER_MS = 2_000_000_000_000  # ... than what the destination already holds


def exact(item: Item | dict[str, Any] | None, *, stored: bool = False) -> bytes:
    """An image as bytes (attribute names, types and values), to compare byte for byte."""
    assert item is not None
    wire = item if stored else item_to_wire(item)  # type: ignore[arg-type]
    return json.dumps(wire, sort_keys=True, ensure_ascii=False).encode()


class Workload:
    """Items written so that which change loses at the destination is known in advance."""

    def __init__(self, job: Job, seed: int) -> None:
        self.job = job
        self.rng = random.Random(seed)
        self.destination, self.table = job.destination_clients()[0]
        self.losers: dict[str, Item] = {}
        self.winners: dict[str, Item] = {}
        self.applied: dict[str, Item] = {}

    def item(self, pk: str, sk: int, origin: str, stamp: int) -> Item:
        item: Item = demo_item(self.rng, pk, sk, origin)
        item["updated_at"] = {"N": str(stamp)}
        return item

    def prepare_winners(self, prefix: str, count: int) -> None:
        """Items the destination holds, newer than anything the source will write."""
        for index in range(count):
            winner = self.item(f"{prefix}-{index}", index, "eu-west-1", WINNER_MS + index)
            self.destination.put_item(TableName=self.table, Item=winner)
            self.winners[f"{prefix}-{index}"] = winner

    def write_losers(self, prefix: str) -> None:
        """One older put per prepared item: each loses its conflict."""
        for pk, winner in self.winners.items():
            if pk.startswith(prefix + "-") and pk not in self.losers:
                sk = int(winner["sk"]["N"])
                loser = self.item(pk, sk, "us-east-1", LOSER_MS + sk)
                self.job.source.put_item(TableName=self.job.source_table, Item=loser)
                self.losers[pk] = loser

    def write_plain(self, prefix: str, count: int) -> None:
        """Items only the source has: applied, no conflict."""
        for index in range(count):
            item = self.item(f"{prefix}-{index}", index, "us-east-1", LOSER_MS)
            self.job.source.put_item(TableName=self.job.source_table, Item=item)
            self.applied[f"{prefix}-{index}"] = item

    def destination_as_expected(self) -> bool:
        found = {item["pk"]["S"]: item for item in tables.scan_all(self.destination, self.table)}
        expected = {**self.winners, **self.applied}
        return {pk: exact(item) for pk, item in found.items()} == {
            pk: exact(item) for pk, item in expected.items()
        }


def checkpoint_at_the_end(job: Job) -> bool:
    rows = job.lease_rows()
    last = job.last_stream_sequence()
    return bool(rows) and rows[0].get("checkpoint", {}).get("S") == last


def entries_of(job: Job) -> list[ConflictEntry]:
    return read_entries(conflict_log_target(load_job(job.path)), Selection())


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def audited_job(endpoint: str, name: str, tmp_path: Path, kind: str, options: str = "") -> Job:
    """A job with one destination and a conflict log of ``kind``, dynamodb or file, with
    ``options`` (``key: value, ...``) besides."""
    log_file = tmp_path / "conflicts" / "log.jsonl"
    where = f"path: '{log_file}'" if kind == "file" else ""
    settings = ", ".join(part for part in (f"kind: {kind}", where, options) if part)
    return Job(
        endpoint,
        name,
        tmp_path,
        destinations=[("eu-west-1", f"{name}-eu")],
        extra=f"conflict_log: {{{settings}}}\n",
    )


def run_in_an_outage(
    work: Workload, proxy: FaultProxy, runtimes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the job, take its conflict log down (``proxy`` refuses), then lose the
    conflicts prepared as ``down`` and apply 10 new items: the runtime and its metrics
    port, once the destination holds what it should."""
    runtime = work.job.start()
    runtimes.append(runtime)
    port = logged_metrics_port(tmp_path / "runtime.log")  # the table exists by now
    proxy.refuse()
    work.write_losers("down")
    work.write_plain("n", 10)  # after the losers in the stream
    wait_until(work.destination_as_expected, 60, "replication to go on during the outage")
    return runtime, port


@pytest.fixture
def runtimes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)


@pytest.mark.parametrize("kind", ["dynamodb", "file"])
def test_every_lost_conflict_is_recorded_once_found_by_key_and_restorable(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    runtimes: list[subprocess.Popen[bytes]],
    kind: str,
    call_log: CallLog,
) -> None:
    job = audited_job(moto_endpoint, unique("audit"), tmp_path, kind)
    name = job.name
    work = Workload(job, seed=19)
    work.prepare_winners("c", 6)
    work.prepare_winners("d", 1)
    runtime = job.start(env={"AWS_ACCESS_KEY_ID": "AUDITRUN"})
    runtimes.append(runtime)
    port = logged_metrics_port(tmp_path / "runtime.log")
    work.write_losers("c")
    work.write_plain("n", 8)
    work.write_losers("d")
    # The put to d-0 has lost; now the source deletes d-0, and the delete loses as well.
    wait_until(
        lambda: any(e.key["pk"]["S"] == "d-0" for e in entries_of(job)), 60, "d-0's put to lose"
    )
    job.source.delete_item(TableName=job.source_table, Key={"pk": {"S": "d-0"}, "sk": {"N": "0"}})
    expected = 6 + 2
    wait_until(lambda: len(entries_of(job)) == expected, 60, f"{expected} conflict entries")
    wait_until(work.destination_as_expected, 60, "the destination to keep its winners")
    wait_until(lambda: checkpoint_at_the_end(job), 60, "the checkpoint to reach the end")
    samples = scrape(port)
    assert total(samples, "replicator_writes_total", outcome="conflict_lost") == expected
    assert total(samples, "replicator_conflict_log_written_total") == expected
    assert total(samples, "replicator_conflict_log_dropped_total") == 0
    assert stop(runtime) == 0
    # Each call the job made is one the documented least-privilege policy grants.
    calls = call_log.calls("AUDITRUN")
    assert any(call.action == "GetRecords" for call in calls)  # recorded
    names = {job.source_table: "orders", f"{name}-eu": "orders", name: "TASK"}
    assert ungranted(calls, {"us-east-1": "us-east-1"}, names, job.source_table) == []

    entries = entries_of(job)
    assert len(entries) == len({e.id for e in entries}) == expected
    by_key: dict[str, list[ConflictEntry]] = {}
    for entry in entries:
        by_key.setdefault(entry.key["pk"]["S"], []).append(entry)
    assert sorted(by_key) == sorted(work.winners)
    for pk, found in by_key.items():
        assert [e.op for e in sorted(found, key=lambda e: int(e.sequence_number))] == (
            ["put", "delete"] if pk == "d-0" else ["put"]
        )
        for entry in found:
            # A lost put's image is what it would have written; a lost delete's, what it
            # deleted at the source: here the same losing put. Both byte for byte.
            assert exact(entry.losing_image, stored=True) == exact(work.losers[pk]), pk
            assert exact(entry.winning_image, stored=True) == exact(work.winners[pk]), pk
            assert entry.winning_rank and entry.losing_rank
            assert entry.losing_rank["value"] == work.losers[pk]["updated_at"]
            assert entry.winning_rank["value"] == work.winners[pk]["updated_at"]
            assert entry.destination == f"eu-west-1/{name}-eu"
            assert entry.policy == "last_writer_wins" and entry.write_back is False

    # replicator conflicts --key finds an item's whole history.
    found = invoke("conflicts", "-c", str(job.path), "--key", "pk=S:d-0 sk=N:0", "--format", "json")
    assert found.exit_code == 0, found.output
    listed = json.loads(found.stdout)
    assert sorted(e["op"] for e in listed["entries"]) == ["delete", "put"]
    assert listed["summary"]["lost_conflicts"] == 2
    table = invoke("conflicts", "-c", str(job.path))
    assert table.exit_code == 0, table.output
    assert f"{expected} lost conflicts, 0 restores" in table.stdout
    assert f"eu-west-1/{name}-eu: {expected}" in table.stdout

    # --restore writes the loser back where it lost, and records that it did.
    (c0,) = by_key["c-0"]
    restored = invoke("conflicts", "-c", str(job.path), "--restore", c0.id)
    assert restored.exit_code == 0, restored.output
    assert f"restored entry {c0.id}" in restored.stdout
    held = work.destination.get_item(
        TableName=work.table, Key={"pk": {"S": "c-0"}, "sk": {"N": "0"}}, ConsistentRead=True
    )["Item"]
    assert exact(held) == exact(work.losers["c-0"])
    after = invoke("conflicts", "-c", str(job.path), "--key", "pk=S:c-0 sk=N:0", "--format", "json")
    history = json.loads(after.stdout)["entries"]
    (record,) = [e for e in history if e["kind"] == "restore"]
    assert record["restored_entry"] == c0.id
    assert exact(record["losing_image"], stored=True) == exact(work.losers["c-0"])
    assert [e["restored_by"] for e in history if e["kind"] == "conflict"] == [record["id"]]
    # Again: the destination holds the loser already; nothing is written or recorded.
    again = invoke("conflicts", "-c", str(job.path), "--restore", c0.id)
    assert again.exit_code == 0, again.output
    assert f"already restored: the item at eu-west-1/{name}-eu already holds" in again.stdout
    assert f"restored by entry {record['id']}" in again.stdout
    assert len(entries_of(job)) == expected + 1
    # The loser of another item, after the application wrote that item again: refused.
    (c1,) = by_key["c-1"]
    work.destination.update_item(
        TableName=work.table,
        Key={"pk": {"S": "c-1"}, "sk": {"N": "1"}},
        UpdateExpression="SET shipped = :yes",
        ExpressionAttributeValues={":yes": {"BOOL": True}},
    )
    changed = invoke("conflicts", "-c", str(job.path), "--restore", c1.id)
    assert changed.exit_code == 1
    assert "not restored" in changed.stdout and "--force" in changed.stdout
    assert len(entries_of(job)) == expected + 1


# Conflicts of one burst, against a queue of ``PENDING`` entries: a log that stores them one
# at a time (about 100-400 a second) fills such a queue within the burst.
BURST = 800
PENDING = 20


def batch_put(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        while requests:
            answer = ddb.batch_write_item(RequestItems={table: requests})
            requests = answer.get("UnprocessedItems", {}).get(table, [])


def items(updated_at: int) -> list[dict[str, Any]]:
    return [
        {"pk": {"S": f"b-{index}"}, "sk": {"N": str(index)}, "updated_at": {"N": str(updated_at)}}
        for index in range(BURST)
    ]


@pytest.mark.parametrize("kind", ["dynamodb", "file"])
def test_a_burst_of_lost_conflicts_on_a_healthy_log_is_recorded_whole(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    runtimes: list[subprocess.Popen[bytes]],
    kind: str,
) -> None:
    job = audited_job(
        moto_endpoint, unique("burst"), tmp_path, kind, options=f"max_pending: {PENDING}"
    )
    ((destination, table),) = job.destination_clients()
    batch_put(destination, table, items(2_000))  # what the destination holds: newer
    runtime = job.start()
    runtimes.append(runtime)
    port = logged_metrics_port(tmp_path / "runtime.log")
    batch_put(job.source, job.source_table, items(1_000))  # every change loses

    def settled() -> bool:
        samples = scrape(port)
        lost = total(samples, "replicator_writes_total", outcome="conflict_lost")
        counted = total(samples, "replicator_conflict_log_written_total") + total(
            samples, "replicator_conflict_log_dropped_total"
        )
        return lost == BURST and counted == BURST

    wait_until(settled, 60, f"{BURST} lost conflicts, each written or dropped")
    samples = scrape(port)
    assert total(samples, "replicator_conflict_log_dropped_total") == 0
    assert total(samples, "replicator_conflict_log_written_total") == BURST
    job.wait_checkpointed()
    assert stop(runtime) == 0
    entries = entries_of(job)
    assert len(entries) == len({e.id for e in entries}) == BURST
    assert {e.key["pk"]["S"] for e in entries} == {f"b-{index}" for index in range(BURST)}


def test_a_conflict_log_outage_does_not_stop_replication_and_is_counted(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    runtimes: list[subprocess.Popen[bytes]],
) -> None:
    proxy = FaultProxy(moto_endpoint).start()
    try:
        options = f"endpoint_url: '{proxy.url}', retry_for_s: 2"
        job = audited_job(moto_endpoint, unique("outage"), tmp_path, "dynamodb", options)
        work = Workload(job, seed=20)
        work.prepare_winners("down", 5)
        work.prepare_winners("up", 3)
        runtime, port = run_in_an_outage(work, proxy, runtimes, tmp_path)
        wait_until(lambda: checkpoint_at_the_end(job), 60, "the checkpoint to reach the end")

        def dropped() -> float:
            return total(
                scrape(port), "replicator_conflict_log_dropped_total", reason="unavailable"
            )

        wait_until(lambda: dropped() == 5, 60, "the 5 unrecorded conflicts to be counted")
        samples = scrape(port)
        assert total(samples, "replicator_writes_total", outcome="conflict_lost") == 5
        assert total(samples, "replicator_writes_total", outcome="applied") == 10
        assert total(samples, "replicator_conflict_log_written_total") == 0
        assert total(samples, "replicator_conflict_log_retries_total") >= 1
        assert runtime.poll() is None

        proxy.pass_through()
        work.write_losers("up")

        def written() -> float:
            return total(scrape(port), "replicator_conflict_log_written_total")

        wait_until(lambda: written() == 3, 60, "conflicts to be recorded again")
        assert dropped() == 5
        assert stop(runtime) == 0
        recorded = sorted(e.key["pk"]["S"] for e in entries_of(job))  # through the proxy
        assert recorded == ["up-0", "up-1", "up-2"]
    finally:
        proxy.stop()


def test_entries_waiting_at_a_kill_9_are_recorded_after_the_restart(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    runtimes: list[subprocess.Popen[bytes]],
) -> None:
    """The log is down when the conflicts are lost: their entries wait (retried), so the
    checkpoint stays before them. kill -9 of the runtime then loses the entries, not the
    changes: the next run reads them again and records every one."""
    proxy = FaultProxy(moto_endpoint).start()
    try:
        options = f"endpoint_url: '{proxy.url}', retry_for_s: 600"
        job = audited_job(moto_endpoint, unique("killed"), tmp_path, "dynamodb", options)
        work = Workload(job, seed=21)
        work.prepare_winners("down", 20)
        runtime, port = run_in_an_outage(work, proxy, runtimes, tmp_path)

        def retried() -> bool:
            samples = scrape(port)
            return (
                total(samples, "replicator_writes_total", outcome="conflict_lost") == 20
                and total(samples, "replicator_conflict_log_retries_total") >= 20
            )

        wait_until(retried, 60, "the 20 entries to be retried")
        first = job.last_stream_sequence()  # the last record: the checkpoint is before it
        rows = job.lease_rows()
        assert not rows or rows[0].get("checkpoint", {}).get("S") != first
        children = children_of(runtime.pid)
        runtime.send_signal(signal.SIGKILL)
        runtime.wait(10)
        wait_until(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
            15,
            "the killed runtime's processor to exit",
        )
        proxy.pass_through()
        runtime = job.start(log=tmp_path / "restarted.log")
        runtimes.append(runtime)
        wait_until(lambda: checkpoint_at_the_end(job), 60, "the checkpoint to reach the end")
        assert stop(runtime) == 0
        recorded = entries_of(job)
        assert sorted(e.key["pk"]["S"] for e in recorded) == sorted(work.winners)
    finally:
        proxy.stop()


def test_two_jobs_sharing_a_conflict_log_table_each_record_and_restore_their_own(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    runtimes: list[subprocess.Popen[bytes]],
) -> None:
    """The review's case: two jobs read one source stream into destinations both named
    ``dr`` and share a conflict-log table. Each change loses at both: twelve entries, each
    job lists its six (and skips the other's six), and restores one of its own."""
    shared = f"conflict_log: {{kind: dynamodb, table: {unique('shared-conflicts')}}}\n"
    jobs: list[Job] = []
    for stem in ("audit-num", "audit-num2"):
        name = unique(stem)
        directory = tmp_path / stem
        directory.mkdir()
        jobs.append(
            Job(
                moto_endpoint,
                name,
                directory,
                destinations=[("eu-west-1", f"{name}-rep")],
                extra=shared,
                source_of=jobs[0].source_table if jobs else "",
                destination_name="dr",
            )
        )
    work = Workload(jobs[0], seed=23)
    work.prepare_winners("c", 6)
    other, other_table = jobs[1].destination_clients()[0]
    for winner in work.winners.values():
        other.put_item(TableName=other_table, Item=winner)
    ports = []
    for job in jobs:
        runtimes.append(job.start())
        ports.append(logged_metrics_port(job.directory / "runtime.log"))
    work.write_losers("c")
    for port in ports:
        wait_until(
            lambda port=port: total(scrape(port), "replicator_conflict_log_written_total") == 6,
            60,
            "each job to record its 6 lost conflicts",
        )
    for runtime in runtimes:
        assert stop(runtime) == 0
    assert len(entries_of(jobs[0])) == 12

    for job, theirs in ((jobs[0], jobs[1]), (jobs[1], jobs[0])):
        listed = invoke("conflicts", "-c", str(job.path), "--format", "json")
        assert listed.exit_code == 0, listed.output
        document = json.loads(listed.stdout)
        assert document["summary"]["lost_conflicts"] == 6
        assert document["summary"]["other_tasks_skipped"] == {theirs.name: 6}
        assert {e["task_name"] for e in document["entries"]} == {job.name}
    (c0,) = [
        e for e in entries_of(jobs[1]) if e.task_name == jobs[1].name and e.key["pk"]["S"] == "c-0"
    ]
    restored = invoke("conflicts", "-c", str(jobs[1].path), "--restore", c0.id)
    assert restored.exit_code == 0, restored.output
    key = {"pk": {"S": "c-0"}, "sk": {"N": "0"}}

    def held(ddb: Any, table: str) -> Item:
        item: Item = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
        return item

    assert exact(held(other, other_table)) == exact(work.losers["c-0"])
    assert exact(held(work.destination, work.table)) == exact(work.winners["c-0"])  # untouched


def newer_wins(incoming: Any, existing: Any) -> bool:
    """A custom resolver as the review wrote it: the incoming put only if it is newer."""
    if existing is None or incoming.new_image is None:
        return True
    return int(incoming.new_image["updated_at"]["N"]) > int(existing["updated_at"]["N"])


def test_under_a_custom_resolver_an_image_the_destination_holds_is_unchanged_not_lost(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    runtimes: list[subprocess.Popen[bytes]],
) -> None:
    """The review's case: the destination already holds exactly the incoming image, and a
    resolver that keeps the destination's item unless the incoming one is newer said
    "keep". That was a lost conflict whose loser and winner were one image, counted and
    recorded (and a restore of it wrote it again). It is ``unchanged``, as under
    last_writer_wins and version; a put that does lose is still recorded."""
    name = unique("custom")
    log_file = tmp_path / "conflicts.jsonl"
    job = Job(
        moto_endpoint,
        name,
        tmp_path,
        destinations=[("eu-west-1", f"{name}-eu")],
        extra=f"conflict_log: {{kind: file, path: '{log_file}'}}\n",
    )
    text = job.path.read_text()
    ranked = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
    assert ranked in text
    resolver = f"{__name__}:newer_wins"
    job.path.write_text(
        text.replace(ranked, f"conflict: {{policy: custom, resolver: '{resolver}'}}\n")
    )
    work = Workload(job, seed=31)
    same = work.item("same", 1, "us-east-1", LOSER_MS)
    work.destination.put_item(TableName=work.table, Item=same)
    work.winners["same"] = same
    work.prepare_winners("c", 1)
    job.source.put_item(TableName=job.source_table, Item=same)
    work.write_losers("c")
    work.write_plain("n", 2)

    runtime = job.start()
    runtimes.append(runtime)
    port = logged_metrics_port(tmp_path / "runtime.log")
    wait_until(lambda: checkpoint_at_the_end(job), 60, "the checkpoint to reach the end")
    samples = scrape(port)
    assert stop(runtime) == 0

    assert work.destination_as_expected()
    assert total(samples, "replicator_writes_total", outcome="unchanged") == 1
    assert total(samples, "replicator_writes_total", outcome="conflict_lost") == 1
    assert total(samples, "replicator_writes_total", outcome="applied") == 2
    (entry,) = entries_of(job)
    assert entry.key["pk"]["S"] == "c-0" and entry.losing_image != entry.winning_image
