"""The status table against a moto server over HTTP, and shards' publishers handing the
watermark over at a split (which moto's own streams never do, so the listing is given)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import pytest

from replicator.decode import decode
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.shards.stream import Shard
from replicator.watermark.parts import EVERY, Part, Placeholder, combine
from replicator.watermark.publisher import ShardWatermark
from replicator.watermark.table import PartLost, StatusTable
from replicator.watermark.tracker import DeadLetters
from replicator.watermark.wait import wait_until_replicated
from tests.support.aws import client
from tests.support.metrics import sample
from tests.support.records import daemon_record, stream_record
from tests.support.status_table import created_with_its_stream

S = 1_000_000
T0 = 1_700_000_000 * S


@pytest.fixture
def ddb(moto_endpoint: str) -> Any:
    return client("dynamodb", "eu-west-1", moto_endpoint)


@pytest.fixture
def table(ddb: Any, unique: Callable[[str], str]) -> StatusTable:
    status = StatusTable(ddb, unique("status"), "eu-west-1/replica")
    status.ensure_exists()
    status.ensure_exists()  # a second processor finds it there
    return status


def test_the_table_is_keyed_for_one_query_per_destination(ddb: Any, table: StatusTable) -> None:
    described = ddb.describe_table(TableName=table.name)["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]} == {
        "destination": "HASH",
        "shard": "RANGE",
    }
    ttl = ddb.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    other = StatusTable(ddb, table.name, "ap-southeast-2/replica")
    table.raise_part("s1", 5, "me")
    other.raise_part("s1", 9, "me")
    assert [(p.destination, p.watermark_us) for p in table.parts()] == [("eu-west-1/replica", 5)]


def test_a_part_is_only_ever_raised(table: StatusTable) -> None:
    assert table.raise_part("s1", T0 + 100, "a:1") == T0 + 100
    assert table.raise_part("s1", T0 + 50, "b:2") == T0 + 100  # lower: refused, stored told
    part = table.part("s1")
    assert part is not None and part.watermark_us == T0 + 100 and part.owner == "a:1"
    assert table.raise_part("s1", T0 + 150, "b:2") == T0 + 150
    assert table.part("s1").watermark_us == T0 + 150  # type: ignore[union-attr]


def test_placeholders_children_and_ends_never_create_or_replace_a_part(table: StatusTable) -> None:
    table.raise_part("p", T0 + 10, "a:1")
    assert not table.add_placeholder(Placeholder("p", 0, frozenset()))
    assert table.add_placeholder(Placeholder("c", T0 + 10, frozenset({"p"})))
    table.add_children("p", frozenset({"c"}))
    table.add_children("ghost", frozenset({"x"}))  # no part: nothing is created
    table.mark_ended("ghost")
    table.mark_ended("p")
    parts = {part.shard: part for part in table.parts()}
    assert set(parts) == {"p", "c"}
    assert parts["p"].watermark_us == T0 + 10 and parts["p"].ended
    assert parts["p"].children == {"c"} and parts["c"].parents == {"p"}
    assert combine(table.destination, parts.values()).watermark_us == T0 + 10


def test_dead_letters_from_two_processes_on_one_part_add_up(table: StatusTable) -> None:
    """A write that read the part before another process changed it is refused and
    redone on the new part: neither process's dead letters are lost."""
    other = StatusTable(table.client, table.name, table.destination)
    other.add_dead_letters("s1", DeadLetters(2, ((T0, T0 + 1), (T0 + 5 * S, T0 + 5 * S))))

    class Interrupted(StatusTable):
        interrupted = False

        def part(self, shard: str, attributes: Collection[str] = EVERY) -> Part | None:
            read = super().part(shard, attributes)
            if not self.interrupted:  # the other process writes between our read and write
                self.interrupted = True
                other.add_dead_letters(shard, DeadLetters(1, ((T0 + 9 * S, T0 + 9 * S),)))
            return read

    Interrupted(table.client, table.name, table.destination).add_dead_letters(
        "s1", DeadLetters(1, ((T0 + 20 * S, T0 + 21 * S),))
    )
    part = table.part("s1")
    assert part is not None
    assert part.dead_letters == 4
    assert part.dead_letter_ranges == (
        (T0, T0 + 1),
        (T0 + 5 * S, T0 + 5 * S),
        (T0 + 9 * S, T0 + 9 * S),
        (T0 + 20 * S, T0 + 21 * S),
    )
    assert part.dead_letter_version == 3
    assert part.watermark_us == 0  # dead letters alone say nothing about the watermark


