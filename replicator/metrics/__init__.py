"""Prometheus metrics (multiprocess-aware), the /metrics and /healthz server, health rules."""

from replicator.metrics.definitions import Metrics, in_memory_metrics

__all__ = ["Metrics", "in_memory_metrics"]
