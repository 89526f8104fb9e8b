"""Running an operator tool (backfill, verify, redrive) in the test's process."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class Tool(Protocol[T_co]):
    def run(self) -> T_co: ...

    def interrupt(self) -> None: ...


def run_within(tool: Tool[T], timeout_s: float) -> T:
    """``tool.run()``, its result or its error, failing with TimeoutError when it takes
    longer than ``timeout_s``; interrupted twice on the way out, so that a run that would
    not end by itself does not outlive the test."""
    with ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(tool.run).result(timeout=timeout_s)
        finally:
            tool.interrupt()
            tool.interrupt()


def interrupted_once(tool: Tool[T], started: Callable[[], bool], timeout_s: float) -> T:
    """``tool.run()`` interrupted once (one Ctrl-C) as soon as ``started()`` holds (waited
    for up to 60 s): its result or its error, failing with TimeoutError when it has not
    ended ``timeout_s`` after that interrupt. Interrupted a second time on the way out,
    so that a run that would not end by itself does not outlive the test."""
    from tests.support.e2e import wait_until

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(tool.run)
        try:
            try:
                wait_until(started, 60, "the run to reach the point of the interrupt")
                assert running.running(), "the run ended before the interrupt"
            finally:
                tool.interrupt()
            return running.result(timeout=timeout_s)
        finally:
            tool.interrupt()