# -- a split, handed over between publishers ------------------------------------------------


class Stream:
    """The stream's shards as DescribeStream lists them, changed by the test."""

    def __init__(self, *shards: Shard) -> None:
        self.shards = list(shards)

    def __call__(self) -> list[Shard]:
        return list(self.shards)


def publisher(shard: str, table: StatusTable, stream: Stream, metrics: Metrics) -> ShardWatermark:
    watermark = ShardWatermark(
        shard,
        {table.destination: table},
        stream,
        metrics,
        interval_s=3600,  # published by the test
        margin_s=0,
        reads_follow_answers=True,
        source_history=created_with_its_stream,
    )
    watermark.begin(resumed=False)
    return watermark


def test_a_split_hands_the_watermark_from_the_parent_to_both_children(
    table: StatusTable, metrics: Metrics
) -> None:
    stream = Stream(Shard("p", None, False), Shard("other", None, False))
    seen: list[int | None] = []

    def watermark() -> int | None:
        seen.append(combine(table.destination, table.parts()).watermark_us)
        return seen[-1]

    parent = publisher("p", table, stream, metrics)
    parent.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
    parent.publish()
    assert watermark() is None  # "other" is registered and has not published
    other = publisher("other", table, stream, metrics)
    other.empty_read(previous_answer_at=(T0 + 90 * S) / S, received_at=0)
    other.publish()
    assert watermark() == T0 + 10 * S - 1

    # The parent splits; it reads to its end (and the stream lists its children).
    stream.shards = [Shard("p", None, True), Shard("c1", "p", False), Shard("c2", "p", False)]
    stream.shards.append(Shard("other", None, False))
    parent.empty_read(previous_answer_at=(T0 + 20 * S) / S, received_at=0)
    parent.end_shard()
    assert watermark() == T0 + 20 * S - 1  # the children hold it at the parent's end

    first = publisher("c1", table, stream, metrics)
    first.empty_read(previous_answer_at=(T0 + 60 * S) / S, received_at=0)
    first.publish()
    assert watermark() == T0 + 20 * S - 1  # c2 has not started: its changes are unread
    second = publisher("c2", table, stream, metrics)
    second.empty_read(previous_answer_at=(T0 + 50 * S) / S, received_at=0)
    second.publish()
    assert watermark() == T0 + 50 * S - 1
    assert seen[1:] == sorted(seen[1:])
    assert sample(metrics, "replicator_watermark_publish_failures_total") == 0


def test_a_child_that_starts_marks_its_parent_ended_when_the_parent_could_not(
    table: StatusTable, metrics: Metrics
) -> None:
    stream = Stream(Shard("p", None, False))
    parent = publisher("p", table, stream, metrics)
    parent.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
    parent.publish()  # its processor dies before it can mark the end; the children appear
    stream.shards = [Shard("p", None, True), Shard("c1", "p", False), Shard("c2", "p", False)]
    first = publisher("c1", table, stream, metrics)
    first.empty_read(previous_answer_at=(T0 + 60 * S) / S, received_at=0)
    first.publish()
    second = publisher("c2", table, stream, metrics)
    second.empty_read(previous_answer_at=(T0 + 70 * S) / S, received_at=0)
    second.publish()
    mark = combine(table.destination, table.parts())
    assert [part.shard for part in mark.retired] == ["p"]
    assert mark.watermark_us == T0 + 60 * S - 1


def test_a_destination_whose_status_table_cannot_be_written_is_counted_and_retried(
    moto_endpoint: str, metrics: Metrics
) -> None:
    broken = StatusTable(client("dynamodb", "eu-west-1", "http://127.0.0.1:9"), "t", "eu")
    watermark = publisher("p", broken, Stream(Shard("p", None, False)), metrics)
    watermark.empty_read(previous_answer_at=T0 / S, received_at=0)
    watermark.publish()
    watermark.publish()  # within the retry delay: not tried again
    assert sample(metrics, "replicator_watermark_publish_failures_total", destination="eu") == 1


