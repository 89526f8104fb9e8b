"""The conflict log's parts: keys, entries, the background recorder, and each target's
write/read round trip against a moto server over HTTP (file, SQS, DynamoDB)."""

from __future__ import annotations

import gzip
import json
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.aws.backoff import Backoff
from replicator.aws.queues import ASSUMED_LIMIT
from replicator.cli import cli
from replicator.config.loader import load_job
from replicator.config.model import ConflictConfig
from replicator.conflictlog.base import ConflictRecorder, Loss, Selection, StoreOutcome
from replicator.conflictlog.dynamodb import TTL_ATTRIBUTE, DynamoDbConflictLog
from replicator.conflictlog.entry import ConflictEntry, LostConflict
from replicator.conflictlog.file import FileConflictLog
from replicator.conflictlog.keys import canonical_key, parse_key
from replicator.conflictlog.reader import Listing, parse_since, read_entries
from replicator.conflictlog.recorder import BackgroundRecorder
from replicator.conflictlog.restore import restore_entry
from replicator.conflictlog.sqs import SqsConflictLog
from replicator.decode import decode
from replicator.demo.workload import demo_item
from replicator.exceptions import (
    ConflictLogRejected,
    ConflictLogUnavailable,
    KeySyntaxError,
    SinceSyntaxError,
)
from replicator.images import Image
from replicator.items import AttributeValue, Item, describe_key, image_digest, item_to_wire
from replicator.metrics import Metrics
from replicator.rules import OrderedRule, rule_for
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome
from tests.support.aws import client, create_table
from tests.support.e2e import wait_until
from tests.support.metrics import sample, summed
from tests.support.records import daemon_record, stream_record

RULE = OrderedRule("last_writer_wins", "updated_at", "origin_region", numeric_only=False)


def wire_bytes(item: Item | None) -> bytes:
    """An image as bytes: equal bytes mean the same attributes, types and values."""
    assert item is not None
    return json.dumps(item_to_wire(item), sort_keys=True).encode()


def stored_bytes(image: dict[str, Any] | None) -> bytes:
    assert image is not None
    return json.dumps(image, sort_keys=True).encode()


def conflict(
    seq: int,
    *,
    size: int = 0,
    pk: str = "order-1",
    ranks: tuple[AttributeValue, AttributeValue] = ({"N": "100"}, {"N": "200"}),
) -> LostConflict:
    """A lost conflict; ``ranks``: the loser's and the winner's ``updated_at``."""
    rng = random.Random(seq)
    loser = demo_item(rng, pk, 3, "us-east-1") | {"updated_at": ranks[0]}
    winner = demo_item(rng, pk, 3, "eu-west-1") | {"updated_at": ranks[1]}
    if size:
        loser["blob"] = {"B": rng.randbytes(size)}
    keys = {"pk": loser["pk"], "sk": loser["sk"]}
    record = daemon_record(
        stream_record("MODIFY", item_to_wire(keys), item_to_wire(loser), seq=seq), seq
    )
    return LostConflict(
        task_name="orders-audit",  # the task of job_file and moto_job
        destination="eu",
        table="orders",
        region="eu-west-1",
        shard_id="shardId-1",
        rule=RULE,
        change=decode(record),
        existing=winner,
        why=RULE.explain_loss(decode(record), winner),
        recorded_s=1_800_000_000.0,
    )


# -- keys -------------------------------------------------------------------------------------


def test_a_key_typed_as_log_lines_show_it_or_as_json_names_one_canonical_item() -> None:
    typed = parse_key("pk=S:order 1 sk=N:3.0")
    assert typed == {"pk": {"S": "order 1"}, "sk": {"N": "3.0"}}
    as_json = parse_key('{"sk": {"N": "3"}, "pk": {"S": "order 1"}}')
    assert canonical_key(typed) == canonical_key(as_json) == '[["pk","S","order 1"],["sk","N","3"]]'
    assert canonical_key({"n": {"N": "1E+2"}}) == canonical_key({"n": {"N": "100.00"}})
    assert canonical_key({"b": {"B": b"\x00\xff"}}) == '[["b","B","AP8="]]'
    assert parse_key("b=B:AP8=") == {"b": {"B": b"\x00\xff"}}
    # DynamoDB's whole range, exactly: 38 digits that differ in the last are two items.
    widest = "9" * 37
    assert canonical_key({"n": {"N": widest + "8"}}) != canonical_key({"n": {"N": widest + "9"}})
    assert canonical_key(parse_key("n=N:1E+125")) == '[["n","N","1' + "0" * 125 + '"]]'
    assert canonical_key(parse_key("n=N:-1e-130")) == '[["n","N","-0.' + "0" * 129 + '1"]]'


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ({"pk": {"S": "order-1"}, "sk": {"N": "3"}}, "pk=S:order-1 sk=N:3"),
        ({"pk": {"S": "line\nbreak"}}, 'pk=S:"line\\nbreak"'),
        ({"pk": {"S": " "}, "sk": {"N": "1"}}, 'pk=S:" " sk=N:1'),
        ({"pk": {"S": "a\x00\tb"}}, 'pk=S:"a\\u0000\\tb"'),
        ({"pk": {"S": "x sk=N:2"}, "sk": {"N": "3"}}, 'pk=S:"x sk=N:2" sk=N:3'),
        ({"pk": {"S": '"q"'}}, 'pk=S:"\\"q\\""'),
        ({"pk": {"S": "caf\u00e9"}}, "pk=S:caf\u00e9"),
        # The same word decomposed (an accent mark after the e): another key, which
        # printed as it is would look like the one above.
        ({"pk": {"S": "cafe\u0301"}}, 'pk=S:"cafe\\u0301"'),
        ({"pk": {"S": "a\u2028b"}}, 'pk=S:"a\\u2028b"'),
        ({"a=b": {"S": "v"}, "c d": {"N": "1"}}, '"a=b"=S:v "c d"=N:1'),
        ({"b": {"B": b"\x00\xff"}}, "b=B:AP8="),
        ({"{a": {"S": "v"}}, '"{a"=S:v'),
        ({"pk": {"S": "{x"}}, 'pk=S:"{x"'),
    ],
)
def test_a_key_is_shown_on_one_line_one_way_and_read_back_as_shown(key: Item, shown: str) -> None:
    assert describe_key(key) == shown
    assert parse_key(shown) == key


# What DynamoDB takes in a key: names and strings of one character or more (any that
# UTF-8 encodes: no lone surrogates), numbers, binaries of one byte or more.
_KEY_VALUES = st.one_of(
    st.text(min_size=1).map(lambda text: {"S": text}),
    st.decimals(min_value=-(10**30), max_value=10**30, places=3).map(lambda n: {"N": str(n)}),
    st.binary(min_size=1).map(lambda data: {"B": data}),
)
_AWKWARD = st.sampled_from(['"', "{", "[", "=", " ", "=S:", "\\", "\n", "\u2028", "\xa0", "}"])
_NAMES = st.one_of(st.text(min_size=1), st.lists(_AWKWARD, min_size=1).map("".join))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_NAMES, _KEY_VALUES, min_size=1, max_size=3))
def test_every_key_reads_back_as_shown(key: Item) -> None:
    """Names and values that start or end like the syntax around them (quotes, braces,
    blanks, ``=S:``) are shown so that they read back as the same key (numbers as
    DynamoDB compares them: ``0.000`` is shown, and read back, as ``0``)."""
    assert canonical_key(parse_key(describe_key(key))) == canonical_key(key)


