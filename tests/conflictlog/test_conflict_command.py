"""``replicator conflicts`` as an operator meets it: corrupt logs, bad options and
out-of-range values give one clear line (or a warning and the rest of the log), never
a traceback; against a moto server over HTTP where AWS is involved."""

from __future__ import annotations

import gzip
import json
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from click.testing import CliRunner, Result

from replicator.cli import cli
from replicator.config.loader import load_job
from replicator.conflictlog import restore as restore_module
from replicator.conflictlog.base import Selection
from replicator.conflictlog.dynamodb import DynamoDbConflictLog
from replicator.conflictlog.entry import ConflictEntry
from replicator.conflictlog.file import FileConflictLog
from replicator.conflictlog.keys import canonical_key
from replicator.conflictlog.reader import Listing, read_entries
from replicator.conflictlog.sqs import SqsConflictLog
from replicator.conflictlog.targets import conflict_log_target
from replicator.decode import decode
from replicator.exceptions import ConflictLogRejected, LogReadingStopped
from replicator.items import describe_key, image_digest, item_from_wire, item_to_wire
from replicator.writers.destination import DestinationWriter
from tests.conflictlog.test_conflict_log import conflict, job_file
from tests.support.aws import client, create_table
from tests.support.cli import replicator_into_a_pipe_nobody_reads
from tests.support.records import daemon_record, stream_record

SKIPPED = "unreadable conflict-log entry skipped"


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["conflicts", "-c", str(config), *args])


def warnings(result: Result, event: str = SKIPPED) -> list[dict[str, Any]]:
    """The command's JSON log lines (stderr) with this event."""
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def listed_ids(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return sorted(entry["id"] for entry in json.loads(result.stdout)["entries"])


def no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


def moto_job(
    tmp_path: Path, endpoint: str, source: str, destination: str, conflict_log: str
) -> Path:
    """A job file whose source and destination tables are at the moto server."""
    path = tmp_path / "moto-job.yaml"
    path.write_text(
        "task_name: orders-audit\n"
        f"source: {{region: us-east-1, table: {source}, endpoint_url: '{endpoint}'}}\n"
        "destinations:\n"
        f"  - {{name: eu, region: eu-west-1, table: {destination}, endpoint_url: '{endpoint}'}}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        f"conflict_log: {conflict_log}\n"
    )
    return path


ELSEWHERE = "ap-southeast-2"


def two_entries() -> tuple[ConflictEntry, ConflictEntry]:
    # Recorded in a region where job_file's job has no destination: a --restore that
    # finds one of them says so, without reaching any destination.
    return (
        replace(conflict(1), region=ELSEWHERE).entry(),
        replace(conflict(2, pk="order-2"), region=ELSEWHERE).entry(),
    )


def not_the_jobs(entry: ConflictEntry) -> str:
    """How a --restore of a ``two_entries`` entry begins its refusal."""
    return (
        f"entry {entry.id} is for {ELSEWHERE}/orders (recorded as destination 'eu'), which "
        "is not a destination of the job file"
    )


def cut_inside_a_character() -> bytes:
    text = replace(conflict(3).entry(), why="la mise à jour a perdu").to_json().encode("utf-8")
    return text[: text.index("à".encode()) + 1]


def with_field(name: str, value: Any) -> bytes:
    body = json.loads(conflict(4).entry().to_json())
    body[name] = value
    return json.dumps(body).encode()


def with_fields(**values: Any) -> bytes:
    body = json.loads(conflict(4).entry().to_json())
    return json.dumps(body | values).encode()


def with_image_key(which: str, pk: str) -> bytes:
    """An entry whose ``which`` image carries another ``pk`` than its key (an edited line)."""
    body = json.loads(conflict(4).entry().to_json())
    body[f"{which}_image"]["pk"] = {"S": pk}
    return json.dumps(body).encode()


CORRUPT_LINES: dict[str, Callable[[], bytes]] = {
    "cut in a UTF-8 character": cut_inside_a_character,
    "a JSON list": lambda: b"[1,2]",
    "a JSON string": lambda: b'"str"',
    "JSON null": lambda: b"null",
    "created a number": lambda: with_field("created", 5),
    "created not a time": lambda: with_field("created", "not a time"),
    "created a time without a zone": lambda: with_field("created", "2026-12-01T10:00:00"),
    "recorded_at not a time": lambda: with_field("recorded_at", "soon"),
    "key a string": lambda: with_field("key", "oops"),
    "a rank without its attribute": lambda: with_field("losing_rank", {"x": 1}),
    "an image that is not one": lambda: with_field("winning_image", {"a": {"S": 1}}),
    "a required field missing": lambda: with_field("id", None).replace(b'"id": null, ', b""),
    "a losing image of another key": lambda: with_image_key("losing", "order-4-evil"),
    "a winning image of another key": lambda: with_image_key("winning", "order-4-evil"),
    "an item that is not its key": lambda: with_field("item", '[["pk","S","order-4-evil"]]'),
    # Hand-edited or foreign lines whose fields have the right JSON type but are no
    # entry's: listed, they broke the table's rows or read as what they are not.
    "an empty id": lambda: with_field("id", ""),
    "an id with a newline": lambda: with_field("id", "0123456789ab\ncdef"),
    "an id of 20 characters": lambda: with_field("id", "0123456789abcdef0123"),
    "an id not hexadecimal": lambda: with_field("id", "0123456789abcdeg"),
    "an empty table": lambda: with_field("table", ""),
    "a blank region": lambda: with_field("region", " "),
    "a restore naming no entry": lambda: with_fields(kind="restore", restored_entry=None),
    "a restore naming no id": lambda: with_fields(kind="restore", restored_entry="a b"),
    "a conflict naming a restored entry": lambda: with_field("restored_entry", "0" * 16),
    "a delete of an INSERT": lambda: with_fields(op="delete", event="INSERT"),
    "a put of a REMOVE": lambda: with_fields(op="put", event="REMOVE"),
    "an event that is none": lambda: with_field("event", "FROB"),
    "created before year 1 in UTC": lambda: with_field("created", "0001-01-01T00:00:00+01:00"),
    "recorded_at after 9999 in UTC": lambda: with_field("recorded_at", "9999-12-31T23:00:00-05:00"),
}


@pytest.mark.parametrize("corrupt", CORRUPT_LINES.values(), ids=CORRUPT_LINES.keys())
def test_a_corrupt_line_in_a_file_log_is_skipped_naming_its_line(
    tmp_path: Path, corrupt: Callable[[], bytes]
) -> None:
    path = tmp_path / "conflicts.jsonl"
    config = job_file(tmp_path, f"{{kind: file, path: '{path}'}}")
    first, last = two_entries()
    target = FileConflictLog(path)
    target.put(first)
    with path.open("ab") as file:
        file.write(corrupt() + b"\n")
    target.put(last)

    listing = invoke(config, "--format", "json")
    assert listed_ids(listing) == sorted([first.id, last.id])
    (warning,) = warnings(listing)
    assert (warning["file"], warning["line"]) == (str(path), 2)

    found = invoke(config, "--restore", last.id)
    no_traceback(found)
    assert found.exit_code == 1
    assert not_the_jobs(last) in " ".join(found.output.split())
    assert len(warnings(found)) == 1


def test_ranking_values_in_the_listing_and_in_why_cannot_add_a_line(tmp_path: Path) -> None:
    """What ranks an image is data: a value holding a newline is shown quoted, in the
    table's LOSER and WINNER cells and in the entry's why, so each entry is one line."""
    path = tmp_path / "conflicts.jsonl"
    config = job_file(tmp_path, f"{{kind: file, path: '{path}'}}")
    forged = "2027\n  forged-entry  2026-01-01"
    lost = conflict(1, ranks=({"S": forged}, {"S": "9999 (newer)"})).entry()
    FileConflictLog(path).put(lost)

    listing = invoke(config)

    assert listing.exit_code == 0, listing.output
    *_, header, row = listing.stdout.splitlines()
    assert header.split()[0] == "ID" and row.split()[0] == lost.id
    assert 'updated_at="2027\\n  forged-entry  2026-01-01" origin_region=us-east-1' in row
    assert 'updated_at="9999 (newer)" origin_region=eu-west-1' in row
    assert "\n" not in lost.why
    assert 'updated_at="2027\\n  forged-entry  2026-01-01", origin_region=us-east-1' in lost.why


def test_a_file_log_path_that_is_a_directory_is_a_problem_of_the_job_file(tmp_path: Path) -> None:
    """At its key and line, as ``validate`` reports it: the message named neither the job
    file nor the line."""
    config = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}'}}")
    result = invoke(config)
    no_traceback(result)
    assert result.exit_code == 2
    assert result.stderr == (
        f"replicator: {config}: 1 problem in the job file:\n"
        f"  conflict_log.path (line 6): the conflict log {tmp_path} is a directory: "
        f"conflict_log.path must name a file (such as {tmp_path}/{{task_name}}.jsonl)\n"
    )


