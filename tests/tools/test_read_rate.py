"""The read rate's waits against a stop request, and what the operator commands say
on a first and a second Ctrl-C: at a low ``--read-rate`` a reader waits minutes for
its next page, and a stop must not wait with it; nor with a reader's wait (up to 20 s)
to retry a throttled read."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from botocore.exceptions import ClientError

from replicator.aws.backoff import Backoff
from replicator.config.loader import load_job
from replicator.exceptions import OperatorError
from replicator.tools import backfill, scan
from replicator.tools.backfill import Backfill, BackfillOptions
from replicator.tools.commands import interrupts
from replicator.tools.scan import ReadRate, ReadStopped
from replicator.tools.tables import TableRef
from replicator.tools.verify import Verify, VerifyOptions
from tests.support.e2e import PATIENCE, Job, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.tools.test_backfill import populate, state_rows


def test_a_stop_request_ends_a_read_rates_wait_and_no_wait_starts_after_it() -> None:
    stop = threading.Event()
    rate = ReadRate(0.01, stop, clock=lambda: 0.0)  # one item: 100 s of debt
    charging = threading.Thread(target=rate.charge, args=(1,), daemon=True)
    charging.start()
    stop.set()
    charging.join(timeout=10)
    assert not charging.is_alive(), "the wait outlasted the stop request"

    started = time.monotonic()
    rate.charge(5)  # 500 s more of debt, once stopped
    assert time.monotonic() - started < 10


def test_readers_sharing_a_rate_wait_as_long_as_the_rate_requires_and_no_longer() -> None:
    """Four readers that each read one item, then wait off the shared debt: the n-th
    waits n items' time (the pages before it were read already), and from then on one
    item is read every 100 s between them: 0.01 items per second."""
    now = [0.0]
    ends: list[float] = []

    class Clocked(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            ends.append(now[0] + timeout)
            return False

    rate = ReadRate(0.01, Clocked(), clock=lambda: now[0])
    for _ in range(4):
        rate.charge(1)
    assert ends == pytest.approx([100, 200, 300, 400])
    reads = []
    for _ in range(8):  # each reader reads again when its wait ends, earliest first
        now[0] = min(ends)
        ends.remove(now[0])
        reads.append(now[0])
        rate.charge(1)
    assert reads == pytest.approx([100 * n for n in range(1, 9)])


class StoppedWhileWaiting(threading.Event):
    """A stop request that ``on_wait`` (by default setting it) makes as soon as anything
    waits on it: a Ctrl-C that comes during the wait, whatever the wait's length, with no
    clock involved."""

    def __init__(self, on_wait: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self._on_wait = on_wait or self.set

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if not self.is_set():
            self._on_wait()
        return super().wait(timeout)


def _throttled() -> ClientError:
    error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
    return ClientError({"Error": error}, "Scan")


def test_a_stop_request_ends_the_wait_to_retry_a_throttled_read() -> None:
    calls: list[dict[str, Any]] = []

    def throttled(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise _throttled()

    stop = StoppedWhileWaiting()
    with pytest.raises(ReadStopped, match="scan t: stopped while waiting to read again"):
        scan.call(throttled, "scan t", stop=stop, TableName="t")
    assert calls == [{"TableName": "t"}], "no read is tried once the stop came"
    assert len(stop.waits) == 1
    assert stop.waits[0] is not None and 0 <= stop.waits[0] <= scan._BACKOFF.cap_s


def test_a_reads_first_failure_is_a_warning_and_its_retries_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An endpoint that stopped answering in the middle of a verify logged only at info
    for the minutes the reads were retried: at logging.level warning, nothing at all."""
    monkeypatch.setattr(scan, "_back_off", lambda delay, stop, what: None)
    answers: list[Any] = [_throttled(), _throttled(), {"Items": []}]

    def flaky(**kwargs: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with structlog.testing.capture_logs() as logged:
        assert scan.call(flaky, "scan t", TableName="t") == {"Items": []}
    said = [(line["log_level"], line["event"], line["attempt"]) for line in logged]
    assert said == [
        ("warning", "read failed, retrying", 1),
        ("info", "read failed, retrying", 2),
    ]
    assert logged[0]["gives_up_after"] == scan.MAX_ATTEMPTS


class ThrottledScans:
    """A source's client whose Scans of ``table`` are throttled after the first ``passed``."""

    def __init__(self, client: Any, table: str, passed: int) -> None:
        self._client = client
        self._table = table
        self._passed = passed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def scan(self, **kwargs: Any) -> Any:
        if kwargs["TableName"] == self._table:
            if self._passed <= 0:
                raise _throttled()
            self._passed -= 1
        return self._client.scan(**kwargs)


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries that end at once, so that a wait not on the stop request runs out of
    attempts (and fails the command) instead of waiting minutes."""
    monkeypatch.setattr(scan, "_BACKOFF", Backoff(base_s=0.001, cap_s=0.001))


@pytest.mark.usefixtures("quick_backoff")
def test_a_stop_during_a_throttled_scans_wait_stops_a_backfill_with_its_pages_saved(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(job, 30)
    real_source_ref = backfill.source_ref

    def throttled_source(*args: Any, **kwargs: Any) -> TableRef:
        ref = real_source_ref(*args, **kwargs)
        return replace(ref, client=ThrottledScans(ref.client, job.source_table, passed=1))

    monkeypatch.setattr(backfill, "source_ref", throttled_source)
    runner = Backfill(
        load_job(job.path),
        BackfillOptions(segments=1, page_size=10, skip_handoff_check=True),
    )
    stop = runner.stop = StoppedWhileWaiting(runner.interrupt)
    result = runner.run()
    assert len(stop.waits) == 1, "the wait to retry the second page's Scan was on the stop"
    assert result.stopped == "interrupted"
    assert not result.complete and result.exit_code == 1
    row = state_rows(job)[0]
    assert row["scanned"] == {"N": "10"} and not row["done"]["BOOL"]
    assert "last_key" in row


@pytest.mark.usefixtures("quick_backoff")
def test_a_stop_during_a_throttled_scans_wait_stops_a_verify_as_its_ctrl_c_does(
    job: Job,
) -> None:
    populate(job, 5)
    runner = Verify(load_job(job.path), VerifyOptions(segments=1))
    runner.source = replace(
        runner.source, client=ThrottledScans(runner.source.client, job.source_table, passed=0)
    )
    stop = runner.stop = StoppedWhileWaiting(runner.interrupt)
    with pytest.raises(OperatorError) as raised:
        runner.run()
    assert str(raised.value) == "verify interrupted before it finished; no report"
    assert len(stop.waits) == 1


def test_a_second_signal_says_the_command_stops_at_once(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from replicator import entry

    monkeypatch.setattr(entry, "ends_at_once", lambda: True)  # as the command run by main()
    received: list[str] = []
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with interrupts(lambda: received.append("stop")):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        # Once the work is over, a signal is noted only: the result stands (a Ctrl-C just
        # after a backfill's summary ended it with 130 and no word).
        os.kill(os.getpid(), signal.SIGINT)
    finally:
        for number, action in before.items():
            signal.signal(number, action)
    assert received == ["stop", "stop"]
    assert capfd.readouterr().err.splitlines() == [
        "replicator: SIGINT received; stopping after the work in hand (again to stop at once)",
        "replicator: SIGTERM received again; stopping at once",
        "replicator: SIGINT received as the command ends; its result stands",
    ]


def test_the_same_signal_sent_twice_at_once_is_one_request(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``timeout`` sends its SIGTERM to the command and then to its process group: taken
    for a second request, it stopped a command at once, skipping what its stop does
    first (a backfill's progress saved, a conflict listing's SQS messages let go)."""
    from replicator import entry

    monkeypatch.setattr(entry, "ends_at_once", lambda: True)  # as the command run by main()
    received: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    try:
        with interrupts(lambda: received.append("stop")):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert received == ["stop"]
    assert capfd.readouterr().err.splitlines() == [
        "replicator: SIGTERM received; stopping after the work in hand (again to stop at once)",
    ]


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("rate"), tmp_path)


