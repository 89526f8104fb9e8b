"""Scenario 1: the processor's CPU work per record, without any I/O.

Each batch goes through the same functions, in the same order, as a batch handed to
the processor: ``raw_record_from`` -> ``decode`` -> ``ChangeFilter.route`` ->
``ChangeBuffer.add`` (squash); then for every change the buffer releases, the
destination's conflict rule plans the conditional write and builds boto3's keyword
arguments (``WriteRequest.to_kwargs``); the write is taken as applied at once
(``ChangeBuffer.complete``) and the checkpoint position is computed. Only the network
round trip and boto3 are left out, which scenario 2 measures.

Runs in its own process (``python -m bench.core``), on one core, and prints JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.workload import Workload, WorkloadSpec
from replicator.buffer import ChangeBuffer
from replicator.config.model import ConflictConfig, ConflictPolicyName
from replicator.decode import decode
from replicator.filters import ChangeFilter, Route
from replicator.items import item_from_wire, key_id
from replicator.records import raw_record_from
from replicator.rules import Skip, rule_for, squash_order

DESTINATION = "eu-west-1/bench-destination"
BATCH = 1000


def conflict_config(policy: str) -> ConflictConfig:
    if policy == "last_writer_wins":
        return ConflictConfig(
            policy=ConflictPolicyName.LAST_WRITER_WINS, timestamp_attribute="updated_at"
        )
    return ConflictConfig(policy=ConflictPolicyName(policy))


def run_core(policy: str, records: int, spec: WorkloadSpec) -> dict[str, Any]:
    workload = Workload(spec)
    batches = [workload.batch(BATCH)[0] for _ in range(max(1, records // BATCH))]
    rule = rule_for(conflict_config(policy), None)
    change_filter = ChangeFilter(origin_attribute=None, origin_value="", skip_ttl_deletes=False)
    buffer = ChangeBuffer([DESTINATION], squash_order([rule], ordered_stream=True))
    planned = 0
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    for batch in batches:
        for record in batch:
            change = decode(raw_record_from(record))
            route = change_filter.route(change)
            if route is Route.REPLICATE:
                buffer.add(change)
            else:
                buffer.add_skipped(change, replaces_older=route is Route.LOOP_SKIPPED)
        for entry in buffer.take_ready(DESTINATION, BATCH):
            plan = rule.plan(entry.change)
            if not isinstance(plan, Skip):
                plan.to_kwargs("bench-destination")
                planned += 1
            buffer.complete(DESTINATION, entry)
        buffer.checkpointable()
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    count = len(batches) * BATCH
    assert buffer.idle, "every change must be settled"
    return {
        "policy": policy,
        "records": count,
        "writes_planned": planned,
        "records_per_s": count / wall,
        "cpu_us_per_record": cpu / count * 1e6,
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
    """Microseconds per record of each step of the loop above, timed one step at a time
    over each batch (so that, as in the loop, only one batch's objects are alive)."""
    workload = Workload(spec)
    batches = [
        [raw_record_from(r) for r in workload.batch(BATCH)[0]]
        for _ in range(max(1, records // BATCH))
    ]
    count = len(batches) * BATCH
    rule = rule_for(conflict_config(policy), None)
    change_filter = ChangeFilter(origin_attribute=None, origin_value="", skip_ttl_deletes=False)
    buffer = ChangeBuffer([DESTINATION], squash_order([rule], ordered_stream=True))
    watch = _Stopwatch()
    for raws in batches:
        with watch.step("base64_utf8"):
            texts = [base64.b64decode(r["data"], validate=True).decode("utf-8") for r in raws]
        with watch.step("json"):
            documents = [json.loads(text) for text in texts]
        with watch.step("binary_scan"):
            binary = ['"B"' in text or '"BS"' in text for text in texts]
        with watch.step("images"):
            for document, has_binary in zip(documents, binary, strict=True):
                body = document["dynamodb"]
                for name in ("Keys", "NewImage", "OldImage"):
                    if body[name]:
                        item_from_wire(body[name], has_binary=has_binary)
        with watch.step("key_id"):
            for document in documents:
                key_id(document["dynamodb"]["Keys"])
        del texts, documents
        with watch.step("decode_whole"):
            changes = [decode(raw) for raw in raws]
        with watch.step("filter_and_squash"):
            for change in changes:
                change_filter.route(change)
                buffer.add(change)
        with watch.step("take_ready"):
            entries = buffer.take_ready(DESTINATION, BATCH)
        with watch.step("plan_and_kwargs"):
            for entry in entries:
                request = rule.plan(entry.change)
                if not isinstance(request, Skip):
                    request.to_kwargs("bench-destination")
        with watch.step("complete_and_checkpoint"):
            for entry in entries:
                buffer.complete(DESTINATION, entry)
            buffer.checkpointable()
        del changes, entries
    steps = {name: total / count * 1e6 for name, total in watch.totals.items()}
    parts = ("base64_utf8", "json", "binary_scan", "images", "key_id")
    steps["decode_rest"] = max(0.0, steps["decode_whole"] - sum(steps[p] for p in parts))
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
    spec = WorkloadSpec(shape=args.shape)
    result = run_core(args.policy, args.records, spec)
    result["shape"] = args.shape
    if args.breakdown:
        result["breakdown_us"] = breakdown(args.policy, args.records, spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
