from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.silent import SilentEndpoint


@pytest.fixture
def silent() -> Iterator[SilentEndpoint]:
    """An endpoint that accepts every connection and never answers."""
    with SilentEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def silent_endpoint(silent: SilentEndpoint) -> str:
    """The URL of an endpoint that accepts every connection and never answers."""
    return silent.url
