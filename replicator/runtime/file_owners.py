"""Which job's entries a dead-letter or conflict-log file holds, by task name.

Entries name their task (``task_name``), and the commands that read a file (``redrive``,
``conflicts`` and its ``--restore``) act on their task's entries only. Two jobs given one
task name would still mix: the second direction of an active-active pair copied from the
first with its ``task_name`` unchanged has a lease table of its own (in its own source's
region, so the lease table's tag finds nothing wrong), and on one host, or a shared
volume, both write ``dead-letters/{task_name}.jsonl`` and ``conflicts/{task_name}.jsonl``.
Each job's ``conflicts`` then lists the other's entries as its own, ``--restore`` writes
them into tables they are not about, and ``redrive`` replays the other's letters.

So each file has an owners file beside it (``<file>.owners``: a JSON object, task name to
the source it reads, written under an ``flock``). ``run`` records its task's source there
at start, and refuses to start (exit 3) when the task is recorded for another source; the
commands that read the file refuse likewise, and record nothing. The source is named by
its region and table (and a Kinesis data stream's name or ARN), as the job file gives
them: endpoints and roles are left out, so that a demo on a new local port each run, or
a job given a role, stays the same job.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from replicator.config.model import ConflictLogKind, DeadLetterKind, ResolvedJob, StreamKind
from replicator.conflictlog.places import conflict_log_path
from replicator.exceptions import EnvironmentProblem

OWNERS_SUFFIX = ".owners"


def source_of(resolved: ResolvedJob) -> str:
    """The job's source as the owners file names it."""
    source = resolved.job.source
    text = f"{source.region}/{source.table}"
    if source.stream.kind is StreamKind.KINESIS:
        text += f" via kinesis {source.stream.arn or source.stream.name}"
    return text


def job_files(resolved: ResolvedJob) -> list[tuple[str, Path]]:
    """The job's files of entries, each with the setting that names it."""
    job = resolved.job
    files: list[tuple[str, Path]] = []
    if job.dead_letter.kind is DeadLetterKind.FILE:
        files.append(("dead_letter.path", Path.cwd() / resolved.dead_letter_path()))
    if job.conflict_log.kind is ConflictLogKind.FILE:
        files.append(("conflict_log.path", conflict_log_path(resolved)))
    return files


def claim(resolved: ResolvedJob) -> None:
    """Record the job's source for its task beside each of its files (``run``, at start),
    or raise EnvironmentProblem when another source is recorded there."""
    for setting, path in job_files(resolved):
        _check(resolved, setting, path, record=True)


def check(resolved: ResolvedJob, settings: tuple[str, ...]) -> None:
    """Raise EnvironmentProblem when a file of ``settings`` holds the task's entries for
    another source (an operator command, before it reads the file); record nothing."""
    for setting, path in job_files(resolved):
        if setting in settings:
            _check(resolved, setting, path, record=False)


def _check(resolved: ResolvedJob, setting: str, path: Path, *, record: bool) -> None:
    owners_path = path.with_name(path.name + OWNERS_SUFFIX)
    task, source = resolved.task_name, source_of(resolved)
    try:
        descriptor = os.open(owners_path, (os.O_RDWR | os.O_CREAT) if record else os.O_RDONLY)
    except FileNotFoundError:
        return  # nothing recorded yet: no run of any task has written the file
    except OSError as error:
        raise EnvironmentProblem(
            f"{setting}: cannot read {owners_path}, which says which job's entries "
            f"{path} holds: {error.strerror or error}"
        ) from None
    with os.fdopen(descriptor, "r+" if record else "r", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX if record else fcntl.LOCK_SH)
        text = file.read()
        try:
            owners = json.loads(text) if text.strip() else {}
        except ValueError:
            owners = None
        if not isinstance(owners, dict):
            raise EnvironmentProblem(
                f"{setting}: {owners_path}, which says which job's entries {path} holds, "
                "is not the JSON object the replicator writes there; remove it (the "
                "next run writes it again) if the file holds this job's entries only"
            )
        recorded = owners.get(task)
        if recorded is not None and recorded != source:
            raise EnvironmentProblem(
                f"{setting}: {path} holds the entries of task {task!r} for the source "
                f"{recorded} ({owners_path}), and this job reads {source}: two jobs with "
                "one task_name would mix their dead letters and lost conflicts (each "
                "one's redrive and conflicts would act on the other's). Give this job a "
                "task_name of its own; if its source was changed on purpose, remove the "
                f"entry {task!r} from {owners_path} (the entries already in {path} are "
                "the earlier source's)"
            )
        if recorded is None and record:
            owners[task] = source
            file.seek(0)
            file.truncate()
            file.write(json.dumps(owners, indent=1, sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())
