"""Stages 4-5 against a real moto server over HTTP: every conflict rule, delete rule and
dead-letter path, checked by reading the destination table afterwards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from replicator.aws.backoff import Backoff
from replicator.config.model import ConflictConfig
from replicator.conflictlog.base import Loss
from replicator.deadletter import FileDeadLetters
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.exceptions import DestinationRefused
from replicator.metrics import Metrics
from replicator.rules import rule_for
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import DEAD_LETTER_REASONS, Outcome
from tests.support.aws import client, create_table
from tests.support.metrics import sample
from tests.support.records import daemon_record, put, remove, stream_record

REGION = "eu-west-1"


class Destination:
    def __init__(self, endpoint: str, table: str, tmp: Path, metrics: Metrics) -> None:
        self.ddb = client("dynamodb", REGION, endpoint)
        self.table = table
        self.dead_letters = FileDeadLetters(tmp / "dead.jsonl")
        # What the pipeline does with a write that fails: stores it as a dead letter.
        self.letters = DeadLetterer(self.dead_letters, metrics, "task", "shard-1")
        self.metrics = metrics
        create_table(self.ddb, table, stream=None)

    def writer(self, origin: str | None = None, **conflict: Any) -> DestinationWriter:
        return DestinationWriter(
            label="dest",
            table=self.table,
            region=REGION,
            client=self.ddb,
            rule=rule_for(ConflictConfig(**conflict), origin),
            metrics=self.metrics,
            backoff=Backoff(0.0001, 0.001),
        )

    def seed(self, pk: str, **attributes: Any) -> None:
        item = {"pk": {"S": pk}}
        for name, value in attributes.items():
            item[name] = {"N": str(value)} if isinstance(value, int) else {"S": str(value)}
        self.ddb.put_item(TableName=self.table, Item=item)

    def get(self, pk: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.ddb.get_item(
            TableName=self.table, Key={"pk": {"S": pk}}, ConsistentRead=True
        ).get("Item")
        return item


@pytest.fixture
def dest(moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> Destination:
    return Destination(moto_endpoint, unique("dest"), tmp_path, metrics)


LWW = {"policy": "last_writer_wins", "timestamp_attribute": "ts"}


def test_overwrite_writes_unconditionally(dest: Destination) -> None:
    dest.seed("a", ts=50, v="newer")
    writer = dest.writer(policy="overwrite")
    assert writer.write(decode(put("a", 1, ts=10, v="older"))).outcome is Outcome.APPLIED
    assert dest.get("a")["v"] == {"S": "older"}  # type: ignore[index]
    assert writer.write(decode(remove("a", 2))).outcome is Outcome.APPLIED
    assert dest.get("a") is None


def test_last_writer_wins_keeps_the_newer_item(dest: Destination) -> None:
    dest.seed("a", ts=50, v="dest")
    writer = dest.writer(**LWW)
    assert writer.write(decode(put("a", 1, ts=40, v="old"))).outcome is Outcome.CONFLICT_LOST
    assert dest.get("a")["v"] == {"S": "dest"}  # type: ignore[index]
    assert writer.write(decode(put("a", 2, ts=60, v="new"))).outcome is Outcome.APPLIED
    assert dest.get("a")["v"] == {"S": "new"}  # type: ignore[index]
    assert writer.write(decode(put("b", 3, ts=1, v="fresh"))).outcome is Outcome.APPLIED
    assert dest.get("b")["v"] == {"S": "fresh"}  # type: ignore[index]
    assert (
        sample(
            dest.metrics,
            "replicator_writes_total",
            destination="dest",
            op="put",
            outcome="conflict_lost",
        )
        == 1
    )
    assert (
        sample(
            dest.metrics, "replicator_writes_total", destination="dest", op="put", outcome="applied"
        )
        == 2
    )


def test_last_writer_wins_on_iso_string_timestamps(dest: Destination) -> None:
    dest.seed("a", ts="2026-11-22T10:00:00Z", v="dest")
    writer = dest.writer(**LWW)
    older = put("a", 1, ts="2026-11-22T09:59:59Z", v="old")
    newer = put("a", 2, ts="2026-11-22T10:00:01Z", v="new")
    assert writer.write(decode(older)).outcome is Outcome.CONFLICT_LOST
    assert writer.write(decode(newer)).outcome is Outcome.APPLIED
    assert dest.get("a")["v"] == {"S": "new"}  # type: ignore[index]


def test_equal_timestamps_without_an_origin_have_one_winner_by_digest(dest: Destination) -> None:
    """Two regions writing the same timestamp without a stamp must not swap their images:
    the image with the higher digest wins, whichever arrives first, and the same image
    arriving again is left alone (outcome unchanged)."""
    rule = dest.writer(**LWW).rule
    first, second = put("a", 1, ts=50, v="one"), put("a", 2, ts=50, v="two")
    images = [decode(first).new_image, decode(second).new_image]
    winner = max(images, key=rule.rank)  # type: ignore[attr-defined]
    for pk, order in (("a", (first, second)), ("b", (second, first))):
        dest.ddb.delete_item(TableName=dest.table, Key={"pk": {"S": "a"}})
        for record in order:
            dest.writer(**LWW).write(decode(record))
        assert dest.get("a")["v"] == winner["v"], pk  # type: ignore[index]
    again = dest.writer(**LWW).write(decode(first if winner == images[0] else second))
    assert again.outcome is Outcome.UNCHANGED
    assert (
        sample(
            dest.metrics,
            "replicator_writes_total",
            destination="dest",
            op="put",
            outcome="unchanged",
        )
        == 1
    )


def test_equal_timestamps_are_broken_by_origin_region(dest: Destination) -> None:
    dest.seed("a", ts=50, origin="us-east-1", v="from-us")
    writer = dest.writer(origin="origin", **LWW)
    # eu-west-1 > us-east-1 is false lexically ("e" < "u"): the destination keeps its item
    lost = put("a", 1, ts=50, origin="eu-west-1", v="from-eu")
    assert writer.write(decode(lost)).outcome is Outcome.CONFLICT_LOST
    assert dest.get("a")["v"] == {"S": "from-us"}  # type: ignore[index]
    dest.seed("b", ts=50, origin="eu-west-1", v="from-eu")
    won = put("b", 2, ts=50, origin="us-east-1", v="from-us")
    assert writer.write(decode(won)).outcome is Outcome.APPLIED
    assert dest.get("b")["v"] == {"S": "from-us"}  # type: ignore[index]


def test_items_without_the_timestamp_rank_below_items_with_it(dest: Destination) -> None:
    dest.seed("has", ts=1, v="dest")
    dest.seed("lacks", v="dest")
    writer = dest.writer(**LWW)
    assert writer.write(decode(put("has", 1, v="no-ts"))).outcome is Outcome.CONFLICT_LOST
    assert writer.write(decode(put("lacks", 2, v="no-ts"))).outcome is Outcome.APPLIED
    assert writer.write(decode(put("lacks", 3, ts=5, v="with-ts"))).outcome is Outcome.APPLIED
    assert dest.get("has")["v"] == {"S": "dest"}  # type: ignore[index]
    assert dest.get("lacks")["v"] == {"S": "with-ts"}  # type: ignore[index]


def test_delete_applies_only_when_the_destination_is_not_newer(dest: Destination) -> None:
    dest.seed("old", ts=10)
    dest.seed("new", ts=99)
    writer = dest.writer(**LWW)
    assert writer.write(decode(remove("old", 1, ts=10))).outcome is Outcome.APPLIED
    assert writer.write(decode(remove("new", 2, ts=10))).outcome is Outcome.CONFLICT_LOST
    assert writer.write(decode(remove("absent", 3, ts=10))).outcome is Outcome.APPLIED
    assert dest.get("old") is None
    assert dest.get("new") is not None


def test_delete_without_old_image_is_dead_lettered_under_lww(dest: Destination) -> None:
    dest.seed("a", ts=10)
    payload = stream_record("REMOVE", {"pk": {"S": "a"}}, None, None, seq=7)
    result = dest.letters.write(dest.writer(**LWW), decode(daemon_record(payload, 7)))
    assert result.outcome is Outcome.FAILED and result.reason == "unplannable"
    (letter,) = dest.dead_letters.letters()
    assert letter.reason == "unplannable" and "NEW_AND_OLD_IMAGES" in letter.error
    assert dest.get("a") is not None


def test_version_policy_keeps_the_higher_version(dest: Destination) -> None:
    dest.seed("a", version=3, v="v3")
    writer = dest.writer(policy="version", version_attribute="version")
    assert writer.write(decode(put("a", 1, version=2, v="v2"))).outcome is Outcome.CONFLICT_LOST
    assert writer.write(decode(put("a", 2, version=4, v="v4"))).outcome is Outcome.APPLIED
    assert dest.get("a")["v"] == {"S": "v4"}  # type: ignore[index]
    assert writer.write(decode(remove("a", 3, version=3))).outcome is Outcome.CONFLICT_LOST
    assert writer.write(decode(remove("a", 4, version=4))).outcome is Outcome.APPLIED
    assert dest.get("a") is None


def test_version_policy_rejects_a_string_version(dest: Destination) -> None:
    writer = dest.writer(policy="version", version_attribute="version")
    result = dest.letters.write(writer, decode(put("a", 1, version="three")))
    assert result.outcome is Outcome.FAILED
    assert "expected N" in dest.dead_letters.letters()[0].error


# -- custom resolver ----------------------------------------------------------------------

CALLS: list[tuple[str, Any]] = []


def merge_counts(incoming: Any, existing: Any) -> Any:
    """Test resolver: keeps the larger 'count' of the two images."""
    CALLS.append((incoming.sequence_number, existing))
    if existing is None or incoming.new_image is None:
        return True
    if int(existing["count"]["N"]) >= int(incoming.new_image["count"]["N"]):
        return False
    return {**incoming.new_image, "merged": {"BOOL": True}}


def test_custom_resolver_decides_from_incoming_and_existing(dest: Destination) -> None:
    dest.seed("a", count=5)
    writer = dest.writer(policy="custom", resolver="tests.writers.test_writers:merge_counts")
    assert writer.write(decode(put("a", 1, count=3))).outcome is Outcome.CONFLICT_LOST
    assert writer.write(decode(put("a", 2, count=9))).outcome is Outcome.APPLIED
    assert dest.get("a") == {"pk": {"S": "a"}, "count": {"N": "9"}, "merged": {"BOOL": True}}
    assert writer.write(decode(put("new", 3, count=1))).outcome is Outcome.APPLIED


def test_custom_resolver_retries_when_the_item_changes_under_it(dest: Destination) -> None:
    dest.seed("a", count=1)
    writer = dest.writer(policy="custom", resolver="tests.writers.test_writers:merge_counts")
    original = writer.rule.plan
    interfered = []

    def plan_then_interfere(change: Any, existing: Any = None) -> Any:
        request = original(change, existing)
        if not interfered:  # a concurrent writer changes the item after our read
            interfered.append(True)
            dest.seed("a", count=2)
        return request

    writer.rule.plan = plan_then_interfere  # type: ignore[method-assign]
    assert writer.write(decode(put("a", 1, count=7))).outcome is Outcome.APPLIED
    assert dest.get("a")["count"] == {"N": "7"}  # type: ignore[index]
    assert (
        sample(
            dest.metrics,
            "replicator_retries_total",
            destination="dest",
            reason="optimistic_conflict",
        )
        == 1
    )


def test_custom_resolver_gives_up_on_an_item_that_keeps_changing_naming_the_resolver(
    dest: Destination,
) -> None:
    """Every plan is made on a read the item no longer matches: after
    ``max_optimistic_attempts`` failed conditions the change fails, its letter naming
    the resolver that read the item."""
    dest.seed("a", count=2)
    writer = dest.writer(policy="custom", resolver="tests.writers.test_writers:merge_counts")
    original = writer.rule.plan
    stale = {"pk": {"S": "a"}, "count": {"N": "1"}}
    writer.rule.plan = lambda change, existing=None: original(change, stale)  # type: ignore[method-assign]
    result = dest.letters.write(writer, decode(put("a", 1, count=7)))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "optimistic_conflicts")
    (letter,) = dest.dead_letters.letters()
    assert letter.error == (
        "the item changed between read and write 10 times in a row "
        "(rule: custom resolver tests.writers.test_writers:merge_counts)"
    )
    assert dest.get("a") == {"pk": {"S": "a"}, "count": {"N": "2"}}


def test_custom_resolver_updates_an_item_with_more_attributes_than_one_condition_holds(
    dest: Destination,
) -> None:
    """300 attributes do not fit in one condition comparing them all: the item is still
    updated, on a condition over its key and as many attributes as fit."""
    many = {f"attr{index:03}": index for index in range(300)}
    dest.seed("a", count=1, **many)
    writer = dest.writer(policy="custom", resolver="tests.writers.test_writers:merge_counts")
    assert writer.write(decode(put("a", 1, count=7, **many))).outcome is Outcome.APPLIED
    item = dest.get("a")
    assert item is not None and item["count"] == {"N": "7"} and len(item) == 303


def keep_unless_newer(incoming: Any, existing: Any) -> bool:
    """Test resolver: deletes are never replicated; a put only when its 'count' is higher
    (the review's "incoming updated_at > existing updated_at")."""
    CALLS.append((incoming.sequence_number, existing))
    if incoming.new_image is None:
        return False
    if existing is None:
        return True
    return int(incoming.new_image["count"]["N"]) > int(existing["count"]["N"])


class Losses:
    """A conflict recorder that keeps what it is given."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def lost(self, loss: Loss) -> None:
        self.keys.append(loss.change.keys["pk"]["S"])


def test_custom_resolver_keeping_what_the_change_leaves_is_unchanged_not_lost(
    dest: Destination,
) -> None:
    """The incoming image is there already (a replay, a backfill's copy), or a delete
    finds no item, and the resolver says "keep the destination's item": ``unchanged``, as
    under the ordered rules, and not recorded. That was a lost conflict of an image
    against itself. The resolver is still asked each time; a put that does lose is still
    a lost conflict, recorded."""
    dest.seed("a", count=5, v="same")
    writer = dest.writer(policy="custom", resolver="tests.writers.test_writers:keep_unless_newer")
    writer.conflict_log = losses = Losses()
    CALLS.clear()
    assert writer.write(decode(put("a", 1, count=5, v="same"))).outcome is Outcome.UNCHANGED
    assert writer.write(decode(remove("gone", 2, count=1))).outcome is Outcome.UNCHANGED
    assert writer.write(decode(put("a", 3, count=5, v="other"))).outcome is Outcome.CONFLICT_LOST
    assert [sequence for sequence, _ in CALLS] == ["1", "2", "3"]
    assert losses.keys == ["a"]
    assert dest.get("a") == {"pk": {"S": "a"}, "count": {"N": "5"}, "v": {"S": "same"}}
    assert dest.get("gone") is None
    for op, outcome, expected in (
        ("put", "unchanged", 1),
        ("delete", "unchanged", 1),
        ("put", "conflict_lost", 1),
    ):
        found = sample(
            dest.metrics, "replicator_writes_total", destination="dest", op=op, outcome=outcome
        )
        assert found == expected, (op, outcome)


def soft_delete_and_mark(incoming: Any, existing: Any) -> Any:
    """Test resolver: a delete becomes a marker item; a put is written marked as
    resolved."""
    if incoming.new_image is None:
        return {**incoming.keys, "deleted": {"BOOL": True}}
    return {**incoming.new_image, "resolved": {"BOOL": True}}


def test_custom_resolver_writes_what_it_returns_where_the_change_would_change_nothing(
    dest: Destination,
) -> None:
    """The function decides, also when the destination already holds what the change
    leaves there: a delete of an item that is not there leaves the resolver's marker, and
    a put of the image the destination holds leaves the resolver's version of it. Both
    were ``unchanged``, the resolver not asked and nothing written."""
    dest.seed("a", count=5)
    writer = dest.writer(
        policy="custom", resolver="tests.writers.test_writers:soft_delete_and_mark"
    )
    assert writer.write(decode(remove("gone", 1, count=1))).outcome is Outcome.APPLIED
    assert writer.write(decode(put("a", 2, count=5))).outcome is Outcome.APPLIED
    assert dest.get("gone") == {"pk": {"S": "gone"}, "deleted": {"BOOL": True}}
    assert dest.get("a") == {"pk": {"S": "a"}, "count": {"N": "5"}, "resolved": {"BOOL": True}}


def move_to_another_key(incoming: Any, existing: Any) -> Any:
    """Test resolver: returns the image under another key (not allowed)."""
    return {**incoming.new_image, "pk": {"S": "elsewhere-" + incoming.keys["pk"]["S"]}}


def test_a_custom_resolver_returning_another_key_is_dead_lettered_not_written(
    dest: Destination,
) -> None:
    writer = dest.writer(policy="custom", resolver="tests.writers.test_writers:move_to_another_key")
    result = dest.letters.write(writer, decode(put("a", 1, count=3)))
    assert result.outcome is Outcome.FAILED
    assert dest.get("a") is None and dest.get("elsewhere-a") is None
    (letter,) = dest.dead_letters.letters()
    assert "key attributes ['pk'] differ" in letter.error


# -- dead letters and refusals ------------------------------------------------------------


def test_item_the_destination_rejects_is_dead_lettered_whole(dest: Destination) -> None:
    # An empty string as the key: a value DynamoDB refuses. (A key of another type than
    # the table's is another key schema, never a dead letter.)
    empty_key = stream_record("INSERT", {"pk": {"S": ""}}, {"pk": {"S": ""}}, seq=42)
    record = daemon_record(empty_key, 42)
    result = dest.letters.write(dest.writer(policy="overwrite"), decode(record))
    assert result.outcome is Outcome.FAILED and result.reason == "rejected"
    lines = (dest.dead_letters.path).read_text().splitlines()
    entry = json.loads(lines[0])
    assert entry["reason"] == "rejected"
    assert "ValidationException" in entry["error"]
    assert entry["record"] == dict(record)  # the raw record, byte for byte
    assert entry["destination"] == "dest" and entry["table"] == dest.table
    assert entry["keys"] == {"pk": {"S": ""}}
    assert (
        sample(dest.metrics, "replicator_dead_letters_total", destination="dest", reason="rejected")
        == 1
    )


def test_a_shards_writer_starts_its_dead_letter_series_at_zero(dest: Destination) -> None:
    """A restarted replicator counting as many letters as the run before it would show
    no increase() (docker/prometheus/alerts.test.yml); born at 0, its first is one.
    An operator tool's writer (no shard) adds no series."""
    registry = dest.metrics.registry
    assert registry is not None
    names = ("replicator_dead_letters_total", "replicator_dead_letters_already_stored_total")
    dest.writer(policy="overwrite")
    for name in names:
        assert (
            registry.get_sample_value(name, {"destination": "dest", "reason": "rejected"}) is None
        )
    dataclasses.replace(dest.writer(policy="overwrite"), shard="shard-1")
    for name in names:
        for reason in DEAD_LETTER_REASONS:
            labels = {"destination": "dest", "reason": reason}
            assert registry.get_sample_value(name, labels) == 0, (name, reason)


def test_a_missing_destination_table_stops_the_writer(dest: Destination) -> None:
    writer = dest.writer(policy="overwrite")
    writer.table = "no-such-table"
    with pytest.raises(DestinationRefused, match="refused 20 writes"):
        writer.write(decode(put("a", 1)))
    assert dest.dead_letters.letters() == []
