"""Stage 3: squash per key, one write per key in flight, and the safe checkpoint."""

from __future__ import annotations

import random

import pytest

from replicator.buffer import ChangeBuffer, Entry, Squash, SquashOrder
from replicator.decode import decode
from replicator.records import Change, Held
from replicator.rules import IN_STREAM_ORDER, OrderedRule, OverwriteRule, squash_order
from tests.support.records import daemon_record, kinesis_record, put, remove, stream_record

# Two DynamoDB numbers of 38 significant digits that differ only in the last one.
BIG_1 = "1" + "0" * 36 + "1"
BIG_2 = "1" + "0" * 36 + "2"


def change(pk: str, seq: int, **attributes: object) -> Change:
    return decode(put(pk, seq, **attributes))


def drain(buffer: ChangeBuffer, destination: str) -> list[Entry]:
    taken = buffer.take_ready(destination, 1000)
    for entry in taken:
        buffer.complete(destination, entry)
    return taken


def test_only_the_newest_change_per_key_is_written() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    for seq, value in [(1, "a"), (2, "b"), (3, "c")]:
        buffer.add(change("k", seq, v=value))
    buffer.add(change("other", 4))
    written = drain(buffer, "d")
    assert [e.change.sequence_number for e in written] == ["3", "4"]
    assert buffer.squashed == 2
    assert buffer.checkpointable() == "4"
    assert buffer.idle


def test_38_digit_keys_that_differ_in_the_last_digit_are_both_written() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    for seq, number in ((1, BIG_1), (2, BIG_2)):
        keys = {"pk": {"N": number}}
        assert buffer.add(decode(daemon_record(stream_record("INSERT", keys, keys, seq=seq), seq)))
    written = drain(buffer, "d")
    assert sorted(entry.change.keys["pk"]["N"] for entry in written) == [BIG_1, BIG_2]
    assert buffer.squashed == 0
    assert buffer.checkpointable() == "2"


def test_a_key_in_flight_is_not_written_again_until_it_completes() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    (first,) = buffer.take_ready("d", 10)
    buffer.add(change("k", 2))
    buffer.add(change("j", 3))
    assert [e.change.sequence_number for e in buffer.take_ready("d", 10)] == ["3"]
    buffer.complete("d", first)
    (second,) = buffer.take_ready("d", 10)
    assert second.change.sequence_number == "2"


def test_a_held_key_settles_its_write_and_keeps_back_only_its_next_change() -> None:
    """A write whose request may still land: its record is done (the checkpoint passes
    it), its key's next change waits until the hold is released, other keys do not; a
    release with a stale token changes nothing, and a stop releases every key."""
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    buffer.add(change("lone", 2))
    first, lone = buffer.take_ready("d", 10)
    token = buffer.hold_key("d", first)
    lone_token = buffer.hold_key("d", lone)
    assert token is not None and lone_token is not None
    buffer.complete("d", first)
    buffer.complete("d", lone)
    assert buffer.checkpointable() == "2"
    assert not buffer.idle  # held keys: a shard's end waits for them
    buffer.add(change("k", 3))
    buffer.add(change("j", 4))
    assert [e.change.sequence_number for e in drain(buffer, "d")] == ["4"]
    assert buffer.outstanding("d") == 1
    assert buffer.checkpointable() == "2"
    assert not buffer.release_key("d", first.change.key, token + 100)
    assert buffer.take_ready("d", 10) == []
    assert buffer.release_key("d", first.change.key, token)
    assert [e.change.sequence_number for e in drain(buffer, "d")] == ["3"]
    assert buffer.checkpointable() == "4"
    assert buffer.release_keys() == ["d"]  # the stop: the key without a next change
    assert buffer.idle
    assert not buffer.release_key("d", lone.change.key, lone_token)  # released already


