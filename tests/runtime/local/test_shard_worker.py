"""The local runtime's shard reading: lineage, iterator expiry, trimmed data, shard end,
and a child that keeps dying - with a scripted stream and a stand-in processor child."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from botocore.exceptions import ClientError, ReadTimeoutError

from replicator.aws.backoff import Backoff
from replicator.config.model import OnTrimmedData
from replicator.exceptions import ChildFailed, ChildKeepsFailing, EnvironmentProblem, TrimmedData
from replicator.runtime.local.runtime import startable
from replicator.runtime.local.shard_settings import ShardSettings
from replicator.runtime.local.shard_worker import ShardWorker
from replicator.shards.leases import SHARD_END, Lease, LeaseTable
from replicator.shards.stream import Shard
from replicator.watermark.spans import EXPIRED, TRIMMED, UnreadSpan
from tests.support.aws import LostAnswers, client


def test_children_start_only_after_their_parents_end() -> None:
    shards = [Shard("a", None, True), Shard("b", "a", False), Shard("c", "gone", False)]
    assert startable(shards, ended=set(), running=set()) == ["a", "c"]
    assert startable(shards, ended={"a"}, running={"c"}) == ["b"]


def record(seq: int) -> dict[str, Any]:
    return {
        "eventID": str(seq),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime.now(UTC),
            "Keys": {"pk": {"S": str(seq)}},
            "NewImage": {"pk": {"S": str(seq)}},
            "SequenceNumber": str(seq),
            "SizeBytes": 10,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def error(code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "GetRecords",
    )


class ScriptedStream:
    """GetRecords answers from a script; GetShardIterator calls are recorded."""

    def __init__(self, script: list[Any], stop: threading.Event) -> None:
        self.script = script
        self.stop = stop
        self.closed = True  # whether DescribeStream shows shard-1 closed
        self.iterator_requests: list[tuple[str, str | None]] = []
        self.reads: list[str] = []  # the iterator of each GetRecords
        self.limits: list[int] = []  # the Limit of each GetRecords

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, str]:
        self.iterator_requests.append((kwargs["ShardIteratorType"], kwargs.get("SequenceNumber")))
        return {"ShardIterator": f"it-{len(self.iterator_requests)}"}

    def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        numbers = {"StartingSequenceNumber": "1"}
        if self.closed:
            numbers["EndingSequenceNumber"] = "999"
        shard = {"ShardId": "shard-1", "SequenceNumberRange": numbers}
        return {"StreamDescription": {"StreamArn": kwargs["StreamArn"], "Shards": [shard]}}

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        self.reads.append(kwargs["ShardIterator"])
        self.limits.append(kwargs["Limit"])
        if not self.script:
            self.stop.set()
            return {"Records": [], "NextShardIterator": "idle"}
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step  # type: ignore[no-any-return]


class StandInChild:
    """Acts as a processor child: checkpoints every batch it is given."""

    def __init__(
        self,
        on_checkpoint: Callable[[str | None, int | None], str | None],
        fail: bool = False,
        reason: tuple[str, int] | None = None,
    ) -> None:
        """``fail``: die during initialize, as a processor that cannot start does, saying
        ``reason`` (its words and exit code) if given."""
        self.on_checkpoint = on_checkpoint
        self.fail = fail
        self.reason = reason
        self.pid = 4242
        self.batches: list[list[dict[str, Any]]] = []
        self.behind: list[int | None] = []  # each batch's millisBehindLatest

    def start(self) -> None:
        pass

    def initialize(self, shard_id: str, sequence_number: str | None, sub: int | None) -> None:
        if self.fail:
            said, code = self.reason or (None, None)
            raise ChildFailed(
                "stand-in child exited with status 1 during initialize",
                reason=said,
                exit_code=code,
            )

    def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
        self.batches.append(records)
        self.behind.append(millis_behind)
        if records:
            assert self.on_checkpoint(records[-1]["sequenceNumber"], 0) is None

    def shard_ended(self) -> None:
        assert self.on_checkpoint(None, None) is None

    def shutdown_requested(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float = 10.0) -> int:
        return 0

    def kill(self) -> None:
        pass


@pytest.fixture
def leases(moto_endpoint: str, unique: Any) -> LeaseTable:
    table = LeaseTable(client("dynamodb", "us-east-1", moto_endpoint), unique("leases"), "me")
    table.ensure_exists()
    return table


class FlakyLeases:
    """A lease table whose reads and releases are throttled a given number of times."""

    def __init__(self, table: LeaseTable, get_throttles: int, release_throttles: int) -> None:
        self.table = table
        self.get_throttles = get_throttles
        self.release_throttles = release_throttles

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def get(self, shard_id: str) -> Any:
        if self.get_throttles:
            self.get_throttles -= 1
            raise error("ProvisionedThroughputExceededException")
        return self.table.get(shard_id)

    def release(self, lease: Any) -> None:
        if self.release_throttles:
            self.release_throttles -= 1
            raise error("ThrottlingException")
        self.table.release(lease)


def run_worker(
    leases: Any,
    script: list[Any],
    on_trimmed: OnTrimmedData = OnTrimmedData.FAIL,
    fail: bool | int = False,
    reason: tuple[str, int] | None = None,
    position: str = "TRIM_HORIZON",
    record_unread: Callable[[str, UnreadSpan], None] | None = None,
    children: list[StandInChild] | None = None,
    open_shard: bool = False,
    child_type: type[StandInChild] = StandInChild,
    stop: threading.Event | None = None,
    idle_s: float = 0.0,
) -> tuple[ShardWorker, ScriptedStream, list[StandInChild]]:
    """``fail``: True makes every child fail, a number makes that many children fail.
    ``position``: the lease's checkpoint; LATEST is pinned first, as the runtime does.
    ``record_unread``: where the spans of changes passed over go (the status tables).
    ``open_shard``: DescribeStream lists the shard open."""
    created = leases.create("shard-1", position, [])
    assert created is not None
    lease = leases.take(created)
    stop = threading.Event() if stop is None else stop
    stream = ScriptedStream(script, stop)
    stream.closed = not open_shard
    if isinstance(stop, CountedWaits):
        stop.stream = stream
    children = [] if children is None else children

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        failing = fail is True or (fail is not False and len(children) < fail)
        children.append(child_type(on_checkpoint, fail=failing, reason=reason))
        return children[-1]

    settings = ShardSettings(
        "arn",
        100,
        idle_s,
        on_trimmed,
        restart_limit=2,
        restart_window_s=60,
        record_unread=record_unread,
        record_unread_attempts=3,
    )
    worker = ShardWorker(lease, leases, stream, settings, new_child, stop)
    worker.pin_latest()
    worker.run()
    return worker, stream, children


def test_an_expired_iterator_is_replaced_after_the_last_record_delivered(
    leases: LeaseTable,
) -> None:
    script = [
        {"Records": [record(1), record(2)], "NextShardIterator": "x"},
        error("ExpiredIteratorException"),
        {"Records": [record(3)], "NextShardIterator": "y"},
    ]
    worker, stream, children = run_worker(leases, script)
    assert worker.error is None
    assert stream.iterator_requests == [("TRIM_HORIZON", None), ("AFTER_SEQUENCE_NUMBER", "2")]
    assert [r["sequenceNumber"] for b in children[0].batches for r in b] == ["1", "2", "3"]
    assert leases.get("shard-1").checkpoint == "3"  # type: ignore[union-attr]


def test_a_page_that_goes_unanswered_is_asked_for_again_at_half_the_size(
    leases: LeaseTable,
) -> None:
    """An endpoint that cannot serve kcl.max_records within the read timeout (moto under
    load) would time out on every retry of the same page: each unanswered call halves
    the page, and pages answered fast double it back to kcl.max_records (100 here)."""
    timeout = ReadTimeoutError(endpoint_url="http://127.0.0.1:9")
    script = [
        timeout,
        timeout,
        {"Records": [record(1)], "NextShardIterator": "x"},
        {"Records": [record(2)], "NextShardIterator": "y"},
        {"Records": [record(3)], "NextShardIterator": "z"},
    ]
    worker, stream, children = run_worker(leases, script)
    assert worker.error is None
    assert stream.limits[:6] == [100, 50, 25, 50, 100, 100]
    assert [r["sequenceNumber"] for b in children[0].batches for r in b] == ["1", "2", "3"]
    assert leases.get("shard-1").checkpoint == "3"  # type: ignore[union-attr]


class HighestCheckpointingChild(StandInChild):
    """Checkpoints each batch at the highest number it has been given, as the processor's
    checkpoint may be when an unpatched moto serves a lower number after a higher one."""

    def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
        self.batches.append(records)
        self.behind.append(millis_behind)
        given = [int(r["sequenceNumber"]) for batch in self.batches for r in batch]
        if given:
            assert self.on_checkpoint(str(max(given)), 0) is None


class CountedWaits(threading.Event):
    """A stop event that notes the waits of ``timeout_s``, by how many reads came before."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.stream: ScriptedStream | None = None
        self.after_reads: list[int] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout == self.timeout_s and self.stream is not None:
            self.after_reads.append(len(self.stream.reads))
        return super().wait(timeout)


