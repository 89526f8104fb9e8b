"""A launcher thread that asks one question of AWS at an interval while the daemon runs
(the stream still the table's, the lease table claimed), until it has its answer."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Every:
    """Calls ``turn`` every ``interval_s`` (a number of seconds, or a function giving the
    next wait) on a daemon thread, from one interval after :meth:`start`, until it
    returns True (its answer is in) or :meth:`stop`."""

    def __init__(
        self, name: str, interval_s: float | Callable[[], float], turn: Callable[[], bool]
    ) -> None:
        self.interval_s = interval_s
        self._turn = turn
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._ended.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._ended.wait(self._next_wait()):
            if self._turn():
                return

    def _next_wait(self) -> float:
        interval = self.interval_s
        return interval() if callable(interval) else interval
