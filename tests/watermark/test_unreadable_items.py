"""An item of the status table that does not read as the replicator writes it: a hand
edit gone wrong (docs/watermark.md tells operators to edit these items to clear unread
spans). Every reader says which item and attribute, once, and exits 3 (``wait`` exiting 1,
a timeout, would have scripts retry for ever); the publisher counts it, backs off, and
writes nothing over it (its spans and dead letters may be other processes')."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from amazon_kclpy import messages
from botocore.exceptions import ClientError
from click.testing import CliRunner
from structlog.testing import capture_logs

from replicator.cli import cli
from replicator.metrics import Metrics
from replicator.processor import ReplicationProcessor
from replicator.shards.stream import Shard
from replicator.watermark import StatusItemUnreadable
from replicator.watermark.parts import EVERY, Part, Placeholder, plan_registration
from replicator.watermark.publisher import ShardWatermark
from replicator.watermark.table import StatusTable
from replicator.watermark.wait import read_watermark, wait_until_replicated
from tests.support.aws import client
from tests.support.metrics import sample
from tests.support.status_table import created_with_its_stream
from tests.watermark.test_commands import EU, job_file
from tests.watermark.test_store_before_checkpoint import Intake, Pipeline
from tests.watermark.test_watermark_table import change_at

S = 1_000_000
T0 = 1_700_000_000 * S
SHARD = "shardId-00000001"
FAILURES = "replicator_watermark_publish_failures_total"

# (attribute, what a slightly wrong edit left there, what the message says it should be)
EDITS = [
    # SET unread_spans = :e with {":e":{"S":""}}: meant to clear the spans
    ("unread_spans", {"S": ""}, "not a string (S) of JSON [[from_us, to_us, reason], ...]"),
    ("watermark_us", {"S": str(T0)}, "not a whole number (N)"),
    ("unread_spans", {"L": []}, "not a string (S) of JSON"),  # no "S" in it at all
    ("dead_letter_ranges", {"S": "[[1]]"}, "it holds [1]"),  # a range missing its end
]


@pytest.fixture
def edited(
    request: pytest.FixtureRequest,
    moto_endpoint: str,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> tuple[Path, StatusTable, str, str]:
    """A job whose eu-west-1 status table holds one raised part, then edited by hand as
    ``aws dynamodb update-item`` would; the job file, the table, the attribute and what
    the message must say."""
    attribute, value, said = request.param
    task = unique("wm-edited")
    table = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part(SHARD, T0, "host:1")
    edit(table, attribute, value)
    return job_file(tmp_path, task, moto_endpoint), table, attribute, said


def edit(table: StatusTable, attribute: str, value: dict[str, Any]) -> None:
    table.client.update_item(
        TableName=table.name,
        Key=table._key(SHARD),
        UpdateExpression="SET #a = :e",
        ExpressionAttributeNames={"#a": attribute},
        ExpressionAttributeValues={":e": value},  # type: ignore[dict-item]
    )


def one_line_naming_the_item(stderr: str, table: StatusTable, attribute: str, said: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(
        f"replicator: status table {table.name}: the item of destination {EU!r}, "
        f"shard {SHARD!r} cannot be read: {attribute} is "
    ), stderr
    assert said in stderr, stderr
    assert "docs/watermark.md" in stderr, stderr


# -- readers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("edited", EDITS, indirect=True, ids=[e[0] for e in EDITS])
@pytest.mark.parametrize(
    "command",
    [
        ["wait", "-d", EU, "--until", "1", "--timeout", "2"],
        ["watermark", "-d", EU],
        ["watermark", "--json"],
    ],
    ids=["wait", "watermark", "watermark-json"],
)
def test_the_commands_name_the_item_and_attribute_and_exit_3(
    edited: tuple[Path, StatusTable, str, str], command: list[str]
) -> None:
    path, table, attribute, said = edited
    result = CliRunner().invoke(
        cli, [command[0], "--config", str(path), *command[1:]], prog_name="replicator"
    )
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    one_line_naming_the_item(result.stderr, table, attribute, said)


@pytest.mark.parametrize("edited", EDITS[:1], indirect=True, ids=["unread_spans"])
def test_the_library_raises_it_at_once_rather_than_waiting_out_the_timeout(
    edited: tuple[Path, StatusTable, str, str],
) -> None:
    _, table, _, _ = edited
    started = time.monotonic()
    with pytest.raises(StatusItemUnreadable, match="unread_spans is"):
        wait_until_replicated(
            1, destination=EU, status_table=table.name, client=table.client, timeout=60
        )
    assert time.monotonic() - started < 30
    with pytest.raises(StatusItemUnreadable, match="unread_spans is"):
        read_watermark(destination=EU, status_table=table.name, client=table.client, timeout=60)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("watermark_us", {"N": "1.5"}),
        ("dead_letters", {"S": "3"}),
        ("dead_letter_version", {"NULL": True}),
        ("unread_version", {"N": "x"}),
        ("updated_at", {"S": "yesterday"}),
        ("owner", {"N": "1"}),
        ("parents", {"S": "shardId-0"}),
        ("children", {"L": [{"S": "shardId-2"}]}),
        ("ended", {"S": "true"}),
        ("dead_letter_ranges", {"S": "{}"}),
        ("dead_letter_ranges", {"S": "[[1, 2.5]]"}),
        ("unread_spans", {"S": '[[0, 5, "latest"]'}),  # cut short
        ("unread_spans", {"S": "[[0, 5]]"}),  # no reason
        ("unread_spans", {"S": '[[0, "5", "latest"]]'}),
        ("unread_spans", {"S": '[[true, 5, "latest"]]'}),
        ("unread_spans", {"S": '[[0, 5, ""]]'}),
        ("destination", {"N": "1"}),
    ],
)
def test_every_attribute_is_read_as_the_replicator_writes_it(
    attribute: str, value: dict[str, Any]
) -> None:
    """Before, most of these read as something else (a set stored as a string: no
    parents; "true" as a string: not ended) or failed as KeyError, ValueError or
    JSONDecodeError with a traceback."""
    item = {"destination": {"S": EU}, "shard": {"S": SHARD}, "watermark_us": {"N": str(T0)}}
    with pytest.raises(StatusItemUnreadable) as raised:
        Part.from_item({**item, attribute: value}, "t-watermark")
    assert "status table t-watermark: the item of destination " in str(raised.value)
    assert f"cannot be read: {attribute} is " in str(raised.value)


def test_an_item_as_the_replicator_writes_it_still_reads() -> None:
    item = {
        "destination": {"S": EU},
        "shard": {"S": SHARD},
        "watermark_us": {"N": str(T0)},
        "updated_at": {"N": "1700000000.5"},
        "owner": {"S": "host:1"},
        "parents": {"SS": ["shardId-0"]},
        "children": {"SS": ["shardId-2", "shardId-3"]},
        "ended": {"BOOL": True},
        "expires_at": {"N": "1700172800"},
        "dead_letters": {"N": "2"},
        "dead_letter_ranges": {"S": f"[[{T0}, {T0 + S - 1}]]"},
        "dead_letter_version": {"N": "1"},
        "unread_spans": {"S": f'[[0, {T0}, "latest"]]'},
        "unread_version": {"N": "1"},
    }
    part = Part.from_item(item, "t-watermark")
    assert (part.watermark_us, part.ended, part.owner) == (T0, True, "host:1")
    assert part.children == {"shardId-2", "shardId-3"} and part.parents == {"shardId-0"}
    assert part.dead_letter_ranges == ((T0, T0 + S - 1),)
    assert [(s.from_us, s.to_us, s.reason) for s in part.unread_spans] == [(0, T0, "latest")]
    bare = Part.from_item({"destination": {"S": EU}, "shard": {"S": SHARD}}, "t-watermark")
    assert (bare.watermark_us, bare.unread_spans, bare.dead_letter_ranges) == (0, (), ())
    assert Part.from_item({**item, "unread_spans": {"S": "[]"}}, "t").unread_spans == ()


def test_a_raise_refused_over_a_value_that_is_no_number_is_not_taken_for_a_raise() -> None:
    """DynamoDB answers the raise's condition over a watermark_us stored as a string with
    ConditionalCheckFailedException and the item (moto answers 500, so the answer is
    given here): the publisher took that for its claim stored, and went on claiming."""

    class Refusing:
        def update_item(self, **_: Any) -> None:
            old = {
                "destination": {"S": EU},
                "shard": {"S": SHARD},
                "watermark_us": {"S": str(T0)},
                "owner": {"S": "host:1"},
            }
            error = {"Code": "ConditionalCheckFailedException", "Message": "refused"}
            raise ClientError({"Error": error, "Item": old}, "UpdateItem")  # type: ignore[typeddict-unknown-key]

    table = StatusTable(Refusing(), "t-watermark", EU)  # type: ignore[arg-type]
    with pytest.raises(StatusItemUnreadable, match="watermark_us is"):
        table.raise_part(SHARD, T0 + S, "host:1", raised_before=True)


# -- the publisher ---------------------------------------------------------------------------


def publisher(
    table: StatusTable, metrics: Metrics, interval_s: float = 3600, *, at_latest: bool = False
) -> ShardWatermark:
    watermark = ShardWatermark(
        SHARD,
        {EU: table},
        lambda: [Shard(SHARD, None, False)],
        metrics,
        interval_s=interval_s,
        margin_s=0,
        reads_follow_answers=True,
        source_history=created_with_its_stream,
    )
    watermark.begin(resumed=False, at_latest=at_latest)
    return watermark


def test_the_publisher_holds_what_it_would_write_over_an_unreadable_item(
    moto_endpoint: str, unique: Callable[[str], str], metrics: Metrics
) -> None:
    """A running job; the operator's "" replaces the part's dead-letter ranges (meant to
    clear them, which is a REMOVE). Rewriting them from what this process knows would
    drop ranges other processes stored, and a wait would then be told "replicated" for
    changes never applied. So nothing is written over them: the dead letter that comes
    next waits in memory (the checkpoint with it) and the claim after it is not raised;
    the failure is counted, logged once in one line, and not tried again within the
    back-off. Once the item is corrected, both go in."""
    table = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), unique("wm-pub"), EU)
    watermark = publisher(table, metrics)
    try:
        watermark.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
        watermark.publish()
        assert table.part(SHARD).watermark_us == T0 + 10 * S - 1  # type: ignore[union-attr]
        edit(table, "dead_letter_ranges", {"S": ""})

        change = change_at("poison", 1, T0 + 15 * S)
        watermark.received(change)
        watermark.settled(EU, change, dead_lettered=True)
        watermark.empty_read(previous_answer_at=(T0 + 20 * S) / S, received_at=0)
        with capture_logs() as logs:
            watermark.publish()
            watermark.publish()  # within the back-off: not tried again
        assert sample(metrics, FAILURES, destination=EU) == 1
        assert [entry["log_level"] for entry in logs] == ["error"], logs
        (entry,) = logs
        assert entry["event"].startswith("an item of the status table cannot be read")
        assert "exc_info" not in entry
        assert f"status table {table.name}: the item of destination {EU!r}, " in entry["error"]
        assert f"shard {SHARD!r} cannot be read: dead_letter_ranges is" in entry["error"]
        stored = table.client.get_item(TableName=table.name, Key=table._key(SHARD))["Item"]
        assert stored["dead_letter_ranges"] == {"S": ""}  # as the operator left it
        assert stored["watermark_us"] == {"N": str(T0 + 10 * S - 1)}  # not raised
        assert "dead_letters" not in stored
        assert watermark.unstored() == [EU]  # the checkpoint waits for the dead letter

        table.client.update_item(  # corrected as docs/watermark.md says
            TableName=table.name,
            Key=table._key(SHARD),
            UpdateExpression="REMOVE dead_letter_ranges",
        )
        watermark.publish_soon(30)  # tried again at once, as a checkpoint asks
        part = table.part(SHARD)
        assert part is not None and part.watermark_us == T0 + 20 * S - 1
        assert part.dead_letter_ranges == ((T0 + 15 * S, T0 + 16 * S - 1),)
        assert watermark.unstored() == []
        assert sample(metrics, FAILURES, destination=EU) == 1
    finally:
        watermark.close()


@pytest.mark.parametrize("edited", EDITS[:1], indirect=True, ids=["unread_spans"])
def test_the_publishing_thread_counts_and_backs_off_without_a_traceback(
    edited: tuple[Path, StatusTable, str, str], metrics: Metrics
) -> None:
    """It logged "watermark publishing failed" with a traceback once per interval (117
    times in 26 s), never counted. Each try reads the part once, to store the LATEST
    start's span on it; the gaps between tries double from twice the interval."""
    _, edited_table, _, _ = edited
    tries: list[float] = []
    fourth = threading.Event()

    class Noting(StatusTable):
        def part(self, shard: str, attributes: Collection[str] = EVERY) -> Part | None:
            tries.append(time.monotonic())
            if len(tries) >= 4:
                fourth.set()
            return super().part(shard, attributes)

    table = Noting(edited_table.client, edited_table.name, EU)
    interval_s = 0.05
    with capture_logs() as logs:
        watermark = publisher(table, metrics, interval_s, at_latest=True)
        try:
            watermark.empty_read(previous_answer_at=(T0 + 10 * S) / S, received_at=0)
            assert fourth.wait(60), tries
        finally:
            watermark.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    for failures, gap in enumerate(gaps[:3], start=1):
        assert gap >= interval_s * 2**failures, gaps
    assert sample(metrics, FAILURES, destination=EU) >= 3
    assert not [entry for entry in logs if "exc_info" in entry], logs
    assert not [entry for entry in logs if entry["event"] == "watermark publishing failed"]
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1 and "unread_spans is" in errors[0]["error"], logs
    with pytest.raises(StatusItemUnreadable):  # the item is still the operator's
        table.part(SHARD)


