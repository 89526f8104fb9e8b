"""Which destination a conflict-log entry is of, and what is restored there: the entry's
own region and table decide, not the name it was recorded under (a destination named,
renamed or pointed elsewhere since); times written with an offset are listed in UTC; an
entry left out for another of the same change is restored as that one. Against a moto
server over HTTP, with the ``replicator conflicts`` command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from replicator.conflictlog.entry import entry_id
from replicator.conflictlog.file import FileConflictLog
from tests.conflictlog.test_conflict_command import Restorable, invoke, listed_ids, no_traceback
from tests.conflictlog.test_conflict_log import conflict, job_file
from tests.support.aws import client, create_table, no_aws_credentials


def repointed(case: Restorable, tmp_path: Path, region: str, table: str) -> Path:
    """The case's job file with its destination ``eu`` pointed at ``region``/``table``."""
    text = case.config.read_text()
    moved = text.replace(
        f"region: eu-west-1, table: {case.table},", f"region: {region}, table: {table},"
    )
    assert moved != text
    path = tmp_path / "repointed.yaml"
    path.write_text(moved)
    return path


@pytest.mark.parametrize("force", [False, True], ids=["conditional", "--force"])
@pytest.mark.parametrize("moved_to", ["another table", "another region"])
def test_an_entry_is_never_restored_into_a_table_its_destination_name_now_points_at(
    moto_endpoint: str, unique: Any, tmp_path: Path, moved_to: str, force: bool
) -> None:
    """``eu`` lost a conflict at eu-west-1/<table>; the job file now points ``eu`` at
    another table (holding the very winner) or at the same table in another region. The
    restore is refused, also with --force, naming the entry's region and table and the
    job's destination, and writes nothing anywhere: the conflict never happened there."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    if moved_to == "another table":
        region, ddb, table = "eu-west-1", case.ddb, unique("restore-other")
    else:
        region, table = "us-west-2", case.table
        ddb = client("dynamodb", region, moto_endpoint)
    create_table(ddb, table, range_key="sk", stream=None)
    ddb.put_item(TableName=table, Item=case.winner)
    config = repointed(case, tmp_path, region, table)

    result = invoke(config, "--restore", case.entry.id, *(["--force"] if force else []))

    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert " ".join(result.stderr.split()) == (
        f"replicator: entry {case.entry.id} is for eu-west-1/{case.table} (recorded as "
        f"destination 'eu'), which is not a destination of the job file {config} "
        f"(destinations: eu ({region}/{table})); the job's destination 'eu' is now at "
        f"{region}/{table}, where the conflict did not happen, and the losing image is not "
        "written there, also not with --force; nothing was written"
    )
    moved = ddb.get_item(TableName=table, Key=case.key, ConsistentRead=True).get("Item")
    assert moved == case.winner
    assert case.held() == case.winner
    assert case.restores() == []


def test_naming_a_destination_keeps_its_history_listed_and_restorable(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Entries recorded while the destination had no name (its label was
    ``eu-west-1/<table>``) belong to it once the job file names it ``eu``: --destination
    by its name or its region and table lists them, and --restore writes the loser there,
    saying where."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    place = f"eu-west-1/{case.table}"
    unnamed = replace(conflict(21), table=case.table, destination=place).entry()
    case.log.path.write_text(unnamed.to_json() + "\n")

    for spelling in ("eu", place, case.table):
        listing = invoke(case.config, "--destination", spelling, "--format", "json")
        assert listed_ids(listing) == [unnamed.id], spelling
        assert json.loads(listing.stdout)["selection"]["place"] == place
    header = invoke(case.config, "--destination", place).stdout.splitlines()[0]
    assert header.endswith(f"(destination eu at {place}): 1 lost conflict, 0 restores")

    result = invoke(case.config, "--restore", unnamed.id)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"restored entry {unnamed.id}: put of pk=S:order-1 sk=N:3 at eu ({place}) "
        "(only while the destination holds the image that won); recorded as entry "
    )
    assert case.held() == case.loser
    (record,) = case.restores()
    assert record.restored_entry == unnamed.id


def test_a_restore_to_a_destination_whose_table_is_missing_ends_with_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A missing table is the environment's problem, as in the other tools: exit 3, one
    line naming the destination's region, table and endpoint, nothing recorded."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    case.ddb.delete_table(TableName=case.table)

    result = invoke(case.config, "--restore", case.entry.id)

    no_traceback(result)
    assert result.exit_code == 3, result.output
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith(
        f"replicator: entry {case.entry.id} not restored at eu (eu-west-1/{case.table}), "
        f"{moto_endpoint} (eu-west-1): "
    ), line
    assert "ResourceNotFoundException" in line and line.endswith("nothing was written"), line
    assert case.restores() == []


def test_a_restore_refused_for_its_credentials_says_nothing_was_written(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A restore has no dead letters and no checkpoint: its refusal said replication's
    "nothing was dead-lettered and the checkpoint has not passed these changes"."""
    from click.testing import CliRunner

    from replicator.cli import cli

    case = Restorable(moto_endpoint, unique, tmp_path)
    no_credentials = no_aws_credentials(tmp_path)
    result = CliRunner().invoke(
        cli, ["conflicts", "-c", str(case.config), "--restore", case.entry.id], env=no_credentials
    )

    no_traceback(result)
    assert result.exit_code == 3, result.output
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith(f"replicator: entry {case.entry.id} not restored at eu "), line
    assert line.endswith("; nothing was written"), line
    assert "dead-lettered" not in line and "checkpoint" not in line, line
    assert case.held() != case.loser
    assert case.restores() == []


