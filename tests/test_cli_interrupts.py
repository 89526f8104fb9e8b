"""Ctrl-C during a command that does not answer it itself (``validate`` reading its job
file, any command before its work begins) printed click's "Aborted!" and exited 1, the
code of a failure; SIGINT while the CLI was still being imported printed a traceback.
Each now ends as the commands that answer it do: one line, exit 130."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _blocked_reading(pid: int, fifo: Path) -> bool:
    """Whether the process holds the FIFO open and sleeps: it is then in its read, the
    one place it can wait once the file is open. A SIGINT sent between its open and its
    read would be taken by Python's handler with no read to interrupt, and the read
    would then wait for ever, as it would for any process."""
    try:
        held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # a descriptor closed while listed
        return False
    return os.path.realpath(fifo) in held and state == "S"


def _interrupted_reading(
    tmp_path: Path, *args: str, inherited: Any = signal.default_int_handler
) -> subprocess.CompletedProcess[str]:
    """The command, its job file a FIFO, sent SIGINT once it is blocked reading it: it
    is then inside the command, and stays there until a writer writes. It starts with
    SIGINT as ``inherited`` leaves it: by default as a terminal leaves it (a shell without
    job control starts its background commands with SIGINT ignored, which every process
    they start inherits: ``signal.SIG_IGN``)."""
    fifo = tmp_path / "job.yaml"
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGINT, inherited)
    try:
        command = subprocess.Popen(
            [sys.executable, "-m", "replicator", *args, "--config", str(fifo)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    writer = None
    try:
        deadline = time.monotonic() + 120
        while writer is None:
            try:  # opens only once a reader has the FIFO open
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                assert error.errno == errno.ENXIO
                assert command.poll() is None, command.communicate()
                assert time.monotonic() < deadline, "the command never opened its job file"
                time.sleep(0.01)
        while not _blocked_reading(command.pid, fifo):
            assert time.monotonic() < deadline, "the command never read its job file"
            time.sleep(0.01)
        command.send_signal(signal.SIGINT)
        try:
            out, err = command.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            command.kill()
            pytest.fail(f"not stopped by SIGINT: {command.communicate()}")
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
        if writer is not None:
            os.close(writer)
    return subprocess.CompletedProcess(command.args, command.returncode, out, err)


@pytest.mark.parametrize(
    "args",
    [
        ("validate",),
        ("properties",),
        ("watermark",),
        ("conflicts",),
        ("backfill",),
        ("wait", "-d", "eu-west-1", "--until", "1", "--timeout", "5"),
    ],
    ids=lambda args: args[0],
)
def test_ctrl_c_while_a_command_reads_its_job_file_exits_130_with_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = _interrupted_reading(tmp_path, *args)
    assert result.returncode == 130, result.stderr
    assert result.stderr == f"replicator: SIGINT received; {args[0]} stopped\n"
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["validate", "backfill", "verify", "redrive"])
def test_ctrl_c_stops_a_command_started_with_sigint_ignored(tmp_path: Path, command: str) -> None:
    """``sh -c 'replicator backfill ... &'`` starts it with SIGINT ignored; a ``kill -INT``
    during its start-up must still stop it, as from a terminal, not be dropped."""
    result = _interrupted_reading(tmp_path, command, inherited=signal.SIG_IGN)
    assert result.returncode == 130, result.stderr
    assert result.stderr == f"replicator: SIGINT received; {command} stopped\n"
    assert result.stdout == ""


# SIGINT as the CLI imports the job file's model (pydantic): inside the import, at once.
_SIGINT_WHILE_IMPORTING = """
import signal, sys
from importlib.abc import MetaPathFinder

signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal

