"""Write-back, tombstones and the stale-write stage, one mechanism at a time: a destination
writer and the source writer against two tables of a moto server over HTTP, and the
stage (replicator/highwater.py) on decoded changes. The meshes that use them all at once
are in tests/reliability/test_active_active.py and test_active_active_mesh.py."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError

from replicator.aws.backoff import Backoff
from replicator.conflictlog.entry import LostConflict
from replicator.conflictlog.recorder import ShardConflicts
from replicator.decode import decode
from replicator.exceptions import DestinationRefused
from replicator.filters import Route
from replicator.highwater import HighWater
from replicator.items import Item, KeyId, key_id
from replicator.metrics import Metrics
from replicator.records import Change, Event
from replicator.rules import OrderedRule
from replicator.rules.order import image_digest
from replicator.rules.requests import WriteRequest, write_over
from replicator.tombstones.model import Ranking, Tombstone, tombstone_of
from replicator.tombstones.table import TombstoneTable
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome
from replicator.writers.source import SourceWriter
from tests.support.aws import client, create_table
from tests.support.e2e import wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.metrics import sample
from tests.support.records import daemon_record, stream_record

RULE = OrderedRule("last_writer_wins", "ts", "origin", numeric_only=False)
KEY = {"pk": {"S": "k"}}


def image(ts: int, origin: str, v: str = "x") -> Item:
    return {**KEY, "ts": {"N": str(ts)}, "origin": {"S": origin}, "v": {"S": v}}


def tombstone(
    deleted: Item,
    region: str,
    deleted_at_ms: int,
    expires_at: int,
    rule: OrderedRule | None = None,
) -> Tombstone:
    """The tombstone ``region``'s job records for its delete of ``deleted``; ``rule``:
    ranked by that rule, and saying so (else by RULE, a row that does not say)."""
    return tombstone_of(
        deleted,
        KEY,
        (rule or RULE).fields,
        deleted_in=region,
        written_by=region,
        deleted_at_ms=deleted_at_ms,
        expires_at=expires_at,
        ranking=Ranking(rule.name, rule.attribute) if rule else None,
    )


def change(event: str, new: Item | None = None, old: Item | None = None, seq: int = 1) -> Change:
    return decode(daemon_record(stream_record(event, KEY, new, old, seq=seq), seq))


@dataclass
class Recorded:
    """A conflict recorder that keeps what it is told."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def lost(self, conflict: LostConflict) -> None:
        self.entries.append(
            {
                "where": conflict.destination,
                "loser": conflict.change.image,
                "winner": conflict.existing,
                "write_back": conflict.write_back,
                "winning_rank": conflict.winning_rank,
                "why": conflict.why,
            }
        )


class Pair:
    """Region A (the source) and region B (the destination), each with its tombstones."""

    def __init__(self, endpoint: str, name: str, tmp: Path, metrics: Metrics) -> None:
        self.a = client("dynamodb", "us-east-1", endpoint)
        self.b = client("dynamodb", "eu-west-1", endpoint)
        self.table = name
        self.metrics = metrics
        self.log = Recorded()
        recorder = ShardConflicts(self.log, "task", "shard")
        for ddb in (self.a, self.b):
            create_table(ddb, name, stream=None)
        self.tombs_a = TombstoneTable(self.a, f"{name}-tombstones", "us-east-1", 3600)
        self.tombs_b = TombstoneTable(self.b, f"{name}-tombstones", "eu-west-1", 3600)
        for tombs in (self.tombs_a, self.tombs_b):
            tombs.ensure_exists()
        common: dict[str, Any] = {
            "table": name,
            "rule": RULE,
            "metrics": metrics,
            "backoff": Backoff(0.0001, 0.001),
            "origin": "us-east-1",
        }
        self.source = SourceWriter(
            DestinationWriter(
                label=f"us-east-1/{name}",
                region="us-east-1",
                client=self.a,
                tombstones=self.tombs_a,
                counted=False,
                **common,
            ),
            RULE,
            metrics,
            recorder,
        )
        self.writer = DestinationWriter(
            label="b",
            region="eu-west-1",
            client=self.b,
            tombstones=self.tombs_b,
            write_back=self.source,
            conflict_log=recorder,
            **common,
        )

    def get(self, ddb: Any) -> Item | None:
        item: Item | None = ddb.get_item(TableName=self.table, Key=KEY, ConsistentRead=True).get(
            "Item"
        )
        return item


@pytest.fixture
def pair(moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> Pair:
    return Pair(moto_endpoint, unique("wb"), tmp_path, metrics)


def test_a_lost_put_writes_the_winner_back_to_the_source_once(pair: Pair) -> None:
    stale, winner = image(12, "us-east-1", "stale"), image(13, "eu-west-1", "newer")
    pair.a.put_item(TableName=pair.table, Item=stale)
    pair.b.put_item(TableName=pair.table, Item=winner)
    assert pair.writer.write(change("MODIFY", stale)).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == winner == pair.get(pair.b)
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination="b") == 1
    assert [e["write_back"] for e in pair.log.entries] == [True]
    # The same change again (a replay): the source already holds the winner, so nothing
    # is written back; the conflict is lost and recorded again, its write-back false.
    assert pair.writer.write(change("MODIFY", stale)).outcome is Outcome.CONFLICT_LOST
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination="b") == 1
    assert [e["write_back"] for e in pair.log.entries] == [True, False]


def test_a_write_back_never_replaces_a_newer_source_item(pair: Pair) -> None:
    newest = image(14, "us-east-1", "newest")
    pair.a.put_item(TableName=pair.table, Item=newest)
    pair.b.put_item(TableName=pair.table, Item=image(13, "eu-west-1"))
    assert (
        pair.writer.write(change("MODIFY", image(12, "us-east-1"))).outcome is Outcome.CONFLICT_LOST
    )
    assert pair.get(pair.a) == newest
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination="b") == 0


