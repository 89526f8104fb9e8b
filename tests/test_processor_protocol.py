"""The processor child driven over the MultiLang protocol, as the daemon drives it:
JSON lines on stdin, status and checkpoint messages on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import client, create_table
from tests.support.e2e import PATIENCE
from tests.support.records import daemon_record, put, remove, stream_record
from tests.support.silent import SilentEndpoint

REGION = "eu-west-1"


class RawDaemon:
    """Just enough of the MultiLangDaemon to drive one child, recording every line."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "replicator", "processor", "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.checkpoints: list[Any] = []
        self.answer_extra: dict[str, Any] = {}  # fields added to each checkpoint answer
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._errors, daemon=True)
        self._stderr_reader.start()

    def _pump(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _errors(self) -> None:
        assert self.process.stderr
        for line in self.process.stderr:
            self.stderr.append(line)

    def write(self, message: Any) -> None:
        assert self.process.stdin
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def read(self, timeout: float = 30.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout * PATIENCE
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                return None
            if line.strip():
                message: dict[str, Any] = json.loads(line)
                return message

    def act(
        self,
        message: dict[str, Any],
        checkpoint_error: str | None = None,
        before_answer: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Send an action, answer checkpoints (``before_answer`` is called first), return
        the checkpoints asked for."""
        self.write(message)
        asked = []
        while True:
            reply = self.read()
            assert reply is not None, "child exited:\n" + "".join(self.stderr[-20:])
            if reply["action"] == "checkpoint":
                if before_answer is not None:
                    before_answer()
                asked.append(reply["sequenceNumber"])
                self.checkpoints.append(reply["sequenceNumber"])
                self.write(
                    {
                        "action": "checkpoint",
                        "sequenceNumber": reply["sequenceNumber"],
                        "subSequenceNumber": reply.get("subSequenceNumber"),
                        "error": checkpoint_error,
                        **self.answer_extra,
                    }
                )
                continue
            assert reply == {"action": "status", "responseFor": message["action"]}, reply
            return asked

    def __enter__(self) -> RawDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        """Leave no child behind when a test fails before it finished."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def initialize(self, shard: str, sequence_number: str | None = None) -> list[Any]:
        """The daemon's first action: ``shard`` from ``sequence_number`` (None: no
        checkpoint yet; ``TRIM_HORIZON`` as the KCL sends it for a new lease)."""
        return self.act(
            {
                "action": "initialize",
                "shardId": shard,
                "sequenceNumber": sequence_number,
                "subSequenceNumber": None if sequence_number is None else 0,
            }
        )

    def records(self, records: list[Any], millis_behind: int = 0) -> list[Any]:
        return self.act(
            {
                "action": "processRecords",
                "millisBehindLatest": millis_behind,
                "records": [{"action": "record", **r} for r in records],
            }
        )

    def until_checkpoint(self, sequence_number: str, timeout: float = 30.0) -> None:
        """Send empty batches, as an idle daemon does, until the child checkpoints there."""
        deadline = time.monotonic() + timeout * PATIENCE
        while sequence_number not in self.checkpoints:
            assert time.monotonic() < deadline, f"no checkpoint at {sequence_number}"
            self.records([])
            time.sleep(0.05)

    def until_asked(self, record: dict[str, Any]) -> dict[str, Any]:
        """Send ``record``, then empty batches, until the child asks for a checkpoint
        (within that batch, its write landing before the batch is answered, or after a
        later one); the request is left unanswered."""
        batch: list[Any] = [{"action": "record", **record}]
        deadline = time.monotonic() + 30 * PATIENCE
        while True:
            self.write({"action": "processRecords", "millisBehindLatest": 0, "records": batch})
            batch = []
            reply = self.read()
            assert reply is not None
            if reply["action"] == "checkpoint":
                return reply
            assert reply == {"action": "status", "responseFor": "processRecords"}, reply
            assert time.monotonic() < deadline, "no checkpoint asked for"

    def finish(self, timeout: float = 30.0) -> int:
        assert self.process.stdin
        self.process.stdin.close()
        return self.exit_code(timeout)

    def exit_code(self, timeout: float = 30.0) -> int:
        """The child's exit status, once everything it wrote to stderr has been read: the
        process can end before the reader thread has taken its last lines."""
        code = self.process.wait(timeout * PATIENCE)
        self._stderr_reader.join(timeout * PATIENCE)
        assert not self._stderr_reader.is_alive(), "stderr still open after the child ended"
        return code


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> dict[str, Any]:
    table = unique("proto")
    ddb = client("dynamodb", REGION, moto_endpoint)
    create_table(ddb, table, stream=None)
    dead = tmp_path / "dead.jsonl"
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task_name: proto-test\n"
        f"source: {{region: us-east-1, table: source-table}}\n"
        f"destinations:\n"
        f"  - {{region: {REGION}, table: {table}, endpoint_url: '{moto_endpoint}'}}\n"
        f"conflict: {{policy: last_writer_wins, timestamp_attribute: ts}}\n"
        f"dead_letter: {{kind: file, path: '{dead}'}}\n"
        f"metrics: {{enabled: false}}\n"
        # No stream to list here, so no watermark could be stored, and a checkpoint past
        # a dead letter waits until its range is (tests/watermark cover that).
        f"watermark: {{enabled: false}}\n"
    )
    return {"config": config, "ddb": ddb, "table": table, "dead": dead}


def items(job: dict[str, Any]) -> dict[str, Any]:
    scanned = job["ddb"].scan(TableName=job["table"], ConsistentRead=True)["Items"]
    return {item["pk"]["S"]: item for item in scanned}


def test_a_batch_with_bad_records_applies_the_good_and_checkpoints_past_all(
    job: dict[str, Any],
) -> None:
    daemon = RawDaemon(job["config"])
    assert daemon.initialize("shardId-1", "TRIM_HORIZON") == []
    undecodable = daemon_record(b"\x00 not json", 102)
    # A key DynamoDB refuses as a value (an empty string): the item's own fault. (A key
    # of another type than the destination table's means the table's key schema is not
    # the source's: that stops the worker, see tests/writers/test_write_outcomes.py.)
    rejected = daemon_record(
        stream_record("INSERT", {"pk": {"S": ""}}, {"pk": {"S": ""}, "ts": {"N": "1"}}, seq=103),
        103,
    )
    batch = [
        put("a", 101, ts=1, v="first"),
        undecodable,
        rejected,
        put("b", 104, ts=1),
        put("a", 105, ts=2, v="second"),
        remove("gone", 106, ts=1),
    ]
    daemon.records(batch)
    daemon.until_checkpoint("106")
    assert items(job)["a"]["v"] == {"S": "second"}
    assert set(items(job)) == {"a", "b"}
    letters = [json.loads(line) for line in job["dead"].read_text().splitlines()]
    assert sorted((letter["reason"], letter["record"]["sequenceNumber"]) for letter in letters) == [
        ("rejected", "103"),
        ("undecodable", "102"),
    ]
    assert all(letter["error"] for letter in letters)
    # checkpoints only ever move forward, never past what was applied
    numeric = [int(s) for s in daemon.checkpoints]
    assert numeric == sorted(numeric) and numeric[-1] == 106
    assert daemon.act({"action": "shutdownRequested"}) == []  # nothing new to checkpoint
    assert daemon.finish() == 0


def test_a_put_whose_image_lacks_its_key_is_dead_lettered_and_the_rest_flows(
    job: dict[str, Any],
) -> None:
    """A (hand-made) record whose NewImage lacks the key of its Keys: the destination
    would refuse the put as if its key schema were not the source's, and the worker
    would stop on it again at every restart. It is the record that is at fault: it is
    dead-lettered as undecodable, naming it, and the records after it are replicated."""
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    keyless = daemon_record(
        stream_record("INSERT", {"pk": {"S": "k"}}, {"v": {"S": "x"}, "ts": {"N": "1"}}, seq=151),
        151,
    )
    daemon.records([put("a", 150, ts=1), keyless, put("b", 152, ts=1)])
    daemon.until_checkpoint("152")
    assert set(items(job)) == {"a", "b"}
    (letter,) = [json.loads(line) for line in job["dead"].read_text().splitlines()]
    assert (letter["reason"], letter["destination"]) == ("undecodable", "*")
    assert letter["record"]["sequenceNumber"] == "151"
    assert letter["error"].startswith("record 151: key attribute pk ")
    assert "missing" in letter["error"]
    numeric = [int(s) for s in daemon.checkpoints]
    assert numeric == sorted(numeric) and numeric[-1] == 152
    assert daemon.finish() == 0


def test_a_record_whose_keys_are_not_the_source_tables_is_dead_lettered_and_the_rest_flows(
    job: dict[str, Any], moto_endpoint: str, unique: Any
) -> None:
    """A (hand-made) record whose Keys, and image, are not the source table's key: the
    destination refuses it as if its own key were not the source's. The source's key
    (read when that refusal comes) says the record is at fault: it is dead-lettered, the
    records after it are replicated and checkpointed past, and the worker goes on."""
    source = unique("keyed-source")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), source, stream=None)
    config = (
        job["config"]
        .read_text()
        .replace(
            "source: {region: us-east-1, table: source-table}",
            f"source: {{region: us-east-1, table: {source}, endpoint_url: '{moto_endpoint}'}}",
        )
    )
    job["config"].write_text(config)
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    other_name = stream_record("INSERT", {"id": {"S": "k"}}, {"id": {"S": "k"}}, seq=161)
    other_type = stream_record(
        "INSERT", {"pk": {"N": "1"}}, {"pk": {"N": "1"}, "ts": {"N": "1"}}, seq=162
    )
    daemon.records(
        [
            put("a", 160, ts=1),
            daemon_record(other_name, 161),
            daemon_record(other_type, 162),
            put("b", 163, ts=1),
        ]
    )
    daemon.until_checkpoint("163")
    assert set(items(job)) == {"a", "b"}
    letters = [json.loads(line) for line in job["dead"].read_text().splitlines()]
    assert sorted((letter["record"]["sequenceNumber"], letter["reason"]) for letter in letters) == [
        ("161", "rejected"),
        ("162", "rejected"),
    ]
    errors = {letter["record"]["sequenceNumber"]: letter["error"] for letter in letters}
    assert errors["161"].startswith("its key lacks pk; has id, which is no key attribute")
    assert errors["162"].startswith("its key has pk of type N, not S")
    lost = [line for line in daemon.stderr if "destination table lost" in line]
    assert lost == []
    numeric = [int(s) for s in daemon.checkpoints]
    assert numeric == sorted(numeric) and numeric[-1] == 163
    assert daemon.finish() == 0


