"""Scenario 1: the processor's CPU work per record, without any I/O.

Each batch goes through the shard's own intake and pipeline, the code a batch handed to
the processor runs (``ShardIntake.accept``: ``raw_record_from`` -> ``decode`` ->
filters -> ``ChangeBuffer.add`` (squash) -> writer threads), to a destination that
plans every conditional write with the conflict rule, builds boto3's keyword arguments
(``WriteRequest.to_kwargs``) and the direct path's request body (``request_body``), and
takes it as applied at once; then the checkpoint position is computed. Only signing,
the network round trip and the answer are left out, which scenario 2 measures.

The yardstick, measured in the same process on the same records: CPython's
``json.loads`` of each record's data (the stream record's JSON text), which is what a
processor that parses the record with the standard library pays before doing anything.

Runs in its own process (``python -m bench.core``), on one core, and prints JSON.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pybase64

from bench.workload import Workload, WorkloadSpec
from replicator.buffer import ChangeBuffer
from replicator.config.model import ConflictConfig, ConflictPolicyName
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.filters import ChangeFilter
from replicator.intake import Reader, ShardIntake
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.processor import GC_THRESHOLDS
from replicator.records import Change, raw_record_from
from replicator.rules import ConflictRule, Skip, rule_for, squash_order
from replicator.writers.destination import APPLIED, WriteResult
from replicator.writers.wire import request_body

DESTINATION = "eu-west-1/bench-destination"
TABLE = "bench-destination"
BATCH = 1000
# Writer threads: a destination without I/O keeps each one busy, so more would only
# contend for the GIL (real writers wait on the network, and the job default is 128).
MAX_IN_FLIGHT = 4


def conflict_config(policy: str) -> ConflictConfig:
    if policy == "last_writer_wins":
        return ConflictConfig(
            policy=ConflictPolicyName.LAST_WRITER_WINS, timestamp_attribute="updated_at"
        )
    return ConflictConfig(policy=ConflictPolicyName(policy))


@dataclass
class PlanningDestination:
    """A destination writer without the network: plans the conditional write and its
    arguments, and takes it as applied."""

    rule: ConflictRule
    label: str = DESTINATION
    table: str = TABLE
    region: str = "eu-west-1"
    cancelled: threading.Event = field(default_factory=threading.Event)
    planned: int = 0

    def write(self, change: Change) -> WriteResult:
        plan = self.rule.plan(change)
        if not isinstance(plan, Skip):
            request_body(plan.to_kwargs(self.table, stream_images=True))
            self.planned += 1  # one writer thread per key at a time; read after a flush
        return APPLIED


def shard(policy: str) -> tuple[ShardIntake, PlanningDestination]:
    """One shard's intake and pipeline (job defaults), writing to a PlanningDestination."""
    rule = rule_for(conflict_config(policy), None)
    destination = PlanningDestination(rule)
    metrics = Metrics(None)
    pipeline = ShardPipeline(
        {DESTINATION: destination},
        ChangeBuffer([DESTINATION], squash_order([rule], ordered_stream=True)),
        metrics,
        "shardId-bench",
        max_in_flight=MAX_IN_FLIGHT,
        max_buffered=2_000,
        dead_letters=DeadLetterer(_NoDeadLetters(), metrics, "bench", "shardId-bench"),
    )
    change_filter = ChangeFilter(origin_attribute=None, origin_value="", skip_ttl_deletes=False)
    return ShardIntake(pipeline, Reader(change_filter)), destination


class _NoDeadLetters:
    """Nothing fails here (the planner applies everything); a letter would be a bug."""

    description = "none"

    def put(self, letter: Any) -> None:
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
    intake, destination = shard(policy)
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
        "writes_planned": destination.planned,
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

    * ``base64``, then ``decode_whole`` (``decode``, base64 included) and ``decode_rest``;
    * ``route``: the filters (``Reader.route``);
    * ``plan_kwargs_body``: the rule's plan, boto3's arguments and the request body, called
      directly (what each writer thread does per change);
    * ``intake``: ``ShardIntake.accept`` (decode again, filters, squash, the hand-off to the
      writer threads), ``intake_rest`` what it adds to decode and route;
    * ``writes_and_checkpoint``: waiting for the writer threads (they plan and build the
      bodies again) and the checkpoint position;
    * ``intake_steps``: decode + route + squash + plan/kwargs/body, the work per record
      without the threads (``intake_rest`` counts the squash and the hand-off, so the
      squash is taken from it as measured on the buffer alone: ``squash``);
    * ``json_loads``: the yardstick on the same records.
    """
    workload = Workload(spec)
    batches = [
        [raw_record_from(r) for r in workload.batch(BATCH)[0]]
        for _ in range(max(1, records // BATCH))
    ]
    count = len(batches) * BATCH
    intake, destination = shard(policy)
    reader = intake.reader
    order = squash_order([destination.rule], ordered_stream=True)
    pipeline = intake.pipeline
    watch = _Stopwatch()
    for raws in batches:
        with watch.step("json_loads"):
            for raw in raws:
                json.loads(base64.b64decode(raw["data"]))
        with watch.step("base64"):
            for raw in raws:
                pybase64.b64decode(raw["data"], validate=True)
        with watch.step("decode_whole"):
            changes = [decode(raw) for raw in raws]
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
                plan = destination.rule.plan(change)
                if not isinstance(plan, Skip):
                    request_body(plan.to_kwargs(TABLE, stream_images=True))
        del changes
        with watch.step("intake"):
            intake.accept(raws, 0)
        with watch.step("writes_and_checkpoint"):
            assert pipeline.flush(timeout=600), "every change must be settled"
            pipeline.checkpointable()
    pipeline.close()
    steps = {name: total / count * 1e6 for name, total in watch.totals.items()}
    steps["decode_rest"] = max(0.0, steps["decode_whole"] - steps["base64"])
    # What the intake adds to decode and route: squash, hand-off to the writer threads.
    steps["intake_rest"] = max(0.0, steps["intake"] - steps["decode_whole"] - steps["route"])
    steps["intake_steps"] = (
        steps["decode_whole"] + steps["route"] + steps["squash"] + steps["plan_kwargs_body"]
    )
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="core-only benchmark (no I/O)")
    parser.add_argument("--policy", default="last_writer_wins")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--shape", default="order", choices=("order", "small"))
    parser.add_argument("--breakdown", action="store_true", help="time each step apart")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
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
