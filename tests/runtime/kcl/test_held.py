"""The leases a KCL worker holds, read from the lease table, for /healthz
(replicator/runtime/kcl/held.py). The launcher's /healthz over HTTP is tested in
test_kcl_launcher.py (``test_health_names_a_lease_held_without_a_processor``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from replicator.config.loader import parse_job
from replicator.runtime.kcl.awaited import AnswerNotes, unanswered
from replicator.runtime.kcl.held import HeldWatch, held_shards
from replicator.shards.leases import Lease
from tests.support.aws import client, create_lease_table


def lease(shard: str, owner: str | None, checkpoint: str = "TRIM_HORIZON", **extra: Any) -> Any:
    row: dict[str, Any] = {"leaseKey": {"S": shard}, "checkpoint": {"S": checkpoint}}
    if owner is not None:
        row["leaseOwner"] = {"S": owner}
    return {**row, **extra}


def test_the_shards_a_worker_holds_and_should_be_reading() -> None:
    """Left out: other workers' leases, shards read to their end, children whose parent
    is not read to its end yet (the KCL starts them only then), leases being handed over."""
    rows = [
        lease("s-mine", "w1", "4900"),
        lease("s-theirs", "w2"),
        lease("s-free", None),
        lease("s-ended", "w1", "SHARD_END"),
        lease("s-handed", "w1", checkpointOwner={"S": "w1"}),
        lease("s-parent", "w2", "5100"),
        lease("s-waiting", "w1", parentShardId={"SS": ["s-parent"]}),
        lease("s-after-end", "w1", parentShardId={"SS": ["s-ended"]}),
        lease("s-after-gone", "w1", parentShardId={"SS": ["s-cleaned-up"]}),
    ]
    leases = {lease.shard_id: lease for lease in map(Lease.from_item, rows)}
    assert held_shards(leases, "w1") == {"s-mine", "s-after-end", "s-after-gone"}
    assert held_shards(leases, "w3") == set()


def test_a_lease_held_without_a_processor_past_the_limit_is_named(tmp_path: Path) -> None:
    """GetShardIterator refused: the KCL holds the lease and retries for ever before it
    starts the shard's processor, so no note, no gauge, nothing said; /healthz was 200."""
    assert unanswered(tmp_path, 300, now=1299.0, held=lambda running: {"s-1": 1000.0}) == []
    (reason,) = unanswered(tmp_path, 300, now=1300.0, held=lambda running: {"s-1": 1000.0})
    assert reason == (
        "this worker has held the lease of shard s-1 for 300s without a processor of it: the "
        "KCL cannot start reading the shard (GetShardIterator not allowed, the stream "
        "unreachable: the daemon's kcl warnings say why)"
    )
    # A processor of the shard running here: nothing to say.
    notes = AnswerNotes(tmp_path, os.getpid())
    notes.started("s-1")
    notes.path.write_text(json.dumps({**json.loads(notes.path.read_text()), "heard": 1299.0}))
    assert [
        reason
        for reason in unanswered(tmp_path, 300, now=1300.0, held=lambda running: {"s-1": 1000.0})
        if "held the lease" in reason
    ] == []


def test_a_shard_whose_processor_ended_on_purpose_counts_from_when_it_last_ran(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A graceful stop, a handoff to another worker, a processor the KCL shut down and
    starts again: the lease row names this worker for a while after, and a shard held
    for minutes with a processor was named at once (503 naming GetShardIterator on every
    deploy and rebalance). Counted from the last time a processor of it was seen here."""
    resolved, ddb = watched_job(moto_endpoint, unique, tmp_path)
    ddb.put_item(TableName=resolved.lease_table, Item=lease("s-1", "w1"))
    now = [100.0]
    watch = HeldWatch(resolved, "w1", 30, clock=lambda: now[0])
    watch.turn()
    notes = AnswerNotes(tmp_path, os.getpid())
    notes.started("s-1")
    # Its times on the made-up clock (the note holds the host's monotonic clock, seconds
    # since boot, which a machine booted a minute ago would put before 140).
    notes.path.write_text(
        json.dumps({**json.loads(notes.path.read_text()), "heard": 140.0, "batch_at": 140.0})
    )
    now[0] = 140.0  # started, yet no batch passed (started and stopped again and again)
    assert unanswered(tmp_path, 30, now=140.0, held=watch.since) == []  # it runs
    notes.ended()
    (reason,) = unanswered(tmp_path, 30, now=140.0, held=watch.since)
    assert "for 40s without a processor" in reason  # counted on from the first reading
    notes = AnswerNotes(tmp_path, os.getpid())
    notes.started("s-1")
    notes.received()
    for at in (150.0, 200.0, 400.0):  # the processor reads, health judged now and then
        now[0] = at
        assert [r for r in unanswered(tmp_path, 30, now=at, held=watch.since) if "held" in r] == []
    notes.path.unlink()  # it ended on purpose (a handoff): its note goes, the lease row stays
    now[0] = 429.0
    watch.turn()
    assert unanswered(tmp_path, 30, now=429.0, held=watch.since) == []
    now[0] = 430.0
    (reason,) = unanswered(tmp_path, 30, now=430.0, held=watch.since)
    assert reason.startswith("this worker has held the lease of shard s-1 for 30s without a ")


def watched_job(
    moto_endpoint: str, unique: Any, tmp_path: Path, *, create: bool = True
) -> tuple[Any, Any]:
    """A KCL job of its own task, and a client of its source region; with its lease table
    made (as the KCL makes it) if ``create``."""
    resolved = parse_job(
        "runtime: kcl\n"
        f"task_name: {unique('held')}\n"
        f"source: {{region: us-east-1, table: orders, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n",
        tmp_path / "job.yaml",
    )
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    if create:
        create_lease_table(ddb, resolved.lease_table)
    return resolved, ddb


def test_the_watch_reads_the_workers_leases_from_the_lease_table(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    resolved, ddb = watched_job(moto_endpoint, unique, tmp_path, create=False)
    now = [100.0]
    watch = HeldWatch(resolved, "w1", 300, clock=lambda: now[0])
    assert watch.turn() is False and watch.since() == {}  # no lease table yet: said nothing
    create_lease_table(ddb, resolved.lease_table)
    for row in (lease("s-1", "w1"), lease("s-2", "w2")):
        ddb.put_item(TableName=resolved.lease_table, Item=row)
    watch.turn()
    assert watch.since() == {"s-1": 100.0}
    now[0] = 130.0
    ddb.put_item(TableName=resolved.lease_table, Item=lease("s-2", "w1"))
    watch.turn()
    assert watch.since() == {"s-1": 100.0, "s-2": 130.0}  # held in a row since first seen
    ddb.put_item(TableName=resolved.lease_table, Item=lease("s-1", "w2"))
    watch.turn()
    assert watch.since() == {"s-2": 130.0}
