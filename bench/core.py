"""Scenario 1: the processor's CPU work per record, without any I/O.

Each batch goes through the shard's own intake and pipeline, built by the processor's
wiring from a job with the defaults (``ShardIntake.accept``: ``raw_record_from`` ->
``decode`` -> filters -> ``ChangeBuffer.add`` (squash) -> the event loop, where the
destination's writer plans each conditional write with the conflict rule and its
request body is built), to a transport that answers 200 without a network (:class:`PlanningWire`),
so that each write settles on the loop as a real one does; then the checkpoint position
is computed. Left out, and measured by scenario 2: signing, the network round trip,
parsing the answer, the daemon's protocol lines, and the metrics' multiprocess files
(this process keeps its metrics in memory).

The yardstick, measured in the same process on the same records: CPython's
``json.loads`` of each record's data (the stream record's JSON text), which is what a
processor that parses the record with the standard library pays before doing anything.

Runs in its own process (``python -m bench.core``), on one core, and prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pybase64

from bench.analysis import positive_count
from bench.workload import Workload, WorkloadSpec
from replicator.buffer import ChangeBuffer
from replicator.config.loader import parse_job
from replicator.config.model import ResolvedJob
from replicator.deadletter.failed import DeadLetterer
from replicator.intake import ShardIntake
from replicator.metrics import Metrics
from replicator.processor import GC_THRESHOLDS
from replicator.records import raw_record_from
from replicator.rules import squash_order
from replicator.wiring import reader, shard_pipeline
from replicator.writers.destination import DestinationWriter
from replicator.writers.loopwire import Answered
from replicator.writers.wire import WireWriteClient, request_body

TASK = "bench-core"
TABLE = "bench-destination"
DESTINATION = f"eu-west-1/{TABLE}"
BATCH = 1000
# The job the scenario runs: job defaults, one destination written over the direct path
# (its endpoint is never contacted: PlanningWire answers in its place). The watermark
# is tracked for every record as the processor does; its status writes, which are I/O
# once a second, are left out (the first would be due after ten minutes).
JOB = f"""
runtime: local
task_name: {TASK}
source: {{region: us-east-1, table: bench-source}}
destinations:
  - {{region: eu-west-1, table: {TABLE}, endpoint_url: "http://127.0.0.1:9"}}
watermark: {{publish_interval_ms: 600000}}
"""
CONFLICT = {
    "last_writer_wins": "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}",
    "overwrite": "conflict: {policy: overwrite}",
    "version": "conflict: {policy: version, version_attribute: version}",
}


class PlanningWire:
    """A destination's transport on the pipeline's event loop, without the network: it
    builds each request's body as :class:`~replicator.writers.loopwire.LoopWire` does
    and answers 200 in the loop's next turn (a callback per answer, as an answer read
    from a connection is), so that the write settles on the loop as a real one does.
    Every answer of a turn arrives together, which is the loop's best case: a real
    destination's answers spread over more turns, each settled under one lock."""

    def __init__(self, wire: WireWriteClient, loop: asyncio.AbstractEventLoop) -> None:
        self.wire = wire
        self.loop = loop
        self.sent = 0  # read after a flush

    def send(self, operation: str, params: Mapping[str, Any], answered: Answered) -> None:
        request_body(params)
        self.sent += 1
        self.loop.call_soon(answered, {}, None, self.loop.time())

    def drop_waiting(self) -> None:
        pass

    def close(self) -> None:
        pass


def job(policy: str) -> ResolvedJob:
    return parse_job(f"{JOB}{CONFLICT[policy]}\n", Path("bench/core.py"))


def shard(policy: str) -> tuple[ShardIntake, list[PlanningWire]]:
    """One shard's intake and pipeline, built by the processor's own wiring from a job
    with the defaults, writing to a PlanningWire."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")  # signing is never reached; the client wants them
    resolved = job(policy)
    metrics = Metrics(None)
    wires: list[PlanningWire] = []

    def planning_wire(wire: WireWriteClient, loop: asyncio.AbstractEventLoop) -> PlanningWire:
        wires.append(PlanningWire(wire, loop))
        return wires[-1]

    letters = DeadLetterer(_NoDeadLetters(), metrics, TASK, "shardId-bench")
    pipeline = shard_pipeline(
        resolved, "shardId-bench", metrics, letters, wire_factory=planning_wire
    )
    assert len(wires) == 1, "the destination must be written over the event loop"
    pipeline.begin_watermark(resumed=False)
    return ShardIntake(pipeline, reader(resolved, pipeline)), wires


class _NoDeadLetters:
    """Nothing fails here (the planner applies everything); a letter would be a bug."""

    description = "none"

    def put(self, letter: Any) -> bool:
        raise AssertionError(f"the core benchmark dead-lettered a change: {letter}")

    def claim_all(self) -> Iterator[Any]:
        return iter(())

    def settle(self, claimed: Any, *, replayed: bool) -> None:
        raise AssertionError("the core benchmark keeps no dead letters")


def json_loads_us(batches: list[list[dict[str, Any]]]) -> float:
    """CPU microseconds per record of ``json.loads`` of each record's data (its text)."""
    texts = [
        [base64.b64decode(record["data"]).decode("utf-8") for record in batch] for batch in batches
    ]
    count = sum(len(batch) for batch in texts)
    start = time.process_time()
    for batch in texts:
        for text in batch:
            json.loads(text)
    return (time.process_time() - start) / count * 1e6


