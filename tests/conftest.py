"""Shared fixtures: a moto server over HTTP on 127.0.0.1, tables, fresh metrics."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry

from replicator.metrics import Metrics

# Tests never reach AWS: dummy credentials, no instance metadata, explicit endpoints.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

_names = itertools.count(1)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    from replicator.demo.endpoint import serialize_table_writes

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    serialize_table_writes()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    def name(prefix: str) -> str:
        return f"{prefix}-{os.getpid()}-{next(_names)}"

    return name


def client(service: str, region: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=region, endpoint_url=endpoint)


def create_table(
    ddb: Any,
    name: str,
    *,
    range_key: str | None = None,
    hash_type: str = "S",
    stream: str | None = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": hash_type}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": range_key, "AttributeType": "N"})
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": keys,
        "AttributeDefinitions": attributes,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream}
    table: dict[str, Any] = ddb.create_table(**kwargs)["TableDescription"]
    return table


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The current value of a metric sample in ``metrics``' registry (0 when absent)."""
    assert metrics.registry is not None
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)
