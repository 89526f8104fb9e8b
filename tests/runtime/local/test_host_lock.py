"""The local runtime's host lock: one worker of a task per host and lease table. Two
runtimes of one task against the same endpoint refuse each other; against two endpoints
(two demos, each with its own private endpoint and lease table), or in two regions of
one endpoint (an active-active pair on one emulator), they do not."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from replicator.config import load_job
from replicator.runtime.local.runtime import LeaseHeld, LocalRuntime


def _runtime(tmp_path: Path, endpoint: str, name: str, region: str = "us-east-1") -> LocalRuntime:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "runtime: local\n"
        "task_name: same-task\n"
        f"source: {{region: {region}, table: orders, endpoint_url: '{endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: orders, endpoint_url: '{endpoint}'}}]\n"
        "metrics: {enabled: false}\n"
    )
    return LocalRuntime(load_job(path), worker_id=name)


@pytest.fixture(autouse=True)
def _own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(lock_dir))


def test_a_second_runtime_of_the_same_task_and_endpoint_is_refused(tmp_path: Path) -> None:
    first = _runtime(tmp_path, "http://127.0.0.1:6261", "a")
    second = _runtime(tmp_path, "http://127.0.0.1:6261", "b")
    first._hold_host_lock()
    try:
        with pytest.raises(LeaseHeld, match="another local runtime for task same-task"):
            second._hold_host_lock()
    finally:
        assert first._lock_file is not None
        first._lock_file.close()
    second._hold_host_lock()  # the first one let go
    assert second._lock_file is not None
    second._lock_file.close()


def test_runtimes_of_one_task_on_two_endpoints_do_not_block_each_other(
    tmp_path: Path,
) -> None:
    first = _runtime(tmp_path, "http://127.0.0.1:6261", "a")
    second = _runtime(tmp_path, "http://127.0.0.1:6262", "b")
    first._hold_host_lock()
    second._hold_host_lock()
    for runtime in (first, second):
        assert runtime._lock_file is not None
        runtime._lock_file.close()


def test_runtimes_of_one_task_in_two_regions_of_one_endpoint_do_not_block_each_other(
    tmp_path: Path,
) -> None:
    """Each region has its own lease table, even behind one local endpoint."""
    first = _runtime(tmp_path, "http://127.0.0.1:6261", "a", "us-east-1")
    second = _runtime(tmp_path, "http://127.0.0.1:6261", "b", "ap-south-1")
    first._hold_host_lock()
    second._hold_host_lock()
    for runtime in (first, second):
        assert runtime._lock_file is not None
        runtime._lock_file.close()
