"""Under the KCL, the launcher watches the source table for a stream that was replaced
(replicator/runtime/kcl/stream_watch.py): the daemon is given the stream's ARN at start
and would read the old stream to its end, then wait for ever. Run against moto without
the daemon: what the watch finds, and that it asks for the daemon's stop once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from replicator.config.loader import load_job
from replicator.demo import tables
from replicator.runtime import preflight
from replicator.runtime.kcl.stream_watch import StreamWatch
from tests.support.e2e import PATIENCE, Job


def _job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    name = unique("watch")
    return Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])


def _watching(job: Job) -> tuple[StreamWatch, threading.Event, str]:
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    asked = threading.Event()
    watch = StreamWatch(load_job(job.path), arn, asked.set, interval_s=0.05)
    watch.start()
    return watch, asked, arn


def test_a_source_table_created_again_asks_for_the_stop_naming_both_streams(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    job = _job(moto_endpoint, unique, tmp_path)
    watch, asked, first = _watching(job)
    try:
        assert not asked.wait(0.5)  # the same stream: nothing to say
    finally:
        watch.stop()
    assert watch.replaced is None
    job.source.delete_table(TableName=job.source_table)
    tables.create(job.source, job.source_table, stream=True)
    watch = StreamWatch(load_job(job.path), first, asked.set, interval_s=0.05)
    watch.start()
    try:
        assert asked.wait(30 * PATIENCE)
    finally:
        watch.stop()
    second = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    assert watch.replaced is not None
    assert (
        f"source table {job.source_table} at {moto_endpoint} (us-east-1): its stream is now "
        f"{second}, not the stream {first} this run reads"
    ) in watch.replaced


def test_a_source_table_deleted_asks_for_the_stop_saying_so(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    job = _job(moto_endpoint, unique, tmp_path)
    watch, asked, first = _watching(job)
    try:
        job.source.delete_table(TableName=job.source_table)
        assert asked.wait(30 * PATIENCE)
    finally:
        watch.stop()
    assert watch.replaced == (
        f"source table {job.source_table} at {moto_endpoint} (us-east-1) was deleted while "
        f"the job ran (the daemon reads its stream {first}); create it again with its "
        "stream, start the job again and run `replicator backfill --restart` for what changed "
        "meanwhile"
    )


def test_a_job_that_pins_its_stream_is_not_watched(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A pinned source.stream.arn is read whatever the table's latest stream is."""
    job = _job(moto_endpoint, unique, tmp_path)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    job.path.write_text(
        job.path.read_text().replace(
            f"table: {job.source_table}, ", f"table: {job.source_table}, stream: {{arn: '{arn}'}}, "
        )
    )
    assert load_job(job.path).job.source.stream.arn == arn
    watch, asked, _ = _watching(job)
    try:
        job.source.delete_table(TableName=job.source_table)
        tables.create(job.source, job.source_table, stream=True)
        assert not asked.wait(1.0)
    finally:
        watch.stop()
    assert watch.replaced is None


def test_under_the_kcl_the_line_says_to_delete_the_old_streams_leases(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The KCL resumes any lease: a new stream's shard of the old shard's id (moto gives
    every stream's shard the same one) would be read after the old checkpoint."""
    job = _job(moto_endpoint, unique, tmp_path)
    job.path.write_text("runtime: kcl\n" + job.path.read_text())
    resolved = load_job(job.path)
    first = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    job.source.delete_table(TableName=job.source_table)
    tables.create(job.source, job.source_table, stream=True)

    said = preflight.stream_replaced(resolved, job.source, first)

    assert said is not None
    assert (
        f"With the job stopped, delete the lease table {resolved.lease_table} (the old "
        "stream's leases), then start the job again, then run `replicator backfill --restart`"
    ) in said
