"""Metrics and health: the names and labels, gathering across processes, and the values a
running replicator reports while it replicates, stalls on a destination and recovers."""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from replicator.demo.workload import demo_item
from replicator.exceptions import EnvironmentProblem
from replicator.metrics import health as health_rules
from replicator.metrics import multiprocess
from replicator.metrics.server import MetricsServer
from tests.support import ROOT
from tests.support.e2e import Job, stop, wait_until
from tests.support.metrics import (
    Sample,
    exported_samples,
    health,
    logged_metrics_port,
    matching,
    metric_names_in,
    scrape,
    total,
)

LAG = "replicator_replication_lag_seconds"
WRITES = "replicator_writes_total"

# -- names and labels ---------------------------------------------------------------------

# The interface the README documents: sample name -> label names.
DOCUMENTED = {
    "replicator_replication_lag_seconds": {"destination", "shard"},
    "replicator_apply_delay_seconds_bucket": {"destination", "le"},
    "replicator_apply_delay_seconds_sum": {"destination"},
    "replicator_apply_delay_seconds_count": {"destination"},
    "replicator_millis_behind_latest": {"shard"},
    "replicator_records_received_total": {"event"},
    "replicator_writes_total": {"destination", "op", "outcome"},
    "replicator_retries_total": {"destination", "reason"},
    "replicator_late_write_holds_total": {"destination"},
    "replicator_late_puts_removed_total": {"destination"},
    "replicator_dead_letters_total": {"destination", "reason"},
    "replicator_dead_letters_already_stored_total": {"destination", "reason"},
    "replicator_destination_tables_lost_total": {"destination"},
    "replicator_conflict_log_written_total": {"destination"},
    "replicator_conflict_log_dropped_total": {"destination", "reason"},
    "replicator_conflict_log_retries_total": set(),
    "replicator_conflict_writebacks_total": {"destination"},
    "replicator_tombstones_written_total": {"destination"},
    "replicator_tombstones_expired_total": {"destination"},
    "replicator_checkpoints_total": set(),
    "replicator_squashed_total": set(),
    "replicator_batch_flush_seconds_bucket": {"le"},
    "replicator_batch_flush_seconds_sum": set(),
    "replicator_batch_flush_seconds_count": set(),
    "replicator_in_flight_writes": {"destination"},
    "replicator_resolver_calls_running": {"destination", "shard"},
    "replicator_dead_letters_storing": {"destination", "shard"},
    "replicator_buffered_changes": {"shard"},
    "replicator_last_checkpoint_timestamp_seconds": {"shard"},
    "replicator_destination_progress_timestamp_seconds": {"destination", "shard"},
    "replicator_last_record_received_timestamp_seconds": {"shard"},
    "replicator_shard_started_timestamp_seconds": {"shard"},
    "replicator_shards_owned": set(),
    "replicator_processor_restarts_total": set(),
    "replicator_watermark_timestamp_seconds": {"destination"},
    "replicator_watermark_read_timestamp_seconds": {"destination"},
    "replicator_watermark_publish_failures_total": {"destination"},
    "replicator_healthy": set(),
}


def test_every_documented_metric_is_exported_with_its_labels() -> None:
    exported = exported_samples()
    assert {name: set(labels) for name, labels in exported.items()} == DOCUMENTED


def test_the_metrics_document_describes_every_metric() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    families = {
        name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        for name in DOCUMENTED
    }
    missing = sorted(family for family in families if f"`{family}" not in text)
    assert not missing, f"docs/metrics.md does not describe {missing}"


def test_every_metric_name_the_docs_give_is_exported() -> None:
    """A name copied from a page into a Prometheus query must find a series: a page that
    named ``replicator_retries`` for ``replicator_retries_total`` gave an empty query."""
    families = {
        name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        for name in DOCUMENTED
    }
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    unknown = sorted(
        {
            (page.name, name)
            for page in pages
            for name in re.findall(r"\breplicator_[a-z_]+", page.read_text())
            if name not in families
        }
    )
    assert not unknown, f"pages name metrics that are not exported: {unknown}"


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads((ROOT / "docker" / "grafana" / "replicator-dashboard.json").read_text())
    queries = list(_dashboard_queries(dashboard))
    assert queries, "the dashboard has no queries"
    exported = set(exported_samples())
    used = {name for query in queries for name in metric_names_in(query)}
    assert used <= exported, f"unknown metrics in the dashboard: {sorted(used - exported)}"
    # The panels operators look at first.
    assert {
        LAG,
        "replicator_apply_delay_seconds_bucket",
        WRITES,
        "replicator_retries_total",
        "replicator_dead_letters_total",
        "replicator_checkpoints_total",
        "replicator_in_flight_writes",
        "replicator_buffered_changes",
        "replicator_millis_behind_latest",
        "replicator_conflict_log_written_total",
        "replicator_conflict_log_dropped_total",
    } <= used
    titles = [panel.get("title") for panel in _panels(dashboard)]
    assert all(titles) and len(titles) == len(set(titles)), titles


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _dashboard_queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and variable.get("type") == "query":
            yield query


# -- health rules -------------------------------------------------------------------------

NOW = 10_000.0


def lag(destination: str, shard: str, seconds: float) -> Sample:
    return (LAG, {"destination": destination, "shard": shard}, seconds)


