"""The source's key schema as the writers read it when a destination refuses a key:
kept a few seconds, a failed read not repeated for ten seconds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from botocore.exceptions import ClientError, EndpointConnectionError

from replicator.deadletter import FileDeadLetters
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.exceptions import DestinationRefused
from replicator.metrics import Metrics
from replicator.writers import source_key
from replicator.writers.source_key import SourceKeySchema
from tests.support.aws import client, create_table
from tests.support.records import daemon_record, stream_record
from tests.writers.test_write_outcomes import REGION, writer_for

KEYED_PK = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
}
KEYED_ID = {
    "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Describe:
    """DescribeTable's answers (or errors) in turn, the last one repeated."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        answer = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_read_is_kept_a_few_seconds_then_read_again() -> None:
    clock = Clock()
    describe = Describe(KEYED_PK, KEYED_ID)
    schema = SourceKeySchema(describe, "source table t", "us-east-1", clock)
    assert schema() == {"pk": "HASH:S"}
    clock.now += source_key.KEPT_FOR_S - 0.1
    assert schema() == {"pk": "HASH:S"} and describe.calls == 1
    clock.now += 0.2  # the source re-created with another key meanwhile: seen
    assert schema() == {"id": "HASH:S"} and describe.calls == 2


def test_a_failed_read_is_none_and_not_repeated_for_a_while() -> None:
    clock = Clock()
    down = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    describe = Describe(down, KEYED_PK)
    schema = SourceKeySchema(describe, "source table t", "us-east-1", clock)
    with structlog.testing.capture_logs() as logs:
        assert schema() is None
        clock.now += source_key.FAILED_FOR_S - 1
        assert schema() is None and describe.calls == 1  # writer threads at once: one read
    warned = [line for line in logs if "could not be read" in line["event"]]
    assert len(warned) == 1 and warned[0]["source"] == "source table t at us-east-1"
    clock.now += 2
    assert schema() == {"pk": "HASH:S"} and describe.calls == 2


def test_writer_threads_refused_at_once_wait_on_one_read() -> None:
    """Every thread meets the one read's answer, none a read of its own."""
    started = threading.Event()

    def slow() -> Any:
        started.set()
        time.sleep(0.3)  # a describe on its way: the others arrive meanwhile
        return KEYED_PK

    calls: list[int] = []

    def counted() -> Any:
        calls.append(1)
        return slow()

    schema = SourceKeySchema(counted, "source table t", "us-east-1")
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(schema()))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=lambda: answers.append(schema())) for _ in range(5)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert answers == [{"pk": "HASH:S"}] * 6
    assert len(calls) == 1


def test_a_refused_describe_is_none_too() -> None:
    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "no"}},  # type: ignore[typeddict-item]
        "DescribeTable",
    )
    assert SourceKeySchema(Describe(denied), "source table t", "us-east-1")() is None


def test_a_change_of_a_source_re_created_with_another_key_stops_the_worker_again(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A stray record's refusal read the source's key; the source is then re-created with
    the key of the changes that follow, which the destination (keyed as the old source)
    refuses: once the read has expired, they are the destination's problem (the worker
    stops, nothing dead-lettered), not records "not of the source table"."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    source, table = unique("src"), unique("dst")
    create_table(ddb, source, stream=None)  # pk (S)
    create_table(ddb, table, stream=None)  # pk (S): the source's key
    clock = Clock()
    writer = writer_for(ddb, tmp_path, metrics, table)
    writer.refusal_limit = 2
    writer.source_key_schema = SourceKeySchema(
        lambda: ddb.describe_table(TableName=source)["Table"],
        f"source table {source}",
        REGION,
        clock,
    )
    target = FileDeadLetters(tmp_path / "dead.jsonl")
    letters = DeadLetterer(target, metrics, "task", "shard-1")
    keyed_id = {"id": {"S": "a"}}

    def change(seq: int) -> Any:
        return decode(daemon_record(stream_record("INSERT", keyed_id, keyed_id, seq=seq), seq))

    letters.write(writer, change(1))  # a stray record: dead-lettered
    assert [letter.reason for letter in target.letters()] == ["rejected"]
    ddb.delete_table(TableName=source)
    ddb.create_table(TableName=source, BillingMode="PAY_PER_REQUEST", **KEYED_ID)  # type: ignore[arg-type]
    clock.now += source_key.KEPT_FOR_S
    with pytest.raises(DestinationRefused, match="key schema is not the source table's"):
        letters.write(writer, change(2))
    assert len(target.letters()) == 1
