"""The DescribeTable a command (``verify``, ``backfill``, ``redrive``) starts with: its
clients leave retries to the reads' own loop, and the lookup was tried once, so one
throttle during an incident ended the command with exit 3, saying "still after the
SDK's retries". Tried three times as the SDK's standard mode would, on a stubbed client
(no endpoint: the answers are the test's)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from replicator.aws.backoff import Backoff
from replicator.exceptions import EnvironmentProblem
from replicator.tools import tables
from replicator.tools.tables import TableRef, describe

_TABLE = {
    "TableName": "orders",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "TableStatus": "ACTIVE",
    "ItemCount": 7,
    "TableArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/orders",
    "TableId": "5f1c0c1e-0000-4000-8000-000000000000",
}


def stubbed(answers: list[str | None]) -> tuple[TableRef, Stubber]:
    """A TableRef whose client answers each DescribeTable with an error of that code, or
    with the table for None."""
    client: Any = boto3.client(
        "dynamodb",
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    stubber = Stubber(client)
    for code in answers:
        if code is None:
            stubber.add_response("describe_table", {"Table": _TABLE}, {"TableName": "orders"})
        else:
            status = 500 if code == "InternalServerError" else 400
            stubber.add_client_error(
                "describe_table",
                code,
                "said",
                http_status_code=status,
                expected_params={"TableName": "orders"},
            )
    stubber.activate()
    return TableRef("eu-west-1/orders", "eu-west-1", "orders", None, client), stubber


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "_DESCRIBE_BACKOFF", Backoff(base_s=0.0, cap_s=0.0))


@pytest.mark.parametrize("code", ["ThrottlingException", "InternalServerError"])
def test_a_throttle_or_a_server_error_twice_is_waited_out(code: str) -> None:
    ref, stubber = stubbed([code, code, None])
    assert describe(ref).key_names == ["pk"]
    stubber.assert_no_pending_responses()


def test_three_in_a_row_end_the_command_saying_the_retries_were_made() -> None:
    ref, stubber = stubbed(["ThrottlingException"] * 3)
    with pytest.raises(EnvironmentProblem) as raised:
        describe(ref)
    assert "ThrottlingException: said (at eu-west-1), still after the SDK's retries" in str(
        raised.value
    )
    stubber.assert_no_pending_responses()


def test_an_answer_no_retry_changes_is_said_at_the_first() -> None:
    ref, stubber = stubbed(["AccessDeniedException", None])
    with pytest.raises(EnvironmentProblem) as raised:
        describe(ref)
    assert "access denied at eu-west-1" in str(raised.value)
    with pytest.raises(AssertionError):
        stubber.assert_no_pending_responses()  # the table's answer was never asked for