def checkpoint(shard: str, at: float) -> Sample:
    return ("replicator_last_checkpoint_timestamp_seconds", {"shard": shard}, at)


def evaluate(samples: list[Sample], problems: tuple[str, ...] = ()) -> health_rules.Health:
    return health_rules.evaluate(
        samples, now=NOW, stall_after_s=60, started_at=NOW - 3600, problems=problems
    )


def test_an_idle_stream_is_healthy_however_old_its_last_checkpoint() -> None:
    result = evaluate([lag("eu", "s1", 0.0), lag("ap", "s1", 0.0), checkpoint("s1", NOW - 3000)])
    assert result.healthy
    assert result.as_dict()["status"] == "ok"
    assert result.as_dict()["shards"]["s1"] == {
        "lag_seconds": {"ap": 0.0, "eu": 0.0},
        "last_checkpoint": NOW - 3000,
    }


def test_a_lag_floor_raises_the_lag_shown_not_the_lag_judged_stalled() -> None:
    """A processor that does not answer (local runtime: a processRecords out) leaves its
    gauges as they were, writes in flight among them: /healthz shows the lag from the
    runtime's floor, but names no destination stalled for it (the runtime's reason names
    the processor); a shard without a floor is as its samples say."""
    samples = [
        lag("ap", "s1", 0.2),
        lag("eu", "s1", 0.0),
        lag("eu", "s2", 1.5),
        ("replicator_in_flight_writes", {"destination": "ap"}, 3.0),
        progress("ap", "s1", NOW - 900),
        started("s1", NOW - 3000),
    ]
    result = health_rules.evaluate(
        samples,
        now=NOW,
        stall_after_s=60,
        started_at=NOW - 3600,
        lag_floors={"s1": NOW - 400.0},
    )
    assert result.healthy, result.reasons
    assert result.as_dict()["shards"]["s1"]["lag_seconds"] == {"ap": 400.0, "eu": 400.0}
    assert result.as_dict()["shards"]["s2"]["lag_seconds"] == {"eu": 1.5}
    assert result.as_dict()["destinations"] == {
        "ap": {"lag_seconds": 400.0},
        "eu": {"lag_seconds": 400.0},
    }


def progress(destination: str, shard: str, at: float) -> Sample:
    return (
        "replicator_destination_progress_timestamp_seconds",
        {"destination": destination, "shard": shard},
        at,
    )


def started(shard: str, at: float) -> Sample:
    return (health_rules.SHARD_STARTED, {"shard": shard}, at)


def test_a_destination_that_settled_nothing_counts_from_the_shards_first_processor() -> None:
    """A shard taken over long after the runtime started, with a backlog, was named
    stalled for the runtime's age at its first report; a processor that restarts again
    and again (each start a sample of its own process, the earliest kept) must not
    restart the count, or a destination that refuses everything would never be named."""
    assert evaluate([lag("ap", "s1", 500.0), started("s1", NOW - 30)]).healthy
    restarted = evaluate([lag("ap", "s1", 500.0), started("s1", NOW - 5), started("s1", NOW - 61)])
    assert restarted.reasons == [
        "destination ap is stalled on shard s1: 500s behind and nothing settled there for "
        "61s (limit 60s)"
    ]
    (reason,) = evaluate([lag("ap", "s1", 500.0)]).reasons  # no start known: the runtime's
    assert "nothing settled there for 3600s" in reason


def test_a_backlog_being_worked_off_is_healthy_however_large_its_lag() -> None:
    assert evaluate([lag("eu", "s1", 5000.0), progress("eu", "s1", NOW - 5)]).healthy


def test_a_destination_behind_with_nothing_settled_for_the_stall_time_is_unhealthy() -> None:
    result = evaluate(
        [
            lag("eu", "s1", 0.0),
            lag("ap", "s1", 90.0),
            progress("eu", "s1", NOW - 1),
            progress("ap", "s1", NOW - 100),
            checkpoint("s1", NOW - 100),
            lag("eu", "s2", 0.0),
            lag("ap", "s2", 0.0),
            checkpoint("s2", NOW - 100),
        ]
    )
    assert not result.healthy
    assert result.reasons == [
        "destination ap is stalled on shard s1: 90s behind and nothing settled there for "
        "100s (limit 60s)"
    ]
    body = result.as_dict()
    assert body["status"] == "unhealthy"
    assert body["destinations"] == {"ap": {"lag_seconds": 90.0}, "eu": {"lag_seconds": 0.0}}


@pytest.mark.parametrize("calls", [1.0, 3.0])
def test_a_destination_stalled_while_its_custom_resolver_runs_names_the_resolver(
    calls: float,
) -> None:
    """The user's resolver holds the change, not the destination: the on-call must not be
    sent to the destination's region. The words do not change with the count (the log's
    watch compares reasons without their numbers)."""
    running = ("replicator_resolver_calls_running", {"destination": "ap", "shard": "s1"}, calls)
    idle = ("replicator_resolver_calls_running", {"destination": "eu", "shard": "s1"}, 0.0)
    # A call on another shard (healthy there) says nothing of this shard's stall.
    elsewhere = ("replicator_resolver_calls_running", {"destination": "eu", "shard": "s2"}, 1.0)
    result = evaluate(
        [
            lag("ap", "s1", 90.0),
            progress("ap", "s1", NOW - 100),
            lag("eu", "s1", 90.0),
            progress("eu", "s1", NOW - 100),
            running,
            idle,
            elsewhere,
        ]
    )
    assert result.reasons == [
        "destination ap is stalled on shard s1: 90s behind and nothing settled there for "
        f"100s (limit 60s); the custom resolver is running there (calls now: {int(calls)}): "
        "a resolver that does not return holds its change (conflict.resolver)",
        "destination eu is stalled on shard s1: 90s behind and nothing settled there for "
        "100s (limit 60s)",
    ]


