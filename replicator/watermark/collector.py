"""``replicator_watermark_timestamp_seconds{destination}`` on the runtime's ``/metrics``.

The runtime reads the same status table an application reads, so the metric and a waiter
never disagree, and every host of a KCL task shows the watermark of all the task's shards.

A scrape returns what was read already and reads nothing: a thread per destination
Queries its status table about once a second and keeps the last answer. Reading on the
scrape made every ``/metrics`` as slow as the slowest destination's endpoint (about 9 s
for one that accepts connections and never answers), and the scrapes and health probes
arriving meanwhile queued behind it. A destination whose reads fail keeps showing the
last watermark read, and the failure is logged when it starts and when it ends, not on
every read; ``replicator_watermark_read_timestamp_seconds`` says when the value shown was
read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from replicator import wiring
from replicator.config.destinations import destination_place
from replicator.config.model import ResolvedJob
from replicator.exceptions import StatusTableMissing
from replicator.watermark.parts import Watermark
from replicator.watermark.table import StatusTable
from replicator.watermark.wait import READ_PATIENCE_S, WatermarkReader

log = structlog.get_logger(__name__)

NAME = "replicator_watermark_timestamp_seconds"
READ_NAME = "replicator_watermark_read_timestamp_seconds"
READ_EVERY_S = 1.0
# One attempt, each step bounded: a status table that does not answer fails a read within
# a few seconds, and the next read (a second later) is the retry. The SDK's own retries
# would only keep the thread on a silent endpoint longer.
_CLIENT_TIMEOUT_S = 3.0


class Reads(Protocol):
    def read(self, timeout: float | None = None) -> Watermark: ...


@dataclass(frozen=True)
class _Known:
    """What a scrape shows for one destination, and how its reads are going."""

    seconds: float | None = None
    """The watermark last read (None: none yet, or the status table does not exist)."""
    read_at: float | None = None
    """Unix time of the last read the status table answered (None: none yet)."""
    failing: str | None = None
    """The kind of error the reads fail with now; None while they are answered."""


class WatermarkCollector(Collector):
    """The last watermark read of each destination, kept fresh by ``start``'s threads.

    ``collect`` only copies what the threads have read, so it answers at once whatever the
    status tables do. ``refresh`` reads every destination once, on the caller's thread.
    """

    def __init__(
        self,
        readers: Mapping[str, Reads],
        every_s: float = READ_EVERY_S,
        read_wait_s: float = READ_PATIENCE_S,
    ) -> None:
        self.readers = dict(readers)
        self.every_s = every_s
        self.read_wait_s = read_wait_s
        self._known = {label: _Known() for label in self.readers}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Read each destination on a thread of its own, so that a destination whose
        endpoint hangs delays no other's watermark."""
        for label, reader in self.readers.items():
            thread = threading.Thread(
                target=self._keep_reading,
                args=(label, reader),
                name=f"watermark-{label}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, wait_s: float = 1.0) -> None:
        """Stop reading; wait up to ``wait_s`` for the threads. A thread waiting on a
        status table that does not answer ends by itself when its read gives up (within
        ``read_wait_s``), reading nothing more; a daemon, it never holds up an exit."""
        self._stopping.set()
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def refresh(self) -> None:
        for label, reader in self.readers.items():
            self._read(label, reader)

    def _keep_reading(self, label: str, reader: Reads) -> None:
        while not self._stopping.is_set():
            self._read(label, reader)
            self._stopping.wait(self.every_s)

    def _read(self, label: str, reader: Reads) -> None:
        try:
            mark: float | None = reader.read(self.read_wait_s).seconds
        except StatusTableMissing:
            mark = None  # an answer: no watermark has been published there
        except Exception as error:  # noqa: BLE001  # logged; the next read is the retry
            self._failed(label, error)
            return
        with self._lock:
            before = self._known[label]
            self._known[label] = _Known(mark, time.time())
        if before.failing is not None:
            log.info("the watermark is read again", destination=label)

    def _failed(self, label: str, error: Exception) -> None:
        kind = type(error).__name__
        with self._lock:
            before = self._known[label]
            self._known[label] = replace(before, failing=kind)
        # Warned once an outage, as documented: an endpoint that resets connections fails
        # by turns as two kinds of error, once a second.
        if before.failing is None:
            log.warning(
                "cannot read the watermark; /metrics shows the last one read until it can",
                destination=label,
                error=f"{kind}: {error}",
            )

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            known = dict(self._known)
        gauge = GaugeMetricFamily(
            NAME,
            "Replication watermark: every source change created at or before this Unix time "
            "that the job read for the destination has been applied there, lost a conflict, "
            "or was dead-lettered; changes never read for it (a destination that joined "
            "later, a LATEST start) are not counted: replicator wait reports those (absent "
            "until every shard has published).",
            labels=["destination"],
        )
        read = GaugeMetricFamily(
            READ_NAME,
            "Unix time the destination's status table last answered the runtime's read of "
            "the watermark shown (absent until it has answered once).",
            labels=["destination"],
        )
        for label, state in known.items():
            if state.seconds is not None:
                gauge.add_metric([label], state.seconds)
            if state.read_at is not None:
                read.add_metric([label], state.read_at)
        yield gauge
        yield read


def collectors(resolved: ResolvedJob) -> list[WatermarkCollector]:
    """What a runtime adds to its metrics server (nothing when no watermark is published);
    the runtime starts and stops them."""
    if not resolved.publishes_watermark:
        return []
    readers: dict[str, Reads] = {
        d.label: WatermarkReader(
            StatusTable(
                wiring.status_client(
                    resolved,
                    d.label,
                    connect_timeout=_CLIENT_TIMEOUT_S,
                    read_timeout=_CLIENT_TIMEOUT_S,
                    sdk_retries=False,
                ),
                resolved.watermark_table,
                d.label,
                destination_place(d),
                # Another job's parts (of the same task name) are not shown as this one's.
                source=f"{resolved.job.source.region}/{resolved.job.source.table}",
            )
        )
        for d in resolved.job.destinations
    }
    return [WatermarkCollector(readers)]