class Interrupt(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "replicator.config.model":
            signal.raise_signal(signal.SIGINT)
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv = ["replicator", "validate", "--config", "job.yaml"]
from replicator.entry import main
main()
"""


def test_ctrl_c_while_the_cli_is_imported_exits_130_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SIGINT_WHILE_IMPORTING],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == "replicator: SIGINT received; validate stopped\n"
    assert result.stdout == ""


def test_sighup_stops_run_and_the_tools_unless_ignored_as_by_nohup() -> None:
    """A closed terminal's SIGHUP is a stop request as SIGTERM is; one that was ignored at
    start (``nohup``) stays ignored, as whoever started the command meant."""
    from replicator import entry

    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        assert entry.stop_signals() == (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        assert entry.stop_signals() == (signal.SIGTERM, signal.SIGINT)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_later_second_stop_signal_while_starting_ends_the_command_a_repeat_does_not() -> None:
    """Held while ``run`` starts: a repeat within entry.REPEAT_S of the first is the same
    request (``timeout`` sends two at once); one later stops the command at once."""
    code = """if True:
        import os, signal
        from replicator import entry
        clock = [100.0]
        entry._now = lambda: clock[0]
        entry.hold_stop_signals()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        clock[0] += entry.REPEAT_S / 2
        os.kill(os.getpid(), signal.SIGTERM)
        print("one request", flush=True)
        clock[0] += entry.REPEAT_S
        os.kill(os.getpid(), signal.SIGTERM)
        print("not reached")
    """
    ended = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (ended.returncode, ended.stdout) == (143, "one request\n"), ended.stderr
    assert ended.stderr == "replicator: SIGTERM again while starting; stopping now\n"


def test_a_second_ctrl_c_or_another_signal_while_starting_is_a_second_request() -> None:
    """Each Ctrl-C is a key a person pressed: a second one, however soon, stops the
    command at once; so does another signal than the first."""
    for first, then, status in (("SIGINT", "SIGINT", 130), ("SIGTERM", "SIGINT", 130)):
        code = f"""if True:
            import os, signal
            from replicator import entry
            entry._now = lambda: 100.0
            entry.hold_stop_signals()
            os.kill(os.getpid(), signal.{first})
            print("held", flush=True)
            os.kill(os.getpid(), signal.{then})
            print("not reached")
        """
        ended = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert (ended.returncode, ended.stdout) == (status, "held\n"), ended.stderr
        assert ended.stderr == f"replicator: {then} again while starting; stopping now\n"


def test_the_runtimes_take_a_repeated_stop_signal_as_one_request_and_a_later_as_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """supervisor.stop_signals, which both runtimes stop through: the local runtime took
    any second signal as the same stop, the KCL runtime killed its daemon on one sent a
    fraction of a millisecond after the first (``timeout``)."""
    from replicator import entry
    from replicator.runtime import supervisor

    clock = [100.0]
    monkeypatch.setattr(entry, "_now", lambda: clock[0])
    asked: list[signal.Signals] = []
    # The signals are acted on by the relay thread, which the end of each block waits for.
    with supervisor.stop_signals(asked.append):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        clock[0] += entry.REPEAT_S * 0.9
        os.kill(os.getpid(), signal.SIGTERM)
    assert asked == [signal.SIGTERM]
    asked.clear()
    with supervisor.stop_signals(asked.append):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # another signal: a second request
    assert asked == [signal.SIGTERM, signal.SIGINT]
    asked.clear()
    with supervisor.stop_signals(asked.append):
        clock[0] += entry.REPEAT_S
        os.kill(os.getpid(), signal.SIGTERM)
        clock[0] += entry.REPEAT_S
        os.kill(os.getpid(), signal.SIGTERM)  # a second or more later: a second request
    assert asked == [signal.SIGTERM, signal.SIGTERM]
    asked.clear()
    with supervisor.stop_signals(asked.append):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # two Ctrl-C, however soon: two requests
    assert asked == [signal.SIGINT, signal.SIGINT]


def test_a_stop_signal_while_the_main_thread_holds_the_stop_event_s_lock_stops_the_run() -> None:
    """The handler set the runtime's stop event on the main thread, which may be inside
    that event's wait, holding its (non-reentrant) lock, or inside the handler of a signal
    just before (coreutils' timeout signals the run and then its process group): the run
    hung for good, "stop requested" logged and nothing after. Held here as the main
    loop's ``stopping.wait()`` holds it when the signal comes."""
    from replicator.runtime import supervisor

    stopping = threading.Event()
    hung = _alarm_in(30)
    try:
        with supervisor.stop_signals(lambda _signal: stopping.set()):
            with stopping._cond:  # type: ignore[attr-defined]  # as inside stopping.wait()
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                held_for = sum(range(1000))  # bytecodes, where the handlers run
            assert stopping.wait(30), "the stop was never asked"
    finally:
        hung()
    assert held_for == 499500


def _alarm_in(seconds: int) -> Callable[[], None]:
    """SIGALRM raises TimeoutError in ``seconds`` (a lock acquire on the main thread is
    interrupted by it): a hang fails the test rather than the suite. Returns its cancel."""

    def raise_timeout(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, raise_timeout)
    signal.alarm(seconds)

    def cancel() -> None:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    return cancel


def test_the_held_stop_signal_s_handler_imports_nothing() -> None:
    """The handler runs wherever the main thread is, an import of the CLI's modules
    included: importing from it then broke that import in CPython 3.11 (``KeyError`` in
    the import lock's bookkeeping), and a SIGTERM sent during start-up ended ``run`` with
    a traceback and exit 1 instead of a clean stop."""
    checked = subprocess.run(
        [
            sys.executable,
            "-c",
            "import signal, sys\n"
            "import replicator.entry as entry\n"
            "before = set(sys.modules)\n"
            "entry._hold(signal.SIGTERM, None)\n"
            "print(sorted(set(sys.modules) - before))\n",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert checked.stdout.strip() == "[]"