def test_a_destination_stalled_while_its_dead_letters_wait_names_the_dead_letter_target() -> None:
    """A dead-letter queue that stopped answering held the changes it was to take, and
    /healthz said only that the destination was stalled: the on-call debugged a
    destination that took every other write."""
    result = evaluate(
        [
            lag("ap", "s1", 90.0),
            progress("ap", "s1", NOW - 100),
            lag("eu", "s1", 90.0),
            progress("eu", "s1", NOW - 100),
            ("replicator_dead_letters_storing", {"destination": "ap", "shard": "s1"}, 5.0),
            ("replicator_dead_letters_storing", {"destination": "eu", "shard": "s1"}, 0.0),
            # Letters of another shard say nothing of this shard's stall.
            ("replicator_dead_letters_storing", {"destination": "eu", "shard": "s2"}, 2.0),
        ]
    )
    assert result.reasons == [
        "destination ap is stalled on shard s1: 90s behind and nothing settled there for "
        "100s (limit 60s); its dead letters wait for the dead-letter target (now: 5): the "
        "target (dead_letter) holds those changes, not the destination; the log says why",
        "destination eu is stalled on shard s1: 90s behind and nothing settled there for "
        "100s (limit 60s)",
    ]


def test_a_moving_checkpoint_does_not_hide_a_stuck_destination() -> None:
    # The checkpoint moves past changes that newer ones replaced, while "ap" accepts
    # nothing: only the destination's own progress counts.
    result = evaluate(
        [
            lag("eu", "s1", 0.0),
            progress("eu", "s1", NOW - 1),
            lag("ap", "s1", 100.0),
            progress("ap", "s1", NOW - 100),
            checkpoint("s1", NOW - 1),
        ]
    )
    assert [reason.split(":")[0] for reason in result.reasons] == [
        "destination ap is stalled on shard s1"
    ]


def test_a_reader_catching_up_with_nothing_in_flight_at_a_destination_is_healthy() -> None:
    # Lag from millisBehindLatest alone: nothing is held back at "ap" (all filtered, say).
    in_flight = ("replicator_in_flight_writes", {"destination": "ap"}, 0.0)
    assert evaluate([lag("ap", "s1", 900.0), progress("ap", "s1", NOW - 900), in_flight]).healthy


def behind(shard: str, millis: float) -> Sample:
    return ("replicator_millis_behind_latest", {"shard": shard}, millis)


def test_a_shard_whose_lag_is_its_readers_is_not_stalled_by_another_shards_writes() -> None:
    # s1 reads a long run of records with nothing to write to "ap" (echoes, skipped TTL
    # deletes): its lag is its reader's 400 s behind the tip. s2 has writes in flight to
    # "ap" and settles them. The in-flight gauge is the destination's, all shards.
    samples = [
        lag("ap", "s1", 400.0),
        behind("s1", 400_000),
        progress("ap", "s1", NOW - 900),
        checkpoint("s1", NOW - 1),
        lag("ap", "s2", 2.0),
        behind("s2", 0),
        progress("ap", "s2", NOW - 1),
        ("replicator_in_flight_writes", {"destination": "ap"}, 20.0),
    ]
    assert evaluate(samples).healthy
    # The same shard holding a change at "ap" for longer than its reader is behind: stuck.
    held = [sample for sample in samples if sample[:2] != lag("ap", "s1", 0)[:2]]
    held.append(lag("ap", "s1", 700.0))
    result = evaluate(held)
    assert [reason.split(":")[0] for reason in result.reasons] == [
        "destination ap is stalled on shard s1"
    ]


def test_lag_just_at_the_limit_is_still_healthy() -> None:
    assert evaluate([lag("ap", "s1", 60.0), progress("ap", "s1", NOW - 500)]).healthy
    assert evaluate([lag("ap", "s1", 500.0), progress("ap", "s1", NOW - 60)]).healthy


def test_a_stalled_destination_is_never_shown_at_its_limit() -> None:
    """The body shows the lag to the millisecond; the verdict is taken on that number, so
    a lag a fraction of a millisecond past the limit (shown as the limit) is healthy."""
    stuck = progress("ap", "s1", NOW - 500)
    assert evaluate([lag("ap", "s1", 60.0004), stuck]).healthy
    result = evaluate([lag("ap", "s1", 60.0006), stuck])
    assert not result.healthy
    assert result.as_dict()["destinations"] == {"ap": {"lag_seconds": 60.001}}


def test_a_destination_that_never_settled_anything_counts_from_the_runtime_start() -> None:
    samples = [lag("ap", "s1", 120.0), checkpoint("s1", NOW - 1)]
    assert not evaluate(samples).healthy  # started an hour ago
    fresh = health_rules.evaluate(samples, now=NOW, stall_after_s=60, started_at=NOW - 30)
    assert fresh.healthy


