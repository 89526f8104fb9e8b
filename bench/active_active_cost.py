"""What active-active convergence costs, counted request by request.

``python -m bench.active_active_cost`` runs a pair of real ``replicator run`` processes
(one per region, each replicating to the other) against a moto server inside this
process, whose DynamoDB calls are counted by operation, by table (the users' tables or
the tombstone tables) and by outcome (written, or a conditional write that failed: both
cost write capacity). Each mode replays the same scripted operations in region A:

* ``insert``: new items; ``update``: a newer image of each; ``delete``: each deleted;
* ``stale``: an image stamped below the one region A holds (a client clock behind), which
  the replicator corrects in A;
* ``conflict``: both regions write the same items at once, A's stamp below B's, so that
  A's writes lose at B and B's winners are written back to A (or arrive first).

Modes: ``plain`` (loop prevention only, as before write-back existed), ``write-back``
(the default for active-active), ``tombstones`` (write-back and tombstones). The
figures are requests per application operation made by the two replicators (the
application's own write excluded), and the README's cost figures come from them.
Only 127.0.0.1 is used; nothing reaches AWS.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from replicator.demo import tables

REGIONS = ("us-east-1", "eu-west-1")
MODES = {
    "plain": "active_active: {write_back: false}\n",
    "write-back": "",
    "tombstones": "active_active: {tombstones: true}\n",
}
# Read requests: a BatchGetItem is one request (one round trip), whatever it reads.
READS = frozenset({"GetItem", "BatchGetItem"})


class Counter:
    """Counts moto's DynamoDB backend calls: (operation, table kind, outcome)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.user_tables: set[str] = set()

    def kind(self, table: str) -> str | None:
        if table.endswith("-tombstones"):
            return "tombstones"
        return "items" if table in self.user_tables else None

    def install(self) -> None:
        """Count requests as DynamoDB receives them (moto's handler, one call per HTTP
        request), by operation, table kind and outcome."""
        from moto.dynamodb.responses import DynamoHandler

        counter = self
        original = DynamoHandler.call_action
        operations = {"PutItem", "UpdateItem", "DeleteItem", *READS}

        def counted(handler: Any) -> Any:
            response = original(handler)
            operation = handler._get_action()
            if operation in operations:
                body = handler.body
                if isinstance(body, str | bytes):
                    body = json.loads(body or "{}")
                table = ""
                if isinstance(body, dict):  # a batch names its (one) table in RequestItems
                    table = str(
                        body.get("TableName") or next(iter(body.get("RequestItems") or {}), "")
                    )
                kind = counter.kind(table)
                if kind:
                    failed = "ConditionalCheckFailed" in str(response[2])
                    with counter.lock:
                        counter.counts[(operation, kind, "failed" if failed else "ok")] += 1
            return response

        DynamoHandler.call_action = counted  # type: ignore[method-assign]

    def snapshot(self) -> collections.Counter[tuple[str, str, str]]:
        with self.lock:
            return collections.Counter(self.counts)


