"""Clients share the parsed service models of one process, and a session per region,
role and AWS environment."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.loaders
import pytest

from replicator.aws import clients, models


def test_clients_of_many_sessions_share_one_loader_whose_paths_do_not_grow() -> None:
    made = [
        clients.session_for(region).client("dynamodb", endpoint_url="http://127.0.0.1:9")
        for region in ("us-east-1", "eu-west-1", "us-east-1")
    ]
    assert [client.meta.region_name for client in made] == ["us-east-1", "eu-west-1", "us-east-1"]
    loader = models.data_loader(None)
    assert all(
        client._loader is loader
        for client in made  # type: ignore[attr-defined]
    )
    before = list(loader.search_paths)
    for _ in range(3):
        clients.session_for("us-east-1").client("sqs", endpoint_url="http://127.0.0.1:9")
    assert loader.search_paths == before
    assert len(set(before)) == len(before)
    # Each client still has a signer of its own.
    assert made[0]._request_signer is not made[2]._request_signer


def test_one_session_per_region_and_role_until_the_aws_environment_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = clients.session_for("us-east-1")
    assert clients.session_for("us-east-1") is first
    assert clients.session_for("eu-west-1") is not first
    assert clients.session_for("us-east-1", "arn:aws:iam::123456789012:role/r") is not first
    place = clients.Place("us-east-1", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDOTHERKEY")
    assert clients.session_for("us-east-1") is not first
    other = clients.dynamodb(place)._request_signer._credentials
    assert other.access_key == "AKIDOTHERKEY"
    monkeypatch.undo()
    assert clients.session_for("us-east-1") is first
    assert clients.dynamodb(place)._request_signer._credentials.access_key == "testing"


def test_clients_made_on_many_threads_at_once_are_all_usable() -> None:
    place = clients.Place("ap-south-1", "http://127.0.0.1:9")
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: clients.dynamodb(place), range(32)))
    assert {client.meta.region_name for client in made} == {"ap-south-1"}
    assert len({id(client) for client in made}) == 32


def test_the_shared_loader_honours_aws_data_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A model of DynamoDB's in $AWS_DATA_PATH (a customer's override, as botocore allows)
    is the one a client is made from."""
    model = botocore.loaders.Loader().load_service_model("dynamodb", "service-2")
    model["metadata"]["serviceFullName"] = "Amazon DynamoDB from AWS_DATA_PATH"
    latest = botocore.loaders.Loader().determine_latest_version("dynamodb", "service-2")
    (tmp_path / "dynamodb" / latest).mkdir(parents=True)
    (tmp_path / "dynamodb" / latest / "service-2.json").write_text(json.dumps(model))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    client = clients.dynamodb(clients.Place("sa-east-1", "http://127.0.0.1:9"))
    assert client.meta.service_model.metadata["serviceFullName"] == (
        "Amazon DynamoDB from AWS_DATA_PATH"
    )
    assert models.data_loader(str(tmp_path)).search_paths[0] == str(tmp_path)


def test_the_loader_reads_what_botocore_reads_and_knows_the_same_services() -> None:
    """msgspec parses the files as the standard library does, and a service is known to
    the quick check exactly when botocore's own listing has it. (A fresh loader: the
    shared one's endpoint data carries what botocore's resolver added to it in place.)"""
    ours, botocores = models.data_loader.__wrapped__(None), botocore.loaders.Loader()
    for service, kind in [
        ("dynamodb", "service-2"),
        ("dynamodbstreams", "service-2"),
        ("sts", "endpoint-rule-set-1"),
        ("sqs", "paginators-1"),
        ("kinesis", "waiters-2"),
    ]:
        assert ours.load_service_model(service, kind) == botocores.load_service_model(service, kind)
    assert ours.load_data("endpoints") == botocores.load_data("endpoints")
    listed = botocores.list_available_services("service-2")
    known = ours.list_available_services("service-2")
    assert list(known) == listed
    assert all(service in known for service in ("dynamodb", "s3", "sts", listed[-1]))
    for unknown in ("dynamo", "", ".", "..", "dynamodb/2012-08-10"):
        assert unknown not in known
    with pytest.raises(botocore.exceptions.UnknownServiceError, match="dynamodb, "):
        ours.load_service_model("dynamo", "service-2")


def test_a_client_sends_the_replicators_user_agent_then_botocores() -> None:
    """The header CloudTrail records: the replicator's name and Python's, then botocore's
    name and version (as when clients came from boto3's sessions); the direct writer path
    sends the same."""
    import botocore

    from replicator.writers.wire import WireWriteClient

    client = clients.dynamodb(clients.Place("us-east-1", "http://127.0.0.1:9"), sdk_retries=False)
    sent: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append(request.headers["User-Agent"].decode())
        raise _Captured

    client.meta.events.register("before-send.dynamodb", capture)
    with pytest.raises(_Captured):
        client.list_tables()
    expected = f"{clients.USER_AGENT} Botocore/{botocore.__version__}"
    assert sent == [expected]
    direct = WireWriteClient(client, max_connections=1, connect_timeout=1.0, read_timeout=1.0)
    assert direct._user_agent == expected


class _Captured(Exception):
    """Stops a request once its headers were seen."""
