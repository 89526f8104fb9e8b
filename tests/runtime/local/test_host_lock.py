"""The local runtime's host lock: one worker of a task per host and lease table. Two
runtimes of one task against the same endpoint refuse each other; against two endpoints
(two demos, each with its own private endpoint and lease table), or in two regions of
one endpoint (an active-active pair on one emulator), they do not. The refusal names the
holder's pid, and the lock's file is bounded in length and removed when its holder lets
go. A lock path this user cannot take (a directory there, another user's file) is one
line naming it: exit 5 when a run holds it, exit 3 otherwise."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from replicator.config.fields import MAX_TASK_NAME
from replicator.config.loader import load_job
from replicator.demo import tables
from replicator.exceptions import EnvironmentProblem, OperatorError
from replicator.runtime import hostlock, preflight
from replicator.runtime.kcl import launcher
from replicator.runtime.local.runtime import LeaseHeld, LocalRuntime
from tests.support.aws import client


def _runtime(
    tmp_path: Path,
    endpoint: str,
    name: str,
    region: str = "us-east-1",
    task: str = "same-task",
    table: str = "orders",
    metrics: str = "{enabled: false}",
) -> LocalRuntime:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "runtime: local\n"
        f"task_name: {task}\n"
        f"source: {{region: {region}, table: {table}, endpoint_url: '{endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: {table}, endpoint_url: '{endpoint}'}}]\n"
        f"metrics: {metrics}\n"
    )
    return LocalRuntime(load_job(path), worker_id=name)


@pytest.fixture(autouse=True)
def _own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(_locks(tmp_path)))
    monkeypatch.chdir(tmp_path)  # the jobs' relative dead-letter files land here


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
    "spelling",
    ["HTTP://127.0.0.1:6261", "http://127.0.0.1:6261/"],
)
def test_one_endpoint_spelt_another_way_is_the_same_lease_table(
    tmp_path: Path, spelling: str
) -> None:
    """The lease table is where the endpoint reaches, however the job file spells it."""
    first = _runtime(tmp_path, "http://127.0.0.1:6261", "a")
    second = _runtime(tmp_path, spelling, "b")
    held = first._hold_host_lock()
    try:
        with pytest.raises(LeaseHeld):
            second._hold_host_lock()
    finally:
        held.release()


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


def _kcl_task_lock(tmp_path: Path, endpoint: str, name: str) -> hostlock.HostLock:
    """The task lock a KCL run of same-task holds (shared)."""
    path = tmp_path / f"{name}-kcl.yaml"
    path.write_text(
        "runtime: kcl\n"
        "task_name: same-task\n"
        f"source: {{region: us-east-1, table: orders, endpoint_url: '{endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: orders, endpoint_url: '{endpoint}'}}]\n"
        f"kcl: {{worker_id: {name}}}\n"
    )
    lock, _ = launcher._task_lock(load_job(path))
    return lock


def test_kcl_runs_of_a_task_share_its_lock_and_a_local_runtime_and_they_refuse_each_other(
    tmp_path: Path,
) -> None:
    """A KCL run started while a local runtime of the task ran on the host was not
    refused: under one worker id (the host name) the two took the lease from each other
    for a minute and a half, and an item ended stale behind a checkpoint at the stream's
    end. KCL workers of other ids still run side by side."""
    endpoint = "http://127.0.0.1:6261"
    kcl_runs = [_kcl_task_lock(tmp_path, endpoint, name) for name in ("k1", "k2")]
    for lock in kcl_runs:
        lock.hold("task same-task")
    local = _runtime(tmp_path, endpoint, "a")
    with pytest.raises(LeaseHeld, match="is being run by another process on this host"):
        local._hold_host_lock()
    kcl_runs[0].release()
    assert len(list(_locks(tmp_path).iterdir())) == 1  # the other KCL run keeps the file
    with pytest.raises(LeaseHeld):
        local._hold_host_lock()
    kcl_runs[1].release()
    assert list(_locks(tmp_path).iterdir()) == []  # the last one removes it
    held = local._hold_host_lock()
    try:
        with pytest.raises(LeaseHeld) as refused:
            _kcl_task_lock(tmp_path, endpoint, "k3").hold(f"task same-task on {endpoint}")
        assert (
            f"task same-task on {endpoint} is being run by process {os.getpid()} on this host"
        ) in str(refused.value)
        assert "a local runtime of the task runs here" in str(refused.value)
    finally:
        held.release()


def test_a_kcl_run_clears_the_pid_a_killed_local_runtime_left(tmp_path: Path) -> None:
    """A local runtime killed (kill -9) leaves its pid in the file a KCL run then locks: a
    refused local start named that dead pid (perhaps another process's by now) to stop."""
    endpoint = "http://127.0.0.1:6261"
    local = _runtime(tmp_path, endpoint, "a")
    held = local._hold_host_lock()
    (path,) = _locks(tmp_path).iterdir()
    assert held._fd is not None
    os.close(held._fd)  # as a process killed leaves it: the file with its pid, no holder
    held._fd = None
    kcl_run = _kcl_task_lock(tmp_path, endpoint, "k1")
    kcl_run.hold("task same-task")
    try:
        assert path.read_text() == ""
        with pytest.raises(LeaseHeld, match="is being run by another process on this host"):
            _runtime(tmp_path, endpoint, "b")._hold_host_lock()
    finally:
        kcl_run.release()


def test_the_lock_file_is_removed_when_its_holder_lets_go(tmp_path: Path) -> None:
    """Every demo has a lock of its own (its endpoint's port is picked at random): kept,
    they piled up in the temporary directory."""
    lock = _runtime(tmp_path, "http://127.0.0.1:6261", "a")._hold_host_lock()
    assert [path.read_text() for path in _locks(tmp_path).iterdir()] == [f"{os.getpid()}\n"]
    lock.release()
    assert list(_locks(tmp_path).iterdir()) == []


def test_the_preflight_takes_the_lock_before_it_creates_and_every_start_that_ends_lets_it_go(
    tmp_path: Path, moto_endpoint: str, unique: Callable[[str], str]
) -> None:
    """The preflight creates directories and tables (tombstones, the conflict log): it
    takes the lock first, so that a start the lock refuses creates nothing, but only
    after the checks that create nothing, which tell a job what is wrong with it whatever
    else runs. A preflight that fails or is stopped lets the lock go, and so does a run
    stopped after its preflight (``replicator run`` makes the preflight, then runs)."""
    table = unique("locked")
    runtime = _runtime(tmp_path, moto_endpoint, "a", task=f"{table}-task", table=table)
    other = _runtime(tmp_path, moto_endpoint, "b", task=f"{table}-task", table=table)
    held = runtime._hold_host_lock()
    try:
        with pytest.raises(EnvironmentProblem, match=f"source table {table}: not found"):
            other.run_preflight()
    finally:
        held.release()
    tables.create(client("dynamodb", "us-east-1", moto_endpoint), table, stream=True)
    tables.create(client("dynamodb", "eu-west-1", moto_endpoint), table, stream=False)
    asked: list[bool] = []

    def stopped() -> bool:
        asked.append(any(_locks(tmp_path).iterdir()))
        return asked[-1]

    with pytest.raises(preflight.Stopped):
        runtime.run_preflight(stopped)
    assert asked[-1] and not any(asked[:-1])
    assert list(_locks(tmp_path).iterdir()) == []
    runtime.run_preflight()
    with pytest.raises(LeaseHeld, match=f"is being run by process {os.getpid()}"):
        other.run_preflight()
    runtime.stop()
    assert runtime.run() == 0
    assert list(_locks(tmp_path).iterdir()) == []


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_metrics_port_is_bound_with_the_lock_held_and_let_go_with_it(
    tmp_path: Path, moto_endpoint: str, unique: Callable[[str], str]
) -> None:
    """The preflight binds the metrics port right after taking the lock, before it
    creates anything: a port in use refuses the start and lets the lock go; a preflight
    stopped after the bind lets the port go; a preflight made keeps the port bound (no
    other process can take it before the run serves it) until the run ends."""
    table = unique("ported")
    tables.create(client("dynamodb", "us-east-1", moto_endpoint), table, stream=True)
    tables.create(client("dynamodb", "eu-west-1", moto_endpoint), table, stream=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = _runtime(
            tmp_path,
            moto_endpoint,
            "a",
            task=f"{table}-task",
            table=table,
            metrics=f"{{host: 127.0.0.1, port: {port}}}",
        )
        with pytest.raises(EnvironmentProblem, match=f"cannot listen on 127.0.0.1:{port} "):
            runtime.run_preflight()
        assert list(_locks(tmp_path).iterdir()) == []
    bound: list[bool] = []

    def stopped() -> bool:
        bound.append(not _bindable(port))
        return bound[-1]

    with pytest.raises(preflight.Stopped):
        runtime.run_preflight(stopped)
    assert bound[-1] and not any(bound[:-1])
    assert _bindable(port)
    assert list(_locks(tmp_path).iterdir()) == []
    runtime.run_preflight()
    assert not _bindable(port)
    runtime.stop()
    assert runtime.run() == 0
    assert _bindable(port)
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


def _lock_file_of(runtime: LocalRuntime, tmp_path: Path) -> Path:
    """Where ``runtime`` keeps its lock: taken once, and let go."""
    runtime._hold_host_lock().release()
    lock = runtime._hold_host_lock()
    (path,) = _locks(tmp_path).iterdir()
    lock.release()
    return path


def test_a_directory_at_the_lock_path_is_named_in_one_line_exit_3(tmp_path: Path) -> None:
    """os.open's IsADirectoryError ended run in a traceback (exit 1)."""
    runtime = _runtime(tmp_path, "http://127.0.0.1:6261", "a")
    path = _lock_file_of(runtime, tmp_path)
    path.mkdir()
    with pytest.raises(EnvironmentProblem) as refused:
        runtime._hold_host_lock()
    assert refused.value.exit_code == 3
    assert str(refused.value) == (
        f"task same-task on http://127.0.0.1:6261: cannot take the host lock {path}: it is "
        "a directory, not the lock file a run leaves: remove it"
    )
    assert path.is_dir()


def test_a_lock_file_this_user_cannot_open_is_named_in_one_line(
    tmp_path: Path, shared_tmp: Path
) -> None:
    """A file at the lock path this user may not open for writing ended the start in a
    PermissionError traceback. Root opens a file whatever its mode: as root, the case is
    another user's file (what root's own run leaves, met by a run of another user)."""
    if os.geteuid() == 0:
        _another_users_lock_file_is_told_held_by_a_run_or_left_by_one(shared_tmp)
    else:
        _a_lock_file_this_user_cannot_open_at_all_is_exit_3(tmp_path)


def _a_lock_file_this_user_cannot_open_at_all_is_exit_3(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, "http://127.0.0.1:6261", "a")
    path = _lock_file_of(runtime, tmp_path)
    path.write_text("4242\n")
    path.chmod(0)
    with pytest.raises(EnvironmentProblem) as refused:
        runtime._hold_host_lock()
    assert refused.value.exit_code == 3
    assert f"cannot take the host lock {path}: this user cannot open it (Permission " in str(
        refused.value
    )
    assert "whether a run holds it cannot be told: if none runs, remove it" in str(refused.value)


NOBODY = 65534


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory as /tmp is (mode 1777) that another user can reach
    (pytest's own are private to this user)."""
    directory = Path(tempfile.mkdtemp(prefix="replicator-test-", dir="/tmp"))
    directory.chmod(0o1777)
    yield directory
    shutil.rmtree(directory)


def _start_as_nobody(path: Path) -> tuple[str, int, str]:
    """What a start of the task whose lock is at ``path`` raises, made by another user: a
    forked child that drops root (the interpreter's own directory may be closed to
    other users, so no new one is started)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        answer: list[object] = ["held", 0, ""]
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            hostlock.HostLock(path).hold("task t")
        except OperatorError as error:
            answer = [type(error).__name__, error.exit_code, str(error)]
        except BaseException as error:  # reported to the test
            answer = ["unexpected", 1, repr(error)]
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answered:
        text = answered.read()
    os.waitpid(pid, 0)
    kind, code, said = json.loads(text)
    return kind, code, said


def _another_users_lock_file_is_told_held_by_a_run_or_left_by_one(shared_tmp: Path) -> None:
    """The open for writing fails with EACCES (in a sticky directory, as /tmp): that
    ended the start in a PermissionError traceback. A read-only open tells whether a run
    holds it, as flock works on it: held is refused as any holder's lock is (exit 5,
    naming the pid); a file no run holds is not this user's to take (exit 3)."""
    path = shared_tmp / "replicator-t.lock"
    holder = hostlock.HostLock(path)
    holder.hold("task t")  # root's file, mode 644
    try:
        kind, code, said = _start_as_nobody(path)
    finally:
        holder.release()
    assert (kind, code) == ("LeaseHeld", 5), said
    assert f"task t is being run by process {os.getpid()} on this host (lock {path})" in said

    path.write_text("4242\n")  # as a run killed with SIGKILL left it
    kind, code, said = _start_as_nobody(path)
    assert (kind, code) == ("EnvironmentProblem", 3), said
    assert said == (
        f"task t: cannot take the host lock {path}: this user cannot open it to write "
        "(Permission denied) and no process holds it (left by process 4242, owner uid 0): "
        "remove it as its owner or root"
    )
    assert path.read_text() == "4242\n"
