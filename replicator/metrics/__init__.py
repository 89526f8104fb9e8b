"""Prometheus metrics (multiprocess-aware), the /metrics and /healthz server, health rules."""

from replicator.metrics.definitions import Metrics

__all__ = ["Metrics"]