@pytest.mark.parametrize(
    ("number", "shown"),
    [("-1.5E+3", "-1500"), ("3.50", "3.5"), ("+7", "7"), ("1e-3", "0.001"), ("-0.0", "0")],
)
def test_a_key_number_is_shown_in_one_spelling_however_the_stream_spelled_it(
    number: str, shown: str
) -> None:
    """A log line shows a key as the listing of ``conflicts`` does, so that searching the
    logs for a listed key finds its lines."""
    assert describe_key({"pk": {"S": "o-9"}, "sk": {"N": number}}) == f"pk=S:o-9 sk=N:{shown}"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("order-1", "'order-1'"),
        ("pk=order-1", "'pk=order-1'"),
        ("pk=X:order-1", "'pk=X:order-1'"),
        ("sk=N:three", "key attribute sk: 'three' is not a DynamoDB number"),
        ("pk=N:1e999999999999", "key attribute pk: '1e999999999999' is not a DynamoDB number"),
        ('{"pk":{"N":"1e400000000"}}', "key attribute pk: '1e400000000' is not a DynamoDB"),
        ("pk=N:1e126", "below 1E+126"),
        ("pk=N:1e-131", "from 1E-130"),
        ("pk=N:" + "1" * 39, "key attribute pk: '" + "1" * 39 + "' has 39 significant digits"),
        ("pk=N:1_000", "'1_000' is not a DynamoDB number"),
        ("b=B:not base64!", "b=B:not base64! is not base64"),
        ("b=B:AAE", "b=B:AAE is not base64 as keys are shown (standard alphabet, padded "),
        ("b=B:-_8", "b=B:-_8 is not base64 as keys are shown (standard alphabet, padded "),
        ("pk=S:a pk=S:b", "names key attribute 'pk' twice"),
        ('{"pk":{"S":"a"},"pk":{"S":"b"}}', "names key attribute 'pk' twice"),
        ('{"pk":{"S":"a","S":"b"}}', "attribute 'pk' must be one typed value"),
        ('{"pk": "a"}', "attribute 'pk' must be one typed value"),
        ('{"pk": {"S": "a"', "is not valid JSON"),
        ("", "the key is empty"),
    ],
)
def test_a_bad_key_is_refused_naming_the_value(text: str, named: str) -> None:
    with pytest.raises(KeySyntaxError) as raised:
        parse_key(text)
    assert named in str(raised.value)


def test_since_takes_durations_and_dates_and_names_a_bad_value() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == "2026-12-01T10:30:00.000000Z"
    assert parse_since("7d", now) == "2026-11-24T12:00:00.000000Z"
    assert parse_since("2026-11-30", now) == "2026-11-30T00:00:00.000000Z"
    assert parse_since("2026-11-30T10:00:00+02:00", now) == "2026-11-30T08:00:00.000000Z"
    # The precision typed is kept (to the microsecond), not cut to the log's milliseconds.
    assert parse_since("2026-12-01T11:21:26.8604999Z", now) == "2026-12-01T11:21:26.860499Z"
    # Epoch seconds, as replicator watermark prints a watermark and wait takes it.
    assert parse_since("1796527700", now) == "2026-12-06T03:28:20.000000Z"
    assert parse_since("1796527700.2512345", now) == "2026-12-06T03:28:20.251234Z"
    # Every number form wait --until takes (they were refused here): a time copied from
    # one command reads in the other.
    assert parse_since("1.7965277e9", now) == "2026-12-06T03:28:20.000000Z"
    assert parse_since("+1796527700.", now) == "2026-12-06T03:28:20.000000Z"
    assert parse_since(" 1796527700.25 ", now) == "2026-12-06T03:28:20.250000Z"
    for no_time in ("nan", "inf", "1_796_527_700", "\uff11" * 10):
        with pytest.raises(SinceSyntaxError, match="is neither a duration"):
            parse_since(no_time, now)
    # Exponents beyond a Decimal's (a traceback), a number beyond a float's (called
    # neither a duration nor a time), and more digits than a Decimal's arithmetic keeps
    # (rounded up to the next second): each read as a number, cut at the microsecond.
    for before in ("-1796527700", "1e-99999999999999999999999"):
        with pytest.raises(SinceSyntaxError, match="before 2001-09-09"):
            parse_since(before, now)
    for beyond in ("1e99999999999999999999999", "1e400"):
        with pytest.raises(SinceSyntaxError, match="is outside the times"):
            parse_since(beyond, now)
    fraction = "1000000000." + "9" * 29
    assert parse_since(fraction, now) == "2001-09-09T01:46:40.999999Z"
    with pytest.raises(SinceSyntaxError, match="looks like epoch milliseconds: give seconds"):
        parse_since("1796527700251", now)
    # A duration without its unit, a year, a date without dashes: no 1970 time.
    for mistaken in ("30", "2026", "20251201"):
        with pytest.raises(SinceSyntaxError, match="before 2001-09-09: write a duration"):
            parse_since(mistaken, now)
    with pytest.raises(SinceSyntaxError, match="'yesterday'") as refused:
        parse_since("yesterday", now)
    assert "capitals" not in str(refused.value)
    # As replicator wait reads its times: T and Z in capitals, and the message says so.
    with pytest.raises(SinceSyntaxError, match="write T and Z in capitals"):
        parse_since("2026-12-01t10:00:00z", now)


def test_since_compares_times_not_text_so_an_entry_just_before_it_is_not_listed(
    tmp_path: Path,
) -> None:
    """Entries have milliseconds: one at .860 is before .8604999, though as text
    "…26.860Z" sorts after "…26.860499Z"; the listing and a DynamoDB key condition agree."""
    log = FileConflictLog(tmp_path / "c.jsonl")
    before = replace(conflict(1).entry(), created="2026-12-01T11:21:26.860Z")
    after = replace(conflict(2).entry(), created="2026-12-01T11:21:26.861Z")
    for entry in (before, after):
        log.put(entry)
    since = Selection(since=parse_since("2026-12-01T11:21:26.8604999Z"))
    assert [e.id for e in read_entries(log, since)] == [after.id]
    assert since.since_key == "2026-12-01T11:21:26.860Z"  # a superset for the key condition
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")
    result = CliRunner().invoke(
        cli, ["conflicts", "-c", str(config), "--since", "2026-12-01T11:21:26.8604999Z"]
    )
    assert result.exit_code == 0, result.output
    assert after.id in result.stdout and before.id not in result.stdout


# -- entries ----------------------------------------------------------------------------------


def test_an_entry_holds_both_images_exactly_and_both_ranks() -> None:
    lost = conflict(7)
    entry = lost.entry()
    assert entry == ConflictEntry.from_json(entry.to_json())
    assert stored_bytes(entry.losing_image) == wire_bytes(lost.change.new_image)
    assert stored_bytes(entry.winning_image) == wire_bytes(lost.existing)
    assert entry.image("winning") == lost.existing  # binaries back as bytes
    assert entry.losing_rank is not None and entry.winning_rank is not None
    assert entry.losing_rank["value"] == {"N": "100"}
    assert entry.losing_rank["origin"] == "us-east-1"
    assert entry.winning_rank["value"] == {"N": "200"}
    assert entry.winning_rank["origin"] == "eu-west-1"
    assert entry.policy == "last_writer_wins"
    assert entry.rule == "last_writer_wins on updated_at, ties by origin_region"
    assert entry.sequence_number == "7" and entry.write_back is False
    assert entry.created == "2023-11-14T22:13:20.000Z"
    assert entry.item == '[["pk","S","order-1"],["sk","N","3"]]'
    # The same change losing again (a replay after a restart) is the same entry.
    assert conflict(7).entry().id == entry.id != conflict(8).entry().id


def test_an_entry_too_large_keeps_the_digest_of_what_it_leaves_out() -> None:
    entry = conflict(9, size=300_000).entry()
    fitted = entry.fitted(200_000)
    assert len(fitted.to_json().encode()) <= 200_000
    assert fitted.losing_image is None
    assert fitted.winning_image == entry.winning_image
    assert entry.losing_image is not None
    assert fitted.truncated["losing"]["sha256"] == image_digest(entry.losing_image)
    assert "blob" in fitted.truncated["losing"]["attributes"]


