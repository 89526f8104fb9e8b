"""Append-only JSON-lines files shared by several processes (dead letters, conflict log).

A file's directory is checked (and created when missing) at start. One that goes
missing while the job runs (removed by hand, say) is created again by the next append,
so that the line is kept, with a warning naming it: what the removed directory held is
gone, and whoever removed it should know that lines are being stored there again.

Each append takes an exclusive ``flock``, so lines from different shard processes never
interleave, and is fsynced before it counts as stored. A file can be renamed aside while
another process holds it open (a dead-letter replay does that): a writer that gets the
lock checks that its file is still the one at the path, and opens the path again if not.
Creating a file is made durable with an fsync of its directory.

A write that fails part way (a full disk) is cut back to where the file ended, so the
caller, which stores the line again, leaves no fragment of it. A line cut short by a
crash in the middle of a write leaves the file without its final newline: the next
append starts a new line first, so that only the torn line is unreadable, not the whole
line that follows it as well.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, cast

import structlog

log = structlog.get_logger(__name__)

# Said after why a file cannot be written: the usual cause in a container.
UNWRITABLE_HINT = (
    "; the Docker image runs as uid 10001: chown 10001 the host directory of a bind "
    "mount, or use a named volume (docs/kcl-and-docker.md)"
)
IMAGE_UID = 10001  # the image's user (docker/Dockerfile)


def unwritable_hint() -> str:
    """:data:`UNWRITABLE_HINT` where it can be the cause: as the image's user. Elsewhere
    (root on a host, an immutable directory; a container run with another ``--user``,
    whose uid it does not name) it sent the reader to chown for uid 10001."""
    return UNWRITABLE_HINT if os.geteuid() == IMAGE_UID else ""


# What a path is, by its mode, when it is not a regular file.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


# What :func:`not_a_regular_file` calls links that lead to each other.
LINK_LOOP = "a loop of symbolic links (ELOOP)"


def not_a_regular_file(path: str | Path) -> str | None:
    """What the existing ``path`` is when it is not a regular file (None: it is one, or
    there is nothing there), found without opening it: opening a FIFO waits for a
    reader, for ever, and a device (``/dev/null``) takes lines and keeps none. Symbolic
    links are followed; ones that lead to each other are refused here too, as nothing
    else would look past ``is_dir`` and ``exists`` (both say no to a loop) before the
    first line to store failed."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:  # links that lead to each other: never a file
            return LINK_LOOP
        return None  # nothing there (yet), or not to be looked at: opening it will tell
    if stat.S_ISREG(mode):
        return None
    return next((kind for is_kind, kind in _KINDS if is_kind(mode)), "a special file")


# Why no file can ever be at a path, whoever runs the job, by the error its lookup gives.
_UNUSABLE = {
    errno.ENAMETOOLONG: "its name is too long (ENAMETOOLONG: a name in a path is at most 255 "
    "bytes, a whole path at most 4096): give a shorter path",
}


def _said(error: OSError) -> str:
    """An OSError in words, its errno's name with them (ELOOP, ENAMETOOLONG), without the
    path, which the messages name themselves."""
    code = errno.errorcode.get(error.errno or 0)
    words = error.strerror or str(error)
    return f"{words} ({code})" if code else words


def unusable(path: str | Path) -> str | None:
    """Why no file can be at ``path`` at all, as its lookup says (None: that is for
    opening it to tell): a name too long, which a check that takes every error of
    ``stat`` as "nothing there" would wave through to the first line to store."""
    try:
        os.stat(path)
    except OSError as error:
        return _UNUSABLE.get(error.errno or 0)
    return None


def file_in_the_way(path: str | Path) -> Path | None:
    """The nearest existing part of ``path``'s directory when that is no directory (a
    file where a directory must be made), else None (also when the path cannot be
    looked at: a name too long, a directory that may not be searched, which the other
    checks and opening it name)."""
    directory = Path(path).parent
    try:
        existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
        return existing if existing is not None and not existing.is_dir() else None
    except OSError:
        return None


