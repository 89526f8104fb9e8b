"""Dead letters in a JSON-lines file: one letter per line, appended under a lock, fsynced.

Several processor processes (one per shard) append to the same file; an exclusive
``flock`` around each append keeps lines whole. A replay first renames the file aside
under that lock (new failures start a fresh file meanwhile), replays the letters, and
appends the ones that fail again to the live file. A replay that is interrupted leaves
its aside file, which the next replay picks up first. Each line of an aside file that
is done with (replayed, put back, or kept as it is) is noted in its ``.settled`` file,
so that a replay resumed after an interruption does not take it up a second time.

A line that is not a letter (torn by a crash, edited by hand, written by something
else) is moved to the live file byte for byte, with a warning naming the file and line
it was read from: it stays until a person looks at it, and a replay goes on past it.
Lines are read as bytes, so that one that is not UTF-8 is one unreadable line too.

A process that opened the live file just before a replay renamed it holds the renamed
file: once it has the lock it checks that its file is still the one at the path, and
opens the path again if not, so that no letter is appended to a file already replayed.
Creating and renaming a file are made durable with an fsync of the directory.

One letter per failure: a restart reads the records after its checkpoint again, and a
change dead-lettered before the stop fails again. A put whose letter has the identity
of one the live file holds (:attr:`DeadLetter.identity`) appends nothing. The check is
made under the append's lock, against the file at the path then, so a replay that has
renamed the file aside since (taking its letters) is never missed. Each process keeps an
index of the live file's letters (where each line starts, by identity) and reads only
what was appended since it last looked; a file that is another one (renamed aside and
created again) or shorter than what was read is read again from the start. A letter is
taken as stored only once the line the index names is read back and found to be that
letter, so an index the file no longer matches (a hand edit) costs a read, not a letter.

One replay at a time: a replay holds an exclusive ``flock`` on ``<file>.redrive.lock``
from before it renames the live file until it is done, and a second one is refused at
once (EnvironmentProblem, naming the process that holds it) instead of replaying the
aside file the first is still working through, which would write its letters twice
and, once the first removed it, fail on a file that is gone. The kernel lets go of the
lock when its process ends, however it ends, so a killed replay's aside files are
taken up by the next one. The lock file is removed, under the lock, when a replay ends;
a replay that finds it has locked a file no longer at the path locks the path again.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from replicator.appendfile import append_line, fsync_directory, locked_file, same_file
from replicator.deadletter.base import Claimed, Unreadable
from replicator.deadletter.entry import DeadLetter, cut_short_note
from replicator.exceptions import (
    DeadLetterFormatError,
    DeadLetterUnavailable,
    EnvironmentProblem,
)

log = structlog.get_logger(__name__)
_ASIDE = ".redrive-"
SETTLED = ".settled"  # beside an aside file: its lines already done
_LOCK = ".redrive.lock"
_CHUNK = 1 << 20  # bytes read at a time when the index reads the file


@dataclass
class _Stored:
    """The letters of one live file (``file``: its device and inode) read so far: where
    each line starts, by identity, for the lines up to ``end`` (a line's end)."""

    file: tuple[int, int]
    end: int = 0
    lines: dict[bytes, int] = field(default_factory=dict)

    def read_on(self, descriptor: int, size: int) -> None:
        """Index the whole lines from ``end`` up to ``size``; what is not a letter (a
        torn or hand-edited line) is passed over: nothing is ever taken as stored for it."""
        pending = b""
        position = self.end
        while position < size:
            chunk = os.pread(descriptor, min(_CHUNK, size - position), position)
            if not chunk:
                break
            position += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                identity = _identity_of(line)
                if identity is not None:
                    self.lines.setdefault(identity, self.end)
                self.end += len(line) + 1


class FileDeadLetters:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"
        self._stored: _Stored | None = None
        # One put at a time in this process: the index is read under the file's lock,
        # and a put's own line is noted before another put of this process looks.
        self._putting = threading.Lock()

    def put(self, letter: DeadLetter) -> bool:
        """Append ``letter``, unless the live file holds a letter of its identity
        (module docstring): False then, and the file is left as it is."""
        identity = letter.identity
        data = letter.to_json().encode("utf-8")
        with self._putting:

            def held(descriptor: int, size: int) -> bool:
                return self._holds(descriptor, size, identity)

            start = self._append(data, unless=held)
            if start is None:
                return False
            stored = self._stored
            if stored is not None:  # read up to ``size`` by ``held``, this very file
                stored.lines.setdefault(identity, start)
                stored.end = start + len(data) + 1
        return True

    def _holds(self, descriptor: int, size: int, identity: bytes) -> bool:
        """Whether the file (locked: nobody appends or renames it meanwhile) holds a
        letter of ``identity``: found in the index, and read back where it says."""
        status = os.fstat(descriptor)
        file = (status.st_dev, status.st_ino)
        stored = self._stored
        fresh = stored is None or stored.file != file or size < stored.end
        while True:
            if fresh or stored is None:
                stored = self._stored = _Stored(file)
            stored.read_on(descriptor, size)
            start = stored.lines.get(identity)
            if start is None:
                return False
            line = _line_at(descriptor, start, size)
            if line is not None and _identity_of(line) == identity:
                return True
            if fresh:
                return False
            fresh = True  # the file changed under the index: read it again whole

    def cancel(self) -> None:
        """Nothing to give up: an append is tried once, and fails at once when it cannot
        be made (DeadLetterUnavailable)."""

    def _append(
        self, line: str | bytes, unless: Callable[[int, int], bool] | None = None
    ) -> int | None:
        try:
            return append_line(self.path, line, unless=unless)
        except OSError as error:
            raise _unavailable("append to", self.path, error) from error

    def count(self) -> int:
        """Lines stored now (live file, and what an interrupted replay has not settled),
        unreadable ones included."""
        return sum(self.holding().values())

    def holding(self) -> dict[Path, int]:
        """The files that hold lines now, with how many: the aside files of an
        interrupted replay (their lines not settled), oldest first, then the live file."""
        held: dict[Path, int] = {}
        for aside_file in self._aside_files():
            settled = _settled(aside_file)
            with aside_file.open("rb") as lines:
                count = sum(
                    1
                    for number, line in enumerate(lines, start=1)
                    if line.strip() and number not in settled
                )
            if count:
                held[aside_file] = count
        if self.path.is_file():  # not a directory put in its place
            with self.path.open("rb") as lines:
                count = sum(1 for line in lines if line.strip())
            if count:
                held[self.path] = count
        return held

    def holds_files(self) -> bool:
        """Whether there is anything to claim: the live file, or an aside file of an
        interrupted replay. Looks only: nothing is created (a directory that is not there
        holds nothing)."""
        # exists, not lexists: a symbolic link whose target is not there holds nothing.
        return os.path.exists(self.path) or bool(self._aside_files())

    def letters(self) -> list[DeadLetter]:
        """Every letter in the live file, for inspection; does not remove them, and
        leaves out (with a warning) the lines that are not letters."""
        if not self.path.exists():
            return []
        found = []
        with self.path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    found.append(DeadLetter.from_json(line))
                except DeadLetterFormatError as error:
                    log.warning(
                        "unreadable dead letter", file=str(self.path), line=number, error=str(error)
                    )
        return found

    def _real_path(self) -> Path:
        """The file the path leads to, through symbolic links: what a replay renames aside
        (and keeps its aside files and lock beside). Renaming the link itself left the
        letters in its target, replayed again by every later redrive, and turned the
        configured path into a regular file new letters went to."""
        return Path(os.path.realpath(self.path))

    def settled_markers(self) -> list[Path]:
        """The ``.settled`` files beside this file's aside files, which name the lines
        already done: an aside file moved or copied without its own is replayed whole."""
        markers = (aside.with_name(aside.name + SETTLED) for aside in self._aside_files())
        return [marker for marker in markers if marker.exists()]

    def _aside_files(self) -> list[Path]:
        """This file's aside files (``<name>.redrive-<time in ns>``), oldest first. The
        name is escaped: read as a pattern, ``dead[1].jsonl`` found none of its own (its
        letters were set aside and never read again) and ``a*.jsonl`` took the aside
        files of every file its pattern matched, another job's among them."""
        real = self._real_path()
        own = re.compile(re.escape(real.name + _ASIDE) + r"[0-9]+")
        return sorted(
            p
            for p in real.parent.glob(glob.escape(real.name) + _ASIDE + "*")
            if own.fullmatch(p.name)
        )

    def claim_all(self) -> Generator[Claimed | Unreadable, None, None]:
        """The letters of the aside files, oldest first (module docstring). A file that
        cannot be renamed, read or removed (the path is a directory, permissions) raises
        DeadLetterUnavailable, like one that cannot be appended to."""
        try:
            with self._replaying():
                yield from self._claim_all()
        except OSError as error:
            raise _unavailable("read", Path(error.filename or self.path), error) from error

    @contextmanager
    def _replaying(self) -> Iterator[None]:
        """Hold this file's replay lock (module docstring), or refuse: another replay
        has it."""
        real = self._real_path()
        lock = real.with_name(real.name + _LOCK)
        while True:
            try:
                file = lock.open("a+", encoding="utf-8")
            except OSError as error:  # the file's name, not "cannot read" it
                raise _lock_unavailable("open", lock, real, error) from error
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                holder = lock.read_text(encoding="utf-8").strip() if lock.exists() else ""
                raise EnvironmentProblem(
                    f"another redrive of the dead letters in {self.description} is running"
                    + (f" (pid {holder})" if holder.isdigit() else "")
                    + f" (it holds {lock}); wait for it to end, or stop it first"
                ) from None
            if same_file(file, lock):
                break
            file.close()  # removed by the replay that held it: lock the path again
        try:
            try:
                file.truncate(0)
                file.write(f"{os.getpid()}\n")
                file.flush()
            except OSError as error:
                raise _lock_unavailable("write", lock, real, error) from error
            yield
        finally:
            lock.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # a write that failed fails its close too
                file.close()

    def _claim_all(self) -> Generator[Claimed | Unreadable, None, None]:
        for left in self._aside_files():
            # Said, so that counts below the file's letters are not a mystery: an earlier
            # redrive stopped (killed, interrupted) part way through these.
            log.warning(
                "taking up the letters an earlier redrive set aside and did not finish",
                aside=str(left),
                lines_already_done=len(_settled(left)),
            )
        with locked_file(self.path, create=False) as file:
            if file is not None:
                real = self._real_path()
                aside = real.with_name(f"{real.name}{_ASIDE}{time.time_ns()}")
                real.rename(aside)
                fsync_directory(real.parent)
        for aside_file in self._aside_files():
            settled = _settled(aside_file)
            with aside_file.open("rb") as lines:
                for number, stored in enumerate(lines, start=1):
                    if not stored.strip() or number in settled:
                        continue
                    line = stored.removesuffix(b"\n")
                    try:
                        letter = DeadLetter.from_json(line)
                    except DeadLetterFormatError as error:
                        said = f"{error}{cut_short_note(line)}"
                        yield self._keep_unreadable(aside_file, number, line, said)
                        continue
                    yield Claimed(letter, receipt=f"{aside_file}:{number}", raw=line)
            aside_file.unlink()
            aside_file.with_name(aside_file.name + SETTLED).unlink(missing_ok=True)

    def _keep_unreadable(
        self, aside_file: Path, number: int, line: bytes, error: str
    ) -> Unreadable:
        """Move a line that is not a letter to the live file as it is, once. It is named
        where it now is, the live file's line, which a person repairs or removes: the
        aside file it was read from is gone once the replay ends."""
        start = self._append(line)
        kept_at = _line_number(self.path, start) if start is not None else None
        log.warning(
            "unreadable dead letter kept as it is",
            file=str(aside_file),
            line=number,
            error=error,
            kept_in=str(self.path),
            kept_at_line=kept_at,
        )
        _note_settled(aside_file, number)
        where = f"{self.path} line {kept_at}" if kept_at is not None else str(self.path)
        return Unreadable(where, error)

    def settle(self, claimed: Claimed, *, replayed: bool) -> None:
        """Put a failed letter back in the live file, then note its line as settled."""
        if not replayed:
            self.put(claimed.letter)
        aside, _, number = claimed.receipt.rpartition(":")
        _note_settled(Path(aside), int(number))

    def release(self, claimed: Claimed) -> None:
        """Put a letter back in the live file byte for byte, then note its line as settled."""
        self._append(claimed.raw)
        aside, _, number = claimed.receipt.rpartition(":")
        _note_settled(Path(aside), int(number))


def _identity_of(line: bytes) -> bytes | None:
    """The identity of the letter a stored line holds; None for a line that is not one."""
    if not line.strip():
        return None
    try:
        return DeadLetter.from_json(line).identity
    except DeadLetterFormatError:
        return None


def _line_at(descriptor: int, start: int, size: int) -> bytes | None:
    """The whole line that starts at ``start`` (after a newline, or the file's first),
    without its newline; None if no line starts there or it is not ended."""
    if start > 0 and os.pread(descriptor, 1, start - 1) != b"\n":
        return None
    line = b""
    position = start
    while position < size:
        chunk = os.pread(descriptor, min(_CHUNK, size - position), position)
        if not chunk:
            return None
        end = chunk.find(b"\n")
        if end >= 0:
            return line + chunk[:end]
        line += chunk
        position += len(chunk)
    return None


def _line_number(path: Path, start: int) -> int | None:
    """The number of the line that starts at byte ``start`` of ``path`` (None when the
    file cannot be read: the line is kept all the same)."""
    try:
        with path.open("rb") as file:
            newlines = 0
            left = start
            while left > 0:
                chunk = file.read(min(_CHUNK, left))
                if not chunk:
                    break
                newlines += chunk.count(b"\n")
                left -= len(chunk)
    except OSError:
        return None
    return newlines + 1


def _note_settled(aside_file: Path, number: int) -> None:
    """Note line ``number`` of an aside file as done with (it survives an interruption).

    Appended like a letter (locked, fsynced), so that a number cut short by a crash is
    followed by a new line rather than joined to the next number."""
    marker = aside_file.with_name(aside_file.name + SETTLED)
    try:
        append_line(marker, str(number))
    except OSError as error:
        raise _unavailable("append to", marker, error) from error


def _lock_unavailable(what: str, lock: Path, real: Path, error: OSError) -> DeadLetterUnavailable:
    return DeadLetterUnavailable(
        f"cannot {what} {lock}, the lock a redrive holds beside dead-letter file {real}: "
        f"{error.strerror or error}"
    )


def _unavailable(what: str, path: Path, error: OSError) -> DeadLetterUnavailable:
    """One line naming the file and the system's reason (``Is a directory``)."""
    return DeadLetterUnavailable(
        f"cannot {what} dead-letter file {path}: {error.strerror or error}"
    )


def _settled(aside_file: Path) -> set[int]:
    """Line numbers of an aside file already replayed or put back (survives interruption)."""
    marker = aside_file.with_name(aside_file.name + SETTLED)
    if not marker.exists():
        return set()
    return {int(n) for n in marker.read_bytes().split() if n.isdigit()}