def test_an_entry_too_large_drops_the_winning_image_first_when_that_is_enough() -> None:
    """The losing image is the larger JSON but compresses well; dropping the winning one
    alone makes the compressed entry fit: it alone is dropped (the losing image was, as
    the larger one, and the entry could not be restored)."""
    rng = random.Random(3)
    lost = conflict(12)
    text = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(70_000))
    entry = replace(
        lost,
        existing=lost.existing | {"blob": {"B": rng.randbytes(200_000)}},
    ).entry()
    entry = replace(entry, losing_image=(entry.losing_image or {}) | {"doc": {"S": text}})
    assert entry.losing_image is not None and entry.winning_image is not None
    assert len(json.dumps(entry.losing_image)) > len(json.dumps(entry.winning_image))

    def compressed(e: ConflictEntry) -> int:
        return len(gzip.compress(e.to_json().encode()))

    fitted = entry.fitted(compressed(replace(entry, winning_image=None)) + 1024, compressed)
    assert fitted.losing_image == entry.losing_image
    assert fitted.winning_image is None and list(fitted.truncated) == ["winning"]
    # Only the losing image dropped fits (the winning one alone does not): it is dropped.
    small = conflict(13, size=300_000).entry()
    assert small.fitted(200_000).losing_image is None
    assert small.fitted(200_000).winning_image == small.winning_image


# -- the recorder -----------------------------------------------------------------------------


class FakeWriter:
    label = "eu"
    table = "orders"
    region = "eu-west-1"
    rule = RULE


class FlakyTarget:
    """Fails ``failures`` times with ``error``, then stores; ``gate`` holds every put."""

    description = "fake target"

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConflictLogUnavailable("down")
        self.stored: list[ConflictEntry] = []
        self.attempts = 0
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def put(self, entry: ConflictEntry) -> None:
        self.gate.wait(30)
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        self.stored.append(entry)

    def put_all(self, entries: Sequence[ConflictEntry]) -> list[StoreOutcome]:
        """Each entry as ``put`` would store it (one attempt each); the batches handed
        over are kept in ``batches``."""
        self.batches.append(len(entries))
        outcomes: list[StoreOutcome] = []
        for entry in entries:
            try:
                self.put(entry)
            except (ConflictLogRejected, ConflictLogUnavailable) as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes

    def read(self, selection: Selection) -> Any:
        return iter(self.stored)


def record(recorder: BackgroundRecorder, lost: LostConflict) -> None:
    recorder.for_shard("orders", "shardId-1").lost(
        Loss(FakeWriter(), lost.change, lost.existing, lost.why)
    )


def recorder_for(target: FlakyTarget, metrics: Metrics, **options: Any) -> BackgroundRecorder:
    return BackgroundRecorder(target, metrics, backoff=Backoff(0.001, 0.01), **options)


def test_a_failed_store_is_retried_and_counted(metrics: Metrics) -> None:
    target = FlakyTarget(failures=3)
    recorder = recorder_for(target, metrics, retry_for_s=60)
    record(recorder, conflict(1))
    assert recorder.flush(30)
    assert [e.sequence_number for e in target.stored] == ["1"]
    assert sample(metrics, "replicator_conflict_log_retries_total") == 3
    assert sample(metrics, "replicator_conflict_log_written_total", destination="eu") == 1
    recorder.close()


def test_an_entry_not_stored_within_the_bound_is_dropped_and_counted(metrics: Metrics) -> None:
    target = FlakyTarget(failures=10**9)
    recorder = recorder_for(target, metrics, retry_for_s=0.2)
    record(recorder, conflict(1))
    record(recorder, conflict(2))
    assert recorder.flush(30)
    dropped = sample(
        metrics, "replicator_conflict_log_dropped_total", destination="eu", reason="unavailable"
    )
    assert dropped == 2
    assert target.stored == []
    assert sample(metrics, "replicator_conflict_log_retries_total") >= 1
    recorder.close()


def test_an_entry_the_target_refuses_is_dropped_at_once(metrics: Metrics) -> None:
    target = FlakyTarget(failures=1, error=ConflictLogRejected("too large"))
    recorder = recorder_for(target, metrics, retry_for_s=60)
    with recorder._cond:  # queued together: stored in one batch
        record(recorder, conflict(1))
        record(recorder, conflict(2))
    assert recorder.flush(30)
    assert target.batches == [2]
    assert sample(
        metrics, "replicator_conflict_log_dropped_total", destination="eu", reason="rejected"
    )
    assert [e.sequence_number for e in target.stored] == ["2"]
    assert sample(metrics, "replicator_conflict_log_retries_total") == 0
    recorder.close()


def test_a_healthy_log_never_drops_for_backlog_and_stores_what_waits_in_one_batch(
    metrics: Metrics,
) -> None:
    target = FlakyTarget()
    target.gate.clear()  # the first store is slow, as on a loaded endpoint
    recorder = recorder_for(target, metrics, max_pending=1, retry_for_s=60)
    record(recorder, conflict(1))
    wait_until(lambda: recorder.pending == 1 and not recorder._queue, 10, "the first store")
    for seq in range(2, 12):  # ten wait, past max_pending: the log is not failing
        record(recorder, conflict(seq))
    target.gate.set()
    assert recorder.flush(30)
    assert [int(e.sequence_number) for e in target.stored] == list(range(1, 12))
    assert target.batches == [1, 10]
    assert summed(metrics, "replicator_conflict_log_dropped_total") == 0
    recorder.close()


def test_while_the_log_fails_a_full_backlog_drops_new_entries_instead_of_growing(
    metrics: Metrics,
) -> None:
    target = FlakyTarget(failures=10**9)
    recorder = recorder_for(target, metrics, max_pending=1, retry_for_s=60)
    record(recorder, conflict(1))
    wait_until(
        lambda: sample(metrics, "replicator_conflict_log_retries_total") >= 2,
        10,
        "the store to fail twice",
    )
    with recorder._cond:  # no round takes entry 2 in between
        record(recorder, conflict(2))  # waits in the queue
        record(recorder, conflict(3))  # finds it full while the log is failing
    assert sample(
        metrics, "replicator_conflict_log_dropped_total", destination="eu", reason="backlog"
    )
    target.failures = 0
    assert recorder.flush(30)
    assert [e.sequence_number for e in target.stored] == ["1", "2"]
    recorder.close()


def test_a_stop_drains_the_queue_and_counts_what_is_left(metrics: Metrics) -> None:
    target = FlakyTarget(failures=10**9)
    recorder = recorder_for(target, metrics, retry_for_s=600)
    for seq in (1, 2, 3):
        record(recorder, conflict(seq))
    recorder.close(timeout=0.2)
    shutdown = sample(
        metrics, "replicator_conflict_log_dropped_total", destination="eu", reason="shutdown"
    )
    assert shutdown == 3
    record(recorder, conflict(4))  # after the stop: counted, not queued
    shutdown = sample(
        metrics, "replicator_conflict_log_dropped_total", destination="eu", reason="shutdown"
    )
    assert shutdown == 4


def holding_winner(
    endpoint: str,
    table: str,
    lost: LostConflict,
    label: str,
    conflicts: ConflictRecorder,
    metrics: Metrics,
) -> tuple[Any, DestinationWriter]:
    """A destination table holding ``lost``'s winner, and its writer (named ``label``)
    handing losses to ``conflicts``."""
    ddb = client("dynamodb", "eu-west-1", endpoint)
    create_table(ddb, table, range_key="sk", stream=None)
    assert lost.existing is not None
    ddb.put_item(TableName=table, Item=lost.existing)
    writer = DestinationWriter(
        label=label,
        table=table,
        region="eu-west-1",
        client=ddb,
        rule=RULE,
        metrics=metrics,
        conflict_log=conflicts,
    )
    return ddb, writer


