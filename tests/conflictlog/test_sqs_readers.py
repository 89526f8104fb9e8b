"""An SQS conflict log read by several readers at once (at a moto server over HTTP).

SQS has no way to look at a message without receiving it, and a received message is
hidden from every other reader until it is made visible again. Two ``replicator
conflicts`` run at the same moment (two listings, a listing and a restore, two restores
of one entry) must each still see every entry; a reader that cannot (entries held past
its wait) says so instead of listing a shorter log as the whole of it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from click.testing import CliRunner, Result

from replicator.cli import cli
from replicator.config.loader import load_job
from replicator.conflictlog import sqs as sqs_log
from replicator.conflictlog import targets
from replicator.conflictlog.base import Selection
from replicator.conflictlog.entry import ConflictEntry
from replicator.conflictlog.reader import read_entries
from replicator.conflictlog.sqs import SqsConflictLog
from replicator.exceptions import LogReadingStopped
from tests.conflictlog.test_conflict_log import conflict
from tests.conflictlog.test_shared_log import SharedJob, record, shared_log, two_jobs
from tests.support.aws import client

ENTRIES = 25
# Far longer than either command takes, even on a loaded machine: a bound, not a wait.
COMMAND_TIMEOUT_S = 240
LISTING = ("--format", "json", "--limit", "0")  # every entry, as one JSON document


@pytest.fixture
def logged(moto_endpoint: str, unique: Any, tmp_path: Path) -> tuple[SharedJob, list[str]]:
    """A job whose conflict log is an SQS queue holding ENTRIES of its lost conflicts (the
    first six restorable: its destination holds their winners), and their ids."""
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    conflict_log = shared_log("sqs", moto_endpoint, unique, tmp_path)
    job = two_jobs(ddb, moto_endpoint, unique, tmp_path, conflict_log)[0]
    entries = [record(job, conflict(seq, pk=f"order-{seq}")) for seq in range(1, ENTRIES + 1)]
    return job, [e.id for e in entries]


def queue_of(job: SharedJob) -> tuple[Any, str]:
    section = load_job(job.config).job.conflict_log
    assert section.queue_url is not None and section.endpoint_url is not None
    return client("sqs", "us-east-1", section.endpoint_url), section.queue_url


def hold(job: SharedJob, count: int, seconds: int) -> dict[str, str]:
    """Receive ``count`` entries as another reader of the queue would, hiding them for
    ``seconds``: their ids, and the receipt handles that let them go."""
    queue, url = queue_of(job)
    held: dict[str, str] = {}
    while len(held) < count:
        response = queue.receive_message(
            QueueUrl=url, MaxNumberOfMessages=min(10, count - len(held)), VisibilityTimeout=seconds
        )
        for message in response.get("Messages", []):
            held[sqs_log.decode(message["Body"]).id] = message["ReceiptHandle"]
    return held


def let_go(job: SharedJob, held: dict[str, str]) -> None:
    """Make the entries ``hold`` received visible again, as their reader does."""
    queue, url = queue_of(job)
    for handle in held.values():
        queue.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)


def at_once(job: SharedJob, *commands: tuple[str, ...]) -> list[CompletedProcess[str]]:
    """``replicator conflicts -c JOB ARGS`` for each ARGS of ``commands``, each in a process
    of its own, all started before any is waited for; their outcomes, in that order."""
    with ExitStack() as stack:
        started = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-m", "replicator", "conflicts", "-c", str(job.config), *args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for args in commands
        ]
        try:
            outcomes = []
            for process in started:
                out, err = process.communicate(timeout=COMMAND_TIMEOUT_S)
                outcomes.append(CompletedProcess(process.args, process.returncode, out, err))
            return outcomes
        finally:
            for process in started:
                if process.poll() is None:
                    process.kill()


def conflict_ids(document: dict[str, Any]) -> list[str]:
    return sorted(e["id"] for e in document["entries"] if e["kind"] == "conflict")


def listed_whole(done: CompletedProcess[str] | Result, ids: list[str]) -> None:
    code = done.exit_code if isinstance(done, Result) else done.returncode
    assert code == 0, done.stderr
    document = json.loads(done.stdout)
    assert conflict_ids(document) == sorted(ids)
    assert document["summary"]["lost_conflicts"] == ENTRIES
    assert document["incomplete"] is None


def test_two_listings_at_once_both_list_every_entry(
    logged: tuple[SharedJob, list[str]],
) -> None:
    job, ids = logged
    for done in at_once(job, LISTING, LISTING):
        listed_whole(done, ids)


def test_a_listing_and_a_restore_at_once_both_complete(
    logged: tuple[SharedJob, list[str]],
) -> None:
    job, ids = logged
    listed, restored = at_once(job, LISTING, ("--restore", ids[0]))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored entry {ids[0]}: put of ")
    listed_whole(listed, ids)


def test_two_restores_of_one_entry_at_once_both_exit_0(
    logged: tuple[SharedJob, list[str]],
) -> None:
    job, ids = logged
    outcomes = at_once(job, ("--restore", ids[0]), ("--restore", ids[0]))
    for done in outcomes:
        assert done.returncode == 0, done.stdout + done.stderr
    said = sorted(done.stdout.split(":")[0] for done in outcomes)
    # One wrote and recorded it; the other found it written, or (later) already restored.
    assert said[-1] == f"restored entry {ids[0]}", said
    restores = [
        e for e in json.loads(invoke(job, *LISTING).stdout)["entries"] if e["kind"] == "restore"
    ]
    assert {e["restored_entry"] for e in restores} == {ids[0]}


def invoke(job: SharedJob, *args: str) -> Result:
    return CliRunner().invoke(cli, ["conflicts", "-c", str(job.config), *args])


def test_a_listing_waits_for_the_entries_another_reader_holds(
    logged: tuple[SharedJob, list[str]],
) -> None:
    """Entries another reader received a moment ago are listed once it lets them go (here:
    when their visibility timeout ends), not left out of a listing that says exit 0."""
    job, ids = logged
    hold(job, 10, seconds=3)
    listed_whole(invoke(job, *LISTING), ids)


def test_entries_held_past_the_wait_are_named_and_the_listing_exits_1(
    logged: tuple[SharedJob, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    job, ids = logged
    held = hold(job, 10, seconds=600)
    monkeypatch.setattr(sqs_log, "HELD_WAIT_S", 1.0)

    listing = invoke(job, *LISTING)
    assert listing.exit_code == 1, listing.output
    document = json.loads(listing.stdout)
    assert conflict_ids(document) == sorted(set(ids) - set(held))
    assert "10 entries" in document["incomplete"]
    assert "held by another reader" in document["incomplete"]
    text = invoke(job)
    assert text.exit_code == 1
    assert "15 lost conflicts" in text.stdout
    assert "10 entries" in text.stdout and "not read" in text.stdout
    assert "conflict-log entries held by another reader not read" in text.stderr

    one = next(iter(held))
    missed = invoke(job, "--restore", one)
    assert missed.exit_code == 1
    said = " ".join(missed.stderr.split())
    assert f"no conflict-log entry {one!r}" in said
    assert "10 entries" in said and "held by another reader" in said

    let_go(job, held)
    listed_whole(invoke(job, *LISTING), ids)


def test_a_reading_asked_to_stop_lets_go_of_what_it_holds_and_says_it_stopped(
    logged: tuple[SharedJob, list[str]],
) -> None:
    """Asked to stop (a stop signal, below), a reading ends at its next entry or receive
    and lets go of the messages it holds: left hidden, they would be missing for two
    minutes from the queue's consumers and from the next reading."""
    job, ids = logged
    held = hold(job, 10, seconds=600)
    queue, url = queue_of(job)
    target = SqsConflictLog(queue, url)
    read = 0

    def stopping_after_one() -> Iterator[ConflictEntry]:
        nonlocal read
        for entry in SqsConflictLog.read(target, Selection()):
            read += 1
            target.stopping.set()
            yield entry

    target.read = lambda selection: stopping_after_one()  # type: ignore[method-assign]
    with pytest.raises(LogReadingStopped):
        read_entries(target, Selection())
    assert read == 1
    assert in_flight(job) == len(held)  # the other reader's alone
    del target.read  # its own again
    target.stopping.clear()
    let_go(job, held)
    assert {e.id for e in read_entries(target, Selection())} == set(ids)


