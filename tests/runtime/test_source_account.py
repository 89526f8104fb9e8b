"""A source in another account (``source.role_arn``): what the job keeps beside the source
(the lease table, its owner tag, the conflict log's table) lives in the source's account,
reached through the role, and every call made through the role is one docs/security.md's
source-role policy grants (with the statements it says to add for a conflict log). moto
keeps each account's tables apart, by the account of the credentials."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from replicator.demo import tables
from tests.support.aws import client
from tests.support.e2e import Job, stop, wait_until
from tests.support.iam import SOURCE_ROLE_POLICY, CallLog, ungranted, worker_statements_in

SOURCE_ACCOUNT = "333333333333"  # the account the page's source-role policy names
ROLE = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/orders-source-reader"


def _in_the_source_account(endpoint: str) -> tuple[Any, str]:
    """A client of the source account (as the job's role sees it) and its access key."""
    sts = client("sts", "us-east-1", endpoint)
    credentials = sts.assume_role(RoleArn=ROLE, RoleSessionName="test-setup")["Credentials"]
    ddb = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    return ddb, str(credentials["AccessKeyId"])


def _checkpointed(source: Any, lease_table: str) -> bool:
    rows = source.scan(TableName=lease_table, ConsistentRead=True)["Items"]
    return bool(rows) and all(
        row.get("checkpoint", {}).get("S") not in (None, "TRIM_HORIZON", "LATEST") for row in rows
    )


def test_a_source_in_another_account_keeps_its_tables_there_as_documented(
    moto_endpoint: str,
    tmp_path: Path,
    unique: Callable[[str], str],
    call_log: CallLog,
) -> None:
    name = unique("xacct")
    source, setup_key = _in_the_source_account(moto_endpoint)
    source_table = f"{name}-src"
    tables.create(source, source_table, stream=True)
    job = Job(
        moto_endpoint,
        name,
        tmp_path,
        source_of=source_table,
        destinations=[("eu-west-1", f"{name}-eu")],
        extra=f"conflict_log: {{kind: dynamodb, endpoint_url: '{moto_endpoint}'}}\n",
    )
    text = job.path.read_text()
    assert f"table: {source_table}, " in text
    job.path.write_text(
        text.replace(f"table: {source_table}, ", f"table: {source_table}, role_arn: '{ROLE}', ")
    )
    env = {"AWS_ACCESS_KEY_ID": "WORKERKEY", "AWS_ENDPOINT_URL_STS": moto_endpoint}
    runtime = job.start(env=env)
    log = tmp_path / "runtime.log"
    try:
        for n in range(5):
            source.put_item(
                TableName=source_table,
                Item={"pk": {"S": f"k{n}"}, "sk": {"N": "0"}, "updated_at": {"N": str(n)}},
            )
        destination, table = job.destination_clients()[0]
        wait_until(
            lambda: destination.scan(TableName=table)["Count"] == 5, 60, "5 items replicated"
        )
        wait_until(lambda: _checkpointed(source, name), 60, "a checkpoint in the lease table")
    finally:
        code = stop(runtime)
    assert code == 0, log.read_text()[-3000:]
    # The lease table and the conflict log's are the source account's; the worker's
    # account has neither, and the worker's own credentials never reached the source's
    # region for anything but the role.
    source.describe_table(TableName=f"{name}-conflicts")
    worker_account = client("dynamodb", "us-east-1", moto_endpoint)
    for own in (name, f"{name}-conflicts"):
        with pytest.raises(worker_account.exceptions.ResourceNotFoundException):
            worker_account.describe_table(TableName=own)
    assert {c.action for c in call_log.calls("WORKERKEY") if c.region == "us-east-1"} == {
        "AssumeRole"
    }
    # The job's calls through the role: an assumed key's (not this test's), on its tables.
    through_role = [
        call
        for call in call_log.calls_all()
        if call.access_key.startswith("ASIA")
        and call.access_key != setup_key
        and name in str(call.body)
    ]
    actions = {call.action for call in through_role}
    assert {"GetRecords", "CreateTable", "TagResource", "UpdateItem"} <= actions, actions
    names = {source_table: "orders", name: "TASK"}
    assert (
        ungranted(
            through_role,
            {"us-east-1": "us-east-1"},
            names,
            source_table,
            heading=SOURCE_ROLE_POLICY,
            account=SOURCE_ACCOUNT,
            added=worker_statements_in(SOURCE_ACCOUNT, "ConflictLogTable"),
        )
        == []
    )