def test_a_delete_leaves_a_tombstone_that_stops_a_lower_put_on_both_sides(pair: Pair) -> None:
    deleted = image(20, "eu-west-1", "deleted")
    pair.b.put_item(TableName=pair.table, Item=deleted)
    assert pair.writer.write(change("REMOVE", None, deleted)).outcome is Outcome.APPLIED
    assert pair.get(pair.b) is None
    tombstone = pair.tombs_b.get(KEY)
    assert tombstone is not None and tombstone.rank == RULE.rank(deleted)
    assert sample(pair.metrics, "replicator_tombstones_written_total", destination="b") == 1
    # The same delete coming back (an echo from B's own stream, through another job):
    # the tombstone is already there, written by someone else; nothing to do.
    echo = replace(pair.writer, origin="ap-southeast-2")
    assert echo.write(change("REMOVE", None, deleted)).outcome is Outcome.UNCHANGED
    # A stale put from A (stamped below the deleted image) reaches B: it is undone, and
    # the delete is written back to A, whose stale item goes.
    stale = image(19, "us-east-1", "stale")
    pair.a.put_item(TableName=pair.table, Item=stale)
    assert pair.writer.write(change("MODIFY", stale, seq=2)).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.b) is None and pair.get(pair.a) is None
    source_tomb = pair.tombs_a.get(KEY)
    assert source_tomb is not None and source_tomb.rank == tombstone.rank
    (entry,) = pair.log.entries
    assert entry["write_back"] and entry["winner"] is None
    assert entry["winning_rank"]["delete"] is True
    # A put that ranks above the delete brings the item back, as it should.
    newer = image(21, "us-east-1", "newer")
    assert pair.writer.write(change("MODIFY", newer, seq=3)).outcome is Outcome.APPLIED
    assert pair.get(pair.b) == newer


def test_a_put_past_the_tombstone_retention_is_applied_and_counted(pair: Pair) -> None:
    deleted = image(20, "eu-west-1")
    old = tombstone(deleted, "eu-west-1", 1, expires_at=int(time.time()) - 1)
    pair.b.put_item(TableName=f"{pair.table}-tombstones", Item=old.to_item())
    stale = image(19, "us-east-1")
    assert pair.writer.write(change("MODIFY", stale)).outcome is Outcome.APPLIED
    assert pair.get(pair.b) == stale
    assert sample(pair.metrics, "replicator_tombstones_expired_total", destination="b") == 1
    # An expired tombstone is replaced by a new delete even if that one ranks lower.
    assert pair.tombs_b.record(tombstone(stale, "x", 2, pair.tombs_b.expiry())) is None


def test_the_source_writer_removes_a_local_insert_below_a_recorded_delete(pair: Pair) -> None:
    deleted = image(20, "us-east-1")
    assert pair.source.write(change("REMOVE", None, deleted)).outcome is Outcome.UNCHANGED
    assert pair.tombs_a.get(KEY) is not None  # the local delete is recorded
    stale = image(18, "us-east-1", "stale")
    pair.a.put_item(TableName=pair.table, Item=stale)  # the application, unconditionally
    assert pair.source.write(change("INSERT", stale, seq=2)).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) is None
    label = f"us-east-1/{pair.table}"
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination=label) == 1
    assert (
        sample(
            pair.metrics,
            "replicator_writes_total",
            destination=label,
            op="put",
            outcome="conflict_lost",
        )
        == 1
    )


def test_a_stale_insert_below_a_delete_is_corrected_logged_and_counted_once(pair: Pair) -> None:
    """The correction deletes the stale item from the source, and that delete's own
    stream record is the job's echo: skipped, not corrected, logged or counted again
    ("at most one write-back follows a lost conflict, and none follows a write-back")."""
    stage = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    deleted = image(20, "us-east-1")
    delete, route, _ = stage.route(change("REMOVE", None, deleted), Route.REPLICATE)
    assert pair.source.write(delete).outcome is Outcome.UNCHANGED  # recorded
    stale = image(18, "us-east-1", "stale")
    pair.a.put_item(TableName=pair.table, Item=stale)  # the application, unconditionally
    correction, route, _ = stage.route(change("INSERT", stale, seq=2), Route.REPLICATE)
    assert correction.corrects is not None and route is Route.REPLICATE
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) is None
    removal = change("REMOVE", None, stale, seq=3)  # the correction's record in A's stream
    assert stage.route(removal, Route.REPLICATE)[1] is Route.LOOP_SKIPPED
    label = f"us-east-1/{pair.table}"
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination=label) == 1
    assert len(pair.log.entries) == 1 and pair.log.entries[0]["loser"] == stale
    assert pair.log.entries[0]["winning_rank"]["deleted_in"] == "us-east-1"
    assert stage.corrections == 1


def test_an_applications_fix_of_a_timestamp_of_the_wrong_type_is_sent_on_not_undone(
    pair: Pair,
) -> None:
    """``ts: true`` is dead-lettered; the application's fix (a number) after it is not a
    stale write below it: it is sent on and stays in the source. The wrong-typed image
    ranked above every number and became the item's highest state: the fix was
    "corrected" back to it in the source, and dead-lettered in its place."""
    stage = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    wrong = {**image(0, "us-east-1", "bad"), "ts": {"BOOL": True}}
    pair.a.put_item(TableName=pair.table, Item=wrong)  # the application
    insert, route, _ = stage.route(change("INSERT", wrong), Route.REPLICATE)
    assert insert.corrects is None and route is Route.REPLICATE
    result = pair.writer.write(insert)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "unplannable")
    fix = image(1800000000000, "us-east-1", "fixed")
    pair.a.put_item(TableName=pair.table, Item=fix)  # the application repairs it
    sent, route, _ = stage.route(change("MODIFY", fix, wrong, seq=2), Route.REPLICATE)
    assert sent.corrects is None and sent.new_image == fix and route is Route.REPLICATE
    assert stage.corrections == 0
    assert pair.writer.write(sent).outcome is Outcome.APPLIED
    assert pair.get(pair.a) == fix == pair.get(pair.b)


# Not a map or a list: moto answers 500 when a condition compares one with a number
# (DynamoDB finds the condition false), and the write is retried for ever.
@pytest.mark.parametrize("held", [{"BOOL": True}, {"NULL": True}])
def test_a_valid_put_replaces_an_item_whose_timestamp_is_of_the_wrong_type(
    pair: Pair, held: Any
) -> None:
    """An item an application wrote in B with ``ts: true`` (its own job dead-letters it)
    ranks as an item without a timestamp: a valid put from A replaces it, and nothing is
    written back to A. It outranked every number, so A's write was lost there and the
    wrong item written back over A's."""
    wrong = {**image(0, "eu-west-1", "bad"), "ts": held}
    pair.b.put_item(TableName=pair.table, Item=wrong)
    valid = image(1800000000000, "us-east-1", "valid")
    pair.a.put_item(TableName=pair.table, Item=valid)
    assert pair.writer.write(change("MODIFY", valid)).outcome is Outcome.APPLIED
    assert pair.get(pair.a) == valid == pair.get(pair.b)
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination="b") == 0
    assert pair.log.entries == []


