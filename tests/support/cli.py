"""Running the ``replicator`` command as a user does: a process of its own."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def replicator_into_a_pipe_nobody_reads(
    *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m replicator ARGS`` with its stdout a pipe whose reader has gone (``|
    head`` done, a log shipper stopped): its stderr captured, whatever its exit status."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "replicator", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(write_end)


class CommandHung(BaseException):
    """An in-process command that did not return within its timeout: a BaseException, so
    that neither the command's own handlers nor click's runner take it for the command's
    failure; the test fails with it, as :func:`replicator`'s timeout fails a process."""


def in_process(
    *args: str, env: dict[str, str | None] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``replicator ARGS``, run by the command's own code in this process (click's test
    runner; stdout and stderr apart, as a process's): for the many refusals decided by
    the arguments and the job file before any work starts (``validate``, ``properties``,
    a bad option of ``wait``), each of which would otherwise pay a process start.

    What a command sets for its process (signal handlers, the logging configuration, the
    environment, the working directory, the import path) is put back afterwards, so that
    the tests that run after it in this process see none of it. A job naming a custom
    resolver imports it, which stays imported here: the test forgets it (see
    tests/config/test_config.py). A command that starts work (threads still running
    once it returns) is no case for this: it fails the test. ``env``: variables set
    for the command (None: unset), as :func:`replicator`'s; ``timeout``: seconds after
    which a command that has not returned fails the test (:class:`CommandHung`) instead
    of hanging the suite (a timer signal to the main thread, where pytest runs tests)."""
    from click.testing import CliRunner

    from replicator.cli import cli

    with _process_state_kept(), _bounded(timeout, args):
        done = CliRunner().invoke(cli, list(args), env=env, prog_name="replicator")
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(
        ["replicator", *args], done.exit_code, done.stdout, done.stderr
    )


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _bounded(timeout: float, args: tuple[str, ...]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # a timer signal reaches only the main thread
        return

    def hung(number: int, frame: object) -> None:
        raise CommandHung(f"replicator {' '.join(args)} did not return in {timeout} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """The process-wide state a command may set (see :func:`in_process`), restored."""
    import structlog

    from replicator import logs

    handlers = {number: signal.getsignal(number) for number in _SIGNALS}
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    credentials = logging.getLogger("botocore.credentials")
    credential_filters = list(credentials.filters)
    as_json = list(logs._AS_JSON)
    global_fields = dict(logs._GLOBAL_FIELDS)
    environment = dict(os.environ)
    cwd = os.getcwd()
    path = list(sys.path)
    threads = set(threading.enumerate())
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        structlog.configure(**structlog_config)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        credentials.filters[:] = credential_filters
        logs._AS_JSON[:] = as_json
        logs._GLOBAL_FIELDS.clear()
        logs._GLOBAL_FIELDS.update(global_fields)
        if dict(os.environ) != environment:
            os.environ.clear()
            os.environ.update(environment)
        os.chdir(cwd)
        sys.path[:] = path
    running = [
        thread
        for thread in threading.enumerate()
        if thread not in threads and not thread.daemon and thread.is_alive()
    ]
    assert not running, f"the command left threads running: {running}; run it as a process"


def validate_in_process(
    path: Path, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``replicator validate --config PATH`` in this process (:func:`in_process`)."""
    return in_process("validate", "--config", str(path), env=env)
