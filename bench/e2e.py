"""Scenarios 2 and 3: a real processor child, fed over the MultiLang protocol, writing
to the fake endpoint.

The child is ``python -m replicator processor --config <job>``, the very command the
KCL MultiLangDaemon and the local runtime start, driven here by the local runtime's
own daemon side (:class:`~replicator.runtime.local.protocol.ProcessorChild`). Records
are in the adapter 2.x format. Two ways to feed it:

* ``saturated``: batches of ``batch_size`` records, each sent as soon as the child
  accepts the previous one (it holds back while its buffer is full), which is how a
  shard that is far behind is read. Gives throughput.
* ``paced``: ``rate`` records a second, created evenly in time and delivered every
  ``interval_s`` as a KCL reader would deliver them. Gives the delay percentiles.

The run ends when the child has checkpointed the last record, which it does only once
every change is applied; the fake endpoint's log then says when each write arrived.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis import apply_delays
from bench.fake_endpoint import EndpointControl, process_cpu_seconds
from bench.workload import Generated, Workload, WorkloadSpec
from replicator.config.model import WriterConfig
from replicator.runtime.local.protocol import ProcessorChild

SHARD_ID = "shardId-00000001700000000000-bench"
FULL_BATCHES = 2  # batches sent after the child's buffer is first seen full
# A full buffer counts as held while the changes sent and not yet written at the
# endpoint stay at or above this share of max_buffered_changes.
HELD_FULL_SHARE = 0.5
HOLD_BATCH = 250  # records per batch while the buffer is held full: a sample each
FILL_LATENCY_MS = 500.0  # while filling the buffer: writes drain slower than records arrive
DRAIN_POLL_S = 0.02


@dataclass(frozen=True)
class E2ESpec:
    policy: str
    latency_ms: float
    mode: str = "saturated"  # or "paced"
    records: int = 10_000
    batch_size: int = 1000
    rate: float = 1000.0
    interval_s: float = 0.5
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    max_in_flight: int | None = None
    max_buffered: int | None = None
    fill_buffer: bool = False
    hold_batches: int = 0  # with fill_buffer: batches of HOLD_BATCH fed into the full buffer
    throttle_rate: float = 0.0
    drain_timeout_s: float = 300.0


def job_text(spec: E2ESpec, endpoint_url: str, directory: Path) -> str:
    conflict = "{policy: overwrite}"
    if spec.policy == "last_writer_wins":
        conflict = "{policy: last_writer_wins, timestamp_attribute: updated_at}"
    settings = []
    if spec.max_in_flight:
        settings.append(f"max_in_flight: {spec.max_in_flight}")
    if spec.max_buffered:
        settings.append(f"max_buffered_changes: {spec.max_buffered}")
    writer = f"writer: {{{', '.join(settings)}}}\n" if settings else ""
    return (
        f"runtime: local\n"
        f"task_name: bench-{spec.policy.replace('_', '-')}\n"
        f"source: {{region: us-east-1, table: bench-source}}\n"
        f"destinations:\n"
        f"  - {{region: eu-west-1, table: bench-destination, endpoint_url: '{endpoint_url}'}}\n"
        f"conflict: {conflict}\n"
        f"{writer}"
        f"dead_letter: {{kind: file, path: '{directory}/dead-letters.jsonl'}}\n"
        f"metrics: {{enabled: false}}\n"
        f"watermark: {{enabled: false}}\n"  # the fake endpoint serves only the write path
        f"logging: {{level: warning, format: json}}\n"
    )


def child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def memory_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a process, in kB, from /proc."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                values[name] = int(rest.split()[0])
    return values


class Profiler:
    """Samples the processor child with py-spy while it works (``--profile``): a
    file of collapsed stacks per run
    (what flamegraph.pl and speedscope read), idle frames left out."""

    def __init__(self, directory: Path, py_spy: str = "py-spy") -> None:
        self.directory = directory
        self.py_spy = py_spy
        self.process: subprocess.Popen[bytes] | None = None

    def attach(self, pid: int, spec: E2ESpec) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{spec.policy}-{spec.latency_ms:g}ms-{spec.mode}-{pid}.collapsed.txt"
        self.process = subprocess.Popen(
            [
                self.py_spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--threads",
                "--gil",
                "--nonblocking",
                "--rate",
                "200",
                "--output",
                str(self.directory / name),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def detach(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class _Checkpoints:
    def __init__(self) -> None:
        self.last: str | None = None
        self.count = 0

    def __call__(self, sequence_number: str | None, sub: int | None) -> str | None:
        self.last = sequence_number
        self.count += 1
        return None


@dataclass
class RunningProcessor:
    """A processor child started on one shard, and the checkpoints it has asked for."""

    child: ProcessorChild
    pid: int
    checkpoints: _Checkpoints

    def drain(self, last: str, timeout_s: float) -> None:
        """Wait until the child has checkpointed ``last``, which it does only once every
        change up to it is applied; empty batches give it the chance to checkpoint."""
        deadline = time.monotonic() + timeout_s
        while self.checkpoints.last != last:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the processor did not checkpoint {last} within {timeout_s} s "
                    f"(last checkpoint {self.checkpoints.last})"
                )
            time.sleep(DRAIN_POLL_S)
            self.child.process_records([], 0)


@contextmanager
def processor(
    spec: E2ESpec, endpoint_url: str, shard_id: str = SHARD_ID
) -> Iterator[RunningProcessor]:
    """The real processor child (``python -m replicator processor --config <job>``),
    initialized on ``shard_id``; on a normal exit it must stop with status 0 and have
    dead-lettered nothing."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as scratch:
        directory = Path(scratch)
        config = directory / "job.yaml"
        config.write_text(job_text(spec, endpoint_url, directory))
        checkpoints = _Checkpoints()
        child = ProcessorChild(
            [sys.executable, "-m", "replicator", "processor", "--config", str(config)],
            child_environment(),
            checkpoints,
            name=f"bench-processor-{shard_id[-8:]}",
        )
        child.start()
        assert child.pid is not None
        try:
            child.initialize(shard_id, "TRIM_HORIZON", None)
            yield RunningProcessor(child, child.pid, checkpoints)
        except BaseException:
            child.close(timeout=30)
            raise
        try:
            # Stopped as the daemon stops it (a processor whose input just ends says the
            # daemon went away, a warning in every run's output).
            child.shutdown_requested(timeout=30)
        finally:
            code = child.close(timeout=30)
        if code != 0:
            raise RuntimeError(f"the processor exited with status {code}")
        dead_letters = directory / "dead-letters.jsonl"
        if dead_letters.exists() and dead_letters.stat().st_size:
            raise RuntimeError(f"the processor dead-lettered changes: {dead_letters.read_text()}")