def test_entry_times_written_with_an_offset_or_nanoseconds_are_listed_in_utc(
    tmp_path: Path,
) -> None:
    log = FileConflictLog(tmp_path / "c.jsonl")
    offset = replace(conflict(1).entry(), created="2025-12-01T10:00:00.123+05:30")
    nanos = replace(conflict(2, pk="order-2").entry(), created="2025-12-01T05:00:00.123456789Z")
    plain = replace(conflict(3, pk="order-3").entry(), created="2025-12-01T04:45:00.000Z")
    for entry in (offset, nanos, plain):
        log.put(entry)
    config = job_file(tmp_path, f"{{kind: file, path: '{log.path}'}}")

    listing = invoke(config)

    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert lines[1] == "  from 2025-12-01T04:30:00.123Z to 2025-12-01T05:00:00.123456Z"
    rows = {
        line.split()[0]: line.split()[1]
        for line in lines
        if line.startswith("  ") and line.split()[0] in {offset.id, nanos.id, plain.id}
    }
    assert rows == {
        offset.id: "2025-12-01T04:30:00.123Z",
        nanos.id: "2025-12-01T05:00:00.123456Z",
        plain.id: "2025-12-01T04:45:00.000Z",
    }
    document = json.loads(invoke(config, "--format", "json").stdout)
    assert [e["created"] for e in document["entries"]] == [
        "2025-12-01T05:00:00.123456Z",
        "2025-12-01T04:45:00.000Z",
        "2025-12-01T04:30:00.123Z",
    ]


def test_the_id_of_an_entry_left_out_for_another_of_the_same_change_restores_that_one(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The same lost change recorded twice under two ids (once before the upgrade that
    put the task in entry ids, once by a replay after it): the listing keeps the one
    recorded first, and --restore with the other id restores it, saying so."""
    case = Restorable(moto_endpoint, unique, tmp_path)
    entry = case.entry
    again = replace(
        entry,
        id=entry_id(entry.destination, entry.shard_id, entry.sequence_number),
        recorded_at="2030-01-01T00:00:00.000Z",
    )
    assert again.id != entry.id
    case.log.put(again)
    assert listed_ids(invoke(case.config, "--format", "json")) == [entry.id]

    result = invoke(case.config, "--restore", again.id[:8])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"entry {again.id} records the same lost change as entry {entry.id}, which was "
        "recorded first and is the one listed: restored entry "
        f"{entry.id}: put of pk=S:order-1 sk=N:3 at eu (eu-west-1/{case.table}) "
    )
    assert case.held() == case.loser
    (record,) = case.restores()
    assert record.restored_entry == entry.id
