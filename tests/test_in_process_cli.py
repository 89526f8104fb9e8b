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
from tests.support.cli import CommandHung, _process_state_kept, in_process


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


def test_a_command_that_does_not_return_fails_the_test_at_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a process run by ``replicator(...)`` fails at its timeout: a hang in a command
    run in process must fail its test, not hang the suite."""
    from replicator.watermark import commands

    monkeypatch.setattr(commands, "wait", lambda *args: threading.Event().wait(60))
    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {region: us-east-1, table: src, endpoint_url: 'http://127.0.0.1:9'}\n"
        "destinations: [{region: eu-west-1, table: dst, endpoint_url: 'http://127.0.0.1:9'}]\n"
    )
    before = _state()
    args = ("wait", "-c", str(job), "-d", "eu-west-1/dst", "--until", "1", "--timeout", "1")

    with pytest.raises(CommandHung, match=r"did not return in 0\.5 s"):
        in_process(*args, timeout=0.5)

    assert _state() == before
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
