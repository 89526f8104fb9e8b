"""Fixtures of the real-KCL tests: each test file gets its own moto server (over HTTP/2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.h2moto import H2Moto
from tests.support.kcl_jars import ensure_jars


@pytest.fixture(scope="module")
def kcl_jars() -> Path:
    return ensure_jars()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with H2Moto(tmp_path_factory.mktemp("h2moto")) as server:
        yield server.url