# -- what each write reads: only what it needs -----------------------------------------------

OTHER = "shardId-00000002"


class Checkpoints:
    """The daemon's checkpointer: the positions checkpointed."""

    def __init__(self) -> None:
        self.written: list[str | None] = []

    def checkpoint(self, sequence_number: str | None = None, sub: int | None = None) -> None:
        self.written.append(sequence_number)


@pytest.mark.parametrize("start", ["TRIM_HORIZON", "4"], ids=["first-start", "resumed"])
@pytest.mark.parametrize(
    ("attribute", "value", "said"),
    [
        EDITS[0],  # an ended shard's spans "cleared" with SET ... = ""
        ("updated_at", {"S": "yesterday"}, "not a number (N)"),
        ("watermark_us", {"S": str(T0)}, "not a whole number (N)"),
    ],
    ids=["unread_spans", "updated_at", "watermark_us"],
)
def test_a_bad_item_of_one_shard_holds_back_no_other_shards_processor(
    moto_endpoint: str,
    unique: Callable[[str], str],
    tmp_path: Path,
    metrics: Metrics,
    start: str,
    attribute: str,
    value: dict[str, Any],
    said: str,
) -> None:
    """Every write read every attribute of every part: one bad attribute on a shard's
    item stopped a processor of another shard starting from registering (and a resumed
    one from telling whether its destination joined), so its dead letters stayed in
    memory and its checkpoint held, on every shard that dead-lettered, until the item
    was corrected. Now that processor registers, stores its dead letter, claims and
    checkpoints, driven as the daemon drives it; the readers that combine the parts
    still refuse the item (exit 3) rather than pass over it."""
    task = unique("wm-other")
    table = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part(SHARD, T0 + 30 * S, "host:1")
    edit(table, attribute, value)

    watermark = ShardWatermark(
        OTHER,
        {EU: table},
        lambda: [Shard(SHARD, None, False), Shard(OTHER, None, False)],
        metrics,
        interval_s=3600,  # published when the checkpoint asks
        margin_s=0,
        reads_follow_answers=True,
        source_history=created_with_its_stream,
    )
    pipeline = Pipeline(watermark)
    exits: list[int] = []
    processor = ReplicationProcessor(
        lambda _shard: Intake(pipeline),  # type: ignore[arg-type,return-value]
        Metrics(),
        exit_process=exits.append,
        report_interval_s=3600,
        pause=lambda _s: None,
    )
    checkpoints = Checkpoints()
    messages.InitializeInput(
        {"action": "initialize", "shardId": OTHER, "sequenceNumber": start, "subSequenceNumber": 0}
    ).dispatch(checkpoints, processor)
    try:
        watermark.undecodable(5, T0 + 5 * S)  # dead-lettered at every destination
        pipeline.position = "5"
        messages.ProcessRecordsInput(
            {"action": "processRecords", "millisBehindLatest": 0, "records": []}
        ).dispatch(checkpoints, processor)
        assert checkpoints.written == ["5"]
        part = table.part(OTHER)
        assert part is not None
        assert part.dead_letter_ranges == ((T0 + 5 * S, T0 + 6 * S - 1),)
        assert part.watermark_us > T0 + 6 * S  # the empty read's claim, past it
        assert sample(metrics, FAILURES, destination=EU) == 0
    finally:
        processor.close()
        assert exits == []

    path = str(job_file(tmp_path, task, moto_endpoint))
    until = str((T0 + 10 * S) / S)
    result = CliRunner().invoke(
        cli,
        ["wait", "--config", path, "-d", EU, "--until", until, "--timeout", "2"],
        prog_name="replicator",
    )
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    one_line_naming_the_item(result.stderr, table, attribute, said)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("updated_at", {"S": "yesterday"}),
        ("unread_spans", {"S": ""}),
        ("dead_letter_ranges", {"S": "[[1]]"}),
        ("parents", {"S": "shardId-0"}),
    ],
)
def test_a_refused_raise_reads_only_the_stored_watermark(
    moto_endpoint: str, unique: Callable[[str], str], attribute: str, value: dict[str, Any]
) -> None:
    """A raise refused by its condition read the whole old item, so any bad attribute
    stopped the claim (StatusItemUnreadable); only a watermark_us that is no number may."""
    table = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), unique("wm-raise"), EU)
    table.ensure_exists()
    table.raise_part(SHARD, T0 + 10 * S, "host:1")
    edit(table, attribute, value)
    assert table.raise_part(SHARD, T0 + 5 * S, "host:2", raised_before=True) == T0 + 10 * S
    assert table.raise_part(SHARD, T0 + 20 * S, "host:2", raised_before=True) == T0 + 20 * S
    stored = table.client.get_item(TableName=table.name, Key=table._key(SHARD))["Item"]
    assert stored["watermark_us"] == {"N": str(T0 + 20 * S)}
    if attribute != "updated_at":  # the raise sets it; the operator's edit stays
        assert stored[attribute] == value


def test_a_parent_whose_value_cannot_be_read_registers_its_child_at_nothing_known(
    moto_endpoint: str, unique: Callable[[str], str]
) -> None:
    """Registering takes a new shard's value from its parent's part: one that is no
    number stopped every processor from registering. It is taken as 0, nothing known,
    which holds the watermark until the child's processor claims; any other attribute
    registration reads (``ended``, ``children``) is still refused, naming it."""
    table = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), unique("wm-lineage"), EU)
    table.ensure_exists()
    table.raise_part(SHARD, T0, "host:1")
    edit(table, "watermark_us", {"S": str(T0)})
    shards = [Shard(SHARD, None, True), Shard(OTHER, SHARD, False)]
    plan = plan_registration(shards, {part.shard: part for part in table.lineage()}, OTHER)
    assert plan.placeholders == (Placeholder(OTHER, 0, frozenset([SHARD])),)
    assert plan.children == {SHARD: frozenset([OTHER])} and plan.ended == (SHARD,)
    edit(table, "ended", {"S": "true"})
    with pytest.raises(StatusItemUnreadable, match="ended is"):
        table.lineage()