def test_a_writer_that_loses_hands_the_destination_s_image_to_the_log(
    moto_endpoint: str, unique: Any, metrics: Metrics, tmp_path: Path
) -> None:
    table = unique("dst")
    lost = conflict(11)
    assert lost.existing is not None
    target = FileConflictLog(tmp_path / "conflicts.jsonl")
    recorder = BackgroundRecorder(target, metrics)
    _, writer = holding_winner(
        moto_endpoint, table, lost, "eu", recorder.for_shard("orders", "shardId-1"), metrics
    )
    assert writer.write(lost.change).outcome is Outcome.CONFLICT_LOST
    recorder.close()
    (entry,) = read_entries(target, Selection())
    assert stored_bytes(entry.winning_image) == wire_bytes(lost.existing)
    assert stored_bytes(entry.losing_image) == wire_bytes(lost.change.new_image)
    assert entry.destination == "eu" and entry.table == table


def test_a_correction_that_loses_at_a_destination_is_recorded_as_one_and_not_restored(
    moto_endpoint: str, unique: Any, metrics: Metrics, tmp_path: Path
) -> None:
    """Active-active: a correction (the source's higher image sent in place of a stale
    local write) that loses at a destination holding something higher still is recorded
    marked as a correction's loss, with the correction's image as the loser (the stale
    write is the source's entry). The listing says so, and --restore refuses it: writing
    the correction's image back would undo the destination's newer state."""
    table = unique("dst")
    lost = conflict(21, ranks=({"N": "45"}, {"N": "60"}))
    stale = lost.change
    assert lost.existing is not None and stale.new_image is not None
    higher = {**stale.new_image, "updated_at": {"N": "50"}, "v": {"S": "base"}}
    correction = msgspec.structs.replace(stale, new=Image.of(higher), old=stale.new, corrects=stale)
    target = FileConflictLog(tmp_path / "conflicts.jsonl")
    recorder = BackgroundRecorder(target, metrics)
    ddb, writer = holding_winner(  # named as job_file's destination
        moto_endpoint,
        table,
        lost,
        "eu-west-1/orders",
        recorder.for_shard("orders-audit", "shardId-1"),
        metrics,
    )
    assert writer.write(correction).outcome is Outcome.CONFLICT_LOST
    recorder.close()
    (entry,) = read_entries(target, Selection())
    assert entry.correction is True
    assert stored_bytes(entry.losing_image) == wire_bytes(higher)
    assert stored_bytes(entry.winning_image) == wire_bytes(lost.existing)
    assert ddb.get_item(TableName=table, Key=stale.keys)["Item"] == lost.existing

    config = job_file(tmp_path, f"{{kind: file, path: '{target.path}'}}")
    runner = CliRunner()
    listed = runner.invoke(cli, ["conflicts", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(f"  {entry.id}")]
    assert "a correction lost, not the application's write" in row
    shown = runner.invoke(cli, ["conflicts", "-c", str(config), "--format", "json"])
    assert json.loads(shown.stdout)["entries"][0]["correction"] is True
    restore = runner.invoke(cli, ["conflicts", "-c", str(config), "--restore", entry.id])
    assert restore.exit_code == 1, restore.output
    message = " ".join(restore.stderr.split())
    assert f"entry {entry.id} records a correction that lost at eu-west-1/orders" in message
    assert [e.kind for e in read_entries(target, Selection())] == ["conflict"]
    assert ddb.get_item(TableName=table, Key=stale.keys)["Item"] == lost.existing


# -- targets: write and read back -------------------------------------------------------------


def test_file_round_trip(tmp_path: Path) -> None:
    target = FileConflictLog(tmp_path / "log" / "conflicts.jsonl")
    entries = [conflict(seq, pk=f"order-{seq % 2}").entry() for seq in range(1, 5)]
    for entry in entries + entries[:1]:  # stored twice: read once
        target.put(entry)
    with target.path.open("a") as file:
        file.write('{"not": "an entry"\n')
    assert read_entries(target, Selection()) == sorted(entries, key=lambda e: e.sort_key)
    only = Selection(item=canonical_key(parse_key("pk=S:order-1 sk=N:3")))
    assert [e.sequence_number for e in read_entries(target, only)] == ["1", "3"]


def test_an_entry_appended_after_a_torn_line_is_read_back(tmp_path: Path) -> None:
    target = FileConflictLog(tmp_path / "conflicts.jsonl")
    first, torn, last = (conflict(seq).entry() for seq in (1, 2, 3))
    target.put(first)
    with target.path.open("a", encoding="utf-8") as file:
        file.write(torn.to_json()[:100])  # a crash in the middle of an append
    target.put(last)
    assert read_entries(target, Selection()) == [first, last]


def test_dynamodb_round_trip_keyed_by_item_with_a_ttl(moto_endpoint: str, unique: Any) -> None:
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    table = unique("conflicts")
    clock = [1_800_000_000.0]
    target = DynamoDbConflictLog(
        ddb, table, retention_days=30, where="moto", clock=lambda: clock[0]
    )
    target.ensure_exists()
    target.ensure_exists()  # already there: nothing to do
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    entries = [conflict(seq, pk=f"order-{seq % 2}").entry() for seq in range(1, 5)]
    big = conflict(5, size=600_000).entry()  # over an item's 400 KB even compressed
    for entry in [*entries, entries[0], big]:
        target.put(entry)
    items = ddb.scan(TableName=table)["Items"]
    assert len(items) == 5  # the entry stored twice is one item
    assert {int(item[TTL_ATTRIBUTE]["N"]) for item in items} == {1_800_000_000 + 30 * 86_400}
    got = {e.id: e for e in read_entries(target, Selection())}
    assert {e.id: e for e in entries} == {k: v for k, v in got.items() if k != big.id}
    assert got[big.id].losing_image is None
    assert got[big.id].truncated["losing"]["sha256"] == image_digest(big.losing_image or {})
    assert got[big.id].winning_image == big.winning_image
    one = canonical_key(parse_key("pk=S:order-1 sk=N:3"))
    found = read_entries(target, Selection(item=one))
    assert sorted(e.sequence_number for e in found) == ["1", "3", "5"]
    later = Selection(item=one, since="2100-01-01T00:00:00.000Z")
    assert read_entries(target, later) == []
    clock[0] += 31 * 86_400  # expired, whether or not DynamoDB removed them yet
    assert read_entries(target, Selection()) == []


def test_sqs_round_trip_without_consuming_the_queue(moto_endpoint: str, unique: Any) -> None:
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(
        QueueName=unique("conflicts"), Attributes={"MaximumMessageSize": str(ASSUMED_LIMIT)}
    )["QueueUrl"]
    target = SqsConflictLog(sqs, url)
    small = conflict(1).entry()
    compressible = conflict(2).entry()
    compressible = ConflictEntry.from_json(
        compressible.to_json().replace('"name":{"S":"', '"name":{"S":"' + "z" * 300_000, 1)
    )
    incompressible = conflict(3, size=400_000).entry()
    for entry in (small, compressible, incompressible):
        target.put(entry)
    got = {e.id: e for e in read_entries(target, Selection())}
    assert got[small.id] == small
    assert got[compressible.id] == compressible  # whole, sent gzip-compressed
    assert len(compressible.to_json()) > ASSUMED_LIMIT
    assert got[incompressible.id].truncated["losing"]["sha256"] == image_digest(
        incompressible.losing_image or {}
    )
    # Read again: the messages are still there for the queue's own consumers.
    assert {e.id for e in read_entries(target, Selection())} == set(got)


class Calls:
    """Counts a client's calls by operation (a client of the test's own: handlers are
    registered on it)."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1


def test_a_file_takes_a_batch_in_one_append(tmp_path: Path) -> None:
    target = FileConflictLog(tmp_path / "conflicts.jsonl")
    entries = [conflict(seq).entry() for seq in range(1, 41)]
    assert target.put_all(entries) == [None] * 40
    assert target.put_all([]) == []
    assert read_entries(target, Selection()) == sorted(entries, key=lambda e: e.sort_key)


def test_dynamodb_writes_a_batch_25_a_request_and_refuses_only_the_entry_it_cannot_take(
    moto_endpoint: str, unique: Any
) -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto_endpoint)
    table = unique("conflicts")
    target = DynamoDbConflictLog(ddb, table, retention_days=30, where="moto")
    target.ensure_exists()
    calls = Calls(ddb)
    entries = [conflict(seq, pk=f"order-{seq}").entry() for seq in range(1, 31)]
    # A key DynamoDB refuses (an empty partition key): it refuses the whole request.
    malformed = replace(conflict(31).entry(), item="")
    outcomes = target.put_all([*entries, entries[0], malformed])  # one entry twice
    assert outcomes[:31] == [None] * 31
    assert isinstance(outcomes[31], ConflictLogRejected)
    assert "ValidationException" in str(outcomes[31])
    # 31 items (the copy sent once): 25, then 6, whose request is refused and then sent
    # one item at a time.
    assert calls.counts == {"BatchWriteItem": 2, "PutItem": 6}
    assert {e.id for e in read_entries(target, Selection())} == {e.id for e in entries}


class FailingSome:
    """An SQS client whose SendMessageBatch answers as failed the messages holding one of
    ``refused`` (the sender's fault) or ``busy`` (the service's), and sends the rest."""

    def __init__(self, real: Any, refused: str, busy: str) -> None:
        self.real = real
        self.failing = {refused: True, busy: False}
        self.batches: list[int] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:  # noqa: N803
        self.batches.append(len(Entries))
        failed = [
            {"Id": e["Id"], "SenderFault": fault, "Code": "Refused", "Message": "no"}
            for e in Entries
            for marker, fault in self.failing.items()
            if marker in e["MessageBody"]
        ]
        ids = {f["Id"] for f in failed}
        sent = [e for e in Entries if e["Id"] not in ids]
        answer = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=sent)
        return {**answer, "Failed": failed}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_sqs_sends_a_batch_10_a_request_and_refuses_only_what_the_sender_got_wrong(
    moto_endpoint: str, unique: Any
) -> None:
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("conflicts"))["QueueUrl"]
    entries = [conflict(seq).entry() for seq in range(1, 24)]
    failing = FailingSome(sqs, refused=entries[4].id, busy=entries[17].id)
    target = SqsConflictLog(failing, url)
    outcomes = target.put_all(entries)
    assert failing.batches == [10, 10, 3]
    assert isinstance(outcomes[4], ConflictLogRejected)
    assert isinstance(outcomes[17], ConflictLogUnavailable)
    assert [i for i, outcome in enumerate(outcomes) if outcome is None] == [
        i for i in range(23) if i not in (4, 17)
    ]
    stored = {e.id for e in read_entries(SqsConflictLog(sqs, url), Selection())}
    assert stored == {e.id for i, e in enumerate(entries) if i not in (4, 17)}


def test_the_listing_summarizes_and_marks_restores() -> None:
    entries = [conflict(seq, pk=f"order-{seq % 3}").entry() for seq in range(1, 8)]
    restore = ConflictEntry.from_json(entries[0].to_json())
    from dataclasses import replace

    restore = replace(
        restore, id="r1", kind="restore", restored_entry=entries[0].id, policy="restore"
    )
    listing = Listing("fake", Selection(), sorted([*entries, restore], key=lambda e: e.sort_key))
    summary = listing.summary()
    assert summary["lost_conflicts"] == 7 and summary["restores"] == 1
    assert summary["per_destination"] == {"eu": 7}
    assert summary["top_keys"][0] == {"key": "pk=S:order-1 sk=N:3", "conflicts": 3}
    text = listing.text(limit=3)
    assert "7 lost conflicts, 1 restore" in text
    assert "updated_at=100 origin_region=us-east-1" in text
    document = json.loads(listing.as_json(limit=0))
    marked = {e["id"]: e["restored_by"] for e in document["entries"]}
    assert marked[entries[0].id] == "r1"


def test_the_listing_spells_a_number_in_a_key_one_way_and_counts_the_item_once() -> None:
    """moto keeps a number key as written (``3.0``), DynamoDB as ``3``: the rows, the top
    keys and a --key header all show the item's one spelling, and count it once."""
    plain = conflict(1).entry()
    spelled = replace(conflict(2).entry(), key={**plain.key, "sk": {"N": "3.0"}})
    assert spelled.item == plain.item
    listing = Listing("fake", Selection(), [plain, spelled])
    assert listing.summary()["top_keys"] == [{"key": "pk=S:order-1 sk=N:3", "conflicts": 2}]
    text = listing.text(limit=0)
    assert "sk=N:3.0" not in text
    assert text.count("pk=S:order-1 sk=N:3") == 3, text  # the top key and both rows


def test_the_listing_shows_the_digests_of_a_loser_and_winner_that_tie() -> None:
    """A conflict decided by the digest (same timestamp and origin) lists the digests
    beside the ranks, which alone would read the same in LOSER and WINNER."""
    lost = conflict(1)
    loser = lost.change.image
    assert loser is not None
    edits = ({**loser, "note": {"S": f"edit {n}"}} for n in range(64))
    winner = next(edit for edit in edits if RULE.rank(edit) > RULE.rank(loser))
    lost = replace(lost, existing=winner, why=RULE.explain_loss(lost.change, winner))
    digests = [str(RULE.rank(image)[3])[:12] for image in (loser, winner)]
    text = Listing("fake", Selection(), [lost.entry()]).text(limit=1)
    (row,) = [line for line in text.splitlines() if line.startswith(f"  {lost.entry().id}")]
    rank = "updated_at=100 origin_region=us-east-1"
    assert f"{rank} digest={digests[0]}  {rank} digest={digests[1]}" in row
    assert all(f"digest={d}" in lost.why for d in digests)
    # Ranks apart on the timestamp show no digest.
    assert "digest=" not in Listing("fake", Selection(), [conflict(2).entry()]).text(limit=1)


# -- the command line -------------------------------------------------------------------------


def job_file(tmp_path: Path, conflict_log: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: orders-audit\n"
        "source: {region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:9'}\n"
        "destinations:\n"
        "  - {region: eu-west-1, table: orders, endpoint_url: 'http://127.0.0.1:9'}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        f"conflict_log: {conflict_log}\n"
    )
    return path


def test_the_command_names_a_bad_key_a_bad_time_and_an_unknown_destination(
    tmp_path: Path,
) -> None:
    config = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}/c.jsonl'}}")
    runner = CliRunner()
    bad_key = runner.invoke(cli, ["conflicts", "-c", str(config), "--key", "pk=order-1"])
    assert bad_key.exit_code == 2
    assert "'--key'" in bad_key.output and "'pk=order-1'" in bad_key.output
    bad_since = runner.invoke(cli, ["conflicts", "-c", str(config), "--since", "last week"])
    assert bad_since.exit_code == 2 and "'last week'" in bad_since.output
    other = runner.invoke(cli, ["conflicts", "-c", str(config), "--destination", "mars"])
    assert other.exit_code == 0, other.output
    assert "warning: 'mars' is neither a destination of" in other.stderr
    assert "(destination mars): 0 lost conflicts" in other.stdout
    empty = runner.invoke(cli, ["conflicts", "-c", str(config)])
    assert empty.exit_code == 0, empty.output
    assert "0 lost conflicts" in empty.output


