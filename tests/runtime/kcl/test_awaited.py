"""A processor's note of the processRecords it holds, and the launcher's reading of them
(replicator/runtime/kcl/awaited.py). The launcher's /healthz over HTTP is tested in
test_kcl_launcher.py (``test_health_names_each_processor_holding_...``)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from amazon_kclpy import messages

from replicator.metrics import Metrics
from replicator.processor import ReplicationProcessor
from replicator.runtime.kcl.awaited import ENV, AnswerNotes, Death, unanswered
from tests.support.aws import client, create_table
from tests.support.e2e import wait_until
from tests.test_processor_protocol import EmptyReadIntake, RawDaemon


class NotedIntake(EmptyReadIntake):
    """Records what the note said while the batch was being taken in."""

    def __init__(self, notes: Path) -> None:
        super().__init__()
        self.notes = notes
        self.seen: list[dict[str, Any]] = []

    def accept(self, records: list[Any], millis_behind: int) -> None:
        super().accept(records, millis_behind)
        self.seen.append(json.loads((self.notes / f"{os.getpid()}.json").read_text()))


def started_processor(
    intake: EmptyReadIntake, notes: AnswerNotes | None, exits: list[int], beat_s: float = 3600
) -> ReplicationProcessor:
    """A processor of shard shardId-7 that has answered initialize."""
    processor = ReplicationProcessor(
        lambda _shard: intake,  # type: ignore[arg-type,return-value]
        Metrics(),
        exit_process=exits.append,
        report_interval_s=beat_s,
        notes=notes,
    )
    messages.InitializeInput(
        {
            "action": "initialize",
            "shardId": "shardId-7",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        }
    ).dispatch(object(), processor)
    return processor


def run_one_batch(notes: AnswerNotes | None, intake: EmptyReadIntake) -> list[int]:
    exits: list[int] = []
    processor = started_processor(intake, notes, exits)
    messages.ProcessRecordsInput(
        {"action": "processRecords", "millisBehindLatest": 0, "records": []}
    ).dispatch(object(), processor)
    processor.close()
    return exits


def note_of(directory: Path, pid: int) -> dict[str, Any]:
    note: dict[str, Any] = json.loads((directory / f"{pid}.json").read_text())
    return note


def this_processors_note(directory: Path, **values: Any) -> AnswerNotes:
    """This process's note for shard shardId-7, with ``values`` (since, heard) in it.

    The note's ``batch_at`` is this host's monotonic clock (seconds since boot), which
    the tests' made-up ``now`` values would compare with: it is None (no batch awaited)
    unless given, so that no outcome depends on how long ago the machine booted."""
    notes = AnswerNotes(directory, os.getpid())
    notes.started("shardId-7")
    note = {**note_of(directory, os.getpid()), "batch_at": None, **values}
    notes.path.write_text(json.dumps(note))
    return notes


def test_a_batch_is_noted_while_it_is_held_and_answered_with_it(tmp_path: Path) -> None:
    intake = NotedIntake(tmp_path)
    before = time.monotonic()
    assert run_one_batch(AnswerNotes(tmp_path, os.getpid()), intake) == []
    (held,) = intake.seen
    assert held["shard"] == "shardId-7" and held["started"]
    assert before <= held["since"] <= held["heard"] <= time.monotonic()
    after = note_of(tmp_path, os.getpid())
    assert after["since"] is None and after["heard"] >= held["heard"]


def test_the_report_thread_writes_the_note_every_beat(tmp_path: Path) -> None:
    notes = AnswerNotes(tmp_path, os.getpid())
    exits: list[int] = []
    processor = started_processor(EmptyReadIntake(), notes, exits, beat_s=0.05)
    try:
        # A note deleted meanwhile (by anyone) is written again at the next beat.
        notes.path.unlink()
        wait_until(notes.path.exists, 10, "the note written again")
        first = note_of(tmp_path, os.getpid())["heard"]
        wait_until(lambda: note_of(tmp_path, os.getpid())["heard"] > first, 10, "a beat")
    finally:
        processor.close()
    assert note_of(tmp_path, os.getpid())["since"] is None


def test_the_notes_are_taken_from_the_launchers_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert AnswerNotes.from_environment() is None  # the local runtime's processors
    monkeypatch.setenv(ENV, str(tmp_path))
    assert AnswerNotes.from_environment() == AnswerNotes(tmp_path, os.getpid())


def test_a_note_that_cannot_be_written_is_said_once_and_the_batches_go_on(
    tmp_path: Path,
) -> None:
    gone = tmp_path / "removed"
    intake = EmptyReadIntake()
    notes = AnswerNotes(gone, os.getpid())
    with structlog.testing.capture_logs() as logged:
        assert run_one_batch(notes, intake) == []
        assert run_one_batch(notes, intake) == []
        notes.heard()
    assert intake.accepted == [0, 0]
    said = [line for line in logged if "cannot keep" in line["event"]]
    assert len(said) == 1 and said[0]["directory"] == str(gone), logged


def test_an_answer_that_cannot_be_noted_leaves_no_note_saying_the_batch_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk after the batch was noted: the note that says it is held would name a
    healthy processor stuck; it is removed instead."""
    notes = AnswerNotes(tmp_path, os.getpid())
    notes.started("shardId-7")
    notes.received()
    write_text = Path.write_text

    def full(path: Path, *args: Any, **kwargs: Any) -> int:
        if path.name.startswith("."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    notes.answered()
    assert list(tmp_path.iterdir()) == []
    assert unanswered(tmp_path, 1, now=time.monotonic() + 3600) == []


def test_a_live_processor_holding_a_batch_past_the_limit_is_named(tmp_path: Path) -> None:
    this_processors_note(tmp_path, since=1000.0, heard=1290.0)
    assert unanswered(tmp_path, 300, now=1299.0) == []
    (reason,) = unanswered(tmp_path, 300, now=1300.0)
    assert reason == (
        f"the processor (pid {os.getpid()}) of shard shardId-7 has not answered "
        "processRecords for 300s: it waits for room in its buffer (a destination takes no "
        "writes) or is stuck"
    )
    this_processors_note(tmp_path, since=None, heard=1299.0)
    assert unanswered(tmp_path, 300, now=1300.0) == []


def test_a_live_processor_not_heard_from_past_the_limit_is_named(tmp_path: Path) -> None:
    """Stopped between batches (SIGSTOP), a processor never reads the next one: its note
    holds no batch, and is not written again."""
    notes = this_processors_note(tmp_path, since=None, heard=1000.0)
    assert unanswered(tmp_path, 300, now=1299.0) == []
    (reason,) = unanswered(tmp_path, 300, now=1300.0)
    assert reason == (
        f"the processor (pid {os.getpid()}) of shard shardId-7 has not been heard from for "
        "300s: the process is stopped (SIGSTOP) or cannot run"
    )
    notes.heard()
    assert unanswered(tmp_path, 300) == []


def test_a_live_processor_passed_no_batch_past_the_limit_is_named(tmp_path: Path) -> None:
    """The KCL passes a batch after every read of the shard, empty or not: none for the
    limit (and for at least three of its idle reads) is a shard it cannot read."""
    notes = this_processors_note(tmp_path, since=None, heard=1299.0, batch_at=1000.0)
    assert unanswered(tmp_path, 300, now=1299.0) == []
    (reason,) = unanswered(tmp_path, 300, now=1300.0)
    assert reason.startswith(
        f"the KCL has passed no batch to the processor (pid {os.getpid()}) of shard shardId-7 "
        "for 300s, not even an empty one"
    )
    assert unanswered(tmp_path, 300, now=1300.0, reads_every_s=120) == []
    assert len(unanswered(tmp_path, 300, now=1360.0, reads_every_s=120)) == 1
    # A batch passed (and answered) starts the count again; one held is another reason's.
    # (Counted from the times the note holds, not from a later reading of the clock,
    # which a pause of a second on a loaded machine would move past the limit.)
    notes.received()
    since = note_of(tmp_path, os.getpid())["since"]
    assert unanswered(tmp_path, 300, now=since + 299) == []
    (held,) = unanswered(tmp_path, 300, now=since + 300)
    assert "has not answered processRecords" in held
    notes.answered()
    batch_at = note_of(tmp_path, os.getpid())["batch_at"]
    assert unanswered(tmp_path, 300, now=batch_at + 299) == []
    assert len(unanswered(tmp_path, 300, now=batch_at + 300)) == 1
    # A processor just started counts from its start.
    notes.started("shardId-7")
    assert unanswered(tmp_path, 300, now=note_of(tmp_path, os.getpid())["batch_at"] + 299) == []
    # Told to stop or that its shard ended, it awaits no batch: a stop's flush, a lease
    # handoff's wait, a shard's end held by a destination are not reads that fail.
    later = time.monotonic() + 3600
    heard_later = {**note_of(tmp_path, os.getpid()), "heard": later}
    notes.path.write_text(json.dumps(heard_later))
    assert len(unanswered(tmp_path, 300, now=later)) == 1
    notes.no_more_batches()
    notes.answered()
    notes.path.write_text(json.dumps({**note_of(tmp_path, os.getpid()), "heard": later}))
    assert unanswered(tmp_path, 300, now=later) == []


def test_a_limit_below_a_few_beats_does_not_name_a_processor_between_two(
    tmp_path: Path,
) -> None:
    this_processors_note(tmp_path, since=None, heard=1000.0)
    assert unanswered(tmp_path, 0.5, now=1001.5) == []
    assert unanswered(tmp_path, 0.5, now=1004.9) == []
    assert len(unanswered(tmp_path, 0.5, now=1005.0)) == 1
    this_processors_note(tmp_path, since=1000.0, heard=1000.0)
    assert len(unanswered(tmp_path, 0.5, now=1000.5)) == 1  # a batch held: the limit


def a_dead_processors_note(directory: Path, shard: str, heard: float) -> Path:
    """The note a processor left when it was killed: its pid belongs to no process."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = AnswerNotes(directory, finished.pid)
    dead.started(shard)
    dead.path.write_text(json.dumps({**note_of(directory, finished.pid), "heard": heard}))
    return dead.path


def test_a_shard_whose_processor_died_is_named_at_once_until_one_takes_it_again(
    tmp_path: Path,
) -> None:
    """Killed (the out-of-memory killer), a processor leaves its note: the KCL starts no
    other for its shard and the daemon exits 1 after its grace time, the shard
    replicating nothing meanwhile. The note goes once a processor of the shard runs."""
    dead = a_dead_processors_note(tmp_path, "shardId-7", heard=1000.0)
    pid = int(dead.stem)
    expected = (
        f"the processor (pid {pid}) of shard shardId-7 died without finishing its shard "
        "(killed, or it exited on an error; last heard from 1s ago): the daemon starts no "
        "other, and exits 1 after its grace time"
    )
    told: list[Death] = []
    assert unanswered(tmp_path, 300, now=1001.0, on_death=told.append) == [expected]
    assert told == [Death(pid, "shardId-7", 1000.0)]  # for the run's final line
    assert told[0].said(1021.0) == (
        f"the processor (pid {pid}) of shard shardId-7 died without finishing its shard "
        "(killed, or it exited on an error; last heard from 21s ago)"
    )
    assert unanswered(tmp_path, 300, now=1001.0) == [expected]  # until the shard runs
    assert Death(pid, "shardId-7", 1000.0, "a reason").said(1021.0) == (
        f"the processor (pid {pid}) of shard shardId-7 exited on an error without finishing "
        "its shard: a reason (last heard from 21s ago)"
    )
    this_processors_note(tmp_path, since=None, heard=1350.0)  # a processor of shardId-7
    assert unanswered(tmp_path, 300, now=1351.0) == []
    assert not dead.exists()


def test_a_pid_in_use_again_counts_as_its_processors_death(tmp_path: Path) -> None:
    """Another process has the pid now: its start time is not the note's."""
    this_processors_note(tmp_path, started="1", since=None, heard=1000.0)
    (reason,) = unanswered(tmp_path, 300, now=1005.0)
    assert reason.startswith(f"the processor (pid {os.getpid()}) of shard shardId-7 died")


def test_a_note_before_any_shard_and_files_not_ours_are_left_as_they_are(
    tmp_path: Path,
) -> None:
    unstarted = a_dead_processors_note(tmp_path, "", heard=1000.0)  # died before initialize
    (tmp_path / "notes.txt").write_text("not a note")
    (tmp_path / "123.json").write_text("{")  # a note being replaced: read next time
    assert unanswered(tmp_path, 1, now=1000.0 + 10_000) == []
    assert not unstarted.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["123.json", "notes.txt"]


def test_a_processor_that_finished_its_shard_leaves_no_note_and_writes_none_after(
    tmp_path: Path,
) -> None:
    notes = this_processors_note(tmp_path, since=None, heard=1000.0)
    notes.ended()
    notes.heard()  # the report thread's last beat, after the end
    notes.answered()
    assert list(tmp_path.iterdir()) == []


def noted_job(endpoint: str, table: str, tmp_path: Path) -> tuple[Path, Path]:
    """A job writing ``table`` (created in eu-west-1) and the notes' directory for its
    processors: (job file, directory)."""
    create_table(client("dynamodb", "eu-west-1", endpoint), table, stream=None)
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task_name: {table}\n"
        "source: {region: us-east-1, table: source-table}\n"
        f"destinations: [{{region: eu-west-1, table: {table}, endpoint_url: '{endpoint}'}}]\n"
        "metrics: {enabled: false}\n"
        "watermark: {enabled: false}\n"
    )
    notes = tmp_path / "awaited"
    notes.mkdir()
    return config, notes


