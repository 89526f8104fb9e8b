"""Dead letters in a JSON-lines file: one letter per line, appended under a lock, fsynced.

Several processor processes (one per shard) append to the same file; an exclusive
``flock`` around each append keeps lines whole. A replay first renames the file aside
under that lock (new failures start a fresh file meanwhile), replays the letters, and
appends the ones that fail again to the live file. A replay that is interrupted leaves
its aside file, which the next replay picks up first.

A process that opened the live file just before a replay renamed it holds the renamed
file: once it has the lock it checks that its file is still the one at the path, and
opens the path again if not, so that no letter is appended to a file already replayed.
Creating and renaming a file are made durable with an fsync of the directory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from replicator.appendfile import append_line, fsync_directory, locked_file
from replicator.deadletter.base import Claimed
from replicator.deadletter.entry import DeadLetter
from replicator.exceptions import DeadLetterUnavailable

log = structlog.get_logger(__name__)
_ASIDE = ".redrive-"
_SETTLED = ".settled"


class FileDeadLetters:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"

    def put(self, letter: DeadLetter) -> None:
        self._append(letter.to_json())

    def _append(self, line: str) -> None:
        try:
            append_line(self.path, line)
        except OSError as error:
            raise DeadLetterUnavailable(
                f"cannot append to dead-letter file {self.path}: {error.strerror or error}"
            ) from error

    def count(self) -> int:
        """Letters stored now (live file, and what an interrupted replay has not settled)."""
        total = 0
        if self.path.exists():
            with self.path.open(encoding="utf-8") as lines:
                total += sum(1 for line in lines if line.strip())
        for aside_file in self._aside_files():
            settled = _settled(aside_file)
            with aside_file.open(encoding="utf-8") as lines:
                total += sum(
                    1
                    for number, line in enumerate(lines, start=1)
                    if line.strip() and number not in settled
                )
        return total

    def letters(self) -> list[DeadLetter]:
        """Every letter in the live file, for inspection; does not remove them."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as lines:
            return [DeadLetter.from_json(line) for line in lines if line.strip()]

    def _aside_files(self) -> list[Path]:
        return sorted(
            p
            for p in self.path.parent.glob(self.path.name + _ASIDE + "*")
            if not p.name.endswith(_SETTLED)
        )

    def claim_all(self) -> Iterator[Claimed]:
        with locked_file(self.path, create=False) as file:
            if file is not None:
                aside = self.path.with_name(f"{self.path.name}{_ASIDE}{time.time_ns()}")
                self.path.rename(aside)
                fsync_directory(self.path.parent)
        for aside_file in self._aside_files():
            settled = _settled(aside_file)
            with aside_file.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip() or number in settled:
                        continue
                    try:
                        letter = DeadLetter.from_json(line)
                    except (ValueError, TypeError) as error:
                        log.error(
                            "unreadable dead letter kept as it is",
                            file=str(aside_file),
                            line=number,
                            error=str(error),
                        )
                        self._append(line.rstrip("\n"))
                        continue
                    yield Claimed(letter, receipt=f"{aside_file}:{number}")
            aside_file.unlink()
            aside_file.with_name(aside_file.name + _SETTLED).unlink(missing_ok=True)

    def settle(self, claimed: Claimed, *, replayed: bool) -> None:
        """Put a failed letter back in the live file, then note its line as settled."""
        if not replayed:
            self.put(claimed.letter)
        aside, _, number = claimed.receipt.rpartition(":")
        marker = Path(aside + _SETTLED)
        with marker.open("a", encoding="utf-8") as file:
            created = os.fstat(file.fileno()).st_size == 0
            file.write(number + "\n")
            file.flush()
            os.fsync(file.fileno())
        if created:
            fsync_directory(marker.parent)


def _settled(aside_file: Path) -> set[int]:
    """Line numbers of an aside file already replayed or put back (survives interruption)."""
    marker = aside_file.with_name(aside_file.name + _SETTLED)
    if not marker.exists():
        return set()
    return {int(n) for n in marker.read_text(encoding="utf-8").split() if n.isdigit()}