def test_a_squashed_change_is_written_when_the_change_standing_for_it_is_rejected(
    job: dict[str, Any],
) -> None:
    """One batch, as applied one record at a time: the destination ends with the last
    state of each item it accepts, whether the refused change replaced older ones or an
    older one made a later change look redundant; the refused ones are dead-lettered."""
    ddb, table = job["ddb"], job["table"]
    ddb.delete_table(TableName=table)
    ddb.create_table(  # an index the source does not have: its key must not be empty
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "gone"}, "ts": {"N": "1"}})
    daemon = RawDaemon(job["config"])
    daemon.initialize("s")
    daemon.records(
        [
            put("replaced", 301, ts=1, v="good"),
            put("replaced", 302, ts=2, v="refused", g=""),  # replaces 301, then refused
            remove("gone", 303, ts=1),
            put("gone", 304, ts=2, g=""),  # replaces the delete, then refused
            put("dropped", 305, ts=5, g=""),  # refused
            put("dropped", 306, ts=3, v="good"),  # below 305: dropped behind it at first
        ]
    )
    daemon.until_checkpoint("306")
    held = items(job)
    assert held["replaced"]["v"] == {"S": "good"}
    assert held["dropped"]["v"] == {"S": "good"} and held["dropped"]["ts"] == {"N": "3"}
    assert "gone" not in held
    letters = [json.loads(line) for line in job["dead"].read_text().splitlines()]
    assert sorted((letter["reason"], letter["record"]["sequenceNumber"]) for letter in letters) == [
        ("rejected", "302"),
        ("rejected", "304"),
        ("rejected", "305"),
    ]
    assert daemon.act({"action": "shutdownRequested"}) == []
    assert daemon.finish() == 0


