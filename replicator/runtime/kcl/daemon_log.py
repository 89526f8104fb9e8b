"""The KCL daemon's output as log records like the replicator's own.

properties/logback.xml writes each of the daemon's log events as one line: a prefix,
then timestamp, level, Java logger, thread, message and stack trace, separated by tabs,
with backslash, tab, carriage return and newline escaped in the message and the stack
trace (``\\\\``, ``\\t``, ``\\r``, ``\\n``). So an event with a stack trace is one line, and
the boundary of a record is never guessed.

The same output carries lines the daemon's logging never saw, each made a record too:

* a processor child's JSON records, which the daemon copies from the child's stderr as
  they are: passed through unchanged, as the local runtime writes them; where the daemon
  logs one inside its own message ("Received error line from subprocess [...] for shard
  ...", a line the child wrote on stdout), the child's record is unwrapped;
* anything else (the JVM's warnings and refusals, logback's own status lines, a stack
  trace Java printed on an uncaught exception): a record whose event is the line, the
  indented lines of a stack trace that follow it joined into its ``exception``.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from replicator import logs

# The start of every line properties/logback.xml writes (its <pattern> begins with it).
PREFIX = "::kcl::"
# What ``logger`` says on a record of the daemon (its Java logger is ``java_logger``).
LOGGER = "kcl"
_LEVELS = {"TRACE": "debug", "DEBUG": "debug", "INFO": "info", "WARN": "warning"}
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED = {"\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
# Where the daemon quotes a line of a processor child in a message of its own
# (DrainChildSTDERRTask, GetNextMessageTask, DrainChildSTDOUTTask in the KCL's multilang).
_RELAYED = (
    re.compile(r"Received error line from subprocess \[(?P<line>.*)\] for shard \S*$"),
    re.compile(r"Skipping unexpected line on STDOUT for shard \S*: (?P<line>.*)$"),
    re.compile(r"Drained line for shard \S*: (?P<line>.*)$"),
)
# The lines of a stack trace after its first: frames, causes, suppressed exceptions.
_CONTINUATION = re.compile(r"^(\s+at |\s*\.\.\. \d+ |\s*Caused by: |\s*Suppressed: |\t)")
# The KCL's periodic shard sync checks that its leases' hash key ranges cover a Kinesis
# stream's whole range, and logs an ERROR every two minutes when they do not. A DynamoDB
# stream has no hash key ranges: the adapter gives every lease the same placeholder, so
# the check always fails (it names one lease as both ends of the gap) on a healthy
# worker. Under a DynamoDB Streams source the line is info, with a note; under a Kinesis
# source it stays an error (a real gap there).
_SHARD_SYNC_LOGGER = "software.amazon.kinesis.coordinator.PeriodicShardSyncManager"
_HASH_RANGE_NOISE = "Incomplete hash range found"
HASH_RANGE_NOTE = (
    "a DynamoDB stream has no hash key ranges (the adapter gives every lease a "
    "placeholder): the KCL's check cannot pass, and nothing is wrong"
)
_ADAPTER_FACTORY = "com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory"
# Warnings every healthy daemon logs in places: each is info, with a note saying why.
# (Java logger, the message's start) -> note.
HARMLESS_WARNINGS = {
    (
        "software.amazon.kinesis.worker.WorkerMetricsSelector",
        "Did not find an operating range metadata provider",
    ): (
        "the KCL finds no CPU figure for this worker (expected off EC2, ECS and EKS; on "
        "them, the instance or task metadata is out of reach) and balances leases "
        "without it (docs/kcl-and-docker.md, scaling out)"
    ),
    (
        "software.amazon.kinesis.metrics.CloudWatchPublisherRunnable",
        "Dropping metrics [] because",
    ): "the KCL's CloudWatch publisher stops with the daemon and had nothing to send",
    **dict.fromkeys(
        (
            (_ADAPTER_FACTORY, "skipShardSyncAtWorkerInitializationIfLeasesExist is not set"),
            (
                _ADAPTER_FACTORY,
                "leasesRecoveryAuditorInconsistencyConfidenceThreshold is greater than 0. "
                "DynamoDB Streams adapter does not do hole tracking",
            ),
            (_ADAPTER_FACTORY, "Setting the delay to complete a shard sync task as 0"),
        ),
        "the DynamoDB Streams adapter sets what a DynamoDB stream needs, on every start",
    ),
}
# Info lines a healthy daemon repeats: the leader's once a second, a lease's at every
# checkpoint of every shard (most of a worker's log at info). Debug: `logging.level:
# debug` shows them; the same loggers' other lines (a lease taken, a leader elected) stay
# at their level. (Java logger, the whole message).
ROUTINE_LINES = (
    (
        "software.amazon.kinesis.leader.DynamoDBLockBasedLeaderDecider",
        re.compile(r"Worker : .* is the current leader\.", re.DOTALL),
    ),
    (
        "software.amazon.kinesis.leases.dynamodb.DynamoDBLeaseRefresher",
        re.compile(r"Updated lease \S+\."),
    ),
)
_ERROR = re.compile(r"\b(error|exception|fatal)\b|^Exception in thread", re.IGNORECASE)
_WARNING = re.compile(r"\bwarn(ing)?\b", re.IGNORECASE)


def _now() -> str:
    """A timestamp as structlog's TimeStamper(fmt="iso", utc=True) writes it."""
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda match: _UNESCAPED.get(match.group(1), match.group(0)), text)


