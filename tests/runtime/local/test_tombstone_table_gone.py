"""`replicator run` of one side of an active-active pair whose tombstone table is deleted
while it runs: the table is refused every request, and every message that says so (the
retry warnings, the processor's refusal, /healthz, the command's last line) names the
tombstone table, not the destination or source table beside it, which is there."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

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