class PairRun:
    def __init__(self, endpoint: str, counter: Counter, mode: str, directory: Path) -> None:
        self.endpoint = endpoint
        self.counter = counter
        self.directory = directory
        name = f"cost-{mode}-{os.getpid()}"
        self.table = {region: f"{name}-{region}" for region in REGIONS}
        self.task = {region: f"{name}-from-{region}" for region in REGIONS}
        self.ddb = {
            r: boto3.client("dynamodb", region_name=r, endpoint_url=endpoint) for r in REGIONS
        }
        self.streams = {
            r: boto3.client("dynamodbstreams", region_name=r, endpoint_url=endpoint)
            for r in REGIONS
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        for region in REGIONS:
            tables.create(self.ddb[region], self.table[region], stream=True)
            counter.user_tables.add(self.table[region])
            other = next(r for r in REGIONS if r != region)
            config = directory / f"{name}-{region}.yaml"
            config.write_text(
                f"task_name: {self.task[region]}\n"
                f"source: {{region: {region}, table: {self.table[region]}, "
                f"endpoint_url: '{endpoint}'}}\n"
                f"destinations:\n  - {{region: {other}, table: {self.table[other]}, "
                f"endpoint_url: '{endpoint}'}}\n"
                "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
                "loop_prevention: {origin_attribute: origin_region}\n"
                + MODES[mode]
                + f"dead_letter: {{kind: file, path: '{directory / name}-dead.jsonl'}}\n"
                "metrics: {enabled: false}\n"
                "kcl: {idle_time_between_reads_ms: 100, failover_time_ms: 6000}\n"
                "writer: {max_in_flight: 16}\n"
            )
            log = (directory / f"{name}-{region}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "replicator", "run", "--config", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for region in REGIONS:
            self._wait(lambda r=region: self._lease(r).get("leaseOwner"), f"{region} runtime")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(60)

    def _wait(self, predicate: Any, what: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                leases = {r: self._lease(r).get("checkpoint") for r in REGIONS}
                ends = {r: self._stream_end(r) for r in REGIONS}
                raise RuntimeError(f"timed out waiting for {what} ({leases}, ends {ends})")
            time.sleep(0.2)

    def _lease(self, region: str) -> dict[str, Any]:
        try:
            rows = self.ddb[region].scan(TableName=self.task[region], ConsistentRead=True)
        except self.ddb[region].exceptions.ResourceNotFoundException:
            return {}
        return rows["Items"][0] if rows["Items"] else {}

    def _passed(self, region: str, end: str) -> bool:
        checkpoint = self._lease(region).get("checkpoint", {}).get("S", "")
        return not end or (checkpoint.isdigit() and int(checkpoint) >= int(end))

    def _stream_end(self, region: str) -> str:
        arn = self.ddb[region].describe_table(TableName=self.table[region])["Table"][
            "LatestStreamArn"
        ]
        streams = self.streams[region]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        last = ""
        while True:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                return last
            last = page["Records"][-1]["dynamodb"]["SequenceNumber"]
            iterator = page["NextShardIterator"]

    def differing(self) -> int:
        """Items that are not the same in both regions."""
        a, b = ({_key(i): i for i in tables.scan_all(self.ddb[r], self.table[r])} for r in REGIONS)
        return sum(1 for key in a.keys() | b.keys() if a.get(key) != b.get(key))

    def settle(self, converges: bool) -> None:
        """Both tables equal (when the mode converges), both runtimes checkpointed their
        stream's end, and no request for two seconds."""
        if converges:
            self._wait(lambda: self.differing() == 0, "both tables to be equal")
        while True:
            ends = {region: self._stream_end(region) for region in REGIONS}
            for region, end in ends.items():
                self._wait(lambda r=region, e=end: self._passed(r, e), f"{region} checkpoint")
            before = self.counter.snapshot()
            time.sleep(2.0)
            after = {r: self._stream_end(r) for r in REGIONS}
            if self.counter.snapshot() == before and ends == after:
                return

    def item(self, index: int, stamp: int, region: str, note: str) -> dict[str, Any]:
        return {
            "pk": {"S": f"item-{index}"},
            "sk": {"N": "0"},
            "updated_at": {"N": str(stamp)},
            "origin_region": {"S": region},
            "note": {"S": note},
        }


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return (item["pk"]["S"], item["sk"]["N"])


def scenario(run: PairRun, name: str, count: int, base: int) -> tuple[int, int]:
    """Run one scripted scenario; (application operations, their stamp base after)."""
    a, b = REGIONS
    put = lambda region, item: run.ddb[region].put_item(TableName=run.table[region], Item=item)  # noqa: E731
    if name == "insert":
        for i in range(count):
            put(a, run.item(i, base + i, a, "inserted"))
        return count, base + count
    if name == "update":
        for i in range(count):
            put(a, run.item(i, base + i, a, "updated"))
        return count, base + count
    if name == "stale":
        for i in range(count):
            put(a, run.item(i, base - 10_000 - i, a, "stale"))
        return count, base
    if name == "conflict":
        for i in range(count):
            put(a, run.item(i, base + 2 * i, a, "loses"))
            put(b, run.item(i, base + 2 * i + 1, b, "wins"))
        return 2 * count, base + 2 * count
    if name == "delete":
        for i in range(count):
            run.ddb[a].delete_item(
                TableName=run.table[a], Key={"pk": {"S": f"item-{i}"}, "sk": {"N": "0"}}
            )
        return count, base
    raise ValueError(name)


def measure(
    endpoint: str, counter: Counter, mode: str, count: int, directory: Path
) -> dict[str, Any]:
    run = PairRun(endpoint, counter, mode, directory)
    results: dict[str, Any] = {}
    try:
        base = int(time.time() * 1000)
        for name in ("insert", "update", "stale", "conflict", "delete"):
            before = counter.snapshot()
            operations, base = scenario(run, name, count, base)
            run.settle(converges=mode != "plain")
            used = counter.snapshot() - before
            writes = sum(v for (op, _, _), v in used.items() if op not in READS)
            reads = sum(v for (op, _, _), v in used.items() if op in READS)
            by_table = {
                f"{op} {kind} {outcome}": v for (op, kind, outcome), v in sorted(used.items())
            }
            results[name] = {
                "operations": operations,
                # the application's own writes are not the replicator's cost
                "writes_per_operation": round((writes - operations) / operations, 2),
                "reads_per_operation": round(reads / operations, 2),
                "tombstone_writes_per_operation": round(
                    sum(
                        v for (op, k, _), v in used.items() if k == "tombstones" and op not in READS
                    )
                    / operations,
                    2,
                ),
                "items_different_after": run.differing(),
                "detail": by_table,
            }
    finally:
        run.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.active_active_cost", description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="operations per scenario")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="keep job files and logs here")
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    from replicator.demo.endpoint import serialize_table_writes

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    counter = Counter()
    serialize_table_writes()
    counter.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    figures: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            directory = args.keep or Path(scratch)
            directory.mkdir(parents=True, exist_ok=True)
            for mode in args.modes.split(","):
                figures[mode] = measure(endpoint, counter, mode, args.count, directory)
                line = {
                    s: (r["writes_per_operation"], r["reads_per_operation"])
                    for s, r in figures[mode].items()
                }
                print(f"{mode}: (writes, reads) per operation {json.dumps(line)}", flush=True)
    finally:
        server.stop()
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