def test_a_record_numbered_below_those_before_it_moves_nothing_back(leases: LeaseTable) -> None:
    """An unpatched moto with concurrent writers can serve 7, 8, 9 then another 7, and
    serve that one again at the next read (its iterator goes on after the highest number
    of a read, by index). The processor may checkpoint at 9, the highest number given: it
    is not refused as past the last record delivered (7), an iterator made anew starts
    after 9 rather than back after 7, and a read holding only numbers already passed
    waits as an empty read does rather than reading again at once."""
    low = record(7)
    low["dynamodb"]["Keys"] = low["dynamodb"]["NewImage"] = {"pk": {"S": "7b"}}
    script = [
        {"Records": [record(7), record(8), record(9), low], "NextShardIterator": "x"},
        {"Records": [low], "NextShardIterator": "y"},
        error("ExpiredIteratorException"),
        {"Records": [record(11)], "NextShardIterator": "z"},
    ]
    stop = CountedWaits(0.01)
    worker, stream, _ = run_worker(
        leases, script, child_type=HighestCheckpointingChild, stop=stop, idle_s=0.01
    )
    assert worker.error is None
    assert stream.iterator_requests == [("TRIM_HORIZON", None), ("AFTER_SEQUENCE_NUMBER", "9")]
    assert leases.get("shard-1").checkpoint == "11"  # type: ignore[union-attr]
    assert stop.after_reads == [2, 5]  # the read of 7 again, the script's end


def test_an_empty_read_is_passed_on_as_not_known_how_far_behind(leases: LeaseTable) -> None:
    """DynamoDB Streams gives no MillisBehindLatest: an empty read says nothing of records
    further along the shard, so the child is told null, not 0 (docs/watermark.md, Limits)."""
    script = [
        {"Records": [], "NextShardIterator": "x"},
        {"Records": [record(1)], "NextShardIterator": "y"},
    ]
    worker, _, children = run_worker(leases, script)
    assert worker.error is None
    behind = children[0].behind
    assert behind[0] is None and behind[2] is None  # the script's empty read, then idle
    assert isinstance(behind[1], int) and behind[1] >= 0


def test_trimmed_data_fails_loudly_by_default(leases: LeaseTable) -> None:
    worker, _, _ = run_worker(leases, [error("TrimmedDataAccessException")])
    assert isinstance(worker.error, TrimmedData)
    assert "backfill" in str(worker.error) and "restart_from_trim_horizon" in str(worker.error)
    # And what a plain copy leaves (the gap's deletes), and the setting's way back.
    assert "`replicator verify --repair`" in str(worker.error)
    assert "then set it back to fail" in str(worker.error)


def test_trimmed_data_can_restart_from_the_oldest_record(leases: LeaseTable) -> None:
    script = [
        error("TrimmedDataAccessException"),
        {"Records": [record(9)], "NextShardIterator": "z"},
    ]
    worker, stream, _ = run_worker(leases, script, OnTrimmedData.RESTART_FROM_TRIM_HORIZON)
    assert worker.error is None
    assert stream.iterator_requests[-1] == ("TRIM_HORIZON", None)
    assert leases.get("shard-1").checkpoint == "9"  # type: ignore[union-attr]


def at(record: dict[str, Any], seconds: int) -> dict[str, Any]:
    record["dynamodb"]["ApproximateCreationDateTime"] = datetime.fromtimestamp(seconds, UTC)
    return record


T = 1_796_126_400  # epoch seconds of the records below
US = 1_000_000


def test_trimmed_data_passed_over_is_recorded_before_the_child_reads_past_it(
    leases: LeaseTable,
) -> None:
    """The span runs from the last record read to the end of the first record's second
    after the trim horizon (creation times are whole seconds), and is stored before the
    child is given that record, whose claim would pass the span."""
    script = [
        {"Records": [at(record(1), T)], "NextShardIterator": "x"},
        error("TrimmedDataAccessException"),
        {"Records": [at(record(9), T + 50)], "NextShardIterator": "z"},
    ]
    children: list[StandInChild] = []
    recorded: list[tuple[str, UnreadSpan, int]] = []

    def record_unread(shard: str, span: UnreadSpan) -> None:
        given = sum(len(batch) for child in children for batch in child.batches)
        recorded.append((shard, span, given))

    worker, _, _ = run_worker(
        leases, script, OnTrimmedData.RESTART_FROM_TRIM_HORIZON, record_unread=record_unread,
        children=children,
    )  # fmt: skip
    assert worker.error is None
    assert recorded == [("shard-1", UnreadSpan(T * US, (T + 51) * US - 1, TRIMMED), 1)]


def test_an_expired_pinned_latest_records_what_it_passed_over(leases: LeaseTable) -> None:
    script = [error("ExpiredIteratorException"), {"Records": [], "NextShardIterator": "x"}]
    recorded: list[UnreadSpan] = []
    before = time.time()
    worker, _, _ = run_worker(
        leases, script, position="LATEST", record_unread=lambda _, span: recorded.append(span)
    )
    assert worker.error is None
    (span,) = recorded
    assert span.reason == EXPIRED and span.from_us == 0
    assert before * US <= span.to_us <= time.time() * US  # up to the read from the new tip


def test_a_span_the_status_tables_refuse_is_tried_again_and_replication_goes_on(
    leases: LeaseTable,
) -> None:
    script = [
        error("TrimmedDataAccessException"),
        {"Records": [at(record(9), T)], "NextShardIterator": "z"},
    ]
    attempts: list[UnreadSpan] = []

    def refusing(_: str, span: UnreadSpan) -> None:
        attempts.append(span)
        raise error("InternalServerError")

    with structlog.testing.capture_logs() as logged:
        worker, _, children = run_worker(
            leases, script, OnTrimmedData.RESTART_FROM_TRIM_HORIZON, record_unread=refusing
        )
    assert worker.error is None and len(attempts) == 3
    assert [r["sequenceNumber"] for b in children[0].batches for r in b] == ["9"]
    (said,) = [line for line in logged if "could not record the changes" in line["event"]]
    assert said["log_level"] == "error" and said["unread"].startswith("changes created before")


def test_the_end_of_a_shard_is_checkpointed_as_shard_end(leases: LeaseTable) -> None:
    script = [
        {"Records": [record(1)], "NextShardIterator": "a"},
        {"Records": [record(2)]},
    ]  # no next iterator: the shard is closed and read
    worker, _, _ = run_worker(leases, script)
    assert worker.error is None and worker.progress.ended
    assert leases.get("shard-1").checkpoint == SHARD_END  # type: ignore[union-attr]


def test_an_answer_without_records_is_a_failed_read_not_the_shard_s_end(
    leases: LeaseTable,
) -> None:
    """botocore makes ``{}`` of a 200 whose body it cannot parse: no NextShardIterator,
    which ended the open shard for good (SHARD_END) before it was taken for a failed read."""
    script = [
        {"Records": [record(1)], "NextShardIterator": "a"},
        {},
        {"Records": [record(2)], "NextShardIterator": "b"},
    ]
    worker, _, children = run_worker(leases, script)
    assert worker.error is None and not worker.progress.ended
    assert [r["sequenceNumber"] for b in children[0].batches for r in b] == ["1", "2"]
    assert leases.get("shard-1").checkpoint == "2"  # type: ignore[union-attr]


def test_no_next_iterator_for_a_shard_describe_stream_lists_open_is_read_again(
    leases: LeaseTable,
) -> None:
    """SHARD_END is checkpointed only for a shard DescribeStream shows closed."""
    script = [
        {"Records": [record(1)]},
        {"Records": [record(2)], "NextShardIterator": "b"},
    ]
    worker, _, children = run_worker(leases, script, open_shard=True)
    assert worker.error is None and not worker.progress.ended
    assert [r["sequenceNumber"] for b in children[0].batches for r in b] == ["2"]
    assert leases.get("shard-1").checkpoint == "2"  # type: ignore[union-attr]


def test_a_child_that_keeps_failing_stops_the_shard(leases: LeaseTable) -> None:
    worker, _, children = run_worker(leases, [], fail=True)
    assert isinstance(worker.error, ChildKeepsFailing)
    assert len(children) == 3  # the first start and two restarts


def test_a_child_that_keeps_failing_on_a_destination_fault_is_exit_3_and_frees_the_lease(
    leases: LeaseTable,
) -> None:
    said = "destination eu (eu-west-1/orders) refused 20 writes in a row: ResourceNotFound"
    worker, _, children = run_worker(leases, [], fail=True, reason=(said, 3))
    assert isinstance(worker.error, EnvironmentProblem) and worker.error.exit_code == 3
    assert str(worker.error).startswith(said + " (shard shard-1: the processor stopped")
    assert len(children) == 3
    stored = leases.get("shard-1")
    assert stored is not None and stored.owner is None


def test_a_restarted_child_is_reported_until_it_checkpoints(leases: LeaseTable) -> None:
    script = [{"Records": [record(1)], "NextShardIterator": "x"}]
    worker, _, _ = run_worker(leases, script, fail=1)
    assert worker.error is None and worker.progress.restarts == 1
    # The second child checkpointed record 1 after the first one failed: recovered.
    assert worker.trouble(time.time()) is None
    worker.progress.last_checkpoint_at = None  # as if it had not
    trouble = worker.trouble(time.time())
    assert trouble is not None and "restarted 1 times and not recovered" in trouble
    assert "during initialize" in trouble
    worker.progress.child_up_since = None  # and as if it were not running yet
    assert "processor not running" in (worker.trouble(time.time()) or "")


