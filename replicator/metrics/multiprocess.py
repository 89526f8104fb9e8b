"""The directory where processor processes leave their metric samples.

Each child writes memory-mapped files named after its pid. When a child dies, its
``live*`` gauge files must go (otherwise a dead shard's last lag would be reported
forever); its counters and histograms stay, since totals must not drop when a process
restarts.

The directory must start empty for every run (samples of an earlier run would be added
to this run's totals). An operator may choose it with ``PROMETHEUS_MULTIPROC_DIR``
(for example a tmpfs in a container); otherwise a temporary directory is used and
removed when the runtime stops.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import multiprocess

from replicator import scratch
from replicator.exceptions import EnvironmentProblem

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_([0-9]+)\.db")


@dataclass(frozen=True)
class SamplesDirectory:
    path: Path
    owned: bool
    """True when the directory was created here (and is removed by ``discard``)."""
    lock: int | None = None
    """An operator's directory is held (flock) while the run uses it (``discard`` lets go)."""


def prepare(directory: str | Path | None = None, *, private: bool = False) -> SamplesDirectory:
    """An empty directory for this run's samples.

    The caller hands ``path`` to the processes it starts as ``$PROMETHEUS_MULTIPROC_DIR``;
    this process's own environment is left alone, so a second runtime in one process
    gets a directory of its own. ``directory`` (or the operator's
    ``$PROMETHEUS_MULTIPROC_DIR``) is emptied of sample files only, never removed: it
    may be a mount point. ``private``: a temporary directory whatever the environment
    says (a job that serves no metrics).
    """
    chosen = directory or (None if private else os.environ.get(ENV))
    if not chosen:
        # Held while in use: one a run killed outright left is removed by the next.
        made = scratch.make("replicator-metrics-")
        return SamplesDirectory(made.path, True, made.lock)
    path = Path(chosen)
    # A file, a path under a file, or a directory this user cannot create or write to
    # is the operator's setting to fix: one line naming it (exit 3), not a traceback.
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = os.open(path / ".replicator.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise EnvironmentProblem(
            f"{ENV} {path} cannot hold the metrics samples ({error.strerror or error}): "
            "point it at a directory this user can write to (or leave it unset for a "
            "temporary one)"
        ) from None
    # Two runs sharing the directory would delete each other's samples and report each
    # other's series: the second is refused while the first holds it.
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise EnvironmentProblem(
            f"{ENV} {path} is in use by another running replicator: give each job a "
            "directory of its own (or leave it unset for a temporary one)"
        ) from None
    try:
        for stale in path.glob("*.db"):
            stale.unlink()
    except OSError as error:
        os.close(lock)
        raise EnvironmentProblem(
            f"{ENV} {path}: cannot remove the samples of an earlier run "
            f"({error.strerror or error}): empty it, or choose another directory"
        ) from None
    return SamplesDirectory(path, False, lock)


def discard(directory: SamplesDirectory) -> None:
    """Remove a directory ``prepare`` created (one the operator chose is left in place,
    and let go of)."""
    if directory.owned:
        # Before its lock is let go of: no other run's sweep takes it for an ended one's.
        shutil.rmtree(directory.path, ignore_errors=True)
    if directory.lock is not None:
        os.close(directory.lock)


def pids_with_live_gauges(path: Path) -> set[int]:
    pids = set()
    for file in path.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(file.name)
        if match:
            pids.add(int(match.group(1)))
    return pids


def reap_dead(path: Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist; returns their pids."""
    reaped = []
    for pid in sorted(pids_with_live_gauges(path)):
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
            reaped.append(pid)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
