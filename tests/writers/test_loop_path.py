"""The pipeline's event-loop path: a write's first request goes out on the loop, a plain
200 settles it there, and anything else continues on a thread exactly as if the writer
had sent that request itself (a late answer is applied, not a lost conflict)."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from replicator.aws import clients
from replicator.aws.backoff import Backoff
from replicator.aws.clients import Place
from replicator.buffer import ChangeBuffer
from replicator.config.model import ConflictConfig
from replicator.deadletter import FileDeadLetters
from replicator.deadletter.entry import DeadLetter
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.filters import ChangeFilter, Route
from replicator.intake import Reader, ShardIntake
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.records import Change
from replicator.rules import rule_for, squash_order
from replicator.writers.destination import DestinationWriter
from replicator.writers.loopwire import EventLoopThread, LoopWire, WireFactory
from replicator.writers.wire import WireWriteClient
from tests.support.aws import client, create_table
from tests.support.faults.proxy import FaultProxy
from tests.support.metrics import sample
from tests.support.records import daemon_record, put, remove
from tests.writers.test_write_outcomes import _SkewCheckingHandler

REGION = "eu-west-1"
LWW = {"policy": "last_writer_wins", "timestamp_attribute": "ts"}
VERSION = {"policy": "version", "version_attribute": "ts"}
OVERWRITE = {"policy": "overwrite"}


def loop_pipeline(
    endpoint: str,
    table: str,
    tmp_path: Path,
    metrics: Metrics,
    conflict: dict[str, str],
    read_timeout: float = 10.0,
    max_in_flight: int = 8,
    wire_factory: WireFactory = LoopWire,
) -> ShardPipeline:
    botocore_client = clients.dynamodb(Place(REGION, endpoint), sdk_retries=False)
    direct = WireWriteClient(
        botocore_client, max_connections=8, connect_timeout=2.0, read_timeout=read_timeout
    )
    rule = rule_for(ConflictConfig(**conflict), "origin")
    writer = DestinationWriter(
        label="dest",
        table=table,
        region=REGION,
        client=direct,
        rule=rule,
        metrics=metrics,
        backoff=Backoff(0.001, 0.01),
    )
    pipeline = ShardPipeline(
        {"dest": writer},
        ChangeBuffer(["dest"], squash_order([rule], ordered_stream=True)),
        metrics,
        "shard-1",
        max_in_flight=max_in_flight,
        max_buffered=1000,
        dead_letters=DeadLetterer(FileDeadLetters(tmp_path / "dead.jsonl"), metrics, "t", "s"),
        wire_factory=wire_factory,
    )
    assert "dest" in pipeline._wires  # the direct path goes out on the event loop
    return pipeline


def outcomes(metrics: Metrics, outcome: str) -> float:
    return sum(
        sample(metrics, "replicator_writes_total", destination="dest", op=op, outcome=outcome)
        for op in ("put", "delete")
    )


@pytest.mark.parametrize("conflict", [LWW, OVERWRITE])
def test_plain_puts_and_deletes_are_applied_on_the_loop_without_a_thread(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, conflict: dict[str, str]
) -> None:
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("loop")
    create_table(ddb, table, stream=None)
    pipeline = loop_pipeline(moto_endpoint, table, tmp_path, metrics, conflict)
    try:
        sequence = 0
        for index in range(40):
            sequence += 1
            pipeline.submit(decode(put(f"k{index}", sequence, ts=10, n={"N": str(index)})))
        pipeline.dispatch()
        assert pipeline.flush(timeout=60)
        for index in range(0, 40, 4):
            sequence += 1
            pipeline.submit(decode(remove(f"k{index}", sequence, ts=20)))
        pipeline.dispatch()
        assert pipeline.flush(timeout=60)
        assert pipeline.checkpointable() == str(sequence)
    finally:
        pipeline.close()

    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    assert {item["pk"]["S"] for item in items} == {f"k{i}" for i in range(40) if i % 4}
    assert all(item["n"]["N"] == item["pk"]["S"][1:] for item in items)
    assert (
        sample(metrics, "replicator_writes_total", destination="dest", op="put", outcome="applied")
        == 40
    )
    assert (
        sample(
            metrics, "replicator_writes_total", destination="dest", op="delete", outcome="applied"
        )
        == 10
    )
    assert sample(metrics, "replicator_apply_delay_seconds_count", destination="dest") == 50
    # Every write settled on the loop: the destination's thread pool never started a thread.
    assert not pipeline._executors["dest"]._threads


@pytest.mark.parametrize("conflict", [LWW, VERSION, OVERWRITE])
def test_an_answer_later_than_the_read_timeout_on_the_loop_is_applied_not_a_lost_conflict(
    proxy: FaultProxy,
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    conflict: dict[str, str],
) -> None:
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("late")
    create_table(ddb, table, stream=None)
    # The answer is held for 3 s against a 1 s read timeout: the first request (on the
    # loop) times out, the retry (on a thread, answered at once) meets the landed write.
    pipeline = loop_pipeline(proxy.url, table, tmp_path, metrics, conflict, read_timeout=1.0)
    try:
        proxy.slow_answer_once(3.0)
        pipeline.submit(decode(put("a", 1, ts=10, origin="us-east-1")))
        pipeline.dispatch()
        assert pipeline.flush(timeout=60)
        assert proxy.counts("PutItem")["slow_answer_200"] == 1

        proxy.slow_answer_once(3.0)
        pipeline.submit(decode(remove("a", 2, ts=10, origin="us-east-1")))
        pipeline.dispatch()
        assert pipeline.flush(timeout=60)
        assert proxy.counts("DeleteItem")["slow_answer_200"] == 1
        assert pipeline.checkpointable() == "2"
    finally:
        pipeline.close()

    assert outcomes(metrics, "applied") == 2
    assert outcomes(metrics, "conflict_lost") == 0
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="network") == 2
    assert sample(metrics, "replicator_dead_letters_total", destination="dest") == 0
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})


class _SkewedServer(_SkewCheckingHandler):
    """A server an hour ahead, with a list of accepted requests of its own."""

    accepted: ClassVar[list[str]] = []


def test_a_clock_skew_refusal_on_the_loop_is_retried_on_the_servers_clock(
    tmp_path: Path, metrics: Metrics
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SkewedServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        pipeline = loop_pipeline(url, "t", tmp_path, metrics, OVERWRITE)
        try:
            pipeline.submit(decode(put("a", 1)))
            pipeline.dispatch()
            assert pipeline.flush(timeout=60)
            # The next write is signed on the learnt clock from its first request on.
            pipeline.submit(decode(put("b", 2)))
            pipeline.dispatch()
            assert pipeline.flush(timeout=60)
        finally:
            pipeline.close()
    finally:
        server.shutdown()
        server.server_close()
    assert outcomes(metrics, "applied") == 2
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="clock_skew") == 1
    assert len(_SkewedServer.accepted) == 2


class _DueCredentials:
    """Credentials whose refresh is due: signing them may call STS first."""

    def __init__(self, frozen: Any) -> None:
        self.frozen = frozen
        self.refresh_threads: list[str] = []

    def refresh_needed(self) -> bool:
        return True

    def get_frozen_credentials(self) -> Any:
        self.refresh_threads.append(threading.current_thread().name)
        return self.frozen


def _direct_pipeline(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> tuple[Any, str, ShardPipeline, DestinationWriter]:
    """A new table, and a pipeline writing to it over the event loop (overwrite)."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("loop")
    create_table(ddb, table, stream=None)
    pipeline = loop_pipeline(moto_endpoint, table, tmp_path, metrics, OVERWRITE)
    writer = pipeline.writers["dest"]
    assert isinstance(writer, DestinationWriter) and isinstance(writer.client, WireWriteClient)
    return ddb, table, pipeline, writer


