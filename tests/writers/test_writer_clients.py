"""The DynamoDB clients wiring builds for the writers, against a real moto server: decoded
images go out without botocore's client-side check (decode has checked them), while a
custom resolver's own items keep it; a malformed one is dead-lettered, never sent (the
custom rule checks its form first, naming the place)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from botocore.validate import ParamValidationDecorator

from replicator import wiring
from replicator.aws import clients
from replicator.config.loader import parse_job
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.items import Item
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.writers.outcomes import Outcome
from replicator.writers.wire import WireWriteClient
from tests.support.aws import client, create_table
from tests.support.records import put

REGION = "eu-west-1"


def a_set_written_as_text(change: Change, existing: Item | None) -> Item:
    """Test resolver: returns an item whose string set holds a plain string."""
    return {"pk": change.keys["pk"], "tags": {"SS": "abc"}}


def test_writer_clients(moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> None:
    ddb = client("dynamodb", REGION, moto_endpoint)
    plain, custom = unique("plain"), unique("custom")
    for table in (plain, custom):
        create_table(ddb, table, stream=None)
    job = (
        "source: {region: us-east-1, table: source-table}\n"
        "destinations:\n"
        f"  - {{region: {REGION}, table: {plain}, endpoint_url: '{moto_endpoint}'}}\n"
        f"  - region: {REGION}\n"
        f"    table: {custom}\n"
        f"    endpoint_url: '{moto_endpoint}'\n"
        "    conflict: {policy: custom, resolver: 'tests.writers.test_writer_clients:"
        "a_set_written_as_text'}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        f"dead_letter: {{kind: file, path: '{tmp_path}/dead.jsonl'}}\n"
    )
    resolved = parse_job(job, tmp_path / "job.yaml")
    letters = DeadLetterer(wiring.dead_letter_target(resolved), metrics, "task", "shard-1")
    writers = wiring.destination_writers(resolved, metrics)
    lww, resolver = writers[f"{REGION}/{plain}"], writers[f"{REGION}/{custom}"]
    assert lww.late_write_window_s == 30.0  # the default

    # Conditional puts and deletes go out directly; the custom resolver's reads and
    # writes go through botocore, whose serializer is wrapped in the client-side check.
    assert isinstance(lww.client, WireWriteClient)
    assert lww.client.botocore_client.meta.config.user_agent.startswith(clients.USER_AGENT)
    assert not isinstance(lww.client.botocore_client._serializer, ParamValidationDecorator)
    assert not isinstance(resolver.client, WireWriteClient)
    assert isinstance(resolver.client._serializer, ParamValidationDecorator)

    change = decode(put("a", 1, ts=5, tags={"SS": ["x", "y"]}))
    assert lww.write(change).outcome is Outcome.APPLIED
    item = ddb.get_item(TableName=plain, Key={"pk": {"S": "a"}}, ConsistentRead=True)["Item"]
    assert item["tags"] == {"SS": ["x", "y"]}

    assert letters.write(resolver, change).outcome is Outcome.FAILED
    assert "Item" not in ddb.get_item(TableName=custom, Key={"pk": {"S": "a"}})
    (letter,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    # The rule names the place before botocore's check (still wired, above) would refuse it.
    assert letter["reason"] == "unplannable"
    assert "its 'tags'.SS is 'abc', where a list of strings is expected" in letter["error"]


def test_send_with_botocore_keeps_botocores_pipeline(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("plain")
    create_table(ddb, table, stream=None)
    job = (
        "source: {region: us-east-1, table: source-table}\n"
        f"destinations: [{{region: {REGION}, table: {table}, endpoint_url: '{moto_endpoint}'}}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "writer: {send_with_botocore: true, late_write_window_s: 2.5}\n"
        f"dead_letter: {{kind: file, path: '{tmp_path}/dead.jsonl'}}\n"
    )
    resolved = parse_job(job, tmp_path / "job.yaml")
    writers = wiring.destination_writers(resolved, metrics)
    (writer,) = writers.values()
    assert not isinstance(writer.client, WireWriteClient)
    assert writer.late_write_window_s == 2.5
    assert writer.write(decode(put("a", 1, ts=5))).outcome is Outcome.APPLIED
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})["Item"]["ts"] == {"N": "5"}
