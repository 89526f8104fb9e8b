"""Items wider than one exact-item condition, replicated end to end by the local runtime
(a real process) against a moto server over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replicator.items import Item
from replicator.rules import OrderedRule
from tests.support.e2e import Job, stop, wait_until

WIDTH = 300


def wide(number: int, value: str, last: str | None = None) -> Item:
    item: Item = {"pk": {"S": f"w{number}"}, "sk": {"N": "1"}, "ts": {"N": "5"}}
    item.update({f"a{index}": {"S": value} for index in range(WIDTH)})
    if last is not None:
        item[f"a{WIDTH - 1}"] = {"S": last}
    return item


def second_above(rule: OrderedRule, number: int) -> Item:
    """The item's second image, ranking above its first by the digest (they tie on ts):
    one whose digest ranks below would lose at the destination by design, the same in
    every region (docs/active-active.md, section 1), and the destination would rightly
    keep the first."""
    first = rule.rank(wide(number, "first"))
    for suffix in range(1000):
        image = wide(number, "second", f"second{suffix}")
        if rule.rank(image) > first:
            return image
    raise AssertionError("no second image ranks above the first")


def test_wide_items_written_twice_in_one_timestamp_reach_the_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """10 items of 302 attributes, put, replicated, then put again with the same ts and
    every other attribute changed: the destination ends equal to the source, nothing is
    dead-lettered (the second put meets the first image there, ties on ts and replaces
    it on the condition that it is still that item, which no longer fits in one 4 KB
    expression whole)."""
    name = unique("wide")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    job.path.write_text(
        job.path.read_text().replace("timestamp_attribute: updated_at", "timestamp_attribute: ts")
    )
    rule = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
    runtime = job.start()
    try:
        for number in range(10):
            job.source.put_item(TableName=job.source_table, Item=wide(number, "first"))
        wait_until(job.converged, 60, "the first images at the destination")
        for number in range(10):
            job.source.put_item(TableName=job.source_table, Item=second_above(rule, number))
        wait_until(job.converged, 60, "the second images at the destination")
        job.wait_checkpointed()
    finally:
        assert stop(runtime) == 0
    assert not job.dead_letters.exists()
