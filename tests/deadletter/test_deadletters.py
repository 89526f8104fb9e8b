"""Dead-letter targets: durable, whole, replayable (file and SQS over moto)."""

from __future__ import annotations

import base64
import fcntl
import json
import multiprocessing
import os
import shutil
import stat
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from botocore.exceptions import ClientError

from replicator.aws import clients
from replicator.aws.clients import Place
from replicator.buffer import ChangeBuffer
from replicator.config.model import ConflictConfig
from replicator.deadletter import Claimed, DeadLetter, FileDeadLetters, SqsDeadLetters, Unreadable
from replicator.deadletter.entry import _TYPES
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.exceptions import DeadLetterFormatError, DeadLetterUnavailable
from replicator.items import image_digest
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.rules import rule_for, squash_order
from replicator.tools.snapshot import REPAIR, synthetic_change
from replicator.writers.destination import DestinationWriter
from tests.support.aws import client, create_table
from tests.support.deadletters import malformed
from tests.support.e2e import wait_until
from tests.support.metrics import sample
from tests.support.records import daemon_record, put, stream_record


def letter(seq: int, size: int = 0) -> DeadLetter:
    image = {"pk": {"S": f"k{seq}"}, "blob": {"S": "x" * size}}
    record = daemon_record(stream_record("INSERT", {"pk": {"S": f"k{seq}"}}, image, seq=seq), seq)
    return DeadLetter(
        record=record,
        destination="eu",
        reason="rejected",
        error="boom",
        task_name="t",
        shard_id="s",
    )


@pytest.mark.parametrize("what", sorted(malformed(letter(1))))
def test_what_is_not_a_letter_reads_as_a_format_error(what: str) -> None:
    """Whatever a file or queue holds, reading it raises the one error readers keep aside."""
    with pytest.raises(DeadLetterFormatError):
        DeadLetter.from_json(malformed(letter(1))[what])


def test_a_letter_with_fields_it_does_not_know_reads_and_keeps_them() -> None:
    """A letter written by a newer version replays here; stored again, it loses nothing."""
    body = json.loads(letter(1).to_json())
    body.update(priority="high", origin={"region": "eu-west-1"}, version=2)
    newer = DeadLetter.from_json(json.dumps(body))
    assert newer.record == letter(1).record
    assert newer.version == 2
    again = newer.retried("still failing", "rejected", run="r")
    for stored in (again.to_json(), again.to_compact_json()):
        reread = json.loads(stored)
        assert (reread["priority"], reread["origin"]) == ("high", {"region": "eu-west-1"})
        assert DeadLetter.from_json(stored) == again


def test_every_field_of_a_letter_is_checked_when_read() -> None:
    assert set(_TYPES) == {f.name for f in fields(DeadLetter)} - {"other_fields"}


def _append_many(path: str, start: int) -> None:
    target = FileDeadLetters(Path(path))
    for seq in range(start, start + 150):
        target.put(letter(seq, size=3000))


