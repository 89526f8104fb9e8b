"""Fixtures every test can use: a moto server over HTTP on 127.0.0.1, unique names, fresh
metrics. Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

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


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())