def test_writes_whose_credentials_are_due_for_a_refresh_are_signed_on_a_thread(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """A refresh (STS, a credential endpoint) can take seconds: it never runs on the loop
    that carries every destination's writes."""
    ddb, table, pipeline, writer = _direct_pipeline(moto_endpoint, unique, tmp_path, metrics)
    direct = writer.client
    due = _DueCredentials(direct._credentials.get_frozen_credentials())
    direct._credentials = due
    try:
        assert direct.signing_may_block()
        for index in range(10):
            pipeline.submit(decode(put(f"k{index}", index + 1, ts=10)))
        pipeline.dispatch()
        assert pipeline.flush(timeout=60)
    finally:
        pipeline.close()
    assert len(ddb.scan(TableName=table, ConsistentRead=True)["Items"]) == 10
    assert outcomes(metrics, "applied") == 10
    assert due.refresh_threads and all(n.startswith("write-dest") for n in due.refresh_threads)


def test_answer_heads_with_lengths_that_are_not_digits_are_refused_not_looped_on() -> None:
    """A negative chunk size would read the same chunk for ever on the loop thread; a
    signed or spaced Content-Length is not HTTP either. Both fail the connection (a
    ConnectionClosedError for the writer, which retries)."""
    from replicator.writers.loopwire import _dechunk, _parse_head

    with pytest.raises(ValueError, match="not a length"):
        _dechunk(bytearray(b"-6\r\n{}\r\n0\r\n\r\n"), 0)
    with pytest.raises(ValueError, match="not a length"):
        _dechunk(bytearray(b"+2\r\n{}\r\n0\r\n\r\n"), 0)
    assert _dechunk(bytearray(b"2\r\n{}\r\n0\r\n\r\n"), 0) == b"{}"
    for length in (b"-5", b"1_0", b"+3", b""):
        with pytest.raises(ValueError, match="not a length"):
            _parse_head(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n"))
    head = _parse_head(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
    assert head is not None and head.length == 2 and head.keep_alive


def test_connection_close_among_other_tokens_is_not_reused() -> None:
    from replicator.writers.loopwire import _parse_head

    head = _parse_head(
        bytearray(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n")
    )
    assert head is not None and not head.keep_alive


def test_an_unexpected_error_on_the_loop_stops_the_shard_instead_of_hanging(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """Nothing raised on the loop thread is left to asyncio's log: the write is answered
    with the error, which the writer does not know, so the shard stops with it and the
    checkpoint stays where it was."""
    _, _, pipeline, writer = _direct_pipeline(moto_endpoint, unique, tmp_path, metrics)
    writer.client._user_agent = "replicator \u2603"  # not latin-1: the head cannot be encoded
    try:
        pipeline.submit(decode(put("k1", 1, ts=10)))
        pipeline.dispatch()
        with pytest.raises(UnicodeEncodeError):
            pipeline.flush(timeout=60)
        assert pipeline.checkpointable() is None
    finally:
        pipeline.close()


class _ThreadNotingLetters:
    """A dead-letter target that keeps each letter with the thread that stored it."""

    description = "memory"

    def __init__(self) -> None:
        self.stored: list[tuple[str, str]] = []

    def put(self, letter: DeadLetter) -> bool:
        self.stored.append((letter.record["sequenceNumber"], threading.current_thread().name))
        return True

    def claim_all(self) -> Any:
        return iter(())

    def settle(self, claimed: Any, *, replayed: bool) -> None:
        raise AssertionError("nothing is replayed here")


@dataclass(frozen=True, slots=True)
class _ThreadNotingFilter(ChangeFilter):
    """The job's filters, noting the thread each record is read on."""

    read_on: list[str] = field(default_factory=list)

    def route(self, change: Change) -> Route:
        self.read_on.append(threading.current_thread().name)
        return ChangeFilter.route(self, change)


def test_a_batch_is_read_on_the_loop_thread_and_its_undecodable_records_stored_off_it(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """Reading runs on the loop, which plans and settles the writes too (one busy thread,
    not two); storing a dead letter is I/O, which the loop never waits on."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("loop")
    create_table(ddb, table, stream=None)
    pipeline = loop_pipeline(moto_endpoint, table, tmp_path, metrics, LWW)
    letters = _ThreadNotingLetters()
    pipeline.dead_letters = DeadLetterer(letters, metrics, "t", "shard-1")
    change_filter = _ThreadNotingFilter(None, "", skip_ttl_deletes=False)
    intake = ShardIntake(pipeline, Reader(change_filter))
    batch = [
        put("a", 1, ts=1, v="first"),
        daemon_record(b"\x00 not json", 2),
        put("b", 3, ts=1),
        daemon_record({"eventName": "MODIFY"}, 4),
        put("a", 5, ts=2, v="second"),
    ]
    try:
        intake.accept(batch, 0)
        assert pipeline.flush(timeout=60)
        assert pipeline.checkpointable() == "5"
    finally:
        pipeline.close()

    items = {item["pk"]["S"]: item for item in ddb.scan(TableName=table)["Items"]}
    assert set(items) == {"a", "b"} and items["a"]["v"] == {"S": "second"}
    here = threading.current_thread().name
    assert letters.stored == [("2", here), ("4", here)]
    assert change_filter.read_on == ["write-loop-shard-1"] * 3


def test_run_on_the_loop_returns_raises_and_after_the_loop_ends_runs_on_the_caller() -> None:
    thread = EventLoopThread("run-test")
    try:
        assert thread.run(lambda: threading.current_thread().name) == "run-test"
        with pytest.raises(KeyError, match="missing"):
            thread.run({}.__getitem__, "missing")
    finally:
        thread.stop()
    assert thread.run(lambda: threading.current_thread().name) == threading.current_thread().name


def test_a_cancelled_error_raised_on_the_loop_is_raised_again_not_run_twice() -> None:
    thread = EventLoopThread("run-test")
    calls: list[str] = []

    def cancelled() -> None:
        calls.append(threading.current_thread().name)
        raise CancelledError

    try:
        with pytest.raises(CancelledError):
            thread.run(cancelled)
    finally:
        thread.stop()
    assert calls == ["run-test"]
