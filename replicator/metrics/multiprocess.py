"""The directory where processor processes leave their metric samples.

Each child writes memory-mapped files named after its pid. When a child dies, its
``live*`` gauge files must go (otherwise a dead shard's last lag would be reported
forever); its counters stay, since totals must not drop when a process restarts.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from prometheus_client import multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def prepare(directory: str | None = None) -> Path:
    """A fresh, empty directory for this run's samples, exported to child processes."""
    path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="replicator-metrics-"))
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[ENV] = str(path)
    return path


def pids_with_files(path: Path) -> set[int]:
    pids = set()
    for file in path.glob("*.db"):
        match = _PID.search(file.name)
        if match:
            pids.add(int(match.group(1)))
    return pids


def reap_dead(path: Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist; returns their pids."""
    reaped = []
    for pid in pids_with_files(path):
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
