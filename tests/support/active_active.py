"""Active-active meshes for the reliability scenarios: one table and one real ``replicator
run`` per region against a moto server, applications writing in every region at once,
and the check that every region ends with each key's highest-ranked operation
(docs/active-active.md)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replicator.demo import tables
from replicator.items import Item, KeyId, key_id, same_item
from replicator.rules.order import OpRank
from replicator.rules.ordered import OrderedRule
from tests.support.aws import client
from tests.support.e2e import KEYS, PATIENCE, last_stream_record, stop, wait_until
from tests.support.iam import CallLog, ungranted
from tests.support.reliability import Samples

RULE = OrderedRule("last_writer_wins", "updated_at", "origin_region", numeric_only=False)

# How many writes the applications make. moto serves about 340 writes/s on an idle 2-core
# machine and a third of that on a loaded one, and each application write costs the
# mesh about four requests (the write, its replication, tombstone checks, echoes), plus
# the runtimes' reads and checkpoints: 2,000 writes over a pair take about 45 s idle and
# 100 s loaded. The pair runs the full 2,000; the three-region mesh, whose every write
# costs half as much again, runs 900 by default (AA_MESH_WRITES=2000 for the full size,
# docs/active-active.md).
PAIR_WRITES = int(os.environ.get("AA_PAIR_WRITES", "2000"))
THREE_REGION_WRITES = int(os.environ.get("AA_MESH_WRITES", "900"))


class Mesh:
    """One table per region and one runtime per region, each replicating to all others."""

    def __init__(
        self,
        endpoint: str,
        name: str,
        regions: tuple[str, ...],
        directory: Path,
        *,
        tombstones: bool = True,
        loop_prevention: dict[str, str] | None = None,
        max_records: int | None = None,
        write_back: bool | None = None,
    ) -> None:
        """``loop_prevention``: a region's job's setting (a YAML flow mapping), when not
        the documented ``{origin_attribute: origin_region}``. ``max_records``: the jobs'
        ``kcl.max_records`` (1: every record is a batch of its own). ``write_back``: the
        jobs' ``active_active.write_back`` (None: its default)."""
        self.max_records = max_records
        self.write_back = write_back
        self.endpoint = endpoint
        self.tombstones = tombstones
        self.loop_prevention = loop_prevention or {}
        self.regions = regions
        self.directory = directory
        self.table = {region: f"{name}-{region}" for region in regions}
        self.task = {region: f"{name}-from-{region}" for region in regions}
        self.ddb = {region: client("dynamodb", region, endpoint) for region in regions}
        self.samples = {r: Samples(directory / f"metrics-{r}") for r in regions}
        self.runtimes: dict[str, subprocess.Popen[bytes]] = {}
        for region in regions:
            tables.create(self.ddb[region], self.table[region], stream=True)
            self.config(region).write_text(self._job(region))

    def config(self, region: str) -> Path:
        return self.directory / f"{region}.yaml"

    def _job(self, region: str) -> str:
        destinations = "".join(
            f"  - {{region: {other}, table: {self.table[other]}, "
            f"endpoint_url: '{self.endpoint}'}}\n"
            for other in self.regions
            if other != region
        )
        where = self.directory / region
        return (
            f"task_name: {self.task[region]}\n"
            f"source: {{region: {region}, table: {self.table[region]}, "
            f"endpoint_url: '{self.endpoint}'}}\n"
            f"destinations:\n{destinations}"
            "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
            "loop_prevention: "
            f"{self.loop_prevention.get(region, '{origin_attribute: origin_region}')}\n"
            f"active_active: {{tombstones: {str(self.tombstones).lower()}"
            + ("" if self.write_back is None else f", write_back: {str(self.write_back).lower()}")
            + "}\n"
            f"dead_letter: {{kind: file, path: '{where}-dead.jsonl'}}\n"
            f"conflict_log: {{kind: file, path: '{where}-conflicts.jsonl'}}\n"
            "metrics: {host: 127.0.0.1, port: 0}\n"
            "kcl: {idle_time_between_reads_ms: 100, failover_time_ms: 6000"
            + (f", max_records: {self.max_records}" if self.max_records else "")
            + "}\n"
            "writer: {max_in_flight: 16}\n"
            + ("logging: {level: debug}\n" if os.environ.get("AA_DEBUG") else "")
        )

    def start(self, *regions: str) -> None:
        """Start the runtimes of ``regions`` (of every region when none are named)."""
        regions = regions or self.regions
        logged_before: dict[str, int] = {}
        for region in regions:
            path = self.directory / f"{region}.log"
            logged_before[region] = path.stat().st_size if path.exists() else 0
            log = path.open("ab")
            self.runtimes[region] = subprocess.Popen(
                [sys.executable, "-m", "replicator", "run", "--config", str(self.config(region))],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    **self.samples[region].env,
                    "AWS_ACCESS_KEY_ID": self.access_key(region),
                },
            )
        for region in regions:
            # Started, not only spawned: a lease owner may be a former process's, and a
            # SIGTERM before the interpreter runs ends the new one with -15, no word said.
            wait_until(lambda r=region: self._started(r, logged_before[r]), 30, f"{region} runtime")
            wait_until(lambda r=region: self.lease(r).get("leaseOwner"), 30, f"{region} runtime")

    def _started(self, region: str, logged_before: int) -> bool:
        """The region's runtime has logged its start since ``logged_before`` (bytes)."""
        runtime = self.runtimes[region]
        assert runtime.poll() is None, f"the {region} runtime exited:\n" + self.log_tail(region)
        with (self.directory / f"{region}.log").open("rb") as log:
            log.seek(logged_before)
            return b'"local runtime started"' in log.read()

    def access_key(self, region: str) -> str:
        """The region's runtime's own key: the server's call log tells its calls apart."""
        return "MESH" + region.replace("-", "").upper()

    def ungranted_calls(self, log: CallLog, region: str) -> list[str]:
        """The region's runtime's calls that the documented worker policy (source in
        us-east-1, destination in eu-west-1, all tables named orders) does not grant."""
        (other,) = (r for r in self.regions if r != region)
        return ungranted(
            log.calls(self.access_key(region)),
            regions={region: "us-east-1", other: "eu-west-1"},
            names={
                self.table[region]: "orders",
                self.table[other]: "orders",
                self.task[region]: "TASK",
            },
            stream_table=self.table[region],
        )

    def stop(self, *regions: str) -> dict[str, int]:
        """Stop the runtimes of ``regions`` (every one running when none are named): their
        exit codes."""
        return {
            region: stop(self.runtimes.pop(region)) for region in regions or tuple(self.runtimes)
        }

    def lease(self, region: str) -> dict[str, Any]:
        ddb = self.ddb[region]
        try:
            rows = ddb.scan(TableName=self.task[region], ConsistentRead=True)["Items"]
        except ddb.exceptions.ResourceNotFoundException:
            return {}
        assert self.runtimes.get(region) is None or self.runtimes[region].poll() is None, (
            f"the {region} runtime exited:\n" + self.log_tail(region)
        )
        return rows[0] if rows else {}

    def checkpoint(self, region: str) -> str:
        """The region's checkpoint when it is a record's sequence number, else ""."""
        found: str = self.lease(region).get("checkpoint", {}).get("S", "")
        return found if found.isdigit() else ""

    def log_tail(self, region: str) -> str:
        return (self.directory / f"{region}.log").read_text()[-4000:]

    def stream_end(self, region: str, after: str = "") -> str:
        """The sequence number of the last record in the region's stream (its only shard).

        Read on from the record ``after`` when given (a sequence number the stream holds:
        a checkpoint, an end found before; it is the end if nothing follows it), else from
        the stream's start. Read whole, the stream of a 2,000-write pair took moto some 6 s
        a region, and the check below reads every stream twice."""
        return last_stream_record(self.ddb[region], self.endpoint, self.table[region], after)

    def stream_images(self, region: str) -> list[tuple[str, Item]]:
        """Every record of the region's stream (its only shard), in order: its event and
        the image it carries (a put's new image, a delete's old one)."""
        ddb = self.ddb[region]
        streams = client("dynamodbstreams", region, self.endpoint)
        arn = ddb.describe_table(TableName=self.table[region])["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        found: list[tuple[str, Item]] = []
        while True:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                return found
            for record in page["Records"]:
                data = record["dynamodb"]
                event = record["eventName"]
                found.append((event, data["OldImage" if event == "REMOVE" else "NewImage"]))
            iterator = page["NextShardIterator"]

    def run_once(
        self, region: str, done: Callable[[], bool] = lambda: True, what: str = ""
    ) -> None:
        """Start the region's runtime, wait until ``done`` and its checkpoint is at its
        stream's end (the records its own writes added included), and stop it (a process
        of its own each time: nothing remembered from the last)."""
        self.start(region)
        if what:
            wait_until(done, 60, what)
        wait_until(
            lambda: self.checkpoint(region) == self.stream_end(region),
            60,
            f"the {region} checkpoint to reach its stream's end",
        )
        assert self.stop(region) == {region: 0}, self.log_tail(region)

    def items(self, region: str) -> dict[KeyId, Item]:
        found = tables.scan_all(self.ddb[region], self.table[region])
        return {key_id({k: item[k] for k in KEYS}): item for item in found}

    def quiet(self) -> None:
        """Every runtime has checkpointed its stream's end, and nothing more happens: no
        new stream record anywhere (an echo or write-back loop would make them)."""
        ends = {region: self.stream_end(region, self.checkpoint(region)) for region in self.regions}
        for region in self.regions:
            wait_until(
                lambda r=region: self.lease(r).get("checkpoint", {}).get("S") == ends[r],
                30,
                f"the {region} checkpoint to reach its stream's end",
            )
        time.sleep(3)  # gives a loop time to show itself; it cannot make the test pass
        assert {region: self.stream_end(region, ends[region]) for region in self.regions} == ends

    def total(self, name: str, **labels: str) -> float:
        return sum(self.samples[region].total(name, **labels) for region in self.regions)

    def conflict_entries(self) -> list[dict[str, Any]]:
        entries = []
        for region in self.regions:
            path = self.directory / f"{region}-conflicts.jsonl"
            if path.exists():
                entries += [json.loads(line) for line in path.read_text().splitlines()]
        return entries


class Operations:
    """What the applications did, each operation with its rank in the total order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.best: dict[KeyId, tuple[OpRank, Item | None]] = {}
        self.count: dict[str, int] = {}
        self.errors: list[BaseException] = []

    def record(self, kind: str, keys: Item, rank: OpRank, image: Item | None) -> None:
        with self.lock:
            self.count[kind] = self.count.get(kind, 0) + 1
            key = key_id(keys)
            held = self.best.get(key)
            if held is None or rank > held[0]:
                self.best[key] = (rank, image)

    def differences(self, mesh: Mesh) -> dict[str, list[str]]:
        """Per region, the keys that do not hold their highest-ranked operation."""
        found: dict[str, list[str]] = {}
        for region in mesh.regions:
            items = mesh.items(region)
            wrong = []
            for key, (_, image) in self.best.items():
                held = items.pop(key, None)
                if image is None and held is not None:
                    wrong.append(f"{key}: deleted, found {held}")
                elif image is not None and (held is None or not same_item(held, image)):
                    wrong.append(f"{key}: expected {image}, found {held}")
            wrong += [f"{key}: never written, found {item}" for key, item in items.items()]
            if wrong:
                found[region] = wrong
        return found


def app_item(keys: Item, stamp: int, region: str, rng: random.Random) -> Item:
    return {
        **keys,
        "updated_at": {"N": str(stamp)},
        "origin_region": {"S": region},
        "v": {"S": f"{region}-{rng.randrange(10**6)}"},
        "n": {"N": str(rng.randrange(1000))},
    }


class Application:
    """Unconditional puts, updates and deletes over ``keys`` keys, as a region's
    application makes them, with client clocks up to ``skew_ms`` behind."""

    def __init__(
        self, mesh: Mesh, region: str, ops: Operations, keys: int, skew_ms: int, seed: int
    ) -> None:
        self.mesh = mesh
        self.region = region
        self.ops = ops
        self.keys = keys
        self.skew_ms = skew_ms
        self.rng = random.Random(seed)
        self.ddb = client("dynamodb", region, mesh.endpoint)
        self.table = mesh.table[region]

    def key(self) -> Item:
        index = self.rng.randrange(self.keys)
        return {"pk": {"S": f"k{index % 25}"}, "sk": {"N": str(index // 25)}}

    def stamp(self) -> int:
        return int(time.time() * 1000) - self.rng.randrange(self.skew_ms) + self.skew_ms // 4

    def write_one(self) -> None:
        keys, roll, region = self.key(), self.rng.random(), self.region
        with self.ops.lock:
            self.ops.count["writes"] = self.ops.count.get("writes", 0) + 1
        if roll < 0.5:
            item = app_item(keys, self.stamp(), region, self.rng)
            self.ddb.put_item(TableName=self.table, Item=item)
            self.ops.record("put", keys, (RULE.rank(item), 0), item)
        elif roll < 0.8:
            new = self.ddb.update_item(
                TableName=self.table,
                Key=keys,
                UpdateExpression="SET updated_at = :t, origin_region = :o, n = :n",
                ExpressionAttributeValues={
                    ":t": {"N": str(self.stamp())},
                    ":o": {"S": region},
                    ":n": {"N": str(self.rng.randrange(1000))},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
            self.ops.record("update", keys, (RULE.rank(new), 0), new)
        else:
            old = self.ddb.delete_item(TableName=self.table, Key=keys, ReturnValues="ALL_OLD")
            if old.get("Attributes"):  # a delete of nothing is no operation at all
                self.ops.record("delete", keys, (RULE.rank(old["Attributes"]), 1), None)

    def run(self, writes: int) -> threading.Thread:
        def loop() -> None:
            try:
                for _ in range(writes):
                    self.write_one()
                    # Random pauses: mostly none to a few milliseconds, now and then a
                    # quarter second (the workload's shape, not a wait for anything).
                    pause = 0.25 if self.rng.random() < 0.01 else self.rng.uniform(0, 0.006)
                    time.sleep(pause)
            except BaseException as error:  # reported by the test
                self.ops.errors.append(error)

        thread = threading.Thread(target=loop, name=f"app-{self.region}", daemon=True)
        thread.start()
        return thread


def converge(ops: Operations, mesh: Mesh, timeout: float) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout * PATIENCE
    while True:
        found = ops.differences(mesh)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def run_workload(mesh: Mesh, writes: int, keys: int = 50, skew_ms: int = 3000) -> Operations:
    ops = Operations()
    per_region = writes // len(mesh.regions)
    apps = [
        Application(mesh, region, ops, keys, skew_ms, seed=index)
        for index, region in enumerate(mesh.regions)
    ]
    threads = [app.run(per_region) for app in apps]
    for thread in threads:
        thread.join(300)
    assert not ops.errors, ops.errors
    return ops


def report(mesh: Mesh, ops: Operations, started: float, left: dict[str, list[str]]) -> None:
    figures = {
        "operations": dict(sorted(ops.count.items())),
        "replicated": mesh.total("replicator_writes_total", outcome="applied"),
        "unchanged": mesh.total("replicator_writes_total", outcome="unchanged"),
        "conflicts lost": mesh.total("replicator_writes_total", outcome="conflict_lost"),
        "echoes skipped": mesh.total("replicator_writes_total", outcome="loop_skipped"),
        "written back": mesh.total("replicator_conflict_writebacks_total"),
        "tombstones written": mesh.total("replicator_tombstones_written_total"),
        "dead letters": mesh.total("replicator_dead_letters_total"),
        "keys": len(ops.best),
        "deleted keys": sum(1 for _, image in ops.best.values() if image is None),
        "seconds": round(time.monotonic() - started, 1),
        "keys still wrong": {region: len(keys) for region, keys in left.items()},
    }
    print(f"\n[active-active] {len(mesh.regions)} regions: {json.dumps(figures)}")


def check_converged(mesh: Mesh, ops: Operations, started: float) -> None:
    left = converge(ops, mesh, 90)
    report(mesh, ops, started, left)
    assert not left, {region: keys[:5] for region, keys in left.items()}
    mesh.quiet()
    assert mesh.total("replicator_dead_letters_total") == 0
    # Bounded: at most one write-back per lost conflict (a corrected local write is
    # counted as a conflict lost at the source and is its own write-back).
    assert mesh.total("replicator_conflict_writebacks_total") <= mesh.total(
        "replicator_writes_total", outcome="conflict_lost"
    )
    # Every lost conflict is in the conflict log, its write-back recorded with it.
    entries = mesh.conflict_entries()
    assert len(entries) == mesh.total("replicator_writes_total", outcome="conflict_lost")
    assert sum(1 for e in entries if e["write_back"]) == mesh.total(
        "replicator_conflict_writebacks_total"
    )
