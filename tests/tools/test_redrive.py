"""``replicator redrive`` against a moto server over HTTP: fixed letters are applied and
leave the target, failing ones stay with one more attempt (file and SQS targets)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from replicator.appendfile import unwritable_hint
from replicator.config.loader import load_job
from replicator.conflictlog.dynamodb import DynamoDbConflictLog
from replicator.deadletter import ALL_DESTINATIONS, DeadLetter, FileDeadLetters, SqsDeadLetters
from replicator.exceptions import ConflictLogRejected, EnvironmentProblem
from replicator.items import Item, describe_key, item_to_wire
from replicator.records import RawRecord
from replicator.runtime.preflight import check_dead_letter_file
from replicator.tools import redrive as redrive_module
from replicator.tools import snapshot
from replicator.tools.futures import INTERRUPT_GRACE_S
from replicator.tools.redrive import Redrive, RedriveReport
from replicator.tools.snapshot import BACKFILL, REPAIR, synthetic_change
from tests.support.aws import client, create_table
from tests.support.cli import in_process, replicator
from tests.support.deadletters import malformed
from tests.support.e2e import PATIENCE, Job, binary_key_job, stop, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.records import daemon_record, stream_record
from tests.support.reliability import with_email_index
from tests.support.tools import run_within

LWW = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}"


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("redrive"), tmp_path)


def image(pk: str, updated_at: Any = 100, **extra: str) -> Item:
    stamp = updated_at if isinstance(updated_at, dict) else {"N": str(updated_at)}
    found: Item = {"pk": {"S": pk}, "sk": {"N": "1"}, "updated_at": stamp}
    found.update({name: {"S": value} for name, value in extra.items()})
    return found


def keys_of(item: Item) -> Item:
    return {"pk": item["pk"], "sk": item["sk"]}


def stream_letter(
    job: Job,
    destination: str,
    item: Item,
    seq: int,
    reason: str,
    error: str,
    *,
    at_source: bool = True,
) -> DeadLetter:
    """The letter of a stream change putting ``item``; the source holds ``item`` (as it
    does until a later change: a redrive checks a replayed put against the source)
    unless ``at_source`` is false."""
    if at_source:
        job.source.put_item(TableName=job.source_table, Item=item)
    record = daemon_record(stream_record("MODIFY", keys_of(item), item_to_wire(item), seq=seq), seq)
    return _letter(job, destination, record, reason, error, keys_of(item))


def _letter(
    job: Job,
    destination: str,
    record: RawRecord,
    reason: str,
    error: str,
    keys: Item | None,
    event: str | None = "MODIFY",
) -> DeadLetter:
    """A letter; ``event`` None as the replicator writes one for a record that does not
    decode (it names no event)."""
    return DeadLetter(
        record=record,
        destination=destination,
        reason=reason,
        error=error,
        task_name=job.name,
        shard_id="shardId-1",
        event=event,
        keys=item_to_wire(keys) if keys else None,
    )


def get(job: Job, number: int, item: Item) -> Item | None:
    ddb, table = job.destination_clients()[number]
    found: Item | None = ddb.get_item(TableName=table, Key=keys_of(item), ConsistentRead=True).get(
        "Item"
    )
    return found


def replayed_at_eu_only(job: Job, note: str, item: Item) -> None:
    """Redrive the job's one letter, for eu: replayed with ``note``, eu left holding
    ``item``, ap untouched, the target empty."""
    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert "1 letter, 1 replayed, 0 failed again" in result.stdout
    assert note in result.stdout
    if "changed it since" in note:
        (line,) = logged(
            result.stderr, "the source holds a replayed item changed since; its image was written"
        )
        assert line["key"] == describe_key(keys_of(item))
    assert get(job, 0, item) == item
    assert get(job, 1, item) is None
    assert FileDeadLetters(job.dead_letters).count() == 0


def logged(stderr: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` in a command's stderr."""
    lines = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def redrive(job: Job | Path) -> subprocess.CompletedProcess[str]:
    """``replicator redrive`` of ``job`` (or of the job file at that path), in this
    process: each of these runs to its end by itself and is judged by its exit status,
    its output and what it left in the tables and the target, all of which the command's
    own code decides, so a process start per run would buy nothing.
    ``test_letters_whose_cause_is_fixed_are_applied_and_failing_ones_stay`` runs it as a
    process of its own, as a user does; the tests that stop, kill or race a redrive
    (:func:`started`, :func:`as_a_process`) do too."""
    path = job if isinstance(job, Path) else job.path
    return in_process("redrive", "--config", str(path))


def as_a_process(job: Job, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``replicator redrive`` of ``job`` in a process of its own."""
    return replicator("redrive", "--config", str(job.path), timeout=timeout)


def eu_through(job: Job, proxy: FaultProxy) -> None:
    """Point the job's eu destination at ``proxy`` (the source and ap stay as they are)."""
    job.path.write_text(
        job.path.read_text().replace(
            f"table: {job.name}-eu, endpoint_url: '{job.endpoint}'",
            f"table: {job.name}-eu, endpoint_url: '{proxy.url}'",
        )
    )


@contextmanager
def eu_throttled(job: Job) -> Iterator[FaultProxy]:
    """Every write to eu throttled, through a proxy: a redrive retries its first letter
    for eu until it is stopped."""
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.THROTTLE, operations=frozenset({"PutItem"})))
        eu_through(job, proxy)
        yield proxy
    finally:
        proxy.stop()


def retrying(proxy: FaultProxy) -> None:
    """Wait until the redrive retries a throttled write to eu."""
    wait_until(lambda: proxy.counts("PutItem")["throttled"] >= 2, 30, "retries")


def interrupted_while_retrying(
    job: Job, proxy: FaultProxy, meanwhile: Callable[[], None] = lambda: None
) -> RedriveReport:
    """A redrive in this process, stopped twice once it retries a letter for eu (and
    ``meanwhile`` has run, the redrive still retrying)."""
    runner = Redrive(load_job(job.path))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(runner.run)
        try:
            retrying(proxy)
            meanwhile()
            assert running.running()
        finally:
            runner.interrupt()
            runner.interrupt()  # the second: the letter in hand is given up too
        return running.result(timeout=30)


def started(job: Job, **streams: Any) -> subprocess.Popen[str]:
    """``replicator redrive`` for the job, in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "replicator", "redrive", "--config", str(job.path)],
        text=True,
        **streams,
    )


def eu_letters(job: Job, start: int) -> FileDeadLetters:
    """The job's file target holding three letters for eu, putting items a, b and c with
    sequence numbers from ``start`` (the source holds them)."""
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    for seq, name in enumerate("abc", start=start):
        target.put(stream_letter(job, eu_label, image(name), seq, "throttled", "e"))
    return target


def aside_file(job: Job) -> Path:
    """The one file a redrive renamed aside and left letters in."""
    (aside,) = [
        path
        for path in job.dead_letters.parent.glob(f"{job.dead_letters.name}.redrive-*")
        if not path.name.endswith(".settled")
    ]
    return aside


def test_letters_whose_cause_is_fixed_are_applied_and_failing_ones_stay(job: Job) -> None:
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    x = image("x", name="waited for its table")
    y = image("y", updated_at={"BOOL": True})  # last_writer_wins cannot order it, ever
    z = image("z", name="decodes now")
    target.put(
        stream_letter(job, eu_label, x, 11, "access_denied", "ResourceNotFoundException: gone")
    )
    target.put(stream_letter(job, eu_label, y, 12, "unplannable", "updated_at is of type BOOL"))
    garbage = daemon_record(b"\xff not base64 of json", 13)
    garbage["data"] = "%%%"
    target.put(_letter(job, ALL_DESTINATIONS, garbage, "undecodable", "not base64", None, None))
    job.source.put_item(TableName=job.source_table, Item=z)
    decodable = daemon_record(stream_record("MODIFY", keys_of(z), item_to_wire(z), seq=14), 14)
    target.put(_letter(job, ALL_DESTINATIONS, decodable, "undecodable", "an old bug", keys_of(z)))
    proxy = FaultProxy(job.endpoint).start()
    try:
        # The cause is not fixed yet: eu's writes are denied (its table can be described).
        proxy.set(Mode(Fault.DENY, operations=frozenset({"PutItem"})))
        eu_through(job, proxy)
        first = redrive(job)
    finally:
        proxy.stop()

    assert first.returncode == 3, first.stderr  # refused every write: exit 3, as documented
    assert "4 letters, 0 replayed, 4 failed again" in first.stdout
    assert get(job, 1, z) == z  # the * letter reached the destination that works
    ap_label = "/".join(job.destinations[1])
    z_lines = [line for line in first.stdout.splitlines() if "(sequence 14)" in line]
    assert z_lines[0] == f"  replayed      {ap_label}: MODIFY pk=S:z sk=N:1 (sequence 14)"
    assert z_lines[1].startswith(f"  failed again  {eu_label}: MODIFY pk=S:z sk=N:1 (sequence 14)")
    assert len(z_lines) == 2
    kept = {
        (letter.destination, letter.record["sequenceNumber"]): letter for letter in target.letters()
    }
    assert set(kept) == {(eu_label, "11"), (eu_label, "12"), ("*", "13"), (eu_label, "14")}
    assert all(letter.attempts == 2 and letter.redrive_run for letter in kept.values())
    assert kept[(eu_label, "11")].reason == "refused"
    assert "AccessDeniedException" in kept[(eu_label, "11")].error
    assert kept[(eu_label, "12")].reason == "unplannable"
    assert kept[("*", "13")].reason == "undecodable"
    assert "AccessDeniedException" in kept[(eu_label, "14")].error
    # The * letter's part for eu records eu's region and table, as replication's do, so
    # that it stays eu's if eu is given a name (a letter belongs to its region and table).
    eu_letter = kept[(eu_label, "14")]
    assert (eu_letter.region, eu_letter.table) == job.destinations[0]

    job.write()  # the cause is fixed
    second = as_a_process(job)  # end to end, as a user runs it

    assert second.returncode == 1
    assert "4 letters, 2 replayed, 2 failed again" in second.stdout
    # As docs/operator-tools.md shows it: a record that does not decode has no event.
    assert (
        "  failed again  *: ? (key unknown) (sequence 13): undecodable: record 13: data is "
        "not base64 of UTF-8 text (Non-base64 digit found)"
    ) in second.stdout.splitlines(), second.stdout
    assert get(job, 0, x) == x
    assert get(job, 0, z) == z
    left = sorted((letter.destination, letter.attempts) for letter in target.letters())
    assert left == [("*", 3), (eu_label, 3)]
    assert target.count() == 2


def test_a_letter_whose_record_does_not_decode_shows_its_own_fields_as_unchecked(
    job: Job,
) -> None:
    """A letter's ``event`` and ``keys`` are copies made to name its change; once its record
    no longer decodes (garbled by hand) they are all that names it, and nothing checks
    them: the line says the key is unknown and shows them marked so, never as the change."""
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    held = image("held", name="in the destination")
    ddb, table = job.destination_clients()[0]
    ddb.put_item(TableName=table, Item=held)
    garbled = daemon_record(b"{}", 21)
    garbled["data"] = "!!!notbase64"
    target.put(
        _letter(job, eu_label, garbled, "rejected", "an old failure", keys_of(held), "REMOVE")
    )

    result = redrive(job)

    assert result.returncode == 1, result.stderr
    assert (
        f"  failed again  {eu_label}: ? (key unknown) (sequence 21) (the letter's fields name "
        "REMOVE pk=S:held sk=N:1, unchecked: its record does not decode): undecodable: "
        "record 21: data is not base64 of UTF-8 text (Non-base64 digit found)"
    ) in result.stdout.splitlines(), result.stdout
    assert get(job, 0, held) == held  # nothing was deleted on the letter's word
    (kept,) = target.letters()
    assert (kept.reason, kept.attempts, kept.record["data"]) == ("undecodable", 2, "!!!notbase64")


def use_queue(job: Job, conflict: str = LWW) -> tuple[Any, str]:
    """Point the job's dead letters at a new SQS queue: its client and URL."""
    sqs = client("sqs", "us-east-1", job.endpoint)
    queue = sqs.create_queue(QueueName=f"{job.name}-dlq")["QueueUrl"]
    text = job.path.read_text().replace(LWW, conflict)
    text = text.replace(
        f"dead_letter: {{kind: file, path: '{job.dead_letters}'}}",
        f"dead_letter: {{kind: sqs, queue_url: '{queue}', endpoint_url: '{job.endpoint}'}}",
    )
    job.path.write_text(text)
    return sqs, queue