def shutdown_lines(daemon: RawDaemon) -> list[dict[str, Any]]:
    """The child's log lines about a requested shutdown (every line must be JSON)."""
    lines = [json.loads(line) for line in daemon.stderr if line.strip()]
    return [line for line in lines if line["event"].startswith("shutdown requested;")]


NOTHING_NEW = "shutdown requested; not checkpointed: nothing new settled since the last checkpoint"


def test_shutdown_requested_flushes_and_checkpoints(job: dict[str, Any]) -> None:
    daemon = RawDaemon(job["config"])
    daemon.initialize("s")
    daemon.records([put(f"k{i}", 200 + i, ts=1) for i in range(20)])
    asked = daemon.act({"action": "shutdownRequested"})
    assert (daemon.checkpoints or asked)[-1] == "219"
    assert len(items(job)) == 20
    assert daemon.finish() == 0
    # The line says what the stop did: checkpointed at 219, or nothing new when a batch's
    # checkpoint had already reached 219 before the stop was asked for.
    (line,) = shutdown_lines(daemon)
    assert line["level"] == "info"
    if asked:
        assert (line["event"], line["sequence_number"]) == (
            "shutdown requested; checkpointed",
            "219",
        )
    else:
        assert line["event"] == NOTHING_NEW and line["last_checkpoint"] == "219"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_sent_to_the_processor_itself_leaves_the_stop_to_its_daemon(
    job: dict[str, Any], sig: signal.Signals
) -> None:
    """systemd's default KillMode (control-group) signals every process of the unit at
    once, and Ctrl-C at a terminal the whole foreground group: the processor then gets
    the daemon's SIGTERM or SIGINT too. Its daemon turns that signal into a
    shutdownRequested, which the processor must still be alive to answer with its final
    checkpoint; it used to die of the signal (143), unheard."""
    daemon = RawDaemon(job["config"])
    daemon.initialize("s")
    daemon.records([put(f"k{i}", 500 + i, ts=1) for i in range(10)])
    os.kill(daemon.process.pid, sig)
    asked = daemon.act({"action": "shutdownRequested"})
    assert (daemon.checkpoints or asked)[-1] == "509"
    assert len(items(job)) == 10
    assert daemon.finish() == 0
    (line,) = shutdown_lines(daemon)
    assert line["event"] in ("shutdown requested; checkpointed", NOTHING_NEW), line


# Stands in for structlog, the first module the package imports: the stop signal comes
# while the processor starts, before the real structlog (and everything after it) loads.
_SIGNALLED_WHILE_STARTING = """
import importlib, os, signal, sys
os.kill(os.getpid(), signal.{name})
sys.path.remove(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
del sys.modules["structlog"]
sys.modules["structlog"] = importlib.import_module("structlog")
"""


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
def test_a_stop_signal_while_the_processor_starts_is_ignored_too(
    job: dict[str, Any], tmp_path: Path, sig: signal.Signals
) -> None:
    """A service manager that signals every process of the service can do so just as the
    daemon starts a processor; one that died of it before its first answer left the
    KCL's stop waiting out shutdownGraceMillis for it (a 40 s stop, no checkpoint)."""
    early = tmp_path / "early"
    (early / "structlog").mkdir(parents=True)
    (early / "structlog" / "__init__.py").write_text(
        _SIGNALLED_WHILE_STARTING.format(name=sig.name)
    )
    daemon = RawDaemon(job["config"], env={"PYTHONPATH": str(early)})
    daemon.initialize("s")
    daemon.records([put("a", 101, ts=1)])
    daemon.until_checkpoint("101")
    assert len(items(job)) == 1
    assert daemon.act({"action": "shutdownRequested"}) == []
    assert daemon.finish() == 0


def test_a_shutdown_with_nothing_new_settled_says_it_did_not_checkpoint(
    job: dict[str, Any],
) -> None:
    daemon = RawDaemon(job["config"])
    daemon.initialize("s")
    daemon.records([put("a", 101, ts=1)])
    daemon.until_checkpoint("101")
    assert daemon.act({"action": "shutdownRequested"}) == []
    assert daemon.finish() == 0
    (line,) = shutdown_lines(daemon)
    assert line["level"] == "info"
    assert line["event"] == NOTHING_NEW
    assert line["last_checkpoint"] == "101"
    assert "sequence_number" not in line


