"""The runtime's HTTP endpoint: ``/metrics`` (all processes' samples) and ``/healthz``.

The processor children cannot serve HTTP themselves (there is one per shard, and they
come and go), so the runtime that starts them serves the samples they leave in the
multiprocess directory, plus its own collector.

Every request first deletes the live-gauge files of children that have died, then reads
the directory. Requests are served one collection at a time: a Prometheus scrape and a
health probe arriving together must not both delete the same file, nor read a file the
other has just deleted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from replicator.exceptions import EnvironmentProblem
from replicator.metrics import health as health_rules
from replicator.metrics.multiprocess import reap_dead

log = structlog.get_logger(__name__)

Sample = tuple[str, dict[str, str], float]


class MetricsServer:
    def __init__(
        self,
        host: str,
        port: int,
        directory: Path,
        problems: Callable[[], list[str]],
        stall_after_s: float,
        extra: Iterable[Collector] = (),
    ) -> None:
        self.directory = directory
        self.problems = problems
        self.stall_after_s = stall_after_s
        self.started_at = time.time()
        self.extra = list(extra)
        self._collecting = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
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
                    self._reply(500, "text/plain", f"{type(error).__name__}: {error}\n".encode())

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as error:
            raise EnvironmentProblem(
                f"metrics: cannot listen on {host}:{port} ({error.strerror or error}); "
                "choose another metrics.port (0 picks a free one) or set metrics.enabled: false"
            ) from None
        self._httpd.daemon_threads = True
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def _registry(self) -> CollectorRegistry:
        reap_dead(self.directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        for collector in self.extra:
            registry.register(collector)
        return registry

    def exposition(self) -> bytes:
        """The text a Prometheus scrape receives."""
        with self._collecting:
            return generate_latest(self._registry())

    def samples(self) -> list[Sample]:
        """Every sample (name, labels, value) as ``/metrics`` would show it now."""
        with self._collecting:
            families = list(self._registry().collect())
        return [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in families
            for sample in family.samples
        ]

    def health(self) -> health_rules.Health:
        return health_rules.evaluate(
            self.samples(),
            now=time.time(),
            stall_after_s=self.stall_after_s,
            started_at=self.started_at,
            problems=self.problems(),
        )

    def start(self) -> None:
        self._thread.start()
        log.info(
            "serving metrics",
            url=self.url,
            health=f"http://{self.host}:{self.port}/healthz",
            port=self.port,
        )

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()  # waits for serve_forever, so only once it runs
        self._httpd.server_close()