def test_an_aws_queue_url_of_another_region_is_read_in_the_queues_region(job: Job) -> None:
    """A dead-letter queue in eu-west-1 for a source in us-east-1, its AWS URL given
    without ``region``: the client was the source region's, and SQS, which answers about
    a queue only in its region, said the queue did not exist (exit 3). The requests
    reach the moto server through botocore's ``AWS_ENDPOINT_URL_SQS``."""
    sqs = client("sqs", "eu-west-1", job.endpoint)
    name = f"{job.name}-dlq"
    sqs.create_queue(QueueName=name)
    url = f"https://sqs.eu-west-1.amazonaws.com/123456789012/{name}"
    text = job.path.read_text()
    text = text.replace(
        f"dead_letter: {{kind: file, path: '{job.dead_letters}'}}",
        f"dead_letter: {{kind: sqs, queue_url: '{url}'}}",
    )
    job.path.write_text(text)
    u = image("u", name="fine")
    ap_label = "/".join(job.destinations[1])
    letter = stream_letter(job, ap_label, u, 22, "rejected", "a transient refusal")
    sqs.send_message(
        QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"], MessageBody=letter.to_json()
    )

    result = replicator("redrive", "-c", str(job.path), env={"AWS_ENDPOINT_URL_SQS": job.endpoint})

    assert result.returncode == 0, result.stdout + result.stderr
    (_, _), (ap, ap_table) = job.destination_clients()
    assert ap.get_item(TableName=ap_table, Key=keys_of(u), ConsistentRead=True)["Item"] == u
    explicit = text.replace(f"queue_url: '{url}'", f"queue_url: '{url}', region: us-east-1")
    job.path.write_text(explicit)
    refused = in_process("validate", "-c", str(job.path))
    assert refused.returncode == 2, refused.stderr
    assert (
        "dead_letter.region (line " in refused.stderr
        and "is us-east-1, but dead_letter.queue_url's queue is in eu-west-1" in refused.stderr
    ), refused.stderr


def append_raw(path: Path, line: bytes) -> None:
    with path.open("ab") as file:
        file.write(line + b"\n")


def warnings_in(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("level") == "warning"]


def test_sqs_letters_replay_with_the_safeguards_of_their_origin(job: Job) -> None:
    sqs, queue = use_queue(job, "conflict: {policy: overwrite}")
    eu_label, ap_label = (f"{region}/{table}" for region, table in job.destinations)
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    target = SqsDeadLetters(sqs, queue)
    # A backfill's copy of W, older than what the destination holds since: kept there.
    w_read, w_newer = image("w", 1, v="read"), image("w", 2, v="replicated since")
    eu.put_item(TableName=eu_table, Item=w_newer)
    copy = synthetic_change(BACKFILL, keys_of(w_read), "us-east-1", new_image=w_read, expected=None)
    target.put(_letter(job, eu_label, copy.raw, "rejected", "throttled too long", keys_of(w_read)))
    # A backfill's copy of V, which the source has deleted since: not brought back.
    v = image("v")
    copy = synthetic_change(BACKFILL, keys_of(v), "us-east-1", new_image=v, expected=None)
    target.put(_letter(job, ap_label, copy.raw, "rejected", "throttled too long", keys_of(v)))
    # A stream change the destination rejects for good (an empty string as its key; a
    # key of the wrong type would mean the table's key schema is not the source's).
    bad = {"pk": {"S": ""}, "sk": {"N": "1"}}
    target.put(
        stream_letter(job, eu_label, bad, 21, "rejected", "ValidationException", at_source=False)
    )
    # A stream change that simply applies now.
    u = image("u", name="fine")
    target.put(stream_letter(job, ap_label, u, 22, "rejected", "a transient refusal"))

    runner = Redrive(load_job(job.path))
    report = runner.run()

    assert (report.replayed, report.failed, report.exit_code) == (3, 1, 1)
    assert eu.get_item(TableName=eu_table, Key=keys_of(w_read))["Item"] == w_newer
    assert ap.get_item(TableName=ap_table, Key=keys_of(v), ConsistentRead=True).get("Item") is None
    assert ap.get_item(TableName=ap_table, Key=keys_of(u))["Item"] == u
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    (message,) = messages["Messages"]
    left = DeadLetter.from_json(message["Body"])
    assert left.record["sequenceNumber"] == "21"
    assert (left.attempts, left.redrive_run, left.reason) == (2, runner.run_id, "rejected")
    assert "ValidationException" in left.error


def copies_of_two_letters(job: Job) -> tuple[list[DeadLetter], Item]:
    """Two letters for eu, each stored twice (the second copy later, with another error
    text, as a run after a restart stores it): one that applies now (item ``x``, which
    it returns), one that never can (last_writer_wins cannot order a BOOL)."""
    eu_label = "/".join(job.destinations[0])
    x, y = image("x", name="fixed"), image("y", updated_at={"BOOL": True})
    fixed = stream_letter(job, eu_label, x, 11, "rejected", "before the restart")
    never = stream_letter(job, eu_label, y, 12, "unplannable", "updated_at is of type BOOL")
    later = {"error": "after the restart", "time": "2030-01-01T00:00:00.000+00:00"}
    return [fixed, never, replace(fixed, **later), replace(never, **later)], x


def eu_puts(proxy: FaultProxy) -> int:
    """PutItem requests eu received, whatever their answer."""
    return sum(proxy.counts("PutItem").values())


def test_copies_of_a_letter_in_a_file_are_replayed_once(job: Job) -> None:
    letters, x = copies_of_two_letters(job)
    for letter in letters:  # as a file written before copies were told apart holds them
        append_raw(job.dead_letters, letter.to_json().encode())
    proxy = FaultProxy(job.endpoint).start()
    try:
        eu_through(job, proxy)
        result = redrive(job)
        puts = eu_puts(proxy)
    finally:
        proxy.stop()

    assert result.returncode == 1, result.stderr  # the letter that cannot apply failed again
    assert (
        "4 letters, 1 replayed, 1 failed again (kept in the target), 2 copies of a letter "
        "replayed once (removed with it)"
    ) in result.stdout, result.stdout
    eu_label = "/".join(job.destinations[0])
    assert (
        f"  copy          {eu_label}: MODIFY pk=S:x sk=N:1 (sequence 11): removed, a copy of the "
        "letter replayed above"
    ) in result.stdout.splitlines()
    assert puts == 1  # x's put, once; y's is never planned
    assert get(job, 0, x) == x
    (left,) = FileDeadLetters(job.dead_letters).letters()  # one letter stands for both copies
    assert (left.record["sequenceNumber"], left.attempts, left.reason) == ("12", 2, "unplannable")
    assert sorted(p.name for p in job.directory.glob("dead.jsonl*")) == ["dead.jsonl"]


def test_copies_of_a_letter_in_a_queue_are_replayed_once(job: Job) -> None:
    """A standard queue cannot refuse a copy when it is sent: the redrive tells them apart."""
    sqs, queue = use_queue(job)
    letters, x = copies_of_two_letters(job)
    target = SqsDeadLetters(sqs, queue)
    for letter in letters:
        target.put(letter)
    proxy = FaultProxy(job.endpoint).start()
    try:
        eu_through(job, proxy)
        runner = Redrive(load_job(job.path))
        report = run_within(runner, 120 * PATIENCE)
        puts = eu_puts(proxy)
    finally:
        proxy.stop()

    assert (report.replayed, report.failed, report.exit_code) == (1, 1, 1)
    assert puts == 1
    assert sorted(copy.letter.record["sequenceNumber"] for copy in report.copies) == ["11", "12"]
    assert get(job, 0, x) == x
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    (message,) = messages["Messages"]
    left = DeadLetter.from_json(message["Body"])
    assert (left.record["sequenceNumber"], left.attempts, left.redrive_run) == (
        "12",
        2,
        runner.run_id,
    )


def test_the_summary_shows_a_key_with_a_newline_quoted_on_its_line(job: Job) -> None:
    eu_label = "/".join(job.destinations[0])
    item = image("two\nlines", 100)
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, item, 91, "throttled", "throttled too long")
    )

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        f'  replayed      {eu_label}: MODIFY pk=S:"two\\nlines" sk=N:1 (sequence 91)'
    ]
    assert get(job, 0, item) == item


def test_the_summary_names_the_key_of_the_change_replayed_not_the_letters_keys_field(
    job: Job,
) -> None:
    """A letter edited by hand: its ``keys`` say bad3, its record is a put of bad3x. The
    record is what is replayed, so its key is the one the line names (a failed replay's
    too), and the disagreement is noted so that the edit is not lost on the reader."""
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    written = image("bad3x", 100)
    letter = stream_letter(job, eu_label, written, 93, "throttled", "e")
    target.put(replace(letter, keys=item_to_wire(keys_of(image("bad3")))))
    unrankable = image("bad4x", {"BOOL": True})
    letter = stream_letter(job, eu_label, unrankable, 94, "throttled", "e", at_source=False)
    target.put(replace(letter, keys=item_to_wire(keys_of(image("bad4")))))

    result = redrive(job)

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()[1:]
    note = (
        "(the letter's keys field names pk=S:{} sk=N:1; the key shown is its record's, "
        "which is what is replayed)"
    )
    assert lines[0] == (
        f"  replayed      {eu_label}: MODIFY pk=S:bad3x sk=N:1 (sequence 93) {note.format('bad3')}"
    )
    assert lines[1].startswith(
        f"  failed again  {eu_label}: MODIFY pk=S:bad4x sk=N:1 (sequence 94) "
        f"{note.format('bad4')}: unplannable: "
    ), lines[1]
    assert get(job, 0, written) == written


def test_a_letters_destination_event_and_task_are_quoted_on_their_summary_lines(
    job: Job,
) -> None:
    """A letter's fields are data as its key is (anything can write to a target): a
    newline in its destination, event, sequence number or another task's name must not
    add a line to the summary, and each is shown JSON-quoted as the docs say."""
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    x, y = image("x"), image("y")
    forged_destination = "eu-west-1/tab2\n  replayed      x"
    target.put(stream_letter(job, forged_destination, x, 41, "rejected", "e"))
    forged_event = replace(
        stream_letter(job, eu_label, y, 42, "rejected", "e"), event="INSERT\nreplayed"
    )
    target.put(forged_event)
    forged_sequence = replace(
        forged_event,
        event="MODIFY",
        record={**forged_event.record, "sequenceNumber": "43)\nreplayed (x"},
    )
    target.put(forged_sequence)
    target.put(replace(forged_event, event="MODIFY", task_name="other\ntask"))

    report = Redrive(load_job(job.path)).run()

    assert report.text().splitlines()[1:] == [
        '  failed again  "eu-west-1/tab2\\n  replayed      x": MODIFY pk=S:x sk=N:1 '
        "(sequence 41): unknown_destination: the letter is for the destination named "
        "'eu-west-1/tab2\\n  replayed      x', which is not a destination of the job file "
        f"{job.path} (destinations: {', '.join('/'.join(d) for d in job.destinations)}); "
        "the letter is kept, not written elsewhere",
        f'  replayed      {eu_label}: "INSERT\\nreplayed" pk=S:y sk=N:1 (sequence 42)',
        f'  failed again  {eu_label}: ? (key unknown) (sequence "43)\\nreplayed (x") (the '
        "letter's fields name MODIFY pk=S:y sk=N:1, unchecked: its record does not decode): "
        "undecodable: record has no usable sequenceNumber ('43)\\nreplayed (x')",
        'left as they are: 1 letter of other tasks ("other\\ntask": 1)',
    ]


