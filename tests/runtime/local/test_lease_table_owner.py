"""A task's lease table is one job's under either runtime: the local runtime claims it with
the tag the KCL runtime writes (``replicator:source``), and refuses a table claimed for
another source. A ``runtime: local`` job given a KCL job's task name took that job's
lease (the KCL records no stream in it) and resumed its checkpoint in its own stream,
reading none of its own changes and looking healthy."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import structlog.testing
from botocore.exceptions import ClientError

from replicator.config.loader import load_job
from replicator.demo import tables
from replicator.exceptions import EnvironmentProblem
from replicator.runtime.local.runtime import LocalRuntime
from replicator.shards import ownership
from tests.support.cli import in_process
from tests.support.e2e import PATIENCE, Job, stop, wait_until


def _owner_tag(job: Job) -> str | None:
    arn = job.source.describe_table(TableName=job.name)["Table"]["TableArn"]
    tags = job.source.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
    return next((tag["Value"] for tag in tags if tag["Key"] == ownership.OWNER_TAG), None)


def _table_arn(job: Job) -> str:
    return str(job.source.describe_table(TableName=job.source_table)["Table"]["TableArn"])


def _other_source(job: Job, unique: Any, tmp_path: Path) -> Job:
    """A job of another source table (with its own destination and dead-letter file, so
    that no file check refuses it) given ``job``'s task name."""
    table = unique("other-src")
    tables.create(job.source, table, stream=True)
    directory = tmp_path / "other"
    directory.mkdir()
    return Job(
        job.endpoint, job.name, directory, source_of=table, destinations=[("eu-west-1", table)]
    )


def _run_in_thread(runtime: LocalRuntime) -> tuple[threading.Thread, list[BaseException | int]]:
    ended: list[BaseException | int] = []

    def run() -> None:
        try:
            ended.append(runtime.run())
        except BaseException as error:
            ended.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, ended


def _replicate_five_items(job: Job) -> None:
    """Run the job until five changes are checkpointed, and stop it (exit 0)."""
    runtime = job.start()
    try:
        job.put_demo_items(random.Random(7), 0, 5)
        job.wait_checkpointed()
    finally:
        assert stop(runtime) == 0


def test_a_job_of_another_source_is_refused_and_moves_no_lease_of_the_kcl_jobs(
    job: Job, unique: Any, tmp_path: Path
) -> None:
    _replicate_five_items(job)
    assert _owner_tag(job) == _table_arn(job)  # claimed as the KCL runtime claims it
    # The lease as the KCL leaves it: no stream recorded in it.
    (row,) = job.lease_rows()
    job.source.update_item(
        TableName=job.name,
        Key={"leaseKey": row["leaseKey"]},
        UpdateExpression="REMOVE replicatorStream",
    )
    before = job.lease_rows()
    other = _other_source(job, unique, tmp_path)
    other.put_demo_items(random.Random(8), 0, 5)
    log = tmp_path / "other.log"
    assert other.start(log=log).wait(60 * PATIENCE) == 3
    lines = log.read_text().splitlines()
    said = [line for line in lines if line.startswith("replicator: ")]
    assert len(said) == 1 and not any("Traceback" in line for line in lines), lines
    assert f"lease table {job.name} at {job.endpoint} (us-east-1) is another job's" in said[0]
    assert f"names the source {_table_arn(job)}, and this job reads {_table_arn(other)}" in said[0]
    assert job.lease_rows() == before
    assert _owner_tag(job) == _table_arn(job)


def test_the_watermark_commands_refuse_a_job_of_another_source_under_the_task_name(
    job: Job, unique: Any, tmp_path: Path
) -> None:
    """``run`` refused the job of another source, but ``wait`` passed on the other job's
    watermark (exit 0, "replicated", for a source never read) and ``watermark`` showed it
    as this job's. Both refuse it now (exit 3); the job's own commands still read it."""
    _replicate_five_items(job)
    table = unique("other-src")
    tables.create(job.source, table, stream=True)
    other = tmp_path / "other.yaml"
    other.write_text(
        job.path.read_text().replace(f"table: {job.source_table},", f"table: {table},")
    )
    destination = f"{job.destinations[0][0]}/{job.destinations[0][1]}"
    until = ("--until", str(int(time.time()) - 3600), "--timeout", "5")
    for path, code in ((job.path, 0), (other, 3)):
        waited = in_process("wait", "-c", str(path), "-d", destination, *until)
        shown = in_process("watermark", "-c", str(path))
        for result in (waited, shown):
            assert result.returncode == code, result.stdout + result.stderr
        if code == 3:
            for result in (waited, shown):
                said = result.stderr
                assert f"lease table {job.name} at {job.endpoint} (us-east-1) is another" in said
                assert f"names the source {_table_arn(job)}, and this job reads " in said
                assert f"us-east-1/{table}" in said and "replicated" not in result.stdout


