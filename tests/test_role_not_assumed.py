"""A role that cannot be assumed is reported as such by every command: STS failed, not the
table or queue the request was for, which was never sent. Against a moto server whose
tables exist, with STS at a closed port of this host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
)

from replicator.aws.errors import ErrorKind, RoleNotAssumed, classify, may_have_landed
from tests.support.aws import client, create_table
from tests.support.cli import replicator

ROLE = "arn:aws:iam::111111111111:role/a"


@pytest.fixture
def closed_sts() -> Iterator[str]:
    """An STS endpoint that refuses every connection (bound, never listening)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{closed.getsockname()[1]}"


def job_file(tmp_path: Path, moto_endpoint: str, unique: Any) -> Path:
    source, replica = unique("role-src"), unique("role-dst")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), source)
    create_table(client("dynamodb", "eu-west-1", moto_endpoint), replica)
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: {unique('wm7')}\n"
        f"source: {{region: us-east-1, table: {source}, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        f"  - {{name: acct-a, region: eu-west-1, table: {replica}, "
        f"endpoint_url: '{moto_endpoint}', role_arn: '{ROLE}'}}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        f"conflict_log: {{kind: dynamodb, endpoint_url: '{moto_endpoint}', role_arn: '{ROLE}'}}\n"
        "metrics: {enabled: false}\n"
    )
    return path


COMMANDS = {
    "run": ["run"],
    "verify": ["verify"],
    "wait": ["wait", "-d", "acct-a", "--until", "1", "--timeout", "1"],
    "watermark": ["watermark"],
    "conflicts": ["conflicts"],
}


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_role_whose_sts_cannot_be_reached_is_named_with_sts_by_every_command(
    moto_endpoint: str, unique: Any, tmp_path: Path, closed_sts: str, args: list[str]
) -> None:
    config = job_file(tmp_path, moto_endpoint, unique)
    command, *rest = args
    result = replicator(
        command, "--config", str(config), *rest, env={"AWS_ENDPOINT_URL_STS": closed_sts}
    )
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr
    assert (
        f"assuming role {ROLE} at STS endpoint {closed_sts} failed: Could not connect to "
        f'the endpoint URL: "{closed_sts}/"'
    ) in result.stderr, result.stderr
    assert "cannot reach" not in result.stderr, result.stderr


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_role_with_no_credentials_to_assume_it_with_is_one_line_and_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path, args: list[str]
) -> None:
    """No credentials at all (none in the environment, no files, no instance): ``wait``
    and ``watermark``, which reach only the destination's role, ended in a traceback
    (botocore's fetcher asked None for credentials) and exit 1, which ``wait`` means
    for a timeout."""
    config = job_file(tmp_path, moto_endpoint, unique)
    credentials = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    env = {name: value for name, value in os.environ.items() if name not in credentials}
    env |= {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL_STS": moto_endpoint,
    }
    command, *rest = args
    result = subprocess.run(
        [sys.executable, "-m", "replicator", command, "--config", str(config), *rest],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("replicator:")]
    assert "credentials" in line, result.stderr


def test_an_sts_endpoint_carrying_a_password_is_refused_and_never_shown(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """$AWS_ENDPOINT_URL with a user name or password is refused (exit 3, the password
    not shown); $AWS_ENDPOINT_URL_STS, through which a role is assumed, was used as it was,
    the password sent along to the endpoint."""
    config = job_file(tmp_path, moto_endpoint, unique)
    secret = "s3cretPassw0rd"
    sts = moto_endpoint.replace("http://", f"http://op:{secret}@")
    result = replicator("verify", "--config", str(config), env={"AWS_ENDPOINT_URL_STS": sts})
    assert result.returncode == 3, result
    assert secret not in result.stdout + result.stderr
    assert f"assuming role {ROLE} at STS endpoint http://<redacted>@" in result.stderr, result
    assert "it must not carry a user name or password" in result.stderr, result.stderr


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"])
def test_an_sts_endpoint_without_a_scheme_is_one_line_and_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path, variable: str
) -> None:
    """botocore refused it before it was checked (``ValueError: Invalid endpoint``): a
    traceback and exit 1, where ``validate`` had said ``run`` stops with exit 3."""
    config = job_file(tmp_path, moto_endpoint, unique)
    bare = moto_endpoint.removeprefix("http://")
    result = replicator("verify", "--config", str(config), env={variable: bare})
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr, result.stderr
    assert f"assuming role {ROLE} at STS endpoint {bare} failed: " in result.stderr
    assert (
        f"the sts endpoint {bare!r} is not usable: it must start with http:// or https://\n"
    ) in result.stderr, result.stderr


