"""Reading the replicator's metrics in tests: a registry in process, or a running replicator's
(its port from the log, samples over HTTP)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from replicator.metrics import Metrics
from replicator.metrics.health import Health
from replicator.metrics.server import HealthGauge
from replicator.runtime.local.runtime import _RuntimeCollector
from replicator.watermark.collector import WatermarkCollector
from replicator.watermark.parts import Watermark
from tests.support.e2e import wait_until

Sample = tuple[str, dict[str, str], float]
METRIC_NAME = re.compile(r"\breplicator_[a-z_]+\b")


def logged_metrics_port(log: Path, timeout: float = 30) -> int:
    """The port from the runtime's ``serving metrics`` log line (the job may ask for port 0)."""

    def find() -> int | None:
        if not log.exists():
            return None
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "serving metrics":
                return int(entry["port"])
        return None

    port: int = wait_until(find, timeout, f"a 'serving metrics' line in {log}")
    return port


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def matching(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(matching(samples, name, **labels))


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class _NoShards:
    def progress(self) -> list[Any]:
        return []

    def restarts(self) -> int:
        return 0


class _OneWatermark:
    def read(self, timeout: float | None = None) -> Watermark:
        return Watermark("x", 1)


def exported_samples() -> dict[str, frozenset[str]]:
    """Every sample name ``/metrics`` can show, with its label names.

    Built from the definitions themselves (each metric given one label set), plus the
    runtime's own collector; counters have no ``_created`` samples in multiprocess mode.
    """
    metrics = Metrics(CollectorRegistry())
    for metric in vars(metrics).values():
        labelnames = getattr(metric, "_labelnames", None)
        if labelnames:
            metric.labels(*["x"] * len(labelnames))
    assert metrics.registry is not None
    families = list(metrics.registry.collect())
    families += list(_RuntimeCollector(_NoShards()).collect())  # type: ignore[arg-type]
    watermarks = WatermarkCollector({"x": _OneWatermark()})
    watermarks.refresh()
    families += list(watermarks.collect())
    families += list(HealthGauge(lambda: Health(healthy=True)).collect())
    names: dict[str, frozenset[str]] = {}
    for family in families:
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                names[sample.name] = frozenset(sample.labels)
    return names


def metric_names_in(text: str) -> Iterator[str]:
    yield from METRIC_NAME.findall(text)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The current value of a metric sample in ``metrics``' registry (0 when absent)."""
    assert metrics.registry is not None
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def summed(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` in ``metrics``' registry whose labels include
    ``labels`` (0 when none): a counter over the labels not given."""
    assert metrics.registry is not None
    samples = [
        (sample.name, dict(sample.labels), sample.value)
        for family in metrics.registry.collect()
        for sample in family.samples
    ]
    return total(samples, name, **labels)