def test_a_dead_letter_file_linked_into_a_volume_not_mounted_is_not_nothing_to_redrive(
    job: Job,
) -> None:
    """Was "no such file (yet): nothing has been dead-lettered there", exit 0, where the
    letters may wait on the volume the link points into."""
    job.dead_letters.parent.mkdir(parents=True, exist_ok=True)
    job.dead_letters.symlink_to("/nonexistent-volume/letters.jsonl")
    with pytest.raises(EnvironmentProblem) as raised:
        Redrive(load_job(job.path)).run()
    assert str(raised.value) == (
        f"dead_letter.path: the dead-letter file {job.dead_letters} cannot be read: it is a "
        "symbolic link to /nonexistent-volume/letters.jsonl, and /nonexistent-volume it points "
        "into does not exist (a volume not mounted?): mount or create it, or name another file"
    )


def test_a_dead_letter_file_in_a_loop_of_links_is_not_nothing_to_redrive(job: Job) -> None:
    """Was "no such file (yet)", exit 0, where validate and run refuse it."""
    job.dead_letters.parent.mkdir(parents=True, exist_ok=True)
    other = job.dead_letters.with_name("other.jsonl")
    job.dead_letters.symlink_to(other)
    other.symlink_to(job.dead_letters)
    with pytest.raises(EnvironmentProblem) as raised:
        Redrive(load_job(job.path)).run()
    assert str(raised.value) == (
        f"dead_letter.path: the dead-letter file {job.dead_letters} cannot be read: it is a "
        "loop of symbolic links (ELOOP)"
    )


def test_nothing_to_redrive_exits_0(job: Job) -> None:
    report = Redrive(load_job(job.path)).run()
    assert report.exit_code == 0
    assert report.text() == (
        f"redrive: no dead letters in file {job.dead_letters}: no such file (yet): nothing "
        "has been dead-lettered there"
    )
    job.dead_letters.write_text("")  # a file, emptied by the last redrive
    report = Redrive(load_job(job.path)).run()
    assert report.exit_code == 0
    assert report.text() == f"redrive: no dead letters in file {job.dead_letters}"


def test_a_second_ctrl_c_as_the_summary_is_printed_keeps_the_summarys_exit_code(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary was printed after the command's own signal handling ended: a second
    Ctrl-C just after the first one's stop reached the process's "stop now" handler, and
    the command exited 130 where its summary said 1 or 0."""
    from replicator.tools import commands

    def stop_now(number: int, frame: object) -> None:
        raise SystemExit(128 + number)  # as the entry point's handler ends a command

    printed = []

    def echo_with_a_ctrl_c(text: str, **kwargs: Any) -> None:
        if text.startswith("redrive:"):  # the summary: Ctrl-C as it is printed
            os.kill(os.getpid(), signal.SIGINT)
        printed.append(text)

    monkeypatch.setattr(commands.logs, "echo", echo_with_a_ctrl_c)
    previous = signal.signal(signal.SIGINT, stop_now)
    try:
        code = commands.redrive(job.path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0
    summary = next(i for i, text in enumerate(printed) if text.startswith("redrive: no dead"))
    # The Ctrl-C is noted after the summary, or said as received before its end.
    assert all(text.startswith("replicator: SIGINT received") for text in printed[summary + 1 :])


def dead_letters_at(job: Job, path: str) -> None:
    """Point the job's file target at ``path`` (as written in the job file)."""
    job.path.write_text(
        job.path.read_text().replace(
            f"dead_letter: {{kind: file, path: '{job.dead_letters}'}}",
            f"dead_letter: {{kind: file, path: '{path}'}}",
        )
    )


def test_a_dead_letter_file_not_there_at_an_absolute_path_is_read_not_created(job: Job) -> None:
    """Nothing dead-lettered yet: exit 0, and the directory is not made by a command that
    only looks."""
    dead_letters_at(job, str(job.directory / "not-yet" / "{task_name}.jsonl"))

    result = redrive(job)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == (
        f"redrive: no dead letters in file {job.directory}/not-yet/{job.name}.jsonl: no such "
        "file (yet): nothing has been dead-lettered there"
    )
    assert not (job.directory / "not-yet").exists()


def test_a_dead_letter_path_no_file_can_have_is_still_refused_with_exit_3(job: Job) -> None:
    """A file where a directory of the path should be is not an empty target: it is
    refused as run refuses it, not taken for one with nothing dead-lettered yet."""
    (job.directory / "a-file").write_text("")
    dead_letters_at(job, str(job.directory / "a-file" / "dead.jsonl"))

    result = redrive(job)

    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"replicator: dead_letter.path: the dead-letter file {job.directory}/a-file/dead.jsonl "
        f"cannot be written: {job.directory}/a-file is a file, so the directory "
        f"{job.directory}/a-file cannot be created" + unwritable_hint()
    )


@pytest.mark.parametrize(
    ("directory", "suffix"),
    [
        ("dl/", ""),
        ("", " (where the job runs, no file means nothing was dead-lettered)"),
    ],
    ids=["relative", "bare file name"],
)
def test_a_redrive_from_another_directory_than_the_jobs_says_so_and_exits_1(
    job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, directory: str, suffix: str
) -> None:
    """``dead_letter.path`` relative to the job's directory, the redrive run from another:
    it said "no dead letters", exited 0 and created an empty directory there, while the
    letters waited in the job's. A bare file name's directory is the working directory,
    which is always there: it said "nothing has been dead-lettered there" and exited 0.
    Nothing tells that apart without the file: the working directory is named, and the
    exit status is 1."""
    dead_letters_at(job, f"{directory}{{task_name}}.jsonl")
    eu_label = "/".join(job.destinations[0])
    x = image("x")
    waiting = job.directory / f"{directory}{job.name}.jsonl"
    waiting.parent.mkdir(exist_ok=True)
    FileDeadLetters(waiting).put(stream_letter(job, eu_label, x, 11, "rejected", "e"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    wrong = redrive(job)

    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert wrong.stdout.strip() == (
        f"redrive: no dead letters in file {elsewhere}/{directory}{job.name}.jsonl: no such "
        f"file; dead_letter.path '{directory}{job.name}.jsonl' is relative to the working "
        f"directory ({elsewhere}): run the command where the job runs, or make the path "
        f"absolute{suffix}"
    )
    assert list(elsewhere.iterdir()) == []  # nothing created
    assert FileDeadLetters(waiting).count() == 1
    assert get(job, 0, x) is None

    monkeypatch.chdir(job.directory)
    right = redrive(job)

    assert right.returncode == 0, right.stdout + right.stderr
    assert "1 letter, 1 replayed, 0 failed again" in right.stdout
    assert get(job, 0, x) == x


def test_a_relative_path_whose_directory_run_created_is_a_job_with_nothing_dead_lettered(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default ``dead_letter.path`` is relative: a job that ran here and dead-lettered
    nothing has the directory ``run`` made at start and no file. A scheduled redrive there
    has nothing to do (exit 0), and still creates nothing."""
    dead_letters_at(job, "dl/{task_name}.jsonl")
    monkeypatch.chdir(job.directory)
    check_dead_letter_file(load_job(job.path))  # what ``run`` does at start
    directory = job.directory / "dl"
    assert directory.is_dir() and list(directory.iterdir()) == []

    result = redrive(job)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == (
        f"redrive: no dead letters in file {directory}/{job.name}.jsonl: no such file (yet): "
        "nothing has been dead-lettered there"
    )
    assert list(directory.iterdir()) == []


def test_letters_left_under_an_earlier_derived_task_name_are_named_not_hidden(job: Job) -> None:
    """A job without ``task_name`` gets a name derived from its destinations, and the
    default path holds it: removing a destination moves the job to a new file, and the
    letters stored before stay in the old one. A redrive of the changed job said "no
    dead letters ... nothing has been dead-lettered there" and exited 0."""
    directory = job.directory / "letters"
    derived = job.path.read_text().replace(f"task_name: {job.name}\n", "")
    job.path.write_text(derived)
    dead_letters_at(job, f"{directory}/{{task_name}}.jsonl")
    before = load_job(job.path)
    eu_label, ap_label = ("/".join(place) for place in job.destinations)
    x, y = image("x"), image("y")
    old_file = before.dead_letter_path()
    old = FileDeadLetters(old_file)
    old.put(
        replace(stream_letter(job, eu_label, x, 11, "rejected", "e"), task_name=before.task_name)
    )
    old.put(
        replace(stream_letter(job, ap_label, y, 12, "rejected", "e"), task_name=before.task_name)
    )
    job.path.write_text(  # ap removed from the job
        "".join(
            line for line in job.path.read_text().splitlines(keepends=True) if "-ap," not in line
        )
    )
    after = load_job(job.path)
    assert after.task_name != before.task_name

    result = redrive(job)

    # Named, not an exit status: jobs with derived names in one directory share it, and
    # another job's file would fail every redrive of this one.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"redrive: no dead letters in file {after.dead_letter_path()}: no such file (yet): "
        "nothing has been dead-lettered there",
        "other dead-letter files beside it, of another derived task name (this job's from "
        "before its destinations changed, or another job's):",
        f"  {old_file} (2 lines): task {before.task_name}",
        "  to replay such a file, run redrive with a copy of the job file that sets "
        "task_name to its task (letters for a destination no longer in the job are kept, "
        "as unknown_destination)",
    ]
    assert old.count() == 2  # nothing in it touched
    assert get(job, 0, x) is None

    # Replayed as the summary says: eu's letter; ap's is kept (no longer in the job).
    copy = job.directory / "replay-old.yaml"
    copy.write_text(f"task_name: {before.task_name}\n" + job.path.read_text())
    replayed = redrive(copy)

    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "2 letters, 1 replayed, 1 failed again" in replayed.stdout
    assert "unknown_destination" in replayed.stdout
    assert get(job, 0, x) == x
    assert [letter.destination for letter in old.letters()] == [ap_label]


SAMPLE = malformed(DeadLetter({}, "d", "r", "e", "t", "s"))  # the shapes, by name


@pytest.mark.parametrize("what", sorted(SAMPLE))
def test_a_letter_that_does_not_read_stays_and_the_others_are_replayed(job: Job, what: str) -> None:
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    x, z = image("x"), image("z")
    target.put(stream_letter(job, eu_label, x, 11, "rejected", "a transient refusal"))
    bad = malformed(stream_letter(job, eu_label, image("y"), 12, "rejected", "e"))[what]
    append_raw(job.dead_letters, bad)
    target.put(stream_letter(job, eu_label, z, 13, "rejected", "a transient refusal"))

    first = Redrive(load_job(job.path)).run()

    assert (first.replayed, first.failed, len(first.unreadable), first.exit_code) == (2, 0, 1, 1)
    assert (get(job, 0, x), get(job, 0, z)) == (x, z)
    assert job.dead_letters.read_bytes() == bad + b"\n"
    assert sorted(p.name for p in job.directory.glob("dead.jsonl*")) == ["dead.jsonl"]

    again = Redrive(load_job(job.path)).run()  # the next redrive is not stuck on it either

    assert (again.replayed, again.failed, len(again.unreadable), again.exit_code) == (0, 0, 1, 1)
    assert job.dead_letters.read_bytes() == bad + b"\n"


def test_a_file_holding_only_an_unreadable_letter_is_not_reported_empty(job: Job) -> None:
    """Exit 0 says nothing is left to replay; a letter kept unreadable is left."""
    torn = stream_letter(job, "eu", image("x"), 11, "rejected", "e").to_json()[:60]
    append_raw(job.dead_letters, torn.encode())

    result = redrive(job)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 letter, 0 replayed, 0 failed again (kept in the target), 1 unreadable" in (
        result.stdout
    )
    (warning,) = warnings_in(result.stderr)
    assert warning["event"] == "unreadable dead letter kept as it is"
    # Read from the file as the redrive renamed it aside, kept in the live file.
    assert re.fullmatch(re.escape(str(job.dead_letters)) + r"\.redrive-\d+", warning["file"])
    assert (warning["line"], warning["kept_in"]) == (1, str(job.dead_letters))
    assert warning["kept_at_line"] == 1
    # The summary names where it is now, for a person to repair: the aside file is gone.
    assert f"  unreadable    {job.dead_letters} line 1: not JSON" in result.stdout
    # Said to be a letter a crash cut short, whose change was read again.
    assert "(most likely a letter cut short by a crash as it was written:" in result.stdout
    assert job.dead_letters.read_text() == torn + "\n"


def test_a_letter_with_a_field_this_version_does_not_know_is_replayed(job: Job) -> None:
    eu_label = "/".join(job.destinations[0])
    x = image("x")
    body = json.loads(stream_letter(job, eu_label, x, 11, "rejected", "e").to_json())
    body.update(version=2, written_by="a newer replicator")
    append_raw(job.dead_letters, json.dumps(body).encode())

    report = Redrive(load_job(job.path)).run()

    assert (report.replayed, report.exit_code) == (1, 0)
    assert get(job, 0, x) == x
    assert FileDeadLetters(job.dead_letters).count() == 0


def test_an_unreadable_message_does_not_hold_up_the_letters_in_the_queue(job: Job) -> None:
    sqs, queue = use_queue(job)
    eu_label = "/".join(job.destinations[0])
    bad_id = sqs.send_message(QueueUrl=queue, MessageBody='{"truncated')["MessageId"]
    x = image("x")
    SqsDeadLetters(sqs, queue).put(stream_letter(job, eu_label, x, 11, "rejected", "e"))

    result = redrive(job)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"  unreadable    message {bad_id}: not JSON" in result.stdout
    (warning,) = warnings_in(result.stderr)
    assert (warning["queue"], warning["message_id"]) == (queue, bad_id)
    assert get(job, 0, x) == x
    left = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert [(m["MessageId"], m["Body"]) for m in left["Messages"]] == [(bad_id, '{"truncated')]


def other_jobs_letters(job: Job) -> list[DeadLetter]:
    """Letters another job wrote to a shared target, for tables with this job's labels."""
    eu_label, ap_label = ("/".join(place) for place in job.destinations)
    y = image("y", name="the other job's item")
    w = image("w", name="the other job's backfill copy")
    backfill = synthetic_change(BACKFILL, keys_of(w), "us-east-1", new_image=w, expected=None)
    return [
        replace(stream_letter(job, eu_label, y, 31, "rejected", "e"), task_name="orders-eu"),
        replace(
            _letter(job, ap_label, backfill.raw, "rejected", "throttled", keys_of(w)),
            task_name="orders-eu",
            shard_id=BACKFILL,
        ),
        replace(
            stream_letter(job, "us-west-2/elsewhere", y, 32, "rejected", "e"),
            task_name="payments",
        ),
    ]


def test_letters_of_other_tasks_in_a_shared_file_are_left_exactly_as_they_are(job: Job) -> None:
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    theirs = other_jobs_letters(job)
    x = image("x", name="ours")
    target.put(theirs[0])
    target.put(stream_letter(job, eu_label, x, 11, "rejected", "a transient refusal"))
    for letter in theirs[1:]:
        target.put(letter)
    stored = b"".join(letter.to_json().encode() + b"\n" for letter in theirs)

    for _ in range(2):  # and again: they are not retried, and do not fail this job
        result = redrive(job)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "left as they are: 3 letters of other tasks (orders-eu: 2, payments: 1)" in (
            result.stdout
        )
        assert job.dead_letters.read_bytes() == stored
    assert get(job, 0, x) == x
    (y, w) = (image("y"), image("w"))
    assert (get(job, 0, y), get(job, 1, w)) == (None, None)  # nothing of theirs written here


def test_letters_of_other_tasks_in_a_shared_queue_stay_visible_and_unchanged(job: Job) -> None:
    sqs, queue = use_queue(job)
    eu_label = "/".join(job.destinations[0])
    target = SqsDeadLetters(sqs, queue)
    x = image("x", name="ours")
    target.put(stream_letter(job, eu_label, x, 11, "rejected", "a transient refusal"))
    theirs = {letter.to_json() for letter in other_jobs_letters(job)}
    for body in theirs:
        sqs.send_message(QueueUrl=queue, MessageBody=body)

    report = Redrive(load_job(job.path)).run()

    assert (report.replayed, report.exit_code) == (1, 0)
    assert report.other_tasks == {"orders-eu": 2, "payments": 1}
    assert report.text().endswith(
        "\nleft as they are: 3 letters of other tasks (orders-eu: 2, payments: 1)"
    )
    assert get(job, 0, x) == x
    assert get(job, 0, image("y")) is None
    left = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert {m["Body"] for m in left["Messages"]} == theirs  # visible at once, as sent


def test_a_dead_letter_queue_with_a_redrive_policy_is_warned_about(job: Job) -> None:
    """Every redrive receives each message once: after maxReceiveCount redrives SQS moves
    another task's letter (or an unreadable message) out of the queue, where no redrive
    finds it. Both the redrive and the checks at a run's start say so; a queue without
    a policy gets no such warning."""
    sqs, plain = use_queue(job)
    assert not [w for w in warnings_in(redrive(job).stderr) if "redrive policy" in w["event"]]
    moved_to = f"{job.name}-dlq-dlq"
    dlq_url = sqs.create_queue(QueueName=moved_to)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": "2"}
    sqs.set_queue_attributes(QueueUrl=plain, Attributes={"RedrivePolicy": json.dumps(policy)})
    sqs.send_message(QueueUrl=plain, MessageBody=other_jobs_letters(job)[2].to_json())

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    (warning,) = [w for w in warnings_in(result.stderr) if "redrive policy" in w["event"]]
    assert warning["event"].startswith(f"the dead-letter queue {plain} has a redrive policy")
    assert f"after 2 receives SQS moves a message to the queue {moved_to}" in warning["event"]
    assert "give the dead letters a queue without a redrive policy" in warning["event"]


def test_a_target_holding_only_other_tasks_letters_says_so(job: Job) -> None:
    target = FileDeadLetters(job.dead_letters)
    target.put(other_jobs_letters(job)[2])

    report = Redrive(load_job(job.path)).run()

    assert report.exit_code == 0
    assert report.text() == (
        f"redrive: no dead letters of task {job.name} in file {job.dead_letters}\n"
        "left as they are: 1 letter of other tasks (payments: 1)"
    )


def test_a_dead_letter_path_that_is_a_directory_is_one_line_and_exit_3(job: Job) -> None:
    """As for backfill and verify --repair, which append to it, and as run says it at
    start: the environment is not as the job says."""
    job.dead_letters.mkdir()

    result = redrive(job)

    assert result.returncode == 3, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith(
        f"replicator: dead_letter.path: the dead-letter file {job.dead_letters} cannot be "
        "written: it is a directory, not a file: name a file in it, or remove the directory"
    ), line
    assert "chown" not in line  # no owner or mode makes a directory a file


def test_a_lock_that_cannot_be_opened_is_named_as_the_lock_exit_3(job: Job) -> None:
    """The lock beside the file could not be made (here a directory holds its name): the
    line said ``cannot read dead-letter file <file>.redrive.lock``, a file no one had
    asked to read, and the letters stay where they are."""
    eu_label = "/".join(job.destinations[0])
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, image("k"), 41, "throttled", "e")
    )
    lock = job.dead_letters.with_name(job.dead_letters.name + ".redrive.lock")
    lock.mkdir()

    result = redrive(job)

    assert result.returncode == 3, result.stderr
    assert (
        f"cannot open {lock}, the lock a redrive holds beside dead-letter file "
        f"{job.dead_letters}: Is a directory"
    ) in result.stdout + result.stderr, result.stdout + result.stderr
    assert [letter.keys for letter in FileDeadLetters(job.dead_letters).letters()] == [
        keys_of(image("k"))
    ]


