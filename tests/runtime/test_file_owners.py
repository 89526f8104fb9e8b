"""One task name, one source: the owners file beside a dead-letter or conflict-log file.

The second direction of an active-active pair copied from the first with its
``task_name`` unchanged has a lease table of its own (in its own region), and on one
host both wrote the same files: each one's ``conflicts`` listed the other's entries and
``--restore`` wrote one into a table it was not about."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from replicator.config.loader import load_job, parse_job
from replicator.config.model import ResolvedJob
from replicator.exceptions import EnvironmentProblem
from replicator.runtime import file_owners, preflight
from tests.runtime.test_preflight import _refused_start, job_file
from tests.support.aws import client, create_table
from tests.support.cli import replicator

TASK = "carts-us-east-1-to-eu-west-1"


def _job(path: Path, endpoint: str, source: str, destination: str, task: str = TASK) -> Path:
    job = job_file(path, endpoint, source, destination)
    text = job.read_text().replace(f"task_name: preflight-{source}", f"task_name: {task}")
    conflicts = f"{path.parent}/conflicts/{{task_name}}.jsonl"
    job.write_text(text + f"conflict_log: {{kind: file, path: '{conflicts}'}}\n")
    return job


@pytest.fixture
def sources(moto_endpoint: str, unique: Any) -> dict[str, str]:
    east = client("dynamodb", "us-east-1", moto_endpoint)
    first, second = unique("first"), unique("second")
    create_table(east, first)
    create_table(east, second)
    destination = unique("dst")
    create_table(client("dynamodb", "eu-west-1", moto_endpoint), destination, stream=None)
    return {"first": first, "second": second, "dst": destination}


def test_a_second_source_under_one_task_name_is_refused_by_run_redrive_and_conflicts(
    moto_endpoint: str, sources: dict[str, str], tmp_path: Path
) -> None:
    first = _job(tmp_path / "first.yaml", moto_endpoint, sources["first"], sources["dst"])
    second = _job(tmp_path / "second.yaml", moto_endpoint, sources["second"], sources["dst"])
    preflight.check(load_job(first))  # run's start: records the first job's source
    letters = tmp_path / "dead" / f"{TASK}.jsonl"
    owners = json.loads(Path(f"{letters}.owners").read_text())
    assert owners == {TASK: f"us-east-1/{sources['first']}"}

    _, line = _refused_start(second)
    assert line.startswith(
        f"replicator: dead_letter.path: task '{TASK}' is recorded beside {letters}"
    )
    assert f"for the source us-east-1/{sources['first']}" in line
    assert f"this job reads us-east-1/{sources['second']}" in line
    assert "Give this job a task_name of its own" in line
    assert "; conflict_log.path: task" in line  # every file to act on, in one message
    letters.write_text("{}\n")  # a letter of the first job's: redrive reads no further
    for command in (("redrive",), ("conflicts",), ("backfill",)):
        result = replicator(*command, "--config", str(second))
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert f"task '{TASK}' is recorded beside" in result.stderr, command
        assert "Traceback" not in result.stderr
    # Nothing of the second job was recorded, and the first still starts.
    assert json.loads(Path(f"{letters}.owners").read_text()) == owners
    preflight.check(load_job(first))


def test_owners_are_recorded_per_task_and_a_source_changed_on_purpose_is_let_through(
    moto_endpoint: str, sources: dict[str, str], tmp_path: Path
) -> None:
    first = load_job(_job(tmp_path / "a.yaml", moto_endpoint, sources["first"], sources["dst"]))
    other_task = load_job(
        _job(tmp_path / "b.yaml", moto_endpoint, sources["second"], sources["dst"], "other-task")
    )
    moved = load_job(_job(tmp_path / "c.yaml", moto_endpoint, sources["second"], sources["dst"]))
    for resolved in (first, other_task):
        (tmp_path / "dead").mkdir(exist_ok=True)
        (tmp_path / "conflicts").mkdir(exist_ok=True)
        file_owners.claim(resolved)
        file_owners.claim(resolved)  # again: the same source, nothing changes
    conflicts = tmp_path / "conflicts" / f"{TASK}.jsonl.owners"
    assert json.loads(conflicts.read_text()) == {TASK: f"us-east-1/{sources['first']}"}
    with pytest.raises(EnvironmentProblem, match=r"^dead_letter\.path: .* remove the entry"):
        file_owners.claim(moved)
    with pytest.raises(EnvironmentProblem, match=r"^conflict_log\.path: "):
        file_owners.check(moved, ("conflict_log.path",))
    file_owners.check(moved, ())  # a command that reads neither file
    # The entry removed, as the message says: the job's new source is recorded.
    for owners_file in (conflicts, tmp_path / "dead" / f"{TASK}.jsonl.owners"):
        owners_file.write_text("{}\n")
    file_owners.claim(moved)
    assert json.loads(conflicts.read_text()) == {TASK: f"us-east-1/{sources['second']}"}


def test_a_command_before_any_run_creates_nothing_and_a_damaged_owners_file_is_named(
    moto_endpoint: str, sources: dict[str, str], tmp_path: Path
) -> None:
    resolved = load_job(_job(tmp_path / "a.yaml", moto_endpoint, sources["first"], sources["dst"]))
    file_owners.check(resolved, ("dead_letter.path", "conflict_log.path"))
    assert not (tmp_path / "dead").exists()
    (tmp_path / "dead").mkdir()
    damaged = tmp_path / "dead" / f"{TASK}.jsonl.owners"
    damaged.write_text("[1, 2]\n")
    with pytest.raises(EnvironmentProblem) as raised:
        file_owners.claim(resolved)
    assert str(raised.value).startswith(f"dead_letter.path: {damaged}, which records the source")
    assert damaged.read_text() == "[1, 2]\n"  # left for a person to look at


def test_tasks_sharing_one_file_each_keep_their_record(tmp_path: Path) -> None:
    """A path without {task_name}: each task's source is recorded beside the others'."""

    def job(task: str, table: str, stream: str = "") -> ResolvedJob:
        kcl = "runtime: kcl\nconflict: {policy: version, version_attribute: v}\n" if stream else ""
        return parse_job(
            kcl + f"task_name: {task}\n"
            f"source: {{region: us-east-1, table: {table}{stream}}}\n"
            "destinations: [{region: eu-west-1, table: orders}]\n"
            f"dead_letter: {{kind: file, path: '{tmp_path}/shared.jsonl'}}\n",
            tmp_path / f"{task}.yaml",
        )

    for task, table in (("aaa", "orders"), ("bbb", "payments"), ("ccc", "carts")):
        file_owners.claim(job(task, table))
    owners = tmp_path / "shared.jsonl.owners"
    assert json.loads(owners.read_text()) == {
        "aaa": "us-east-1/orders",
        "bbb": "us-east-1/payments",
        "ccc": "us-east-1/carts",
    }
    assert owners.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not executable
    for task, table in (("aaa", "orders"), ("bbb", "payments"), ("ccc", "carts")):
        file_owners.claim(job(task, table))  # each still its own
    with pytest.raises(EnvironmentProblem, match=r"task 'bbb' is recorded .* us-east-1/payments"):
        file_owners.claim(job("bbb", "orders"))
    # A Kinesis stream is one source however the job file spells it.
    by_name = ", stream: {kind: kinesis, name: inventory-changes}"
    by_arn = (
        ", stream: {kind: kinesis, arn: "
        "'arn:aws:kinesis:us-east-1:123456789012:stream/inventory-changes'}"
    )
    file_owners.claim(job("kkk", "inventory", by_name))
    file_owners.claim(job("kkk", "inventory", by_arn))
    assert (
        json.loads(owners.read_text())["kkk"] == "us-east-1/inventory via kinesis inventory-changes"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_owners_path_that_is_no_file_is_exit_3_and_one_that_cannot_be_made_a_warning(
    tmp_path: Path,
) -> None:
    text = (
        "task_name: ttt\nsource: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"dead_letter: {{kind: file, path: '{tmp_path}/d/letters.jsonl'}}\n"
    )
    resolved = parse_job(text, tmp_path / "job.yaml")
    (tmp_path / "d").mkdir()
    owners = tmp_path / "d" / "letters.jsonl.owners"
    owners.mkdir()
    for call in (
        lambda: file_owners.check(resolved, ("dead_letter.path",)),
        lambda: file_owners.claim(resolved),
    ):
        with pytest.raises(EnvironmentProblem, match="cannot be read: not a regular file"):
            call()
    owners.rmdir()
    os.mkfifo(owners)  # a read of it would block for ever
    with pytest.raises(EnvironmentProblem, match="not a regular file"):
        file_owners.check(resolved, ("dead_letter.path",))
    owners.unlink()

    # Nothing can be created there (a file system mounted read-only): the start goes on.
    real_open = os.open

    def refused(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    with structlog.testing.capture_logs() as logged, pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_owners.os, "open", refused)
        file_owners.claim(resolved)
    (warning,) = [line for line in logged if line["log_level"] == "warning"]
    assert warning["owners_file"] == str(owners)
    assert "a second job given this task_name would not be refused" in warning["event"]
    # Another user's owners file this user may not read: a warning too, not exit 3.
    owners.write_text('{"ttt": "us-east-1/orders"}\n')

    def unreadable(path: Any, flags: int, *args: Any) -> int:
        if str(path) == str(owners):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    with structlog.testing.capture_logs() as logged, pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_owners.os, "open", unreadable)
        file_owners.check(resolved, ("dead_letter.path",))
        file_owners.claim(resolved)
    assert [line["owners_file"] for line in logged if line["log_level"] == "warning"] == [
        str(owners)
    ] * 2
    assert owners.read_text() == '{"ttt": "us-east-1/orders"}\n'
