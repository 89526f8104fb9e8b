"""The lease table's conditional updates against a moto server over HTTP, when an
update's answer is lost: the update may have landed, and the next one must tell our own
landed write from another worker's takeover, even one running under the same worker id."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config

from replicator.exceptions import LeaseLost
from replicator.shards.leases import Lease, LeaseTable
from tests.support.aws import LostAnswers

SHARD = "shardId-00000001"


@pytest.fixture
def table(moto_endpoint: str, unique: Any) -> LeaseTable:
    # One attempt per call: a lost answer ends the call at once rather than after
    # botocore's backoff (a resend within one call has a test of its own).
    ddb = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=moto_endpoint,
        config=Config(retries={"total_max_attempts": 1}),
    )
    leases = LeaseTable(ddb, unique("leases"), "vm")
    leases.ensure_exists()
    return leases


def held(table: LeaseTable) -> Lease:
    created = table.create(SHARD, "TRIM_HORIZON", [])
    assert created is not None
    return table.take(created)


def stored(table: LeaseTable) -> Lease:
    lease = table.get(SHARD)
    assert lease is not None
    return lease


def test_a_renewal_whose_answer_was_lost_after_it_landed_is_recognised(
    table: LeaseTable,
) -> None:
    lease = held(table)
    LostAnswers(table.client).times_out("landed", lambda: table.renew(lease))
    assert stored(table).counter == 2  # it landed; the lease object still says 1
    assert lease.counter == 1
    table.renew(lease)  # housekeeping's next renewal, a new call
    assert lease.counter == stored(table).counter == 3
    assert stored(table).owner == "vm"


def test_a_checkpoint_whose_answer_was_lost_after_it_landed_is_taken_up_by_the_next_update(
    table: LeaseTable,
) -> None:
    lease = held(table)
    LostAnswers(table.client).times_out("landed", lambda: table.checkpoint(lease, "000100", 2))
    table.renew(lease)
    assert (lease.counter, lease.checkpoint, lease.sub_sequence_number) == (3, "000100", 2)
    now = stored(table)
    assert (now.counter, now.checkpoint, now.sub_sequence_number) == (3, "000100", 2)


def test_a_retry_within_one_call_meeting_its_own_landed_attempt_succeeds(
    table: LeaseTable,
) -> None:
    """botocore resends a request whose answer it lost; the resent one fails its
    condition on the counter the first attempt moved."""
    lease = held(table)
    update = table.client.update_item

    def sent_twice(**kwargs: Any) -> Any:
        update(**kwargs)
        return update(**kwargs)

    table.client.update_item = sent_twice
    table.checkpoint(lease, "000200")
    assert (lease.counter, lease.checkpoint) == (2, "000200")
    assert (stored(table).counter, stored(table).checkpoint) == (2, "000200")


@pytest.mark.parametrize("ours", ["lost", "landed"])
def test_a_takeover_under_the_same_worker_id_is_still_a_lost_lease(
    table: LeaseTable, ours: str
) -> None:
    """Another host running as "vm" takes the lease (the same owner, checkpoint and
    switches as our renewal would have written) while our renewal's answer is lost,
    whether our renewal landed before its take or never did."""
    lease = held(table)
    LostAnswers(table.client).times_out(ours, lambda: table.renew(lease))
    twin = LeaseTable(table.client, table.table, "vm")
    twin.take(stored(table))
    with pytest.raises(LeaseLost, match="changed under us: expected owner vm, counter 1"):
        table.renew(lease)
    assert lease.counter == 1


EARLIER = "arn:aws:dynamodb:us-east-1:123456789012:table/source/stream/2026-01-01T00:00:00.000"
CURRENT = "arn:aws:dynamodb:us-east-1:123456789012:table/source/stream/2026-02-01T00:00:00.000"


def test_every_write_records_the_stream_and_a_lease_without_one_is_of_any_stream(
    table: LeaseTable,
) -> None:
    reader = LeaseTable(table.client, table.table, "vm")  # records no stream
    created = reader.create(SHARD, "TRIM_HORIZON", [])
    assert created is not None and stored(table).stream is None
    assert not stored(table).of_earlier_stream(CURRENT)
    table.stream = EARLIER
    lease = table.take(created)
    assert lease.stream == stored(table).stream == EARLIER
    table.stream = CURRENT  # kept up to date by every write: a renewal, a checkpoint
    table.renew(lease)
    assert lease.stream == stored(table).stream == CURRENT
    table.stream = EARLIER
    table.checkpoint(lease, "000300")
    assert stored(table).of_earlier_stream(CURRENT)
    table.release(lease)
    assert stored(table).stream == EARLIER


@pytest.mark.parametrize("parents", [[], ["shardId-00000000"]])
def test_a_lease_of_an_earlier_stream_is_reset_in_one_take_that_one_host_wins(
    table: LeaseTable, parents: list[str]
) -> None:
    """Two hosts find the lease of an earlier stream (checkpointed, its parent a shard of
    that stream) and reset it: the first's take sets the checkpoint, parents and stream;
    the second's, conditional on the same counter, finds the lease taken."""
    table.stream = EARLIER
    lease = held(table)
    table.checkpoint(lease, "000400", 3)
    table.client.update_item(
        TableName=table.table,
        Key={"leaseKey": {"S": SHARD}},
        UpdateExpression="SET parentShardId = :old",
        ExpressionAttributeValues={":old": {"SS": ["shardId-earlier"]}},
    )
    table.release(lease)
    first = LeaseTable(table.client, table.table, "host-a", stream=CURRENT)
    second = LeaseTable(table.client, table.table, "host-b", stream=CURRENT)
    seen_by_first, seen_by_second = stored(table), stored(table)
    taken = first.take_anew(seen_by_first, parents)
    with pytest.raises(LeaseLost):
        second.take_anew(seen_by_second, [])
    now = stored(table)
    for lease_now in (taken, now):
        assert (lease_now.owner, lease_now.checkpoint, lease_now.sub_sequence_number) == (
            "host-a",
            "TRIM_HORIZON",
            0,
        )
        assert (lease_now.parents, lease_now.stream) == (parents, CURRENT)
    assert not now.of_earlier_stream(CURRENT)