def test_an_interrupted_redrive_says_how_many_letters_it_kept_and_the_next_takes_them_up(
    job: Job,
) -> None:
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    items = [image(f"i{n}") for n in range(3)]
    for seq, item in enumerate(items, start=31):
        target.put(stream_letter(job, eu_label, item, seq, "throttled", "e"))
    with eu_throttled(job) as proxy:
        report = interrupted_while_retrying(job, proxy)
    job.write()  # eu straight at the server again

    assert (report.replayed, report.exit_code) == (0, 1)
    # The letters are in the file the redrive renamed aside, not in the live file: the
    # line names the file that holds them.
    aside = aside_file(job)
    assert not job.dead_letters.exists()
    assert len(aside.read_text().splitlines()) == 3
    assert report.text() == (
        f"redrive of file {job.dead_letters}: interrupted: 3 letters not replayed, kept in "
        f"file {aside} (the next redrive takes them up)"
    )
    assert get(job, 0, items[0]) is None
    with structlog.testing.capture_logs() as logs:
        again = Redrive(load_job(job.path)).run()
    assert (again.replayed, again.exit_code) == (3, 0)
    assert [get(job, 0, item) for item in items] == items
    assert target.count() == 0
    # The letters an earlier redrive left are said to be taken up, not a silent resume.
    (taken,) = [e for e in logs if e["event"].startswith("taking up the letters")]
    assert (taken["aside"], taken["lines_already_done"]) == (str(aside), 0)


def test_a_destination_refusing_every_writes_credentials_exits_3_and_keeps_the_letters(
    job: Job,
) -> None:
    target = eu_letters(job, 41)
    proxy = FaultProxy(job.endpoint).start()
    try:
        # Its writes' credentials not accepted (the source's are).
        proxy.set(
            Mode(
                Fault.THROTTLE,
                throttle_code="UnrecognizedClientException",
                operations=frozenset({"PutItem"}),
            )
        )
        eu_through(job, proxy)
        result = redrive(job)
    finally:
        proxy.stop()

    assert result.returncode == 3, result.stdout + result.stderr
    assert "3 letters, 0 replayed, 3 failed again (kept in the target)" in result.stdout
    assert "the letter is kept in the target" in result.stdout
    assert "checkpoint" not in result.stdout
    assert target.count() == 3


def test_without_credentials_redrive_exits_3_and_keeps_the_letters(job: Job) -> None:
    """The source is read (its key schema) before any letter is claimed."""
    target = eu_letters(job, 41)
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_CONFIG_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )

    result = in_process("redrive", "--config", str(job.path), env=env)

    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "no AWS credentials found" in line and job.source_table in line
    assert [letter.record["sequenceNumber"] for letter in target.letters()] == ["41", "42", "43"]


@pytest.mark.parametrize("what", ["nothing listening", "table missing"])
def test_a_destination_not_there_exits_3_before_a_letter_is_touched(job: Job, what: str) -> None:
    """As backfill and verify: every destination is described before any letter is
    claimed, so the file is left byte for byte, and one line names the table and where
    it was looked for."""
    eu_label = "/".join(job.destinations[0])
    eu_letters(job, 61)
    before = job.dead_letters.read_bytes()
    proxy = FaultProxy(job.endpoint).start()
    try:
        if what == "nothing listening":
            proxy.refuse()  # its port bound, not listening: every connection refused
            eu_through(job, proxy)
            expected = f"cannot reach {proxy.url}"
        else:
            eu, eu_table = job.destination_clients()[0]
            eu.delete_table(TableName=eu_table)
            expected = f"not found at {job.endpoint}"
        result = redrive(job)
    finally:
        proxy.stop()

    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = [text for text in result.stderr.splitlines() if not text.startswith("{")]
    assert line.startswith(f"replicator: table {eu_label}: {expected}"), line
    assert job.dead_letters.read_bytes() == before
    assert list(job.dead_letters.parent.glob(f"{job.dead_letters.name}.*")) == []


def test_a_stop_on_the_last_letter_says_no_letter_is_left(job: Job) -> None:
    """A stop that came while the last letter's write was answered: that letter is
    settled, so nothing is left. The summary said "0 letters now in file <the target>
    (the next redrive takes them up ...)" of a file that was not there; it says none is
    left, and that the next redrive removes the aside files, whose lines are all done."""
    target = eu_letters(job, 81)
    items = [image(name) for name in "abc"]
    runners: list[Redrive] = []
    answered = []

    def after_answer(operation: str, body: bytes, status: int) -> None:
        if operation == "PutItem":
            answered.append(status)
            if len(answered) == len(items):  # the stop, as the last letter's write lands
                runners[0].interrupt()

    proxy = FaultProxy(job.endpoint, observe=after_answer).start()
    try:
        eu_through(job, proxy)
        runners.append(Redrive(load_job(job.path)))
        report = run_within(runners[0], 60)
    finally:
        proxy.stop()

    assert answered == [200, 200, 200]
    assert (report.replayed, report.failed, report.interrupted) == (3, 0, True)
    assert report.exit_code == 0  # nothing left: done, as without the stop
    assert [get(job, 0, item) for item in items] == items
    aside = aside_file(job)
    assert target.holding() == {}
    assert not job.dead_letters.exists()
    first_line = report.text().splitlines()[0]
    assert first_line == (
        f"redrive of file {job.dead_letters}: 3 letters handled before it stopped, 3 replayed, "
        "0 failed again (kept in "
        f"the target); interrupted: no letter left (the next redrive removes file {aside} "
        f"and file {aside}.settled, whose lines are all done)"
    ), first_line
    job.write()  # eu without the proxy
    again = Redrive(load_job(job.path)).run()
    assert again.exit_code == 0, again.text()
    assert list(job.dead_letters.parent.glob(f"{job.dead_letters.name}*")) == []


