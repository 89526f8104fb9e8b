"""Running the ``replicator`` command as a user does: a process of its own."""

from __future__ import annotations

import subprocess
import sys


def replicator(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m replicator ARGS``, its output captured, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
