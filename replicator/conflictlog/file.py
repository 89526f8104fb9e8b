"""The conflict log in a JSON-lines file: one entry per line, appended under a lock, fsynced.

Several processor processes (one per shard) append to the same file; an exclusive
``flock`` around each append keeps lines whole. Images are stored whole, whatever
their size. The file only grows: rotate or prune it with the tools you use for logs
(entries are independent lines, oldest first).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import structlog

from replicator.appendfile import append_line
from replicator.conflictlog.base import Selection
from replicator.conflictlog.entry import ConflictEntry
from replicator.exceptions import ConflictLogUnavailable

log = structlog.get_logger(__name__)


class FileConflictLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"

    def put(self, entry: ConflictEntry) -> None:
        try:
            append_line(self.path, entry.to_json())
        except OSError as error:
            raise ConflictLogUnavailable(
                f"cannot append to conflict log {self.path}: {error.strerror or error}"
            ) from error

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    entry = ConflictEntry.from_json(line)
                except (ValueError, TypeError) as error:
                    log.warning(
                        "unreadable conflict-log line skipped",
                        file=str(self.path),
                        line=number,
                        error=str(error),
                    )
                    continue
                if selection.matches(entry):
                    yield entry