def test_a_destination_that_stops_answering_ends_the_redrive_with_exit_3(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eu answers the check and the first letter's write, then reads every write and never
    answers: the second letter is given up once no answer came for the tools' bound, and
    the run stops there, that letter kept with one more attempt, the third untried."""
    monkeypatch.setattr(snapshot, "UNANSWERED_FOR_S", 3.0)
    eu_label = "/".join(job.destinations[0])
    target = eu_letters(job, 71)
    items = [image(name) for name in "abc"]
    proxies: list[FaultProxy] = []

    def after_answer(operation: str, body: bytes, status: int) -> None:
        if operation == "PutItem":  # the first write is answered, none after it
            proxies[0].set(Mode(Fault.BLACK_HOLE, operations=frozenset({"PutItem"})))

    proxy = FaultProxy(job.endpoint, observe=after_answer).start()
    proxies.append(proxy)
    try:
        eu_through(job, proxy)
        job.path.write_text(
            job.path.read_text().replace(
                "writer: {max_in_flight: 16}",
                "writer: {max_in_flight: 16, connect_timeout_s: 1, read_timeout_s: 1}",
            )
        )
        report = run_within(Redrive(load_job(job.path)), 60)
    finally:
        proxy.stop()

    assert report.exit_code == 3
    assert (report.replayed, report.failed) == (1, 1)
    assert proxy.counts("PutItem")["black_holed"] >= 2
    assert [get(job, 0, item) for item in items] == [items[0], None, None]
    aside = aside_file(job)
    # The third stays where it was (the first is settled), the second back in the live file.
    assert target.holding() == {aside: 1, job.dead_letters: 1}
    (again,) = target.letters()
    assert (again.record["sequenceNumber"], again.attempts, again.reason) == (
        "72",
        2,
        "unavailable",
    )
    unanswered = f"destination {eu_label} did not answer for 3 s"
    assert unanswered in again.error and proxy.url in again.error
    first_line = report.text().splitlines()[0]
    assert first_line.startswith(
        f"redrive of file {job.dead_letters}: 2 letters handled before it stopped, 1 replayed, "
        "1 failed again (kept in "
        f"the target); stopped: {unanswered}"
    ), first_line
    assert first_line.endswith(
        f"2 letters now in file {aside} and file {job.dead_letters} (the next redrive takes "
        f"them up; the lines already done are named in file {aside}.settled: move or copy it "
        "with its aside file)"
    )
    job.write()  # eu answering again
    assert Redrive(load_job(job.path)).run().exit_code == 0
    assert [get(job, 0, item) for item in items] == items
    assert target.count() == 0


def test_a_first_sigterm_stops_a_redrive_stuck_on_one_letter_and_keeps_it(job: Job) -> None:
    """Every write to eu is throttled, so the first letter is retried for as long as that
    lasts: one SIGTERM gives it a bounded time to settle, then stops, the letters kept
    as they were."""
    eu_letters(job, 81)
    with eu_throttled(job) as proxy:
        process = started(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            retrying(proxy)
            process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the second: stop at once
                process.communicate(timeout=30)

    assert process.returncode == 1, stdout
    aside = aside_file(job)
    assert stdout.strip() == (
        f"redrive of file {job.dead_letters}: interrupted: 3 letters not replayed, kept in "
        f"file {aside} (the next redrive takes them up)"
    )
    kept = FileDeadLetters(aside).letters()
    assert [(letter.record["sequenceNumber"], letter.attempts) for letter in kept] == [
        ("81", 1),
        ("82", 1),
        ("83", 1),
    ]
    assert get(job, 0, image("a")) is None


def test_a_replayed_letter_that_loses_its_conflict_is_recorded_in_the_conflict_log(
    job: Job,
) -> None:
    """The letter's change meets a newer item at the destination: the destination keeps
    it, the letter counts as replayed, and the lost conflict is in the conflict log
    (stored before the command exits), as replication would have recorded it."""
    conflicts = job.directory / "conflicts.jsonl"
    job.write(conflict_log=f"{{kind: file, path: '{conflicts}'}}")
    eu_label = "/".join(job.destinations[0])
    newer, older = image("c", 200, v="newer"), image("c", 100, v="older")
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=newer)
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, older, 31, "resolver_failed", "resolver raised")
    )

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert (
        f"1 letter, 1 replayed (1 lost its conflict, recorded in the conflict log file "
        f"{conflicts}), 0 failed again" in result.stdout
    )
    assert "(lost its conflict at " + eu_label in result.stdout
    assert get(job, 0, older) == newer
    (entry,) = [json.loads(line) for line in conflicts.read_text().splitlines()]
    assert (entry["kind"], entry["task_name"], entry["destination"]) == (
        "conflict",
        job.name,
        eu_label,
    )
    assert (entry["shard_id"], entry["sequence_number"]) == ("shardId-1", "31")
    assert entry["losing_image"] == item_to_wire(older)
    assert entry["winning_image"] == item_to_wire(newer)
    assert FileDeadLetters(job.dead_letters).count() == 0


def test_lost_conflicts_of_a_redrive_are_counted_as_written_or_not_recorded(
    job: Job, metrics: Any
) -> None:
    eu_label = "/".join(job.destinations[0])
    newer = image("d", 200)
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=newer)
    letters = FileDeadLetters(job.dead_letters)
    letters.put(stream_letter(job, eu_label, image("d", 100), 41, "rejected", "throttled"))
    conflicts = job.directory / "conflicts.jsonl"
    job.write(conflict_log=f"{{kind: file, path: '{conflicts}'}}")

    report = Redrive(load_job(job.path), metrics=metrics).run()

    assert (report.replayed, report.lost, report.recorded, report.not_recorded) == (1, 1, 1, 0)
    assert (
        metrics.registry.get_sample_value(
            "replicator_conflict_log_written_total", {"destination": eu_label}
        )
        == 1
    )
    assert len(conflicts.read_text().splitlines()) == 1

    # Without a conflict log, the summary says the lost conflict is not recorded.
    letters.put(stream_letter(job, eu_label, image("d", 100), 42, "rejected", "throttled"))
    job.write()
    report = Redrive(load_job(job.path)).run()
    assert report.lost == 1 and report.conflict_log is None
    assert "(1 lost its conflict; not recorded: conflict_log.kind is none)" in report.text()


def test_a_letter_a_custom_resolver_now_declines_is_recorded_as_a_lost_conflict(
    job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's case: the resolver raised (the change was dead-lettered); once it is
    fixed, it keeps the destination's locked item, and the replayed letter's lost
    conflict is in the log with the item the resolver read as the winner."""
    module = tmp_path / "lock_resolver.py"
    module.write_text(
        "def decide(incoming, existing):\n"
        "    return existing is None or existing.get('lock', {}).get('BOOL') is not True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    conflicts = job.directory / "conflicts.jsonl"
    job.path.write_text(
        job.path.read_text().replace(
            LWW, "conflict: {policy: custom, resolver: 'lock_resolver:decide'}"
        )
        + f"conflict_log: {{kind: file, path: '{conflicts}'}}\n"
    )
    eu_label = "/".join(job.destinations[0])
    locked = {**image("l", 1), "lock": {"BOOL": True}}
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=locked)
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, image("l", 2), 51, "resolver_failed", "resolver broken")
    )

    report = Redrive(load_job(job.path)).run()

    assert (report.replayed, report.lost, report.recorded, report.exit_code) == (1, 1, 1, 0)
    assert get(job, 0, locked) == locked
    (entry,) = [json.loads(line) for line in conflicts.read_text().splitlines()]
    assert entry["policy"] == "custom" and entry["rule"].endswith("lock_resolver:decide")
    assert entry["winning_image"] == item_to_wire(locked)


def test_a_conflict_log_path_that_is_a_directory_is_refused_before_a_letter_is_touched(
    job: Job,
) -> None:
    """As run refuses it at start (it was taken: each entry retried, then dropped, and the
    letter removed all the same)."""
    in_the_way = job.directory / "a-directory"
    in_the_way.mkdir()
    job.write(conflict_log=f"{{kind: file, path: '{in_the_way}', retry_for_s: 0.5}}")
    eu_label = "/".join(job.destinations[0])
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=image("e", 200))
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, image("e", 100), 61, "rejected", "throttled")
    )
    stored = job.dead_letters.read_bytes()

    result = redrive(job)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"conflict_log.path (line 11): the conflict log {in_the_way} is a directory" in (
        result.stderr
    )
    assert job.dead_letters.read_bytes() == stored


def conflict_entries(job: Job, table: str) -> list[dict[str, Any]]:
    """The entries of a conflict-log table, as stored."""
    items = job.source.scan(TableName=table, ConsistentRead=True)["Items"]
    return [json.loads(gzip.decompress(item["entry"]["B"])) for item in items]


def lost_conflict_letter(job: Job, seq: int) -> tuple[Item, Item]:
    """eu holds a newer image of item c than the job's one letter puts: the replay loses
    its conflict. The newer and the older image."""
    eu_label = "/".join(job.destinations[0])
    newer, older = image("c", 2000, v="newer"), image("c", 1000, v="older")
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=newer)
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, older, seq, "unplannable", "an old bug")
    )
    return newer, older


def test_a_redrive_creates_a_missing_conflict_log_table_as_run_does(job: Job) -> None:
    """The review's case: the table run would have created was not there; every entry
    was retried for retry_for_s, then dropped, the letter removed, and the exit status 0."""
    table = f"{job.name}-newlog"
    job.write(conflict_log=f"{{kind: dynamodb, table: '{table}', retry_for_s: 10}}")
    newer, older = lost_conflict_letter(job, 71)

    result = redrive(job)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"1 letter, 1 replayed (1 lost its conflict, recorded in the conflict log DynamoDB "
        f"table {table}" in result.stdout
    ), result.stdout
    assert get(job, 0, older) == newer
    (entry,) = conflict_entries(job, table)
    assert (entry["task_name"], entry["sequence_number"]) == (job.name, "71")
    assert entry["losing_image"] == item_to_wire(older)
    assert FileDeadLetters(job.dead_letters).count() == 0


def test_a_conflict_log_table_of_other_keys_is_refused_before_a_letter_is_touched(
    job: Job,
) -> None:
    """As run refuses it (exit 3): every entry was refused by the table and dropped at
    once, the letter removed, exit 0."""
    table = f"{job.name}-app"
    create_table(job.source, table, range_key="sk", stream=None)  # sk is a number
    job.write(conflict_log=f"{{kind: dynamodb, table: '{table}'}}")
    newer, _ = lost_conflict_letter(job, 72)
    stored = job.dead_letters.read_bytes()

    result = redrive(job)

    assert result.returncode == 3, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("replicator: ")]
    assert f"conflict-log table {table}" in line
    assert "the conflict log needs pk (HASH, S) and sk (RANGE, S)" in line
    assert job.dead_letters.read_bytes() == stored
    assert get(job, 0, newer) == newer
    assert job.source.scan(TableName=table)["Items"] == []