def test_a_stream_that_refuses_access_stops_the_shard_as_an_environment_problem(
    leases: LeaseTable,
) -> None:
    worker, _, _ = run_worker(leases, [error("AccessDeniedException")])
    assert isinstance(worker.error, EnvironmentProblem)
    assert worker.error.exit_code == 3
    assert "shard shard-1: reading the stream failed" in str(worker.error)


def test_throttled_lease_reads_and_releases_do_not_stop_a_restart_or_a_clean_stop(
    leases: LeaseTable,
) -> None:
    flaky = FlakyLeases(leases, get_throttles=2, release_throttles=2)
    script = [{"Records": [record(1), record(2)], "NextShardIterator": "x"}]
    worker, _, children = run_worker(flaky, script, fail=1)
    assert worker.error is None
    assert len(children) == 2 and children[1].batches[0][-1]["sequenceNumber"] == "2"
    assert flaky.get_throttles == 0 and flaky.release_throttles == 0
    stored = leases.get("shard-1")
    assert stored is not None and stored.checkpoint == "2" and stored.owner is None


def test_a_child_that_exits_leaves_its_reason_in_the_runtimes_error() -> None:
    """A processor that stops (a destination refusing every write) says why, and the
    runtime's error names that, not only the broken pipe or the exit status it saw."""
    from replicator.runtime.local.protocol import ProcessorChild

    script = (
        "import os, sys\n"
        "sys.stdin.readline()\n"
        "from replicator.lastwords import leave\n"
        "leave('destination eu (eu-west-1/orders) refused 20 writes in a row: "
        "ResourceNotFoundException: Requested resource not found')\n"
        "os._exit(1)\n"
    )
    child = ProcessorChild([sys.executable, "-c", script], dict(os.environ), lambda *_: None, "c1")
    child.start()
    with pytest.raises(ChildFailed) as failed:
        child.initialize("shard-1", None, None)
    child.kill()
    message = str(failed.value)
    assert "refused 20 writes in a row: ResourceNotFoundException" in message
    assert "during initialize" in message or "before initialize could be sent" in message
    assert "Broken pipe" not in message


def test_a_reason_with_line_breaks_is_left_as_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error an endpoint answered with an XML body split the run's last line in two,
    and a log tool that keeps the last line got half the reason."""
    from replicator import lastwords

    told: list[str] = []
    monkeypatch.setattr(lastwords, "_left", [])
    monkeypatch.setattr(lastwords, "_also", [told.append])
    monkeypatch.setenv(lastwords.ENV, str(tmp_path / "words"))
    lastwords.leave(
        "the dead letter could not be stored: SQS SendMessage failed: (403) "
        '<?xml version="1.0"?>\r\n<ErrorResponse>\n  <Error>denied</Error>\n',
        3,
    )
    one_line = (
        "the dead letter could not be stored: SQS SendMessage failed: (403) "
        '<?xml version="1.0"?> <ErrorResponse> <Error>denied</Error>'
    )
    assert lastwords.read(tmp_path / "words") == (one_line, 3)
    assert told == [one_line]


def test_a_child_killed_between_actions_is_named_killed_by_its_signal() -> None:
    """A processor killed outright (the OOM killer's SIGKILL) leaves no reason of its own,
    and the next action meets a broken pipe: the error names the signal, not the broken
    pipe (which read like a second failure)."""
    from replicator.runtime.local.protocol import ProcessorChild

    script = "import time\ntime.sleep(120)\n"
    child = ProcessorChild([sys.executable, "-c", script], dict(os.environ), lambda *_: None, "c1")
    child.start()
    try:
        pid = child.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
        with pytest.raises(ChildFailed) as failed:
            child.process_records([], None)
    finally:
        child.kill()
    message = str(failed.value)
    assert message == "c1: killed by SIGKILL before the next processRecords could be sent", message


def test_latest_is_pinned_once_a_restarted_child_reads_on_from_it(leases: LeaseTable) -> None:
    """Nothing checkpointed yet: the restarted child reads from where the first one was
    (the pinned iterator, moved on by empty reads), never from a new LATEST."""
    script = [
        {"Records": [], "NextShardIterator": "after-empty"},
        {"Records": [record(7)], "NextShardIterator": "after-7"},
    ]
    worker, stream, children = run_worker(leases, script, fail=1, position="LATEST")
    assert worker.error is None and len(children) == 2
    assert stream.iterator_requests == [("LATEST", None)]  # the pin, before any child
    assert stream.reads[:2] == ["it-1", "after-empty"]
    assert leases.get("shard-1").checkpoint == "7"  # type: ignore[union-attr]


def test_latest_is_pinned_across_refreshes_after_failed_reads(leases: LeaseTable) -> None:
    errors = [error("InternalServerError") for _ in range(3)]
    script = [*errors, error("ExpiredIteratorException"), {"Records": [record(3)]}]
    script[-1]["NextShardIterator"] = "x"
    with structlog.testing.capture_logs() as logged:
        worker, stream, _ = run_worker(leases, script, position="LATEST")
    assert worker.error is None
    # The pinned iterator expired with nothing read: a new LATEST, said in a warning.
    assert stream.iterator_requests == [("LATEST", None), ("LATEST", None)]
    (expired,) = [line for line in logged if "expired before any record" in line["event"]]
    assert expired["log_level"] == "warning"
    assert stream.reads[:4] == ["it-1"] * 4  # refreshed after 3 failures: the same position
    assert leases.get("shard-1").checkpoint == "3"  # type: ignore[union-attr]


class MemoryLeases:
    """A lease table of one shard, held by this worker, in memory."""

    owner = "me"

    def __init__(self) -> None:
        self.lease = Lease("shard-1", "me", 1, "TRIM_HORIZON")
        self.released = False

    def get(self, shard_id: str) -> Lease:
        return Lease(shard_id, self.lease.owner, 1, self.lease.checkpoint)

    def checkpoint(self, lease: Lease, target: str, sub: int) -> None:
        lease.checkpoint = self.lease.checkpoint = target

    def release(self, lease: Lease) -> None:
        self.lease.owner = None
        self.released = True


class EndlessStream:
    """Every read gives the next record: the shard never runs dry."""

    def __init__(self) -> None:
        self.seq = 0

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, str]:
        return {"ShardIterator": "it"}

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        self.seq += 1
        return {"Records": [record(self.seq)], "NextShardIterator": "it"}


class RefusedChild(StandInChild):
    """A processor whose destination refuses every write: it takes ``takes_s`` (simulated)
    of retries, then stops with exit code 3; ``checkpoints`` says, per child, whether it
    checkpoints the first batch before that."""

    def __init__(
        self, on_checkpoint: Any, clock: list[float], checkpoints: bool, partial: bool = False
    ) -> None:
        """``partial``: the checkpoint stops one record short of the batch's last, as one
        that moves past replaced changes while a refused one is still being retried."""
        super().__init__(on_checkpoint)
        self.clock = clock
        self.checkpoints = checkpoints
        self.partial = partial
        self.seen: list[str | None] = []  # the shard's trouble before it failed

    def process_records(self, records: list[dict[str, Any]], millis_behind: int) -> None:
        if self.checkpoints:
            last = int(records[-1]["sequenceNumber"])
            target = str(last - 1 if self.partial else last)
            assert self.on_checkpoint(target, 0) is None
        self.clock[0] += 120.0  # 20 refusals with the default backoff take about 113 s
        self.seen.append(self.observe())
        said = "destination eu (eu-west-1/orders) refused 20 writes in a row"
        raise ChildFailed(f"stand-in child exited with status 1: {said}", reason=said, exit_code=3)

    def observe(self) -> str | None:
        return None


def run_refused(
    checkpoints: list[bool],
    partial: bool = False,
    settled_at: Callable[[str, str], float | None] | None = None,
) -> tuple[ShardWorker, list[RefusedChild], list[str | None], MemoryLeases]:
    """Children fail as ``RefusedChild`` does, 120 s (simulated) apart, checkpointing as
    ``checkpoints`` says; the worker stops once they are all used. Nothing sleeps."""
    clock = [1_000_000.0]
    leases = MemoryLeases()
    stop = threading.Event()
    children: list[RefusedChild] = []
    holder: list[ShardWorker] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        child = RefusedChild(on_checkpoint, clock, checkpoints[len(children)], partial)
        child.observe = lambda: holder[0].trouble(clock[0])  # type: ignore[method-assign]
        children.append(child)
        return child

    def pause(seconds: float) -> None:
        clock[0] += seconds
        if len(children) == len(checkpoints):
            stop.set()

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL)  # the runtime's limits
    worker = ShardWorker(
        leases.lease,
        leases,  # type: ignore[arg-type]
        EndlessStream(),  # type: ignore[arg-type]
        settings,
        new_child,
        stop,
        clock=lambda: clock[0],
        monotonic=lambda: clock[0],
        pause=pause,
        settled_at=settled_at,
    )
    holder.append(worker)
    worker.run()
    return worker, children, [t for c in children for t in c.seen], leases


def test_refusals_far_apart_with_no_checkpoint_between_them_still_end_in_exit_3() -> None:
    """A destination refusing every write takes the processor about two minutes to give
    up on: restarted 5 times, each failure 120 s after the last (never 6 in 300 s), it
    still ends with exit 3, and the shard is reported unhealthy all along, though each
    restarted processor ran longer than ``recovered_after_s``."""
    worker, children, seen, leases = run_refused([False] * 10)
    assert isinstance(worker.error, EnvironmentProblem) and worker.error.exit_code == 3
    assert "refused 20 writes in a row" in str(worker.error)
    assert "the processor stopped on this 6 times in a row" in str(worker.error)
    assert len(children) == 6  # the first start and 5 restarts
    assert seen[0] is None  # before the first failure: healthy
    for trouble in seen[1:]:
        assert trouble is not None and "not recovered" in trouble and "refused" in trouble
    assert leases.released and leases.lease.checkpoint == "TRIM_HORIZON"


def test_a_checkpoint_between_refusals_starts_the_count_again() -> None:
    """A processor that checkpoints before it fails has recovered: the failures are not
    in a row, the shard is healthy once it has checkpointed, and it runs on."""
    worker, children, seen, _ = run_refused([False, True] * 5)
    assert worker.error is None and len(children) == 10
    assert seen[1] is None  # the second child checkpointed, then failed
    assert seen[2] is not None  # the third did not


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run_hung_worker(
    leases: LeaseTable,
    taken_by: str | None,
    meanwhile: Callable[[Lease], object] | None = None,
) -> tuple[ShardWorker, StandInChild]:
    """A worker whose second read returns after a pause longer than the failover time
    (a SIGSTOP, a frozen VM), the worker ``taken_by`` having taken its lease meanwhile, or
    nobody ("me": another host with this worker's id); ``meanwhile`` is done to the
    worker's lease during the pause."""
    from replicator.shards.leases import LeaseTable as Table

    created = leases.create("shard-1", "TRIM_HORIZON", [])
    assert created is not None
    lease = leases.take(created)
    stop = threading.Event()
    clock = _Clock()

    def hang() -> dict[str, Any]:
        clock.now += 10.0  # longer than the 6 s failover time
        if meanwhile is not None:
            meanwhile(lease)
        if taken_by is not None:
            other = Table(leases.client, leases.table, taken_by)
            stored = other.get("shard-1")
            assert stored is not None
            other.take(stored)
        return {"Records": [record(2)], "NextShardIterator": "z"}

    class HangingStream(ScriptedStream):
        def get_records(self, **kwargs: Any) -> dict[str, Any]:
            if self.script and callable(self.script[0]):
                return self.script.pop(0)()  # type: ignore[no-any-return]
            return super().get_records(**kwargs)

    stream = HangingStream([{"Records": [record(1)], "NextShardIterator": "y"}, hang], stop)
    children: list[StandInChild] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(StandInChild(on_checkpoint))
        return children[-1]

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL, lease_expiry_s=6.0)
    worker = ShardWorker(lease, leases, stream, settings, new_child, stop, monotonic=clock)
    worker.run()
    return worker, children[0]


def test_a_worker_that_wakes_after_its_lease_was_taken_over_hands_its_child_nothing_more(
    leases: LeaseTable,
) -> None:
    from replicator.exceptions import LeaseLost

    worker, child = _run_hung_worker(leases, taken_by="other-host")
    assert isinstance(worker.error, LeaseLost)
    assert "taken over by worker other-host" in str(worker.error)
    assert [r["sequenceNumber"] for b in child.batches for r in b] == ["1"]
    stored = leases.get("shard-1")
    assert stored is not None and stored.owner == "other-host"
    assert stored.checkpoint == "1"


def test_a_worker_that_wakes_still_owning_its_lease_goes_on(leases: LeaseTable) -> None:
    worker, child = _run_hung_worker(leases, taken_by=None)
    assert worker.error is None
    assert [r["sequenceNumber"] for b in child.batches for r in b] == ["1", "2"]


def test_a_worker_that_wakes_after_a_renewal_whose_answer_was_lost_goes_on(
    leases: LeaseTable,
) -> None:
    """While the worker hung, the runtime's renewal of its lease landed but its answer
    was lost (a proxy held the request past the read timeout), and the runtime has not
    renewed since: the stored counter is one ahead of the worker's. That is this
    worker's own write, not a takeover by a host sharing its id."""

    def renewal_lost_after_landing(lease: Lease) -> None:
        LostAnswers(leases.client).times_out("landed", lambda: leases.renew(lease))

    worker, child = _run_hung_worker(leases, None, renewal_lost_after_landing)
    assert worker.error is None
    assert [r["sequenceNumber"] for b in child.batches for r in b] == ["1", "2"]
    stored = leases.get("shard-1")
    assert stored is not None and stored.checkpoint == "2"
    assert stored.counter == worker.lease.counter


def test_a_lease_found_taken_by_the_runtime_tells_the_child_lease_lost_not_shutdown(
    leases: LeaseTable,
) -> None:
    """A shutdown request makes the child flush its pending writes: after the lease went
    to another worker those would land over the new owner's. The child is told its lease
    is lost instead (it drops them), and the lease is left to its new owner."""

    class Child(StandInChild):
        actions: list[str]

        def shutdown_requested(self, timeout: float | None = None) -> None:
            self.actions.append("shutdownRequested")

        def lease_lost(self, timeout: float | None = None) -> None:
            self.actions.append("leaseLost")

    created = leases.create("shard-1", "TRIM_HORIZON", [])
    assert created is not None
    lease = leases.take(created)
    stop = threading.Event()
    workers: list[ShardWorker] = []

    def renewal_finds_it_taken() -> dict[str, Any]:
        workers[0].lease_taken()  # as LocalRuntime._renew does on LeaseLost, then stops
        stop.set()
        return {"Records": [], "NextShardIterator": "z"}

    class Stream(ScriptedStream):
        def get_records(self, **kwargs: Any) -> dict[str, Any]:
            return renewal_finds_it_taken()

    children: list[Child] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(Child(on_checkpoint))
        children[-1].actions = []
        return children[-1]

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL)
    workers.append(ShardWorker(lease, leases, Stream([], stop), settings, new_child, stop))
    workers[0].run()
    assert children[0].actions == ["leaseLost"]
    stored = leases.get("shard-1")
    assert stored is not None and stored.owner == "me"  # not released by this worker