def change_at(pk: str, seq: int, created_us: int) -> Change:
    image = {"pk": {"S": pk}}
    payload = stream_record(
        "INSERT", {"pk": {"S": pk}}, image, None, seq=seq, created_ms=created_us // 1000
    )
    return decode(daemon_record(payload, seq))


class RecordingTable(StatusTable):
    """The status table, noting what a reader would see each time a part is raised."""

    def __init__(self, table: StatusTable, fail_dead_letters: bool = False) -> None:
        super().__init__(table.client, table.name, table.destination)
        self.seen_at_raise: list[tuple[int | None, int]] = []
        self.fail_dead_letters = fail_dead_letters

    def raise_part(self, shard: str, watermark_us: int, owner: str, **options: Any) -> int:
        stored = super().raise_part(shard, watermark_us, owner, **options)
        whole = combine(self.destination, self.parts())
        self.seen_at_raise.append((whole.watermark_us, whole.dead_letters))
        return stored

    def add_dead_letters(self, shard: str, dead_letters: DeadLetters, attempts: int = 5) -> None:
        if self.fail_dead_letters:
            raise ConnectionError("status table unreachable")
        super().add_dead_letters(shard, dead_letters, attempts)


def test_a_watermark_past_a_dead_letter_is_never_shown_without_it(
    table: StatusTable, metrics: Metrics
) -> None:
    """The dead letter is stored before the claim that covers it is raised; while it cannot
    be stored, the claim is not raised."""
    poison = change_at("poison", 1, T0 + 5 * S)
    recording = RecordingTable(table, fail_dead_letters=True)
    watermark = publisher("s", recording, Stream(Shard("s", None, False)), metrics)
    watermark.received(poison)
    watermark.settled(recording.destination, poison, dead_lettered=True)
    watermark.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
    watermark.publish()  # the dead letter cannot be stored: nothing is raised
    assert recording.seen_at_raise == []
    assert combine(recording.destination, recording.parts()).watermark_us in (None, 0)
    recording.fail_dead_letters = False
    for target in watermark._targets.values():  # skip the back-off after the failure
        target.retry_at = 0.0
    watermark.publish()
    assert recording.seen_at_raise == [(T0 + 10 * S - 1, 1)]


def test_a_waiter_from_inside_a_dead_letters_second_is_told_of_it(
    table: StatusTable, metrics: Metrics
) -> None:
    """Stream creation times are whole seconds: a change dead-lettered at 10.5 s is
    recorded at 10 s. Published to the status table and waited for through it, with
    ``since`` 10.4 s, it is reported, not called replicated."""
    poison = change_at("poison", 1, T0 + 10 * S)
    watermark = publisher("s", table, Stream(Shard("s", None, False)), metrics)
    watermark.received(poison)
    watermark.settled(table.destination, poison, dead_lettered=True)
    watermark.empty_read(previous_answer_at=(T0 + 20 * S) / S, received_at=0)
    watermark.publish()
    result = wait_until_replicated(
        (T0 + 10 * S + 900_000) / S,
        since=(T0 + 10 * S + 400_000) / S,
        destination=table.destination,
        status_table=table.name,
        client=table.client,
        timeout=10,
    )
    assert result.reached, result.describe()
    assert not result.replicated
    assert result.dead_lettered == ((T0 + 10 * S, T0 + 11 * S - 1),)
    later = wait_until_replicated(
        (T0 + 12 * S) / S,
        since=(T0 + 11 * S) / S,
        destination=table.destination,
        status_table=table.name,
        client=table.client,
        timeout=10,
    )
    assert later.replicated, later.describe()


