"""A role that cannot be assumed is reported as such by every command: STS failed, not the
table or queue the request was for, which was never sent. Against a moto server whose
tables exist, with STS at a closed port of this host."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

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


def test_a_role_sts_keeps_refusing_stops_the_writer_naming_the_trust_policy(
    metrics: Any,
) -> None:
    """STS refusing the role (AccessDenied) every time: the destination stops the worker
    after its refusal limit, saying no write was sent and what to check (the trust
    policy, sts:AssumeRole, the external id), not the host's clock."""
    from replicator.aws.backoff import Backoff
    from replicator.config.model import ConflictConfig
    from replicator.decode import decode
    from replicator.exceptions import DestinationRefused
    from replicator.rules import rule_for
    from replicator.writers.destination import DestinationWriter
    from tests.support.records import put

    denied = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not authorized to perform sts:AssumeRole"}},
        "AssumeRole",
    )

    class RoleRefused:
        def put_item(self, **_: Any) -> Any:
            raise RoleNotAssumed(
                role_arn=ROLE, sts_endpoint="https://sts.amazonaws.com", error=denied
            )

    writer = DestinationWriter(
        label="acct-a",
        table="orders",
        region="eu-west-1",
        client=RoleRefused(),  # type: ignore[arg-type]
        rule=rule_for(ConflictConfig(policy="overwrite"), None),
        metrics=metrics,
        backoff=Backoff(0.0001, 0.001),
        refusal_limit=3,
    )
    with pytest.raises(DestinationRefused) as refused:
        writer.write(decode(put("a", 1, v="x")))
    said = str(refused.value)
    assert said.startswith("destination acct-a (eu-west-1/orders): STS refused the role")
    assert "no write was sent" in said and ROLE in said
    assert "trust policy" in said and "sts:AssumeRole" in said and "external_id" in said
    assert "NTP" not in said