def test_a_letter_whose_lost_conflict_cannot_be_recorded_is_kept_for_the_next_redrive(
    job: Job,
) -> None:
    """The conflict-log table answers every write with a server error: the entry is given
    up after retry_for_s. It was dropped with its letter, and the exit status was 0; now
    the letter is kept (one more attempt, the reason said), the redrive stops there (the
    next letters' entries would wait as long for nothing) with exit 3, and the next
    redrive, once the log takes entries again, records the conflict and removes it."""
    table = f"{job.name}-log"
    proxy = FaultProxy(job.endpoint).start()
    try:
        job.write(
            conflict_log=f"{{kind: dynamodb, table: '{table}', endpoint_url: '{proxy.url}', "
            "retry_for_s: 0.5}"
        )
        eu_label = "/".join(job.destinations[0])
        newer, older = lost_conflict_letter(job, 73)
        later = image("later", 100)
        FileDeadLetters(job.dead_letters).put(
            stream_letter(job, eu_label, later, 74, "throttled", "e")
        )
        proxy.set(Mode(Fault.SERVER_ERROR, operations=frozenset({"BatchWriteItem"})))

        first = redrive(job)

        assert first.returncode == 3, first.stdout + first.stderr
        summary = first.stdout.splitlines()
        assert summary[0].startswith(
            f"redrive of file {job.dead_letters}: 1 letter handled before it stopped, 0 replayed "
            "(1 lost its conflict: "
            f"0 recorded in the conflict log DynamoDB table {table} "
        ), first.stdout
        assert (
            "1 could not be recorded: its letter is kept, see the error lines), 1 failed"
            in (summary[0])
        )
        assert f"; stopped: the conflict log DynamoDB table {table} " in summary[0]
        assert summary[1].startswith(
            f"  failed again  {eu_label}: MODIFY pk=S:c sk=N:1 (sequence 73): "
            "conflict_not_recorded: its lost conflict could not be recorded in the conflict "
            f"log DynamoDB table {table} "
        ), first.stdout
        assert get(job, 0, older) == newer
        assert get(job, 0, later) is None  # not tried: kept for the next redrive
        # Put back in the live file; the letter not tried is in the aside file still.
        (again,) = FileDeadLetters(job.dead_letters).letters()
        assert (again.record["sequenceNumber"], again.attempts, again.reason) == (
            "73",
            2,
            "conflict_not_recorded",
        )
        assert FileDeadLetters(job.dead_letters).holding() == {
            aside_file(job): 1,
            job.dead_letters: 1,
        }
        assert summary[0].endswith(
            f"2 letters now in file {aside_file(job)} and file {job.dead_letters} (the next "
            f"redrive takes them up; the lines already done are named in file "
            f"{aside_file(job)}.settled: move or copy it with its aside file)"
        ), first.stdout
        assert conflict_entries(job, table) == []

        proxy.set(Mode())  # the conflict log takes entries again
        second = redrive(job)
    finally:
        proxy.stop()

    assert second.returncode == 0, second.stdout + second.stderr
    assert (
        f"2 letters, 2 replayed (1 lost its conflict, recorded in the conflict log DynamoDB "
        f"table {table}" in second.stdout
    ), second.stdout
    (entry,) = conflict_entries(job, table)
    assert (entry["sequence_number"], entry["losing_image"]) == ("73", item_to_wire(older))
    assert get(job, 0, later) == later
    assert FileDeadLetters(job.dead_letters).count() == 0


def test_a_letter_whose_lost_conflicts_entry_the_log_refuses_is_kept_and_the_rest_replayed(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry the log refuses as it is (a ValidationException) is given up at once: its
    letter is kept (exit 1), and the redrive goes on with the next letters, whose entries
    the log may well take."""
    table = f"{job.name}-log"
    job.write(conflict_log=f"{{kind: dynamodb, table: '{table}'}}")
    eu_label = "/".join(job.destinations[0])
    newer, older = lost_conflict_letter(job, 75)
    later = image("later", 100)
    FileDeadLetters(job.dead_letters).put(stream_letter(job, eu_label, later, 76, "rejected", "e"))

    def refused(self: DynamoDbConflictLog, entries: list[Any]) -> list[Any]:
        return [ConflictLogRejected(f"PutItem: ValidationException: {e.id}") for e in entries]

    monkeypatch.setattr(DynamoDbConflictLog, "put_all", refused)

    result = redrive(job)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 letters, 1 replayed (1 lost its conflict: 0 recorded" in result.stdout
    assert "1 could not be recorded: its letter is kept, see the error lines), 1 failed again" in (
        result.stdout
    )
    assert "stopped" not in result.stdout
    assert "conflict_not_recorded: its lost conflict could not be recorded" in result.stdout
    assert "(rejected: PutItem: ValidationException: " in result.stdout
    assert (get(job, 0, older), get(job, 0, later)) == (newer, later)
    (kept,) = FileDeadLetters(job.dead_letters).letters()
    assert (kept.record["sequenceNumber"], kept.attempts, kept.reason) == (
        "75",
        2,
        "conflict_not_recorded",
    )


@pytest.mark.parametrize("interrupts", [1, 2])
def test_an_interrupt_stops_a_redrive_waiting_for_a_conflict_log_that_does_not_answer(
    job: Job, interrupts: int
) -> None:
    """The conflict log takes no write and gives no answer: the letter's entry waits, up
    to ``retry_for_s``. An interrupt stopped the wait for the entry (a second at once, a
    first after its grace), and then the close of the log waited the whole
    ``retry_for_s`` again for that same entry, though its letter is kept anyway. Now the
    command ends at once after a second, after the grace after a first, the letter kept."""
    table = f"{job.name}-log"
    proxy = FaultProxy(job.endpoint).start()
    try:
        job.write(
            conflict_log=f"{{kind: dynamodb, table: '{table}', endpoint_url: '{proxy.url}', "
            "retry_for_s: 120}"
        )
        newer, older = lost_conflict_letter(job, 77)
        proxy.set(Mode(Fault.BLACK_HOLE, operations=frozenset({"BatchWriteItem", "PutItem"})))
        runner = Redrive(load_job(job.path))
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(runner.run)
            try:
                wait_until(lambda: proxy.counts()["black_holed"] >= 1, 30, "the entry sent")
                assert running.running()
            finally:
                for _ in range(interrupts):
                    runner.interrupt()  # a second: stop at once
            # retry_for_s is 120
            report = running.result(timeout=20 + (INTERRUPT_GRACE_S if interrupts == 1 else 0))
    finally:
        proxy.stop()

    assert report.exit_code == 1, report.text()
    assert report.text().strip() == (
        f"redrive of file {job.dead_letters}: interrupted: 1 letter not replayed, kept in "
        f"file {aside_file(job)} (the next redrive takes them up)"
    )
    assert get(job, 0, older) == newer
    (kept,) = FileDeadLetters(aside_file(job)).letters()
    assert (kept.record["sequenceNumber"], kept.attempts) == ("77", 1)


@pytest.mark.parametrize("preparation", ["returns", "hangs"])
def test_an_interrupt_while_the_conflict_log_is_prepared_replays_no_letter(
    job: Job, monkeypatch: pytest.MonkeyPatch, preparation: str
) -> None:
    """A Ctrl-C while the conflict log is made ready (a log that does not answer takes
    the SDK's timeouts to say so): the stop was looked for only after a letter, so one
    was claimed and replayed after it. Now no letter is started once stopped, and a
    preparation still waiting is not waited for: the letters stay, exit 1."""
    job.write(conflict_log=f"{{kind: dynamodb, table: '{job.name}-log'}}")
    eu_label = "/".join(job.destinations[0])
    x = image("x")
    FileDeadLetters(job.dead_letters).put(stream_letter(job, eu_label, x, 12, "rejected", "e"))
    runner = Redrive(load_job(job.path))
    released = threading.Event()

    def prepare(resolved: Any) -> None:
        runner.interrupt()  # the Ctrl-C, while the log is prepared
        if preparation == "hangs":
            released.wait(60)

    monkeypatch.setattr(redrive_module, "prepare", prepare)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(runner.run)
        try:
            report = running.result(timeout=20)
        finally:
            released.set()

    assert report.exit_code == 1, report.text()
    assert report.text().strip() == (
        f"redrive of file {job.dead_letters}: interrupted: 1 letter not replayed, kept in "
        f"file {job.dead_letters} (the next redrive takes them up)"
    )
    assert get(job, 0, x) is None
    assert FileDeadLetters(job.dead_letters).count() == 1


def placed_letter(job: Job, destination: str, item: Item, seq: int) -> DeadLetter:
    """A letter as replication writes one for eu: its destination's label, region and
    table (the table eu-west-1 holds for the job)."""
    region, table = job.destinations[0]
    return replace(
        stream_letter(job, destination, item, seq, "throttled", "e"), region=region, table=table
    )


def eu_line(job: Job) -> str:
    region, table = job.destinations[0]
    return f"  - {{region: {region}, table: {table}, endpoint_url: '{job.endpoint}'}}\n"


def test_a_letter_is_replayed_at_its_destination_after_the_destination_is_given_a_name(
    job: Job,
) -> None:
    """The letter names eu by its label when it was written (``<region>/<table>``); a
    ``name`` given to eu since made every redrive fail it as ``unknown_destination``. A
    letter belongs to the destination at its region and table, whatever it is called."""
    eu_label = "/".join(job.destinations[0])
    x = image("x")
    FileDeadLetters(job.dead_letters).put(placed_letter(job, eu_label, x, 14))
    job.path.write_text(
        job.path.read_text().replace(eu_line(job), eu_line(job).replace("{", "{name: eu, ", 1))
    )

    result = redrive(job)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 letter, 1 replayed, 0 failed again" in result.stdout
    assert (get(job, 0, x), get(job, 1, x)) == (x, None)
    assert FileDeadLetters(job.dead_letters).count() == 0


def test_a_letter_whose_destination_name_now_names_another_table_is_kept_not_written_there(
    job: Job,
) -> None:
    """The name ``eu`` now points at another table: the letter's change never failed
    there, and a redrive wrote it there by name. Now it stays in the target (one more
    attempt, exit 1), with a reason naming where it is for, and nothing is written."""
    x = image("x")
    FileDeadLetters(job.dead_letters).put(placed_letter(job, "eu", x, 15))
    ap_region, ap_table = job.destinations[1]
    job.path.write_text(
        job.path.read_text()
        .replace(eu_line(job), "")
        .replace(f"{{region: {ap_region}, ", f"{{name: eu, region: {ap_region}, ")
    )
    eu_region, eu_table = job.destinations[0]

    result = redrive(job)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 letter, 0 replayed, 1 failed again" in result.stdout
    assert (
        f"  failed again  eu: MODIFY pk=S:x sk=N:1 (sequence 15): unknown_destination: the "
        f"letter is for {eu_region}/{eu_table} (recorded as 'eu'), which is not a "
        f"destination of the job file {job.path} (destinations: eu at "
        f"{ap_region}/{ap_table}); the letter is kept, not written elsewhere"
    ) in result.stdout.splitlines()
    assert (get(job, 0, x), get(job, 1, x)) == (None, None)
    (kept,) = FileDeadLetters(job.dead_letters).letters()
    assert (kept.destination, kept.region, kept.table, kept.attempts) == (
        "eu",
        eu_region,
        eu_table,
        2,
    )


# -- a replayed stream change checked against the source -------------------------------------


def test_a_replayed_put_of_an_item_the_source_deleted_since_is_not_brought_back(
    job: Job,
) -> None:
    """Put P → dead-lettered at ap (an index refused it); the source deletes P, and the
    delete is applied at ap (nothing there); the index is fixed; the redrive replays the
    old put. ap must not keep P, which the source no longer has: the copy is removed
    again, as a backfill's would be, and the summary says so."""
    ap_label = "/".join(job.destinations[1])
    p2 = image("p2", 100, v="put")
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, ap_label, p2, 51, "rejected", "ValidationException: index key")
    )
    job.source.delete_item(TableName=job.source_table, Key=keys_of(p2))
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=p2)  # replicated to eu before the delete ...
    eu.delete_item(TableName=eu_table, Key=keys_of(p2))  # ... and the delete too

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert "1 letter, 1 replayed, 0 failed again" in result.stdout
    assert "(the source has deleted it since: removed again)" in result.stdout
    (line,) = logged(
        result.stderr, "the source no longer holds a replayed item; its copy was removed"
    )
    assert line["key"] == describe_key(keys_of(p2)) and line["destinations_checked"] == [ap_label]
    assert get(job, 1, p2) is None  # not brought back
    assert get(job, 0, p2) is None
    assert FileDeadLetters(job.dead_letters).count() == 0


