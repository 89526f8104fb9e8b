"""Clients share the parsed service models of one process, and a session per region,
role and AWS environment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from replicator.aws import clients


def test_clients_of_many_sessions_share_one_loader_whose_paths_do_not_grow() -> None:
    made = [
        clients.session_for(region).client("dynamodb", endpoint_url="http://127.0.0.1:9")
        for region in ("us-east-1", "eu-west-1", "us-east-1")
    ]
    assert [client.meta.region_name for client in made] == ["us-east-1", "eu-west-1", "us-east-1"]
    loader = clients._data_loader()
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
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    clients._data_loader.cache_clear()
    try:
        assert clients._data_loader().search_paths[0] == str(tmp_path)
    finally:
        clients._data_loader.cache_clear()
