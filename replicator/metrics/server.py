"""The runtime's HTTP endpoint: ``/metrics`` (all processes' samples) and ``/healthz``.

The processor children cannot serve HTTP themselves (there is one per shard, and they
come and go), so the runtime that starts them serves the samples they leave in the
multiprocess directory, plus its own collector.
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

from replicator.metrics import health as health_rules
from replicator.metrics.multiprocess import reap_dead

log = structlog.get_logger(__name__)


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
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(server.registry())
                    self._reply(200, CONTENT_TYPE_LATEST, body)
                elif path in ("/healthz", "/health"):
                    result = server.health()
                    self._reply(
                        200 if result.healthy else 503,
                        "application/json",
                        json.dumps(result.as_dict()).encode(),
                    )
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )

    def registry(self) -> CollectorRegistry:
        reap_dead(self.directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        for collector in self.extra:
            registry.register(collector)
        return registry

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        out = []
        for family in self.registry().collect():
            for sample in family.samples:
                out.append((sample.name, dict(sample.labels), float(sample.value)))
        return out

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
            url=f"http://{self._httpd.server_address[0]!s}:{self.port}/metrics",
        )

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