def test_an_sts_endpoint_from_the_config_file_with_a_password_is_refused_and_never_shown(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """botocore refuses it itself, quoting it whole: the password was in the message."""
    config = job_file(tmp_path, moto_endpoint, unique)
    secret = "s3cretPassw0rd"
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(f"[default]\nendpoint_url = op:{secret}@127.0.0.1:1\n")
    result = replicator("verify", "--config", str(config), env={"AWS_CONFIG_FILE": str(aws_config)})
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr, result.stderr
    assert secret not in result.stdout + result.stderr
    assert "<redacted>@127.0.0.1:1" in result.stderr, result.stderr
    assert "the AWS config file" in result.stderr, result.stderr


def test_a_role_not_assumed_was_never_sent_and_is_never_the_changes_fault() -> None:
    """A write whose role could not be assumed was never signed: it cannot have landed,
    and it is retried as its STS failure would be, never dead-lettered as rejected."""
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    refused = ClientError(
        {"Error": {"Code": "ValidationError", "Message": "bad external id"}}, "AssumeRole"
    )
    throttled = ClientError({"Error": {"Code": "Throttling", "Message": "slow"}}, "AssumeRole")
    failures = {
        error: RoleNotAssumed(role_arn=ROLE, sts_endpoint="http://127.0.0.1:9", error=error)
        for error in (unreachable, refused, throttled)
    }
    assert [classify(failure) for failure in failures.values()] == [
        ErrorKind.RETRY,
        ErrorKind.AUTH,
        ErrorKind.THROTTLED,
    ]
    assert not any(may_have_landed(failure) for failure in failures.values())
    assert may_have_landed(ClientError({"Error": {"Code": "InternalServerError"}}, "PutItem"))


@pytest.mark.parametrize("whose", ["the worker's", "the role's"])
def test_a_credential_source_that_fails_is_retried_as_credentials_not_the_network(
    metrics: Any, whose: str
) -> None:
    """A credential_process (or a container's or instance's credential endpoint) that
    fails while the worker runs may pass (an endpoint timing out): retried, as before,
    but counted as ``auth``, not ``network``, where the runbook sends the operator to the
    credentials. A write it failed was never signed, so never sent."""
    from replicator.aws.backoff import Backoff
    from replicator.config.model import ConflictConfig
    from replicator.decode import decode
    from replicator.exceptions import DestinationUnavailable
    from replicator.rules import rule_for
    from replicator.writers.destination import DestinationWriter
    from tests.support.records import put

    failed: Exception = CredentialRetrievalError(provider="custom-process", error_msg="exit 1")
    if whose == "the role's":  # the credentials the role is assumed with
        failed = RoleNotAssumed(role_arn=ROLE, sts_endpoint="of eu-west-1", error=failed)
    assert classify(failed) is ErrorKind.RETRY
    assert not may_have_landed(failed)

    class HelperFailing:
        def put_item(self, **_: Any) -> Any:
            raise failed

    writer = DestinationWriter(
        label="acct-a",
        table="orders",
        region="eu-west-1",
        client=HelperFailing(),  # type: ignore[arg-type]
        rule=rule_for(ConflictConfig(policy="overwrite"), None),
        metrics=metrics,
        backoff=Backoff(0.0001, 0.001),
        refusal_limit=3,
        # An operator command's bound (it had none: retried for ever); replication has none.
        unanswered_for_s=0.2,
    )
    with pytest.raises(DestinationUnavailable) as unavailable:
        writer.write(decode(put("a", 1, v="x")))
    assert str(unavailable.value).startswith(
        "destination acct-a (eu-west-1/orders) had no credentials to write with for 0.2 s ("
    ), unavailable.value
    sample = metrics.registry.get_sample_value
    assert sample("replicator_retries_total", {"destination": "acct-a", "reason": "auth"}) > 3
    assert sample("replicator_retries_total", {"destination": "acct-a", "reason": "network"}) in (
        None,
        0,
    )


def stop_of_writing_with(client: Any, metrics: Any) -> str:
    """Why a destination writer through ``client`` stops the worker, writing one change
    (after 3 refusals in a row)."""
    from replicator.aws.backoff import Backoff
    from replicator.config.model import ConflictConfig
    from replicator.decode import decode
    from replicator.exceptions import DestinationRefused
    from replicator.rules import rule_for
    from replicator.writers.destination import DestinationWriter
    from tests.support.records import put

    writer = DestinationWriter(
        label="acct-a",
        table="orders",
        region="eu-west-1",
        client=client,
        rule=rule_for(ConflictConfig(policy="overwrite"), None),
        metrics=metrics,
        backoff=Backoff(0.0001, 0.001),
        refusal_limit=3,
    )
    with pytest.raises(DestinationRefused) as refused:
        writer.write(decode(put("a", 1, v="x")))
    return str(refused.value)


@pytest.mark.parametrize("whose", ["the worker's", "the role's"])
def test_no_credentials_at_all_stops_the_writer_naming_the_credentials(
    metrics: Any, whose: str
) -> None:
    """No credentials to write with (or to assume the destination's role with: STS was
    never asked): after the refusal limit the worker stops, saying no write was sent and
    what to check, not the host's clock nor the role's trust policy."""
    missing = NoCredentialsError()
    error: Exception = missing
    if whose == "the role's":
        error = RoleNotAssumed(role_arn=ROLE, sts_endpoint="of eu-west-1", error=missing)

    class NoCredentials:
        def put_item(self, **_: Any) -> Any:
            raise error

    said = stop_of_writing_with(NoCredentials(), metrics)
    assert said.startswith(
        "destination acct-a (eu-west-1/orders): no credentials to write with, 3 times in a row "
        "(no write was sent): "
    ), said
    assert "Unable to locate credentials" in said and "credential_process" in said, said
    assert "NTP" not in said and "trust policy" not in said
    retries = metrics.registry.get_sample_value(
        "replicator_retries_total", {"destination": "acct-a", "reason": "auth"}
    )
    assert retries == 2, retries


def test_a_role_sts_keeps_refusing_stops_the_writer_naming_the_trust_policy(
    metrics: Any,
) -> None:
    """STS refusing the role (AccessDenied) every time: the destination stops the worker
    after its refusal limit, saying no write was sent and what to check (the trust
    policy, sts:AssumeRole, the external id), not the host's clock."""
    denied = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not authorized to perform sts:AssumeRole"}},
        "AssumeRole",
    )

    class RoleRefused:
        def put_item(self, **_: Any) -> Any:
            raise RoleNotAssumed(
                role_arn=ROLE, sts_endpoint="https://sts.amazonaws.com", error=denied
            )

    said = stop_of_writing_with(RoleRefused(), metrics)
    assert said.startswith("destination acct-a (eu-west-1/orders): STS refused the role")
    assert "no write was sent" in said and ROLE in said
    assert "trust policy" in said and "sts:AssumeRole" in said and "external_id" in said
    assert "NTP" not in said
