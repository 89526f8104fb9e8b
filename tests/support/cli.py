"""Running the ``replicator`` command as a user does: a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def replicator(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m replicator ARGS``, its output captured, whatever its exit status;
    ``env``: variables set for it beside this process's."""
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
        check=False,
    )


def in_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``replicator ARGS``, run by the command's own code in this process (click's test
    runner): for the many job files whose outcome is their parsing alone (``validate``,
    ``properties``), each of which would otherwise pay a process start. A job naming a
    custom resolver imports it, which stays imported here: check such jobs, and any
    command that starts work, with :func:`replicator`."""
    from click.testing import CliRunner

    from replicator.cli import cli

    done = CliRunner().invoke(cli, list(args), env=env, prog_name="replicator")
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(
        ["replicator", *args], done.exit_code, done.stdout, done.stderr
    )


def validate_in_process(
    path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``replicator validate --config PATH`` in this process (:func:`in_process`)."""
    return in_process("validate", "--config", str(path), env=env)