def test_ctrl_c_stops_a_backfill_at_a_low_read_rate_promptly(job: Job, tmp_path: Path) -> None:
    """At 0.01 items per second the four segments' first pages leave 100 to 400 s to
    wait off: the first Ctrl-C ends that wait, and the run stops with exit 1."""
    code, stdout, stderr = interrupted_at_a_low_rate(job, tmp_path, "backfill")
    assert code == 1, stdout + stderr
    assert "stopped before the end (interrupted)" in stdout


def test_ctrl_c_stops_a_verify_at_a_low_read_rate_promptly(job: Job, tmp_path: Path) -> None:
    code, stdout, stderr = interrupted_at_a_low_rate(job, tmp_path, "verify")
    assert code == 1, stdout + stderr
    assert stdout == ""
    assert "replicator: verify interrupted before it finished; no report" in stderr


def test_ctrl_c_pressed_over_and_over_still_ends_a_backfill_with_its_exit_code(
    job: Job, tmp_path: Path
) -> None:
    """Ctrl-C after Ctrl-C, until the process is gone: those that come once the summary
    is printed, or while the process ends, ended it with 130 and no word (the
    interpreter's shutdown puts the default SIGINT action back)."""
    code, stdout, stderr = interrupted_at_a_low_rate(job, tmp_path, "backfill", again=True)
    assert code == 1, stdout + stderr
    assert "stopped before the end (interrupted)" in stdout
    assert "Traceback" not in stderr


def interrupted_at_a_low_rate(
    job: Job, tmp_path: Path, command: str, *, again: bool = False
) -> tuple[int, str, str]:
    """``command`` at ``--read-rate 0.01``, sent SIGINT once each of its four segments has
    read a page of the source (through a proxy that counts the Scans): its exit status,
    output and error output, the documented first-signal line checked. ``again``: SIGINT
    sent on every 10 ms until the process is gone."""
    populate(job, 40)
    proxy = FaultProxy(job.endpoint).start()
    errors = tmp_path / "stderr"
    try:
        job.path.write_text(
            job.path.read_text().replace(
                f"table: {job.source_table}, endpoint_url: '{job.endpoint}'",
                f"table: {job.source_table}, endpoint_url: '{proxy.url}'",
            )
        )
        with errors.open("w") as stderr:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "replicator", command, "--config", str(job.path)),
                    *("--segments", "4", "--read-rate", "0.01"),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            wait_until(
                lambda: proxy.by_table("Scan")[job.source_table] >= 4,
                30 * PATIENCE,
                "every segment's first page",
                interval=0.1,
            )
            process.send_signal(signal.SIGINT)
            if again:
                wait_until(
                    lambda: "stopping after the work in hand" in errors.read_text(),
                    20 * PATIENCE,
                    "the first signal to be said",
                )
                while process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGINT)
                    time.sleep(0.01)
            # Before the read rate heeded a stop, this took up to 400 s.
            stdout, _ = process.communicate(timeout=20 * PATIENCE)
        except BaseException:
            process.kill()
            process.communicate()
            raise
    finally:
        proxy.stop()
    message = errors.read_text()
    assert "SIGINT received; stopping after the work in hand (again to stop at once)" in message
    return process.returncode, stdout, message
