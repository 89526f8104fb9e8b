"""Items with more attributes than one condition expression can compare (150), on a
moto server over HTTP: a tie on the timestamp is settled by the digest as for any item,
and a change made at the destination between the read and the write is never replaced
by an image that ranks below it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from replicator.aws.backoff import Backoff
from replicator.decode import decode
from replicator.exceptions import WriteCancelled
from replicator.items import Item, ItemView
from replicator.metrics import Metrics
from replicator.records import Change, Held
from replicator.rules import OrderedRule, Verdict, WriteRequest
from replicator.rules.requests import MAX_EXPRESSION, MAX_OPERATORS, operator_count
from replicator.tombstones.model import tombstone_of
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome
from tests.support.records import put, remove
from tests.writers.test_writers import REGION, Destination


@pytest.fixture
def dest(moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics) -> Destination:
    return Destination(moto_endpoint, unique("wide"), tmp_path, metrics)


class RacingRule(OrderedRule):
    """``last_writer_wins`` on ``ts``, with a write of another writer landing at the
    destination right after the rule has read the item it will replace, before its write
    reaches DynamoDB: the one moment an exact-item condition exists for."""

    def __init__(self) -> None:
        super().__init__("last_writer_wins", "ts", None, numeric_only=False)
        self.races: list[Callable[[], None]] = []
        self.requests: list[WriteRequest] = []

    def reconsider(self, change: Change, existing: Item | None) -> WriteRequest | Verdict:
        decision = super().reconsider(change, existing)
        if isinstance(decision, WriteRequest):
            self.requests.append(decision)
            if self.races:
                self.races.pop()()
        return decision


# Wide enough that a5 and the middle attribute (a299) sort past the attributes one
# condition compares (ts, those that differ, then a0, a1, a10, a100, ... by name): the
# wide path, for a fraction of what 2000 attributes cost (moto's work and the digests
# grow with the width). The tie on the timestamp is settled at 2000 as well.
WIDE = 600
LEFT_OUT = f"a{WIDE // 2 - 1}"


def wide(width: int, ts: int = 5, **changed: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {f"a{index}": "first" for index in range(width)}
    return {**attributes, "ts": ts, **changed}


def above(rule: OrderedRule, other: ItemView, make: Callable[[str], ItemView]) -> str:
    """A value ``make`` turns into an image ranking above ``other`` (by the digest when
    they tie on the timestamp): the search is over a fixed sequence, so it is the same
    value on every run."""
    bar = rule.rank(other)  # its digest, hashed once: a wide image's costs the most here
    for number in range(1000):
        value = f"v{number}"
        if rule.rank(make(value)) > bar:
            return value
    raise AssertionError("no value ranks above")


def image_of(pk: str, attributes: dict[str, Any]) -> Item:
    image = decode(put(pk, 1, **attributes)).new_image
    assert image is not None
    return dict(image)


def writer_with(dest: Destination, rule: OrderedRule) -> DestinationWriter:
    return DestinationWriter(
        label="dest",
        table=dest.table,
        region=REGION,
        client=dest.ddb,
        rule=rule,
        metrics=dest.metrics,
        backoff=Backoff(0.0001, 0.001),
    )


def test_the_width_leaves_a5_and_the_middle_attribute_out_of_one_condition() -> None:
    """The premise of the tests at ``WIDE``: a narrower item would be compared whole, and
    they would pass without taking the wide path."""
    rule = RacingRule()
    for image in (image_of("a", wide(WIDE, a5="deleted")), image_of("a", wide(WIDE))):
        _, names, _ = rule.exactly(image)
        compared = set(names.values())
        assert "ts" in compared and not {"a5", LEFT_OUT} & compared


@pytest.mark.parametrize("width", [241, 300, 2000])
def test_a_wide_item_tying_on_the_timestamp_is_replaced_by_the_image_above_it(
    dest: Destination, width: int
) -> None:
    """Every attribute differs from the destination's (all 300 of the reviewer's items):
    more than one condition compares, and the image ranking above still lands."""
    rule = RacingRule()
    dest.seed("a", **wide(width))
    existing = dest.get("a")
    assert existing is not None

    def second(value: str) -> dict[str, Any]:
        return {**wide(width), **{f"a{index}": "second" for index in range(1, width)}, "a0": value}

    new = second(above(rule, existing, lambda v: image_of("a", second(v))))
    result = writer_with(dest, rule).write(decode(put("a", 2, **new)))
    assert (result.outcome, result.reason) == (Outcome.APPLIED, None), result.error
    assert dest.get("a") == image_of("a", new)
    (request,) = rule.requests
    assert request.condition is not None and len(request.condition) <= MAX_EXPRESSION
    assert operator_count(request.condition) <= MAX_OPERATORS
    assert not dest.dead_letters.path.exists()


def _newer(base: dict[str, Any], value: str) -> dict[str, Any]:
    return {**base, "ts": 6, "a1": value}


def _same_ts_in_a_differing_attribute(base: dict[str, Any], value: str) -> dict[str, Any]:
    return {**base, "a5": value}


def _same_ts_in_an_attribute_both_images_share(base: dict[str, Any], value: str) -> dict[str, Any]:
    return {**base, "a0": value}


def _same_ts_in_an_attribute_left_out(base: dict[str, Any], value: str) -> dict[str, Any]:
    """a299 of 600 is past the attributes one condition compares: the write lands, the
    item it returns shows the change, and the writer puts that item back."""
    return {**base, f"a{(len(base) - 1) // 2 - 1}": value}


@pytest.mark.parametrize("width", [140, WIDE])
@pytest.mark.parametrize(
    "concurrent",
    [
        _newer,
        _same_ts_in_a_differing_attribute,
        _same_ts_in_an_attribute_both_images_share,
        _same_ts_in_an_attribute_left_out,
    ],
)
def test_a_change_made_between_the_read_and_the_write_is_not_overwritten(
    dest: Destination,
    width: int,
    concurrent: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    """The destination holds a wide item; the change ties with it on the timestamp and
    ranks above it by the digest, so the writer reads the item (the failed condition's
    ALL_OLD) and puts the image again on the condition that the item is still the one it
    read. Another write lands in between with an image ranking above the change's: it
    stays (refused by the condition, or put back when it changed only attributes the
    condition left out), and the change counts as a lost conflict."""
    rule = RacingRule()
    # The two lowest of a few images differing in a5: much room above both by the digest.
    lowest, low = sorted(
        (wide(width, a5=f"v{number}") for number in range(40)),
        key=lambda attributes: rule.rank(image_of("a", attributes)),
    )[:2]
    dest.seed("a", **lowest)
    image = image_of("a", low)
    later = concurrent(lowest, above(rule, image, lambda v: image_of("a", concurrent(lowest, v))))
    rule.races.append(lambda: dest.seed("a", **later))

    result = writer_with(dest, rule).write(decode(put("a", 2, **low)))

    assert result.outcome is Outcome.CONFLICT_LOST, (result.reason, result.error)
    assert dest.get("a") == image_of("a", later)
    (request,) = rule.requests  # one write, on the item read: the race made it fail
    assert request.condition is not None and len(request.condition) <= MAX_EXPRESSION
    assert operator_count(request.condition) <= MAX_OPERATORS
    compared = set(request.names.values())
    assert {"ts", "a5", "a0"} <= compared
    assert (len(compared) == width + 2) is (width < 148)  # the key, ts, every aN if they fit
    assert (f"a{width // 2 - 1}" in compared) is (width < 148)  # a299 of 600 is left out


def test_a_wide_delete_never_removes_an_item_ranking_above_its_image(dest: Destination) -> None:
    """The delete of a 600-attribute image applies to what ranks at or below it, or to
    that image, compared only on the attributes one condition holds (a5, in which the
    two differ, sorts past them). The destination holds an item tying with the image on
    the timestamp, above it by the digest, equal to it on every attribute compared: the
    delete removes it, the item it returns shows it ranks above, and the writer puts it
    back; the delete lost."""
    rule = RacingRule()
    image = image_of("a", wide(WIDE, a5="deleted"))
    value = above(rule, image, lambda v: image_of("a", wide(WIDE, **{LEFT_OUT: v})))
    dest.seed("a", **wide(WIDE, **{LEFT_OUT: value}))

    result = writer_with(dest, rule).write(decode(remove("a", 2, **wide(WIDE, a5="deleted"))))

    assert result.outcome is Outcome.CONFLICT_LOST, (result.reason, result.error)
    assert dest.get("a") == image_of("a", wide(WIDE, **{LEFT_OUT: value}))


def test_removing_a_wide_item_below_a_tombstone_never_removes_a_tie_compared_in_part(
    dest: Destination,
) -> None:
    """A put that lost to a delete left its 600-attribute image behind; meanwhile another
    write replaced it with an item tying with the tombstone on the timestamp (above it by
    the digest) and equal to that image on every attribute one condition compares (a299
    sorts past them). Nothing would put that item back, so the removal compares the
    image whole or not at all: the item stays."""
    rule = RacingRule()
    keys: Item = {"pk": {"S": "a"}}
    deleted = image_of("a", wide(WIDE, a5="deleted"))
    tombstone = tombstone_of(
        deleted,
        keys,
        rule.fields,
        deleted_in="us-east-1",
        written_by="us-east-1",
        deleted_at_ms=1,
        expires_at=2**40,
    )
    value = above(rule, deleted, lambda v: image_of("a", wide(WIDE, **{LEFT_OUT: v})))
    dest.seed("a", **wide(WIDE, **{LEFT_OUT: value}))

    removed = writer_with(dest, rule).remove_below(keys, tombstone, image_of("a", wide(WIDE)))

    assert removed is False
    assert dest.get("a") == image_of("a", wide(WIDE, **{LEFT_OUT: value}))


class CancelledDuringPutBack:
    """The destination's client, throttling the put-back (the third put: the write on the
    item read, the race's own, then the put-back) and cancelling the write meanwhile, as
    a lost lease, a close or a tool's interrupt does; ``throttled`` more puts after it
    are throttled too."""

    def __init__(self, client: Any, cancelled: threading.Event, throttled: int) -> None:
        self._client = client
        self.cancelled = cancelled
        self.throttled = throttled
        self.puts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_item(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts >= 3 and self.puts <= 3 + self.throttled:
            self.cancelled.set()
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}},
                "PutItem",
            )
        return self._client.put_item(**kwargs)


def _racing_in_attributes_left_out(
    dest: Destination,
) -> tuple[DestinationWriter, dict[str, Any], dict[str, Any]]:
    """A writer whose wide write (of the attributes returned second) lands over a change
    made meanwhile in attributes its condition leaves out (returned third): it puts
    that change back."""
    rule = RacingRule()
    lowest, low = sorted(
        (wide(WIDE, a5=f"v{number}") for number in range(40)),
        key=lambda attributes: rule.rank(image_of("a", attributes)),
    )[:2]
    dest.seed("a", **lowest)
    image = image_of("a", low)
    left_out = _same_ts_in_an_attribute_left_out
    later = left_out(lowest, above(rule, image, lambda v: image_of("a", left_out(lowest, v))))
    rule.races.append(lambda: dest.seed("a", **later))
    return writer_with(dest, rule), low, later


def _put_back_cancelled(dest: Destination, throttled: int) -> dict[str, Any]:
    """A wide write that lands over a change made in attributes its condition leaves out,
    cancelled while its put-back is throttled; what the destination holds after."""
    writer, low, later = _racing_in_attributes_left_out(dest)
    image = image_of("a", low)
    writer.put_back_after_cancel_s = 0.2
    client = CancelledDuringPutBack(dest.ddb, writer.cancelled, throttled)
    writer.client = client
    with pytest.raises(WriteCancelled):
        writer.write(decode(put("a", 2, **low)))
    return {
        "held": dest.get("a"),
        "later": image_of("a", later),
        "image": image,
        "puts": client.puts,
    }


def test_a_put_back_outlives_the_cancellation_of_its_write(dest: Destination) -> None:
    """The write cannot be called back, the item it replaced can: the put-back is retried
    after the cancellation, and the write stops only once it is sent."""
    seen = _put_back_cancelled(dest, throttled=1)
    assert seen["held"] == seen["later"]


def test_a_put_back_is_retried_after_a_cancellation_for_a_bounded_time(
    dest: Destination,
) -> None:
    """A destination that throttles on does not keep a cancelled write (a worker closing)
    for longer than ``put_back_after_cancel_s``: the put-back is abandoned."""
    seen = _put_back_cancelled(dest, throttled=10**9)
    assert seen["puts"] > 4  # retried after the cancellation, then abandoned
    assert seen["held"] == seen["image"]


class PutBackAnswered500:
    """The destination's client, carrying out the put-back (the third put) and answering
    it 500, as a request whose answer is lost: it may land again later."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.puts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_item(self, **kwargs: Any) -> Any:
        self.puts += 1
        answer = self._client.put_item(**kwargs)
        if self.puts == 3:
            raise ClientError(
                {
                    "Error": {"Code": "InternalServerError", "Message": "x"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "PutItem",
            )
        return answer


def test_a_put_back_without_an_answer_holds_the_items_next_delete(dest: Destination) -> None:
    """A put-back writes on the condition that there is no item (or the one it
    replaced): carried out late, after the item's next delete, it would bring the item
    back, as a put with no answer would. Its write holds the item's next delete."""
    writer, low, later = _racing_in_attributes_left_out(dest)
    writer.late_write_window_s = 600.0
    client = PutBackAnswered500(dest.ddb)
    writer.client = client

    result = writer.write(decode(put("a", 2, **low)), hold=False)

    assert client.puts >= 3
    assert dest.get("a") == image_of("a", later)
    assert result.hold_until is not None
    assert result.held is Held.DELETE