def test_entries_at_the_source_and_at_a_removed_destination_can_be_listed(
    tmp_path: Path,
) -> None:
    """An active-active correction is recorded under the source's <region>/<table>, and
    the entries of a destination since removed from the job file keep its name: both
    are listed by --destination (the removed one with a warning), and neither is
    restored, each with a line that says why."""
    log = FileConflictLog(tmp_path / "c.jsonl")
    at_source = _at(conflict(1).entry(), "us-east-1/orders", "us-east-1/orders")
    at_removed = _at(
        conflict(2, pk="order-2").entry(), "ap-southeast-2/gone", "ap-southeast-2/gone"
    )
    at_kept = _at(conflict(3, pk="order-3").entry(), "eu-west-1/orders", "eu-west-1/orders")
    for entry in (at_source, at_removed, at_kept):
        log.put(entry)
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")
    runner = CliRunner()

    source = runner.invoke(
        cli, ["conflicts", "-c", str(config), "--destination", "us-east-1/orders"]
    )
    assert source.exit_code == 0, source.output
    assert "1 lost conflict" in source.stdout and at_source.id in source.stdout
    assert "warning" not in source.stderr

    removed = runner.invoke(
        cli, ["conflicts", "-c", str(config), "--destination", "ap-southeast-2/gone"]
    )
    assert removed.exit_code == 0, removed.output
    assert "1 lost conflict" in removed.stdout and at_removed.id in removed.stdout
    assert "'ap-southeast-2/gone' is neither a destination of" in removed.stderr

    restore = runner.invoke(cli, ["conflicts", "-c", str(config), "--restore", at_source.id])
    assert restore.exit_code == 1, restore.output
    message = " ".join(restore.stderr.split())
    assert f"entry {at_source.id} is for us-east-1/orders, the job's source table" in message
    assert "It is not restored" in message
    restore = runner.invoke(cli, ["conflicts", "-c", str(config), "--restore", at_removed.id])
    assert restore.exit_code == 1, restore.output
    assert (
        f"entry {at_removed.id} is for ap-southeast-2/gone, which is not a destination of the "
        f"job file {config} (destinations: eu-west-1/orders); nothing was written"
    ) in " ".join(restore.stderr.split())
    assert [e.kind for e in read_entries(log, Selection())] == ["conflict"] * 3


