"""Why a processor process exits, left where its runtime can read it.

A processor that stops on an error no retry fixes (a destination refusing every write)
logs it and exits; the local runtime only sees a closed pipe or an exit status. The
runtime names a file in ``REPLICATOR_LAST_WORDS`` for each child it starts, the child
writes its reason there before it exits, and the runtime's error for a processor that
keeps failing gives that reason. With the reason goes the exit code the CLI gives such a
failure (3 for a destination not as the job says), when the child knows it: the runtime
ends with that code if the processor keeps failing so. Both sides import only this
module.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

ENV = "REPLICATOR_LAST_WORDS"
PROCESSORS_ENV = "REPLICATOR_PROCESSORS_DIR"
"""A directory the KCL runtime names for the processors the daemon starts (they share
one environment, so one file each, named by pid): a processor notes its shard there when
it starts and removes the note at a clean exit; a note whose process is gone is a
processor that died (its reason added when it left one), which ``/healthz`` reports."""

_lock = threading.Lock()
_left: list[str] = []


def leave(reason: str, exit_code: int | None = None) -> None:
    """Write ``reason`` (and the CLI's ``exit_code`` for it) where the runtime asked
    (nothing when it did not ask): the local runtime's file for this child, or the KCL
    runtime's note of this processor."""
    # Several writer threads may fail at once, each about to end the process: the first
    # one's words are kept whole (written aside, then renamed into place), and the others
    # wait for them rather than cut them short.
    with _lock:
        if _left:
            return
        _left.append(reason)
        path = os.environ.get(ENV)
        if path:
            try:
                with open(path + ".tmp", "w", encoding="utf-8") as file:
                    file.write(json.dumps({"reason": reason[:2000], "exit_code": exit_code}))
                os.replace(path + ".tmp", path)
            except OSError:
                pass  # only an explanation: the exit itself must happen
        _note({"reason": reason[:500]})


def started(shard_id: str) -> None:
    """Note this process as the processor of ``shard_id`` (where the runtime asked)."""
    _note({"shard": shard_id}, fresh=True)


def ended_cleanly() -> None:
    """Remove this process's note: it stops as asked (or its daemon went away)."""
    directory = os.environ.get(PROCESSORS_ENV)
    if directory:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, str(os.getpid())))


def _note(fields: dict[str, str], *, fresh: bool = False) -> None:
    directory = os.environ.get(PROCESSORS_ENV)
    if not directory:
        return
    path = os.path.join(directory, str(os.getpid()))
    noted: dict[str, str] = {}
    if not fresh:
        noted = _read_note(Path(path))
        if not noted:
            return  # no shard noted: not started, or already ended cleanly
    with contextlib.suppress(OSError):
        with open(path + ".tmp", "w", encoding="utf-8") as file:
            file.write(json.dumps({**noted, **fields}))
        os.replace(path + ".tmp", path)


def _read_note(path: Path) -> dict[str, str]:
    try:
        noted = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in noted.items()} if isinstance(noted, dict) else {}


def died(directory: Path, alive: Callable[[int], bool]) -> list[str]:
    """The shards whose processor (noted in ``directory``) died without a clean exit and
    has no live successor for its shard yet, as ``/healthz`` reasons. A note of a dead
    processor whose shard a live one now holds is removed."""
    notes = {}
    for path in directory.glob("[0-9]*"):
        if path.name.isdigit():
            notes[int(path.name)] = (path, _read_note(path))
    held = {note.get("shard") for pid, (_, note) in notes.items() if alive(pid)}
    reasons = []
    for pid, (path, note) in sorted(notes.items()):
        shard = note.get("shard")
        if alive(pid) or not shard:
            continue
        if shard in held:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        why = note.get("reason") or "see its last log lines"
        reasons.append(f"shard {shard}: its processor (pid {pid}) died: {why}")
    return reasons


def read(path: Path) -> tuple[str, int | None]:
    """What a child left at ``path``: its reason ("" when none) and exit code."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "", None
    try:
        said = json.loads(text)
    except json.JSONDecodeError:
        return text, None
    if not isinstance(said, dict):
        return text, None
    code = said.get("exit_code")
    return str(said.get("reason", "")).strip(), code if isinstance(code, int) else None
