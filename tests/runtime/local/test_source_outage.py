"""The source's endpoint (its stream and the lease table) refusing connections while the
local runtime runs: the lag grows as docs/metrics.md says, /healthz reports the shard
after the stall time, and a SIGTERM meanwhile is a clean stop, without a flood of retries.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e import PATIENCE, stop, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.metrics import Sample, health, logged_metrics_port, matching, scrape
from tests.support.reliability import (
    checkpoint_reaches_the_end,
    log_tail,
    log_text,
    source_behind,
    wait_started,
)

LAG = "replicator_replication_lag_seconds"
BEHIND = "replicator_millis_behind_latest"
RETRIED = "reading the stream failed; retrying"
STALL_S = 4


@pytest.fixture
def source_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint).start()
    yield proxy
    proxy.stop()


def _outage_figures(port: int) -> tuple[float, float] | None:
    """The shard's lag (seconds) and millis behind latest, once both are shown."""
    samples: list[Sample] = scrape(port)
    lag, behind = matching(samples, LAG), matching(samples, BEHIND)
    return (lag[0], behind[0]) if lag and behind else None


def test_a_source_outage_raises_the_lag_reports_the_shard_and_a_sigterm_stops_cleanly(
    moto_endpoint: str, unique: Any, tmp_path: Path, source_proxy: FaultProxy
) -> None:
    job = source_behind(
        source_proxy,
        moto_endpoint,
        unique("outage"),
        tmp_path,
        kcl="{idle_time_between_reads_ms: 200, failover_time_ms: 10000}",
    )
    job.path.write_text(
        job.path.read_text().replace(
            "metrics: {host: 127.0.0.1, port: 0}",
            f"metrics: {{host: 127.0.0.1, port: 0, stall_after_s: {STALL_S}}}",
        )
    )
    runtime = job.start()
    try:
        wait_started(job, runtime)
        port = logged_metrics_port(job.directory / "runtime.log")
        job.put_demo_items(random.Random(7), 0, 10)
        applied = checkpoint_reaches_the_end(job)
        source_proxy.refuse()  # the stream and the lease table, at once

        first = wait_until(
            lambda: (figures := _outage_figures(port)) and figures[0] >= 2 and figures,
            20,
            "the lag to grow past 2 s with the source down",
        )
        # Grows on from there (not one step at the first failures): a later scrape shows
        # both figures further on by at least the time between the two.
        wait_until(
            lambda: (
                (figures := _outage_figures(port))
                and figures[0] >= first[0] + 2
                and figures[1] >= first[1] + 2_000
            ),
            20,
            f"the lag and millis behind latest to grow on from {first}",
        )
        _, body = wait_until(
            lambda: (answer := health(port))[0] == 503 and answer,
            STALL_S + 20,
            "/healthz to report the shard whose reads fail",
        )
        assert any("reading the stream failed for" in reason for reason in body["reasons"]), body
        assert runtime.poll() is None, log_tail(job)

        runtime.send_signal(signal.SIGTERM)
        # The runtime kills a shard not stopped 35 s into the stop, and exits 1: exit 0
        # says the shard's worker stopped within that.
        code = runtime.wait(60 * PATIENCE)
    finally:
        if runtime.poll() is None:
            runtime.kill()
    output = log_text(job)
    assert code == 0, log_tail(job)
    assert "local runtime stopped cleanly" in output
    assert "did not stop in time" not in output
    # Retries back off, at a stop too: no tight loop of warnings.
    retried = output.count(RETRIED)
    assert 0 < retried < 50, f"{retried} retry warnings"
    # Everything was applied before the outage, and that checkpoint stands.
    assert job.checkpoint() == applied


def test_a_backlog_s_lag_is_never_shown_below_its_age_while_the_first_read_is_out(
    moto_endpoint: str, unique: Any, tmp_path: Path, source_proxy: FaultProxy
) -> None:
    """A start on a backlog whose first GetRecords is answered late (held 6 s by the
    proxy): while it is out the lag is absent (the processor does not know where the
    reader is), never the time since the read was sent (1 s, 2 s, ...), which is below
    the backlog's age."""
    job = source_behind(source_proxy, moto_endpoint, unique("backlog"), tmp_path)
    written_at = time.time()
    job.put_demo_items(random.Random(3), 0, 5)
    time.sleep(2)  # the backlog ages before the start (what is measured is its age)
    hold_s = 6.0
    source_proxy.set(
        Mode(Fault.SLOW_ANSWER, latency_s=hold_s, operations=frozenset({"GetRecords"}))
    )
    runtime = job.start()
    try:
        port = logged_metrics_port(job.directory / "runtime.log")
        held = wait_until(
            lambda: source_proxy.counts("GetRecords").get("slow_answer_200") and time.monotonic(),
            30,
            "the first GetRecords to be held",
        )
        shown: list[tuple[float, float]] = []  # (lag, the backlog's age then)
        while time.monotonic() < held + hold_s - 1.0:
            age = time.time() - written_at
            shown += [(lag, age) for lag in matching(scrape(port), LAG)]
            time.sleep(0.2)
        assert all(lag >= age - 1.0 for lag, age in shown), shown
        wait_until(job.converged, 60, "the backlog to be replicated")
    finally:
        assert stop(runtime) == 0
