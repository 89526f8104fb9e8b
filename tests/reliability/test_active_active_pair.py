"""An active-active pair under concurrent writes on both sides converges, without ping-pong:
each write a runtime makes comes back once as an echo, which is skipped, and every lost
conflict is in the conflict log once. The meshes with deletes are test_active_active.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from replicator.demo import tables
from replicator.demo.workload import demo_item
from replicator.items import Item, item_to_wire
from replicator.tools.compare import compare
from tests.support.aws import client
from tests.support.e2e import KEYS, Job, stop, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.reliability import (
    SETTLE_S,
    Figures,
    Samples,
    settle,
)

pytestmark = pytest.mark.reliability


class Application:
    """Writes to both regions' tables at once, as the active-active contract asks: every
    put stamps origin_region with the region written and updated_at with a clock both
    regions share (stamped and written under one lock, so stamps follow the write order)."""

    def __init__(self, ddb: dict[str, Any], tables_by_region: dict[str, str], seed: int) -> None:
        self.ddb = ddb
        self.tables = tables_by_region
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.last_ms = 0
        self.written: list[tuple[str, Item]] = []
        self.errors: list[BaseException] = []

    def write_one(self, region: str) -> None:
        with self.lock:
            stamp = max(int(time.time() * 1000), self.last_ms + 1)
            self.last_ms = stamp
            index = self.rng.randrange(30)  # few keys: both regions write the same items
            item = demo_item(self.rng, f"shared-{index % 10}", index // 10, region)
            item["updated_at"] = {"N": str(stamp)}
            self.ddb[region].put_item(TableName=self.tables[region], Item=item)
            self.written.append((region, item))

    def run(self, region: str, rate: float, duration_s: float) -> threading.Thread:
        def loop() -> None:
            deadline = time.monotonic() + duration_s
            try:
                while time.monotonic() < deadline:
                    self.write_one(region)
                    time.sleep(self.rng.uniform(0, 2 / rate))
            except BaseException as error:  # reported by the test
                self.errors.append(error)

        thread = threading.Thread(target=loop, name=f"app-{region}", daemon=True)
        thread.start()
        return thread

    def expected(self) -> list[Item]:
        """Each key's image with the highest (updated_at, origin_region)."""
        best: dict[tuple[str, str], Item] = {}
        for _, item in self.written:
            key = (item["pk"]["S"], item["sk"]["N"])
            rank = (int(item["updated_at"]["N"]), item["origin_region"]["S"])
            current = best.get(key)
            if current is None or rank > (
                int(current["updated_at"]["N"]),
                current["origin_region"]["S"],
            ):
                best[key] = item
        return list(best.values())

    def count(self, region: str) -> int:
        return sum(1 for written_in, _ in self.written if written_in == region)


