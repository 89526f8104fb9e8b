"""The watermark's pure logic: one shard's claim, combining parts, registering shards."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from replicator.buffer import ChangeBuffer, Entry
from replicator.decode import decode
from replicator.exceptions import StreamOrderBroken
from replicator.records import Change
from replicator.rules import IN_STREAM_ORDER, OrderedRule, squash_order
from replicator.shards.stream import Shard
from replicator.watermark.parts import Part, combine, merge_ranges, plan_registration
from replicator.watermark.tracker import ShardTracker
from tests.support.records import daemon_record, stream_record

S = 1_000_000
T0 = 1_700_000_000 * S


def change(pk: str, seq: int, created_us: int, event: str = "MODIFY") -> Change:
    image = {"pk": {"S": pk}, "v": {"N": str(seq)}}
    payload = stream_record(
        event,
        {"pk": {"S": pk}},
        image if event != "REMOVE" else None,
        image if event == "REMOVE" else None,
        seq=seq,
        created_ms=created_us // 1000,
    )
    return decode(daemon_record(payload, seq))


def tracker(
    *destinations: str, margin_us: int = 0, resumed_at_us: int | None = None
) -> ShardTracker:
    return ShardTracker(destinations or ("d",), margin_us=margin_us, resumed_at_us=resumed_at_us)


# -- one shard's claim ----------------------------------------------------------------------


def test_nothing_is_claimed_before_anything_is_known() -> None:
    assert tracker().claim("d") == 0


def test_a_settled_record_moves_the_claim_to_just_before_its_creation_time() -> None:
    t = tracker()
    a = change("a", 1, T0 + 1 * S)
    t.received(a)
    assert t.claim("d") == T0 + 1 * S - 1  # a itself is not settled yet
    t.settled("d", a, dead_lettered=False)
    # Every change created before a's time was received; a later one could share it.
    assert t.claim("d") == T0 + 1 * S - 1
    t.caught_up(T0 + 3 * S)
    assert t.claim("d") == T0 + 3 * S - 1


def test_an_empty_read_claims_its_start_less_the_margin() -> None:
    t = tracker(margin_us=500_000)
    t.caught_up(T0 + 10 * S)
    assert t.claim("d") == T0 + 10 * S - 500_000 - 1


def test_an_unsettled_change_holds_the_claim_below_it_whatever_is_read_later() -> None:
    t = tracker("eu", "ap")
    a = change("a", 1, T0 + 1 * S)
    b = change("b", 2, T0 + 2 * S)
    t.received(a)
    t.received(b)
    t.settled("ap", a, dead_lettered=False)
    t.settled("ap", b, dead_lettered=False)
    t.settled("eu", b, dead_lettered=False)
    t.caught_up(T0 + 60 * S)
    assert t.claim("ap") == T0 + 60 * S - 1
    assert t.claim("eu") == T0 + 1 * S - 1  # a is not applied at eu
    t.settled("eu", a, dead_lettered=False)
    assert t.claim("eu") == T0 + 60 * S - 1


def test_a_squashed_change_counts_until_a_write_of_its_item_at_or_after_it_settles() -> None:
    t = tracker()
    old = change("k", 1, T0 + 1 * S)
    new = change("k", 2, T0 + 5 * S)
    t.received(old)
    t.received(new)  # the buffer never sends ``old``
    t.caught_up(T0 + 9 * S)
    assert t.claim("d") == T0 + 1 * S - 1
    t.settled("d", new, dead_lettered=False)
    assert t.claim("d") == T0 + 9 * S - 1


def test_a_loop_skipped_change_settles_the_older_changes_of_its_item() -> None:
    t = tracker()
    old = change("k", 1, T0 + 1 * S)
    t.received(old)
    t.skipped(change("k", 2, T0 + 2 * S), replaces_older_at={"d"})
    t.skipped(change("x", 3, T0 + 3 * S))
    assert t.claim("d") == T0 + 3 * S - 1


def test_an_echo_settles_older_changes_only_at_the_destination_it_came_from() -> None:
    """A mesh: eu's newer state, echoed into this source, is not at ap yet; the older
    change is still owed there and holds ap's claim until its write settles."""
    t = tracker("eu", "ap")
    old = change("k", 1, T0 + 1 * S)
    t.received(old)
    t.skipped(change("k", 2, T0 + 2 * S), replaces_older_at={"eu", "source:us-east-1"})
    t.caught_up(T0 + 9 * S)
    assert t.claim("eu") == T0 + 9 * S - 1
    assert t.claim("ap") == T0 + 1 * S - 1
    t.settled("ap", old, dead_lettered=False)
    assert t.claim("ap") == T0 + 9 * S - 1


