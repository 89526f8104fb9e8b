"""A processor's note of the processRecords it holds, and the launcher's reading of them
(replicator/runtime/kcl/awaited.py). The launcher's /healthz over HTTP is tested in
test_kcl_launcher.py (``test_health_names_each_processor_holding_...``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from amazon_kclpy import messages

from replicator.metrics import Metrics
from replicator.processor import ReplicationProcessor
from replicator.runtime.kcl.awaited import ENV, AnswerNotes, unanswered
from tests.support.e2e import wait_until
from tests.test_processor_protocol import EmptyReadIntake


class NotedIntake(EmptyReadIntake):
    """Records what the note said while the batch was being taken in."""

    def __init__(self, notes: Path) -> None:
        super().__init__()
        self.notes = notes
        self.seen: list[dict[str, Any]] = []

    def accept(self, records: list[Any], millis_behind: int) -> None:
        super().accept(records, millis_behind)
        self.seen.append(json.loads((self.notes / f"{os.getpid()}.json").read_text()))


def run_one_batch(notes: AnswerNotes | None, intake: EmptyReadIntake) -> list[int]:
    exits: list[int] = []
    processor = ReplicationProcessor(
        lambda _shard: intake,  # type: ignore[arg-type,return-value]
        Metrics(),
        exit_process=exits.append,
        report_interval_s=3600,
        notes=notes,
    )
    checkpointer = object()
    messages.InitializeInput(
        {
            "action": "initialize",
            "shardId": "shardId-7",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        }
    ).dispatch(checkpointer, processor)
    messages.ProcessRecordsInput(
        {"action": "processRecords", "millisBehindLatest": 0, "records": []}
    ).dispatch(checkpointer, processor)
    processor.close()
    return exits


def note_of(directory: Path, pid: int) -> dict[str, Any]:
    note: dict[str, Any] = json.loads((directory / f"{pid}.json").read_text())
    return note


def test_a_batch_is_noted_while_it_is_held_and_answered_with_it(tmp_path: Path) -> None:
    intake = NotedIntake(tmp_path)
    assert run_one_batch(AnswerNotes(tmp_path, os.getpid()), intake) == []
    (held,) = intake.seen
    assert held["shard"] == "shardId-7" and held["since"] and held["started"]
    assert note_of(tmp_path, os.getpid()) == {**held, "since": None}


def test_the_report_thread_touches_the_note_every_beat(tmp_path: Path) -> None:
    notes = AnswerNotes(tmp_path, os.getpid())
    processor = ReplicationProcessor(
        lambda _shard: EmptyReadIntake(),  # type: ignore[arg-type,return-value]
        Metrics(),
        report_interval_s=0.05,
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
    try:
        os.utime(notes.path, (0, 0))
        wait_until(lambda: notes.path.stat().st_mtime > 0, 10, "the note touched")
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "removed"
    intake = EmptyReadIntake()
    notes = AnswerNotes(gone, os.getpid())
    assert run_one_batch(notes, intake) == []
    assert run_one_batch(notes, intake) == []
    notes.heard()
    assert intake.accepted == [0, 0]
    captured = capsys.readouterr()
    said = [line for line in (captured.out + captured.err).splitlines() if "cannot keep" in line]
    assert len(said) == 1 and str(gone) in said[0]


def test_a_live_processor_holding_a_batch_past_the_limit_is_named(tmp_path: Path) -> None:
    notes = AnswerNotes(tmp_path, os.getpid())
    notes.started("shardId-7")
    notes.received(at=1000.0)
    os.utime(notes.path, (1290.0, 1290.0))  # heard from since
    assert unanswered(tmp_path, 300, now=1299.0) == []
    (reason,) = unanswered(tmp_path, 300, now=1300.0)
    assert reason == (
        f"the processor (pid {os.getpid()}) of shard shardId-7 has not answered "
        "processRecords for 300s: it waits for room in its buffer (a destination takes no "
        "writes) or is stuck"
    )
    notes.answered()
    os.utime(notes.path, (4990.0, 4990.0))
    assert unanswered(tmp_path, 300, now=5000.0) == []


def test_a_live_processor_not_heard_from_past_the_limit_is_named(tmp_path: Path) -> None:
    """Stopped between batches (SIGSTOP), a processor never reads the next one: its note
    holds no batch, and nothing touches it."""
    notes = AnswerNotes(tmp_path, os.getpid())
    notes.started("shardId-7")
    os.utime(notes.path, (1000.0, 1000.0))
    assert unanswered(tmp_path, 300, now=1299.0) == []
    (reason,) = unanswered(tmp_path, 300, now=1300.0)
    assert reason == (
        f"the processor (pid {os.getpid()}) of shard shardId-7 has not been heard from for "
        "300s: the process is stopped (SIGSTOP) or cannot run"
    )
    notes.heard()
    assert unanswered(tmp_path, 300) == []


def test_the_note_of_a_processor_that_is_gone_is_dropped(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    ended = AnswerNotes(tmp_path, finished.pid)
    ended.started("shardId-1")
    ended.received(at=0.0)
    # A pid in use again by another process: its start time is not the note's.
    reused = AnswerNotes(tmp_path, os.getpid())
    reused.started("shardId-2")
    reused.path.write_text(json.dumps({**note_of(tmp_path, os.getpid()), "started": "1"}))
    (tmp_path / "notes.txt").write_text("not a note")
    (tmp_path / "123.json").write_text("{")  # a note being replaced: read next time

    assert unanswered(tmp_path, 1, now=10_000.0) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["123.json", "notes.txt"]