@pytest.mark.parametrize("ttl_deletes", ["skip", "replicate"])
def test_a_replayed_put_of_an_item_the_sources_ttl_deleted_since_stays_under_skip(
    job: Job, ttl_deletes: str
) -> None:
    """The put was dead-lettered; the item then expired and the source's TTL deleted it,
    a delete the replicator skips under ttl_deletes: skip: the replayed put is what eu
    keeps. Under replicate the TTL delete reached eu (removing nothing), and the copy is
    removed again like that of any item deleted since."""
    job.path.write_text(job.path.read_text() + f"ttl_deletes: {ttl_deletes}\n")
    job.source.update_time_to_live(
        TableName=job.source_table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    eu_label = "/".join(job.destinations[0])
    expired = {**image("e", 100), "expires": {"N": str(int(time.time()) - 3600)}}
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, expired, 95, "throttled", "e", at_source=False)
    )

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    if ttl_deletes == "skip":
        assert (
            "(the source has deleted it since, expired at the source (expires in the past "
            "five years), ttl_deletes: skip: kept)"
        ) in result.stdout
        assert get(job, 0, expired) == expired
    else:
        assert "(the source has deleted it since: removed again)" in result.stdout
        assert get(job, 0, expired) is None


@pytest.mark.parametrize("expires", ["0", "-5", "1.5", "1600000000"])
def test_a_replayed_put_whose_expiry_the_sources_ttl_ignores_is_removed_again_under_skip(
    job: Job, expires: str
) -> None:
    """An expiry of 0 (often: never expires), a negative one, or one more than five years
    in the past is one DynamoDB's TTL never acts on: the source no longer holds the item
    because something else deleted it, and the replayed copy is removed again."""
    job.path.write_text(job.path.read_text() + "ttl_deletes: skip\n")
    job.source.update_time_to_live(
        TableName=job.source_table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    eu_label = "/".join(job.destinations[0])
    gone = {**image("z", 100), "expires": {"N": expires}}
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, gone, 96, "throttled", "e", at_source=False)
    )

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert "(the source has deleted it since: removed again)" in result.stdout
    assert "expired at the source" not in result.stdout
    assert get(job, 0, gone) is None


@pytest.mark.parametrize("conflict", ["conflict: {policy: overwrite}", LWW])
def test_a_replayed_put_of_an_item_the_source_changed_since_leaves_the_sources_image(
    job: Job, conflict: str
) -> None:
    """The source changed the item after the letter's change, and the newer image
    reached the destination first. The replay never leaves the older image there: under
    last_writer_wins its condition keeps the newer item (a lost conflict); under
    overwrite, which writes the old image, the source's image is written back over it."""
    job.path.write_text(job.path.read_text().replace(LWW, conflict))
    eu_label = "/".join(job.destinations[0])
    older, newer = image("q", 100, v="older"), image("q", 200, v="newer")
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, older, 61, "throttled", "throttled too long")
    )
    job.source.put_item(TableName=job.source_table, Item=newer)
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=newer)

    report = Redrive(load_job(job.path)).run()

    assert (report.replayed, report.exit_code) == (1, 0)
    assert get(job, 0, older) == newer
    if conflict == LWW:
        assert report.lost == 1
    else:
        assert "(the source has changed it since: the source's image written)" in report.text()


def test_a_replay_the_policy_keeps_over_the_sources_image_is_noted_with_the_policys_reason(
    job: Job,
) -> None:
    """The letter's put (updated_at 100) is replayed; the source has since written the
    item with updated_at 50 (a writer's clock behind). The check against the source
    writes nothing, as the policy ranks the source's image below the destination's item:
    eu then differs from the source, and the summary says so, naming why, as verify
    would report it."""
    eu_label = "/".join(job.destinations[0])
    replayed, at_source = image("k", 100, v="letter"), image("k", 50, v="source")
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, replayed, 71, "throttled", "e", at_source=False)
    )
    job.source.put_item(TableName=job.source_table, Item=at_source)

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("  replayed")]
    assert line == (
        f"  replayed      {eu_label}: MODIFY pk=S:k sk=N:1 (sequence 71) (the source holds "
        f"another image, not written: the policy kept the destination's item at {eu_label}: "
        "last_writer_wins: the destination's item (updated_at=100) ranks above the put's "
        "image (updated_at=50); run `replicator verify` to compare them)"
    )
    assert get(job, 0, replayed) == replayed
    assert FileDeadLetters(job.dead_letters).count() == 0


def test_a_replay_the_policy_keeps_over_the_sources_deletion_says_the_source_deleted_it(
    job: Job,
) -> None:
    """The letter's put (updated_at 100) is replayed; another writer has since put the
    item at eu with updated_at 500, and the source has deleted it. The policy keeps eu's
    item over the removal: the note says the source deleted the item (it said "the source
    holds another image", the opposite of the truth)."""
    eu_label = "/".join(job.destinations[0])
    replayed, newer = image("d", 100, v="letter"), image("d", 500, v="eu's own")
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, replayed, 72, "throttled", "e", at_source=False)
    )
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=newer)

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("  replayed")]
    assert "(the source holds another image" not in line
    assert (
        "(the source has deleted it since, not removed: the policy kept the destination's "
        f"item at {eu_label}: the destination's item changed since it was read; run "
        "`replicator verify` to compare them)"
    ) in line
    assert get(job, 0, replayed) == newer


@pytest.mark.parametrize("purpose", [BACKFILL, REPAIR])
@pytest.mark.parametrize("conflict", ["conflict: {policy: overwrite}", LWW])
def test_a_replayed_synthetic_put_of_an_item_the_source_changed_since_leaves_the_sources_image(
    job: Job, conflict: str, purpose: str
) -> None:
    """A backfill (or repair) read image R and its write to eu was dead-lettered; the
    source then changed the item to C, and C's stream change did not reach eu either
    (dead-lettered too, in a letter this redrive does not hold). The replay writes R,
    which eu takes (it holds what the copy expected); C must follow, or eu keeps the
    stale R with nothing left to replace it."""
    job.path.write_text(job.path.read_text().replace(LWW, conflict))
    eu_label = "/".join(job.destinations[0])
    held, read, current = image("s", 50, v="held"), image("s", 100, v="read"), image("s", 200)
    expected = held if purpose == REPAIR else None
    eu, eu_table = job.destination_clients()[0]
    if expected is not None:
        eu.put_item(TableName=eu_table, Item=expected)
    job.source.put_item(TableName=job.source_table, Item=current)
    copy = synthetic_change(purpose, keys_of(read), "us-east-1", new_image=read, expected=expected)
    letter = _letter(job, eu_label, copy.raw, "throttled", "throttled too long", keys_of(read))
    FileDeadLetters(job.dead_letters).put(replace(letter, shard_id=purpose))

    replayed_at_eu_only(
        job, "(the source has changed it since: the source's image written)", current
    )


def test_a_replayed_put_the_source_still_holds_as_it_is_stays(job: Job) -> None:
    eu_label = "/".join(job.destinations[0])
    item = image("r", 100, v="kept")
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, item, 71, "throttled", "throttled too long")
    )

    report = Redrive(load_job(job.path)).run()

    assert (report.replayed, report.exit_code) == (1, 0)
    assert get(job, 0, item) == item
    assert "since" not in report.text()


@pytest.mark.parametrize("conflict", ["conflict: {policy: overwrite}", LWW])
def test_a_wide_replayed_put_of_an_item_the_source_changed_since_leaves_the_sources_image(
    job: Job, conflict: str
) -> None:
    """The letter's image and the source's have 302 attributes, the same timestamp and
    every other value different. The replayed put lands, and the source's image is
    written over it while the destination still holds the replayed image, on a condition
    that compares as much of it as one 4 KB expression holds: no letter is left behind."""
    job.path.write_text(job.path.read_text().replace(LWW, conflict))
    eu_label = "/".join(job.destinations[0])
    width = range(299)
    older = image("w", 100, **{f"a{index}": "older" for index in width})
    newer = image("w", 100, **{f"a{index}": "newer" for index in width})
    FileDeadLetters(job.dead_letters).put(
        stream_letter(job, eu_label, older, 81, "throttled", "throttled too long")
    )
    job.source.put_item(TableName=job.source_table, Item=newer)

    report = Redrive(load_job(job.path)).run()

    assert (report.replayed, report.exit_code) == (1, 0), report.text()
    assert get(job, 0, older) == newer
    assert "dead-lettered" not in report.text()
    assert FileDeadLetters(job.dead_letters).count() == 0


# -- a replayed delete checked against the source --------------------------------------------

OVERWRITE = "conflict: {policy: overwrite}"


def soft_deleting(incoming: Any, existing: Any) -> Any:
    """A resolver that keeps a marker for a deleted item (an application's soft delete)."""
    if incoming.event.value == "REMOVE":
        return {**incoming.keys, "updated_at": {"N": "0"}, "deleted": {"BOOL": True}}
    return True


def test_a_replayed_put_of_an_item_deleted_since_is_removed_as_the_resolver_decides(
    job: Job,
) -> None:
    """Under custom, the run left the resolver's soft-delete marker for the delete that
    followed the dead-lettered put. The replay puts the image over it; the source no
    longer holds the item, and the copy's removal is the resolver's to decide, as the
    delete was: the marker comes back (a plain delete left no item at all)."""
    custom = f"conflict: {{policy: custom, resolver: '{__name__}:soft_deleting'}}"
    job.path.write_text(job.path.read_text().replace(LWW, custom))
    eu_label = "/".join(job.destinations[0])
    put = image("m", 100, v="put")
    marker = {**keys_of(put), "updated_at": {"N": "0"}, "deleted": {"BOOL": True}}
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=marker)
    FileDeadLetters(job.dead_letters).put(
        stream_letter(
            job, eu_label, put, 51, "resolver_failed", "custom resolver raised", at_source=False
        )
    )

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert "(the source has deleted it since: its removal as the resolver decided)" in (
        result.stdout
    )
    assert get(job, 0, put) == marker
    assert FileDeadLetters(job.dead_letters).count() == 0


def delete_letter(job: Job, destination: str, old: Item, seq: int) -> DeadLetter:
    """The letter of a stream change deleting ``old`` (the REMOVE's old image)."""
    record = stream_record("REMOVE", keys_of(old), old=item_to_wire(old), seq=seq)
    letter = _letter(job, destination, daemon_record(record, seq), "throttled", "e", keys_of(old))
    return replace(letter, event="REMOVE")


@pytest.mark.parametrize("conflict", [OVERWRITE, LWW])
def test_a_replayed_delete_of_an_item_the_source_holds_again_leaves_the_sources_image(
    job: Job, conflict: str
) -> None:
    """Put X → replicated to eu; delete X → dead-lettered at eu; the source creates X
    again, and that reaches eu: under overwrite it replaces the old image; under
    last_writer_wins it carries an earlier timestamp (its writer's clock is behind) and
    loses to the old image, which the delete was meant to remove. The redrive replays
    the delete, which removes what eu holds; the source holds X. eu must not be left
    without it: the source's image is written there again."""
    job.path.write_text(job.path.read_text().replace(LWW, conflict))
    eu_label = "/".join(job.destinations[0])
    first, again = image("x", 100, v="first"), image("x", 90, v="created again")
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=first if conflict == LWW else again)
    job.source.put_item(TableName=job.source_table, Item=again)
    FileDeadLetters(job.dead_letters).put(delete_letter(job, eu_label, first, 81))

    replayed_at_eu_only(job, "(the source holds it again: its image written)", again)