class WatchingChild(StandInChild):
    """Records each batch's millisBehindLatest and the shard's trouble when it came."""

    def __init__(self, on_checkpoint: Any, observe: Callable[[], str | None]) -> None:
        super().__init__(on_checkpoint)
        self.observe = observe
        self.seen: list[tuple[int, int, str | None]] = []  # (records, millis behind, trouble)

    def process_records(self, records: list[dict[str, Any]], millis_behind: int) -> None:
        self.seen.append((len(records), millis_behind, self.observe()))
        super().process_records(records, millis_behind)


def _worker_in_simulated_time(
    leases: MemoryLeases,
    stream: Any,
    settings: ShardSettings,
    new_child: Callable[[str, Any], Any],
    stop: threading.Event,
    clock: list[float],
) -> ShardWorker:
    """A worker whose clocks read ``clock[0]`` and whose restarts do not wait."""
    return ShardWorker(
        leases.lease,
        leases,  # type: ignore[arg-type]
        stream,
        settings,
        new_child,
        stop,
        clock=lambda: clock[0],
        monotonic=lambda: clock[0],
        pause=lambda seconds: None,
    )


def _run_watched(
    leases: MemoryLeases,
    stream: Any,
    stop: threading.Event,
    clock: list[float],
    child_type: Callable[[Any, Callable[[], str | None]], WatchingChild],
) -> tuple[ShardWorker, list[WatchingChild]]:
    """Run a worker in simulated time, reported after 250 s of failing reads and retrying
    them without real waits, whose children (``child_type``) see its trouble with each
    batch; the worker and its children."""
    holder: list[ShardWorker] = []
    children: list[WatchingChild] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(child_type(on_checkpoint, lambda: holder[0].trouble(clock[0])))
        return children[-1]

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL, read_stall_after_s=250.0)
    worker = _worker_in_simulated_time(leases, stream, settings, new_child, stop, clock)
    worker._backoff = Backoff(0.0, 0.0)
    holder.append(worker)
    worker.run()
    return worker, children


def test_failing_reads_raise_the_lag_and_report_the_shard_after_the_stall_time() -> None:
    """GetRecords failing (an endpoint refusing connections): the processor is told the
    reader falls behind by the time since the last good read, and after
    ``read_stall_after_s`` of failures the shard is in trouble, until a read succeeds.
    Time is simulated: each read takes 100 s."""
    clock = [1_000_000.0]
    leases = MemoryLeases()
    stop = threading.Event()
    script: list[Any] = [{"Records": [], "NextShardIterator": "a"}]
    script += [error("InternalServerError")] * 4 + [{"Records": [], "NextShardIterator": "b"}]
    stream = ScriptedStream(script, stop)
    real_read = stream.get_records

    def read(**kwargs: Any) -> dict[str, Any]:
        clock[0] += 100.0
        return real_read(**kwargs)

    stream.get_records = read  # type: ignore[method-assign]
    worker, (child,) = _run_watched(leases, stream, stop, clock, WatchingChild)
    assert worker.error is None
    behind = [millis for _, millis, _ in child.seen]
    troubles = [trouble for _, _, trouble in child.seen]
    # An empty read (how far behind is not known), four failed ones (100 s more behind
    # each), an empty read again.
    assert behind[:6] == [None, 100_000, 200_000, 300_000, 400_000, None]
    # Nothing read since the first read's answer, as the lag counts: 100 s, 200 s (under
    # the limit), then 300 s and 400 s.
    assert troubles[:3] == [None, None, None]
    assert troubles[3] is not None and troubles[3].startswith("reading the stream failed for 300s")
    assert troubles[4] is not None and troubles[4].startswith("reading the stream failed for 400s")
    assert "InternalServerError" in troubles[4]
    assert troubles[5] is None
    assert worker.progress.read_failing_since is None


