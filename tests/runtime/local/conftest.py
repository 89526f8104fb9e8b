"""Fixtures of the local runtime's end-to-end tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e import Job


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("local"), tmp_path)