def test_problems_the_runtime_reports_make_it_unhealthy() -> None:
    result = evaluate([lag("eu", "s1", 0.0)], problems=("shard s1: worker not running",))
    assert not result.healthy
    assert result.reasons == ["shard s1: worker not running"]


def test_the_health_watch_logs_each_change_once_at_warning() -> None:
    """The turn to unhealthy, a new reason, and the way back: one warning each; the same
    reasons with other numbers (seconds behind that grow) are no change."""
    import structlog.testing

    def stalled(seconds: int) -> health_rules.Health:
        reason = f"destination ap is stalled on shard s1: {seconds}s behind (limit 3s)"
        return health_rules.Health(False, [reason], stalled={"ap": reason})

    watch = health_rules.Watch()
    with structlog.testing.capture_logs() as logged:
        watch.look(health_rules.Health(True))
        watch.look(stalled(5))
        watch.look(stalled(10))
        worse = stalled(15)
        worse.reasons.append("shard s2: worker not running")
        watch.look(worse)
        watch.look(health_rules.Health(True))
    assert [(entry["event"], entry["log_level"]) for entry in logged] == [
        ("unhealthy", "warning"),
        ("unhealthy", "warning"),
        ("healthy again", "warning"),
    ]
    assert logged[0]["stalled_destinations"] == ["ap"]
    assert logged[0]["reasons"] == [stalled(5).reasons[0]]
    assert logged[1]["reasons"][1] == "shard s2: worker not running"
    assert logged[2]["stalled_destinations"] == ["ap"] and len(logged[2]["was"]) == 2


# -- the server and the samples directory -------------------------------------------------

CHILD = """
import sys
from replicator.metrics import Metrics
destination, shard, lag = sys.argv[1], sys.argv[2], float(sys.argv[3])
metrics = Metrics()
metrics.replication_lag.labels(destination, shard).set(lag)
metrics.in_flight_writes.labels(destination).set(2)
metrics.writes.labels(destination, "put", "applied").inc(5)
metrics.apply_delay.labels(destination).observe(0.3)
metrics.last_checkpoint.labels(shard).set(1000.0 + lag)
metrics.shard_started.labels(shard).set(500.0 + lag)
print("ready", flush=True)
sys.stdin.read()
"""


class SampleWriter:
    """A real process writing metrics into the samples directory, as a processor does."""

    def __init__(self, directory: Path, destination: str, shard: str, lag: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, destination, shard, str(lag)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, multiprocess.ENV: str(directory)},
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"ready\n"

    @property
    def pid(self) -> int:
        return self.process.pid


@pytest.fixture
def samples_directory() -> Iterator[multiprocess.SamplesDirectory]:
    directory = multiprocess.prepare()
    yield directory
    multiprocess.discard(directory)
    assert not directory.path.exists()


@pytest.fixture
def server(samples_directory: multiprocess.SamplesDirectory) -> Iterator[MetricsServer]:
    problems: list[str] = []
    server = MetricsServer(
        "127.0.0.1", 0, samples_directory.path, problems=lambda: problems, stall_after_s=60
    )
    server.start()
    yield server
    server.stop()


def test_a_killed_processor_s_live_gauges_are_reaped_and_its_totals_kept(
    samples_directory: multiprocess.SamplesDirectory, server: MetricsServer
) -> None:
    directory = samples_directory.path
    first = SampleWriter(directory, "ap", "s1", 7.0)
    second = SampleWriter(directory, "ap", "s2", 3.0)
    try:
        samples = scrape(server.port)
        assert matching(samples, LAG, shard="s1") == [7.0]
        assert matching(samples, LAG, shard="s2") == [3.0]
        assert matching(samples, "replicator_in_flight_writes", destination="ap") == [4.0]
        assert total(samples, WRITES, destination="ap", outcome="applied") == 10

        first.process.send_signal(signal.SIGKILL)
        wait_until(
            lambda: _state(first.pid) in ("Z", None), 10, "the killed child to exit"
        )  # not waited for: a zombie, which counts as dead
        samples = scrape(server.port)
        assert matching(samples, LAG, shard="s1") == []
        assert matching(samples, LAG, shard="s2") == [3.0]
        assert matching(samples, "replicator_in_flight_writes", destination="ap") == [2.0]
        assert total(samples, WRITES, destination="ap", outcome="applied") == 10
        assert total(samples, "replicator_apply_delay_seconds_count", destination="ap") == 2
        # The shard's last checkpoint time survives its process (mode max).
        assert matching(samples, "replicator_last_checkpoint_timestamp_seconds", shard="s1") == [
            1007.0
        ]
        # The shard's first processor's start survives it, a later one's does not hide it
        # (mode min): a processor restarting again and again does not restart the count.
        third = SampleWriter(directory, "ap", "s1", 9.0)
        assert matching(scrape(server.port), health_rules.SHARD_STARTED, shard="s1") == [507.0]
        third.process.kill()
        third.process.wait(10)
        files = {path.name for path in directory.iterdir()}
        assert not {name for name in files if name.endswith(f"_{first.pid}.db") and "live" in name}
        assert f"counter_{first.pid}.db" in files
        assert f"gauge_livemax_{second.pid}.db" in files

        assert second.process.stdin is not None
        second.process.stdin.close()  # a clean exit is reaped as well
        second.process.wait(10)
        assert matching(scrape(server.port), LAG) == []
        assert multiprocess.pids_with_live_gauges(directory) == set()
    finally:
        for writer in (first, second):
            writer.process.kill()
            writer.process.wait(10)


