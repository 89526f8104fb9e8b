"""The one total order of last_writer_wins/version: the same in rank(), in the conditions
DynamoDB evaluates (moto over HTTP), and in the tombstone table's conditions."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from replicator.aws.backoff import Backoff
from replicator.config.model import ConflictConfig
from replicator.decode import decode
from replicator.items import Item
from replicator.metrics import Metrics
from replicator.rules import OrderedRule, rule_for
from replicator.rules.order import NO_ITEM, exact_number, image_digest
from replicator.tombstones.model import tombstone_of
from replicator.tombstones.table import TombstoneTable
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome
from tests.support.aws import client, create_table
from tests.support.records import daemon_record, stream_record

RULE = rule_for(ConflictConfig(policy="last_writer_wins", timestamp_attribute="ts"), "origin")
assert isinstance(RULE, OrderedRule)


def image(v: str, ts: int | None = None, origin: str | None = None) -> Item:
    found: Item = {"pk": {"S": "k"}, "v": {"S": v}}
    if ts is not None:
        found["ts"] = {"N": str(ts)}
    if origin is not None:
        found["origin"] = {"S": origin}
    return found


# Every case the order distinguishes: no timestamp (with and without an origin), lower
# and higher timestamps, origins on equal timestamps, and images equal on (ts, origin)
# that only the digest tells apart.
IMAGES = [
    image("no-ts"),
    image("no-ts-origin", origin="eu-west-1"),
    image("a", 10),
    image("b", 10),
    image("a", 10, "eu-west-1"),
    image("b", 10, "eu-west-1"),
    image("a", 10, "us-east-1"),
    image("a", 11),
    image("z", 11, "eu-west-1"),
]


def test_rank_orders_missing_timestamp_then_value_then_origin_then_digest() -> None:
    ranks = [RULE.rank(i) for i in IMAGES]
    assert RULE.rank(None) == NO_ITEM and all(r > NO_ITEM for r in ranks)
    assert ranks[0] < ranks[1] < ranks[2]  # no ts < no ts with origin < any ts
    assert max(ranks[2], ranks[3]) < ranks[4]  # an origin beats none at the same ts
    assert ranks[4] != ranks[5] and max(ranks[4], ranks[5]) < ranks[6]  # digest, then origin
    assert ranks[6] < ranks[7] < ranks[8]
    assert len(set(ranks)) == len(ranks)  # a total order: no two images tie


def test_the_digest_is_the_same_for_every_spelling_of_one_item() -> None:
    one = {"pk": {"S": "k"}, "n": {"N": "1.50"}, "s": {"SS": ["b", "a"]}, "b": {"B": b"\x01"}}
    two = {"s": {"SS": ["a", "b"]}, "b": {"B": "AQ=="}, "n": {"N": "15E-1"}, "pk": {"S": "k"}}
    assert image_digest(one) == image_digest(two)
    assert image_digest(one) != image_digest({**one, "n": {"N": "1.51"}})
    # 38 significant digits are kept exactly (no rounding to a 28-digit context).
    wide = "1234567890123456789012345678901234567.8"
    assert exact_number(wide) != exact_number("1234567890123456789012345678901234567.9")
    assert exact_number("100") == exact_number("1E+2") == exact_number("100.0") == "100"


@pytest.fixture
def table(moto_endpoint: str, unique: Any) -> tuple[Any, str]:
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    name = unique("order")
    create_table(ddb, name, stream=None)
    return ddb, name


def writer(ddb: Any, name: str, tmp: Path) -> DestinationWriter:
    return DestinationWriter(
        label="dest",
        table=name,
        region="eu-west-1",
        client=ddb,
        rule=RULE,
        metrics=Metrics(None),
        backoff=Backoff(0.0001, 0.001),
    )


def change(event: str, new: Item | None = None, old: Item | None = None) -> Any:
    return decode(daemon_record(stream_record(event, {"pk": {"S": "k"}}, new, old, seq=1), 1))


def test_every_pair_of_images_ends_with_the_higher_one_at_the_destination(
    table: tuple[Any, str], tmp_path: Path
) -> None:
    """For every (item held, image put) pair, DynamoDB's conditions and the rule's
    reconsider end exactly where rank() says: the higher image, whichever came first."""
    ddb, name = table
    write = writer(ddb, name, tmp_path)
    wrong = []
    for held, incoming in itertools.product(IMAGES, repeat=2):
        ddb.put_item(TableName=name, Item=held)
        outcome = write.write(change("MODIFY", incoming)).outcome
        found = ddb.get_item(TableName=name, Key={"pk": {"S": "k"}}, ConsistentRead=True)["Item"]
        expected = max(held, incoming, key=RULE.rank)
        if found != expected:
            wrong.append((held, incoming, outcome, found))
        if held == incoming:
            assert outcome is Outcome.UNCHANGED
    assert not wrong, wrong


def test_every_delete_removes_exactly_the_items_ranking_at_or_below_its_image(
    table: tuple[Any, str], tmp_path: Path
) -> None:
    ddb, name = table
    write = writer(ddb, name, tmp_path)
    wrong = []
    for held, deleted in itertools.product(IMAGES, repeat=2):
        ddb.put_item(TableName=name, Item=held)
        write.write(change("REMOVE", None, deleted))
        found = ddb.get_item(TableName=name, Key={"pk": {"S": "k"}}, ConsistentRead=True)
        delete_wins = RULE.op_rank(change("REMOVE", None, deleted)) > (RULE.rank(held), 0)
        if ("Item" in found) == delete_wins:
            wrong.append((held, deleted, found.get("Item")))
    assert not wrong, wrong


def test_a_tombstone_row_only_moves_up_the_order(moto_endpoint: str, unique: Any) -> None:
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    tombstones = TombstoneTable(ddb, unique("tombs"), "eu-west-1", 3600)
    tombstones.ensure_exists()
    keys = {"pk": {"S": "k"}}

    def tomb(deleted: Item) -> Any:
        return tombstone_of(
            deleted,
            keys,
            RULE.fields,
            deleted_in="eu-west-1",
            written_by="eu-west-1",
            deleted_at_ms=1,
            expires_at=tombstones.expiry(),
        )

    wrong = []
    for first, second in itertools.product(IMAGES, repeat=2):
        ddb.delete_item(TableName=tombstones.table, Key={"pk": {"S": tomb(first).pk}})
        assert tombstones.record(tomb(first)) is None
        held = tombstones.record(tomb(second))
        kept = tombstones.get(keys)
        assert kept is not None
        highest = max(first, second, key=RULE.rank)
        if kept.rank != RULE.rank(highest) or (held is None) != (
            RULE.rank(second) > RULE.rank(first)
        ):
            wrong.append((first, second, kept))
    assert not wrong, wrong
    # A put blocks exactly when its image ranks at or below the deleted image.
    stored = tombstones.get(keys)
    assert stored is not None
    assert all(stored.blocks(RULE.rank(i)) == (RULE.rank(i) <= stored.rank) for i in IMAGES)
