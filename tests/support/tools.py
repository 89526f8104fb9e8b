"""Running an operator tool (backfill, verify, redrive) in the test's process."""

from __future__ import annotations

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
