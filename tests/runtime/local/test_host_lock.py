"""The local runtime's host lock: one worker of a task per host and lease table. Two
runtimes of one task against the same endpoint refuse each other; against two endpoints
(two demos, each with its own private endpoint and lease table), or in two regions of
one endpoint (an active-active pair on one emulator), they do not. The refusal names the
holder's pid, and the lock's file is bounded in length and removed when its holder lets
go."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from replicator.config import load_job
from replicator.config.model import MAX_TASK_NAME
from replicator.runtime.local import hostlock
from replicator.runtime.local.runtime import LeaseHeld, LocalRuntime


def _runtime(
    tmp_path: Path,
    endpoint: str,
    name: str,
    region: str = "us-east-1",
    task: str = "same-task",
) -> LocalRuntime:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "runtime: local\n"
        f"task_name: {task}\n"
        f"source: {{region: {region}, table: orders, endpoint_url: '{endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: orders, endpoint_url: '{endpoint}'}}]\n"
        "metrics: {enabled: false}\n"
    )
    return LocalRuntime(load_job(path), worker_id=name)


@pytest.fixture(autouse=True)
def _own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(_locks(tmp_path)))


def _locks(tmp_path: Path) -> Path:
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(exist_ok=True)
    return lock_dir


def test_a_second_runtime_of_the_same_task_and_endpoint_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    first = _runtime(tmp_path, "http://127.0.0.1:6261", "a")
    second = _runtime(tmp_path, "http://127.0.0.1:6261", "b")
    held = first._hold_host_lock()
    try:
        with pytest.raises(LeaseHeld) as refused:
            second._hold_host_lock()
        # As docs/runbook.md's exit-5 row says it: the operator stops the pid named.
        assert (
            f"task same-task on http://127.0.0.1:6261 is being run by process {os.getpid()} "
            "on this host"
        ) in str(refused.value)
    finally:
        held.release()
    second._hold_host_lock().release()  # the first one let go


@pytest.mark.parametrize(
    ("other_endpoint", "other_region"),
    [("http://127.0.0.1:6262", "us-east-1"), ("http://127.0.0.1:6261", "ap-south-1")],
    ids=["two-endpoints", "two-regions-of-one-endpoint"],
)
def test_runtimes_of_one_task_on_two_lease_tables_do_not_block_each_other(
    tmp_path: Path, other_endpoint: str, other_region: str
) -> None:
    """Each endpoint, and each region even behind one local endpoint, has its own lease
    table."""
    first = _runtime(tmp_path, "http://127.0.0.1:6261", "a", "us-east-1")
    second = _runtime(tmp_path, other_endpoint, "b", other_region)
    locks = [first._hold_host_lock(), second._hold_host_lock()]
    for lock in locks:
        lock.release()


def test_the_longest_task_names_validate_accepts_have_locks_of_their_own(
    tmp_path: Path,
) -> None:
    """A task name of MAX_TASK_NAME characters (valid) made a lock file name longer than
    255 bytes: run ended in a traceback. Two such names alike in all but their last
    character are two tasks, and do not block each other."""
    names = ["t" * MAX_TASK_NAME, "t" * (MAX_TASK_NAME - 1) + "u"]
    runtimes = [
        _runtime(tmp_path, "http://127.0.0.1:6261", f"w{i}", task=n) for i, n in enumerate(names)
    ]
    locks = [runtime._hold_host_lock() for runtime in runtimes]
    try:
        with pytest.raises(LeaseHeld, match=f"is being run by process {os.getpid()}"):
            _runtime(tmp_path, "http://127.0.0.1:6261", "again", task=names[0])._hold_host_lock()
    finally:
        for lock in locks:
            lock.release()


def test_the_lock_file_is_removed_when_its_holder_lets_go(tmp_path: Path) -> None:
    """Every demo has a lock of its own (its endpoint's port is picked at random): kept,
    they piled up in the temporary directory."""
    lock = _runtime(tmp_path, "http://127.0.0.1:6261", "a")._hold_host_lock()
    assert [path.read_text() for path in _locks(tmp_path).iterdir()] == [f"{os.getpid()}\n"]
    lock.release()
    assert list(_locks(tmp_path).iterdir()) == []


def test_a_start_that_opened_the_file_its_holder_then_removed_locks_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder lets go (removes the file) between another start's open and its lock:
    that start must not hold the removed file, which a third start could not see."""
    path = _locks(tmp_path) / "replicator-t.lock"
    holder = hostlock.HostLock(path)
    holder.hold("task t")
    real_flock = hostlock.fcntl.flock
    let_go: list[int] = []

    def flock(fd: int, operation: int) -> None:
        if not let_go:
            let_go.append(fd)
            holder.release()
        real_flock(fd, operation)

    monkeypatch.setattr(hostlock.fcntl, "flock", flock)
    starting = hostlock.HostLock(path)
    starting.hold("task t")
    monkeypatch.setattr(hostlock.fcntl, "flock", real_flock)
    try:
        with pytest.raises(LeaseHeld, match=f"process {os.getpid()}"):
            hostlock.HostLock(path).hold("task t")
    finally:
        starting.release()
    assert not path.exists()
