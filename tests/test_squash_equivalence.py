"""Property: the buffer's squash never changes what a destination ends up holding.

Random sequences of stream records (puts, updates, deletes, re-creates at lower ranks,
duplicates, 38-digit numeric keys and versions) go through the buffer, with a random
order of dispatch and completion over two destinations, and each write the rules plan is
applied to an in-memory table that evaluates the ConditionExpression as DynamoDB does.
The result must equal applying the same records one at a time, in the order they were
delivered, with nothing squashed; and whenever no write is in flight, a new worker that
replays the records after the checkpoint must reach that result too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.buffer import ChangeBuffer, Entry
from replicator.decode import decode
from replicator.exceptions import PlanError
from replicator.items import Item, same_item
from replicator.records import Change
from replicator.rules import (
    ConflictRule,
    OrderedRule,
    OverwriteRule,
    Skip,
    Verdict,
    WriteRequest,
    squash_order,
)
from replicator.rules.ordered import Peers
from tests.support.records import daemon_record, kinesis_record, stream_record

BIG_1 = "1" + "0" * 36 + "1"  # 38 significant digits
BIG_2 = "1" + "0" * 36 + "2"  # differs from BIG_1 in the 38th digit only
DESTINATIONS = ("eu", "ap")

# -- an in-memory DynamoDB table --------------------------------------------------------

_TOKEN = re.compile(r"\s*(<=|>=|<>|[()=<>,]|[#:][A-Za-z0-9_]+|[A-Za-z_]+)")


@functools.cache
def _tokens(expression: str) -> tuple[str, ...]:
    tokens, position = [], 0
    while position < len(expression.rstrip()):
        match = _TOKEN.match(expression, position)
        assert match, f"cannot read condition {expression!r} at {position}"
        tokens.append(match.group(1))
        position = match.end()
    return tuple(tokens)


def _number(text: str) -> Decimal | None:
    """A number DynamoDB accepts (finite, within its range), exactly; None otherwise."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value and not -130 <= value.adjusted() <= 125:
        return None
    return value


def _scalar(value: dict[str, Any]) -> tuple[str, Any]:
    ((kind, inner),) = value.items()
    if kind == "N":
        return kind, _number(inner)
    if kind == "S":
        return kind, inner.encode("utf-8")  # DynamoDB orders strings by their UTF-8 bytes
    return kind, inner


class Condition:
    """Evaluates a ConditionExpression against an item as DynamoDB does: a comparison
    with a missing attribute, or between values of two types, is false; numbers compare
    exactly; strings by UTF-8 bytes."""

    def __init__(self, request: WriteRequest) -> None:
        assert request.condition is not None
        self.tokens = _tokens(request.condition)
        self.names = request.names
        self.values = request.values

    def holds(self, item: Item | None) -> bool:
        self.item = item or {}
        self.at = 0
        result = self._or()
        assert self.at == len(self.tokens), f"unread tokens: {self.tokens[self.at :]}"
        return result

    def _next(self) -> str:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _or(self) -> bool:
        result = self._and()
        while self._peek() == "OR":
            self._next()
            right = self._and()
            result = result or right
        return result

    def _and(self) -> bool:
        result = self._unary()
        while self._peek() == "AND":
            self._next()
            right = self._unary()
            result = result and right
        return result

    def _unary(self) -> bool:
        token = self._next()
        if token == "NOT":
            return not self._unary()
        if token == "(":
            result = self._or()
            assert self._next() == ")"
            return result
        if token in ("attribute_exists", "attribute_not_exists"):
            assert self._next() == "("
            name = self.names[self._next()]
            assert self._next() == ")"
            return (name in self.item) == (token == "attribute_exists")
        left = self._operand(token)
        operator = self._next()
        right = self._operand(self._next())
        return _compare(left, operator, right)

    def _operand(self, token: str) -> dict[str, Any] | None:
        if token.startswith("#"):
            return self.item.get(self.names[token])
        assert token.startswith(":"), token
        return self.values[token]


