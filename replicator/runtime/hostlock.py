"""The runtimes' host lock: one run of a task per host and lease table (under
``runtime: kcl``, of a task's worker id).

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

A task's lock is also held *shared* by every KCL run of the task on the host (any
worker id; each holds its own worker lock as well, exclusively): a local runtime, which
runs one worker per task and holds the task's lock exclusively, and a KCL run on one
host would otherwise take each other's leases under one worker id (the host name), a
lease fight in which a write of the loser's could land after the winner's. Shared
holders write no pid (and clear a dead exclusive holder's), and the last of them to let
go removes the file.

A lock file this process cannot open for writing (another user's, in a temporary
directory with the sticky bit) may still be held: ``flock`` works on a read-only
descriptor, so a read-only open tells a run that holds it (refused as any holder is,
exit 5) from a file no process holds, which is not this user's to take (exit 3, as is
a lock path that is no file at all, or that cannot be opened even to read).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from replicator.config.endpoints import endpoint_identity
from replicator.exceptions import EnvironmentProblem, LeaseHeld, OperatorError

# The task name's characters in the file name: enough to recognise it in a listing.
NAME_PREFIX = 64


def lease_table_place(endpoint_url: str | None, region: str, role_arn: str | None) -> str:
    """Where a task's lease table is, for the lock's key: the server however the job
    file spells its endpoint (HTTP://, a trailing /, :80), the region and the role it is
    reached as. Runs of one task name against different endpoints (two demos, each on
    its own private endpoint), or in two regions of one local endpoint (an active-active
    pair on one emulator), have different lease tables and do not block each other."""
    server = endpoint_identity(endpoint_url, region) or "aws"
    return f"{server} {region} {role_arn or ''}"


# A job of another source given the task's name meets the same lock: its remedy is told
# too, or the operator stops the other job, or renames a worker, and only then learns it.
OTHER_JOB_HINT = "if it runs another job (another source), give this job a task_name of its own"
LOCAL_HINT = (
    f"the local runtime runs one worker per task name; stop that process first ({OTHER_JOB_HINT})"
)


def task_lock(
    task: str,
    endpoint_url: str | None,
    region: str,
    role_arn: str | None,
    *,
    shared: bool = False,
    hint: str = LOCAL_HINT,
) -> HostLock:
    """The lock of ``task`` whose lease table the source client reaches at
    ``endpoint_url`` (the client's own, AWS's included): exclusive for a local runtime,
    shared for the KCL runs of the task."""
    place = lease_table_place(endpoint_url, region, role_arn)
    return HostLock(lock_path(Path(tempfile.gettempdir()), task, place), hint, shared=shared)


def lock_path(directory: Path, task: str, place: str) -> Path:
    """The lock file of ``task`` whose lease table is at ``place``."""
    digest = hashlib.sha256(f"{task}\0{place}".encode()).hexdigest()[:16]
    return directory / f"replicator-{task[:NAME_PREFIX]}-{digest}.lock"


class HostLock:
    """Held from :meth:`hold` until :meth:`release` (or this process ends)."""

    def __init__(self, path: Path, hint: str = LOCAL_HINT, *, shared: bool = False) -> None:
        """``hint``: what a refused start is told to do, after naming the holder.
        ``shared``: held beside other shared holders, refused by an exclusive one."""
        self.path = path
        self.hint = hint
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self, refused: str) -> None:
        """Take the lock, or raise :class:`LeaseHeld` with ``refused`` and the holder's pid
        (:class:`EnvironmentProblem` when no run holds it but it cannot be taken).

        Opened without truncating: a refused start must not erase the holder's pid."""
        while True:
            fd = self._open(refused)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise self._held(refused, holder) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as it let go: lock the path's new file
        self._fd = fd
        if self.shared:
            # No exclusive holder can hold it now: a pid in the file is a dead one's (a
            # local runtime killed), which a refused local start would name.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as error:  # a full temporary directory
            self.release()
            raise self._unusable(refused, f"cannot write to it ({error.strerror})") from None

    def _open(self, refused: str) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except PermissionError as error:
                problem = self._not_ours(refused, error)
                if problem is None:
                    continue  # its holder removed it as it let go: open the path's new file
                raise problem from None
            except IsADirectoryError:
                raise self._unusable(refused, _not_a_file(stat.S_IFDIR)) from None
            except OSError as error:  # a read-only file system, a name too long
                raise self._unusable(refused, f"cannot open it ({error.strerror})") from None
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):  # a pipe or a device opens read-write
                os.close(fd)
                raise self._unusable(refused, _not_a_file(mode))
            return fd

    def _not_ours(self, refused: str, error: PermissionError) -> OperatorError | None:
        """Why a lock file this process may not write cannot be taken: a run holds it
        (as any holder refuses a start), or none does and it is someone else's. None
        when its holder removed it meanwhile."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError:
            return self._unusable(
                refused,
                f"this user cannot open it ({error.strerror}), even to read, so whether a "
                "run holds it cannot be told: if none runs, remove it",
            )
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return self._unusable(refused, _not_a_file(info.st_mode))
            holder = _read_pid(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # let go with the close
            except BlockingIOError:
                return self._held(refused, holder)
            if not _same_file(fd, self.path):
                return None
        finally:
            os.close(fd)
        left = f"left by process {holder}, " if holder else ""
        return self._unusable(
            refused,
            f"this user cannot open it to write ({error.strerror}) and no process holds it "
            f"({left}owner uid {info.st_uid}): remove it as its owner or root",
        )

    def _held(self, refused: str, holder: int | None) -> LeaseHeld:
        by = f"process {holder}" if holder else "another process"
        return LeaseHeld(
            f"{refused} is being run by {by} on this host (lock {self.path}): {self.hint}"
        )

    def _unusable(self, refused: str, why: str) -> EnvironmentProblem:
        return EnvironmentProblem(f"{refused}: cannot take the host lock {self.path}: {why}")

    def release(self) -> None:
        """Remove the file, then let go: a run waiting to start locks a new file. A shared
        holder removes it only when no other holds it (it can take it exclusively)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.shared:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another shared holder keeps it
            if _same_file(fd, self.path):
                self.path.unlink()
        finally:
            os.close(fd)


def _not_a_file(mode: int) -> str:
    """Something at the lock's path that no run leaves there (a directory, a pipe)."""
    what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
    return f"it is {what}, not the lock file a run leaves: remove it"


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