def test_dead_letters_are_recorded_with_the_creation_times_they_stand_for() -> None:
    t = tracker("eu", "ap")
    old = change("k", 1, T0 + 1 * S)
    new = change("k", 2, T0 + 2 * S)
    t.received(old)
    t.received(new)
    t.settled("eu", new, dead_lettered=True)
    t.settled("ap", new, dead_lettered=False)
    t.dead_lettered_everywhere(3, T0 + 3 * S, now_us=T0 + 4 * S)
    t.dead_lettered_everywhere(4, None, now_us=T0 + 4 * S)
    eu = t.take_dead_letters("eu")
    assert eu.count == 3
    assert eu.ranges == (  # stream times are whole seconds: each reaches to its second's end
        (T0 + 1 * S, T0 + 3 * S - 1),
        (T0 + 3 * S, T0 + 4 * S - 1),
        (T0 + 3 * S, T0 + 4 * S),  # unknown: after the record before it, before now
    )
    assert t.take_dead_letters("eu").count == 0
    assert t.take_dead_letters("ap").count == 2
    assert t.claim("eu") == T0 + 3 * S - 1  # dead-lettered changes are settled


def test_a_dead_letter_is_found_by_a_since_inside_the_second_its_creation_time_names() -> None:
    """DynamoDB Streams rounds creation times down to the second: a change dead-lettered
    at 10.5 s is recorded at 10 s, and a waiter from 10.4 s must still be told of it."""
    t = tracker("eu")
    poison = change("k", 1, T0 + 10 * S)
    t.received(poison)
    t.settled("eu", poison, dead_lettered=True)
    t.caught_up(T0 + 20 * S)
    claim, taken = t.claim_and_dead_letters("eu")
    mark = combine("eu", [part("s", claim, dead_letters=1, dead_letter_ranges=taken.ranges)])
    assert mark.passes(T0 + 10 * S + S // 2)
    assert mark.dead_lettered_between(T0 + 10 * S + 4 * S // 10, T0 + 12 * S) == [
        (T0 + 10 * S, T0 + 11 * S - 1)
    ]
    assert mark.dead_lettered_between(T0 + 11 * S, T0 + 12 * S) == []  # the next second


def test_an_unsettled_change_holds_the_claim_below_the_second_its_creation_time_names() -> None:
    """The claim needs no widening: a change recorded at t was made at t or later."""
    t = tracker("eu")
    pending = change("k", 1, T0 + 10 * S)
    t.received(pending)
    t.caught_up(T0 + 20 * S)
    assert t.claim("eu") == T0 + 10 * S - 1


def test_a_resumed_shard_claims_nothing_until_it_has_replayed_what_its_predecessor_read() -> None:
    started = T0 + 100 * S
    t = tracker(resumed_at_us=started)
    replayed = change("k", 10, T0 + 50 * S)
    t.received(replayed)
    t.settled("d", replayed, dead_lettered=False)
    assert t.claim("d") == 0  # a change before the checkpoint may have been squashed into it
    pending = change("j", 11, T0 + 60 * S)
    t.received(pending)
    t.caught_up(started + 1)  # at the tip: everything the predecessor read is here
    assert t.claim("d") == 0  # ... and must settle first
    later = change("m", 12, started + 2 * S)
    t.received(later)
    t.settled("d", pending, dead_lettered=False)
    assert t.claim("d") == started + 2 * S - 1


def test_a_sequence_number_seen_twice_stops_the_shard_naming_it() -> None:
    """Two records at one position (an unpatched moto serves them; a stream never does)
    cannot both be accounted for: the first to settle would settle the other's position,
    and a claim could pass the other change. The second is refused as it arrives,
    before either is written, naming the position and the shard, instead of failing
    later as a bare KeyError when the writes settle."""
    t = ShardTracker(["eu", "ap"], margin_us=0, shard_id="shardId-0001")
    first = change("a", 7, T0 + 1 * S)
    t.received(first)
    with pytest.raises(StreamOrderBroken) as raised:
        t.received(change("b", 7, T0 + 1 * S))
    assert str(raised.value).startswith(
        "stream record sequence number 7 seen twice in shard shardId-0001: "
    )
    # The first change's account is as it was: it holds the claim below it until settled.
    t.caught_up(T0 + 9 * S)
    assert t.claim("eu") == T0 + 1 * S - 1
    t.settled("eu", first, dead_lettered=False)
    assert t.claim("eu") == T0 + 9 * S - 1
    with pytest.raises(StreamOrderBroken, match="number 7 seen twice in shard shardId-0001"):
        t.skipped(first)
    with pytest.raises(StreamOrderBroken, match="number 7 seen twice in shard shardId-0001"):
        t.dead_lettered_everywhere(7, None, T0 + 10 * S)


def test_one_record_delivered_twice_in_a_batch_or_a_position_going_back_is_refused() -> None:
    a = change("a", 7, T0 + 1 * S)
    with pytest.raises(StreamOrderBroken, match="number 7 seen twice"):
        tracker().received_all([a, a])
    t = ShardTracker(["d"], margin_us=0, shard_id="shardId-0002")
    t.received(change("b", 8, T0 + 1 * S))
    with pytest.raises(StreamOrderBroken, match="number 7 after 8 in shard shardId-0002"):
        t.dropped(a, behind=change("b", 8, T0 + 1 * S))


def test_a_stopped_tracker_claims_nothing() -> None:
    t = tracker()
    t.caught_up(T0)
    t.stop()
    assert t.claim("d") == 0


# -- the claim against the real buffer, at random -------------------------------------------


@dataclass
class Destination:
    holds: dict[str, int] = field(default_factory=dict)  # pk -> newest seq written or lost to
    dead: set[int] = field(default_factory=set)  # seqs whose effect was dead-lettered
    skipped: set[int] = field(default_factory=set)  # seqs not sent by policy (echoes)

    def settled(self, c: Change) -> bool:
        return (
            self.holds.get(pk_of(c), 0) >= c.position
            or c.position in self.dead
            or c.position in self.skipped
        )


def pk_of(c: Change) -> str:
    return str(c.keys["pk"]["S"])


def check_claims(
    t: ShardTracker, stream: list[Change], destinations: dict[str, Destination]
) -> int:
    """Every change of the stream (received or not) created at or before a claim is
    settled at that destination."""
    checked = 0
    for label, dest in destinations.items():
        claim = t.claim(label)
        for c in stream:  # in creation order
            if c.created_us > claim:
                break
            checked += 1
            assert dest.settled(c), f"{label}: claim {claim} passes unsettled {c.sequence_number}"
    return checked


def simulate(seed: int, crash: bool, echoes: bool = False) -> int:
    """One shard: hot keys (squashing), writes settling in any order, dead letters, empty
    reads, and optionally a crash after some checkpoint and a resumed process; the claims
    are checked after every step. ``echoes``: some records are loop-skipped echoes of
    changes made in eu's region, which eu holds (and ap does not, until this shard's
    older changes reach it)."""
    rng = random.Random(seed)
    labels = ["eu", "ap"]
    destinations = {label: Destination() for label in labels}
    stream: list[Change] = []
    echo: set[int] = set()
    now = T0
    for seq in range(1, 400):
        now += rng.choice([0, 0, 1000, 250_000, 1 * S])
        stream.append(change(f"k{rng.randrange(12)}", seq, now))
        if echoes and rng.random() < 0.15:
            echo.add(seq)
    checked = 0
    start = 0
    resumed_at: int | None = None
    for run in range(2 if crash else 1):
        t = tracker(*labels, resumed_at_us=resumed_at)
        buffer = ChangeBuffer(labels, IN_STREAM_ORDER)
        in_flight: list[tuple[str, Entry]] = []
        crashes = crash and run == 0
        stop_at = rng.randrange(start + 50, len(stream)) if crashes else len(stream)
        delivered = start
        clock = 0  # the latest time this process has seen (empty reads)
        while True:
            step = rng.random()
            if step < 0.45 and delivered < stop_at:
                c = stream[delivered]
                if c.position in echo:  # eu made it: eu holds it, nobody is sent it
                    eu = destinations["eu"]
                    eu.holds[pk_of(c)] = max(eu.holds.get(pk_of(c), 0), c.position)
                    for dest in destinations.values():
                        dest.skipped.add(c.position)
                    t.skipped(c, replaces_older_at={"eu"})
                    buffer.add_skipped(c, replaces_older_at={"eu"})
                else:
                    t.received(c)
                    buffer.add(c)
                delivered += 1
            elif step < 0.6:
                for label in labels:
                    taken = buffer.take_ready(label, rng.randrange(1, 4))
                    in_flight += [(label, entry) for entry in taken]
            elif step < 0.9 and in_flight:
                label, entry = in_flight.pop(rng.randrange(len(in_flight)))
                settle(destinations[label], stream, entry.change, dead=rng.random() < 0.05)
                dead = entry.change.position in destinations[label].dead
                if dead or rng.random() < 0.5:
                    t.settled(label, entry.change, dead_lettered=dead)
                else:  # as the event loop settles the writes it applied
                    t.applied(label, [entry.change])
                buffer.complete(label, entry)
            elif delivered == stop_at and not in_flight and buffer.idle:
                break
            elif crashes and delivered == stop_at and rng.random() < 0.1:
                break  # killed: writes in flight are lost
            elif rng.random() < 0.3:
                # An empty read: it started before the next record was created.
                clock = stream[delivered].created_us if delivered < len(stream) else now + S
                t.caught_up(clock)
            checked += check_claims(t, stream, destinations)
        if not crashes:  # all settled: an empty read now covers the whole shard
            t.caught_up(now + S)
            assert all(t.claim(label) == now + S - 1 for label in labels)
        # The next process starts after this one read its last record (and last read).
        resumed_at = max(clock, stream[delivered - 1].created_us) + 1
        checkpoint = buffer.checkpointable()
        start = int(checkpoint) if checkpoint else 0  # seq n is stream[n - 1]
    return checked


def settle(dest: Destination, stream: list[Change], c: Change, *, dead: bool) -> None:
    if dead:  # the item's changes up to c that the destination does not hold are lost
        dest.dead.update(
            s.position
            for s in stream[: c.position]
            if s.key == c.key and dest.holds.get(pk_of(s), 0) < s.position
        )
    else:
        dest.holds[pk_of(c)] = max(dest.holds.get(pk_of(c), 0), c.position)


def test_claims_never_pass_an_unsettled_change_under_random_interleavings() -> None:
    checked = sum(simulate(seed, crash=False) for seed in range(12))
    assert checked > 10_000


def test_claims_never_pass_an_unsettled_change_across_a_crash_and_resume() -> None:
    checked = sum(simulate(seed, crash=True) for seed in range(12))
    assert checked > 10_000


def test_claims_never_pass_an_unsettled_change_with_echoes_of_one_destination() -> None:
    """The buffer and the tracker retire and settle an echo's older changes at the same
    destination only: every claim holds, and with everything written both reach the end
    (a change the buffer no longer sends but the tracker still counts would hold it)."""
    checked = sum(simulate(seed, crash=False, echoes=True) for seed in range(12))
    checked += sum(simulate(seed, crash=True, echoes=True) for seed in range(12, 24))
    assert checked > 20_000


@pytest.mark.parametrize("policy", ["last_writer_wins", "version"])
def test_every_change_settles_once_written_when_the_squash_drops_and_replaces(
    policy: str,
) -> None:
    """Ranks out of stream order and deletes over few keys make the buffer drop and replace
    changes in every combination; writes settle in any order. Once every write has
    settled, the claim reaches the last empty read: no change is left unsettled (one
    dropped behind a change later replaced was, and the watermark stood still for good)."""
    rule = OrderedRule(policy, "v", None, numeric_only=policy == "version")
    for seed in range(40):
        rng = random.Random(seed)
        buffer = ChangeBuffer(["d"], squash_order([rule], ordered_stream=True))
        t = tracker("d")
        submit = feeder(buffer, t)
        in_flight: list[Entry] = []
        seq = 0
        for _ in range(150):
            if rng.random() < 0.6:
                seq += 1
                pk, rank = f"k{rng.randrange(3)}", rng.randrange(1, 6)
                if rng.random() < 0.3:
                    image = {"pk": {"S": pk}, "v": {"N": str(rank)}}
                    payload = stream_record(
                        "REMOVE",
                        {"pk": {"S": pk}},
                        None,
                        image,
                        seq=seq,
                        created_ms=(T0 + seq * S) // 1000,
                    )
                    submit(decode(daemon_record(payload, seq)))
                else:
                    submit(stamped(pk, seq, T0 + seq * S, ts=rank, attribute="v"))
            elif rng.random() < 0.5:
                in_flight += buffer.take_ready("d", rng.randrange(1, 3))
            elif in_flight:
                entry = in_flight.pop(rng.randrange(len(in_flight)))
                t.settled("d", entry.change, dead_lettered=False)
                buffer.complete("d", entry)
        while not buffer.idle:
            in_flight += buffer.take_ready("d", 5)
            entry = in_flight.pop(rng.randrange(len(in_flight)))
            t.settled("d", entry.change, dead_lettered=False)
            buffer.complete("d", entry)
        t.caught_up(T0 + (seq + 1) * S)
        assert t.claim("d") == T0 + (seq + 1) * S - 1, f"seed {seed}"


# -- combining parts ----------------------------------------------------------------------


def part(shard: str, value: int, **fields: object) -> Part:
    return Part("eu", shard, value, **fields)  # type: ignore[arg-type]


def test_the_watermark_is_the_lowest_part() -> None:
    mark = combine("eu", [part("a", 30), part("b", 20), part("c", 40)])
    assert mark.watermark_us == 20


def test_no_watermark_while_a_registered_shard_has_not_published() -> None:
    mark = combine("eu", [part("a", 30), part("b", 0)])
    assert mark.watermark_us is None
    assert mark.unknown == ("b",)
    assert combine("eu", []).watermark_us is None


def test_an_ended_parent_counts_until_every_child_has_a_part() -> None:
    parent = part("p", 10, ended=True, children=frozenset({"c1", "c2"}))
    assert combine("eu", [parent, part("x", 50)]).watermark_us == 10
    assert combine("eu", [parent, part("c1", 12), part("x", 50)]).watermark_us == 10
    both = combine("eu", [parent, part("c1", 12), part("c2", 15), part("x", 50)])
    assert both.watermark_us == 12
    assert [p.shard for p in both.retired] == ["p"]
    # Ended with no known child: it keeps counting (its children are not registered yet).
    assert combine("eu", [part("p", 10, ended=True), part("x", 50)]).watermark_us == 10


def test_dead_letters_of_every_part_are_reported_and_found_by_time() -> None:
    mark = combine(
        "eu",
        [
            part("a", 30, dead_letters=2, dead_letter_ranges=((5, 6), (20, 22))),
            part(
                "p",
                10,
                ended=True,
                children=frozenset({"a"}),
                dead_letters=1,
                dead_letter_ranges=((1, 1),),
            ),
        ],
    )
    assert mark.dead_letters == 3
    assert mark.dead_lettered_between(6, 19) == [(5, 6)]
    assert mark.dead_lettered_between(7, 19) == []
    assert mark.dead_lettered_between(0, 100) == [(1, 1), (5, 6), (20, 22)]


def test_dead_letter_ranges_stay_few_and_only_widen() -> None:
    ranges = [(i * 10, i * 10 + 1) for i in range(100)] + [(5, 15)]
    merged = merge_ranges(ranges, limit=8)
    assert len(merged) == 8
    for lo, hi in ranges:
        assert any(a <= lo and hi <= b for a, b in merged)


# -- registering shards -------------------------------------------------------------------


def test_open_shards_are_registered_at_zero_when_nothing_is_known() -> None:
    shards = [Shard("a", None, True), Shard("b", "a", False), Shard("c", None, False)]
    plan = plan_registration(shards, {})
    assert {(p.shard, p.watermark_us) for p in plan.placeholders} == {("b", 0), ("c", 0)}
    assert plan.children == {}


def test_children_take_their_parents_value_and_are_named_on_the_parent() -> None:
    shards = [Shard("p", None, True), Shard("c1", "p", False), Shard("c2", "p", True)]
    plan = plan_registration(shards, {"p": part("p", 70)}, starting="c1")
    assert {(p.shard, p.watermark_us, p.parents) for p in plan.placeholders} == {
        ("c1", 70, frozenset({"p"})),
        ("c2", 70, frozenset({"p"})),
    }
    assert plan.children == {"p": frozenset({"c1", "c2"})}
    assert plan.ended == ("p",)  # a child starts only once its parent was read to its end


def test_registration_leaves_existing_parts_alone() -> None:
    shards = [Shard("p", None, True), Shard("c", "p", False)]
    parts = {"p": part("p", 70, children=frozenset({"c"}), ended=True), "c": part("c", 90)}
    plan = plan_registration(shards, parts, starting="c")
    assert plan.placeholders == () and plan.children == {} and plan.ended == ()


# -- a change the squash drops ------------------------------------------------------------


def stamped(pk: str, seq: int, created_us: int, ts: int, attribute: str = "ts") -> Change:
    image = {"pk": {"S": pk}, attribute: {"N": str(ts)}}
    payload = stream_record(
        "MODIFY", {"pk": {"S": pk}}, image, None, seq=seq, created_ms=created_us // 1000
    )
    return decode(daemon_record(payload, seq))


def feeder(buffer: ChangeBuffer, t: ShardTracker) -> Callable[[Change], bool]:
    """Hands a change to ``buffer`` and tells ``t``, as ShardPipeline.submit does."""

    def submit(c: Change) -> bool:
        queued = buffer.add(c)
        behind = None if queued else buffer.newest_queued(c.key)
        if behind is None:
            t.received(c)
        else:
            t.dropped(c, behind=behind)
        return queued

    return submit


def test_a_dropped_change_settles_wherever_the_change_it_sits_behind_settles() -> None:
    rule = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
    buffer = ChangeBuffer(["eu", "ap"], squash_order([rule, rule], ordered_stream=True))
    t = tracker("eu", "ap")

    submit = feeder(buffer, t)

    high = stamped("a", 1, T0 + 1 * S, ts=10)
    assert submit(high)
    assert not submit(stamped("a", 2, T0 + 2 * S, ts=5))  # ranks below: nothing to write
    (entry,) = buffer.take_ready("eu", 5)
    t.settled("eu", high, dead_lettered=False)
    buffer.complete("eu", entry)
    t.caught_up(T0 + 3 * S)
    assert t.claim("eu") == T0 + 3 * S - 1  # the dropped change went with the write of a
    assert t.claim("ap") == T0 + 1 * S - 1  # a is not written to ap yet
    # Below a again while a is settled at eu but not at ap: sent, not dropped (what eu
    # holds since a landed is not known to be "a"), so each destination waits for it.
    low = stamped("a", 3, T0 + 4 * S, ts=1)
    assert submit(low)
    t.caught_up(T0 + 5 * S)
    assert t.claim("eu") == T0 + 4 * S - 1
    (entry,) = buffer.take_ready("eu", 5)
    t.settled("eu", low, dead_lettered=False)
    buffer.complete("eu", entry)
    assert t.claim("eu") == T0 + 5 * S - 1
    for change in (high, low):
        (entry,) = buffer.take_ready("ap", 5)
        assert entry.change is change
        assert t.claim("ap") == change.created_us - 1
        t.settled("ap", change, dead_lettered=False)
        buffer.complete("ap", entry)
    assert t.claim("ap") == T0 + 5 * S - 1
    assert buffer.idle


def test_a_change_replaced_and_then_dropped_settles_with_the_change_it_sits_behind() -> None:
    """Delete at v7, re-create at v1 (both kept: the re-create must land after the delete),
    then a delete at v1: it replaces the re-create and is dropped behind the first delete.
    The re-create's effect now stands with the first delete, and settles with it."""
    rule = OrderedRule("version", "v", None, numeric_only=True)
    buffer = ChangeBuffer(["d"], squash_order([rule], ordered_stream=True))
    t = tracker("d")

    def removal(seq: int, version: int) -> Change:
        old = {"pk": {"S": "a"}, "v": {"N": str(version)}}
        payload = stream_record(
            "REMOVE", {"pk": {"S": "a"}}, None, old, seq=seq, created_ms=(T0 + seq * S) // 1000
        )
        return decode(daemon_record(payload, seq))

    submit = feeder(buffer, t)

    first = removal(1, 7)
    assert submit(first)
    assert submit(stamped("a", 2, T0 + 2 * S, ts=1, attribute="v"))  # sent after the delete
    assert not submit(removal(3, 1))  # replaces the re-create, then dropped behind `first`
    (entry,) = buffer.take_ready("d", 5)
    t.settled("d", first, dead_lettered=False)
    buffer.complete("d", entry)
    assert buffer.idle
    t.caught_up(T0 + 4 * S)
    assert t.claim("d") == T0 + 4 * S - 1


def test_a_change_dropped_behind_a_change_later_replaced_settles_too() -> None:
    """As above, with a change dropped behind the re-create before the re-create was
    replaced: it follows the re-create, and so, once the re-create is replaced, the first
    delete. The watermark stayed below it for good once the first delete settled."""
    rule = OrderedRule("version", "v", None, numeric_only=True)
    buffer = ChangeBuffer(["d"], squash_order([rule], ordered_stream=True))
    t = tracker("d")
    submit = feeder(buffer, t)

    def removal(seq: int, version: int) -> Change:
        old = {"pk": {"S": "a"}, "v": {"N": str(version)}}
        payload = stream_record(
            "REMOVE", {"pk": {"S": "a"}}, None, old, seq=seq, created_ms=(T0 + seq * S) // 1000
        )
        return decode(daemon_record(payload, seq))

    first = removal(1, 7)
    assert submit(first)
    assert submit(stamped("a", 2, T0 + 2 * S, ts=2, attribute="v"))  # sent after the delete
    assert not submit(stamped("a", 3, T0 + 3 * S, ts=1, attribute="v"))  # behind the re-create
    assert not submit(removal(4, 2))  # replaces the re-create, then dropped behind `first`
    (entry,) = buffer.take_ready("d", 5)
    assert entry.change is first
    t.settled("d", first, dead_lettered=False)
    buffer.complete("d", entry)
    assert buffer.idle
    t.caught_up(T0 + 5 * S)
    assert t.claim("d") == T0 + 5 * S - 1
