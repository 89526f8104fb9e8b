"""`replicator run` of one side of an active-active pair whose tombstone table is deleted
while it runs: the table is refused every request, and every message that says so (the
retry warnings, the processor's refusal, /healthz, the command's last line) names the
tombstone table, not the destination or source table beside it, which is there. The
changes that need it are never dead-lettered, however many other writes succeed: the job
stops, and started again (which creates the table) it brings the regions together."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from replicator.items import same_item
from tests.support.active_active import Mesh
from tests.support.e2e import PATIENCE, wait_until
from tests.support.metrics import health, logged_metrics_port

US, EU = "us-east-1", "eu-west-1"


@pytest.mark.parametrize("beside", [EU, US], ids=["destination", "source"])
def test_a_deleted_tombstone_table_is_named_by_every_message_about_it(
    moto_endpoint: str, unique: Any, tmp_path: Path, beside: str
) -> None:
    """The us-east-1 job writes tombstones beside its destination (eu-west-1) and beside
    its own source (us-east-1); either one deleted, a put and a delete in us-east-1 need
    it, and the processor stops on it until the run exits 3."""
    mesh = Mesh(moto_endpoint, unique("tombgone"), (US, EU), tmp_path)
    job = mesh.config(US)
    text = job.read_text()
    assert "writer: {max_in_flight: 16}" in text
    job.write_text(
        text.replace(
            "writer: {max_in_flight: 16}",
            "writer: {max_in_flight: 16, access_denied_limit: 3, "
            "retry: {base_delay_ms: 1, max_delay_ms: 20}}",
        )
    )
    mesh.start(US)
    runtime = mesh.runtimes.pop(US)
    try:
        port = logged_metrics_port(tmp_path / f"{US}.log")
        gone = f"{mesh.table[beside]}-tombstones"
        mesh.ddb[beside].delete_table(TableName=gone)
        ddb, table = mesh.ddb[US], mesh.table[US]
        item = {
            "pk": {"S": "S:gone-0"},
            "sk": {"N": "1"},
            "updated_at": {"N": "1800000000000"},
            "origin_region": {"S": US},
        }
        ddb.put_item(TableName=table, Item=item)
        ddb.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
        reasons: list[str] = []

        def failure_reported() -> bool:
            if runtime.poll() is not None:
                return True
            with contextlib.suppress(OSError, ValueError):
                status, body = health(port)
                found = [str(r) for r in body.get("reasons", []) if "last failure" in str(r)]
                if status == 503 and found:
                    reasons.extend(found)
            return bool(reasons)

        wait_until(failure_reported, 60 * PATIENCE, "/healthz to report the failing processor")
        assert runtime.wait(120 * PATIENCE) == 3
    finally:
        if runtime.poll() is None:
            runtime.kill()
            runtime.wait(10)
    named = f"tombstone table {gone} ("
    assert reasons, "the run exited before /healthz reported the failing processor"
    assert named in reasons[0] and f"({beside}))" in reasons[0], reasons[0]
    assert "refused 3 writes in a row: ResourceNotFoundException" in reasons[0]
    assert f"destination {beside}/{mesh.table[beside]}" not in reasons[0]
    output = (tmp_path / f"{US}.log").read_text()
    last = output.splitlines()[-1]
    assert last.startswith(f"replicator: {named}"), last
    assert "stopped on this 6 times in a row" in last
    retries = [
        entry
        for entry in map(_json, output.splitlines())
        if entry.get("event") == "write failed, retrying"
    ]
    assert retries and all(named in entry["error"] for entry in retries), retries[:3]
    for region in (US, EU):  # the tables beside it were never missing
        assert mesh.ddb[region].describe_table(TableName=mesh.table[region])


def _json(line: str) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        entry = json.loads(line)
        if isinstance(entry, dict):
            return entry
    return {}


@pytest.mark.parametrize("beside", [EU, US], ids=["destination", "source"])
def test_deletes_wait_for_a_deleted_tombstone_table_while_other_writes_succeed(
    moto_endpoint: str, unique: Any, tmp_path: Path, beside: str
) -> None:
    """Deletes and updates interleaved in us-east-1 once a tombstone table is gone, and
    updates of items the destination holds (which need no tombstone) going on all the
    while: the deletes are retried, never dead-lettered as an item the policy denies, and
    the job stops (exit 3) on the tombstone table. Started again, it creates the table
    and both regions end with the same items."""
    mesh = Mesh(moto_endpoint, unique("tombdl"), (US, EU), tmp_path)
    job = mesh.config(US)
    text = job.read_text()
    job.write_text(
        text.replace(
            "writer: {max_in_flight: 16}",
            "writer: {max_in_flight: 16, access_denied_limit: 6, "
            "retry: {base_delay_ms: 20, max_delay_ms: 100}}",
        )
    )
    ddb, table = mesh.ddb[US], mesh.table[US]
    stamps = itertools.count(1_800_000_000_000)
    keys = [{"pk": {"S": f"S:{index}"}, "sk": {"N": "1"}} for index in range(6)]

    def put(index: int, stale: bool = False) -> None:
        # A stale put (a client clock far behind) is corrected: the job writes the item's
        # higher state back to the source, a write the source's own writer settles.
        stamp = 1_700_000_000_000 if stale else next(stamps)
        item = {**keys[index], "updated_at": {"N": str(stamp)}}
        ddb.put_item(TableName=table, Item={**item, "origin_region": {"S": US}})

    dead_letters = tmp_path / f"{US}-dead.jsonl"
    source_refused = b"write to the source refused"
    log = tmp_path / f"{US}.log"
    mesh.start(US)
    updating = threading.Event()
    updates: list[threading.Thread] = []
    try:
        for index in range(6):
            put(index)
        wait_until(lambda: len(mesh.items(EU)) == 6, 30, "the six items in eu-west-1")
        gone = f"{mesh.table[beside]}-tombstones"
        mesh.ddb[beside].delete_table(TableName=gone)
        for index in range(3):
            ddb.delete_item(TableName=table, Key=keys[index])
            put(3 + index)

        def update() -> None:
            # Writes that succeed at both tables while the deletes are refused (what the
            # rule for an item a policy denies counts), at the destination and, through
            # corrections, at the source (a workload, not a wait).
            for index in itertools.cycle(range(3, 6)):
                if updating.wait(0.05):
                    return
                put(index, stale=index == 4)
                put(index)

        updates.append(threading.Thread(target=update, daemon=True))
        updates[0].start()
        runtime = mesh.runtimes[US]

        def settled() -> bool:
            refused = log.exists() and source_refused in log.read_bytes()
            return runtime.poll() is not None or dead_letters.exists() or refused

        wait_until(settled, 120, "the run to stop on the tombstone table")
        letters = dead_letters.read_text() if dead_letters.exists() else ""
        assert not letters, letters[:2000]
        assert source_refused not in log.read_bytes(), mesh.log_tail(US)
        assert runtime.wait(60 * PATIENCE) == 3, mesh.log_tail(US)
    finally:
        updating.set()
        for thread in updates:
            thread.join(30)
        running = mesh.runtimes.pop(US)
        if running.poll() is None:
            running.kill()
            running.wait(10)
    last = log.read_text().splitlines()[-1]
    assert last.startswith(f"replicator: tombstone table {gone} ("), last
    assert f"({beside})) refused 6 writes in a row: ResourceNotFoundException" in last, last
    if beside == EU:  # the deletes wait in the stream
        assert len(mesh.items(EU)) == 6
    mesh.start(US)  # creates the tombstone table again
    try:

        def converged() -> bool:
            here, there = mesh.items(US), mesh.items(EU)
            return here.keys() == there.keys() and all(
                same_item(item, there[key]) for key, item in here.items()
            )

        wait_until(converged, 60, "eu-west-1 to hold what us-east-1 holds")
        assert len(mesh.items(EU)) == 3
        assert mesh.ddb[beside].describe_table(TableName=gone)["Table"]["TableStatus"]
    finally:
        codes = mesh.stop(US)
    assert codes == {US: 0}, mesh.log_tail(US)
    assert not dead_letters.exists() or not dead_letters.read_text()
