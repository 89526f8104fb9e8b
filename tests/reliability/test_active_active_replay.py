"""An active-active job that reads its stream again after a restart (docs/active-active.md,
"Corrections of stale local writes"): the records it reads again are long past, and the
source holds what the application wrote since.

Real ``replicator run`` processes against a moto server over HTTP, run one after the
other so that what each reads is known. Region A's job records a delete, then its
checkpoint is set back to the stream's start, as when a job is killed before it
checkpoints (kill -9): the next process reads the delete again, and the stale insert
below it, after the application has moved on."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from replicator.items import Item
from tests.support.active_active import Mesh
from tests.support.e2e import wait_until

pytestmark = pytest.mark.reliability

A, B = "us-east-1", "eu-west-1"
KEY: Item = {"pk": {"S": "r1"}, "sk": {"N": "1"}}


def app_image(ts: int, v: str) -> Item:
    return {**KEY, "updated_at": {"N": str(ts)}, "origin_region": {"S": A}, "v": {"S": v}}


def read_to_the_end(mesh: Mesh, region: str) -> None:
    """Run the region's job until it has checkpointed the last record of its stream (its
    own writes' records included), then stop it."""
    mesh.start(region)

    def at_the_end() -> bool:
        checkpoint = mesh.checkpoint(region)
        return bool(checkpoint) and mesh.stream_end(region, checkpoint) == checkpoint

    wait_until(at_the_end, 60, f"the {region} job to checkpoint its stream's end")
    assert mesh.stop(region) == {region: 0}, mesh.log_tail(region)


def rewind(mesh: Mesh, region: str, to: str) -> None:
    """Set the region's stopped job's checkpoint back to ``to`` (a sequence number, or
    "" for the stream's start)."""
    lease = mesh.lease(region)
    mesh.ddb[region].update_item(
        TableName=mesh.task[region],
        Key={"leaseKey": lease["leaseKey"]},
        UpdateExpression="SET #c = :c",
        ExpressionAttributeNames={"#c": "checkpoint"},
        ExpressionAttributeValues={":c": {"S": to or "TRIM_HORIZON"}},
    )


def held(mesh: Mesh, region: str) -> Item | None:
    found = mesh.ddb[region].get_item(TableName=mesh.table[region], Key=KEY, ConsistentRead=True)
    item: Item | None = found.get("Item")
    return item


@pytest.mark.parametrize("read_again_from", ["start", "delete", "stale insert"])
def test_a_job_reading_a_delete_and_a_stale_insert_again_removes_nothing_written_since(
    mesh_of: Callable[..., Mesh], read_again_from: str
) -> None:
    """The application in A deletes an item, creates it again below the delete, updates it
    above the delete, then writes a stale update below both. Read again, the delete and
    the correction of the stale insert removed what A held then, the last stale image:
    a delete the application never made, which the job then read as the application's.
    Now only the stale update is corrected in A (the highest image put back over it),
    once, and both regions hold the highest image."""
    mesh = mesh_of((A, B))
    ddb, table = mesh.ddb[A], mesh.table[A]
    ddb.put_item(TableName=table, Item=app_image(1000, "first"))
    after_insert = mesh.stream_end(A)
    ddb.delete_item(TableName=table, Key=KEY)
    after_delete = mesh.stream_end(A, after_insert)
    read_to_the_end(mesh, A)
    assert held(mesh, B) is None
    positions = {"start": "", "delete": after_insert, "stale insert": after_delete}
    rewind(mesh, A, positions[read_again_from])
    stale, higher, later = (
        app_image(900, "stale"),
        app_image(3000, "higher"),
        app_image(800, "later"),
    )
    for item in (stale, higher, later):
        ddb.put_item(TableName=table, Item=item)
    records = len(mesh.stream_images(A))

    read_to_the_end(mesh, A)
    assert held(mesh, A) == higher
    assert held(mesh, B) == higher
    # What the job wrote to A: the highest image put back over the stale update, only.
    assert mesh.stream_images(A)[records:] == [("MODIFY", higher)]
    corrected = sorted(
        e["losing_image"]["v"]["S"]
        for e in mesh.conflict_entries()
        if e["destination"] == f"{A}/{table}"
    )
    # Read again from the start, the first insert is below the delete recorded since.
    assert corrected == (["first"] if read_again_from == "start" else []) + ["later", "stale"]
