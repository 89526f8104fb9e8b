"""One conflict log shared by two jobs that read the same source stream and give their
destinations the same name: each job keeps, lists and restores its own entries, in
every kind of log (a file, a DynamoDB table, an SQS queue; at a moto server over HTTP),
and entries recorded before entry ids named their task still list and restore."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from replicator.cli import cli
from replicator.config.loader import load_job
from replicator.conflictlog.entry import ConflictEntry, LostConflict, entry_id
from replicator.conflictlog.targets import conflict_log_target, prepare
from replicator.items import Item
from tests.conflictlog.test_conflict_log import conflict
from tests.support.aws import client, create_table

TASKS = ("audit-num", "audit-num2")
ITEMS = 6


@dataclass
class SharedJob:
    task: str
    table: str
    config: Path


def invoke(job: SharedJob, *args: str) -> Result:
    return CliRunner().invoke(cli, ["conflicts", "-c", str(job.config), *args])


def listed(job: SharedJob, *args: str) -> dict[str, Any]:
    result = invoke(job, "--format", "json", "--limit", "0", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def lost_conflicts() -> list[LostConflict]:
    """Six changes of one shard, each older than the item its destination holds."""
    return [conflict(seq, pk=f"order-{seq}") for seq in range(1, ITEMS + 1)]


def shared_log(kind: str, moto_endpoint: str, unique: Any, tmp_path: Path) -> str:
    """The ``conflict_log`` section both jobs have: one file, table or queue."""
    if kind == "file":
        return f"{{kind: file, path: '{tmp_path / 'shared-conflicts.jsonl'}'}}"
    if kind == "dynamodb":
        return f"{{kind: dynamodb, table: {unique('shared-conflicts')}}}"
    sqs = client("sqs", "us-east-1", moto_endpoint)
    url = sqs.create_queue(QueueName=unique("shared-conflicts"))["QueueUrl"]
    return f"{{kind: sqs, queue_url: '{url}', endpoint_url: '{moto_endpoint}'}}"


def two_jobs(
    ddb: Any, moto_endpoint: str, unique: Any, tmp_path: Path, conflict_log: str
) -> list[SharedJob]:
    """Jobs audit-num and audit-num2: the same source, a destination named ``dr`` each
    (nums-rep, nums-rep2) holding the items that won, and one conflict log."""
    jobs = []
    for task, stem in zip(TASKS, ("nums-rep", "nums-rep2"), strict=True):
        table = unique(stem)
        create_table(ddb, table, range_key="sk", stream=None)
        for lost in lost_conflicts():
            assert lost.existing is not None
            ddb.put_item(TableName=table, Item=lost.existing)
        config = tmp_path / f"{task}.yaml"
        config.write_text(
            f"task_name: {task}\n"
            f"source: {{region: us-east-1, table: nums, endpoint_url: '{moto_endpoint}'}}\n"
            "destinations:\n"
            f"  - {{name: dr, region: eu-west-1, table: {table}, "
            f"endpoint_url: '{moto_endpoint}'}}\n"
            "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
            f"conflict_log: {conflict_log}\n"
        )
        prepare(load_job(config))
        jobs.append(SharedJob(task, table, config))
    return jobs


def lost_at(job: SharedJob, lost: LostConflict) -> LostConflict:
    """``lost`` as the job's writer for its destination ``dr`` reports it."""
    return replace(lost, task_name=job.task, destination="dr", table=job.table)


def record(job: SharedJob, lost: LostConflict) -> ConflictEntry:
    """What the job's recorder stores when ``lost`` loses at its destination."""
    entry = lost_at(job, lost).entry()
    conflict_log_target(load_job(job.config)).put(entry)
    return entry


def held(ddb: Any, job: SharedJob, key: Item) -> Any:
    return ddb.get_item(TableName=job.table, Key=key, ConsistentRead=True)["Item"]


@pytest.mark.parametrize("kind", ["file", "dynamodb", "sqs"])
def test_two_jobs_sharing_a_log_keep_list_and_restore_their_own_entries(
    moto_endpoint: str, unique: Any, tmp_path: Path, kind: str
) -> None:
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    jobs = two_jobs(
        ddb, moto_endpoint, unique, tmp_path, shared_log(kind, moto_endpoint, unique, tmp_path)
    )
    losses = lost_conflicts()
    recorded = {job.task: [record(job, lost) for lost in losses] for job in jobs}

    if kind == "dynamodb":
        table = load_job(jobs[0].config).job.conflict_log.table
        items = client("dynamodb", "us-east-1", moto_endpoint).scan(TableName=table)["Items"]
        assert len(items) == 2 * ITEMS  # neither job's entries replace the other's
    for job, other in (jobs, reversed(jobs)):
        document = listed(job)
        assert sorted(e["id"] for e in document["entries"]) == sorted(
            e.id for e in recorded[job.task]
        )
        assert {e["task_name"] for e in document["entries"]} == {job.task}
        assert document["summary"]["lost_conflicts"] == ITEMS
        assert document["summary"]["other_tasks_skipped"] == {other.task: ITEMS}

    second = jobs[1]
    entry = recorded[second.task][0]
    restored = invoke(second, "--restore", entry.id)
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.startswith(f"restored entry {entry.id}: put of ")
    key = losses[0].change.keys
    assert held(ddb, second, key) == losses[0].change.new_image
    assert held(ddb, jobs[0], key) == losses[0].existing  # the other job's table: untouched
    marked = {e["id"]: e["restored_by"] for e in listed(second)["entries"]}
    assert marked[entry.id] is not None
    assert all(e["restored_by"] is None for e in listed(jobs[0])["entries"])
    theirs = invoke(jobs[0], "--restore", entry.id)
    assert theirs.exit_code == 1, theirs.output
    assert f"{entry.id} (task {second.task!r}) is theirs" in " ".join(theirs.stderr.split())


def legacy(entry: ConflictEntry) -> ConflictEntry:
    """The entry as versions whose ids did not name the task recorded it."""
    return replace(entry, id=entry_id(entry.destination, entry.shard_id, entry.sequence_number))


@pytest.mark.parametrize("kind", ["file", "dynamodb"])
def test_entries_recorded_before_ids_named_their_task_still_list_and_restore(
    moto_endpoint: str, unique: Any, tmp_path: Path, kind: str
) -> None:
    """An upgrade keeps the log: old entries list and restore by their ids, and a change
    replayed after the upgrade that loses again (recorded under its new id) is still
    one lost conflict, listed under the id it had."""
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    jobs = two_jobs(
        ddb, moto_endpoint, unique, tmp_path, shared_log(kind, moto_endpoint, unique, tmp_path)
    )
    job = jobs[0]
    losses = lost_conflicts()
    target = conflict_log_target(load_job(job.config))
    old = [legacy(lost_at(job, lost).entry()) for lost in losses]
    for entry in old:
        target.put(entry)
    replayed = record(job, replace(losses[1], recorded_s=losses[1].recorded_s + 60))
    assert replayed.id != old[1].id

    document = listed(job)
    assert sorted(e["id"] for e in document["entries"]) == sorted(e.id for e in old)
    assert document["summary"]["lost_conflicts"] == ITEMS
    restored = invoke(job, "--restore", old[0].id)
    assert restored.exit_code == 0, restored.output
    key = losses[0].change.keys
    assert held(ddb, job, key) == losses[0].change.new_image
    marked = {e["id"]: e["restored_by"] for e in listed(job)["entries"]}
    assert marked[old[0].id] is not None