def test_a_file_a_starting_process_has_created_but_not_sized_is_no_failed_scrape(
    samples_directory: multiprocess.SamplesDirectory, server: MetricsServer
) -> None:
    """prometheus_client creates a process's file, then sizes it: a scrape (or the
    demo's live view) in between met an empty file and failed with a ``struct.error``."""
    directory = samples_directory.path
    writer = SampleWriter(directory, "ap", "s1", 7.0)
    try:
        (directory / "counter_999999.db").touch()  # a process opening its file
        assert matching(scrape(server.port), LAG, shard="s1") == [7.0]
        assert matching(server.samples(), LAG, shard="s1") == [7.0]
    finally:
        writer.process.kill()
        writer.process.wait(10)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_healthz_answers_503_with_the_reasons_and_unknown_paths_404(
    samples_directory: multiprocess.SamplesDirectory,
) -> None:
    problems = ["shard s1: worker not running"]
    server = MetricsServer(
        "127.0.0.1", 0, samples_directory.path, problems=lambda: problems, stall_after_s=60
    )
    server.start()
    try:
        status, body = health(server.port)
        assert (status, body["status"], body["reasons"]) == (503, "unhealthy", problems)
        problems.clear()
        status, body = health(server.port)
        assert (status, body["status"], body["reasons"]) == (200, "ok", [])
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", "/nothing")
        assert connection.getresponse().status == 404
        # HEAD answers as GET does, without the body (probes that check the status).
        for expected in (200, 503):
            if expected == 503:
                problems.append("shard s1: worker not running")
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("HEAD", "/healthz")
            answer = connection.getresponse()
            assert answer.status == expected
            assert answer.getheader("Content-Type") == "application/json"
            assert int(answer.getheader("Content-Length") or 0) > 0
            assert answer.read() == b""
            connection.close()
    finally:
        server.stop()


class BlockedCollector(Collector):
    """An extra collector stuck in ``collect`` until released, as one waiting on a network
    read would be."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        self.entered.set()
        self.release.wait()
        yield GaugeMetricFamily("replicator_blocked", "Answered once released.", value=1.0)


def test_healthz_answers_while_a_scrape_waits_on_a_slow_collector(
    samples_directory: multiprocess.SamplesDirectory,
) -> None:
    """/healthz judges from the processes' sample files only: a scrape stuck in another
    collector (a status table that never answers) must not hold up the health probe, or
    the container's HEALTHCHECK times out and ``stall_after_s`` means nothing."""
    blocked = BlockedCollector()
    writer = SampleWriter(samples_directory.path, "ap", "s1", 7.0)
    server = MetricsServer(
        "127.0.0.1",
        0,
        samples_directory.path,
        problems=list,
        stall_after_s=60,
        extra=[blocked],
    )
    server.start()
    scraped: list[list[Sample]] = []
    scraper = threading.Thread(target=lambda: scraped.append(scrape(server.port)), daemon=True)
    try:
        scraper.start()
        assert blocked.entered.wait(30), "the scrape never reached the collector"
        for _ in range(3):
            status, body = health(server.port)
            assert (status, body["status"]) == (200, "ok"), body
            assert body["shards"]["s1"]["lag_seconds"] == {"ap": 7.0}
        assert not scraped, "the scrape finished although its collector was held"
    finally:
        blocked.release.set()
        scraper.join(30)
        server.stop()
        writer.process.kill()
        writer.process.wait(10)
    (samples,) = scraped
    assert matching(samples, "replicator_blocked") == [1.0]
    assert matching(samples, LAG, shard="s1") == [7.0]


