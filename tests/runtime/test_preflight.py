"""What both runtimes check before they start: one line naming the setting, exit 3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from replicator.config import load_job
from replicator.exceptions import ConfigError, EnvironmentProblem
from replicator.runtime import preflight
from tests.support.aws import client, create_table
from tests.support.cli import replicator


def job_file(path: Path, endpoint: str, source: str, destination: str, extra: str = "") -> Path:
    path.write_text(
        f"task_name: preflight-{source}\n"
        f"source: {{region: us-east-1, table: {source}, endpoint_url: '{endpoint}'{extra}}}\n"
        f"destinations: [{{region: eu-west-1, table: {destination}, endpoint_url: '{endpoint}'}}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        f"dead_letter: {{kind: file, path: '{path.parent}/dead/{{task_name}}.jsonl'}}\n"
        "metrics: {enabled: false}\n"
    )
    return path


@pytest.fixture
def tables(moto_endpoint: str, unique: Any) -> dict[str, str]:
    east = client("dynamodb", "us-east-1", moto_endpoint)
    ours, theirs = unique("ours"), unique("theirs")
    create_table(east, ours)
    other = create_table(east, theirs)
    destination = unique("dst")
    create_table(client("dynamodb", "eu-west-1", moto_endpoint), destination, stream=None)
    return {
        "ours": ours,
        "theirs": theirs,
        "their_arn": other["LatestStreamArn"],
        "dst": destination,
    }


def test_a_stream_arn_of_another_table_stops_the_start_naming_both_tables(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """`validate` refuses an ARN whose text names another table (tests/config); this is the
    check behind it, against the stream itself, reached here by setting the ARN after
    validation."""
    resolved = load_job(
        job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    )
    source = resolved.job.source
    stream = source.stream.model_copy(update={"arn": tables["their_arn"]})
    job = resolved.job.model_copy(update={"source": source.model_copy(update={"stream": stream})})
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(resolved.model_copy(update={"job": job}))
    message = str(raised.value)
    assert "\n" not in message
    assert f"table {tables['theirs']}" in message
    assert f"source table {tables['ours']}" in message


def test_the_stream_arn_of_the_source_table_is_accepted(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    arn = client("dynamodb", "us-east-1", moto_endpoint).describe_table(TableName=tables["ours"])[
        "Table"
    ]["LatestStreamArn"]
    job = job_file(
        tmp_path / "job.yaml",
        moto_endpoint,
        tables["ours"],
        tables["dst"],
        extra=f", stream: {{arn: '{arn}'}}",
    )
    assert preflight.check(load_job(job)).stream_arn == arn


def test_a_dead_letter_directory_that_cannot_be_created_stops_run_with_exit_3(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """A file where the directory should be (as root, permission bits never refuse)."""
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    (tmp_path / "dead").write_text("in the way\n")
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--config", str(job)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("replicator: dead_letter.path: ")
    assert f"{tmp_path}/dead/preflight-{tables['ours']}.jsonl" in line
    assert "chown 10001" in line
    assert (tmp_path / "dead").read_text() == "in the way\n"


def test_a_writable_dead_letter_directory_is_created_and_left_without_junk(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    preflight.check_dead_letter_file(load_job(job))
    assert list((tmp_path / "dead").iterdir()) == []


def test_a_conflict_log_file_that_cannot_be_written_names_its_setting(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    (tmp_path / "blocker").write_text("")
    job.write_text(
        job.read_text()
        + f"conflict_log: {{kind: file, path: '{tmp_path}/blocker/sub/conflicts.jsonl'}}\n"
    )
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(job))
    message = str(raised.value)
    assert message.startswith("conflict_log.path: ")
    assert f"{tmp_path}/blocker is a file" in message


def test_a_kinesis_arn_the_kcl_would_not_read_is_refused(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The KCL reads a Kinesis stream by name in source.region: an ARN of a stream in
    another region (or account) would be read as this region's stream of that name."""
    table, name = unique("kin-src"), unique("kin-changes")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), table, stream=None)
    kinesis = client("kinesis", "us-east-1", moto_endpoint)
    kinesis.create_stream(StreamName=name, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]

    def job(stream_arn: str) -> Any:
        path = tmp_path / "kinesis.yaml"
        path.write_text(
            "runtime: kcl\n"
            f"source: {{region: us-east-1, table: {table}, endpoint_url: '{moto_endpoint}', "
            f"stream: {{kind: kinesis, arn: '{stream_arn}'}}}}\n"
            f"destinations: [{{region: eu-west-1, table: {table}}}]\n"
            "conflict: {policy: version, version_attribute: v}\n"
        )
        return load_job(path)

    assert preflight.check_source(job(arn)).stream_arn == arn
    elsewhere = arn.replace(":us-east-1:", ":us-west-2:")
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check_source(job(elsewhere))
    assert elsewhere in str(raised.value)
    assert arn in str(raised.value)


def test_a_timestamp_that_is_a_key_attribute_stops_the_start_naming_the_key(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """Only the table knows its keys: ``validate`` cannot see this, the start can."""
    path = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    path.write_text(
        path.read_text().replace("timestamp_attribute: updated_at", "timestamp_attribute: pk")
    )
    with pytest.raises(ConfigError) as raised:
        preflight.check(load_job(path))
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    assert "conflict.timestamp_attribute is 'pk', a key attribute of the source table" in message


def test_an_origin_attribute_that_is_a_key_attribute_stops_the_run(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """Every put carries its key, never this region's name: each would be dropped as an
    echo and checkpointed past. ``replicator run`` refuses it, naming the file and key."""
    path = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    path.write_text(path.read_text() + "loop_prevention: {origin_attribute: pk}\n")

    result = replicator("run", "--config", str(path))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (
        f"replicator: {path}: loop_prevention.origin_attribute is 'pk', a key attribute "
        f"of the source table {tables['ours']} (HASH:S)"
    ) in result.stderr
    east = client("dynamodb", "us-east-1", moto_endpoint)
    assert f"preflight-{tables['ours']}" not in east.list_tables()["TableNames"]


def test_a_destination_missing_in_the_account_of_its_role_names_the_role_and_account(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table exists for the worker's own credentials, but the job reaches it through a
    role of another account, where it does not: the message must say where it looked."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)  # the role is assumed in moto
    role = "arn:aws:iam::222222222222:role/replica-writer"
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: preflight-role-{tables['ours']}\n"
        f"source: {{region: us-east-1, table: {tables['ours']}, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: missing-{tables['dst']}, "
        f"endpoint_url: '{moto_endpoint}', role_arn: '{role}'}}\n"
        "metrics: {enabled: false}\n"
    )
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(path))
    message = str(raised.value)
    assert f"missing-{tables['dst']}: not found at" in message, message
    assert f"as role {role} in account 222222222222" in message, message