@pytest.mark.parametrize("start", ["LATEST", "TRIM_HORIZON", "101"])
def test_a_stop_before_a_latest_shards_first_checkpoint_warns_that_the_next_start_passes_over(
    job: dict[str, Any], start: str
) -> None:
    """A lease at LATEST keeps LATEST until its first checkpoint, so the next start of a
    shard stopped before one is at the stream's tip then (the KCL's and the local
    runtime's behaviour alike): what is written meanwhile is passed over, which the stop
    says at warning level. A TRIM_HORIZON lease, or one with a checkpoint, loses nothing."""
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", start)
    assert daemon.act({"action": "shutdownRequested"}) == []
    assert daemon.finish() == 0
    (line,) = shutdown_lines(daemon)
    if start == "LATEST":
        assert line["level"] == "warning"
        assert line["event"] == (
            "shutdown requested; the shard has no checkpoint yet: it started at LATEST and no "
            "change has been read, so the next start begins again at the stream's tip and "
            "changes made until then are not replicated (`replicator backfill` copies them)"
        )  # the job runs with the watermark off: nothing reports them
    else:
        assert (line["level"], line["event"]) == ("info", NOTHING_NEW)


@pytest.mark.parametrize(
    ("settled", "start"),
    [(False, None), (True, None), (False, "LATEST")],
    ids=["nothing-settled", "some-settled", "nothing-settled-at-latest"],
)
def test_a_shutdown_with_writes_outstanding_warns_naming_the_destination(
    job: dict[str, Any], tmp_path: Path, settled: bool, start: str | None
) -> None:
    """A destination that never answers holds a change back: after the job's flush
    timeout (``kcl.shutdown_flush_ms``, 2 s here: waiting out the default 20 s proves
    nothing more) the stop is answered with a warning naming what is outstanding where,
    either without a checkpoint (nothing settled everywhere) or checkpointed only as far
    as every destination settled (an undecodable record, dead-lettered, whose checkpoints
    the daemon throttled during the batch), never as a clean "checkpointed"."""
    with SilentEndpoint() as silent:
        config = tmp_path / "two.yaml"
        config.write_text(
            job["config"]
            .read_text()
            .replace(
                "destinations:\n",
                "destinations:\n"
                f"  - {{name: hung, region: {REGION}, table: hung,\n"
                f"      endpoint_url: '{silent.url}'}}\n",
            )
            + "kcl: {shutdown_flush_ms: 2000}\n"
        )
        with RawDaemon(config) as daemon:
            daemon.initialize("s", start)
            records = [put("a", 901, ts=1)]
            if settled:
                records.insert(0, daemon_record(b"not json", 900))
            daemon.act(
                {
                    "action": "processRecords",
                    "millisBehindLatest": 0,
                    "records": [{"action": "record", **r} for r in records],
                },
                checkpoint_error="ThrottlingException",
            )
            assert silent.connected.wait(30 * PATIENCE), "the put was never sent"
            asked = daemon.act({"action": "shutdownRequested"})
            assert daemon.finish() == 0
    (line,) = shutdown_lines(daemon)
    assert line["level"] == "warning"
    assert line["outstanding"] == {"hung": 1}
    assert line["flush_timeout_s"] == 2.0
    if settled:
        assert asked == ["900"]
        assert line["event"].startswith(
            "shutdown requested; checkpointed what every destination has settled, but writes "
            "were still outstanding after the flush timeout"
        )
        assert line["sequence_number"] == "900"
    else:
        assert asked == [] and daemon.checkpoints == []
        assert line["event"].startswith(
            "shutdown requested; not checkpointed: writes were still outstanding after the "
            "flush timeout"
        )
        assert line["last_checkpoint"] is None
        # No checkpoint to read from at all under LATEST: the next start is at the tip.
        said = (
            "the shard's next owner reads from the last checkpoint, which this shard does not "
            "have yet (it started at LATEST): its next start begins at the stream's tip, so "
            "the changes read here and not settled are not replicated (`replicator backfill` "
            "copies them)"
        )
        assert line["event"].endswith(said) is (start == "LATEST"), line["event"]
    assert "a" in items(job)  # the other destination applied it


def test_a_shutdown_with_a_conflict_log_entry_outstanding_says_so(
    job: dict[str, Any], tmp_path: Path
) -> None:
    """A lost conflict whose entry the log never takes holds its record open: the stop's
    warning names the conflict-log entries it waited for, not writes (it said "writes were
    still outstanding" with outstanding {}), and nothing is checkpointed."""
    job["ddb"].put_item(TableName=job["table"], Item={"pk": {"S": "a"}, "ts": {"N": "5"}})
    with SilentEndpoint() as silent:
        config = tmp_path / "logged.yaml"
        config.write_text(
            job["config"].read_text()
            + f"conflict_log: {{kind: dynamodb, endpoint_url: '{silent.url}', "
            "retry_for_s: 600}\n" + "kcl: {shutdown_flush_ms: 2000}\n"
        )
        with RawDaemon(config) as daemon:
            daemon.initialize("s")
            assert daemon.records([put("a", 901, ts=1)]) == []
            assert silent.connected.wait(30 * PATIENCE), "the entry was never sent"
            assert daemon.act({"action": "shutdownRequested"}) == []
            assert daemon.finish() == 0
    (line,) = shutdown_lines(daemon)
    assert line["level"] == "warning"
    assert line["outstanding"] == {"conflict-log entries": 1}
    assert line["event"].startswith(
        "shutdown requested; not checkpointed: conflict-log entries were still outstanding "
        "after the flush timeout"
    )
    assert daemon.checkpoints == []
    assert items(job)["a"]["ts"] == {"N": "5"}  # the conflict was lost, as it should be


def test_shard_ended_checkpoints_with_no_sequence_number(job: dict[str, Any]) -> None:
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    daemon.records([put("end", 300, ts=1)])
    assert daemon.act({"action": "shardEnded"}) == [None]
    assert "end" in items(job)
    assert daemon.finish() == 0


def test_lease_lost_drops_the_buffer_and_never_checkpoints(job: dict[str, Any]) -> None:
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    assert daemon.act({"action": "leaseLost"}) == []
    assert daemon.records([put("late", 400, ts=1)]) == []
    assert daemon.finish() == 0
    assert daemon.checkpoints == []


