"""The operator tools against a dead-letter target that does not take letters (a moto
server over HTTP, an SQS queue behind a fault proxy, a file path made a directory): the
target is checked before the tool starts, a store that keeps failing ends the tool with
exit 3 naming what was not stored, and stop signals end the store's retries."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from replicator.config.loader import load_job
from replicator.deadletter import DeadLetter, FileDeadLetters, SqsDeadLetters
from replicator.exceptions import EnvironmentProblem
from replicator.items import Item
from replicator.tools import snapshot
from replicator.tools.backfill import Backfill, BackfillHooks, BackfillOptions
from replicator.tools.redrive import Redrive
from tests.support.aws import client
from tests.support.cli import in_process
from tests.support.e2e import PATIENCE, Job, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.tools import run_within
from tests.tools.test_redrive import (
    eu_throttled,
    get,
    image,
    interrupted_while_retrying,
    stream_letter,
)

# An image last_writer_wins can never order: every write of it fails for good, so it
# is dead-lettered (a backfill's copy) or fails again (a redrive's letter).
UNORDERED = {"BOOL": True}


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("dlq"), tmp_path)


def queue_behind(job: Job, proxy: FaultProxy | None = None) -> tuple[Any, str]:
    """A new queue for the job's dead letters, reached through ``proxy`` (or straight at
    the server): its client (straight at the server) and URL."""
    sqs = client("sqs", "us-east-1", job.endpoint)
    queue = sqs.create_queue(QueueName=f"{job.name}-dlq")["QueueUrl"]
    dead_letters_in(job, queue, proxy.url if proxy else job.endpoint)
    return sqs, queue


def dead_letters_in(job: Job, queue: str, endpoint: str) -> None:
    job.path.write_text(
        job.path.read_text().replace(
            f"dead_letter: {{kind: file, path: '{job.dead_letters}'}}",
            f"dead_letter: {{kind: sqs, queue_url: '{queue}', endpoint_url: '{endpoint}'}}",
        )
    )


def command(job: Job, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args, "--config", str(job.path)],
        capture_output=True,
        text=True,
        timeout=timeout * PATIENCE,
        check=False,
    )


def message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def queued(sqs: Any, queue: str) -> tuple[int, int]:
    """The queue's messages: (visible, hidden by a receive)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


@pytest.mark.parametrize(
    "args",
    [
        ("redrive",),
        ("backfill", "--skip-handoff-check"),
        ("verify", "--repair", "--recheck", "1", "--recheck-pause", "0"),
    ],
    ids=["redrive", "backfill", "verify --repair"],
)
def test_a_dead_letter_queue_that_does_not_answer_is_exit_3_before_the_tool_starts(
    job: Job, args: tuple[str, ...]
) -> None:
    """As ``run`` refuses to start: one line naming the setting, the queue and the
    endpoint, within the SDK's retries of one request, not a hang at the first letter."""
    job.source.put_item(TableName=job.source_table, Item=image("a"))
    proxy = FaultProxy(job.endpoint).start()
    try:
        _, queue = queue_behind(job, proxy)
        proxy.refuse()  # the port bound, not listening: every connection refused
        started = time.monotonic()
        result = command(job, *args)
        took = time.monotonic() - started
    finally:
        proxy.stop()

    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = message_lines(result.stderr)
    assert line.startswith(
        f"replicator: dead_letter.queue_url: dead-letter queue {queue}: cannot reach "
        f"{proxy.url} (us-east-1)"
    ), line
    assert took < 30 * PATIENCE
    if args[0] == "backfill":
        (eu, eu_table), _ = job.destination_clients()
        assert eu.scan(TableName=eu_table)["Items"] == []  # nothing copied


