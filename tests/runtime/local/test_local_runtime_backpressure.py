"""`replicator run` (the local runtime) with one destination healthy and one black-holed,
its buffer full: reading stops, every destination's lag says so, and a SIGTERM still
stops it as documented."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from replicator.shards.fence import WORKER_ID_ENV
from tests.support.e2e import PATIENCE, Job, stop, wait_until
from tests.support.faults.proxy import FaultProxy
from tests.support.metrics import logged_metrics_port, matching, scrape

MAX_BUFFERED = 10


def test_a_full_buffer_raises_every_lag_and_a_stop_still_answers_and_checkpoints(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """ap accepts nothing (black-holed), so the shard's buffer fills and intake waits for
    room: eu, which applied all it was given, is held back as well, and its lag on
    /metrics grows past the reader's last millisBehindLatest. A SIGTERM then has the
    processor answer the batch it holds, take its shutdownRequested (checkpointing what
    is applied everywhere) and give the lease up: exit 0, no processor killed."""
    name = unique("bp")
    # Batches of 5 records: the buffer fills after a few, and reading stops.
    kcl = "{idle_time_between_reads_ms: 100, failover_time_ms: 6000, max_records: 5}"
    job = Job(moto_endpoint, name, tmp_path, kcl=kcl)
    proxy = FaultProxy(moto_endpoint).start()
    ap = f"{{region: ap-southeast-2, table: {name}-ap, endpoint_url: '{moto_endpoint}'}}"
    text = job.path.read_text()
    assert ap in text
    job.path.write_text(
        text.replace(ap, ap.replace(moto_endpoint, proxy.url)).replace(
            "writer: {max_in_flight: 16}",
            f"writer: {{max_in_flight: 4, max_buffered_changes: {MAX_BUFFERED}, "
            "read_timeout_s: 2, retry: {max_delay_ms: 500}}",
        )
    )
    log = tmp_path / "run.log"
    # The KCL launcher's word to its processors, set in this environment by mistake: the
    # local runtime watches its own leases, and its processors must not read another id's.
    runtime = job.start(log=log, env={WORKER_ID_ENV: "not-this-worker"})
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        port = logged_metrics_port(log)
        proxy.black_hole()
        for index in range(4 * MAX_BUFFERED):
            job.source.put_item(
                TableName=job.source_table,
                Item={"pk": {"S": f"k{index}"}, "sk": {"N": "1"}, "updated_at": {"N": "1"}},
            )
        eu = f"eu-west-1/{name}-eu"

        def eu_lag() -> float:
            samples = scrape(port)
            behind = matching(samples, "replicator_millis_behind_latest")
            lag = matching(samples, "replicator_replication_lag_seconds", destination=eu)
            # Held: eu is further behind than the reader was at its last batch.
            if behind and lag and lag[0] >= 5.0 and lag[0] > behind[0] / 1000 + 4.0:
                return lag[0]
            return 0.0

        wait_until(eu_lag, 60, "eu's lag to grow while reading is held")
        eu_table = job.destination_clients()[0]
        assert eu_table[1] == f"{name}-eu"
        count = eu_table[0].scan(TableName=eu_table[1], Select="COUNT")["Count"]
        assert count < 4 * MAX_BUFFERED  # reading stopped: eu lacks changes it was not given
        started = time.monotonic()
        runtime.send_signal(signal.SIGTERM)
        status = runtime.wait(120 * PATIENCE)
        took = time.monotonic() - started
    finally:
        if runtime.poll() is None:
            stop(runtime)
        proxy.stop()
    output = log.read_text()
    # Within the runtime's deadline (35 s): the processor's own wait for writes is 20 s,
    # and a processor killed at the deadline is no clean stop.
    assert status == 0, (took, output.splitlines()[-1])
    assert "killing its processor" not in output
    # Nor after its answer: it exits at once, not when its writes to eu time out.
    assert "processor child did not exit" not in output
    # It answered shutdownRequested, saying that ap's writes were still outstanding.
    (answer,) = [
        json.loads(line) for line in output.splitlines() if '"event": "shutdown requested; ' in line
    ]
    assert answer["level"] == "warning"
    assert answer["outstanding"].get(f"ap-southeast-2/{name}-ap", 0) > 0
    # The stop is one that leaves ap's changes to the next start, and its last line says so.
    assert "local runtime stopped; 1 shard(s) stopped with changes read past their" in output
    assert "stopped cleanly" not in output
    assert "lease taken while the processor waited" not in output
    (row,) = job.lease_rows()
    assert "leaseOwner" not in row  # released on a clean stop
