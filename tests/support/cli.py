"""Running the ``replicator`` command as a user does: a process of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def replicator(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m replicator ARGS``, its output captured, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def validate_in_process(
    path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``replicator validate --config PATH``, run by the command's own code in this process
    (click's test runner): for the many job files whose refusal is the job's parsing alone,
    each of which would otherwise pay a process start. A job naming a custom resolver
    imports it, which stays imported here: check such jobs with :func:`replicator`."""
    from click.testing import CliRunner

    from replicator.cli import cli

    done = CliRunner().invoke(cli, ["validate", "--config", str(path)], env=env)
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(
        ["replicator", "validate", "--config", str(path)],
        done.exit_code,
        done.stdout,
        done.stderr,
    )
