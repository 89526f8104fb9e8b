"""`replicator properties`: the KCL properties a job runs with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def properties(path: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "properties", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    pairs = {}
    for line in result.stdout.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_kinesis_job_names_task_stream_and_processor() -> None:
    job = ROOT / "config" / "kinesis-source.yaml"
    props = properties(job)
    assert props["applicationName"] == "inventory-from-kinesis"
    assert props["streamName"] == "inventory-changes"
    assert props["executableName"] == (
        f"{sys.executable} -m replicator processor --config {job.resolve()}"
    )
    assert props["regionName"] == "us-east-1"
    assert props["initialPositionInStream"] == "TRIM_HORIZON"
    assert props["failoverTimeMillis"] == "30000"
    assert props["callProcessRecordsEvenForEmptyRecordList"] == "true"
    assert props["AWSCredentialsProvider"] == "DefaultCredentialsProvider"  # AWS SDK v2 (KCL 3)
    # SIGTERM reaches the processors only if the daemon waits longer than the failover time.
    assert int(props["shutdownGraceMillis"]) > int(props["failoverTimeMillis"])
    # Keys the KCL reads nowhere are not written (it would ignore them silently).
    assert "validateSequenceNumberBeforeCheckpointing" not in props


def test_dynamodb_streams_job_names_the_table_or_arn(tmp_path: Path) -> None:
    props = properties(ROOT / "config" / "two-destinations.yaml")
    assert props["applicationName"] == "orders-fanout"
    assert props["streamName"] == "orders"  # the KCL insists on one; it names the table
    assert "dynamoDBStreamArn" not in props  # looked up from the table at start
    assert props["AWSCredentialsProvider"] == "DefaultCredentialsProvider"
    assert props["skipRecordsBehavior"] == "KCL_RETRY"  # on_trimmed_data: fail
    assert int(props["shutdownGraceMillis"]) > int(props["failoverTimeMillis"])
    job = tmp_path / "arn.yaml"
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
    job.write_text(
        "source: {region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:4566',\n"
        f"         stream: {{arn: '{arn}'}}}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {worker_id: host-a, extra_properties: {shardSyncIntervalMillis: '5000'}}\n"
    )
    props = properties(job)
    # KCL 3 rejects a DynamoDB stream ARN as streamArn; the launcher reads this key.
    assert props["dynamoDBStreamArn"] == arn
    assert "streamArn" not in props
    assert props["applicationName"].startswith("DynamoDBCrossRegionReplication")
    assert props["workerId"] == "host-a"
    assert props["kinesisEndpoint"] == props["dynamoDBEndpoint"] == "http://127.0.0.1:4566"
    assert props["shardSyncIntervalMillis"] == "5000"


def test_properties_never_carry_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret-value")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "replicator",
            "properties",
            "--config",
            str(ROOT / "config" / "two-destinations.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "AKIAEXAMPLEKEYID0000" not in result.stdout
    assert "example-secret-value" not in result.stdout
