"""Active-active meshes that converge: every region ends with the highest-ranked operation.

Real ``replicator run`` processes, one per region (each reads its region's table and
writes every other region's), against a moto server over HTTP. Applications write in
every region at once, the way applications do: unconditional puts, updates and deletes,
stamped with their region and a client timestamp that is often behind (out of order).
Each operation's rank is known from what the application wrote (a put's image, an
update's new image, a delete's old image), so the test knows the image every key must
end with, or that it must be absent, and checks every region against it. See
docs/active-active.md. ``AA_DEBUG=1`` runs the runtimes with debug logs (each record's
route, every lost conflict and write-back) in the test's directory.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from replicator.items import Item
from replicator.tombstones.model import row_key
from tests.support.active_active import (
    PAIR_WRITES,
    RULE,
    Mesh,
    Operations,
    app_item,
    check_converged,
    converge,
    report,
    run_workload,
)
from tests.support.aws import client
from tests.support.e2e import wait_until
from tests.support.iam import CallLog

pytestmark = pytest.mark.reliability


def test_a_pair_under_concurrent_out_of_order_writes_converges_on_the_highest(
    mesh_of: Callable[[tuple[str, ...]], Mesh],
) -> None:
    mesh = mesh_of(("us-east-1", "eu-west-1"))
    mesh.start()
    started = time.monotonic()
    ops = run_workload(mesh, writes=PAIR_WRITES)
    assert ops.count["writes"] == PAIR_WRITES
    assert ops.count["delete"] > PAIR_WRITES // 20 and ops.count["update"] > PAIR_WRITES // 5
    check_converged(mesh, ops, started)
    # The workload had what makes a pair diverge without write-back and tombstones.
    assert mesh.total("replicator_writes_total", outcome="conflict_lost") > 0
    assert any(image is None for _, image in ops.best.values())


def test_a_delete_racing_stale_puts_in_the_other_region_wins_on_both_sides(
    mesh_of: Callable[[tuple[str, ...]], Mesh], call_log: CallLog
) -> None:
    """The race that resurrected items without tombstones: region A deletes 30 items
    while region B writes images of them stamped earlier than the ones A deleted (a
    skewed clock). Some stale puts land in B before A's delete arrives there, some
    after; the delete ranks above every one of them, so every item ends deleted in both
    regions."""
    a, b = regions = ("us-east-1", "eu-west-1")
    mesh = mesh_of(regions)
    mesh.start()
    started = time.monotonic()
    ops = Operations()
    rng = random.Random(7)
    now = int(time.time() * 1000)
    keys = [{"pk": {"S": f"race-{index}"}, "sk": {"N": "0"}} for index in range(30)]
    for keyset in keys:
        item = app_item(keyset, now, a, rng)
        mesh.ddb[a].put_item(TableName=mesh.table[a], Item=item)
        ops.record("put", keyset, (RULE.rank(item), 0), item)
    wait_until(lambda: not ops.differences(mesh), 60, "the 30 items in both regions")

    def delete_in_a() -> None:
        ddb = client("dynamodb", a, mesh.endpoint)
        for keyset in keys:
            old = ddb.delete_item(TableName=mesh.table[a], Key=keyset, ReturnValues="ALL_OLD")
            ops.record("delete", keyset, (RULE.rank(old["Attributes"]), 1), None)
            time.sleep(rng.uniform(0, 0.02))

    def stale_puts_in_b() -> None:
        ddb = client("dynamodb", b, mesh.endpoint)
        for keyset in reversed(keys):
            item = app_item(keyset, now - 1000 - rng.randrange(1000), b, rng)
            ddb.put_item(TableName=mesh.table[b], Item=item)
            ops.record("put", keyset, (RULE.rank(item), 0), item)
            time.sleep(rng.uniform(0, 0.02))

    racers = [threading.Thread(target=delete_in_a), threading.Thread(target=stale_puts_in_b)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    assert all(image is None for _, image in ops.best.values())  # the delete ranks highest
    left = converge(ops, mesh, 60)
    report(mesh, ops, started, left)
    assert not left, {region: found[:5] for region, found in left.items()}
    mesh.quiet()
    assert all(not mesh.items(region) for region in regions)
    assert mesh.total("replicator_dead_letters_total") == 0
    # Each delete was recorded as a tombstone in both regions.
    for region in regions:
        tombs = mesh.ddb[region].scan(
            TableName=f"{mesh.table[region]}-tombstones", ConsistentRead=True
        )["Items"]
        assert len(tombs) == 30, region
    # Every call each job made (write-back, tombstones, deletes) is one the documented
    # least-privilege policy grants: with one missing, AWS refuses it and the job stops.
    for region in regions:
        calls = call_log.calls(mesh.access_key(region))
        assert any(call.action == "GetRecords" for call in calls), region  # recorded
        assert mesh.ungranted_calls(call_log, region) == [], region


def test_a_stale_insert_below_a_delete_made_by_an_earlier_process_never_leaves_the_source(
    mesh_of: Callable[[tuple[str, ...]], Mesh],
) -> None:
    """The delete and the stale re-insert read by two processes of the us job: the one
    reading the insert never saw the delete, so only the tombstone knows it. The insert
    must be corrected at the source as when one process reads both (docs/active-active.md
    section 3): never created in eu, and logged once, with the source as its destination."""
    us, eu = regions = ("us-east-1", "eu-west-1")
    mesh = mesh_of(regions)
    ddb, table = mesh.ddb[us], mesh.table[us]
    keys = {"pk": {"S": "q"}, "sk": {"N": "0"}}
    rng = random.Random(3)

    def held(region: str) -> bool:
        return bool(mesh.ddb[region].get_item(TableName=mesh.table[region], Key=keys).get("Item"))

    ddb.put_item(TableName=table, Item=app_item(keys, 100, us, rng))
    mesh.run_once(us, lambda: held(eu), "q(100) in eu")
    ddb.delete_item(TableName=table, Key=keys)
    mesh.run_once(us, lambda: not held(eu), "the delete of q in eu")
    stale = app_item(keys, 50, us, rng)
    ddb.put_item(TableName=table, Item=stale)

    def corrected() -> bool:
        return not held(us) and "local write corrected" in mesh.log_tail(us)

    mesh.run_once(us, corrected, "the stale q(50) removed from us")
    stamps = [(event, image["updated_at"]["N"]) for event, image in mesh.stream_images(eu)]
    assert stamps == [("INSERT", "100"), ("REMOVE", "100")]  # eu never held q(50)
    entries = mesh.conflict_entries()
    assert len(entries) == 1, entries
    assert entries[0]["destination"] == f"{us}/{table}" and entries[0]["write_back"] is True
    log = (mesh.directory / f"{us}.log").read_text()
    assert log.count("local write corrected in the source") == 1


def test_a_stale_insert_below_the_other_regions_delete_is_logged_as_that_regions_delete(
    mesh_of: Callable[[tuple[str, ...]], Mesh],
) -> None:
    """eu deletes an item us wrote; the us job reads that delete (eu's job made it in us)
    and a stale re-insert after it in one process, and corrects the insert from what it
    remembers. The conflict entry names the delete as eu's, as the tombstone tables do."""
    us, eu = regions = ("us-east-1", "eu-west-1")
    mesh = mesh_of(regions)
    keys = {"pk": {"S": "d"}, "sk": {"N": "0"}}
    rng = random.Random(5)

    def held(region: str) -> bool:
        return bool(mesh.ddb[region].get_item(TableName=mesh.table[region], Key=keys).get("Item"))

    mesh.ddb[us].put_item(TableName=mesh.table[us], Item=app_item(keys, 100, us, rng))
    mesh.run_once(us, lambda: held(eu), "d(100) in eu")
    mesh.ddb[eu].delete_item(TableName=mesh.table[eu], Key=keys)
    mesh.run_once(eu, lambda: not held(us), "eu's delete of d in us")
    mesh.ddb[us].put_item(TableName=mesh.table[us], Item=app_item(keys, 50, us, rng))
    mesh.run_once(us, lambda: bool(mesh.conflict_entries()), "the stale d(50) corrected in us")
    assert not held(us) and not held(eu)
    for region in regions:
        row = mesh.ddb[region].get_item(
            TableName=f"{mesh.table[region]}-tombstones",
            Key={"pk": {"S": row_key(keys)}},
            ConsistentRead=True,
        )["Item"]
        assert row["deleted_in"] == {"S": eu}, region
    (entry,) = mesh.conflict_entries()
    assert entry["destination"] == f"{us}/{mesh.table[us]}"
    assert entry["winning_rank"]["delete"] is True
    assert entry["winning_rank"]["deleted_in"] == eu
    assert f"a delete in {eu}" in entry["why"]


def test_jobs_sharing_one_origin_value_stop_once_a_stale_insert_is_corrected(
    mesh_of: Callable[..., Mesh],
) -> None:
    """Both jobs stamping ``global`` (against docs/active-active.md: each of their
    replicated writes looks local to the other job), run in turns, one process a turn.
    A stale insert below a delete used to go round for ever, an INSERT and a REMOVE in
    each region every turn; corrected at its source, it ends there."""
    us, eu = regions = ("us-east-1", "eu-west-1")
    shared = "{origin_attribute: origin_region, origin_value: global}"
    mesh = mesh_of(regions, loop_prevention={us: shared, eu: shared})
    ddb, table = mesh.ddb[us], mesh.table[us]
    keys = {"pk": {"S": "k7"}, "sk": {"N": "0"}}
    rng = random.Random(7)

    def held(region: str) -> bool:
        return bool(mesh.ddb[region].get_item(TableName=mesh.table[region], Key=keys).get("Item"))

    def item(stamp: int) -> Item:
        return {**app_item(keys, stamp, us, rng), "origin_region": {"S": "global"}}

    ddb.put_item(TableName=table, Item=item(100))
    mesh.run_once(us, lambda: held(eu), "k7(100) in eu")
    mesh.run_once(eu)
    ddb.delete_item(TableName=table, Key=keys)
    mesh.run_once(us, lambda: not held(eu), "the delete of k7 in eu")
    mesh.run_once(eu)
    ddb.put_item(TableName=table, Item=item(50))
    mesh.run_once(us, lambda: not held(us), "the stale k7(50) removed from us")
    records = {region: len(mesh.stream_images(region)) for region in regions}
    for _ in range(2):
        mesh.run_once(eu)
        mesh.run_once(us)
    assert {region: len(mesh.stream_images(region)) for region in regions} == records
    assert not held(us) and not held(eu)
    logs = {r: (mesh.directory / f"{r}.log").read_text() for r in regions}
    assert logs[us].count("local write corrected in the source") == 1
    assert "local write corrected in the source" not in logs[eu]