def not_gzip(entry: ConflictEntry) -> bytes:
    return b"not gzip at all"


def gzip_of_a_list(entry: ConflictEntry) -> bytes:
    return gzip.compress(b"[1, 2]")


def gzip_of_a_wrong_type(entry: ConflictEntry) -> bytes:
    body = json.loads(entry.to_json())
    body["losing_rank"] = {"attribute": "updated_at", "value": "100"}
    return gzip.compress(json.dumps(body).encode())


@pytest.mark.parametrize("blob", [not_gzip, gzip_of_a_list, gzip_of_a_wrong_type])
def test_a_corrupt_item_in_a_dynamodb_log_is_skipped_naming_its_key(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    blob: Callable[[ConflictEntry], bytes],
) -> None:
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    table = unique("conflicts")
    target = DynamoDbConflictLog(ddb, table, retention_days=30, where="moto")
    target.ensure_exists()
    first, last = two_entries()
    target.put(first)
    target.put(last)
    broken = conflict(5, pk="order-5").entry()
    item = target._item(broken)
    item["entry"] = {"B": blob(broken)}
    ddb.put_item(TableName=table, Item=item)
    config = job_file(
        tmp_path, f"{{kind: dynamodb, table: {table}, endpoint_url: '{moto_endpoint}'}}"
    )

    listing = invoke(config, "--format", "json")
    assert listed_ids(listing) == sorted([first.id, last.id])
    (warning,) = warnings(listing)
    assert (warning["table"], warning["pk"], warning["sk"]) == (
        table,
        broken.item,
        broken.sort_key,
    )

    found = invoke(config, "--restore", last.id)
    no_traceback(found)
    assert found.exit_code == 1
    assert not_the_jobs(last) in " ".join(found.output.split())
    assert len(warnings(found)) == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"entry_gzip_b64": "not base64!"}',
        json.dumps({"entry_gzip_b64": "bm90IGd6aXA="}),  # base64 of "not gzip"
        with_field("key", "oops").decode(),
    ],
)
def test_a_corrupt_message_in_an_sqs_log_is_skipped_naming_its_id(
    moto_endpoint: str, unique: Any, tmp_path: Path, body: str
) -> None:
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("conflicts"))["QueueUrl"]
    target = SqsConflictLog(sqs, url)
    first, last = two_entries()
    target.put(first)
    broken = sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]
    target.put(last)
    config = job_file(
        tmp_path, f"{{kind: sqs, queue_url: '{url}', endpoint_url: '{moto_endpoint}'}}"
    )

    listing = invoke(config, "--format", "json")
    assert listed_ids(listing) == sorted([first.id, last.id])
    (warning,) = warnings(listing)
    assert (warning["queue"], warning["message_id"]) == (url, broken)


def test_a_queue_that_is_not_there_is_named_with_its_endpoint_as_a_table_is(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Exit 3, one line naming the queue and where it was read (the endpoint and the
    region, as the DynamoDB log's messages say it)."""
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("conflicts"))["QueueUrl"]
    sqs.delete_queue(QueueUrl=url)
    config = job_file(
        tmp_path, f"{{kind: sqs, queue_url: '{url}', endpoint_url: '{moto_endpoint}'}}"
    )

    listing = invoke(config)
    no_traceback(listing)
    assert listing.exit_code == 3, listing.output
    assert f"conflict-log queue {url}: " in listing.stderr
    assert f"(at {moto_endpoint} (us-east-1))" in listing.stderr, listing.stderr


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--key", "pk=N:1e999999999999", "key attribute pk: '1e999999999999' is not a DynamoDB"),
        ("--key", '{"pk":{"N":"1e400000000"}}', "key attribute pk: '1e400000000' is not a"),
        ("--key", "pk=N:" + "7" * 39, "has 39 significant digits"),
        ("--since", "800000d", "'800000d' is outside the times"),
        ("--since", "99999999999d", "'99999999999d' is outside the times"),
        ("--since", "0001-01-01T00:00:00+01:00", "'0001-01-01T00:00:00+01:00' is outside"),
        ("--since", "9999-12-31T23:59:59-01:00", "'9999-12-31T23:59:59-01:00' is outside"),
    ],
)
def test_an_out_of_range_key_or_time_is_one_line_and_exit_2(
    tmp_path: Path, option: str, value: str, said: str
) -> None:
    config = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}/c.jsonl'}}")
    result = invoke(config, option, value)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.stderr and said in " ".join(result.stderr.split())


def source_only(moto_endpoint: str, source: str, tmp_path: Path, **table: Any) -> tuple[str, Path]:
    """A source table ``source`` (``table``: its key's shape) and a job file with a file
    conflict log whose destination is never reached: what a --key check reads."""
    create_table(client("dynamodb", "us-east-1", moto_endpoint), source, **table)
    config = moto_job(
        tmp_path, moto_endpoint, source, "unused", f"{{kind: file, path: '{tmp_path}/c.jsonl'}}"
    )
    return source, config


