"""What both runtimes do around their work, written once: logs bound to the task, the
metrics directory shared with the processor children and the server that reads it, and
stop signals.

The local runtime and the KCL launcher differ in what they run (shard workers, or the
Java daemon) and in when the server starts serving (after the leases are ready, or after
the daemon started); the scaffold around them is this module's.
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client.registry import Collector

from replicator import entry, logs
from replicator.config.model import ResolvedJob
from replicator.metrics import multiprocess
from replicator.metrics.server import LagFloors, MetricsServer, ProcessSamples
from replicator.watermark import collector as watermark

log = structlog.get_logger(__name__)


def begin(resolved: ResolvedJob, runtime: str) -> None:
    """Logs as the job asks, every line naming the task and the runtime."""
    logs.configure(resolved.job.logging.level, resolved.job.logging.format.value)
    logs.bind_everywhere(job=str(resolved.path), task=resolved.task_name, runtime=runtime)
    for caution in resolved.job.cautions:
        log.warning(caution)


@dataclass
class Served:
    """The metrics directory the children write to, what is read of it (the health
    watch's warnings in the log, with metrics on or off), and the server (None when
    metrics are off): bound to its port already, serving once ``start`` is called."""

    samples: multiprocess.SamplesDirectory
    read: ProcessSamples
    server: MetricsServer | None
    marks: list[watermark.WatermarkCollector]

    def start(self) -> int | None:
        """Serve, and start reading the watermarks and judging health in the background;
        the port (useful when the job asked for port 0). No thread runs before this: the
        KCL launcher starts its daemon first (a fork while other threads run can inherit
        their locks)."""
        for mark in self.marks:
            mark.start()  # read in the background: a scrape shows what was read
        if self.server is None:
            self.read.start_watch()
            return None
        self.server.start()
        return self.server.port


@contextlib.contextmanager
def metrics_served(
    resolved: ResolvedJob,
    problems: Callable[[], list[str]],
    extra: Sequence[Collector],
    lag_floors: LagFloors | None = None,
) -> Iterator[Served]:
    """The metrics directory and server, removed and stopped however the run ends. The
    port is bound on entry (a runtime enters this through :class:`MetricsHold`, before
    its preflight creates anything); no thread is started before ``Served.start``."""
    job = resolved.job
    # A job that serves no metrics keeps its samples in a directory of its own: the
    # operator's $PROMETHEUS_MULTIPROC_DIR (set for a whole container, say) is for the
    # job that serves them, and is neither emptied nor locked by this one.
    samples = multiprocess.prepare(private=not job.metrics.enabled)
    server: MetricsServer | None = None
    read: ProcessSamples | None = None
    marks: list[watermark.WatermarkCollector] = []
    try:
        if job.metrics.enabled:
            marks = watermark.collectors(resolved)
            server = MetricsServer(
                job.metrics.host,
                job.metrics.port,
                samples.path,
                problems=problems,
                stall_after_s=job.metrics.stall_after_s,
                extra=[*extra, *marks],
                lag_floors=lag_floors,
            )
            read = server.process_samples
        else:
            read = ProcessSamples(
                samples.path, problems, job.metrics.stall_after_s, lag_floors=lag_floors
            )
        yield Served(samples, read, server, marks)
    finally:
        for mark in marks:
            mark.stop()
        if server is not None:
            server.stop()  # its ProcessSamples too
        elif read is not None:
            read.stop()
        multiprocess.discard(samples)


class MetricsHold:
    """:func:`metrics_served` entered when :meth:`bind` is first called and left by
    :meth:`close` (or at the end of a ``with`` block), however the start goes.

    Both runtimes call ``bind`` from the preflight's ``before_creating``: once the checks
    that create nothing have passed, before the first step that creates a table or a
    directory. A port in use then refuses the start (exit 3) before anything is created,
    and the socket stays bound from there until ``Served.start`` serves it: no other
    process can take the port in between."""

    def __init__(
        self,
        resolved: ResolvedJob,
        problems: Callable[[], list[str]],
        extra: Sequence[Collector],
        lag_floors: LagFloors | None = None,
    ) -> None:
        self._enter = functools.partial(metrics_served, resolved, problems, extra, lag_floors)
        self._held = contextlib.ExitStack()
        self.served: Served | None = None

    def bind(self) -> Served:
        """The port bound and the metrics directory made (once; later calls return them)."""
        if self.served is None:
            self.served = self._held.enter_context(self._enter())
        return self.served

    def close(self) -> None:
        """The server stopped and the port let go, the metrics directory removed."""
        self.served = None
        self._held.close()

    def __enter__(self) -> MetricsHold:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def stopped_while_starting(message: str) -> None:
    """Log the held stop signal that ended the start-up before the runtime's handlers
    were in place (the preflight asks :func:`replicator.entry.stop_held` between steps)."""
    held = entry.take_held_signal()
    log.info("stop requested", signal=held.name if held else None, during="preflight")
    log.info(message)


@contextlib.contextmanager
def stop_signals(
    stop: Callable[[signal.Signals], None], *, relay_later: bool = False
) -> Iterator[entry.SignalRelay]:
    """SIGTERM, SIGINT and SIGHUP (:func:`replicator.entry.stop_signals`) ask ``stop``
    for a clean stop, naming the signal (a second one may end the run with its number);
    the previous handlers are back afterwards. A signal held since the command started
    (:mod:`replicator.entry`) asks at once.

    The first signal again within :data:`replicator.entry.REPEAT_S` (``timeout``
    signals the run and then its process group; never SIGINT) is the same request:
    neither logged nor asked again, so that it cannot count as the second request, which
    the KCL runtime answers by killing its daemon.

    ``stop`` is asked on a thread of its own (:class:`replicator.entry.SignalRelay`),
    started at once, or with ``relay_later`` by the caller (``relay.start()``, the
    relay yielded) once it has forked what must be forked while it is the one thread."""
    stops = entry.stop_signals()
    previous: dict[signal.Signals, Any] = {sig: signal.getsignal(sig) for sig in stops}
    requests = entry.StopRequests()

    def on_signal(signum: int, at: float) -> None:
        if requests.repeated(signum, at):
            return
        log.info("stop requested", signal=signal.Signals(signum).name)
        stop(signal.Signals(signum))

    relay = entry.SignalRelay(on_signal)  # acted on off the handler: see SignalRelay
    if not relay_later:
        relay.start()

    # Blocked while the handlers go in and the held signal is asked for: one arriving
    # meanwhile waits for the handlers, and is a repeat or not by the held one's time.
    before = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        for sig in previous:
            signal.signal(sig, relay.handler)
        held = entry.take_held()
        if held is not None:  # it came while the command was starting
            requests.repeated(held[0], held[1])
            log.info("stop requested", signal=held[0].name, during="start-up")
            stop(held[0])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    try:
        yield relay
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        relay.close()  # after any signal still queued