def run_e2e(
    spec: E2ESpec, endpoint: EndpointControl, profiler: Profiler | None = None
) -> dict[str, Any]:
    endpoint.configure(
        latency_ms=spec.latency_ms, throttle_rate=spec.throttle_rate, condition_fail_rate=0.0
    )
    endpoint.reset()
    workload = Workload(spec.workload)
    held: list[dict[str, float]] = []
    with processor(spec, endpoint.url) as running:
        pid = running.pid
        if profiler is not None:
            profiler.attach(pid, spec)
        try:
            cpu_before = process_cpu_seconds(pid)
            endpoint_cpu_before = endpoint.cpu_seconds()
            started = time.time()
            if spec.mode == "paced":
                generated, last = _feed_paced(running.child, workload, spec)
            else:
                generated, last = _feed_saturated(running, workload, spec, endpoint, held)
            fed = time.time()
            running.drain(last, spec.drain_timeout_s)
            drained = time.time()
            cpu = process_cpu_seconds(pid) - cpu_before
            endpoint_cpu = endpoint.cpu_seconds() - endpoint_cpu_before
            memory = memory_kb(pid)
        finally:
            if profiler is not None:
                profiler.detach()
    requests, log = endpoint.log()
    result = summarize_run(spec, generated, log, requests, started, fed, drained, cpu, memory)
    result["endpoint_cpu_s"] = endpoint_cpu
    result["endpoint_cpu_us_per_request"] = endpoint_cpu / requests * 1e6 if requests else math.nan
    if spec.fill_buffer:
        result.update(hold_summary(held, buffer_limit(spec)))
    return result


def hold_summary(samples: list[dict[str, float]], limit: int) -> dict[str, Any]:
    """Whether the processor's memory grew while its buffer was held full: the largest
    resident set in the second half of the hold against the largest in the first half
    (a leak per change, or per batch, shows as growth; the collector's ups and downs
    within a half do not)."""
    if len(samples) < 2:
        return {"hold_samples": samples, "held_full": False}
    half = len(samples) // 2
    first = max(sample["rss_mb"] for sample in samples[:half])
    second = max(sample["rss_mb"] for sample in samples[half:])
    min_fill = min(sample["unapplied"] for sample in samples) / limit
    return {
        "hold_samples": samples,
        "hold_seconds": samples[-1]["at_s"] - samples[0]["at_s"],
        "hold_changes": samples[-1]["sent"] - samples[0]["sent"],
        "hold_rss_first_half_mb": first,
        "hold_rss_second_half_mb": second,
        "rss_growth_mb": second - first,
        "rss_growth_pct": (second - first) / first * 100 if first else math.nan,
        "hold_min_fill": min_fill,
        "held_full": min_fill >= HELD_FULL_SHARE,
    }


def buffer_limit(spec: E2ESpec) -> int:
    """The job's writer.max_buffered_changes (the schema's default unless overridden)."""
    return spec.max_buffered or WriterConfig().max_buffered_changes