def _compare(left: dict[str, Any] | None, operator: str, right: dict[str, Any] | None) -> bool:
    if left is None or right is None:
        return False
    left_kind, left_value = _scalar(left)
    right_kind, right_value = _scalar(right)
    if left_kind != right_kind or left_value is None or right_value is None:
        return operator == "<>" and left_kind != right_kind
    comparisons = {
        "=": left_value == right_value,
        "<>": left_value != right_value,
        "<": left_value < right_value,
        "<=": left_value <= right_value,
        ">": left_value > right_value,
        ">=": left_value >= right_value,
    }
    return comparisons[operator]


def _table_key(keys: Item) -> tuple[Any, ...]:
    """The item's identity in the table: numbers by value, exactly."""
    return tuple(sorted((name, *_scalar(value)) for name, value in keys.items()))


def _valid(item: Item) -> bool:
    """DynamoDB refuses an item holding a number it cannot store."""
    return all(_scalar(value)[1] is not None for value in item.values())


# A destination that refuses some puts the source accepted (an index whose key must not
# be empty, an item too large with its extra attributes): those carrying this payload.
REFUSED_PAYLOAD = {"N": "3"}


@dataclass
class Table:
    items: dict[tuple[Any, ...], Item]
    refuses: bool = False

    def copy(self) -> Table:
        return Table(dict(self.items), self.refuses)

    def snapshot(self) -> dict[tuple[Any, ...], dict[str, tuple[str, Any]]]:
        return {
            key: {name: _scalar(value) for name, value in item.items()}
            for key, item in self.items.items()
        }

    def apply(self, rule: ConflictRule, change: Change) -> bool:
        """Write ``change`` as the destination writer would; False if it is dead-lettered.

        A failed condition hands the item back to the rule (``reconsider``), which may
        answer with one more conditional write, as the writer does."""
        try:
            plan: WriteRequest | Skip | Verdict = rule.plan(change)
        except PlanError:
            return False
        for _ in range(3):
            assert isinstance(plan, WriteRequest)  # these rules never skip without writing
            if plan.op == "put":
                assert plan.item is not None
                if not _valid(plan.item) or not _valid(plan.values):
                    return False
                if self.refuses and plan.item.get("payload") == REFUSED_PAYLOAD:
                    return False
                key = _table_key({"pk": plan.item["pk"]})
            else:
                assert plan.key is not None
                if not _valid(plan.values):
                    return False
                key = _table_key(plan.key)
            existing = self.items.get(key)
            if plan.condition and not Condition(plan).holds(existing):
                plan = rule.reconsider(change, existing)
                if isinstance(plan, Verdict):
                    return True  # conflict lost, or already there: a normal outcome
                continue
            if plan.op == "put":
                assert plan.item is not None
                self.items[key] = plan.item
            else:
                self.items.pop(key, None)
            return True
        raise AssertionError(f"the rule kept rewriting {change.keys} on an item nobody changed")


# -- records ----------------------------------------------------------------------------

KEYS = [{"S": "a"}, {"S": "b"}, {"N": BIG_1}, {"N": BIG_2}, {"N": "7"}, {"N": "7.0"}]
EVENTS = ["INSERT", "MODIFY", "REMOVE", "REMOVE"]
ORDERING = [None, "1", "5", "5.00", BIG_1, BIG_2]
ORDERING_WITH_STRINGS = [*ORDERING, "S:b", "S:a", "N:NaN"]
ORIGINS = [None, "", "us-east-1", "eu-west-1"]