def test_the_configured_port_is_used_and_a_taken_port_is_a_clear_error(
    samples_directory: multiprocess.SamplesDirectory,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = MetricsServer(
        "127.0.0.1", port, samples_directory.path, problems=list, stall_after_s=60
    )
    server.start()
    try:
        assert server.port == port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(EnvironmentProblem, match=f"cannot listen on 127.0.0.1:{port}"):
            MetricsServer(
                "127.0.0.1", port, samples_directory.path, problems=list, stall_after_s=60
            )
    finally:
        server.stop()


def test_a_port_a_connection_holds_with_nothing_listening_is_said_so(
    samples_directory: multiprocess.SamplesDirectory,
) -> None:
    """The port was an outgoing connection's own end (the kernel hands those out from
    the same numbers): "Address already in use" with nothing listening there, and the
    line gave no hint of it."""
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.bind(("127.0.0.1", 0))
        port = client.getsockname()[1]
        client.connect(server.getsockname())  # the port is this connection's end
        with pytest.raises(EnvironmentProblem) as refused:
            MetricsServer(
                "127.0.0.1", port, samples_directory.path, problems=list, stall_after_s=60
            )
    assert str(refused.value) == (
        f"metrics: cannot listen on 127.0.0.1:{port} (Address already in use); nothing "
        f"listens on port {port}, but a connection of this host uses it (an outgoing one, "
        "or one closing): choose another metrics.port (0 picks a free one; one below the "
        "host's range for outgoing connections, net.ipv4.ip_local_port_range, stays free) "
        "or set metrics.enabled: false"
    )


def test_a_port_a_server_holds_on_another_address_keeps_the_plain_hint(
    samples_directory: multiprocess.SamplesDirectory,
) -> None:
    """A server on 127.0.0.2 holds the port that 0.0.0.0 asks for: a connection to
    127.0.0.1 is refused, which was taken for "nothing listens"."""
    with socket.socket() as server:
        server.bind(("127.0.0.2", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(EnvironmentProblem) as refused:
            MetricsServer("0.0.0.0", port, samples_directory.path, problems=list, stall_after_s=60)
    assert str(refused.value) == (
        f"metrics: cannot listen on 0.0.0.0:{port} (Address already in use); choose another "
        "metrics.port (0 picks a free one) or set metrics.enabled: false"
    )


def test_an_ipv6_address_is_listened_on_and_shown_in_brackets(
    samples_directory: multiprocess.SamplesDirectory,
) -> None:
    server = MetricsServer("::1", 0, samples_directory.path, problems=list, stall_after_s=60)
    server.start()
    try:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        server.stop()


def test_an_address_this_host_does_not_have_is_a_host_error_not_a_port_one(
    samples_directory: multiprocess.SamplesDirectory,
) -> None:
    from replicator.exceptions import EnvironmentProblem

    for host in ("192.0.2.1", "2001:db8::1"):  # documentation addresses: never this host's
        with pytest.raises(EnvironmentProblem) as raised:
            MetricsServer(host, 0, samples_directory.path, problems=list, stall_after_s=60)
        message = str(raised.value)
        assert "check metrics.host" in message and "metrics.port" not in message, message


def test_an_operator_chosen_directory_is_emptied_but_kept(tmp_path: Path) -> None:
    chosen = tmp_path / "samples"
    chosen.mkdir()
    (chosen / "counter_123.db").write_bytes(b"old run")
    (chosen / "README").write_text("not a sample file")
    directory = multiprocess.prepare(chosen)
    assert not directory.owned
    assert sorted(path.name for path in chosen.iterdir()) == [".replicator.lock", "README"]
    multiprocess.discard(directory)
    assert chosen.exists()


def test_an_operator_chosen_directory_is_not_shared_by_two_runs(tmp_path: Path) -> None:
    """A second run in the same directory would delete the first's samples and report
    its series as its own: it is refused while the first holds the directory."""
    from replicator.exceptions import EnvironmentProblem

    first = multiprocess.prepare(tmp_path)
    (tmp_path / "counter_1.db").write_bytes(b"the first run's samples")
    with pytest.raises(EnvironmentProblem, match="in use by another running replicator"):
        multiprocess.prepare(tmp_path)
    assert (tmp_path / "counter_1.db").exists()
    multiprocess.discard(first)
    multiprocess.discard(multiprocess.prepare(tmp_path))  # free again once let go


@pytest.mark.parametrize("where", ["a file", "under a file", "under /proc"])
def test_a_directory_that_cannot_be_used_is_one_line_naming_the_variable(
    tmp_path: Path, where: str
) -> None:
    """A file, a path under a file, or a place no directory can be made: the operator's
    setting to fix, an environment problem (exit 3) naming it, not a traceback."""
    from replicator.exceptions import EnvironmentProblem

    (tmp_path / "afile").write_text("not a directory")
    chosen = {
        "a file": tmp_path / "afile",
        "under a file": tmp_path / "afile" / "samples",
        "under /proc": Path("/proc/replicator-samples"),
    }[where]
    with pytest.raises(EnvironmentProblem) as raised:
        multiprocess.prepare(chosen)
    assert raised.value.exit_code == 3
    message = str(raised.value)
    assert message.startswith(f"PROMETHEUS_MULTIPROC_DIR {chosen} cannot hold the metrics")
    assert "\n" not in message


# -- end to end ---------------------------------------------------------------------------


class FailingWritesProxy:
    """Sits in front of moto for one destination; while ``failing`` is set it answers
    PutItem and DeleteItem with HTTP 500 InternalServerError, so that destination stalls
    (the writer retries without end) while everything else keeps working."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        self.failing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                if proxy.failing.is_set() and operation in ("PutItem", "DeleteItem"):
                    self._send(
                        500,
                        {"Content-Type": "application/x-amz-json-1.0"},
                        json.dumps(
                            {
                                "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                                "message": "injected by the test",
                            }
                        ).encode(),
                    )
                    return
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {
                    key: value
                    for key, value in self.headers.items()
                    if key.lower() not in ("connection", "content-length")
                }
                connection.request("POST", self.path, body, headers)
                response = connection.getresponse()
                payload = response.read()
                connection.close()
                self._send(
                    response.status,
                    {
                        key: value
                        for key, value in response.getheaders()
                        if key.lower()
                        not in (
                            "connection",
                            "content-length",
                            "transfer-encoding",
                            "server",
                            "date",
                        )
                    },
                    payload,
                )

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FailingWritesProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def configure(job: Job, metrics: str, **destination_endpoints: str) -> None:
    """Rewrite the job file: the metrics section, and endpoints of some destination tables."""
    text = job.path.read_text().replace("metrics: {host: 127.0.0.1, port: 0}", metrics)
    for table, endpoint in destination_endpoints.items():
        text = text.replace(
            f"table: {table}, endpoint_url: '{job.endpoint}'",
            f"table: {table}, endpoint_url: '{endpoint}'",
        )
    # A short retry ceiling, so the stalled destination recovers promptly when released.
    text = text.replace(
        "writer: {max_in_flight: 16}", "writer: {max_in_flight: 16, retry: {max_delay_ms: 300}}"
    )
    job.path.write_text(text)


def put_items(job: Job, keys: range) -> None:
    rng = random.Random(keys.start)
    for index in keys:
        job.source.put_item(
            TableName=job.source_table, Item=demo_item(rng, f"m{index}", index, "us-east-1")
        )


def test_metrics_follow_replication_and_health_reports_a_stalled_destination(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Also at ``logging.level: warning``, the stall is in the log: the turn to unhealthy
    and back, naming the destination, and the key and error of a retried write, once
    (a warning at most once a minute per destination and shard, not one per retry)."""
    changes = 40
    with FailingWritesProxy(moto_endpoint) as proxy:
        job = Job(moto_endpoint, unique("metrics"), tmp_path)
        (_, eu_table), (_, ap_table) = job.destinations
        eu, ap = f"eu-west-1/{eu_table}", f"ap-southeast-2/{ap_table}"
        job.write(logging="{format: json, level: warning}")
        configure(
            job,
            "metrics: {host: 127.0.0.1, port: 0, stall_after_s: 3}",
            **{ap_table: proxy.url},
        )
        log = job.directory / "runtime.log"
        runtime = job.start()
        try:
            port = logged_metrics_port(job.directory / "runtime.log")
            wait_until(
                lambda: (
                    {labels["destination"] for _, labels, _ in _lag_series(scrape(port))}
                    == {eu, ap}
                ),
                30,
                "a lag series for each destination",
            )
            status, body = health(port)
            assert (status, body["status"]) == (200, "ok"), body

            put_items(job, range(changes))
            wait_until(job.converged, 60, "destinations to equal the source")

            def settled() -> list[Sample] | None:
                samples = scrape(port)
                done = all(
                    total(samples, WRITES, destination=label, outcome="applied")
                    + total(samples, WRITES, destination=label, outcome="conflict_lost")
                    == changes
                    and _lag(samples, label) == [0.0]
                    for label in (eu, ap)
                )
                return samples if done else None

            samples = wait_until(settled, 30, "write counts and lag to settle")
            for label in (eu, ap):
                assert total(samples, WRITES, destination=label, op="put", outcome="applied") == (
                    changes
                )
                assert total(samples, WRITES, destination=label, outcome="dead_lettered") == 0
                assert (
                    total(samples, "replicator_apply_delay_seconds_count", destination=label)
                    == changes
                )
                assert total(samples, "replicator_in_flight_writes", destination=label) == 0
            assert total(samples, "replicator_records_received_total", event="INSERT") == changes
            assert total(samples, "replicator_records_received_total") == changes
            assert total(samples, "replicator_checkpoints_total") >= 1
            (last_checkpoint,) = matching(samples, "replicator_last_checkpoint_timestamp_seconds")
            assert time.time() - 60 < last_checkpoint <= time.time()
            assert len(matching(samples, "replicator_millis_behind_latest")) == 1
            assert matching(samples, "replicator_buffered_changes") == [0.0]
            assert total(samples, "replicator_batch_flush_seconds_count") >= 1
            assert matching(samples, "replicator_shards_owned") == [1.0]
            assert matching(samples, "replicator_healthy") == [1.0]
            status, body = health(port)
            assert (status, body["status"]) == (200, "ok"), body

            # The ap destination now fails every write: it falls behind, eu does not.
            stalled_at = time.monotonic()
            proxy.failing.set()
            put_items(job, range(changes, changes + 1))
            status, body = wait_until(
                lambda: (result := health(port))[0] == 503 and result,
                30,
                "/healthz to report the stalled destination",
            )
            assert body["status"] == "unhealthy"
            assert len(body["reasons"]) == 1, body
            assert f"destination {ap} is stalled" in body["reasons"][0]
            assert body["destinations"][eu] == {"lag_seconds": 0.0}
            assert body["destinations"][ap]["lag_seconds"] > 3
            # Prometheus sees it too (a scrape judges again: the stall holds).
            samples = scrape(port)
            assert matching(samples, "replicator_healthy") == [0.0]
            assert _lag(samples, ap)[0] > 3
            assert _lag(samples, eu) == [0.0]
            assert total(samples, WRITES, destination=eu, outcome="applied") == changes + 1
            assert total(samples, WRITES, destination=ap, outcome="applied") == changes
            assert (
                total(samples, "replicator_retries_total", destination=ap, reason="server_error")
                > 0
            )
            assert total(samples, "replicator_retries_total", destination=eu) == 0
            unhealthy = wait_until(
                lambda: _logged(log, "unhealthy"), 30, "the turn to unhealthy to be logged"
            )[0]
            assert unhealthy["level"] == "warning" and unhealthy["stalled_destinations"] == [ap]
            assert any(f"destination {ap} is stalled" in why for why in unhealthy["reasons"])

            # Released, it catches up and health returns.
            proxy.failing.clear()
            stalled_s = time.monotonic() - stalled_at
            wait_until(lambda: health(port)[0] == 200, 30, "/healthz to recover")
            again = wait_until(
                lambda: _logged(log, "healthy again"), 30, "the recovery to be logged"
            )[0]
            assert again["level"] == "warning" and again["stalled_destinations"] == [ap]
            wait_until(
                lambda: (
                    total(scrape(port), WRITES, destination=ap, outcome="applied") == changes + 1
                ),
                30,
                "the held-back write to be applied",
            )
            wait_until(job.converged, 30, "destinations to equal the source")
            retried = total(scrape(port), "replicator_retries_total", destination=ap)
        finally:
            assert stop(runtime) == 0
    warned = _logged(log, "write failed, retrying")
    assert 1 <= len(warned) <= 1 + stalled_s // 60 < retried, (len(warned), retried)
    assert {entry["destination"] for entry in warned} == {ap}
    assert "m40" in warned[0]["key"] and "InternalServerError" in warned[0]["error"]
    assert {entry["level"] for entry in _logged(log)} <= {"warning", "error"}  # the level holds


def _logged(log: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The log's JSON lines (``event``'s only, if given)."""
    entries = [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]
    return [entry for entry in entries if event is None or entry.get("event") == event]


def _lag_series(samples: list[Sample]) -> list[Sample]:
    return [sample for sample in samples if sample[0] == LAG]


def _lag(samples: list[Sample], destination: str) -> list[float]:
    return matching(samples, LAG, destination=destination)


def test_metrics_can_be_turned_off_and_health_is_still_logged(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Nothing listens, and the log is the health signal: a stalled destination turns
    the job ``unhealthy`` (after ``stall_after_s``) and back. The operator's
    $PROMETHEUS_MULTIPROC_DIR, held by another job, is neither refused, emptied nor
    locked: this job keeps its samples in a directory of its own."""
    held = tmp_path / "held-samples"
    other_job = multiprocess.prepare(held)
    (held / "counter_1.db").write_bytes(b"the other job's samples")
    changes = 3
    try:
        with FailingWritesProxy(moto_endpoint) as proxy:
            job = Job(moto_endpoint, unique("nometrics"), tmp_path)
            (_, ap_table) = job.destinations[1]
            ap = f"ap-southeast-2/{ap_table}"
            job.write(logging="{format: json, level: warning}")
            configure(job, "metrics: {enabled: false, stall_after_s: 3}", **{ap_table: proxy.url})
            log = job.directory / "runtime.log"
            runtime = job.start(env={multiprocess.ENV: str(held)})
            try:
                put_items(job, range(changes))
                wait_until(job.converged, 60, "destinations to equal the source")
                proxy.failing.set()
                put_items(job, range(changes, changes + 1))
                unhealthy = wait_until(
                    lambda: _logged(log, "unhealthy"), 60, "the turn to unhealthy to be logged"
                )[0]
                assert unhealthy["stalled_destinations"] == [ap], unhealthy
                proxy.failing.clear()
                again = wait_until(
                    lambda: _logged(log, "healthy again"), 60, "the recovery to be logged"
                )[0]
                assert again["stalled_destinations"] == [ap], again
                wait_until(job.converged, 30, "destinations to equal the source")
            finally:
                assert stop(runtime) == 0
        assert not _logged(log, "serving metrics")
        assert sorted(path.name for path in held.iterdir()) == [".replicator.lock", "counter_1.db"]
    finally:
        multiprocess.discard(other_job)


@pytest.mark.parametrize("level", ["warning", "error"])
def test_a_picked_port_is_logged_at_every_logging_level(
    moto_endpoint: str, unique: Any, tmp_path: Path, level: str
) -> None:
    """With ``metrics.port: 0`` the ``serving metrics`` line is the only way to learn the
    port: it is a warning then, shown at every ``logging.level``, ``error`` included."""
    job = Job(moto_endpoint, unique("picked"), tmp_path)
    job.write(logging=f"{{format: json, level: {level}}}")
    log = job.directory / "runtime.log"
    runtime = job.start()
    try:
        port = logged_metrics_port(log)
        assert scrape(port)
    finally:
        assert stop(runtime) == 0
    entries = [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]
    (line,) = [entry for entry in entries if entry.get("event") == "serving metrics"]
    assert (line["level"], line["port"]) == ("warning", port)
    assert "picked at start" in line["note"]


def test_the_health_gauge_reads_0_when_health_cannot_be_judged() -> None:
    """A failure judging health fails /healthz; it must not fail the whole scrape (every
    series would go stale, and the replicator would look down)."""
    from replicator.metrics.health import Health
    from replicator.metrics.server import HealthGauge

    def broken() -> Health:
        raise OSError("the samples directory is gone")

    ((gauge,),) = [list(HealthGauge(broken).collect())]
    assert [(s.name, s.value) for s in gauge.samples] == [("replicator_healthy", 0.0)]
    ((gauge,),) = [list(HealthGauge(lambda: Health(healthy=True)).collect())]
    assert [(s.name, s.value) for s in gauge.samples] == [("replicator_healthy", 1.0)]
