"""The local runtime's host lock: one run of a task per host and lease table.

Two local runtimes of one task on one host would share a worker id and each take the
other's leases for its own. The lock is an ``flock`` on a file in the temporary
directory, named by the task and a digest of where its lease table is.

The file's name is bounded whatever the task name (a task name may have 236 characters,
and a file name at most 255 bytes): a prefix of the task name for the operator to
recognise, and a digest of the whole key, task name included, so that two task names
alike in their first characters still have locks of their own.

The holder writes its pid into the file once it holds the lock, so that a refused start
can name the process to stop. It removes the file when it lets go, while it still holds
the lock, so that runs (every demo has a lease table of its own) leave no file behind.
That removal is safe because a starting run checks, once it holds the lock, that the
file it locked is still the one at the path; if the holder removed it meanwhile, it
locks the new one instead (two runs can never hold two files of one path).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from replicator.exceptions import LeaseHeld

# The task name's characters in the file name: enough to recognise it in a listing.
NAME_PREFIX = 64


def lock_path(directory: Path, task: str, place: str) -> Path:
    """The lock file of ``task`` whose lease table is at ``place``."""
    digest = hashlib.sha256(f"{task}\0{place}".encode()).hexdigest()[:16]
    return directory / f"replicator-{task[:NAME_PREFIX]}-{digest}.lock"


class HostLock:
    """Held from :meth:`hold` until :meth:`release` (or this process ends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self, refused: str) -> None:
        """Take the lock, or raise :class:`LeaseHeld` with ``refused`` and the holder's pid.

        Opened without truncating: a refused start must not erase the holder's pid."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                by = f"process {holder}" if holder else "another process"
                raise LeaseHeld(
                    f"{refused} is being run by {by} on this host (lock {self.path}): the "
                    "local runtime runs one worker per task name; stop that process first"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as it let go: lock the path's new file
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the file, then let go: a run waiting to start locks a new file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _read_pid(fd: int) -> int | None:
    """The holder's pid, if it wrote one (a version before this one left the file empty)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