def in_flight(job: SharedJob) -> int:
    queue, url = queue_of(job)
    attributes = queue.get_queue_attributes(QueueUrl=url, AttributeNames=IN_FLIGHT)
    return int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.parametrize(
    ("stop_signal", "restoring"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["listing-SIGTERM", "listing-SIGINT", "restore-SIGTERM"],
)
def test_a_stop_signal_ends_the_command_with_the_queue_s_messages_visible_again(
    logged: tuple[SharedJob, list[str]], stop_signal: signal.Signals, restoring: bool
) -> None:
    """A listing (or a restore's reading) waiting for the entries another reader holds
    is stopped by SIGTERM or Ctrl-C: exit 128 + the signal, nothing written, and the 15
    messages it held visible again at once (they stayed hidden for the reading's
    two-minute visibility timeout, and the next listing found the log empty). The same
    SIGTERM sent twice at once, as ``timeout`` sends it (to the command, then to its
    process group), is one request, not a second one stopping at once."""
    job, ids = logged
    held = hold(job, 10, seconds=600)
    args = ("--restore", next(iter(held))) if restoring else LISTING
    with subprocess.Popen(
        [sys.executable, "-m", "replicator", "conflicts", "-c", str(job.config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        try:
            deadline = time.monotonic() + COMMAND_TIMEOUT_S
            while in_flight(job) < ENTRIES:  # it holds the 15 others, waiting for the 10
                assert command.poll() is None, command.communicate()
                assert time.monotonic() < deadline, "the command never held the log"
                time.sleep(0.1)
            command.send_signal(stop_signal)
            out, err = command.communicate(timeout=COMMAND_TIMEOUT_S)
        finally:
            if command.poll() is None:
                command.kill()
    assert command.returncode == 128 + stop_signal, err
    assert out == ""
    assert err.splitlines()[-2:] == [
        f"replicator: {stop_signal.name} received; stopping (again to stop at once, leaving an "
        "SQS log's messages this reading holds hidden for up to 120 s)",
        f"replicator: conflicts stopped by {stop_signal.name}; nothing was listed or written",
    ]
    assert in_flight(job) == len(held)
    let_go(job, held)
    listed_whole(invoke(job, *LISTING), ids)  # no restore was recorded


IN_FLIGHT = ["ApproximateNumberOfMessagesNotVisible"]


class CountedBetween:
    """An SQS client that, at the first count of the queue's messages in flight, does
    ``between`` just before it and ``after`` just after: entries another reader lets go
    ``between`` are no longer in flight, and not yet received by the listing (the exact
    moment, made certain, of two readings run at once, which a count may meet on the
    moto server and on SQS, whose counts are approximate and lag)."""

    def __init__(
        self, client: Any, between: Callable[[], object], after: Callable[[], object]
    ) -> None:
        self._client = client
        self._steps: list[tuple[Callable[[], object], Callable[[], object]]] = [(between, after)]

    def get_queue_attributes(self, **request: Any) -> Any:
        if request["AttributeNames"] != IN_FLIGHT:
            return self._client.get_queue_attributes(**request)
        between, after = self._steps.pop() if self._steps else (_nothing, _nothing)
        between()
        counted = self._client.get_queue_attributes(**request)
        after()
        return counted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _nothing() -> None:
    pass


def counted_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
    between: Callable[[], object],
    after: Callable[[], object] = _nothing,
) -> None:
    """The command's SQS log reads its counts with :class:`CountedBetween`."""

    class Log(SqsConflictLog):
        def __init__(self, client: Any, queue_url: str, where: str | None = None) -> None:
            super().__init__(CountedBetween(client, between, after), queue_url, where)

    monkeypatch.setattr(targets, "SqsConflictLog", Log)


def test_entries_let_go_while_the_queue_is_counted_are_still_listed(
    logged: tuple[SharedJob, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other reader lets its 10 entries go just as the queue is counted: it counts 15
    in flight, the listing's own. One such count is no proof that it has read
    everything; the entries let go are listed."""
    job, ids = logged
    held = hold(job, 10, seconds=600)
    counted_one_by_one(monkeypatch, lambda: let_go(job, held))
    listed_whole(invoke(job, *LISTING), ids)


def test_entries_let_go_while_counted_and_taken_again_make_the_listing_incomplete(
    logged: tuple[SharedJob, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the other reader takes them again as soon as the queue is counted
    (its next pass) and holds them past the wait: the listing shows 15 entries and says
    10 were not read, exit 1."""
    job, ids = logged
    held = hold(job, 10, seconds=600)
    again: dict[str, str] = {}
    counted_one_by_one(
        monkeypatch,
        between=lambda: let_go(job, held),
        after=lambda: again.update(hold(job, 10, seconds=600)),
    )
    monkeypatch.setattr(sqs_log, "HELD_WAIT_S", 1.0)
    listing = invoke(job, *LISTING)
    assert listing.exit_code == 1, listing.output
    document = json.loads(listing.stdout)
    assert set(again) == set(held)
    assert conflict_ids(document) == sorted(set(ids) - set(held))
    assert "10 entries" in document["incomplete"]

    let_go(job, again)
    listed_whole(invoke(job, *LISTING), ids)


def test_a_listing_ends_while_lost_conflicts_keep_arriving(
    logged: tuple[SharedJob, list[str]],
) -> None:
    """A running job sends entries faster than a receive a second: a reading that waited
    for every message it had not received never ended (and hid the queue's entries from
    its consumers meanwhile). It waits for those sent before it started, and ends."""
    job, ids = logged
    queue, url = queue_of(job)
    stop = threading.Event()

    def send() -> None:
        seq = 1000
        while not stop.wait(0.1):
            seq += 1
            body = conflict(seq, pk=f"late-{seq}").entry().to_json()
            queue.send_message(QueueUrl=url, MessageBody=body)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        (done,) = at_once(job, LISTING)  # bounded by COMMAND_TIMEOUT_S
    finally:
        stop.set()
        sender.join()
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(ids) <= set(conflict_ids(document))
    assert document["incomplete"] is None


def test_a_listing_reads_the_whole_log_with_the_hosts_clock_a_minute_behind_sqss(
    logged: tuple[SharedJob, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries sent after a reading started are not waited for, by SQS's clock (its
    answers' Date), which stamps SentTimestamp: by the host's, a minute behind, every
    entry would seem sent after the start, and the listing ended after two receives."""
    job, ids = logged
    real = sqs_log.time.time
    monkeypatch.setattr(sqs_log.time, "time", lambda: real() - 60)
    listed_whole(invoke(job, *LISTING), ids)


@pytest.mark.parametrize("zone", ["GMT", "-0000", "+0000"])
def test_a_readings_start_is_sqss_date_in_utc_whatever_the_hosts_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        start = sqs_log._Start()
        start.answered(
            {"ResponseMetadata": {"HTTPHeaders": {"date": f"Wed, 21 Oct 2015 07:28:00 {zone}"}}}
        )
        assert start.ms == 1_445_412_480_000 + sqs_log._LATE_MARGIN_MS
    finally:
        monkeypatch.undo()  # the host's zone back, for the tests after this one
        time.tzset()


class ReleasesRecorded:
    """An SQS client that records how many entries each release of the reader makes
    visible again, and at its ``at``-th count of the queue's messages in flight does
    ``then`` (just after the count)."""

    def __init__(self, client: Any, at: int, then: Callable[[], object]) -> None:
        self._client = client
        self._counts = 0
        self._at, self._then = at, then
        self.released: list[int] = []

    def change_message_visibility_batch(self, **request: Any) -> Any:
        self.released.append(len(request["Entries"]))
        return self._client.change_message_visibility_batch(**request)

    def get_queue_attributes(self, **request: Any) -> Any:
        counted = self._client.get_queue_attributes(**request)
        if request["AttributeNames"] == IN_FLIGHT:
            self._counts += 1
            if self._counts == self._at:
                self._then()
        return counted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def read_beside(
    logged: tuple[SharedJob, list[str]], others: int, let_go_at: int
) -> ReleasesRecorded:
    """Read the whole log (every id of ``logged``) while another reader holds ``others``
    of its entries, which it lets go at the reader's ``let_go_at``-th count; the
    reader's client, as recorded."""
    job, ids = logged
    held = hold(job, others, seconds=600)
    queue, url = queue_of(job)
    recorded = ReleasesRecorded(queue, at=let_go_at, then=lambda: let_go(job, held))
    reader = SqsConflictLog(recorded, url)  # type: ignore[arg-type]
    got: list[ConflictEntry] = read_entries(reader, Selection())
    assert reader.held_elsewhere == 0
    assert sorted(e.id for e in got) == sorted(ids)
    return recorded


def test_a_reader_holding_most_of_the_log_keeps_it_until_the_others_let_theirs_go(
    logged: tuple[SharedJob, list[str]],
) -> None:
    """Two readings started together split the queue; both letting go and receiving
    again split it again, for as long as they keep in step (two listings on a busy
    machine did so until both gave up, exit 1). The reader holding the larger part
    (15 of 25) keeps it, receives the other 10 once they are let go (here at its third
    count), and lets all 25 go together, once, at the end."""
    recorded = read_beside(logged, others=10, let_go_at=3)
    assert recorded.released == [10, 10, 5]  # one release of 25, in batches of 10


def test_a_reader_holding_the_smaller_part_lets_it_go_for_the_others(
    logged: tuple[SharedJob, list[str]],
) -> None:
    """The other side of the rule: 15 entries held elsewhere, the reader's 10 are let go
    at once (another reading may be waiting for them), and read again once the 15 are."""
    recorded = read_beside(logged, others=15, let_go_at=1)
    assert recorded.released[0] == 10


class CountedShort(ReleasesRecorded):
    """As :class:`ReleasesRecorded`, with SQS's count of messages in flight ``short_by``
    too low (it lags the receives, up to a minute on SQS), and ``on_release`` done after
    each release of the reader."""

    def __init__(self, client: Any, short_by: int, on_release: Callable[[], object]) -> None:
        super().__init__(client, at=0, then=_nothing)
        self._short_by, self._on_release = short_by, on_release

    def get_queue_attributes(self, **request: Any) -> Any:
        counted = super().get_queue_attributes(**request)
        if request["AttributeNames"] == IN_FLIGHT:
            attributes = counted["Attributes"]
            real = int(attributes["ApproximateNumberOfMessagesNotVisible"])
            attributes["ApproximateNumberOfMessagesNotVisible"] = str(max(0, real - self._short_by))
        return counted

    def change_message_visibility_batch(self, **request: Any) -> Any:
        released = super().change_message_visibility_batch(**request)
        self._on_release()
        return released


def test_two_readers_that_each_count_themselves_the_larger_do_not_keep_for_ever(
    logged: tuple[SharedJob, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count 6 short: the reader holding 15 counts 4 held elsewhere, the other (10)
    counts itself the larger too, and both kept their part until both gave up. A keeper
    whose receives bring nothing lets go after a few; here the other reader does the
    same as soon as it does, and the reading then gets all 25."""
    job, ids = logged
    monkeypatch.setattr(sqs_log, "HELD_WAIT_S", 20.0)  # far longer than three idle polls
    held = hold(job, 10, seconds=600)
    queue, url = queue_of(job)
    lets_go = CountedShort(queue, short_by=6, on_release=lambda: let_go(job, held))
    reader = SqsConflictLog(lets_go, url)  # type: ignore[arg-type]
    got: list[ConflictEntry] = read_entries(reader, Selection())
    assert sorted(e.id for e in got) == sorted(ids)
    assert reader.held_elsewhere == 0


class SlowReceives:
    """An SQS client whose receives take ``seconds`` longer (a far endpoint, a throttled
    one): with a short visibility timeout, a reading outlasts it."""

    def __init__(self, client: Any, seconds: float) -> None:
        self._client, self._seconds = client, seconds

    def receive_message(self, **request: Any) -> Any:
        time.sleep(self._seconds)  # the endpoint's latency, not a wait for an outcome
        return self._client.receive_message(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize("renewed", [True, False], ids=["renewed", "not-renewed"])
def test_a_reading_longer_than_its_visibility_timeout_lists_everything_or_says_not(
    logged: tuple[SharedJob, list[str]], monkeypatch: pytest.MonkeyPatch, renewed: bool
) -> None:
    """A log too long to receive within the 120 s the reading hides its messages for: the
    first ones came back to the queue, were received again, taken for the end of the
    log, and the listing showed part of it with exit 0. The reading renews the timeout
    as it goes; where that fails (here: never renewed), what came back is counted and
    the reading says it may be incomplete, never a shorter log as the whole."""
    job, ids = logged
    # Receives of 1.2 s each (one more second when the queue has nothing to give): the
    # reading takes about 8 s, its messages hidden for 5 s, renewed after every receive.
    monkeypatch.setattr(sqs_log, "_READ_VISIBILITY_S", 5)
    monkeypatch.setattr(sqs_log, "_RENEW_EVERY_S", 0.5 if renewed else 3600.0)
    queue, url = queue_of(job)
    reader = SqsConflictLog(SlowReceives(queue, 1.2), url)  # type: ignore[arg-type]
    got: list[ConflictEntry] = read_entries(reader, Selection())
    if renewed:
        assert sorted(e.id for e in got) == sorted(ids)
        assert reader.lapsed == 0 and reader.unread() is None
    else:
        assert reader.lapsed > 0
        unread = reader.unread()
        assert unread is not None and "came back to the queue" in unread