def _at(entry: ConflictEntry, name: str, place: str) -> ConflictEntry:
    """``entry`` as recorded at the destination ``name``, at ``<region>/<table>`` ``place``."""
    region, _, table = place.partition("/")
    return replace(entry, destination=name, region=region, table=table)


def _destinations_job(tmp_path: Path, log: Path, destinations: str, extra: str = "") -> Path:
    path = tmp_path / "job1.yaml"
    path.write_text(
        "task_name: orders-audit\n"
        "source: {region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:9'}\n"
        f"destinations:\n{destinations}"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        f"conflict_log: {{kind: file, path: '{log}'}}\n{extra}"
    )
    return path


def _logged_at(tmp_path: Path, *destinations: tuple[str, str]) -> tuple[Path, list[ConflictEntry]]:
    """A log file with one entry recorded at each of these destinations: its name, and
    its ``<region>/<table>``."""
    log = FileConflictLog(tmp_path / "c.jsonl")
    entries = [
        _at(conflict(seq, pk=f"order-{seq}").entry(), name, place)
        for seq, (name, place) in enumerate(destinations, 1)
    ]
    for entry in entries:
        log.put(entry)
    return log.path, entries


def test_a_destination_is_listed_by_every_name_wait_finds_it_by(tmp_path: Path) -> None:
    """--destination takes a destination's name, its table or its <region>/<table>, as
    ``replicator wait`` does: each lists and counts the entries recorded under its name,
    without a warning; the header names its region and table."""
    log, (at_dr, _) = _logged_at(
        tmp_path,
        ("dr", "ap-southeast-2/orders-replica"),
        ("eu-west-1/orders", "eu-west-1/orders"),
    )
    config = _destinations_job(
        tmp_path,
        log,
        "  - {region: eu-west-1, table: orders, endpoint_url: 'http://127.0.0.1:9'}\n"
        "  - {name: dr, region: ap-southeast-2, table: orders-replica, "
        "endpoint_url: 'http://127.0.0.1:9'}\n",
    )
    runner = CliRunner()
    for spelling in ("dr", "orders-replica", "ap-southeast-2/orders-replica"):
        args = ["conflicts", "-c", str(config), "--destination", spelling]
        listing = runner.invoke(cli, args)
        assert listing.exit_code == 0, listing.output
        assert listing.stderr == "", (spelling, listing.stderr)
        assert (
            "(destination dr at ap-southeast-2/orders-replica): 1 lost conflict, 0 restores"
        ) in listing.stdout
        document = json.loads(runner.invoke(cli, [*args, "--format", "json"]).stdout)
        assert [e["id"] for e in document["entries"]] == [at_dr.id], spelling
        assert document["summary"]["per_destination"] == {"dr": 1}
        assert document["selection"]["destination"] == "dr"
        assert document["selection"]["place"] == "ap-southeast-2/orders-replica"
    listing = runner.invoke(cli, ["conflicts", "-c", str(config), "--destination", "mars"])
    assert listing.exit_code == 0, listing.output
    assert (
        "warning: 'mars' is neither a destination of "
        f"{config} (destinations: eu-west-1/orders, dr (ap-southeast-2/orders-replica)) "
        "nor its source (us-east-1/orders)"
    ) in " ".join(listing.stderr.split())


def test_a_destination_name_that_fits_several_is_refused_as_wait_refuses_it(
    tmp_path: Path,
) -> None:
    config = _destinations_job(
        tmp_path,
        tmp_path / "c.jsonl",
        "  - {region: eu-west-1, table: replica, endpoint_url: 'http://127.0.0.1:9'}\n"
        "  - {region: ap-southeast-2, table: replica, endpoint_url: 'http://127.0.0.1:9'}\n",
    )
    refused = CliRunner().invoke(cli, ["conflicts", "-c", str(config), "--destination", "replica"])
    assert refused.exit_code == 2, refused.output
    assert refused.stdout == ""
    assert refused.stderr == (
        "replicator: --destination 'replica' fits several destinations "
        "(eu-west-1/replica, ap-southeast-2/replica); give 'eu-west-1/replica' or "
        "'ap-southeast-2/replica'\n"
    )


def test_the_sources_region_and_table_lists_its_corrections_before_a_named_twin(
    tmp_path: Path,
) -> None:
    """Active-active: corrections are recorded under the source's <region>/<table>; a
    destination at that region and table in another account goes by its name, which
    lists its own entries."""
    log, (correction, at_twin) = _logged_at(
        tmp_path, ("us-east-1/orders", "us-east-1/orders"), ("twin", "us-east-1/orders")
    )
    config = _destinations_job(
        tmp_path,
        log,
        "  - {name: twin, region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:9', "
        "role_arn: 'arn:aws:iam::222222222222:role/replica-writer'}\n",
        "loop_prevention: {origin_attribute: origin}\n",
    )
    runner = CliRunner()
    for spelling, expected in (("us-east-1/orders", correction), ("twin", at_twin)):
        args = ["conflicts", "-c", str(config), "--destination", spelling, "--format", "json"]
        listing = runner.invoke(cli, args)
        assert listing.exit_code == 0, listing.output
        assert listing.stderr == "", listing.stderr
        assert [e["id"] for e in json.loads(listing.stdout)["entries"]] == [expected.id]


