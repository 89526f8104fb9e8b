"""The KCL daemon's output made log records: each line of it in, JSON records out.

The daemon's lines below are what logback 1.3 writes with properties/logback.xml (taken
from its output); tests/runtime/kcl/test_kcl_kinesis.py checks a real run's stderr.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any

import pytest

from replicator import logs
from replicator.runtime.kcl.daemon_log import DaemonLog, Entry, render, text_lines
from replicator.runtime.kcl.launcher import DaemonProcess

CHILD = '{"shard": "shardId-0", "records": 3, "event": "batch \\"applied\\"", "level": "info"}'
LINES = [
    "::kcl::2026-12-01T16:09:36.917Z\tINFO\tsoftware.amazon.kinesis.coordinator.Scheduler\t"
    "main\tplain 1 record\\twith tab and back\\\\slash and \\\\n literal\t",
    "::kcl::2026-12-01T16:09:36.928Z\tWARN\tsoftware.amazon.kinesis.coordinator.Scheduler\t"
    "main\tfailed\tjava.lang.RuntimeException: boom\\nsecond\\n\\tat T.main(T.java:8)\\n"
    "Caused by: java.lang.IllegalStateException: cause\\n\\t... 1 common frames omitted\\n",
]


def convert(lines: list[str]) -> list[Entry]:
    daemon = DaemonLog()
    entries = [entry for line in lines for entry in daemon.feed(line)]
    return entries + daemon.flush()


def as_json(lines: list[str]) -> list[dict[str, Any]]:
    out = [render(entry, as_json=True) for entry in convert(lines)]
    assert all("\n" not in line for line in out)
    return [json.loads(line) for line in out]


@pytest.fixture(autouse=True)
def bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_GLOBAL_FIELDS", {"task": "orders", "runtime": "kcl"})


def test_a_daemon_record_is_one_json_object_with_its_fields_unescaped() -> None:
    (record,) = as_json(LINES[:1])
    assert record == {
        "event": "plain 1 record\twith tab and back\\slash and \\n literal",
        "logger": "kcl",
        "java_logger": "software.amazon.kinesis.coordinator.Scheduler",
        "thread": "main",
        "task": "orders",
        "runtime": "kcl",
        "level": "info",
        "timestamp": "2026-12-01T16:09:36.917Z",
    }


HASH_RANGE = (
    "::kcl::2026-12-05T22:50:01.000Z\tERROR\t"
    "software.amazon.kinesis.coordinator.PeriodicShardSyncManager\tshard-sync\t"
    "Incomplete hash range found for stream us-east-1$123456789012$carts$1 between "
    "Lease(leaseKey=shardId-1, hashKeyRangeForLease=(0,1)) and "
    "Lease(leaseKey=shardId-1, hashKeyRangeForLease=(0,1)).\t"
)


@pytest.mark.parametrize(("dynamodb_streams", "level"), [(True, "info"), (False, "error")])
def test_the_shard_syncs_hash_range_error_is_info_under_a_dynamodb_stream_only(
    dynamodb_streams: bool, level: str
) -> None:
    """Every two minutes on a healthy worker of a DynamoDB stream: an alert on error lines
    paged for it (a Kinesis data stream's gap is real, and stays an error)."""
    daemon = DaemonLog(dynamodb_streams=dynamodb_streams)
    (entry,) = daemon.feed(HASH_RANGE) + daemon.flush()
    record = json.loads(render(entry, as_json=True))
    assert record["level"] == level
    assert record["event"].startswith("Incomplete hash range found for stream")
    assert ("placeholder" in record.get("note", "")) is dynamodb_streams


@pytest.mark.parametrize(
    ("logger", "message", "level"),
    [
        (
            "software.amazon.kinesis.worker.WorkerMetricsSelector",
            "Did not find an operating range metadata provider.",
            "info",
        ),
        (
            "software.amazon.kinesis.metrics.CloudWatchPublisherRunnable",
            "Dropping metrics [] because CloudWatchPublisherRunnable is shutting down.",
            "info",
        ),
        (
            "com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory",
            "leasesRecoveryAuditorInconsistencyConfidenceThreshold is greater than 0. DynamoDB "
            "Streams adapter does not do hole tracking. Setting this to 0.",
            "info",
        ),
        (
            "com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory",
            "skipShardSyncAtWorkerInitializationIfLeasesExist is not set to true. This will "
            "cause the worker to delay working on lease. Setting this to true",
            "info",
        ),
        (
            "com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory",
            "Setting the delay to complete a shard sync task as 0.",
            "info",
        ),
        # metrics that were there to send are dropped: the warning stays
        (
            "software.amazon.kinesis.metrics.CloudWatchPublisherRunnable",
            "Dropping metrics [MetricDatum(name=X)] because CloudWatchPublisherRunnable is "
            "shutting down.",
            "warning",
        ),
        # the same words from another logger stay what they were
        (
            "software.amazon.kinesis.coordinator.Scheduler",
            "Did not find an operating range metadata provider.",
            "warning",
        ),
    ],
)
def test_warnings_every_healthy_daemon_logs_are_info_with_a_note(
    logger: str, message: str, level: str
) -> None:
    """Every start off EC2, and every stop, logged these as warnings on a healthy worker:
    an alert on warning lines would fire on each."""
    line = f"::kcl::2026-12-06T20:30:02.009Z\tWARN\t{logger}\tmain\t{message}\t"
    (entry,) = DaemonLog().feed(line) + DaemonLog().flush()
    record = json.loads(render(entry, as_json=True))
    assert record["event"] == message
    assert record["level"] == level
    assert ("note" in record) is (level == "info")


def test_a_stack_trace_is_the_exception_of_its_record() -> None:
    (record,) = as_json(LINES[1:2])
    assert record["event"] == "failed"
    assert record["level"] == "warning"
    assert record["exception"] == (
        "java.lang.RuntimeException: boom\nsecond\n\tat T.main(T.java:8)\n"
        "Caused by: java.lang.IllegalStateException: cause\n\t... 1 common frames omitted"
    )


def test_a_processors_line_passes_through_as_it_came() -> None:
    entries = convert([CHILD])
    assert [render(entry, as_json=True) for entry in entries] == [CHILD]


@pytest.mark.parametrize(
    "message",
    [
        "Received error line from subprocess [{child}] for shard shardId-000000000001",
        "Skipping unexpected line on STDOUT for shard shardId-000000000001: {child}",
    ],
)
def test_a_processors_line_the_daemon_relays_in_its_own_message_is_unwrapped(
    message: str,
) -> None:
    escaped = CHILD.replace("\\", "\\\\")
    logged = "::kcl::2026-12-01T16:09:36.928Z\tERROR\tsoftware.amazon.kinesis.multilang."
    logged += "DrainChildSTDERRTask\tpool-1\t" + message.format(child=escaped) + "\t"
    assert [render(entry, as_json=True) for entry in convert([logged])] == [CHILD]
    # the same, from a logback of the operator's (the KCL's default pattern)
    stock = "2026-12-01 16:09:36,928 [pool-1] ERROR s.a.k.m.DrainChildSTDERRTask [NONE] - "
    assert [render(e, as_json=True) for e in convert([stock + message.format(child=CHILD)])] == [
        CHILD
    ]


def test_lines_from_outside_the_logging_are_records_too_their_stack_traces_joined() -> None:
    records = as_json(
        [
            "OpenJDK 64-Bit Server VM warning: Sharing is only supported for boot loader classes",
            'Exception in thread "main" java.lang.IllegalStateException: no lease table',
            "\tat software.amazon.kinesis.Scheduler.run(Scheduler.java:1)",
            "Caused by: java.io.IOException: refused",
            "\t... 3 more",
            "Error: Could not find or load main class x.Y",
            "",
            "something else",
        ]
    )
    assert [(r["level"], r["logger"], r["task"]) for r in records] == [
        ("warning", "kcl", "orders"),
        ("error", "kcl", "orders"),
        ("error", "kcl", "orders"),
        ("info", "kcl", "orders"),
    ]
    assert records[1]["event"].startswith('Exception in thread "main"')
    assert records[1]["exception"] == (
        "\tat software.amazon.kinesis.Scheduler.run(Scheduler.java:1)\n"
        "Caused by: java.io.IOException: refused\n\t... 3 more"
    )
    assert all(r["timestamp"].endswith("Z") for r in records)


def test_the_checks_for_a_daemon_that_cannot_start_read_a_logged_trace_line_by_line() -> None:
    assert text_lines(LINES[1]) == [
        "failed",
        "java.lang.RuntimeException: boom",
        "second",
        "\tat T.main(T.java:8)",
        "Caused by: java.lang.IllegalStateException: cause",
        "\t... 1 common frames omitted",
    ]
    assert text_lines("Error: Could not find or load main class x") == [
        "Error: Could not find or load main class x"
    ]


def test_credentials_in_the_daemons_lines_are_redacted() -> None:
    line = LINES[0].replace("plain 1 record", "x-amz-security-token: SECRETSECRET")
    records = as_json([line, "-Dhttps.proxyPassword=hunter22 refused"])
    assert len(records) == 2
    assert "SECRETSECRET" not in json.dumps(records)
    assert "hunter22" not in json.dumps(records)


def test_on_a_console_the_records_are_columns() -> None:
    text = [render(entry, as_json=False) for entry in convert([*LINES, CHILD, "raw line"])]
    assert "plain 1 record" in text[0] and "[info" in text[0]
    assert "Caused by: java.lang.IllegalStateException: cause" in text[1]
    assert "batch" in text[2] and not text[2].startswith("{")
    assert text[3] == "raw line"


def test_the_output_is_copied_as_json_and_a_held_line_is_written_when_idle() -> None:
    """A line that may be followed by its stack trace is written once the daemon is quiet,
    not only at its next line."""
    script = (
        "import sys, time\n"
        f"for line in {[*LINES, CHILD]!r}: print(line, flush=True)\n"
        "print('Exception in thread \"x\" java.lang.Error: stop', flush=True)\n"
        "print('\\tat A.b(A.java:1)', flush=True)\n"
        "time.sleep(120)\n"
    )
    output = io.StringIO()
    daemon = DaemonProcess(
        [sys.executable, "-c", script], os.environ, grace_s=1, output=output, as_json=True
    )
    daemon.start()
    try:
        # The held line is written while the daemon sleeps, however slowly it started.
        deadline = time.monotonic() + 60
        while output.getvalue().count("\n") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.running()  # written before the daemon's next line or its end
        records = [json.loads(line) for line in output.getvalue().splitlines()]
        assert [r["event"] for r in records][-1] == 'Exception in thread "x" java.lang.Error: stop'
        assert records[-1]["exception"] == "\tat A.b(A.java:1)"
        assert records[2] == json.loads(CHILD)
    finally:
        daemon.clean_up(wait_s=1)


@pytest.mark.parametrize(
    ("level", "events"),
    [
        ("warning", ["failed", "told", 'Exception in thread "x" java.lang.Error: stop']),
        ("error", ["told", 'Exception in thread "x" java.lang.Error: stop']),
        ("info", ["plain 1 record", "failed", "told", "batch", "Exception in thread"]),
    ],
)
def test_the_jobs_logging_level_filters_the_daemons_records(level: str, events: list[str]) -> None:
    """With logging.level: warning an idle shard still logged ten of the KCL's info
    lines a second ("Writing ProcessRecordsMessage"): every record the daemon's output
    becomes is held to the job's level, whoever wrote it (the KCL's logging, a
    processor, the JVM)."""
    told = (
        "::kcl::2026-12-01T16:09:37.000Z\tERROR\tsoftware.amazon.kinesis.multilang.X\tmain\ttold\t"
    )
    script = (
        f"for line in {[*LINES, told, CHILD]!r}: print(line, flush=True)\n"
        "print('Exception in thread \"x\" java.lang.Error: stop', flush=True)\n"
    )
    output = io.StringIO()
    daemon = DaemonProcess(
        [sys.executable, "-c", script],
        os.environ,
        grace_s=1,
        output=output,
        as_json=True,
        level=level,
    )
    daemon.start()
    try:
        daemon.wait()
    finally:
        daemon.clean_up(wait_s=5)
    written = [json.loads(line)["event"] for line in output.getvalue().splitlines()]
    assert len(written) == len(events), written
    assert all(event.startswith(start) for event, start in zip(written, events, strict=True))


def _line(level: str, logger: str, message: str) -> str:
    return (
        f"::kcl::2026-12-07T08:24:53.613Z\t{level}\t{logger}\tmulti-lang-daemon-0000\t{message}\t"
    )


LEADER = "software.amazon.kinesis.leader.DynamoDBLockBasedLeaderDecider"
REFRESHER = "software.amazon.kinesis.leases.dynamodb.DynamoDBLeaseRefresher"


@pytest.mark.parametrize(
    ("level", "logger", "message", "said"),
    [
        # Once a second on the leader, at every checkpoint of every shard: debug.
        ("INFO", LEADER, "Worker : host-a is the current leader.", "debug"),
        ("INFO", REFRESHER, "Updated lease shardId-000000000001.", "debug"),
        # The same loggers' other lines, and those lines at another level, are kept.
        ("INFO", LEADER, "Worker : host-a is new leader", "info"),
        ("INFO", REFRESHER, "Created new lease table for coordinator with ...", "info"),
        ("WARN", REFRESHER, "Updated lease shardId-000000000001.", "warning"),
        ("INFO", "software.amazon.kinesis.coordinator.Scheduler", "Updated lease x.", "info"),
    ],
)
def test_the_daemons_routine_lines_are_debug(
    level: str, logger: str, message: str, said: str
) -> None:
    (record,) = as_json([_line(level, logger, message)])
    assert record["level"] == said