def test_concurrent_processes_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "dead" / "letters.jsonl"
    workers = [
        multiprocessing.Process(target=_append_many, args=(str(path), n * 1000)) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    assert len({json.loads(line)["record"]["sequenceNumber"] for line in lines}) == 600


def test_a_letter_the_file_holds_is_not_appended_again(tmp_path: Path) -> None:
    """The same failure stored again (after a restart: another time, another error text)
    appends nothing; any other letter is stored, also one of the same sequence number."""
    path = tmp_path / "letters.jsonl"
    target = FileDeadLetters(path)
    assert target.put(letter(1)) is True
    again = replace(letter(1), error="boom again", time="2030-01-01T00:00:00.000+00:00")
    assert target.put(again) is False
    assert FileDeadLetters(path).put(again) is False  # another process reads the file
    others = [
        replace(letter(1), reason="unplannable"),
        replace(letter(1), destination="ap"),
        replace(letter(1), shard_id="s2"),
        replace(letter(1), task_name="t2"),
        replace(letter(1), record={**letter(1).record, "subSequenceNumber": 1}),
        # A backfill's letters are all numbered 0: another item's is another change.
        replace(letter(1), record={**letter(1).record, "data": letter(2).record["data"]}),
    ]
    assert [target.put(other) for other in others] == [True] * len(others)
    assert [target.put(other) for other in others] == [False] * len(others)
    assert target.count() == 1 + len(others)


@pytest.mark.parametrize("name", ["dead[1].jsonl", "a*.jsonl", "what?.jsonl"])
def test_a_file_whose_name_reads_as_a_pattern_claims_its_own_letters_only(
    tmp_path: Path, name: str
) -> None:
    """Its name was read as a glob pattern: ``dead[1].jsonl`` set its letters aside and
    never found them again (a redrive said "no dead letters", exit 0), ``a*.jsonl`` took
    another file's aside letters (another job's)."""
    target = FileDeadLetters(tmp_path / name)
    for seq in (1, 2):
        assert target.put(letter(seq)) is True
    other = FileDeadLetters(tmp_path / "ab.jsonl")
    other.put(replace(letter(3), task_name="other"))
    (tmp_path / "ab.jsonl").rename(tmp_path / "ab.jsonl.redrive-1000")  # an interrupted redrive
    claimed = list(target.claim_all())
    assert sorted(c.letter.record["sequenceNumber"] for c in claimed) == ["1", "2"]
    for one in claimed:
        target.settle(one, replayed=True)
    assert list(target.claim_all()) == []
    assert (tmp_path / "ab.jsonl.redrive-1000").read_text().count("\n") == 1


def _put_the_same(path: str) -> None:
    target = FileDeadLetters(Path(path))
    for seq in range(40):
        target.put(letter(seq, size=2000))


def test_processes_storing_the_same_letters_at_once_store_each_once(tmp_path: Path) -> None:
    path = tmp_path / "letters.jsonl"
    workers = [multiprocessing.Process(target=_put_the_same, args=(str(path),)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    stored = [letter.record["sequenceNumber"] for letter in FileDeadLetters(path).letters()]
    assert sorted(stored, key=int) == [str(seq) for seq in range(40)]


def test_a_letter_a_redrive_took_since_is_stored_again(tmp_path: Path) -> None:
    """A run's index of the file is never trusted over the file: a redrive (another
    process) renamed the letters aside and removed them, or put one back."""
    path = tmp_path / "letters.jsonl"
    run = FileDeadLetters(path)
    assert run.put(letter(1)) is True
    assert run.put(letter(2)) is True
    redrive = FileDeadLetters(path)
    for claimed in redrive.claim_all():
        # 1 replayed and removed; 2 failed again and put back, with one more attempt.
        failed = claimed.letter.record["sequenceNumber"] == "2"
        again = claimed.letter.retried("still", "rejected", run="r") if failed else None
        redrive.settle(replace(claimed, letter=again or claimed.letter), replayed=not failed)

    assert run.put(letter(1)) is True
    assert run.put(letter(2)) is False  # the put-back letter stands for it
    stored = [(x.record["sequenceNumber"], x.attempts) for x in FileDeadLetters(path).letters()]
    assert stored == [("2", 2), ("1", 1)]


def test_a_letter_edited_out_of_the_file_in_place_is_stored_again(tmp_path: Path) -> None:
    """The file rewritten in place (same inode, as long or longer) without the letter the
    run's index knows: the index is checked against the line before a put is skipped."""
    path = tmp_path / "letters.jsonl"
    run = FileDeadLetters(path)
    assert run.put(letter(1)) is True
    with path.open("r+b") as file:  # letter 1's line replaced by another, longer one
        file.write(letter(2, size=100).to_json().encode() + b"\n")
    assert run.put(letter(1)) is True
    stored = [x.record["sequenceNumber"] for x in FileDeadLetters(path).letters()]
    assert stored == ["2", "1"]


def test_file_replay_keeps_failures_and_resumes_an_interrupted_replay(tmp_path: Path) -> None:
    target = FileDeadLetters(tmp_path / "letters.jsonl")
    for seq in range(1, 6):
        target.put(letter(seq))
    claimed = target.claim_all()
    first = next(claimed)
    target.settle(first, replayed=True)
    second = next(claimed)
    target.settle(second, replayed=False)  # failed again: back into the live file
    del claimed  # interrupted: letters 3-5 stay in the aside file
    assert target.count() == 4
    replayed = [c.letter.record["sequenceNumber"] for c in target.claim_all()]
    assert sorted(replayed) == ["2", "3", "4", "5"]


def test_a_letter_written_while_a_redrive_renames_the_file_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard process opens the live file; before it takes the lock, a redrive renames
    that file aside, replays it and deletes it. The letter must land in the live file."""
    path = tmp_path / "letters.jsonl"
    FileDeadLetters(path).put(letter(1))
    real_flock = fcntl.flock
    replayed: list[str] = []

    def flock_after_a_redrive(file: Any, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not replayed:
            replayed.append("running")  # the redrive's own locking goes straight through
            redrive = FileDeadLetters(path)
            for claimed in redrive.claim_all():
                replayed.append(claimed.letter.record["sequenceNumber"])
                redrive.settle(claimed, replayed=True)
        real_flock(file, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_redrive)
    FileDeadLetters(path).put(letter(2))
    monkeypatch.undo()

    assert replayed == ["running", "1"]
    assert [stored.record["sequenceNumber"] for stored in FileDeadLetters(path).letters()] == ["2"]
    assert FileDeadLetters(path).count() == 1


def test_creating_and_renaming_the_file_are_fsynced_in_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsynced line in a file whose directory entry is not durable can vanish in a
    crash; so can a rename that the replay then relies on."""
    real_fsync = os.fsync
    directories: list[str] = []

    def fsync(descriptor: int) -> None:
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            directories.append("fsync")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    target = FileDeadLetters(tmp_path / "letters.jsonl")
    target.put(letter(1))
    assert directories == ["fsync"]  # the file was created
    target.put(letter(2))
    assert directories == ["fsync"]  # an append to an existing file needs none
    claimed = target.claim_all()
    first = next(claimed)
    assert len(directories) == 2  # renamed aside
    target.settle(first, replayed=True)
    assert len(directories) == 3  # its settled marker was created


def test_a_letter_appended_after_a_torn_line_is_read_back(tmp_path: Path) -> None:
    """A crash mid-append leaves a line without its newline; the next letter must not be
    glued to it (and lost with it)."""
    path = tmp_path / "letters.jsonl"
    target = FileDeadLetters(path)
    target.put(letter(1))
    torn = letter(2).to_json()
    with path.open("a", encoding="utf-8") as file:
        file.write(torn[: len(torn) // 2])
    target.put(letter(3))
    assert claim_everything(target) == ["1", "unreadable", "3"]
    # The torn line is kept as it is, on a line of its own, for someone to look at.
    assert path.read_text(encoding="utf-8") == torn[: len(torn) // 2] + "\n"


def claim_everything(target: FileDeadLetters | SqsDeadLetters) -> list[str]:
    """One full replay in which every letter is replayed: what it met, in order."""
    met = []
    for claimed in target.claim_all():
        if isinstance(claimed, Unreadable):
            met.append("unreadable")
        else:
            met.append(claimed.letter.record["sequenceNumber"])
            target.settle(claimed, replayed=True)
    return met


@pytest.mark.parametrize("what", sorted(malformed(letter(1))))
def test_a_line_that_is_not_a_letter_is_kept_once_and_the_replay_goes_on(
    tmp_path: Path, what: str
) -> None:
    path = tmp_path / "letters.jsonl"
    target = FileDeadLetters(path)
    bad = malformed(letter(2))[what]
    target.put(letter(1))
    with path.open("ab") as file:
        file.write(bad + b"\n")
    target.put(letter(3))

    assert claim_everything(target) == ["1", "unreadable", "3"]
    assert path.read_bytes() == bad + b"\n"  # kept byte for byte, for a person
    assert claim_everything(target) == ["unreadable"]  # and every replay goes past it
    assert path.read_bytes() == bad + b"\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["letters.jsonl"]


def torn_between_letters_1_and_3(tmp_path: Path) -> tuple[Path, FileDeadLetters]:
    """A live file holding letter 1, a torn line, then letter 3."""
    path = tmp_path / "letters.jsonl"
    target = FileDeadLetters(path)
    target.put(letter(1))
    with path.open("ab") as file:
        file.write(b'{"torn\n')
    target.put(letter(3))
    return path, target


def test_an_unreadable_line_is_named_where_it_is_kept(tmp_path: Path) -> None:
    """The aside file the line was read from is gone once the replay ends: the summary
    names the live file's line, where a person repairs or removes it."""
    path, target = torn_between_letters_1_and_3(tmp_path)
    met = []
    for claimed in target.claim_all():
        if isinstance(claimed, Unreadable):
            met.append(claimed.where)
        else:
            target.settle(claimed, replayed=claimed.letter.record["sequenceNumber"] == "1")
    assert met == [f"{path} line 1"]  # letter 3, failed again, is put back after it
    assert path.read_bytes().split(b"\n")[0] == b'{"torn'
    target.put(letter(4))
    with path.open("ab") as file:
        file.write(b"not a letter\n")
    met = []
    for claimed in target.claim_all():  # every letter fails again: put back in order
        if isinstance(claimed, Unreadable):
            met.append(claimed.where)
        else:
            target.settle(claimed, replayed=False)
    assert met == [f"{path} line 1", f"{path} line 4"]
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b'{"torn' and lines[3] == b"not a letter"


def test_a_path_that_is_a_symbolic_link_is_replayed_through_it(tmp_path: Path) -> None:
    """A replay renames the link's target aside, not the link: renaming the link left
    the letters in its target, replayed again by every later redrive, and made the
    configured path a regular file."""
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "letters.jsonl"
    link = tmp_path / "letters.jsonl"
    link.symlink_to(real)
    target = FileDeadLetters(link)
    for seq in (1, 2, 3):
        target.put(letter(seq))
    assert FileDeadLetters(real).count() == 3

    claims = FileDeadLetters(link).claim_all()
    for claimed in claims:
        assert isinstance(claimed, Claimed)
        sequence_number = claimed.letter.record["sequenceNumber"]
        if sequence_number == "1":
            target.put(letter(4))  # the running replicator, meanwhile
        target.settle(claimed, replayed=sequence_number != "2")

    assert link.is_symlink() and link.resolve() == real
    kept = [stored.record["sequenceNumber"] for stored in FileDeadLetters(real).letters()]
    assert sorted(kept) == ["2", "4"]
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["letters.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["letters.jsonl", "real"]
    assert claim_everything(target) == ["4", "2"]
    assert not real.exists() and link.is_symlink()


def test_an_unreadable_line_is_kept_once_across_an_interrupted_replay(tmp_path: Path) -> None:
    """The interrupted replay has moved the bad line to the live file already; the next
    replay resumes the aside file after it, so it must not move it a second time."""
    path, target = torn_between_letters_1_and_3(tmp_path)
    claims = target.claim_all()
    first = next(claims)
    assert isinstance(first, Claimed)
    target.settle(first, replayed=True)
    assert isinstance(next(claims), Unreadable)
    claims.close()  # interrupted before letter 3

    assert claim_everything(target) == ["3", "unreadable"]
    assert path.read_bytes() == b'{"torn\n'


def test_an_unwritable_file_is_reported_not_ignored(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    target = FileDeadLetters(blocker / "letters.jsonl")
    with pytest.raises(DeadLetterUnavailable, match="cannot append") as raised:
        target.put(letter(1))
    # The cause, not mkdir's "File exists": the directory is a file.
    assert str(raised.value) == (
        f"cannot append to dead-letter file {blocker / 'letters.jsonl'}: "
        f"{blocker} is not a directory"
    )


def test_a_directory_removed_while_running_is_created_again_with_a_warning(
    tmp_path: Path,
) -> None:
    """Losing the letter would be worse than a directory someone removed coming back:
    the next letter creates it again and is kept, and a warning names the directory, so
    the removal does not go unnoticed."""
    directory = tmp_path / "letters"
    target = FileDeadLetters(directory / "dead.jsonl")
    target.put(letter(1))
    with structlog.testing.capture_logs() as first:
        target.put(letter(2))
    assert not [line for line in first if line["log_level"] == "warning"]
    shutil.rmtree(directory)
    with structlog.testing.capture_logs() as logged:
        target.put(letter(3))
        target.put(letter(4))
    assert [entry.record["sequenceNumber"] for entry in target.letters()] == ["3", "4"]
    (warning,) = [line for line in logged if line["log_level"] == "warning"]
    assert warning["event"].startswith("directory was missing, created it; if it was removed")
    assert warning["directory"] == str(directory)


def test_a_shard_that_cannot_store_a_dead_letter_stops_before_the_checkpoint_passes_it(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    table = unique("reject")
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    create_table(ddb, table, stream=None)
    rule = rule_for(ConflictConfig(), None)
    writer = DestinationWriter(
        label="eu", table=table, region="eu-west-1", client=ddb, rule=rule, metrics=metrics
    )
    stopped: list[BaseException] = []
    told = threading.Event()

    def on_fatal(error: BaseException) -> None:
        stopped.append(error)
        told.set()

    pipeline = ShardPipeline(
        {"eu": writer},
        ChangeBuffer(["eu"], squash_order([rule], ordered_stream=True)),
        metrics,
        "s",
        max_in_flight=2,
        max_buffered=10,
        dead_letters=DeadLetterer(FileDeadLetters(blocker / "x.jsonl"), metrics, "t", "s"),
        on_fatal=on_fatal,
    )
    bad = daemon_record(
        stream_record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}, "bad": {"NS": []}}, seq=1), 1
    )
    pipeline.submit(decode(bad))
    pipeline.dispatch()
    try:
        with pytest.raises(DeadLetterUnavailable):
            pipeline.flush(timeout=30)
    finally:
        pipeline.close()
    assert told.wait(30), "the processor was not told to stop"
    assert len(stopped) == 1 and isinstance(stopped[0], DeadLetterUnavailable)
    assert pipeline.checkpointable() is None  # never past a change neither applied nor kept


def binary_letter(seq: int, size: int) -> DeadLetter:
    """A letter whose item holds ``size`` random bytes: gzip cannot shrink it."""
    blob = base64.b64encode(os.urandom(size)).decode("ascii")
    image = {"pk": {"S": f"k{seq}"}, "blob": {"B": blob}}
    record = daemon_record(stream_record("INSERT", {"pk": {"S": f"k{seq}"}}, image, seq=seq), seq)
    return DeadLetter(record, "eu", "rejected", "too large for the index", "t", "s")


def test_a_large_letter_fits_a_queue_that_takes_1_mib(moto_endpoint: str, unique: Any) -> None:
    """A 300 KB rejected item is larger than 256 KiB even compressed; a queue whose
    MaximumMessageSize is 1 MiB (SQS's default since 2025, moto's too) takes it."""
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    target = SqsDeadLetters(sqs, url)
    assert target.message_limit() == 1024 * 1024
    large = binary_letter(7, 300_000)
    target.put(large)
    (claimed,) = list(target.claim_all())
    assert isinstance(claimed, Claimed) and claimed.letter.record == large.record


def test_letters_sent_by_many_writers_at_once_each_reuse_a_connection(
    moto_endpoint: str, unique: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The job's SQS target keeps as many connections as writes may fail at once: with
    botocore's default pool of 10, 32 writers dead-lettering a burst had most of their
    connections discarded, each with urllib3's "Connection pool is full" warning."""
    from replicator.config.loader import load_job
    from replicator.wiring import dead_letter_target

    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {region: us-east-1, table: src}\n"
        "destinations: [{region: eu-west-1, table: dst}]\n"
        "writer: {max_in_flight: 32}\n"
        f"dead_letter: {{kind: sqs, queue_url: '{url}', endpoint_url: '{moto_endpoint}'}}\n"
    )
    target = dead_letter_target(load_job(job))
    start = threading.Barrier(32)

    def send(seq: int) -> None:
        start.wait()
        for n in range(4):
            target.put(letter(seq * 10 + n))

    with caplog.at_level("WARNING", logger="urllib3"):
        threads = [threading.Thread(target=send, args=(seq,)) for seq in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
    counted = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(counted) == 128


def test_a_letter_larger_than_the_queues_limit_is_refused_naming_it(
    moto_endpoint: str, unique: Any
) -> None:
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(
        QueueName=unique("dlq"), Attributes={"MaximumMessageSize": str(256 * 1024)}
    )["QueueUrl"]
    target = SqsDeadLetters(sqs, url)
    target.put(binary_letter(1, 1_000))  # a small one goes
    with pytest.raises(DeadLetterUnavailable) as refused:
        target.put(binary_letter(2, 300_000))
    message = str(refused.value)
    assert message.startswith("dead letter for record 2 (destination eu) is ")
    assert "bytes even compressed, larger than the queue's MaximumMessageSize, 262144 bytes" in (
        message
    )
    assert url in message and "raise the queue's MaximumMessageSize" in message
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "1"
    )


def large_change_letter(event: str, seq: int, size: int) -> DeadLetter:
    """A letter of a stream ``event`` of an item holding ``size`` random bytes, in both of
    its images (a MODIFY) or in its one image (an INSERT's new one, a REMOVE's old one)."""
    keys = {"pk": {"S": f"k{seq}"}}

    def item() -> dict[str, Any]:
        return {**keys, "blob": {"B": base64.b64encode(os.urandom(size)).decode("ascii")}}

    new = item() if event != "REMOVE" else None
    old = item() if event != "INSERT" else None
    record = daemon_record(stream_record(event, keys, new, old, seq=seq), seq)
    return DeadLetter(
        record, "eu", "rejected", "ValidationException", "t", "s", event=event, keys=keys
    )


def stream_images(record: Any) -> dict[str, Any]:
    return json.loads(base64.b64decode(record["data"]))["dynamodb"]


def test_a_modify_too_large_for_the_queue_is_stored_without_its_old_image(
    moto_endpoint: str, unique: Any
) -> None:
    """Both images of an item of 395 KB of random bytes make a letter of about 1.4 MB even
    compressed; without the old image, which a replay of the put does not need, it fits
    a 1 MiB queue, and reads back as the same change without it."""
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(
        QueueName=unique("dlq"), Attributes={"MaximumMessageSize": str(1024 * 1024)}
    )["QueueUrl"]
    target = SqsDeadLetters(sqs, url)
    large = large_change_letter("MODIFY", 5, 395_000)
    with structlog.testing.capture_logs() as logged:
        assert target.put(large)

    (claimed,) = list(target.claim_all())
    assert isinstance(claimed, Claimed)
    stored = claimed.letter
    old = stream_images(large.record)["OldImage"]
    assert stream_images(stored.record) == {
        name: value for name, value in stream_images(large.record).items() if name != "OldImage"
    }
    assert stored.left_out is not None
    assert stored.left_out["image"] == "OldImage"
    assert stored.left_out["sha256"] == image_digest(old)
    assert stored.left_out["attributes"] == ["blob", "pk"]
    assert stored.left_out["why"].startswith("the letter is ")
    assert "larger than the queue's MaximumMessageSize, 1048576 bytes" in stored.left_out["why"]
    change, original = decode(stored.record), decode(large.record)
    assert change.old is None and change.new_image == original.new_image
    assert (change.event, change.keys, change.sequence_number) == (
        "MODIFY",
        {"pk": {"S": "k5"}},
        "5",
    )
    assert stored.identity == DeadLetter.from_json(target_body(large, 1024 * 1024)).identity
    (warning,) = [line for line in logged if line["log_level"] == "warning"]
    assert "stored without its OldImage" in warning["event"]
    assert (warning["sequence_number"], warning["key"]) == ("5", "pk=S:k5")
    assert warning["bytes"] > 1024 * 1024 >= warning["stored_bytes"]
    # Put back by a replay that failed again, it is stored as it is.
    target.settle(claimed, replayed=False)
    (again,) = list(target.claim_all())
    assert isinstance(again, Claimed) and again.letter.record == stored.record


def target_body(letter: DeadLetter, limit: int) -> str:
    """The message a queue taking ``limit`` bytes gets for ``letter``."""
    sent: list[str] = []

    class Queue:
        def get_queue_attributes(self, **kwargs: Any) -> Any:
            return {"Attributes": {"MaximumMessageSize": str(limit)}}

        def send_message(self, **kwargs: Any) -> Any:
            sent.append(kwargs["MessageBody"])

    SqsDeadLetters(Queue(), "https://queue.example/q").put(letter)  # type: ignore[arg-type]
    return sent[0]


@pytest.mark.parametrize(
    ("letter_of", "why"),
    [
        (
            lambda: large_change_letter("REMOVE", 3, 300_000),
            "; its record has no image a replay can do without",
        ),
        (lambda: large_change_letter("MODIFY", 3, 300_000), "bytes without its record's OldImage"),
        (lambda: repair_letter(3, 300_000), "; its record has no image a replay can do without"),
    ],
    ids=["delete", "put", "repair"],
)
def test_a_letter_too_large_even_without_its_old_image_is_refused_saying_so(
    letter_of: Any, why: str
) -> None:
    with pytest.raises(DeadLetterUnavailable) as refused:
        target_body(letter_of(), 256 * 1024)
    message = str(refused.value)
    assert message.startswith("dead letter for record ")
    assert why in message
    assert "raise the queue's MaximumMessageSize (up to 1048576 bytes) or use a file" in message
    assert "larger than the queue's MaximumMessageSize, 262144 bytes" in message


def repair_letter(seq: int, size: int) -> DeadLetter:
    """A repair's letter: the source's image and the destination item it expects to
    replace (its OldImage, which its replay's condition needs), both large."""
    keys = {"pk": {"S": f"k{seq}"}}
    read, expected = ({**keys, "blob": {"B": os.urandom(size)}} for _ in range(2))
    change = synthetic_change(REPAIR, keys, "us-east-1", new_image=read, expected=expected)
    return DeadLetter(change.raw, "eu", "rejected", "e", "t", "repair", event="MODIFY", keys=keys)


class NoAttributesQueue:
    """An SQS client whose role may send but not read the queue's attributes."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def get_queue_attributes(self, **kwargs: Any) -> Any:
        error = {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}
        raise ClientError(error, "GetQueueAttributes")  # type: ignore[arg-type]

    def send_message(self, **kwargs: Any) -> Any:
        self.sent.append(kwargs["MessageBody"])
        return {}


def test_a_queue_whose_limit_cannot_be_read_is_taken_as_256_kib() -> None:
    queue = NoAttributesQueue()
    target = SqsDeadLetters(queue, "https://sqs.example/q")  # type: ignore[arg-type]
    assert target.message_limit() == 256 * 1024
    target.put(binary_letter(1, 1_000))
    with pytest.raises(DeadLetterUnavailable, match=r"larger than 262144 bytes \(assumed: "):
        target.put(binary_letter(2, 300_000))
    assert len(queue.sent) == 1


def test_sqs_target_round_trip_and_large_records(moto_endpoint: str, unique: Any) -> None:
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    target = SqsDeadLetters(sqs, url, run_id="run-1")
    target.put(letter(1))
    big = letter(2, size=400_000)  # larger than an SQS message: sent compressed
    target.put(big)
    claimed = {}
    for item in target.claim_all():
        claimed[item.letter.record["sequenceNumber"]] = item
        # a replay that failed again puts the letter back, marked with its run
        target.settle(
            replace(item, letter=item.letter.retried("e", "rejected", run="run-1")),
            replayed=False,
        )
    assert set(claimed) == {"1", "2"}
    assert claimed["2"].letter.record == big.record
    replay = SqsDeadLetters(sqs, url, run_id="run-2")
    seen = []
    for item in replay.claim_all():
        seen.append(item.letter.record["sequenceNumber"])
        failed = item.letter.retried("still failing", "rejected", run="run-2")
        replay.settle(
            replace(item, letter=failed), replayed=item.letter.record["sequenceNumber"] == "1"
        )
    assert sorted(seen) == ["1", "2"]  # the re-queued failure is not replayed twice
    left = [c.letter for c in SqsDeadLetters(sqs, url, run_id="run-3").claim_all()]
    assert [(x.record["sequenceNumber"], x.attempts, x.error) for x in left] == [
        ("2", 3, "still failing")
    ]


@pytest.mark.parametrize("what", sorted(set(malformed(letter(1))) - {"not UTF-8"}))
def test_an_unreadable_message_stays_in_the_queue_and_the_replay_goes_on(
    moto_endpoint: str, unique: Any, what: str
) -> None:
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    bad = malformed(letter(2))[what].decode()
    bad_id = sqs.send_message(QueueUrl=url, MessageBody=bad)["MessageId"]
    target = SqsDeadLetters(sqs, url, run_id="run-1")
    for seq in (1, 3):
        target.put(letter(seq))

    met = [
        claimed.where
        if isinstance(claimed, Unreadable)
        else claimed.letter.record["sequenceNumber"]
        for claimed in _replaying(target)
    ]

    assert sorted(met) == ["1", "3", f"message {bad_id}"]
    # Visible again at once, not after the visibility timeout, exactly as it was sent.
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert [(m["MessageId"], m["Body"]) for m in left["Messages"]] == [(bad_id, bad)]


def _replaying(target: SqsDeadLetters) -> list[Claimed | Unreadable]:
    met: list[Claimed | Unreadable] = []
    for claimed in target.claim_all():
        met.append(claimed)
        if isinstance(claimed, Claimed):
            target.settle(claimed, replayed=True)
    return met


def test_writes_through_an_assumed_role(
    moto_endpoint: str, unique: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    table = unique("assumed")
    client("dynamodb", "eu-west-1", moto_endpoint).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb = clients.dynamodb(
        Place(
            "eu-west-1",
            endpoint_url=moto_endpoint,
            role_arn="arn:aws:iam::123456789012:role/replicator-writer",
            external_id="ext-1",
        )
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "via-role"}})
    credentials = ddb._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key != "testing"  # temporary credentials from STS, not ours
    item = client("dynamodb", "eu-west-1", moto_endpoint).get_item(
        TableName=table, Key={"pk": {"S": "via-role"}}
    )
    assert "Item" in item
    writer_change = decode(put("x", 1))
    assert writer_change.keys == {"pk": {"S": "x"}}


QUOTING_A_TOKEN = (
    "InvalidSignatureException: The Canonical String for this request should have been "
    "'POST\n/\n\nhost:127.0.0.1\nx-amz-security-token:LETTERqqqTOKEN42\n'"
)


def test_a_letter_stores_a_credential_quoted_by_its_error_redacted(
    tmp_path: Path, moto_endpoint: str, unique: Any
) -> None:
    """A letter's error is what AWS said, which can quote the session token: the file and
    the queue hold it redacted, as the logs do; the record itself is kept exactly."""
    quoting = replace(letter(1, size=300_000), error=QUOTING_A_TOKEN, reason=QUOTING_A_TOKEN)
    path = tmp_path / "dead.jsonl"
    FileDeadLetters(path).put(quoting)
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    SqsDeadLetters(sqs, url).put(quoting)  # larger than a message: sent compressed
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    for stored in (path.read_text(), message["Body"]):
        assert "LETTERqqqTOKEN42" not in stored
        read = DeadLetter.from_json(stored)
        assert (
            read.error == read.reason == QUOTING_A_TOKEN.replace("LETTERqqqTOKEN42", "<redacted>")
        )
        assert read.record == quoting.record


def test_a_fifo_put_at_the_dead_letter_path_is_refused_without_blocking(tmp_path: Path) -> None:
    """Checked at start, a path can still become a FIFO while the job runs: an append
    fails with an OSError naming it, instead of waiting for a reader for ever."""
    from replicator.appendfile import append_line

    fifo = tmp_path / "letters.jsonl"
    os.mkfifo(fifo)
    outcome: list[BaseException | int | None] = []

    def append() -> None:
        try:
            outcome.append(append_line(fifo, "{}"))
        except OSError as error:
            outcome.append(error)

    worker = threading.Thread(target=append, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "append_line blocked on a FIFO"
    (error,) = outcome
    assert isinstance(error, OSError)
    assert error.filename == str(fifo)
    assert "not a regular file" in str(error)


def test_a_path_that_is_a_link_to_nothing_holds_no_letters(tmp_path: Path) -> None:
    """Taken for a file, it sent a redrive to lock beside a target whose directory is not
    there: exit 3, and the same at every redrive."""
    link = tmp_path / "letters.jsonl"
    link.symlink_to(tmp_path / "nowhere" / "letters.jsonl")
    target = FileDeadLetters(link)
    assert not target.holds_files()
    assert target.count() == 0


STORING = "replicator_dead_letters_storing"


class _UnansweringTarget:
    """A dead-letter target that takes no letter until released (a queue not answering)."""

    description = "queue https://sqs.example/q (not answering)"

    def __init__(self) -> None:
        self.released = threading.Event()
        self.letters: list[DeadLetter] = []

    def put(self, letter: DeadLetter) -> bool:
        assert self.released.wait(60)
        self.letters.append(letter)
        return True


def test_letters_the_target_has_not_taken_are_counted_for_their_destination(
    moto_endpoint: str, unique: Any, metrics: Metrics
) -> None:
    """/healthz tells a destination held by its dead-letter target from one that takes no
    writes by this gauge: a queue that stopped answering was reported as the destination
    stalled, and the runbook sent the on-call to debug a destination that took every
    other write."""
    table = unique("reject")
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    create_table(ddb, table, stream=None)
    writer = DestinationWriter(
        label="eu",
        table=table,
        region="eu-west-1",
        client=ddb,
        rule=rule_for(ConflictConfig(), None),
        metrics=metrics,
    )
    target = _UnansweringTarget()
    letterer = DeadLetterer(target, metrics, "t", "s")  # type: ignore[arg-type]
    bad = daemon_record(
        stream_record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}, "bad": {"NS": []}}, seq=1), 1
    )
    storing = threading.Thread(target=letterer.write, args=(writer, decode(bad)))
    storing.start()
    try:
        wait_until(
            lambda: sample(metrics, STORING, destination="eu", shard="s") == 1.0,
            60,
            "the letter to be counted while the target has not taken it",
        )
    finally:
        target.released.set()
        storing.join(60)
    assert [letter.destination for letter in target.letters] == ["eu"]
    assert sample(metrics, STORING, destination="eu", shard="s") == 0.0
    assert (
        sample(metrics, "replicator_dead_letters_total", destination="eu", reason="rejected") == 1
    )


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            DeadLetterUnavailable("SQS SendMessage failed: NonExistentQueue"),
            "a dead letter cannot be stored",
        ),
        (RuntimeError("refused"), "a destination cannot be written"),
    ],
)
def test_the_processors_last_line_names_what_could_not_be_written(
    error: BaseException, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted dead-letter queue was reported as a destination that cannot be written."""
    from replicator import processor

    exits: list[int] = []
    monkeypatch.setattr(processor, "_hard_exit", exits.append)
    with structlog.testing.capture_logs() as logged:
        processor.on_writer_failure(error)
    assert exits == [1]
    (line,) = [entry for entry in logged if entry["log_level"] == "error"]
    assert line["event"] == f"stopping: {said}"


def test_a_letter_made_again_by_a_repair_is_a_copy_unless_what_it_writes_or_where_differs(
    tmp_path: Path,
) -> None:
    """A repair (or backfill) makes its record anew each run, with the time it was made:
    run again for an item that cannot be written, it stored one more letter each time. A
    letter that differs only in that time is a copy; one of another image, or for another
    table under the same destination name, is not."""
    keys = {"pk": {"S": "k"}}

    def repair_letter(read_ms: int, value: str = "1", table: str = "orders") -> DeadLetter:
        change = synthetic_change(
            REPAIR, keys, "us-east-1", new_image={**keys, "v": {"N": value}}, expected=None,
            read_ms=read_ms,
        )  # fmt: skip
        return DeadLetter(
            record=change.raw,
            destination="dr",
            reason="rejected",
            error="boom",
            task_name="t",
            shard_id=REPAIR,
            table=table,
            region="eu-west-1",
        )

    target = FileDeadLetters(tmp_path / "dl.jsonl")
    assert target.put(repair_letter(1_000))
    assert not target.put(repair_letter(2_000))  # the same repair, a run later
    assert target.put(repair_letter(3_000, value="2"))
    assert target.put(repair_letter(4_000, table="orders-v2"))
    assert target.count() == 3


@pytest.mark.parametrize(
    ("line", "cut"),
    [
        (b'{"task": "t", "record": {"dynamo', True),
        (b'{"task": "t", "attempts": 1', True),
        ('{"task": "t", "key": "caf\u00e9"}'.encode()[:-3], True),  # inside a character
        (b"not a letter at all", False),
        (b'{"task": "t",, "attempts": 1}', False),
        (b'{"task": "t"}', False),
    ],
)
def test_a_file_line_cut_short_is_said_to_be_most_likely_one(line: bytes, cut: bool) -> None:
    from replicator.deadletter.entry import cut_short_note

    note = cut_short_note(line)
    assert ("most likely a letter cut short by a crash" in note) is cut
    assert ("if it was edited by hand, repair it instead" in note) is cut
