"""Driving the record processor in this process, through amazon-kclpy's own message types."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from amazon_kclpy import messages

from replicator import wiring
from replicator.config.loader import parse_job
from replicator.config.model import ResolvedJob
from replicator.intake import ShardIntake
from replicator.metrics import Metrics
from replicator.processor import ReplicationProcessor
from replicator.records import RawRecord
from tests.support.e2e import PATIENCE


class RecordingCheckpointer:
    def __init__(self) -> None:
        self.positions: list[str | None] = []

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None:
        self.positions.append(sequence_number)


class InProcessShard:
    """One shard's processor, its checkpoints, and the exit code it asked for (if any)."""

    def __init__(self, job_text: str, directory: Path, metrics: Metrics) -> None:
        path = directory / "job.yaml"
        path.write_text(job_text)
        self.resolved: ResolvedJob = parse_job(job_text, path)
        self.metrics = metrics
        self.exits: list[int] = []
        self.checkpointer = RecordingCheckpointer()
        dead_letters = wiring.dead_letter_target(self.resolved)
        self.dead_letters = dead_letters

        def build(shard_id: str) -> ShardIntake:
            return wiring.shard_intake(self.resolved, shard_id, metrics, dead_letters)

        self.processor = ReplicationProcessor(build, metrics, exit_process=self.exits.append)
        messages.InitializeInput(
            {
                "action": "initialize",
                "shardId": "shardId-1",
                "sequenceNumber": "TRIM_HORIZON",
                "subSequenceNumber": 0,
            }
        ).dispatch(self.checkpointer, self.processor)

    def send(self, records: list[RawRecord]) -> None:
        batch = messages.ProcessRecordsInput(
            {
                "action": "processRecords",
                "millisBehindLatest": 0,
                "records": [messages.Record({"action": "record", **r}) for r in records],
            }
        )
        batch.dispatch(self.checkpointer, self.processor)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until everything sent is applied, then let the processor checkpoint."""
        assert self.processor.intake is not None
        assert self.processor.intake.pipeline.flush(timeout=timeout)
        self.send([])
        assert not self.exits

    def close(self) -> None:
        self.processor.close()


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout * PATIENCE
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)
