"""The conflict log in a JSON-lines file: one entry per line, appended under a lock, fsynced.

Several processor processes (one per shard) append to the same file; an exclusive
``flock`` around each append keeps lines whole. The recorder hands over every entry it
has waiting at once (``put_all``): they are appended in one write and one fsync (the
fsync is most of what an entry costs), so that a burst of lost conflicts is stored as
fast as it comes. Images are stored whole, whatever their size. The file only grows:
rotate or prune it with the tools you use for logs (entries are independent lines,
oldest first).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog

from replicator.appendfile import append_lines
from replicator.conflictlog.base import Selection, StoreOutcome
from replicator.conflictlog.entry import ConflictEntry
from replicator.exceptions import (
    ConfigError,
    ConflictLogUnavailable,
    EntryFormatError,
    EnvironmentProblem,
)

log = structlog.get_logger(__name__)


class FileConflictLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"
        self.stopping = threading.Event()

    def put(self, entry: ConflictEntry) -> None:
        self.put_all((entry,))

    def put_all(self, entries: Sequence[ConflictEntry]) -> list[StoreOutcome]:
        """All of ``entries`` appended together, or none counted as stored (a file
        refuses no entry for what it holds)."""
        try:
            append_lines(self.path, [entry.to_json() for entry in entries])
        except OSError as error:
            raise ConflictLogUnavailable(
                f"cannot append to conflict log {self.path}: {error.strerror or error}"
            ) from error
        return [None] * len(entries)

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        """The file's entries, skipping with a warning each line that is not one.

        Lines are read as bytes and decoded one by one, so that a line cut inside a
        multi-byte character is one unreadable line, not the end of the reading. A path
        that is a directory is the job file's mistake (ConfigError); a file that cannot
        be read is the host's (EnvironmentProblem).
        """
        try:
            lines = self.path.open("rb")
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise ConfigError(
                f"conflict log {self.path} is a directory: conflict_log.path must name a file"
            ) from None
        except OSError as error:
            raise EnvironmentProblem(
                f"cannot read conflict log {self.path}: {error.strerror or error}"
            ) from None
        with lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    entry = ConflictEntry.from_json(line)
                except EntryFormatError as error:
                    log.warning(
                        "unreadable conflict-log entry skipped",
                        file=str(self.path),
                        line=number,
                        error=str(error),
                    )
                    continue
                if selection.matches(entry):
                    yield entry
