"""Temporary directories a run makes for itself, and those of runs that died with theirs.

A run ended outright (SIGKILL, the out-of-memory killer) cannot remove what it made: on a
host, or in a container's file system that a restart policy keeps, those directories
piled up with every crash. Each one made here holds a lock on a file inside it, which
the kernel lets go of when the process ends, however it ends; a run making one removes
the others of its kind whose lock is free. A directory without that file (another
program's, or one made before this) is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

OWNER_FILE = ".owner"


@dataclass
class ScratchDirectory:
    path: Path
    lock: int
    """The descriptor holding the lock on the directory's owner file while it is in use."""

    def close(self) -> None:
        """Remove it (``contextlib.closing`` fits); once: a descriptor closed twice could
        be another directory's lock by then. Removed before the lock is let go of, so that
        no sweep takes it for an ended run's."""
        if self.lock < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self.lock)
        self.lock = -1


def make(prefix: str, directory: Path | None = None) -> ScratchDirectory:
    """A new directory named ``prefix...`` in ``directory`` (the system's temporary
    directory by default), held until :meth:`ScratchDirectory.close`; the directories of
    ended runs with that prefix there are removed first."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    lock = os.open(path / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    # Blocking: a sweep by another run may hold it for a moment, find it empty (a run
    # starting) and let go.
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.write(lock, f"{os.getpid()}\n".encode())
    _remove_ended(path.parent, prefix, path)
    return ScratchDirectory(path, lock)


def _remove_ended(parent: Path, prefix: str, own: Path) -> None:
    """Only this user's directories whose owner file is a regular file of theirs: one put
    there by someone else is no run's of ours, and a FIFO in its place (opened as it is,
    it waits for a writer) held every start of the host's runs."""
    user = os.geteuid()
    for other in parent.glob(glob.escape(prefix) + "*"):
        if other == own:
            continue
        try:
            found = os.lstat(other)
            lock = os.open(
                other / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
            )
        except OSError:
            continue  # not made here, or not ours to read
        try:
            owner = os.fstat(lock)
            if not (
                stat.S_ISDIR(found.st_mode)
                and found.st_uid == user
                and stat.S_ISREG(owner.st_mode)
                and owner.st_uid == user
            ):
                continue
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its run is alive
            if not os.read(lock, 32):
                continue  # its run is between making it and taking the lock
            shutil.rmtree(other, ignore_errors=True)
            if other.exists():  # a part this user may not remove: said once per start
                log.warning(
                    "could not remove the temporary directory of an ended run", path=str(other)
                )
            else:
                # Debug: a start refused for its job file says that in one line, alone.
                log.debug(
                    "removed the temporary directory of a run that ended without it",
                    path=str(other),
                )
        finally:
            os.close(lock)