def test_the_lease_given_up_after_a_requested_shutdown_is_no_warning(
    job: dict[str, Any],
) -> None:
    """On a graceful stop the KCL tells each processor its lease is gone right after it
    checkpointed: expected, so info; a lease lost otherwise is still a warning."""
    daemon = RawDaemon(job["config"])
    daemon.initialize("s")
    daemon.records([put("k", 500, ts=1)])
    daemon.act({"action": "shutdownRequested"})
    assert daemon.act({"action": "leaseLost"}) == []
    assert daemon.finish() == 0
    (line,) = [line for line in daemon.stderr if "requested shutdown" in json.loads(line)["event"]]
    assert json.loads(line)["event"].startswith(
        "processor done after the requested shutdown; the shard goes on from its checkpoint"
    )
    assert json.loads(line)["level"] == "info"
    other = RawDaemon(job["config"])
    other.initialize("s")
    other.act({"action": "leaseLost"})
    assert other.finish() == 0
    (line,) = [line for line in other.stderr if "lease" in json.loads(line)["event"]]
    assert json.loads(line)["event"].startswith("lease lost;")
    assert json.loads(line)["level"] == "warning"


def test_checkpoint_refused_as_shutdown_means_lease_gone(job: dict[str, Any]) -> None:
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    daemon.records([put("x", 500, ts=1)])
    deadline = time.monotonic() + 30 * PATIENCE
    while not daemon.checkpoints:
        assert time.monotonic() < deadline
        daemon.act(
            {"action": "processRecords", "millisBehindLatest": 0, "records": []},
            checkpoint_error="ShutdownException",
        )
    count = len(daemon.checkpoints)
    daemon.records([])
    assert len(daemon.checkpoints) == count  # no checkpoint after the lease is gone
    assert daemon.finish() == 0


def test_shard_ended_after_lease_lost_asks_for_no_checkpoint(job: dict[str, Any]) -> None:
    """The KCL puts a lost lease before a shard's end: the end is then another worker's to
    checkpoint."""
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    daemon.records([put("a", 450, ts=1)])
    assert daemon.act({"action": "leaseLost"}) == []
    assert daemon.act({"action": "shardEnded"}) == []
    assert daemon.finish() == 0
    assert daemon.checkpoints == []


def test_shard_ended_after_the_lease_was_lost_is_answered_at_once_without_a_checkpoint(
    tmp_path: Path,
) -> None:
    """A checkpoint refused as ShutdownException while a write hangs (the lease is gone and
    abandon() cancelled the write, which never settles), then shardEnded: the child answers
    it at once, asks for no checkpoint at SHARD_END, and ends when its input does."""
    with SilentEndpoint() as destination:
        config = tmp_path / "job.yaml"
        config.write_text(
            f"task_name: proto-test\n"
            f"source: {{region: us-east-1, table: source-table}}\n"
            f"destinations:\n"
            f"  - {{region: {REGION}, table: hung, endpoint_url: '{destination.url}'}}\n"
            f"conflict: {{policy: overwrite}}\n"
            f"dead_letter: {{kind: file, path: '{tmp_path / 'dead.jsonl'}'}}\n"
            f"metrics: {{enabled: false}}\n"
            f"watermark: {{enabled: false}}\n"  # the checkpoint asked for is not held
        )
        with RawDaemon(config) as daemon:
            daemon.initialize("s", "TRIM_HORIZON")

            def in_flight() -> None:  # refused only once the put is in flight
                assert destination.connected.wait(30 * PATIENCE), "the put was never sent"

            # The undecodable record is dead-lettered at once, so a checkpoint is asked for
            # while the put after it waits on the silent destination.
            daemon.act(
                {
                    "action": "processRecords",
                    "millisBehindLatest": 0,
                    "records": [
                        {"action": "record", **r}
                        for r in (daemon_record(b"not json", 800), put("x", 801, ts=1))
                    ],
                },
                checkpoint_error="ShutdownException",
                before_answer=in_flight,
            )
            deadline = time.monotonic() + 30 * PATIENCE
            while not daemon.checkpoints:
                assert time.monotonic() < deadline, "no checkpoint asked for"
                daemon.act(
                    {"action": "processRecords", "millisBehindLatest": 0, "records": []},
                    checkpoint_error="ShutdownException",
                    before_answer=in_flight,
                )
            assert destination.connected.is_set()  # the put is in flight
            count = len(daemon.checkpoints)
            daemon.write({"action": "shardEnded"})
            reply = daemon.read(timeout=10)
            assert reply == {"action": "status", "responseFor": "shardEnded"}, reply
            assert len(daemon.checkpoints) == count
            assert daemon.finish() == 0
            assert any("shard ended after the lease was lost" in line for line in daemon.stderr)


def test_checkpoint_invalid_state_ends_the_process_nonzero(job: dict[str, Any]) -> None:
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    # The checkpoint may be asked for within this batch or after a later one.
    batch = [{"action": "record", **put("x", 600, ts=1)}]
    daemon.write({"action": "processRecords", "millisBehindLatest": 0, "records": batch})
    deadline = time.monotonic() + 30 * PATIENCE
    while True:
        reply = daemon.read()
        if reply is None:
            break
        if reply["action"] == "checkpoint":
            daemon.write(
                {
                    "action": "checkpoint",
                    "sequenceNumber": reply["sequenceNumber"],
                    "subSequenceNumber": None,
                    "error": "InvalidStateException",
                }
            )
        elif time.monotonic() < deadline:
            daemon.write({"action": "processRecords", "millisBehindLatest": 0, "records": []})
    assert daemon.exit_code() == 1
    assert any("InvalidStateException" in line for line in daemon.stderr)


