"""Progress of a long operator command: a bar on a terminal, periodic log lines elsewhere.

A command run from a shell wants a live bar; one run by a scheduler or in a container
wants log lines it can ship and grep, at a steady interval rather than one per page.
Both go to stderr, so stdout stays for the command's result.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

log = structlog.get_logger(__name__)


class ProgressReport:
    """Counts items done towards an estimated total; ``details`` adds fields to each report.

    The total is DynamoDB's item-count estimate, which may be hours old: the bar can end
    short of it or pass it, and the log lines say "about".

    ``done``: items done by earlier runs (a resumed command). A log line's ``items``
    counts them too, towards ``of_about``; ``items_this_run``, ``elapsed_s`` and
    ``items_per_s`` are this run's alone, so the rate is the one this run achieves.
    """

    def __init__(
        self,
        title: str,
        total: int | None,
        *,
        details: Callable[[], dict[str, int]] | None = None,
        interval_s: float = 10.0,
        stream: TextIO | None = None,
        done: int = 0,
    ) -> None:
        self.title = title
        self.total = total or None
        self.done = done
        self._before = done
        self._details = details or dict
        self._interval_s = interval_s
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressReport:
        if self._stream.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[details]}"),
                console=Console(file=self._stream),
                transient=False,
            )
            self._task = self._bar.add_task(
                self.title, total=self.total, completed=self.done, details=""
            )
            self._bar.start()
        else:
            self._thread = threading.Thread(target=self._log_loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def advance(self, items: int) -> None:
        with self._lock:
            self.done += items
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done, details=self._detail_text())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._log_line()

    def _detail_text(self) -> str:
        return " ".join(f"{name} {value}" for name, value in self._details().items())

    def _log_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._log_line()

    def _log_line(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        this_run = self.done - self._before
        fields: dict[str, Any] = {"items": self.done}
        if self.total:
            fields["of_about"] = self.total
        if self._before:
            fields["items_this_run"] = this_run
        fields["elapsed_s"] = round(elapsed, 1)
        fields["items_per_s"] = round(this_run / elapsed, 1)
        fields.update(self._details())
        log.info(self.title, **fields)