def test_a_wait_on_a_destination_with_no_part_names_it_and_suggests_its_spelling(
    table: StatusTable,
) -> None:
    table.raise_part("s", T0, "me")  # another destination has published
    result = wait_until_replicated(
        T0 / S,
        destination="eu-west-1/nope",
        status_table=table.name,
        client=table.client,
        timeout=0,
    )
    assert not result.reached
    reason = result.describe()
    assert f"status table {table.name} has no part for destination 'eu-west-1/nope'" in reason
    assert "check the spelling" in reason
    # A destination with a registered shard that has not published is told apart.
    StatusTable(table.client, table.name, "eu-west-1/later").add_placeholder(
        Placeholder("s1", 0, frozenset())
    )
    waiting = wait_until_replicated(
        T0 / S,
        destination="eu-west-1/later",
        status_table=table.name,
        client=table.client,
        timeout=0,
    )
    assert "shards s1 have not published yet" in waiting.describe()


def test_a_status_table_deleted_while_the_job_runs_is_created_again(
    ddb: Any, table: StatusTable, metrics: Metrics
) -> None:
    """DynamoDB answers ResourceNotFoundException for the deleted table: the publisher
    creates it again and registers the stream's shards before it claims (the other
    shard at 0: no watermark from this part alone), and stores its dead letters again."""
    stream = Stream(Shard("s", None, False), Shard("other", None, False))
    watermark = publisher("s", table, stream, metrics)
    poison = change_at("poison", 1, T0 + 5 * S)
    watermark.received(poison)
    watermark.settled(table.destination, poison, dead_lettered=True)
    watermark.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
    watermark.publish()
    ddb.delete_table(TableName=table.name)
    watermark.empty_read(previous_answer_at=(T0 + 20 * S) / S, received_at=0)
    watermark.publish()  # the table is gone
    failures = "replicator_watermark_publish_failures_total"
    assert sample(metrics, failures, destination=table.destination) == 1
    for target in watermark._targets.values():  # skip the back-off after the failure
        target.retry_at = 0.0
    watermark.publish()
    mark = combine(table.destination, table.parts())
    assert mark.watermark_us is None and mark.unknown == ("other",)
    assert mark.dead_letter_ranges == ((T0 + 5 * S, T0 + 6 * S - 1),)
    part = table.part("s")
    assert part is not None and part.watermark_us == T0 + 20 * S - 1
    watermark.close()


def test_a_part_raised_before_that_has_no_owner_now_is_not_raised(table: StatusTable) -> None:
    """The table was created again: a part its processor raised before is a placeholder,
    or missing; it is not raised over, and PartLost says so."""
    table.add_placeholder(Placeholder("s", 0, frozenset()))
    with pytest.raises(PartLost):
        table.raise_part("s", T0, "me", raised_before=True)
    with pytest.raises(PartLost):
        table.raise_part("missing", T0, "me", raised_before=True)
    assert table.raise_part("s", T0, "me") == T0
    assert table.raise_part("s", T0 + S, "me", raised_before=True) == T0 + S
    assert table.raise_part("s", T0, "me", raised_before=True) == T0 + S  # only raised
    assert table.part("missing") is None


def test_members_count_only_when_the_parts_latest_raise_wrote_them(
    ddb: Any, unique: Callable[[str], str]
) -> None:
    """A part records the job's destinations with each raise. A version that does not
    (run after this one: a downgrade) raises the part on, leaving them behind: taken as
    they were, a destination it ran without looked in the job, and one re-added after
    it got no ``joined`` span (wait answered "replicated" for changes it never got)."""
    name = unique("wm-members")
    table = StatusTable(ddb, name, "eu-west-1/r")
    table.ensure_exists()
    table.raise_part("s1", 1_000_000, "new:1", members=frozenset({"eu-west-1/r", "ap/r"}))
    (part,) = table.parts(("members", "members_at", "updated_at"))
    assert part.current_members == {"eu-west-1/r", "ap/r"}
    # As an earlier version raises a part: no members.
    ddb.update_item(
        TableName=name,
        Key={"destination": {"S": "eu-west-1/r"}, "shard": {"S": "s1"}},
        UpdateExpression="SET watermark_us = :w, updated_at = :now, #owner = :o",
        ExpressionAttributeNames={"#owner": "owner"},
        ExpressionAttributeValues={
            ":w": {"N": "2000000"},
            ":now": {"N": f"{(part.updated_at or 0) + 5:.3f}"},
            ":o": {"S": "old:1"},
        },
    )
    (part,) = table.parts(("members", "members_at", "updated_at"))
    assert part.members == {"eu-west-1/r", "ap/r"} and part.current_members is None