def test_an_unexpected_error_ends_the_process_nonzero(job: dict[str, Any]) -> None:
    daemon = RawDaemon(job["config"])
    daemon.write({"action": "processRecords", "millisBehindLatest": 0, "records": []})
    assert daemon.read() is None  # no status: the child died instead of carrying on
    assert daemon.exit_code() == 1
    assert any("before initialize" in line for line in daemon.stderr)


@pytest.mark.parametrize(
    ("action", "says"),
    [
        ({"action": "shutdown", "reason": "TERMINATE"}, "KCL 1.x"),
        ({"action": "shutdown", "reason": "ZOMBIE"}, "KCL 1.x"),
        ({"action": "bogus"}, "does not know ('bogus'"),
    ],
    ids=["kcl1-terminate", "kcl1-zombie", "unknown"],
)
def test_an_action_of_another_protocol_ends_the_processor_in_one_json_line(
    job: dict[str, Any], action: dict[str, Any], says: str
) -> None:
    """A KCL 1.x daemon (the DynamoDB Streams adapter 1.x StreamsMultiLangDaemon) ends a
    shard with `shutdown`, which amazon-kclpy 2+ cannot decode; an unknown action neither.
    The child answers nothing, says why in one JSON line naming the action and the daemon
    it needs, and exits 4."""
    config = job["config"]
    config.write_text(config.read_text() + "logging: {format: json}\n")
    daemon = RawDaemon(config)
    daemon.initialize("s")
    daemon.records([put("a", 101, ts=1)])
    daemon.write(action)
    assert daemon.read() is None  # no status, nothing else on stdout (read() parses JSON)
    assert daemon.exit_code() == 4
    lines = [json.loads(line) for line in daemon.stderr if line.strip()]  # only JSON lines
    (error,) = [line for line in lines if line["level"] == "error"]
    assert error["event"] == "the daemon speaks another MultiLang protocol than KCL 3's; exiting"
    assert error["action"] == action["action"]
    assert error.get("reason") == action.get("reason")
    assert says in error["error"]
    assert "the KCL 3 MultiLangDaemon" in error["error"]
    assert error["exit_code"] == 4
    assert "exception" not in error


def test_process_records_lines_are_read_fast_into_the_same_records() -> None:
    """The child parses processRecords lines with msgspec; the records it hands the
    intake are those amazon-kclpy's own parsing gives, and every other action is the
    message amazon-kclpy's would be."""
    import io

    from amazon_kclpy import kcl, messages

    from replicator.processor import read_daemon_lines
    from replicator.records import raw_record_from

    class Processor:
        version = 3

    process = kcl.KCLProcess(
        Processor(), input_file=io.StringIO(), output_file=io.StringIO(), error_file=io.StringIO()
    )
    stock = process.io_handler.load_action
    read_daemon_lines(process)
    records = [
        {"action": "record", **put("a", 11, v="x")},
        {"action": "record", **daemon_record(b"{nope", 12, adapter=1)},
    ]
    line = json.dumps({"action": "processRecords", "records": records, "millisBehindLatest": 7})
    fast, slow = process.io_handler.load_action(line), stock(line)
    assert isinstance(fast, messages.ProcessRecordsInput)
    assert fast.millis_behind_latest == slow.millis_behind_latest == 7
    assert [raw_record_from(r) for r in fast.records] == [raw_record_from(r) for r in slow.records]
    for other in (
        {"action": "initialize", "shardId": "s-1", "sequenceNumber": "5", "subSequenceNumber": 0},
        {"action": "shutdownRequested"},
    ):
        text = json.dumps(other)
        assert type(process.io_handler.load_action(text)) is type(stock(text))


def json_logged(job: dict[str, Any], level: str = "info") -> RawDaemon:
    config = job["config"]
    config.write_text(config.read_text() + f"logging: {{level: {level}, format: json}}\n")
    daemon = RawDaemon(config)
    daemon.initialize("s")
    return daemon


def the_one_error(daemon: RawDaemon) -> dict[str, Any]:
    """The child's stderr is JSON lines only (no traceback), one of them an error."""
    lines = [json.loads(line) for line in daemon.stderr if line.strip()]
    (error,) = [line for line in lines if line["level"] == "error"]
    assert "exception" not in error
    return error


def test_unknown_fields_holding_objects_are_ignored_in_every_message(
    job: dict[str, Any],
) -> None:
    """The protocol may grow fields; one whose value is an object was taken by
    amazon-kclpy's parser for a message of its own, and the checkpoint answer carrying
    one for a refusal."""
    daemon = RawDaemon(job["config"])
    extra = {"x": {"k": 1}}
    daemon.answer_extra = {"foo": {"bar": 1}}
    daemon.act(
        {
            "action": "initialize",
            "shardId": "s",
            "sequenceNumber": None,
            "subSequenceNumber": None,
            **extra,
        }
    )
    daemon.act({"action": "processRecords", "millisBehindLatest": 0, "records": [], **extra})
    daemon.records([put("a", 201, ts=1)])
    daemon.until_checkpoint("201")
    daemon.act({"action": "shutdownRequested", **extra})
    assert daemon.act({"action": "shardEnded", **extra}) == [None]
    daemon.act({"action": "leaseLost", **extra})
    assert daemon.finish() == 0
    assert "a" in items(job)