def test_a_string_version_ranks_as_no_version() -> None:
    """Under ``version`` (numbers only) a string version is of the wrong type: it ranks
    below every numeric version, as a missing one does; under last_writer_wins a string
    timestamp ranks above numbers (a table uses one type)."""
    version = OrderedRule("version", "ts", "origin", numeric_only=True)
    as_string = {**image(0, "us-east-1"), "ts": {"S": "9"}}
    assert version.rank(as_string)[:2] == (0, 0) < version.rank(image(1, "us-east-1"))[:2]
    assert RULE.rank(as_string) > RULE.rank(image(10**30, "us-east-1"))
    # A tombstone of such an image ranks it as its rule does.
    for rule in (version, RULE):
        assert tombstone(as_string, "us-east-1", 1, 2, rule).rank == rule.rank(as_string)
    # A value of no ordered type is kept as none: a boolean in the row would be compared
    # with < in its conditions, which DynamoDB refuses for booleans.
    as_bool = {**image(0, "us-east-1"), "ts": {"BOOL": True}}
    stone = tombstone(as_bool, "us-east-1", 1, 2, RULE)
    assert stone.ordering is None and stone.rank == RULE.rank(as_bool)


def test_a_local_write_corrected_by_the_digest_tie_break_says_so(pair: Pair) -> None:
    """Two local writes with the same timestamp and origin rank by their digests: the
    second, below the first, is corrected, and its explanation shows the digests that
    decided, as a destination's does (the ranking fields alone read the same twice)."""
    stage = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    first, second = sorted(
        (image(1800000000000, "us-east-1", v) for v in "AB"), key=image_digest, reverse=True
    )
    pair.a.put_item(TableName=pair.table, Item=second)  # the application, unconditionally
    stale = change("MODIFY", second, first, seq=2)
    correction, _, _ = stage.route(stale, Route.REPLICATE)
    assert correction.corrects is stale and correction.new_image == first
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == first
    (entry,) = pair.log.entries
    assert entry["loser"] == second and entry["winner"] == first
    held, local = (f"digest={image_digest(i)[:12]}" for i in (first, second))
    assert entry["why"] == (
        f"last_writer_wins: the source held an image (ts=1800000000000, origin=us-east-1, "
        f"{held}) that ranks above this local write (ts=1800000000000, origin=us-east-1, "
        f"{local})"
    )


def test_a_stale_insert_below_the_other_regions_delete_names_that_region(pair: Pair) -> None:
    """B's job deleted the item in A (its tombstone recorded there first): A's stream
    shows a delete like A's own. The correction of a stale insert after it names the
    delete as the tombstone table does, B's."""
    stage = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    deleted = image(20, "us-east-1")
    assert pair.tombs_a.record(tombstone(deleted, "eu-west-1", 1, pair.tombs_a.expiry())) is None
    delete, _, _ = stage.route(change("REMOVE", None, deleted), Route.REPLICATE)
    assert pair.source.write(delete).outcome is Outcome.UNCHANGED
    stale = image(18, "us-east-1", "stale")
    pair.a.put_item(TableName=pair.table, Item=stale)  # the application, unconditionally
    correction, _, _ = stage.route(change("INSERT", stale, seq=2), Route.REPLICATE)
    assert correction.corrects is not None and correction.tombstone is None
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) is None
    (entry,) = pair.log.entries
    assert entry["winning_rank"]["delete"] is True
    assert entry["winning_rank"]["deleted_in"] == "eu-west-1"
    held = pair.tombs_a.get(KEY)
    assert held is not None and held.deleted_in == "eu-west-1"


def test_a_stale_insert_below_a_delete_the_stage_forgot_is_corrected_from_its_tombstone(
    pair: Pair,
) -> None:
    """A new process (a stage that never saw the delete) reads the source's tombstone
    before routing the insert: it becomes a correction, B is never written the stale
    image, and the loss is logged once, at the source."""
    first = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    deleted = image(100, "us-east-1")
    delete, _, _ = first.route(change("REMOVE", None, deleted), Route.REPLICATE)
    assert pair.source.write(delete).outcome is Outcome.UNCHANGED  # recorded
    assert pair.writer.write(delete).outcome is Outcome.APPLIED  # replicated: its tombstone
    stage = HighWater(
        RULE, tombstones=True, keep_echoes_apart=True, read_tombstones=pair.source.read_tombstones
    )
    pair.source.notes = stage.notes
    stale = image(50, "us-east-1", "stale")
    pair.a.put_item(TableName=pair.table, Item=stale)  # the application, unconditionally
    insert = change("INSERT", stale, seq=2)
    correction, route, _ = stage.route(insert, Route.REPLICATE)
    assert route is Route.REPLICATE and correction.corrects is insert
    assert correction.event is Event.REMOVE and correction.tombstone is not None
    # B: a delete of nothing (the stale image never went there), its tombstone kept.
    assert pair.writer.write(correction).outcome is Outcome.APPLIED
    assert pair.get(pair.b) is None
    held = pair.tombs_b.get(KEY)
    assert held is not None and held.ordering == {"N": "100"}
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) is None
    # The correction's own record in A's stream is the job's echo.
    assert stage.route(change("REMOVE", None, stale, seq=3), Route.REPLICATE)[1] is (
        Route.LOOP_SKIPPED
    )
    assert len(pair.log.entries) == 1
    entry = pair.log.entries[0]
    assert entry["where"] == f"us-east-1/{pair.table}" and entry["loser"] == stale
    assert entry["write_back"] is True and entry["winning_rank"]["delete"] is True
    # An update of the stale item still below the delete is corrected the same way.
    update = change("MODIFY", image(60, "us-east-1"), stale, seq=4)
    assert stage.route(update, Route.REPLICATE)[0].tombstone is not None


