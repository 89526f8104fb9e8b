"""The pipeline's timer: calls in time order on one thread, past a failing call; none
once cleared or closed."""

from __future__ import annotations

import threading
import time

from replicator.timer import Timer

WAIT_S = 30.0


def test_calls_are_made_in_time_order_and_a_failing_one_stops_nothing() -> None:
    timer = Timer("test-timer")
    made: list[str] = []
    done = threading.Event()

    def fails() -> None:
        made.append("fails")
        raise RuntimeError("a call that fails")

    try:
        now = time.monotonic()
        timer.call_at(now + 0.3, lambda: (made.append("last"), done.set()))
        timer.call_at(now + 0.2, fails)
        timer.call_at(now + 0.1, lambda: made.append("first"))  # earlier: wakes the thread
        assert done.wait(WAIT_S)
        assert made == ["first", "fails", "last"]
        assert time.monotonic() >= now + 0.3
    finally:
        timer.close()


def test_a_cleared_or_closed_timer_makes_no_call() -> None:
    timer = Timer("test-timer")
    made: list[str] = []
    done = threading.Event()
    timer.call_at(time.monotonic() + 0.2, lambda: made.append("cleared"))
    timer.clear()
    timer.call_at(time.monotonic() + 0.3, done.set)
    assert done.wait(WAIT_S)  # made after the cleared call was due
    assert made == []
    timer.call_at(time.monotonic() + 0.1, lambda: made.append("closed"))
    timer.close()
    timer.call_at(time.monotonic(), lambda: made.append("after"))
    thread = timer._thread
    assert thread is not None
    thread.join(WAIT_S)  # ended: no call can come any more
    assert not thread.is_alive()
    assert made == []
