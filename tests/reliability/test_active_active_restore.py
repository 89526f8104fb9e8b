"""``replicator conflicts --restore`` in an active-active pair: the destination is the other
region's source, so its own job reads what the restore writes (docs/conflict-audit.md).

Real ``replicator run`` processes, one per region, against a moto server over HTTP, run
one after the other so that what each reads is known: region A's job loses a conflict at
B and records it, the entry is restored with A's job file, then B's job reads the
restore from its stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from replicator.cli import cli
from replicator.items import Item
from tests.support.active_active import Mesh
from tests.support.e2e import wait_until

pytestmark = pytest.mark.reliability

A, B = "us-east-1", "eu-west-1"
KEY: Item = {"pk": {"S": "a2"}, "sk": {"N": "1"}}


def read_to_the_end(mesh: Mesh, region: str) -> None:
    """Run the region's job until it has checkpointed the last record of its stream (its
    write-backs' records included), then stop it."""
    mesh.start(region)

    def at_the_end() -> bool:
        checkpoint = mesh.checkpoint(region)
        return bool(checkpoint) and mesh.stream_end(region, checkpoint) == checkpoint

    wait_until(at_the_end, 30, f"the {region} job to checkpoint its stream's end")
    assert mesh.stop(region) == {region: 0}


def entries(mesh: Mesh, region: str) -> list[dict[str, Any]]:
    path = mesh.directory / f"{region}-conflicts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def held(mesh: Mesh, region: str) -> Item | None:
    found = mesh.ddb[region].get_item(TableName=mesh.table[region], Key=KEY, ConsistentRead=True)
    item: Item | None = found.get("Item")
    return item


