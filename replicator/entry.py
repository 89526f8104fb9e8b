"""The ``replicator`` command's entry point (and ``python -m replicator``'s).

Importing the CLI and the job's modules takes about half a second. A SIGTERM, SIGINT or
SIGHUP that reaches ``replicator run`` in that time would end it with no output (SIGTERM's
and SIGHUP's default) or a ``KeyboardInterrupt`` traceback. So for ``run`` the three are
held from the first moment (SIGHUP unless it was ignored at start, as by ``nohup``),
before anything heavy is imported; the runtime's own handlers
(:func:`replicator.runtime.supervisor.stop_signals`) then act on a held one as on any
other, and a stop during start-up exits 0 as a stop at any other time does. For ``demo``
a SIGINT, SIGTERM or SIGHUP before the demo installs its own handlers ends it at once: one
line, exit 128 + the signal (a SIGTERM or SIGHUP the demo was started with ignored, as by
``nohup``, stays ignored: :func:`demo_stop_signals`). The runtimes
run their preflight checks (which can wait minutes, creating tables) while the signals are
still held, and look at :func:`stop_held` between steps; a second signal while held means
stop now: one line, and exit 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
The same stop signal (not SIGINT: each Ctrl-C is a key pressed) within :data:`REPEAT_S`
of the first is no second one but the same request sent twice (``timeout``), here and
once the runtime is set up: logged once, a clean stop.

Every other command (but ``processor``) answers a SIGINT it was started with ignored, as
a shell without job control starts a background command, as it answers one from a
terminal (:func:`answer_sigint`).

Once ``run`` has its exit code (its one-line error printed, or its runtime stopped), the
process ends at once (:func:`_end_now`): the interpreter's own shutdown (module teardown,
collecting botocore's objects) takes 0.2 s to over a second on a busy host, with the
signal handlers already reset to the defaults, so a SIGTERM in that time ended the
command with 143 instead of the code it had already decided on.

``processor`` (the record processor a daemon runs, one per shard) ignores SIGTERM,
SIGINT and SIGHUP from its first moment: its life is the protocol's (``shutdownRequested``,
``leaseLost``, ``shardEnded``, and the end of its input when the daemon goes away). A
stop signal reaches it beside its daemon's when a service manager signals every process
of the service (systemd's default ``KillMode=control-group``) or Ctrl-C the whole
foreground process group; the daemon turns its own into a ``shutdownRequested``, which
the processor must still be alive to answer with its final checkpoint. SIGKILL still
ends it.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# A stop signal this soon after the first is the same request, sent twice: coreutils'
# ``timeout`` signals the command and then its process group (0.3 ms apart), a service
# manager may signal the main process and then every process of the service. Only a
# later one is a second request (stop now).
REPEAT_S = 1.0

# The stop signal held while ``run`` starts, and when it came (:func:`_now`).
_held: list[tuple[int, float]] = []
# Set once the command's outcome is decided (its one-line error printed): a signal held
# from then on is not said to stop a start-up that has already ended.
_decided: list[bool] = []


def outcome_decided() -> None:
    """The command has printed how it ends: a held stop signal is no longer news."""
    _decided.append(True)


def _now() -> float:
    return time.monotonic()


class SignalRelay:
    """Stop signals acted on by a thread of their own, not in the handler: a handler runs
    on the main thread between two of its bytecodes, also while that thread holds a lock
    the action takes (a threading.Event's, waited on by a main loop) or inside the
    handler of a signal just before (coreutils' timeout signals a command and then its
    process group), and taking that lock again there hangs the process for good. The
    handler only queues the signal and when it came (``SimpleQueue.put`` is safe in a
    handler); ``act(signum, at)`` runs on the relay thread, from :meth:`start` on (a
    caller that must fork while it is the one thread starts it after that; signals wait
    in the queue until then). :meth:`close` acts on what is queued, then ends the
    thread."""

    def __init__(self, act: Callable[[int, float], None]) -> None:
        self._act = act
        self._received: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._relay, name="stop-signals", daemon=True)

    def start(self) -> None:
        if self._thread.ident is None:  # not started yet
            self._thread.start()

    def handler(self, signum: int, _frame: Any) -> None:
        self._received.put((signum, _now()))

    def _relay(self) -> None:
        while (received := self._received.get()) is not None:
            self._act(*received)

    def close(self) -> None:
        self.start()
        self._received.put(None)
        self._thread.join()


def _repeats(signum: int, first: int, first_at: float, at: float) -> bool:
    """Whether signal ``signum`` at ``at`` is the first one (``first`` at ``first_at``)
    sent again: the same signal within :data:`REPEAT_S`, as ``timeout`` sends its SIGTERM
    to the command and then to its process group. Not SIGINT: each Ctrl-C is a key a
    person pressed, and a second one, however soon, means stop now."""
    return signum == first and signum != signal.SIGINT and at - first_at < REPEAT_S


class StopRequests:
    """The stop signals of one run told apart from their repeats (:func:`_repeats`)."""

    def __init__(self) -> None:
        self.first: tuple[int, float] | None = None

    def repeated(self, signum: int, at: float | None = None) -> bool:
        """Note stop signal ``signum`` (now, or ``at``); whether it repeats the first."""
        at = _now() if at is None else at
        if self.first is None:
            self.first = (signum, at)
            return False
        return _repeats(signum, *self.first, at)


class StopNow(SystemExit):
    """A second stop signal while ``run`` starts: the process ends with 128 + the signal,
    from wherever the start-up was, a custom resolver's import included (which takes a
    SystemExit of the module's own for a module that does not load)."""


def _hold(signum: int, _frame: Any) -> None:
    now = _now()
    if _held and _repeats(signum, *_held[0], now):
        return  # the same request, sent twice
    if _held:  # asked twice while starting: do not wait for the start-up to finish
        name = signal.Signals(signum).name
        sys.stderr.write(f"replicator: {name} again while starting; stopping now\n")
        sys.stderr.flush()
        raise StopNow(128 + signum)
    _held.append((signum, now))
    _acknowledge(signum)


def _acknowledge(signum: int) -> None:
    """Say at once that a stop signal is held: a start-up step in flight (a table or
    endpoint that does not answer) may take the SDK's timeouts, some 30 s, before the
    start stops, and nothing was said meanwhile. Only once the job's logging is set up
    (before that, a log line would go to stdout, the command's output).

    Nothing is imported here: the handler may run in the middle of an import (the CLI's
    take half a second), and an import from it then breaks that one in CPython 3.11
    (``KeyError`` from the import lock's bookkeeping, a traceback and exit 1 for a
    clean stop). Logging set up means both modules are loaded already."""
    logs = sys.modules.get("replicator.logs")
    configured = getattr(logs, "configured", None)
    structlog = sys.modules.get("structlog")
    if configured is not None and structlog is not None and configured() and not _decided:
        structlog.get_logger(__name__).info(
            "stop signal received while starting; the start-up stops after the step in "
            "flight, which may wait for an endpoint's timeouts (a second signal stops at once)",
            signal=signal.Signals(signum).name,
        )


def stop_held() -> bool:
    """Whether a stop signal is held (left held: :func:`take_held_signal` takes it)."""
    return bool(_held)


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that ask ``run`` and the long-running commands for a clean stop:
    SIGTERM, SIGINT, and SIGHUP (a closed terminal, an SSH session's end) unless it is
    ignored, as ``nohup`` starts a command so that a closed terminal does not stop it."""
    hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGTERM, signal.SIGINT, *hangup)


def hold_stop_signals() -> None:
    """Hold the stop signals (:func:`stop_signals`) until :func:`take_held_signal` is asked.

    Both are blocked while the handlers go in, so that the two are held from one moment:
    a SIGINT that came between the two installations (Ctrl-C just after a SIGTERM) would
    otherwise meet Python's own handler and end the start-up with a traceback. A signal
    that arrives meanwhile waits, and reaches :func:`_hold` when they are unblocked."""
    stops = set(stop_signals())
    before = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        for sig in stops:
            signal.signal(sig, _hold)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def take_held() -> tuple[signal.Signals, float] | None:
    """The first stop signal held since :func:`hold_stop_signals` and when it came
    (once), else None."""
    if not _held:
        return None
    first, at = _held[0]
    _held.clear()
    return signal.Signals(first), at


def take_held_signal() -> signal.Signals | None:
    """The first stop signal held since :func:`hold_stop_signals` (once), else None."""
    held = take_held()
    return None if held is None else held[0]


def _end_now(code: object) -> None:
    """End the process with ``code`` (a SystemExit's) once its output is out, without the
    interpreter's shutdown. Everything ``run`` owns was stopped before it returned."""
    from replicator import logs

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed (redacted), exit 1, as the interpreter does
        sys.stderr.write(f"{logs.redact(str(code))}\n")
        status = 1
    logs.finish_lines()
    os._exit(status)


# The commands that main() ends with _end_now once their work is over (their stop
# signals are noted from then on, see noted_after_the_work).
_ENDED_AT_ONCE = (
    ["backfill"],
    ["verify"],
    ["redrive"],
    ["wait"],
    ["watermark"],
    ["conflicts"],
)
_running_from_main: list[bool] = []


def ends_at_once() -> bool:
    """Whether this process is the ``replicator`` command, run by :func:`main`, of one of
    the commands it ends without the interpreter's shutdown: only then may they leave
    their stop signals noted for good (an in-process caller, a test or a script, gets
    its own handlers back)."""
    return bool(_running_from_main) and sys.argv[1:2] in _ENDED_AT_ONCE


def after_the_work(previous: dict[signal.Signals, Any]) -> None:
    """A command's stop signals once its result is decided: noted for good when this
    process ends without the interpreter's shutdown (:func:`ends_at_once`), else the
    caller's own handlers, ``previous``, back."""
    for number, handler in previous.items():
        signal.signal(number, noted_after_the_work if ends_at_once() else handler)


def noted_after_the_work(signum: int, _frame: Any) -> None:
    """A stop signal once a command's work is over and its result decided: said, not
    acted on (the handlers before, Python's KeyboardInterrupt, turned a second Ctrl-C
    just after the work into exit 130, or a traceback from the interpreter's shutdown)."""
    # os.write, not a buffered stream: the main thread may be inside a write to stderr
    # (its result, or the flush before the process ends), and a buffered write from the
    # handler would raise "reentrant call" there.
    name = signal.Signals(signum).name
    os.write(2, f"replicator: {name} received as the command ends; its result stands\n".encode())


def ignore_stop_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP ignored for good (the processor's; see the module's
    docstring): a terminal that closes sends SIGHUP to the runtime and its processors.

    Ignored rather than handled: the kernel drops them at once, during imports too, and
    no handler can run in the middle of a log line or a checkpoint."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def demo_stop_signals() -> list[signal.Signals]:
    """The stop signals the demo answers (one line, its files removed, 128 + N).

    A SIGTERM or SIGHUP ignored when the process started was ignored on purpose by
    whoever started it (``nohup`` ignores SIGHUP so that a closed terminal does not stop
    the command): it stays ignored. SIGINT is answered whatever it was: a shell without
    job control starts every background command with SIGINT ignored, not by anyone's
    choice, and Ctrl-C (or ``kill -INT``) must still stop the demo."""
    return [
        stop_signal
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if stop_signal == signal.SIGINT or signal.getsignal(stop_signal) is not signal.SIG_IGN
    ]


def interrupted(command: str | None) -> int:
    """Say that SIGINT stopped ``command`` where nothing answered it, and give its exit
    code: 128 + SIGINT, as a shell reports a command that SIGINT ended."""
    sys.stderr.write(f"replicator: SIGINT received; {command or 'the command'} stopped\n")
    sys.stderr.flush()
    return 128 + signal.SIGINT


def _interrupted(signum: int, _frame: Any) -> None:
    # As the demo says it once its own handlers are in (Ctrl-C's SIGINT unnamed).
    named = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
    os.write(2, f"interrupted{named}\n".encode())
    os._exit(128 + signum)


def answer_sigint() -> None:
    """SIGINT answered as Python answers it (``KeyboardInterrupt``, which the CLI and the
    commands turn into their one line and exit 130) when the process started with it
    ignored. A shell without job control (``sh -c 'replicator backfill ... &'``, a script)
    starts every background command so, not by anyone's choice; until a command installs
    its own handler (the tools' ``interrupts``, once the job is loaded) a ``kill -INT``
    would be dropped, and a backfill so interrupted while starting would run to its end."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> Any:
    try:
        os.getcwd()
    except OSError as error:  # a shell left in a directory deleted since
        os.write(2, f"replicator: the working directory cannot be read ({error})\n".encode())
        sys.exit(2)
    if sys.argv[1:2] == ["demo"]:
        # Importing the demo (moto, rich) takes over a second: a Ctrl-C (or SIGTERM,
        # SIGHUP) in that time ends it at once, one line and exit 128 + N, not a traceback
        # or click's "Aborted!". Nothing is started yet; the demo installs its own
        # handlers before it starts anything.
        for stop_signal in demo_stop_signals():
            signal.signal(stop_signal, _interrupted)
    if sys.argv[1:2] == ["processor"]:
        ignore_stop_signals()
    elif sys.argv[1:2] not in (["demo"], ["run"]):  # those two have handlers of their own
        answer_sigint()
    if sys.argv[1:2] != ["run"]:
        try:
            from replicator.cli import main as cli_main
        except KeyboardInterrupt:  # importing the CLI takes half a second
            sys.exit(interrupted(next(iter(sys.argv[1:2]), None)))
        _running_from_main.append(True)
        try:
            return cli_main()
        except SystemExit as ended:
            if sys.argv[1:2] in _ENDED_AT_ONCE:
                # These route the stop signals to their work until it is over, and note
                # them from then on (noted_after_the_work); the interpreter's shutdown
                # would put SIG_DFL back, and a Ctrl-C in it would end the process with
                # 130 whatever its result, or print a traceback from joining a thread.
                # All they own is stopped.
                _end_now(ended.code)
            raise
    hold_stop_signals()
    from replicator.cli import main as cli_main

    try:
        return cli_main()
    except SystemExit as ended:
        _end_now(ended.code)
        raise  # not reached