@pytest.mark.parametrize("replayed_from", ["delete", "insert"])
def test_a_restarted_job_corrects_only_the_stale_images_it_reads_again(
    pair: Pair, replayed_from: str
) -> None:
    """The application deleted an item, created it again below the delete, updated it
    above the delete, then wrote a stale update below both (clock behind). A new process
    reads those records again (from the delete, or from the insert when the delete was
    checkpointed): the source now holds the last, stale image. Recording the delete
    again, and correcting the old stale insert, must not remove that image (it is not
    the one they were meant for); its own correction puts the highest image back over
    it, and that correction's record is the job's own."""
    deleted = image(20, "us-east-1", "deleted")
    delete = change("REMOVE", None, deleted)
    first = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    assert pair.source.write(first.route(delete, Route.REPLICATE)[0]).outcome is (
        Outcome.UNCHANGED
    )  # recorded by the process that was stopped
    stale, higher, later = (
        image(18, "us-east-1", "stale"),
        image(30, "us-east-1", "higher"),
        image(19, "us-east-1", "later"),
    )
    pair.a.put_item(TableName=pair.table, Item=later)  # the application's last write
    stage = HighWater(
        RULE, tombstones=True, keep_echoes_apart=True, read_tombstones=pair.source.read_tombstones
    )
    pair.source.notes = stage.notes
    if replayed_from == "delete":
        again, _, _ = stage.route(delete, Route.REPLICATE)
        stage.prefetch([])
        assert pair.source.write(again).outcome is Outcome.UNCHANGED
        assert pair.get(pair.a) == later
    insert = change("INSERT", stale, seq=2)
    correction, route, _ = stage.route(insert, Route.REPLICATE)
    assert route is Route.REPLICATE and correction.corrects is insert
    assert correction.event is Event.REMOVE
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == later  # not the stale insert: it stays
    update = change("MODIFY", higher, stale, seq=3)
    assert stage.route(update, Route.REPLICATE) == (update, Route.REPLICATE, False)
    stale_update = change("MODIFY", later, higher, seq=4)
    put_back, _, _ = stage.route(stale_update, Route.REPLICATE)
    assert put_back.corrects is stale_update and put_back.new_image == higher
    assert pair.source.write(put_back).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == higher
    landed = change("MODIFY", higher, later, seq=5)  # the correction's own record
    assert stage.route(landed, Route.REPLICATE)[1] is Route.LOOP_SKIPPED
    assert [(e["loser"], e["write_back"]) for e in pair.log.entries] == [
        (stale, False),
        (later, True),
    ]
    assert stage.corrections == 2


def test_a_correction_replaces_another_regions_write_landed_over_the_stale_image(
    pair: Pair,
) -> None:
    """B's job replicated an image into A over the stale local write before its
    correction landed (its put applies onto an item ranking below it). That image ranks
    below the correction's and is an echo in A's stream, which nothing else corrects:
    the correction replaces it (or, below a delete, removes it), as it would the stale
    image itself. A later write of A's own application is left to its own record."""
    stage = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    higher, stale = image(30, "us-east-1", "higher"), image(10, "us-east-1", "stale")
    stage.route(change("INSERT", higher), Route.REPLICATE)
    stale_update = change("MODIFY", stale, higher, seq=2)
    put_back, _, _ = stage.route(stale_update, Route.REPLICATE)
    landed = image(20, "eu-west-1", "landed")
    pair.a.put_item(TableName=pair.table, Item=landed)  # B's job, over the stale image
    assert pair.source.write(put_back).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == higher
    # Below a delete: the stale insert's correction removes such an image too.
    delete = change("REMOVE", None, higher, seq=3)
    stage.route(delete, Route.REPLICATE)
    pair.a.delete_item(TableName=pair.table, Key=KEY)
    assert pair.source.write(delete).outcome is Outcome.UNCHANGED
    again = image(25, "us-east-1", "again")
    correction, _, _ = stage.route(change("INSERT", again, seq=4), Route.REPLICATE)
    assert correction.event is Event.REMOVE and correction.old_image == higher
    pair.a.put_item(TableName=pair.table, Item=image(28, "eu-west-1", "landed"))
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) is None
    # This region's own later image below the delete stays: its own record settles it.
    correction, _, _ = stage.route(change("INSERT", image(26, "us-east-1"), seq=5), Route.REPLICATE)
    mine = image(27, "us-east-1", "mine")
    pair.a.put_item(TableName=pair.table, Item=mine)
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == mine
    assert [e["write_back"] for e in pair.log.entries] == [True, True, False]


def test_a_correction_read_again_writes_nothing_where_the_item_is_gone_or_unstamped(
    pair: Pair,
) -> None:
    """A stale update corrected, then the item deleted by the application (replicated
    everywhere): a restart reads the stale update again, and its correction must not put
    the higher image back into an empty source (without tombstones nothing would remove
    it again, and the regions would stay apart). Nor does it replace an image without an
    origin stamp, the application's own later write, which its own record settles."""
    higher, stale = image(30, "eu-west-1", "higher"), image(10, "us-east-1", "stale")
    pair.a.put_item(TableName=pair.table, Item=stale)
    stage = HighWater(RULE, tombstones=False, keep_echoes_apart=True, notes=pair.source.notes)
    first, _, _ = stage.route(change("MODIFY", stale, higher, seq=2), Route.REPLICATE)
    assert first.corrects is not None
    pair.source.write(first)
    assert pair.get(pair.a) == higher
    pair.a.delete_item(TableName=pair.table, Key=KEY)  # the application, replicated
    again = HighWater(RULE, tombstones=False, keep_echoes_apart=True, notes=pair.source.notes)
    replayed, _, _ = again.route(change("MODIFY", stale, higher, seq=2), Route.REPLICATE)
    assert replayed.corrects is not None
    pair.source.write(replayed)
    assert pair.get(pair.a) is None
    unstamped = {**KEY, "ts": {"N": "12"}, "v": {"S": "unstamped"}}
    pair.a.put_item(TableName=pair.table, Item=unstamped)
    later = HighWater(RULE, tombstones=False, keep_echoes_apart=True, notes=pair.source.notes)
    replayed, _, _ = later.route(change("MODIFY", stale, higher, seq=2), Route.REPLICATE)
    pair.source.write(replayed)
    assert pair.get(pair.a) == unstamped


def test_an_insert_above_a_forgotten_delete_is_sent_on_and_read_once(pair: Pair) -> None:
    """A legitimate re-creation above the tombstone is replicated as it is; the stage's
    read of the tombstone stands for the source writer's, which reads nothing more."""
    deleted = image(100, "us-east-1")
    assert pair.source.write(change("REMOVE", None, deleted)).outcome is Outcome.UNCHANGED
    reads: list[object] = []
    get, get_some = pair.tombs_a.get, pair.tombs_a.get_some

    def counted(keys: Item) -> Any:
        reads.append(keys)
        return get(keys)

    def counted_some(pending: dict[str, Any], found: dict[Any, Any]) -> None:
        reads.extend(pending)
        get_some(pending, found)

    pair.tombs_a.get = counted  # type: ignore[method-assign]
    pair.tombs_a.get_some = counted_some  # type: ignore[method-assign]
    stage = HighWater(
        RULE, tombstones=True, notes=pair.source.notes, read_tombstones=pair.source.read_tombstones
    )
    higher = image(150, "us-east-1", "again")
    pair.a.put_item(TableName=pair.table, Item=higher)
    insert = change("INSERT", higher, seq=2)
    assert stage.route(insert, Route.REPLICATE) == (insert, Route.REPLICATE, False)
    assert pair.source.write(insert).outcome is Outcome.UNCHANGED
    assert pair.writer.write(insert).outcome is Outcome.APPLIED
    assert pair.get(pair.a) == higher and pair.get(pair.b) == higher
    assert len(reads) == 1  # the stage's: the source writer does not read it again
    assert stage.corrections == 0 and pair.log.entries == []