def test_a_second_initialize_ends_the_process_before_any_checkpoint(job: dict[str, Any]) -> None:
    """A new intake would drop what the first had not settled, and a checkpoint after a
    later record would pass it. The KCL never sends it: exit 1, one line."""
    daemon = json_logged(job)
    daemon.write({"action": "processRecords", "millisBehindLatest": 0, "records": []})
    assert daemon.read() == {"action": "status", "responseFor": "processRecords"}
    daemon.write(
        {"action": "initialize", "shardId": "t", "sequenceNumber": None, "subSequenceNumber": None}
    )
    assert daemon.read() is None  # no status, no checkpoint
    assert daemon.exit_code() == 1
    assert "second initialize" in the_one_error(daemon)["error"]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ([1, 2], "not an object"),
        ("x", "not an object"),
        (None, "not an object"),
        (5, "not an object"),
        ({"foo": 1}, "without an action"),
        ({"action": None}, "without an action"),
        (
            {
                "action": "checkpoint",
                "sequenceNumber": "1",
                "subSequenceNumber": None,
                "error": None,
            },
            "no checkpoint was asked for",
        ),
    ],
    ids=["array", "string", "null", "number", "no-action", "null-action", "unasked-checkpoint"],
)
def test_a_line_that_is_no_message_ends_the_process_in_one_line(
    job: dict[str, Any], line: Any, says: str
) -> None:
    daemon = json_logged(job)
    daemon.write(line)
    assert daemon.read() is None
    assert daemon.exit_code() == 1
    assert says in the_one_error(daemon)["error"]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({"action": "shutdownRequested"}, "sent 'shutdownRequested' where its answer"),
        ({"action": "checkpoint", "subSequenceNumber": None, "error": None}, "no sequenceNumber"),
        (
            {"action": "checkpoint", "sequenceNumber": "999", "subSequenceNumber": None},
            "answered checkpoint 202 with one at sequence number '999'",
        ),
        (
            {"action": "checkpoint", "sequenceNumber": "202", "error": "InvalidStateException"},
            "refused checkpoint 202: InvalidStateException",
        ),
    ],
    ids=["another-action", "no-sequence-number", "another-sequence-number", "invalid-state"],
)
def test_a_checkpoint_answer_not_about_the_request_ends_the_process_in_one_line(
    job: dict[str, Any], answer: dict[str, Any], says: str
) -> None:
    """Taken for a success, an answer about another position leaves the shard's
    checkpoint unknown; the line says what came instead of the answer awaited."""
    daemon = json_logged(job)
    assert daemon.until_asked(put("x", 202, ts=1))["sequenceNumber"] == "202"
    daemon.write(answer)
    assert daemon.read() is None
    assert daemon.exit_code() == 1
    error = the_one_error(daemon)
    assert says in error["error"]
    assert "KeyError" not in error["error"]


def test_a_dead_letter_that_cannot_be_stored_names_its_record_without_a_traceback(
    job: dict[str, Any],
) -> None:
    """An expected failure (the dead-letter file's path is a directory) is one line
    that names the record left neither applied nor dead-lettered."""
    job["dead"].mkdir()
    daemon = json_logged(job)
    undecodable = daemon_record(b"\x00 not json", 303)
    batch: list[Any] = [{"action": "record", **undecodable}]
    with contextlib.suppress(BrokenPipeError):  # the child may be gone by the next batch
        while True:
            daemon.write({"action": "processRecords", "millisBehindLatest": 0, "records": batch})
            batch = []
            if daemon.read() is None:
                break
    assert daemon.exit_code() != 0
    error = the_one_error(daemon)
    assert "undecodable record 303" in error["error"]
    assert str(job["dead"]) in error["error"]


