"""Dead-letter files a job with a derived task name may have left under an earlier name.

A derived task name is a digest of the source and every destination, and the default
``dead_letter.path`` holds it (``dead-letters/{task_name}.jsonl``). Adding or removing a
destination gives the job a new name, and so a new file: the letters stored under the
old one stay in the old file, which ``redrive`` of the changed job never reads. Telling
"nothing was dead-lettered" then would hide them. The files are found by name (the
path's pattern, with any derived name in place of ``{task_name}``); which job wrote
them cannot be told from the files (another job whose task name is derived may write
beside it), so they are named for a person to look at, never replayed here.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from replicator.config.model import DeadLetterKind, ResolvedJob
from replicator.config.task_name import PREFIX
from replicator.deadletter.file import FileDeadLetters

_MARKER = "\x00"
_DERIVED = PREFIX + "[0-9a-f]" * 32


@dataclass(frozen=True)
class StrandedFile:
    """A dead-letter file of another derived task name, and the lines it holds."""

    path: Path
    task_name: str
    lines: int


def stranded_files(resolved: ResolvedJob) -> list[StrandedFile]:
    """The files beside the job's own dead-letter file that hold lines under another
    derived task name; empty when the job sets ``task_name``, keeps its letters in a
    queue, or names its file without ``{task_name}``."""
    job = resolved.job
    if job.task_name is not None or job.dead_letter.kind is not DeadLetterKind.FILE:
        return []
    filled = job.dead_letter.path.format(task_name=_MARKER)
    if _MARKER not in filled:
        return []
    pattern = str(Path.cwd() / filled)
    own = (Path.cwd() / resolved.dead_letter_path()).absolute()
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
        if matched is None or path.absolute() == own or not path.is_file():
            continue
        try:
            lines = FileDeadLetters(path).count()
        except OSError:  # unreadable: named all the same, it may hold letters
            lines = -1
        if lines:
            found.append(StrandedFile(path, matched.group(1), lines))
    return found


def stranded_lines(files: list[StrandedFile]) -> list[str]:
    """What the summary says of them: each file, and how to replay its letters."""
    if not files:
        return []
    lines = [
        "other dead-letter files beside it, of another derived task name (this job's "
        "letters from before its destinations changed, or another job's):"
    ]
    for file in files:
        held = (
            "cannot be read"
            if file.lines < 0
            else f"{file.lines} line" + ("" if file.lines == 1 else "s")
        )
        lines.append(f"  {file.path} ({held}): task {file.task_name}")
    lines.append(
        "  to replay such a file, run redrive with a copy of the job file that sets "
        "task_name to its task (letters for a destination no longer in the job are kept, "
        "as unknown_destination)"
    )
    return lines