def test_an_insert_below_an_expired_forgotten_delete_is_let_in_and_counted(pair: Pair) -> None:
    now = [time.time()]
    pair.tombs_a._clock = lambda: now[0]
    assert pair.source.write(change("REMOVE", None, image(100, "us-east-1"))).outcome is (
        Outcome.UNCHANGED
    )
    now[0] += 3600
    stage = HighWater(
        RULE,
        tombstones=True,
        notes=pair.source.notes,
        read_tombstones=pair.source.read_tombstones,
        clock=lambda: now[0],
    )
    stale = image(50, "us-east-1")
    pair.a.put_item(TableName=pair.table, Item=stale)
    insert = change("INSERT", stale, seq=2)
    assert stage.route(insert, Route.REPLICATE) == (insert, Route.REPLICATE, False)
    assert pair.source.write(insert).outcome is Outcome.UNCHANGED
    assert pair.get(pair.a) == stale
    label = f"us-east-1/{pair.table}"
    assert sample(pair.metrics, "replicator_tombstones_expired_total", destination=label) == 1


def test_keys_a_batch_read_leaves_unprocessed_are_asked_again(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB may answer part of a BatchGetItem (throttled in part): the rest is asked
    for again, after the writer's backoff, and every item's tombstone is read."""
    deleted = image(100, "us-east-1")
    assert pair.source.write(change("REMOVE", None, deleted)).outcome is Outcome.UNCHANGED
    table = pair.tombs_a.table
    batch_get = pair.a.batch_get_item
    asked: list[int] = []

    def in_part(**kwargs: Any) -> Any:
        request = kwargs["RequestItems"][table]
        asked.append(len(request["Keys"]))
        if len(asked) > 1:
            return batch_get(**kwargs)
        first, rest = request["Keys"][:1], request["Keys"][1:]
        answer = batch_get(RequestItems={table: {**request, "Keys": first}})
        answer["UnprocessedKeys"] = {table: {**request, "Keys": rest}}
        return answer

    # The client is the test process's one (tests.support.aws.client): undone after.
    monkeypatch.setattr(pair.a, "batch_get_item", in_part)
    others = [
        decode(
            daemon_record(stream_record("INSERT", {"pk": {"S": pk}}, {"pk": {"S": pk}}, seq=n), n)
        )
        for n, pk in enumerate(("x", "y"), start=2)
    ]
    found = pair.source.read_tombstones([change("INSERT", image(50, "us-east-1")), *others])
    assert asked == [3, 2]
    held = found[change("INSERT", image(50, "us-east-1")).key]
    assert held is not None and held.ordering == {"N": "100"}
    assert [found[other.key] for other in others] == [None, None]
    label = f"us-east-1/{pair.table}"
    assert (
        sample(pair.metrics, "replicator_retries_total", destination=label, reason="throttled") == 1
    )


def test_the_stage_reads_no_tombstone_for_a_key_it_knows() -> None:
    """Bounded: a key with a remembered state decides by it (a stale insert below the
    remembered delete, an update, a delete): the table is read only for what is forgotten."""
    read: list[Change] = []

    def read_tombstones(changes: Sequence[Change]) -> dict[KeyId, Any]:
        read.extend(changes)
        return dict.fromkeys((change.key for change in changes), None)

    stage = HighWater(RULE, tombstones=True, read_tombstones=read_tombstones)
    stage.route(change("REMOVE", None, image(20, "us-east-1")), Route.REPLICATE)
    stage.route(change("INSERT", image(10, "us-east-1"), seq=2), Route.REPLICATE)
    stage.route(
        change("MODIFY", image(30, "us-east-1"), image(10, "us-east-1"), seq=3), Route.REPLICATE
    )
    assert read == []
    other = msgspec.structs.replace(
        change("INSERT", image(1, "us-east-1"), seq=4), key=(("pk", "S", "other"),)
    )
    stage.route(other, Route.REPLICATE)
    assert read == [other]


def test_a_write_back_landing_before_a_local_delete_is_recorded_is_removed_with_it(
    pair: Pair,
) -> None:
    """The application deletes an item in A; before A's job records that delete, a
    write-back from another region's job puts the image back (its tombstone check finds
    nothing yet). Recording the local delete removes what ranks at or below it."""
    deleted = image(20, "us-east-1")
    pair.a.put_item(TableName=pair.table, Item=deleted)  # the write-back, landed first
    assert pair.source.write(change("REMOVE", None, deleted)).outcome is Outcome.UNCHANGED
    assert pair.tombs_a.get(KEY) is not None
    assert pair.get(pair.a) is None
    lower = image(19, "eu-west-1")
    pair.a.put_item(TableName=pair.table, Item=lower)
    assert pair.source.write(change("REMOVE", None, deleted, seq=2)).outcome is Outcome.UNCHANGED
    assert pair.get(pair.a) is None
    higher = image(21, "eu-west-1")
    pair.a.put_item(TableName=pair.table, Item=higher)  # a newer write stays
    assert pair.source.write(change("REMOVE", None, deleted, seq=3)).outcome is Outcome.UNCHANGED
    assert pair.get(pair.a) == higher


@pytest.mark.parametrize("width", [0, 200])
def test_the_deleted_image_put_back_over_a_write_back_before_its_check_is_removed(
    pair: Pair, width: int
) -> None:
    """The application deleted its image in A and A's job recorded the delete. A
    write-back of a lower image from B creates the item in A; before its tombstone check
    reads the row, a correction of an older local write (the higher image the stage saw
    before the delete) replaces it. That image ties the tombstone on (value, origin): the
    check removes it too, or A would hold the deleted item for good. A wide image (more
    attributes than one condition compares) is removed as well."""
    deleted: Item = {
        **image(20, "us-east-1", "deleted"),
        **{f"a{i:03}": {"N": "1"} for i in range(width)},
    }
    assert pair.source.write(change("REMOVE", None, deleted)).outcome is Outcome.UNCHANGED
    assert pair.tombs_a.get(KEY) is not None and pair.get(pair.a) is None
    lower = image(15, "eu-west-1", "lower")
    pair.b.put_item(TableName=pair.table, Item=lower)
    read = pair.tombs_a.get
    landed: list[Item] = []

    def correction_lands_first(keys: Item) -> Tombstone | None:
        if not landed:
            landed.append(deleted)
            assert pair.get(pair.a) == lower  # the write-back created the item
            pair.a.put_item(TableName=pair.table, Item=deleted)  # the correction
        return read(keys)

    pair.tombs_a.get = correction_lands_first  # type: ignore[method-assign]
    older = image(10, "us-east-1", "older")
    assert pair.writer.write(change("INSERT", older)).outcome is Outcome.CONFLICT_LOST
    assert landed == [deleted]
    assert pair.get(pair.a) is None


def test_a_wide_item_changed_unseen_under_a_tombstone_check_is_put_back(pair: Pair) -> None:
    """The wide deleted image put back over a write-back is removed by a delete that
    compares it in part: a write landing just before that delete, changing only an
    attribute it leaves out and ranking above the deleted image by its digest, is
    removed unseen and put back at once, and the stage is told its removal's record is
    the job's own."""
    deleted: Item = {**image(20, "us-east-1"), **{f"a{i:03}": {"N": "1"} for i in range(200)}}
    assert pair.source.write(change("REMOVE", None, deleted)).outcome is Outcome.UNCHANGED
    lower = image(15, "eu-west-1", "lower")
    pair.b.put_item(TableName=pair.table, Item=lower)
    pair.a.put_item(TableName=pair.table, Item=lower)  # the write-back, created
    pair.a.put_item(TableName=pair.table, Item=deleted)  # the correction, over it
    send = pair.source.writer._send
    newer: list[Item] = []

    def newer_lands_first(request: WriteRequest) -> dict[str, Any]:
        if request.expects is not None and not newer:
            left_out = max(set(deleted) - set(request.names.values()))
            newer.append(
                next(
                    item
                    for item in ({**deleted, left_out: {"N": str(n)}} for n in range(2, 50))
                    if RULE.rank(item) > RULE.rank(deleted)
                )
            )
            pair.a.put_item(TableName=pair.table, Item=newer[0])
        return send(request)

    pair.source.writer._send = newer_lands_first  # type: ignore[method-assign]
    assert pair.source.writer.undo_if_deleted(KEY, lower) is not None
    assert len(newer) == 1
    assert pair.get(pair.a) == newer[0]  # removed, and put back
    assert pair.source.notes.is_removal(key_id(KEY), newer[0])


