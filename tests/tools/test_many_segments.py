"""Many scan segments: the tools take them one at a time, so that a stop or a failure
starts no further segment, however many were asked for; and far more segments than
items is warned of."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from structlog.testing import capture_logs

from replicator.tools.futures import each_in_threads
from replicator.tools.scan import warn_of_empty_segments


def test_a_stop_starts_no_further_task_of_a_million() -> None:
    stop = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def work(task: int) -> None:
        with lock:
            started.append(task)
            if len(started) == 5:
                stop.set()

    failures = each_in_threads(range(1_000_000), work, 4, name="t", stop=stop)

    assert failures == []
    assert 5 <= len(started) <= 5 + 4, len(started)  # at most one more per thread


def test_the_first_failure_starts_no_further_task_and_is_told_once() -> None:
    stop = threading.Event()
    started: list[int] = []
    told: list[bool] = []

    def work(task: int) -> None:
        started.append(task)
        if task == 2:
            raise ValueError("segment 2 refused")

    failures = each_in_threads(
        range(1_000_000), work, 1, name="t", stop=stop, on_error=lambda: told.append(True)
    )

    assert [str(failure) for failure in failures] == ["segment 2 refused"]
    assert started == [0, 1, 2]
    assert told == [True]


def test_an_error_in_the_calling_thread_starts_no_further_task() -> None:
    """A KeyboardInterrupt in a script's call (no handler of ours installed): the
    threads went on through every task before it surfaced. Raised here by a timer
    signal, which the calling thread takes while it waits."""
    started: list[int] = []
    lock = threading.Lock()

    def work(task: int) -> None:
        with lock:
            started.append(task)
        time.sleep(0.01)

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            each_in_threads(range(100_000), work, 2, name="t", stop=threading.Event())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(started) < 100_000, len(started)


@pytest.mark.parametrize("threads", [1, 3, 16])
def test_every_task_runs_once_when_nothing_stops_them(threads: int) -> None:
    done: list[int] = []
    lock = threading.Lock()

    def work(task: int) -> None:
        with lock:
            done.append(task)

    assert each_in_threads(range(1000), work, threads, name="t", stop=threading.Event()) == []
    assert sorted(done) == list(range(1000))


def test_far_more_segments_than_items_is_warned_of() -> None:
    with capture_logs() as logs:
        warn_of_empty_segments("verify", 1_000_000, 324)
        warn_of_empty_segments("verify", 1000, 10)  # seconds of empty Scans: not worth a word
        warn_of_empty_segments("backfill", 5000, 1_000_000)
    (warning,) = logs
    assert warning["log_level"] == "warning"
    assert warning["event"].startswith("verify: 1000000 scan segments for about 324 items")
    assert "each segment is at least one Scan request, empty or not" in warning["event"]