@pytest.mark.parametrize("conflict", [OVERWRITE, LWW])
def test_a_replayed_delete_never_overwrites_a_newer_item_than_the_source_read(
    job: Job, conflict: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the source changes X again just after the redrive has read it, and
    the replicator applies that change at eu before the redrive writes the image it
    read: eu keeps the newer item (under overwrite the image read is written only where
    eu holds no item; under last_writer_wins only over an item that ranks below it)."""
    from replicator.tools import snapshot

    job.path.write_text(job.path.read_text().replace(LWW, conflict))
    eu_label = "/".join(job.destinations[0])
    first, again = image("y", 100, v="first"), image("y", 90, v="created again")
    newer = image("y", 300, v="newer")
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=first if conflict == LWW else again)
    job.source.put_item(TableName=job.source_table, Item=again)
    FileDeadLetters(job.dead_letters).put(delete_letter(job, eu_label, first, 82))
    read = snapshot.batch_get

    def read_then_changed(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        job.source.put_item(TableName=job.source_table, Item=newer)
        eu.put_item(TableName=eu_table, Item=newer)  # replicated in between
        return found

    monkeypatch.setattr(snapshot, "batch_get", read_then_changed)

    report = Redrive(load_job(job.path)).run()

    assert (report.replayed, report.exit_code) == (1, 0)
    assert get(job, 0, newer) == newer
    assert "holds it again" not in report.text()
    assert FileDeadLetters(job.dead_letters).count() == 0


def test_a_replayed_synthetic_delete_of_an_item_the_source_holds_again_leaves_it(
    job: Job,
) -> None:
    """A repair's delete of an item extra at eu (the source had deleted it, and that
    delete had not reached eu yet) failed and was dead-lettered. The source then creates
    the item again with the very same image, and eu gets it. The replayed delete finds
    eu holding exactly the image it expects, and removes it: the source's image is
    written again, as for a stream letter."""
    job.path.write_text(job.path.read_text().replace(LWW, OVERWRITE))
    eu_label = "/".join(job.destinations[0])
    item = image("z", 100, v="same")
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=item)
    job.source.put_item(TableName=job.source_table, Item=item)
    extra = synthetic_change(REPAIR, keys_of(item), "us-east-1", new_image=None, expected=item)
    letter = _letter(job, eu_label, extra.raw, "throttled", "throttled too long", keys_of(item))
    FileDeadLetters(job.dead_letters).put(replace(letter, event="REMOVE", shard_id=REPAIR))

    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert "(the source holds it again: its image written)" in result.stdout
    (line,) = logged(
        result.stderr, "the source holds an item a replayed delete removed; its image was written"
    )
    assert line["key"] == describe_key(keys_of(item)) and line["destinations_checked"] == [eu_label]
    assert get(job, 0, item) == item


def test_a_source_image_a_replayed_delete_cannot_write_back_is_dead_lettered(job: Job) -> None:
    """The source created the item again with a timestamp last_writer_wins cannot order
    (a BOOL: its stream put was dead-lettered too, so eu still holds the deleted image).
    The replayed delete removes that image; the source's image cannot be written after
    it, and that write is a dead letter of the redrive, in the job's target, as the
    check of a replayed put leaves one."""
    eu_label = "/".join(job.destinations[0])
    first, again = image("w", 100, v="first"), image("w", {"BOOL": True}, v="created again")
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item=first)
    job.source.put_item(TableName=job.source_table, Item=again)
    target = FileDeadLetters(job.dead_letters)
    target.put(delete_letter(job, eu_label, first, 83))

    report = Redrive(load_job(job.path)).run()

    # Replayed, but the destination is not as the source: exit 1, as for a letter
    # that failed again, so that a scheduled redrive's exit status shows it.
    assert (report.replayed, report.check_letters, report.exit_code) == (1, 1, 1)
    assert "(checking it against the source failed: dead-lettered, see the target)" in (
        report.text()
    )
    assert (
        "1 replayed, 0 failed again (kept in the target), 1 new letter from checking replays "
        "against the source (in the target: the next redrive replays them)"
    ) in report.text()
    assert get(job, 0, again) is None
    (kept,) = target.letters()
    assert (kept.shard_id, kept.destination, kept.reason) == ("redrive", eu_label, "unplannable")
    assert kept.event == "MODIFY" and kept.keys == item_to_wire(keys_of(again))


def test_a_queues_letter_the_source_check_dead_letters_waits_for_the_next_redrive(
    job: Job,
) -> None:
    """As with a file: the letter that checking a replayed put against the source stores
    (the source's image, whose timestamp last_writer_wins cannot order) is not replayed
    by the redrive that stored it (it was received again at once, failed again and was
    counted as a second letter of the run); the run ends with exit 1, a new letter
    being in the target."""
    sqs, queue = use_queue(job)
    eu_label = "/".join(job.destinations[0])
    replayed = image("n", 100, v="replayed")
    letter = stream_letter(job, eu_label, replayed, 91, "unplannable", "ts was a BOOL")
    SqsDeadLetters(sqs, queue).put(letter)
    now = image("n", {"BOOL": True}, v="changed since")
    job.source.put_item(TableName=job.source_table, Item=now)

    result = redrive(job)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "redrive of SQS queue " in result.stdout
    assert "1 letter, 1 replayed, 0 failed again" in result.stdout, result.stdout
    assert "1 new letter from checking replays against the source" in result.stdout
    assert "(checking it against the source failed: dead-lettered, see the target)" in (
        result.stdout
    )
    assert get(job, 0, replayed) == replayed
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)[
        "Messages"
    ]
    kept = DeadLetter.from_json(message["Body"])
    assert (kept.shard_id, kept.destination, kept.reason, kept.attempts) == (
        "redrive",
        eu_label,
        "unplannable",
        1,
    )
    assert kept.keys == item_to_wire(keys_of(now))
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )

    again = redrive(job)  # the next redrive takes it up

    assert again.returncode == 1, again.stdout + again.stderr
    assert "1 letter, 0 replayed, 1 failed again" in again.stdout, again.stdout


def test_a_second_redrive_of_the_same_file_is_refused_while_the_first_runs(job: Job) -> None:
    """The first is stuck on a letter eu keeps throttling; the second would replay the
    aside file the first is working through (each letter twice) and fail once the
    first removed it: it is refused up front instead, touching nothing."""
    target = eu_letters(job, 51)
    items = [image(name) for name in "abc"]
    seen: dict[str, Any] = {}

    def second_redrive() -> None:
        seen["aside"] = aside_file(job)
        seen["before"] = seen["aside"].read_bytes()
        seen["second"] = as_a_process(job, timeout=60)  # a process racing this one's

    with eu_throttled(job) as proxy:
        report = interrupted_while_retrying(job, proxy, meanwhile=second_redrive)
    aside, before, second = seen["aside"], seen["before"], seen["second"]

    assert second.returncode == 3, second.stdout + second.stderr
    assert second.stdout == ""
    (line,) = [text for text in second.stderr.splitlines() if not text.startswith("{")]
    assert line == (
        f"replicator: another redrive of the dead letters in file {job.dead_letters} is "
        f"running (pid {os.getpid()}) (it holds {job.dead_letters}.redrive.lock); wait for "
        "it to end, or stop it first"
    )
    assert aside.read_bytes() == before
    assert (report.replayed, report.exit_code) == (0, 1)
    assert target.holding() == {aside: 3}
    job.write()  # eu straight at the server again
    again = Redrive(load_job(job.path)).run()
    assert (again.replayed, again.exit_code) == (3, 0)
    assert [get(job, 0, item) for item in items] == items
    assert sorted(p.name for p in job.directory.glob("dead.jsonl*")) == []


def test_the_letters_of_a_redrive_killed_mid_way_are_replayed_by_the_next(job: Job) -> None:
    """kill -9 leaves the aside file (and the replay's lock file): the kernel let go of
    the lock with the process, so the next redrive takes the letters up."""
    target = eu_letters(job, 61)
    items = [image(name) for name in "abc"]
    with eu_throttled(job) as proxy:
        process = started(job, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            retrying(proxy)
        finally:
            process.kill()
            process.wait(timeout=30)
    job.write()

    assert target.holding() == {aside_file(job): 3}
    result = redrive(job)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 letters, 3 replayed, 0 failed again" in result.stdout
    assert [get(job, 0, item) for item in items] == items
    assert sorted(p.name for p in job.directory.glob("dead.jsonl*")) == []


def test_a_letter_of_a_delete_without_an_image_deletes_the_key_the_replicator_read(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A moto NEW_IMAGE stream's REMOVE carries its binary key encoded twice and no image;
    the replicator read it once more, having learned the stream's encoding, and its
    letter keeps the key it read: the replay deletes that item, not the one keyed by the
    base64 text of its key."""
    name = unique("redrive-binary")
    path, source, destination = binary_key_job(moto_endpoint, name, tmp_path, stream="NEW_IMAGE")
    key, text = b"\x80", base64.b64encode(b"\x80")  # the key, and its base64 text
    for number, held in enumerate([key, text]):
        item = {"pk": {"B": held}, "n": {"N": str(number)}}
        destination.put_item(TableName=f"{name}-eu", Item=item)
    source.put_item(TableName=f"{name}-src", Item={"pk": {"B": text}, "n": {"N": "1"}})
    twice = {"pk": {"B": base64.b64encode(text).decode()}}
    record = daemon_record(stream_record("REMOVE", twice, None, None, seq=5), 5)
    letter = DeadLetter(
        record=record,
        destination=f"eu-west-1/{name}-eu",
        reason="throttled",
        error="e",
        task_name=name,
        shard_id="shardId-1",
        event="REMOVE",
        keys=item_to_wire({"pk": {"B": key}}),
    )
    FileDeadLetters(tmp_path / "dead.jsonl").put(letter)
    result = redrive(path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 letter, 1 replayed, 0 failed again" in result.stdout
    items = destination.scan(TableName=f"{name}-eu", ConsistentRead=True)["Items"]
    assert [item["pk"]["B"] for item in items] == [text]


def test_a_modify_too_large_for_the_queue_is_kept_without_its_old_image_and_replays(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A MODIFY of an item of ~395 KB of random bytes carries both images: its letter is
    larger than a 1 MiB queue takes even compressed. It is stored without the old image
    (a replayed put does not need it), the shard goes on, and once the destination takes
    the item (its index dropped) a redrive writes the new image."""
    name = unique("bigletter")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    ((eu, eu_table),) = job.destination_clients()
    with_email_index(eu, eu_table)  # an index key must be a non-empty string
    sqs, queue = use_queue(job)
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"MaximumMessageSize": "1048576"})
    first = image("big", 1, email="big@example.com") | {"blob": {"B": os.urandom(395_000)}}
    second = image("big", 2, email="") | {"blob": {"B": os.urandom(395_000)}}
    later = image("later", 3, email="later@example.com")
    job.source.put_item(TableName=job.source_table, Item=first)
    job.source.put_item(TableName=job.source_table, Item=second)  # rejected at eu
    job.source.put_item(TableName=job.source_table, Item=later)
    log_path = tmp_path / "runtime.log"
    runtime = job.start(log_path)
    try:
        last = job.last_stream_sequence()

        def checkpointed() -> bool:
            assert runtime.poll() is None, log_path.read_text()[-3000:]
            rows = job.lease_rows()
            return bool(rows) and rows[0].get("checkpoint", {}).get("S") == last

        wait_until(checkpointed, 60, "the checkpoint to pass the dead-lettered MODIFY")
    finally:
        assert stop(runtime) == 0
    assert get(job, 0, later) == later
    assert get(job, 0, first) == first  # the MODIFY was not applied
    (message,) = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
    )["Messages"]
    letter = DeadLetter.from_json(message["Body"])
    assert (letter.event, letter.reason) == ("MODIFY", "rejected")
    data = json.loads(base64.b64decode(letter.record["data"]))
    assert "OldImage" not in data["dynamodb"] and "NewImage" in data["dynamodb"]
    assert letter.left_out is not None and letter.left_out["image"] == "OldImage"
    assert "MaximumMessageSize" in letter.left_out["why"]
    logged = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    (warning,) = [line for line in logged if "without its OldImage" in line.get("event", "")]
    assert warning["sequence_number"] == letter.record["sequenceNumber"]
    assert warning["key"] == "pk=S:big sk=N:1"

    eu.update_table(
        TableName=eu_table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by-email"}}]
    )
    result = redrive(job)

    assert result.returncode == 0, result.stderr
    assert "1 letter, 1 replayed, 0 failed again" in result.stdout, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "replayed      " in line]
    assert line.endswith(
        "MODIFY pk=S:big sk=N:1 (sequence " + letter.record["sequenceNumber"] + ")"
    )
    assert get(job, 0, second) == second
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)