def test_a_log_shared_by_several_jobs_lists_only_the_jobs_own_entries(tmp_path: Path) -> None:
    """Two jobs with one conflict_log.path: each lists, counts and restores only its own
    entries, and says how many of other tasks it skipped."""
    log = FileConflictLog(tmp_path / "shared.jsonl")
    own = conflict(1).entry()
    theirs = [
        replace(conflict(seq, pk=f"order-{seq}").entry(), task_name="payments") for seq in (2, 3)
    ]
    for entry in (own, *theirs):
        log.put(entry)
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")
    runner = CliRunner()

    listing = runner.invoke(cli, ["conflicts", "-c", str(config)])
    assert listing.exit_code == 0, listing.output
    header = listing.stdout.splitlines()[0]
    assert header.endswith(
        ": 1 lost conflict, 0 restores (skipped 2 entries of other tasks sharing the log: "
        "'payments': 2)"
    )
    assert own.id in listing.stdout
    assert all(entry.id not in listing.stdout for entry in theirs)
    document = json.loads(
        runner.invoke(cli, ["conflicts", "-c", str(config), "--format", "json"]).stdout
    )
    assert [e["id"] for e in document["entries"]] == [own.id]
    assert document["summary"]["lost_conflicts"] == 1
    assert document["summary"]["other_tasks_skipped"] == {"payments": 2}

    restore = runner.invoke(cli, ["conflicts", "-c", str(config), "--restore", theirs[0].id])
    assert restore.exit_code == 1, restore.output
    message = " ".join(restore.stderr.split())
    assert f"no conflict-log entry {theirs[0].id!r} of task 'orders-audit'" in message
    assert f"{theirs[0].id} (task 'payments') is theirs" in message


def test_a_log_file_under_an_earlier_derived_task_name_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job without ``task_name``: a destination added gives it a new derived name and,
    with the default path, a new log file; the entries recorded before are in the old
    one, which the listing names (it read nothing of them before)."""
    monkeypatch.chdir(tmp_path)
    config = job_file(tmp_path, "{kind: file}")
    config.write_text(config.read_text().replace("task_name: orders-audit\n", ""))
    before = load_job(config).task_name
    old = tmp_path / "conflicts" / f"{before}.jsonl"
    old.parent.mkdir()
    old.write_text('{"an": "entry"}\n{"another": "entry"}\n')
    (tmp_path / "conflicts" / "orders-audit.jsonl").write_text('{"not": "derived"}\n')
    config.write_text(
        config.read_text().replace(
            "destinations:\n",
            "destinations:\n  - {region: ap-southeast-2, table: orders, "
            "endpoint_url: 'http://127.0.0.1:9'}\n",
        )
    )
    after = load_job(config).task_name
    assert after != before
    runner = CliRunner()

    listing = runner.invoke(cli, ["conflicts", "-c", str(config)])

    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert lines[0].endswith(": 0 lost conflicts, 0 restores")
    assert lines[2:] == [
        "other conflict-log files beside it, of another derived task name (this job's from "
        "before its destinations changed, or another job's):",
        f"  {old} (2 lines): task {before}",
        "  to read such a file, run conflicts with a copy of the job file that sets "
        "task_name to its task",
    ]
    document = json.loads(
        runner.invoke(cli, ["conflicts", "-c", str(config), "--format", "json"]).stdout
    )
    assert document["other_files"] == [{"path": str(old), "task_name": before, "lines": 2}]

    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(f"task_name: {after}\n" + config.read_text())
    listing = runner.invoke(cli, ["conflicts", "-c", str(pinned)])
    assert listing.exit_code == 0 and "other conflict-log files" not in listing.stdout


def test_a_missing_log_file_is_said_to_be_missing_not_listed_as_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from another directory, the default relative path names a file that is not
    there: the command says so, naming the absolute path and the working directory
    (exit 0: a job that never lost a conflict has no file either)."""
    config = job_file(tmp_path, "{kind: file}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    expected = elsewhere / "conflicts" / "orders-audit.jsonl"
    runner = CliRunner()

    listing = runner.invoke(cli, ["conflicts", "-c", str(config)])

    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert lines[0] == f"conflict log: file {expected}: 0 lost conflicts, 0 restores"
    assert lines[1] == (
        f"  no conflict-log file at {expected} (yet): nothing has been recorded there; "
        "conflict_log.path 'conflicts/orders-audit.jsonl' is relative to the working "
        f"directory ({elsewhere}): run the command where the job runs, or make the path "
        "absolute"
    )
    document = json.loads(
        runner.invoke(cli, ["conflicts", "-c", str(config), "--format", "json"]).stdout
    )
    assert document["missing"].startswith(f"no conflict-log file at {expected}")

    restore = runner.invoke(cli, ["conflicts", "-c", str(config), "--restore", "0123abcd"])
    assert restore.exit_code == 1, restore.output
    assert f"no conflict-log file at {expected}" in " ".join(restore.stderr.split())

    absolute = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}/none.jsonl'}}")
    listing = runner.invoke(cli, ["conflicts", "-c", str(absolute)])
    assert listing.exit_code == 0, listing.output
    assert listing.stdout.splitlines()[1] == (
        f"  no conflict-log file at {tmp_path}/none.jsonl (yet): nothing has been recorded there"
    )
    assert not expected.exists() and not (tmp_path / "none.jsonl").exists()


@pytest.mark.parametrize("given", ["", "   ", "a", "6b3"])
def test_an_empty_or_too_short_entry_id_is_a_bad_option(tmp_path: Path, given: str) -> None:
    log = FileConflictLog(tmp_path / "c.jsonl")
    for seq in range(1, 4):
        log.put(conflict(seq, pk=f"order-{seq}").entry())
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")
    result = CliRunner().invoke(cli, ["conflicts", "-c", str(config), "--restore", given])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--restore': {given!r} is too short to name an entry" in (
        result.stderr.replace("\n", " ")
    )
    assert "names" not in result.stderr
    assert [e.kind for e in read_entries(log, Selection())] == ["conflict"] * 3


@pytest.mark.parametrize("given", ["zzzz", "0f61a355ba9e7516ab", "0f61 a355", "0x0f61"])
def test_an_entry_id_no_id_can_start_with_is_a_bad_option(tmp_path: Path, given: str) -> None:
    """Not hexadecimal, or longer than an id: it was looked for through the whole log
    (every message of a queue) and ended "no conflict-log entry", exit 1."""
    log = FileConflictLog(tmp_path / "c.jsonl")
    log.put(conflict(1, pk="order-1").entry())
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")
    result = CliRunner().invoke(cli, ["conflicts", "-c", str(config), "--restore", given])
    assert result.exit_code == 2, result.output
    assert (
        f"Invalid value for '--restore': {given!r} names no entry: an id is 16 hexadecimal "
        "characters (0-9, a-f)"
    ) in " ".join(result.stderr.split())
    assert [e.kind for e in read_entries(log, Selection())] == ["conflict"]


def test_the_command_says_when_the_job_keeps_no_conflict_log(tmp_path: Path) -> None:
    config = job_file(tmp_path, "{kind: none}")
    result = CliRunner().invoke(cli, ["conflicts", "-c", str(config)])
    assert result.exit_code == 2
    assert "conflict_log.kind is none" in result.output


def test_a_conflict_log_directory_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    from replicator.config.loader import load_job
    from replicator.conflictlog.targets import prepare
    from replicator.exceptions import EnvironmentProblem

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = job_file(tmp_path, f"{{kind: file, path: '{blocker}/conflicts.jsonl'}}")
    with pytest.raises(EnvironmentProblem, match="not-a-directory"):
        prepare(load_job(config))


def test_a_conflict_log_path_that_is_a_directory_stops_the_start(tmp_path: Path) -> None:
    """Every entry would fail to be stored; the job file names a directory, so say so
    at its key and line, as ``validate`` does (the message named neither)."""
    from replicator.config.loader import load_job
    from replicator.conflictlog.targets import prepare
    from replicator.exceptions import ConfigError

    config = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}'}}")
    with pytest.raises(ConfigError) as refused:
        prepare(load_job(config))
    assert str(refused.value) == (
        f"{config}: 1 problem in the job file:\n"
        f"  conflict_log.path (line 6): the conflict log {tmp_path} is a directory: "
        f"conflict_log.path must name a file (such as {tmp_path}/{{task_name}}.jsonl)"
    )


