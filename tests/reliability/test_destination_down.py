"""A destination down (refused, then 500s; the other black-holed) for 20 s, then back: nothing
is lost, and the checkpoint never passes an item's last change that was not applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator.demo.workload import Workload
from tests.support.e2e import stop, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.reliability import (
    SETTLE_S,
    Figures,
    Samples,
    checkpoint_reaches_the_end,
    during,
    proxied_job,
    settle,
    stream_records,
    wait_started,
)

pytestmark = pytest.mark.reliability


def test_a_destination_down_for_20s_then_back_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    # A short backoff cap and read timeout keep the test short; the defaults (20 s, 10 s)
    # only make recovery slower, not different. Each fault lasts 10 s: five times the
    # backoff cap and three read timeouts, so every write meets it again and again (what
    # the scenario shows is that retries go on and recovery loses nothing, which a longer
    # outage only repeats).
    job = proxied_job(
        moto_endpoint,
        unique("down"),
        tmp_path,
        proxies,
        writer="writer: {max_in_flight: 16, read_timeout_s: 3, retry: {max_delay_ms: 2000}}",
    )
    samples = Samples(tmp_path / "metrics")
    down, hanging = proxies
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=24, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    try:
        wait_started(job, runtime)
        workload.start()
        during(3, workload)
        # A first checkpoint before the outage, so that the one read during it says
        # where it was held (a loaded machine may take longer than 3 s to write one).
        wait_until(lambda: _is_position(job.checkpoint()), 60, "a first checkpoint")
        # eu: connections refused for 10 s, then every request answered 500 for 10 s;
        # ap: black-holed (requests accepted, never answered) for the first 10 s.
        down.refuse()
        hanging.black_hole()
        outage_began_after = job.last_stream_sequence()
        during(10, workload)
        hanging.pass_through()
        down.server_errors()
        during(10, workload)
        held = job.checkpoint()
        snapshot = stream_records(job)
        down.pass_through()
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
    finally:
        assert stop(runtime) == 0
    eu, ap = job.label(0), job.label(1)
    figures = Figures(
        "2. destination down for 20 s, then back", sent=workload.stats.total, lost=lost
    )
    samples.fill(figures)
    figures.details = {
        "eu retries by reason": {
            reason: samples.total("replicator_retries_total", destination=eu, reason=reason)
            for reason in ("network", "server_error")
        },
        "ap retries by reason (read timeouts)": samples.total(
            "replicator_retries_total", destination=ap, reason="network"
        ),
        "eu proxy outcomes": dict(down.counts()),
        "ap proxy outcomes": dict(hanging.counts()),
        "checkpoint while eu was down": f"{held} (last record before the outage: "
        f"{outage_began_after}, last written during it: {snapshot[-1][0]})",
    }
    assert held is not None and held.isdigit(), held
    began, checkpoint = int(outage_began_after), int(held)
    last_change = {key: sequence for sequence, key in snapshot}
    passed = [(s, key) for s, key in snapshot if began < s <= checkpoint]
    unsafe = [(s, key) for s, key in passed if last_change[key] <= checkpoint]
    figures.details["records written while down that the checkpoint passed"] = (
        f"{len(passed)} (none may be)"
    )
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    assert down.counts()["server_error"] > 0
    assert hanging.counts()["black_holed"] > 0
    assert samples.total("replicator_retries_total", destination=eu, reason="network") > 0
    # Nothing written after the outage began was applied at eu, so the checkpoint passes
    # none of those records: not an item's last change, and not one replaced by a newer
    # change either, which waits for the newer one's write to land there (were that
    # write refused, the replaced change would be written itself).
    assert snapshot[-1][0] > began
    assert not unsafe, f"checkpoint {checkpoint} passed unapplied last changes: {unsafe[:5]}"
    assert not passed, f"checkpoint {checkpoint} passed unapplied changes: {passed[:5]}"


def _is_position(checkpoint: str | None) -> bool:
    return checkpoint is not None and checkpoint.isdigit()