def _json_object(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Entry:
    """One record of the daemon's output.

    ``passed`` is a processor's JSON line, written as it came; ``raw`` the lines of a
    record that was not the daemon's logging (shown as they came on a console)."""

    record: dict[str, Any]
    passed: str | None = None
    raw: list[str] = field(default_factory=list)


class DaemonLog:
    """Turns the daemon's output, line by line, into records.

    A line that is not the daemon's logging may be followed by the rest of its stack
    trace, so it is held (``pending``) until the next line shows whether that continues
    it, or ``flush`` is called (the reader does when no line came for a moment).
    """

    def __init__(self, *, dynamodb_streams: bool = False) -> None:
        self._pending: Entry | None = None
        # The DynamoDB Streams adapter's daemon: its shard sync's "incomplete hash range"
        # errors are noise (see _HASH_RANGE_NOISE).
        self.dynamodb_streams = dynamodb_streams

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def feed(self, line: str) -> list[Entry]:
        line = line.rstrip("\r\n")
        if self._pending is not None and _CONTINUATION.match(line):
            record = self._pending.record
            line = logs.redact(line)
            record["exception"] = "\n".join(filter(None, [record.get("exception"), line]))
            self._pending.raw.append(line)
            return []
        done = self.flush()
        entry = self._logged(line) if line.startswith(PREFIX) else self._other(line)
        if entry is not None:
            done.append(entry)
        return done

    def flush(self) -> list[Entry]:
        pending, self._pending = self._pending, None
        if pending is None:
            return []
        record = pending.record
        if "exception" in record:
            # the level said nothing of the stack trace that followed the line
            record["level"] = "error" if record["level"] == "info" else record["level"]
        return [pending]

    def _logged(self, line: str) -> Entry | None:
        fields = line[len(PREFIX) :].split("\t", 5)
        if len(fields) < 5:
            return self._other(line)
        timestamp, level, java_logger, thread, message = fields[:5]
        message = _unescape(message)
        relayed = _relayed(message)
        if relayed is not None:
            return relayed
        record: dict[str, Any] = {
            "event": logs.redact(message),
            "logger": LOGGER,
            "java_logger": java_logger,
            "thread": thread,
        }
        exception = _unescape(fields[5]).rstrip() if len(fields) > 5 else ""
        if exception:
            record["exception"] = logs.redact(exception)
        record.update(_bound(record))
        record["level"] = _LEVELS.get(level.strip(), "error")
        if (
            self.dynamodb_streams
            and java_logger == _SHARD_SYNC_LOGGER
            and message.startswith(_HASH_RANGE_NOISE)
        ):
            record["level"] = "info"
            record["note"] = HASH_RANGE_NOTE
        elif record["level"] == "info" and not exception:
            if any(
                java_logger == name and words.fullmatch(message) for name, words in ROUTINE_LINES
            ):
                record["level"] = "debug"
        elif record["level"] == "warning":
            for (logger, start), note in HARMLESS_WARNINGS.items():
                if java_logger == logger and message.startswith(start):
                    record["level"] = "info"
                    record["note"] = note
        record["timestamp"] = timestamp
        return Entry(record)

    def _other(self, line: str) -> Entry | None:
        if not line.strip():
            return None
        child = _json_object(line)
        if child is not None:
            return Entry(child, passed=line.strip())
        relayed = _relayed(line, anywhere=True)
        if relayed is not None:
            return relayed
        level = "error" if _ERROR.search(line) else "warning" if _WARNING.search(line) else "info"
        record: dict[str, Any] = {"event": logs.redact(line), "logger": LOGGER}
        record.update(_bound(record))
        record["level"] = level
        record["timestamp"] = _now()
        self._pending = Entry(record, raw=[logs.redact(line)])
        return None


def text_lines(line: str) -> list[str]:
    """The lines of text in one line of the daemon's output: a logged event's message
    and stack trace unescaped, line by line; any other line itself."""
    if not line.startswith(PREFIX):
        return [line]
    fields = line[len(PREFIX) :].split("\t", 5)
    return _unescape("\n".join(fields[4:])).splitlines() if len(fields) >= 5 else [line]


def _relayed(message: str, *, anywhere: bool = False) -> Entry | None:
    """A processor's JSON line the KCL quotes in ``message`` (at its start, or
    ``anywhere`` in a line of the KCL's default format), unwrapped."""
    for relay in _RELAYED:
        found = relay.search(message) if anywhere else relay.match(message)
        if found is not None:
            child = _json_object(found.group("line"))
            if child is not None:
                return Entry(child, passed=found.group("line").strip())
    return None


def _bound(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every line of this process carries (job, task, runtime)."""
    return {key: value for key, value in logs.bound_fields().items() if key not in record}


_console = structlog.dev.ConsoleRenderer(colors=False)


def render(entry: Entry, *, as_json: bool) -> str:
    """The text of ``entry`` on stderr, without its newline: a JSON object, or for a
    console, columns like the replicator's own (lines that were not records as they came)."""
    if as_json:
        return entry.passed if entry.passed is not None else json.dumps(entry.record)
    if entry.raw:
        return "\n".join(entry.raw)
    record = dict(entry.record)
    return str(_console(None, str(record.get("level", "info")), record)).rstrip("\n")