def test_dynamodb_log_makes_its_table_when_a_store_finds_it_missing(
    moto_endpoint: str, unique: Any
) -> None:
    """The start could not make the table (its endpoint did not answer), or it was deleted
    while the job ran: every entry was dropped until a restart (ResourceNotFoundException).
    A store that finds it missing makes it, TTL on, and stores; batches and single puts."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    table = unique("conflicts")
    target = DynamoDbConflictLog(ddb, table, retention_days=30, where="moto")
    entries = [conflict(seq, pk=f"order-{seq}").entry() for seq in range(1, 4)]
    assert target.put_all(entries) == [None, None, None]  # never made at start
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    ddb.delete_table(TableName=table)
    target.put(entries[0])  # deleted while running
    assert target.put_all(entries[1:]) == [None, None]
    assert sorted(e.id for e in read_entries(target, Selection())) == sorted(e.id for e in entries)


def test_dynamodb_log_truncates_only_the_images_the_compressed_entry_has_no_room_for(
    moto_endpoint: str, unique: Any
) -> None:
    """Both images together do not fit one item, the losing one alone does once
    compressed (as the table stores it) though not as JSON: only the winning image is
    replaced by its digest, and the entry stays restorable. Measured as JSON, both were
    replaced, and the losing image was lost."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    target = DynamoDbConflictLog(ddb, unique("conflicts"), retention_days=30, where="moto")
    target.ensure_exists()
    lost = conflict(11, size=300_000)  # ~400 KB of JSON, ~303 KB compressed
    winner = lost.existing | {"blob": {"B": random.Random(12).randbytes(350_000)}}
    entry = replace(lost, existing=winner).entry()
    assert entry.losing_image is not None
    assert entry.fitted(390_000).losing_image is None  # measured as JSON, it does not fit
    target.put(entry)
    (stored,) = read_entries(target, Selection(item=entry.item))
    assert stored.losing_image == entry.losing_image
    assert stored.winning_image is None
    assert entry.winning_image is not None
    assert stored.truncated["winning"]["sha256"] == image_digest(entry.winning_image)
    assert "losing" not in stored.truncated


def test_dynamodb_log_keeps_an_item_whose_key_is_near_2_kb(moto_endpoint: str, unique: Any) -> None:
    """The canonical key of a legal item key near 2 KB is longer than a partition key
    may be: the entry is stored under the key's digest and found by the key."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    target = DynamoDbConflictLog(ddb, unique("conflicts"), retention_days=30, where="moto")
    target.ensure_exists()
    entry = conflict(1, pk="L" * 2030).entry()
    target.put(entry)
    found = read_entries(
        target, Selection(item=canonical_key(parse_key(f"pk=S:{'L' * 2030} sk=N:3")))
    )
    assert [e.id for e in found] == [entry.id]


def test_an_entry_stores_a_credential_quoted_in_why_a_change_lost_redacted(
    tmp_path: Path,
) -> None:
    """Why a change lost can quote what a custom resolver or AWS said: stored as the logs
    show it, a credential redacted."""
    quoting = replace(conflict(1), why="resolver said sessiontoken=CONFLICTqqqTOKEN7")
    target = FileConflictLog(tmp_path / "conflicts.jsonl")
    target.put(quoting.entry())
    stored = (tmp_path / "conflicts.jsonl").read_text()
    assert "CONFLICTqqqTOKEN7" not in stored
    assert ConflictEntry.from_json(stored).why == "resolver said sessiontoken=<redacted>"


def test_a_change_lost_again_after_its_destination_was_renamed_is_listed_once(
    tmp_path: Path,
) -> None:
    """A destination named ``dr``, renamed ``disaster``, then a replay of the change that
    lost there (a restart before the checkpoint passed it): it loses again and is
    recorded again under the new name, with a new id. It is one lost change at one
    region and table: listed and counted once, under the name the destination has now,
    by the id recorded first (which a restore made before the replay names)."""
    place = "ap-southeast-2/orders-replica"
    first = _at(conflict(1).entry(), "dr", place)
    lost_again = replace(conflict(1), destination="disaster", recorded_s=1_800_000_060.0)
    again = _at(lost_again.entry(), "disaster", place)
    assert again.id != first.id
    log = FileConflictLog(tmp_path / "c.jsonl")
    log.put(first)
    log.put(again)
    config = _destinations_job(
        tmp_path,
        log.path,
        "  - {name: disaster, region: ap-southeast-2, table: orders-replica, "
        "endpoint_url: 'http://127.0.0.1:9'}\n",
    )
    runner = CliRunner()
    listing = runner.invoke(cli, ["conflicts", "-c", str(config), "--format", "json"])
    assert listing.exit_code == 0, listing.output
    document = json.loads(listing.stdout)
    assert document["summary"]["lost_conflicts"] == 1
    assert document["summary"]["per_destination"] == {"disaster": 1}
    assert [(e["id"], e["destination"]) for e in document["entries"]] == [(first.id, "disaster")]
    named = runner.invoke(cli, ["conflicts", "-c", str(config), "--destination", "disaster"])
    assert "1 lost conflict, 0 restores" in named.stdout, named.output

    # A restore made under the old name is shown under the new one too (it showed "dr").
    restored = restore_entry(first, force=False, written=None, rule=rule_for(ConflictConfig(), "x"))
    log.put(restored)
    listing = runner.invoke(cli, ["conflicts", "-c", str(config), "--format", "json"])
    assert listing.exit_code == 0, listing.output
    shown = {e["id"]: e["destination"] for e in json.loads(listing.stdout)["entries"]}
    assert shown == {first.id: "disaster", restored.id: "disaster"}
    named = runner.invoke(cli, ["conflicts", "-c", str(config), "--destination", "disaster"])
    assert "1 lost conflict, 1 restore" in named.stdout, named.output


def test_two_destinations_at_one_place_keep_their_entries_apart_by_name(tmp_path: Path) -> None:
    """Two destinations at one region and table (two accounts) that both lose one change:
    two entries, told apart by the name each was recorded under."""
    place = "ap-southeast-2/orders-replica"
    at_a = _at(conflict(1).entry(), "account-a", place)
    at_b = _at(replace(conflict(1), destination="account-b").entry(), "account-b", place)
    log = FileConflictLog(tmp_path / "c.jsonl")
    log.put(at_a)
    log.put(at_b)
    config = _destinations_job(
        tmp_path,
        log.path,
        "  - {name: account-a, region: ap-southeast-2, table: orders-replica, "
        "endpoint_url: 'http://127.0.0.1:9'}\n"
        "  - {name: account-b, region: ap-southeast-2, table: orders-replica, "
        "endpoint_url: 'http://127.0.0.1:9', role_arn: 'arn:aws:iam::222222222222:role/w'}\n",
    )
    listing = CliRunner().invoke(cli, ["conflicts", "-c", str(config), "--format", "json"])
    assert listing.exit_code == 0, listing.output
    summary = json.loads(listing.stdout)["summary"]
    assert summary["per_destination"] == {"account-a": 1, "account-b": 1}


def test_an_sqs_entry_fitted_to_the_queue_names_the_images_it_stored_as_their_sha256() -> None:
    """Only the winning image was replaced (the destination still holds it), yet the
    warning read as if both were."""
    import structlog.testing

    from replicator.conflictlog.sqs import encode

    lost = conflict(1)
    assert lost.existing is not None
    big_winner = {**lost.existing, "blob": {"B": random.Random(2).randbytes(6000)}}
    entry = replace(lost, existing=big_winner).entry()
    with structlog.testing.capture_logs() as logs:
        body = encode(entry, 4096)
    assert len(body.encode()) <= 4096
    (warning,) = [e for e in logs if e["event"].startswith("conflict entry too large for SQS")]
    assert warning["images"] == ["winning"]
