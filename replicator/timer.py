"""One thread that calls functions at given times: waits that must not take a thread each.

Why: after a request that got no answer, its item's next change waits for up to
``writer.late_write_window_s`` (30 s by default) while the write itself is settled
(DestinationWriter.late_write_window_s). A writer thread waiting out each such hold
would let a destination's thread pool settle only its size in writes per window once
an outage ends, and a ``threading.Timer`` per hold starts a thread per hold: one heap
and one thread, started with the first call, serve every hold of a pipeline.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Timer:
    """Calls functions on one daemon thread at the times they are given (monotonic)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        # (when, order of the calls, function): the earliest first, ties in call order.
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_at(self, when: float, function: Callable[[], None]) -> None:
        """Call ``function()`` on the timer's thread at ``when`` (``time.monotonic()``),
        or as soon after as the calls due before it are made; never once closed. It
        handles its own errors: one that escapes is logged, and the timer goes on."""
        with self._cond:
            if self._closed:
                return
            order = next(self._order)
            heapq.heappush(self._heap, (when, order, function))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._heap[0][1] == order:  # earlier than what the thread waits for
                self._cond.notify()

    def clear(self) -> None:
        """Forget every call not yet made."""
        with self._cond:
            self._heap.clear()

    def close(self) -> None:
        """Forget every call not yet made and end the thread (a call being made ends)."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if not self._heap:
                        self._cond.wait()
                        continue
                    left = self._heap[0][0] - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                _, _, function = heapq.heappop(self._heap)
            try:
                function()
            except Exception:  # the other calls are still due
                log.exception("a timed call failed", timer=self.name)