def test_the_processor_raises_its_open_file_soft_limit_for_the_writes_in_flight() -> None:
    """512 writes in flight per destination are 512 sockets: a soft limit of 1,024 open
    files would fail every open in the process, a dead-letter file's included."""
    import resource
    import subprocess
    import sys

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    script = (
        "import resource\n"
        "from replicator.processor import _raise_open_file_limit\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (256, {hard}))\n"
        "_raise_open_file_limit(2 * 512)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert int(shown.stdout.split()[-1]) == hard


GONE = "the daemon went away; exiting"
CLOSED = "daemon closed the protocol; processor exiting"


def logged(daemon: RawDaemon, event: str) -> list[dict[str, Any]]:
    """The child's log lines saying ``event`` (every line must be JSON)."""
    lines = [json.loads(line) for line in daemon.stderr if line.strip()]
    return [line for line in lines if line["event"] == event]


def test_input_ending_with_no_stop_told_is_the_daemon_gone_even_at_warning_level(
    job: dict[str, Any],
) -> None:
    """The runtime or daemon dies between two actions: the child's input ends with no
    shutdownRequested, leaseLost or shardEnded sent. It says the daemon went away, a
    warning (shown at ``logging.level: warning``), not the clean stop's info line."""
    daemon = json_logged(job, level="warning")
    daemon.records([put("k", 800, ts=1)])
    assert daemon.finish() == 0
    (gone,) = logged(daemon, GONE)
    assert gone["level"] == "warning" and "exception" not in gone
    assert logged(daemon, CLOSED) == []


@pytest.mark.parametrize("stop", ["shutdownRequested", "leaseLost", "shardEnded"])
def test_input_ending_after_a_stop_was_answered_is_the_clean_close(
    job: dict[str, Any], stop: str
) -> None:
    """The daemon closes the child's input once it has answered the stop it was told:
    the info line, and no word of the daemon going away."""
    daemon = json_logged(job)
    daemon.records([put("k", 900, ts=1)])
    daemon.act({"action": stop})
    assert daemon.finish() == 0
    (closed,) = logged(daemon, CLOSED)
    assert closed["level"] == "info"
    assert logged(daemon, GONE) == []


def test_a_daemon_gone_while_a_checkpoint_waits_is_a_warning_not_a_refusal(
    job: dict[str, Any],
) -> None:
    """The runtime is killed -9 while the child waits for a checkpoint's answer: its input
    ends. The child says the daemon went away (a warning, no traceback) and exits; it
    never calls that a refusal."""
    daemon = RawDaemon(job["config"])
    daemon.initialize("s", "TRIM_HORIZON")
    daemon.until_asked(put("x", 700, ts=1))  # never answered
    assert daemon.process.stdin
    daemon.process.stdin.close()  # no answer: the daemon is gone
    assert daemon.exit_code() == 1
    assert daemon.read() is None
    lines = [json.loads(line) for line in daemon.stderr if line.strip()]
    gone = [line for line in lines if line["event"] == GONE]
    assert len(gone) == 1
    assert gone[0]["level"] == "warning"
    assert "exception" not in gone[0]
    assert not any("refused" in line["event"] or line["level"] == "error" for line in lines)


@pytest.mark.parametrize(
    ("error", "gone"),
    [
        (json.JSONDecodeError("Expecting value", "", 0), True),
        (json.JSONDecodeError("Expecting value", "\n", 0), True),
        (BrokenPipeError(32, "Broken pipe"), True),
        (json.JSONDecodeError("Expecting value", "garbage\n", 0), False),
        (ValueError("InvalidStateException"), False),
    ],
)
def test_only_a_missing_answer_counts_as_the_daemon_gone(
    metrics: Any, error: Exception, gone: bool
) -> None:
    from replicator.checkpoint import Checkpoints
    from replicator.exceptions import CheckpointFailed, DaemonGone

    class Failing:
        def checkpoint(self, sequence_number: str | None = None, sub: int | None = None) -> None:
            raise error

    checkpoints = Checkpoints(metrics, "s", sleep=lambda _: None)
    with pytest.raises(DaemonGone if gone else CheckpointFailed):
        checkpoints.write(Failing(), "5", required=True)


class EmptyReadPipeline:
    """What the processor asks of the pipeline around an empty batch, recorded."""

    def __init__(self) -> None:
        self.writers: dict[str, Any] = {}
        self.empty_reads: list[float] = []

    def begin_watermark(
        self, *, resumed: bool, at_latest: bool = False, at_horizon: bool = False
    ) -> None:
        pass

    def note_empty_read(self, *, previous_answer_at: float, received_at: float) -> None:
        self.empty_reads.append(previous_answer_at)

    def wait_for_room(self) -> None:
        pass

    def checkpointable(self) -> str | None:
        return None

    def report(self) -> None:
        pass

    def close(self) -> None:
        pass


class EmptyReadIntake:
    def __init__(self) -> None:
        self.pipeline = EmptyReadPipeline()
        self.accepted: list[int] = []

    def accept(self, records: list[Any], millis_behind: int) -> None:
        self.accepted.append(millis_behind)


@pytest.mark.parametrize(
    ("millis_behind", "caught_up"),
    [(0, True), (None, True), (5000, False), (1, False)],
    ids=["at-tip", "unknown", "behind", "just-behind"],
)
def test_an_empty_batch_counts_as_caught_up_only_when_not_behind(
    millis_behind: int | None, caught_up: bool
) -> None:
    """An empty read with records further along the shard (the KCL on Kinesis says how far
    behind) must not move the watermark to the read's time; with no measure (DynamoDB
    Streams: the adapter and the local runtime pass null) the empty read is all there is."""
    from amazon_kclpy import messages

    from replicator.metrics import Metrics
    from replicator.processor import ReplicationProcessor

    intake = EmptyReadIntake()
    exits: list[int] = []
    processor = ReplicationProcessor(
        lambda _shard: intake,  # type: ignore[arg-type,return-value]
        Metrics(),
        exit_process=exits.append,
        report_interval_s=3600,
    )
    checkpointer = object()
    messages.InitializeInput(
        {
            "action": "initialize",
            "shardId": "shardId-1",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        }
    ).dispatch(checkpointer, processor)
    messages.ProcessRecordsInput(
        {"action": "processRecords", "millisBehindLatest": millis_behind, "records": []}
    ).dispatch(checkpointer, processor)
    processor.close()
    assert not exits
    assert len(intake.pipeline.empty_reads) == (1 if caught_up else 0)
    assert intake.accepted == [millis_behind or 0]


def test_what_a_resolver_writes_below_sys_stdout_stays_out_of_the_protocol(
    job: dict[str, Any], tmp_path: Path
) -> None:
    """A child process a custom resolver starts inherits file descriptor 1, and C code or
    ``os.write(1, ...)`` write there past ``sys.stdout``: their text went into the
    protocol, the runtime killed the processor for it and restarted it on the same
    change, which was never applied nor dead-lettered. Now it reaches stderr."""
    (tmp_path / "noisy_rule.py").write_text(
        "import os, subprocess, sys\n"
        "def decide(incoming, existing):\n"
        "    os.write(1, b'written to fd 1\\n')\n"
        "    subprocess.run([sys.executable, '-c', 'print(\"a child says hi\")'], check=True)\n"
        "    return True\n"
    )
    config = (
        job["config"]
        .read_text()
        .replace(
            "conflict: {policy: last_writer_wins, timestamp_attribute: ts}",
            "conflict: {policy: custom, resolver: 'noisy_rule:decide'}",
        )
    )
    job["config"].write_text(config)
    daemon = RawDaemon(job["config"], env={"PYTHONPATH": str(tmp_path)})
    with daemon:
        assert daemon.initialize("shardId-1", "TRIM_HORIZON") == []
        daemon.records([put("a", 101, ts=1, v="kept")])  # read() fails on a line not JSON
        daemon.until_checkpoint("101")
        assert items(job)["a"]["v"] == {"S": "kept"}
        assert daemon.act({"action": "shutdownRequested"}) == []
        assert daemon.finish() == 0
    said = "".join(daemon.stderr)
    assert "written to fd 1" in said and "a child says hi" in said