def restore(mesh: Mesh, entry_id: str) -> str:
    """Restore an entry of A's job with A's job file; its output."""
    result = CliRunner().invoke(
        cli, ["conflicts", "--config", str(mesh.config(A)), "--restore", entry_id]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def lost_at_b(mesh: Mesh, op: str) -> dict[str, Any]:
    (entry,) = [
        e
        for e in entries(mesh, A)
        if e["kind"] == "conflict" and e["destination"] == f"{B}/{mesh.table[B]}" and e["op"] == op
    ]
    return entry


WINNER: Item = {**KEY, "updated_at": {"N": "200"}, "origin_region": {"S": B}}


def conflicting_puts(mesh: Mesh, loser: Item) -> None:
    """B's ``WINNER`` and A's ``loser`` of the same item, written by the applications."""
    mesh.ddb[B].put_item(TableName=mesh.table[B], Item=WINNER)
    mesh.ddb[A].put_item(TableName=mesh.table[A], Item=loser)


def test_a_restored_unstamped_put_carries_the_jobs_stamp_and_stays(
    mesh_of: Callable[..., Mesh],
) -> None:
    """The review's case: the losing put had no origin stamp. Written as it was, B's job
    took it for a stale local write below the image it replaced and put the winner back
    (a new conflict in B's log): the restore was undone. Carrying A's stamp, it is B's
    echo of A's write and is skipped: only B's table changes, as the docs say."""
    mesh = mesh_of((A, B), tombstones=False)
    winner, loser = WINNER, {**KEY, "updated_at": {"N": "100"}}  # the application forgot its stamp
    conflicting_puts(mesh, loser)

    read_to_the_end(mesh, A)
    entry = lost_at_b(mesh, "put")
    assert held(mesh, B) == winner
    assert held(mesh, A) == winner  # written back

    output = restore(mesh, entry["id"])
    restored = {**loser, "origin_region": {"S": A}}
    assert held(mesh, B) == restored
    (record,) = [e for e in entries(mesh, A) if e["kind"] == "restore"]
    assert record["restored_entry"] == entry["id"]
    assert record["losing_image"] == {**entry["losing_image"], "origin_region": {"S": A}}
    assert f"recorded as entry {record['id']}" in output
    source = f"{A}/{mesh.table[A]}"
    assert f"the source {source} keeps the winner written back there" in output

    read_to_the_end(mesh, B)
    assert held(mesh, B) == restored
    assert entries(mesh, B) == []  # no stale local write corrected
    assert held(mesh, A) == winner  # the regions differ until the application writes again

    again = CliRunner().invoke(
        cli, ["conflicts", "--config", str(mesh.config(A)), "--restore", entry["id"]]
    )
    assert again.exit_code == 0, again.output
    assert f"already restored: the item at {B}/{mesh.table[B]} already holds" in again.stdout


def test_a_restore_says_the_regions_differ_also_when_the_winner_reached_the_source_by_itself(
    mesh_of: Callable[..., Mesh],
) -> None:
    """B's job replicated the winner to A before A's job read its losing put: nothing
    was written back (``write_back: false``), yet A holds the winner as surely, and the
    restore left the regions different without a word. One record per batch: read with
    its echo, the loser is squashed under it and sent nowhere."""
    mesh = mesh_of((A, B), tombstones=False, max_records=1)
    winner, loser = WINNER, {**KEY, "updated_at": {"N": "100"}, "origin_region": {"S": A}}
    conflicting_puts(mesh, loser)
    read_to_the_end(mesh, B)
    assert held(mesh, A) == winner

    read_to_the_end(mesh, A)
    entry = lost_at_b(mesh, "put")
    assert entry["write_back"] is False

    output = restore(mesh, entry["id"])
    assert held(mesh, B) == loser
    assert held(mesh, A) == winner
    source = f"{A}/{mesh.table[A]}"
    assert f"the source {source} holds another image: the regions differ on this item" in output


def test_a_restore_says_nothing_of_the_source_when_it_holds_the_restored_image(
    mesh_of: Callable[..., Mesh],
) -> None:
    """Write-back off: the source keeps its own losing write, so once it is restored at
    the destination the regions agree (the restore's stamp aside), and the line says
    nothing of a difference that is not there."""
    mesh = mesh_of((A, B), tombstones=False, write_back=False)
    loser = {**KEY, "updated_at": {"N": "100"}}  # the application forgot its stamp
    conflicting_puts(mesh, loser)
    read_to_the_end(mesh, A)
    entry = lost_at_b(mesh, "put")
    assert entry["write_back"] is False

    output = restore(mesh, entry["id"])
    assert held(mesh, B) == {**loser, "origin_region": {"S": A}}
    assert held(mesh, A) == loser
    assert "regions differ" not in output, output


@pytest.mark.parametrize("tombstones", [False, True], ids=["plain", "tombstones"])
def test_a_restored_delete_is_sent_on_by_the_other_job_and_deletes_everywhere(
    mesh_of: Callable[..., Mesh], tombstones: bool
) -> None:
    """A delete in A of an image below what B holds loses at B (B's image is written back
    to A). Restored, it deletes B's item; B's job reads that as a local delete and sends
    it on, so A loses the written-back image too, and A's job then takes the delete's
    echo as done: no item in either region, nothing more written or recorded."""
    mesh = mesh_of((A, B), tombstones=tombstones)
    winner = {**KEY, "updated_at": {"N": "200"}, "origin_region": {"S": B}}
    mesh.ddb[B].put_item(TableName=mesh.table[B], Item=winner)
    loser = {**KEY, "updated_at": {"N": "100"}, "origin_region": {"S": A}}
    mesh.ddb[A].put_item(TableName=mesh.table[A], Item=loser)
    mesh.ddb[A].delete_item(TableName=mesh.table[A], Key=KEY)

    read_to_the_end(mesh, A)
    entry = lost_at_b(mesh, "delete")
    assert held(mesh, A) == winner == held(mesh, B)
    logged = len(entries(mesh, A))

    restore(mesh, entry["id"])
    assert held(mesh, B) is None
    (record,) = [e for e in entries(mesh, A) if e["kind"] == "restore"]
    assert record["op"] == "delete" and record["winning_image"] == winner

    read_to_the_end(mesh, B)
    assert held(mesh, A) is None and held(mesh, B) is None
    assert entries(mesh, B) == []
    read_to_the_end(mesh, A)
    assert held(mesh, A) is None and held(mesh, B) is None
    assert len(entries(mesh, A)) == logged + 1  # the restore's record, nothing more
