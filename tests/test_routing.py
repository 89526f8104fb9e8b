"""Loop prevention, TTL policy and per-destination rules through the processor in process,
checked on the destination tables (moto over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from replicator.filters import REGION_STAMPED_PUTS_WARNED_AFTER
from replicator.metrics import Metrics
from tests.support.aws import client, create_table
from tests.support.inprocess import InProcessShard
from tests.support.metrics import sample
from tests.support.records import put, remove


class Setup:
    def __init__(self, endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> None:
        self.endpoint = endpoint
        self.tmp_path = tmp_path
        self.metrics = metrics
        self.eu = client("dynamodb", "eu-west-1", endpoint)
        self.ap = client("dynamodb", "ap-southeast-2", endpoint)
        self.eu_table, self.ap_table = unique("eu"), unique("ap")
        create_table(self.eu, self.eu_table, stream=None)
        create_table(self.ap, self.ap_table, stream=None)
        self.shards: list[InProcessShard] = []

    def shard(self, extra: str = "", ap_conflict: str = "") -> InProcessShard:
        text = (
            "task_name: routing\n"
            "source: {region: us-east-1, table: src-table}\n"
            "destinations:\n"
            f"  - {{name: eu, region: eu-west-1, table: {self.eu_table}, "
            f"endpoint_url: '{self.endpoint}'}}\n"
            f"  - {{name: ap, region: ap-southeast-2, table: {self.ap_table}, "
            f"endpoint_url: '{self.endpoint}'{ap_conflict}}}\n"
            f"dead_letter: {{path: '{self.tmp_path / 'dead.jsonl'}'}}\n"
            "metrics: {enabled: false}\n"
            # Not what these tests are about, and its status tables and the source's
            # description would be looked for at AWS (the source has no endpoint here).
            "watermark: {enabled: false}\n" + extra
        )
        shard = InProcessShard(text, self.tmp_path, self.metrics)
        self.shards.append(shard)
        return shard

    def items(self, which: str) -> dict[str, Any]:
        ddb, table = (self.eu, self.eu_table) if which == "eu" else (self.ap, self.ap_table)
        return {i["pk"]["S"]: i for i in ddb.scan(TableName=table, ConsistentRead=True)["Items"]}


@pytest.fixture
def setup(moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> Iterator[Setup]:
    s = Setup(moto_endpoint, unique, tmp_path, metrics)
    yield s
    for shard in s.shards:
        shard.close()


LWW_LOOP = (
    "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
    "loop_prevention: {origin_attribute: origin}\n"
)


def test_puts_that_arrived_by_replication_are_not_sent_on(setup: Setup) -> None:
    shard = setup.shard(LWW_LOOP)
    shard.send(
        [
            put("local", 1, ts=1, origin="us-east-1"),
            put("replicated", 2, ts=1, origin="eu-west-1"),
            put("unstamped", 3, ts=1),
        ]
    )
    shard.settle()
    for which in ("eu", "ap"):
        assert set(setup.items(which)) == {"local", "unstamped"}
    # Skipped, and so settled, at ap too: eu-west-1's own job writes it there (the
    # watermark counts it as settled at every destination, docs/watermark.md).
    for destination in ("eu", "ap"):
        assert (
            sample(
                setup.metrics,
                "replicator_writes_total",
                destination=destination,
                op="put",
                outcome="loop_skipped",
            )
            == 1
        )
    assert shard.checkpointer.positions[-1] == "3"


def test_deletes_are_always_sent_on(setup: Setup) -> None:
    shard = setup.shard(LWW_LOOP)
    # an item that came from eu-west-1 is deleted here: its old image carries eu-west-1's
    # stamp, and the delete is still replicated
    for ddb, table in ((setup.eu, setup.eu_table), (setup.ap, setup.ap_table)):
        ddb.put_item(
            TableName=table, Item={"pk": {"S": "k"}, "ts": {"N": "5"}, "origin": {"S": "eu-west-1"}}
        )
    shard.send([remove("k", 2, ts=5, origin="eu-west-1")])
    shard.settle()
    assert setup.items("eu") == {} and setup.items("ap") == {}


def test_a_loop_skipped_change_replaces_an_older_queued_one(setup: Setup) -> None:
    shard = setup.shard("loop_prevention: {origin_attribute: origin}\n")  # overwrite
    setup.eu.put_item(
        TableName=setup.eu_table,
        Item={"pk": {"S": "k"}, "v": {"S": "from-eu"}, "origin": {"S": "eu-west-1"}},
    )
    # a local change, then the item's newer state replicated from eu-west-1, in one batch:
    # sending the older local change would overwrite the newer state eu already has
    shard.send(
        [
            put("k", 1, v="local-old", origin="us-east-1"),
            put("k", 2, v="from-eu", origin="eu-west-1"),
        ]
    )
    shard.settle()
    assert setup.items("eu")["k"]["v"] == {"S": "from-eu"}
    # ap holds neither: the older change is still owed there (eu-west-1's own job sends
    # ap the newer state)
    assert setup.items("ap")["k"]["v"] == {"S": "local-old"}


def test_an_echo_in_a_mesh_does_not_count_as_written_to_the_third_region(
    setup: Setup,
) -> None:
    """The echo of eu's newer state settles the older local change at eu only: ap gets
    it, and under last_writer_wins a newer state already at ap keeps winning."""
    shard = setup.shard(LWW_LOOP + "active_active: {write_back: false}\n")
    newer = {"pk": {"S": "k"}, "ts": {"N": "200"}, "origin": {"S": "eu-west-1"}}
    setup.eu.put_item(TableName=setup.eu_table, Item=newer)
    setup.ap.put_item(TableName=setup.ap_table, Item={**newer, "pk": {"S": "j"}})
    shard.send(
        [
            put("k", 1, ts=100, origin="us-east-1"),
            put("j", 2, ts=100, origin="us-east-1"),
            put("k", 3, ts=200, origin="eu-west-1"),
            put("j", 4, ts=200, origin="eu-west-1"),
        ]
    )
    shard.settle()
    assert setup.items("eu")["k"]["ts"] == {"N": "200"}
    assert setup.items("ap")["k"]["ts"] == {"N": "100"}  # written: ap lacked it
    assert setup.items("ap")["j"]["ts"] == {"N": "200"}  # sent, and lost to the newer state
    assert "j" not in setup.items("eu")  # eu holds j's newer state: not sent there
    assert shard.checkpointer.positions[-1] == "4"


def test_an_echo_in_a_pair_replaces_the_older_change(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """One destination: the echo can only have come from it, whatever its stamp says."""
    eu = client("dynamodb", "eu-west-1", moto_endpoint)
    table = unique("eu")
    create_table(eu, table, stream=None)
    text = (
        "task_name: routing\n"
        "source: {region: us-east-1, table: src-table}\n"
        f"destinations: [{{name: eu, region: eu-west-1, table: {table}, "
        f"endpoint_url: '{moto_endpoint}'}}]\n"
        f"dead_letter: {{path: '{tmp_path / 'dead.jsonl'}'}}\n"
        "metrics: {enabled: false}\n"
        "loop_prevention: {origin_attribute: origin, origin_value: east}\n"
    )
    shard = InProcessShard(text, tmp_path, metrics)
    try:
        shard.send(
            [
                put("k", 1, v="local-old", origin="east"),
                put("k", 2, v="from-eu", origin="west"),
            ]
        )
        shard.settle()
        assert eu.scan(TableName=table)["Items"] == []
        assert shard.checkpointer.positions[-1] == "2"
    finally:
        shard.close()


@pytest.mark.parametrize("policy", ["replicate", "skip"])
def test_ttl_deletes_follow_the_job_policy(setup: Setup, policy: str) -> None:
    shard = setup.shard(f"ttl_deletes: {policy}\n")
    shard.send([put("expiring", 1, v="x"), put("deleted", 2, v="y")])
    shard.settle()
    shard.send([remove("expiring", 3, ttl=True), remove("deleted", 4)])
    shard.settle()
    for which in ("eu", "ap"):
        assert ("expiring" in setup.items(which)) is (policy == "skip")
        assert "deleted" not in setup.items(which)
    outcome = "filtered" if policy == "skip" else "applied"
    assert (
        sample(
            setup.metrics, "replicator_writes_total", destination="eu", op="delete", outcome=outcome
        )
        >= 1
    )
    assert shard.checkpointer.positions[-1] == "4"


def test_a_destination_can_override_the_conflict_policy(setup: Setup) -> None:
    for ddb, table in ((setup.eu, setup.eu_table), (setup.ap, setup.ap_table)):
        ddb.put_item(
            TableName=table, Item={"pk": {"S": "k"}, "ts": {"N": "9"}, "v": {"S": "newer"}}
        )
    shard = setup.shard(
        "conflict: {policy: overwrite}\n",
        ap_conflict=", conflict: {policy: last_writer_wins, timestamp_attribute: ts}",
    )
    shard.send([put("k", 1, ts=1, v="older")])
    shard.settle()
    assert setup.items("eu")["k"]["v"] == {"S": "older"}  # overwrite
    assert setup.items("ap")["k"]["v"] == {"S": "newer"}  # last writer wins


def test_a_shard_warns_of_an_origin_value_no_put_is_stamped_with(setup: Setup) -> None:
    """Through the processor's own wiring: origin_value us-east1, puts stamped us-east-1
    (the applications' region): every one skipped as an echo, none replicated, and the
    shard says so once."""
    shard = setup.shard(
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin, origin_value: us-east1}\n"
    )
    count = REGION_STAMPED_PUTS_WARNED_AFTER + 1
    with structlog.testing.capture_logs() as logs:
        shard.send([put(f"k{i}", i + 1, ts=1, origin="us-east-1") for i in range(count)])
        shard.settle()
    assert setup.items("eu") == {} and setup.items("ap") == {}
    warned = [
        line for line in logs if "puts stamped with the source table's region" in line["event"]
    ]
    assert len(warned) == 1 and warned[0]["origin_value"] == "us-east1"