def run_core(policy: str, records: int, spec: WorkloadSpec) -> dict[str, Any]:
    workload = Workload(spec)
    batches = [workload.batch(BATCH)[0] for _ in range(max(1, records // BATCH))]
    loads_before = json_loads_us(batches)
    intake, wires = shard(policy)
    pipeline = intake.pipeline
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    for batch in batches:
        intake.accept(batch, 0)
        pipeline.wait_for_room()
        pipeline.checkpointable()
    assert pipeline.flush(timeout=600), "every change must be settled"
    checkpoint = pipeline.checkpointable()
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    pipeline.close()
    count = len(batches) * BATCH
    last = raw_record_from(batches[-1][-1])["sequenceNumber"]
    assert checkpoint == last, f"checkpointed at {checkpoint}, not at the last record {last}"
    # The yardstick before and after the core loop, averaged: a machine whose load
    # changes during the run moves both alike.
    loads = (loads_before + json_loads_us(batches)) / 2
    cpu_us = cpu / count * 1e6
    return {
        "policy": policy,
        "records": count,
        "writes_planned": sum(wire.sent for wire in wires),
        "records_per_s": count / wall,
        "cpu_us_per_record": cpu_us,
        "core_cpu_us_per_record": cpu_us,
        "json_loads_us_per_record": loads,
        "core_ratio_vs_json_loads": cpu_us / loads,
    }


class _Stopwatch:
    """CPU time spent in each named step, over many entries into it."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.process_time()
        yield
        self.totals[name] = self.totals.get(name, 0.0) + time.process_time() - start


def breakdown(policy: str, records: int, spec: WorkloadSpec) -> dict[str, float]:
    """Microseconds per record of each step, timed one step at a time over each batch (so
    that, as in the loop above, only one batch's objects are alive):

    * ``base64``, then ``decode_whole`` (the intake's decode, base64 included) and
      ``decode_rest``;
    * ``route``: the filters (``Reader.route``);
    * ``plan_kwargs_body``: the writer's first request (the rule's plan), its parameters
      and the request body, called directly (what the event loop does per change);
    * ``intake``: ``ShardIntake.accept`` (decode again, filters, squash, the hand-off to the
      event loop), ``intake_rest`` what it adds to decode and route;
    * ``writes_and_checkpoint``: waiting for the event loop (it plans and builds the
      bodies again, and settles each write) and the checkpoint position;
    * ``intake_steps``: decode + route + squash + plan/kwargs/body, the work per record
      without the loop (``intake_rest`` counts the squash and the hand-off, so the
      squash is taken from it as measured on the buffer alone: ``squash``);
    * ``json_loads``: the yardstick on the same records.
    """
    workload = Workload(spec)
    batches = [
        [raw_record_from(r) for r in workload.batch(BATCH)[0]]
        for _ in range(max(1, records // BATCH))
    ]
    count = len(batches) * BATCH
    intake, _ = shard(policy)
    reader = intake.reader
    pipeline = intake.pipeline
    writer = pipeline.writers[DESTINATION]
    assert isinstance(writer, DestinationWriter)
    order = squash_order([writer.rule], ordered_stream=True)
    watch = _Stopwatch()
    for raws in batches:
        with watch.step("json_loads"):
            for raw in raws:
                json.loads(base64.b64decode(raw["data"]))
        with watch.step("base64"):
            for raw in raws:
                pybase64.b64decode(raw["data"], validate=True)
        with watch.step("decode_whole"):
            changes = [reader.decode(raw) for raw in raws]
        with watch.step("route"):
            for change in changes:
                reader.route(change)
        buffer = ChangeBuffer([DESTINATION], order)
        with watch.step("squash"):
            for change in changes:
                buffer.add(change)
        del buffer
        with watch.step("plan_kwargs_body"):
            for change in changes:
                request = writer.first_request(change)
                if request is not None:
                    request_body(writer.call_of(request)[1])
        del changes
        with watch.step("intake"):
            intake.accept(raws, 0)
        with watch.step("writes_and_checkpoint"):
            assert pipeline.flush(timeout=600), "every change must be settled"
            pipeline.checkpointable()
    pipeline.close()
    steps = {name: total / count * 1e6 for name, total in watch.totals.items()}
    steps["decode_rest"] = max(0.0, steps["decode_whole"] - steps["base64"])
    # What the intake adds to decode and route: squash, the hand-off to the event loop.
    steps["intake_rest"] = max(0.0, steps["intake"] - steps["decode_whole"] - steps["route"])
    steps["intake_steps"] = (
        steps["decode_whole"] + steps["route"] + steps["squash"] + steps["plan_kwargs_body"]
    )
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="core-only benchmark (no I/O)")
    parser.add_argument("--policy", default="last_writer_wins", choices=tuple(CONFLICT))
    parser.add_argument("--records", type=positive_count, default=50_000, help="records to run")
    parser.add_argument("--shape", default="order", choices=("order", "small"))
    parser.add_argument("--breakdown", action="store_true", help="time each step apart")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        usable = sorted(os.sched_getaffinity(0))
        if args.cpu not in usable:
            parser.error(f"--cpu {args.cpu}: this process may run on CPUs {usable} only")
        os.sched_setaffinity(0, {args.cpu})
    gc.set_threshold(*GC_THRESHOLDS)  # as the processor child runs
    spec = WorkloadSpec(shape=args.shape)
    result = run_core(args.policy, args.records, spec)
    result["shape"] = args.shape
    if args.breakdown:
        result["breakdown_us"] = breakdown(args.policy, args.records, spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
