"""Clients share the parsed service models of one process; sessions stay separate."""

from __future__ import annotations

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
    # Each client still has a session (and credentials) of its own.
    assert made[0]._request_signer is not made[2]._request_signer


def test_the_shared_loader_honours_aws_data_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    clients._data_loader.cache_clear()
    try:
        assert clients._data_loader().search_paths[0] == str(tmp_path)
    finally:
        clients._data_loader.cache_clear()