def test_checkpoint_never_passes_an_unapplied_change() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    for seq, pk in [(1, "a"), (2, "b"), (3, "c")]:
        buffer.add(change(pk, seq))
    a, b, c = buffer.take_ready("d", 10)
    buffer.complete("d", c)
    buffer.complete("d", b)
    assert buffer.checkpointable() is None
    buffer.complete("d", a)
    assert buffer.checkpointable() == "3"


def test_every_destination_must_apply_before_the_checkpoint_moves() -> None:
    buffer = ChangeBuffer(["eu", "ap"], IN_STREAM_ORDER)
    buffer.add(change("a", 1))
    drain(buffer, "eu")
    assert buffer.checkpointable() is None
    assert buffer.outstanding("ap") == 1 and buffer.outstanding("eu") == 0
    drain(buffer, "ap")
    assert buffer.checkpointable() == "1"


def test_a_superseded_change_in_flight_holds_the_checkpoint_until_its_write_lands() -> None:
    # Its write may still fail and be dead-lettered: until it lands it is neither.
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    (old,) = buffer.take_ready("d", 10)
    buffer.add(change("k", 2))
    assert buffer.checkpointable() is None
    assert buffer.open_changes == 2  # record 1 is kept until its write lands
    buffer.complete("d", old)
    assert buffer.checkpointable() == "1"
    drain(buffer, "d")
    assert buffer.checkpointable() == "2"


T0_MS = 1_700_000_000_000


def made_at(pk: str, seq: int, created_ms: int) -> Change:
    image = {"pk": {"S": pk}, "v": {"N": str(seq)}}
    record = stream_record("MODIFY", {"pk": {"S": pk}}, image, seq=seq, created_ms=created_ms)
    return decode(daemon_record(record, seq))


def test_a_replaced_queued_change_hands_its_age_to_the_change_that_replaced_it() -> None:
    # "ap" accepts nothing while the item keeps changing: it has lacked the item's
    # changes since the first one, however many replaced it since.
    buffer = ChangeBuffer(["eu", "ap"], IN_STREAM_ORDER)
    buffer.add(made_at("hot", 1, T0_MS))
    drain(buffer, "eu")  # eu applied change 1: nothing is carried for it
    buffer.add(made_at("hot", 2, T0_MS + 100_000))
    buffer.add(made_at("hot", 3, T0_MS + 200_000))
    assert buffer.oldest_outstanding_us("ap") == T0_MS * 1000
    assert buffer.oldest_outstanding_us("eu") == (T0_MS + 100_000) * 1000
    (entry,) = buffer.take_ready("ap", 10)
    assert entry.change.sequence_number == "3"
    assert entry.stale_since_us("ap") == T0_MS * 1000
    assert entry.stale_since_us("eu") == (T0_MS + 100_000) * 1000
    buffer.complete("ap", entry)
    assert buffer.oldest_outstanding_us("ap") is None


def test_a_replaced_change_in_flight_counts_until_its_write_lands() -> None:
    buffer = ChangeBuffer(["ap"], IN_STREAM_ORDER)
    buffer.add(made_at("hot", 1, T0_MS))
    (retrying,) = buffer.take_ready("ap", 10)  # in flight, being retried
    buffer.add(made_at("hot", 2, T0_MS + 100_000))
    buffer.add(made_at("hot", 3, T0_MS + 200_000))
    assert buffer.oldest_outstanding_us("ap") == T0_MS * 1000
    buffer.complete("ap", retrying)
    # Change 1 landed; change 2 was replaced before it was written: "ap" lacks it.
    assert buffer.oldest_outstanding_us("ap") == (T0_MS + 100_000) * 1000
    assert buffer.checkpointable() == "1"  # 2 waits for the write of 3, which stands for it


def test_a_write_left_in_flight_by_abandon_is_not_owed() -> None:
    buffer = ChangeBuffer(["ap"], IN_STREAM_ORDER)
    buffer.add(made_at("hot", 1, T0_MS))
    buffer.take_ready("ap", 10)
    buffer.abandon()
    assert buffer.oldest_outstanding_us("ap") is None