def test_a_key_of_the_wrong_type_for_the_table_is_refused_naming_both_types(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    source, config = source_only(moto_endpoint, unique("numbered"), tmp_path, hash_type="N")
    wrong = invoke(config, "--key", "pk=S:7")
    no_traceback(wrong)
    assert wrong.exit_code == 2, wrong.output
    assert (
        f"'pk=S:7' gives pk as type S, but in {source} the key attribute pk is of type N"
        in " ".join(wrong.stderr.split())
    )
    right = invoke(config, "--key", "pk=N:7")
    assert right.exit_code == 0, right.output
    assert "0 lost conflicts" in right.stdout
    # Given as JSON, quoted as typed (it was respelled as 'pk=S:7', which nobody typed).
    typed = '{"pk": {"S": "7"}}'
    as_json = invoke(config, "--key", typed)
    assert as_json.exit_code == 2, as_json.output
    assert f"{typed!r} gives pk as type S, but in {source} the key attribute pk" in (
        " ".join(as_json.stderr.split())
    )
    extra = invoke(config, "--key", '{"pk": {"N": "7"}, "sk": {"N": "1"}}')
    assert extra.exit_code == 2, extra.output
    assert (
        """'{"pk": {"N": "7"}, "sk": {"N": "1"}}' names pk, sk, but the key of """
        f"{source} is pk: sk is no key attribute"
    ) in " ".join(extra.stderr.split())
    assert "give every" not in extra.stderr


def test_a_key_missing_an_attribute_or_naming_others_says_which(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    source, config = source_only(moto_endpoint, unique("composite"), tmp_path, range_key="sk")
    said = {
        "pk=S:o-1": "give sk too",
        "pk=S:o-1 sk=N:7 zz=S:x": "zz is no key attribute",
        "pk=S:o-1 yy=N:7 zz=S:x": "yy, zz are no key attributes; give sk",
        "id=S:o-1 sk=N:7": "id is no key attribute; give pk",
        "id=S:o-1 zz=N:7": "id, zz are no key attributes; give pk, sk",
        '{"p k": {"S": "o-1"}, "sk": {"N": "7"}}': '"p k" is no key attribute; give pk',
    }
    for key, advice in said.items():
        result = invoke(config, "--key", key)
        no_traceback(result)
        assert result.exit_code == 2, result.output
        assert f"but the key of {source} is pk, sk: {advice}" in " ".join(result.stderr.split())


# -- --restore ---------------------------------------------------------------------------------


class Restorable:
    """One recorded conflict whose winner the destination (at moto) holds."""

    def __init__(self, moto_endpoint: str, unique: Any, tmp_path: Path, seq: int = 21) -> None:
        self.ddb = client("dynamodb", "eu-west-1", moto_endpoint)
        self.table = unique("restore-dst")
        create_table(self.ddb, self.table, range_key="sk", stream=None)
        # Recorded at the table the job's destination "eu" is (moto_job).
        self.lost = replace(conflict(seq), table=self.table)
        self.entry = self.lost.entry()
        assert self.lost.existing is not None and self.lost.change.new_image is not None
        self.winner = self.lost.existing
        self.loser = self.lost.change.new_image
        self.key = self.lost.change.keys
        self.ddb.put_item(TableName=self.table, Item=self.winner)
        self.log = FileConflictLog(tmp_path / "conflicts.jsonl")
        self.log.put(self.entry)
        self.config = moto_job(
            tmp_path,
            moto_endpoint,
            "unused",
            self.table,
            f"{{kind: file, path: '{self.log.path}'}}",
        )

    def held(self) -> Any:
        response = self.ddb.get_item(TableName=self.table, Key=self.key, ConsistentRead=True)
        return response.get("Item")

    def restores(self) -> list[ConflictEntry]:
        return [e for e in read_entries(self.log, Selection()) if e.kind == "restore"]


CHANGES_SINCE = {
    "an attribute added": ("SET shipped = :v", {":v": {"BOOL": True}}),
    "an attribute removed": ("REMOVE #n", {}),
    "an attribute changed": ("SET #n = :v", {":v": {"S": "changed"}}),
}


@pytest.mark.parametrize("update", CHANGES_SINCE.values(), ids=CHANGES_SINCE.keys())
def test_a_restore_never_overwrites_an_update_made_since_the_conflict(
    moto_endpoint: str, unique: Any, tmp_path: Path, update: tuple[str, dict[str, Any]]
) -> None:
    case = Restorable(moto_endpoint, unique, tmp_path)
    expression, values = update
    names = {"#n": "name"} if "#n" in expression else {}
    case.ddb.update_item(
        TableName=case.table,
        Key=case.key,
        UpdateExpression=expression,
        **({"ExpressionAttributeNames": names} if names else {}),
        **({"ExpressionAttributeValues": values} if values else {}),
    )
    updated = case.held()

    result = invoke(case.config, "--restore", case.entry.id)
    assert result.exit_code == 1, result.output
    assert "not restored" in result.stdout and "changed since" in result.stdout
    assert case.held() == updated
    assert case.restores() == []


@pytest.mark.parametrize("force", [False, True], ids=["conditional", "--force"])
@pytest.mark.parametrize("which", ["losing", "winning"])
def test_an_entry_whose_image_is_of_another_key_is_unreadable_and_never_restored(
    moto_endpoint: str, unique: Any, tmp_path: Path, which: str, force: bool
) -> None:
    """A line edited by hand (or corrupted) so that an image's key is not the entry's:
    neither item is the one the entry names for both, so the entry does not read. The
    listing skips it naming its line and why; --restore finds no such entry and writes
    nothing, under the entry's key or the image's, even with --force."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    body = json.loads(case.log.path.read_text())
    evil = f"{case.key['pk']['S']}-evil"
    body[f"{which}_image"]["pk"] = {"S": evil}
    case.log.path.write_text(json.dumps(body) + "\n")
    expected_error = f"{which}_image's key (pk=S:{evil} sk=N:"

    listing = invoke(case.config, "--format", "json")
    assert listed_ids(listing) == []
    (warning,) = warnings(listing)
    assert (warning["file"], warning["line"]) == (str(case.log.path), 1)
    assert warning["error"].startswith(expected_error), warning["error"]
    assert "is not the entry's key (pk=S:" in warning["error"]

    result = invoke(case.config, "--restore", case.entry.id, *(["--force"] if force else []))
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert f"no conflict-log entry {case.entry.id!r}" in result.output
    (warning,) = warnings(result)
    assert warning["error"].startswith(expected_error), warning["error"]
    assert case.held() == case.winner
    evil_key = {**case.key, "pk": {"S": evil}}
    assert "Item" not in case.ddb.get_item(TableName=case.table, Key=evil_key)
    assert case.restores() == []


@pytest.mark.parametrize("later_ms", [0, 5_000], ids=["same millisecond", "a later millisecond"])
def test_an_older_loss_is_not_restored_over_a_later_change_of_the_item_that_lost_too(
    moto_endpoint: str, unique: Any, tmp_path: Path, later_ms: int
) -> None:
    """Two changes of one item lost to the same winner, which the item still holds, so
    the item's check passes for both: restoring the older one wrote an image the source
    had replaced since, with exit 0. It is refused naming the later entry; that one
    restores, and --force still writes the older."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    newer_loser = {**case.loser, "name": {"S": "written later"}}
    record = stream_record(
        "MODIFY",
        item_to_wire(case.key),
        item_to_wire(newer_loser),
        seq=22,
        created_ms=1_700_000_000_000 + later_ms,
    )
    later = replace(case.lost, change=decode(daemon_record(record, 22))).entry()
    case.log.put(later)

    refused = invoke(case.config, "--restore", case.entry.id)
    no_traceback(refused)
    assert refused.exit_code == 1, refused.output
    assert refused.stdout.startswith(
        f"not restored: entry {later.id} records a later change of {describe_key(case.key)} "
        f"that lost at eu (eu-west-1/{case.table}) too"
    ), refused.stdout
    assert f"restore {later.id} instead, or give --force" in refused.stdout
    assert case.held() == case.winner
    assert case.restores() == []

    newest = invoke(case.config, "--restore", later.id)
    assert newest.exit_code == 0, newest.output
    assert case.held() == newer_loser
    # The later loss restored, the item is no longer the winner: the older is refused
    # by the item's own check.
    again = invoke(case.config, "--restore", case.entry.id)
    assert again.exit_code == 1 and "changed since" in again.stdout, again.output
    assert case.held() == newer_loser

    forced = invoke(case.config, "--restore", case.entry.id, "--force")
    assert forced.exit_code == 0, forced.output
    assert case.held() == case.loser


@pytest.mark.parametrize(
    ("shard", "task", "created_ms"),
    [
        ("shardId-2", "orders-audit", 1_700_000_000_000),
        ("shardId-1", "orders-other-source", 1_700_000_000_000),
        ("shardId-1", "orders-audit", 1_700_000_000_500),
    ],
    ids=["another shard, same instant", "another task's", "a later instant in microseconds"],
)
def test_a_loss_of_another_shard_or_task_that_may_be_later_refuses_the_older_restore(
    moto_endpoint: str, unique: Any, tmp_path: Path, shard: str, task: str, created_ms: int
) -> None:
    """A stream's creation times may be whole seconds, so one instant on two shards gives
    no order; a fan-in's other source writes the same item at the same table. Either may
    be the later change, and --force is there for an operator who knows it is not."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    newer_loser = {**case.loser, "name": {"S": "written later"}}
    record = stream_record(
        "MODIFY", item_to_wire(case.key), item_to_wire(newer_loser), seq=5, created_ms=created_ms
    )
    other = replace(
        case.lost, change=decode(daemon_record(record, 5)), shard_id=shard, task_name=task
    ).entry()
    if created_ms % 1000:  # kept to the microsecond, as a log written elsewhere may hold it
        other = replace(other, created=other.created.replace("Z", "499Z"))
    case.log.put(other)

    refused = invoke(case.config, "--restore", case.entry.id)
    no_traceback(refused)
    assert refused.exit_code == 1, refused.output
    assert refused.stdout.startswith(f"not restored: entry {other.id} records a later change")
    if task != case.entry.task_name:
        assert f"(task {task!r}'s: restore it with that job's file)" in refused.stdout
    assert case.held() == case.winner

    forced = invoke(case.config, "--restore", case.entry.id, "--force")
    assert forced.exit_code == 0, forced.output
    assert case.held() == case.loser


def test_a_restore_writes_the_loser_once_and_again_says_it_is_already_restored(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    case = Restorable(moto_endpoint, unique, tmp_path)
    first = invoke(case.config, "--restore", case.entry.id)
    assert first.exit_code == 0, first.output
    assert case.held() == case.loser
    (record,) = case.restores()

    again = invoke(case.config, "--restore", case.entry.id)
    assert again.exit_code == 0, again.output
    assert again.stdout == (
        f"already restored: the item at eu (eu-west-1/{case.table}) already holds this "
        f"entry's losing image, restored by entry {record.id} at {record.recorded_at}; "
        "nothing was written\n"
    )
    assert case.held() == case.loser
    assert len(case.restores()) == 1


UNWRITTEN = "replicator: the report could not be written to stdout: [Errno 32] Broken pipe"


def test_a_restore_whose_line_cannot_be_written_says_it_on_stderr_and_exits_as_restored(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """With stdout a pipe whose reader had gone (``| true``), a restore that was made
    exited 1 without a word (click's own handling of a closed pipe), as if not restored;
    a listing too."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    restore = ("conflicts", "-c", str(case.config), "--restore", case.entry.id)
    done = replicator_into_a_pipe_nobody_reads(*restore)
    assert done.returncode == 0, done.stderr
    assert case.held() == case.loser
    (record,) = case.restores()
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{UNWRITTEN}; it said: restored"), done.stderr
    assert "Traceback" not in done.stderr

    again = replicator_into_a_pipe_nobody_reads(*restore)
    assert again.returncode == 0, again.stderr
    assert f"{UNWRITTEN}; it said: already restored" in again.stderr
    assert f"restored by entry {record.id}" in again.stderr
    assert len(case.restores()) == 1

    listing = replicator_into_a_pipe_nobody_reads("conflicts", "-c", str(case.config))
    assert listing.returncode == 1, listing.stderr
    assert listing.stderr.strip().splitlines()[-1] == UNWRITTEN, listing.stderr


def test_a_stop_between_the_reading_and_the_write_writes_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file log is read in milliseconds, so a Ctrl-C during a restore lands between
    its reading and its write more often than not: the restore was written and exit 0.
    It is stopped there, nothing written and nothing recorded."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    target = FileConflictLog(case.log.path)
    planned = restore_module.restored_image

    def stop_signal_now(*args: Any) -> Any:
        target.stopping.set()  # as the command's first stop signal does
        return planned(*args)

    monkeypatch.setattr(restore_module, "restored_image", stop_signal_now)
    with pytest.raises(LogReadingStopped, match="not restored: stopped before its write"):
        restore_module.restore(load_job(case.config), target, case.entry.id)
    assert case.held() == case.winner
    assert case.restores() == []


def test_an_entry_id_given_in_capitals_or_with_spaces_names_the_same_entry(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Ids are lower-case hexadecimal; one typed in capitals, or pasted with spaces around
    it, is the same id: the restore writes that entry's loser, and the full id in capitals
    finds it restored."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    first = invoke(case.config, "--restore", f" {case.entry.id[:8].upper()} ")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(f"restored entry {case.entry.id}: "), first.stdout
    assert case.held() == case.loser

    again = invoke(case.config, "--restore", case.entry.id.upper())
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("already restored: "), again.stdout
    assert len(case.restores()) == 1


def test_a_restore_whose_record_is_refused_says_it_was_not_recorded(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination takes the losing image, the log refuses the restore's record:
    the message names no entry that the log does not hold, and the exit is 1."""
    case = Restorable(moto_endpoint, unique, tmp_path)

    def refused(log: FileConflictLog, entry: ConflictEntry) -> None:
        raise ConflictLogRejected(f"cannot append to conflict log {log.path}: refused")

    monkeypatch.setattr(FileConflictLog, "put", refused)
    result = invoke(case.config, "--restore", case.entry.id)

    assert result.exit_code == 1, result.output
    assert case.held() == case.loser
    assert result.stdout == (
        f"restored entry {case.entry.id}: put of pk=S:order-1 sk=N:3 at eu "
        f"(eu-west-1/{case.table}) (only while the destination holds the image that won); "
        "but the restore could not be recorded: "
        f"cannot append to conflict log {case.log.path}: refused\n"
    )
    monkeypatch.undo()
    assert case.restores() == []


def test_a_forced_restore_is_listed_with_a_winner_not_read(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """--force replaces the item without reading it: its record says "not read", not
    "no item" (which would say that nothing was there)."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    forced = invoke(case.config, "--restore", case.entry.id, "--force")
    assert forced.exit_code == 0, forced.output
    assert case.held() == case.loser
    (record,) = case.restores()
    assert record.winning_image is None

    listing = invoke(case.config)
    assert listing.exit_code == 0, listing.output
    header, *rows = [line for line in listing.stdout.splitlines() if line.startswith("  ")][-3:]
    columns = header.index("WINNER"), header.index("NOTE")
    (row,) = [row for row in rows if row.startswith(f"  {record.id}")]
    assert row[columns[0] : columns[1]].strip() == "not read"


def test_a_losing_image_that_got_there_without_a_recorded_restore_is_said_so(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    case = Restorable(moto_endpoint, unique, tmp_path)
    case.ddb.put_item(TableName=case.table, Item=case.loser)
    result = invoke(case.config, "--restore", case.entry.id)
    assert result.exit_code == 1, result.output
    assert "already holds this entry's losing image, but no restore of it is recorded" in (
        result.stdout
    )
    assert case.restores() == []


def test_a_restore_run_at_the_same_time_is_found_in_the_log_not_said_missing(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two restores of one entry at once: the other one writes the losing image and
    records it after this one read the log. This one finds the image there, reads the
    log again, and reports the other's record (exit 0), not "no restore is recorded"."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    real_read = restore_module.read_task_entries
    reads: list[int] = []

    def read_then_other_restore(*args: Any, **kwargs: Any) -> Any:
        read = real_read(*args, **kwargs)
        reads.append(len(read[0]))
        if len(reads) == 1:  # the other command runs whole after this first read
            resolved = load_job(case.config)
            other = restore_module.restore(resolved, conflict_log_target(resolved), case.entry.id)
            assert other.restored, other.message
        return read

    monkeypatch.setattr(restore_module, "read_task_entries", read_then_other_restore)
    result = invoke(case.config, "--restore", case.entry.id)

    assert result.exit_code == 0, result.output
    (record,) = case.restores()
    assert result.stdout == (
        f"already restored: the item at eu (eu-west-1/{case.table}) already holds this "
        f"entry's losing image, restored by entry {record.id} at {record.recorded_at}; "
        "nothing was written\n"
    )
    assert case.held() == case.loser


def test_an_entry_whose_loser_is_its_winner_is_not_written_again(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries a custom resolver recorded before an image the destination held was
    ``unchanged`` under it: the losing image is the winning one. The item holds it, so
    the restore writes nothing and, with no restore of it in the log, exits 1; it
    neither writes the image again nor records a restore."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    same = replace(case.entry, losing_image=case.entry.winning_image)
    case.log.path.unlink()
    case.log.put(same)
    sent: list[str] = []
    real_send = DestinationWriter._send

    def counted(writer: DestinationWriter, request: Any) -> Any:
        sent.append(request.op)
        return real_send(writer, request)

    monkeypatch.setattr(DestinationWriter, "_send", counted)
    result = invoke(case.config, "--restore", same.id)

    assert result.exit_code == 1, result.output
    assert "already holds this entry's losing image, but no restore of it is recorded" in (
        result.stdout
    )
    assert sent == []
    assert case.held() == case.winner
    assert case.restores() == []


def test_the_write_stays_conditional_for_a_change_between_the_read_and_the_write(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read finds the winner; before the write, the item's timestamp changes. The
    condition on the winner's attributes stops the write."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    real_read = DestinationWriter._read
    changed: list[Any] = []

    def read_then_someone_writes(writer: DestinationWriter, change: Any) -> Any:
        item = real_read(writer, change)
        if not changed:
            case.ddb.update_item(
                TableName=case.table,
                Key=case.key,
                UpdateExpression="SET updated_at = :t",
                ExpressionAttributeValues={":t": {"N": "300"}},
            )
            changed.append(case.held())
        return item

    monkeypatch.setattr(DestinationWriter, "_read", read_then_someone_writes)
    result = invoke(case.config, "--restore", case.entry.id)
    assert result.exit_code == 1, result.output
    assert "changed since" in result.stdout
    assert case.held() == changed[0]


def test_an_item_that_keeps_changing_under_the_restore_is_said_so_naming_no_custom_rule(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read shows the winner and the item changes before each write: the restore
    gives up after the writer's limit of failed conditions, writes nothing, and says
    why in the restore's terms (the job's rule is last_writer_wins, not custom)."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    writes: list[int] = []

    def read_then_someone_writes(writer: DestinationWriter, change: Any) -> Any:
        writes.append(300 + len(writes))
        case.ddb.update_item(
            TableName=case.table,
            Key=case.key,
            UpdateExpression="SET updated_at = :t",
            ExpressionAttributeValues={":t": {"N": str(writes[-1])}},
        )
        return case.winner

    monkeypatch.setattr(DestinationWriter, "_read", read_then_someone_writes)
    result = invoke(case.config, "--restore", case.entry.id)
    assert result.exit_code == 1, result.output
    assert result.stdout == (
        f"not restored: the item at eu (eu-west-1/{case.table}) kept changing while the "
        "restore checked it against "
        "the image that won: the item changed between read and write 10 times in a row "
        "(rule: restore); nothing was written\n"
    )
    assert len(writes) == 10
    assert case.held() == {**case.winner, "updated_at": {"N": str(writes[-1])}}
    assert case.restores() == []


def with_truncated_winner(case: Restorable, *, digest: bool = True) -> ConflictEntry:
    """The case's entry as a log too small for its winner stores it: its summary."""
    winner = case.entry.winning_image
    assert winner is not None
    summary: dict[str, Any] = {"bytes": 1, "attributes": sorted(winner)}
    if digest:
        summary["sha256"] = image_digest(winner)
    entry = replace(case.entry, winning_image=None, truncated={"winning": summary})
    case.log.path.unlink()
    case.log.put(entry)
    return entry


def test_a_truncated_winner_still_held_is_restored_by_its_digest(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The review's case (a 390 KB winner): the item is unchanged, so its sha256 is the
    recorded one, and the losing image is restored; not refused as "changed since"."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    entry = with_truncated_winner(case)

    result = invoke(case.config, "--restore", entry.id)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"restored entry {entry.id}")
    assert case.held() == case.loser
    assert len(case.restores()) == 1
    listing = invoke(case.config)
    assert "truncated: winning" in listing.stdout and "no item" not in listing.stdout


@pytest.mark.parametrize("since", ["deleted", "updated"])
def test_a_truncated_winner_that_changed_since_is_not_overwritten(
    moto_endpoint: str, unique: Any, tmp_path: Path, since: str
) -> None:
    """Deleted since, the item is not "no item won": nothing is written over the delete
    (nor over an update)."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    entry = with_truncated_winner(case)
    if since == "deleted":
        case.ddb.delete_item(TableName=case.table, Key=case.key)
    else:
        case.ddb.update_item(
            TableName=case.table,
            Key=case.key,
            UpdateExpression="SET shipped = :v",
            ExpressionAttributeValues={":v": {"BOOL": True}},
        )
    before = case.held()

    result = invoke(case.config, "--restore", entry.id)

    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert "not restored" in result.stdout and "changed since" in result.stdout
    assert "compared with the sha256 of the image that won" in result.stdout
    assert case.held() == before
    assert case.restores() == []


def test_a_truncated_winner_without_its_digest_is_restored_only_with_force(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    case = Restorable(moto_endpoint, unique, tmp_path)
    entry = with_truncated_winner(case, digest=False)

    result = invoke(case.config, "--restore", entry.id)

    no_traceback(result)
    assert result.exit_code == 1, result.output
    message = " ".join(result.stderr.split())
    assert f"entry {entry.id}: the image that won was too large for the conflict log" in message
    assert "nothing was written" in message and "--force" in message
    assert case.held() == case.winner
    assert case.restores() == []
    forced = invoke(case.config, "--restore", entry.id, "--force")
    assert forced.exit_code == 0, forced.output
    assert case.held() == case.loser
    assert len(case.restores()) == 1


def finished_within(seconds: float, function: Callable[[], Any]) -> Any:
    """Run ``function`` on a daemon thread; fail if it has not returned in ``seconds``
    (a command that never ends must fail the test, not hang the suite)."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(function()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    return outcome[0]


def test_a_restore_to_a_destination_that_does_not_answer_ends_with_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
        case = Restorable(moto_endpoint, unique, tmp_path)
        config = tmp_path / "unreachable.yaml"
        text = case.config.read_text()
        head, _, tail = text.partition("destinations:\n")
        config.write_text(head + "destinations:\n" + tail.replace(moto_endpoint, nowhere, 1))
        monkeypatch.setattr(restore_module, "RETRY_FOR_S", 0.5)

        result = finished_within(60, lambda: invoke(config, "--restore", case.entry.id))
    no_traceback(result)
    assert result.exit_code == 3, result.output
    # Retries are logged as they happen (JSON lines); the outcome is one line.
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith(
        f"replicator: entry {case.entry.id} not restored at {nowhere} (eu-west-1): "
        f"destination eu (eu-west-1/{case.table}) "
    )
    assert "did not take the write in 0.5 s" in line
    assert "last error: EndpointConnectionError" in line and nowhere in line
    assert line.endswith("nothing was written")
    assert case.held() == case.winner


# -- an SQS log with a redrive policy -----------------------------------------------------------


def queue_with_redrive(sqs: Any, unique: Any, max_receives: int) -> tuple[str, str]:
    """A queue whose redrive policy moves a message to a new dead-letter queue after
    ``max_receives`` receives: its URL and the dead-letter queue's name."""
    dead_letters = unique("conflicts-dlq")
    dlq_url = sqs.create_queue(QueueName=dead_letters)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": attributes["Attributes"]["QueueArn"]}
    policy["maxReceiveCount"] = max_receives
    url = sqs.create_queue(
        QueueName=unique("conflicts"), Attributes={"RedrivePolicy": json.dumps(policy)}
    )["QueueUrl"]
    return url, dead_letters


def test_listing_an_sqs_log_with_a_redrive_policy_warns_that_listings_move_its_entries(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url, dead_letters = queue_with_redrive(sqs, unique, 2)
    plain = sqs.create_queue(QueueName=unique("conflicts-plain"))["QueueUrl"]
    first, last = two_entries()
    for queue in (url, plain):
        SqsConflictLog(sqs, queue).put(first)
        SqsConflictLog(sqs, queue).put(last)

    def listing(queue: str) -> Result:
        config = job_file(
            tmp_path, f"{{kind: sqs, queue_url: '{queue}', endpoint_url: '{moto_endpoint}'}}"
        )
        return invoke(config, "--format", "json")

    warned = listing(url)
    assert listed_ids(warned) == sorted([first.id, last.id])
    (line,) = [line for line in warned.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith(f"replicator: warning: the conflict log's queue {url} has a redrive")
    assert f"after 2 receives SQS moves an entry to the dead-letter queue {dead_letters}" in line
    # What it warns about: the second listing was the last.
    assert listed_ids(listing(url)) == sorted([first.id, last.id])
    assert listed_ids(listing(url)) == []

    quiet = listing(plain)
    assert listed_ids(quiet) == sorted([first.id, last.id])
    assert "warning" not in quiet.stderr


def test_a_run_warns_about_a_conflict_log_queue_with_a_redrive_policy(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    from replicator.config.loader import load_job
    from replicator.conflictlog.targets import prepare

    sqs = client("sqs", "us-east-1", moto_endpoint)
    url, dead_letters = queue_with_redrive(sqs, unique, 5)
    config = job_file(
        tmp_path, f"{{kind: sqs, queue_url: '{url}', endpoint_url: '{moto_endpoint}'}}"
    )
    with structlog.testing.capture_logs() as logs:
        prepare(load_job(config))
    (warning,) = [line["event"] for line in logs if line["log_level"] == "warning"]
    assert f"after 5 receives SQS moves an entry to the dead-letter queue {dead_letters}" in warning


# -- small things ------------------------------------------------------------------------------


def test_a_missing_conflict_log_table_is_said_to_hold_nothing_yet_naming_it(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A DynamoDB log whose table ``replicator run`` has not created yet is what a log file
    that does not exist is: no entries yet (exit 0), said under the header with the
    table and where it was looked for, and no entry to restore (exit 1, same words)."""
    table = unique("missing")
    config = job_file(
        tmp_path, f"{{kind: dynamodb, table: {table}, endpoint_url: '{moto_endpoint}'}}"
    )
    missing = (
        f"no conflict-log table {table} at {moto_endpoint} (us-east-1) (yet): nothing has "
        "been recorded there; replicator run creates it at start"
    )

    listing = invoke(config)
    no_traceback(listing)
    assert listing.exit_code == 0, listing.output
    assert listing.stdout.splitlines() == [
        f"conflict log: DynamoDB table {table} ({moto_endpoint} (us-east-1)): "
        "0 lost conflicts, 0 restores",
        f"  {missing}",
    ]
    document = json.loads(invoke(config, "--format", "json").stdout)
    assert document["missing"] == missing and document["entries"] == []

    restore = invoke(config, "--restore", "0123abcd")
    no_traceback(restore)
    assert restore.exit_code == 1, restore.output
    assert restore.stderr == (
        f"replicator: no conflict-log entry '0123abcd' in DynamoDB table {table} "
        f"({moto_endpoint} (us-east-1)): {missing}\n"
    )
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    assert table not in ddb.list_tables()["TableNames"]


@pytest.mark.parametrize("args", [(), ("--restore", "0123abcd")])
def test_a_conflict_log_table_with_other_keys_is_refused_as_run_refuses_it(
    moto_endpoint: str, unique: Any, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """An application's table named as the log is not an empty log: the command stops
    with exit 3 and the line ``replicator run`` stops with."""
    from replicator.config.loader import load_job
    from replicator.conflictlog.targets import prepare
    from replicator.exceptions import EnvironmentProblem

    table = unique("application")
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    create_table(ddb, table, range_key="sk", stream=None)
    ddb.put_item(TableName=table, Item={"pk": {"S": "order-1"}, "sk": {"N": "1"}})
    config = job_file(
        tmp_path, f"{{kind: dynamodb, table: {table}, endpoint_url: '{moto_endpoint}'}}"
    )
    with pytest.raises(EnvironmentProblem) as refused_by_run:
        prepare(load_job(config))

    result = invoke(config, *args)

    no_traceback(result)
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == f"replicator: {refused_by_run.value}"
    assert "exists with key schema pk (HASH, S), sk (RANGE, N)" in line


@pytest.mark.parametrize(
    "given",
    [
        ("--destination", "eu-west-1/orders"),
        ("--since", "1h"),
        ("--limit", "5"),
        ("--format", "json"),
        ("--format", "table", "--limit", "50"),
    ],
)
def test_listing_options_are_refused_with_restore(tmp_path: Path, given: tuple[str, ...]) -> None:
    config = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}/c.jsonl'}}")
    result = invoke(config, "--restore", "0123abcd", *given)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    flags = ", ".join(arg for arg in given if arg.startswith("--"))
    assert f"Error: {flags} " in result.stderr
    assert "for listing, not for --restore" in result.stderr
    # Alone, the same options list the log.
    assert invoke(config, *given).exit_code == 0


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_destination_is_refused_as_wait_refuses_it(tmp_path: Path, value: str) -> None:
    """``--destination ""`` names no destination, now or once: it was warned about and
    listed as a filter that matched nothing, under a header that read as an empty log."""
    log = FileConflictLog(tmp_path / "c.jsonl")
    log.put(replace(conflict(1).entry(), destination="eu-west-1/orders"))
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")
    result = invoke(config, "--destination", value)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert f"--destination {value!r}: no destination of {config} has an empty name" in " ".join(
        result.stderr.split()
    ), result.stderr
    assert "its destinations: eu-west-1/orders" in result.stderr
    assert result.stdout == ""


def test_the_header_of_a_narrowed_listing_names_every_filter(tmp_path: Path) -> None:
    """Every filter given is named in the header, an empty one too (quoted): a count of
    the entries it selected must not read as a count of the whole log."""
    log = FileConflictLog(tmp_path / "c.jsonl")
    log.put(replace(conflict(1).entry(), destination="eu-west-1/orders"))
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")
    narrowed = invoke(config, "--destination", "orders", "--since", "2000-01-01")
    assert narrowed.exit_code == 0, narrowed.output
    assert (
        "(since 2000-01-01T00:00:00.000000Z, destination eu-west-1/orders): 1 lost conflict"
        in narrowed.stdout
    ), narrowed.stdout
    everything = Listing(log.description, Selection(), [], {})
    assert f"conflict log: {log.description}: 0 lost conflicts" in everything.text(50)
    nothing = Listing(log.description, Selection(item="", since="", destination=""), [], {})
    header = nothing.text(50).splitlines()[0]
    assert "(item '', since '', destination ''): 0 lost conflicts" in header, header


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("2026-12-01t17:00:00Z", "; write T and Z in capitals: '2026-12-01T17:00:00Z'"),
        ("2026-12-01T17:00:00z", "; write T and Z in capitals: '2026-12-01T17:00:00Z'"),
        ("2026-12-01x17:00:00Z", "; separate the date and the time with a capital T"),
        ("2026-12-01 17:00:00Z", "; separate the date and the time with a capital T"),
        ("20261201T170000Z", ""),  # ISO 8601's basic format
        ("2026-W49-2", ""),  # a week date
        ("2026-12-01T17", ""),  # an hour alone
        ("2026-12-01T17:00:00,5Z", ""),
        ("2026-12-01T17:00:00+0100", ""),
        ("2026-13-01", "; month must be in 1..12"),
        (
            "2026-12-01T17:00+25:00",
            "; the zone offset +25:00 is not one: hours 00-23, minutes 00-59",
        ),
        (
            "2026-12-01T17:00-05:60",
            "; the zone offset -05:60 is not one: hours 00-23, minutes 00-59",
        ),
        ("\u0662\u0660\u0662\u0666-12-01", ""),  # digits of another script
        ("\u0663\u0660m", ""),  # a duration in digits of another script
    ],
)
def test_since_takes_only_the_iso_times_the_docs_name(
    tmp_path: Path, value: str, hint: str
) -> None:
    """Python 3.11's fromisoformat also took these (any character between date and time)."""
    config = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}/c.jsonl'}}")
    result = invoke(config, "--since", value)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert (
        f"'--since': {value!r} is neither a duration (30m, 12h, 7d), epoch seconds (such as "
        "1796527700.25) nor an ISO-8601 date or time (YYYY-MM-DD, or "
        "YYYY-MM-DDThh:mm[:ss[.fraction]] with an optional Z, +hh:mm or -hh:mm, such as "
        f"2026-12-01 or 2026-12-01T10:00:00Z){hint}" in said
    ), said


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-01",
        "2026-12-01T17:00",
        "2026-12-01T17:00:00.5Z",
        "2026-12-01T19:00+02:00",
        "1796527700",  # epoch seconds, as replicator watermark prints them
        "1796527700.25",
    ],
)
def test_since_takes_a_date_or_a_time_with_or_without_a_zone(tmp_path: Path, value: str) -> None:
    config = job_file(tmp_path, f"{{kind: file, path: '{tmp_path}/c.jsonl'}}")
    result = invoke(config, "--since", value, "--format", "json")
    assert result.exit_code == 0, result.output


# -- the queue's own message limit -------------------------------------------------------------


def entry_with_name(seq: int, name: str) -> ConflictEntry:
    """A lost conflict whose losing image holds ``name``; the winner is small."""
    entry = conflict(seq, pk=f"order-{seq}").entry()
    assert entry.losing_image is not None and entry.winning_image is not None
    keys = ("pk", "sk", "updated_at")
    losing = {k: entry.losing_image[k] for k in keys} | {"name": {"S": name}}
    return replace(
        entry, losing_image=losing, winning_image={k: entry.winning_image[k] for k in keys}
    )


def sqs_log(
    moto_endpoint: str, unique: Any, tmp_path: Path, limit: int
) -> tuple[Any, str, SqsConflictLog, Path]:
    """A queue taking messages up to ``limit`` bytes, and the job's target for it."""
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(
        QueueName=unique("conflicts"), Attributes={"MaximumMessageSize": str(limit)}
    )["QueueUrl"]
    config = job_file(
        tmp_path, f"{{kind: sqs, queue_url: '{url}', endpoint_url: '{moto_endpoint}'}}"
    )
    target = conflict_log_target(load_job(config))
    assert isinstance(target, SqsConflictLog)
    return sqs, url, target, config


def bodies(sqs: Any, url: str) -> list[str]:
    """The queue's messages, made visible again at once."""
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [message["Body"] for message in found.get("Messages", [])]


def test_an_sqs_log_fits_entries_to_a_small_queues_maximum_message_size(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A queue taking 1 KiB (the smallest SQS allows; moto refuses larger messages as SQS
    does): an entry that compresses is sent compressed and listed whole; one that does
    not has its large losing image stored as its sha256, and is listed all the same."""
    sqs, url, target, config = sqs_log(moto_endpoint, unique, tmp_path, 1024)
    compressible = entry_with_name(1, "z" * 3000)
    incompressible = entry_with_name(2, random.Random(2).randbytes(3000).hex())
    assert len(compressible.to_json()) > 1024 and len(incompressible.to_json()) > 1024

    target.put(compressible)
    target.put(incompressible)

    assert target.limit.bytes() == 1024
    sent = bodies(sqs, url)
    assert len(sent) == 2 and all(len(body.encode()) <= 1024 for body in sent)
    assert all(set(json.loads(body)) == {"entry_gzip_b64"} for body in sent)
    listing = invoke(config, "--format", "json")
    assert listing.exit_code == 0, listing.output
    listed = {entry["id"]: entry for entry in json.loads(listing.stdout)["entries"]}
    assert set(listed) == {compressible.id, incompressible.id}
    whole = listed[compressible.id]
    assert (whole["losing_image"], whole["truncated"]) == (compressible.losing_image, {})
    hashed = listed[incompressible.id]
    assert hashed["losing_image"] is None
    assert set(hashed["truncated"]) == {"losing"}  # the winner's small image is kept
    assert hashed["truncated"]["losing"]["sha256"] == image_digest(
        incompressible.losing_image or {}
    )
    assert hashed["winning_image"] == incompressible.winning_image


def test_an_sqs_log_sends_entries_as_they_are_up_to_a_large_queues_limit(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A 1 MiB queue (SQS's default since 2025) takes a 300 KB entry as it is: no
    needless compression for its consumers to undo."""
    sqs, url, target, config = sqs_log(moto_endpoint, unique, tmp_path, 1024 * 1024)
    large = entry_with_name(3, "z" * 300_000)
    assert len(large.to_json()) > 256 * 1024

    target.put(large)

    assert bodies(sqs, url) == [large.to_json()]
    assert listed_ids(invoke(config, "--format", "json")) == [large.id]


def test_an_entry_that_fits_no_queue_limit_is_refused_naming_it(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The metadata alone, compressed, does not fit a 1 KiB queue (a long explanation):
    refused as final (not retried), naming the queue's limit and what to do."""
    target = sqs_log(moto_endpoint, unique, tmp_path, 1024)[2]
    entry = replace(entry_with_name(4, ""), why=random.Random(4).randbytes(2000).hex())

    with pytest.raises(
        ConflictLogRejected, match="larger than the queue's MaximumMessageSize, 1024"
    ):
        target.put(entry)


def test_a_delete_that_won_is_listed_as_a_delete(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A put that lost to a recorded delete (a tombstone) ranks against the deleted image:
    shown as a rank alone, the row would read as a put that lost to its own image."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    assert case.entry.winning_rank is not None
    tombstone_rank = {**case.entry.winning_rank, "delete": True, "deleted_in": "us-east-1"}
    entry = replace(case.entry, winning_image=None, winning_rank=tombstone_rank)
    case.log.path.unlink()
    case.log.put(entry)

    listing = invoke(case.config)

    assert listing.exit_code == 0, listing.output
    header, *rows = [line for line in listing.stdout.splitlines() if line.startswith("  ")][-2:]
    columns = header.index("WINNER"), header.index("NOTE")
    (row,) = [row for row in rows if row.startswith(f"  {entry.id}")]
    winner = row[columns[0] : columns[1]].strip()
    assert winner.startswith("delete in us-east-1 of updated_at="), winner


LOOKS_LIKE_A_CREDENTIAL = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
"""The data of the listing test: the process's own secret key, as a value of an item."""


def items_that_look_like_credentials() -> tuple[dict[str, Any], dict[str, Any]]:
    """A key and an image (DynamoDB JSON) of a sessions table: data, however much it
    looks like a credential, is printed exactly."""
    key = {"pk": {"S": "ssh://git@github.com/acme/app.git"}, "sk": {"S": "session"}}
    image = key | {
        "sessionToken": {"S": "tok-abc"},
        "SecretAccessKey": {"M": {"aws_session_token": {"S": "x=1"}}},
        "copy": {"S": LOOKS_LIKE_A_CREDENTIAL},
        "updated_at": {"N": "100"},
    }
    return key, image


def test_the_listing_prints_keys_and_images_exactly_however_they_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator compares an entry's images with the item before a --force and pastes
    its key into --key: redacting them as if they were error text broke both (and the
    JSON, whose nested value lost its brace)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", LOOKS_LIKE_A_CREDENTIAL)
    path = tmp_path / "conflicts.jsonl"
    config = job_file(tmp_path, f"{{kind: file, path: '{path}'}}")
    key, image = items_that_look_like_credentials()
    base = conflict(5).entry()
    entry = replace(
        base,
        key=key,
        item=canonical_key(item_from_wire(key)),
        losing_image=image,
        winning_image=image | {"updated_at": {"N": "200"}},
    )
    FileConflictLog(path).put(entry)

    listing = invoke(config, "--format", "json")

    assert listing.exit_code == 0, listing.output
    (shown,) = json.loads(listing.stdout)["entries"]
    assert (shown["key"], shown["losing_image"]) == (key, image)
    assert shown["winning_image"] == entry.winning_image
    table = invoke(config)
    assert table.exit_code == 0, table.output
    assert describe_key(item_from_wire(key)) in table.stdout
    assert "<redacted>" not in table.stdout


def test_the_header_of_a_listing_by_key_shows_the_key_as_given(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """It showed the log's canonical form, ``(item [["pk","S","order-1"],["sk","N","3"]])``,
    not the form --key takes and the KEY column shows."""
    source = unique("orders")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), source, range_key="sk")
    path = tmp_path / "conflicts.jsonl"
    config = moto_job(tmp_path, moto_endpoint, source, "unused", f"{{kind: file, path: '{path}'}}")
    FileConflictLog(path).put(conflict(5).entry())
    listing = invoke(config, "--key", "pk=S:order-1 sk=N:3.0")
    assert listing.exit_code == 0, listing.output
    header = listing.stdout.splitlines()[0]
    assert "(key pk=S:order-1 sk=N:3): 1 lost conflict" in header, header
    assert "pk=S:order-1 sk=N:3" in listing.stdout.splitlines()[-1]


def test_a_conflict_log_queue_that_does_not_exist_is_one_line_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A warning that the redrive policy could not be read came first, then the line
    that says why: the queue names none."""
    queue = f"{moto_endpoint}/123456789012/{unique('no-such-queue')}"
    config = job_file(
        tmp_path, f"{{kind: sqs, queue_url: '{queue}', endpoint_url: '{moto_endpoint}'}}"
    )
    result = invoke(config)
    no_traceback(result)
    assert result.exit_code == 3, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("replicator: ") and queue in line, line
    assert "warning" not in line


def test_a_restore_is_recorded_whatever_the_read_of_the_source_meets(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a job with loop prevention the restore reads the source's item to say whether
    the regions differ. That read came before the record: a source client that could not
    be made (credentials not loaded) ended the command with exit 3, the image written
    and no restore recorded. It is read after, and only informs the line."""
    from replicator.aws import clients
    from replicator.exceptions import EnvironmentProblem

    case = Restorable(moto_endpoint, unique, tmp_path)
    case.config.write_text(
        case.config.read_text() + "loop_prevention: {origin_attribute: origin}\n"
    )
    made = clients.dynamodb

    def source_unreachable(place: Any, **tuning: Any) -> Any:
        if getattr(place, "table", None) == "unused":  # the job's source
            raise EnvironmentProblem("credentials could not be loaded (a test's)")
        return made(place, **tuning)

    monkeypatch.setattr(clients, "dynamodb", source_unreachable)
    result = invoke(case.config, "--restore", case.entry.id)

    assert result.exit_code == 0, result.output
    assert case.held() is not None
    (record,) = case.restores()
    assert f"recorded as entry {record.id}" in result.stdout
    assert "could not be read to compare (credentials could not be loaded" in result.stdout
