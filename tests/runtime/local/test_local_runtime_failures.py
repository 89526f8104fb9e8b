"""How `replicator run` (the local runtime) ends when a dead-letter target stops taking
letters while it runs: the exit code and the one line the README promises."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.support.e2e import PATIENCE, Job, wait_until


def _job(moto_endpoint: str, unique: Any, tmp_path: Path, conflict: str) -> tuple[Job, Path]:
    """A job with one destination whose dead letters go to ``letters/<task>.jsonl``."""
    name = unique("dlfail")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    letters = tmp_path / "letters"
    job.dead_letters = letters / f"{name}.jsonl"
    job.write()
    job.path.write_text(
        job.path.read_text().replace(
            "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}", conflict
        )
    )
    return job, letters


def _replace_with_a_file(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.touch()


def test_a_dead_letter_directory_replaced_by_a_file_while_running_is_exit_3_and_one_line(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The processor cannot store the letter and stops; it is restarted as documented
    and fails the same way each time; the runtime then ends as the same target does at
    start-up: exit 3, and a last line naming the file and the cause."""
    job, letters = _job(
        moto_endpoint, unique, tmp_path, "conflict: {policy: version, version_attribute: ver}"
    )
    log = tmp_path / "run.log"
    runtime = job.start(log=log)
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        _replace_with_a_file(letters)
        job.source.put_item(  # a string version: dead-lettered
            TableName=job.source_table,
            Item={"pk": {"S": "a"}, "sk": {"N": "1"}, "ver": {"S": "one"}},
        )
        status = runtime.wait(180 * PATIENCE)
    finally:
        if runtime.poll() is None:
            runtime.kill()
    output = log.read_text()
    assert "restarting from the checkpoint" in output  # the restart policy still holds
    last = output.splitlines()[-1]
    assert status == 3, last
    assert last.startswith(
        f"replicator: cannot append to dead-letter file {job.dead_letters}: "
        f"{letters} is not a directory"
    ), last
    assert "File exists" not in last
    (row,) = job.lease_rows()
    assert not row["checkpoint"]["S"].isdigit()  # never past the change it could not keep
