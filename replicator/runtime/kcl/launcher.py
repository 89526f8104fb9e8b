"""``replicator run`` with ``runtime: kcl``: the Java daemon under a small supervisor.

The daemon (the stock MultiLangDaemon for a Kinesis source, the replicator's DynamoDB
Streams launcher otherwise) balances shards between every worker of the task name and
runs one processor child per shard it holds. This process prepares its properties and
metrics directory, serves ``/metrics`` and ``/healthz`` for all of them, and owns the
daemon's lifetime:

* SIGTERM/SIGINT/SIGHUP are passed to the daemon alone (as a SIGTERM), whose shutdown
  hook asks each child to checkpoint and stop; a second signal (not a repeat of the
  first within a second: supervisor.stop_signals), or a daemon still alive well after
  its grace time, gets the daemon's whole process group killed.
* The daemon runs in a process group of its own; when it has exited, whatever is left
  in that group (a child that did not notice) is given a moment and then killed, so no
  processor runs on unsupervised.
* If this process dies without cleaning up (kill -9), the kernel kills the daemon too
  (Linux parent-death signal), and the children, whose input closes, follow.
* A stop this process asked for ends with 0 once the daemon has answered the SIGTERM it
  was sent (the JVM's 143, after its shutdown hook let every processor checkpoint, or at
  once while the KCL is still starting and no processor has run), so
  restart policies and service managers see a clean stop. Any other end is a failure,
  with one line saying how: the daemon exiting on its own is exit 1 whatever its status,
  even 0 (the launcher returns 0 when the KCL's scheduler gives up starting, and a
  restart policy must see that); a signal N someone else sent it is 128 + N; a graceful
  stop that did not complete (the daemon's 1, or killed when overdue) is 1; killed on a
  second stop request, 128 + that request's signal, as a second one while starting
  (replicator.entry). The daemon does not start a new child when one fails, so run the
  replicator under a restart policy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from replicator import logs, scratch
from replicator.aws import clients, tables
from replicator.config.model import ResolvedJob, StreamKind
from replicator.entry import stop_held
from replicator.exceptions import DaemonStopped, EnvironmentProblem, KclUnavailable
from replicator.metrics import multiprocess
from replicator.metrics.server import MetricsServer
from replicator.runtime import hostlock, preflight, supervisor
from replicator.runtime.jobcopy import JOB_FILE_ENV, write_job_copy
from replicator.runtime.kcl import awaited, daemon_log, java
from replicator.runtime.kcl.claim_watch import ClaimWatch
from replicator.runtime.kcl.held import HeldWatch
from replicator.runtime.kcl.idle import IdleWatch
from replicator.runtime.kcl.leader_lock import give_up_leader_lock
from replicator.runtime.kcl.properties import (
    check_template,
    render_properties,
    shutdown_grace_ms,
)
from replicator.runtime.kcl.stream_watch import StreamWatch
from replicator.shards import ownership
from replicator.shards.fence import WORKER_ID_ENV

log = structlog.get_logger(__name__)

# After the daemon has exited, how long its children get to notice and exit by themselves.
CHILDREN_EXIT_S = 5.0
# After the grace time the daemon was given on SIGTERM, how much longer before SIGKILL.
STOP_MARGIN_S = 15.0
_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1
# Lines of daemon output that mean the classpath, not the job, is at fault: a class that
# cannot be loaded or linked, or the AWS SDK's SdkClientException naming the HTTP client
# it cannot find (a netty or apache jar missing). A LinkageError is matched by its class
# name, so that the JVM's "Error: LinkageError occurred while loading main class" gives
# way to the line after it, which says which error.
_CLASSPATH_FAILURE = re.compile(
    r"Could not find or load main class|NoClassDefFoundError|UnsupportedClassVersionError"
    r"|Invalid or corrupt jarfile|ClassFormatError|ClassNotFoundException|NoSuchMethodError"
    r"|NoSuchFieldError|AbstractMethodError|IncompatibleClassChangeError"
    r"|java\.lang\.LinkageError|ServiceConfigurationError|Unable to load an HTTP implementation"
)
# How the run's final line begins when the daemon ended with no stop asked of it.
_STOPPED_UNASKED = "the KCL daemon stopped on its own without being asked to"
# The JVM refusing its own options (a heap size it cannot read, an unknown option): the
# line before "Could not create the Java Virtual Machine" says which.
_JVM_REFUSED = "Could not create the Java Virtual Machine"
# The launcher refusing a setting it cannot work with (an IllegalArgumentException of its
# configuration: a credentials provider that gives none, an unreadable property), in one
# line, before the KCL starts (docker/launcher: DynamoDbStreamsMultiLangDaemon.main).
_CANNOT_START = "Cannot start: "
# The JVM failing as it initialises with options it read (an initial heap above the
# maximum, a heap too small to start in): the line after this one says why.
_VM_INIT_FAILED = "Error occurred during initialization of VM"
# How long a line of the daemon's output that may be followed by its stack trace is held.
_HELD_S = 0.25


@dataclass(frozen=True)
class PreparedRun:
    argv: list[str]
    properties: Path
    jars_dir: Path
    # The DynamoDB stream the daemon reads (None for a Kinesis source).
    stream_arn: str | None = None
    # The job's source as the lease table's owner tag names it (shards/ownership.py), and
    # how the claim at start found the table: ABSENT (the KCL creates it, or AWS did not
    # answer) is claimed by the run's watch; UNCHECKED was warned of once, not watched.
    source_identity: str = ""
    lease_table_claim: ownership.Claim = ownership.Claim.CLAIMED


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn arming SIGKILL for when the process that started the child dies.

    libc is looked up here, in the parent: between fork and exec the child should do
    as little as possible.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def shown_command(argv: list[str]) -> str:
    """``argv`` as a log line shows it, without secrets: each part redacted on its own, and
    the whole value of a ``-Dname=value`` whose name marks a secret (proxyPassword), which
    the redaction of a text would end at its first blank (a value quoted in
    $REPLICATOR_KCL_JVM_OPTIONS may hold several words)."""
    shown = []
    for part in argv:
        name, equals, _ = part.partition("=")
        if part.startswith("-D") and equals and logs.redact(f"{name}=_") != f"{name}=_":
            shown.append(f"{name}={logs.REDACTED}")
        else:
            shown.append(logs.redact(part))
    return " ".join(shown)


_JVM_CAUGHT = frozenset(128 + sig for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))


class DaemonProcess:
    """The daemon in its own process group, its output copied to our stderr as log
    records (one JSON object a line, unless the logs are console columns)."""

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        grace_s: float,
        output: IO[str] | None = None,
        as_json: bool | None = None,
        level: str = "debug",
        dynamodb_streams: bool = False,
    ) -> None:
        self.argv = argv
        self.dynamodb_streams = dynamodb_streams  # the adapter's daemon (daemon_log.py)
        self.env = dict(env)
        self.grace_s = grace_s
        self.output = output or sys.stderr
        # JSON lines unless the logs are console columns (logging.format)
        self.as_json = logs.renders_json() if as_json is None else as_json
        # The job's logging.level, which the daemon's records are held to as the
        # replicator's own are (the daemon's logging is not configured from the job alone:
        # a logback configuration of one's own sets its own levels).
        self.level_rank = logs.LEVELS[level]
        self.classpath_failure: str | None = None
        # What the launcher said it cannot start with (its "Cannot start:" line).
        self.cannot_start: str | None = None
        self.jvm_refused: str | None = None
        # How the daemon's end was a failure (the run's final line), once it has ended.
        self.failure: str | None = None
        # The daemon's exit status (128 + N for a signal N), once it has ended.
        self.status: int | None = None
        self.printed = False  # whether the daemon wrote a line of output, blank ones aside
        self._previous_line = ""
        self._reason_follows = False  # the JVM's next line says why it could not start
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._stop_requests: list[signal.Signals] = []
        # A clean stop this process asked for itself (the source's stream replaced: see
        # stream_watch.py), not an operator's signal: an operator's first signal after it
        # is still a first request (a graceful stop already under way), not the second
        # that kills the daemon.
        self._stop_of_our_own = False
        self._stop_deadline: float | None = None
        self._stop_sent = 0  # the operator's stop requests acted on
        self._shut_down_asked = False  # SIGTERM sent to the daemon (once)
        self._killed_on: signal.Signals | None = None  # the second stop request's signal
        self._processors_killed = 0  # processors running when a second request killed all
        self._overdue = False

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the daemon has not been started")
        return self._process.pid

    def start(self) -> None:
        """Start the daemon in a session (and process group) of its own.

        The parent-death signal is armed between fork and exec, which is safe only while
        no other thread runs (a thread holding a lock at the fork leaves it held in the
        child for good): ``run_kcl`` starts the daemon before any thread, and should one
        be running all the same, the daemon starts without that signal, with a warning.
        """
        arm = _parent_death_signal()
        if arm is not None and threading.active_count() > 1:
            log.warning(
                "threads run already; the daemon starts without the parent-death signal "
                "(it is not killed with this process on kill -9)",
                threads=[thread.name for thread in threading.enumerate()],
            )
            arm = None
        self._process = subprocess.Popen(  # noqa: S603  # argv built from the checked job
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=arm,  # noqa: PLW1509  # only while this is the one thread
        )
        self._pump = threading.Thread(target=self._copy_output, name="kcl-output", daemon=True)
        self._pump.start()
        log.info("KCL daemon started", pid=self._process.pid, command=shown_command(self.argv))

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def problems(self) -> list[str]:
        """What ``/healthz`` reports about the daemon."""
        # A daemon ending after a stop was asked for is the stop, not a fault: judged one,
        # every requested stop logged a spurious "unhealthy" just before its end.
        return [] if self.running() or self.stop_requested else ["the daemon is not running"]

    @property
    def stop_requested(self) -> bool:
        return bool(self._stop_requests) or self._stop_of_our_own

    def request_stop(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """Called from a signal handler: only notes it; the wait loop acts on it."""
        self._stop_requests.append(signum)

    def stop_of_our_own(self) -> None:
        """Ask for the daemon's clean stop from this process (any thread): the wait loop
        sends it SIGTERM as for a first stop signal, which an operator's signal then
        does not count as the second."""
        self._stop_of_our_own = True

    def wait(self) -> int:
        """Wait for the daemon to exit (forwarding stop requests); the run's exit code,
        with :attr:`failure` saying why when the end is not the clean stop asked for."""
        process = self._process
        if process is None:
            raise RuntimeError("the daemon has not been started")
        while process.poll() is None:
            self._act_on_stop_requests()
            time.sleep(_POLL_S)
        status = process.returncode
        self.status = 128 - status if status < 0 else status
        if self._killed_on is not None and not self._processors_killed:
            self.failure = (
                f"a second stop request ({self._killed_on.name}) while the KCL daemon was "
                "stopping: it was killed with no processor running (any that ran had ended "
                "its shard's stop; only the daemon's own shutdown was cut short)"
            )
            return 128 + self._killed_on
        if self._killed_on is not None:
            self.failure = (
                f"a second stop request ({self._killed_on.name}) while the KCL daemon was "
                "stopping: it and its processors were killed, and shards stopping then did "
                "not checkpoint (they resume from their last checkpoint)"
            )
            return 128 + self._killed_on
        if self._overdue:
            self.failure = (
                f"the KCL daemon did not stop within {self.grace_s + STOP_MARGIN_S:g} s of "
                "the stop request: it and its processors were killed, and shards still "
                "stopping did not checkpoint (they resume from their last checkpoint)"
            )
            return 1
        # The JVM catches SIGTERM, SIGINT and SIGHUP, runs its shutdown hooks (the
        # KCL's graceful stop) and exits 128 + the signal's number itself.
        caught = self.status in _JVM_CAUGHT
        if self.stop_requested and (self.status == 0 or caught):
            # Whichever signal reached the JVM: ours, or one sent to every process at once.
            log.info("the daemon stopped as asked")
            return 0
        if status < 0 or caught:
            self.failure = (
                f"the KCL daemon was ended by {signal.Signals(self.status - 128).name}, which "
                "this process did not send"
            )
            return self.status
        if self.stop_requested:
            self.failure = (
                f"the KCL daemon's graceful stop did not complete (status {status}; its log "
                "above says why)"
            )
            return 1
        # The launcher exits 0 when the KCL's scheduler gave up starting (its lease
        # coordinator could not initialise): nobody asked it to stop, so it failed.
        self.failure = f"{_STOPPED_UNASKED} (status {status}; its log above says why)"
        return 1

    def _act_on_stop_requests(self) -> None:
        if self._stop_of_our_own and not self._shut_down_asked:
            log.info("asking the daemon to shut down", grace_s=self.grace_s)
            self._ask_to_shut_down()
        requests = len(self._stop_requests)
        if requests > self._stop_sent:
            self._stop_sent = requests
            if requests == 1 and self._shut_down_asked:
                log.info("stop requested; the daemon is shutting down already")
            elif requests == 1:
                log.info("stop requested; asking the daemon to shut down", grace_s=self.grace_s)
                self._ask_to_shut_down()
            elif self._killed_on is None:
                # Counted first: processors all gone by then have ended their shards'
                # stop, and the last line must not say they were cut short.
                self._processors_killed = len(children_of(self.pid))
                log.warning(
                    "second stop request; killing the daemon and its processors",
                    processors=self._processors_killed,
                )
                self._killed_on = self._stop_requests[1]
                self._signal(signal.SIGKILL, group=True)
        if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
            log.error("the daemon did not stop in time; killing it and its processors")
            self._stop_deadline = None
            self._overdue = self._killed_on is None
            self._signal(signal.SIGKILL, group=True)

    def _ask_to_shut_down(self) -> None:
        """SIGTERM to the daemon (its graceful stop), bounded by the grace and a margin."""
        self._shut_down_asked = True
        self._signal(signal.SIGTERM, group=False)
        self._stop_deadline = time.monotonic() + self.grace_s + STOP_MARGIN_S

    def _signal(self, signum: int, *, group: bool) -> None:
        try:
            if group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def clean_up(self, wait_s: float = CHILDREN_EXIT_S) -> list[int]:
        """After the daemon has gone: kill what is left of its group; the pids killed.

        The daemon's output is read to its end only then, as a child may hold it open.
        """
        if self._process is None:
            return []
        if self._process.poll() is None:
            self._signal(signal.SIGKILL, group=True)
            self._process.wait()
        deadline = time.monotonic() + wait_s
        while group_members(self.pid) and time.monotonic() < deadline:
            _reap_orphans()
            time.sleep(_POLL_S)
        left = group_members(self.pid)
        if left:
            log.warning("processors outlived the daemon; killing them", pids=left)
            self._signal(signal.SIGKILL, group=True)
            deadline = time.monotonic() + wait_s
            while group_members(self.pid) and time.monotonic() < deadline:
                _reap_orphans()
                time.sleep(_POLL_S)
        if self._pump is not None:
            self._pump.join(timeout=wait_s)
        return left

    def processor_count(self) -> int:
        """Live children of the daemon: one processor per shard it holds."""
        if not self.running():
            return 0
        return len(children_of(self.pid))

    def _copy_output(self) -> None:
        """Copy the daemon's output to ours as log records (replicator.runtime.kcl.daemon_log).

        The pipe is read as it fills rather than by lines, so that a line held to see
        whether a stack trace follows it is written once the daemon has been quiet for a
        moment, not at its next line.
        """
        process = self._process
        if process is None or process.stdout is None:
            return
        fd = process.stdout.fileno()
        converter = daemon_log.DaemonLog(dynamodb_streams=self.dynamodb_streams)
        unfinished = b""
        while True:
            if converter.pending and not select.select([fd], [], [], _HELD_S)[0]:
                self._write(converter.flush())
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, unfinished = (unfinished + chunk).split(b"\n")
            for raw in lines:
                self._write(converter.feed(self._seen(raw.decode("utf-8", errors="replace"))))
        if unfinished:
            self._write(converter.feed(self._seen(unfinished.decode("utf-8", errors="replace"))))
        self._write(converter.flush())

    def _seen(self, line: str) -> str:
        """``line``, after noting what it says of a daemon that cannot start (each line of
        a logged event's message and stack trace on its own)."""
        for text in daemon_log.text_lines(line):
            stripped = text.strip()
            self.printed = self.printed or bool(stripped)
            if self.classpath_failure is None and _CLASSPATH_FAILURE.search(text):
                self.classpath_failure = stripped
            if self.cannot_start is None and _CANNOT_START in stripped:
                # Anywhere in the line: a logback configuration of one's own may put
                # the time and level before the message.
                self.cannot_start = stripped.split(_CANNOT_START, 1)[1].strip()
            if self._reason_follows and stripped:
                self.jvm_refused = f"{self.jvm_refused}: {stripped}"
                self._reason_follows = False
            elif self.jvm_refused is None and _JVM_REFUSED in text:
                self.jvm_refused = self._previous_line or stripped
            elif self.jvm_refused is None and _VM_INIT_FAILED in text:
                self.jvm_refused = stripped
                self._reason_follows = True
            self._previous_line = stripped
        return line

    def _write(self, entries: list[daemon_log.Entry]) -> None:
        for entry in entries:
            # A record of no level, or of one logs.LEVELS lacks, is written whatever the
            # job's level.
            rank = logs.LEVELS.get(str(entry.record.get("level", "")).lower())
            if rank is not None and rank < self.level_rank:
                continue
            logs.write_line(self.output, daemon_log.render(entry, as_json=self.as_json))


def _proc_stats() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        yield int(entry.name), fields[0], int(fields[1]), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    return [pid for pid, state, _, group in _proc_stats() if group == pgid and state != "Z"]


def children_of(pid: int) -> list[int]:
    return [child for child, state, parent, _ in _proc_stats() if parent == pid and state != "Z"]


def _reap_orphans() -> None:
    """As PID 1 in a container, orphaned processors become our children: reap them.

    Only then: elsewhere orphans go to init, and waiting on any child here could take
    an exit status that belongs to someone else's subprocess.
    """
    if os.getpid() != 1:
        return
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class _DaemonCollector(Collector):
    def __init__(self, daemon: Callable[[], DaemonProcess | None]) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        owned = GaugeMetricFamily(
            "replicator_shards_owned", "Shards this worker processes now (processor children)."
        )
        daemon = self.daemon()
        owned.add_metric([], daemon.processor_count() if daemon is not None else 0)
        yield owned


def prepare_run(
    resolved: ResolvedJob,
    directory: Path,
    environ: Mapping[str, str] = os.environ,
    stopped: Callable[[], bool] = lambda: False,
    before_creating: Callable[[], object] = lambda: None,
) -> PreparedRun:
    """Check java, jars and AWS, and write the properties file into ``directory``, with
    the copy of the job file every processor of the run reads.

    The local checks come first: they are cheap and need no network. ``stopped`` is asked
    between the preflight's steps (:class:`preflight.Stopped` when it says yes);
    ``before_creating`` is called before its first step that creates something
    (``run_kcl`` binds the metrics port there).
    """
    # What the KCL cannot work with in the job file itself (source.role_arn) was refused
    # when the job was loaded (replicator/config/cross_checks.py).
    installation = java.locate(resolved, environ)
    check_template(resolved.job)
    info = preflight.check(resolved, stopped, before_creating)
    identity = ownership.source_identity(resolved, info.stream_arn)
    source = resolved.job.source
    try:
        found = ownership.claim(resolved, identity)
    except (ClientError, BotoCoreError) as error:
        # Throttled, say (TagResource is limited per account, and a fleet restarts at
        # once): the run's watch claims it, retrying.
        where = tables.where(source.region, source.endpoint_url, source.role_arn)
        log.warning(
            "could not claim the lease table at start; the run claims it once it can",
            lease_table=resolved.lease_table,
            where=where,
            error=str(error),
        )
        found = ownership.Claim.ABSENT
    job = resolved.job
    worker_id = job.kcl.worker_id or socket.gethostname()
    stream_arn = info.stream_arn if job.source.stream.kind is StreamKind.DYNAMODB_STREAMS else None
    job_copy = write_job_copy(resolved, directory)
    properties = directory / f"{resolved.task_name}.properties"
    properties.write_text(
        render_properties(resolved, worker_id=worker_id, stream_arn=stream_arn, job_copy=job_copy),
        encoding="utf-8",
    )
    argv = java.daemon_command(resolved, installation, properties, environ)
    return PreparedRun(
        argv=argv,
        properties=properties,
        jars_dir=installation.jars_dir,
        stream_arn=stream_arn,
        source_identity=identity,
        lease_table_claim=found,
    )


def _worker_id(resolved: ResolvedJob) -> str:
    return resolved.job.kcl.worker_id or socket.gethostname()


def _worker_lock(resolved: ResolvedJob) -> hostlock.HostLock:
    """Two runs of one worker (task, lease table's place and worker id) on one host would
    each hold the other's leases as their own and write every change twice, without a
    word from the KCL: the second is refused (exit 5), as the local runtime refuses a
    second run of its task. Workers of other ids on this host share the shards as on
    other hosts."""
    source = resolved.job.source
    lease_table = hostlock.lease_table_place(source.endpoint_url, source.region, source.role_arn)
    place = f"{lease_table} worker {_worker_id(resolved)}"
    path = hostlock.lock_path(Path(tempfile.gettempdir()), resolved.task_name, place)
    return hostlock.HostLock(
        path,
        hint="each worker of a task needs a worker id of its own (kcl.worker_id, by default "
        "the host name): stop that process first, or give this one another worker id "
        f"({hostlock.OTHER_JOB_HINT})",
    )


def _task_lock(resolved: ResolvedJob) -> tuple[hostlock.HostLock, str]:
    """The task's host lock, held shared (hostlock.py), and the lease table's endpoint it
    names: a local runtime of the task on this host holds it exclusively, and a KCL run
    beside it would take its leases under the same worker id (the host name)."""
    source = resolved.job.source
    where = clients.dynamodb(source).meta.endpoint_url
    lock = hostlock.task_lock(
        resolved.task_name,
        where,
        source.region,
        source.role_arn,
        shared=True,
        hint="a local runtime of the task runs here (runtime: local runs one worker per "
        "task name, and a KCL run beside it would take its leases): stop it first "
        f"({hostlock.OTHER_JOB_HINT})",
    )
    return lock, where


def _worker_refused(resolved: ResolvedJob) -> str:
    return f"task {resolved.task_name} with KCL worker id {_worker_id(resolved)!r}"


def run_kcl(
    resolved: ResolvedJob, ready: Callable[[DaemonProcess, MetricsServer | None], Any] | None = None
) -> int:
    """Run the job on the KCL daemon until it exits: 0 after the clean stop asked for,
    else :class:`DaemonStopped` (or :class:`KclUnavailable`) saying how it ended."""
    job = resolved.job
    supervisor.begin(resolved, "kcl")
    daemon: DaemonProcess | None = None
    watch: StreamWatch | None = None
    claim_watch: ClaimWatch | None = None
    idle_watch: IdleWatch | None = None
    held_watch: HeldWatch | None = None

    # The first processor death seen while the daemon ran: the daemon then exits 1 on its
    # own, and the run's final line says what came first.
    deaths: list[awaited.Death] = []

    def died(death: awaited.Death) -> None:
        if not deaths and daemon is not None and daemon.running():
            deaths.append(death)

    def problems() -> list[str]:
        if daemon is None:
            return []
        return daemon.problems() + awaited.unanswered(
            notes,
            job.metrics.stall_after_s,
            on_death=died,
            reads_every_s=job.kcl.idle_time_between_reads_ms / 1000,
            failover_s=job.kcl.failover_time_ms / 1000,
            # A stop's processors end while the lease rows name this worker until they
            # expire: a held lease says nothing then.
            held=None if held_watch is None or daemon.stop_requested else held_watch.since,
        )

    lock = _worker_lock(resolved)
    # Taken with the worker's lock in before_creating: made then, its client resolving
    # credentials only once the local checks (java, jars) have passed.
    task_lock: hostlock.HostLock | None = None
    # Removed on the way out; one a run killed outright left is removed by the next.
    workdir = scratch.make("replicator-kcl-")
    # Each processor's note of the processRecords it has not answered yet (awaited.py).
    notes = workdir.path / "awaited"
    with (
        contextlib.closing(workdir),
        supervisor.MetricsHold(resolved, problems, [_DaemonCollector(lambda: daemon)]) as held,
        contextlib.ExitStack() as let_go,
    ):
        let_go.callback(lock.release)

        def before_creating() -> supervisor.Served:
            # The worker's host lock and the task's (shared with the task's other KCL
            # runs here, refused by a local runtime's), then the metrics port: a second
            # run of this worker here (which has the same port) is told it is one
            # (exit 5), not that its port is taken.
            if not lock.held:
                lock.hold(_worker_refused(resolved))
            nonlocal task_lock
            if task_lock is None:
                task_lock, task_where = _task_lock(resolved)
                let_go.callback(task_lock.release)
                task_lock.hold(f"task {resolved.task_name} on {task_where}")
            return held.bind()

        # Stop signals are still held (replicator.entry) while the preflight runs: one
        # asks it to stop between its steps, a second one ends the command at once. The
        # metrics port is bound once its checks have passed, before it creates anything:
        # a port in use refuses the start having created nothing.
        try:
            prepared = prepare_run(
                resolved, workdir.path, stopped=stop_held, before_creating=before_creating
            )
        except preflight.Stopped:
            supervisor.stopped_while_starting("KCL runtime stopped before it started")
            return 0
        served = before_creating()  # taken and bound by the preflight already
        notes.mkdir()
        # The processors expand ${VAR} in the job's copy from this same environment,
        # and name the operator's file in their messages.
        env = {
            **os.environ,
            multiprocess.ENV: str(served.samples.path),
            JOB_FILE_ENV: str(resolved.path),
            awaited.ENV: str(notes),
            # The processors read their lease with it while a batch is held (fence.py).
            WORKER_ID_ENV: _worker_id(resolved),
        }
        daemon = DaemonProcess(
            prepared.argv,
            env,
            grace_s=shutdown_grace_ms(job) / 1000,
            level=job.logging.level,
            dynamodb_streams=job.source.stream.kind is StreamKind.DYNAMODB_STREAMS,
        )
        try:
            # The relay thread starts once the daemon is started: its parent-death
            # signal is armed only while this process runs one thread (DaemonProcess.start).
            with supervisor.stop_signals(daemon.request_stop, relay_later=True) as relay:
                if daemon.stop_requested:
                    log.info("KCL runtime stopped before it started")
                    return 0
                daemon.start()
                relay.start()
                served.start()
                if prepared.stream_arn is not None and not job.source.stream.arn:
                    watch = StreamWatch(resolved, prepared.stream_arn, daemon.stop_of_our_own)
                    watch.start()
                if prepared.lease_table_claim is not ownership.Claim.UNCHECKED:
                    claim_watch = ClaimWatch(
                        resolved,
                        prepared.source_identity,
                        daemon.stop_of_our_own,
                        claimed=prepared.lease_table_claim is ownership.Claim.CLAIMED,
                    )
                    claim_watch.start()
                idle_watch = IdleWatch(
                    daemon.processor_count, resolved.task_name, job.kcl.failover_time_ms
                )
                idle_watch.start()
                held_watch = HeldWatch(resolved, _worker_id(resolved), job.metrics.stall_after_s)
                held_watch.start()
                log.info(
                    "KCL runtime started",
                    worker_id=_worker_id(resolved),
                    lease_table=resolved.lease_table,
                    properties=str(prepared.properties),
                )
                if ready is not None:
                    threading.Thread(
                        target=ready, args=(daemon, served.server), daemon=True
                    ).start()
                status = daemon.wait()
        finally:
            if watch is not None:
                watch.stop()
            if claim_watch is not None:
                claim_watch.stop()
            if idle_watch is not None:
                idle_watch.stop()
            if held_watch is not None:
                held_watch.stop()
            daemon.clean_up()
            if daemon.failure is not None and not (
                daemon.jvm_refused or daemon.classpath_failure or daemon.cannot_start
            ):
                # Not its graceful stop, which gives up the lock itself; its process group
                # is gone, and the worker's host lock still held (released on leaving).
                give_up_leader_lock(resolved, _worker_id(resolved))
    log.info("KCL daemon exited", status=daemon.status, exit_code=status)
    if watch is not None and watch.replaced is not None:
        raise EnvironmentProblem(watch.replaced)
    if claim_watch is not None and claim_watch.refused is not None:
        raise EnvironmentProblem(claim_watch.refused)
    if daemon.failure is not None and not daemon.stop_requested:
        # A daemon that ended on its own may not have started at all: say why if its
        # output shows the JVM or the classpath at fault.
        if daemon.jvm_refused:
            raise KclUnavailable(
                f"the JVM could not start: {daemon.jvm_refused}; check the options in "
                f"${java.JVM_OPTIONS_ENV}"
            )
        if daemon.classpath_failure:
            raise KclUnavailable(
                f"the KCL daemon could not start from {prepared.jars_dir}: "
                f"{daemon.classpath_failure}; the jars there do not form a working KCL "
                "classpath for this java (see docs/kcl-and-docker.md for the pinned set)"
            )
        if daemon.cannot_start:
            # A setting the launcher refused before the KCL started: exit 4, as a
            # runtime that cannot start as set up (1 would be restarted for ever).
            # The launcher names the properties file it read, which here is this run's
            # temporary one (gone once it exits): the setting is the job file's.
            said = daemon.cannot_start.removeprefix(f"{prepared.properties}: ")
            raise KclUnavailable(
                f"the KCL daemon could not start: {said} (a setting of kcl.extra_properties "
                f"in {resolved.path}, or of the properties template; see "
                "docs/kcl-and-docker.md)"
            )
        if deaths:  # it ran processors: a daemon, whatever it printed
            raise DaemonStopped(
                f"{daemon.failure}; before it ended, {deaths[0].said(time.monotonic())}", status
            )
        if not daemon.printed and daemon.status is not None and daemon.status < 128:
            # A JVM that started, or failed to, always says something: a kcl.java that
            # is no Java runtime (a wrapper script, /bin/true) exits without a word.
            raise DaemonStopped(
                f"{_STOPPED_UNASKED} (status {daemon.status}) and printed nothing: kcl.java "
                f"({daemon.argv[0]}) may not be "
                f"a Java runtime ('{daemon.argv[0]} -version' shows whether it is one); the "
                "command is in the 'KCL daemon started' line above",
                status,
            )
    if daemon.failure is not None:
        raise DaemonStopped(daemon.failure, status)
    return status
