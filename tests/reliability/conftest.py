"""Fixtures of the reliability scenarios."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.active_active import Mesh
from tests.support.faults.proxy import FaultProxy


@pytest.fixture
def proxies(moto_endpoint: str) -> Iterator[list[FaultProxy]]:
    started = [FaultProxy(moto_endpoint, seed=index).start() for index in range(2)]
    yield started
    for proxy in started:
        proxy.stop()


@pytest.fixture
def mesh_of(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[..., Mesh]]:
    """Makes a Mesh of the regions given (with Mesh's options: ``tombstones=False`` for
    one without them, another ``loop_prevention``)."""
    made: list[Mesh] = []

    def make(regions: tuple[str, ...], **options: Any) -> Mesh:
        mesh = Mesh(moto_endpoint, unique("aa"), regions, tmp_path, **options)
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        assert set(mesh.stop().values()) <= {0}
