"""Every command that reads the job's tables refuses a timestamp, version or origin stamp
that is a key attribute of the source table, as ``run`` does at start (exit 2, one line
naming the setting), before it reads or writes any item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator.tools.backfill_state import state_table_name
from tests.support.cli import in_process, replicator
from tests.support.e2e import Job

LWW = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}"
ON_KEYS = {
    "timestamp": (
        "conflict: {policy: last_writer_wins, timestamp_attribute: pk}",
        "conflict.timestamp_attribute (line 6): is 'pk', a key attribute of the source table",
    ),
    "version": (
        "conflict: {policy: version, version_attribute: sk}",
        "conflict.version_attribute (line 6): is 'sk', a key attribute of the source table",
    ),
    "origin": (
        f"{LWW}\nloop_prevention: {{origin_attribute: pk}}",
        "loop_prevention.origin_attribute (line 7): is 'pk', a key attribute of the source table",
    ),
}
COMMANDS = {
    "verify": ("verify",),
    "verify --repair": ("verify", "--repair"),
    "backfill": ("backfill", "--skip-handoff-check"),
    "redrive": ("redrive",),
}


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("onkeys"), tmp_path)


@pytest.mark.parametrize("ranking", sorted(ON_KEYS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_ranking_attribute_that_is_a_key_attribute_is_refused(
    job: Job, command: str, ranking: str
) -> None:
    conflict, expected = ON_KEYS[ranking]
    job.path.write_text(job.path.read_text().replace(LWW, conflict))
    item = {"pk": {"S": "a"}, "sk": {"N": "1"}, "v": {"S": "only at the source"}}
    job.source.put_item(TableName=job.source_table, Item=item)
    (eu, eu_table), _ = job.destination_clients()

    # The first case as a process of its own; the others in this process: the refusal
    # comes once the source's key schema is read, before any item is.
    run = replicator if (command, ranking) == ("backfill", "origin") else in_process
    result = run(*COMMANDS[command], "--config", str(job.path))

    assert result.returncode == 2, result.stdout + result.stderr
    head, line = result.stderr.strip().splitlines()
    assert head == f"replicator: {job.path}: 1 problem in the job file:"
    assert line.startswith(f"  {expected}")
    assert result.stdout == ""
    assert "Item" not in eu.get_item(TableName=eu_table, Key={"pk": item["pk"], "sk": item["sk"]})
    assert not job.dead_letters.exists()
    assert state_table_name(job.name) not in job.source.list_tables()["TableNames"]


def test_a_destinations_own_conflict_section_is_named(job: Job) -> None:
    text = job.path.read_text().replace(
        f"table: {job.name}-ap, endpoint_url: '{job.endpoint}'",
        f"table: {job.name}-ap, endpoint_url: '{job.endpoint}', "
        "conflict: {policy: version, version_attribute: pk}",
    )
    job.path.write_text(text)

    result = replicator("verify", "--config", str(job.path))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "  destinations[1].conflict.version_attribute (line " in result.stderr
    assert "): is 'pk', a key attribute" in result.stderr
