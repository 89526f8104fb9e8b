"""``replicator demo`` (``make run``): the whole product on one machine in under a minute.

It starts a DynamoDB-compatible endpoint on 127.0.0.1, creates the job's source table
(with a stream) and destination tables, writes a steady mix of changes, runs the local
runtime with the very processor a production job runs, shows live progress, and ends
by comparing every item of every destination with the source. It exits 0 only if all
destinations equal the source.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import pty
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from rich.console import Console
from rich.live import Live
from rich.table import Table

from replicator import logs
from replicator.aws import clients
from replicator.config.loader import job_file_path, load_job
from replicator.config.model import ResolvedJob, RuntimeKind
from replicator.demo import tables
from replicator.demo.endpoint import EmbeddedEndpoint
from replicator.demo.workload import Stamps, Workload
from replicator.entry import demo_stop_signals
from replicator.exceptions import EnvironmentProblem, OperatorError
from replicator.metrics.server import address as metrics_address
from replicator.metrics.server import check_listen
from replicator.runtime.file_owners import OWNERS_SUFFIX
from replicator.runtime.local.runtime import LocalRuntime
from replicator.tools.compare import compare, describe
from replicator.wording import counted

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ENDPOINT_ENV = "REPLICATOR_DEMO_ENDPOINT"
METRICS_PORT_ENV = "REPLICATOR_DEMO_METRICS_PORT"  # config/demo.yaml's metrics.port
KEY_NAMES = ["pk", "sk"]


@dataclass
class DemoOptions:
    duration_s: float = 20.0
    rate: float = 40.0
    keys: int = 200
    settle_timeout_s: float = 60.0
    linger_s: float = 0.0


def _client(region: str, endpoint: str) -> DynamoDBClient:
    return clients.default_dynamodb(region, endpoint)


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP), answered as Ctrl-C: the replicator
    stopped, the demo's files removed, one line, and exit 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# Set once the demo's stop is under way (a signal's, or the one after the check, or
# after a failure): a stop signal then is noted only, the first one kept here, so that
# the stop ends its work (the replicator stopped, the demo's files removed) and the
# demo then ends with 128 + that first signal. Raised there, a second Ctrl-C or SIGTERM
# cut that work short, leaving files behind, and reached the command's own handler,
# which named it SIGINT whatever it was.
_STOPPING: list[bool] = []
_NOTED: list[int] = []


def _interrupt(signum: int, _frame: object) -> None:
    if _STOPPING:
        _NOTED[:] = _NOTED or [signum]
        return
    raise Interrupted(signum)


def _stop_under_way() -> None:
    """From now on a stop signal is noted only."""
    _STOPPING[:] = [True]


def _noted_stop(console: Console) -> int:
    """128 + the signal noted while stopping, said in one line."""
    said, code = _interruption(Interrupted(_NOTED[0]))
    with contextlib.suppress(OSError):  # stdout gone with the signal: the code says it
        console.print(f"\n{said}")
    return code


def _interruption(error: KeyboardInterrupt) -> tuple[str, int]:
    """What the demo says of the stop, and its exit code (a bare KeyboardInterrupt is
    Ctrl-C's)."""
    signum = error.signum if isinstance(error, Interrupted) else signal.SIGINT
    if signum == signal.SIGINT:
        return "interrupted", 128 + signum
    return f"interrupted ({signal.Signals(signum).name})", 128 + signum


class _Console(Console):
    """rich's console, but a closed stdout raises the error rather than ending the
    process (rich's ``SystemExit(1)``, which skipped the command's one line saying so)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def run_demo(config_path: Path, options: DemoOptions, console: Console | None = None) -> int:
    if console is None:
        # Off a terminal (CI logs, a pipe) one progress line per interval, not wrapped at
        # rich's default 80 columns, so that each line can be grepped whole.
        console = _Console() if sys.stdout.isatty() else _Console(width=200, soft_wrap=True)
    endpoint = EmbeddedEndpoint()
    previous = {stop_signal: signal.getsignal(stop_signal) for stop_signal in STOP_SIGNALS}
    _STOPPING.clear()
    _NOTED.clear()
    try:
        # Ctrl-C (SIGINT) stops the demo cleanly even where it was started with SIGINT
        # ignored (a background job of a non-interactive shell inherits that, and Python
        # then installs no handler of its own); SIGTERM (kill, a service manager) and
        # SIGHUP (the terminal closed) stop it the same way, rather than end it with no
        # word and its files left behind, unless started ignored (nohup). Installed
        # inside this try, so that the KeyboardInterrupt they raise is always answered
        # here (until now the entry point's handler ended the process at once, 128 + N).
        for stop_signal in demo_stop_signals():
            signal.signal(stop_signal, _interrupt)
        url = endpoint.start()
        _private_environment(url)
        resolved = load_job(job_file_path(config_path))
        problem = (
            off_endpoint(resolved, url) or off_directory(resolved) or Stamps.problem(resolved.job)
        )
        if problem is not None:
            logs.echo(f"replicator demo: {config_path}: {problem}", err=True)
            return 2
        logs.configure(
            resolved.job.logging.level,
            resolved.job.logging.format.value,
            cast(TextIO, _CurrentStderr()),  # write, flush and isatty are all it uses
        )
        with _files_directory(console):
            return _Demo(resolved, url, options, console).run()
    except KeyboardInterrupt as error:  # while setting up; the replication phase has its own
        _stop_under_way()
        said, code = _interruption(error)
        with contextlib.suppress(OSError):  # stdout gone with the signal: the code says it
            console.print(f"\n{said}")
        return code
    finally:
        _stop_under_way()
        endpoint.stop()
        for stop_signal, handler in previous.items():  # a caller's own (the tests')
            if handler is not None:
                signal.signal(stop_signal, handler)


def _reachable(host: str) -> str:
    """An address a browser on this host can open: a job listening on every interface
    (``0.0.0.0``, a job file's default, ``::`` or another spelling of them) is reached
    on the loopback one of its address family."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        return host
    if not address.is_unspecified:
        return host
    return "::1" if address.version == 6 else "127.0.0.1"


def off_directory(resolved: ResolvedJob) -> str | None:
    """Why the job's files would be written outside the demo's own directory, else None.

    Run beside a real job, the demo would otherwise append its made-up dead letters and
    lost conflicts to that job's files (relative paths from the same working directory),
    where a later ``redrive`` or ``conflicts --restore`` would take them for real ones."""
    job = resolved.job
    targets = [
        ("dead_letter.path", job.dead_letter.kind.value, job.dead_letter.path),
        ("conflict_log.path", job.conflict_log.kind.value, job.conflict_log.path),
    ]
    for where, kind, path in targets:
        if kind != "file":
            continue
        if Path(path).is_absolute():
            return (
                f"{where} is absolute ({path}); the demo writes the job's files in a "
                "directory of its own: give a relative path"
            )
        if os.path.normpath(path).split(os.sep)[0] == os.pardir:
            return (
                f"{where} leads out of the demo's directory ({path}); the demo writes the "
                "job's files in a directory of its own: give a path inside it, without .."
            )
    return None


@contextmanager
def _files_directory(console: Console) -> Iterator[None]:
    """Run with a fresh working directory, where the job's relative file targets (dead
    letters, the conflict log) land; its processors inherit it. Kept, and named, if the
    run wrote anything there."""
    previous = Path.cwd()
    directory = Path(tempfile.mkdtemp(prefix="replicator-demo-files-"))
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)
        # An owners file alone (runtime/file_owners.py) is bookkeeping, not the job's output.
        kept = [p for p in directory.rglob("*") if p.is_file() and p.suffix != OWNERS_SUFFIX]
        if kept:
            console.print(f"the job's files (dead letters, conflict log): {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def _private_environment(url: str) -> None:
    """Every AWS client of this process talks to the demo's endpoint, as a dummy user.

    A job file with no endpoint_url would otherwise reach AWS, and keys, a session token
    or a profile in the environment would be used: the demo never uses real credentials.
    """
    os.environ[ENDPOINT_ENV] = url
    os.environ["AWS_ENDPOINT_URL"] = url
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL_") or name in _DROPPED_ENV:
            del os.environ[name]
    os.environ["AWS_ACCESS_KEY_ID"] = "demo"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "demo"  # noqa: S105  # the endpoint's dummy user
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


_DROPPED_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def off_endpoint(resolved: ResolvedJob, url: str) -> str | None:
    """Why the job would reach something other than the demo's endpoint, else None."""
    job = resolved.job
    places: list[tuple[str, str | None, str | None]] = [
        ("source", job.source.endpoint_url, job.source.role_arn),
        *(
            (f"destinations[{i}]", d.endpoint_url, d.role_arn)
            for i, d in enumerate(job.destinations)
        ),
        ("dead_letter", job.dead_letter.endpoint_url, job.dead_letter.role_arn),
        ("conflict_log", job.conflict_log.endpoint_url, job.conflict_log.role_arn),
    ]
    for where, endpoint_url, role_arn in places:
        if endpoint_url is not None and endpoint_url.rstrip("/") != url:
            return (
                f"{where}.endpoint_url is {endpoint_url}; the demo runs only on its own "
                f"endpoint ({url}, ${ENDPOINT_ENV}): leave endpoint_url unset "
                f"or use ${ENDPOINT_ENV}"
            )
        if role_arn:
            return f"{where}.role_arn is set; the demo assumes no role: leave it unset"
    if job.dead_letter.kind.value == "sqs" or job.conflict_log.kind.value == "sqs":
        return "an SQS queue (dead_letter or conflict_log) is not on the demo's endpoint"
    if job.source.stream.kind.value != "dynamodb-streams" or job.source.stream.arn:
        return "the demo reads the stream of the table it creates: leave source.stream unset"
    return None


# ``port: ${NAME}`` or ``port: ${NAME:-9400}`` (block or flow style, the key quoted or
# not), not in a comment: the variable a job file takes its metrics port from. ``port``
# is the only key of that name a job has.
_PORT_VARIABLE = re.compile(
    r"^[^#\n]*?\bport[\"']?\s*:\s*[\"']?\$\{([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE
)


def _port_variable(text: str) -> str | None:
    """The environment variable ``text`` (a job file) takes ``metrics.port`` from."""
    found = _PORT_VARIABLE.search(text)
    return None if found is None else found.group(1)


def rate_line(changes: int, elapsed_s: float, asked: float) -> str:
    """The rate the workload reached beside the one asked: a loaded host writes slower.
    A run under a second says no rate (its first change is written at once: 1 change
    in 0.06 s is no rate of 17/s, nor a slow endpoint)."""
    noun = "change" if changes == 1 else "changes"
    if elapsed_s < 1:
        return f"{changes} {noun} in {elapsed_s:.3g} s: too short a run to tell its rate"
    # The workload writes its first change at once and never faster than asked: a count
    # over a short run (1 change in 0.01 s) would read as far above the rate asked.
    achieved = min(changes / elapsed_s, asked) if elapsed_s > 0 else 0.0
    # Whole changes a second where that says enough; below 10/s to the hundredth, the
    # smallest --rate (0.1/s reached is not "0/s").
    reached = f"{achieved:.0f}" if achieved >= 10 else f"{round(achieved, 2):g}"
    line = f"{changes} {noun} in {elapsed_s:.0f} s: {reached}/s of the {asked:g}/s asked"
    if achieved < 0.9 * asked:
        line += " (the endpoint or this host could not take them faster)"
    return line


# The write outcomes the progress shows per destination, in its columns' order.
_SHOWN_OUTCOMES = ("applied", "conflict_lost", "dead_lettered")
UNKNOWN = "-"
# A metric sample as the runtime's metrics server gives it: name, labels, value.
Sample = tuple[str, dict[str, str], float]


def _figures(stats: dict[str, float]) -> tuple[str, str, str, str]:
    """A destination's applied, lost conflicts, dead letters and lag as the progress
    shows them: ``-`` for what no series says (:meth:`_Demo._per_destination`)."""
    counts = [str(int(stats.get(key, 0))) if stats else UNKNOWN for key in _SHOWN_OUTCOMES]
    lag = f"{stats['lag']:.2f}" if "lag" in stats else UNKNOWN
    return counts[0], counts[1], counts[2], lag


class _CurrentStderr:
    """The demo's own log lines' stream: whatever ``sys.stderr`` is when a line is
    written, so that while the live progress shows, rich takes the line and prints it
    above the table (a stream taken at start wrote past it, glued to the table)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _ChildLines:
    """A terminal of its own for the processors' log lines, each line written on through
    this process's ``sys.stderr``: while the live progress shows, rich takes that and
    prints the line above the table. Written straight to the terminal, a processor's
    line was glued to the table's last border and the next refresh wrote over it. A
    pseudo-terminal, not a pipe, so that the processors still see a terminal and log as
    they would on one (``logging.format: auto``)."""

    def __init__(self) -> None:
        self.reading, self.writing = pty.openpty()
        self._closed = threading.Event()  # lines after it are dropped (the demo is ending)
        self._thread = threading.Thread(target=self._forward, name="child-lines", daemon=True)
        self._thread.start()

    @classmethod
    @contextmanager
    def for_console(cls, console: Console) -> Iterator[int | None]:
        """The descriptor processors write to while ``console`` shows the live progress
        on the terminal that is also stderr; None (stderr as it is) otherwise."""
        if not (console.is_terminal and sys.stderr.isatty()):
            yield None
            return
        lines = cls()
        try:
            yield lines.writing
        finally:
            lines.close()

    def _forward(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.reading, 65536)
            except OSError:  # EIO: every process writing to it has closed it
                break
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._write(line)
        if pending:
            self._write(pending)

    def _write(self, line: bytes) -> None:
        # Not once the demo is ending: a processor that outlived the runtime's stop would
        # have this daemon thread write to stderr while the interpreter shuts down.
        if not self._closed.is_set():
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line.rstrip(b"\r").decode("utf-8", "replace") + "\n")

    def close(self) -> None:
        """Once the processors are gone: their last lines written on, the terminal closed
        (a processor still alive keeps the reading end open, in a daemon thread)."""
        os.close(self.writing)
        self._thread.join(5)
        self._closed.set()
        if not self._thread.is_alive():
            os.close(self.reading)


class _Demo:
    def __init__(
        self, resolved: ResolvedJob, url: str, options: DemoOptions, console: Console
    ) -> None:
        self.resolved = resolved
        self.job = resolved.job
        self.url = url
        self.options = options
        self.console = console
        self.source = _client(self.job.source.region, url)
        self.destinations = {
            d.label: (_client(d.region, url), d.table) for d in self.job.destinations
        }
        self._shown_squashed = False  # a count of squashed changes was shown

    def run(self) -> int:
        console = self.console
        console.print(f"[bold]dynamodb-replicator demo[/] - endpoint {self.url}")
        metrics = self.job.metrics
        if metrics.enabled and metrics.port != 0:
            # Before anything is created: the runtime binds the port only after its
            # preflight checks, so a taken port would otherwise be found only once the
            # demo's tables exist. A port taken after this check still ends the demo
            # with 3 (the runtime binds it before creating tables of its own).
            try:
                check_listen(metrics.host, metrics.port)
            except EnvironmentProblem as error:  # checked before the replicator starts
                console.print(f"[red]cannot start the replicator: {self._advice(error)}[/]")
                return error.exit_code
        tables.create(self.source, self.job.source.table, stream=True)
        for ddb, table in self.destinations.values():
            tables.create(ddb, table, stream=False)
        console.print(
            f"source {self.job.source.region}/{self.job.source.table} -> "
            + ", ".join(self.destinations)
            + f"; task {self.resolved.task_name}"
        )
        if self.job.runtime is not RuntimeKind.LOCAL:
            # Nothing else says so but a JSON log line: a KCL job seen converging here
            # could be taken for one the KCL has run.
            console.print(
                f"runtime: local (the job file says {self.job.runtime.value}; the demo runs "
                "every job on the local runtime, one process, no KCL)"
            )
        if self.job.logging.level in ("debug", "info"):
            # The example job files log at info: their lines come between the progress.
            console.print(
                f"the job logs at {self.job.logging.level} level: its log lines come "
                "between the progress (logging.level: warning in the job file shows "
                "warnings and errors only)"
            )
        with _ChildLines.for_console(console) as child_lines:
            return self._run(child_lines)

    def _run(self, child_lines: int | None) -> int:
        console = self.console
        runtime = LocalRuntime(self.resolved, shard_sync_interval_s=2.0, child_stderr=child_lines)
        failure: list[BaseException] = []

        def run_runtime() -> None:
            try:
                runtime.run()
            except BaseException as error:  # noqa: BLE001  # shown below
                failure.append(error)
                runtime.started.set()

        workload = Workload(
            self.source,
            self.job.source.table,
            self.options.rate,
            self.options.duration_s,
            self.options.keys,
            origin=self.job.origin_value,
            stamps=Stamps.of(self.job),
        )
        thread = threading.Thread(target=run_runtime, name="runtime", daemon=True)
        thread.start()
        try:
            equal = self._replicate(runtime, workload, failure)
        except KeyboardInterrupt as error:  # the linger's too
            _stop_under_way()
            said, code = _interruption(error)
            # Said before the stop, which takes a while; a stdout gone with the Ctrl-C (a
            # pipe's reader ended by it) neither skips the stop nor changes the exit code.
            with contextlib.suppress(OSError):
                console.print(f"\n{said}: stopping the replicator")
            workload.stop_event.set()
            runtime.stop()
            thread.join(60)
            return code
        except BaseException:
            # Its output closed (`| head`: click ends the command, exit 1), or a failure
            # of the demo's own: the replicator is stopped as on every other way out, so
            # that it lets go of its host lock (and removes the file) before the process
            # ends, rather than dying with the demo as a daemon thread.
            _stop_under_way()
            workload.stop_event.set()
            runtime.stop()
            thread.join(60)
            raise
        _stop_under_way()  # a signal now waits for the stop below, then ends the demo
        runtime.stop()
        thread.join(60)
        if _NOTED:
            return _noted_stop(console)
        if workload.error is not None:
            console.print(f"[red]the workload failed: {logs.redact(str(workload.error))}[/]")
            return 1
        if failure:
            started = runtime.started.is_set() and workload.ident is not None
            verb = "stopped" if started else "did not start"
            advice = logs.redact(self._advice(failure[0]))
            console.print(f"[red]the replicator {verb}: {advice}[/]")
            if not started and isinstance(failure[0], OperatorError):
                # Run's exit code for it (3 for a metrics port taken between the check
                # above and the runtime's bind, which no check made first can rule out).
                return failure[0].exit_code
            return 1
        return 0 if equal else 1

    def _advice(self, error: BaseException) -> str:
        """The error, with the way to pick another metrics port where the job file takes
        its port from an environment variable (``${METRICS_PORT:-9400}``, the demo's
        own in config/demo.yaml): that variable, not the file, is what to change."""
        message = str(error)
        cause, _, hint = message.partition("); ")
        taken = hint.startswith(("choose another metrics.port", "nothing listens on port"))
        busy = message.startswith("metrics: cannot listen on") and taken
        variable = _port_variable(self.resolved.path.read_text()) if busy else None
        if variable is None:
            return message
        advice = f"set {variable} to another port (0 picks a free one"
        if hint.startswith("nothing listens on port"):
            # Kept: the port is a connection's end, not another server's.
            advice = f"{hint.split(': ', maxsplit=1)[0]}: {advice}; one below the host's " + (
                "range for outgoing connections, net.ipv4.ip_local_port_range, stays free"
            )
        return f"{cause}); {advice})"

    def _replicate(
        self, runtime: LocalRuntime, workload: Workload, failure: list[BaseException]
    ) -> bool:
        """Write, watch, check; True when every destination equals the source."""
        runtime.started.wait(60)
        if failure:
            return False
        if runtime.metrics_port is not None:
            host = self.job.metrics.host
            reachable = _reachable(host)
            base = f"http://{metrics_address(reachable, runtime.metrics_port)}"
            wide = (
                "" if reachable == host else f" (listening on every interface: metrics.host {host})"
            )
            self.console.print(f"metrics: {base}/metrics  health: {base}/healthz{wide}")
        else:
            self.console.print(
                "metrics are off (metrics.enabled: false): no lag tells when the destinations "
                f"have caught up, so the check comes after the settle time "
                f"({self.options.settle_timeout_s:g}s, --settle-timeout)"
            )
        started = time.monotonic()
        workload.start()
        converged = self._watch(runtime, workload, started)
        if runtime.failure is not None and not failure:
            error = logs.redact(str(runtime.failure))
            self.console.print(f"[red]the replicator stopped on an error: {error}[/]")
        if workload.error is not None or failure or runtime.failure is not None:
            return False
        # Checked while the replicator still runs, so that its metrics can be read
        # against the result (--linger), a failed check's above all.
        equal = self._report(converged, workload)
        if self.options.linger_s > 0:
            self._linger(runtime)
        return equal

    def _linger(self, runtime: LocalRuntime) -> None:
        where = ""
        if runtime.metrics_port is not None:
            listen = metrics_address(_reachable(self.job.metrics.host), runtime.metrics_port)
            where = f": curl http://{listen}/metrics"
        self.console.print(
            f"the replicator keeps running for {self.options.linger_s:g}s{where} (Ctrl-C to stop)"
        )
        time.sleep(self.options.linger_s)

    def _watch(self, runtime: LocalRuntime, workload: Workload, started: float) -> bool:
        """Show progress until the workload is done and the destinations match (or time out)."""
        settle_deadline: float | None = None
        converged = False
        live = (
            # stderr taken through the display only where it is that terminal too (with
            # `2>file` the log lines go to the file, as the processors' do).
            Live(
                console=self.console,
                refresh_per_second=4,
                transient=False,
                redirect_stderr=sys.stderr.isatty(),
            )
            if self.console.is_terminal
            else None
        )
        last_line = 0.0
        printed: str | None = None  # the last line printed
        if live:
            live.start()
        try:
            while runtime.failure is None:
                view = self._view(runtime, workload, started)
                if live:
                    live.update(view)
                elif time.monotonic() - last_line >= 5:
                    printed = self._line(runtime, workload, started)
                    self.console.print(printed)
                    last_line = time.monotonic()
                if not workload.is_alive():
                    if settle_deadline is None:
                        settle_deadline = time.monotonic() + self.options.settle_timeout_s
                    if self._caught_up(runtime) and not self._differences():
                        converged = True
                        break
                    if time.monotonic() > settle_deadline:
                        break
                time.sleep(0.5)
        finally:
            if live:
                live.update(self._view(runtime, workload, started))
                live.stop()
        if not live:  # the figures the check is read against, not those of up to 5 s ago
            line = self._line(runtime, workload, started)
            if line != printed:  # not the same figures twice in a row
                self.console.print(line)
        return converged

    def _samples(self, runtime: LocalRuntime) -> list[Sample]:
        server = runtime.metrics_server  # the demo reads its own runtime's metrics
        return server.samples() if server is not None else []

    def _per_destination(self, samples: list[Sample]) -> dict[str, dict[str, float]]:
        """Each destination's write outcomes and largest lag, from the series there are.

        A figure without its series is unknown, and left out: metrics may be off, or no
        processor has reported on that destination yet. A destination with any series has
        reported: an outcome counter it lacks is one not counted yet, 0."""
        stats: dict[str, dict[str, float]] = {label: {} for label in self.destinations}
        for name, labels, value in samples:
            label = labels.get("destination")
            if label not in stats:
                continue
            if name == "replicator_writes_total":
                key = labels["outcome"]
                stats[label][key] = stats[label].get(key, 0) + value
            elif name == "replicator_replication_lag_seconds":
                stats[label]["lag"] = max(stats[label].get("lag", 0.0), value)
        return stats

    def _squashed(self, samples: list[Sample]) -> str:
        """Changes replaced by a later change to their item before they were written: read
        but never counted under a destination's outcomes, so read exceeds applied."""
        counts = [v for n, _, v in samples if n == "replicator_squashed_total"]
        if not counts:
            return UNKNOWN
        self._shown_squashed = True
        return str(int(sum(counts)))

    def _view(self, runtime: LocalRuntime, workload: Workload, started: float) -> Table:
        progress = runtime.progress()
        samples = self._samples(runtime)  # collected once a refresh
        read = sum(p.records_delivered for p in progress)
        title = (
            f"{time.monotonic() - started:5.1f}s  source changes {workload.stats.total}  "
            f"stream records read {read}  squashed {self._squashed(samples)}  "
            f"shards {len(progress)}"
        )
        table = Table(title=title, title_justify="left")
        # A name too long for the terminal is folded onto more lines, never cut: two
        # destinations whose names differ at the end would look alike.
        table.add_column("destination", overflow="fold")
        for column in ("applied", "lost conflict", "dead-lettered", "lag (s)"):
            table.add_column(column, justify="right")
        for label, stats in self._per_destination(samples).items():
            table.add_row(label, *_figures(stats))
        return table

    def _line(self, runtime: LocalRuntime, workload: Workload, started: float) -> str:
        progress = runtime.progress()
        samples = self._samples(runtime)  # collected once a line
        parts = [
            f"{time.monotonic() - started:5.1f}s",
            f"source changes {workload.stats.total}",
            f"read {sum(p.records_delivered for p in progress)}",
            f"squashed {self._squashed(samples)}",
        ]
        for label, stats in self._per_destination(samples).items():
            applied, lost, dead, lag = _figures(stats)
            lag += "s" if "lag" in stats else ""
            parts.append(
                f"{label}: applied {applied} lost conflicts {lost} dead letters {dead} lag {lag}"
            )
        return "  ".join(parts)

    def _caught_up(self, runtime: LocalRuntime) -> bool:
        """Every destination's lag known, and 0: an unknown one is never caught up."""
        stats = self._per_destination(self._samples(runtime))
        return all(s.get("lag") == 0.0 for s in stats.values())

    def _differences(self) -> dict[str, list[Any]]:
        source_items = tables.scan_all(self.source, self.job.source.table)
        found = {}
        for label, (ddb, table) in self.destinations.items():
            differences = compare(source_items, tables.scan_all(ddb, table), KEY_NAMES)
            if differences:
                found[label] = differences
        return found

    def _report(self, converged: bool, workload: Workload) -> bool:
        source_items = tables.scan_all(self.source, self.job.source.table)
        stats = workload.stats
        self.console.print(
            f"\n[bold]convergence check[/]: {counted(len(source_items), 'item')} in the source "
            f"after {counted(stats.puts, 'put')}, {counted(stats.updates, 'update')}, "
            f"{counted(stats.deletes, 'delete')}"
        )
        self.console.print(rate_line(stats.total, workload.elapsed_s, self.options.rate))
        if self._shown_squashed:
            self.console.print(
                "  (squashed: changes replaced by a later change to the same item before "
                "they were written; each destination settles the rest: applied, unchanged, "
                "lost or dead-lettered)"
            )
        all_equal = True
        for label, (ddb, table) in self.destinations.items():
            differences = compare(source_items, tables.scan_all(ddb, table), KEY_NAMES)
            if not differences:
                self.console.print(f"  [green]{label}: equal[/] (every item compared)")
                continue
            all_equal = False
            self.console.print(f"  [red]{label}: {counted(len(differences), 'difference')}[/]")
            for difference in differences[:10]:
                detail = f" ({', '.join(difference.attributes)})" if difference.attributes else ""
                self.console.print(f"    {difference.kind} {describe(difference.key)}{detail}")
        if all_equal:
            self.console.print("[bold green]converged: every destination equals the source[/]")
        elif not converged:
            self.console.print("[bold red]not converged within the settle time[/]")
        return all_equal
