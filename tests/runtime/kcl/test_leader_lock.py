"""The leader's lock a daemon left as it ended without its graceful stop
(replicator/runtime/kcl/leader_lock.py), against moto over HTTP. On the real daemon: a
processor killed on the leading worker moved its shards after about 3.5 minutes, the
other workers waiting out the lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from replicator.config.loader import parse_job
from replicator.runtime.kcl.leader_lock import (
    LEADER_KEY,
    coordinator_table,
    give_up_leader_lock,
)
from tests.support.aws import client


def kcl_job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Any:
    return parse_job(
        "runtime: kcl\n"
        f"task_name: {unique('lock')}\n"
        f"source: {{region: us-east-1, table: orders, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n",
        tmp_path / "job.yaml",
    )


def lock_row(owner: str, version: str = "v-1") -> dict[str, Any]:
    """The row as the KCL's lock client writes it."""
    return {
        **LEADER_KEY,
        "ownerName": {"S": owner},
        "recordVersionNumber": {"S": version},
        "leaseDuration": {"S": "120000"},
    }


def test_the_lock_this_worker_held_is_deleted_and_another_workers_kept(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    resolved = kcl_job(moto_endpoint, unique, tmp_path)
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    table = coordinator_table(resolved)
    assert table == f"{resolved.task_name}-CoordinatorState"
    with capture_logs() as logs:
        assert give_up_leader_lock(resolved, "w1") is False  # no table yet: nothing said
    assert logs == []
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert give_up_leader_lock(resolved, "w1") is False  # no lock row
    ddb.put_item(TableName=table, Item=lock_row("w2"))
    assert give_up_leader_lock(resolved, "w1") is False
    assert ddb.get_item(TableName=table, Key=LEADER_KEY)["Item"]["ownerName"] == {"S": "w2"}
    ddb.put_item(TableName=table, Item=lock_row("w1"))
    with capture_logs() as logs:
        assert give_up_leader_lock(resolved, "w1") is True
    assert "Item" not in ddb.get_item(TableName=table, Key=LEADER_KEY)
    (line,) = logs
    assert line["event"].startswith("gave up the leader's lock this worker held")


def test_the_table_is_the_one_the_job_names_for_the_kcl(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    resolved = parse_job(
        "runtime: kcl\n"
        f"task_name: {unique('lock')}\n"
        f"source: {{region: us-east-1, table: orders, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {extra_properties: {coordinatorStateTableName: ops-coordination}}\n",
        tmp_path / "job.yaml",
    )
    assert coordinator_table(resolved) == "ops-coordination"


def test_a_lock_renewed_between_the_read_and_the_delete_is_kept(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Taken over by another worker (or renewed) after it was read: the delete's
    condition keeps the new row."""
    resolved = kcl_job(moto_endpoint, unique, tmp_path)
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    table = coordinator_table(resolved)
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName=table, Item=lock_row("w1", "v-1"))
    from replicator.aws import clients

    real = clients.dynamodb

    class RenewedAfterRead:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def get_item(self, **kwargs: Any) -> Any:
            answer = self.inner.get_item(**kwargs)
            ddb.put_item(TableName=table, Item=lock_row("w1", "v-2"))
            return answer

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(
        clients, "dynamodb", lambda *args, **kwargs: RenewedAfterRead(real(*args, **kwargs))
    )
    with capture_logs() as logs:
        assert give_up_leader_lock(resolved, "w1") is False
    assert logs == []
    row = ddb.get_item(TableName=table, Key=LEADER_KEY)["Item"]
    assert row["recordVersionNumber"] == {"S": "v-2"}