class _Spinning(BaseException):
    """Ends a worker that retries on and on (after its stop, it would spin until killed)."""


def test_iterator_requests_failing_report_the_shard_and_a_stop_ends_their_retries() -> None:
    """GetShardIterator failing (the endpoint down when a processor starts): the shard is
    reported after ``read_stall_after_s``, and a stop ends the retries at once and shuts
    the processor down, the lease released. The processor hears nothing meanwhile: no
    read has told where its reader is, and a lag counted from the outage's start would
    be below a backlog's age (no lag series, as before any first batch). Time is
    simulated: each request takes 100 s."""
    clock = [1_000_000.0]
    leases = MemoryLeases()
    stop = threading.Event()
    stream = ScriptedStream([], stop)
    requests = [0]
    holder: list[ShardWorker] = []
    troubles: list[str | None] = []

    def get_shard_iterator(**kwargs: Any) -> dict[str, str]:
        clock[0] += 100.0
        requests[0] += 1
        if requests[0] > 100:
            raise _Spinning  # retried on regardless of the processor or the stop
        troubles.append(holder[0].trouble(clock[0]))
        if requests[0] == 4:
            stop.set()  # SIGTERM while the outage goes on
        raise error("InternalServerError")

    stream.get_shard_iterator = get_shard_iterator  # type: ignore[method-assign]
    shut_down: list[str] = []

    class Stopped(WatchingChild):
        def shutdown_requested(self, timeout: float | None = None) -> None:
            shut_down.append("shutdownRequested")

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(Stopped(on_checkpoint, lambda: holder[0].trouble(clock[0])))
        return children[-1]

    children: list[WatchingChild] = []
    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL, read_stall_after_s=250.0)
    worker = _worker_in_simulated_time(leases, stream, settings, new_child, stop, clock)
    worker._backoff = Backoff(0.0, 0.0)
    holder.append(worker)
    worker.run()
    assert worker.error is None, worker.error
    assert stream.reads == []  # no iterator, no GetRecords
    (child,) = children
    assert child.seen == []
    # Failing since the first request: seen before the 2nd (100 s), 3rd, then 4th (300 s).
    assert troubles[:3] == [None, None, None]
    assert troubles[3] is not None and troubles[3].startswith("reading the stream failed for 300s")
    assert requests == [4]  # not one more once the stop began
    assert shut_down == ["shutdownRequested"]
    assert leases.released


def test_a_read_left_unanswered_reports_the_shard_after_the_stall_time() -> None:
    """GetRecords hangs (a proxy holding the request): the shard is in trouble once
    nothing has been read for ``read_stall_after_s``, as the lag says, not only once
    botocore's read timeout makes the read fail. Simulated time: 100 s pass with each
    report on the hung read; it is answered at the third trouble seen."""
    clock = [1_000_000.0]
    stop = threading.Event()
    answered = threading.Event()
    stream = ScriptedStream([{"Records": [], "NextShardIterator": "a"}], stop)
    real_read = stream.get_records
    holder: list[ShardWorker] = []
    troubles: list[str | None] = []

    def read(**kwargs: Any) -> dict[str, Any]:
        if len(stream.reads) == 1:  # the second read hangs
            assert answered.wait(10), "the read was never answered"
        return real_read(**kwargs)

    class Watching(StandInChild):
        def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
            super().process_records(records, millis_behind)
            if millis_behind is None or answered.is_set():
                return  # the first read's answer, or after the hung one
            troubles.append(holder[0].trouble(clock[0]))
            if sum(trouble is not None for trouble in troubles) == 3:
                answered.set()
            else:
                clock[0] += 100.0

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        return Watching(on_checkpoint)

    stream.get_records = read  # type: ignore[method-assign]
    settings = ShardSettings(
        "arn",
        100,
        0.0,
        OnTrimmedData.FAIL,
        read_stall_after_s=250.0,
        outstanding_read_report_s=0.01,
    )
    worker = _worker_in_simulated_time(MemoryLeases(), stream, settings, new_child, stop, clock)
    holder.append(worker)
    worker.run()
    assert worker.error is None
    # Reported at once (0 s), then 100 s, 200 s (under the limit), 300 s and on.
    assert troubles[:3] == [None, None, None]
    assert [trouble.split(": ", 1) for trouble in troubles[3:] if trouble is not None] == [
        [
            f"reading the stream failed for {waited}s",
            f"GetRecords not answered yet (sent {waited}s ago)",
        ]
        for waited in (300, 400, 500)
    ]
    assert worker.progress.read_failing_since is None  # answered: readable again


def _run_with_slow_read(
    stream: ScriptedStream,
    read: Callable[..., dict[str, Any]],
    child_type: type[StandInChild],
    stop: threading.Event,
    clock: list[float],
) -> tuple[ShardWorker, list[StandInChild]]:
    """Run a worker whose reads go through ``read`` and that reports on a read still out
    every 10 ms; the worker and its children."""
    children: list[StandInChild] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(child_type(on_checkpoint))
        return children[-1]

    stream.get_records = read  # type: ignore[method-assign]
    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL, outstanding_read_report_s=0.01)
    worker = _worker_in_simulated_time(MemoryLeases(), stream, settings, new_child, stop, clock)
    worker.run()
    return worker, children


def test_a_read_left_unanswered_raises_the_lag_while_it_waits() -> None:
    """GetRecords hangs (a proxy holding the request until botocore's read timeout): the
    processor hears how far behind the reader may be every ``outstanding_read_report_s``
    while the call is out, not only once it fails. Simulated time: a second passes after
    each report; the read is answered once the processor heard 3 s."""
    clock = [1_000_000.0]
    stop = threading.Event()
    answered = threading.Event()
    stream = ScriptedStream([{"Records": [], "NextShardIterator": "a"}], stop)
    real_read = stream.get_records

    def read(**kwargs: Any) -> dict[str, Any]:
        if len(stream.reads) == 1:  # the second read hangs
            assert answered.wait(10), "the processor was not told while the read hung"
        return real_read(**kwargs)

    class Waiting(StandInChild):
        def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
            super().process_records(records, millis_behind)
            if None not in self.behind[:-1] or millis_behind is None or answered.is_set():
                return  # before the first read's answer (a loaded machine), or after
            if millis_behind >= 3_000:
                answered.set()
            else:
                clock[0] += 1.0

    worker, children = _run_with_slow_read(stream, read, Waiting, stop, clock)
    assert worker.error is None
    (child,) = children
    assert all(batch == [] for batch in child.batches)
    # After the first read's answer (how far behind not known), while the second hangs:
    # at once (1 ms: never 0, the tip), 1 s, 2 s, 3 s (told again until the answer is
    # seen), then the second read's answer.
    first = child.behind.index(None)
    hung = [behind for behind in child.behind[first + 1 :] if behind is not None]
    assert list(dict.fromkeys(hung)) == [1, 1_000, 2_000, 3_000]


def test_an_iterator_request_left_unanswered_raises_the_lag_while_it_waits() -> None:
    """Three failed reads (each timing out after 10 s), then the fresh iterator asked for
    after them hangs (a proxy holding GetShardIterator until botocore's read timeout):
    the processor keeps hearing how far behind the reader may be while that call is out,
    as while a GetRecords is, rather than nothing until it fails. Simulated time: a
    second passes after each report on the hung call; it is answered once the processor
    heard 33 s."""
    clock = [1_000_000.0]
    stop = threading.Event()
    answered = threading.Event()
    script: list[Any] = [{"Records": [], "NextShardIterator": "a"}]
    script += [error("InternalServerError")] * 3
    stream = ScriptedStream(script, stop)
    real_read, real_iterator = stream.get_records, stream.get_shard_iterator
    hung: list[int] = []  # what the processor heard while the iterator request was out

    def read(**kwargs: Any) -> dict[str, Any]:
        if stream.reads:
            clock[0] += 10.0  # the read timeout of a failing read
        return real_read(**kwargs)

    def get_shard_iterator(**kwargs: Any) -> dict[str, str]:
        if stream.iterator_requests:  # the fresh one, after the third failed read
            hung.append(-1)
            assert answered.wait(10), "the processor was not told while the request hung"
        return real_iterator(**kwargs)

    class Waiting(StandInChild):
        def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
            super().process_records(records, millis_behind)
            if not hung or millis_behind is None or answered.is_set():
                return  # before the request hung, or after its answer
            hung.append(millis_behind)
            if millis_behind >= 33_000:
                answered.set()
            else:
                clock[0] += 1.0

    stream.get_shard_iterator = get_shard_iterator  # type: ignore[method-assign]
    worker, children = _run_with_slow_read(stream, read, Waiting, stop, clock)
    assert worker.error is None, worker.error
    (child,) = children
    # The first read's answer (how far behind not known), the three failed reads (10 s
    # more behind each), then while the iterator request hung: 30 s at once (the reports
    # go on at their pace from the last failed read's), 31 s, 32 s, 33 s, the lag rising
    # with the wait.
    assert list(dict.fromkeys(child.behind))[:4] == [None, 10_000, 20_000, 30_000]
    assert stream.iterator_requests[1:] == [("TRIM_HORIZON", None)]
    assert list(dict.fromkeys(hung[1:])) == [30_000, 31_000, 32_000, 33_000]


