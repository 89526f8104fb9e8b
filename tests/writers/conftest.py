"""Fixtures of the writer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.faults.proxy import FaultProxy


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test's moto server (the writes' endpoint)."""
    running = FaultProxy(moto_endpoint).start()
    yield running
    running.stop()
