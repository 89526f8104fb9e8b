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
commands that read the file refuse likewise, and record nothing. ``run`` checks before
it creates anything (a refused start leaves nothing behind), and records once the files'
directories exist. The source is named by its region and table (and a Kinesis data
stream's name, however the job file spells the stream): endpoints and roles are left
out, so that a demo on a new local port each run, or a job given a role, stays the same
job (two accounts' tables of one region and name under one task name are not told
apart). Where nothing can be recorded or read (a directory this user may not create
files in, another user's owners file), ``run`` warns and starts: the check is a guard
against a mistake, not a lock. Only files are guarded: two jobs of one task name sharing
a dead-letter or conflict-log queue or table are not told apart.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

import structlog

from replicator.appendfile import open_regular
from replicator.config.model import ConflictLogKind, DeadLetterKind, ResolvedJob, StreamKind
from replicator.conflictlog.places import conflict_log_path
from replicator.exceptions import EnvironmentProblem

log = structlog.get_logger(__name__)

OWNERS_SUFFIX = ".owners"
_NOTHING_THERE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})


def source_of(resolved: ResolvedJob) -> str:
    """The job's source as the owners file names it: a Kinesis data stream by its name,
    however the job file spells it (a name, or an ARN, which is of the source's region)."""
    source = resolved.job.source
    text = f"{source.region}/{source.table}"
    if source.stream.kind is StreamKind.KINESIS:
        stream = source.stream.arn or source.stream.name or ""
        text += f" via kinesis {stream.rsplit(':stream/', 1)[-1]}"
    return text


# The settings that name a file of entries: what the start and the tools check.
EVERY_FILE = ("dead_letter.path", "conflict_log.path")


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
    """Record the job's source for its task beside each of its files (``run``, once the
    files' directories exist), or raise EnvironmentProblem when another source is
    recorded there. Where nothing can be recorded (a directory this user may not create
    files in, another user's owners file), a warning, and the start goes on."""
    for setting, path in job_files(resolved):
        if _recorded(resolved, setting, path) is None:
            _record(resolved, setting, path)


def check(resolved: ResolvedJob, settings: tuple[str, ...] = EVERY_FILE) -> None:
    """Raise EnvironmentProblem when a file of ``settings`` is recorded for the task with
    another source (before anything is created or read), naming every such file at once
    (one message to act on, not one a try); record nothing."""
    problems: list[str] = []
    for setting, path in job_files(resolved):
        if setting in settings:
            try:
                _recorded(resolved, setting, path)
            except EnvironmentProblem as problem:
                problems.append(str(problem))
    if problems:
        raise EnvironmentProblem("; ".join(problems))


def _owners_path(path: Path) -> Path:
    return path.with_name(path.name + OWNERS_SUFFIX)


def _recorded(resolved: ResolvedJob, setting: str, path: Path) -> str | None:
    """The source recorded for the job's task beside ``path`` (None: none), refused when
    it is not the job's (the job's own when the file cannot be read: nothing to do)."""
    owners_path = _owners_path(path)
    try:
        file = open_regular(owners_path, os.O_RDONLY, "r")
    except OSError as error:
        if error.errno in _NOTHING_THERE:
            # Nothing recorded: no run has recorded a task beside the file (a path that
            # cannot be a file at all is the file checks' to refuse, naming the file).
            return None
        if isinstance(error, PermissionError):
            # Another user's file this one may not read: unknown, as one that cannot be
            # created is, so a warning and no refusal (nor a try to record).
            _unguarded(
                "read which source each task writing this file reads", setting, owners_path, error
            )
            return source_of(resolved)
        raise _unusable(setting, owners_path, path, f"cannot be read: {error.strerror}") from None
    with file:
        fcntl.flock(file, fcntl.LOCK_SH)
        owners = _owners(setting, owners_path, path, file.read())
    recorded = owners.get(resolved.task_name)
    _refuse_another(resolved, setting, path, recorded)
    return recorded


def _record(resolved: ResolvedJob, setting: str, path: Path) -> None:
    owners_path = _owners_path(path)
    task, source = resolved.task_name, source_of(resolved)
    try:
        file = open_regular(owners_path, os.O_RDWR | os.O_CREAT, "r+")
    except OSError as error:
        _unguarded(
            "record which source this task reads beside its file", setting, owners_path, error
        )
        return
    with file:
        fcntl.flock(file, fcntl.LOCK_EX)
        owners = _owners(setting, owners_path, path, file.read())
        recorded = owners.get(task)
        _refuse_another(resolved, setting, path, recorded)  # another start, meanwhile
        if recorded is not None:
            return
        owners[task] = source
        file.seek(0)
        file.truncate()
        file.write(json.dumps(owners, indent=1, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())


def _unguarded(what: str, setting: str, owners_path: Path, error: OSError) -> None:
    log.warning(
        f"could not {what}: a second job given this task_name would not be refused",
        setting=setting,
        owners_file=str(owners_path),
        error=error.strerror or str(error),
    )


def _owners(setting: str, owners_path: Path, path: Path, text: str) -> dict[str, str]:
    try:
        owners = json.loads(text) if text.strip() else {}
    except ValueError:
        owners = None
    if not isinstance(owners, dict):
        raise _unusable(
            setting,
            owners_path,
            path,
            "is not the JSON object the replicator writes there; remove it (the next run "
            "writes it again) if no other job's task writes beside the file",
        )
    return owners


def _unusable(setting: str, owners_path: Path, path: Path, why: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"{setting}: {owners_path}, which records the source each task writing {path} reads, {why}"
    )


def _refuse_another(resolved: ResolvedJob, setting: str, path: Path, recorded: str | None) -> None:
    task, source = resolved.task_name, source_of(resolved)
    if recorded is None or recorded == source:
        return
    raise EnvironmentProblem(
        f"{setting}: task {task!r} is recorded beside {path} for the source {recorded} "
        f"({_owners_path(path)}), and this job reads {source}: two jobs with one task_name "
        "would mix their dead letters and lost conflicts (each one's redrive and conflicts "
        "would act on the other's). Give this job a task_name of its own; if its source "
        f"was changed on purpose, remove the entry {task!r} from {_owners_path(path)}"
    )
