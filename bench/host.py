"""Host capacity: several shards' processors on one host, saturated, against one fake
endpoint.

Each shard is the real processor child, started and drained exactly as the end-to-end
scenario does it (:func:`bench.e2e.processor`), with a workload of its own (its own
seed). Every shard's batches are generated before the clock starts, so that the
benchmark process only hands them over (one thread per shard, as the daemon has one per
shard); all shards are fed at once, each as fast as its child accepts. The run ends
when every child has checkpointed its last record.

What it gives: the changes/s the host applies in total, the processors' CPU per change
(all children together, divided by all changes), and from that how many saturated
shards (1,000 changes/s each) one core carries. The endpoint's and the benchmark
process's own CPU shares are reported too: on a small machine they compete with the
processors for the same cores, and an endpoint near a full core would be the limit.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from bench.e2e import E2ESpec, RunningProcessor, memory_kb, processor, summarize_run
from bench.fake_endpoint import EndpointControl, process_cpu_seconds
from bench.workload import Generated, Workload, WorkloadSpec

SATURATED_SHARD_CHANGES_PER_S = 1000.0  # a partition takes up to 1,000 writes/s
SHARD_PREFIX = "shardId-00000001700000000000-host"

Batch = tuple[list[dict[str, Any]], list[Generated]]


@dataclass(frozen=True)
class HostSpec:
    shards: int = 4
    records: int = 6_000  # per shard
    latency_ms: float = 0.0
    policy: str = "last_writer_wins"
    batch_size: int = 1000
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    max_in_flight: int | None = None
    max_buffered: int | None = None
    drain_timeout_s: float = 300.0


def shard_batches(spec: HostSpec, index: int) -> list[Batch]:
    workload = Workload(replace(spec.workload, seed=spec.workload.seed + index))
    batches = []
    remaining = spec.records
    while remaining > 0:
        count = min(spec.batch_size, remaining)
        batches.append(workload.batch(count))
        remaining -= count
    return batches


def _feed_and_drain(
    running: RunningProcessor, batches: list[Batch], timeout_s: float, failures: list[BaseException]
) -> None:
    try:
        for records, _ in batches:
            running.child.process_records(records, 0)
        running.drain(batches[-1][0][-1]["sequenceNumber"], timeout_s)
    except BaseException as error:  # reported by run_host, in the benchmark's thread
        failures.append(error)


def run_host(spec: HostSpec, endpoint: EndpointControl) -> dict[str, Any]:
    e2e = E2ESpec(
        policy=spec.policy,
        latency_ms=spec.latency_ms,
        records=spec.records,
        batch_size=spec.batch_size,
        max_in_flight=spec.max_in_flight,
        max_buffered=spec.max_buffered,
    )
    endpoint.configure(latency_ms=spec.latency_ms, throttle_rate=0.0, condition_fail_rate=0.0)
    endpoint.reset()
    feeds = [shard_batches(spec, index) for index in range(spec.shards)]
    with ExitStack() as stack:
        shards = [
            stack.enter_context(processor(e2e, endpoint.url, f"{SHARD_PREFIX}{index:04d}"))
            for index in range(spec.shards)
        ]
        cpu_before = [process_cpu_seconds(shard.pid) for shard in shards]
        endpoint_cpu_before = endpoint.cpu_seconds()
        own_cpu_before = time.process_time()
        failures: list[BaseException] = []
        threads = [
            threading.Thread(
                target=_feed_and_drain,
                args=(shard, batches, spec.drain_timeout_s, failures),
                name=f"bench-host-shard-{index}",
            )
            for index, (shard, batches) in enumerate(zip(shards, feeds, strict=True))
        ]
        started = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        drained = time.time()
        if failures:
            raise failures[0]
        cpu_by_shard = [
            process_cpu_seconds(shard.pid) - before
            for shard, before in zip(shards, cpu_before, strict=True)
        ]
        endpoint_cpu = endpoint.cpu_seconds() - endpoint_cpu_before
        own_cpu = time.process_time() - own_cpu_before
        memory = max((memory_kb(shard.pid) for shard in shards), key=lambda m: m["VmHWM"])
    requests, log = endpoint.log()
    generated = [remembered for batches in feeds for _, part in batches for remembered in part]
    result = summarize_run(
        e2e, generated, log, requests, started, drained, drained, sum(cpu_by_shard), memory
    )
    busy = max(drained - started, 1e-9)
    result.update(
        {
            "mode": "host",
            "shards": spec.shards,
            "records_per_shard": spec.records,
            "cpu_share_by_shard": [cpu / busy for cpu in cpu_by_shard],
            "endpoint_cpu_s": endpoint_cpu,
            "endpoint_cpu_share": endpoint_cpu / busy,
            "endpoint_cpu_us_per_request": endpoint_cpu / requests * 1e6 if requests else 0.0,
            "bench_cpu_share": own_cpu / busy,
            "shards_per_core": shards_per_core(result["cpu_us_per_change"]),
        }
    )
    return result


def shards_per_core(cpu_us_per_change: float) -> float:
    """Saturated shards one core carries: a core's microseconds per second over what a
    saturated shard's changes cost."""
    return 1e6 / (SATURATED_SHARD_CHANGES_PER_S * cpu_us_per_change)