@pytest.mark.parametrize("restarted", [False, True], ids=["start", "restarted processor"])
def test_a_first_read_still_out_on_a_backlog_tells_the_processor_nothing(restarted: bool) -> None:
    """A start, or a processor started again after a failure, on a backlog 35 s old
    whose first GetRecords is slow: no lag counted from the read's sending (1 s, 2 s) or
    from the failed processor's last read (near the tip): both are far below the
    backlog's age, where the docs promise an upper bound. Nothing at all until the
    answer, whose batch then tells the processor how old the backlog is. The read is
    answered once the processor has heard something, or after a second of reports
    every 10 ms."""
    clock = [float(T + 35)]
    stop = threading.Event()
    heard = threading.Event()
    script: list[Any] = [{"Records": [at(record(1), T)], "NextShardIterator": "a"}]
    if restarted:  # the first processor read up to the tip, then failed on a batch
        script = [
            {"Records": [at(record(1), T + 35)], "NextShardIterator": "a"},
            {"Records": [at(record(2), T + 35)], "NextShardIterator": "b"},
            *script,
        ]
    stream = ScriptedStream(script, stop)
    real_read = stream.get_records
    hung = 2 if restarted else 0  # the read that is slow: the last processor's first
    sent: list[int] = []  # what that processor had heard when its first read was answered

    started: list[StandInChild] = []

    def read(**kwargs: Any) -> dict[str, Any]:
        if len(stream.reads) == hung:
            heard.wait(1.0)
            sent.append(len(started[-1].behind))
        return real_read(**kwargs)

    class Listening(StandInChild):
        def __init__(self, on_checkpoint: Any) -> None:
            super().__init__(on_checkpoint)
            started.append(self)

        def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
            if restarted and len(started) == 1 and len(self.batches) == 1:
                raise ChildFailed("stand-in child exited with status 1 during processRecords")
            super().process_records(records, millis_behind)
            if len(started) == (2 if restarted else 1):
                heard.set()

    worker, children = _run_with_slow_read(stream, read, Listening, stop, clock)
    assert worker.error is None
    child = children[-1]
    assert len(children) == (2 if restarted else 1)
    assert sent == [0], child.behind  # nothing before the first answer
    assert [len(batch) for batch in child.batches[:1]] == [1]
    assert child.behind[0] == 35_000  # the backlog's age, from the answer


def test_an_empty_read_the_processor_heard_of_while_it_was_out_claims_no_tip() -> None:
    """An empty answer at 0 (or null) behind tells the watermark that every change made
    before the processor's previous answer was read. A report answered while the read
    was out comes after the read was sent: changes made in between were never read, so
    that read's empty answer is sent as not at the tip, and the next read makes the
    claim. The second read is answered only once the processor heard a report."""
    stop = threading.Event()
    reported = threading.Event()
    stream = ScriptedStream(
        [{"Records": [], "NextShardIterator": "a"}, {"Records": [], "NextShardIterator": "b"}],
        stop,
    )
    real_read = stream.get_records
    events: list[tuple[str, int | None]] = []  # ("sent", read) or ("answer", behind)

    def read(**kwargs: Any) -> dict[str, Any]:
        events.append(("sent", len(stream.reads)))
        if len(stream.reads) == 1:
            assert reported.wait(10), "the processor was not told while the read was out"
        return real_read(**kwargs)

    class Told(StandInChild):
        def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
            super().process_records(records, millis_behind)
            events.append(("answer", millis_behind))
            if any(sent == ("sent", 1) for sent in events):
                reported.set()

    worker, _ = _run_with_slow_read(stream, read, Told, stop, [1_000_000.0])
    assert worker.error is None
    second, third = events.index(("sent", 1)), events.index(("sent", 2))
    assert len(events[second:third]) > 2  # the report(s), then the read's own answer
    # Every empty answer at the tip comes right after its read was sent: the processor
    # answered nothing in between.
    tip = [index for index, (kind, behind) in enumerate(events) if kind == "answer" and not behind]
    assert tip and all(events[index - 1][0] == "sent" for index in tip), events


def test_a_checkpoint_short_of_the_records_delivered_is_no_recovery_from_refusals() -> None:
    """The checkpoint moves past changes that newer ones replaced while the refused change
    is retried: that is no sign the destination accepts writes again, so the shard stays
    reported and the refusals still count in a row."""
    worker, children, seen, _ = run_refused([False, True] * 5, partial=True)
    assert isinstance(worker.error, EnvironmentProblem) and worker.error.exit_code == 3
    assert len(children) == 6
    for trouble in seen[1:]:
        assert trouble is not None and "not recovered" in trouble


def test_a_write_settled_at_the_refusing_destination_is_recovery() -> None:
    """The processors' samples show a write of this shard settled at "eu" (the
    destination the last words name) after the failure: recovered, though no checkpoint
    was written."""
    asked: list[tuple[str, str]] = []

    def settled_at(shard: str, destination: str) -> float | None:
        asked.append((shard, destination))
        return float("inf")  # settled after any failure

    worker, children, seen, _ = run_refused([False] * 10, settled_at=settled_at)
    assert worker.error is None and len(children) == 10
    assert all(trouble is None for trouble in seen)
    assert asked and set(asked) == {("shard-1", "eu")}


def test_a_first_read_that_fails_is_never_passed_on_as_the_reader_at_the_tip() -> None:
    """A restart with a backlog whose first GetRecords is throttled: no read has succeeded,
    so nothing shows where the tip is. The processor takes an empty batch at 0 (or null)
    behind as the reader at the tip, and the watermark as every change made before it
    read: the failed read must not reach it as one. Nor as a lag, which would count from
    the failure and say nothing of the backlog's age: it is passed on as nothing."""
    clock = [1_000_000.0]  # stands still: the failure comes 0 s after the start
    leases = MemoryLeases()
    stop = threading.Event()
    script: list[Any] = [
        error("ProvisionedThroughputExceededException"),
        {"Records": [], "NextShardIterator": "a"},
    ]
    stream = ScriptedStream(script, stop)
    children: list[StandInChild] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(StandInChild(on_checkpoint))
        return children[-1]

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL)
    worker = _worker_in_simulated_time(leases, stream, settings, new_child, stop, clock)
    worker._backoff = Backoff(0.0, 0.0)  # no real waiting before the retry
    worker.run()
    assert worker.error is None
    (child,) = children
    assert stream.reads[:2] == ["it-1", "it-1"]  # the failed read, then the answered one
    # The first thing the processor hears is the answered read's: an empty read, not
    # known how far behind, as any; the failed read was not passed on.
    assert child.batches[0] == [] and child.behind[0] is None


class StopWatchingChild(StandInChild):
    """Records how it was stopped: shutdownRequested or leaseLost."""

    def __init__(self, on_checkpoint: Any) -> None:
        super().__init__(on_checkpoint)
        self.actions: list[str] = []

    def shutdown_requested(self, timeout: float | None = None) -> None:
        self.actions.append("shutdownRequested")

    def lease_lost(self, timeout: float | None = None) -> None:
        self.actions.append("leaseLost")


def _stop_worker(leases: LeaseTable, shard_id: str, taken_by: str | None) -> StopWatchingChild:
    """A worker of ``shard_id`` that stops (as the runtime stops every worker when one
    lease was found taken) after one read, during which the worker ``taken_by`` took
    the lease, or nobody did. Its worker is not told (no ``lease_taken``)."""
    created = leases.create(shard_id, "TRIM_HORIZON", [])
    assert created is not None
    lease = leases.take(created)
    stop = threading.Event()

    def read() -> dict[str, Any]:
        if taken_by is not None:
            other = LeaseTable(leases.client, leases.table, taken_by)
            stored = other.get(shard_id)
            assert stored is not None
            other.take(stored)
        stop.set()
        return {"Records": [], "NextShardIterator": "z"}

    class Stream(ScriptedStream):
        def get_records(self, **kwargs: Any) -> dict[str, Any]:
            return read()

    children: list[StopWatchingChild] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(StopWatchingChild(on_checkpoint))
        return children[-1]

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL)
    worker = ShardWorker(lease, leases, Stream([], stop), settings, new_child, stop)
    worker.run()
    assert worker.error is None
    return children[0]


