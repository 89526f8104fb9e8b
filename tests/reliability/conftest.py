"""Fixtures of the reliability scenarios."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.faults.proxy import FaultProxy


@pytest.fixture
def proxies(moto_endpoint: str) -> Iterator[list[FaultProxy]]:
    started = [FaultProxy(moto_endpoint, seed=index).start() for index in range(2)]
    yield started
    for proxy in started:
        proxy.stop()
