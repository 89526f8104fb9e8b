"""A three-region active-active mesh under concurrent out-of-order writes converges: every
region ends with each key's highest-ranked operation. Its own file, so that it runs
beside the pair scenarios (test_active_active.py) rather than after them. See
tests/support/active_active.py and docs/active-active.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.active_active import (
    THREE_REGION_WRITES,
    Mesh,
    check_converged,
    run_workload,
)

pytestmark = pytest.mark.reliability


def test_a_three_region_mesh_under_concurrent_out_of_order_writes_converges(
    mesh_of: Callable[[tuple[str, ...]], Mesh],
) -> None:
    mesh = mesh_of(("us-east-1", "eu-west-1", "ap-southeast-2"))
    mesh.start()
    started = time.monotonic()
    ops = run_workload(mesh, writes=THREE_REGION_WRITES)
    assert ops.count["delete"] > 30 and ops.count["update"] > 100
    check_converged(mesh, ops, started)
    assert mesh.total("replicator_writes_total", outcome="conflict_lost") > 0
