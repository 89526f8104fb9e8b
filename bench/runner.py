"""Runs every scenario a number of times and keeps each run's numbers.

Each scenario runs in processes of its own: the fake endpoint in one, the core loop
and the naive baseline each in a fresh interpreter, the processor as the real child
process. This process only generates records and reads logs, so its CPU is charged to
nobody under test (on two cores it shares the machine, which is noted in the results).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.e2e import E2ESpec, Profiler, buffer_limit, run_e2e
from bench.fake_endpoint import EndpointControl
from bench.host import HostSpec, run_host
from bench.loadgen import generate
from bench.workload import WorkloadSpec

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("last_writer_wins", "overwrite")
LATENCIES_MS = (0.0, 20.0, 100.0)


@dataclass(frozen=True)
class Plan:
    """How much of each scenario to run; ``quick`` shrinks everything for a smoke run."""

    runs: int = 3
    policies: tuple[str, ...] = POLICIES
    latencies_ms: tuple[float, ...] = LATENCIES_MS
    scenarios: tuple[str, ...] = (
        "ceiling",
        "core",
        "e2e",
        "paced",
        "memory",
        "hot",
        "naive",
        "host",
    )
    core_records: int = 30_000
    saturated_records: int = 6_000
    paced_seconds: float = 5.0
    paced_rate: float = 1000.0
    paced_interval_s: float = 0.5
    hot_keys: int = 10
    hot_updates: int = 10_000
    memory_hold_batches: int = 24
    host_shards: int = 4
    host_records: int = 6_000  # per shard
    naive_records: dict[float, int] = field(
        default_factory=lambda: {0.0: 1000, 20.0: 100, 100.0: 40}
    )
    ceiling_seconds: float = 2.0
    ceiling_connections: int = 32
    max_in_flight: int | None = None
    max_buffered: int | None = None
    profile_dir: Path | None = None

    @classmethod
    def quick(cls, **changes: Any) -> Plan:
        plan = cls(
            runs=1,
            core_records=10_000,
            saturated_records=3_000,
            paced_seconds=3.0,
            hot_updates=10_000,
            memory_hold_batches=12,
            host_records=2_000,
            naive_records={0.0: 300, 20.0: 50, 100.0: 15},
            ceiling_seconds=1.0,
        )
        return replace(plan, **changes)


Progress = Callable[[str], None]


def _python(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m module args`` and return the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def endpoint_ceiling(plan: Plan, endpoint: EndpointControl, say: Progress) -> list[dict[str, Any]]:
    """Requests/s the fake endpoint answers at 0 ms, driven by the cheap load generator
    (which runs in this process), and its own CPU share meanwhile; then a check that a
    100 ms latency is kept with many connections open at once."""
    results = []
    for run in range(plan.runs):
        endpoint.configure(latency_ms=0.0, throttle_rate=0.0, condition_fail_rate=0.0)
        endpoint.reset()
        cpu = endpoint.cpu_seconds()
        load = generate(endpoint.url, plan.ceiling_connections, plan.ceiling_seconds)
        share = (endpoint.cpu_seconds() - cpu) / load.seconds
        say(f"ceiling run {run + 1}: {load.per_second:,.0f} requests/s, endpoint CPU {share:.0%}")
        results.append(
            {
                "requests_per_s": load.per_second,
                "endpoint_cpu_share": share,
                "errors": load.errors,
                "connections": plan.ceiling_connections,
            }
        )
    endpoint.configure(latency_ms=100.0)
    endpoint.reset()
    connections = 256
    load = generate(endpoint.url, connections, max(plan.ceiling_seconds, 1.0) + 0.5)
    per_connection = load.requests / connections / load.seconds
    say(
        f"ceiling at 100 ms with {connections} connections: {load.per_second:,.0f} requests/s "
        f"({1 / per_connection * 1000 if per_connection else 0:.0f} ms per request)"
    )
    results[-1]["latency_100ms_requests_per_s"] = load.per_second
    results[-1]["latency_100ms_connections"] = connections
    endpoint.configure(latency_ms=0.0)
    return results


def core(plan: Plan, say: Progress) -> list[dict[str, Any]]:
    """Every policy on the order workload, then last_writer_wins on small items; the
    first last_writer_wins run also times each step apart (where the time goes)."""
    results = []
    cases = [(policy, "order") for policy in plan.policies]
    if "last_writer_wins" in plan.policies:
        cases.append(("last_writer_wins", "small"))
    for policy, shape in cases:
        for run in range(plan.runs):
            args = ["--policy", policy, "--records", str(plan.core_records), "--shape", shape]
            if run == 0 and policy == "last_writer_wins" and shape == "order":
                args.append("--breakdown")
            result = _python("bench.core", *args)
            say(
                f"core {policy} ({shape} items) run {run + 1}: "
                f"{result['records_per_s']:,.0f} records/s, "
                f"{result['cpu_us_per_record']:.1f} us CPU/record"
            )
            results.append(result)
    return results


def end_to_end(
    plan: Plan, endpoint: EndpointControl, mode: str, say: Progress
) -> list[dict[str, Any]]:
    results = []
    profiler = Profiler(plan.profile_dir) if plan.profile_dir else None
    for latency in plan.latencies_ms:
        for policy in plan.policies:
            for run in range(plan.runs):
                spec = E2ESpec(
                    policy=policy,
                    latency_ms=latency,
                    mode=mode,
                    records=(
                        plan.saturated_records
                        if mode == "saturated"
                        else round(plan.paced_seconds * plan.paced_rate)
                    ),
                    rate=plan.paced_rate,
                    interval_s=plan.paced_interval_s,
                    max_in_flight=plan.max_in_flight,
                    max_buffered=plan.max_buffered,
                )
                result = run_e2e(spec, endpoint, profiler)
                say(
                    f"e2e {mode} {latency:g} ms {policy} run {run + 1}: "
                    f"{result['changes_per_s']:,.0f} changes/s, "
                    f"{result['writes_per_s']:,.0f} writes/s, "
                    f"delay p50 {result['p50_delay_s']:.2f} s p99 {result['p99_delay_s']:.2f} s, "
                    f"peak RSS {result['rss_peak_mb']:.0f} MB, "
                    f"{result['cpu_us_per_change']:.0f} us CPU/change"
                )
                results.append(result)
    return results


def full_buffer(plan: Plan, endpoint: EndpointControl, say: Progress) -> list[dict[str, Any]]:
    """A processor whose buffer is full (a shard read far behind its tip), last_writer_wins,
    filled and held full against a slow destination, then drained at 100 ms: its peak
    RSS, the memory a saturated shard settles at, and whether its resident set grows
    while the buffer is held full for ``memory_hold_batches`` batches. One run: the
    figures depend on the buffer limit and the items, not on timing."""
    spec = E2ESpec(
        policy="last_writer_wins",
        latency_ms=100.0,
        mode="saturated",
        records=0,
        fill_buffer=True,
        hold_batches=plan.memory_hold_batches,
        max_in_flight=plan.max_in_flight,
        max_buffered=plan.max_buffered,
    )
    result = run_e2e(spec, endpoint)
    result["mode"] = "full_buffer"
    result["max_buffered_changes"] = buffer_limit(spec)
    say(
        f"full buffer ({result['max_buffered_changes']:,} changes) 100 ms last_writer_wins: "
        f"peak RSS {result['rss_peak_mb']:.0f} MB after {result['changes']:,} changes; "
        f"held full ({result.get('hold_min_fill', 0):.0%} or more) for "
        f"{result.get('hold_changes', 0):,} changes: RSS "
        f"{result.get('hold_rss_first_half_mb', 0):.0f} -> "
        f"{result.get('hold_rss_second_half_mb', 0):.0f} MB"
    )
    return [result]


def host(plan: Plan, endpoint: EndpointControl, say: Progress) -> list[dict[str, Any]]:
    """``host_shards`` processors on one host at 0 ms, saturated, fed at once."""
    results = []
    for run in range(plan.runs):
        spec = HostSpec(
            shards=plan.host_shards,
            records=plan.host_records,
            max_in_flight=plan.max_in_flight,
            max_buffered=plan.max_buffered,
        )
        result = run_host(spec, endpoint)
        say(
            f"host, {spec.shards} shards at 0 ms run {run + 1}: "
            f"{result['changes_per_s']:,.0f} changes/s in all, "
            f"{result['cpu_us_per_change']:.0f} us processor CPU/change "
            f"({result['shards_per_core']:.2f} saturated shards per core); endpoint at "
            f"{result['endpoint_cpu_share']:.0%} of a core, benchmark process at "
            f"{result['bench_cpu_share']:.0%}"
        )
        results.append(result)
    return results


def hot_keys(plan: Plan, endpoint: EndpointControl, say: Progress) -> list[dict[str, Any]]:
    """10 keys, 10,000 updates, at 100 ms: how many writes squashing leaves per key and
    per batch of 1,000 records."""
    results = []
    workload = WorkloadSpec(keys=plan.hot_keys, insert_share=0.0, remove_share=0.0)
    batches = max(1, plan.hot_updates // 1000)
    for policy in plan.policies:
        for run in range(plan.runs):
            spec = E2ESpec(
                policy=policy,
                latency_ms=100.0,
                mode="saturated",
                records=plan.hot_updates,
                workload=workload,
                max_in_flight=plan.max_in_flight,
                max_buffered=plan.max_buffered,
            )
            result = run_e2e(spec, endpoint)
            result["keys"] = plan.hot_keys
            result["batches"] = batches
            result["writes_per_key_per_batch"] = result["writes"] / plan.hot_keys / batches
            say(
                f"hot keys {policy} run {run + 1}: {result['writes']} writes for "
                f"{result['changes']} updates, "
                f"{result['writes_per_key_per_batch']:.2f} writes per key per batch"
            )
            results.append(result)
    return results


def naive(plan: Plan, endpoint: EndpointControl, say: Progress) -> list[dict[str, Any]]:
    results = []
    for latency in plan.latencies_ms:
        records = plan.naive_records.get(latency) or max(10, round(4 / (latency / 1000 + 0.002)))
        for run in range(plan.runs):
            endpoint.configure(latency_ms=latency, throttle_rate=0.0, condition_fail_rate=0.0)
            endpoint.reset()
            result = _python("bench.naive", "--endpoint", endpoint.url, "--records", str(records))
            writes = endpoint.stats()["writes"]
            if writes != result["writes"]:
                raise RuntimeError(f"naive issued {result['writes']} writes, endpoint saw {writes}")
            result["latency_ms"] = latency
            say(f"naive {latency:g} ms run {run + 1}: {result['changes_per_s']:,.1f} changes/s")
            results.append(result)
    return results


def naive_hot_keys(plan: Plan, endpoint: EndpointControl, say: Progress) -> dict[str, Any]:
    """The baseline on the hot-key workload: one write per update, counted at the endpoint
    (at 0 ms, since only the count matters)."""
    endpoint.configure(latency_ms=0.0)
    endpoint.reset()
    result = _python(
        "bench.naive",
        "--endpoint",
        endpoint.url,
        "--records",
        str(plan.hot_updates),
        "--keys",
        str(plan.hot_keys),
        "--insert-share",
        "0",
        "--remove-share",
        "0",
    )
    batches = max(1, plan.hot_updates // 1000)
    result["writes_seen"] = endpoint.stats()["writes"]
    result["writes_per_key_per_batch"] = result["writes_seen"] / plan.hot_keys / batches
    say(
        f"naive hot keys: {result['writes_seen']} writes, "
        f"{result['writes_per_key_per_batch']:.0f} per key per batch"
    )
    return result


def run_all(plan: Plan, say: Progress) -> dict[str, Any]:
    started = time.time()
    runs: dict[str, Any] = {}
    with EndpointControl.start() as endpoint:
        endpoint.watch()
        if "ceiling" in plan.scenarios:
            runs["ceiling"] = endpoint_ceiling(plan, endpoint, say)
        if "core" in plan.scenarios:
            runs["core"] = core(plan, say)
        if "e2e" in plan.scenarios:
            runs["e2e"] = end_to_end(plan, endpoint, "saturated", say)
        if "paced" in plan.scenarios:
            runs["paced"] = end_to_end(plan, endpoint, "paced", say)
        if "memory" in plan.scenarios:
            runs["memory"] = full_buffer(plan, endpoint, say)
        if "hot" in plan.scenarios:
            runs["hot"] = hot_keys(plan, endpoint, say)
            if "naive" in plan.scenarios:
                runs["naive_hot"] = naive_hot_keys(plan, endpoint, say)
        if "naive" in plan.scenarios:
            runs["naive"] = naive(plan, endpoint, say)
        if "host" in plan.scenarios:
            runs["host"] = host(plan, endpoint, say)
    runs["duration_s"] = time.time() - started
    return runs
