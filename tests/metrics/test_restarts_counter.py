"""The runtime's restarts counter keeps the restarts of shards that ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replicator.runtime.local.runtime import LocalRuntime, _RuntimeCollector
from replicator.runtime.local.shard_progress import ShardProgress
from tests.runtime.local.test_host_lock import _runtime


class _Worker:
    def __init__(self, shard_id: str, restarts: int) -> None:
        self.progress = ShardProgress(shard_id, checkpoint=None)
        self.progress.restarts = restarts

    def is_alive(self) -> bool:
        return False


def _restarts_total(runtime: LocalRuntime) -> float:
    for family in _RuntimeCollector(runtime).collect():
        if family.name == "replicator_processor_restarts":
            return float(family.samples[0].value)
    raise AssertionError("no replicator_processor_restarts family")


def test_a_shard_that_ends_takes_none_of_its_restarts_off_the_counter(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, "http://127.0.0.1:9", "host-a", metrics="{enabled: false}")
    workers: dict[str, Any] = {"shard-1": _Worker("shard-1", 3), "shard-2": _Worker("shard-2", 2)}
    runtime.workers.update(workers)
    assert _restarts_total(runtime) == 5
    runtime._retire("shard-1")  # its shard ended: the runtime forgets the worker
    assert "shard-1" not in runtime.workers
    assert _restarts_total(runtime) == 5
    runtime._retire("shard-2")
    assert _restarts_total(runtime) == 5
