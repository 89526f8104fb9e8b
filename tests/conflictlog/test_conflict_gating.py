"""The checkpoint never passes a lost conflict whose entry is not stored: a kill -9 then
loses no entry of a change it checkpointed (the change is read again and loses again).
An entry the log cannot take within ``retry_for_s`` is given up and counted, and only
then does the checkpoint move on."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from replicator.aws.backoff import Backoff
from replicator.conflictlog.base import Selection, StoreOutcome
from replicator.conflictlog.entry import ConflictEntry
from replicator.conflictlog.recorder import BackgroundRecorder
from replicator.decode import decode
from replicator.exceptions import ConflictLogUnavailable
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.rules import OrderedRule
from replicator.writers.destination import DestinationWriter
from tests.support.e2e import wait_until
from tests.support.metrics import sample, summed
from tests.support.records import put
from tests.test_pipeline import one_destination

RULE = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)


class HeldTarget:
    """Stores nothing while ``gate`` is clear; fails every store while ``down``."""

    description = "held target"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.down = False
        self.stored: list[ConflictEntry] = []

    def put(self, entry: ConflictEntry) -> None:
        (outcome,) = self.put_all((entry,))
        if outcome is not None:
            raise outcome

    def put_all(self, entries: Sequence[ConflictEntry]) -> list[StoreOutcome]:
        self.gate.wait(60)
        if self.down:
            raise ConflictLogUnavailable("the log does not answer")
        self.stored.extend(entries)
        return [None] * len(entries)

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        return iter(self.stored)


class Clock:
    """The recorder's clock, moved by the test: when ``retry_for_s`` has passed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stopping() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for thing in started:
        thing.close()


def pipeline_with_log(
    endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, recorder: BackgroundRecorder
) -> ShardPipeline:
    """One destination holding ``k1`` at ts=200: a put of ``k1`` below that loses."""
    pipeline, ddb, table = one_destination(endpoint, unique, tmp_path, metrics, RULE)
    ddb.put_item(TableName=table, Item={"pk": {"S": "k1"}, "ts": {"N": "200"}})
    writer = pipeline.writers["eu"]
    assert isinstance(writer, DestinationWriter)
    writer.conflict_log = recorder.for_shard("t", "s")
    return pipeline


def lose_then_apply(pipeline: ShardPipeline, metrics: Metrics) -> None:
    """Record 1 loses at the destination, records 2 and 3 (other items) apply."""
    pipeline.submit(decode(put("k1", 1, ts=100)))
    pipeline.submit(decode(put("k2", 2, ts=100)))
    pipeline.submit(decode(put("k3", 3, ts=100)))
    pipeline.dispatch()

    def written() -> bool:
        pipeline.count_applied()  # the writes applied on the event loop are counted in batches
        lost = sample(
            metrics, "replicator_writes_total", destination="eu", op="put", outcome="conflict_lost"
        )
        applied = sample(
            metrics, "replicator_writes_total", destination="eu", op="put", outcome="applied"
        )
        return (lost, applied) == (1, 2)

    wait_until(written, 30, "the three writes")


def test_the_checkpoint_waits_for_a_lost_conflict_s_entry_to_be_stored(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, stopping: list[Any]
) -> None:
    target = HeldTarget()  # the store hangs, as on a slow endpoint
    recorder = BackgroundRecorder(target, metrics, retry_for_s=600)
    pipeline = pipeline_with_log(moto_endpoint, unique, tmp_path, metrics, recorder)
    stopping += [pipeline, recorder]
    lose_then_apply(pipeline, metrics)
    # Records 2 and 3 are applied, record 1 lost: its change waits for its entry, and
    # the checkpoint for it. A kill -9 now would replay record 1 (and record it then).
    assert recorder.pending == 1
    assert pipeline.checkpointable() is None
    assert pipeline.flush(timeout=0.5) is False
    assert pipeline.checkpointable() is None
    target.gate.set()
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "3"
    assert [e.sequence_number for e in target.stored] == ["1"]
    assert sample(metrics, "replicator_conflict_log_written_total", destination="eu") == 1
    assert summed(metrics, "replicator_conflict_log_dropped_total") == 0


def test_an_entry_the_log_cannot_take_within_retry_for_s_is_counted_and_then_passed(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, stopping: list[Any]
) -> None:
    target = HeldTarget()
    target.down = True
    target.gate.set()
    clock = Clock()
    recorder = BackgroundRecorder(
        target, metrics, retry_for_s=60, backoff=Backoff(0.001, 0.01), clock=clock
    )
    pipeline = pipeline_with_log(moto_endpoint, unique, tmp_path, metrics, recorder)
    stopping += [pipeline, recorder]
    lose_then_apply(pipeline, metrics)
    wait_until(
        lambda: sample(metrics, "replicator_conflict_log_retries_total") >= 3,
        30,
        "the store to be retried",
    )
    # Retried, not yet given up: the change is held.
    assert pipeline.checkpointable() is None
    assert summed(metrics, "replicator_conflict_log_dropped_total") == 0
    clock.now = 61.0  # retry_for_s has passed
    assert pipeline.flush(timeout=30)
    assert pipeline.checkpointable() == "3"
    assert target.stored == []
    assert (
        sample(
            metrics, "replicator_conflict_log_dropped_total", destination="eu", reason="unavailable"
        )
        == 1
    )