def test_the_processor_removes_its_note_when_it_finishes_and_leaves_it_when_killed(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The real processor over the protocol, as the KCL runs it: a clean stop is no
    death; a kill -9 leaves the note that names its shard."""
    config, _ = noted_job(moto_endpoint, unique("noted"), tmp_path)
    notes = tmp_path / "awaited"
    # Each way the KCL ends a processor's shard: a stop, a lease gone, the shard's end.
    for shard, stop, checkpoints in [
        ("shardId-1", "shutdownRequested", []),
        ("shardId-3", "leaseLost", []),
        ("shardId-4", "shardEnded", [None]),
    ]:
        with RawDaemon(config, env={ENV: str(notes)}) as finishing:
            assert finishing.initialize(shard, "TRIM_HORIZON") == []
            assert note_of(notes, finishing.process.pid)["shard"] == shard
            assert finishing.act({"action": stop}) == checkpoints
            assert finishing.finish() == 0
        assert list(notes.iterdir()) == [], stop
    with RawDaemon(config, env={ENV: str(notes)}) as killed:
        assert killed.initialize("shardId-2", "TRIM_HORIZON") == []
        killed.process.kill()
        killed.process.wait()
    (reason,) = unanswered(notes, 300)
    assert reason.startswith(f"the processor (pid {killed.process.pid}) of shard shardId-2 died")


def _refusals(reasons: list[str]) -> list[str]:
    return [reason for reason in reasons if "refused the checkpoints" in reason]


def test_a_shards_checkpoints_refused_past_the_limit_are_named_across_its_processors(
    tmp_path: Path,
) -> None:
    """The lease table not writable (dynamodb:UpdateItem left out of the policy): each
    checkpoint was deferred, the KCL lost the lease and started another processor from
    the last checkpoint, over and over, writing the same changes again, and /healthz said
    ok. The refusals are noted per shard, across its processors, until one succeeds."""
    first = AnswerNotes(tmp_path, os.getpid())
    first.started("shardId-7")
    first.checkpoint_result("KinesisClientLibDependencyException")
    path = tmp_path / "checkpoint-shardId-7.json"
    began = json.loads(path.read_text())["since"]
    assert _refusals(unanswered(tmp_path, 300, now=began + 60)) == []
    # The next processor of the shard (here: a note of this process again) is refused too.
    path.write_text(json.dumps({**json.loads(path.read_text()), "last": began + 290}))
    second = AnswerNotes(tmp_path, os.getpid())
    second.started("shardId-7")
    second.checkpoint_result("KinesisClientLibDependencyException")
    noted = json.loads(path.read_text())
    assert noted["since"] == began and noted["by"] == "KinesisClientLibDependencyException"
    last = noted["last"]
    assert _refusals(unanswered(tmp_path, last - began + 1, now=last)) == []
    (reason,) = _refusals(unanswered(tmp_path, last - began, now=last))
    assert reason.startswith(
        f"the daemon has refused the checkpoints of shard shardId-7 for {last - began:.0f}s "
        "(last: KinesisClientLibDependencyException): the KCL cannot write its lease table "
        "(dynamodb:UpdateItem on it not allowed"
    )
    # Throttled, the lease table wants capacity, not a policy.
    second.checkpoint_result("ThrottlingException")
    last = json.loads(path.read_text())["last"]
    (reason,) = _refusals(unanswered(tmp_path, last - began, now=last))
    assert "(last: ThrottlingException): the lease table is throttled (raise its" in reason
    # Said while the last refusal is recent: between two processors of the shard too (the
    # KCL starts the next some seconds after a lease lost; named only while one ran, the
    # shard was unhealthy a third of the time, and a probe wanting three failures in a row
    # never saw it).
    assert len(_refusals(unanswered(tmp_path, 0, now=last + 120))) == 1
    assert _refusals(unanswered(tmp_path, 0, now=last + 121)) == []
    # With none running, until the lease could have expired and the next one started (a
    # lease gone to another host, which checkpoints there, is not named much longer).
    second.ended()
    assert len(_refusals(unanswered(tmp_path, 0, now=last + 40, failover_s=10))) == 1
    assert _refusals(unanswered(tmp_path, 0, now=last + 41, failover_s=10)) == []
    assert len(_refusals(unanswered(tmp_path, 0, now=last + 90))) == 1  # 60 s by default
    assert _refusals(unanswered(tmp_path, 0, now=last + 91)) == []
    # A checkpoint taken ends the spell.
    third = AnswerNotes(tmp_path, os.getpid())
    third.started("shardId-7")
    third.checkpoint_result(None)
    assert not path.exists()


def test_refusals_further_apart_than_two_minutes_begin_a_new_spell(tmp_path: Path) -> None:
    notes = AnswerNotes(tmp_path, os.getpid())
    notes.started("shardId-7")
    path = tmp_path / "checkpoint-shardId-7.json"
    now = time.monotonic()
    path.write_text(json.dumps({"since": now - 3600, "last": now - 121, "by": "x"}))
    notes.checkpoint_result("KinesisClientLibDependencyException")
    assert json.loads(path.read_text())["since"] >= now
    path.write_text(json.dumps({"since": now - 3600, "last": now - 100, "by": "x"}))
    notes.checkpoint_result("KinesisClientLibDependencyException")
    assert json.loads(path.read_text())["since"] == now - 3600


def test_the_processor_notes_a_deferred_checkpoint_and_clears_it_with_the_next_taken(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The real processor over the protocol: a checkpoint the daemon refuses on every
    attempt is deferred and noted for the shard; the next batch's checkpoint, taken,
    removes the note."""
    from tests.support.records import put

    table = unique("refused")
    config, notes = noted_job(moto_endpoint, table, tmp_path)
    refusals = notes / "checkpoint-shardId-5.json"
    with RawDaemon(config, env={ENV: str(notes)}) as daemon:
        assert daemon.initialize("shardId-5", "TRIM_HORIZON") == []
        batch = {"action": "processRecords", "millisBehindLatest": 0, "records": []}
        put_a = {"action": "record", **put("a", 101)}
        assert daemon.act({**batch, "records": [put_a]}) == []
        destination = client("dynamodb", "eu-west-1", moto_endpoint)
        wait_until(
            lambda: "Item" in destination.get_item(TableName=table, Key={"pk": {"S": "a"}}),
            30,
            "the put applied",
        )
        # The item is visible at the destination a moment before the processor has
        # settled its write (the answer is read on its event loop): a batch before that
        # has nothing to checkpoint, on a loaded host now and then.
        refused: list[str] = []

        def checkpoint_tried() -> bool:
            refused[:] = daemon.act(batch, checkpoint_error="KinesisClientLibDependencyException")
            return bool(refused)

        wait_until(checkpoint_tried, 30, "a checkpoint of the settled put")
        assert refused == ["101"] * 5  # every attempt refused: deferred to the next batch
        assert json.loads(refusals.read_text())["by"] == "KinesisClientLibDependencyException"
        assert daemon.act(batch) == ["101"]
        assert not refusals.exists()
        assert daemon.act({"action": "shutdownRequested"}) == []
        assert daemon.finish() == 0


def test_a_processor_that_exits_on_an_error_is_named_with_its_reason(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A processor that stopped on an error (a dead letter it could not store: sqs
    SendMessage not allowed) was named "killed, or it exited on an error" in /healthz and
    the run's last line, its reason only in a log line long before. Its note keeps the
    reason it gives as it exits."""
    config, notes = noted_job(moto_endpoint, unique("worded"), tmp_path)
    with RawDaemon(config, env={ENV: str(notes)}) as daemon:
        assert daemon.initialize("shardId-8", "TRIM_HORIZON") == []
        daemon.write(
            {
                "action": "initialize",
                "shardId": "shardId-9",
                "sequenceNumber": "TRIM_HORIZON",
                "subSequenceNumber": 0,
            }
        )
        assert daemon.exit_code() == 1
    (reason,) = unanswered(notes, 300)
    assert reason.startswith(
        f"the processor (pid {daemon.process.pid}) of shard shardId-8 exited on an error "
        "without finishing its shard: initialize failed: ProtocolViolation: the daemon sent a "
        "second initialize (shard shardId-9) "
        "to the processor of shard shardId-8 (last heard from "
    ), reason


def test_a_processor_told_to_stop_or_that_its_shard_ended_awaits_no_batch(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The real processor over the protocol: after a stop, a lease lost or the shard's end
    the KCL passes no batch, and the note says none is awaited (a stop's flush, a lease
    handoff's wait, a shard end held by a destination were named as failing reads)."""
    config, notes = noted_job(moto_endpoint, unique("stopped"), tmp_path)
    for stop, checkpoints in [
        ("shutdownRequested", []),
        ("leaseLost", []),
        ("shardEnded", [None]),
    ]:
        with RawDaemon(config, env={ENV: str(notes)}) as daemon:
            assert daemon.initialize("shardId-6", "TRIM_HORIZON") == []
            assert note_of(notes, daemon.process.pid)["batch_at"] is not None
            assert daemon.act({"action": stop}) == checkpoints
            # Answered, the protocol still open: the note stands until the process ends.
            assert note_of(notes, daemon.process.pid)["batch_at"] is None, stop
            assert daemon.finish() == 0


def test_a_fenced_processors_batches_count_as_passed(tmp_path: Path) -> None:
    """A processor that found its lease taken drops the batches it is still passed: they
    are batches all the same, the shard being read."""
    notes = AnswerNotes(tmp_path, os.getpid())
    exits: list[int] = []
    processor = started_processor(EmptyReadIntake(), notes, exits)
    try:
        before = note_of(tmp_path, os.getpid())["batch_at"]
        processor._lease_lost = True
        messages.ProcessRecordsInput(
            {"action": "processRecords", "millisBehindLatest": 0, "records": []}
        ).dispatch(object(), processor)
        assert note_of(tmp_path, os.getpid())["batch_at"] > before
    finally:
        processor.close()


class _RefusedCheckpoint(Exception):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


def test_checkpoints_refused_are_told_once_per_round_of_attempts_also_when_required() -> None:
    """A shard's end (or a stop) retries its checkpoint for ever: its refusals are told
    too, as a deferred checkpoint's are, and the one taken at last clears them."""
    from replicator.checkpoint import Checkpoints

    refusals = iter(["ThrottlingException"] * 12)
    told: list[str | None] = []

    class Checkpointer:
        def checkpoint(self, sequence_number: str | None) -> None:
            value = next(refusals, None)
            if value is not None:
                raise _RefusedCheckpoint(value)

    checkpoints = Checkpoints(Metrics(), "shardId-7", sleep=lambda _s: None)
    checkpoints.on_result = told.append
    assert checkpoints.write(Checkpointer(), None, required=True)
    assert told == ["ThrottlingException", "ThrottlingException", None]  # 5, 10, taken
    told.clear()
    refusals = iter(["KinesisClientLibDependencyException"] * 5)
    assert not checkpoints.write(Checkpointer(), "12", required=False)
    assert told == ["KinesisClientLibDependencyException"]

    # A note that cannot be told never fails a checkpoint, taken or refused.
    def broken(_outcome: str | None) -> None:
        raise OSError("disk full")

    checkpoints.on_result = broken
    refusals = iter(["ThrottlingException"] * 5)
    assert checkpoints.write(Checkpointer(), None, required=True)
    assert checkpoints.last is None
    assert checkpoints.write(Checkpointer(), "13", required=False)
    assert checkpoints.last == "13"