def test_a_run_whose_lease_table_another_job_claimed_since_stops_naming_it(job: Job) -> None:
    """Two jobs starting together can both find no tag: the run the tag no longer names
    stops (exit 3 from ``run``), as a KCL run stops its daemon."""
    runtime = LocalRuntime(load_job(job.path), owner_check_interval_s=0.2)
    thread, ended = _run_in_thread(runtime)
    try:
        assert runtime.started.wait(30 * PATIENCE)
        assert _owner_tag(job) == _table_arn(job)
        arn = job.source.describe_table(TableName=job.name)["Table"]["TableArn"]
        job.source.untag_resource(ResourceArn=arn, TagKeys=[ownership.OWNER_TAG])
        another = _table_arn(job).replace(job.source_table, "another-source")
        job.source.tag_resource(
            ResourceArn=arn, Tags=[{"Key": ownership.OWNER_TAG, "Value": another}]
        )
        wait_until(lambda: not thread.is_alive(), 60 * PATIENCE, "the run to stop")
    finally:
        runtime.stop()
        thread.join(60 * PATIENCE)
    (error,) = ended
    assert isinstance(error, EnvironmentProblem), error
    assert f"names the source {another}, and this job reads {_table_arn(job)}" in str(error)


def _aws_error(code: str, operation: str = "ListTagsOfResource") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


def test_no_lease_is_read_before_a_throttled_claim_at_start_succeeds(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim throttled at start (a fleet restarting at once) was logged and the run went
    on: it took another job's lease and resumed its checkpoint before the claim, 5 s
    later, refused it."""
    runtime = LocalRuntime(load_job(job.path))
    happened: list[str] = []
    claim = ownership.claim

    def throttled_once(*args: Any, **kwargs: Any) -> ownership.Claim:
        if not happened:
            happened.append("throttled")
            raise _aws_error("ThrottlingException")
        happened.append("claimed")
        return claim(*args, **kwargs)

    leases = runtime._claim_leases_held_elsewhere

    def leases_read() -> None:
        happened.append("leases read")
        leases()

    monkeypatch.setattr(ownership, "claim", throttled_once)
    monkeypatch.setattr(runtime, "_claim_leases_held_elsewhere", leases_read)
    thread, ended = _run_in_thread(runtime)
    try:
        assert runtime.started.wait(30 * PATIENCE)
    finally:
        runtime.stop()
        thread.join(60 * PATIENCE)
    assert ended == [0]
    assert happened[:3] == ["throttled", "claimed", "leases read"]


def test_a_role_without_the_tag_permissions_runs_unchecked_warned_once(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade must not stop a job whose role predates the check; it says what to grant,
    once, not every minute."""
    runtime = LocalRuntime(load_job(job.path), owner_check_interval_s=0.05)
    calls: list[str] = []
    ddb = runtime._ddb

    def denied(**kwargs: Any) -> Any:
        calls.append("ListTagsOfResource")
        raise _aws_error("AccessDeniedException")

    monkeypatch.setattr(ddb, "list_tags_of_resource", denied)
    with structlog.testing.capture_logs() as logged:
        thread, ended = _run_in_thread(runtime)
        try:
            assert runtime.started.wait(30 * PATIENCE)
            job.put_demo_items(random.Random(9), 0, 3)
            job.wait_checkpointed()
        finally:
            runtime.stop()
            thread.join(60 * PATIENCE)
    assert ended == [0]
    assert calls == ["ListTagsOfResource"]
    grants = [line for line in logged if "grant dynamodb:ListTagsOfResource" in line["event"]]
    assert len(grants) == 1 and grants[0]["log_level"] == "warning"
    assert _owner_tag(job) is None


def test_a_claim_refused_for_another_reason_at_start_is_exit_3_naming_it(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = LocalRuntime(load_job(job.path))
    monkeypatch.setattr(
        runtime._ddb,
        "list_tags_of_resource",
        mock.Mock(side_effect=_aws_error("ValidationException")),
    )
    with pytest.raises(EnvironmentProblem) as refused:
        runtime.run()
    assert refused.value.exit_code == 3
    assert f"claiming the lease table {job.name} for the job's source" in str(refused.value)
    assert job.lease_rows() == []


def test_a_start_refused_by_the_tag_creates_nothing_and_the_job_s_own_run_starts_after_it(
    job: Job, unique: Any, tmp_path: Path
) -> None:
    """A job file copied with another source (its task name kept, its dead letters in a new
    directory) was refused by the tag, exit 3, but only after it had made the directory
    and recorded its source for the task beside the dead-letter file: the job of the
    right source, given that file, was then refused on the host as another source's.
    The tag is read before anything is created."""
    _replicate_five_items(job)
    fresh = tmp_path / "fresh" / "dead.jsonl"
    text = job.path.read_text().replace(str(job.dead_letters), str(fresh))
    table = unique("other-src")
    tables.create(job.source, table, stream=True)
    other = tmp_path / "other.yaml"
    other.write_text(text.replace(f"table: {job.source_table},", f"table: {table},"))
    refused = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--config", str(other)],
        capture_output=True,
        text=True,
        timeout=120 * PATIENCE,
        check=False,
    )
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "is another job's" in refused.stderr
    assert not fresh.parent.exists()

    job.path.write_text(text)
    _replicate_five_items(job)  # refused (exit 3) when the other source had been recorded
    assert fresh.parent.is_dir()
