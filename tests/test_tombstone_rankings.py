"""A tombstone row says what its rank was ranked by (policy and attribute), and a job
counts only the rows ranked as it ranks (replicator/tombstones/model.py and table.py).

A row's ``rank_value`` is a value of the attribute the job that wrote it ranked by: an
``updated_at`` in milliseconds read as a ``version`` outranks every version there will
ever be, so after a job's conflict policy changed, every put of an item deleted in the
retention window was removed again in every region. Rows ranked otherwise now count for
nothing against a put (logged), a new delete replaces them, and rows written before rows
said what they were ranked by are still taken to be ranked as the job ranks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from replicator.items import Item
from replicator.metrics import Metrics
from replicator.records import RawRecord
from replicator.rules import OrderedRule
from replicator.tombstones.model import Ranking, Tombstone, tombstone_of
from replicator.tombstones.table import TombstoneTable
from tests.support.aws import client, create_table
from tests.support.inprocess import InProcessShard
from tests.support.records import daemon_record, stream_record

LWW = Ranking("last_writer_wins", "updated_at")
VERSION = Ranking("version", "version")
LWW_RULE = OrderedRule("last_writer_wins", "updated_at", "origin", numeric_only=False)
VERSION_RULE = OrderedRule("version", "version", "origin", True)
KEYS = {"pk": {"S": "z"}}
# updated_at of the deleted image: now, in milliseconds, when the bug was seen.
UPDATED_AT_MS = 1796298543348


def deleted_image() -> Item:
    return {
        **KEYS,
        "updated_at": {"N": str(UPDATED_AT_MS)},
        "version": {"N": "3"},
        "origin": {"S": "us-east-1"},
    }


def tomb(
    ranking: Ranking | None,
    rule: OrderedRule = LWW_RULE,
    image: Item | None = None,
    *,
    written_by: str = "us-east-1",
    deleted_at_ms: int = 1_700_000_000_000,
    expires_at: int | None = None,
    keys: Item = KEYS,
) -> Tombstone:
    return tombstone_of(
        image or {**deleted_image(), **keys},
        keys,
        rule.fields,
        deleted_in=written_by,
        written_by=written_by,
        deleted_at_ms=deleted_at_ms,
        expires_at=int(time.time()) + 3600 if expires_at is None else expires_at,
        ranking=ranking,
    )


# -- the row --------------------------------------------------------------------------------


def test_a_row_keeps_what_it_was_ranked_by() -> None:
    row = tomb(LWW)
    item = row.to_item()
    assert item["rank_policy"] == {"S": "last_writer_wins"}
    assert item["rank_attribute"] == {"S": "updated_at"}
    assert Tombstone.from_item(item) == row
    assert Tombstone.from_item(item).ranking == LWW


def test_a_row_written_before_rows_said_their_ranking_reads_as_unranked() -> None:
    item = tomb(LWW).to_item()
    del item["rank_policy"], item["rank_attribute"]
    row = Tombstone.from_item(item)
    assert row.ranking is None
    assert "rank_policy" not in row.to_item()


def test_only_a_row_ranked_as_the_job_ranks_counts() -> None:
    assert tomb(LWW).ranked_like(LWW)
    assert not tomb(LWW).ranked_like(VERSION)
    assert not tomb(LWW).ranked_like(Ranking("last_writer_wins", "modified_at"))
    assert not tomb(LWW).ranked_like(Ranking("version", "updated_at"))
    assert tomb(None).ranked_like(VERSION)  # an older row: the job's ranking assumed
    assert tomb(LWW).ranked_like(None)  # a reader that does not rank takes any row


def test_a_row_names_the_attribute_it_was_ranked_by() -> None:
    shown = tomb(LWW).described("version", "origin")
    assert f"updated_at={UPDATED_AT_MS}" in shown and "version" not in shown
    assert f"version={UPDATED_AT_MS}" in tomb(None).described("version", "origin")


# -- the table ------------------------------------------------------------------------------


@pytest.fixture
def tombstones(moto_endpoint: str, unique: Any) -> TombstoneTable:
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    table = TombstoneTable(
        ddb, unique("tombs"), "us-east-1", 3600, ranking=VERSION, origin="us-east-1"
    )
    table.ensure_exists()
    return table


def put_row(table: TombstoneTable, row: Tombstone, *, legacy: bool = False) -> None:
    item = row.to_item()
    if legacy:
        item.pop("rank_policy", None)
        item.pop("rank_attribute", None)
    table.client.put_item(TableName=table.table, Item=item)


def test_a_row_ranked_otherwise_is_no_tombstone_and_is_said_once(
    tombstones: TombstoneTable,
) -> None:
    put_row(tombstones, tomb(LWW))
    with structlog.testing.capture_logs() as logged:
        assert tombstones.get(KEYS) is None
        found: dict[Any, Tombstone | None] = {}
        tombstones.get_some({tomb(LWW).pk: "z"}, found)  # type: ignore[dict-item]
        assert found == {"z": None}
    warned = [line for line in logged if line["log_level"] == "warning"]
    assert len(warned) == 1, logged
    assert warned[0]["tombstone_ranking"] == "last_writer_wins on updated_at"
    assert warned[0]["job_ranking"] == "version on version"
    assert warned[0]["table"] == tombstones.description
    assert not [line for line in logged if line["log_level"] == "error"]


def test_a_delete_replaces_a_row_ranked_otherwise_however_high(
    tombstones: TombstoneTable,
) -> None:
    put_row(tombstones, tomb(LWW))  # rank_value 1796298543348, as a version: unbeatable
    mine = tomb(VERSION, VERSION_RULE, {**deleted_image(), "version": {"N": "4"}})
    assert tombstones.record(mine) is None
    assert tombstones.get(KEYS) == mine
    # Ranked alike, the row moves only up: a lower delete leaves it.
    lower = tomb(VERSION, VERSION_RULE, {**deleted_image(), "version": {"N": "2"}})
    assert tombstones.record(lower) == mine
    assert tombstones.get(KEYS) == mine


def test_a_row_written_before_rows_said_their_ranking_still_counts(
    tombstones: TombstoneTable,
) -> None:
    older = tomb(None, VERSION_RULE, {**deleted_image(), "version": {"N": "7"}})
    put_row(tombstones, older, legacy=True)
    assert tombstones.get(KEYS) == older
    lower = tomb(VERSION, VERSION_RULE, {**deleted_image(), "version": {"N": "5"}})
    assert tombstones.record(lower) == older  # compared as before: it stays
    higher = tomb(VERSION, VERSION_RULE, {**deleted_image(), "version": {"N": "8"}})
    assert tombstones.record(higher) is None
    assert tombstones.get(KEYS) == higher


# -- a job whose policy changed -------------------------------------------------------------


def image(version: int) -> Item:
    return {
        **KEYS,
        "updated_at": {"N": str(UPDATED_AT_MS + 60_000)},
        "version": {"N": str(version)},
        "origin": {"S": "us-east-1"},
    }


def insert(version: int, seq: int, pk: str = "z") -> RawRecord:
    new = {**image(version), "pk": {"S": pk}}
    return daemon_record(stream_record("INSERT", {"pk": {"S": pk}}, new, seq=seq), seq)


class Pair:
    """us-east-1's job, now ranking by ``version``, into eu-west-1, with tombstones;
    both tombstone tables hold the row its earlier self (``last_writer_wins`` on
    ``updated_at``) wrote for its delete of ``z``."""

    def __init__(self, endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> None:
        self.us = client("dynamodb", "us-east-1", endpoint)
        self.eu = client("dynamodb", "eu-west-1", endpoint)
        self.us_table, self.eu_table = unique("us"), unique("eu")
        create_table(self.us, self.us_table, stream=None)
        create_table(self.eu, self.eu_table, stream=None)
        self.us_tombs = TombstoneTable(self.us, f"{self.us_table}-tombstones", "us-east-1", 3600)
        self.eu_tombs = TombstoneTable(self.eu, f"{self.eu_table}-tombstones", "eu-west-1", 3600)
        for table in (self.us_tombs, self.eu_tombs):
            table.ensure_exists()
            put_row(table, tomb(LWW))
        text = (
            "task_name: ranked\n"
            f"source: {{region: us-east-1, table: {self.us_table}, endpoint_url: '{endpoint}'}}\n"
            "destinations:\n"
            f"  - {{name: eu, region: eu-west-1, table: {self.eu_table}, "
            f"endpoint_url: '{endpoint}'}}\n"
            "conflict: {policy: version, version_attribute: version}\n"
            "loop_prevention: {origin_attribute: origin}\n"
            "active_active: {tombstones: true}\n"
            f"dead_letter: {{path: '{tmp_path / 'dead.jsonl'}'}}\n"
            "metrics: {enabled: false}\n"
            "watermark: {enabled: false}\n"
        )
        self.shard = InProcessShard(text, tmp_path, metrics)

    def held(self, ddb: Any, table: str, pk: str = "z") -> Item | None:
        found = ddb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        item: Item | None = found.get("Item")
        return item


@pytest.fixture
def pair(moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> Iterator[Pair]:
    made = Pair(moto_endpoint, unique, tmp_path, metrics)
    yield made
    made.shard.close()


def test_a_put_after_the_policy_changed_survives_in_both_regions(pair: Pair) -> None:
    """The delete was ranked by updated_at (1796298543348); the put at version 9 is not
    below it, whatever a version is compared with: it stays in us and reaches eu."""
    pair.us.put_item(TableName=pair.us_table, Item=image(9))
    with structlog.testing.capture_logs() as logged:
        pair.shard.send([insert(9, 1)])
        pair.shard.settle()
    assert pair.held(pair.us, pair.us_table) == image(9)
    assert pair.held(pair.eu, pair.eu_table) == image(9)
    assert not [line for line in logged if line["event"] == "local write corrected in the source"]
    warned = [line for line in logged if line["log_level"] == "warning"]
    assert warned and all(line["job_ranking"] == "version on version" for line in warned)
    named = {pair.us_tombs.table, pair.eu_tombs.table}
    assert all(line["table"].split()[2] in named for line in warned)
    assert not [line for line in logged if line["log_level"] == "error"]


def test_a_delete_after_the_policy_changed_replaces_the_old_row(pair: Pair) -> None:
    pair.us.put_item(TableName=pair.us_table, Item=image(9))
    pair.eu.put_item(TableName=pair.eu_table, Item=image(9))
    record = stream_record("REMOVE", KEYS, None, image(9), seq=1)
    pair.shard.send([daemon_record(record, 1)])
    pair.shard.settle()
    assert pair.held(pair.eu, pair.eu_table) is None
    for table in (pair.us_tombs, pair.eu_tombs):
        row = table.get(KEYS)
        assert row is not None and row.ranking == VERSION, table.table
        assert row.ordering == {"N": "9"}


def test_another_regions_row_ranked_otherwise_says_the_pair_disagrees(pair: Pair) -> None:
    """eu's job wrote a row, for a delete made while this job ran, ranked by updated_at:
    it ranks otherwise now, which no configuration this job reads shows."""
    now_ms = int(time.time() * 1000)
    for pk in ("a", "b"):
        row = tomb(LWW, keys={"pk": {"S": pk}}, written_by="eu-west-1", deleted_at_ms=now_ms)
        put_row(pair.us_tombs, row)
        pair.us.put_item(TableName=pair.us_table, Item={**image(9), "pk": {"S": pk}})
    with structlog.testing.capture_logs() as logged:
        pair.shard.send([insert(9, 1, "a"), insert(9, 2, "b")])
        pair.shard.settle()
    assert pair.held(pair.eu, pair.eu_table, "a") is not None
    assert pair.held(pair.eu, pair.eu_table, "b") is not None
    errors = [line for line in logged if line["log_level"] == "error"]
    assert len(errors) == 1, logged
    assert errors[0]["tombstone_ranking"] == "last_writer_wins on updated_at"
    assert errors[0]["job_ranking"] == "version on version"
    assert (errors[0]["written_by"], errors[0]["origin"]) == ("eu-west-1", "us-east-1")
