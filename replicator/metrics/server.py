"""The runtime's HTTP endpoint: ``/metrics`` (all processes' samples) and ``/healthz``.

The processor children cannot serve HTTP themselves (there is one per shard, and they
come and go), so the runtime that starts them serves the samples they leave in the
multiprocess directory, plus its own collector.

Every request first deletes the live-gauge files of children that have died, then reads
the directory. The directory is read by one request at a time: a Prometheus scrape and a
health probe arriving together must not both delete the same file, nor read a file the
other has just deleted. Nothing else is done under that lock, and ``/healthz`` reads the
directory only (health is judged from the processes' lag and checkpoint samples), so a
collector that is slow to answer a scrape never holds up a health probe: the container's
HEALTHCHECK gives up after a few seconds, and would restart a replicator that is healthy.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from replicator.exceptions import EnvironmentProblem
from replicator.logs import redact, unfiltered
from replicator.metrics import health as health_rules
from replicator.metrics.multiprocess import reap_dead

log = structlog.get_logger(__name__)

LagFloors = Callable[[], Mapping[str, float]]
"""By shard, while the runtime has awaited its processor's answer to a ``processRecords``
for a second or more, the time (epoch seconds) from which changes may be missing at
every destination: the newest record handed over, or, for an empty batch, its sending
less the reader's distance from the tip (local runtime)."""

Sample = tuple[str, dict[str, str], float]


