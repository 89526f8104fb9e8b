"""Files a job with a derived task name may have left under an earlier name.

A derived task name is a digest of the source and every destination, and the default
``dead_letter.path`` and ``conflict_log.path`` hold it (``dead-letters/{task_name}.jsonl``).
Adding or removing a destination gives the job a new name, and so new files: the letters
and conflict entries stored under the old one stay in the old files, which ``redrive``
and ``conflicts`` of the changed job never read. Telling "nothing was dead-lettered"
then would hide them. The files are found by name (the path's pattern, with any derived
name in place of ``{task_name}``); which job wrote them cannot be told from the files
(another job whose task name is derived may write beside it), so they are named for a
person to look at, never read or replayed here.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from replicator.config.model import ResolvedJob
from replicator.config.task_name import PREFIX

_MARKER = "\x00"
_DERIVED = PREFIX + "[0-9a-f]" * 32


@dataclass(frozen=True)
class StrandedFile:
    """A file of another derived task name, and the lines it holds (-1: unreadable)."""

    path: Path
    task_name: str
    lines: int


def stranded_files(resolved: ResolvedJob, template: str) -> list[StrandedFile]:
    """The files beside the one ``template`` (a path with ``{task_name}``) names for the
    job that hold lines under another derived task name; empty when the job sets
    ``task_name`` or the template does not hold it."""
    if resolved.job.task_name is not None:
        return []
    filled = template.format(task_name=_MARKER)
    if _MARKER not in filled:
        return []
    pattern = str(Path.cwd() / filled)
    own = Path.cwd() / template.format(task_name=resolved.task_name)
    names = re.compile(
        "".join(
            f"({PREFIX}[0-9a-f]{{32}})" if part == _MARKER else re.escape(part)
            for part in re.split(f"({_MARKER})", pattern)
        )
    )
    found = []
    for name in sorted(glob.glob(glob.escape(pattern).replace(_MARKER, _DERIVED))):
        path = Path(name)
        matched = names.fullmatch(name)
        if matched is None or path == own or not path.is_file():
            continue
        lines = _lines_in(path)
        if lines:
            found.append(StrandedFile(path, matched.group(1), lines))
    return found


def _lines_in(path: Path) -> int:
    """The lines that hold anything; -1 for a file that cannot be read (named all the
    same: it may hold what is looked for)."""
    try:
        with path.open("rb") as lines:
            return sum(1 for line in lines if line.strip())
    except OSError:
        return -1


def stranded_lines(files: list[StrandedFile], what: str, how: str) -> list[str]:
    """What a summary says of them: each file (``what`` they are: "dead-letter files"),
    and ``how`` to read one."""
    if not files:
        return []
    lines = [
        f"other {what} beside it, of another derived task name (this job's from before "
        "its destinations changed, or another job's):"
    ]
    for file in files:
        held = (
            "cannot be read"
            if file.lines < 0
            else f"{file.lines} line" + ("" if file.lines == 1 else "s")
        )
        lines.append(f"  {file.path} ({held}): task {file.task_name}")
    lines.append(f"  {how}")
    return lines
