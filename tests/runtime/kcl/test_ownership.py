"""The KCL's lease table is the job's by a tag naming its source: a second job given the
same task_name (another source table) shared the table, took the first job's leases and
read none of its own changes, without an error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import structlog.testing
from botocore.exceptions import ClientError

from replicator.config.loader import load_job
from replicator.demo import tables
from replicator.exceptions import EnvironmentProblem
from replicator.runtime.kcl import java
from replicator.runtime.kcl.claim_watch import ClaimWatch
from replicator.runtime.kcl.launcher import prepare_run
from replicator.shards import ownership
from tests.runtime.kcl.test_kcl_launcher import (
    STREAMS_CLASSES,
    assert_refused,
    write_job,
)
from tests.runtime.kcl.test_kcl_launcher import run_cli as run_kcl_cli
from tests.support.aws import client, create_lease_table
from tests.support.kcl_jars import fake_jars


@pytest.fixture
def two_jobs(moto_endpoint: str, unique: Any, tmp_path: Path) -> tuple[Path, Path]:
    """Jobs of two source tables (each with a stream) under one task name, the second's
    file in a directory of its own; both on fake jars (nothing gets past the preflight)."""
    task = unique("shared-task")
    files = []
    for name in ("a", "b"):
        table = unique(f"src-{name}")
        tables.create(client("dynamodb", "us-east-1", moto_endpoint), table, stream=True)
        tables.create(client("dynamodb", "eu-west-1", moto_endpoint), table, stream=False)
        directory = tmp_path / name
        jars = fake_jars(directory / "jars", [java.MULTILANG_DAEMON, *STREAMS_CLASSES])
        files.append(
            write_job(
                directory / "job.yaml",
                kind="dynamodb",
                endpoint=moto_endpoint,
                table=table,
                destination=table,
                task_name=task,
                kcl=f", java: {sys.executable}, jars_dir: {jars}",
            )
        )
    return files[0], files[1]


def identity_of(job: Path) -> str:
    resolved = load_job(job)
    ddb = client("dynamodb", "us-east-1", str(resolved.job.source.endpoint_url))
    stream = ddb.describe_table(TableName=resolved.job.source.table)["Table"]["LatestStreamArn"]
    return ownership.source_identity(resolved, stream)


def test_a_lease_table_is_claimed_once_it_exists_and_kept_by_its_job(
    two_jobs: tuple[Path, Path], moto_endpoint: str
) -> None:
    first, _ = two_jobs
    resolved = load_job(first)
    identity = identity_of(first)
    assert identity.endswith(f":table/{resolved.job.source.table}")
    assert not ownership.claim(resolved, identity)  # the KCL has not created it yet
    create_lease_table(client("dynamodb", "us-east-1", moto_endpoint), resolved.lease_table)
    assert ownership.claim(resolved, identity)
    assert ownership.claim(resolved, identity)  # its own tag: claimed again
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    arn = ddb.describe_table(TableName=resolved.lease_table)["Table"]["TableArn"]
    tags = ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]
    assert tags == [{"Key": ownership.OWNER_TAG, "Value": identity}]


def test_a_second_job_of_the_task_name_is_refused_at_start_naming_both_sources(
    two_jobs: tuple[Path, Path], moto_endpoint: str, tmp_path: Path
) -> None:
    first, second = two_jobs
    resolved = load_job(first)
    create_lease_table(client("dynamodb", "us-east-1", moto_endpoint), resolved.lease_table)
    assert ownership.claim(resolved, identity_of(first))
    with pytest.raises(EnvironmentProblem, match="is another job's"):
        prepare_run(load_job(second), tmp_path / "run")
    message = assert_refused(
        run_kcl_cli(second),
        3,
        f"lease table {resolved.lease_table}",
        f"names the source {identity_of(first)}, and this job reads {identity_of(second)}",
        "give this job a task_name of its own",
    )
    assert "Traceback" not in message


def test_the_claim_made_after_the_kcl_created_the_table_stops_a_job_it_is_not_for(
    two_jobs: tuple[Path, Path], moto_endpoint: str
) -> None:
    """Both started before either's daemon created the table: the watch of the one that
    claims second asks its daemon to stop, and says why."""
    first, second = two_jobs
    resolved = load_job(first)
    stopped: list[bool] = []
    watch = ClaimWatch(
        load_job(second), identity_of(second), lambda: stopped.append(True), interval_s=0.05
    )
    create_lease_table(client("dynamodb", "us-east-1", moto_endpoint), resolved.lease_table)
    assert ownership.claim(resolved, identity_of(first))
    watch.start()
    try:
        watch.join(timeout=30)
    finally:
        watch.stop()
    assert stopped == [True]
    assert watch.refused is not None and "is another job's" in watch.refused


def test_a_role_without_the_tag_permissions_runs_unchecked_and_says_what_to_grant(
    two_jobs: tuple[Path, Path], moto_endpoint: str
) -> None:
    """A role written before the check: the job must not stop starting after an upgrade."""
    first, _ = two_jobs
    resolved = load_job(first)
    create_lease_table(client("dynamodb", "us-east-1", moto_endpoint), resolved.lease_table)
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
        "ListTagsOfResource",
    )
    with (
        mock.patch.object(ddb, "list_tags_of_resource", side_effect=denied),
        structlog.testing.capture_logs() as logs,
    ):
        assert ownership.claim(resolved, identity_of(first), ddb)
    (warning,) = [line for line in logs if line["log_level"] == "warning"]
    assert "grant dynamodb:ListTagsOfResource and dynamodb:TagResource" in warning["event"]


def test_a_run_whose_tag_another_job_wrote_since_has_its_daemon_stopped(
    two_jobs: tuple[Path, Path], moto_endpoint: str
) -> None:
    """Two jobs started together can both find no tag and both write one (a read of the
    tags may lag a write): the run the tag no longer names is stopped while it runs."""
    first, second = two_jobs
    resolved = load_job(first)
    create_lease_table(client("dynamodb", "us-east-1", moto_endpoint), resolved.lease_table)
    assert ownership.claim(resolved, identity_of(first))
    stopped: list[bool] = []
    # The other job's tag replaces this one's before the watch's first reading: a watch
    # reading between the removal and the new tag found none and tagged the table again
    # (moto keeps both values under one key), and ran on.
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    arn = ddb.describe_table(TableName=resolved.lease_table)["Table"]["TableArn"]
    ddb.untag_resource(ResourceArn=arn, TagKeys=[ownership.OWNER_TAG])
    ddb.tag_resource(
        ResourceArn=arn, Tags=[{"Key": ownership.OWNER_TAG, "Value": identity_of(second)}]
    )
    watch = ClaimWatch(
        resolved,
        identity_of(first),
        lambda: stopped.append(True),
        claimed=True,
        check_interval_s=0.05,
    )
    watch.start()
    try:
        watch.join(timeout=30)
    finally:
        watch.stop()
    assert stopped == [True]
    assert watch.refused is not None
    assert f"names the source {identity_of(second)}, and this job reads" in watch.refused


def test_a_source_named_near_the_longest_name_fits_a_tag(two_jobs: tuple[Path, Path]) -> None:
    resolved = load_job(two_jobs[0])
    long_arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{'t' * 255}/stream/2026-01-01"
    identity = ownership.source_identity(resolved, long_arn)
    assert len(identity) <= ownership.TAG_VALUE_LIMIT
    assert identity != ownership.source_identity(resolved, long_arn.replace("tt/", "tu/"))


def test_a_watch_whose_tag_cannot_be_read_ends_after_saying_so_once(
    two_jobs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role without the tag permissions (or an endpoint without tags) runs unchecked:
    its warning came again every minute for as long as the daemon ran."""
    from replicator.runtime.kcl import claim_watch

    calls: list[bool] = []

    def unchecked(*args: Any) -> ownership.Claim:
        calls.append(True)
        return ownership.Claim.UNCHECKED

    monkeypatch.setattr(claim_watch, "claim", unchecked)
    resolved = load_job(two_jobs[0])
    watch = ClaimWatch(resolved, identity_of(two_jobs[0]), lambda: None, interval_s=0.01)
    watch.start()
    try:
        watch.join(timeout=30)
    finally:
        watch.stop()
    assert calls == [True]
    assert watch.refused is None