def _feed_saturated(
    running: RunningProcessor,
    workload: Workload,
    spec: E2ESpec,
    endpoint: EndpointControl,
    held: list[dict[str, float]],
) -> tuple[list[Generated], str]:
    """Send ``records`` records as fast as the child takes them.

    With ``fill_buffer`` the destination first answers in ``FILL_LATENCY_MS``, so that the
    child's buffer fills up (it holds back once ``max_buffered_changes`` are unapplied)
    within seconds rather than minutes, and a few more batches are sent into the full
    buffer. ``hold_batches`` batches of ``HOLD_BATCH`` records then keep it full, still
    at that latency, so that the writes and not the processor's CPU set the pace; after
    each one is accepted, the child's resident set and the changes sent but not yet
    written at the endpoint go to ``held``. Then the latency returns to ``latency_ms``
    for the drain. That is the steady state of a shard read far behind its tip, whose
    memory the run measures.
    """
    child = running.child
    generated: list[Generated] = []
    last = ""

    def send(records: list[dict[str, Any]], remembered: list[Generated]) -> None:
        nonlocal last
        child.process_records(records, 0)
        generated.extend(remembered)
        last = records[-1]["sequenceNumber"]

    if spec.fill_buffer:
        endpoint.configure(latency_ms=FILL_LATENCY_MS)
        limit = buffer_limit(spec)
        while len(generated) - endpoint.stats()["writes"] < limit - spec.batch_size:
            if len(generated) > 2 * limit + 10 * spec.batch_size:
                raise RuntimeError(f"the processor's buffer never filled up to {limit}")
            send(*workload.batch(spec.batch_size))
        for _ in range(FULL_BATCHES):
            send(*workload.batch(spec.batch_size))
        started = time.monotonic()
        for _ in range(spec.hold_batches):
            batch = workload.batch(HOLD_BATCH)
            send(*batch)
            written = endpoint.stats()["writes"]
            held.append(
                {
                    "at_s": time.monotonic() - started,
                    "sent": len(generated),
                    "unapplied": len(generated) - written,
                    "rss_mb": memory_kb(running.pid)["VmRSS"] / 1024,
                }
            )
        endpoint.configure(latency_ms=spec.latency_ms)
    while len(generated) < spec.records:
        send(*workload.batch(min(spec.batch_size, spec.records - len(generated))))
    return generated, last


def _feed_paced(
    child: ProcessorChild, workload: Workload, spec: E2ESpec
) -> tuple[list[Generated], str]:
    """Deliver ``rate`` records a second; a late delivery carries more records, created
    over the time it was late, so the offered rate holds whatever the child does."""
    generated: list[Generated] = []
    last = ""
    sent = 0
    start = time.time()
    previous = start
    tick = 0
    while sent < spec.records:
        tick += 1
        pause = start + tick * spec.interval_s - time.time()
        if pause > 0:
            time.sleep(pause)
        now = time.time()
        due = min(spec.records, round((now - start) * spec.rate)) - sent
        if due <= 0:
            continue
        records, remembered = workload.batch(
            due, created_us=int(now * 1e6), spread_us=int((now - previous) * 1e6)
        )
        previous = now
        child.process_records(records, 0)
        generated.extend(remembered)
        last = records[-1]["sequenceNumber"]
        sent += due
    return generated, last


def summarize_run(
    spec: E2ESpec,
    generated: list[Generated],
    log: list[Any],
    requests: int,
    started: float,
    fed: float,
    drained: float,
    cpu: float,
    memory: dict[str, int],
) -> dict[str, Any]:
    ack_s = spec.latency_ms / 1000.0
    ok = [entry for entry in log if entry[4] == "ok"]
    last_ack = max((entry[0] for entry in ok), default=started) + ack_s
    elapsed = max(last_ack - started, 1e-9)
    delays = apply_delays(generated, log, ack_s)
    if delays.unapplied:
        raise RuntimeError(f"{delays.unapplied} put records were never written")
    changes = len(generated)
    keys = {entry[2] for entry in ok}
    return {
        "policy": spec.policy,
        "latency_ms": spec.latency_ms,
        "mode": spec.mode,
        "changes": changes,
        "writes": len(ok),
        "requests": requests,
        "distinct_keys_written": len(keys),
        "seconds": elapsed,
        "feed_seconds": fed - started,
        "drain_seconds": drained - started,
        "changes_per_s": changes / elapsed,
        "writes_per_s": len(ok) / elapsed,
        "p50_delay_s": delays.p50_s,
        "p99_delay_s": delays.p99_s,
        "max_delay_s": delays.max_s,
        "cpu_us_per_change": cpu / changes * 1e6 if changes else math.nan,
        "cpu_share": cpu / max(drained - started, 1e-9),
        "rss_peak_mb": memory.get("VmHWM", 0) / 1024,
        "rss_end_mb": memory.get("VmRSS", 0) / 1024,
    }
