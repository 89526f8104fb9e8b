"""Throttling: a destination throttled half the time (with connection resets at the other),
and the source stream and lease table throttled, lose nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from replicator.demo.workload import Workload
from tests.support.aws import client
from tests.support.e2e import stop, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.reliability import (
    SETTLE_S,
    Figures,
    ProxiedJob,
    Samples,
    checkpoint_reaches_the_end,
    during,
    log_tail,
    log_text,
    proxied_job,
    settle,
    wait_started,
)

pytestmark = pytest.mark.reliability

HOUSEKEEPING_RETRIED = "housekeeping failed; retrying"


def wait_watermark_registered(job: ProxiedJob) -> None:
    """Wait until the watermark publisher has made its status tables and registered the
    shard: its requests go through the destinations' proxies too, and a fault injected
    while they are still under way throttles PutItems that no writer sent (and retries)."""

    def registered() -> bool:
        for index, (region, _) in enumerate(job.destinations):
            ddb = client("dynamodb", region, job.endpoint)
            try:
                items = ddb.scan(TableName=f"{job.name}-watermark", ConsistentRead=True)["Items"]
            except ClientError:
                return False
            if not any(item["destination"]["S"] == job.label(index) for item in items):
                return False
        return True

    wait_until(registered, 30, "the watermark publisher to register the shard")


def test_a_destination_throttled_half_the_time_for_10s_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    job = proxied_job(moto_endpoint, unique("throttle"), tmp_path, proxies)
    samples = Samples(tmp_path / "metrics")
    throttled, flaky = proxies
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=14, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    try:
        wait_started(job, runtime)
        wait_watermark_registered(job)
        workload.start()
        during(3, workload)
        # eu: half the requests throttled, with both error codes DynamoDB uses, 5 s each;
        # ap meanwhile: a tenth of the connections reset after the write was applied. 5 s
        # of each code is some 75 writes throttled at 30 changes/s (retries, throttled in
        # turn, add more), each counted against the proxy's own count below.
        throttled.throttle(0.5, "ProvisionedThroughputExceededException")
        flaky.resets(0.1, after_forward=True)
        during(5, workload)
        throttled.throttle(0.5, "ThrottlingException")
        during(5, workload)
        throttled.pass_through()
        flaky.pass_through()
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
    finally:
        assert stop(runtime) == 0
    figures = Figures("1. destination throttled 50% for 10 s", sent=workload.stats.total, lost=lost)
    samples.fill(figures)
    eu, ap = job.label(0), job.label(1)
    figures.details = {
        "eu requests throttled by the proxy": throttled.counts("PutItem")["throttled"]
        + throttled.counts("DeleteItem")["throttled"],
        "eu retries counted as throttled": samples.total(
            "replicator_retries_total", destination=eu, reason="throttled"
        ),
        "ap connections reset after the write landed": flaky.counts()["reset_after_forward"],
        "ap retries counted as network": samples.total(
            "replicator_retries_total", destination=ap, reason="network"
        ),
        "eu proxy outcomes": dict(throttled.counts()),
        "ap proxy outcomes": dict(flaky.counts()),
    }
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    writes = ("PutItem", "DeleteItem")
    proxy_throttles = sum(throttled.counts(op)["throttled"] for op in writes)
    assert proxy_throttles > 50
    # Every throttled request was retried by the writer itself (none hidden in the SDK).
    # On a loaded machine the writer can give up on a request (read timeout) before the
    # proxy's throttle answer reaches it: that retry is counted as a network one.
    counted = figures.details["eu retries counted as throttled"]
    eu_network = samples.total("replicator_retries_total", destination=eu, reason="network")
    assert counted <= proxy_throttles <= counted + eu_network
    resets = sum(flaky.counts(op)["reset_after_forward"] for op in writes)
    assert resets > 0
    assert figures.details["ap retries counted as network"] == resets


def test_the_source_stream_and_lease_table_throttled_for_10s_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    source_proxy = proxies[0]
    name = unique("srcthrottle")
    job = ProxiedJob(moto_endpoint, name, tmp_path, source_endpoint=source_proxy.url)
    samples = Samples(tmp_path / "metrics")
    workload = Workload(
        job.source, job.source_table, rate=30, duration_s=15, keys=160, origin="us-east-1"
    )
    runtime = job.start(env=samples.env)
    try:
        wait_started(job, runtime)
        workload.start()
        during(3, workload)
        # Stream reads, shard syncs, lease renewals and checkpoints: a third of them
        # throttled, and for 5 s all of them (longer than the SDK's own retries last).
        source_proxy.throttle(0.33, "ThrottlingException")
        during(3, workload)
        source_proxy.throttle(1.0, "ProvisionedThroughputExceededException")
        during(5, workload)
        # Held until a housekeeping step (a lease renewal, a shard sync) has outlasted the
        # SDK's own retries, however the steps fell into the 5 s on a loaded machine.
        wait_until(lambda: HOUSEKEEPING_RETRIED in log_text(job), 60, "a housekeeping step retried")
        source_proxy.throttle(0.33, "ThrottlingException")
        during(2, workload)
        source_proxy.pass_through()
        workload.join(60)
        assert workload.error is None
        lost = settle(job.differences, SETTLE_S)
        checkpoint_reaches_the_end(job)
        assert runtime.poll() is None, log_tail(job)
    finally:
        assert stop(runtime) == 0
    figures = Figures(
        "1b. source stream and lease table throttled for 10 s (33%, 5 s of it 100%)",
        sent=workload.stats.total,
        lost=lost,
    )
    housekeeping = log_text(job).count(HOUSEKEEPING_RETRIED)
    samples.fill(figures)
    figures.details = {
        "throttled by operation": {
            operation: source_proxy.counts(operation)["throttled"]
            for operation in (
                "GetRecords",
                "GetShardIterator",
                "DescribeStream",
                "Scan",
                "UpdateItem",
            )
        },
        "housekeeping steps failed and retried by the runtime": housekeeping,
    }
    figures.report()
    assert figures.lost == 0
    assert figures.dead_lettered == 0
    assert source_proxy.counts("UpdateItem")["throttled"] > 0
    assert housekeeping > 0  # lease renewals failed, and the runtime carried on
