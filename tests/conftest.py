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

# Files with a test of these marks hold the longest scenarios (minutes each: a KCL
# daemon's lease takeover, concurrent active-active writers). They run first, so that
# the short tests fill the end of the run on every test process (make test gives each
# process whole files, in the order collected) instead of one process running a long
# scenario alone at the end.
_LONG_MARKS = ("kcl", "reliability")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank: dict[object, int] = {}  # file -> index of its first mark in _LONG_MARKS
    for item in items:
        for index, mark in enumerate(_LONG_MARKS):
            if item.get_closest_marker(mark) is not None:
                rank[item.path] = min(rank.get(item.path, index), index)
    items.sort(key=lambda item: rank.get(item.path, len(_LONG_MARKS)))  # stable sort


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