def test_a_dead_letter_path_that_cannot_be_written_is_exit_3_before_a_backfill_copies(
    job: Job,
) -> None:
    """Even when no item would need a dead letter: the target is checked as run checks
    it, before the first item is read."""
    job.source.put_item(TableName=job.source_table, Item=image("a"))
    job.dead_letters.mkdir()

    # In this process: a refusal the command decides before any read, judged by its exit
    # status, its line and the empty destination. The test above runs each tool as a
    # process of its own, bounded by a timeout: what it guards against is a hang.
    result = in_process("backfill", "--skip-handoff-check", "--config", str(job.path))

    assert result.returncode == 3, result.stdout + result.stderr
    (line,) = message_lines(result.stderr)
    assert line.startswith(
        f"replicator: dead_letter.path: the dead-letter file {job.dead_letters} cannot be "
        "written: it is a directory, not a file: name a file in it, or remove the directory"
    ), line
    assert "chown" not in line  # no owner or mode makes a directory a file
    (eu, eu_table), _ = job.destination_clients()
    assert eu.scan(TableName=eu_table)["Items"] == []


def unorderable(job: Job, name: str) -> Item:
    item = image(name, UNORDERED)
    job.source.put_item(TableName=job.source_table, Item=item)
    return item


def test_a_queue_that_stops_answering_mid_backfill_ends_it_with_exit_3_naming_the_letter(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue answers the check, then refuses connections: the copy's letter is not
    stored, so the page is not saved (the next run copies it again) and the command ends
    once the queue has not answered for the tools' bound, naming the record's key and
    the queue."""
    monkeypatch.setattr(snapshot, "UNANSWERED_FOR_S", 2.0)
    unorderable(job, "a")
    proxy = FaultProxy(job.endpoint).start()
    try:
        sqs, queue = queue_behind(job, proxy)
        hooks = BackfillHooks(page_scanned=lambda segment, items: proxy.refuse())
        runner = Backfill(
            load_job(job.path), BackfillOptions(skip_handoff_check=True, segments=1), hooks=hooks
        )
        with pytest.raises(EnvironmentProblem) as raised:
            run_within(runner, 60)
    finally:
        proxy.stop()

    message = str(raised.value)
    assert message.startswith("the dead letter for record 0 (destination "), message
    assert "key pk=S:a sk=N:1) could not be stored: SQS SendMessage on " in message
    assert f"{queue} got no answer for 2 s" in message and proxy.url in message, message
    assert message.endswith("progress is saved: fix it and run the backfill again to continue")
    assert queued(sqs, queue) == (0, 0)
    # The page was not saved: run again with the queue back, its letters are stored.
    job.path.write_text(job.path.read_text().replace(proxy.url, job.endpoint))
    again = Backfill(load_job(job.path), BackfillOptions(skip_handoff_check=True)).run()
    assert again.overall.dead_lettered == 2  # the copy, for each destination
    assert queued(sqs, queue) == (2, 0)


def test_a_dead_letter_file_made_unwritable_mid_backfill_ends_it_with_exit_3(job: Job) -> None:
    unorderable(job, "a")
    hooks = BackfillHooks(page_scanned=lambda segment, items: job.dead_letters.mkdir())
    runner = Backfill(
        load_job(job.path), BackfillOptions(skip_handoff_check=True, segments=1), hooks=hooks
    )

    with pytest.raises(EnvironmentProblem) as raised:
        run_within(runner, 60)

    message = str(raised.value)
    assert "key pk=S:a sk=N:1) could not be stored: cannot append to dead-letter file " in message
    assert f"{job.dead_letters}: Is a directory" in message, message


def test_two_sigterms_stop_a_redrive_whose_letter_the_queue_keeps_throttling(
    job: Job, tmp_path: Path
) -> None:
    """The letter fails again and is being put back while the queue throttles every
    send (an answer: waited out, not bounded): a first SIGTERM gives it the letter's
    grace, a second ends it at once, the letter kept in the queue as it was."""
    eu_label = "/".join(job.destinations[0])
    errors = tmp_path / "stderr"
    proxy = FaultProxy(job.endpoint).start()
    try:
        sqs, queue = queue_behind(job, proxy)
        letter = stream_letter(job, eu_label, image("a", UNORDERED), 11, "unplannable", "e")
        SqsDeadLetters(sqs, queue).put(letter)
        proxy.set(Mode(Fault.THROTTLE, operations=frozenset({"SendMessage"})))
        with errors.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "replicator", "redrive", "--config", str(job.path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            wait_until(lambda: proxy.counts("SendMessage")["throttled"] >= 2, 30, "retries")
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: "SIGTERM received" in errors.read_text(), 10, "the first stop")
            process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=5 * PATIENCE)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    finally:
        proxy.stop()

    assert process.returncode == 1, stdout + errors.read_text()
    assert stdout.startswith(
        f"redrive of SQS queue {queue}: 1 letter handled before it stopped, 0 replayed, 1 "
        "failed again (kept in the target); interrupted: the rest are still in the target "
        "(the next redrive takes them up)"
    ), stdout
    # The letter as it was, visible again at once for the next redrive.
    assert queued(sqs, queue) == (1, 0)
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert DeadLetter.from_json(message["Body"]) == letter


def test_an_interrupted_sqs_redrive_leaves_no_letter_hidden(job: Job) -> None:
    """A receive takes up to 10 messages and hides them for 15 minutes: those the
    redrive did not replay are made visible again as it stops, so that a redrive run
    at once replays every letter instead of reporting a queue that looks empty."""
    eu_label = "/".join(job.destinations[0])
    sqs, queue = queue_behind(job)
    target = SqsDeadLetters(sqs, queue)
    items = [image(f"i{n:02}") for n in range(25)]
    for seq, item in enumerate(items, start=100):
        target.put(stream_letter(job, eu_label, item, seq, "throttled", "e"))
    with eu_throttled(job) as proxy:
        report = interrupted_while_retrying(job, proxy)
    job.write()  # eu straight at the server again
    dead_letters_in(job, queue, job.endpoint)

    assert (report.replayed, report.exit_code) == (0, 1)
    assert queued(sqs, queue) == (25, 0)
    again = Redrive(load_job(job.path)).run()
    assert (again.replayed, again.exit_code) == (25, 0)
    assert [get(job, 0, item) for item in items] == items
    assert queued(sqs, queue) == (0, 0)


class _MadeUnwritable(FileDeadLetters):
    """The file target, whose path becomes a directory once the replay has taken the
    letters aside (a volume remounted, a hand's mistake)."""

    def claim_all(self) -> Any:
        for claimed in super().claim_all():
            if not self.path.exists():
                self.path.mkdir()
            yield claimed


def test_a_letter_that_cannot_be_put_back_ends_the_redrive_with_exit_3_and_stays(
    job: Job,
) -> None:
    eu_label = "/".join(job.destinations[0])
    target = FileDeadLetters(job.dead_letters)
    a, b = image("a", UNORDERED), image("b")
    target.put(stream_letter(job, eu_label, a, 11, "unplannable", "e"))
    target.put(stream_letter(job, eu_label, b, 12, "throttled", "e"))

    report = Redrive(load_job(job.path)).run(_MadeUnwritable(job.dead_letters))

    assert report.exit_code == 3
    first_line = report.text().splitlines()[0]
    assert (
        "stopped: the letter of record 11 (eu-west-1/" in first_line
        and "MODIFY pk=S:a sk=N:1) could not be put back in the target after its replay, so "
        "it stays there as it was: cannot append to dead-letter file "
        in first_line
    ), first_line
    assert get(job, 0, b) is None  # the rest untried
    job.dead_letters.rmdir()
    (aside,) = target.holding()
    assert [letter.record["sequenceNumber"] for letter in FileDeadLetters(aside).letters()] == [
        "11",
        "12",
    ]
    again = Redrive(load_job(job.path)).run()
    assert (again.replayed, again.failed) == (1, 1)
    assert get(job, 0, b) == b