@pytest.mark.parametrize("taken_by", ["other-host", "me"])
def test_a_worker_stopping_finds_its_lease_taken_and_tells_the_child_lease_lost(
    leases: LeaseTable, taken_by: str
) -> None:
    """A runtime that was hung while another worker took all its shards: the renewal that
    fails tells one worker, and the runtime stops. The others, not told, read their lease
    at the stop: one taken over (by another id, or by another host under this worker's
    id: the counter moved) gets leaseLost (it drops its pending writes rather than flush
    them over the new owner's) and is not released; one still ours stops cleanly."""
    kept = _stop_worker(leases, "shard-1", taken_by=None)
    taken = _stop_worker(leases, "shard-2", taken_by=taken_by)
    assert kept.actions == ["shutdownRequested"]
    assert taken.actions == ["leaseLost"]
    released = leases.get("shard-1")
    assert released is not None and released.owner is None
    other = leases.get("shard-2")
    assert other is not None and other.owner == taken_by  # the new owner's, untouched


def test_a_renewal_racing_the_stop_read_leaves_the_lease_ours(leases: LeaseTable) -> None:
    """The runtime renews leases on its own thread: the stored counter can be one ahead
    of the worker's copy for the moment between the renewal's write and its update of
    that copy. The read is made again, with no update in progress, before the lease is
    taken as lost: a clean stop, the lease released."""

    class RacingLeases:
        def __init__(self, table: LeaseTable) -> None:
            self.table = table
            self.held: Lease | None = None  # the worker's copy
            self.raced = False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.table, name)

        def get(self, shard_id: str) -> Lease | None:
            stored = self.table.get(shard_id)
            if not self.raced and self.held is not None and stored is not None:
                # A renewal's write lands; its update of the worker's copy is still to come.
                self.raced = True
                self.table.renew(stored)
                return self.table.get(shard_id)
            return stored

        def get_settled(self, shard_id: str, held: Lease | None = None) -> Lease | None:
            assert self.held is not None and held is self.held
            self.held.counter += 1  # the renewal finished: get_settled waited for it
            return self.table.get_settled(shard_id, held)

    racing = RacingLeases(leases)
    created = leases.create("shard-1", "TRIM_HORIZON", [])
    assert created is not None
    lease = leases.take(created)
    stop = threading.Event()
    stream = ScriptedStream([{"Records": [], "NextShardIterator": "z"}], stop)
    children: list[StopWatchingChild] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(StopWatchingChild(on_checkpoint))
        return children[-1]

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL)
    worker = ShardWorker(lease, racing, stream, settings, new_child, stop)  # type: ignore[arg-type]
    racing.held = lease
    worker.run()
    assert worker.error is None and racing.raced
    assert children[0].actions == ["shutdownRequested"]
    stored = leases.get("shard-1")
    assert stored is not None and stored.owner is None  # released


def test_a_worker_that_wakes_after_a_host_sharing_its_id_took_its_lease_stops(
    leases: LeaseTable,
) -> None:
    """Two hosts with one worker id (``kcl.worker_id`` pinned in a shared job file): the
    other took the lease while this one hung, under the same owner name. The counter
    moved past the one this worker holds: the lease is lost, the batch just read is not
    handed to the child."""
    from replicator.exceptions import LeaseLost

    worker, child = _run_hung_worker(leases, taken_by="me")
    assert isinstance(worker.error, LeaseLost)
    assert "another worker with this worker's id me" in str(worker.error)
    assert [r["sequenceNumber"] for b in child.batches for r in b] == ["1"]
    stored = leases.get("shard-1")
    assert stored is not None and stored.owner == "me" and stored.checkpoint == "1"
    assert stored.counter == worker.lease.counter + 1  # the other host's take, left alone


def test_a_restart_after_a_host_sharing_its_id_took_the_lease_stops(leases: LeaseTable) -> None:
    """A child failed; before it is started again from the lease's checkpoint, the lease
    is read: taken over by another host under this worker's id (the counter moved), it is
    lost, and no new child starts."""
    from replicator.exceptions import LeaseLost

    class TakenBeforeRead:
        def __init__(self, table: LeaseTable) -> None:
            self.table = table
            self.taken = False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.table, name)

        def get(self, shard_id: str) -> Lease | None:
            if not self.taken:
                self.taken = True
                twin = LeaseTable(self.table.client, self.table.table, "me")
                stored = twin.get(shard_id)
                assert stored is not None
                twin.take(stored)
            return self.table.get(shard_id)

    script = [{"Records": [record(1)], "NextShardIterator": "x"}]
    worker, _, children = run_worker(TakenBeforeRead(leases), script, fail=1)
    assert isinstance(worker.error, LeaseLost)
    assert "another worker with this worker's id me" in str(worker.error)
    assert len(children) == 1


def test_a_renewal_that_fails_because_a_stop_released_the_lease_is_not_a_takeover() -> None:
    """SIGTERM while the runtime renews: the workers release their leases on their clean
    stop, and a renewal still on its way then fails. That is not another worker taking
    the shard: no exit 5, and the worker is not told its lease was lost."""
    from replicator.exceptions import LeaseLost
    from replicator.runtime.local.runtime import LocalRuntime

    class Worker:
        shard_id = "shard-1"
        taken = False

        def lease_taken(self) -> None:
            self.taken = True

    runtime = LocalRuntime.__new__(LocalRuntime)
    runtime.stopping = threading.Event()
    runtime.failure = None
    worker = Worker()
    runtime.workers = {"shard-1": worker}  # type: ignore[dict-item]

    def released_meanwhile(step: Any, what: str) -> bool:
        runtime.stopping.set()  # the stop began while this renewal was on its way
        raise LeaseLost("lease on shard-1 is no longer ours")

    runtime._tolerating_outages = released_meanwhile  # type: ignore[method-assign]
    runtime._renew()
    assert runtime.failure is None
    assert not worker.taken

    # Not stopping: the same failure is another worker's takeover.
    runtime.stopping = threading.Event()

    def taken(step: Any, what: str) -> bool:
        raise LeaseLost("lease on shard-1 is no longer ours")

    runtime._tolerating_outages = taken  # type: ignore[method-assign]
    runtime._renew()
    assert runtime.failure is not None and "taken by another worker" in str(runtime.failure)
    assert worker.taken


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("answered", None),
        ("timed out", None),
        ("exited", ChildFailed),
        ("exited saying exit 3", EnvironmentProblem),
    ],
)
def test_a_processor_failing_its_shutdown_makes_the_stop_a_failure_but_running_out_of_time_does_not(
    leases: LeaseTable, outcome: str, expected: type[BaseException] | None
) -> None:
    """A processor still waiting for writes to a destination that is down when its
    shutdown time is up has failed nothing (nothing is checkpointed past them): a clean
    stop. One that exits during its shutdown has failed, and the runtime is told so
    (``stop_failure``), with the child's exit code when it gave one. Either way the
    lease is given up."""

    class StoppingChild(StandInChild):
        def shutdown_requested(self, timeout: float | None = None) -> None:
            if outcome == "timed out":
                raise ChildFailed("child: no answer to shutdownRequested in time", timed_out=True)
            if outcome == "exited":
                raise ChildFailed("child: exited with status 1 during shutdownRequested")
            if outcome == "exited saying exit 3":
                raise ChildFailed(
                    "child: cannot append to dead-letter file d/x.jsonl: d is not a directory "
                    "(exited with status 1 during shutdownRequested)",
                    reason="cannot append to dead-letter file d/x.jsonl: d is not a directory",
                    exit_code=3,
                )

    created = leases.create("shard-1", "TRIM_HORIZON", [])
    assert created is not None
    lease = leases.take(created)
    stop = threading.Event()
    stream = ScriptedStream([{"Records": [], "NextShardIterator": "z"}], stop)
    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL)
    worker = ShardWorker(
        lease, leases, stream, settings, lambda _, on_checkpoint: StoppingChild(on_checkpoint), stop
    )
    worker.run()
    assert worker.error is None
    if expected is None:
        assert worker.stop_failure is None
    else:
        assert type(worker.stop_failure) is expected
    if expected is EnvironmentProblem:
        assert str(worker.stop_failure).startswith(
            "cannot append to dead-letter file d/x.jsonl: d is not a directory (shard shard-1:"
        )
    stored = leases.get("shard-1")
    assert stored is not None and stored.owner is None  # released


