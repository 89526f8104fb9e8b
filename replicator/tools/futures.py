"""Waiting on a tool's worker threads without deafening the main thread to signals.

A signal that Linux delivers while the main thread blocks in one long wait reaches its
handler only once the main thread runs Python again; a write retried without end (a
throttled destination) would hold it there, and Ctrl-C would do nothing. The tools wait
in short steps instead."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

STEP_S = 0.5
# Seconds the work in hand has, after a first Ctrl-C or SIGTERM, to settle before its
# writes are cancelled as by a second: a write that keeps being retried (a throttling or
# failing destination) would otherwise hold the command for as long as that lasts.
INTERRUPT_GRACE_S = 10.0


class StopGrace:
    """The grace a first stop gives the work in hand: ``INTERRUPT_GRACE_S`` after
    :meth:`start` (the first call counts), ``give_up`` is called, as a second stop would;
    :meth:`cancel` once the run has ended calls it off. Started from a signal handler,
    which may run while the main thread is inside either method: hence a reentrant lock."""

    def __init__(self, give_up: Callable[[], None]) -> None:
        self._give_up = give_up
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(INTERRUPT_GRACE_S, self._give_up)
                self._timer.daemon = True
                self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


def wait_in_steps(futures: list[Future[T]], on_error: Callable[[], None] | None = None) -> None:
    """Until every future is done; ``on_error`` is called as soon as any of them fails
    (to stop the others). Failures are left in the futures for the caller."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=STEP_S)
        if on_error is not None and any(future.exception() is not None for future in done):
            on_error()


def each_in_threads(
    tasks: Iterable[T],
    work: Callable[[T], None],
    threads: int,
    *,
    name: str,
    stop: threading.Event,
    on_error: Callable[[], None] | None = None,
) -> list[BaseException]:
    """``work`` on each of ``tasks`` on up to ``threads`` threads, each thread taking the
    next task only once its last is done, and none once ``stop`` is set or a task has
    failed: a stop is then as prompt with a million scan segments as with four (a
    thread pool given every task at once would still start each one queued, and hold a
    future for each). The calling thread waits in steps, so signals reach it;
    ``on_error`` is called from it at the first failure. The failures, in the order they
    happened; tasks never started are the caller's to notice (``stop`` is set)."""
    source = iter(tasks)
    lock = threading.Lock()
    failures: list[BaseException] = []
    abandoned = threading.Event()  # the calling thread raised (a KeyboardInterrupt)

    def take_and_work() -> None:
        while not stop.is_set() and not abandoned.is_set():
            with lock:
                if failures:
                    return
                try:
                    task = next(source)
                except StopIteration:
                    return
            try:
                work(task)
            except BaseException as error:  # noqa: BLE001  # raised again by the caller
                with lock:
                    failures.append(error)
                return

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix=name) as pool:
        runners = [pool.submit(take_and_work) for _ in range(max(1, threads))]
        told = False
        pending = set(runners)
        try:
            while pending:
                _, pending = wait(pending, timeout=STEP_S)
                if failures and not told and on_error is not None:
                    told = True
                    on_error()
        except BaseException:
            abandoned.set()  # no further task; the pool's end waits for those in hand
            raise
    for runner in runners:
        runner.result()  # take_and_work raises nothing; a bug in it must not be lost
    return failures