class ProcessSamples:
    """The processes' samples in the multiprocess directory, and the job's health judged
    from them, for the log every ``watch_every_s`` (see :class:`health_rules.Watch`).

    Apart from the HTTP server because a job that serves no metrics still has processor
    children writing samples, and its operator still needs the "unhealthy" warnings in
    the log (with HTTP off, they are the only health signal it gives) and the runtime
    still needs to know when a shard last settled a change."""

    def __init__(
        self,
        directory: Path,
        problems: Callable[[], list[str]],
        stall_after_s: float,
        watch_every_s: float = 5.0,
        lag_floors: LagFloors | None = None,
    ) -> None:
        self.directory = directory
        self.lag_floors = lag_floors
        self.problems = problems
        self.stall_after_s = stall_after_s
        self.started_at = time.time()
        self._collecting = threading.Lock()
        self._watch_every_s = watch_every_s
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="health-watch", daemon=True)

    def families(self, *, raised: bool = True) -> list[Metric]:
        """The processes' samples, read from the directory after reaping dead processes'
        live gauges (one reader at a time); ``raised``: the lag raised by the runtime's
        floors (:func:`raise_lag`)."""
        with self._collecting:
            reap_dead(self.directory)
            merged = MultiProcessCollector.merge(_readable_files(self.directory), accumulate=True)  # type: ignore[no-untyped-call]
            families = list(merged)
        if raised and self.lag_floors is not None:
            raise_lag(families, self.lag_floors(), time.time())
        return families

    def samples(self) -> list[Sample]:
        return _flat(self.families())

    def health(self) -> health_rules.Health:
        """Judged from the sample files alone: the health rules read only the processes'
        lag and checkpoint times. The runtime's problems quote AWS's errors, which can
        quote a credential: they leave the process redacted, as the logs are."""
        return health_rules.evaluate(
            _flat(self.families(raised=False)),
            now=time.time(),
            stall_after_s=self.stall_after_s,
            started_at=self.started_at,
            problems=[redact(problem) for problem in self.problems()],
            lag_floors=self.lag_floors() if self.lag_floors is not None else None,
        )

    def _watch(self) -> None:
        watch = health_rules.Watch()
        while not self._stopping.wait(self._watch_every_s):
            try:
                watch.look(self.health())
            except Exception as error:  # noqa: BLE001  # the watch must not end; /healthz tells
                log.debug("health watch failed", error=str(error))

    def start_watch(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()


class MetricsServer:
    def __init__(
        self,
        host: str,
        port: int,
        directory: Path,
        problems: Callable[[], list[str]],
        stall_after_s: float,
        extra: Iterable[Collector] = (),
        watch_every_s: float = 5.0,
        lag_floors: LagFloors | None = None,
    ) -> None:
        """``watch_every_s``: how often health is judged for the log (see
        :class:`ProcessSamples`), whether or not anyone asks ``/healthz``."""
        self.process_samples = ProcessSamples(
            directory, problems, stall_after_s, watch_every_s, lag_floors=lag_floors
        )
        self.extra = list(extra)
        server = self

        class Handler(BaseHTTPRequestHandler):
            _with_body = True

            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                """As GET, without the body: load balancers and probes that check the
                status with HEAD must not see 501."""
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                self._with_body = body
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._reply(200, CONTENT_TYPE_LATEST, server.exposition())
                    elif path in ("/healthz", "/health"):
                        result = server.health()
                        self._reply(
                            200 if result.healthy else 503,
                            "application/json",
                            json.dumps(result.as_dict()).encode(),
                        )
                    else:
                        self._reply(404, "text/plain", b"not found: try /metrics or /healthz\n")
                except Exception as error:  # noqa: BLE001  # answered, logged, server lives on
                    log.error("metrics request failed", path=path, error=str(error))
                    said = redact(f"{type(error).__name__}: {error}")
                    self._reply(500, "text/plain", f"{said}\n".encode())

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self._with_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = _listen(host, port, Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self.picked = port == 0
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{address(self.host, self.port)}/metrics"

    def _registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        registry.register(_Collected(self.process_samples.families()))
        registry.register(HealthGauge(self.process_samples.health))
        for collector in self.extra:
            registry.register(collector)
        return registry

    def exposition(self) -> bytes:
        """The text a Prometheus scrape receives."""
        return generate_latest(self._registry())

    def samples(self) -> list[Sample]:
        """Every sample (name, labels, value) as ``/metrics`` would show it now."""
        return _flat(self._registry().collect())

    def file_samples(self) -> list[Sample]:
        """The processes' samples alone (no collector that may wait on the network)."""
        return self.process_samples.samples()

    def health(self) -> health_rules.Health:
        """From the sample files alone (:meth:`ProcessSamples.health`): the other
        collectors may wait on the network, and a health probe must not."""
        return self.process_samples.health()

    def start(self) -> None:
        self._thread.start()
        self.process_samples.start_watch()
        where = {
            "url": self.url,
            "health": f"http://{address(self.host, self.port)}/healthz",
            "port": self.port,
        }
        if self.picked:
            # Shown at every logging level (a warning, past the level's filter): this line
            # is the only way to learn the port, and a scraper set up for a fixed one will
            # not find it.
            unfiltered(__name__).warning(
                "serving metrics",
                **where,
                note="metrics.port is 0: this port was picked at start and changes at each start",
            )
        else:
            log.info("serving metrics", **where)

    def stop(self) -> None:
        self.process_samples.stop()
        if self._thread.is_alive():
            self._httpd.shutdown()  # waits for serve_forever, so only once it runs
        self._httpd.server_close()


# Errors that say the host, not the port, cannot be listened on: an address this host
# does not have, or of a family it does not support.
_HOST_ERRNOS = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


def _listen(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """The server bound to ``host:port``, or :class:`EnvironmentProblem` naming why not."""
    server_class = _IPv6Server if is_ipv6(host) else ThreadingHTTPServer
    try:
        return server_class((host, port), handler)
    except OSError as error:
        if isinstance(error, socket.gaierror) or error.errno in _HOST_ERRNOS:
            hint = (
                "check metrics.host: it must be an address of this host (0.0.0.0 or :: "
                "for all of them)"
            )
        elif error.errno == errno.EADDRINUSE and not _listened_on(port):
            # Nothing answers there: a connection of this host has the port as its own
            # end (ports the kernel hands outgoing connections can be asked for here).
            hint = (
                f"nothing listens on port {port}, but a connection of this host uses it "
                "(an outgoing one, or one closing): choose another metrics.port (0 picks a "
                "free one; one below the host's range for outgoing connections, "
                "net.ipv4.ip_local_port_range, stays free)"
            )
        else:
            hint = "choose another metrics.port (0 picks a free one)"
        raise EnvironmentProblem(
            f"metrics: cannot listen on {address(host, port)} ({error.strerror or error}); "
            f"{hint} or set metrics.enabled: false"
        ) from None


def _listened_on(port: int) -> bool:
    """Whether a socket of this host listens on ``port``, on any address (the kernel's
    tables: a connection to one address would miss a server on another); True when they
    cannot be read, so that only a port known to have no listener changes the hint."""
    read = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6 here, or no /proc
        read = True
        for line in lines:
            fields = line.split()
            # local address as HEX_ADDRESS:HEX_PORT; state 0A is LISTEN
            listening = len(fields) > 3 and fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return not read


def check_listen(host: str, port: int) -> None:
    """Raise what :class:`MetricsServer` would if it were started now: a command that
    creates things before its runtime binds the port (the demo's tables) checks first.
    The port is let go at once; another process may still take it before the server."""
    _listen(host, port, BaseHTTPRequestHandler).server_close()


def is_ipv6(host: str) -> bool:
    return ":" in host


def address(host: str, port: int) -> str:
    """``host:port`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if is_ipv6(host) else f"{host}:{port}"


class _IPv6Server(ThreadingHTTPServer):
    """The HTTP server on an IPv6 address (ThreadingHTTPServer binds IPv4 only)."""

    address_family = socket.AF_INET6


HEALTHY = "replicator_healthy"


def raise_lag(families: list[Metric], floors: Mapping[str, float], now: float) -> None:
    """Raise each shard's lag series to the time since its floor (:data:`LagFloors`): no
    change after the newest one its processor was handed is read until it answers, and
    that one may be applied nowhere yet. A processor that does not run (SIGSTOP, a
    frozen host) leaves its gauges at their last values, which read 0 while its shard's
    changes wait; the runtime, which handed them over, knows better."""
    if not floors:
        return
    for family in families:
        if family.name != health_rules.LAG:
            continue
        family.samples = [
            sample._replace(value=max(sample.value, now - floors[sample.labels["shard"]]))
            if sample.labels.get("shard") in floors
            else sample
            for sample in family.samples
        ]


class HealthGauge(Collector):
    """``/healthz`` as a gauge, judged at each scrape: 1 while it would answer 200, 0
    while 503. A processor that stops answering (SIGSTOP, a deadlock, a frozen host)
    keeps its gauges at their last values (under the KCL its lag too, so the lag alerts
    stay quiet while its shard replicates nothing; the local runtime raises the lag:
    :func:`raise_lag`); the health judgement, which also reads when each processor was
    last heard from, sees it, and Prometheus reads no ``/healthz``."""

    def __init__(self, health: Callable[[], health_rules.Health]) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        try:
            healthy = self._health().healthy
        except Exception as error:  # noqa: BLE001  # /healthz fails too: 0, and /metrics lives on
            log.error("health could not be judged", error=redact(str(error)))
            healthy = False
        yield GaugeMetricFamily(
            HEALTHY,
            "1 while GET /healthz would answer 200 (healthy), 0 while it would answer 503",
            value=1.0 if healthy else 0.0,
        )


class _Collected(Collector):
    """Families collected already, registered beside the other collectors of a request."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _flat(families: Iterable[Metric]) -> list[Sample]:
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in families
        for sample in family.samples
    ]


def _readable_files(directory: Path) -> list[str]:
    """The directory's metric files that hold something. A process that is starting
    creates its file, then sizes it (prometheus_client's ``MmapedDict``): read in
    between, the empty file fails to unpack, which ended a scrape, the demo's live view
    and the demo itself with a ``struct.error``. An empty file has no sample yet."""
    files = []
    for path in sorted(directory.glob("*.db")):
        try:
            if path.stat().st_size:
                files.append(str(path))
        except FileNotFoundError:  # reaped meanwhile: its process is gone
            continue
    return files
