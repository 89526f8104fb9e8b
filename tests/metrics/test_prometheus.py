"""A real Prometheus server scrapes a running replicator; its HTTP API answers with our series.

The server (Debian's ``prometheus`` package; ``scripts/ensure-prometheus.sh`` installs
it) runs as a plain process on 127.0.0.1 with a one-second scrape of the replicator's
metrics port, the repository's alert rules, and nothing else to talk to: no
alertmanager, no remote write, no service discovery.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from replicator.demo.workload import demo_item
from tests.metrics.test_alert_rules import ALERTS
from tests.support import ROOT
from tests.support.e2e import Job, stop, wait_until
from tests.support.metrics import logged_metrics_port

pytestmark = pytest.mark.prometheus


class Prometheus:
    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, (
            "prometheus is not on PATH: run scripts/ensure-prometheus.sh (make test does)"
        )
        self.directory = directory
        shutil.copy(ROOT / "docker" / "prometheus" / "alerts.yml", directory / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": "replicator", "static_configs": [{"targets": [target]}]}
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        for _ in range(3):  # the free port found may be taken before Prometheus binds it
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=(self.directory / "prometheus.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
            if wait_until(self._ready_or_exited, 30, "Prometheus to become ready") == "ready":
                return
        raise AssertionError(
            "Prometheus did not start: " + (self.directory / "prometheus.log").read_text()
        )

    def _ready_or_exited(self) -> str | None:
        assert self.process is not None
        if self.process.poll() is not None:
            return "exited"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return "ready" if response.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def by(self, expression: str, label: str) -> dict[str, float]:
        return {
            row["metric"].get(label, ""): float(row["value"][1]) for row in self.query(expression)
        }

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("prom"), tmp_path)


@pytest.fixture
def running(job: Job) -> Iterator[int]:
    runtime = job.start()
    try:
        yield logged_metrics_port(job.directory / "runtime.log")
    finally:
        assert stop(runtime) == 0


@pytest.fixture
def prometheus(tmp_path: Path, running: int) -> Iterator[Prometheus]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    server = Prometheus(directory, f"127.0.0.1:{running}")
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode is not None


def test_prometheus_scrapes_lag_and_write_outcomes_per_destination(
    job: Job, prometheus: Prometheus
) -> None:
    changes = 30
    rng = random.Random(6)
    for index in range(changes):
        job.source.put_item(
            TableName=job.source_table, Item=demo_item(rng, f"p{index}", index, "us-east-1")
        )
    wait_until(job.converged, 60, "destinations to equal the source")
    destinations = {f"{region}/{table}" for region, table in job.destinations}

    assert wait_until(
        lambda: prometheus.by('up{job="replicator"}', "instance"), 30, "a first scrape"
    ) == {f"127.0.0.1:{logged_metrics_port(job.directory / 'runtime.log')}": 1.0}
    lag = wait_until(
        lambda: (
            (found := prometheus.by("replicator_replication_lag_seconds", "destination"))
            and set(found) == destinations
            and all(value == 0 for value in found.values())
            and found
        ),
        30,
        "a caught-up lag series for each destination in Prometheus",
    )
    assert set(lag) == destinations
    applied = wait_until(
        lambda: (
            (
                found := prometheus.by(
                    'sum by (destination) (replicator_writes_total{outcome="applied"})',
                    "destination",
                )
            )
            == dict.fromkeys(destinations, float(changes))
            and found
        ),
        30,
        "the applied counts in Prometheus",
    )
    assert applied == dict.fromkeys(destinations, float(changes))
    delays = prometheus.by(
        "sum by (destination) (replicator_apply_delay_seconds_count)", "destination"
    )
    assert delays == dict.fromkeys(destinations, float(changes))

    # Every query of the dashboard is valid PromQL on these series, and the lag panel has data.
    dashboard = json.loads((ROOT / "docker" / "grafana" / "replicator-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expression = (
                target["expr"]
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace('"$instance"', '".*"')
                .replace('"$destination"', '".*"')
            )
            rows = prometheus.query(expression)
            if "replicator_replication_lag_seconds" in expression:
                assert {row["metric"]["destination"] for row in rows} == destinations

    # The alert rules load and evaluate against real series without errors, and none fires
    # (one may be pending for a moment while counters first appear; "for" covers that).
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    evaluated = wait_until(
        lambda: [
            rule
            for group in prometheus.get("/api/v1/rules")["data"]["groups"]
            for rule in group["rules"]
            if rule.get("lastEvaluation", "").startswith("2") and rule["health"] == "ok"
        ],
        30,
        "the alert rules to be evaluated",
    )
    assert len(groups) == 1
    assert {rule["name"] for rule in evaluated} == ALERTS
    alerts = prometheus.get("/api/v1/alerts")["data"]["alerts"]
    assert [alert for alert in alerts if alert["state"] == "firing"] == []
