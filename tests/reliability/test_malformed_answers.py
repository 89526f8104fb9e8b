"""HTTP 200 answers whose body is garbage (a proxy or a broken link garbling a success)
between ``replicator run`` and moto: botocore parses such a body into ``{}``, which read
as a shard's end (a GetRecords without ``NextShardIterator``, checkpointed SHARD_END for
good) or as an applied write. Each is a failed call, retried as a dropped connection.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e import stop, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.reliability import (
    ProxiedJob,
    checkpoint_reaches_the_end,
    log_tail,
    log_text,
    settle,
    source_behind,
    wait_started,
)

SHARD_END = "SHARD_END"
KCL = "{idle_time_between_reads_ms: 200, failover_time_ms: 10000}"


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    started = FaultProxy(moto_endpoint, seed=5).start()
    yield started
    started.stop()


def _garble_the_source_then_write_on(
    job: ProxiedJob, proxy: FaultProxy, mode: Mode, operations: tuple[str, ...]
) -> tuple[int, str]:
    """Replicate a first batch, garble the source's answers (``mode``) until at least one
    answer to each of ``operations`` was garbled, then write a second batch: it must
    reach the destination, and the shard's checkpoint move past it, never SHARD_END.
    The run's exit code (after a SIGTERM) and its log."""
    runtime = job.start()
    try:
        wait_started(job, runtime)
        job.put_demo_items(random.Random(11), 0, 10)
        checkpoint_reaches_the_end(job)
        proxy.set(mode)
        for operation in operations:
            wait_until(
                lambda op=operation: (
                    proxy.counts(op).get("garbage", 0) >= 1 or runtime.poll() is not None
                ),
                30,
                f"a garbled answer to {operation}",
            )
            assert runtime.poll() is None, log_tail(job)
        proxy.pass_through()
        job.put_demo_items(random.Random(12), 10, 10)
        assert settle(job.differences, 60) == 0, log_tail(job)
        assert checkpoint_reaches_the_end(job) != SHARD_END
    finally:
        code = stop(runtime)
    return code, log_text(job)


def test_a_garbled_get_records_answer_is_a_failed_read_not_the_shard_s_end(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxy: FaultProxy
) -> None:
    """Before the fix the open shard was checkpointed SHARD_END at the first garbled
    GetRecords and nothing written afterwards was ever replicated."""
    job = source_behind(proxy, moto_endpoint, unique("garbled-read"), tmp_path, kcl=KCL)
    garbled = Mode(Fault.GARBAGE, operations=frozenset({"GetRecords"}))
    code, output = _garble_the_source_then_write_on(job, proxy, garbled, ("GetRecords",))
    assert code == 0, output[-3000:]
    assert job.checkpoint() not in (SHARD_END, None)
    assert "reading the stream failed; retrying" in output
    assert "GetRecords answered HTTP 200 with a body that is not a well-formed answer" in output


def test_garbled_answers_to_every_source_call_are_retried_not_a_lost_lease(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxy: FaultProxy
) -> None:
    """Every call to the source's endpoint (the stream, the lease table: its renewals
    too) garbled for a while: before the fix a ``KeyError: 'Table'`` traceback, a
    restart and exit 5 ("taken over by no worker") though no other worker ran."""
    job = source_behind(proxy, moto_endpoint, unique("garbled-all"), tmp_path, kcl=KCL)
    operations = ("GetRecords", "UpdateItem")
    code, output = _garble_the_source_then_write_on(job, proxy, Mode(Fault.GARBAGE), operations)
    assert code == 0, output[-3000:]
    assert "KeyError" not in output
    assert "Traceback" not in output


def test_garbled_answers_to_destination_writes_are_retried_not_counted_applied(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxy: FaultProxy
) -> None:
    """Half the destination's PutItem and DeleteItem answered 200 with garbage, the
    write not forwarded: before the fix they counted applied and the checkpoint passed
    them, so the destination lacked those changes for good."""
    name = unique("garbled-write")
    job = ProxiedJob(
        moto_endpoint,
        name,
        tmp_path,
        destinations=[("eu-west-1", f"{name}-eu")],
        endpoints={f"{name}-eu": proxy.url},
        kcl="{idle_time_between_reads_ms: 200}",
    )
    proxy.set(Mode(Fault.GARBAGE, 0.5, operations=frozenset({"PutItem", "DeleteItem"})))
    runtime = job.start()
    try:
        wait_started(job, runtime)
        job.put_demo_items(random.Random(31), 0, 40)
        wait_until(
            lambda: proxy.counts("PutItem").get("garbage", 0) >= 5, 60, "garbled PutItem answers"
        )
        checkpoint_reaches_the_end(job, timeout=60)
        proxy.pass_through()
        assert settle(job.differences, 30) == 0, log_tail(job)
    finally:
        code = stop(runtime)
    assert code == 0, log_tail(job)
    assert "PutItem answered HTTP 200 with a body that is not a well-formed answer" in log_text(job)