def test_an_active_active_pair_under_concurrent_writes_converges_without_ping_pong(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    name = unique("aa")
    regions = ("us-east-1", "eu-west-1")
    table_of = {"us-east-1": f"{name}-use1", "eu-west-1": f"{name}-euw1"}
    ddb = {region: client("dynamodb", region, moto_endpoint) for region in regions}
    for region in regions:
        tables.create(ddb[region], table_of[region], stream=True)
    proxy_of = dict(zip(regions, proxies, strict=True))  # in front of each region's table
    samples = {region: Samples(tmp_path / f"metrics-{region}") for region in regions}
    runtimes: dict[str, subprocess.Popen[bytes]] = {}
    task_of = {region: f"{name}-from-{region}" for region in regions}
    for region in regions:
        other = next(r for r in regions if r != region)
        path = tmp_path / f"{region}.yaml"
        path.write_text(
            f"task_name: {task_of[region]}\n"
            f"source: {{region: {region}, table: {table_of[region]}, "
            f"endpoint_url: '{moto_endpoint}'}}\n"
            "destinations:\n"
            f"  - {{region: {other}, table: {table_of[other]}, "
            f"endpoint_url: '{proxy_of[other].url}'}}\n"
            "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
            "loop_prevention: {origin_attribute: origin_region}\n"
            f"dead_letter: {{kind: file, path: '{tmp_path / region}-dead.jsonl'}}\n"
            f"conflict_log: {{kind: file, path: '{tmp_path / region}-conflicts.jsonl'}}\n"
            "metrics: {host: 127.0.0.1, port: 0}\n"
            "kcl: {idle_time_between_reads_ms: 100, failover_time_ms: 6000}\n"
            "writer: {max_in_flight: 16}\n"
        )
        log = (tmp_path / f"{region}.log").open("ab")
        runtimes[region] = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **samples[region].env},
        )

    def lease(region: str) -> dict[str, Any]:
        try:
            rows = ddb[region].scan(TableName=task_of[region], ConsistentRead=True)["Items"]
        except ddb[region].exceptions.ResourceNotFoundException:
            return {}
        return rows[0] if rows else {}

    def last_sequence(region: str) -> str:
        job = Job.__new__(Job)
        job.endpoint, job.source_region, job.source = moto_endpoint, region, ddb[region]
        job.source_table = table_of[region]
        return job.last_stream_sequence()

    def differences() -> dict[str, list[Any]]:
        expected = app.expected()
        found = {}
        for region in regions:
            diff = compare(expected, tables.scan_all(ddb[region], table_of[region]), KEYS)
            if diff:
                found[region] = diff
        return found

    app = Application(ddb, table_of, seed=8)
    try:
        for region in regions:
            wait_until(lambda r=region: lease(r).get("leaseOwner"), 30, f"the {region} runtime")
        writers = [app.run(region, rate=15, duration_s=10) for region in regions]
        for thread in writers:
            thread.join(60)
        assert not app.errors, app.errors
        lost = settle(differences, SETTLE_S)
        ends = {region: last_sequence(region) for region in regions}
        for region in regions:
            wait_until(
                lambda r=region: lease(r).get("checkpoint", {}).get("S") == ends[r],
                30,
                f"the {region} checkpoint to reach its stream's end",
            )
        # PutItem requests on each region's replicated table (its tombstone table's are
        # not replicated writes: a delete may record its tombstone in two puts).
        puts_seen = {
            region: proxy_of[region].by_table("PutItem")[table_of[region]] for region in regions
        }
        # PutItems whose condition failed (HTTP 400): after one, a rule may write again
        # once with the exact condition the item it found calls for (an equal timestamp
        # and origin, settled by the image digest), with no retry counted.
        refused_puts = {
            region: proxy_of[region].counts("PutItem")["upstream_400"] for region in regions
        }
        # Quiet: with the application stopped, no stream record and no write may appear
        # any more. (This wait gives an echo loop time to show itself; it cannot make the
        # test pass.)
        time.sleep(3)
        assert {region: last_sequence(region) for region in regions} == ends
        assert {
            region: proxy_of[region].by_table("PutItem")[table_of[region]] for region in regions
        } == puts_seen
    finally:
        for region in regions:
            assert stop(runtimes[region]) == 0
    # from_<region>: the runtime reading <region>'s table and writing the other one
    applied = {
        region: samples[region].total("replicator_writes_total", outcome="applied")
        for region in regions
    }
    skipped = {
        region: samples[region].total("replicator_writes_total", outcome="loop_skipped")
        for region in regions
    }
    conflicts = {
        region: samples[region].total("replicator_writes_total", outcome="conflict_lost")
        for region in regions
    }
    # Winners written back to each runtime's own source (write-back is on by default for
    # an active-active job: origin_attribute and last_writer_wins).
    written_back = {
        region: samples[region].total("replicator_conflict_writebacks_total") for region in regions
    }
    figures = Figures(
        "6. active-active, concurrent writes on both sides",
        sent=len(app.written),
        applied=sum(applied.values()),
        retried=sum(samples[r].total("replicator_retries_total") for r in regions),
        dead_lettered=sum(samples[r].total("replicator_dead_letters_total") for r in regions),
        lost=lost,
    )
    other = {"us-east-1": "eu-west-1", "eu-west-1": "us-east-1"}
    figures.details = {
        f"from {region}": f"app writes {app.count(region)}, replicated {applied[region]:.0f}, "
        f"conflicts lost {conflicts[region]:.0f}, written back {written_back[region]:.0f}, "
        f"echoes skipped {skipped[region]:.0f}, "
        f"PutItem requests reaching {other[region]} {puts_seen[other[region]]}"
        for region in regions
    }
    figures.details["keys"] = len(app.expected())
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    for region in regions:
        # Bounded: a region's writes reach the other side at most once each...
        assert applied[region] <= app.count(region)
        assert puts_seen[other[region]] <= app.count(region) + refused_puts[other[region]]
        # ...and each write into a region by a runtime comes back once as an echo in that
        # region's stream, which is skipped: the other runtime's replicated writes, and
        # this region's own write-backs (the winner of a lost conflict, stamped with the
        # other region's origin). A write-back is made at most once per lost conflict and
        # only where the source still held something lower, so it starts nothing more.
        assert written_back[region] <= conflicts[region]
        assert skipped[other[region]] == applied[region] + written_back[other[region]]
    assert sum(conflicts.values()) > 0
    # Every lost conflict is in the conflict log once, with both images as the application
    # wrote them, the winner ranking above the loser.
    written = {json.dumps(item_to_wire(item), sort_keys=True) for _, item in app.written}
    for region in regions:
        path = tmp_path / f"{region}-conflicts.jsonl"
        # The file is created with a region's first lost conflict; a run may have none.
        lines = path.read_text().splitlines() if path.exists() else []
        entries = [json.loads(line) for line in lines]
        assert len(entries) == len({e["id"] for e in entries}) == conflicts[region]
        assert sum(1 for e in entries if e["write_back"]) == written_back[region]
        for entry in entries:
            images = [entry["losing_image"], entry["winning_image"]]
            assert {json.dumps(image, sort_keys=True) for image in images} <= written
            loser, winner = (
                (int(image["updated_at"]["N"]), image["origin_region"]["S"]) for image in images
            )
            assert winner > loser, entry["id"]
