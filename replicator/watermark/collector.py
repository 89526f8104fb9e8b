"""``replicator_watermark_timestamp_seconds{destination}`` on the runtime's ``/metrics``.

The runtime reads the same status table an application reads (one Query per destination,
at most once a second however often it is scraped), so the metric and a waiter never
disagree, and every host of a KCL task shows the watermark of all the task's shards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from replicator import wiring
from replicator.config.model import ResolvedJob
from replicator.exceptions import StatusTableMissing
from replicator.watermark.table import StatusTable
from replicator.watermark.wait import WatermarkReader

log = structlog.get_logger(__name__)

NAME = "replicator_watermark_timestamp_seconds"
_WARN_EVERY_S = 60.0


class WatermarkCollector(Collector):
    def __init__(self, readers: Mapping[str, WatermarkReader]) -> None:
        self.readers = dict(readers)
        self._warned_at: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            NAME,
            "Replication watermark: every source change created at or before this Unix time "
            "has been applied at the destination, or dead-lettered (absent until every shard "
            "has published).",
            labels=["destination"],
        )
        for label, reader in self.readers.items():
            try:
                mark = reader.read()
            except StatusTableMissing:
                continue
            except (ClientError, BotoCoreError) as error:
                now = time.monotonic()
                if now - self._warned_at.get(label, -_WARN_EVERY_S) >= _WARN_EVERY_S:
                    self._warned_at[label] = now
                    log.warning("cannot read the watermark", destination=label, error=str(error))
                continue
            if mark.seconds is not None:
                gauge.add_metric([label], mark.seconds)
        yield gauge


def collectors(resolved: ResolvedJob, max_age_s: float = 1.0) -> list[Collector]:
    """What a runtime adds to its metrics server (nothing when no watermark is published)."""
    if not resolved.publishes_watermark:
        return []
    readers = {
        d.label: WatermarkReader(
            StatusTable(
                wiring.status_client(resolved, d.label, read_timeout=3.0),
                resolved.watermark_table,
                d.label,
            ),
            min_interval_s=max_age_s,
        )
        for d in resolved.job.destinations
    }
    return [WatermarkCollector(readers)]