def why_not_appendable(path: Path) -> str | None:
    """:func:`_why_not_appendable`, with any error of the checks themselves (a name too
    long, a directory that may not be searched) an answer rather than a traceback."""
    problem = unusable(path)
    if problem is not None:
        return problem
    try:
        return _why_not_appendable(path)
    except OSError as error:
        return f"{_said(error)}{unwritable_hint()}"


def _why_not_appendable(path: Path) -> str | None:
    """Why this process could not append to ``path`` (None: it can), found out at start
    rather than at the first line to store: its directory is created when missing, and
    the file opened for appending (a file created and removed at once beside it, when
    there is none yet), so that nothing is left behind. A check by permission bits
    (``os.access``) would say yes to root over a read-only mount. An existing path that
    is not a regular file (a FIFO, ``/dev/null``) is never opened: it is refused. Every
    answer but those ends with :func:`unwritable_hint`, which a directory or a special
    file has no use for (no owner or mode makes it a file)."""
    if path.is_dir():
        return "it is a directory, not a file: name a file in it, or remove the directory"
    kind = not_a_regular_file(path)
    if kind is not None:
        return f"it is {kind}, not a regular file: name a file of its own"
    dangling = dangling_link(path)
    if dangling is not None:
        return dangling
    directory = path.parent
    blocking = file_in_the_way(path)
    if blocking is not None:
        return (
            f"{blocking} is a file, so the directory {directory} cannot be created"
            f"{unwritable_hint()}"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return (
            f"cannot create the directory {directory}: {error.strerror or error}{unwritable_hint()}"
        )
    if path.exists():
        try:
            # Not blocking: a FIFO put at the path since the check above gives ENXIO (no
            # reader) or is found by its mode below, instead of a wait for a reader.
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as error:
            # The file's own mode, owner or flags: its directory may be writable.
            linked = f" it links to, {os.path.realpath(path)}," if os.path.islink(path) else ""
            return (
                f"the file{linked} cannot be opened for appending: {error.strerror or error}"
                f"{unwritable_hint()}"
            )
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                return "it is not a regular file: name a file of its own"
        finally:
            os.close(descriptor)
        return None
    # A link to nothing yet: appending creates the file it names, in that directory.
    where = Path(os.path.realpath(path)).parent if path.is_symlink() else directory
    try:
        # Named after the file, unless that would make a name too long where the
        # file's own is not (mkstemp adds eight characters).
        prefix = f".{path.name}." if len(os.fsencode(path.name)) < 240 else "."
        descriptor, name = tempfile.mkstemp(dir=where, prefix=prefix)
        os.close(descriptor)
        os.unlink(name)
    except OSError as error:
        return f"cannot write in {where}: {error.strerror or error}{unwritable_hint()}"
    return None


def dangling_link(path: Path) -> str | None:
    """Why ``path`` leads through a symbolic link to nothing where appending cannot go
    (None: no such link on the way, or the file's own link points into an existing
    directory, where the first append creates the file). Appending creates the missing
    directory of the link, not of its target: a link into a volume not mounted (the
    file's, or one of its directories') would stop the job at its first line, and
    creating that directory on the host's own disk would hide the volume's absence. A
    path that may not be looked at (a directory that may not be searched) is for
    opening it to tell."""
    try:
        for depth, step in enumerate((path, *path.parents)):
            if not step.is_symlink() or step.exists():
                continue
            target = Path(os.path.realpath(step))
            if depth == 0 and target.parent.is_dir():
                return None
            missing = target.parent if depth == 0 else target
            what = "it is" if depth == 0 else f"its directory {step} is"
            state = (
                "is not a directory: point the link at one"
                if missing.exists()
                else "does not exist (a volume not mounted?): mount or create it"
            )
            return (
                f"{what} a symbolic link to {os.readlink(step)}, and {missing} it points "
                f"{'into ' if depth == 0 else 'to '}{state}, or name another file"
            )
    except OSError:
        return None
    return None


def append_line(
    path: Path, line: str | bytes, *, unless: Callable[[int, int], bool] | None = None
) -> int | None:
    """Append ``line`` to ``path`` (created with its directory if missing), durably,
    on a line of its own even when the file ends in a torn line (module docstring);
    the offset the line starts at.

    ``line`` may be bytes, so that a line read back that is not UTF-8 can be kept as it
    was, byte for byte. ``unless`` is asked, under the lock, with the file's descriptor
    and size: a true answer leaves the file as it is (None), so that a caller can decide
    from what the file holds while no other process can change it."""
    return append_lines(path, (line,), unless=unless)


def append_lines(
    path: Path,
    lines: Sequence[str | bytes],
    *,
    unless: Callable[[int, int], bool] | None = None,
) -> int | None:
    """:func:`append_line` for several lines at once, in one write and one fsync under
    one lock (what a line costs is mostly the fsync); the offset the first starts at.
    A crash in the middle leaves the lines before the tear whole."""
    data = b"".join(
        (line.encode("utf-8") if isinstance(line, str) else line) + b"\n" for line in lines
    )
    if _make_directory(path):
        log.warning(
            "directory was missing, created it; if it was removed while running, what it held is "
            "gone",
            directory=str(path.parent),
            file=str(path),
        )
    with locked_file(path, create=True) as file:
        assert file is not None
        descriptor = file.fileno()
        size = os.fstat(descriptor).st_size
        if unless is not None and unless(descriptor, size):
            return None
        created = size == 0
        torn = not created and os.pread(descriptor, 1, size - 1) != b"\n"
        _write_whole(descriptor, (b"\n" if torn else b"") + data, size)
        if created:  # in the directory the file is in, a link's target's
            fsync_directory(Path(os.path.realpath(path)).parent)
        return size + torn


def _write_whole(descriptor: int, data: bytes, size: int) -> None:
    """Write ``data`` at the end of a file ``size`` bytes long (under its lock) and fsync
    it, or leave the file as it was: a write that fails part way (a full disk) is cut
    back, so that no fragment of a line the caller will store again stays behind as an
    unreadable line. Written straight to the descriptor: a buffered file would hold the
    unwritten rest and write it when closed, after the cut."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except BaseException:  # a full disk; also a stop between two partial writes
        try:
            os.ftruncate(descriptor, size)
            os.fsync(descriptor)
        except OSError as cut:
            log.warning("could not cut a failed append back", error=str(cut), size=size)
        raise


def _make_directory(path: Path) -> bool:
    """Create ``path``'s directory if missing; whether this call created it. A file where
    a directory should be (the directory replaced by a file while running) is reported
    as such: ``mkdir`` alone would say "File exists", which names neither the file nor
    the trouble."""
    directory = path.parent
    if directory.is_dir():
        return False
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        blocking = next((p for p in (directory, *directory.parents) if p.exists()), None)
        if blocking is None:
            raise
        if blocking.is_dir():
            return False  # another process created it meanwhile
        raise NotADirectoryError(
            errno.ENOTDIR, f"{blocking} is not a directory", str(path)
        ) from None
    return True


@contextmanager
def locked_file(path: Path, *, create: bool) -> Iterator[TextIO | None]:
    """The file at ``path`` under an exclusive lock: opened for appending (and reading,
    so that its last byte can be checked), or, when ``create`` is false, opened only to
    hold the lock (None if there is no file).

    Locking an open file does not stop another process renaming or deleting its path
    meanwhile (a replay does both), so once locked, the file must still be the one at
    ``path``; otherwise it is let go and the path opened again.
    """
    while True:
        try:
            file = _open_regular(path, create=create)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        with file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                if same_file(file, path):
                    yield file
                    return
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)


def _open_regular(path: Path, *, create: bool) -> TextIO:
    """``path`` opened as :func:`locked_file` opens it (see :func:`open_regular`)."""
    if create:
        return open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, "a+")
    return open_regular(path, os.O_RDONLY, "r")


def open_regular(path: Path, flags: int, mode: str) -> TextIO:
    """``path`` opened with ``flags`` (text ``mode``), only if it is a regular file:
    without blocking (a FIFO put at the path while the job runs would wait for a reader
    for ever), and an OSError naming the path for anything else (a device would take
    the lines and keep none)."""
    descriptor = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o666)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(descriptor, True)
        return cast(TextIO, open(descriptor, mode, encoding="utf-8"))
    except BaseException:
        os.close(descriptor)
        raise


def same_file(file: TextIO, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(file.fileno())
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def fsync_directory(directory: Path) -> None:
    """Make a file's creation or renaming in ``directory`` survive a crash."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