def test_loop_skipped_change_replaces_an_older_queued_one() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    buffer.add_skipped(change("k", 2), replaces_older_at={"d"})
    assert buffer.take_ready("d", 10) == []
    assert buffer.checkpointable() == "2"


def test_an_echo_retires_older_changes_only_at_the_destination_that_holds_it() -> None:
    """A mesh: the echo of eu's newer state says nothing about ap, which must still get
    the older change (it applies there, or loses to the newer state)."""
    buffer = ChangeBuffer(["eu", "ap"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    buffer.add_skipped(change("k", 2), replaces_older_at={"eu"})
    assert buffer.take_ready("eu", 10) == []
    assert buffer.checkpointable() is None  # record 1 is still owed to ap
    assert buffer.open_changes == 1 and not buffer.idle
    assert [e.change.sequence_number for e in drain(buffer, "ap")] == ["1"]
    assert buffer.checkpointable() == "2"
    assert buffer.idle and buffer.squashed == 0


def test_an_echo_leaves_a_write_in_flight_at_its_holder_to_settle_it() -> None:
    buffer = ChangeBuffer(["eu", "ap"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    (at_eu,) = buffer.take_ready("eu", 10)
    buffer.add(change("k", 2))  # queued behind the write in flight: replaces record 1
    buffer.add(change("j", 3))
    (queued,) = buffer.take_ready("ap", 1)
    assert queued.change.sequence_number == "2"
    buffer.add_skipped(change("k", 4), replaces_older_at={"eu"})
    (j,) = buffer.take_ready("eu", 10)
    assert j.change.sequence_number == "3"
    buffer.complete("eu", at_eu)  # superseded by record 2: settles nothing
    assert buffer.take_ready("eu", 10) == []  # record 2 was retired at eu, not sent
    buffer.complete("ap", queued)
    assert [e.change.sequence_number for e in drain(buffer, "ap")] == ["3"]
    assert buffer.checkpointable() == "2"  # record 3 is owed to eu
    buffer.complete("eu", j)
    assert buffer.checkpointable() == "4"
    assert buffer.idle


def test_an_echo_held_by_every_destination_retires_the_older_change_everywhere() -> None:
    buffer = ChangeBuffer(["eu", "source:us-east-1"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    buffer.add_skipped(change("k", 2), replaces_older_at={"eu", "source:us-east-1", "ap"})
    assert buffer.take_ready("eu", 10) == [] and buffer.take_ready("source:us-east-1", 10) == []
    assert buffer.checkpointable() == "2"
    assert buffer.squashed == 1


def test_filtered_change_does_not_replace_an_older_one() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    buffer.add_skipped(change("k", 2))
    assert [e.change.sequence_number for e in drain(buffer, "d")] == ["1"]
    assert buffer.checkpointable() == "2"


def test_kinesis_order_keeps_the_newer_image_even_when_it_arrives_first() -> None:
    rule = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
    buffer = ChangeBuffer(["d"], squash_order([rule], ordered_stream=False))
    newer = kinesis_record("MODIFY", {"pk": {"S": "k"}}, {"pk": {"S": "k"}, "ts": {"N": "20"}})
    older = kinesis_record("MODIFY", {"pk": {"S": "k"}}, {"pk": {"S": "k"}, "ts": {"N": "10"}})
    assert buffer.add(decode(daemon_record(newer, 100)))
    assert not buffer.add(decode(daemon_record(older, 101)))
    (written,) = drain(buffer, "d")
    assert written.change.new_image["ts"] == {"N": "20"}  # type: ignore[index]
    assert buffer.checkpointable() == "101"


TICK = 1_700_000_000_000_000  # one ApproximateCreationDateTime, in microseconds


def _custom_on_kinesis() -> ChangeBuffer:
    """A buffer squashing as a custom rule does on a Kinesis source."""
    from replicator.rules.custom import CustomRule

    rule = CustomRule(lambda incoming, existing: True)
    return ChangeBuffer(["d"], squash_order([rule], ordered_stream=False))


def _kinesis_put(version: int, created_us: int, seq: int) -> Change:
    image = {"pk": {"S": "k"}, "v": {"N": str(version)}}
    record = kinesis_record("MODIFY", {"pk": {"S": "k"}}, image, created_us=created_us)
    return decode(daemon_record(record, seq))


def test_kinesis_changes_created_in_one_tick_are_all_sent_under_custom_in_turn() -> None:
    """Which of two changes made in one millisecond came later cannot be told, and Kinesis
    may deliver either first: squashed by delivery order, the resolver never saw the
    newer one (v1, v3, v2 in one batch left v2)."""
    buffer = _custom_on_kinesis()
    for seq, version in enumerate([1, 3, 2], start=1):
        assert buffer.add(_kinesis_put(version, TICK, seq))
    sent = []
    while taken := drain(buffer, "d"):
        sent += [entry.change.new_image["v"]["N"] for entry in taken]  # type: ignore[index]
    assert sent == ["1", "3", "2"]
    assert buffer.squashed == 0
    assert buffer.checkpointable() == "3"


def test_a_kinesis_record_delivered_twice_is_sent_once_under_custom() -> None:
    """The same change twice (Kinesis delivers at least once): one write, not two."""
    buffer = _custom_on_kinesis()
    assert buffer.add(_kinesis_put(1, TICK, 1))
    assert buffer.add(_kinesis_put(1, TICK, 2))
    (written,) = drain(buffer, "d")
    assert written.change.sequence_number == "2"
    assert buffer.squashed == 1
    assert buffer.checkpointable() == "2"


def test_kinesis_changes_created_apart_squash_to_the_later_one_under_custom() -> None:
    buffer = _custom_on_kinesis()
    assert buffer.add(_kinesis_put(3, TICK + 2000, 1))
    assert not buffer.add(_kinesis_put(1, TICK, 2))  # created earlier, arrived later
    assert buffer.add(_kinesis_put(4, TICK + 3000, 3))
    (written,) = drain(buffer, "d")
    assert written.change.new_image["v"] == {"N": "4"}  # type: ignore[index]
    assert buffer.checkpointable() == "3"


def test_abandon_forgets_everything_unwritten() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(change("a", 1))
    (in_flight,) = buffer.take_ready("d", 10)
    buffer.add(change("b", 2))
    buffer.abandon()
    buffer.complete("d", in_flight)
    assert buffer.take_ready("d", 10) == []
    assert buffer.open_changes == 0


def test_random_interleavings_keep_the_invariants() -> None:
    """Model check: arbitrary arrival/completion orders over two destinations."""
    for seed in range(300):
        rng = random.Random(seed)
        buffer = ChangeBuffer(["x", "y"], IN_STREAM_ORDER)
        applied: dict[str, dict[str, int]] = {"x": {}, "y": {}}
        latest: dict[str, int] = {}
        in_flight: dict[str, list[Entry]] = {"x": [], "y": []}
        seq = 0
        for _ in range(rng.randint(5, 60)):
            action = rng.random()
            if action < 0.45:
                seq += 1
                key = rng.choice("abcd")
                buffer.add(change(key, seq))
                latest[key] = seq
            else:
                destination = rng.choice("xy")
                if action < 0.7:
                    in_flight[destination] += buffer.take_ready(destination, rng.randint(1, 3))
                elif in_flight[destination]:
                    entry = in_flight[destination].pop(rng.randrange(len(in_flight[destination])))
                    key = entry.change.keys["pk"]["S"]
                    # writes to one key at one destination arrive in stream order
                    assert applied[destination].get(key, 0) < entry.change.position
                    applied[destination][key] = entry.change.position
                    buffer.complete(destination, entry)
            done = buffer.checkpointable()
            if done is not None:
                # everything at or before the checkpoint is applied or replaced by a
                # later change that is not yet checkpointed
                for key, newest in latest.items():
                    for destination in "xy":
                        if newest <= int(done):
                            assert applied[destination].get(key) == newest, (seed, key)
        for destination in "xy":
            while True:
                batch = in_flight[destination] + buffer.take_ready(destination, 100)
                in_flight[destination] = []
                if not batch:
                    break
                for entry in batch:
                    applied[destination][entry.change.keys["pk"]["S"]] = entry.change.position
                    buffer.complete(destination, entry)
        assert buffer.idle
        assert buffer.checkpointable() == (str(seq) if seq else None)
        for destination in "xy":
            assert applied[destination] == latest, seed


VERSION = OrderedRule("version", "v", None, numeric_only=True)


def versioned(event: str, seq: int, version: int, *, kinesis: bool = False) -> Change:
    keys = {"pk": {"S": "k"}}
    image = {"pk": {"S": "k"}, "v": {"N": str(version)}}
    new, old = (None, image) if event == "REMOVE" else (image, None)
    if kinesis:
        payload = kinesis_record(event, keys, new, old, created_us=1_700_000_000_000_000 + seq)
    else:
        payload = stream_record(event, keys, new, old, seq=seq)
    return decode(daemon_record(payload, seq))


def sent_in_order(buffer: ChangeBuffer, destination: str) -> list[tuple[str, str]]:
    """Write everything one at a time as the pipeline does; (event, version) per write."""
    sent = []
    while taken := buffer.take_ready(destination, 1000):
        for entry in taken:
            assert entry.change.image is not None
            sent.append((entry.change.event.value, entry.change.image["v"]["N"]))
            buffer.complete(destination, entry)
    return sent


@pytest.mark.parametrize("kinesis", [False, True], ids=["dynamodb-streams", "kinesis"])
def test_a_recreate_at_a_lower_version_is_sent_after_the_delete_it_follows(kinesis: bool) -> None:
    """Delete at version 5, create again at version 1: the put alone would lose to the
    version-5 item still at the destination; the delete must go first, then the put."""
    buffer = ChangeBuffer(["eu", "ap"], squash_order([VERSION], ordered_stream=not kinesis))
    assert buffer.add(versioned("REMOVE", 1, 5, kinesis=kinesis))
    assert buffer.add(versioned("INSERT", 2, 1, kinesis=kinesis))
    assert buffer.squashed == 0
    assert buffer.checkpointable() is None
    for destination in ("eu", "ap"):
        assert sent_in_order(buffer, destination) == [("REMOVE", "5"), ("INSERT", "1")]
    assert buffer.idle
    assert buffer.checkpointable() == "2"


def test_a_delete_before_a_recreate_holds_the_checkpoint_until_written() -> None:
    buffer = ChangeBuffer(["d"], squash_order([VERSION], ordered_stream=True))
    buffer.add(versioned("REMOVE", 1, 5))
    buffer.add(versioned("INSERT", 2, 1))
    (delete,) = buffer.take_ready("d", 10)
    assert buffer.take_ready("d", 10) == []  # the put waits for the delete
    assert buffer.checkpointable() is None
    buffer.complete("d", delete)
    assert buffer.checkpointable() == "1"
    (insert,) = buffer.take_ready("d", 10)
    buffer.complete("d", insert)
    assert buffer.checkpointable() == "2"


def test_a_put_ranked_below_a_queued_put_is_dropped_not_sent_in_its_place() -> None:
    """Applied in turn, version 3 after version 5 loses: the destination keeps version 5.
    Sending version 3 alone would leave version 3."""
    buffer = ChangeBuffer(["d"], squash_order([VERSION], ordered_stream=True))
    buffer.add(versioned("MODIFY", 1, 5))
    assert not buffer.add(versioned("MODIFY", 2, 3))
    assert sent_in_order(buffer, "d") == [("MODIFY", "5")]
    assert buffer.checkpointable() == "2"


def test_a_squash_holds_under_every_destinations_rule() -> None:
    """One destination overwrites, the other checks versions: what is right for both is
    sent (overwrite alone would keep only the put)."""
    buffer = ChangeBuffer(
        ["eu", "ap"], squash_order([OverwriteRule(), VERSION], ordered_stream=True)
    )
    buffer.add(versioned("REMOVE", 1, 5))
    buffer.add(versioned("INSERT", 2, 1))
    for destination in ("eu", "ap"):
        assert sent_in_order(buffer, destination) == [("REMOVE", "5"), ("INSERT", "1")]


def test_an_echo_retires_a_change_re_queued_at_its_holder() -> None:
    # 1 is replaced by 2; eu refuses 2, so 1 is queued at eu again. Then the echo 3 of
    # eu's own newer state arrives: eu holds 3, so 1 must not be written there after it.
    buffer = ChangeBuffer(["eu", "ap"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    buffer.add(change("k", 2))
    (two,) = buffer.take_ready("eu", 10)
    buffer.complete("eu", two, failed=True)
    buffer.add_skipped(change("k", 3), replaces_older_at={"eu"})
    assert buffer.take_ready("eu", 10) == []
    drain(buffer, "ap")
    assert buffer.idle and buffer.checkpointable() == "3"


def test_an_echo_retires_what_a_replaced_write_in_flight_stands_for_at_its_holder() -> None:
    # 2 stands for 1 at eu; 2, in flight at eu, is replaced by 3; the echo 4 of eu's
    # state arrives; 2's write is then refused at eu: 1 must not be written there.
    buffer = ChangeBuffer(["eu", "ap"], IN_STREAM_ORDER)
    buffer.add(change("k", 1))
    buffer.add(change("k", 2))
    (two,) = buffer.take_ready("eu", 10)
    buffer.add(change("k", 3))
    buffer.add_skipped(change("k", 4), replaces_older_at={"eu"})
    buffer.complete("eu", two, failed=True)
    assert buffer.take_ready("eu", 10) == []
    drain(buffer, "ap")
    assert buffer.idle and buffer.checkpointable() == "4"


def scripted(decisions: dict[tuple[int, int], Squash]) -> ChangeBuffer:
    """Destinations "eu" and "ap", squashing as ``decisions`` say for (queued, incoming)."""

    def merge(queued: Change, incoming: Change) -> Squash:
        return decisions[(queued.position, incoming.position)]

    return ChangeBuffer(["eu", "ap"], SquashOrder(merge, lambda skipped, queued: False))


def written(buffer: ChangeBuffer, destination: str) -> list[str]:
    return [entry.change.sequence_number for entry in drain(buffer, destination)]


def test_a_change_replacing_a_write_in_flight_is_not_dropped_behind_an_older_one() -> None:
    """D1 is written at "eu", then P is in flight there when D2 replaces P and ranks
    below D1. At "eu" D2 comes after P, not after D1: it must still be written there."""
    buffer = scripted({(1, 2): Squash.BOTH, (2, 3): Squash.REPLACE, (1, 3): Squash.DROP})
    for seq in (1, 2):
        buffer.add(change("k", seq))
    assert written(buffer, "eu") == ["1"]
    (in_flight,) = buffer.take_ready("eu", 10)
    assert in_flight.change.sequence_number == "2"
    buffer.add(change("k", 3))
    buffer.complete("eu", in_flight)
    assert written(buffer, "eu") == ["3"]
    assert written(buffer, "ap") == ["1"]
    assert written(buffer, "ap") == ["3"]
    assert buffer.checkpointable() == "3"
    assert buffer.idle


def test_a_change_replacing_one_that_followed_a_write_in_flight_is_not_dropped_either() -> None:
    """As above, one step further: C2 replaced C1, which was in flight at "eu", and C3
    replaces C2 and ranks below D1. At "eu" C3 still comes after C1's write."""
    buffer = scripted(
        {
            (1, 2): Squash.BOTH,
            (2, 3): Squash.REPLACE,
            (1, 3): Squash.BOTH,
            (3, 4): Squash.REPLACE,
            (1, 4): Squash.DROP,
        }
    )
    for seq in (1, 2):
        buffer.add(change("k", seq))
    assert written(buffer, "eu") == ["1"]
    (in_flight,) = buffer.take_ready("eu", 10)
    buffer.add(change("k", 3))  # replaces 2, in flight at "eu": stops there
    buffer.add(change("k", 4))  # replaces 3, queued everywhere, but 3 followed 2's write
    buffer.complete("eu", in_flight)
    assert written(buffer, "eu") == ["4"]
    assert written(buffer, "ap") == ["1"]
    assert written(buffer, "ap") == ["4"]
    assert buffer.checkpointable() == "4"
    assert buffer.idle


def test_no_change_is_dropped_behind_one_an_echo_retired_at_its_holder() -> None:
    """A mesh: the source deletes I (Q), slow at X; an echo of Y's re-creation at
    version 1 retires Q at Y. The source then updates the item to version 2 (P, after
    Q: both sent) and deletes it (N, which replaces P and ranks below Q). At Y, P and N
    come after the echo's state, not after Q: N must still be written there."""
    keys = {"pk": {"S": "k"}}

    def image(version: int, origin: str) -> dict[str, object]:
        return {"pk": {"S": "k"}, "v": {"N": str(version)}, "o": {"S": origin}}

    def record(seq: int, event: str, new: object, old: object) -> Change:
        return decode(daemon_record(stream_record(event, keys, new, old, seq=seq), seq))

    rule = OrderedRule("version", "v", "o", numeric_only=True)
    buffer = ChangeBuffer(["x", "y"], squash_order([rule, rule], ordered_stream=True))
    assert buffer.add(record(1, "REMOVE", None, image(5, "us-east-1")))
    buffer.add_skipped(record(2, "INSERT", image(1, "eu-west-1"), None), replaces_older_at=["y"])
    assert buffer.add(record(3, "MODIFY", image(2, "us-east-1"), image(1, "eu-west-1")))
    assert buffer.add(record(4, "REMOVE", None, image(2, "us-east-1")))
    assert written(buffer, "y") == ["4"]
    assert written(buffer, "x") == ["1"]
    assert written(buffer, "x") == ["4"]
    assert buffer.checkpointable() == "4"
    assert buffer.idle


def test_a_held_record_is_not_checkpointed_until_released_and_counts_as_open() -> None:
    buffer = ChangeBuffer(["a", "b"], IN_STREAM_ORDER)
    for seq, pk in ((1, "k1"), (2, "k2")):
        buffer.add(change(pk, seq))
    first, second = buffer.take_ready("a", 10)
    held = buffer.hold("a", first)  # a lost conflict at "a", its entry not stored yet
    assert held is not None
    for entry in (first, second):
        buffer.complete("a", entry)
    for entry in buffer.take_ready("b", 10):
        buffer.complete("b", entry)
    assert buffer.checkpointable() is None
    assert buffer.open_changes == 1 and not buffer.idle
    assert buffer.take_ready("a", 10) == []  # nothing owed: the key is free
    buffer.release(held)
    assert buffer.checkpointable() == "2"
    assert buffer.idle


def test_a_hold_released_after_the_buffer_was_abandoned_changes_nothing() -> None:
    buffer = ChangeBuffer(["a"], IN_STREAM_ORDER)
    buffer.add(change("k1", 1))
    (entry,) = buffer.take_ready("a", 10)
    held = buffer.hold("a", entry)
    assert held is not None
    buffer.complete("a", entry)
    buffer.abandon()
    buffer.release(held)
    assert buffer.open_changes == 0 and buffer.idle
    assert buffer.hold("a", entry) is None  # settled there: nothing to hold


def test_a_key_holding_its_next_delete_or_put_lets_the_other_kind_and_other_keys_through() -> None:
    """After a put with no answer only the item's next delete waits, after a delete only
    its next put; a key passed by does not take the place of a key behind it (a limit of
    one still takes the next key), and the hold's release makes it ready again."""
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(decode(put("a", 1, v="x")))
    buffer.add(decode(put("b", 2, v="x")))
    (first_a, first_b) = buffer.take_ready("d", 10)
    token_a = buffer.hold_key("d", first_a, Held.DELETE)
    token_b = buffer.hold_key("d", first_b, Held.PUT)
    buffer.complete("d", first_a)
    buffer.complete("d", first_b)
    assert token_a is not None and token_b is not None
    buffer.add(versioned("REMOVE", 3, 1))  # key "k": no hold
    buffer.add(decode(remove("a", 4)))
    buffer.add(decode(put("b", 5, v="y")))
    buffer.add(decode(put("c", 6, v="y")))
    (taken,) = buffer.take_ready("d", 1)
    assert taken.change.sequence_number == "3"
    assert [e.change.sequence_number for e in buffer.take_ready("d", 1)] == ["6"]
    assert buffer.take_ready("d", 10) == []  # a's delete and b's put wait
    assert not buffer.idle
    assert buffer.release_key("d", first_a.change.key, token_a)
    assert [e.change.sequence_number for e in buffer.take_ready("d", 10)] == ["4"]
    assert buffer.release_key("d", first_b.change.key, token_b)
    assert [e.change.sequence_number for e in buffer.take_ready("d", 10)] == ["5"]


def test_a_delete_hold_lets_the_items_puts_through_and_keeps_its_delete_after_them() -> None:
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(decode(put("a", 1, v="x")))
    (first,) = buffer.take_ready("d", 10)
    token = buffer.hold_key("d", first, Held.DELETE)
    buffer.complete("d", first)
    buffer.add(decode(put("a", 2, v="y")))
    (second,) = buffer.take_ready("d", 10)
    assert second.change.sequence_number == "2"
    buffer.complete("d", second)
    buffer.add(decode(remove("a", 3)))
    assert buffer.take_ready("d", 10) == []
    assert buffer.checkpointable() == "2"
    assert buffer.release_keys() == ["d"]  # a stop
    assert [e.change.sequence_number for e in buffer.take_ready("d", 10)] == ["3"]
    assert token is not None
    assert not buffer.release_key("d", first.change.key, token)  # released already


def test_a_hold_of_the_other_kind_on_a_held_key_holds_both() -> None:
    """A delete's hold (its next put waits) runs when a put-back of a later write holds
    the item's next delete: both kinds wait then, the earlier hold is not lost."""
    buffer = ChangeBuffer(["d"], IN_STREAM_ORDER)
    buffer.add(decode(remove("a", 1)))
    (delete,) = buffer.take_ready("d", 10)
    first = buffer.hold_key("d", delete, Held.PUT)
    buffer.complete("d", delete)
    buffer.add(decode(remove("a", 2)))
    (again,) = buffer.take_ready("d", 10)  # a delete: not held by the first
    second = buffer.hold_key("d", again, Held.DELETE)
    buffer.complete("d", again)
    buffer.add(decode(put("a", 3, v="x")))
    assert buffer.take_ready("d", 10) == []  # still held by the delete's hold
    assert first is not None and second is not None
    assert buffer.release_key("d", delete.change.key, first)
    assert buffer.take_ready("d", 10) == []  # and by the second, now of both kinds
    assert buffer.release_key("d", again.change.key, second)
    assert [e.change.sequence_number for e in buffer.take_ready("d", 10)] == ["3"]