class Digits:
    """Reads choices out of one drawn integer, so that a record costs hypothesis one draw
    (and shrinks towards the first choice of everything)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def pick(self, options: Sequence[Any]) -> Any:
        self.number, index = divmod(self.number, len(options))
        return options[index]


def image_from(digits: Digits, key: dict[str, str], strings: bool) -> Item:
    image: Item = {"pk": key, "payload": {"N": str(digits.pick(range(4)))}}
    ordering = digits.pick(ORDERING_WITH_STRINGS if strings else ORDERING)
    if ordering is not None:
        kind, _, text = ordering.rpartition(":")
        image["v"] = {kind or "N": text}
    origin = digits.pick(ORIGINS)
    if origin is not None:
        image["origin"] = {"S": origin}
    return image


@dataclass(frozen=True)
class Case:
    initial: Table
    changes: list[Change]


RECORD = st.integers(0, 2**40)


@st.composite
def cases(draw: st.DrawFn, *, kinesis: bool, strings: bool) -> Case:
    """Records over few keys, in delivery order, and what the destinations hold first.

    A delete usually carries the last image put for its key (as a source writes it);
    sometimes another image or none (a stream delivering out of order, or a replay).
    """
    initial = Table({})
    for number in draw(st.lists(RECORD, max_size=3)):
        digits = Digits(number)
        key = digits.pick(KEYS)
        held = image_from(digits, key, strings)
        if _valid(held):  # a table holds only numbers DynamoDB accepts
            initial.items[_table_key({"pk": key})] = held
    last: dict[tuple[Any, ...], Item] = {}
    changes = []
    for seq, number in enumerate(draw(st.lists(RECORD, min_size=1, max_size=24)), start=1):
        digits = Digits(number)
        key = digits.pick(KEYS)
        identity = _table_key({"pk": key})
        event = digits.pick(EVENTS)
        image = image_from(digits, key, strings)
        keys = {"pk": key}
        old: Item | None
        if event == "REMOVE":
            old = last.pop(identity, None)
            choice = digits.pick(["last", "other", "none"])
            if choice == "other" or old is None:
                old = image
            if choice == "none":
                old = None
            new = None
        else:
            old, new = None, image
            last[identity] = new
        if kinesis:
            created_us = 1_700_000_000_000_000 + digits.pick(range(6))
            payload = kinesis_record(event, keys, new, old, created_us=created_us)
        else:
            payload = stream_record(event, keys, new, old, seq=seq)
        changes.append(decode(daemon_record(payload, seq)))
    return Case(initial, changes)


# -- one at a time, and through the buffer ----------------------------------------------


def one_at_a_time(
    case: Case, rules: dict[str, ConflictRule], refusing: Sequence[str] = ()
) -> tuple[dict[str, Table], dict[str, set[str]]]:
    tables = {label: Table(dict(case.initial.items), label in refusing) for label in rules}
    dead: dict[str, set[str]] = {label: set() for label in rules}
    for change in case.changes:
        for label, rule in rules.items():
            if not tables[label].apply(rule, change):
                dead[label].add(change.sequence_number)
    return tables, dead


def through_the_buffer(
    case: Case,
    rules: dict[str, ConflictRule],
    ordered_stream: bool,
    schedule: Sequence[int],
    expected: dict[str, Table],
    refusing: Sequence[str] = (),
) -> tuple[dict[str, Table], dict[str, set[str]]]:
    """Feed the records to a buffer and write what it hands out, in the order
    ``schedule`` picks (add a record, take ready writes, complete one in flight); a
    write the table refuses is dead-lettered (``complete(..., failed=True)``)."""
    buffer = ChangeBuffer(list(rules), squash_order(list(rules.values()), ordered_stream))
    tables = {label: Table(dict(case.initial.items), label in refusing) for label in rules}
    dead: dict[str, set[str]] = {label: set() for label in rules}
    in_flight: dict[str, list[Entry]] = {label: [] for label in rules}
    waiting = list(case.changes)
    checkpoints: list[str | None] = [None]

    def complete(label: str, index: int) -> None:
        entry = in_flight[label].pop(index)
        applied = tables[label].apply(rules[label], entry.change)
        if not applied:
            dead[label].add(entry.change.sequence_number)
        buffer.complete(label, entry, failed=not applied)

    def check_checkpoint() -> None:
        done = buffer.checkpointable()
        previous = checkpoints[-1]
        assert previous is None or (done is not None and int(done) >= int(previous))
        checkpoints.append(done)
        if any(in_flight.values()):
            return
        # A new worker starts after the checkpoint and replays the rest one at a time.
        rest = [c for c in case.changes if done is None or c.position > int(done)]
        for label, rule in rules.items():
            restarted = tables[label].copy()
            for change in rest:
                restarted.apply(rule, change)
            assert restarted.snapshot() == expected[label].snapshot(), (label, done)

    for byte in schedule:
        step = byte % 8
        label = DESTINATIONS[step % 2]
        if step < 4 and waiting:
            buffer.add(waiting.pop(0))
        elif step < 6:
            in_flight[label] += buffer.take_ready(label, 1 + step % 3)
        elif in_flight[label]:
            complete(label, step % len(in_flight[label]))
        check_checkpoint()
    for change in waiting:
        buffer.add(change)
    while not buffer.idle:
        for label in rules:
            in_flight[label] += buffer.take_ready(label, 1000)
            while in_flight[label]:
                complete(label, 0)
        check_checkpoint()
    assert buffer.checkpointable() == case.changes[-1].sequence_number
    return tables, dead


# -- the property -----------------------------------------------------------------------


def lww(origin: str | None = None, peers: Peers | None = None) -> OrderedRule:
    return OrderedRule("last_writer_wins", "v", origin, numeric_only=False, peers=peers)


def version() -> OrderedRule:
    return OrderedRule("version", "v", None, numeric_only=True)


MESH_EU = Peers(stamps=frozenset({"us-east-1", "eu-west-1"}))
PAIR = Peers(any_stamp=True)


@dataclass(frozen=True)
class Setup:
    rules: tuple[ConflictRule, ConflictRule]
    kinesis: bool
    # Destinations that refuse the puts carrying REFUSED_PAYLOAD.
    refusing: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        names = "+".join(
            rule.name
            + ("/origin" if getattr(rule, "origin_attribute", None) else "")
            + ("/peers" if getattr(rule, "peers", None) else "")
            for rule in self.rules
        )
        refusing = f"-{'+'.join(self.refusing)}-refuses" if self.refusing else ""
        return f"{names}-{'kinesis' if self.kinesis else 'dynamodb-streams'}{refusing}"


SETUPS = [
    Setup((OverwriteRule(), OverwriteRule()), kinesis=False),
    Setup((lww(), lww()), kinesis=False),
    Setup((lww("origin"), lww("origin")), kinesis=False),
    Setup((version(), version()), kinesis=False),
    Setup((lww(), lww()), kinesis=True),
    Setup((version(), version()), kinesis=True),
    Setup((OverwriteRule(), version()), kinesis=False),  # one rule per destination
    Setup((lww("origin"), version()), kinesis=True),
    # Active-active: deletes of images the two regions wrote remove only those images.
    Setup((lww("origin", MESH_EU), lww("origin", PAIR)), kinesis=False),
    Setup((lww("origin", MESH_EU), lww("origin")), kinesis=True),
    # A destination refusing a change that squashed older ones away: they are written
    # there after all, so it ends as if each record had been applied in turn.
    Setup((OverwriteRule(), OverwriteRule()), kinesis=False, refusing=("eu",)),
    Setup((lww(), lww()), kinesis=False, refusing=("eu",)),
    Setup((version(), version()), kinesis=False, refusing=("eu", "ap")),
    Setup((lww(), version()), kinesis=True, refusing=("ap",)),
]


def _runs(setup: Setup) -> Iterator[Any]:
    strings = any(getattr(rule, "name", "") == "last_writer_wins" for rule in setup.rules)
    yield cases(kinesis=setup.kinesis, strings=strings)
    yield st.binary(max_size=120)  # the schedule: one step per byte


@pytest.mark.parametrize("setup", SETUPS, ids=[setup.id for setup in SETUPS])
def test_squashing_gives_what_applying_each_record_in_turn_gives(setup: Setup) -> None:
    rules = dict(zip(DESTINATIONS, setup.rules, strict=True))

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(*_runs(setup))
    def check(case: Case, schedule: bytes) -> None:
        expected, expected_dead = one_at_a_time(case, rules, setup.refusing)
        found, dead = through_the_buffer(
            case, rules, not setup.kinesis, schedule, expected, setup.refusing
        )
        for label in rules:
            assert found[label].snapshot() == expected[label].snapshot(), label
            if label in setup.refusing:
                # A refused change squashed away before its write is never sent: no
                # letter, where one at a time would have stored one and written the next.
                assert dead[label] <= expected_dead[label], label
            else:
                assert dead[label] == expected_dead[label], label

    check()


def _changes(records: list[tuple[str, Item | None, Item | None]], kinesis: bool) -> list[Change]:
    keys = {"pk": {"S": "k"}}
    changes = []
    for seq, (event, new, old) in enumerate(records, start=1):
        if kinesis:
            payload = kinesis_record(event, keys, new, old, created_us=1_700_000_000_000_000 + seq)
        else:
            payload = stream_record(event, keys, new, old, seq=seq)
        changes.append(decode(daemon_record(payload, seq)))
    return changes


@pytest.mark.parametrize("kinesis", [False, True], ids=["dynamodb-streams", "kinesis"])
@pytest.mark.parametrize("rule", [lww(), version()], ids=["last_writer_wins", "version"])
def test_a_delete_tying_with_a_queued_put_is_still_written(
    rule: OrderedRule, kinesis: bool
) -> None:
    """Two writes in one millisecond (the second removes an attribute), then a delete of
    the second: all three tie on the timestamp. One at a time, the delete's condition
    holds on either image (an item with more attributes than the deleted image passes
    it), so the item is gone, as at the source; a squash deciding by the ranks' digests
    kept one of the puts for ever."""
    first: Item = {"pk": {"S": "k"}, "v": {"N": "5"}, "a": {"S": "x"}, "b": {"S": "y"}}
    second: Item = {"pk": {"S": "k"}, "v": {"N": "5"}, "a": {"S": "x"}}
    records: list[tuple[str, Item | None, Item | None]] = [
        ("INSERT", first, None),
        ("MODIFY", second, first),
        ("REMOVE", None, second),
    ]
    rules: dict[str, ConflictRule] = {"eu": rule, "ap": rule}
    for puts in (records, [records[1], records[0], records[2]]):  # and out of order
        case = Case(Table({}), _changes(puts, kinesis))
        expected, _ = one_at_a_time(case, rules)
        assert all(table.snapshot() == {} for table in expected.values())
        for schedule in (b"", bytes([0, 2, 4, 6, 7, 1, 3, 5, 6, 7])):
            found, _ = through_the_buffer(case, rules, not kinesis, schedule, expected)
            assert {label: table.snapshot() for label, table in found.items()} == {
                "eu": {},
                "ap": {},
            }


def _grid() -> list[Item]:
    found = []
    for ordering in [None, "N:1", "N:5", "N:5.0", f"N:{BIG_1}", f"N:{BIG_2}", "S:a", "S:b"]:
        for origin in ORIGINS:
            image: Item = {"pk": {"S": "k"}}
            if ordering is not None:
                kind, _, text = ordering.partition(":")
                image["v"] = {kind: text}
            if origin is not None:
                image["origin"] = {"S": origin}
            found.append(image)
    return found


@pytest.mark.parametrize(
    "rule",
    [lww(), lww("origin"), version()],
    ids=["last_writer_wins", "last_writer_wins-origin", "version"],
)
def test_order_ranks_images_exactly_as_the_rules_writes_decide(rule: OrderedRule) -> None:
    """The squash decides with ``order``; DynamoDB decides with the condition, and the rule
    settles what the condition cannot compare from the item that came back. For every
    destination item and every image: a put lands exactly when the item ranks below the
    image (or there is none), a delete exactly when the item ranks at or below the image it
    deleted; otherwise the item stays."""
    grid = _grid()
    for event in ("MODIFY", "REMOVE"):
        for image in grid:
            new, old = (None, image) if event == "REMOVE" else (image, None)
            change = decode(
                daemon_record(stream_record(event, {"pk": {"S": "k"}}, new, old, seq=1), 1)
            )
            mine = rule.order(image)
            if mine is None:
                with pytest.raises(PlanError):
                    rule.plan(change)
                continue
            for existing in [None, *grid]:
                theirs = rule.rank(existing)
                table = Table(
                    {} if existing is None else {_table_key({"pk": {"S": "k"}}): existing}
                )
                assert table.apply(rule, change)
                held = table.items.get(_table_key({"pk": {"S": "k"}}))
                if event == "REMOVE":
                    # A condition cannot exclude every other attribute: a delete also
                    # removes an item that holds the deleted image plus attributes that do
                    # not rank it (documented in OrderedRule.exactly).
                    ranking = {rule.attribute, rule.origin_attribute}
                    gained = (
                        existing is not None
                        and not (ranking & (existing.keys() - image.keys()))
                        and same_item({n: existing[n] for n in image if n in existing}, image)
                    )
                    expected = None if theirs <= mine or gained else existing
                else:
                    expected = image if theirs < mine else existing
                assert held == expected, (event, image, existing)