def test_a_shard_that_does_not_stop_by_the_deadline_is_killed_and_the_stop_is_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop first has every processor let go of a batch it holds for room; a shard
    whose worker is still stopping at the runtime's deadline gets its processor killed,
    and that stop is not clean: an unexpected failure (exit 1), not "stopped cleanly"."""
    from replicator.exceptions import OperatorError
    from replicator.runtime.local import runtime as local_runtime

    class Child:
        killed = False

        def kill(self) -> None:
            self.killed = True

    class Hung(threading.Thread):
        shard_id = "shard-1"
        stop_failure = None

        def __init__(self) -> None:
            super().__init__(daemon=True)
            self.child = Child()
            self.released = 0
            self.let_go = threading.Event()

        def release_processor(self) -> None:
            self.released += 1

        def run(self) -> None:
            self.let_go.wait(60)

    monkeypatch.setattr(local_runtime, "STOP_DEADLINE_S", 0.2)
    runtime = local_runtime.LocalRuntime.__new__(local_runtime.LocalRuntime)
    runtime.stopping = threading.Event()
    runtime.failure = None
    runtime._stop_asked_at = None
    worker = Hung()
    worker.start()
    runtime.workers = {"shard-1": worker}  # type: ignore[dict-item]
    try:
        runtime._shut_down()
    finally:
        worker.let_go.set()
    assert worker.released == 1
    assert worker.child.killed
    failure = runtime.failure
    assert failure is not None and not isinstance(failure, OperatorError)  # run(): exit 1
    assert str(failure).startswith(
        "shard shard-1 did not stop within 0.2s; its processor was killed"
    )


def test_a_processor_that_does_not_answer_process_records_reports_the_shard() -> None:
    """A processor that is stuck (deadlocked, SIGSTOP) freezes its own lag gauges at
    their last value: /healthz said ok and the lag 0 while changes went unreplicated.
    The worker knows how long its processRecords has been out: past
    ``read_stall_after_s`` the shard is in trouble, until the processor answers.
    Simulated time: 100 s pass at each look while the first batch is held."""
    clock = [1_000_000.0]
    stop = threading.Event()
    stream = ScriptedStream([{"Records": [record(1)], "NextShardIterator": "a"}], stop)
    holder: list[ShardWorker] = []
    troubles: list[str | None] = []

    class Stuck(StandInChild):
        def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
            if records and not troubles:
                for _ in range(4):
                    troubles.append(holder[0].trouble(clock[0]))
                    clock[0] += 100.0
            super().process_records(records, millis_behind)

    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL, read_stall_after_s=250.0)
    worker = _worker_in_simulated_time(
        MemoryLeases(), stream, settings, lambda _, on_checkpoint: Stuck(on_checkpoint), stop, clock
    )
    holder.append(worker)
    worker.run()
    assert worker.error is None
    assert troubles[:3] == [None, None, None]
    assert troubles[3] == (
        "the processor (pid 4242) has not answered processRecords for 300s: it waits for "
        "room in its buffer (a destination takes no writes) or is stuck"
    )
    assert worker.trouble(clock[0]) is None  # answered since


# -- what a stop leaves past the checkpoint ------------------------------------------------


class UnsettledChild(StandInChild):
    """Takes every batch and checkpoints none, as a processor whose writes are still out
    when its flush times out; with ``fail_on``, it fails on that batch (counted over
    every child of the worker), as a processor that crashes does."""

    taken = 0
    fail_on: int | None = None

    def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
        self.batches.append(records)
        if records:
            UnsettledChild.taken += 1
            if UnsettledChild.taken == UnsettledChild.fail_on:
                raise ChildFailed("stand-in child exited with status 1")


@pytest.mark.parametrize("position", ["TRIM_HORIZON", "LATEST"])
def test_a_stop_with_records_read_past_the_checkpoint_is_noted(
    leases: LeaseTable, position: str
) -> None:
    UnsettledChild.taken, UnsettledChild.fail_on = 0, None
    script = [{"Records": [record(1), record(2)], "NextShardIterator": "x"}]
    worker, _, _ = run_worker(leases, script, position=position, child_type=UnsettledChild)
    assert worker.error is None
    assert worker.left_at_stop == (position, "2")


def test_a_stop_with_every_record_read_checkpointed_notes_nothing(leases: LeaseTable) -> None:
    script = [{"Records": [record(1), record(2)], "NextShardIterator": "x"}]
    worker, _, _ = run_worker(leases, script)
    assert worker.error is None
    assert leases.get("shard-1").checkpoint == "2"  # type: ignore[union-attr]
    assert worker.left_at_stop is None


def test_a_stop_just_after_a_processor_restart_still_notes_what_the_failed_one_read(
    leases: LeaseTable,
) -> None:
    """The first processor took 1 and 2, checkpointed neither and failed on 3; its
    successor reads from the checkpoint again and is stopped before it gets anything:
    the records read past the checkpoint are the first one's."""
    UnsettledChild.taken, UnsettledChild.fail_on = 0, 2
    script = [
        {"Records": [record(1), record(2)], "NextShardIterator": "x"},
        {"Records": [record(3)], "NextShardIterator": "y"},
    ]
    worker, _, children = run_worker(leases, script, child_type=UnsettledChild)
    assert worker.error is None
    assert len(children) == 2
    assert worker.left_at_stop == ("TRIM_HORIZON", "3")


@pytest.mark.parametrize("watermark", [True, False])
def test_the_runtimes_last_line_tells_a_shard_at_latest_apart(watermark: bool) -> None:
    """A shard with a checkpoint reads what it left again; one still at LATEST starts at
    the stream's tip next time, so the last line says those changes are not replicated
    and how to copy them."""
    from types import SimpleNamespace

    from replicator.runtime.local.runtime import LocalRuntime

    def stopped(pairs: dict[str, tuple[str, str] | None]) -> list[dict[str, Any]]:
        runtime = object.__new__(LocalRuntime)
        runtime.workers = {  # type: ignore[assignment]
            shard: SimpleNamespace(shard_id=shard, left_at_stop=left)
            for shard, left in pairs.items()
        }
        runtime.resolved = SimpleNamespace(publishes_watermark=watermark)  # type: ignore[assignment]
        with structlog.testing.capture_logs() as logs:
            said = runtime._said_what_was_left()
        assert said is bool(logs)
        return logs

    assert stopped({"a": None}) == []
    (read_again,) = stopped({"a": ("12", "15"), "b": None})
    assert read_again["event"].startswith("local runtime stopped; 1 shard(s) stopped with")
    assert read_again["shards"] == {"a": {"checkpoint": "12", "read_to": "15"}}
    (lost,) = stopped({"a": ("12", "15"), "b": ("LATEST", "7")})
    assert "1 shard(s) have no checkpoint yet" in lost["event"]
    assert "those changes are not replicated" in lost["event"]
    assert "`replicator backfill` copies them" in lost["event"]
    assert ("watermark reports them as never read" in lost["event"]) is watermark
    assert lost["not_replicated"] == ["b"]
    assert lost["log_level"] == "warning"


class _DownLeases:
    """A lease table that throttles every read, as one failing when a stop comes."""

    owner = "me"

    @staticmethod
    def _throttled() -> ClientError:
        return ClientError(
            {
                "Error": {"Code": "ThrottlingException", "Message": "slow down"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "GetItem",
        )

    def get(self, shard_id: str) -> Any:
        raise self._throttled()

    def get_settled(self, shard_id: str, held: Any = None) -> Any:
        raise self._throttled()

    def checkpoint(self, lease: Lease, checkpoint: str, sub: int = 0) -> Lease:
        lease.checkpoint = checkpoint
        return lease

    def release(self, lease: Lease) -> None:
        raise self._throttled()


class _LosingChild(StandInChild):
    """Checkpoints nothing, and notes being told its lease is lost."""

    told_lost = False

    def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
        self.batches.append(records)

    def lease_lost(self, timeout: float | None = None) -> None:
        self.told_lost = True

    def release(self) -> None:
        pass


def test_a_lease_table_failing_as_the_stop_begins_is_a_lost_lease_not_a_failure() -> None:
    """The worker reads its lease before each batch once renewals have not confirmed it
    (the table throttles); a stop during those retries ended the worker with the
    throttling error, the run with exit 1 and the processor killed. It is the stop's
    case of an unreadable lease: counted lost, the processor told so, exit 0."""
    import itertools

    from replicator.runtime.local.runtime import LocalRuntime

    lease = Lease("shard-1", "me", 1, "TRIM_HORIZON")
    stop = threading.Event()
    stream = ScriptedStream(
        [
            {"Records": [record(1)], "NextShardIterator": "a"},
            {"Records": [record(2)], "NextShardIterator": "b"},
        ],
        stop,
    )
    stream.closed = False
    ticks = itertools.count(0, 5)  # 5 s a call: past 2/3 of a 6 s lease at once
    settings = ShardSettings("arn", 100, 0.0, OnTrimmedData.FAIL, lease_expiry_s=6.0)
    children: list[_LosingChild] = []

    def new_child(shard_id: str, on_checkpoint: Any) -> Any:
        children.append(_LosingChild(on_checkpoint))
        return children[-1]

    worker = ShardWorker(
        lease, _DownLeases(), stream, settings, new_child, stop, monotonic=lambda: next(ticks)
    )
    threading.Timer(1.0, stop.set).start()
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert worker.error is None, worker.error
    assert children[-1].told_lost
    assert worker.left_at_stop == ("TRIM_HORIZON", "1")
    runtime = object.__new__(LocalRuntime)
    runtime.stopping, runtime.failure, runtime._stop_asked_at = stop, None, None
    runtime.workers = {"shard-1": worker}
    runtime._shut_down()
    assert runtime.failure is None


def test_a_stop_during_a_restarts_pause_releases_the_lease(leases: LeaseTable) -> None:
    """The processor failed and the stop came while the worker waited to start the next:
    the lease, whose checkpoint is the one stored, is given up at once, as at any clean
    stop, instead of being left to expire after the failover time."""
    stop = threading.Event()

    class FailsThenStops(UnsettledChild):
        def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
            if records:
                stop.set()  # the stop arrives as the processor dies
                raise ChildFailed("stand-in child exited with status 1")

    script = [{"Records": [record(1)], "NextShardIterator": "x"}]
    worker, _, children = run_worker(leases, script, child_type=FailsThenStops, stop=stop)
    assert worker.error is None
    assert len(children) == 1  # no processor after the pause: the stop came first
    assert worker.left_at_stop == ("TRIM_HORIZON", "1")
    assert leases.get("shard-1").owner is None  # type: ignore[union-attr]
