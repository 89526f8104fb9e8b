"""tests/support/cli.py's ``in_process``: a command run in the test process leaves the
process as it found it, so that the tests after it (in the same pytest process) see
none of what the command set for itself."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import structlog

from replicator import logs
from tests.support.cli import _process_state_kept, in_process


def _state() -> dict[str, object]:
    return {
        "signals": {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)},
        "structlog": structlog.get_config(),
        "root": (list(logging.getLogger().handlers), logging.getLogger().level),
        "as_json": list(logs._AS_JSON),
        "fields": dict(logs._GLOBAL_FIELDS),
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "path": list(sys.path),
    }


def test_a_command_that_sets_up_its_logging_and_signals_leaves_them_as_they_were(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """``verify`` configures logging to its stderr, binds the job to every log line and
    routes the stop signals before it reads the source, whose table is not there (exit 3)."""
    missing = f"in-process-{os.getpid()}-missing"
    job = tmp_path / "job.yaml"
    job.write_text(
        f"source: {{region: us-east-1, table: {missing}, endpoint_url: '{moto_endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: {missing}, "
        f"endpoint_url: '{moto_endpoint}'}}]\n"
    )
    before = _state()

    result = in_process("verify", "--config", str(job), env={"REPLICATOR_TEST_SET": "1"})

    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    assert f"table source us-east-1/{missing}: not found" in result.stderr
    assert _state() == before


def test_a_command_that_leaves_a_thread_running_fails_the_test() -> None:
    stop = threading.Event()
    with pytest.raises(AssertionError, match="left threads running"), _process_state_kept():
        threading.Thread(target=stop.wait, name="left-running").start()
    stop.set()