def test_the_record_of_a_write_back_stamped_here_is_not_sent_again(pair: Pair) -> None:
    """A's item lost at B to A's own newer image (written back to A): the write-back's
    record in A's stream is an echo, skipped once."""
    older, newer = image(10, "us-east-1", "older"), image(12, "us-east-1", "newer")
    pair.a.put_item(TableName=pair.table, Item=older)
    pair.b.put_item(TableName=pair.table, Item=newer)
    stage = HighWater(RULE, notes=pair.source.notes)
    stage.route(change("INSERT", older), Route.REPLICATE)
    assert pair.writer.write(change("INSERT", older)).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == newer
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination="b") == 1
    written_back = change("MODIFY", newer, older, seq=2)
    assert stage.route(written_back, Route.REPLICATE)[1] is Route.LOOP_SKIPPED


class _Watched(threading.Condition):
    """A condition that says when someone waits on it."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.waited = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.set()
        return super().wait(timeout)


@contextlib.contextmanager
def _answered_unheard(
    pair: Pair, stage: HighWater, operation: str, record: Change
) -> Iterator[tuple[FaultProxy, list[Route]]]:
    """While in the block, the source writer writes A through a proxy; once A has answered
    its first ``operation`` on the table, and before the writer hears that answer,
    ``record`` is routed by ``stage`` on another thread, until it is routed or waits for
    the writer (on the notes' condition, watched instead of guessing how long). The
    proxy, and the route taken, once the block is left."""
    notes = stage.notes
    watched = _Watched(notes._lock)
    notes._settled = watched
    routed: list[Route] = []
    problems: list[BaseException] = []
    reader = threading.Thread(
        target=lambda: routed.append(stage.route(record, Route.REPLICATE)[1]), name="intake"
    )

    def observe(name: str, body: bytes, status: int) -> None:
        if name != operation or json.loads(body)["TableName"] != pair.table:
            return
        if reader.is_alive() or routed:
            return
        try:
            reader.start()
            wait_until(lambda: routed or watched.waited.is_set(), 30, "the record routed")
        except BaseException as error:  # reported by the test
            problems.append(error)

    proxy = FaultProxy(pair.a.meta.endpoint_url, observe=observe).start()
    try:
        pair.source.writer.client = client("dynamodb", "us-east-1", proxy.url)
        yield proxy, routed
        reader.join(30)
    finally:
        proxy.stop()
    assert not problems, problems


def test_a_local_record_read_while_a_write_back_of_its_image_is_in_flight_is_sent_on(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A wrote ``older`` then ``newer``; B already holds ``newer`` (another job wrote it
    back there). A's job writes ``older`` to B and loses to ``newer``, stamped with A's
    own region, and writes it back to A, which holds it already: nothing is written. The
    application's own record of ``newer`` is read while that write-back is on the wire;
    it must be sent on (to every destination), not taken for the write-back's echo."""
    pair = Pair(moto_endpoint, unique("wb"), tmp_path, metrics)
    older, newer = image(10, "us-east-1", "older"), image(12, "us-east-1", "newer")
    for item in (older, newer):
        pair.a.put_item(TableName=pair.table, Item=item)  # the application
    pair.b.put_item(TableName=pair.table, Item=newer)
    stage = HighWater(RULE, notes=pair.source.notes)
    stage.route(change("INSERT", older), Route.REPLICATE)
    local = change("MODIFY", newer, older, seq=2)  # the application's record of newer
    with _answered_unheard(pair, stage, "PutItem", local) as (proxy, routed):
        assert pair.writer.write(change("INSERT", older)).outcome is Outcome.CONFLICT_LOST
    assert proxy.counts("PutItem")["upstream_400"] == 1  # the write-back found newer there
    assert sample(pair.metrics, "replicator_conflict_writebacks_total", destination="b") == 0
    assert routed == [Route.REPLICATE]


def _wide_tie(pair: Pair, stage: HighWater) -> tuple[Change, Item, Item]:
    """A correction of a stale wide insert below a delete in A, and the newer item the
    application writes in A before the correction lands: the same timestamp and stamp as
    the stale image, differing only in an attribute the correction's delete (of that
    stale image alone) compares not, and ranking above the delete by its digest. (The
    correction, the deleted image, the newer item.)"""
    wide: Item = {**image(20, "us-east-1"), **{f"a{i:03}": {"N": "1"} for i in range(200)}}
    compared = write_over("delete", KEY, wide, None, first=RULE.ranking)
    assert compared.expects is not None  # compared in part
    left_out = max(set(wide) - set(compared.names.values()))
    variants = [{**wide, left_out: {"N": str(n)}} for n in range(2, 50)]
    deleted = variants[0]
    stale = next(item for item in variants if RULE.rank(item) < RULE.rank(deleted))
    newer = next(item for item in variants if RULE.rank(item) > RULE.rank(deleted))
    delete, _, _ = stage.route(change("REMOVE", None, deleted), Route.REPLICATE)
    assert pair.source.write(delete).outcome is Outcome.UNCHANGED  # recorded
    pair.a.put_item(TableName=pair.table, Item=stale)  # the application, unconditionally
    correction, _, _ = stage.route(change("INSERT", stale, seq=2), Route.REPLICATE)
    assert correction.corrects is not None and correction.old_image == deleted
    pair.a.put_item(TableName=pair.table, Item=newer)
    written = change("MODIFY", newer, stale, seq=3)
    assert stage.route(written, Route.REPLICATE) == (written, Route.REPLICATE, False)
    return correction, deleted, newer


def test_a_wide_item_the_source_writer_removed_unseen_and_put_back_is_not_deleted(
    pair: Pair,
) -> None:
    """A correction's delete of a wide stale image compares it only in part: the
    application's newer item, tying with it on everything compared, is removed and put
    back at once
    (docs/conflict-rules.md, "Wide items"). The source's stream then carries that removal
    and the put-back: both are the job's own writes, not the application's delete and a
    stale insert below it, which would delete the newer item in every region."""
    stage = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    correction, deleted, newer = _wide_tie(pair, stage)
    assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert pair.get(pair.a) == newer  # removed, and put back
    # The removal's and the put-back's records in A's stream: the job's own, skipped.
    routes = []
    for record in (change("REMOVE", None, newer, seq=4), change("INSERT", newer, seq=5)):
        routed, route, _ = stage.route(record, Route.REPLICATE)
        routes.append(route)
        if route is Route.REPLICATE:
            pair.source.write(routed)
    assert pair.get(pair.a) == newer
    assert routes == [Route.LOOP_SKIPPED, Route.LOOP_SKIPPED]
    assert stage.corrections == 1
    tombstone = pair.tombs_a.get(KEY)
    assert tombstone is not None and tombstone.rank == RULE.rank(deleted)


def test_a_removal_record_read_while_its_delete_is_answered_waits_for_the_writer(
    pair: Pair,
) -> None:
    """The removal's record can be read before the source writer hears its delete's
    answer: the stage waits for that answer instead of taking the record for the
    application's delete."""
    stage = HighWater(RULE, tombstones=True, keep_echoes_apart=True, notes=pair.source.notes)
    correction, _, newer = _wide_tie(pair, stage)
    removal = change("REMOVE", None, newer, seq=4)
    with _answered_unheard(pair, stage, "DeleteItem", removal) as (_, routed):
        assert pair.source.write(correction).outcome is Outcome.CONFLICT_LOST
    assert routed == [Route.LOOP_SKIPPED]
    assert pair.get(pair.a) == newer


# -- the stage ----------------------------------------------------------------------------


def test_a_local_write_below_the_image_it_replaced_becomes_a_correction() -> None:
    stage = HighWater(RULE)
    newer, stale = image(13, "eu-west-1"), image(12, "us-east-1")
    submitted, route, _ = stage.route(change("MODIFY", stale, newer), Route.REPLICATE)
    assert route is Route.REPLICATE
    assert submitted.corrects is not None and submitted.new_image == newer
    # The correction landing in the source is not sent again (it went everywhere).
    landed = change("MODIFY", newer, stale, seq=2)
    assert stage.route(landed, Route.REPLICATE)[1] is Route.LOOP_SKIPPED


def test_with_tombstones_a_delete_then_a_lower_insert_stays_a_delete() -> None:
    """With tombstones the delete's tombstone decides: an insert below it is turned into
    the delete, and the correction's own delete record is skipped, not corrected again."""
    stage = HighWater(RULE, tombstones=True)
    deleted = image(20, "us-east-1")
    assert stage.route(change("REMOVE", None, deleted), Route.REPLICATE)[0].corrects is None
    stale = image(19, "us-east-1")
    submitted, _, _ = stage.route(change("INSERT", stale, seq=2), Route.REPLICATE)
    assert submitted.event is Event.REMOVE and submitted.old_image == deleted
    assert submitted.corrects is not None
    assert stage.corrections == 1
    # The correction removing the stale insert from the source: one correction only.
    landed = change("REMOVE", None, stale, seq=3)
    assert stage.route(landed, Route.REPLICATE)[1] is Route.LOOP_SKIPPED
    assert stage.corrections == 1
    # A higher insert is a real change.
    higher = change("INSERT", image(21, "us-east-1"), seq=4)
    assert stage.route(higher, Route.REPLICATE)[0] is higher


def test_without_tombstones_an_insert_after_a_delete_re_creates_the_item() -> None:
    """A local insert that the stream carries after a delete was made after it: a
    re-creation at a lower version (DynamoDBMapper) lands, as docs/conflict-rules.md
    says, and nothing is corrected."""
    stage = HighWater(RULE)
    stage.route(change("MODIFY", image(2, "us-east-1"), image(1, "us-east-1")), Route.REPLICATE)
    stage.route(change("REMOVE", None, image(2, "us-east-1"), seq=2), Route.REPLICATE)
    again = change("INSERT", image(1, "us-east-1"), seq=3)
    assert stage.route(again, Route.REPLICATE) == (again, Route.REPLICATE, False)
    assert stage.corrections == 0
    # An update below the re-created item is still a stale local write.
    stale = change("MODIFY", image(0, "us-east-1"), image(1, "us-east-1"), seq=4)
    assert stage.route(stale, Route.REPLICATE)[0].corrects is stale


def test_without_tombstones_an_older_insert_read_after_the_delete_is_corrected() -> None:
    """On Kinesis an insert made before the delete can be read after it: only an insert
    created no earlier than the delete re-creates the item."""
    stage = HighWater(RULE, in_order=False)
    stage.route(change("REMOVE", None, image(2, "us-east-1"), seq=2), Route.REPLICATE)
    older = msgspec.structs.replace(change("INSERT", image(1, "us-east-1"), seq=1), created_us=0)
    assert stage.route(older, Route.REPLICATE)[0].event is Event.REMOVE
    later = change("INSERT", image(1, "us-east-1", "again"), seq=3)
    assert stage.route(later, Route.REPLICATE) == (later, Route.REPLICATE, False)


def test_a_remembered_delete_older_than_the_retention_no_longer_corrects() -> None:
    """A remembered delete counts as long as its tombstone would: past the retention a
    put below it goes on to the source writer's tombstone check (applied, and counted as
    expired there), as docs/active-active.md says of an expired tombstone."""
    now = [0.0]
    stage = HighWater(RULE, tombstones=True, retention_s=3600, clock=lambda: now[0])
    delete = change("REMOVE", None, image(5, "us-east-1"))
    now[0] = delete.created_us / 1_000_000 + 3599
    stage.route(delete, Route.REPLICATE)
    below = change("INSERT", image(3, "eu-west-1", "y"), seq=2)
    assert stage.route(below, Route.REPLICATE)[0].corrects is below  # still counts
    now[0] += 1
    again = change("INSERT", image(3, "us-east-1", "z"), seq=3)
    assert stage.route(again, Route.REPLICATE) == (again, Route.REPLICATE, False)


def test_a_replicated_write_below_a_pending_correction_does_not_replace_it() -> None:
    stage = HighWater(RULE)
    top = image(30, "us-east-1")
    stage.route(change("MODIFY", image(10, "us-east-1"), top), Route.REPLICATE)
    lower_echo = change("MODIFY", image(20, "eu-west-1"), image(10, "us-east-1"), seq=2)
    assert stage.route(lower_echo, Route.LOOP_SKIPPED)[2] is False
    higher_echo = change("MODIFY", image(31, "eu-west-1"), image(20, "eu-west-1"), seq=3)
    assert stage.route(higher_echo, Route.LOOP_SKIPPED)[2] is True


@pytest.mark.parametrize("key_type", ["N", "B"])
def test_a_tombstone_table_keyed_by_another_type_is_refused_at_start(
    moto_endpoint: str, unique: Any, key_type: str
) -> None:
    """Every tombstone is keyed by a string: a table keyed by a number or a binary would
    refuse each one, dead-lettering every replicated delete. It is refused up front."""
    from replicator.exceptions import EnvironmentProblem

    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    name = unique("tomb-type")
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": key_type}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(EnvironmentProblem, match=rf"key schema pk \(HASH, {key_type}\)"):
        TombstoneTable(ddb, name, "eu-west-1", 3600).ensure_exists(wait_s=5)


def test_a_delete_of_an_item_whose_key_is_near_2_kb_leaves_its_tombstone(pair: Pair) -> None:
    """An item key may take 2,048 bytes; its canonical form (names, types, brackets)
    is longer than a partition key may be. The tombstone is kept under the key's
    digest, and the delete replicates and blocks a lower put as for any item."""
    long_key = {"pk": {"S": "L" * 2040}}
    deleted = {**long_key, "ts": {"N": "20"}, "origin": {"S": "eu-west-1"}}
    pair.b.put_item(TableName=pair.table, Item=deleted)

    def long_change(event: str, new: Item | None, old: Item | None, seq: int) -> Change:
        return decode(daemon_record(stream_record(event, long_key, new, old, seq=seq), seq))

    assert pair.writer.write(long_change("REMOVE", None, deleted, 1)).outcome is Outcome.APPLIED
    assert "Item" not in pair.b.get_item(TableName=pair.table, Key=long_key, ConsistentRead=True)
    tombstone = pair.tombs_b.get(long_key)
    assert tombstone is not None and tombstone.rank == RULE.rank(deleted)
    assert tombstone.pk.startswith("sha256:")
    stale = {**long_key, "ts": {"N": "19"}, "origin": {"S": "us-east-1"}}
    outcome = pair.writer.write(long_change("MODIFY", stale, None, 2)).outcome
    assert outcome is Outcome.CONFLICT_LOST
    assert "Item" not in pair.b.get_item(TableName=pair.table, Key=long_key, ConsistentRead=True)


class _Refusing:
    """A tombstone table's client that refuses every request with ``code`` (the table
    deleted, or its statement taken out of the policy)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __getattr__(self, operation: str) -> Any:
        def refuse(**_: Any) -> Any:
            raise ClientError({"Error": {"Code": self.code, "Message": "refused"}}, operation)

        return refuse


class _OthersWritten(threading.Event):
    """``cancelled`` of a writer whose every backoff sees another write succeed at its
    table: a put of another item onto the one it held, which needs no tombstone."""

    OTHER: Item = {"pk": {"S": "other"}}  # noqa: RUF012 (read only)

    def __init__(self, writer: DestinationWriter) -> None:
        super().__init__()
        self.writer = writer
        self.applied = 0

    def wait(self, timeout: float | None = None) -> bool:
        ts = 100 + self.applied
        new = {**self.OTHER, "ts": {"N": str(ts)}, "origin": {"S": "us-east-1"}}
        put = decode(daemon_record(stream_record("MODIFY", self.OTHER, new, None, seq=ts), ts))
        if self.writer.write(put).outcome is Outcome.APPLIED:
            self.applied += 1
        return False


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "AccessDeniedException"])
@pytest.mark.parametrize("side", ["destination", "source"])
def test_a_refused_tombstone_table_stops_the_writer_however_many_other_writes_succeed(
    pair: Pair, side: str, code: str
) -> None:
    """A delete whose tombstone the table refuses, while puts that need no tombstone keep
    succeeding at the table beside it: never one item's denial (dead-lettered at a
    destination, logged and dropped at the source, the regions left apart), but the
    tombstone table's refusal, which stops the worker after the refusal limit."""
    writer, ddb = (pair.writer, pair.b) if side == "destination" else (pair.source.writer, pair.a)
    tombstones = writer.tombstones
    assert tombstones is not None
    deleted = image(20, "us-east-1")
    for item in (deleted, {**_OthersWritten.OTHER, "ts": {"N": "1"}}):
        ddb.put_item(TableName=pair.table, Item=item)
    tombstones.client = _Refusing(code)
    writer.refusal_limit = 6
    writer.cancelled = others = _OthersWritten(writer)
    delete = change("REMOVE", None, deleted)
    with pytest.raises(DestinationRefused) as refused:
        if side == "destination":
            pair.writer.write(delete)
        else:
            pair.source.write(delete)
    where = tombstones.where
    assert f"tombstone table {pair.table}-tombstones ({where}) refused 6 writes in a row: " in str(
        refused.value
    )
    assert f"in a row: {code}: refused" in str(refused.value)
    assert others.applied == 5  # a success at the user's table after each refusal
    assert pair.get(ddb) == deleted  # nothing removed without its tombstone
